"""The lab as the demo runs it: several nodes, live traffic, commands from manifests.

``palisade demo --lab --detach`` builds the demo application over three nodes and must report
the kernel's real matrix equal to the engine's, with live traffic in which the compromised pod's
lateral movement is denied and the application's own calls are allowed. A pod can also run a
command its manifest gives instead of the echo server, and another pod's client loop reaches it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade import lab
from tests.lab.conftest import LabPlace

PALISADE = Path(sys.executable).parent / "palisade"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _rows(place: LabPlace, window: float = 30.0) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["from"], r["to"]): r for r in lab.traffic(place.state_dir, window)}


@pytest.mark.root
def test_demo_in_the_lab_kernel_equals_engine_with_live_traffic(lab_place: LabPlace) -> None:
    where = ["--id", lab_place.lab_id, "--state-dir", str(lab_place.state_dir)]
    completed = subprocess.run(
        [str(PALISADE), "demo", str(EXAMPLES), "--lab", "--detach", *where],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout
    assert "kernel == engine on all 216 pairs of distinct pods" in output, output[-3000:]
    assert "explain api/legacy-batch → data/redis-0 6379/TCP" in output
    # the kernel's flow logs, in the lab's flow store: the lateral movement, denied by quarantine
    assert "flow logs (from the kernel, in the flow store)" in output
    assert "security|gnp:quarantine" in output
    report = lab.status(lab_place.state_dir)
    assert report["server"] and f"console: {report['server']}/" in output

    assert {pod["node"] for pod in report["pods"].values()} == {"node-0", "node-1", "node-2"}
    rows = _rows(lab_place)
    lateral = {k: r for k, r in rows.items() if k[0] == "api/legacy-batch"}
    assert len(lateral) == 7  # every target of the compromised pod, each denied every time
    assert all(r["denied"] > 0 and r["allowed"] == 0 for r in lateral.values())
    assert rows[("storefront/web-0", "api/orders-0:8080/HTTP")]["allowed"] > 0  # via the WAF
    assert rows[("storefront/web-0", "api/orders-0:8080/HTTP")]["denied"] == 0
    # the WAF inline in front of api/orders-0: attacks blocked, reported as Security Events
    assert "WAF inline in front of api/orders-0" in output
    for attack in ("SQL injection", "cross-site scripting", "path traversal", "Log4Shell header"):
        line = next(line for line in output.splitlines() if line.startswith(f"│ {attack} "))
        assert "403 blocked" in line, line
    assert "Security Events:" in output and "T1190" in output
    assert "storefront/web-0" in output.split("Security Events:", 1)[1]
    assert rows[("api/orders-0", "data/postgres-0:5432/TCP")]["denied"] == 0


@pytest.mark.root
def test_a_pod_runs_its_manifests_command_and_another_pod_calls_it(
    lab_place: LabPlace, tmp_path: Path
) -> None:
    server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web-sa",  # declared nowhere, like the namespace
            "containers": [
                {
                    "name": "http",
                    "command": [sys.executable, "-m", "http.server"],
                    "args": ["8000", "--bind", "0.0.0.0"],
                    "ports": [{"name": "http", "containerPort": 8000}],
                },
                {"name": "echo", "ports": [{"containerPort": 7000, "protocol": "UDP"}]},
            ],
        },
    }
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "client",
            "namespace": "default",
            "annotations": {
                lab.TRAFFIC_ANNOTATION: "default/web:7000/UDP",
                lab.INTERVAL_ANNOTATION: "0.2",
            },
        },
        "spec": {"containers": [{"name": "c"}]},
    }
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all([server, client]))
    lab.up([tmp_path], state_dir=lab_place.state_dir, lab_id=lab_place.lab_id, nodes=2)
    stored = {(d["kind"], d["metadata"]["name"]) for d in lab.documents(lab_place.state_dir)}
    assert {("Namespace", "default"), ("ServiceAccount", "web-sa")} <= stored
    roles = {(p.role, p.owner) for p in lab.require(lab_place.state_dir).processes}
    assert {("command", "default/web"), ("server", "default/web")} <= roles
    assert ("client", "default/client") in roles
    fetched = subprocess.run(
        lab.exec_command(
            "default/client",
            [
                sys.executable,
                "-c",
                _FETCH.format(ip=lab.status(lab_place.state_dir)["pods"]["default/web"]["ip"]),
            ],
            lab_place.state_dir,
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert fetched.returncode == 0 and fetched.stdout.strip() == "200", fetched.stderr
    deadline = time.monotonic() + 10
    while not _rows(lab_place).get(("default/client", "default/web:7000/UDP"), {}).get("allowed"):
        assert time.monotonic() < deadline, lab.traffic(lab_place.state_dir, 30)
        time.sleep(0.2)


_FETCH = (
    "import urllib.request; print(urllib.request.urlopen('http://{ip}:8000/', timeout=5).status)"
)
