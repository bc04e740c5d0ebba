"""The upstream Kubernetes NetworkPolicy e2e cases: engine matrix == expected matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from palisade.policy import Cluster, PolicyEngine, Probe, protocol_number, reachability_matrix
from tests.shared_data import (
    conformance_cases,
    conformance_ips,
    conformance_step_documents,
    load_case,
)


@pytest.mark.parametrize("path", conformance_cases(), ids=lambda p: p.stem)
def test_conformance_case(path: Path) -> None:
    case = load_case(path)
    ips = conformance_ips(case)
    mismatches: list[str] = []
    for step in case["steps"]:
        documents = conformance_step_documents(case, step["index"], ips)
        cluster = Cluster.from_documents(documents)
        assert not cluster.problems, cluster.problems
        engine = PolicyEngine(cluster)
        for probe in step["probes"]:
            for port in (probe["port"], probe["port_name"]):
                matrix = reachability_matrix(
                    engine, [Probe(port, protocol_number(probe["protocol"]))]
                )
                got = matrix.as_dict(0)
                for src, row in probe["expected"].items():
                    for dst, expected in row.items():
                        if src == dst and case["ignore_loopback"]:
                            continue
                        if got[src][dst] != expected:
                            mismatches.append(
                                f"step {step['index']} {probe['protocol']}/{port} "
                                f"{src}->{dst}: expected {expected}, got {got[src][dst]}"
                            )
    assert not mismatches, "\n".join(mismatches[:40])
