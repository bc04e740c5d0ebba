"""The netlink driver proper: one :class:`Netlink` per network namespace, and :func:`sweep`.

All pyroute2 RTNL calls live here. pyroute2 messages never leave this module: every method
takes and returns the dataclasses of ``_model``, and every failure becomes NetlinkError.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface, ip_network
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute

from palisade.dataplane.linux._model import (
    PREFIX,
    RTPROT_PALISADE,
    Address,
    FdbEntry,
    IPAddress,
    IPInterface,
    Link,
    Neighbour,
    NetlinkError,
    Route,
    check_name,
    translated_errors,
)
from palisade.dataplane.linux._netns import (
    delete_netns,
    list_netns,
    netns_exists,
    read_sysctl,
    write_sysctl,
)

IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
ZERO_MAC = "00:00:00:00:00:00"


def _family(address: IPAddress | IPInterface) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Netlink:
    """Netlink operations in one network namespace (``None``: the caller's own).

    Binding to a namespace never creates it: a missing namespace is a NetlinkError. Use it as
    a context manager, or call :meth:`close`. Not thread-safe: one object per thread. It is
    synchronous and cannot be opened inside a running asyncio loop: from async code, run it
    with ``asyncio.to_thread``.
    Links are named by their name in this namespace; an unknown name is a NetlinkError with
    ``errno == ENODEV``. Deletions are idempotent and return whether something was removed.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        if _in_event_loop():
            # pyroute2's synchronous IPRoute drives an asyncio loop of its own, which cannot
            # run inside a running one; it would fail with a half-set-up socket.
            raise NetlinkError(
                "open",
                self._where("netlink socket"),
                "called from a running asyncio event loop; use asyncio.to_thread",
            )
        if netns is not None:
            check_name("open", "netns", netns)
            if not netns_exists(netns):
                raise NetlinkError("open", f"netns {netns}", "no such namespace", errno.ENOENT)
        with translated_errors("open", self._where("netlink socket")):
            # flags=0: pyroute2's default (O_CREAT) would silently create a missing namespace.
            # groups=0: a command socket subscribes to no events, so none queue up unread.
            if netns is None:
                self._ipr: Any = IPRoute(groups=0)
            else:
                self._ipr = IPRoute(netns=netns, flags=0, groups=0)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        with translated_errors("close", self._where("netlink socket")):
            self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Netlink(netns={self.netns!r})"

    # -- helpers ----------------------------------------------------------------------------

    def _where(self, what: str) -> str:
        return f"{what} in netns {self.netns}" if self.netns else what

    def _index(self, name: str, operation: str) -> int:
        check_name(operation, "link", name)
        with translated_errors(operation, self._where(f"link {name}")):
            found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise NetlinkError(operation, self._where(f"link {name}"), "no such link", errno.ENODEV)
        return int(found[0])

    def _index_to_name(self, operation: str) -> dict[int, str]:
        with translated_errors(operation, self._where("links")):
            return {int(msg["index"]): str(msg.get("ifname")) for msg in self._ipr.link("dump")}

    def _to_link(self, msg: Any, names: dict[int, str]) -> Link:
        master = msg.get("master")
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
        mac = msg.get("address")
        return Link(
            name=str(msg.get("ifname")),
            kind=str(kind) if kind is not None else None,
            index=int(msg["index"]),
            mac=str(mac) if mac is not None else None,
            mtu=int(msg.get("mtu")),
            up=bool(int(msg["flags"]) & IFF_UP),
            netns=self.netns,
            master=names.get(int(master)) if master else None,
        )

    # -- links ------------------------------------------------------------------------------

    def links(self) -> list[Link]:
        """Every link in the namespace, by index."""
        with translated_errors("links", self._where("links")):
            messages = list(self._ipr.link("dump"))
        names = {int(msg["index"]): str(msg.get("ifname")) for msg in messages}
        return sorted((self._to_link(msg, names) for msg in messages), key=lambda x: x.index)

    def find_link(self, name: str) -> Link | None:
        """The link called ``name``, or ``None``."""
        return next((link for link in self.links() if link.name == name), None)

    def link(self, name: str) -> Link:
        """The link called ``name``; NetlinkError (ENODEV) if there is none."""
        found = self.find_link(name)
        if found is None:
            raise NetlinkError("link", self._where(f"link {name}"), "no such link", errno.ENODEV)
        return found

    def _add_link(self, operation: str, name: str, **attributes: Any) -> Link:
        check_name(operation, "link", name)
        with translated_errors(operation, self._where(f"link {name}")):
            self._ipr.link("add", ifname=name, **attributes)
        return self.link(name)

    def create_veth(self, name: str, peer_name: str, peer_netns: str | None = None) -> Link:
        """A veth pair: ``name`` here, ``peer_name`` here or in namespace ``peer_netns``.

        Both ends start down. Returns this end.
        """
        check_name("create_veth", "link", peer_name)
        peer: dict[str, Any] = {"ifname": peer_name}
        if peer_netns is not None:
            check_name("create_veth", "netns", peer_netns)
            if not netns_exists(peer_netns):
                raise NetlinkError(
                    "create_veth", f"peer netns {peer_netns}", "no such namespace", errno.ENOENT
                )
            peer["net_ns_fd"] = peer_netns
        return self._add_link("create_veth", name, kind="veth", peer=peer)

    def create_bridge(self, name: str) -> Link:
        """A Linux bridge, down, with no ports."""
        return self._add_link("create_bridge", name, kind="bridge")

    def create_vxlan(
        self,
        name: str,
        vni: int,
        local_ip: IPAddress,
        dev: str | None,
        port: int = 4789,
        learning: bool = False,
    ) -> Link:
        """A VXLAN device sending from ``local_ip`` over ``dev`` to UDP ``port``, down.

        With ``learning=False`` (the default, as Calico runs it) the kernel learns no remote
        MACs from traffic: the agent programs an FDB entry and a neighbour per remote VTEP.
        """
        if not 0 < vni < 1 << 24:
            raise NetlinkError("create_vxlan", self._where(f"link {name}"), f"bad VNI {vni}")
        attributes: dict[str, Any] = {
            "kind": "vxlan",
            "vxlan_id": vni,
            "vxlan_port": port,
            "vxlan_learning": int(learning),
        }
        if local_ip.version == 4:
            attributes["vxlan_local"] = str(local_ip)
        else:
            attributes["vxlan_local6"] = str(local_ip)
        if dev is not None:
            attributes["vxlan_link"] = self._index(dev, "create_vxlan")
        return self._add_link("create_vxlan", name, **attributes)

    def _set(self, operation: str, name: str, **attributes: Any) -> None:
        index = self._index(name, operation)
        with translated_errors(operation, self._where(f"link {name}")):
            self._ipr.link("set", index=index, **attributes)

    def set_master(self, link: str, bridge: str | None) -> None:
        """Enslave ``link`` to ``bridge``; ``bridge=None`` releases it."""
        master = 0 if bridge is None else self._index(bridge, "set_master")
        self._set("set_master", link, master=master)

    def set_up(self, link: str) -> None:
        self._set("set_up", link, state="up")

    def set_down(self, link: str) -> None:
        self._set("set_down", link, state="down")

    def set_mtu(self, link: str, mtu: int) -> None:
        self._set("set_mtu", link, mtu=mtu)

    def delete_link(self, name: str) -> bool:
        """Delete the link; ``False`` if there was none. A veth takes its peer with it."""
        check_name("delete_link", "link", name)
        with translated_errors("delete_link", self._where(f"link {name}")):
            found = self._ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            with translated_errors("delete_link", self._where(f"link {name}")):
                self._ipr.link("del", index=int(found[0]))
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:  # gone in between, e.g. with its veth peer
                return False
            raise
        return True

    # -- addresses --------------------------------------------------------------------------

    def add_address(self, link: str, interface: IPInterface) -> None:
        """Add ``interface`` (address and prefix length) to ``link``; EEXIST if present."""
        index = self._index(link, "add_address")
        with translated_errors("add_address", self._where(f"{interface} on {link}")):
            self._ipr.addr(
                "add",
                index=index,
                address=str(interface.ip),
                prefixlen=interface.network.prefixlen,
                family=_family(interface),
            )

    def delete_address(self, link: str, interface: IPInterface) -> bool:
        """Remove ``interface`` from ``link``; ``False`` if it was not there."""
        if Address(interface, link) not in self.addresses(link):
            return False
        index = self._index(link, "delete_address")
        with translated_errors("delete_address", self._where(f"{interface} on {link}")):
            self._ipr.addr(
                "del",
                index=index,
                address=str(interface.ip),
                prefixlen=interface.network.prefixlen,
                family=_family(interface),
            )
        return True

    def addresses(self, link: str) -> list[Address]:
        """The addresses on ``link``, IPv4 first."""
        index = self._index(link, "addresses")
        with translated_errors("addresses", self._where(f"addresses of {link}")):
            messages = list(self._ipr.addr("dump", index=index))
        found = [
            Address(ip_interface(f"{msg.get('address')}/{msg['prefixlen']}"), link)
            for msg in messages
            if int(msg["index"]) == index and msg.get("address") is not None
        ]
        return sorted(found, key=lambda a: (a.interface.version, a.interface))

    # -- routes -----------------------------------------------------------------------------

    def _route_request(self, route: Route, operation: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "dst": str(route.dst),
            "family": _family(route.dst.network_address),
            "oif": self._index(route.dev, operation),
            "proto": route.protocol,
            "table": RT_TABLE_MAIN,
        }
        if route.gateway is not None:
            if route.gateway.version != route.dst.version:
                raise NetlinkError(operation, self._where(f"route {route.dst}"), "mixed families")
            request["gateway"] = str(route.gateway)
        if route.onlink:
            request["flags"] = RTNH_F_ONLINK
        return request

    def add_route(self, route: Route) -> None:
        """Add ``route`` to the main table; EEXIST if one to the same destination exists."""
        request = self._route_request(route, "add_route")
        with translated_errors("add_route", self._where(f"route {route.dst}")):
            self._ipr.route("add", **request)

    def replace_route(self, route: Route) -> None:
        """Add ``route``, or replace the main table's route to the same destination."""
        request = self._route_request(route, "replace_route")
        with translated_errors("replace_route", self._where(f"route {route.dst}")):
            self._ipr.route("replace", **request)

    def delete_route(self, route: Route) -> bool:
        """Delete the route to ``route.dst`` via ``route.dev`` with ``route.protocol``.

        ``False`` if no such route exists (idempotent). The gateway and ``onlink`` are not
        compared: one destination has one route per table here.
        """
        request = self._route_request(route, "delete_route")
        request.pop("gateway", None)
        request.pop("flags", None)
        try:
            with translated_errors("delete_route", self._where(f"route {route.dst}")):
                self._ipr.route("del", **request)
        except NetlinkError as exc:
            if exc.errno == errno.ESRCH:
                return False
            raise
        return True

    def routes(self, protocol: int | None = None, dev: str | None = None) -> list[Route]:
        """Unicast routes of the main table, IPv4 then IPv6, optionally filtered.

        ``protocol=RTPROT_PALISADE`` lists only Palisade's; kernel-made routes (connected
        subnets: protocol 2) and others' are listed only without a filter.
        """
        names = self._index_to_name("routes")
        found: list[Route] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            with translated_errors("routes", self._where("routes")):
                messages = list(self._ipr.route("dump", family=family))
            for msg in messages:
                route = self._to_route(msg, family, names)
                if route is None:
                    continue
                if protocol is not None and route.protocol != protocol:
                    continue
                if dev is not None and route.dev != dev:
                    continue
                found.append(route)
        return found

    @staticmethod
    def _to_route(msg: Any, family: int, names: dict[int, str]) -> Route | None:
        table = msg.get("table")
        if table is None or int(table) != RT_TABLE_MAIN or int(msg["type"]) != RTN_UNICAST:
            return None
        oif = msg.get("oif")
        if oif is None or int(oif) not in names:  # multipath routes are not ours to read
            return None
        destination = msg.get("dst")
        if destination is None:
            destination = "0.0.0.0" if family == socket.AF_INET else "::"
        gateway = msg.get("gateway")
        return Route(
            dst=ip_network(f"{destination}/{msg['dst_len']}"),
            gateway=ip_address(gateway) if gateway is not None else None,
            dev=names[int(oif)],
            protocol=int(msg["proto"]),
            onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK),
        )

    # -- neighbours -------------------------------------------------------------------------

    def add_neighbour(self, neighbour: Neighbour) -> None:
        """Add or replace a permanent neighbour entry."""
        index = self._index(neighbour.dev, "add_neighbour")
        target = self._where(f"neighbour {neighbour.ip} on {neighbour.dev}")
        with translated_errors("add_neighbour", target):
            self._ipr.neigh(
                "replace",
                dst=str(neighbour.ip),
                lladdr=neighbour.mac,
                ifindex=index,
                family=_family(neighbour.ip),
                state=NUD_PERMANENT,
            )

    def delete_neighbour(self, neighbour: Neighbour) -> bool:
        """Delete a neighbour entry; ``False`` if there was none."""
        index = self._index(neighbour.dev, "delete_neighbour")
        target = self._where(f"neighbour {neighbour.ip} on {neighbour.dev}")
        try:
            with translated_errors("delete_neighbour", target):
                self._ipr.neigh(
                    "del", dst=str(neighbour.ip), ifindex=index, family=_family(neighbour.ip)
                )
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def neighbours(self, dev: str | None = None, permanent_only: bool = True) -> list[Neighbour]:
        """Neighbour entries with a MAC; by default only permanent (programmed) ones."""
        names = self._index_to_name("neighbours")
        found: list[Neighbour] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            with translated_errors("neighbours", self._where("neighbours")):
                messages = list(self._ipr.neigh("dump", family=family))
            for msg in messages:
                mac, destination = msg.get("lladdr"), msg.get("dst")
                name = names.get(int(msg["ifindex"]))
                if mac is None or destination is None or name is None:
                    continue
                if permanent_only and not int(msg["state"]) & NUD_PERMANENT:
                    continue
                if dev is not None and name != dev:
                    continue
                found.append(Neighbour(ip_address(destination), str(mac), name))
        return found

    # -- bridge forwarding database (VXLAN) -------------------------------------------------

    def add_fdb(self, entry: FdbEntry) -> None:
        """Program a forwarding entry on a VXLAN device (the device's own table).

        A specific MAC is added or replaced; the all-zero flooding MAC is appended, since
        it may list several remote VTEPs. Adding an existing entry again is a no-op.
        """
        index = self._index(entry.dev, "add_fdb")
        request: dict[str, Any] = {"ifindex": index, "lladdr": entry.mac}
        if entry.dst_ip is not None:
            request["dst"] = str(entry.dst_ip)
        target = self._where(f"fdb {entry.mac} → {entry.dst_ip} on {entry.dev}")
        try:
            with translated_errors("add_fdb", target):
                if entry.mac == ZERO_MAC:
                    self._ipr.fdb("append", **request)
                else:
                    self._ipr.fdb(
                        "replace", state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF, **request
                    )
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise

    def delete_fdb(self, entry: FdbEntry) -> bool:
        """Delete a forwarding entry; ``False`` if there was none."""
        index = self._index(entry.dev, "delete_fdb")
        request: dict[str, Any] = {"ifindex": index, "lladdr": entry.mac}
        if entry.dst_ip is not None:
            request["dst"] = str(entry.dst_ip)
        target = self._where(f"fdb {entry.mac} → {entry.dst_ip} on {entry.dev}")
        try:
            with translated_errors("delete_fdb", target):
                self._ipr.fdb("del", **request)
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def fdb_entries(self, dev: str) -> list[FdbEntry]:
        """The forwarding entries of ``dev`` (a VXLAN device or a bridge port)."""
        index = self._index(dev, "fdb_entries")
        with translated_errors("fdb_entries", self._where(f"fdb of {dev}")):
            messages = list(self._ipr.fdb("dump"))
        found: list[FdbEntry] = []
        for msg in messages:
            mac = msg.get("lladdr")
            if int(msg["ifindex"]) != index or mac is None:
                continue
            destination = msg.get("dst")
            found.append(FdbEntry(str(mac), ip_address(destination) if destination else None, dev))
        return found

    # -- sysctl -----------------------------------------------------------------------------

    def set_sysctl(self, key: str, value: str | int) -> None:
        """Write a sysctl of this namespace: ``set_sysctl("net.ipv4.ip_forward", 1)``.

        /proc/sys/net is resolved against the namespace of the thread that opens it, so for
        a named namespace the write happens in a short-lived thread that setns(2)s into it
        (``_netns.call_in_netns``); the rest of the process stays where it is.
        """
        write_sysctl(self.netns, key, str(value))

    def get_sysctl(self, key: str) -> str:
        """Read a sysctl of this namespace, stripped: ``get_sysctl("net.ipv4.ip_forward")``."""
        return read_sysctl(self.netns, key)


