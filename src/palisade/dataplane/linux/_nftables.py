"""The nftables dataplane for workload endpoints: intents in, one atomic JSON batch out.

:class:`NftablesDataplane` implements ``palisade.calc.DataplaneCallbacks``: it keeps the
desired intents, renders them (``_nft_render``, pure) into the objects of one table of
Palisade's own, ``inet palisade``, and on :meth:`~NftablesDataplane.apply` sends the smallest
delta between that and what the kernel has as ONE nft transaction — the kernel commits all of
it or, if any command fails, none of it. Nobody else's table is ever read or written.

Transactions go through libnftables in process (``_libnft``: a thread inside the node's
network namespace holds the library's context), which is what ``nft -j -f -`` does minus a
process spawn per change; where the library cannot be loaded, each transaction spawns
``ip netns exec NS nft -j -f -`` instead. Both give the same errors (:class:`NftablesError`
with the equivalent nft command and nft's message).

Chain layout::

    forward  (base: hook forward, priority filter, policy accept)
      ct state established,related accept          ← fast path: only new flows see policy
      ct state invalid drop
      iifname vmap @pal-from-wl  → jump pal-fr-<ep>  (egress policy of the source workload)
      oifname vmap @pal-to-wl    → jump pal-to-<ep>  (ingress policy of the destination)

    pal-to-<ep> / pal-fr-<ep>  (one pair per endpoint; ``deny_all``: a single drop)
      per tier with policies, in order:
        clear the verdict mark
        mark == 0 → jump pal-pi-<policy> / pal-po-<policy>   (each applying policy in order)
        mark == allow → clear mark; accept (to-chain) / return to the base chain (fr-chain)
        mark == deny  → drop
        mark == 0 → drop                           (end-of-tier Deny; absent when it is Pass)
        (mark == pass falls through to the next tier)
      profiles: the same, through pal-ri-/pal-ro-<profile>; Pass there denies
      drop                                         (nothing decided)

    pal-pi-<policy> / pal-po-<policy> / pal-ri-, pal-ro-<profile>
      one rule per rule (split into consecutive variants where nft cannot express an OR,
      e.g. IPv4 vs IPv6 or a port range vs a named port): on a match set the verdict mark
      (allow / deny / pass) and return; Log rules log and fall through

The verdict travels in two bits of the packet mark (``MARK_MASK``) because a jumped-to chain
cannot return a verdict: ``accept`` in the source's egress chain would end the base chain
before the destination's ingress chain ran. Both directions run in the one ``forward`` hook:
egress of the source when the packet arrives from its interface, ingress of the destination
as it leaves towards its interface, and a packet passes only if both allow it.

IP sets become two named sets per set id (``<id>4`` / ``<id>6``, typed ``ipv4_addr`` /
``ipv6_addr`` with ``flags interval``); named-port and Service-port sets become
``ipv4_addr . inet_proto . inet_service`` (and the IPv6 twin). Every rule has a counter and a
comment naming its policy or profile, direction and rule index (flow attribution), ending in a
digest of its expressions by which the driver recognises it when reading the table back.

Desired versus actual: after a successful apply the driver knows the actual table; on start it
*adopts* whatever ``inet palisade`` the kernel already has (listing it instead of flushing it,
so established connections keep flowing through the fast path) and repairs only what differs;
:meth:`~NftablesDataplane.resync` re-reads the table and repairs drift, and a batch that fails
against the remembered table is retried once from a fresh read. A changed chain is flushed and
refilled inside the transaction (its counters restart); a set or dispatch map that only gains
elements gets just those, one that loses any is flushed and refilled inside the transaction
(never an element command, which makes nft list every interval set first). Each intent is
rendered once and its chains reused while it is unchanged, so one change costs a millisecond
or two of Python however large the node is.
:meth:`~NftablesDataplane.read_counters` returns every rule's counters with its comment.

Limits, for now: only the ``forward`` hook is programmed, so traffic between a workload and
its own node (host processes) is not policed; ``ct state invalid drop`` applies to every
forwarded packet of the node, not only workload traffic; host endpoints, doNotTrack and
preDNAT policies are not rendered.

Left to others: deciding what to program (``palisade.calc``), interfaces and routes
(``_netlink``), and the agent's loop that calls :meth:`~NftablesDataplane.apply` after each
``CalcGraph.flush()`` and :meth:`~NftablesDataplane.resync` periodically.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palisade.calc import EndpointIntent, PolicyIntent, ProfileIntent, SetIntent

from ._libnft import LibnftSession, load_library
from ._libnft import available as libnftables_available
from ._model import NetlinkError
from ._netns import call_in_netns
from ._nft_render import (
    BASE_CHAIN,
    FAMILY,
    TABLE,
    Json,
    NftChain,
    NftRule,
    NftSet,
    Ruleset,
    RulesetRenderer,
    delta_commands,
    protocol_number,
    table_command,
)


@dataclass(frozen=True, slots=True)
class RuleCounter:
    """One rule's counters; ``comment`` names its policy or profile, direction and rule index
    (``policy np:prod/db ingress 1 #…``) or its place in an endpoint chain."""

    chain: str
    comment: str
    packets: int
    bytes: int


class NftablesError(Exception):
    """An nft command failed: ``command`` is what was run, ``message`` what nft said."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message


def _nft_binary() -> str:
    return shutil.which("nft") or "/usr/sbin/nft"


class NftablesDataplane:
    """Keeps the desired intents and programs them into ``inet palisade``.

    ``netns``: program the table inside that network namespace; ``None``: in the namespace of
    the thread that first talks to the kernel. ``libnftables``: ``None`` uses the library in
    process when it loads and ``nft`` processes otherwise; ``True`` insists on the library,
    ``False`` always spawns ``nft`` (``ip netns exec NS nft -j ...``).
    Callbacks only record intents; nothing reaches the kernel before :meth:`apply`.
    :meth:`close` (or ``with``) ends the library's thread.
    """

    def __init__(
        self, netns: str | None = None, *, timeout: float = 30.0, libnftables: bool | None = None
    ) -> None:
        self.netns = netns
        self.timeout = timeout
        if libnftables is True:
            load_library()  # LibnftablesUnavailable if it cannot be used
        use_library = libnftables is True or (libnftables is None and libnftables_available())
        self.backend = "libnftables" if use_library else "nft"
        """``libnftables`` (in process, on a thread inside ``netns``) or ``nft`` (a process per
        command, the fallback where the library cannot be loaded)."""
        self._session: LibnftSession | None = None
        self._session_lock = threading.Lock()
        self.sets: dict[str, SetIntent] = {}
        self.policies: dict[str, PolicyIntent] = {}
        self.profiles: dict[str, ProfileIntent] = {}
        self.endpoints: dict[str, EndpointIntent] = {}
        self._renderer = RulesetRenderer()
        self._actual: Ruleset | None = None  # None: not known; read the kernel's next time
        self._table_exists = False
        self.transactions = 0
        self.last_commands: list[Json] = []
        self._generation = _Generation(netns)
        self._synced_generation: int | None = None
        self.skipped_resyncs = 0
        """Resyncs answered without reading the table: the namespace's nftables generation
        was the one this driver's own last transaction (or last read) left."""

    # -- DataplaneCallbacks -----------------------------------------------------------------

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        _put(self.sets, set_id, ipset)

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        _put(self.policies, policy_id, policy)

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        _put(self.profiles, profile_id, profile)

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        _put(self.endpoints, endpoint_id, endpoint)

    # -- programming ------------------------------------------------------------------------

    def desired(self) -> Ruleset:
        return self._renderer.render(self.sets, self.policies, self.profiles, self.endpoints)

    def apply(self) -> int:
        """Bring the kernel to the desired state in one transaction; returns the number of
        commands sent (0: already in sync). On the first call, adopts the existing table.

        If the batch fails while the driver trusted its memory of the table (someone else may
        have changed it), the table is read back and the repaired delta tried once more; a
        failure then raises :class:`NftablesError`. A failed batch changes nothing.
        """
        trusted = self._actual is not None
        try:
            return self._apply_once()
        except NftablesError:
            if not trusted:
                raise
        return self._apply_once()

    def _apply_once(self) -> int:
        if self._actual is None:
            self._read_actual()
        assert self._actual is not None
        desired = self.desired()
        commands = delta_commands(self._actual, desired, create_table=not self._table_exists)
        self.last_commands = commands
        if not commands:
            return 0
        try:
            self.run_batch(commands)
        except NftablesError:
            self._actual = None  # the batch changed nothing; read the table before the next
            self._synced_generation = None
            raise
        self._actual = desired
        self._table_exists = True
        self.transactions += 1
        if self._synced_generation is not None or self.transactions == 1:
            self._synced_generation = self._generation.current()
        return len(commands)

    def resync(self, *, force: bool = False) -> int:
        """Re-read the kernel's table and repair any drift; returns the commands sent.

        Reading a large table back takes seconds (6-8 s at 1,000 endpoints), so unless
        ``force`` the read is skipped when the namespace's nftables generation (which every
        committed transaction, of any table, moves on) is still the one this driver's own
        last transaction or read left: nothing can have drifted since."""
        known = not force and self._actual is not None and self._synced_generation is not None
        if known and self._generation.current() == self._synced_generation:
            self.skipped_resyncs += 1
            return 0
        self._actual = None
        sent = self.apply()
        self._synced_generation = self._generation.current()
        return sent

    def delete_table(self) -> bool:
        """Remove ``inet palisade`` (lab teardown); False if it did not exist."""
        self._actual = None
        if self.read_table() is None:
            return False
        self.run_batch([table_command("delete")])
        return True

    # -- nft --------------------------------------------------------------------------------

    def close(self) -> None:
        """End the libnftables thread (if one runs) and free its context. Idempotent; a later
        call that needs the kernel starts a new one."""
        self._generation.close()
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> NftablesDataplane:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, args: Sequence[str], stdin: str | None = None) -> str:
        """What ``nft -j ARGS`` prints (``-f -`` reads ``stdin``); :class:`NftablesError` with
        nft's message if it fails."""
        where = [f"netns {self.netns}"] if self.netns else []
        if self.backend == "libnftables":
            where.append("libnftables")
        command = f"nft -j {' '.join(args)}" + (f" ({', '.join(where)})" if where else "")
        if self.backend == "libnftables":
            text = stdin if stdin is not None and list(args) == ["-f", "-"] else " ".join(args)
            return self._run_in_process(command, text)
        return self._run_subprocess(command, ["-j", *args], stdin)

    def _run_in_process(self, command: str, text: str) -> str:
        with self._session_lock:
            if self._session is None:
                try:
                    self._session = LibnftSession(self.netns)
                except OSError as exc:  # no such namespace, or not allowed to enter it
                    raise NftablesError(
                        command, f"cannot enter network namespace {self.netns}: {exc}"
                    ) from exc
            session = self._session
        try:
            result = session.run(text, timeout=self.timeout)
        except TimeoutError as exc:
            raise NftablesError(command, f"timed out after {self.timeout} s") from exc
        if result.status != 0:
            message = result.error.strip() or result.output.strip()
            raise NftablesError(command, message or f"status {result.status}")
        return result.output

    def _run_subprocess(self, command: str, args: Sequence[str], stdin: str | None) -> str:
        argv = [_nft_binary(), *args]
        if self.netns is not None:
            argv = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.netns, *argv]
        try:
            completed = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise NftablesError(command, f"timed out after {self.timeout} s") from exc
        except OSError as exc:
            raise NftablesError(command, str(exc)) from exc
        if completed.returncode != 0:
            message = completed.stderr.strip() or completed.stdout.strip()
            raise NftablesError(command, message or f"exit status {completed.returncode}")
        return completed.stdout

    def run_batch(self, commands: list[Json]) -> None:
        """Send ``commands`` as one ``nft -j -f -`` transaction (all or nothing)."""
        self._run(["-f", "-"], json.dumps({"nftables": commands}, separators=(",", ":")))

    def list_table(self) -> Json | None:
        """``nft -j list table inet palisade`` as parsed JSON; ``None`` if there is no table."""
        try:
            output = self._run(["list", "table", FAMILY, TABLE])
        except NftablesError as exc:
            # nft's own complaint about the table, not ip's or setns's about the namespace
            if "Error: No such file or directory" in exc.message:
                return None
            raise
        listing: Json = json.loads(output)
        return listing

    def read_table(self) -> Ruleset | None:
        """The kernel's ``inet palisade`` as a :class:`Ruleset`; ``None`` if there is none."""
        listing = self.list_table()
        return None if listing is None else parse_listing(listing)

    def read_counters(self) -> list[RuleCounter]:
        """Every rule's packet and byte counters with its chain and comment (attribution)."""
        listing = self.list_table()
        found = []
        for item in listing.get("nftables", []) if listing is not None else []:
            rule = item.get("rule")
            if rule is None:
                continue
            counter = next((e["counter"] for e in rule.get("expr", ()) if "counter" in e), None)
            if counter is None:
                continue
            found.append(
                RuleCounter(
                    str(rule["chain"]),
                    str(rule.get("comment", "")),
                    int(counter.get("packets", 0)),
                    int(counter.get("bytes", 0)),
                )
            )
        return found

    def _read_actual(self) -> None:
        actual = self.read_table()
        self._table_exists = actual is not None
        self._actual = actual if actual is not None else Ruleset({}, {}, {}, None)


