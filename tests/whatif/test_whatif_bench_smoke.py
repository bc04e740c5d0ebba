"""``bench/whatif_bench.py --quick`` runs and prints every figure (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

EXPECTED_FIGURES = [
    r"^flow columns \([\d,]+ records, [\d,]+ endpoint references\)\s+[\d.]+ s",
    *(
        rf"^\(c\) what-if replay, {mode} \([\d,]+ flows\)\s+[\d.]+ s\s+[\d,]+ flows/s"
        r"\s+target < 10 s\s+\[[\d,]+ distinct flows"
        for mode in ("staged", "proposed")
    ),
]


def test_whatif_bench_quick_prints_every_figure() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "whatif_bench.py"), "--quick"],
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
