"""Vectorised evaluation: the reachability matrix, and the peer masks other paths share.

The reference evaluator (``_evaluate``) walks one flow at a time. Here the same tier algorithm
runs once per *local* endpoint over a boolean vector of all *peers* at once:

- A rule's match splits into a scalar part about the local endpoint (protocol, and its own side
  of the rule: the destination for ingress, the source for egress) and a vector part about the
  peers (the other side). Vector parts are built from shared masks (``_Peers``) — one per
  distinct selector, net list and named port — the same sharing Felix gets from IP sets.
- Pods that no rule can tell apart (same identity, labels, named ports and CIDR memberships)
  form one class and are evaluated once (``pod_classes``).
- A rule's local part is evaluated only when its peer vector still hits an undecided peer.

``_tables`` and ``_batch`` build on the same masks to cover every port at once. Verdicts here
are enforced verdicts; traces and pending (staged) verdicts come from the reference evaluator,
and ``tests/policy`` checks the paths agree on random clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from palisade.selector import Selector

from ._evaluate import PolicyEngine
from ._types import (
    Action,
    CompiledRule,
    Direction,
    Endpoint,
    EntityMatch,
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
        self._label_cache: dict[Selector, BoolArray] = {}
        self._declared_cache: dict[tuple[str, int], npt.NDArray[np.int64]] = {}

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

    def address_mask(self, entity: EntityMatch) -> BoolArray:
        """Peers whose address passes the entity's nets, notNets, selector and notSelector
        (everything but ports and services)."""
        mask = np.ones(self.size, dtype=bool)
        if entity.nets is not None:
            mask &= self.nets_mask(entity.nets)
        if entity.not_nets:
            mask &= ~self.nets_mask(entity.not_nets)
        if entity.selector is not None:
            mask &= self.selector_mask(entity.selector)
        if entity.not_selector is not None:
            mask &= ~self.selector_mask(entity.not_selector)
        return mask

    def label_mask(self, selector: Selector) -> BoolArray:
        """Peers that are endpoints whose own (effective) labels the selector matches."""
        key = selector
        cached = self._label_cache.get(key)
        if cached is None:
            per_set = np.array(
                [labels is not None and selector.matches(labels) for labels in self.label_sets],
                dtype=bool,
            )
            cached = per_set[self.label_inverse] if self.size else np.zeros(0, dtype=bool)
            self._label_cache[key] = cached
        return cached

    def declared_ports(self, name: str, protocol: int) -> npt.NDArray[np.int64]:
        """Each peer's port number for a named port (-1 where it declares none)."""
        key = (name, protocol)
        cached = self._declared_cache.get(key)
        if cached is None:
            cached = np.array(
                [
                    number
                    if e is not None and (number := e.named_port(name, protocol)) is not None
                    else -1
                    for e in self.endpoints
                ],
                dtype=np.int64,
            )
            self._declared_cache[key] = cached
        return cached

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
        declared = self.declared_ports(name, protocol)
        mask: BoolArray = (declared >= 0) & (declared == ports)
        if selector is not None:
            mask &= self.label_mask(selector)
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
    if entity.is_any:
        return np.ones(peers.size, dtype=bool)
    mask = peers.address_mask(entity)
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


def _scalar_protocol_match(rule: CompiledRule, protocol: int, ip_version: int | None) -> bool:
    if ip_version is not None and rule.ip_version is not None and rule.ip_version != ip_version:
        return False
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    if rule.not_protocol is not None and rule.not_protocol == protocol:
        return False
    # Matrix and batch probes are TCP/UDP/SCTP: an ICMP type/code can never match them.
    return rule.icmp is None


class VectorEvaluator:
    """Enforced verdicts of one direction for a local endpoint against every peer at once.

    One evaluator serves one (protocol, peer ports) situation. Peer vectors are computed once
    per rule and shared by every local endpoint; a rule's local part is evaluated only when its
    peer vector still hits an undecided peer, so rules that cannot matter cost nothing.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        peers: _Peers,
        protocol: int,
        peer_ports: npt.NDArray[np.int64] | None,
        local_cache: dict[tuple[int, int, Direction, int, int | None], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.peers = peers
        self.protocol = protocol
        self.peer_ports = peer_ports
        self._rule_vectors: dict[tuple[int, Direction], BoolArray | None] = {}
        self._local_cache = local_cache if local_cache is not None else {}

    def _peer_vector(self, rule: CompiledRule, direction: Direction) -> BoolArray | None:
        """Which peers the rule's peer side matches (None: none can match at all)."""
        key = (id(rule), direction)
        if key in self._rule_vectors:
            return self._rule_vectors[key]
        vector: BoolArray | None
        if not _scalar_protocol_match(rule, self.protocol, None):
            vector = None
        elif direction is Direction.EGRESS:
            vector = _entity_vector(
                self.peers, rule.destination, self.protocol, self.peer_ports, is_destination=True
            )
        else:
            vector = _entity_vector(
                self.peers, rule.source, self.protocol, None, is_destination=False
            )
        if vector is not None and not vector.any():
            vector = None
        self._rule_vectors[key] = vector
        return vector

    def _local_match(
        self, rule: CompiledRule, endpoint: Endpoint, direction: Direction, local_port: int | None
    ) -> bool:
        key = (id(rule), id(endpoint), direction, self.protocol, local_port)
        cached = self._local_cache.get(key)
        if cached is not None:
            return cached
        ip = endpoint.ips[0]
        if not _scalar_protocol_match(rule, self.protocol, ip.version):
            result = False
        else:
            if direction is Direction.EGRESS:
                entity, port, is_destination = rule.source, None, False
            else:
                entity, port, is_destination = rule.destination, local_port, True
            result = entity.is_any or self.engine.entity_matches(
                entity, ip, port, self.protocol, is_destination=is_destination
            )
        self._local_cache[key] = result
        return result

    def evaluate(
        self, endpoint: Endpoint, direction: Direction, local_port: int | None
    ) -> BoolArray:
        """The tier algorithm of spec 4.6 and the profiles of 4.7, over all peers."""
        size = self.peers.size
        allowed = np.zeros(size, dtype=bool)
        undecided = np.ones(size, dtype=bool)
        for tier_policies in self.engine.applying(endpoint, direction, pending=False):
            in_tier = undecided.copy()
            for policy in tier_policies.policies:
                if policy.staged:
                    continue
                for rule in policy.rules(direction):
                    if rule.action is Action.LOG:
                        continue
                    peer = self._peer_vector(rule, direction)
                    if peer is None:
                        continue
                    hit = in_tier & peer
                    if not hit.any() or not self._local_match(
                        rule, endpoint, direction, local_port
                    ):
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
        for name in endpoint.profiles:
            profile = self.engine.cluster.profiles.get(name)
            if profile is None:
                continue
            for rule in profile.rules(direction):
                if rule.action is Action.LOG:
                    continue
                peer = self._peer_vector(rule, direction)
                if peer is None or not self._local_match(rule, endpoint, direction, local_port):
                    continue
                hit = undecided & peer
                if rule.action is Action.ALLOW:
                    allowed |= hit
                undecided &= ~hit  # Deny, and Pass (which denies in a profile)
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


