"""All-ports connectivity agrees with the reference evaluator, port range by port range."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from palisade.policy import Cluster, Flow, PolicyEngine, connectivity
from palisade.policy.synthetic import generate_cluster

REPO = Path(__file__).resolve().parents[2]


def assert_agrees(engine: PolicyEngine, samples_per_pair: int, seed: int) -> int:
    result = connectivity(engine)
    rng = random.Random(seed)
    by_key = {e.key: e for e in engine.cluster.pods}
    checked = 0
    for s, (protocol, ranges) in enumerate(zip(result.protocols, result.ranges, strict=True)):
        ports = [r.low for r in ranges] + [r.high for r in ranges]
        for i, source in enumerate(result.pods):
            for j, destination in enumerate(result.pods):
                for port in rng.sample(ports, min(samples_per_pair, len(ports))):
                    flow = Flow(by_key[source].ips[0], by_key[destination].ips[0], protocol, port)
                    expected = engine.evaluate(flow).allowed
                    assert bool(result.allowed[s, i, j]) == expected, (
                        source,
                        destination,
                        protocol,
                        port,
                    )
                    checked += 1
    return checked


def test_connectivity_on_the_demo_application() -> None:
    documents = []
    for path in sorted((REPO / "examples" / "demo").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    engine = PolicyEngine(Cluster.from_documents(documents))
    assert assert_agrees(engine, samples_per_pair=2, seed=1) > 1000
    result = connectivity(engine)
    # web reaches the orders API on 8080/TCP only (and DNS over UDP 53).
    ports = result.allowed_ports("storefront/web-0", "api/orders-0")
    assert [str(r) for r in ports[6]] == ["8080"]


def test_connectivity_on_generated_clusters() -> None:
    for seed in (3, 4):
        documents = generate_cluster(namespaces=4, pods=24, policies=20, tiers=2, seed=seed)
        engine = PolicyEngine(Cluster.from_documents(documents))
        assert assert_agrees(engine, samples_per_pair=1, seed=seed) > 500
