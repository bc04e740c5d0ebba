"""The lab's pure parts (no root): pods from manifests, probe specs, the state file, the CLI
without a lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from palisade import lab
from palisade.cli import app
from palisade.policy import Cluster
from tests.lab.test_lab import MANIFESTS


def test_expanded_pods_are_the_engines_pods() -> None:
    daemon = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ops"},
        "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}}},
    }
    host = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "host", "namespace": "ops"},
        "spec": {"hostNetwork": True},
    }
    documents = [*MANIFESTS, daemon, host]
    pods = lab.expand_pods(documents)
    engine_pods = Cluster.from_documents(documents).pods
    assert sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods) == sorted(
        e.key for e in engine_pods
    )
    assert len(pods) == 7
    assert lab.container_ports(pods[0]) == [
        {"port": 8080, "protocol": "TCP", "name": "http"},
        {"port": 5353, "protocol": "UDP", "name": "dns"},
    ]
    # a Deployment whose pods are given is not expanded again
    assert len(lab.expand_pods([*MANIFESTS, *pods])) == len(pods)


def test_probe_specs() -> None:
    assert lab.parse_probe("80/TCP") == (80, "TCP")
    assert lab.parse_probe("dns/udp") == ("dns", "UDP")
    assert lab.parse_probe("8080") == (8080, "TCP")
    for bad in ("80/SCTP", "/TCP", "0/TCP", "70000"):
        with pytest.raises(lab.LabError):
            lab.parse_probe(bad)


def test_lab_ids_and_names() -> None:
    assert lab.lab_prefix("0") == "pal-l0-"
    for bad in ("", "a-b", "123456789", "ü"):
        with pytest.raises(lab.LabError):
            lab.check_lab_id(bad)


def test_state_round_trip(tmp_path: Path) -> None:
    state = lab.LabState("x", str(tmp_path), "sqlite:////x.db", nodes={"node-0": "pal-lx-node-0"})
    state.pods["a/b"] = lab.PodRecord("pal-lx-p0", "node-0", "10.244.0.1", [])
    state.processes.append(lab.ProcessRecord(1, 2, "agent", None, "node-0"))
    state.save()
    assert lab.LabState.load(tmp_path) == state
    (tmp_path / "state.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable lab state"):
        lab.LabState.load(tmp_path)


def test_without_a_lab(tmp_path: Path) -> None:
    assert lab.down(tmp_path / "none") == lab.DownReport()
    runner = CliRunner()
    where = ["--state-dir", str(tmp_path / "none")]
    for command in (
        ["status", *where],
        ["probe", *where, "--port", "80/TCP"],
        ["exec", *where, "a/b", "--", "true"],
    ):
        result = runner.invoke(app, ["lab", *command])
        assert result.exit_code == 1, result.output
        assert "no lab in" in result.output
    result = runner.invoke(app, ["lab", "down", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0 and "removed 0 namespace(s)" in result.output
