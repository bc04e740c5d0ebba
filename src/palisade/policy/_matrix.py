"""Vectorised evaluation: the reachability matrix and batch verdicts for millions of flows.

The reference evaluator (``_evaluate``) walks one flow at a time. Here the same tier algorithm
runs once per *local* endpoint over a boolean vector of all *peers* at once:

- A rule's match splits into a scalar part about the local endpoint (protocol, and its own side
  of the rule: the destination for ingress, the source for egress) and a vector part about the
  peers (the other side). Vector parts are built from shared masks — one per distinct selector,
  net list and named port — the same sharing Felix gets from IP sets.
- Local endpoints whose applying policies and scalar rule results are identical share one
  result vector (every replica of a Deployment, typically).
- Peers that no rule can tell apart form one class, so batch verdicts reduce to a table lookup
  indexed by (port class, source class, destination class).

Verdicts here are enforced verdicts; the trace and pending (staged) verdicts come from the
reference evaluator. ``tests/policy`` checks both paths agree on random clusters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from palisade.selector import Selector

from ._evaluate import PolicyEngine, TierPolicies
from ._types import (
    Action,
    CompiledRule,
    Direction,
    Endpoint,
    EntityMatch,
    Flow,
    IPAddress,
    IPNetwork,
    PortMatch,
)

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe of the matrix: a destination port (number or container-port name) and protocol."""

    port: int | str
    protocol: int


class _Peers:
    """The peer universe: endpoints (and any extra addresses) as columns of boolean vectors."""

    def __init__(
        self,
        engine: PolicyEngine,
        endpoints: Sequence[Endpoint | None],
        ips: Sequence[IPAddress],
    ) -> None:
        self.engine = engine
        self.endpoints = list(endpoints)
        self.ips = list(ips)
        self.size = len(self.ips)
        self.is_v4 = np.array([ip.version == 4 for ip in self.ips], dtype=bool)
        self.ip_int = np.array(
            [int(ip) if ip.version == 4 else 0 for ip in self.ips], dtype=np.uint64
        )
        label_keys: dict[tuple[tuple[str, str], ...] | None, int] = {}
        inverse = []
        for endpoint in self.endpoints:
            key = endpoint.labels if endpoint is not None else None
            inverse.append(label_keys.setdefault(key, len(label_keys)))
        self.label_sets = [dict(k) if k is not None else None for k in label_keys]
        self.label_inverse = np.array(inverse, dtype=np.intp)
        self._net_cache: dict[IPNetwork, BoolArray] = {}
        self._selector_cache: dict[Selector, BoolArray] = {}
        self._named_cache: dict[tuple[str, int, Selector | None, bytes], BoolArray] = {}

    def net_mask(self, net: IPNetwork) -> BoolArray:
        cached = self._net_cache.get(net)
        if cached is not None:
            return cached
        if net.version == 4:
            netmask = np.uint64(int(net.netmask))
            address = np.uint64(int(net.network_address))
            mask: BoolArray = self.is_v4 & ((self.ip_int & netmask) == address)
        else:
            mask = np.array([ip.version == 6 and ip in net for ip in self.ips], dtype=bool)
        self._net_cache[net] = mask
        return mask

    def nets_mask(self, nets: Sequence[IPNetwork]) -> BoolArray:
        mask = np.zeros(self.size, dtype=bool)
        for net in nets:
            mask |= self.net_mask(net)
        return mask

    def selector_mask(self, selector: Selector) -> BoolArray:
        """Peers whose address belongs to an endpoint or network set the selector matches."""
        cached = self._selector_cache.get(selector)
        if cached is not None:
            return cached
        per_set = np.array(
            [labels is not None and selector.matches(labels) for labels in self.label_sets],
            dtype=bool,
        )
        mask: BoolArray = per_set[self.label_inverse] if self.size else np.zeros(0, dtype=bool)
        for network_set in self.engine.cluster.network_sets:
            if network_set.nets and selector.matches(dict(network_set.labels)):
                mask = mask | self.nets_mask(network_set.nets)
        self._selector_cache[selector] = mask
        return mask

    def named_port_mask(
        self,
        name: str,
        protocol: int,
        ports: npt.NDArray[np.int64],
        selector: Selector | None,
    ) -> BoolArray:
        key = (name, protocol, selector, ports.tobytes())
        cached = self._named_cache.get(key)
        if cached is not None:
            return cached
        declared = np.array(
            [e.named_port(name, protocol) if e is not None else None for e in self.endpoints],
            dtype=object,
        )
        has = np.array([d is not None for d in declared], dtype=bool)
        numbers = np.where(has, declared, -1).astype(np.int64)
        mask: BoolArray = has & (numbers == ports)
        if selector is not None:
            labels_mask = np.array(
                [labels is not None and selector.matches(labels) for labels in self.label_sets],
                dtype=bool,
            )[self.label_inverse]
            mask &= labels_mask
        self._named_cache[key] = mask
        return mask


