"""The overlay driver: ``palisade.calc.RouteCallbacks`` programmed with the netlink driver.

:class:`RouteManager` keeps the desired state the calc graph reports (this node's VXLAN device,
one peer per remote node, one route per remote IPAM block) and :meth:`RouteManager.apply`
brings one network namespace to it, with the recipe Calico uses (learning off)::

    VXLAN device <device>: vni, local <underlay ip> over the link that holds it, up,
                           <tunnel ip>/32, MAC from the node document (if it names one)
    per peer:   FDB  <peer mac> → dst <peer underlay ip>     (the device's own table)
                neighbour <peer tunnel ip> lladdr <peer mac>  (permanent)
    per block:  route <block> via <peer tunnel ip> dev <device> onlink proto RTPROT_PALISADE

Desired versus actual: ``apply`` reads the kernel (links, addresses, FDB, neighbours, routes
of Palisade's protocol on the device) and makes only the difference, so it is idempotent and
adopts what a previous run left. What it owns: the VXLAN device the intents name (and so its
FDB and neighbour entries), and routes with :data:`RTPROT_PALISADE` *through that device*;
other routes of the protocol (the CNI plugin's per-pod /32s) are not its business. When the
tunnel intent goes away, the device is deleted, which takes its entries and routes with it.
IPv4 forwarding is switched on in the namespace while a tunnel exists (a node forwards).

Changes: a new MAC or tunnel address is set in place; a new VNI or underlay address (which the
kernel cannot change on a live device) recreates the device — but only when this manager
programmed the previous value: the driver's ``Link`` does not report a device's VNI, so an
adopted device is trusted. Import it from ``palisade.dataplane.linux._routes``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Interface

from palisade.calc import RouteIntent, TunnelIntent, TunnelPeerIntent

from ._model import RTPROT_PALISADE, FdbEntry, Neighbour, NetlinkError, Route
from ._netlink import Netlink


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one :meth:`RouteManager.apply` changed (all zero: the kernel already matched)."""

    links: int = 0
    fdb: int = 0
    neighbours: int = 0
    routes: int = 0

    @property
    def changes(self) -> int:
        return self.links + self.fdb + self.neighbours + self.routes


