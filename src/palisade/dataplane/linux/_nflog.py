"""NFLOG: packets that nftables rules log to a netlink group, read in userspace.

An nftables rule ``log group G prefix "P"`` hands the packet (up to ``snaplen`` bytes) to
nfnetlink_log, which sends it to whoever bound group ``G`` in that network namespace. The
flow collector uses it to learn, for each new connection or denied attempt, which rule
decided: the prefix names the rule, the packet's headers give the 5-tuple.

The protocol (``linux/netfilter/nfnetlink_log.h``), spoken here over a raw
``NETLINK_NETFILTER`` socket since pyroute2 has no NFLOG client: configuration messages
(``NFULNL_MSG_CONFIG``) bind the group and ask for packet copies; each logged packet arrives
as ``NFULNL_MSG_PACKET`` with attributes — hook header, prefix, in/out interface indexes,
and the payload (the IP header onward). Only IPv4 and IPv6 with TCP, UDP, SCTP and ICMP
headers are decoded; anything else keeps its protocol number and no ports.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass

from ._model import NetlinkError
from ._netns import call_in_netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULA_PACKET_HDR = 1
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)
_NLATTR = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    """One packet a rule logged: its prefix, headers and interfaces; ``received`` is the
    monotonic time it was read."""

    prefix: str
    family: int  # 4 or 6
    protocol: int
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    source_port: int | None
    destination_port: int | None
    length: int  # the IP packet's total length
    indev: int | None
    outdev: int | None
    hook: int
    received: float


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attribute(kind: int, payload: bytes) -> bytes:
    header = _NLATTR.pack(_NLATTR.size + len(payload), kind)
    return header + payload + b"\0" * (_align(len(payload)) - len(payload))


def _message(kind: int, group: int, attributes: bytes, sequence: int) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + attributes
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body),
        (NFNL_SUBSYS_ULOG << 8) | kind,
        NLM_F_REQUEST | NLM_F_ACK,
        sequence,
        0,
    )
    return header + body


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _NLATTR.size : offset + length]
        offset += _align(length)
    return found


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def decode_payload(
    payload: bytes,
) -> tuple[
    int,
    int,
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    ipaddress.IPv4Address | ipaddress.IPv6Address,
    int | None,
    int | None,
    int,
]:
    """``(family, protocol, source, destination, source port, destination port, length)``
    of an IP packet's headers; ``ValueError`` if they are cut short or not IP."""
    if not payload:
        raise ValueError("empty payload")
    source: IPAddress
    destination: IPAddress
    version = payload[0] >> 4
    if version == 4:
        if len(payload) < 20:
            raise ValueError("IPv4 header cut short")
        header_length = (payload[0] & 0x0F) * 4
        length = struct.unpack_from("!H", payload, 2)[0]
        protocol = payload[9]
        source = ipaddress.IPv4Address(payload[12:16])
        destination = ipaddress.IPv4Address(payload[16:20])
        transport = payload[header_length:]
        family = 4
    elif version == 6:
        if len(payload) < 40:
            raise ValueError("IPv6 header cut short")
        length = 40 + struct.unpack_from("!H", payload, 4)[0]
        protocol = payload[6]
        source = ipaddress.IPv6Address(payload[8:24])
        destination = ipaddress.IPv6Address(payload[24:40])
        transport = payload[40:]
        family = 6
    else:
        raise ValueError(f"IP version {version}")
    source_port = destination_port = None
    if protocol in (6, 17, 132) and len(transport) >= 4:
        source_port, destination_port = struct.unpack_from("!HH", transport, 0)
    return family, protocol, source, destination, source_port, destination_port, length


class NflogReader:
    """Bound to NFLOG group ``group`` in network namespace ``netns`` (``None``: this one).

    :meth:`read` returns the packets that arrived within a timeout. Close it (or use it as a
    context manager) to unbind the group.
    """

    def __init__(
        self, group: int, netns: str | None = None, *, snaplen: int = 128, buffer: int = 4 << 20
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group}: 0-65535")
        self.group = group
        self.netns = netns

        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
                sock.bind((0, 0))
            except OSError:
                sock.close()
                raise
            return sock

        try:
            self._sock = (
                open_socket() if netns is None else call_in_netns(netns, open_socket, "nflog")
            )
        except OSError as exc:
            raise NetlinkError("nflog", f"group {group}", str(exc), exc.errno) from exc
        self._sequence = 0
        self.dropped = 0  # the socket's buffer overflowed (ENOBUFS) this many times
        try:
            self._configure(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))
            mode = struct.pack("!IBB", snaplen, NFULNL_COPY_PACKET, 0)
            self._configure(NFULA_CFG_MODE, mode)
            # deliver at once rather than batching up to a timeout or a queue threshold
            self._configure(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
        except BaseException:
            self._sock.close()
            raise

    def _configure(self, kind: int, payload: bytes) -> None:
        self._sequence += 1
        self._sock.send(
            _message(NFULNL_MSG_CONFIG, self.group, _attribute(kind, payload), self._sequence)
        )
        data = self._sock.recv(65536)
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, message_type, _flags, sequence, _pid = _NLMSGHDR.unpack_from(data, offset)
            if message_type == NLMSG_ERROR and sequence == self._sequence:
                code = -struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                if code:
                    raise NetlinkError(
                        "nflog",
                        f"group {self.group}",
                        f"config {kind}: {errno.errorcode.get(code, code)}",
                        code,
                    )
                return
            offset += _align(length)
        raise NetlinkError("nflog", f"group {self.group}", f"config {kind}: no acknowledgement")

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: float = 1.0) -> list[LoggedPacket]:
        """The packets that arrive within ``timeout`` seconds (all that are queued, once one is)."""
        packets: list[LoggedPacket] = []
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(1 << 20)
        except TimeoutError:
            return packets
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.dropped += 1
                return packets
            raise
        self._sock.setblocking(False)
        while True:
            packets.extend(self._parse(data))
            try:
                data = self._sock.recv(1 << 20)
            except (BlockingIOError, TimeoutError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.dropped += 1
                    break
                raise
        return packets

    def _parse(self, data: bytes) -> list[LoggedPacket]:
        packets = []
        now = time.monotonic()
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, message_type, _flags, _sequence, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                break
            if message_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                start = offset + _NLMSGHDR.size + _NFGENMSG.size
                attributes = _attributes(data, start, offset + length)
                packet = self._packet(attributes, now)
                if packet is not None:
                    packets.append(packet)
            offset += _align(length)
        return packets

    @staticmethod
    def _packet(attributes: dict[int, bytes], now: float) -> LoggedPacket | None:
        try:
            family, protocol, source, destination, sport, dport, length = decode_payload(
                attributes.get(NFULA_PAYLOAD, b"")
            )
        except ValueError:
            return None
        hook = attributes.get(NFULA_PACKET_HDR, b"\0\0\0\0")[2]
        indev = attributes.get(NFULA_IFINDEX_INDEV)
        outdev = attributes.get(NFULA_IFINDEX_OUTDEV)
        return LoggedPacket(
            prefix=attributes.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace"),
            family=family,
            protocol=protocol,
            source=source,
            destination=destination,
            source_port=sport,
            destination_port=dport,
            length=length,
            indev=struct.unpack("!I", indev)[0] if indev else None,
            outdev=struct.unpack("!I", outdev)[0] if outdev else None,
            hook=hook,
            received=now,
        )

    def close(self) -> None:
        try:
            self._configure(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_UNBIND))
        except (NetlinkError, OSError):
            pass  # closing the socket unbinds as well
        finally:
            self._sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