def _ports_vector(
    peers: _Peers,
    ports: PortMatch,
    protocol: int,
    peer_ports: npt.NDArray[np.int64] | None,
    selector: Selector | None,
) -> BoolArray:
    if peer_ports is None:  # the peer's port is unknown (ephemeral source port)
        return np.zeros(peers.size, dtype=bool)
    mask = np.zeros(peers.size, dtype=bool)
    for port_range in ports.ranges:
        mask |= (peer_ports >= port_range.low) & (peer_ports <= port_range.high)
    for name in ports.names:
        mask |= peers.named_port_mask(name, protocol, peer_ports, selector)
    return mask


def _entity_vector(
    peers: _Peers,
    entity: EntityMatch,
    protocol: int,
    peer_ports: npt.NDArray[np.int64] | None,
    *,
    is_destination: bool,
) -> BoolArray:
    mask = np.ones(peers.size, dtype=bool)
    if entity.is_any:
        return mask
    if entity.nets is not None:
        mask &= peers.nets_mask(entity.nets)
    if entity.not_nets:
        mask &= ~peers.nets_mask(entity.not_nets)
    if entity.selector is not None:
        mask &= peers.selector_mask(entity.selector)
    if entity.not_selector is not None:
        mask &= ~peers.selector_mask(entity.not_selector)
    if entity.ports:
        mask &= _ports_vector(peers, entity.ports, protocol, peer_ports, entity.selector)
    if entity.not_ports:
        mask &= ~_ports_vector(peers, entity.not_ports, protocol, peer_ports, entity.selector)
    if entity.service is not None:
        engine = peers.engine
        for index, ip in enumerate(peers.ips):
            if not mask[index]:
                continue
            port = int(peer_ports[index]) if peer_ports is not None else None
            mask[index] = engine.entity_matches(
                EntityMatch(service=entity.service),
                ip,
                port,
                protocol,
                is_destination=is_destination,
            )
    return mask


def _scalar_protocol_match(rule: CompiledRule, protocol: int, ip_version: int) -> bool:
    if rule.ip_version is not None and rule.ip_version != ip_version:
        return False
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == protocol:
        return False
    # Matrix and batch probes are TCP/UDP/SCTP: an ICMP type/code can never match them.
    return rule.icmp is None


class VectorEvaluator:
    """Enforced verdicts of one direction for a local endpoint against every peer at once."""

    def __init__(self, engine: PolicyEngine, peers: _Peers, protocol: int) -> None:
        self.engine = engine
        self.peers = peers
        self.protocol = protocol
        self._rule_vectors: dict[tuple[int, Direction], BoolArray] = {}
        self._results: dict[tuple[object, ...], BoolArray] = {}

    def _peer_vector(
        self,
        rule: CompiledRule,
        direction: Direction,
        peer_ports: npt.NDArray[np.int64] | None,
    ) -> BoolArray:
        key = (id(rule), direction)
        cached = self._rule_vectors.get(key)
        if cached is None:
            if direction is Direction.EGRESS:
                cached = _entity_vector(
                    self.peers, rule.destination, self.protocol, peer_ports, is_destination=True
                )
            else:
                cached = _entity_vector(
                    self.peers, rule.source, self.protocol, None, is_destination=False
                )
            self._rule_vectors[key] = cached
        return cached

    def _local_match(
        self, rule: CompiledRule, endpoint: Endpoint, direction: Direction, local_port: int | None
    ) -> bool:
        ip = endpoint.ips[0]
        if not _scalar_protocol_match(rule, self.protocol, ip.version):
            return False
        if direction is Direction.EGRESS:
            entity, port, is_destination = rule.source, None, False
        else:
            entity, port, is_destination = rule.destination, local_port, True
        return entity.is_any or self.engine.entity_matches(
            entity, ip, port, self.protocol, is_destination=is_destination
        )

    def evaluate(
        self,
        endpoint: Endpoint,
        direction: Direction,
        local_port: int | None,
        peer_ports: npt.NDArray[np.int64] | None,
    ) -> BoolArray:
        tiers = self.engine.applying(endpoint, direction, pending=False)
        profiles = tuple(
            self.engine.cluster.profiles[p]
            for p in endpoint.profiles
            if p in self.engine.cluster.profiles
        )
        local = tuple(
            tuple(
                tuple(
                    self._local_match(r, endpoint, direction, local_port)
                    for r in p.rules(direction)
                )
                for p in tp.policies
            )
            for tp in tiers
        )
        profile_local = tuple(
            tuple(
                self._local_match(r, endpoint, direction, local_port) for r in prof.rules(direction)
            )
            for prof in profiles
        )
        key = (
            direction,
            tuple(tuple(id(p) for p in tp.policies) for tp in tiers),
            local,
            tuple(p.name for p in profiles),
            profile_local,
        )
        cached = self._results.get(key)
        if cached is not None:
            return cached
        result = self._run(tiers, local, profiles, profile_local, direction, peer_ports)
        self._results[key] = result
        return result

    def _run(
        self,
        tiers: tuple[TierPolicies, ...],
        local: tuple[tuple[tuple[bool, ...], ...], ...],
        profiles: tuple[object, ...],
        profile_local: tuple[tuple[bool, ...], ...],
        direction: Direction,
        peer_ports: npt.NDArray[np.int64] | None,
    ) -> BoolArray:
        size = self.peers.size
        allowed = np.zeros(size, dtype=bool)
        undecided = np.ones(size, dtype=bool)
        for tier_policies, tier_local in zip(tiers, local, strict=True):
            in_tier = undecided.copy()
            for policy, policy_local in zip(tier_policies.policies, tier_local, strict=True):
                if policy.staged:
                    continue
                for rule, rule_local in zip(policy.rules(direction), policy_local, strict=True):
                    if not rule_local or rule.action is Action.LOG:
                        continue
                    hit = in_tier & self._peer_vector(rule, direction, peer_ports)
                    if not hit.any():
                        continue
                    in_tier &= ~hit
                    if rule.action is Action.ALLOW:
                        allowed |= hit
                        undecided &= ~hit
                    elif rule.action is Action.DENY:
                        undecided &= ~hit
                    # Pass: leaves the tier undecided, for the next tier.
                if not in_tier.any():
                    break
            if tier_policies.has_enforced and tier_policies.tier.default_action is not Action.PASS:
                undecided &= ~in_tier  # end-of-tier deny
            if not undecided.any():
                return allowed
        for profile, rules_local in zip(profiles, profile_local, strict=True):
            rules = profile.rules(direction)  # type: ignore[attr-defined]
            for rule, rule_local in zip(rules, rules_local, strict=True):
                if not rule_local or rule.action is Action.LOG:
                    continue
                hit = undecided & self._peer_vector(rule, direction, peer_ports)
                if rule.action is Action.ALLOW:
                    allowed |= hit
                undecided &= ~hit
        return allowed