class RouteManager:
    """Desired overlay state for one namespace (``None``: the caller's own) and its apply."""

    def __init__(self, netns: str | None = None, forwarding: bool = True) -> None:
        self.netns = netns
        self._forwarding = forwarding
        self._tunnels: dict[str, TunnelIntent] = {}
        self._peers: dict[str, TunnelPeerIntent] = {}
        self._routes: dict[str, RouteIntent] = {}
        self._retired_devices: set[str] = set()
        self._applied_tunnels: dict[str, TunnelIntent] = {}
        self.dirty = True
        """Intents changed since the last successful :meth:`apply` (an apply is also the
        overlay's resync, so the agent skips it on a change that touched no route)."""

    # -- RouteCallbacks ---------------------------------------------------------------------

    def on_tunnel_update(self, device: str, tunnel: TunnelIntent | None) -> None:
        self.dirty = True
        if tunnel is None:
            self._tunnels.pop(device, None)
            self._retired_devices.add(device)
        else:
            self._tunnels[device] = tunnel
            self._retired_devices.discard(device)

    def on_tunnel_peer_update(self, node: str, peer: TunnelPeerIntent | None) -> None:
        self.dirty = True
        if peer is None:
            self._peers.pop(node, None)
        else:
            self._peers[node] = peer

    def on_route_update(self, dst_cidr: str, route: RouteIntent | None) -> None:
        self.dirty = True
        if route is None:
            self._routes.pop(dst_cidr, None)
        else:
            self._routes[dst_cidr] = route

    # -- desired state ----------------------------------------------------------------------

    @property
    def tunnel(self) -> TunnelIntent | None:
        return next(iter(self._tunnels.values()), None)

    def device_mac(self) -> str | None:
        """The MAC of the programmed VXLAN device (what the agent publishes on its Node)."""
        tunnel = self.tunnel
        if tunnel is None:
            return None
        with Netlink(self.netns) as nl:
            link = nl.find_link(tunnel.device)
        return link.mac if link is not None else None

    # -- apply ------------------------------------------------------------------------------

    def apply(self) -> ApplyResult:
        """Bring the namespace to the desired state; returns what had to change."""
        links = fdb = neighbours = routes = 0
        with Netlink(self.netns) as nl:
            for device in sorted(self._retired_devices):
                link = nl.find_link(device)
                if link is not None and link.kind == "vxlan" and nl.delete_link(device):
                    links += 1
            self._retired_devices.clear()
            for device, tunnel in sorted(self._tunnels.items()):
                links += self._apply_device(nl, tunnel)
                fdb_count, neighbour_count = self._apply_peers(nl, device)
                fdb += fdb_count
                neighbours += neighbour_count
                routes += self._apply_routes(nl, device)
        self.dirty = False
        return ApplyResult(links, fdb, neighbours, routes)

    def _apply_device(self, nl: Netlink, tunnel: TunnelIntent) -> int:
        changes = 0
        device = tunnel.device
        link = nl.find_link(device)
        if link is not None and link.kind != "vxlan":
            raise NetlinkError("apply", f"link {device}", "exists and is not a VXLAN device")
        previous = self._applied_tunnels.get(device)
        if (
            link is not None
            and previous is not None
            and (
                (previous.vni, previous.local_underlay_ip) != (tunnel.vni, tunnel.local_underlay_ip)
            )
        ):
            nl.delete_link(device)  # VNI or source changed: the kernel cannot modify those
            link = None
            changes += 1
        if link is None:
            link = nl.create_vxlan(
                device, tunnel.vni, tunnel.local_underlay_ip, self._underlay_link(nl, tunnel)
            )
            changes += 1
        if tunnel.mac is not None and link.mac != tunnel.mac:
            self._set_mac(device, tunnel.mac)
            changes += 1
        wanted = IPv4Interface(f"{tunnel.tunnel_ip}/32")
        addresses = {address.interface for address in nl.addresses(device)}
        for address in addresses:
            if address.version == 4 and address != wanted:
                nl.delete_address(device, address)
                changes += 1
        if wanted not in addresses:
            nl.add_address(device, wanted)
            changes += 1
        if not nl.link(device).up:
            nl.set_up(device)
            changes += 1
        if self._forwarding and nl.get_sysctl("net.ipv4.ip_forward") != "1":
            nl.set_sysctl("net.ipv4.ip_forward", 1)
        self._applied_tunnels[device] = tunnel
        return changes

    @staticmethod
    def _underlay_link(nl: Netlink, tunnel: TunnelIntent) -> str | None:
        """The link holding the underlay address (``None``: let the kernel route)."""
        for link in nl.links():
            if link.kind == "vxlan":
                continue
            for address in nl.addresses(link.name):
                if address.interface.ip == tunnel.local_underlay_ip:
                    return link.name
        return None

    def _set_mac(self, device: str, mac: str) -> None:
        # The netlink driver has no "set address" call; iproute2 does it in one step.
        ip = shutil.which("ip") or "/usr/sbin/ip"
        namespace = ["-n", self.netns] if self.netns is not None else []
        result = subprocess.run(
            [ip, *namespace, "link", "set", "dev", device, "address", mac],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise NetlinkError("set_mac", f"link {device}", result.stderr.strip())

    def _apply_peers(self, nl: Netlink, device: str) -> tuple[int, int]:
        peers = self._peers.values()
        want_fdb = {FdbEntry(p.mac, p.underlay_ip, device) for p in peers}
        want_neighbours = {Neighbour(p.tunnel_ip, p.mac, device) for p in peers}
        have_fdb = {entry for entry in nl.fdb_entries(device) if entry.dst_ip is not None}
        have_neighbours = set(nl.neighbours(dev=device))
        # Add first, then remove: a peer whose MAC moved is never without an entry.
        for entry in sorted(want_fdb - have_fdb, key=str):
            nl.add_fdb(entry)
        for neighbour in sorted(want_neighbours - have_neighbours, key=str):
            nl.add_neighbour(neighbour)
        stale_neighbours = {
            n
            for n in have_neighbours - want_neighbours
            if n.ip not in {w.ip for w in want_neighbours}
        }
        for neighbour in sorted(stale_neighbours, key=str):
            nl.delete_neighbour(neighbour)
        for entry in sorted(have_fdb - want_fdb, key=str):
            nl.delete_fdb(entry)
        return (
            len(want_fdb - have_fdb) + len(have_fdb - want_fdb),
            len(want_neighbours - have_neighbours) + len(stale_neighbours),
        )

    def _apply_routes(self, nl: Netlink, device: str) -> int:
        wanted = {
            Route(r.dst_cidr, r.via_tunnel_ip, device, RTPROT_PALISADE, onlink=True)
            for r in self._routes.values()
            if r.device == device
        }
        have = set(nl.routes(protocol=RTPROT_PALISADE, dev=device))
        for route in sorted(wanted - have, key=str):
            nl.replace_route(route)
        wanted_destinations = {route.dst for route in wanted}
        stale = {route for route in have - wanted if route.dst not in wanted_destinations}
        for route in sorted(stale, key=str):
            nl.delete_route(route)
        return len(wanted - have) + len(stale)
