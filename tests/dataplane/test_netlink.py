"""The netlink driver against the real kernel, inside namespaces each test makes itself.

Reachability is probed with a TCP connect from inside a namespace (``ping`` is not installed
everywhere): a completed handshake or a refusal (RST) both prove packets went there and back;
a timeout or an unreachable error means they did not.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess
import sys
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from palisade.dataplane.linux import (
    RTPROT_PALISADE,
    Address,
    FdbEntry,
    Neighbour,
    Netlink,
    NetlinkError,
    Route,
    create_netns,
    delete_netns,
    list_netns,
    run_in_netns,
    sweep,
    sweep_links,
    sweep_routes,
)
from tests.dataplane.conftest import Namespaces

pytestmark = pytest.mark.root

RTPROT_STATIC = 4

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except ConnectionRefusedError:
    pass
except OSError as exc:
    print(exc)
    sys.exit(1)
"""

ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(10)
print("ready", flush=True)
connection, _ = server.accept()
connection.sendall(connection.recv(64).upper())
connection.close()
"""

ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as connection:
    connection.sendall(b"palisade")
    print(connection.recv(64).decode())
"""


def reachable(netns: str, ip: str, timeout: float = 1.0) -> bool:
    """Whether a TCP SYN from ``netns`` to port 9 of ``ip`` gets any answer."""
    result = run_in_netns(netns, [sys.executable, "-c", PROBE, ip, "9", str(timeout)])
    return result.returncode == 0