def _put(store: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        store.pop(key, None)
    else:
        store[key] = value


# -- reading the table back ---------------------------------------------------------------------


def _network_elements(value: Any) -> list[str]:
    if isinstance(value, dict) and "elem" in value:  # an element with counters or a timeout
        return _network_elements(value["elem"]["val"])
    if isinstance(value, str):
        return [str(ipaddress.ip_network(value, strict=False))]
    if isinstance(value, dict) and "prefix" in value:
        prefix = value["prefix"]
        return [str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False))]
    if isinstance(value, dict) and "range" in value:
        low, high = (ipaddress.ip_address(v) for v in value["range"])
        return [str(n) for n in ipaddress.summarize_address_range(low, high)]
    raise ValueError(f"unexpected set element {value!r}")


def _port(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isdigit() else socket.getservbyname(text)


def _concat_element(value: Any) -> str:
    if isinstance(value, dict) and "elem" in value:
        return _concat_element(value["elem"]["val"])
    address, protocol, port = value["concat"]
    return f"{ipaddress.ip_address(address)} {protocol_number(protocol)} {_port(port)}"


def parse_listing(listing: Json) -> Ruleset:
    """``nft -j list table inet palisade`` → :class:`Ruleset` (rules known by comment only)."""
    sets: dict[str, NftSet] = {}
    maps: dict[str, dict[str, str]] = {}
    chain_names: list[str] = []
    rules: dict[str, list[NftRule]] = {}
    for item in listing.get("nftables", []):
        if "set" in item:
            body = item["set"]
            types = body["type"]
            type_tuple = (types,) if isinstance(types, str) else tuple(types)
            elements: set[str] = set()
            for element in body.get("elem", []):
                if len(type_tuple) == 1:
                    elements.update(_network_elements(element))
                else:
                    elements.add(_concat_element(element))
            interval = "interval" in body.get("flags", [])
            sets[body["name"]] = NftSet(body["name"], type_tuple, interval, frozenset(elements))
        elif "map" in item:
            body = item["map"]
            entries: dict[str, str] = {}
            for key, verdict in body.get("elem", []):
                target = (verdict.get("jump") or verdict.get("goto") or {}).get("target")
                entries[str(key)] = str(target)
            maps[body["name"]] = entries
        elif "chain" in item:
            chain_names.append(item["chain"]["name"])
        elif "rule" in item:
            body = item["rule"]
            rules.setdefault(body["chain"], []).append(
                NftRule(str(body.get("comment", "")), tuple(body.get("expr", ())))
            )
    chains = {
        name: NftChain(name, tuple(rules.get(name, ())))
        for name in chain_names
        if name != BASE_CHAIN
    }
    base = (
        NftChain(BASE_CHAIN, tuple(rules.get(BASE_CHAIN, ())))
        if BASE_CHAIN in chain_names
        else None
    )
    return Ruleset(sets, chains, maps, base)


__all__ = ["NftablesDataplane", "NftablesError", "RuleCounter", "parse_listing"]


class _Generation:
    """The nftables generation id of a namespace (``NFT_MSG_GETGEN``), over one raw netlink
    socket opened in it and kept; ``None`` when it cannot be read (callers then do the full
    read)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._socket: socket.socket | None = None
        self._sequence = 0
        self._lock = threading.Lock()

    def _open(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.settimeout(2.0)
            return sock

        return make() if self.netns is None else call_in_netns(self.netns, make, "nft genid")

    def current(self) -> int | None:
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = self._open()
                self._sequence += 1
                body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
                header = struct.pack(
                    "=IHHII", 16 + len(body), _GETGEN, _NLM_F_REQUEST, self._sequence, 0
                )
                self._socket.send(header + body)
                while True:
                    data = self._socket.recv(65536)
                    length, kind, _flags, sequence, _pid = struct.unpack_from("=IHHII", data)
                    if sequence != self._sequence:
                        continue  # a late answer to an earlier request
                    if kind != _NEWGEN:
                        raise OSError(f"netlink answered {kind} to GETGEN")
                    offset = 16 + 4  # nlmsghdr, nfgenmsg
                    while offset + 4 <= length:
                        size, attribute = struct.unpack_from("=HH", data, offset)
                        if attribute & 0x3FFF == _NFTA_GEN_ID and size >= 8:
                            return int(struct.unpack_from("!I", data, offset + 4)[0])
                        offset += (size + 3) & ~3
                    raise OSError("GETGEN answer without a generation id")
            except (OSError, NetlinkError, struct.error):
                self._close()
                return None

    def _close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        with self._lock:
            self._close()


_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_GETGEN = (_NFNL_SUBSYS_NFTABLES << 8) | 16  # NFT_MSG_GETGEN
_NEWGEN = (_NFNL_SUBSYS_NFTABLES << 8) | 15  # NFT_MSG_NEWGEN
_NFTA_GEN_ID = 1
_NLM_F_REQUEST = 1
