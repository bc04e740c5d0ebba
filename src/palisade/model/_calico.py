"""Calico ``projectcalico.org/v3`` resources: policies, tiers, network sets, endpoints, pools.

Validation follows spec sections 2 and 3 (Calico's v3 validator and CRD rules).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AllowInfNan,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    model_validator,
)

from palisade.model._base import NameRule, ResourceBase, StrictModel
from palisade.model._errors import IssueCollector, Loc
from palisade.model._validate import (
    PORT_PROTOCOLS,
    CalicoNet,
    CalicoPort,
    Domain,
    IPAddress,
    LabelKey,
    LabelValue,
    PortName,
    Protocol,
    RuleNamespaceSelector,
    Selector,
    dns_label_problem,
    parse_network,
    port_range,
    protocol_number,
)

CALICO_API_VERSION = "projectcalico.org/v3"

Order = Annotated[float, Strict(), AllowInfNan(False)]
Action = Literal["Allow", "Deny", "Log", "Pass"]
PolicyType = Literal["Ingress", "Egress"]
StagedAction = Literal["Set", "Delete", "Learn", "Ignore"]

PERFORMANCE_HINTS = frozenset({"AssumeNeededOnEveryNode"})


# ---------------------------------------------------------------------------- rules


class ICMPFields(StrictModel):
    """ICMP type and code to match; ``code`` needs ``type``."""

    type: StrictInt | None = Field(default=None, ge=0, le=254)
    code: StrictInt | None = Field(default=None, ge=0, le=255)

    @model_validator(mode="after")
    def _code_needs_type(self) -> ICMPFields:
        if self.code is not None and self.type is None:
            issues = IssueCollector()
            issues.add(("code",), "code can only be set together with type")
            issues.raise_if_any()
        return self

    @property
    def type_(self) -> int | None:
        """The same as ``type`` (for callers that avoid the builtin's name)."""
        return self.type


class ServiceAccountMatch(StrictModel):
    """Service accounts by name and/or label selector (names and selector are ANDed)."""

    names: list[str] = Field(default_factory=list)
    selector: Selector = ""


class ServiceMatch(StrictModel):
    """A Kubernetes Service; an empty namespace means the policy's own namespace."""

    name: str = Field(min_length=1)
    namespace: str = ""

    @model_validator(mode="after")
    def _check_namespace(self) -> ServiceMatch:
        if self.namespace:
            problem = dns_label_problem(self.namespace)
            if problem is not None:
                issues = IssueCollector()
                issues.add(("namespace",), problem)
                issues.raise_if_any()
        return self


class HTTPPath(StrictModel):
    """One HTTP path match: exactly one of ``exact`` and ``prefix``."""

    exact: str | None = None
    prefix: str | None = None

    @model_validator(mode="after")
    def _check(self) -> HTTPPath:
        issues = IssueCollector()
        if (self.exact is None) == (self.prefix is None):
            issues.add((), "exactly one of exact and prefix must be set")
        for field, value in (("exact", self.exact), ("prefix", self.prefix)):
            if value is None:
                continue
            if not value.startswith("/"):
                issues.add((field,), "path must start with '/'")
            elif any(c in value for c in "?# "):
                issues.add((field,), "path must not contain '?', '#' or spaces")
        issues.raise_if_any()
        return self


class HTTPMatch(StrictModel):
    """Application-layer match: any listed method and any listed path (empty = any)."""

    methods: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    paths: list[HTTPPath] = Field(default_factory=list)


class RuleMetadata(StrictModel):
    """Informational rule metadata."""

    annotations: dict[str, str] = Field(default_factory=dict)


class EntityRule(StrictModel):
    """The ``source`` or ``destination`` half of a rule (spec 3.2)."""

    nets: list[CalicoNet] = Field(default_factory=list, max_length=256)
    not_nets: list[CalicoNet] = Field(default_factory=list, max_length=256)
    selector: Selector = ""
    not_selector: Selector = ""
    namespace_selector: RuleNamespaceSelector = ""
    ports: list[CalicoPort] = Field(default_factory=list, max_length=50)
    not_ports: list[CalicoPort] = Field(default_factory=list, max_length=50)
    service_accounts: ServiceAccountMatch | None = None
    services: ServiceMatch | None = None
    domains: list[Domain] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> EntityRule:
        issues = IssueCollector()
        for index, net in enumerate(self.not_nets):
            if parse_network(net, allow_bare_ip=True).prefixlen == 0:
                issues.add(("notNets", index), f"catch-all CIDR {net!r} is not allowed in notNets")
        if self.services is not None:
            for alias, value in (
                ("selector", self.selector),
                ("notSelector", self.not_selector),
                ("namespaceSelector", self.namespace_selector),
                ("nets", self.nets),
                ("notNets", self.not_nets),
                ("serviceAccounts", self.service_accounts),
            ):
                if value:
                    issues.add((alias,), "cannot be combined with services")
        if self.domains and (self.nets or self.selector):
            issues.add(("domains",), "domains cannot be combined with nets or selector")
        issues.raise_if_any()
        return self


class Rule(StrictModel):
    """One Calico policy rule (spec 3.1); all its criteria are ANDed."""

    action: Action
    ip_version: Literal[4, 6] | None = None
    protocol: Protocol | None = None
    not_protocol: Protocol | None = None
    icmp: ICMPFields | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    @property
    def protocol_number(self) -> int | None:
        """The IP protocol number of ``protocol``, if set."""
        return None if self.protocol is None else protocol_number(self.protocol)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        issues = IssueCollector()
        proto = self.protocol_number
        self._check_ports(issues, proto)
        self._check_icmp(issues, proto)
        self._check_families(issues)
        if self.http is not None:
            if self.action != "Allow":
                issues.add(("http",), "http match is only allowed on Allow rules")
            elif proto is not None and proto != 6:
                issues.add(("http",), "http match requires protocol TCP (or no protocol)")
        if self.destination.services is not None:
            for alias, ports in (
                ("ports", self.destination.ports),
                ("notPorts", self.destination.not_ports),
            ):
                if ports:
                    issues.add(
                        ("destination", alias),
                        "cannot be combined with a destination services match",
                    )
        if self.source.domains:
            issues.add(("source", "domains"), "domains are only allowed in the destination")
        if self.destination.domains and self.action != "Allow":
            issues.add(("destination", "domains"), "domains are only allowed on Allow rules")
        issues.raise_if_any()
        return self

    def _check_ports(self, issues: IssueCollector, proto: int | None) -> None:
        for side, entity in (("source", self.source), ("destination", self.destination)):
            for alias, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
                for index, port in enumerate(ports):
                    loc: Loc = (side, alias, index)
                    if proto is None:
                        if port_range(port) is not None:
                            issues.add(
                                loc,
                                "a numeric port or range needs protocol TCP, UDP or SCTP",
                            )
                    elif proto not in PORT_PROTOCOLS:
                        issues.add(loc, f"protocol {self.protocol} does not have ports")

    def _check_icmp(self, issues: IssueCollector, proto: int | None) -> None:
        for alias, value in (("icmp", self.icmp), ("notICMP", self.not_icmp)):
            if value is None:
                continue
            if proto not in (1, 58):
                issues.add((alias,), f"{alias} needs protocol ICMP or ICMPv6")
            elif proto == 1 and self.ip_version == 6:
                issues.add((alias,), "ICMP (IPv4) cannot be used with ipVersion 6")
            elif proto == 58 and self.ip_version == 4:
                issues.add((alias,), "ICMPv6 cannot be used with ipVersion 4")

    def _check_families(self, issues: IssueCollector) -> None:
        expected = self.ip_version
        for side, entity in (("source", self.source), ("destination", self.destination)):
            for alias, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
                for index, net in enumerate(nets):
                    version = parse_network(net, allow_bare_ip=True).version
                    if expected is None:
                        expected = version
                    elif version != expected:
                        issues.add(
                            (side, alias, index),
                            f"IPv{version} CIDR in a rule that is IPv{expected}"
                            " (all nets in one rule must be of the same IP version)",
                        )


# -------------------------------------------------------------------------- policies


def _check_rule_lists(issues: IssueCollector, ingress: list[Rule]) -> None:
    for index, rule in enumerate(ingress):
        if rule.destination.domains:
            issues.add(
                ("ingress", index, "destination", "domains"),
                "domains are only allowed on egress rules",
            )


def _check_delete(issues: IssueCollector, spec: StrictModel) -> None:
    """A staged Delete carries no spec except its tier (``types`` is cleared anyway)."""
    for name in spec.model_fields_set - {"tier", "staged_action", "types", "policy_types"}:
        field = type(spec).model_fields[name]
        if getattr(spec, name) != field.get_default(call_default_factory=True):
            issues.add(
                (field.alias or name,),
                "must be empty when stagedAction is Delete (only tier may be set)",
            )


class NetworkPolicySpec(StrictModel):
    """Spec of a Calico NetworkPolicy (namespaced)."""

    tier: str = ""
    order: Order | None = None
    selector: Selector = ""
    service_account_selector: Selector = ""
    types: list[PolicyType] = Field(default_factory=list, max_length=2)
    ingress: list[Rule] = Field(default_factory=list, max_length=1024)
    egress: list[Rule] = Field(default_factory=list, max_length=1024)
    performance_hints: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_policy(self) -> NetworkPolicySpec:
        issues = IssueCollector()
        if self.tier:
            problem = dns_label_problem(self.tier)
            if problem is not None:
                issues.add(("tier",), problem)
        if len(set(self.types)) != len(self.types):
            issues.add(("types",), "types must not repeat an entry")
        for index, hint in enumerate(self.performance_hints):
            if hint not in PERFORMANCE_HINTS:
                issues.add(
                    ("performanceHints", index),
                    f"unknown performance hint {hint!r} (expected AssumeNeededOnEveryNode)",
                )
        _check_rule_lists(issues, self.ingress)
        issues.raise_if_any()
        return self


class GlobalNetworkPolicySpec(NetworkPolicySpec):
    """Spec of a Calico GlobalNetworkPolicy (cluster-wide)."""

    namespace_selector: Selector = ""
    do_not_track: StrictBool = False
    pre_dnat: StrictBool = Field(default=False, alias="preDNAT")
    apply_on_forward: StrictBool = False

    @model_validator(mode="after")
    def _check_global(self) -> GlobalNetworkPolicySpec:
        issues = IssueCollector()
        if self.do_not_track and self.pre_dnat:
            issues.add(("preDNAT",), "preDNAT and doNotTrack cannot both be set")
        if self.do_not_track and not self.apply_on_forward:
            issues.add(("applyOnForward",), "doNotTrack requires applyOnForward: true")
        if self.pre_dnat:
            if not self.apply_on_forward:
                issues.add(("applyOnForward",), "preDNAT requires applyOnForward: true")
            if self.egress:
                issues.add(("egress",), "a preDNAT policy cannot have egress rules")
            if "Egress" in self.types:
                issues.add(("types",), "a preDNAT policy cannot have type Egress")
        issues.raise_if_any()
        return self


class StagedNetworkPolicySpec(NetworkPolicySpec):
    """A NetworkPolicy spec plus the staged action."""

    staged_action: StagedAction = "Set"

    @model_validator(mode="after")
    def _check_staged(self) -> StagedNetworkPolicySpec:
        if self.staged_action == "Delete":
            issues = IssueCollector()
            _check_delete(issues, self)
            issues.raise_if_any()
        return self


class StagedGlobalNetworkPolicySpec(GlobalNetworkPolicySpec):
    """A GlobalNetworkPolicy spec plus the staged action."""

    staged_action: StagedAction = "Set"

    @model_validator(mode="after")
    def _check_staged(self) -> StagedGlobalNetworkPolicySpec:
        if self.staged_action == "Delete":
            issues = IssueCollector()
            _check_delete(issues, self)
            issues.raise_if_any()
        return self


class CalicoResource(ResourceBase):
    """Base of ``projectcalico.org/v3`` kinds."""

    API_VERSION: ClassVar[str] = CALICO_API_VERSION
    api_version: str = CALICO_API_VERSION


class TierSpec(StrictModel):
    order: Order | None = None
    default_action: Literal["Deny", "Pass"] = "Deny"


class Tier(CalicoResource):
    """A tier of policies (cluster-scoped); its name is a DNS label."""

    NAME_RULE: ClassVar[NameRule] = "label"

    kind: Literal["Tier"] = "Tier"
    spec: TierSpec = Field(default_factory=TierSpec)


class NetworkPolicy(CalicoResource):
    """A Calico NetworkPolicy (namespaced)."""

    NAMESPACED: ClassVar[bool] = True

    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(CalicoResource):
    """A Calico GlobalNetworkPolicy (cluster-scoped)."""

    kind: Literal["GlobalNetworkPolicy"] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


class StagedNetworkPolicy(CalicoResource):
    """A staged (preview-only) Calico NetworkPolicy."""

    NAMESPACED: ClassVar[bool] = True

    kind: Literal["StagedNetworkPolicy"] = "StagedNetworkPolicy"
    spec: StagedNetworkPolicySpec = Field(default_factory=StagedNetworkPolicySpec)


class StagedGlobalNetworkPolicy(CalicoResource):
    """A staged (preview-only) Calico GlobalNetworkPolicy."""

    kind: Literal["StagedGlobalNetworkPolicy"] = "StagedGlobalNetworkPolicy"
    spec: StagedGlobalNetworkPolicySpec = Field(default_factory=StagedGlobalNetworkPolicySpec)


# ------------------------------------------------------------------- network sets


class NetworkSetSpec(StrictModel):
    nets: list[CalicoNet] = Field(default_factory=list)
    allowed_egress_domains: list[Domain] = Field(default_factory=list)


class NetworkSet(CalicoResource):
    """Named CIDRs (and domains) that rule selectors can match (namespaced)."""

    NAMESPACED: ClassVar[bool] = True

    kind: Literal["NetworkSet"] = "NetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)

    @model_validator(mode="after")
    def _check_labels(self) -> NetworkSet:
        if "projectcalico.org/namespace" in self.metadata.labels:
            issues = IssueCollector()
            issues.add(
                ("metadata", "labels", "projectcalico.org/namespace"),
                "this label is set by Calico and cannot be set on a NetworkSet",
            )
            issues.raise_if_any()
        return self


class GlobalNetworkSet(CalicoResource):
    """Named CIDRs (and domains) that rule selectors can match (cluster-scoped)."""

    kind: Literal["GlobalNetworkSet"] = "GlobalNetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


# ---------------------------------------------------------------------- endpoints


class EndpointPort(StrictModel):
    """A named port on a host endpoint."""

    name: PortName
    protocol: Literal["TCP", "UDP", "SCTP"]
    port: StrictInt = Field(ge=1, le=65535)


class HostEndpointSpec(StrictModel):
    node: str = Field(min_length=1)
    interface_name: str = ""
    expected_i_ps: list[IPAddress] = Field(default_factory=list, alias="expectedIPs")
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> HostEndpointSpec:
        if not self.interface_name and not self.expected_i_ps:
            issues = IssueCollector()
            issues.add((), "at least one of interfaceName and expectedIPs must be set")
            issues.raise_if_any()
        return self


class HostEndpoint(CalicoResource):
    """A host interface (or all of a host's interfaces) that policy applies to."""

    kind: Literal["HostEndpoint"] = "HostEndpoint"
    spec: HostEndpointSpec


class ProfileSpec(StrictModel):
    ingress: list[Rule] = Field(default_factory=list, max_length=1024)
    egress: list[Rule] = Field(default_factory=list, max_length=1024)
    labels_to_apply: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class Profile(CalicoResource):
    """Rules applied after all tiers, and labels inherited by endpoints."""

    kind: Literal["Profile"] = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)


