"""The agent's flow logs: NFLOG rule hits and conntrack counters → Calico flow records.

:class:`FlowReporter` sits beside the node's dataplane. It hears the same intents nftables is
programmed from (so it knows the hit behind every NFLOG prefix the renderer wrote, and each
policy's tier), and the same datastore documents the calc graph reads (so it can name the
endpoint behind an address: pods by their recorded IPs, network sets by their nets). A thread
reads the node's NFLOG group continuously and, every ``interval`` seconds, dumps conntrack for
the counters, flushes the collector (:class:`palisade.flows._collect.FlowCollector`),
aggregates (allowed and denied each at their own level, Calico's 2 and 1 by default) and hands
the records to ``sink`` — a :class:`palisade.server.FlowShipper`, a file, or a test.

The flush also completes what the kernel cannot say: the pending trace where a staged policy
changes the evaluation, and the destination's Service. Both come from a
:class:`palisade.policy.FlowTracer` over the datastore documents the reporter keeps (passed to
the collector as its ``Completer``); the tracer is rebuilt, outside the lock, at the first
flush after a document changed (a new *policy generation*) and only while some staged policy
or Service exists, and it caches its answers per flow pair and port, so a steady node pays two
dictionary lookups per record.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from palisade.calc import (
    KUBERNETES_NETWORK_POLICY_KIND,
    DataplaneCallbacks,
    EndpointIntent,
    PolicyIntent,
    ProfileIntent,
    SetIntent,
)
from palisade.dataplane.linux._conntrack import enable_accounting, read_conntrack
from palisade.dataplane.linux._nflog import NflogReader
from palisade.dataplane.linux._nft_render import FLOW_LOG_GROUP
from palisade.datastore import ResourceKey
from palisade.flows import FlowRecord
from palisade.flows._aggregate import aggregate_by_action
from palisade.flows._collect import EndpointInfo, FlowCollector, HitTable, network_info
from palisade.policy import POLICY_KINDS, STAGED_POLICY_KINDS, Action, FlowTracer

log = logging.getLogger("palisade.agent.flows")

Sink = Callable[[list[FlowRecord]], object]

TRACED_KINDS = frozenset(
    {
        *POLICY_KINDS,
        KUBERNETES_NETWORK_POLICY_KIND,
        "Tier",
        "Profile",
        "Namespace",
        "ServiceAccount",
        "Pod",
        "HostEndpoint",
        "NetworkSet",
        "GlobalNetworkSet",
        "Service",
    }
)
"""Datastore kinds (as stored) the pending trace and the Service fields are computed from."""


class FlowReporter:
    """Rule hits and conntrack of one node, reported as flow records every ``interval``."""

    def __init__(
        self,
        node: str,
        netns: str | None,
        sink: Sink,
        *,
        interval: float = 15.0,
        allowed_level: int = 2,
        denied_level: int = 1,
        group: int = FLOW_LOG_GROUP,
    ) -> None:
        self.node = node
        self.netns = netns
        self.sink = sink
        self.interval = interval
        self.levels = (allowed_level, denied_level)
        self.group = group
        self.hits = HitTable()
        self._lock = threading.Lock()
        self._pods: dict[str, EndpointInfo] = {}  # IP → pod
        self._pod_ips: dict[ResourceKey, tuple[str, ...]] = {}
        self._sets: dict[
            ResourceKey, tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], EndpointInfo]
        ] = {}
        self.collector = FlowCollector(node, self.hits, self.lookup)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reported = 0
        self.errors = 0
        # the documents of the policy generation (for the pending trace and Service fields)
        self._documents: dict[ResourceKey, Mapping[str, Any]] = {}
        self._staged: set[ResourceKey] = set()
        self._services: set[ResourceKey] = set()
        self._generation = 0
        self._tracer: FlowTracer | None = None
        self._tracer_generation = -1
        self.tracer_builds = 0
        self.tracer_seconds = 0.0
        """Time spent building tracers and in flushes that complete records (an upper bound of
        what the pending trace and Service fields cost)."""

    # -- what the node knows ------------------------------------------------------------------

    def lookup(self, ip: str) -> EndpointInfo:
        """Called with the lock held (from :meth:`_flush` / the reader)."""
        pod = self._pods.get(ip)
        if pod is not None:
            return pod
        address = ipaddress.ip_address(ip)
        best: tuple[int, EndpointInfo] | None = None
        for networks, info in self._sets.values():
            for network in networks:
                fits = address.version == network.version and address in network
                if fits and (best is None or network.prefixlen > best[0]):
                    best = (network.prefixlen, info)
        return best[1] if best else network_info(ip)

    def on_document(self, key: ResourceKey, document: Mapping[str, Any] | None) -> None:
        with self._lock:
            if key.kind in TRACED_KINDS:
                self._generation += 1
                if document is None:
                    self._documents.pop(key, None)
                    self._staged.discard(key)
                    self._services.discard(key)
                else:
                    self._documents[key] = document
                    if key.kind in STAGED_POLICY_KINDS:
                        self._staged.add(key)
                    elif key.kind == "Service":
                        self._services.add(key)
            if key.kind == "Pod":
                for ip in self._pod_ips.pop(key, ()):
                    self._pods.pop(ip, None)
                if document is not None:
                    info, ips = _pod_info(document)
                    self._pod_ips[key] = ips
                    for ip in ips:
                        self._pods[ip] = info
            elif key.kind in ("NetworkSet", "GlobalNetworkSet"):
                self._sets.pop(key, None)
                if document is not None:
                    self._sets[key] = _set_info(key, document)

    # -- DataplaneCallbacks (a tee beside nftables) -------------------------------------------

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        pass

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        if policy is not None:
            with self._lock:
                _add_rules(self.hits, policy_id, policy.ingress + policy.egress)

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        if profile is not None:
            with self._lock:
                _add_rules(self.hits, f"pro:{profile_id}", profile.ingress + profile.egress)

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        if endpoint is None:
            return
        with self._lock:
            for tier in endpoint.ingress_tiers + endpoint.egress_tiers:
                for policy_id in tier.policy_ids:
                    self.hits.set_tier(policy_id, tier.tier)
                if tier.policy_ids:
                    self.hits.add(tier.policy_ids[-1], "deny", -1, tier.tier)

    # -- the reader ---------------------------------------------------------------------------

    def start(self) -> None:
        enable_accounting(self.netns)
        reader = NflogReader(self.group, self.netns)
        self._thread = threading.Thread(
            target=self._run, args=(reader,), name="flow-reporter", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, reader: NflogReader) -> None:
        window_start = time.time()
        try:
            while not self._stop.is_set():
                deadline = window_start + self.interval
                while not self._stop.is_set() and time.time() < deadline:
                    packets = reader.read(timeout=min(0.2, max(0.01, deadline - time.time())))
                    if packets:
                        with self._lock:
                            for p in packets:
                                self.collector.on_logged(
                                    p.prefix,
                                    (
                                        p.protocol,
                                        str(p.source),
                                        p.source_port,
                                        str(p.destination),
                                        p.destination_port,
                                    ),
                                    p.length,
                                    p.received,
                                )
                window_end = time.time()
                self._flush(window_start, window_end)
                window_start = window_end
        finally:
            reader.close()

    def _flush(self, start: float, end: float) -> None:
        live: set[Any] | None
        try:
            entries = read_conntrack(self.netns)
            live = {entry.key for entry in entries}  # an empty table: every connection ended
        except Exception as exc:  # counters missing this round; the next dump has them
            self.errors += 1
            log.warning("conntrack dump failed: %s", exc)
            entries, live = [], None  # unknown: end nothing
        tracer = self.tracer()
        started = time.perf_counter()
        with self._lock:
            self.collector.on_conntrack(entries)
            records = self.collector.flush(
                start, end, live=live, complete=tracer.complete if tracer else None
            )
        if tracer is not None:
            self.tracer_seconds += time.perf_counter() - started
        if not records:
            return
        allowed_level, denied_level = self.levels
        # one flush is one window: every record of it starts at ``start``
        aggregated = aggregate_by_action(
            records, allowed=allowed_level, denied=denied_level, interval=max(1, int(self.interval))
        )
        try:
            self.sink(aggregated)
            self.reported += len(aggregated)
        except Exception as exc:
            self.errors += 1
            log.warning("flow records not handed on: %s", exc)

    def tracer(self) -> FlowTracer | None:
        """The tracer of the current policy generation (built now if the documents changed
        since the last one), or None while no staged policy and no Service exists: then every
        pending trace is the enforced one and no destination is a Service's."""
        with self._lock:
            if not (self._staged or self._services):
                self._tracer, self._tracer_generation = None, self._generation
                return None
            if self._tracer_generation == self._generation:
                return self._tracer
            generation = self._generation
            documents = list(self._documents.values())
        # built outside the lock: the agent's loop must not wait on it to feed the graph
        tracer: FlowTracer | None = None
        started = time.perf_counter()
        try:
            tracer = FlowTracer.from_documents(documents)
        except Exception as exc:  # tried again after the next change, not at every flush
            self.errors += 1
            log.warning("no pending trace or services for this policy generation: %s", exc)
        took = time.perf_counter() - started
        self.tracer_builds += 1
        self.tracer_seconds += took
        log.debug(
            "policy generation %d: flow tracer over %d documents built in %.1f ms",
            generation,
            len(documents),
            took * 1000,
        )
        self._tracer, self._tracer_generation = tracer, generation
        return tracer


