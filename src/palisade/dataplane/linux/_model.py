"""The driver's vocabulary: plain dataclasses and the one exception type, no netlink."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

#: Name prefix of every namespace and link Palisade creates; :func:`sweep` keys on it.
PREFIX = "pal"

#: Route protocol number marking Palisade's routes (``ip route ... proto 154``). iproute2's
#: rt_protos table names the numbers routing daemons use (kernel 2, boot 3, static 4, bird 12,
#: dhcp 16, bgp 186, ...); 154 is not among them, so a route with it is ours to adopt or sweep.
RTPROT_PALISADE = 0x9A

#: The longest interface name the kernel accepts (IFNAMSIZ is 16 including the NUL).
MAX_IFNAME = 15

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface


class NetlinkError(RuntimeError):
    """A netlink or namespace operation failed.

    ``operation`` names what was attempted (``"create_veth"``), ``target`` the object it was
    attempted on (``"pal-v0 in netns pal-n1"``), ``errno`` the kernel's error number when
    there was one. The underlying pyroute2 or OS exception is chained as ``__cause__``.
    """

    def __init__(self, operation: str, target: str, reason: str, errno: int | None = None):
        super().__init__(f"{operation} {target}: {reason}")
        self.operation = operation
        self.target = target
        self.reason = reason
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Link:
    """A network interface as the kernel reports it.

    ``netns`` is the namespace the :class:`Netlink` that listed it is bound to (``None``: the
    caller's own); ``kind`` is the rtnetlink kind (``veth``, ``bridge``, ``vxlan``, ...) or
    ``None`` for physical and loopback devices; ``master`` the name of the bridge it is
    enslaved to, if any.
    """

    name: str
    kind: str | None
    index: int
    mac: str | None
    mtu: int
    up: bool
    netns: str | None
    master: str | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """An address on a link, with its prefix length (``10.65.0.1/24``)."""

    interface: IPInterface
    dev: str


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the main table.

    ``gateway=None`` is a directly connected (link scope) route through ``dev``; ``onlink``
    tells the kernel the gateway is reachable on ``dev`` without a covering subnet route, as
    VXLAN routes to a remote VTEP address need.
    """

    dst: IPNetwork
    gateway: IPAddress | None
    dev: str
    protocol: int = RTPROT_PALISADE
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent neighbour (ARP / NDP) entry: ``ip`` is at ``mac`` on ``dev``."""

    ip: IPAddress
    mac: str
    dev: str


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A bridge forwarding entry: frames for ``mac`` on ``dev`` go to the VTEP ``dst_ip``.

    On a VXLAN device ``mac="00:00:00:00:00:00"`` is the flooding entry (broadcast and unknown
    unicast go to every such ``dst_ip``). ``dst_ip`` is ``None`` for entries on plain bridges.
    """

    mac: str
    dst_ip: IPAddress | None
    dev: str


def check_name(operation: str, kind: str, name: str) -> None:
    """Reject names the kernel (or the netns run directory) would refuse, with a clear error."""
    if not name or "/" in name or name in (".", "..") or any(c.isspace() for c in name):
        raise NetlinkError(operation, f"{kind} {name!r}", "invalid name")
    if kind == "link" and len(name) > MAX_IFNAME:
        raise NetlinkError(
            operation, f"{kind} {name!r}", f"name longer than {MAX_IFNAME} characters"
        )


def error_number(exc: BaseException) -> int | None:
    """The kernel error number behind a pyroute2 or OS exception, if it carries one."""
    for attribute in ("code", "errno"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextmanager
def translated_errors(operation: str, target: str) -> Iterator[None]:
    """Turn any exception raised by pyroute2 or the OS inside the block into NetlinkError."""
    try:
        yield
    except NetlinkError:
        raise
    except Exception as exc:
        number = error_number(exc)
        reason = os.strerror(number) if number is not None else (str(exc) or type(exc).__name__)
        raise NetlinkError(operation, target, reason, number) from exc
