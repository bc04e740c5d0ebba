"""Kernel equals engine on generated Calico policy sets, in a three-node lab.

The pods, namespaces, service accounts, tiers and network sets of one synthetic cluster
(``palisade.policy.synthetic``: realistic labels, named container ports, service accounts)
form the lab. A pool of its generated policies — Calico NetworkPolicy and GlobalNetworkPolicy
in tiers, with Pass, Log, Deny and Allow, network sets, nets and notNets, port ranges, named
ports and notPorts, service-account and namespace selectors, Kubernetes NetworkPolicies and
staged policies (which must change nothing) — is cut into random suites. Each suite replaces
the previous one in the datastore in one transaction (so policies are created, modified and
deleted from suite to suite), and for every probe port the lab's real matrix must equal the
engine's matrix of the datastore's documents for every pair of distinct pods. The suites
together must use every feature listed, so the comparison cannot pass by leaving one out.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palisade import lab
from palisade.cli._common import parse_port_spec
from palisade.cli._policy import matrix_json
from palisade.datastore import open_store
from palisade.policy import Cluster, PolicyEngine, reachability_matrix
from palisade.policy.synthetic import generate_cluster
from palisade.resources import apply_documents, store_key
from tests.lab.shared import module_lab, off_diagonal

NODES = 3
SUITES = 6
SUITE_SIZE = 12
RETRY = 8.0
POLICY_KINDS = {
    "NetworkPolicy",
    "GlobalNetworkPolicy",
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
}
FEATURES = {
    "tiers": '"tier": "',
    "Pass": '"action": "Pass"',
    "Log": '"action": "Log"',
    "Deny": '"action": "Deny"',
    "GlobalNetworkPolicy": '"kind": "GlobalNetworkPolicy"',
    "network sets": "role == 'legacy-nodes'",  # a NetworkSet of 10.244.0.0/25: pod addresses
    "nets": '"nets"',
    "notNets": '"notNets"',
    "port ranges": '":',
    "notPorts": '"notPorts"',
    "service accounts": '"serviceAccounts"',
    "namespaceSelector": '"namespaceSelector"',
    "Kubernetes NetworkPolicy": '"apiVersion": "networking.k8s.io/v1"',
    "staged": '"kind": "Staged',
}


def _cluster() -> list[dict[str, Any]]:
    return generate_cluster(namespaces=4, pods=10, policies=90, tiers=2, seed=11)


@pytest.fixture(scope="module")
def calico_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.LabState]:
    yield from module_lab(
        tmp_path_factory,
        "calico-lab",
        [d for d in _cluster() if d["kind"] not in POLICY_KINDS],
        NODES,
    )


def _suites() -> list[list[dict[str, Any]]]:
    pool = [d for d in _cluster() if d["kind"] in POLICY_KINDS]
    rng = random.Random(5)
    return [rng.sample(pool, SUITE_SIZE) for _ in range(SUITES)]


def _probes(state: lab.LabState) -> list[str]:
    """Every port a pod declares, by number and by name, plus one nothing declares."""
    specs = {f"{p['port']}/{p['protocol']}" for r in state.pods.values() for p in r.ports}
    names = {
        f"{p['name']}/{p['protocol']}" for r in state.pods.values() for p in r.ports if p["name"]
    }
    return sorted(specs) + sorted(names)[:3] + ["7777/TCP"]


def test_the_suites_cover_every_feature() -> None:
    text = json.dumps(_suites())
    missing = [name for name, marker in FEATURES.items() if marker not in text]
    assert not missing, f"the generated suites never use: {missing}"


@pytest.mark.root
@pytest.mark.parametrize("index", range(SUITES))
def test_generated_suite_kernel_equals_engine(calico_lab: lab.LabState, index: int) -> None:
    state = calico_lab
    state_dir = Path(state.state_dir)
    suite = _suites()[index]
    keep = {store_key(d) for d in suite}
    with open_store(state.datastore) as store:
        stale = [
            item.key
            for item in store.list()
            if (item.key.kind in POLICY_KINDS or item.key.kind.startswith("NetworkPolicy."))
            and item.key not in keep
        ]
        apply_documents(store, suite, deletes=stale)
    lab.wait_programmed(state, timeout=30)
    engine = PolicyEngine(Cluster.from_documents(lab.documents(state_dir)))
    assert not engine.cluster.problems, engine.cluster.problems
    specs = _probes(state)
    computed = matrix_json(
        reachability_matrix(engine, [parse_port_spec(s).probe for s in specs]), specs
    )
    mismatches: list[str] = []
    allowed_somewhere = denied_somewhere = False
    for spec, expected_probe in zip(specs, computed["probes"], strict=True):
        expected = off_diagonal(expected_probe["allowed"])
        allowed_somewhere |= any(expected.values())
        denied_somewhere |= not all(expected.values())
        deadline = time.monotonic() + RETRY
        while True:
            observed = off_diagonal(lab.probe([spec], state_dir)["probes"][0]["allowed"])
            wrong = sorted(k for k, v in expected.items() if observed.get(k) != v)
            if not wrong or time.monotonic() > deadline:
                break
        mismatches.extend(
            f"{spec} {s} -> {d}: engine {expected[(s, d)]}, kernel {observed[(s, d)]}"
            for s, d in wrong
        )
    assert not mismatches, "\n".join(mismatches[:40])
    assert allowed_somewhere and denied_somewhere  # a suite that decides nothing proves little
