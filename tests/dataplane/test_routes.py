"""The VXLAN overlay end to end: documents → calc graph per node → RouteManager → kernel.

Two node namespaces on an underlay bridge (in a third, hub namespace), a pod namespace behind
each node wired as the CNI plugin does it (veth, pod /32, default route via 169.254.1.1
onlink, a /32 route on the node). Each node runs its own calc graph fed with the cluster's
Node, IPPool, IPAMBlock, Namespace and Pod documents, and a RouteManager programming its
namespace. Real TCP between the pods must cross the VXLAN tunnel.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_interface, ip_network
from typing import Any

import pytest

from palisade.calc import (
    EndpointIntent,
    PolicyIntent,
    ProfileIntent,
    RouteIntent,
    SetIntent,
    TunnelIntent,
    TunnelPeerIntent,
    build_graph,
)
from palisade.dataplane.linux import RTPROT_PALISADE, FdbEntry, Neighbour, Netlink, Route
from palisade.dataplane.linux._routes import ApplyResult, RouteManager
from palisade.datastore import ResourceKey
from tests.dataplane.conftest import Namespaces
from tests.dataplane.test_netlink import echo, reachable

pytestmark = pytest.mark.root

GATEWAY = "169.254.1.1"


class NoPolicy:
    """A DataplaneCallbacks that ignores policy: this test is about routes."""

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        pass

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        pass

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        pass

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        pass


def node_document(name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                "projectcalico.org/IPv4Address": f"192.168.79.{index}/24",
                "projectcalico.org/IPv4VXLANTunnelAddr": f"10.66.{index}.0",
                "palisade.io/vxlan-mac": f"66:70:61:6c:00:{index:02x}",
            },
        },
        "spec": {"podCIDR": f"10.66.{index}.0/26"},
    }


def cluster() -> list[tuple[ResourceKey, dict[str, Any]]]:
    documents: list[tuple[ResourceKey, dict[str, Any]]] = [
        (
            ResourceKey("IPPool", None, "overlay"),
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": "overlay"},
                "spec": {"cidr": "10.66.0.0/16", "blockSize": 26, "vxlanMode": "Always"},
            },
        ),
        (
            ResourceKey("Namespace", None, "shop"),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        ),
    ]
    for index in (1, 2):
        name = f"node-{index}"
        block = f"10-66-{index}-0-26"
        documents.append((ResourceKey("Node", None, name), node_document(name, index)))
        documents.append(
            (
                ResourceKey("IPAMBlock", None, block),
                {
                    "apiVersion": "ipam.palisade.io/v1",
                    "kind": "IPAMBlock",
                    "metadata": {"name": block},
                    "spec": {
                        "cidr": f"10.66.{index}.0/26",
                        "pool": "overlay",
                        "affinity": f"host:{name}",
                        "allocations": {f"10.66.{index}.2": f"pod-{index}.eth0"},
                    },
                },
            )
        )
        pod_ip = f"10.66.{index}.2"
        documents.append(
            (
                ResourceKey("Pod", "shop", f"pod-{index}"),
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"pod-{index}", "namespace": "shop"},
                    "spec": {"nodeName": name},
                    "status": {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]},
                },
            )
        )
    return documents


def test_pods_on_two_nodes_talk_over_vxlan_and_stop_when_the_node_goes(
    netns: Namespaces,
) -> None:
    hub = netns.new("hub")
    nodes = {1: netns.a, 2: netns.b}
    pods = {1: netns.new("p1"), 2: netns.new("p2")}
    bridge = netns.link("br")
    vxlan = netns.link("vx")
    with Netlink(hub) as h:
        h.create_bridge(bridge)
        h.set_up(bridge)
        for index, node in nodes.items():
            port = netns.link(f"u{index}")
            h.create_veth(port, "eth0", peer_netns=node)
            h.set_master(port, bridge)
            h.set_up(port)
            with Netlink(node) as n, Netlink(pods[index]) as p:
                n.add_address("eth0", ip_interface(f"192.168.79.{index}/24"))
                n.set_up("eth0")
                n.set_up("lo")
                # The pod, wired as the CNI plugin does it.
                host_side = netns.link(f"c{index}")
                n.create_veth(host_side, "eth0", peer_netns=pods[index])
                n.add_address(host_side, ip_interface(f"{GATEWAY}/32"))
                n.set_up(host_side)
                n.add_route(Route(ip_network(f"10.66.{index}.2/32"), None, host_side))
                p.add_address("eth0", ip_interface(f"10.66.{index}.2/32"))
                p.set_up("eth0")
                p.set_up("lo")
                p.add_route(
                    Route(ip_network("0.0.0.0/0"), ip_address(GATEWAY), "eth0", onlink=True)
                )

    managers = {index: RouteManager(node) for index, node in nodes.items()}
    graphs = {
        index: build_graph(f"node-{index}", NoPolicy(), managers[index], vxlan_device=vxlan)
        for index in nodes
    }
    documents = cluster()
    for index, graph in graphs.items():
        # Each node sees the documents in its own order.
        for key, document in documents if index == 1 else list(reversed(documents)):
            graph.on_update(key, document)
        graph.flush()
    assert not reachable(pods[1], "10.66.2.2", timeout=0.5)  # nothing programmed yet

    for manager in managers.values():
        assert manager.apply().changes > 0
    for manager in managers.values():
        assert manager.apply().changes == 0  # idempotent

    with Netlink(nodes[1]) as n1:
        link = n1.link(vxlan)
        assert (link.kind, link.up, link.mac) == ("vxlan", True, "66:70:61:6c:00:01")
        assert n1.routes(protocol=RTPROT_PALISADE, dev=vxlan) == [
            Route(ip_network("10.66.2.0/26"), ip_address("10.66.2.0"), vxlan, onlink=True)
        ]
        mac2 = "66:70:61:6c:00:02"
        assert FdbEntry(mac2, ip_address("192.168.79.2"), vxlan) in n1.fdb_entries(vxlan)
        assert n1.neighbours(dev=vxlan) == [Neighbour(ip_address("10.66.2.0"), mac2, vxlan)]

    assert reachable(pods[1], "10.66.2.2")
    assert reachable(pods[2], "10.66.1.2")
    assert echo(pods[2], pods[1], "10.66.2.2") == "PALISADE"
    assert echo(pods[1], pods[2], "10.66.1.2") == "PALISADE"

    # A restarted agent adopts what is there: a fresh manager has nothing to change.
    fresh = RouteManager(nodes[1])
    adopter = build_graph("node-1", NoPolicy(), fresh, vxlan_device=vxlan)
    for key, document in documents:
        adopter.on_update(key, document)
    adopter.flush()
    assert fresh.apply().changes == 0

    # A stale route of ours on the device goes; another protocol's route stays.
    with Netlink(nodes[1]) as n1:
        stale = Route(ip_network("10.66.9.0/26"), ip_address("10.66.2.0"), vxlan, onlink=True)
        theirs = Route(ip_network("10.66.8.0/26"), ip_address("10.66.2.0"), vxlan, 4, True)
        n1.add_route(stale)
        n1.add_route(theirs)
        assert managers[1].apply().routes == 1
        assert stale not in n1.routes(dev=vxlan)
        assert theirs in n1.routes(dev=vxlan)
        assert n1.delete_route(theirs)

    # Node 2 leaves the cluster (its Node and block documents are deleted): node 1 drops
    # the route, the FDB and the neighbour entry, and the pods can no longer talk.
    for key in (
        ResourceKey("Node", None, "node-2"),
        ResourceKey("IPAMBlock", None, "10-66-2-0-26"),
    ):
        graphs[1].on_update(key, None)
    graphs[1].flush()
    assert managers[1].apply().changes == 3
    with Netlink(nodes[1]) as n1:
        assert n1.routes(protocol=RTPROT_PALISADE, dev=vxlan) == []
        assert [e for e in n1.fdb_entries(vxlan) if e.dst_ip is not None] == []
        assert n1.neighbours(dev=vxlan) == []
    assert not reachable(pods[1], "10.66.2.2", timeout=0.5)

    # Node 1 itself goes: its device goes with it.
    graphs[1].on_update(ResourceKey("Node", None, "node-1"), None)
    graphs[1].flush()
    assert managers[1].apply().links == 1
    with Netlink(nodes[1]) as n1:
        assert n1.find_link(vxlan) is None


def test_route_manager_follows_changes_to_tunnel_and_peers(netns: Namespaces) -> None:
    """Intents fed directly: a new MAC, tunnel address or VNI, and a peer that moves."""
    underlay, vxlan = netns.link("br"), netns.link("vx")
    with Netlink(netns.a) as a:
        a.create_bridge(underlay)
        a.add_address(underlay, ip_interface("192.168.80.1/24"))
        a.set_up(underlay)
    manager = RouteManager(netns.a)
    tunnel = TunnelIntent(vxlan, 7, IPv4Address("192.168.80.1"), IPv4Address("10.67.1.0"), None)
    peer = TunnelPeerIntent(
        "node-2", IPv4Address("192.168.80.2"), IPv4Address("10.67.2.0"), "66:70:61:6c:00:02"
    )
    route = RouteIntent(IPv4Network("10.67.2.0/26"), IPv4Address("10.67.2.0"), vxlan)
    manager.on_tunnel_update(vxlan, tunnel)
    manager.on_tunnel_peer_update("node-2", peer)
    manager.on_route_update("10.67.2.0/26", route)
    assert manager.apply() == ApplyResult(links=3, fdb=1, neighbours=1, routes=1)
    kernel_mac = manager.device_mac()
    assert kernel_mac is not None  # no MAC announced: the kernel's stays (the agent publishes it)

    with Netlink(netns.a) as a:
        manager.on_tunnel_update(vxlan, replace(tunnel, mac="66:70:61:6c:00:01"))
        assert manager.apply().links == 1
        assert manager.device_mac() == "66:70:61:6c:00:01"

        manager.on_tunnel_update(vxlan, replace(tunnel, tunnel_ip=IPv4Address("10.67.1.1")))
        assert manager.apply().links == 2  # the old /32 out, the new one in (MAC kept)
        assert [x.interface for x in a.addresses(vxlan) if x.interface.version == 4] == [
            ip_interface("10.67.1.1/32")
        ]

        moved = replace(peer, underlay_ip=IPv4Address("192.168.80.3"), mac="66:70:61:6c:00:03")
        manager.on_tunnel_peer_update("node-2", moved)
        assert manager.apply() == ApplyResult(fdb=2, neighbours=1)
        assert [e for e in a.fdb_entries(vxlan) if e.dst_ip is not None] == [
            FdbEntry("66:70:61:6c:00:03", IPv4Address("192.168.80.3"), vxlan)
        ]
        assert a.neighbours(dev=vxlan) == [
            Neighbour(IPv4Address("10.67.2.0"), "66:70:61:6c:00:03", vxlan)
        ]

        # A new VNI cannot be set on a live device: it is recreated and reprogrammed.
        index = a.link(vxlan).index
        manager.on_tunnel_update(vxlan, replace(tunnel, vni=8, tunnel_ip=IPv4Address("10.67.1.1")))
        result = manager.apply()
        assert result.links >= 2 and result.fdb == 1 and result.routes == 1
        assert a.link(vxlan).index != index
        assert a.routes(protocol=RTPROT_PALISADE, dev=vxlan) == [
            Route(ip_network("10.67.2.0/26"), ip_address("10.67.2.0"), vxlan, onlink=True)
        ]
        assert manager.apply().changes == 0

        manager.on_route_update("10.67.2.0/26", None)
        manager.on_tunnel_peer_update("node-2", None)
        manager.on_tunnel_update(vxlan, None)
        assert manager.apply() == ApplyResult(links=1)
        assert a.find_link(vxlan) is None
        assert manager.apply().changes == 0