def pod_classes(
    engine: PolicyEngine,
) -> tuple[list[Endpoint], list[Endpoint], npt.NDArray[np.intp]]:
    """Pods in matrix order, one representative per class of pods that no rule can tell
    apart, and each pod's class."""
    pods = sorted(engine.cluster.pods, key=lambda e: (e.namespace or "", e.name))
    nets = _rule_nets(_policy_rules(engine), engine)
    class_of_key: dict[tuple[object, ...], int] = {}
    representatives: list[Endpoint] = []
    pod_class = np.zeros(len(pods), dtype=np.intp)
    for index, pod in enumerate(pods):
        key = _endpoint_class_key(pod, pod.ips[0], nets)
        number = class_of_key.get(key)
        if number is None:
            number = class_of_key[key] = len(representatives)
            representatives.append(pod)
        pod_class[index] = number
    return pods, representatives, pod_class


def reachability_matrix(engine: PolicyEngine, probes: Sequence[Probe]) -> Matrix:
    """Verdicts for every ordered pair of pods. Pods that no rule can tell apart (same
    identity, labels, named ports and CIDR memberships) are evaluated once, as a class."""
    pods, representatives, pod_class = pod_classes(engine)
    peers = _Peers(engine, representatives, [p.ips[0] for p in representatives])
    versions = np.array([p.ips[0].version for p in pods])
    same_family = versions[:, None] == versions[None, :]
    local_cache: dict[tuple[int, int, Direction, int, int | None], bool] = {}
    results: list[BoolArray] = []
    for probe in probes:
        ports, resolvable = _resolve_ports(engine, representatives, probe)
        evaluator = VectorEvaluator(engine, peers, probe.protocol, ports, local_cache)
        size = len(representatives)
        egress = np.zeros((size, size), dtype=bool)
        ingress = np.zeros((size, size), dtype=bool)
        for index, representative in enumerate(representatives):
            egress[index] = evaluator.evaluate(representative, Direction.EGRESS, None)
            local_port = int(ports[index]) if resolvable[index] else None
            ingress[index] = evaluator.evaluate(representative, Direction.INGRESS, local_port)
        # allowed[s, d] = egress of s towards d, and ingress of d from s.
        by_class = egress & ingress.T & resolvable[None, :]
        allowed = by_class[np.ix_(pod_class, pod_class)] & same_family
        results.append(allowed)
    return Matrix([p.key for p in pods], list(probes), results)


def _policy_rules(engine: PolicyEngine) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    for _, enforced, _ in engine.ordered_tiers:
        for policy in enforced:
            rules.extend(policy.ingress)
            rules.extend(policy.egress)
    for profile in engine.cluster.profiles.values():
        rules.extend(profile.ingress)
        rules.extend(profile.egress)
    return rules


def _rule_nets(rules: Sequence[CompiledRule], engine: PolicyEngine) -> list[IPNetwork]:
    """Every CIDR that can tell two addresses apart: rule nets and network-set nets."""
    nets: dict[IPNetwork, None] = {}
    for rule in rules:
        for entity in (rule.source, rule.destination):
            for net in (*(entity.nets or ()), *entity.not_nets):
                nets[net] = None
    for network_set in engine.cluster.network_sets:
        for net in network_set.nets:
            nets[net] = None
    return list(nets)


def _endpoint_class_key(
    endpoint: Endpoint, ip: IPAddress, nets: Sequence[IPNetwork]
) -> tuple[object, ...]:
    return (
        endpoint.kind,
        ip.version,
        endpoint.namespace,
        endpoint.labels,
        endpoint.named_ports,
        endpoint.profiles,
        tuple(ip.version == net.version and ip in net for net in nets),
    )
