"""``bench/waf_bench.py --quick`` runs end to end — Palisade's proxy with the CRS and the
reference nginx + libmodsecurity3 from ../shared/bench/waf-baseline — and prints every figure
(no timing assertions: figures are for the closing notes, medians of full runs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIGURE = r"\s+[\d,.]+\s+[\d.]+ ms\s+[\d.]+ ms\s+\d+"


def test_waf_bench_quick_prints_both_sides() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "waf_bench.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert re.search(r"SQLi GET .*403 ok", output), output[-4000:]
    assert re.search(r"benign 2 KB form POST\s+200 ok", output), output[-4000:]
    for scenario in ("get", "post"):
        block = re.search(
            rf"^{scenario}\s+Palisade proxy{FIGURE}\n\s+nginx\+libmodsecurity3{FIGURE}\n"
            rf"\s+ratio Palisade/ref\s+[\d.]+×",
            completed.stdout,
            re.MULTILINE,
        )
        assert block, f"{scenario} figures missing in\n{completed.stdout[-3000:]}"
