"""The engine's internal, parsed form: what policies, endpoints and flows become once compiled.

These types are kept apart from the user-facing schema in ``palisade.model``: the model says what a
user may write, these say what the engine evaluates. Everything here is frozen and slotted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

from palisade.model import PROTOCOL_NUMBERS
from palisade.selector import Selector

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTOCOL_NAMES: dict[int, str] = {number: name for name, number in PROTOCOL_NUMBERS.items()}
PORTED_PROTOCOLS = frozenset({6, 17, 132})


def protocol_number(value: int | str) -> int:
    """Map a Calico protocol (name, number or numeric string) to its IANA number."""
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    for name, number in PROTOCOL_NUMBERS.items():
        if name.lower() == value.lower():
            return number
    raise ValueError(f"unknown protocol {value!r}")


def protocol_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


class Action(Enum):
    ALLOW = "Allow"
    DENY = "Deny"
    LOG = "Log"
    PASS = "Pass"


class Direction(Enum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class PolicyKind(Enum):
    """Internal kinds, spelled as Calico spells them (they take part in the v3.32 tie-break)."""

    NETWORK_POLICY = "NetworkPolicy"
    GLOBAL_NETWORK_POLICY = "GlobalNetworkPolicy"
    KUBERNETES_NETWORK_POLICY = "KubernetesNetworkPolicy"
    STAGED_NETWORK_POLICY = "StagedNetworkPolicy"
    STAGED_GLOBAL_NETWORK_POLICY = "StagedGlobalNetworkPolicy"
    STAGED_KUBERNETES_NETWORK_POLICY = "StagedKubernetesNetworkPolicy"
    KUBERNETES_CLUSTER_NETWORK_POLICY = "KubernetesClusterNetworkPolicy"
    KUBERNETES_ADMIN_NETWORK_POLICY = "KubernetesAdminNetworkPolicy"
    KUBERNETES_BASELINE_ADMIN_NETWORK_POLICY = "KubernetesBaselineAdminNetworkPolicy"
    PROFILE = "Profile"

    @property
    def staged(self) -> bool:
        return self in _STAGED_KINDS

    @property
    def namespaced(self) -> bool:
        return self in _NAMESPACED_KINDS

    @property
    def hit_prefix(self) -> str:
        """The kind abbreviation of Calico v3.32+ policy-hit strings (spec 6.2)."""
        return _HIT_PREFIX[self]


_STAGED_KINDS = frozenset(
    {
        PolicyKind.STAGED_NETWORK_POLICY,
        PolicyKind.STAGED_GLOBAL_NETWORK_POLICY,
        PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY,
    }
)
_NAMESPACED_KINDS = frozenset(
    {
        PolicyKind.NETWORK_POLICY,
        PolicyKind.KUBERNETES_NETWORK_POLICY,
        PolicyKind.STAGED_NETWORK_POLICY,
        PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY,
    }
)
_HIT_PREFIX = {
    PolicyKind.NETWORK_POLICY: "np",
    PolicyKind.GLOBAL_NETWORK_POLICY: "gnp",
    PolicyKind.KUBERNETES_NETWORK_POLICY: "knp",
    PolicyKind.STAGED_NETWORK_POLICY: "snp",
    PolicyKind.STAGED_GLOBAL_NETWORK_POLICY: "sgnp",
    PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY: "sknp",
    PolicyKind.KUBERNETES_CLUSTER_NETWORK_POLICY: "kcnp",
    PolicyKind.KUBERNETES_ADMIN_NETWORK_POLICY: "kanp",
    PolicyKind.KUBERNETES_BASELINE_ADMIN_NETWORK_POLICY: "kbanp",
    PolicyKind.PROFILE: "pro",
}


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


@dataclass(frozen=True, slots=True)
class PortMatch:
    """One `ports` or `notPorts` list: numeric ranges and named ports, ORed."""

    ranges: tuple[PortRange, ...] = ()
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges or self.names)

    def __str__(self) -> str:
        return ",".join([*(str(r) for r in self.ranges), *self.names])


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class EntityMatch:
    """A compiled EntityRule (`source` or `destination`), with Calico's selector scoping applied.

    ``selector`` is the effective selector of spec 4.5 (None: no selector restriction);
    ``not_selector`` is used as written.
    """

    nets: tuple[IPNetwork, ...] | None = None
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    ports: PortMatch = field(default_factory=PortMatch)
    not_ports: PortMatch = field(default_factory=PortMatch)
    service: ServiceRef | None = None

    @property
    def is_any(self) -> bool:
        return (
            self.nets is None
            and not self.not_nets
            and self.selector is None
            and self.not_selector is None
            and not self.ports
            and not self.not_ports
            and self.service is None
        )


@dataclass(frozen=True, slots=True)
class ICMPMatch:
    type: int | None
    code: int | None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: ICMPMatch | None = None
    not_icmp: ICMPMatch | None = None
    source: EntityMatch = field(default_factory=EntityMatch)
    destination: EntityMatch = field(default_factory=EntityMatch)
    name: str | None = None
    """The rule's name where the source format has one (admin/cluster policies)."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    kind: PolicyKind
    namespace: str | None
    name: str
    tier: str
    order: float | None
    selector: Selector
    types: frozenset[Direction]
    ingress: tuple[CompiledRule, ...] = ()
    egress: tuple[CompiledRule, ...] = ()
    staged_action: str | None = None
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False
    source: str = ""
    """Where the policy came from (file:document), for messages."""

    @property
    def staged(self) -> bool:
        return self.kind.staged

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def hit_part(self) -> str:
        """The policy part of a Calico v3.32+ policy-hit string (spec 6.2)."""
        return f"{self.kind.hit_prefix}:{self.display_name}"

    @property
    def sort_key(self) -> tuple[bool, float, str]:
        """Order within a tier (spec 4.2, v3.32): order ascending, unset last, then
        ``name/namespace/kind`` in byte order."""
        tie = f"{self.name}/{self.namespace or ''}/{self.kind.value}".encode()
        return (
            self.order is None,
            self.order if self.order is not None else 0.0,
            tie.decode("latin-1"),
        )

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress


