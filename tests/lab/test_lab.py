"""The lab, for real: namespaces, the CNI plugin, an agent, echo servers and probes.

Kernel equals engine: the lab's probe matrix (real TCP connects and UDP echoes) equals the
policy engine's reachability matrix on the same manifests, before and after a policy is
applied to the lab's datastore with ``palisade apply``. And ``down`` leaves nothing of the
lab behind: after a clean run, after an ``up`` that failed half-way, and after an ``up``
process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from palisade import lab
from palisade.cli import app
from palisade.cli._policy import matrix_json
from palisade.dataplane.linux import list_netns
from palisade.lab._lab import pod_key
from palisade.policy import Cluster, PolicyEngine, Probe, reachability_matrix
from tests.lab.conftest import LabPlace

PALISADE = Path(sys.executable).parent / "palisade"
PROBES = ["8080/TCP", "5353/UDP"]
CONVERGE = 20.0  # seconds the kernel may take to match the engine (a probe round is ~1-2 s)


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _deployment(namespace: str, app: str, replicas: int = 2) -> dict[str, Any]:
    ports = [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "main", "image": "echo", "ports": ports}]},
            },
        },
    }


DB_FROM_FRONT: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db-from-front", "namespace": "back"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "front"}}}
                ],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }
        ],
    },
}
OPS_EGRESS_TCP_ONLY: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "egress-tcp-only", "namespace": "ops"},
    "spec": {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "TCP"}]}],
    },
}
FRONT_DENY_INGRESS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "default-deny-ingress", "namespace": "front"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
MANIFESTS = [
    *(_namespace(name) for name in ("front", "back", "ops")),
    _deployment("front", "web"),
    _deployment("back", "db"),
    _deployment("ops", "tool"),
    DB_FROM_FRONT,
    OPS_EGRESS_TCP_ONLY,
]


def _write(directory: Path, documents: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifests.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return directory


def _engine_matrix(documents: list[dict[str, Any]]) -> dict[str, Any]:
    engine = PolicyEngine(Cluster.from_documents(documents))
    probes = [Probe(int(spec.split("/")[0]), {"TCP": 6, "UDP": 17}[spec[-3:]]) for spec in PROBES]
    return matrix_json(reachability_matrix(engine, probes), PROBES)


def _off_diagonal(matrix: dict[str, Any]) -> dict[tuple[str, str, str, str], bool]:
    """(port, protocol, from, to) → allowed for every pair of distinct pods."""
    return {
        (probe["port"], probe["protocol"], source, destination): allowed
        for probe in matrix["probes"]
        for source, row in probe["allowed"].items()
        for destination, allowed in row.items()
        if source != destination
    }


def _converge(place: LabPlace, documents: list[dict[str, Any]]) -> dict[tuple[str, ...], bool]:
    """Probe until the lab's matrix equals the engine's for ``documents`` (bounded)."""
    expected = _off_diagonal(_engine_matrix(documents))
    deadline = time.monotonic() + CONVERGE
    while True:
        observed = _off_diagonal(lab.probe(PROBES, place.state_dir))
        if observed == expected:
            return dict(observed)
        wrong = {k: v for k, v in observed.items() if expected.get(k) != v}
        assert observed.keys() == expected.keys()
        assert time.monotonic() < deadline, f"the kernel differs from the engine: {wrong}"


def _lab_processes(state_dir: Path) -> list[int]:
    """Processes whose command line names the lab's state directory (its agents) or that run
    in a namespace of the lab."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in command and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def _assert_gone(place: LabPlace, state: lab.LabState | None) -> None:
    assert list_netns(place.prefix) == []
    assert _lab_processes(place.state_dir) == []
    for record in state.processes if state else ():
        assert _start_time(record.pid) != record.start_time, record
    assert not (place.state_dir / "state.json").exists()