def _add_rules(hits: HitTable, part: str, rules: tuple[Any, ...]) -> None:
    for rule in rules:
        if rule.action is not Action.LOG:
            hits.add(part, rule.action.value.lower(), rule.rule_index)


def _pod_info(document: Mapping[str, Any]) -> tuple[EndpointInfo, tuple[str, ...]]:
    meta = document.get("metadata") or {}
    status = document.get("status") or {}
    ips = [str(status["podIP"])] if status.get("podIP") else []
    ips += [str(p.get("ip")) for p in status.get("podIPs") or () if p.get("ip")]
    name = str(meta.get("name") or "-")
    generate = meta.get("generateName")
    labels = tuple(sorted(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()))
    info = EndpointInfo(
        name=name,
        name_aggr=f"{generate}*" if generate else name,
        namespace=str(meta.get("namespace") or "default"),
        type="wep",
        labels=labels,
    )
    return info, tuple(dict.fromkeys(ips))


def _set_info(
    key: ResourceKey, document: Mapping[str, Any]
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], EndpointInfo]:
    meta = document.get("metadata") or {}
    networks = []
    for net in (document.get("spec") or {}).get("nets") or ():
        try:
            networks.append(ipaddress.ip_network(str(net), strict=False))
        except ValueError:
            continue
    labels = tuple(sorted(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()))
    name = str(meta.get("name") or "-")
    info = EndpointInfo(
        name=name, name_aggr=name, namespace=key.namespace or "-", type="ns", labels=labels
    )
    return networks, info


