"""Recommendation and what-if on the demo's manifests, with records as a live cluster writes
them: pods named as the lab names them, addresses the CNI gave (not the engine's offline
ones), both reporters, level 0."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from palisade.flows import FlowRecord, proto_name
from palisade.model import load_paths
from palisade.policy import Cluster, Endpoint, Flow, PolicyEngine
from palisade.recommend import RecommendOptions, recommend
from palisade.whatif import whatif

REPO = Path(__file__).resolve().parents[2]
POLICY_KINDS = {
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
}


def live_ip(endpoint: Endpoint) -> str:
    """The address a live cluster gave the pod: not the engine's offline one."""
    return str(ipaddress.IPv4Address(int(endpoint.ips[0]) + (1 << 16)))


def side(prefix: str, endpoint: Endpoint) -> dict[str, object]:
    return {
        f"{prefix}_ip": live_ip(endpoint),
        f"{prefix}_name": endpoint.name,
        f"{prefix}_name_aggr": f"{endpoint.generate_name}*"
        if endpoint.generate_name
        else endpoint.name,
        f"{prefix}_namespace": endpoint.namespace,
        f"{prefix}_type": "wep",
    }


def test_demo_recorded_recommended_enforced() -> None:
    loaded = load_paths([REPO / "examples" / "demo"])
    assert not loaded.problems
    documents = [r.to_document() for r in loaded.resources]
    engine = PolicyEngine(Cluster.from_documents(documents))
    pods = sorted(engine.cluster.pods, key=lambda e: e.key)
    records: list[FlowRecord] = []
    probes: list[tuple[Endpoint, Endpoint, Flow]] = []
    for src in pods:
        for dst in pods:
            for named in dst.named_ports:
                flow = Flow(src.ips[0], dst.ips[0], named.protocol, dst_port=named.port)
                probes.append((src, dst, flow))
                verdict = engine.evaluate(flow)
                assert verdict.egress is not None and verdict.ingress is not None
                common = {
                    "start_time": 1_700_000_000,
                    "end_time": 1_700_000_300,
                    "proto": proto_name(flow.protocol),
                    "dest_port": flow.dst_port,
                    **side("source", src),
                    **side("dest", dst),
                }
                egress = "allow" if verdict.egress.allowed else "deny"
                records.append(FlowRecord(action=egress, reporter="src", **common))  # type: ignore[arg-type]
                if verdict.egress.allowed:
                    ingress = "allow" if verdict.ingress.allowed else "deny"
                    records.append(FlowRecord(action=ingress, reporter="dst", **common))  # type: ignore[arg-type]
    result = recommend(records, documents, RecommendOptions(enforced=True))
    allowed = sum(1 for r in records if r.action == "allow")
    assert result.used + result.ignored.get("outside the namespaces", 0) == allowed
    assert "unknown local pod" not in result.ignored
    topology = [d for d in documents if d["kind"] not in POLICY_KINDS]
    new = PolicyEngine(Cluster.from_documents([*topology, *result.documents]))
    covered = set(result.namespaces)
    for src, dst, flow in probes:
        if src.namespace in covered and dst.namespace in covered:
            assert new.evaluate(flow).allowed == engine.evaluate(flow).allowed, (
                src.key,
                dst.key,
                flow,
            )

    # What-if of enforcing the recommendation over the cluster: nothing allowed is denied,
    # every record maps to an endpoint although the addresses are not the documents'.
    report = whatif(records, documents, result.documents)
    assert report.unknown_records == 0
    assert report.allow_to_deny_records == 0