@dataclass(frozen=True)
class Matrix:
    """Verdicts for every ordered pair of pods, one boolean matrix per probe."""

    pods: list[str]
    probes: list[Probe]
    allowed: list[BoolArray]  # [probe] → [source, destination]

    def as_dict(self, probe_index: int) -> dict[str, dict[str, bool]]:
        grid = self.allowed[probe_index]
        return {
            src: {dst: bool(grid[i, j]) for j, dst in enumerate(self.pods)}
            for i, src in enumerate(self.pods)
        }


def _resolve_ports(
    engine: PolicyEngine, endpoints: Sequence[Endpoint | None], probe: Probe
) -> tuple[npt.NDArray[np.int64], BoolArray]:
    ports = np.full(len(endpoints), -1, dtype=np.int64)
    ok = np.zeros(len(endpoints), dtype=bool)
    for index, endpoint in enumerate(endpoints):
        try:
            ports[index] = engine.resolve_port(endpoint, probe.port, probe.protocol)
            ok[index] = True
        except LookupError:
            pass
    return ports, ok


def reachability_matrix(engine: PolicyEngine, probes: Sequence[Probe]) -> Matrix:
    pods = sorted(engine.cluster.pods, key=lambda e: (e.namespace or "", e.name))
    peers = _Peers(engine, pods, [p.ips[0] for p in pods])
    versions = np.array([p.ips[0].version for p in pods])
    same_family = versions[:, None] == versions[None, :]
    results: list[BoolArray] = []
    for probe in probes:
        ports, resolvable = _resolve_ports(engine, pods, probe)
        evaluator = VectorEvaluator(engine, peers, probe.protocol)
        egress = np.zeros((len(pods), len(pods)), dtype=bool)
        ingress = np.zeros((len(pods), len(pods)), dtype=bool)
        for index, pod in enumerate(pods):
            egress[index] = evaluator.evaluate(pod, Direction.EGRESS, None, ports)
            local_port = int(ports[index]) if resolvable[index] else None
            ingress[index] = evaluator.evaluate(pod, Direction.INGRESS, local_port, None)
        # allowed[s, d] = egress of s towards d, and ingress of d from s.
        allowed = egress & ingress.T & same_family & resolvable[None, :]
        results.append(allowed)
    return Matrix([p.key for p in pods], list(probes), results)


# --------------------------------------------------------------------------------------------
# Batch verdicts


