"""``bench/flow_collection_bench.py --quick`` runs, prints every figure, and leaves no lab
behind (no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from palisade.dataplane.linux import list_netns

REPO = Path(__file__).resolve().parents[2]

EXPECTED_FIGURES = [
    r"^\(d\) flow collection at [\d,]+ new connections/s \(1 x 5 s\):",
    r"^\s+agent CPU with collection\s+[\d.]+ % of one core \(median\)",
    r"^\s+agent CPU without\s+[\d.]+ %",
    r"^\s+cost of collection\s+-?[\d.]+ % of one core",
    r"^\s+records written per round\s+[\d,]+",
]


@pytest.mark.root
def test_flow_collection_bench_quick_prints_every_figure() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "tests marked 'root' need root (network namespaces, nftables); CI runs as root — "
            "run them with sudo, or deselect them with -m 'not root'",
            pytrace=False,
        )
    before = set(list_netns("pal-lf"))
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "flow_collection_bench.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for pattern in EXPECTED_FIGURES:
        assert re.search(pattern, completed.stdout, re.MULTILINE), f"{pattern!r} in\n{output}"
    records = int(
        re.findall(r"records written per round\s+([\d,]+)", completed.stdout)[0].replace(",", "")
    )
    assert records > 0, output  # collection on wrote flow records
    left = set(list_netns("pal-lf")) - before  # the bench's labs are ``f<hex>``
    assert not left, f"the bench left namespaces behind: {left}\n{output}"
