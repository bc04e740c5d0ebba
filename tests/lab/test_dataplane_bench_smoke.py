"""``bench/dataplane_bench.py --quick`` runs every figure, prints it, and leaves nothing behind
(no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from palisade import lab
from palisade.dataplane.linux import list_netns

REPO = Path(__file__).resolve().parents[2]

EXPECTED_FIGURES = [
    r"^\(a\) initial programming, \d+ endpoints, \d+ policies\s+[\d.]+ s",
    r"^\(a\) kernel table: chains / rules / set elements\s+\d+ / \d+ / \d+\s+expected .*\(match\)",
    r"^\(b\) one policy change → rule in kernel, p50 / p99 \(\d+ changes\)\s+[\d.]+ / [\d.]+ ms",
    r"^\(c\) iperf3 cross-node \(VXLAN\): no policy / \d+ policies\s+[\d.]+ / [\d.]+ Gbit/s",
    r"^\(c\) throughput ratio cross-node \(VXLAN\)\s+[\d.]+ %",
    r"^\(c\) throughput ratio same node\s+[\d.]+ %",
    r"^\(d\) lab \d+ nodes × \d+ pods: up / down / memory\s+[\d.]+ s / [\d.]+ s / \d+ MB",
    r"^\(d\) largest lab up\s+\d+ × \d+ pods in [\d.]+ s",
]


@pytest.mark.root
def test_dataplane_bench_quick_prints_every_figure_and_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "tests marked 'root' need root (network namespaces, nftables); CI runs as root — "
            "run them with sudo, or deselect them with -m 'not root'",
            pytrace=False,
        )
    for tool in ("iperf3", "nft"):
        if not any(Path(d, tool).exists() for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")):
            pytest.fail(f"{tool} is missing: run `make system-deps`", pytrace=False)
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dataplane_bench.py"), "--quick"],
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
    # The bench's own namespaces (``pal-b<hex>…`` of (a) and (b), ``pal-l<lab id>-…`` of its
    # labs) are gone; other tests and labs may create namespaces meanwhile, so only these count.
    prefixes = re.findall(r"starting the agent in (pal-b[0-9a-f]+)", completed.stdout)
    lab_ids = re.findall(r"\(\w\) lab (b[0-9a-f]+):", completed.stdout)
    assert prefixes and len(lab_ids) >= 2, output
    prefixes += [lab.lab_prefix(lab_id) for lab_id in lab_ids]
    left = [name for prefix in prefixes for name in list_netns(prefix)]
    assert not left, f"the bench left namespaces behind: {left}\n{output}"