@dataclass(frozen=True)
class FlowBatch:
    """Flows as columns: IPv4 addresses as integers, protocol numbers and destination ports."""

    src_ip: npt.NDArray[np.uint32]
    dst_ip: npt.NDArray[np.uint32]
    protocol: npt.NDArray[np.uint8]
    dst_port: npt.NDArray[np.uint16]

    def __len__(self) -> int:
        return len(self.src_ip)

    def flow(self, index: int) -> Flow:
        return Flow(
            src_ip=ipaddress.IPv4Address(int(self.src_ip[index])),
            dst_ip=ipaddress.IPv4Address(int(self.dst_ip[index])),
            protocol=int(self.protocol[index]),
            dst_port=int(self.dst_port[index]),
        )


def _port_boundaries(engine: PolicyEngine) -> npt.NDArray[np.int64]:
    """Ports where some rule's verdict can change: every range edge and named-port number."""
    edges = {0, 65536}
    rules: list[CompiledRule] = []
    for _, enforced, _ in engine.ordered_tiers:
        for policy in enforced:
            rules.extend(policy.ingress)
            rules.extend(policy.egress)
    for profile in engine.cluster.profiles.values():
        rules.extend(profile.ingress)
        rules.extend(profile.egress)
    for rule in rules:
        for entity in (rule.source, rule.destination):
            for match in (entity.ports, entity.not_ports):
                for port_range in match.ranges:
                    edges.add(port_range.low)
                    edges.add(port_range.high + 1)
    for endpoint in engine.cluster.endpoints:
        for named in endpoint.named_ports:
            edges.add(named.port)
            edges.add(named.port + 1)
    for service in engine.cluster.services:
        for service_port in service.ports:
            edges.add(service_port.port)
            edges.add(service_port.port + 1)
            if isinstance(service_port.target_port, int):
                edges.add(service_port.target_port)
                edges.add(service_port.target_port + 1)
    return np.array(sorted(edges), dtype=np.int64)


def batch_verdicts(engine: PolicyEngine, batch: FlowBatch) -> BoolArray:
    """Enforced verdicts for a batch of IPv4 flows.

    Addresses are mapped to peer slots (every endpoint address, plus each distinct unknown
    address), ports to the port class between rule boundaries; each distinct
    (protocol, port class) gets a verdict table over endpoint *classes*, and the flows are
    answered by one gather.
    """
    endpoints_by_ip: dict[int, Endpoint] = {}
    for endpoint in engine.cluster.endpoints:
        for ip in endpoint.ips:
            if ip.version == 4:
                existing = endpoints_by_ip.get(int(ip))
                if existing is None or (existing.kind == "hep" and endpoint.kind == "wep"):
                    endpoints_by_ip[int(ip)] = endpoint
    known = np.array(sorted(endpoints_by_ip), dtype=np.uint64)
    all_ips = np.concatenate([batch.src_ip, batch.dst_ip]).astype(np.uint64)
    unique_ips, inverse = np.unique(all_ips, return_inverse=True)
    slot_endpoints: list[Endpoint | None] = [endpoints_by_ip.get(int(ip)) for ip in unique_ips]
    slot_ips: list[IPAddress] = [ipaddress.IPv4Address(int(ip)) for ip in unique_ips]
    del known
    src_slot = inverse[: len(batch)]
    dst_slot = inverse[len(batch) :]

    peers = _Peers(engine, slot_endpoints, slot_ips)
    boundaries = _port_boundaries(engine)
    port_class = np.searchsorted(boundaries, batch.dst_port.astype(np.int64), side="right") - 1
    combo = batch.protocol.astype(np.int64) * (len(boundaries) + 1) + port_class
    unique_combos, combo_inverse = np.unique(combo, return_inverse=True)

    result = np.zeros(len(batch), dtype=bool)
    for combo_index, combo_value in enumerate(unique_combos):
        protocol = int(combo_value // (len(boundaries) + 1))
        port = int(boundaries[int(combo_value % (len(boundaries) + 1))])
        selected = np.nonzero(combo_inverse == combo_index)[0]
        table = _slot_table(engine, peers, protocol, port)
        result[selected] = table[src_slot[selected], dst_slot[selected]]
    return result


def _slot_table(engine: PolicyEngine, peers: _Peers, protocol: int, port: int) -> BoolArray:
    """allowed[src_slot, dst_slot] for one (protocol, representative port)."""
    size = peers.size
    evaluator = VectorEvaluator(engine, peers, protocol)
    port_vector = np.full(size, port, dtype=np.int64)
    egress = np.ones((size, size), dtype=bool)
    ingress = np.ones((size, size), dtype=bool)
    for index, endpoint in enumerate(peers.endpoints):
        if endpoint is None:
            continue
        egress[index] = evaluator.evaluate(endpoint, Direction.EGRESS, None, port_vector)
        ingress[index] = evaluator.evaluate(endpoint, Direction.INGRESS, port, None)
    return egress & ingress.T