def echo(server_netns: str, client_netns: str, ip: str, port: int = 7000) -> str:
    """Send a payload from ``client_netns`` to an echo server in ``server_netns``."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_netns, sys.executable, "-c", ECHO_SERVER, ip, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = run_in_netns(
            client_netns, [sys.executable, "-c", ECHO_CLIENT, ip, str(port)], check=True
        )
        return client.stdout.strip()
    finally:
        server.kill()
        server.communicate()


def wire(
    left: Netlink, left_link: str, left_ip: str, right: Netlink, right_link: str, right_ip: str
) -> None:
    """A veth pair between two namespaces, addressed and up on both ends (lo up too)."""
    assert right.netns is not None
    left.create_veth(left_link, right_link, peer_netns=right.netns)
    left.add_address(left_link, ip_interface(left_ip))
    right.add_address(right_link, ip_interface(right_ip))
    for nl, link in ((left, left_link), (right, right_link), (left, "lo"), (right, "lo")):
        nl.set_up(link)


def test_veth_pair_connects_two_namespaces(netns: Namespaces) -> None:
    va, vb = netns.link("va"), netns.link("vb")
    with Netlink(netns.a) as a, Netlink(netns.b) as b:
        assert not reachable(netns.a, "10.77.0.2", timeout=0.3)  # nothing wired yet
        wire(a, va, "10.77.0.1/24", b, vb, "10.77.0.2/24")
        a.set_mtu(va, 1400)

        link = a.link(va)
        assert (link.kind, link.up, link.mtu, link.netns) == ("veth", True, 1400, netns.a)
        assert link.mac is not None and len(link.mac.split(":")) == 6
        assert b.link(vb).kind == "veth" and a.find_link(vb) is None
        assert Address(ip_interface("10.77.0.1/24"), va) in a.addresses(va)
        assert [x.interface for x in b.addresses(vb) if x.interface.version == 4] == [
            ip_interface("10.77.0.2/24")
        ]

        assert reachable(netns.a, "10.77.0.2")
        assert reachable(netns.b, "10.77.0.1")
        assert echo(netns.b, netns.a, "10.77.0.2") == "PALISADE"

        assert a.delete_address(va, ip_interface("10.77.0.1/24"))
        assert not a.delete_address(va, ip_interface("10.77.0.1/24"))
        assert not reachable(netns.a, "10.77.0.2", timeout=0.3)


def test_bridge_connects_three_namespaces(netns: Namespaces) -> None:
    hub = netns.new("hub")
    bridge, port_a, port_b = netns.link("br"), netns.link("pa"), netns.link("pb")
    with Netlink(hub) as h, Netlink(netns.a) as a, Netlink(netns.b) as b:
        h.create_bridge(bridge)
        h.create_veth(port_a, "eth0", peer_netns=netns.a)
        h.create_veth(port_b, "eth0", peer_netns=netns.b)
        for port in (port_a, port_b):
            h.set_master(port, bridge)
            h.set_up(port)
        h.set_up(bridge)
        a.add_address("eth0", ip_interface("10.78.0.1/24"))
        b.add_address("eth0", ip_interface("10.78.0.2/24"))
        for nl in (a, b):
            nl.set_up("eth0")
            nl.set_up("lo")

        assert h.link(bridge).kind == "bridge"
        assert {link.name for link in h.links() if link.master == bridge} == {port_a, port_b}
        assert reachable(netns.a, "10.78.0.2")
        assert echo(netns.a, netns.b, "10.78.0.1") == "PALISADE"

        h.set_master(port_b, None)
        assert h.link(port_b).master is None
        assert not reachable(netns.a, "10.78.0.2", timeout=0.3)


def test_routes_listed_and_filtered_by_protocol(netns: Namespaces) -> None:
    va, vb = netns.link("va"), netns.link("vb")
    with Netlink(netns.a) as a, Netlink(netns.b) as b:
        wire(a, va, "10.79.0.1/24", b, vb, "10.79.0.2/24")
        ours = Route(ip_network("10.80.1.0/24"), ip_address("10.79.0.2"), va)
        ours_v6 = Route(ip_network("fd00:80::/64"), None, va)
        theirs = Route(ip_network("10.80.2.0/24"), ip_address("10.79.0.2"), va, RTPROT_STATIC)
        for route in (ours, ours_v6, theirs):
            a.add_route(route)

        assert a.routes(protocol=RTPROT_PALISADE) == [ours, ours_v6]
        assert a.routes(protocol=RTPROT_STATIC) == [theirs]
        everything = a.routes()
        assert {ours, ours_v6, theirs} <= set(everything)
        assert Route(ip_network("10.79.0.0/24"), None, va, 2) in everything  # the kernel's
        assert a.routes(protocol=RTPROT_PALISADE, dev="lo") == []

        with pytest.raises(NetlinkError) as excinfo:
            a.add_route(ours)
        assert excinfo.value.errno == errno.EEXIST
        assert "add_route" in str(excinfo.value) and "10.80.1.0/24" in str(excinfo.value)

        moved = Route(ours.dst, ip_address("10.79.0.3"), va, onlink=True)
        a.replace_route(moved)
        assert a.routes(protocol=RTPROT_PALISADE) == [moved, ours_v6]

        # The route is used: b answers a connection to 10.80.1.1 once it owns that address.
        b.add_address(vb, ip_interface("10.80.1.1/32"))
        b.add_route(Route(ip_network("10.79.0.0/16"), None, vb))
        a.replace_route(ours)
        assert reachable(netns.a, "10.80.1.1")

        assert a.delete_route(ours)
        assert not a.delete_route(ours)
        wrong_protocol = Route(theirs.dst, theirs.gateway, va, RTPROT_PALISADE)
        assert not a.delete_route(wrong_protocol)  # never deletes another protocol's route
        assert sweep_routes(netns.a) == (ours_v6,)
        assert a.routes(protocol=RTPROT_PALISADE) == []
        assert a.routes(protocol=RTPROT_STATIC) == [theirs]
        assert Route(ip_network("10.79.0.0/24"), None, va, 2) in a.routes()


def test_vxlan_overlay_carries_pod_traffic_between_nodes(netns: Namespaces) -> None:
    """Two nodes on an underlay veth, a pod behind each, VXLAN between them as Calico does
    it: learning off; per remote node an FDB entry (VTEP MAC → node IP), a neighbour entry
    (VTEP address → VTEP MAC) and an onlink route for the remote pod block."""
    node1, node2 = netns.a, netns.b
    pod1, pod2 = netns.new("p1"), netns.new("p2")
    underlay1, underlay2 = netns.link("u1"), netns.link("u2")
    vxlan = netns.link("vx")
    cali1, cali2 = netns.link("c1"), netns.link("c2")
    nodes = {
        1: {"ip": "192.168.77.1", "vtep": "10.65.1.0", "block": "10.65.1.0/24"},
        2: {"ip": "192.168.77.2", "vtep": "10.65.2.0", "block": "10.65.2.0/24"},
    }
    with (
        Netlink(node1) as n1,
        Netlink(node2) as n2,
        Netlink(pod1) as p1,
        Netlink(pod2) as p2,
    ):
        wire(n1, underlay1, "192.168.77.1/24", n2, underlay2, "192.168.77.2/24")
        wire(n1, cali1, "10.65.1.1/24", p1, "eth0", "10.65.1.2/24")
        wire(n2, cali2, "10.65.2.1/24", p2, "eth0", "10.65.2.2/24")
        p1.add_route(Route(ip_network("0.0.0.0/0"), ip_address("10.65.1.1"), "eth0"))
        p2.add_route(Route(ip_network("0.0.0.0/0"), ip_address("10.65.2.1"), "eth0"))

        macs = {}
        for index, nl, underlay in ((1, n1, underlay1), (2, n2, underlay2)):
            nl.set_sysctl("net.ipv4.ip_forward", 1)
            link = nl.create_vxlan(vxlan, 4096, ip_address(nodes[index]["ip"]), underlay)
            assert link.kind == "vxlan"
            nl.add_address(vxlan, ip_interface(f"{nodes[index]['vtep']}/32"))
            nl.set_up(vxlan)
            assert link.mac is not None
            macs[index] = link.mac

        for index, nl in ((1, n1), (2, n2)):
            remote = nodes[3 - index]
            vtep = ip_address(remote["vtep"])
            nl.add_route(Route(ip_network(remote["block"]), vtep, vxlan, onlink=True))
        assert not reachable(pod1, "10.65.2.2", timeout=0.5)  # no FDB / neighbour yet

        for index, nl in ((1, n1), (2, n2)):
            remote, mac = nodes[3 - index], macs[3 - index]
            nl.add_neighbour(Neighbour(ip_address(remote["vtep"]), mac, vxlan))
            nl.add_fdb(FdbEntry(mac, ip_address(remote["ip"]), vxlan))
            nl.add_fdb(FdbEntry(mac, ip_address(remote["ip"]), vxlan))  # again: a no-op

        assert FdbEntry(macs[2], ip_address("192.168.77.2"), vxlan) in n1.fdb_entries(vxlan)
        assert n1.neighbours(dev=vxlan) == [Neighbour(ip_address("10.65.2.0"), macs[2], vxlan)]
        assert n1.routes(protocol=RTPROT_PALISADE) == [
            Route(ip_network("10.65.2.0/24"), ip_address("10.65.2.0"), vxlan, onlink=True)
        ]

        assert reachable(pod1, "10.65.2.2")
        assert reachable(pod2, "10.65.1.2")
        assert echo(pod2, pod1, "10.65.2.2") == "PALISADE"

        # Take node 2's FDB entry away on node 1: the path is cut again.
        assert n1.delete_fdb(FdbEntry(macs[2], ip_address("192.168.77.2"), vxlan))
        assert not n1.delete_fdb(FdbEntry(macs[2], ip_address("192.168.77.2"), vxlan))
        assert not reachable(pod1, "10.65.2.2", timeout=0.5)
        assert n1.delete_neighbour(Neighbour(ip_address("10.65.2.0"), macs[2], vxlan))
        assert not n1.delete_neighbour(Neighbour(ip_address("10.65.2.0"), macs[2], vxlan))


def test_flooding_fdb_entries_append(netns: Namespaces) -> None:
    vxlan, underlay = netns.link("vx"), netns.link("br")
    zero = "00:00:00:00:00:00"
    with Netlink(netns.a) as a:
        a.create_bridge(underlay)
        a.add_address(underlay, ip_interface("192.168.78.1/24"))
        a.create_vxlan(vxlan, 7, ip_address("192.168.78.1"), underlay, port=8472)
        peers = [FdbEntry(zero, ip_address(f"192.168.78.{n}"), vxlan) for n in (2, 3)]
        for entry in [*peers, peers[0]]:
            a.add_fdb(entry)
        assert [x for x in a.fdb_entries(vxlan) if x.mac == zero] == peers


def test_sysctl_is_per_namespace(netns: Namespaces) -> None:
    with Netlink() as root:
        before = root.get_sysctl("net.ipv4.ip_forward")
    with Netlink(netns.a) as a, Netlink(netns.b) as b:
        a.set_sysctl("net.ipv4.ip_forward", 1)
        assert a.get_sysctl("net/ipv4/ip_forward") == "1"
        assert b.get_sysctl("net.ipv4.ip_forward") == "0"
        with pytest.raises(NetlinkError, match="set_sysctl"):
            a.set_sysctl("net.ipv4.no_such_knob", 1)
        with pytest.raises(NetlinkError, match="invalid key"):
            a.set_sysctl("../../etc/passwd", 1)
    with Netlink() as root:
        assert root.get_sysctl("net.ipv4.ip_forward") == before


def test_deletes_are_idempotent(netns: Namespaces) -> None:
    va, vb = netns.link("va"), netns.link("vb")
    with Netlink(netns.a) as a, Netlink(netns.b) as b:
        a.create_veth(va, vb, peer_netns=netns.b)
        assert a.delete_link(va)
        assert not a.delete_link(va)
        assert b.find_link(vb) is None  # the peer went with it
        assert not b.delete_link(vb)
    extra = netns.new("x")
    assert extra in list_netns(netns.prefix)
    assert delete_netns(extra)
    assert not delete_netns(extra)
    assert extra not in list_netns(netns.prefix)


def test_sweep_removes_only_prefixed_objects(netns: Namespaces) -> None:
    ours, theirs = netns.link("d0"), "keep0"
    with Netlink(netns.a) as a:
        a.create_bridge(ours)
        a.create_bridge(theirs)
        assert sweep_links(netns.prefix, netns=netns.a) == (ours,)
        assert {link.name for link in a.links()} == {"lo", theirs}
    assert sweep_links(netns.prefix, netns=netns.a) == ()

    # A sweep of another prefix leaves this test's namespaces alone.
    assert sweep(f"{netns.prefix}zz").namespaces == ()
    assert list_netns(netns.prefix) == sorted([netns.a, netns.b])

    # The root namespace: only the link with this test's prefix goes.
    root_link = netns.link("r0")
    with Netlink() as root:
        root.create_bridge(root_link)
        result = sweep(netns.prefix)
        assert result.links == (root_link,)
        assert set(result.namespaces) == {netns.a, netns.b}
        assert root.find_link(root_link) is None
    assert list_netns(netns.prefix) == []
    assert sweep(netns.prefix).namespaces == ()

    with pytest.raises(NetlinkError, match="must start with 'pal'"):
        sweep("")
    with pytest.raises(NetlinkError):
        sweep_links("eth")


def test_errors_name_the_operation_and_object(netns: Namespaces) -> None:
    missing = f"{netns.prefix}none"
    with pytest.raises(NetlinkError, match=f"open netns {missing}: no such namespace"):
        Netlink(missing)
    assert missing not in list_netns(netns.prefix)  # binding never creates a namespace
    with pytest.raises(NetlinkError, match="already exists"):
        create_netns(netns.a)

    bridge = netns.link("br")
    with Netlink(netns.a) as a:
        a.create_bridge(bridge)
        with pytest.raises(NetlinkError) as excinfo:
            a.create_bridge(bridge)
        error = excinfo.value
        assert (error.operation, error.errno) == ("create_bridge", errno.EEXIST)
        assert error.target == f"link {bridge} in netns {netns.a}"
        assert error.__cause__ is not None  # the pyroute2 error, chained, never raised bare

        with pytest.raises(NetlinkError, match="set_up link nothere") as excinfo:
            a.set_up("nothere")
        assert excinfo.value.errno == errno.ENODEV
        with pytest.raises(NetlinkError, match="longer than 15"):
            a.create_bridge("pal-much-too-long-name")
        with pytest.raises(NetlinkError, match="no such namespace"):
            a.create_veth(netns.link("va"), netns.link("vb"), peer_netns=missing)
        with pytest.raises(NetlinkError, match="bad VNI"):
            a.create_vxlan(netns.link("vx"), 1 << 24, ip_address("192.0.2.1"), None)
        with pytest.raises(NetlinkError, match="add_address"):
            a.add_address("nothere", ip_interface("192.0.2.1/24"))


def test_run_in_netns(netns: Namespaces) -> None:
    result = run_in_netns(netns.a, [sys.executable, "-c", "print('hello')"])
    assert (result.returncode, result.stdout) == (0, "hello\n")
    with pytest.raises(NetlinkError, match="exit status 3"):
        run_in_netns(netns.a, [sys.executable, "-c", "raise SystemExit(3)"], check=True)
    with pytest.raises(NetlinkError, match="no such namespace"):
        run_in_netns(f"{netns.prefix}none", ["true"])


def test_async_callers_get_a_clear_error_and_threads_work(netns: Namespaces) -> None:
    async def inside_loop() -> None:
        with pytest.raises(NetlinkError, match=r"asyncio\.to_thread"):
            Netlink(netns.a)

    async def via_thread() -> list[str]:
        def names() -> list[str]:
            with Netlink(netns.a) as a:
                return [link.name for link in a.links()]

        return await asyncio.to_thread(names)

    asyncio.run(inside_loop())
    assert asyncio.run(via_thread()) == ["lo"]
