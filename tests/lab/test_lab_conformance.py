"""Kernel equals engine equals expectation, on the upstream Kubernetes NetworkPolicy cases.

One lab of three nodes holds the cases' nine pods (``x/a`` … ``z/c``), spread round-robin so
each node has pods of every namespace and most pairs cross the VXLAN overlay (the rest stay on
one node). Every pod serves ports 80 and 81 over TCP and UDP. For each step of each case the
step's namespaces, pods (labels and container ports, as the case's model declares them) and
NetworkPolicies are applied to the lab's datastore in one transaction, with the case's
``${ns/pod.ip}`` placeholders replaced by the pods' real addresses, and every TCP and UDP probe
of the step is made for real from every pod to every pod. The observed matrix must equal the
expected matrix and the policy engine's matrix of the same documents (the diagonal, a pod to
itself, is left out as upstream leaves it out). Meanwhile every pod's client loop calls every
other pod on 80/TCP, so policies are created, updated and deleted under live traffic. A
mismatch is retried for a few seconds, as the upstream harness retries, since an agent reports
a revision programmed a moment before the last transaction is in the kernel at worst. SCTP
probes are not made: this kernel has no SCTP (the engine-level conformance test covers them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palisade import lab
from palisade.cli._policy import matrix_json
from palisade.datastore import open_store
from palisade.policy import Cluster, PolicyEngine, Probe, protocol_number, reachability_matrix
from palisade.resources import KUBERNETES_NETWORK_POLICY_KIND, apply_documents, store_key
from tests.lab.shared import module_lab, off_diagonal
from tests.shared_data import conformance_cases, conformance_step_documents, load_case

NODES = 3
RETRY = 8.0  # seconds a mismatching probe is retried
LAB_PROTOCOLS = ("TCP", "UDP")


def _lab_cases() -> list[Path]:
    """The cases with at least one probe the lab can make."""
    return [
        path
        for path in conformance_cases()
        if any(
            probe["protocol"] in LAB_PROTOCOLS
            for step in load_case(path)["steps"]
            for probe in step["probes"]
        )
    ]


def _manifests() -> list[dict[str, Any]]:
    ports = [
        {"name": f"serve-{port}-{protocol.lower()}", "containerPort": port, "protocol": protocol}
        for port in (80, 81)
        for protocol in LAB_PROTOCOLS
    ]
    documents: list[dict[str, Any]] = []
    pods = [f"{namespace}/{pod}" for namespace in ("x", "y", "z") for pod in ("a", "b", "c")]
    for namespace in ("x", "y", "z"):
        documents.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for pod in ("a", "b", "c"):
            # live traffic: every pod calls every other pod on 80/TCP while policies change
            calls = " ".join(f"{p}:80" for p in pods if p != f"{namespace}/{pod}")
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod,
                        "namespace": namespace,
                        "labels": {"pod": pod},
                        "annotations": {lab.TRAFFIC_ANNOTATION: calls},
                    },
                    "spec": {"containers": [{"name": "serve", "image": "echo", "ports": ports}]},
                }
            )
    return documents


@pytest.fixture(scope="module")
def conformance_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.LabState]:
    yield from module_lab(tmp_path_factory, "conformance-lab", _manifests(), NODES)


def _apply_step(state: lab.LabState, documents: list[dict[str, Any]]) -> None:
    """The step's documents in one transaction; NetworkPolicies not in the step deleted."""
    keep = {store_key(d) for d in documents}
    with open_store(state.datastore) as store:
        stale = [
            item.key
            for item in store.list(kind=KUBERNETES_NETWORK_POLICY_KIND)
            if item.key not in keep
        ]
        apply_documents(store, documents, deletes=stale)


@pytest.mark.root
def test_the_lab_spreads_the_pods_over_its_nodes(conformance_lab: lab.LabState) -> None:
    report = lab.status(Path(conformance_lab.state_dir))
    nodes = {pod["node"] for pod in report["pods"].values()}
    assert nodes == {f"node-{i}" for i in range(NODES)}
    assert all(agent["alive"] and agent["programmed"] for agent in report["agents"].values())


@pytest.mark.root
@pytest.mark.parametrize("path", _lab_cases(), ids=lambda p: p.stem)
def test_lab_matrix_equals_expected_and_engine(conformance_lab: lab.LabState, path: Path) -> None:
    state = conformance_lab
    state_dir = Path(state.state_dir)
    case = load_case(path)
    ips = {key: str(record.ip) for key, record in state.pods.items()}
    mismatches: list[str] = []
    for step in case["steps"]:
        documents = conformance_step_documents(case, step["index"], ips)
        _apply_step(state, documents)
        lab.wait_programmed(state, timeout=30)
        engine = PolicyEngine(Cluster.from_documents(lab.documents(state_dir)))
        for probe in step["probes"]:
            if probe["protocol"] not in LAB_PROTOCOLS:
                continue
            spec = f"{probe['port']}/{probe['protocol']}"
            expected = off_diagonal(probe["expected"])
            engine_matrix = matrix_json(
                reachability_matrix(
                    engine, [Probe(probe["port"], protocol_number(probe["protocol"]))]
                ),
                [spec],
            )
            assert off_diagonal(engine_matrix["probes"][0]["allowed"]) == expected, (
                f"step {step['index']} {spec}: the engine differs from the expectation"
            )
            deadline = time.monotonic() + RETRY
            while True:
                observed = off_diagonal(lab.probe([spec], state_dir)["probes"][0]["allowed"])
                wrong = sorted(k for k, v in expected.items() if observed.get(k) != v)
                if not wrong or time.monotonic() > deadline:
                    break
            mismatches.extend(
                f"step {step['index']} {spec} {s}->{d} ({state.pods[s].node}->"
                f"{state.pods[d].node}): expected {expected[(s, d)]}, kernel {observed[(s, d)]}"
                for s, d in wrong
            )
    assert not mismatches, "\n".join(mismatches[:40])


@pytest.mark.root
def test_traffic_flowed_throughout(conformance_lab: lab.LabState) -> None:
    """Runs after the cases (file order): the pods' client loops kept calling each other the
    whole time, so every policy change above happened under live traffic — some of it
    allowed, some denied by the policies of the moment."""
    rows = lab.traffic(Path(conformance_lab.state_dir), window=3600)
    assert len(rows) == 9 * 8
    assert sum(r["allowed"] for r in rows) > 0 and sum(r["denied"] for r in rows) > 0
