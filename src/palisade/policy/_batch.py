"""Batch verdicts for millions of flows: address classes, port signatures, one gather.

Used by what-if replay and flow enrichment. Addresses map to classes that no rule can tell
apart, destination ports to a *signature* of which rule ports they fall in; the verdicts of
every (signature, source class, destination class) come from ``_tables`` as packed bits, and
all flows are answered by gathers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from ._evaluate import PolicyEngine
from ._matrix import (
    BoolArray,
    _endpoint_class_key,
    _Peers,
    _policy_rules,
    _rule_nets,
    pod_classes,
)
from ._tables import SignatureEvaluator
from ._types import CompiledRule, Direction, Endpoint, Flow, IPAddress, IPNetwork, PortRange

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


def _port_signatures(
    engine: PolicyEngine, rules: Sequence[CompiledRule]
) -> tuple[npt.NDArray[np.int64], Callable[[int, int], tuple[object, ...]]]:
    """Port boundaries (ports between two boundaries behave alike for every rule), and a
    function giving the behaviour signature of one (protocol, port): two ports with the same
    signature get the same verdict for every flow."""
    edges = {0, 65536}
    ranges: dict[PortRange, None] = {}
    numbers: dict[int, None] = {}
    for rule in rules:
        for entity in (rule.source, rule.destination):
            for match in (entity.ports, entity.not_ports):
                for port_range in match.ranges:
                    ranges[port_range] = None
    for endpoint in engine.cluster.endpoints:
        for named in endpoint.named_ports:
            numbers[named.port] = None
    for service in engine.cluster.services:
        for service_port in service.ports:
            numbers[service_port.port] = None
            if isinstance(service_port.target_port, int):
                numbers[service_port.target_port] = None
    for port_range in ranges:
        edges.update((port_range.low, port_range.high + 1))
    for number in numbers:
        edges.update((number, number + 1))
    range_list = list(ranges)
    number_list = list(numbers)

    def signature(protocol: int, port: int) -> tuple[object, ...]:
        return (
            protocol,
            tuple(port in r for r in range_list),
            tuple(port == n for n in number_list),
        )

    return np.array(sorted(edges), dtype=np.int64), signature


@dataclass
class _Classes:
    """Addresses grouped into classes that no rule can tell apart."""

    endpoints: list[Endpoint | None]
    ips: list[IPAddress]


def _classify_addresses(
    engine: PolicyEngine, addresses: npt.NDArray[np.uint32], nets: Sequence[IPNetwork]
) -> tuple[npt.NDArray[np.int64], _Classes]:
    """Class index of every IPv4 address (as integers) in ``addresses``."""
    classes = _Classes([], [])
    class_of_key: dict[tuple[object, ...], int] = {}

    def class_for(endpoint: Endpoint | None, ip: IPAddress) -> int:
        key: tuple[object, ...]
        if endpoint is None:
            key = ("net", tuple(ip.version == net.version and ip in net for net in nets))
        else:
            key = _endpoint_class_key(endpoint, ip, nets)
        index = class_of_key.get(key)
        if index is None:
            index = class_of_key[key] = len(classes.ips)
            classes.endpoints.append(endpoint)
            classes.ips.append(ip)
        return index

    known_ips: list[int] = []
    known_classes: list[int] = []
    for ip_int, endpoint in sorted(_endpoints_by_ipv4(engine).items()):
        known_ips.append(ip_int)
        known_classes.append(class_for(endpoint, ipaddress.IPv4Address(ip_int)))
    result = np.full(len(addresses), -1, dtype=np.int64)
    if known_ips:
        base, top = known_ips[0], known_ips[-1]
        if top - base < (1 << 24):
            # Pod addresses are dense: a direct lookup table answers each address with one
            # gather. Offsets wrap around below ``base`` and land on the "unknown" sentinel.
            span = top - base + 1
            table = np.full(span + 1, -1, dtype=np.int64)
            table[np.array(known_ips, dtype=np.int64) - base] = known_classes
            offset = addresses - np.uint32(base)
            np.minimum(offset, np.uint32(span), out=offset)
            result = table[offset]
        else:
            sorted_ips = np.array(known_ips, dtype=np.uint32)
            position = np.searchsorted(sorted_ips, addresses)
            position = np.minimum(position, len(sorted_ips) - 1)
            found = sorted_ips[position] == addresses
            result[found] = np.array(known_classes, dtype=np.int64)[position[found]]
    unknown = result < 0
    if unknown.any():
        values, inverse = np.unique(addresses[unknown], return_inverse=True)
        unknown_classes = np.array(
            [class_for(None, ipaddress.IPv4Address(int(v))) for v in values], dtype=np.int64
        )
        result[unknown] = unknown_classes[inverse]
    return result, classes


def _endpoints_by_ipv4(engine: PolicyEngine) -> dict[int, Endpoint]:
    """Each IPv4 address's endpoint; a workload wins over a host endpoint."""
    owners: dict[int, Endpoint] = {}
    for endpoint in engine.cluster.endpoints:
        for ip in endpoint.ips:
            if ip.version != 4:
                continue
            existing = owners.get(int(ip))
            if existing is None or (existing.kind == "hep" and endpoint.kind == "wep"):
                owners[int(ip)] = endpoint
    return owners