def _start_time(pid: int) -> int | None:
    """The process's start time; None if it is gone (or a zombie not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


@pytest.mark.root
def test_probe_matrix_equals_engine_and_follows_an_applied_policy(
    lab_place: LabPlace, tmp_path: Path
) -> None:
    manifests = _write(tmp_path / "manifests", MANIFESTS)
    state = lab.up([manifests], state_dir=lab_place.state_dir, lab_id=lab_place.lab_id, timeout=30)
    report = lab.status(lab_place.state_dir)
    assert set(report["pods"]) == {
        f"{ns}/{app}-{i}"
        for ns, app in (("front", "web"), ("back", "db"), ("ops", "tool"))
        for i in (0, 1)
    }
    assert all(
        pod["ip"].startswith("10.244.") and pod["node"] == "node-0"
        for pod in report["pods"].values()
    )
    assert report["agents"]["node-0"]["alive"] and report["agents"]["node-0"]["programmed"]
    assert all(name.startswith(lab_place.prefix) for name in state.netns)

    # the command line sees the same lab
    listed = CliRunner().invoke(
        app, ["lab", "status", "--format", "json", "--state-dir", str(lab_place.state_dir)]
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["pods"]["back/db-1"] == {
        k: v for k, v in report["pods"]["back/db-1"].items()
    }
    inside = subprocess.run(
        lab.exec_command(
            "front/web-0", ["ip", "-4", "-o", "addr", "show", "eth0"], lab_place.state_dir
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f"inet {report['pods']['front/web-0']['ip']}/32" in inside.stdout

    # the engine sees the same on what the lab stored (pods with their real addresses)
    assert _off_diagonal(_engine_matrix(lab.documents(lab_place.state_dir))) == _off_diagonal(
        _engine_matrix(MANIFESTS)
    )
    observed = _converge(lab_place, MANIFESTS)
    assert len(set(observed.values())) == 2  # some pairs allowed, some denied
    assert not observed[("5353", "UDP", "ops/tool-0", "front/web-0")]  # egress: TCP only
    assert observed[("8080", "TCP", "ops/tool-0", "front/web-0")]
    assert observed[("8080", "TCP", "front/web-1", "back/db-0")]
    assert not observed[("8080", "TCP", "ops/tool-1", "back/db-1")]

    # a policy applied with `palisade apply` to the lab's datastore is enforced
    _write(tmp_path / "change", [FRONT_DENY_INGRESS])
    applied = subprocess.run(
        [str(PALISADE), "apply", "-f", str(tmp_path / "change")],
        env={**os.environ, "PALISADE_DATASTORE": state.datastore},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    lab.wait_programmed(state, timeout=20)
    changed = _converge(lab_place, [*MANIFESTS, FRONT_DENY_INGRESS])
    assert not changed[("8080", "TCP", "back/db-0", "front/web-0")]
    assert not changed[("8080", "TCP", "front/web-1", "front/web-0")]

    # Re-applying a Pod manifest with other labels, without --datastore while the lab is up,
    # relabels the running pod (its address stays) and policy follows the new labels: db-0
    # leaves db-from-front's selection, so nothing isolates it any more.
    relabelled = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "back", "labels": {"app": "db-old"}},
        "spec": {"containers": [{"name": "main", "image": "echo"}]},
    }
    _write(tmp_path / "relabel", [relabelled])
    environment = {k: v for k, v in os.environ.items() if k != "PALISADE_DATASTORE"}
    applied = subprocess.run(
        [str(PALISADE), "apply", "-f", str(tmp_path / "relabel")],
        env={**environment, "PALISADE_LAB_DIR": str(lab_place.state_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    lab.wait_programmed(state, timeout=20)
    stored = {pod_key(d): d for d in lab.documents(lab_place.state_dir) if d["kind"] == "Pod"}
    assert stored["back/db-0"]["status"]["podIP"] == report["pods"]["back/db-0"]["ip"]
    assert stored["back/db-0"]["metadata"]["labels"] == {"app": "db-old"}
    relabelled_view = _converge(lab_place, lab.documents(lab_place.state_dir))
    assert relabelled_view[("8080", "TCP", "ops/tool-1", "back/db-0")]
    assert not relabelled_view[("8080", "TCP", "ops/tool-1", "back/db-1")]

    removed = lab.down(lab_place.state_dir)
    assert len(removed.namespaces) == 8  # a node, the underlay, six pods
    _assert_gone(lab_place, state)
    assert lab.down(lab_place.state_dir) == lab.DownReport()  # idempotent


@pytest.mark.root
def test_down_cleans_up_after_an_up_that_failed_half_way(
    lab_place: LabPlace, tmp_path: Path
) -> None:
    manifests = _write(tmp_path / "manifests", MANIFESTS)
    attached: list[str] = []

    def hook(pod: str) -> None:
        attached.append(pod)
        if len(attached) == 3:
            raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test"):
        lab.up([manifests], state_dir=lab_place.state_dir, lab_id=lab_place.lab_id, on_pod=hook)
    state = lab.LabState.load(lab_place.state_dir)
    assert state is not None and state.phase == "creating"
    assert len(list_netns(lab_place.prefix)) >= 4  # the node and at least three pods
    assert _lab_processes(lab_place.state_dir)  # the agent is running
    lab.down(lab_place.state_dir)
    _assert_gone(lab_place, state)


@pytest.mark.root
def test_down_cleans_up_after_a_killed_lab_up_process(lab_place: LabPlace, tmp_path: Path) -> None:
    manifests = _write(tmp_path / "manifests", MANIFESTS)
    command = [str(PALISADE), "lab", "up", "-f", str(manifests), "--id", lab_place.lab_id]
    process = subprocess.Popen(
        [*command, "--state-dir", str(lab_place.state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = lab_place.state_dir / "state.json"
    deadline = time.monotonic() + 30
    try:
        while True:  # kill it once a few pods are serving
            assert process.poll() is None, "lab up ended before it could be killed"
            assert time.monotonic() < deadline, "lab up made no progress"
            try:
                recorded = json.loads(state_file.read_text())
            except (OSError, ValueError):
                recorded = {}
            servers = [p for p in recorded.get("processes", ()) if p["role"] == "server"]
            if len(servers) >= 2:
                break
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    state = lab.LabState.load(lab_place.state_dir)
    assert state is not None and state.phase == "creating"
    lab.down(lab_place.state_dir)
    _assert_gone(lab_place, state)


@pytest.mark.root
def test_lab_up_in_the_foreground_goes_down_on_ctrl_c(lab_place: LabPlace, tmp_path: Path) -> None:
    manifests = _write(tmp_path / "manifests", MANIFESTS[:4])
    where = ["--id", lab_place.lab_id, "--state-dir", str(lab_place.state_dir)]
    process = subprocess.Popen(
        [str(PALISADE), "lab", "up", "-f", str(manifests), *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[1].startswith("export PALISADE_DATASTORE=sqlite:///"), lines
        assert len(list_netns(lab_place.prefix)) == 4  # the node, the underlay and two pods
        state = lab.LabState.load(lab_place.state_dir)
        assert state is not None and state.phase == "up"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    _assert_gone(lab_place, state)
