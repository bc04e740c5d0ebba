"""The lab's pure parts (no root): pods from manifests, probe specs, the state file, the CLI
without a lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _pod(
    name: str, annotations: dict[str, str], containers: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
        "spec": {"containers": containers},
    }


def test_traffic_annotations_commands_and_served_ports() -> None:
    http = {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    dns = {"name": "dns", "containerPort": 53, "protocol": "UDP"}
    web = _pod(
        "web",
        {lab.TRAFFIC_ANNOTATION: "shop/api:http, shop/api:53/UDP  shop/db-0:9000"},
        [{"name": "web", "ports": [http]}],
    )
    api = _pod("api", {}, [{"name": "a", "command": ["python3"], "args": ["-V"], "ports": [http]}])
    api["spec"]["containers"].append({"name": "dns", "ports": [dns]})
    db = _pod("db-0", {lab.INTERVAL_ANNOTATION: "0.5"}, [{"name": "db", "ports": []}])
    assert lab.pod_traffic(web) == (["shop/api:http", "shop/api:53/UDP", "shop/db-0:9000"], 1.0)
    assert lab.pod_traffic(db) == ([], 0.5)
    assert lab.container_commands(api) == [["python3", "-V"]]
    assert lab.container_ports(api, served=True) == [{"port": 53, "protocol": "UDP", "name": "dns"}]
    assert len(lab.container_ports(api)) == 2

    state = lab.LabState("x", "/nonexistent", "sqlite://:memory:")
    for pod, ip in ((web, "10.0.0.1"), (api, "10.0.0.2"), (db, "10.0.0.3")):
        targets, interval = lab.pod_traffic(pod)
        key = f"shop/{pod['metadata']['name']}"
        state.pods[key] = lab.PodRecord("n", "node-0", ip, lab.container_ports(pod), [], targets)
    # a workload name reaches each of its pods NAME-<i>; a port name resolves per pod
    assert lab.resolve_traffic(state, "shop/web") == [
        {"name": "shop/api:8080/TCP", "ip": "10.0.0.2", "port": 8080, "protocol": "TCP"},
        {"name": "shop/api:53/UDP", "ip": "10.0.0.2", "port": 53, "protocol": "UDP"},
        {"name": "shop/db-0:9000/TCP", "ip": "10.0.0.3", "port": 9000, "protocol": "TCP"},
    ]
    state.pods["shop/web"].traffic = ["shop/db:9000"]
    assert [t["name"] for t in lab.resolve_traffic(state, "shop/web")] == ["shop/db-0:9000/TCP"]

    for bad, reason in (
        ("shop/nope:80", "names no pod of the lab"),
        ("shop/db-0:http", "declares no TCP port 'http'"),
        ("db-0:80", "expected NS/NAME:PORT"),
        ("shop/db-0:80/SCTP", "expected NS/NAME:PORT"),
    ):
        state.pods["shop/web"].traffic = [bad]
        with pytest.raises(lab.LabError, match=reason):
            lab.resolve_traffic(state, "shop/web")
    for interval in ("0", "fast", "7200"):
        with pytest.raises(lab.LabError, match=r"0\.05 to 3600 seconds"):
            lab.pod_traffic(_pod("p", {lab.INTERVAL_ANNOTATION: interval}, []))