# ----------------------------------------------------------------------- IP pools

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

EncapMode = Literal["Never", "Always", "CrossSubnet"]


class IPPoolSpec(StrictModel):
    """An IP pool (spec 2.7); pools take no part in policy matching."""

    cidr: str
    vxlan_mode: EncapMode | None = None
    ipip_mode: EncapMode | None = None
    nat_outgoing: StrictBool = False
    block_size: StrictInt | None = None
    node_selector: Selector = ""
    namespace_selector: Selector = ""
    disabled: StrictBool = False
    disable_bgp_export: StrictBool = Field(default=False, alias="disableBGPExport")
    allowed_uses: list[Literal["Workload", "Tunnel", "LoadBalancer"]] = Field(default_factory=list)
    assignment_mode: Literal["Automatic", "Manual"] | None = None

    @model_validator(mode="after")
    def _check(self) -> IPPoolSpec:
        issues = IssueCollector()
        try:
            network = ipaddress.ip_network(self.cidr, strict=True)
        except ValueError as err:
            issues.add(("cidr",), f"{self.cidr!r} is not a valid, strictly masked CIDR ({err})")
            issues.raise_if_any()
            return self
        if "/" not in self.cidr:
            issues.add(("cidr",), f"{self.cidr!r} is not a CIDR (expected address/prefix-length)")
        if any(network.overlaps(link_local) for link_local in _LINK_LOCAL):
            issues.add(("cidr",), "an IP pool must not overlap the link-local range")
        vxlan = self.vxlan_mode not in (None, "Never")
        ipip = self.ipip_mode not in (None, "Never")
        if vxlan and ipip:
            issues.add(("ipipMode",), "vxlanMode and ipipMode cannot both be enabled")
        if ipip and network.version == 6:
            issues.add(("ipipMode",), "IPIP is only supported for IPv4 pools")
        if self.block_size is not None:
            low, high = (20, 32) if network.version == 4 else (116, 128)
            if not low <= self.block_size <= high:
                issues.add(
                    ("blockSize",),
                    f"blockSize must be in {low}-{high} for an IPv{network.version} pool",
                )
            elif self.block_size < network.prefixlen:
                issues.add(("blockSize",), "blockSize must not be larger than the pool")
        issues.raise_if_any()
        return self

    @property
    def effective_block_size(self) -> int:
        if self.block_size is not None:
            return self.block_size
        return 26 if ipaddress.ip_network(self.cidr).version == 4 else 122


class IPPool(CalicoResource):
    """A range of pod addresses."""

    kind: Literal["IPPool"] = "IPPool"
    spec: IPPoolSpec
