"""The core property: enforce what was recommended from recorded traffic, and every observed
flow is still allowed while every pod pair and port that was not observed is denied."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.model import parse_document
from palisade.policy import Cluster, Flow, FlowBatch, PolicyEngine, batch_verdicts
from palisade.policy.synthetic import generate_cluster
from palisade.recommend import RecommendOptions, Workload, WorkloadIndex, recommend
from palisade.recommend._evidence import is_dns
from tests.recommend.flowgen import records_for, sample_flows, topology


def _scenario(
    seed: int, *, kubernetes_only: bool = False, realistic: bool = False
) -> tuple[list[dict[str, object]], PolicyEngine, list[Flow], list[object]]:
    documents = generate_cluster(
        namespaces=6,
        pods=50,
        policies=15,
        tiers=1,
        seed=seed,
        kubernetes_only=kubernetes_only,
        realistic=realistic,
    )
    engine = PolicyEngine(Cluster.from_documents(documents))
    flows = sample_flows(engine.cluster, 400, seed)
    pod_ips = {ip for pod in engine.cluster.pods for ip in pod.ips}
    records = [
        record
        for i, flow in enumerate(flows)
        for record in records_for(engine, flow, aggregated=i % 2 == 0 and flow.dst_ip in pod_ips)
    ]
    return documents, engine, flows, records  # type: ignore[return-value]


def _check(
    seed: int,
    options: RecommendOptions,
    *,
    kubernetes_only: bool = False,
    realistic: bool = False,
) -> None:
    documents, engine, flows, records = _scenario(
        seed, kubernetes_only=kubernetes_only, realistic=realistic
    )
    # What each side's node reported as allowed: its own direction's verdict (§6.1).
    verdicts = [engine.evaluate(f) for f in flows]
    observed = [f for f, v in zip(flows, verdicts, strict=True) if v.allowed]
    egress_allowed = [
        f for f, v in zip(flows, verdicts, strict=True) if v.egress is None or v.egress.allowed
    ]
    recommendation = recommend(records, documents, options)  # type: ignore[arg-type]
    for document in recommendation.documents:
        parse_document(document)  # every document is a valid resource
    new = PolicyEngine(Cluster.from_documents([*topology(documents), *recommendation.documents]))
    assert not new.cluster.problems

    def allowed(flow: Flow) -> bool:
        verdict = new.evaluate(flow)
        return verdict.allowed if options.enforced else verdict.pending_allowed

    # 1. Nothing observed is denied.
    for flow in observed:
        assert allowed(flow), f"observed flow denied: {flow}"

    # 2. Everything between pods that was not observed is denied (workload granularity:
    #    pods with the same stable labels are indistinguishable to any policy).
    index = WorkloadIndex(new.cluster)
    covered = set(recommendation.namespaces)
    pods = sorted(new.cluster.pods, key=lambda e: e.key)
    workload = {p.key: index.workload_of(p) for p in pods}
    Seen = set[tuple[Workload | None, Workload | None, int, int | None]]

    def seen_in(chosen: list[Flow]) -> Seen:
        seen: Seen = set()
        for flow in chosen:
            src = new.endpoint_for_ip(flow.src_ip)
            dst = new.endpoint_for_ip(flow.dst_ip)
            if src is not None and dst is not None:
                seen.add((workload[src.key], workload[dst.key], flow.protocol, flow.dst_port))
        return seen

    seen, seen_egress = seen_in(observed), seen_in(egress_allowed)
    probes: set[tuple[int, int]] = {(6, 80), (6, 443), (17, 53), (6, 53), (6, 12345)}
    for pod in pods:
        probes.update((n.protocol, n.port) for n in pod.named_ports)
    src_ip, dst_ip, protocol, port, expected = [], [], [], [], []
    for src in pods:
        for dst in pods:
            ws, wd = workload[src.key], workload[dst.key]
            assert ws is not None and wd is not None
            for proto, number in sorted(probes):
                key = (ws, wd, proto, number)
                egress_seen = key in seen_egress
                if is_dns(wd) and number == 53 and proto in (6, 17):
                    egress_seen = any((ws, wd, p, 53) in seen_egress for p in (6, 17))
                egress_ok = ws.namespace not in covered or egress_seen
                ingress_ok = wd.namespace not in covered or key in seen
                if ws.namespace not in covered and wd.namespace not in covered:
                    continue
                src_ip.append(int(src.ips[0]))
                dst_ip.append(int(dst.ips[0]))
                protocol.append(proto)
                port.append(number)
                expected.append(egress_ok and ingress_ok)
    batch = FlowBatch(
        np.array(src_ip, dtype=np.uint32),
        np.array(dst_ip, dtype=np.uint32),
        np.array(protocol, dtype=np.uint8),
        np.array(port, dtype=np.uint16),
    )
    if options.enforced:
        got = batch_verdicts(new, batch)
        wrong = np.nonzero(got != np.array(expected))[0]
        assert not len(wrong), [(str(batch.flow(int(i))), bool(got[i])) for i in wrong[:10]]
    else:
        for i in range(0, len(batch), 97):
            assert allowed(batch.flow(i)) == expected[i], str(batch.flow(i))

    # 3. External peers: the observed /24 is allowed, another /24 is not.
    for flow in observed:
        if new.endpoint_for_ip(flow.dst_ip) is None:
            source = new.endpoint_for_ip(flow.src_ip)
            assert source is not None
            other = ipaddress.ip_address("100.64.7.7")
            if source.namespace in covered:
                assert not allowed(Flow(flow.src_ip, other, flow.protocol, dst_port=flow.dst_port))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_calico_per_namespace(seed: int) -> None:
    _check(seed, RecommendOptions(enforced=True))


@pytest.mark.parametrize("seed", [5, 6])
def test_calico_per_workload(seed: int) -> None:
    _check(seed, RecommendOptions(enforced=True, per_workload=True))


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_kubernetes(seed: int) -> None:
    _check(seed, RecommendOptions(enforced=True, kind="kubernetes"), kubernetes_only=True)


def test_staged_previews_the_same(seed: int = 10) -> None:
    _check(seed, RecommendOptions())


@pytest.mark.parametrize("seed", [12, 13])
@pytest.mark.parametrize("kind", ["calico", "kubernetes"])
def test_realistic_policies_recorded(seed: int, kind: str) -> None:
    """Traffic recorded under production-shaped policies (DNS egress, ipBlocks, ranges)."""
    options = RecommendOptions(enforced=True, kind=kind)  # type: ignore[arg-type]
    _check(seed, options, kubernetes_only=True, realistic=True)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=100_000),
    per_workload=st.booleans(),
    kind=st.sampled_from(["calico", "kubernetes"]),
)
def test_property_on_random_clusters(seed: int, per_workload: bool, kind: str) -> None:
    options = RecommendOptions(enforced=True, per_workload=per_workload, kind=kind)  # type: ignore[arg-type]
    _check(seed, options, kubernetes_only=kind == "kubernetes")
