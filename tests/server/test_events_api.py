"""Security events through the server: batches validated whole, queries, triage, an exclusion
written from an event into the workload's WebApplicationFirewall, and `palisade events`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from palisade.server import ServerConfig, create_app
from tests.server.conftest import PALISADE, ServerProcess

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "frontend-0", "namespace": "shop", "labels": {"app": "frontend"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}
FIREWALL = {
    "apiVersion": "palisade.io/v1",
    "kind": "WebApplicationFirewall",
    "metadata": {"name": "frontend", "namespace": "shop"},
    "spec": {"selector": "app == 'frontend'", "mode": "On"},
}


def waf_event(index: int, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "id": f"ev-{index}",
        "type": "waf",
        "time": 1_700_000_000.0 + index,
        "description": f"WAF blocked SQL injection #{index}",
        "severity": 90,
        "origin": "waf",
        "source_ip": "10.244.1.5",
        "dest_namespace": "shop",
        "dest_name": "frontend-0",
        "attack_vector": "SQL injection",
        "mitre_ids": ["T1190"],
        "mitre_tactic": "Initial Access",
        "record": {
            "request_line": "GET /search?q=1%27+or+1=1 HTTP/1.1",
            "rules": [
                {"id": 942100, "tags": ["attack-sqli"], "msg": "SQLi", "data": "x"},
                {"id": 949110, "tags": ["anomaly-evaluation"], "msg": "score", "data": ""},
            ],
            "rule_ids": [942100, 949110],
        },
    }
    event.update(changes)
    return event


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = ServerConfig(
        datastore=f"sqlite:///{tmp_path / 'store.db'}", flow_store=str(tmp_path / "flows.duckdb")
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client
    assert (tmp_path / "palisade-events.db").exists()  # beside the flow store


def test_batches_are_validated_whole_and_retries_add_nothing(client: TestClient) -> None:
    bad = [waf_event(1), waf_event(2, severity=500), waf_event(3, type="nope")]
    answer = client.post("/api/v1/events", json=bad)
    assert answer.status_code == 422
    problems = answer.json()["problems"]
    assert problems[0].startswith("events[1]: severity: ")
    assert problems[1].startswith("events[2]: type: ")
    assert client.get("/api/v1/events").json()["events"] == []
    assert client.post("/api/v1/events", content=b"{not json").status_code == 422

    batch = [waf_event(i, dest_name="frontend-0" if i % 2 else "api-0") for i in range(6)]
    assert client.post("/api/v1/events", json=batch).json() == {"stored": 6, "duplicate": 0}
    assert client.post("/api/v1/events", json={"events": batch[:2]}).json() == {
        "stored": 0,
        "duplicate": 2,
    }
    listed = client.get("/api/v1/events", params={"workload": "frontend-0"}).json()["events"]
    assert [e["id"] for e in listed] == ["ev-5", "ev-3", "ev-1"]
    assert listed[0]["acknowledged"] is False and listed[0]["mitre_ids"] == ["T1190"]
    assert client.get("/api/v1/events", params={"type": "ddos"}).json()["events"] == []
    window = client.get("/api/v1/events", params={"window": "1h"}).json()["events"]
    assert window == []  # all of them are from 2023
    assert client.get("/api/v1/events/ev-4").json()["dest_name"] == "api-0"
    assert client.get("/api/v1/events/missing").status_code == 404


def test_triage(client: TestClient) -> None:
    client.post("/api/v1/events", json=[waf_event(1), waf_event(2)])
    assert client.post("/api/v1/events/ev-1/acknowledge").json()["acknowledged"] is True
    assert client.post("/api/v1/events/ev-1/acknowledge?undo=true").json()["acknowledged"] is False
    assert client.post("/api/v1/events/ev-2/dismiss").json()["dismissed"] is True
    assert [e["id"] for e in client.get("/api/v1/events").json()["events"]] == ["ev-1"]
    every = client.get("/api/v1/events", params={"include_dismissed": True}).json()["events"]
    assert [e["id"] for e in every] == ["ev-2", "ev-1"]
    assert client.post("/api/v1/events/nope/dismiss").status_code == 404


def test_exclusion_from_an_event(client: TestClient) -> None:
    client.post("/api/v1/events", json=[waf_event(1), waf_event(2, dest_name="ghost")])
    # No firewall protects the pod yet: nothing to add the exclusion to.
    applied = client.post(
        "/api/v1/apply", content=yaml.safe_dump_all([POD]), headers={"Content-Type": "x-yaml"}
    )
    assert applied.status_code == 200, applied.text
    conflict = client.post("/api/v1/events/ev-1/exclusion")
    assert conflict.status_code == 409 and "no WebApplicationFirewall" in conflict.text
    client.post(
        "/api/v1/apply", content=yaml.safe_dump_all([FIREWALL]), headers={"Content-Type": "yaml"}
    )
    assert client.post("/api/v1/events/ev-2/exclusion").status_code == 409  # unknown pod
    assert client.post("/api/v1/events/ev-1/exclusion?scope=everywhere").status_code == 422

    answer = client.post("/api/v1/events/ev-1/exclusion")
    assert answer.status_code == 200, answer.text
    stored = client.get("/api/v1/resources/WebApplicationFirewall/shop/frontend").json()
    (exclusion,) = stored["spec"]["exclusions"]
    assert exclusion["ruleIds"] == ["942100"]  # the attack rule, not the score's
    assert exclusion["paths"] == ["/search"]
    assert "ev-1" in exclusion["reason"]
    assert stored["spec"]["mode"] == "On"  # the rest of the resource is kept
    assert client.get("/api/v1/events/ev-1").json()["acknowledged"] is True
    # The same exclusion again changes nothing; a workload-wide one for chosen rules is added.
    client.post("/api/v1/events/ev-1/exclusion")
    client.post("/api/v1/events/ev-1/exclusion?scope=workload", json={"rule_ids": [942200]})
    stored = client.get("/api/v1/resources/WebApplicationFirewall/shop/frontend").json()
    assert [e.get("paths", []) for e in stored["spec"]["exclusions"]] == [["/search"], []]
    assert stored["spec"]["exclusions"][1]["ruleIds"] == ["942200"]


def test_events_command(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start()
    try:
        httpx.post(
            f"{server.url}/api/v1/events", json=[waf_event(1), waf_event(2)]
        ).raise_for_status()

        def palisade(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(PALISADE), *args, "--server", server.url],
                capture_output=True,
                text=True,
                timeout=60,
            )

        listed = palisade("events", "--type", "waf", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert [e["id"] for e in json.loads(listed.stdout)] == ["ev-2", "ev-1"]
        table = palisade("events")
        assert "ev-2" in table.stdout and "T1190" in table.stdout
        assert palisade("events", "ack", "ev-2").returncode == 0
        assert palisade("events", "dismiss", "ev-1").returncode == 0
        after = json.loads(palisade("events", "--format", "json").stdout)
        assert [(e["id"], e["acknowledged"]) for e in after] == [("ev-2", True)]
        missing = palisade("events", "ack", "nope")
        assert missing.returncode == 1 and "404" in missing.stderr + missing.stdout
        assert palisade("events", "--since", "soon").returncode == 2
    finally:
        server.stop()