# -- sweeping --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep removed."""

    links: tuple[str, ...]
    namespaces: tuple[str, ...]


def _check_prefix(prefix: str) -> None:
    if not prefix.startswith(PREFIX):
        raise NetlinkError("sweep", f"prefix {prefix!r}", f"must start with {PREFIX!r}")


def sweep_links(prefix: str = PREFIX, netns: str | None = None) -> tuple[str, ...]:
    """Delete every link in ``netns`` (``None``: the caller's) whose name starts with ``prefix``.

    ``prefix`` must itself start with :data:`PREFIX`: a sweep never reaches anyone else's
    links. Returns the names removed.
    """
    _check_prefix(prefix)
    removed: list[str] = []
    with Netlink(netns) as nl:
        for link in nl.links():
            if link.name.startswith(prefix) and nl.delete_link(link.name):
                removed.append(link.name)
    return tuple(removed)


def sweep_routes(netns: str | None = None) -> tuple[Route, ...]:
    """Delete every main-table route in ``netns`` (``None``: the caller's) that carries
    :data:`RTPROT_PALISADE`; routes of any other protocol are never touched."""
    with Netlink(netns) as nl:
        return tuple(
            route for route in nl.routes(protocol=RTPROT_PALISADE) if nl.delete_route(route)
        )


def sweep(prefix: str = PREFIX) -> SweepResult:
    """Remove Palisade's leftovers: links in the caller's namespace and named namespaces
    whose names start with ``prefix`` (which must start with :data:`PREFIX`).

    Idempotent; used by ``lab down`` and by test teardown with a test's own unique prefix.
    Links inside a swept namespace go with it.
    """
    _check_prefix(prefix)
    links = sweep_links(prefix)
    namespaces = tuple(name for name in list_netns(prefix) if delete_netns(name))
    return SweepResult(links, namespaces)