def batch_verdicts(engine: PolicyEngine, batch: FlowBatch) -> BoolArray:
    """Enforced verdicts for a batch of IPv4 flows.

    Addresses map to classes that no rule can tell apart (one per distinct endpoint identity
    and CIDR membership), ports to a *signature* of which rule ports they fall in. Each
    distinct (protocol, signature) gets one verdict table over classes, computed with the
    vectorised evaluator, and every flow is answered by a single gather.
    """
    rules = _policy_rules(engine)
    nets = _rule_nets(rules, engine)
    addresses = np.concatenate([batch.src_ip, batch.dst_ip]).astype(np.uint32, copy=False)
    address_class, classes = _classify_addresses(engine, addresses, nets)
    src_class = address_class[: len(batch)]
    dst_class = address_class[len(batch) :]

    boundaries, signature = _port_signatures(engine, rules)
    # Port → interval between boundaries, through a 65,536-entry lookup table.
    interval_of_port = np.searchsorted(boundaries, np.arange(65536), side="right") - 1
    interval = interval_of_port[batch.dst_port.astype(np.int64)]
    slots = len(boundaries)
    combo = batch.protocol.astype(np.int64) * slots + interval
    present = np.nonzero(np.bincount(combo, minlength=256 * slots))[0]

    peers = _Peers(engine, classes.endpoints, classes.ips)
    table_of_signature: dict[tuple[object, ...], int] = {}
    signature_protocols: list[int] = []
    signature_ports: list[int] = []
    table_of_combo = np.zeros(256 * slots, dtype=np.int64)
    for value in present:
        protocol, port = int(value // slots), int(boundaries[int(value % slots)])
        key = signature(protocol, port)
        index = table_of_signature.get(key)
        if index is None:
            index = table_of_signature[key] = len(signature_protocols)
            signature_protocols.append(protocol)
            signature_ports.append(port)
        table_of_combo[value] = index
    evaluator = SignatureEvaluator(engine, peers, signature_protocols, signature_ports)
    result = evaluator.lookup(table_of_combo[combo], src_class, dst_class)
    return result


@dataclass(frozen=True)
class Connectivity:
    """Every port of every protocol between every ordered pair of pods: the all-connections
    answer (what ``nca --connectivity`` reports), as port ranges per protocol."""

    pods: list[str]
    protocols: list[int]
    ranges: list[list[PortRange]]  # per signature: the port ranges it stands for
    allowed: BoolArray  # [signature, source pod, destination pod]

    def allowed_ports(self, source: str, destination: str) -> dict[int, list[PortRange]]:
        """Allowed ports from ``source`` to ``destination``, merged into ranges per protocol."""
        i, j = self.pods.index(source), self.pods.index(destination)
        by_protocol: dict[int, list[PortRange]] = {}
        for s in np.nonzero(self.allowed[:, i, j])[0]:
            by_protocol.setdefault(self.protocols[s], []).extend(self.ranges[s])
        return {p: _merge(r) for p, r in sorted(by_protocol.items())}


def _merge(ranges: list[PortRange]) -> list[PortRange]:
    merged: list[PortRange] = []
    for current in sorted(ranges, key=lambda r: r.low):
        if merged and current.low <= merged[-1].high + 1:
            merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, current.high))
        else:
            merged.append(current)
    return merged


PORTED = (6, 17, 132)


def connectivity(engine: PolicyEngine, protocols: Sequence[int] = PORTED) -> Connectivity:
    """Enforced verdicts for every (protocol, port) between every ordered pair of pods.

    Ports 1–65535 of each protocol are cut at every rule port boundary; intervals with the
    same behaviour signature share one evaluation, and pods no rule can tell apart share one
    class, so the cost follows the policy's complexity, not the port space.
    """
    pods, representatives, pod_class = pod_classes(engine)
    rules = _policy_rules(engine)
    boundaries, signature = _port_signatures(engine, rules)
    edges = [int(b) for b in boundaries if 1 <= b <= 65535]
    edges = sorted({1, *edges, 65536})
    index_of: dict[tuple[object, ...], int] = {}
    signature_protocols: list[int] = []
    signature_ports: list[int] = []
    ranges: list[list[PortRange]] = []
    for protocol in protocols:
        for low, next_low in pairwise(edges):
            key = signature(protocol, low)
            s = index_of.get(key)
            if s is None:
                s = index_of[key] = len(signature_protocols)
                signature_protocols.append(protocol)
                signature_ports.append(low)
                ranges.append([])
            ranges[s].append(PortRange(low, next_low - 1))
    peers = _Peers(engine, representatives, [p.ips[0] for p in representatives])
    evaluator = SignatureEvaluator(engine, peers, signature_protocols, signature_ports)
    size, count = peers.size, len(signature_protocols)

    def unpack(direction_rows: npt.NDArray[np.uint8]) -> BoolArray:
        bits = np.unpackbits(direction_rows, axis=1, bitorder="little", count=count * size)
        return bits.reshape(size, count, size).view(bool)

    egress = unpack(evaluator.packed_rows(Direction.EGRESS))  # [src, sig, dst]
    ingress = unpack(evaluator.packed_rows(Direction.INGRESS))  # [dst, sig, src]
    by_class = egress.transpose(1, 0, 2) & ingress.transpose(1, 2, 0)
    allowed: BoolArray = by_class[:, pod_class][:, :, pod_class]
    return Connectivity([p.key for p in pods], signature_protocols, ranges, allowed)
