"""What-if replay against the reference evaluator, flow by flow."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter

import pytest

from palisade.flows import FlowRecord
from palisade.policy import Cluster, Flow, PolicyEngine
from palisade.policy.synthetic import generate_cluster
from palisade.recommend import RecommendOptions, recommend
from palisade.whatif import (
    ALLOW_TO_DENY,
    DENY_TO_ALLOW,
    FlowColumns,
    merge_documents,
    whatif,
)
from tests.recommend.flowgen import records_for, sample_flows


def _cluster(seed: int) -> tuple[list[dict[str, object]], PolicyEngine]:
    documents = generate_cluster(namespaces=6, pods=50, policies=40, tiers=2, seed=seed)
    return documents, PolicyEngine(Cluster.from_documents(documents))


def _records(engine: PolicyEngine, flows: list[Flow], *, aggregated: bool) -> list[FlowRecord]:
    return [r for f in flows for r in records_for(engine, f, aggregated=aggregated)]


def _expected(
    before: PolicyEngine, after: PolicyEngine, flows: list[Flow], pending: bool
) -> Counter[str]:
    changes: Counter[str] = Counter()
    for flow in set(flows):
        old = before.evaluate(flow).allowed
        verdict = after.evaluate(flow)
        new = verdict.pending_allowed if pending else verdict.allowed
        if old and not new:
            changes[ALLOW_TO_DENY] += 1
        elif new and not old:
            changes[DENY_TO_ALLOW] += 1
    return changes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_staged_mode_matches_the_pending_view(seed: int) -> None:
    documents, engine = _cluster(seed)
    flows = sample_flows(engine.cluster, 500, seed)
    report = whatif(_records(engine, flows, aggregated=False), documents, staged=True)
    expected = _expected(engine, engine, flows, pending=True)
    assert report.unknown_flows == 0
    assert report.allow_to_deny_flows == expected[ALLOW_TO_DENY]
    assert report.deny_to_allow_flows == expected[DENY_TO_ALLOW]
    assert report.flows == len(set(flows))
    assert sum(p.flows for p in report.by_pair) == sum(expected.values())
    assert sum(p.flows for p in report.by_policy) == sum(expected.values())
    # Staged policies decide under their own (staged) names.
    assert all(p.policy != "(not traced)" for p in report.by_policy)


@pytest.mark.parametrize("seed", [4, 5])
def test_proposed_mode_replaces_same_keys(seed: int) -> None:
    documents, engine = _cluster(seed)
    flows = sample_flows(engine.cluster, 500, seed)
    records = _records(engine, flows, aggregated=False)
    proposed = recommend(records, documents, RecommendOptions(enforced=True)).documents
    report = whatif(records, documents, proposed)
    after = PolicyEngine(Cluster.from_documents(merge_documents(documents, proposed)))
    expected = _expected(engine, after, flows, pending=False)
    assert report.allow_to_deny_flows == expected[ALLOW_TO_DENY]
    assert report.deny_to_allow_flows == expected[DENY_TO_ALLOW]
    deciding = {p.policy for p in report.by_policy if p.change == ALLOW_TO_DENY}
    assert deciding <= {
        f"np:{d['metadata']['namespace']}/recommended"  # type: ignore[index]
        for d in proposed
    } | {f"{p.hit_part}" for p in after.cluster.policies}


def test_aggregated_records_map_to_endpoints_and_unknowns_are_counted() -> None:
    documents, engine = _cluster(6)
    flows = sample_flows(engine.cluster, 300, 6)
    records = _records(engine, flows, aggregated=True)
    records.append(
        FlowRecord(
            start_time=1,
            end_time=2,
            action="allow",
            reporter="src",
            proto="tcp",
            source_name_aggr="ghost-*",
            source_namespace="nowhere",
            source_type="wep",
            dest_port=80,
            dest_name_aggr="pub",
        )
    )
    records.append(
        FlowRecord(start_time=1, end_time=2, action="allow", reporter="src", proto="tcp")
    )
    report = whatif(records, documents, staged=True)
    assert report.records == len(records)
    assert (
        report.unchanged_records
        + report.allow_to_deny_records
        + report.deny_to_allow_records
        + report.unknown_records
        == len(records)
    )
    assert report.unknown["pod not in the cluster documents"][0] == 1
    assert report.unknown["no destination port (aggregated away)"][0] == 1
    # External peers aggregated to pub/pvt cannot be replayed; they are counted.
    external = sum(1 for f in flows if engine.endpoint_for_ip(f.dst_ip) is None)
    if external:
        assert "external address aggregated away (pub/pvt)" in report.unknown
    json.dumps(report.to_json())


def test_columns_deduplicate() -> None:
    documents, engine = _cluster(7)
    pods = sorted(engine.cluster.pods, key=lambda e: e.key)
    flow = Flow(pods[0].ips[0], pods[1].ips[0], 6, dst_port=8080)
    records = _records(engine, [flow] * 5, aggregated=False)
    columns = FlowColumns.from_records(records)
    assert len(columns) == len(records)
    report = whatif(records, documents)
    assert report.flows == 1
    assert report.unchanged_records == len(records)


def test_ipv6_is_unknown() -> None:
    documents, _ = _cluster(8)
    record = FlowRecord(
        start_time=1,
        end_time=2,
        action="allow",
        reporter="src",
        proto="udp",
        source_ip=str(ipaddress.ip_address("fd00::1")),
        dest_ip="fd00::2",
        dest_port=53,
    )
    report = whatif([record], documents)
    assert report.unknown_records == 1


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_deciding_policy_matches_the_reference_flow_by_flow(seed: int) -> None:
    """Decisions are traced once per class of flows; every flow of the class must have the
    same deciding tier, policy and rule as its own reference evaluation."""
    documents, engine = _cluster(seed)
    flows = sample_flows(engine.cluster, 800, seed)
    records = _records(engine, flows, aggregated=False)
    report = whatif(records, documents, staged=True)
    expected: Counter[tuple[str, str, str, int | None]] = Counter()
    for flow in set(flows):
        verdict = engine.evaluate(flow)
        if verdict.allowed == verdict.pending_allowed:
            continue
        change = ALLOW_TO_DENY if verdict.allowed else DENY_TO_ALLOW
        results = [r for r in (verdict.pending_egress, verdict.pending_ingress) if r is not None]
        denying = [r for r in results if not r.allowed]
        deciding = denying[0] if denying else results[-1]
        hit = deciding.deciding
        assert hit is not None
        rule = None if hit.tier == "__PROFILE__" else hit.rule_index
        expected[(change, hit.tier, hit.policy, rule)] += 1
    got = Counter({(p.change, p.tier, p.policy, p.rule): p.flows for p in report.by_policy})
    assert got == expected


def test_network_set_references_are_replayed_inside_the_set() -> None:
    documents, engine = _cluster(9)
    network_set = engine.cluster.network_sets[0]
    pod = sorted(engine.cluster.pods, key=lambda e: e.key)[0]
    record = FlowRecord(
        start_time=1,
        end_time=2,
        action="allow",
        reporter="src",
        proto="tcp",
        source_namespace=pod.namespace or "-",
        source_name=pod.name,
        source_type="wep",
        dest_type="ns",
        dest_name_aggr=network_set.name,
        dest_namespace=network_set.namespace or "-",
        dest_port=443,
    )
    report = whatif([record], documents, staged=True)
    assert report.unknown_records == 0
    assert report.flows == 1