class FlowTee:
    """DataplaneCallbacks to nftables and to the reporter (same intents, same order)."""

    def __init__(self, dataplane: DataplaneCallbacks, reporter: FlowReporter) -> None:
        self.dataplane = dataplane
        self.reporter = reporter

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        self.dataplane.on_ipset_update(set_id, ipset)

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        self.reporter.on_policy_update(policy_id, policy)
        self.dataplane.on_policy_update(policy_id, policy)

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        self.reporter.on_profile_update(profile_id, profile)
        self.dataplane.on_profile_update(profile_id, profile)

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        self.reporter.on_endpoint_update(endpoint_id, endpoint)
        self.dataplane.on_endpoint_update(endpoint_id, endpoint)


def file_sink(path: Path) -> Sink:
    """Append records as Calico NDJSON to ``path``."""

    def write(records: list[FlowRecord]) -> None:
        with path.open("a") as handle:
            for record in records:
                handle.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")

    return write


class GraphTee:
    """The calc graph, with every document also shown to the reporter (to name endpoints)."""

    def __init__(self, graph: Any, reporter: FlowReporter) -> None:
        self.graph = graph
        self.reporter = reporter

    def on_update(self, key: ResourceKey, document: dict[str, Any] | None) -> None:
        self.reporter.on_document(key, document)
        self.graph.on_update(key, document)

    def flush(self) -> int:
        return int(self.graph.flush())
