"""Replay: deduplicate, map references to addresses, two batch verdicts, trace what changed."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from palisade.flows import FlowRecord, proto_name
from palisade.policy import (
    BUILTIN_TIERS,
    POLICY_KINDS,
    PROFILE_TIER,
    Cluster,
    CompiledPolicy,
    Direction,
    DirectionResult,
    Endpoint,
    Flow,
    FlowBatch,
    PolicyEngine,
    PolicyKind,
    batch_verdicts,
)
from palisade.resources import store_key

from ._columns import UNKNOWN_PROTOCOL, EndpointRef, FlowColumns

ALLOW_TO_DENY = "allow→deny"
DENY_TO_ALLOW = "deny→allow"
PORTED = (6, 17, 132)
DEFAULT_TRACE_LIMIT = 20_000
"""Distinct (source class, destination class, protocol, port class) combinations whose
deciding policy is traced with the reference evaluator, those with the most records first;
changed flows beyond it are still counted, under the policy ``(not traced)``."""

_ENFORCED_TWIN = {
    PolicyKind.STAGED_NETWORK_POLICY: PolicyKind.NETWORK_POLICY,
    PolicyKind.STAGED_GLOBAL_NETWORK_POLICY: PolicyKind.GLOBAL_NETWORK_POLICY,
    PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY: PolicyKind.KUBERNETES_NETWORK_POLICY,
}


# --------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True, slots=True)
class PairChange:
    """Flows between two workloads (``namespace/name_aggr``) whose verdict changes."""

    source: str
    destination: str
    change: str
    records: int
    flows: int
    ports: tuple[str, ...]
    """The most frequent ``port/proto`` of these flows (at most ten)."""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """Changed flows grouped by what decides their new verdict."""

    change: str
    tier: str
    policy: str
    rule: int | None
    """Rule index; -1: the tier's default action; None: no policy (profiles, untraced)."""
    records: int
    flows: int


@dataclass(frozen=True)
class WhatIfReport:
    """Counts of records (as read) and flows (distinct source, destination, protocol, port).

    ``unknown``: flows that cannot be replayed (an endpoint not in the cluster, an address
    aggregated away, no port, IPv6), by reason: counted, never dropped silently.
    ``model_disagreements``: denied records whose flow the current policies allow (the
    cluster documents may not be what the cluster enforced).
    """

    mode: str
    records: int
    flows: int
    unchanged_records: int
    unchanged_flows: int
    allow_to_deny_records: int
    allow_to_deny_flows: int
    deny_to_allow_records: int
    deny_to_allow_flows: int
    unknown_records: int
    unknown_flows: int
    unknown: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """reason → (records, flows)."""
    model_disagreements: int = 0
    untraced_flows: int = 0
    by_pair: tuple[PairChange, ...] = ()
    by_policy: tuple[PolicyChange, ...] = ()
    start_time: int | None = None
    end_time: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "window": {"start_time": self.start_time, "end_time": self.end_time},
            "records": self.records,
            "flows": self.flows,
            "unchanged": {"records": self.unchanged_records, "flows": self.unchanged_flows},
            "allow_to_deny": {
                "records": self.allow_to_deny_records,
                "flows": self.allow_to_deny_flows,
            },
            "deny_to_allow": {
                "records": self.deny_to_allow_records,
                "flows": self.deny_to_allow_flows,
            },
            "unknown": {
                "records": self.unknown_records,
                "flows": self.unknown_flows,
                "reasons": {
                    reason: {"records": records, "flows": flows}
                    for reason, (records, flows) in sorted(self.unknown.items())
                },
            },
            "model_disagreements": self.model_disagreements,
            "untraced_flows": self.untraced_flows,
            "by_workload_pair": [
                {
                    "source": p.source,
                    "destination": p.destination,
                    "change": p.change,
                    "records": p.records,
                    "flows": p.flows,
                    "ports": list(p.ports),
                }
                for p in self.by_pair
            ],
            "by_policy": [
                {
                    "change": p.change,
                    "tier": p.tier,
                    "policy": p.policy,
                    "rule": p.rule,
                    "records": p.records,
                    "flows": p.flows,
                }
                for p in self.by_policy
            ],
        }


# --------------------------------------------------------------------------------------------
# Policy sets