@dataclass(frozen=True, slots=True)
class TierInfo:
    name: str
    order: float | None
    default_action: Action
    exists: bool = True

    @property
    def sort_key(self) -> tuple[bool, bool, float, bytes]:
        """Spec 4.2: existing tiers first, then order ascending (unset last), then name."""
        return (
            not self.exists,
            self.order is None,
            self.order if self.order is not None else 0.0,
            self.name.encode(),
        )


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    name: str
    ingress: tuple[CompiledRule, ...]
    egress: tuple[CompiledRule, ...]
    labels_to_apply: tuple[tuple[str, str], ...] = ()

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    @property
    def hit_part(self) -> str:
        return f"pro:{self.name}"


@dataclass(frozen=True, slots=True)
class NamedPort:
    name: str
    protocol: int
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A workload (pod) or host endpoint, with its *effective* labels (spec 1.11)."""

    kind: str  # "wep" | "hep"
    namespace: str | None
    name: str
    labels: tuple[tuple[str, str], ...]
    ips: tuple[IPAddress, ...]
    named_ports: tuple[NamedPort, ...] = ()
    profiles: tuple[str, ...] = ()
    service_account: str | None = None
    node: str | None = None
    generate_name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: int | None) -> int | None:
        for named in self.named_ports:
            if named.name == name and (protocol is None or named.protocol == protocol):
                return named.port
        return None


@dataclass(frozen=True, slots=True)
class NetworkSetInfo:
    namespace: str | None
    name: str
    labels: tuple[tuple[str, str], ...]
    nets: tuple[IPNetwork, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str | None
    protocol: int
    port: int
    target_port: int | str


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] | None
    ports: tuple[ServicePort, ...]
    cluster_ips: tuple[IPAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class Flow:
    """A new connection's first packet, as policy sees it (after Service DNAT)."""

    src_ip: IPAddress
    dst_ip: IPAddress
    protocol: int
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    def __str__(self) -> str:
        proto = protocol_name(self.protocol)
        port = f":{self.dst_port}" if self.dst_port is not None else ""
        return f"{self.src_ip} → {self.dst_ip}{port}/{proto}"


class Outcome(Enum):
    """What one rule, policy or tier did in a trace."""

    MATCHED = "matched"
    NO_MATCH = "no-match"
    END_OF_TIER = "end-of-tier"
    SKIPPED_STAGED = "skipped-staged"


@dataclass(frozen=True, slots=True)
class Hit:
    """One step of a policy trace: the hit that Calico's flow logs would record (spec 6.2)."""

    tier: str  # "__PROFILE__" for profiles
    policy: str  # the policy part, e.g. "np:ns/name"
    action: Action
    rule_index: int  # -1: end of tier (tier default action); -2: unknown
    staged: bool = False

    def format(self, index: int) -> str:
        return f"{index}|{self.tier}|{self.policy}|{self.action.value.lower()}|{self.rule_index}"


@dataclass(frozen=True, slots=True)
class TraceStep:
    """A readable record of what was consulted: tier, policy, rule and what happened."""

    tier: str
    policy: str
    rule_index: int | None
    outcome: Outcome
    action: Action | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class DirectionResult:
    endpoint: str
    direction: Direction
    allowed: bool
    hits: tuple[Hit, ...]
    trace: tuple[TraceStep, ...]
    logged: tuple[Hit, ...] = ()

    @property
    def deciding(self) -> Hit | None:
        return self.hits[-1] if self.hits else None

    def policy_strings(self) -> list[str]:
        return [hit.format(i) for i, hit in enumerate(self.hits)]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "is this flow allowed, and by which tier, policy and rule?"."""

    flow: Flow
    allowed: bool
    egress: DirectionResult | None
    ingress: DirectionResult | None
    pending_allowed: bool
    pending_egress: DirectionResult | None
    pending_ingress: DirectionResult | None
    source_endpoint: str | None = None
    destination_endpoint: str | None = None

    @property
    def deciding(self) -> DirectionResult | None:
        """The direction whose result decided: the denying one, else the ingress one."""
        for result in (self.egress, self.ingress):
            if result is not None and not result.allowed:
                return result
        return self.ingress or self.egress
