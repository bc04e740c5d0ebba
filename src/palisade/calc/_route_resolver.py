"""The route resolver: Node, IPPool and IPAMBlock documents in; this node's VXLAN overlay out.

The node model (a cluster-scoped ``Node`` document, ``apiVersion: v1``)::

    kind: Node
    metadata:
      name: node-1
      annotations:
        projectcalico.org/IPv4Address: 192.168.77.1/24        # underlay address[/prefix]
        projectcalico.org/IPv4VXLANTunnelAddr: 10.65.0.0      # this node's VTEP address
        palisade.io/vxlan-mac: 66:70:61:6c:00:01              # its VXLAN device's MAC
    spec: {podCIDR: 10.65.0.0/26}                              # optional, not used for routes

As fallbacks, a Calico ``projectcalico.org/v3`` Node's ``spec.bgp.ipv4Address``,
``spec.ipv4VXLANTunnelAddr`` and ``spec.vxlanTunnelMACAddr``, and the first ``InternalIP`` of
``status.addresses`` (underlay) are read. A value that does not parse counts as absent.

What comes out, for the local node:

- a :class:`TunnelIntent` once the local node has an underlay and a tunnel address and at
  least one IPPool has VXLAN on (``vxlanMode`` ``Always`` or ``CrossSubnet``; this lab's nodes
  share one underlay subnet, so CrossSubnet is treated as Always);
- a :class:`TunnelPeerIntent` per other node with underlay address, tunnel address and MAC;
- a :class:`RouteIntent` per IPAM block (``spec.cidr``, ``spec.pool``,
  ``spec.affinity: host:<node>``) of a VXLAN pool whose node is such a peer.

Only IPv4 is routed (the annotations are IPv4). The local node's own blocks get no route (the
CNI plugin routes each pod's /32). Everything is recomputed on :meth:`RouteResolver.flush`
when a relevant document changed — nodes and blocks are few next to endpoints and policies —
and the sequencer passes on only what differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from ._intents import RouteIntent, TunnelIntent, TunnelPeerIntent

NODE_KIND = "Node"
IPPOOL_KIND = "IPPool"
IPAM_BLOCK_KIND = "IPAMBlock"
ROUTE_KINDS = frozenset({NODE_KIND, IPPOOL_KIND, IPAM_BLOCK_KIND})

UNDERLAY_ANNOTATION = "projectcalico.org/IPv4Address"
TUNNEL_ADDRESS_ANNOTATION = "projectcalico.org/IPv4VXLANTunnelAddr"
VXLAN_MAC_ANNOTATION = "palisade.io/vxlan-mac"

#: The VXLAN device's default name and VNI (Calico uses ``vxlan.calico`` and 4096).
VXLAN_DEVICE = "pal-vxlan"
VXLAN_VNI = 4096

#: vxlanMode values that turn the overlay on for a pool.
VXLAN_MODES = frozenset({"Always", "CrossSubnet"})

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the overlay needs from a Node document; a field that is missing is ``None``."""

    underlay_ip: IPv4Address | None
    tunnel_ip: IPv4Address | None
    mac: str | None


@dataclass(frozen=True, slots=True)
class BlockInfo:
    cidr: IPv4Network
    pool: str
    node: str | None


def _ipv4(value: Any) -> IPv4Address | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return IPv4Interface(value).ip  # "a.b.c.d" or "a.b.c.d/nn"
    except ValueError:
        return None