def merge_documents(
    cluster: Sequence[Mapping[str, Any]], proposed: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The cluster's documents with ``proposed`` applied over them: a proposed document
    replaces the one with the same key (kind, namespace, name), others are added."""
    merged: dict[object, Mapping[str, Any]] = {store_key(d): d for d in cluster}
    for document in proposed:
        merged[store_key(document)] = document
    return list(merged.values())


def pending_cluster(engine: PolicyEngine) -> Cluster:
    """The engine's pending view as a cluster of its own: every staged policy enforced in
    its place (as its enforced kind), the policies it previews an update or a deletion of
    left out. The batch path evaluates enforced policies only; this lets it answer for the
    pending view."""
    cluster = engine.cluster
    policies: list[CompiledPolicy] = [p for p in cluster.policies if p.do_not_track or p.pre_dnat]
    for _, _, pending in engine.ordered_tiers:
        for policy in pending:
            twin = _ENFORCED_TWIN.get(policy.kind)
            policies.append(replace(policy, kind=twin) if twin is not None else policy)
    return Cluster(
        tiers=dict(cluster.tiers),
        policies=policies,
        profiles=dict(cluster.profiles),
        endpoints=list(cluster.endpoints),
        network_sets=list(cluster.network_sets),
        services=list(cluster.services),
        namespaces=dict(cluster.namespaces),
        problems=list(cluster.problems),
    )


_POLICY_ONLY_KINDS = frozenset({*POLICY_KINDS, "Tier"})
_KIND_OF_DOCUMENT = {
    "NetworkPolicy": PolicyKind.NETWORK_POLICY,
    "GlobalNetworkPolicy": PolicyKind.GLOBAL_NETWORK_POLICY,
    "StagedNetworkPolicy": PolicyKind.STAGED_NETWORK_POLICY,
    "StagedGlobalNetworkPolicy": PolicyKind.STAGED_GLOBAL_NETWORK_POLICY,
    "StagedKubernetesNetworkPolicy": PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY,
}


def _policy_identity(document: Mapping[str, Any]) -> tuple[PolicyKind, str | None, str] | None:
    kind = str(document.get("kind"))
    meta = document.get("metadata") or {}
    if kind == "NetworkPolicy" and str(document.get("apiVersion", "")).startswith(
        "networking.k8s.io"
    ):
        policy_kind: PolicyKind | None = PolicyKind.KUBERNETES_NETWORK_POLICY
    else:
        policy_kind = _KIND_OF_DOCUMENT.get(kind)
    if policy_kind is None:
        return None
    namespace = str(meta.get("namespace") or "default") if policy_kind.namespaced else None
    return policy_kind, namespace, str(meta.get("name"))


def _proposed_cluster(
    current: Cluster,
    cluster_documents: Sequence[Mapping[str, Any]],
    proposed: Sequence[Mapping[str, Any]],
) -> Cluster:
    """The cluster with ``proposed`` applied. When the proposal holds only Calico and
    Kubernetes network policies and tiers, only those are compiled and spliced into the
    current cluster (the topology is the same); anything else recompiles everything."""
    identities = [_policy_identity(d) if d.get("kind") != "Tier" else None for d in proposed]
    if any(d.get("kind") not in _POLICY_ONLY_KINDS for d in proposed) or any(
        identity is None and d.get("kind") != "Tier"
        for d, identity in zip(proposed, identities, strict=True)
    ):
        return Cluster.from_documents(merge_documents(cluster_documents, proposed))
    compiled = Cluster.from_documents(proposed)
    replaced = {identity for identity in identities if identity is not None}
    kept = [p for p in current.policies if (p.kind, p.namespace, p.name) not in replaced]
    tiers = dict(current.tiers)
    tiers.update({name: tier for name, tier in compiled.tiers.items() if name not in BUILTIN_TIERS})
    return Cluster(
        tiers=tiers,
        policies=[*kept, *compiled.policies],
        profiles=dict(current.profiles),
        endpoints=list(current.endpoints),
        network_sets=list(current.network_sets),
        services=list(current.services),
        namespaces=dict(current.namespaces),
        problems=[*current.problems, *compiled.problems],
    )


# --------------------------------------------------------------------------------------------
# References → addresses


class _Addresses:
    """Each endpoint reference's address for replay, or why it has none.

    An aggregated record (no IP) stands for every pod of its ``name_aggr``; it is replayed
    as the first of them (by name) whose labels include the record's. Pods of one
    generateName share labels and named ports, so they share verdicts unless a rule names
    their addresses.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.pods = {p.key: p for p in cluster.pods}
        self.by_generate_name: dict[tuple[str, str], list[Endpoint]] = {}
        for pod in sorted(cluster.pods, key=lambda e: e.key):
            if pod.generate_name:
                key = (pod.namespace or "default", pod.generate_name)
                self.by_generate_name.setdefault(key, []).append(pod)
        self.hosts = {e.name: e for e in cluster.endpoints if e.kind == "hep"}
        self.sets = {(s.namespace or "", s.name): s for s in cluster.network_sets}
        self.endpoint_addresses = {
            int(ip) for e in cluster.endpoints for ip in e.ips if ip.version == 4
        }

    @staticmethod
    def _v4(endpoint: Endpoint) -> int | None:
        for ip in endpoint.ips:
            if ip.version == 4:
                return int(ip)
        return None

    def resolve(self, ref: EndpointRef) -> int | str:
        """Pods and host endpoints by name first (cluster documents written as manifests
        give pods offline addresses, not the ones the records saw), then by address;
        networks by address, then a network set's."""
        namespace = ref.namespace
        if ref.type == "wep":
            candidates: list[Endpoint] = []
            if ref.name not in ("-", ""):
                pod = self.pods.get(f"{namespace}/{ref.name}")
                candidates = [pod] if pod is not None else []
            if not candidates and ref.name_aggr.endswith("*"):
                candidates = self.by_generate_name.get((namespace, ref.name_aggr[:-1]), [])
            if not candidates and ref.name_aggr not in ("-", ""):
                pod = self.pods.get(f"{namespace}/{ref.name_aggr}")
                candidates = [pod] if pod is not None else []
            if ref.labels:
                wanted = set(ref.labels)
                candidates = [
                    p for p in candidates if wanted <= {f"{k}={v}" for k, v in p.labels}
                ] or candidates
            for pod in candidates:
                pod_address = self._v4(pod)
                if pod_address is not None:
                    return pod_address
            return self._address(ref.ip) if ref.ip else "pod not in the cluster documents"
        if ref.type == "hep":
            host = self.hosts.get(ref.name) or self.hosts.get(ref.name_aggr)
            host_address = self._v4(host) if host is not None else None
            if host_address is not None:
                return host_address
            return self._address(ref.ip) if ref.ip else "host endpoint not in the cluster"
        if ref.ip:
            return self._address(ref.ip)
        if ref.type == "ns":
            set_namespace = "" if namespace in ("-", "") else namespace
            for name in (ref.name, ref.name_aggr):
                network_set = self.sets.get((set_namespace, name))
                if network_set is None:
                    continue
                for net in network_set.nets:
                    if net.version != 4:
                        continue
                    # An address of the set that is no endpoint's (sets may hold pods).
                    first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
                    for candidate in range(first, first + min(net.num_addresses, 256)):
                        if candidate not in self.endpoint_addresses:
                            return candidate
            return "network set not in the cluster documents"
        return "external address aggregated away (pub/pvt)"

    @staticmethod
    def _address(text: str) -> int | str:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return "unparseable address"
        return int(address) if address.version == 4 else "IPv6 (batch replay is IPv4)"


# --------------------------------------------------------------------------------------------
# Tracing the deciding policy


def _class_nets(engine: PolicyEngine) -> list[ipaddress.IPv4Network]:
    nets: dict[ipaddress.IPv4Network, None] = {}
    for policy in engine.cluster.policies:
        for rule in (*policy.ingress, *policy.egress):
            for entity in (rule.source, rule.destination):
                for net in (*(entity.nets or ()), *entity.not_nets):
                    if isinstance(net, ipaddress.IPv4Network):
                        nets[net] = None
    for network_set in engine.cluster.network_sets:
        for net in network_set.nets:
            if isinstance(net, ipaddress.IPv4Network):
                nets[net] = None
    return list(nets)


def _port_edges(engine: PolicyEngine) -> npt.NDArray[np.int64]:
    """Port boundaries: ports between two edges behave alike for every rule."""
    edges = {0, 65536}
    for policy in engine.cluster.policies:
        for rule in (*policy.ingress, *policy.egress):
            for entity in (rule.source, rule.destination):
                for match in (entity.ports, entity.not_ports):
                    for port_range in match.ranges:
                        edges.update((port_range.low, port_range.high + 1))
    for endpoint in engine.cluster.endpoints:
        for named in endpoint.named_ports:
            edges.update((named.port, named.port + 1))
    for service in engine.cluster.services:
        for service_port in service.ports:
            edges.update((service_port.port, service_port.port + 1))
            if isinstance(service_port.target_port, int):
                edges.update((service_port.target_port, service_port.target_port + 1))
    return np.array(sorted(edges), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Decision:
    tier: str
    policy: str
    rule: int | None


_UNTRACED = _Decision("-", "(not traced)", None)


class _Tracer:
    """The deciding tier, policy and rule of a verdict, from the reference evaluator, once
    per class of flows no rule can tell apart (source and destination classes, protocol,
    port interval)."""

    def __init__(self, engine: PolicyEngine, pending: bool) -> None:
        self.engine = engine
        self.pending = pending
        self.nets = _class_nets(engine)
        self.edges = _port_edges(engine).tolist()
        self._class: dict[int, tuple[object, ...]] = {}

    def _address_class(self, address: int) -> tuple[object, ...]:
        cached = self._class.get(address)
        if cached is None:
            ip = ipaddress.IPv4Address(address)
            endpoint = self.engine.endpoint_for_ip(ip)
            membership = tuple(ip in net for net in self.nets)
            if endpoint is None:
                cached = ("net", membership)
            else:
                cached = (
                    endpoint.kind,
                    endpoint.namespace,
                    endpoint.labels,
                    endpoint.named_ports,
                    endpoint.profiles,
                    membership,
                )
            self._class[address] = cached
        return cached

    def key(
        self, src: int, dst: int, protocol: int, port: int, allowed: bool
    ) -> tuple[object, ...]:
        interval = bisect.bisect_right(self.edges, port)
        return (self._address_class(src), self._address_class(dst), protocol, interval, allowed)

    def decide(self, src: int, dst: int, protocol: int, port: int, allowed: bool) -> _Decision:
        flow = Flow(
            ipaddress.IPv4Address(src),
            ipaddress.IPv4Address(dst),
            protocol,
            dst_port=port if protocol in PORTED else None,
        )
        # A denial is decided by the first direction that denies (egress is evaluated
        # first); an allowance by the ingress side, or the egress side without one.
        deciding: DirectionResult | None = None
        source = self.engine.endpoint_for_ip(flow.src_ip)
        destination = self.engine.endpoint_for_ip(flow.dst_ip)
        if source is not None and (not allowed or destination is None):
            deciding = self.engine.evaluate_direction(
                source, Direction.EGRESS, flow, pending=self.pending
            )
        if destination is not None and (deciding is None or deciding.allowed):
            deciding = self.engine.evaluate_direction(
                destination, Direction.INGRESS, flow, pending=self.pending
            )
        hit = deciding.deciding if deciding is not None else None
        if hit is None:
            return _Decision(PROFILE_TIER, "(no profile decided)", None)
        if hit.tier == PROFILE_TIER:
            return _Decision(PROFILE_TIER, hit.policy, None)
        return _Decision(hit.tier, hit.policy, hit.rule_index)


# --------------------------------------------------------------------------------------------
# Replay


def replay(
    columns: FlowColumns,
    cluster_documents: Sequence[Mapping[str, Any]],
    proposed: Sequence[Mapping[str, Any]] = (),
    *,
    staged: bool = False,
    trace_limit: int = DEFAULT_TRACE_LIMIT,
) -> WhatIfReport:
    """Which flows of ``columns`` change verdict when ``proposed`` is applied over the
    cluster (same keys replace) and, with ``staged``, the staged policies are enforced.

    The current verdict is the cluster documents' enforced verdict; the new one is the
    merged set's (pending view with ``staged``). Flows are deduplicated by (source,
    destination, protocol, port) before anything is evaluated.
    """
    current = PolicyEngine(Cluster.from_documents(cluster_documents))
    if proposed:
        target = PolicyEngine(_proposed_cluster(current.cluster, cluster_documents, proposed))
    else:
        target = current
    new = PolicyEngine(pending_cluster(target)) if staged else target
    mode = "+".join(m for m, on in (("proposed", bool(proposed)), ("staged", staged)) if on)
    return _replay(columns, current, new, target, staged, mode or "current", trace_limit)


def whatif(
    records: Iterable[FlowRecord],
    cluster_documents: Sequence[Mapping[str, Any]],
    proposed: Sequence[Mapping[str, Any]] = (),
    *,
    staged: bool = False,
    trace_limit: int = DEFAULT_TRACE_LIMIT,
) -> WhatIfReport:
    """:func:`replay` for any iterable of flow records (read once)."""
    return replay(
        FlowColumns.from_records(records),
        cluster_documents,
        proposed,
        staged=staged,
        trace_limit=trace_limit,
    )


def _replay(
    columns: FlowColumns,
    current: PolicyEngine,
    new: PolicyEngine,
    tracing: PolicyEngine,
    staged: bool,
    mode: str,
    trace_limit: int,
) -> WhatIfReport:
    refs = len(columns.endpoints)
    if refs >= 1 << 19:
        raise ValueError("too many distinct endpoints for one replay (at most 524,288)")
    # 1. Deduplicate: one int64 key per (source, destination, protocol, port).
    port_span = 65537  # ports 0-65535, and NO_PORT as 0
    key = columns.src.astype(np.int64) * refs + columns.dst
    key *= 256
    key += columns.protocol
    key *= port_span
    key += columns.port.astype(np.int64) + 1
    # Sorting with counts is about four times faster than with an inverse, which no later
    # step needs.
    unique, counts = np.unique(key, return_counts=True)
    records_per_flow = counts.astype(np.int64)
    denied_keys, denied_counts = np.unique(key[~columns.allowed], return_counts=True)
    denied_per_flow = np.zeros(len(unique), dtype=np.int64)
    denied_per_flow[np.searchsorted(unique, denied_keys)] = denied_counts
    port = (unique % port_span).astype(np.int64) - 1
    rest = unique // port_span
    protocol = (rest % 256).astype(np.int64)
    rest //= 256
    dst_ref = (rest % refs).astype(np.int64) if refs else rest
    src_ref = (rest // refs).astype(np.int64) if refs else rest

    # 2. References → addresses (or a reason); flows without both are unknown.
    addresses = _Addresses(current.cluster)
    address_of_ref = np.full(max(refs, 1), -1, dtype=np.int64)
    reasons: list[str] = []
    reason_of_ref = np.full(max(refs, 1), -1, dtype=np.int64)
    for index, ref in enumerate(columns.endpoints):
        resolved = addresses.resolve(ref)
        if isinstance(resolved, int):
            address_of_ref[index] = resolved
        else:
            if resolved not in reasons:
                reasons.append(resolved)
            reason_of_ref[index] = reasons.index(resolved)
    reason = np.full(len(unique), -1, dtype=np.int64)

    def mark(mask: npt.NDArray[np.bool_], text: str) -> None:
        if text not in reasons:
            reasons.append(text)
        reason[mask & (reason < 0)] = reasons.index(text)

    mark(protocol == UNKNOWN_PROTOCOL, "unknown protocol")
    mark(np.isin(protocol, PORTED) & (port < 0), "no destination port (aggregated away)")
    for ref_column in (src_ref, dst_ref):
        ref_reason = reason_of_ref[ref_column]
        take = (ref_reason >= 0) & (reason < 0)
        reason[take] = ref_reason[take]
    known = reason < 0

    # 3. Two batch verdicts over the known distinct flows.
    batch = FlowBatch(
        src_ip=address_of_ref[src_ref[known]].astype(np.uint32),
        dst_ip=address_of_ref[dst_ref[known]].astype(np.uint32),
        protocol=protocol[known].astype(np.uint8),
        dst_port=np.maximum(port[known], 0).astype(np.uint16),
    )
    before = batch_verdicts(current, batch)
    after = batch_verdicts(new, batch)
    known_index = np.nonzero(known)[0]
    changed = before != after
    allow_to_deny = known_index[changed & before]
    deny_to_allow = known_index[changed & after]
    unchanged = known_index[~changed]

    def records_of(indices: npt.NDArray[np.int64]) -> int:
        return int(records_per_flow[indices].sum())

    disagreements = int(denied_per_flow[known_index[before]].sum())

    # 4. Group the changed flows: by workload pair, and by what decides the new verdict.
    tracer = _Tracer(tracing, staged)
    pairs: dict[tuple[str, str, str], list[int]] = {}
    pair_ports: dict[tuple[str, str, str], dict[str, int]] = {}
    classes: dict[tuple[object, ...], list[int]] = {}  # trace key → [records, flows, u]
    change_of_class: dict[tuple[object, ...], str] = {}
    for change, indices, now_allowed in (
        (ALLOW_TO_DENY, allow_to_deny, False),
        (DENY_TO_ALLOW, deny_to_allow, True),
    ):
        for u in indices.tolist():
            source = columns.endpoints[int(src_ref[u])].group
            destination = columns.endpoints[int(dst_ref[u])].group
            count = int(records_per_flow[u])
            pair_key = (source, destination, change)
            totals = pairs.setdefault(pair_key, [0, 0])
            totals[0] += count
            totals[1] += 1
            port_text = (
                f"{port[u]}/{proto_name(int(protocol[u]))}"
                if port[u] >= 0
                else proto_name(int(protocol[u]))
            )
            counts = pair_ports.setdefault(pair_key, {})
            counts[port_text] = counts.get(port_text, 0) + count
            trace_key = tracer.key(
                int(address_of_ref[src_ref[u]]),
                int(address_of_ref[dst_ref[u]]),
                int(protocol[u]),
                max(int(port[u]), 0),
                now_allowed,
            )
            entry = classes.get(trace_key)
            if entry is None:
                classes[trace_key] = [count, 1, u]
                change_of_class[trace_key] = change
            else:
                entry[0] += count
                entry[1] += 1
    # The reference evaluator is the slow part: trace the classes with the most records
    # first, up to the limit; the rest are counted as not traced.
    policies: dict[tuple[str, _Decision], list[int]] = {}
    untraced = 0
    ordered = sorted(classes.items(), key=lambda item: (-item[1][0], item[1][2]))
    for rank, (trace_key, (count, flows, u)) in enumerate(ordered):
        change = change_of_class[trace_key]
        if rank < trace_limit:
            decision = tracer.decide(
                int(address_of_ref[src_ref[u]]),
                int(address_of_ref[dst_ref[u]]),
                int(protocol[u]),
                max(int(port[u]), 0),
                change == DENY_TO_ALLOW,
            )
        else:
            decision = _UNTRACED
            untraced += flows
        totals = policies.setdefault((change, decision), [0, 0])
        totals[0] += count
        totals[1] += flows
    by_pair = sorted(
        (
            PairChange(
                source,
                destination,
                change,
                totals[0],
                totals[1],
                tuple(
                    p
                    for p, _ in sorted(
                        pair_ports[(source, destination, change)].items(),
                        key=lambda item: (-item[1], item[0]),
                    )[:10]
                ),
            )
            for (source, destination, change), totals in pairs.items()
        ),
        key=lambda p: (-p.records, p.change, p.source, p.destination),
    )
    by_policy = sorted(
        (
            PolicyChange(change, d.tier, d.policy, d.rule, totals[0], totals[1])
            for (change, d), totals in policies.items()
        ),
        key=lambda p: (
            -p.records,
            p.change,
            p.tier,
            p.policy,
            p.rule if p.rule is not None else -9,
        ),
    )
    unknown_flows = np.nonzero(~known)[0]
    unknown: dict[str, tuple[int, int]] = {}
    for number, text in enumerate(reasons):
        indices = unknown_flows[reason[unknown_flows] == number]
        if len(indices):
            unknown[text] = (records_of(indices), len(indices))
    return WhatIfReport(
        mode=mode,
        records=len(columns),
        flows=len(unique),
        unchanged_records=records_of(unchanged),
        unchanged_flows=len(unchanged),
        allow_to_deny_records=records_of(allow_to_deny),
        allow_to_deny_flows=len(allow_to_deny),
        deny_to_allow_records=records_of(deny_to_allow),
        deny_to_allow_flows=len(deny_to_allow),
        unknown_records=records_of(unknown_flows),
        unknown_flows=len(unknown_flows),
        unknown=unknown,
        model_disagreements=disagreements,
        untraced_flows=untraced,
        by_pair=tuple(by_pair),
        by_policy=tuple(by_policy),
        start_time=columns.start_time,
        end_time=columns.end_time,
    )
