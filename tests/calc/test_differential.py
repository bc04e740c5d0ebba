"""The intents carry the engine's semantics: walking them gives ``PolicyEngine``'s verdicts."""

from __future__ import annotations

import copy
import ipaddress
import random
from typing import Any

import pytest

from palisade.calc import EndpointIntent, build_graph
from palisade.policy import Cluster, Flow, PolicyEngine
from palisade.policy.synthetic import flows_from_cluster, generate_cluster

from .dataplane import Interpreter, RecordingDataplane, resource_key

NODES = ("node-a", "node-b", "node-c")


def _spread_over_nodes(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    documents = copy.deepcopy(documents)
    pods = [d for d in documents if d["kind"] == "Pod"]
    for index, pod in enumerate(pods):
        pod["spec"]["nodeName"] = NODES[index % len(NODES)]
    return documents


def _program(documents: list[dict[str, Any]]) -> dict[str, RecordingDataplane]:
    dataplanes = {}
    for node in NODES:
        dataplane = RecordingDataplane()
        graph = build_graph(node, dataplane)
        for document in documents:
            graph.on_update(resource_key(document), document)
        graph.flush()
        dataplanes[node] = dataplane
    return dataplanes


def _extra_flows(documents: list[dict[str, Any]], rng: random.Random, n: int) -> list[Flow]:
    """What the synthetic flow generator leaves out: ICMP, SCTP, source ports, set addresses."""
    pod_ips = [
        ipaddress.ip_address(d["status"]["podIP"])
        for d in documents
        if d["kind"] == "Pod" and d.get("status", {}).get("podIP")
    ]
    net_ips = [
        network.network_address + (1 if network.num_addresses > 1 else 0)
        for d in documents
        if d["kind"] in ("NetworkSet", "GlobalNetworkSet")
        for network in map(ipaddress.ip_network, d["spec"].get("nets", ()))
        if network.version == 4
    ]
    peers = pod_ips + net_ips + [ipaddress.ip_address("198.51.100.7")]
    flows = []
    for _ in range(n):
        src, dst = rng.choice(pod_ips + peers), rng.choice(pod_ips)
        if rng.random() < 0.5:
            src, dst = dst, src
        protocol = rng.choice((1, 6, 17, 132))
        if protocol == 1:
            flows.append(Flow(src, dst, 1, icmp_type=rng.choice((0, 3, 8)), icmp_code=0))
        else:
            port = rng.choice((53, 80, 443, 5432, 6379, 8080, 8443, 9090, rng.randrange(1, 65536)))
            src_port = rng.choice((None, rng.randrange(1024, 65536)))
            flows.append(Flow(src, dst, protocol, dst_port=port, src_port=src_port))
    return flows


@pytest.mark.parametrize("seed", range(10))
def test_intent_verdicts_equal_engine_verdicts(seed: int) -> None:
    documents = _spread_over_nodes(
        generate_cluster(
            namespaces=3 + seed % 3,
            pods=24 + 4 * seed,
            policies=8 + 4 * seed,
            tiers=seed % 3,
            seed=seed,
            kubernetes_only=seed % 4 == 3,
        )
    )
    dataplanes = _program(documents)
    engine = PolicyEngine(Cluster.from_documents(documents))
    owner: dict[str, tuple[RecordingDataplane, EndpointIntent]] = {
        ip: (dataplane, endpoint)
        for dataplane in dataplanes.values()
        for endpoint in dataplane.endpoints.values()
        for ip in endpoint.ips
    }
    assert len(owner) == len(engine.cluster.endpoints)
    batch = flows_from_cluster(documents, 600, seed)
    flows = [batch.flow(i) for i in range(len(batch))]
    flows += _extra_flows(documents, random.Random(seed), 400)
    interpreters = {id(dp): Interpreter(dp) for dp in dataplanes.values()}
    checked = 0
    for flow in flows:
        verdict = engine.evaluate(flow)
        for result, ip, ingress in (
            (verdict.egress, flow.src_ip, False),
            (verdict.ingress, flow.dst_ip, True),
        ):
            if result is None:
                assert str(ip) not in owner
                continue
            dataplane, endpoint = owner[str(ip)]
            allowed = interpreters[id(dataplane)].allowed(endpoint, ingress, flow)
            assert allowed == result.allowed, (flow, "ingress" if ingress else "egress")
            checked += 1
    assert checked > len(flows)
