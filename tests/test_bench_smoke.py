"""``bench/policy_bench.py --quick`` runs and prints every figure (no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED_FIGURES = [
    r"^cluster compile \(\d+ documents, \d+ policies\)\s+[\d.]+ s\s+\d+",
    r"^\(a\) selector evaluations \(\d+ selectors x \d+ pods\)\s+[\d,]+ evals/s\s+\d+",
    r"^\(b\) reachability matrix, TCP 8080 \(\d+x\d+, [\d.]+% allowed\)\s+[\d.]+ s\s+\d+\s+< 10 s",
    r"^flows_from_cluster \([\d,]+ flows\)\s+[\d.]+ s",
    r"^\(c\) batch verdicts \([\d,]+ flows in [\d.]+ s, [\d.]+% allowed\)\s+[\d,]+ flows/s",
    *(
        pattern.replace("GEN", generator)
        for generator in ("plain", "realistic")
        for pattern in (
            r"^\(d\) nca --connectivity, per pod pair \(\d+ ns, \d+ pods, \d+ policies, "
            r"generator: GEN\)\s+[\d.]+ s",
            r"^\(d\) nca --connectivity, default output \(firewall rules; GEN\)\s+[\d.]+ s",
            r"^\(d\) palisade load\+compile\+all-ports connectivity \(\d+ port classes; GEN\)"
            r"\s+[\d.]+ s",
            r"^\(d\) palisade, the same in a fresh interpreter \(start-up included; GEN\)"
            r"\s+[\d.]+ s",
            r"^\(d\) speed-up nca per pod pair / palisade \(GEN\)\s+[\d,.]+x",
            r"^\(d\) speed-up nca default output / palisade \(GEN\)\s+[\d,.]+x",
            r"^\(d\) speed-up nca per pod pair / palisade fresh interpreter \(GEN\)\s+[\d,.]+x",
        )
    ),
]


@pytest.mark.nca
def test_policy_bench_quick_prints_every_figure() -> None:
    environment = dict(os.environ)
    environment.setdefault("PALISADE_NCA", str(REPO / ".venv-nca" / "bin" / "nca"))
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "policy_bench.py"), "--quick"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for pattern in EXPECTED_FIGURES:
        assert re.search(pattern, completed.stdout, re.MULTILINE), f"{pattern!r} in\n{output}"