def _mac(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    mac = value.strip().lower()
    return mac if _MAC.match(mac) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_node(document: Mapping[str, Any]) -> NodeInfo:
    """The underlay address, VTEP address and VXLAN MAC a Node document announces."""
    annotations = _mapping(_mapping(document.get("metadata")).get("annotations"))
    spec = _mapping(document.get("spec"))
    underlay = _ipv4(annotations.get(UNDERLAY_ANNOTATION)) or _ipv4(
        _mapping(spec.get("bgp")).get("ipv4Address")
    )
    if underlay is None:
        addresses = _mapping(document.get("status")).get("addresses")
        for entry in addresses if isinstance(addresses, list) else []:
            entry = _mapping(entry)
            if entry.get("type") == "InternalIP" and (found := _ipv4(entry.get("address"))):
                underlay = found
                break
    tunnel = _ipv4(annotations.get(TUNNEL_ADDRESS_ANNOTATION)) or _ipv4(
        spec.get("ipv4VXLANTunnelAddr")
    )
    mac = _mac(annotations.get(VXLAN_MAC_ANNOTATION)) or _mac(spec.get("vxlanTunnelMACAddr"))
    return NodeInfo(underlay, tunnel, mac)


def parse_pool_vxlan(document: Mapping[str, Any]) -> bool:
    """Whether an IPPool document turns VXLAN on (``Always`` or ``CrossSubnet``)."""
    return _mapping(document.get("spec")).get("vxlanMode") in VXLAN_MODES


def parse_block(document: Mapping[str, Any]) -> BlockInfo | None:
    """An IPv4 IPAMBlock's CIDR, pool and affine node; ``None`` for anything else."""
    spec = _mapping(document.get("spec"))
    try:
        cidr = IPv4Network(str(spec.get("cidr")), strict=True)
    except ValueError:
        return None
    affinity = spec.get("affinity")
    node = None
    if isinstance(affinity, str) and affinity.startswith("host:") and len(affinity) > 5:
        node = affinity[5:]
    return BlockInfo(cidr, str(spec.get("pool") or ""), node)


class RouteResolver:
    """Keeps the overlay documents and emits this node's tunnel, peers and routes on flush."""

    def __init__(
        self,
        node_name: str,
        on_tunnel: Callable[[str, TunnelIntent | None], None],
        on_peer: Callable[[str, TunnelPeerIntent | None], None],
        on_route: Callable[[str, RouteIntent | None], None],
        device: str = VXLAN_DEVICE,
        vni: int = VXLAN_VNI,
    ) -> None:
        self._node = node_name
        self._on_tunnel = on_tunnel
        self._on_peer = on_peer
        self._on_route = on_route
        self._device = device
        self._vni = vni
        self._nodes: dict[str, NodeInfo] = {}
        self._vxlan_pools: dict[str, bool] = {}
        self._blocks: dict[str, BlockInfo] = {}
        self._dirty = False
        self._tunnel: str | None = None
        self._peers: set[str] = set()
        self._routes: set[str] = set()

    def on_update(self, kind: str, name: str, document: Mapping[str, Any] | None) -> None:
        """A Node, IPPool or IPAMBlock document changed (``None``: deleted)."""
        if kind == NODE_KIND:
            if document is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = parse_node(document)
        elif kind == IPPOOL_KIND:
            if document is None:
                self._vxlan_pools.pop(name, None)
            else:
                self._vxlan_pools[name] = parse_pool_vxlan(document)
        elif kind == IPAM_BLOCK_KIND:
            block = parse_block(document) if document is not None else None
            if block is None:
                self._blocks.pop(name, None)
            else:
                self._blocks[name] = block
        else:
            return
        self._dirty = True

    def flush(self) -> None:
        """Recompute the overlay if anything changed and report every intent (and removals)."""
        if not self._dirty:
            return
        self._dirty = False
        tunnels: dict[str, TunnelIntent] = {}
        peers: dict[str, TunnelPeerIntent] = {}
        routes: dict[str, RouteIntent] = {}
        local = self._nodes.get(self._node)
        if (
            local is not None
            and local.underlay_ip is not None
            and local.tunnel_ip is not None
            and any(self._vxlan_pools.values())
        ):
            tunnels[self._device] = TunnelIntent(
                self._device, self._vni, local.underlay_ip, local.tunnel_ip, local.mac
            )
            for name, info in self._nodes.items():
                if name == self._node or None in (info.underlay_ip, info.tunnel_ip, info.mac):
                    continue
                assert info.underlay_ip and info.tunnel_ip and info.mac
                peers[name] = TunnelPeerIntent(name, info.underlay_ip, info.tunnel_ip, info.mac)
            for block in self._blocks.values():
                peer = peers.get(block.node or "")
                if peer is not None and self._vxlan_pools.get(block.pool, False):
                    routes[str(block.cidr)] = RouteIntent(block.cidr, peer.tunnel_ip, self._device)
        self._report(tunnels, self._on_tunnel, self._tunnel_ids())
        self._report(peers, self._on_peer, self._peers)
        self._report(routes, self._on_route, self._routes)
        self._tunnel = next(iter(tunnels), None)
        self._peers = set(peers)
        self._routes = set(routes)

    def _tunnel_ids(self) -> set[str]:
        return {self._tunnel} if self._tunnel is not None else set()

    @staticmethod
    def _report(
        wanted: Mapping[str, Any], sink: Callable[[str, Any], None], previous: set[str]
    ) -> None:
        for object_id, intent in wanted.items():
            sink(object_id, intent)
        for object_id in previous - set(wanted):
            sink(object_id, None)
