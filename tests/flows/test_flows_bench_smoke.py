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
    r"^input: the same as [\d,]+ Arrow IPC batches of [\d,]+ records \([\d,]+ MB, \d+ B/record\)"
    r"\s+[\d.]+ s",
    r"^\(a\) Arrow batches -> FlowStore.ingest_arrow, [\d,]+ records each, one transaction each"
    r" \(file store\)\s+[\d,]+ rec/s\s+median of 2: [\d.]+, [\d.]+ s, cpu [\d.]+ s",
    r"^\(a\) the same, \d+ batches per transaction \(the server.s group commit\)\s+[\d,]+ rec/s"
    r"\s+median of 2",
    r"^\(a\) Arrow batches over HTTP -> palisade server \(uvicorn, loopback\), \d+ senders"
    r" \(cpu: the server.s\)\s+[\d,]+ rec/s\s+median of 2",
    r"^\s+reference: DuckDB.s JSON reader alone \(every field, nothing stored\)\s+[\d,]+ rec/s",
    r"^\s+reference: pyarrow.json.read_json \(C\+\+, threads\), first [\d,]+ lines, nothing stored"
    r"\s+[\d,]+ rec/s",
    r"^\(a\) Calico JSON lines -> FlowStore.ingest_ndjson, one file \(file store\)\s+[\d,]+ rec/s"
    r"\s+median of 2",
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
