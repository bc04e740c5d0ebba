"""The overlay part of the graph: Node, IPPool and IPAMBlock documents → tunnel, peers, routes.

Pure: no kernel. A recording route dataplane checks the sequencing contract on every call
(nothing refers to a tunnel that is not there; a tunnel is never removed under its peers or
routes; a route's VTEP is a known peer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from palisade.calc import (
    RouteCallbacks,
    RouteIntent,
    TunnelIntent,
    TunnelPeerIntent,
    build_graph,
    parse_node,
)
from palisade.datastore import ResourceKey
from tests.calc.dataplane import OrderError, RecordingDataplane

DEVICE = "pal-vxlan"


@dataclass
class RecordingRoutes:
    """Applies the overlay callbacks to a state, checking each one's dependencies."""

    tunnels: dict[str, TunnelIntent] = field(default_factory=dict)
    peers: dict[str, TunnelPeerIntent] = field(default_factory=dict)
    routes: dict[str, RouteIntent] = field(default_factory=dict)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)

    def on_tunnel_update(self, device: str, tunnel: TunnelIntent | None) -> None:
        self.calls.append(("tunnel", device, tunnel is not None))
        if tunnel is None:
            if self.peers or self.routes:
                raise OrderError(f"tunnel {device} removed under {self.peers} {self.routes}")
            del self.tunnels[device]
        else:
            self.tunnels[device] = tunnel

    def on_tunnel_peer_update(self, node: str, peer: TunnelPeerIntent | None) -> None:
        self.calls.append(("peer", node, peer is not None))
        if peer is None:
            vteps = {route.via_tunnel_ip for route in self.routes.values()}
            if self.peers[node].tunnel_ip in vteps:
                raise OrderError(f"peer {node} removed while a route uses it")
            del self.peers[node]
        else:
            if not self.tunnels:
                raise OrderError(f"peer {node} before the tunnel")
            self.peers[node] = peer

    def on_route_update(self, dst_cidr: str, route: RouteIntent | None) -> None:
        self.calls.append(("route", dst_cidr, route is not None))
        if route is None:
            del self.routes[dst_cidr]
            return
        if route.device not in self.tunnels:
            raise OrderError(f"route {dst_cidr} before its device")
        if route.via_tunnel_ip not in {peer.tunnel_ip for peer in self.peers.values()}:
            raise OrderError(f"route {dst_cidr} via an unknown VTEP")
        self.routes[dst_cidr] = route

    def state(self) -> tuple[object, ...]:
        return dict(self.tunnels), dict(self.peers), dict(self.routes)


def node(name: str, index: int, mac: bool = True) -> tuple[ResourceKey, dict[str, Any]]:
    annotations = {
        "projectcalico.org/IPv4Address": f"192.168.77.{index}/24",
        "projectcalico.org/IPv4VXLANTunnelAddr": f"10.65.{index}.0",
    }
    if mac:
        annotations["palisade.io/vxlan-mac"] = f"66:70:61:6C:00:{index:02x}"
    return ResourceKey("Node", None, name), {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": annotations},
    }


