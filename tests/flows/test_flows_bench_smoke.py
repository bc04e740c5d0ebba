"""``bench/flows_bench.py --quick`` runs and prints every figure (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

EXPECTED_FIGURES = [
    r"^input: [\d,]+ Calico records from [\d,]+ templates \([\d,]+ MB NDJSON, \d+ B/record\)"
    r"\s+[\d.]+ s",
    r"^\s+reference: DuckDB.s JSON reader alone \(every field, nothing stored\)\s+[\d,]+ rec/s",
    r"^\(a\) ingest_ndjson, [\d,]+ records \(file store\)\s+[\d,]+ rec/s\s+[\d.]+ s",
    r"^\(b\) service graph, namespace view \(\d+ nodes, \d+ edges\), median of \d+\s+[\d.]+ s",
    r"^\s+the same with one namespace expanded \(\d+ edges\)\s+[\d.]+ s",
    r"^\s+the same over a one-hour window\s+[\d.]+ s",
    r"^\s+top_talkers\(by=workload\) over everything\s+[\d.]+ s",
    r"^\s+denied\(\) over everything\s+[\d.]+ s",
]


def test_flows_bench_quick_prints_every_figure() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "flows_bench.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for pattern in EXPECTED_FIGURES:
        assert re.search(pattern, completed.stdout, re.MULTILINE), f"{pattern!r} in\n{output}"
