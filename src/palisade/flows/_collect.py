"""Flow collection, the pure part: kernel events in, Calico flow records out.

Two kernel sources meet here (the agent reads them; this module never touches a socket):

- **rule hits** — every policy or profile rule that decides (Allow, Deny, Pass, and each
  tier's end-of-tier default) logs the packets that reach it to an NFLOG group with a prefix
  naming the hit (:class:`HitTable`). Only packets that are not part of an established
  connection walk the policy chains, so these are the first packets of connections and the
  packets of denied attempts. In the order they arrive, the hits of one 5-tuple and direction
  are its enforced trace; the last one decides (``allow`` or ``deny``). A denied attempt has
  no connection: its packets are counted from the log.
- **conntrack** — allowed connections, with byte and packet counters (``nf_conntrack_acct``)
  read at every flush and when the kernel forgets them.

:class:`FlowCollector` joins them per connection and direction (``egress``: the node's
endpoint is the source, reporter ``src``; ``ingress``: it is the destination, reporter
``dst``), and at each flush emits one level-0 :class:`FlowRecord` per connection and direction
active in the interval, with the counters' growth in that interval, then forgets connections
that ended. Endpoint names, namespaces, labels and types come from an ``EndpointLookup``.

Two fields cannot come from the kernel: the *pending* trace (staged policies evaluated as if
enforced, spec 4.10) and the destination's Service. :meth:`FlowCollector.flush` takes a
``Completer`` for them (the agent passes ``palisade.policy.FlowTracer.complete``, this module
knowing nothing of policies beyond the kernel's hits); without one, or where it answers
``None``, ``pending_policies`` are the enforced hits — what Calico writes when no staged policy
changes the evaluation — and the Service fields are ``-``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ._record import EndpointType, FlowRecord, proto_name

Direction = Literal["ingress", "egress"]
PREFIX = "pal"  # NFLOG prefixes: pal<i|e><hit id>
DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")
_CODES: dict[str, Direction] = {"i": "ingress", "e": "egress"}
PROFILE_TIER = "__PROFILE__"


@dataclass(frozen=True, slots=True)
class Hit:
    """One policy-hit: ``tier``, the policy part of Calico's hit string, the action the rule
    (or the tier's default, ``rule == -1``) took, and the rule's index."""

    tier: str
    policy: str
    action: Literal["allow", "deny", "pass"]
    rule: int

    def text(self, index: int) -> str:
        """Calico's ``index|tier|policy|action|rule`` string."""
        return f"{index}|{self.tier}|{self.policy}|{self.action}|{self.rule}"


def hit_prefix(direction: Direction, policy: str, action: str, rule: int) -> str:
    """The NFLOG prefix of a hit: ``pal`` + ``i``/``e`` + 12 hex digits of a digest of the
    policy part, action and rule index. Short (the kernel keeps at most 127 bytes, so names
    cannot travel in it) and stable, so the renderer and the collector compute it alike."""
    digest = hashlib.blake2s(f"{policy}|{action}|{rule}".encode(), digest_size=6).hexdigest()
    return f"{PREFIX}{direction[0]}{digest}"


class HitTable:
    """Prefix → hit, built from the same intents the dataplane renders: each policy's and
    profile's deciding rules, and each endpoint's tiers (which tier a policy is in, and the
    end-of-tier hit, rule ``-1``, naming the tier's last policy)."""

    def __init__(self) -> None:
        self._hits: dict[str, tuple[str, str, int]] = {}  # digest → (policy, action, rule)
        self._tiers: dict[str, str] = {}  # policy part → tier

    def add(self, policy: str, action: str, rule: int, tier: str | None = None) -> None:
        digest = hit_prefix("ingress", policy, action, rule)[len(PREFIX) + 1 :]
        self._hits[digest] = (policy, action, rule)
        if tier is not None:
            self._tiers[policy] = tier

    def set_tier(self, policy: str, tier: str) -> None:
        self._tiers[policy] = tier

    def prefix(self, direction: Direction, hit: Hit) -> str:
        """Register ``hit`` (with its tier) and return its prefix."""
        self.add(hit.policy, hit.action, hit.rule, hit.tier)
        return hit_prefix(direction, hit.policy, hit.action, hit.rule)

    def lookup(self, prefix: str) -> tuple[Direction, Hit] | None:
        if not prefix.startswith(PREFIX) or len(prefix) < len(PREFIX) + 2:
            return None
        direction = _CODES.get(prefix[len(PREFIX)])
        found = self._hits.get(prefix[len(PREFIX) + 1 :])
        if direction is None or found is None:
            return None
        policy, action, rule = found
        if action not in ("allow", "deny", "pass"):
            return None
        tier = self._tiers.get(policy, PROFILE_TIER if policy.startswith("pro:") else "-")
        return direction, Hit(tier, policy, action, rule)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """What a flow record says of one side."""

    name: str = "-"
    name_aggr: str = "-"
    namespace: str = "-"
    type: EndpointType = "net"
    labels: tuple[str, ...] = ()


EndpointLookup = Callable[[str], EndpointInfo]
"""An IP address → what the node knows of it (a pod, a network set, or just a network)."""


def network_info(ip: str) -> EndpointInfo:
    """An address nothing names: ``pvt`` or ``pub`` as Calico aggregates it."""
    address = ipaddress.ip_address(ip)
    private = address.version == 4 and any(
        address in ipaddress.ip_network(net)
        for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    )
    return EndpointInfo(name_aggr="pvt" if private else "pub")


FiveTuple = tuple[int, str, int | None, str, int | None]  # protocol, src, sport, dst, dport


class ServiceFields(Protocol):
    """A record's ``dest_service_*`` fields: namespace, name, port name, port number."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def port_name(self) -> str: ...

    @property
    def port(self) -> int | None: ...


Completer = Callable[[Direction, FiveTuple], tuple[tuple[str, ...] | None, ServiceFields | None]]
"""(direction, 5-tuple) → (the pending trace, None when it is the enforced one; the
destination's Service, or None)."""


@dataclass(frozen=True, slots=True)
class ConntrackEntry:
    """A connection the kernel tracks, with its counters in each direction."""

    protocol: int
    source: str
    source_port: int | None
    destination: str
    destination_port: int | None
    packets_out: int  # original direction: source → destination
    bytes_out: int
    packets_in: int  # reply direction
    bytes_in: int

    @property
    def key(self) -> FiveTuple:
        return (
            self.protocol,
            self.source,
            self.source_port,
            self.destination,
            self.destination_port,
        )


@dataclass
class _Flow:
    direction: Direction
    key: FiveTuple
    hits: list[Hit] = field(default_factory=list)
    started: float = 0.0
    started_in_interval: bool = True
    ended: bool = False
    denied_packets: int = 0
    denied_bytes: int = 0
    counted: tuple[int, int, int, int] = (0, 0, 0, 0)  # packets/bytes out, in, at last flush
    current: tuple[int, int, int, int] = (0, 0, 0, 0)
    seen_in_conntrack: bool = False

    @property
    def action(self) -> Literal["allow", "deny"]:
        last = self.hits[-1].action if self.hits else "deny"
        return "allow" if last == "allow" else "deny"


class FlowCollector:
    """Joins rule hits and conntrack into flow records (see the module docstring)."""

    def __init__(self, node: str, hits: HitTable, lookup: EndpointLookup) -> None:
        self.node = node
        self.hits = hits
        self.lookup = lookup
        self._flows: dict[tuple[Direction, FiveTuple], _Flow] = {}
        self.unknown_prefixes = 0

    def on_logged(
        self,
        prefix: str,
        key: FiveTuple,
        length: int,
        now: float,
    ) -> None:
        """A packet a rule logged: ``key`` its 5-tuple, ``length`` its IP length."""
        found = self.hits.lookup(prefix)
        if found is None:
            self.unknown_prefixes += 1
            return
        direction, hit = found
        flow = self._flows.get((direction, key))
        if flow is None:
            flow = self._flows[(direction, key)] = _Flow(direction, key, started=now)
        if flow.hits and flow.hits[-1].action != "pass":
            # a new attempt of a 5-tuple whose trace is complete (a retransmitted SYN, a UDP
            # packet before conntrack confirmed the first): the trace restarts
            if hit == flow.hits[0]:
                flow.hits = []
            else:
                return
        flow.hits.append(hit)
        if hit.action == "deny":
            flow.denied_packets += 1
            flow.denied_bytes += length

    def on_conntrack(self, entries: Iterable[ConntrackEntry]) -> None:
        """A dump of the kernel's connections: the counters of those we know."""
        for entry in entries:
            for direction in DIRECTIONS:
                flow = self._flows.get((direction, entry.key))
                if flow is not None:
                    flow.seen_in_conntrack = True
                    flow.current = (
                        entry.packets_out,
                        entry.bytes_out,
                        entry.packets_in,
                        entry.bytes_in,
                    )

    def on_destroyed(self, entry: ConntrackEntry) -> None:
        """The kernel forgot a connection (final counters)."""
        self.on_conntrack([entry])
        for direction in DIRECTIONS:
            flow = self._flows.get((direction, entry.key))
            if flow is not None:
                flow.ended = True

    def flush(
        self,
        start: float,
        end: float,
        live: set[FiveTuple] | None = None,
        complete: Completer | None = None,
    ) -> list[FlowRecord]:
        """Records for the interval ``[start, end)``; ``live`` (the 5-tuples conntrack still
        holds, from the dump just fed) marks allowed connections missing from it as ended;
        ``complete`` gives each record's pending trace and Service (see the module)."""
        records = []
        for map_key, flow in list(self._flows.items()):
            allowed_and_tracked = flow.action == "allow" and flow.seen_in_conntrack
            if allowed_and_tracked and live is not None and flow.key not in live:
                flow.ended = True
            idle = (
                flow.action == "allow"
                and flow.current == flow.counted
                and not flow.started_in_interval
                and not flow.ended
            )
            if not idle:  # a connection that did nothing in the interval is not reported
                records.append(self._record(flow, int(start), int(end), complete))
            flow.counted = flow.current
            flow.started_in_interval = False
            flow.denied_packets = flow.denied_bytes = 0
            if flow.ended or flow.action == "deny":
                del self._flows[map_key]
        return records

    def _record(
        self, flow: _Flow, start: int, end: int, complete: Completer | None = None
    ) -> FlowRecord:
        protocol, source, sport, destination, dport = flow.key
        src, dst = self.lookup(source), self.lookup(destination)
        local_is_source = flow.direction == "egress"
        if flow.action == "deny":
            packets_out, bytes_out, packets_in, bytes_in = (
                flow.denied_packets,
                flow.denied_bytes,
                0,
                0,
            )
        else:
            (packets_out, bytes_out, packets_in, bytes_in) = (
                flow.current[0] - flow.counted[0],
                flow.current[1] - flow.counted[1],
                flow.current[2] - flow.counted[2],
                flow.current[3] - flow.counted[3],
            )
        if not local_is_source:  # "in" and "out" are the reporting endpoint's
            packets_out, bytes_out, packets_in, bytes_in = (
                packets_in,
                bytes_in,
                packets_out,
                bytes_out,
            )
        enforced = tuple(hit.text(i) for i, hit in enumerate(flow.hits))
        pending, service = (None, None) if complete is None else complete(flow.direction, flow.key)
        return FlowRecord(
            start_time=start,
            end_time=end,
            action=flow.action,
            reporter="src" if local_is_source else "dst",
            proto=proto_name(protocol),
            source_ip=source,
            source_port=sport,
            source_name=src.name,
            source_name_aggr=src.name_aggr,
            source_namespace=src.namespace,
            source_type=src.type,
            source_labels=src.labels,
            dest_ip=destination,
            dest_port=dport,
            dest_name=dst.name,
            dest_name_aggr=dst.name_aggr,
            dest_namespace=dst.namespace,
            dest_type=dst.type,
            dest_labels=dst.labels,
            dest_service_namespace=service.namespace if service else "-",
            dest_service_name=service.name if service else "-",
            dest_service_port=service.port_name if service else "-",
            dest_service_port_num=service.port if service else None,
            enforced_policies=enforced,
            pending_policies=enforced if pending is None else pending,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            packets_in=packets_in,
            packets_out=packets_out,
            num_flows=1,
            num_flows_started=1 if flow.started_in_interval else 0,
            num_flows_completed=1 if flow.ended or flow.action == "deny" else 0,
            host=self.node,
        )
