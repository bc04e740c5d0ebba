"""NFLOG in a namespace of the test's own: a rule logs packets to a group, the reader gets
their prefix and headers; groups and namespaces stay apart."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from palisade.dataplane.linux import Netlink
from palisade.dataplane.linux._conntrack import enable_accounting, read_conntrack
from palisade.dataplane.linux._netns import run_in_netns
from palisade.dataplane.linux._nflog import NflogReader, decode_payload
from tests.dataplane.conftest import Namespaces

RULES = """
table inet pal_nflog_test {
  chain out {
    type filter hook output priority 0;
    udp dport 9999 log group 7 prefix "pal:udp-rule"
    tcp dport 9998 log group 8 prefix "pal:tcp-rule" drop
  }
}
"""
SEND = (
    "import socket\n"
    "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "u.sendto(b'x' * 100, ('127.0.0.1', 9999))\n"
    "t = socket.socket()\n"
    "t.settimeout(0.3)\n"
    "try:\n"
    "    t.connect(('127.0.0.1', 9998))\n"
    "except OSError:\n"
    "    pass\n"
)


@pytest.mark.root
def test_logged_packets_carry_prefix_and_headers(netns: Namespaces) -> None:
    with Netlink(netns.a) as nl:
        nl.set_up("lo")
    run_in_netns(netns.a, ["nft", "-f", "-"], input=RULES, check=True)
    with (
        NflogReader(7, netns.a) as udp,
        NflogReader(8, netns.a) as tcp,
        NflogReader(7, netns.b) as other,
    ):
        run_in_netns(netns.a, ["python3", "-c", SEND], check=True)
        logged = udp.read(timeout=2.0)
        assert len(logged) == 1
        packet = logged[0]
        assert packet.prefix == "pal:udp-rule"
        assert (packet.family, packet.protocol) == (4, 17)
        assert packet.source == packet.destination == ipaddress.IPv4Address("127.0.0.1")
        assert packet.destination_port == 9999 and packet.source_port
        assert packet.length == 20 + 8 + 100
        syns = tcp.read(timeout=2.0)
        assert syns and {p.prefix for p in syns} == {"pal:tcp-rule"}
        assert all(p.protocol == 6 and p.destination_port == 9998 for p in syns)
        assert other.read(timeout=0.3) == []  # another namespace's group 7 heard nothing


def test_payload_decoding() -> None:
    ipv4 = (
        bytes([0x45, 0, 0, 60])
        + b"\0" * 5
        + bytes([6])
        + b"\0\0"
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    )
    tcp = struct.pack("!HH", 40000, 443) + b"\0" * 16
    assert decode_payload(ipv4 + tcp) == (
        4,
        6,
        ipaddress.IPv4Address("10.0.0.1"),
        ipaddress.IPv4Address("10.0.0.2"),
        40000,
        443,
        60,
    )
    ipv6 = (
        bytes([0x60, 0, 0, 0])
        + struct.pack("!H", 8)
        + bytes([58, 64])
        + bytes(15)
        + b"\1"
        + bytes(15)
        + b"\2"
    )
    family, protocol, source, destination, sport, dport, length = decode_payload(ipv6 + b"\x80" * 8)
    assert (family, protocol, str(source), str(destination), sport, dport, length) == (
        6,
        58,
        "::1",
        "::2",
        None,
        None,
        48,
    )
    for broken in (b"", bytes([0x45]) + b"\0" * 10, bytes([0x20]) * 40):
        with pytest.raises(ValueError):
            decode_payload(broken)


CONNECT = (
    "import socket\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 7000)); s.listen()\n"
    "c = socket.create_connection(('127.0.0.1', 7000)); a, _ = s.accept()\n"
    "c.sendall(b'x' * 5000); got = 0\n"
    "while got < 5000: got += len(a.recv(10000))\n"
    "a.sendall(b'y' * 300); c.recv(1000)\n"
)
TRACK = """
table inet pal_ct_test {
  chain out {
    type filter hook output priority 0;
    ct state new counter
  }
}
"""


@pytest.mark.root
def test_conntrack_counts_bytes_of_each_direction(netns: Namespaces) -> None:
    with Netlink(netns.a) as nl:
        nl.set_up("lo")
    run_in_netns(netns.a, ["nft", "-f", "-"], input=TRACK, check=True)
    enable_accounting(netns.a)
    run_in_netns(netns.a, ["python3", "-c", CONNECT], check=True)
    entries = [e for e in read_conntrack(netns.a) if e.destination_port == 7000]
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.protocol, entry.source, entry.destination) == (6, "127.0.0.1", "127.0.0.1")
    # payload plus TCP/IP headers (and the handshake and teardown) in each direction
    assert 5000 < entry.bytes_out < 5000 + 20 * 52 and entry.packets_out >= 3
    assert 300 < entry.bytes_in < 300 + 20 * 52 and entry.packets_in >= 2
    assert read_conntrack(netns.b) == []  # another namespace's table
