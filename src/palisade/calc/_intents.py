"""What the calculation graph tells a dataplane: frozen intents and the callback protocol.

Intents name each other by id only (a rule names its IP sets, an endpoint names its policies and
profiles), so a dataplane can program each object once and share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol, runtime_checkable

from palisade.policy import Action


@dataclass(frozen=True, slots=True)
class IPSetIntent:
    """Addresses of everything a selector matches: endpoint /32 or /128s, network-set nets.

    IPv4 and IPv6 members share one set; a dataplane with typed sets splits them by family.
    """

    set_id: str
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class NamedPortSetIntent:
    """``ip,proto:port`` members (``10.0.0.5,tcp:8080``) for one named port and selector."""

    set_id: str
    members: frozenset[str]


SetIntent = IPSetIntent | NamedPortSetIntent


@dataclass(frozen=True, slots=True)
class PortsIntent:
    """A ``ports``/``notPorts`` list: numeric ranges (inclusive) or named-port set membership."""

    ranges: tuple[tuple[int, int], ...] = ()
    named_port_set_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges or self.named_port_set_ids)


@dataclass(frozen=True, slots=True)
class ICMPIntent:
    type: int | None
    code: int | None


@dataclass(frozen=True, slots=True)
class EntityIntent:
    """One side of a rule. Every present field must match (an absent one matches anything).

    ``nets is None`` means no nets restriction; ``selector_set_id`` names an :class:`IPSetIntent`
    the address must be in; ``not_selector_set_id`` one it must not be in. ``service_set_id``
    (source side) is an IP set of a Service's addresses; ``service_port_set_id`` (destination
    side) is a named-port-style set of its ``ip,proto:port`` triples.
    """

    nets: tuple[str, ...] | None = None
    not_nets: tuple[str, ...] = ()
    selector_set_id: str | None = None
    not_selector_set_id: str | None = None
    ports: PortsIntent = PortsIntent()
    not_ports: PortsIntent = PortsIntent()
    service_set_id: str | None = None
    service_port_set_id: str | None = None


@dataclass(frozen=True, slots=True)
class RuleIntent:
    """One compiled rule; ``rule_index`` is its position in the source policy (attribution)."""

    rule_index: int
    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: ICMPIntent | None = None
    not_icmp: ICMPIntent | None = None
    source: EntityIntent = EntityIntent()
    destination: EntityIntent = EntityIntent()


@dataclass(frozen=True, slots=True)
class PolicyIntent:
    """A policy's rules; ``policy_id`` is its Calico hit part (``np:ns/name``, ``gnp:name``…)."""

    policy_id: str
    ingress: tuple[RuleIntent, ...]
    egress: tuple[RuleIntent, ...]


@dataclass(frozen=True, slots=True)
class ProfileIntent:
    """A profile's rules (``kns.<ns>``, ``ksa.<ns>.<sa>`` or a Profile resource)."""

    profile_id: str
    ingress: tuple[RuleIntent, ...]
    egress: tuple[RuleIntent, ...]


@dataclass(frozen=True, slots=True)
class TierChain:
    """One tier of an endpoint's pipeline: its applying policies in evaluation order.

    No rule matching in any policy means ``default_action`` (Deny or Pass). Staged policies are
    never listed, so ``has_enforced`` is true whenever ``policy_ids`` is non-empty; it is kept so
    a renderer need not know that.
    """

    tier: str
    default_action: Action
    policy_ids: tuple[str, ...]
    has_enforced: bool


@dataclass(frozen=True, slots=True)
class EndpointIntent:
    """A local endpoint's ordered chains. After the tiers come the profiles in order; an
    endpoint whose traffic no tier and no profile decides is denied.

    ``deny_all`` marks an endpoint whose inputs are incomplete (see the package docstring): its
    chains and profiles are empty and everything to and from it must be dropped.
    """

    endpoint_id: str
    node: str
    interface: str | None
    ips: tuple[str, ...]
    ingress_tiers: tuple[TierChain, ...]
    egress_tiers: tuple[TierChain, ...]
    profile_ids: tuple[str, ...]
    deny_all: bool = False


@dataclass(frozen=True, slots=True)
class TunnelIntent:
    """This node's VXLAN device: send from ``local_underlay_ip``; own ``tunnel_ip`` (a /32).

    ``mac`` is the MAC the node's document announces for the device (``None``: none yet — the
    device keeps the kernel's and the agent should publish it, so peers can reach it).
    """

    device: str
    vni: int
    local_underlay_ip: IPv4Address
    tunnel_ip: IPv4Address
    mac: str | None


@dataclass(frozen=True, slots=True)
class TunnelPeerIntent:
    """A remote node's VTEP: frames for ``mac`` go to ``underlay_ip``; ``tunnel_ip`` is at
    ``mac`` (a permanent neighbour entry on the local VXLAN device)."""

    node: str
    underlay_ip: IPv4Address
    tunnel_ip: IPv4Address
    mac: str


@dataclass(frozen=True, slots=True)
class RouteIntent:
    """A remote IPAM block: ``dst_cidr`` via the remote VTEP ``via_tunnel_ip`` on ``device``
    (``onlink``: the VTEP address has no covering subnet route)."""

    dst_cidr: IPv4Network
    via_tunnel_ip: IPv4Address
    device: str


class DataplaneCallbacks(Protocol):
    """The dataplane side of the contract; ``None`` means remove."""

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None: ...

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None: ...

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None: ...

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None: ...


@runtime_checkable
class RouteCallbacks(Protocol):
    """The overlay side of the contract (tunnel device, peers, routes); ``None`` means remove.

    Ids: the tunnel its device name, a peer its node name, a route its destination CIDR.
    Optional: a dataplane that implements only :class:`DataplaneCallbacks` never hears of
    routes (see ``build_graph``).
    """

    def on_tunnel_update(self, device: str, tunnel: TunnelIntent | None) -> None: ...

    def on_tunnel_peer_update(self, node: str, peer: TunnelPeerIntent | None) -> None: ...

    def on_route_update(self, dst_cidr: str, route: RouteIntent | None) -> None: ...