def pool(name: str, cidr: str, mode: str | None) -> tuple[ResourceKey, dict[str, Any]]:
    spec: dict[str, Any] = {"cidr": cidr, "blockSize": 24}
    if mode is not None:
        spec["vxlanMode"] = mode
    return ResourceKey("IPPool", None, name), {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def block(cidr: str, pool_name: str, node_name: str | None) -> tuple[ResourceKey, dict[str, Any]]:
    name = cidr.replace(".", "-").replace("/", "-")
    spec: dict[str, Any] = {"cidr": cidr, "pool": pool_name, "allocations": {}}
    if node_name is not None:
        spec["affinity"] = f"host:{node_name}"
    return ResourceKey("IPAMBlock", None, name), {
        "apiVersion": "ipam.palisade.io/v1",
        "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": spec,
    }


CLUSTER = [
    node("node-1", 1),
    node("node-2", 2),
    node("node-3", 3),
    node("node-4", 4, mac=False),  # no MAC yet: not a peer, its blocks get no route
    pool("vx", "10.65.0.0/16", "Always"),
    pool("cross", "10.70.0.0/16", "CrossSubnet"),
    pool("plain", "10.80.0.0/16", None),
    block("10.65.1.0/24", "vx", "node-1"),
    block("10.65.2.0/24", "vx", "node-2"),
    block("10.65.3.0/24", "vx", "node-3"),
    block("10.65.4.0/24", "vx", "node-4"),
    block("10.65.5.0/24", "vx", None),
    block("10.70.2.0/24", "cross", "node-2"),
    block("10.80.2.0/24", "plain", "node-2"),
    block("10.90.2.0/24", "no-such-pool", "node-2"),
    (
        ResourceKey("Namespace", None, "default"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
    ),
]


def run(
    documents: list[tuple[ResourceKey, dict[str, Any] | None]],
    node_name: str = "node-1",
    flush_each: bool = False,
) -> RecordingRoutes:
    routes = RecordingRoutes()
    graph = build_graph(node_name, RecordingDataplane(), routes)
    for key, document in documents:
        graph.on_update(key, document)
        if flush_each:
            graph.flush()
    graph.flush()
    return routes


def expected_node1() -> tuple[object, ...]:
    def peer(index: int) -> TunnelPeerIntent:
        return TunnelPeerIntent(
            f"node-{index}",
            IPv4Address(f"192.168.77.{index}"),
            IPv4Address(f"10.65.{index}.0"),
            f"66:70:61:6c:00:{index:02x}",
        )

    def route(cidr: str, index: int) -> RouteIntent:
        return RouteIntent(IPv4Network(cidr), IPv4Address(f"10.65.{index}.0"), DEVICE)

    tunnel = TunnelIntent(
        DEVICE, 4096, IPv4Address("192.168.77.1"), IPv4Address("10.65.1.0"), "66:70:61:6c:00:01"
    )
    return (
        {DEVICE: tunnel},
        {"node-2": peer(2), "node-3": peer(3)},
        {
            "10.65.2.0/24": route("10.65.2.0/24", 2),
            "10.65.3.0/24": route("10.65.3.0/24", 3),
            "10.70.2.0/24": route("10.70.2.0/24", 2),
        },
    )


def test_cluster_gives_tunnel_peers_and_routes_of_vxlan_pools_only() -> None:
    assert run(list(CLUSTER)).state() == expected_node1()


@pytest.mark.parametrize("seed", range(40))
def test_any_document_order_gives_the_same_intents(seed: int) -> None:
    documents: list[tuple[ResourceKey, dict[str, Any] | None]] = list(CLUSTER)
    random.Random(seed).shuffle(documents)
    assert run(documents, flush_each=seed % 2 == 0).state() == expected_node1()


def test_removing_a_node_removes_its_peer_and_routes_routes_first() -> None:
    routes = RecordingRoutes()
    graph = build_graph("node-1", RecordingDataplane(), routes)
    for key, document in CLUSTER:
        graph.on_update(key, document)
    graph.flush()
    routes.calls.clear()

    graph.on_update(ResourceKey("Node", None, "node-2"), None)
    graph.flush()
    assert set(routes.peers) == {"node-3"}
    assert set(routes.routes) == {"10.65.3.0/24"}
    assert routes.calls == [
        ("route", "10.65.2.0/24", False),
        ("route", "10.70.2.0/24", False),
        ("peer", "node-2", False),
    ]

    # The node comes back: peer before its routes.
    routes.calls.clear()
    key, document = node("node-2", 2)
    graph.on_update(key, document)
    graph.flush()
    assert routes.state() == expected_node1()
    assert routes.calls[0] == ("peer", "node-2", True)


def test_removing_the_pool_or_the_local_node_tears_down_in_reverse() -> None:
    routes = RecordingRoutes()
    graph = build_graph("node-1", RecordingDataplane(), routes)
    for key, document in CLUSTER:
        graph.on_update(key, document)
    graph.flush()

    graph.on_update(ResourceKey("IPPool", None, "cross"), None)
    graph.flush()
    assert set(routes.routes) == {"10.65.2.0/24", "10.65.3.0/24"}

    routes.calls.clear()
    graph.on_update(ResourceKey("Node", None, "node-1"), None)
    assert graph.flush() == 5
    assert routes.state() == ({}, {}, {})
    assert [kind for kind, _, _ in routes.calls] == ["route", "route", "peer", "peer", "tunnel"]


def test_no_vxlan_pool_no_tunnel() -> None:
    documents: list[tuple[ResourceKey, dict[str, Any] | None]] = [
        node("node-1", 1),
        node("node-2", 2),
        pool("plain", "10.80.0.0/16", "Never"),
        block("10.80.2.0/24", "plain", "node-2"),
    ]
    assert run(documents).state() == ({}, {}, {})


def test_block_moving_to_another_node_moves_its_route() -> None:
    routes = RecordingRoutes()
    graph = build_graph("node-1", RecordingDataplane(), routes)
    for key, document in CLUSTER:
        graph.on_update(key, document)
    graph.flush()
    routes.calls.clear()
    key, document = block("10.65.2.0/24", "vx", "node-3")
    graph.on_update(key, document)
    graph.flush()
    assert routes.calls == [("route", "10.65.2.0/24", True)]
    assert routes.routes["10.65.2.0/24"].via_tunnel_ip == IPv4Address("10.65.3.0")


def test_dataplane_without_route_callbacks_ignores_overlay_documents() -> None:
    dataplane = RecordingDataplane()
    assert not isinstance(dataplane, RouteCallbacks)
    graph = build_graph("node-1", dataplane)
    for key, document in CLUSTER:
        graph.on_update(key, document)
    assert graph.flush() == 0
    assert dataplane.empty


def test_a_dataplane_implementing_both_protocols_gets_routes() -> None:
    class Both(RecordingDataplane, RecordingRoutes):
        def __init__(self) -> None:
            RecordingDataplane.__init__(self)
            RecordingRoutes.__init__(self)

    both = Both()
    graph = build_graph("node-1", both)
    for key, document in CLUSTER:
        graph.on_update(key, document)
    graph.flush()
    assert RecordingRoutes.state(both) == expected_node1()


def test_node_document_fallbacks_and_bad_values() -> None:
    calico = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": "n"},
        "spec": {
            "bgp": {"ipv4Address": "192.168.1.5/24"},
            "ipv4VXLANTunnelAddr": "10.1.0.1",
            "vxlanTunnelMACAddr": "AA:BB:CC:DD:EE:FF",
        },
    }
    info = parse_node(calico)
    assert (info.underlay_ip, info.tunnel_ip, info.mac) == (
        IPv4Address("192.168.1.5"),
        IPv4Address("10.1.0.1"),
        "aa:bb:cc:dd:ee:ff",
    )
    status = {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.6"}]}}
    assert parse_node(status).underlay_ip == IPv4Address("192.168.1.6")
    bad = {
        "metadata": {
            "annotations": {
                "projectcalico.org/IPv4Address": "nope",
                "projectcalico.org/IPv4VXLANTunnelAddr": "fd00::1",
                "palisade.io/vxlan-mac": "zz",
            }
        }
    }
    info = parse_node(bad)
    assert (info.underlay_ip, info.tunnel_ip, info.mac) == (None, None, None)
