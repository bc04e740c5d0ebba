"""The WAF inline in the lab: a pod's HTTP port fronted by `palisade waf proxy` in the pod's
own network namespace (an nftables redirect there; clients still connect to POD_IP:PORT), over
two nodes. Attacks from another pod are blocked and become Security Events in the lab's
server with both workloads named; legitimate traffic — a pod's live HTTP client loop — flows;
the WebApplicationFirewall's mode changes live."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from palisade import lab
from palisade.datastore import open_store
from palisade.resources import apply_documents

FIREWALL: dict[str, Any] = {
    "apiVersion": "palisade.io/v1",
    "kind": "WebApplicationFirewall",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"selector": "app == 'web'", "mode": "On"},
}
DOCUMENTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": {lab.WAF_ANNOTATION: "http"},
        },
        "spec": {
            "nodeName": "node-0",
            "containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "client",
            "namespace": "shop",
            "labels": {"app": "client"},
            "annotations": {
                lab.TRAFFIC_ANNOTATION: "shop/web:http/HTTP",
                lab.INTERVAL_ANNOTATION: "0.5",
            },
        },
        "spec": {"nodeName": "node-1", "containers": [{"name": "client"}]},
    },
    FIREWALL,
]

REQUEST = """
import sys
from palisade.lab._client import http_get
ip, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(http_get(ip, port, path, "web.shop"))
"""


@pytest.fixture(scope="module")
def waf_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.LabState]:
    if sys.platform != "linux":
        pytest.fail("the lab runs on Linux")
    directory = tmp_path_factory.mktemp("waflab")
    import yaml

    (directory / "manifests.yaml").write_text(yaml.safe_dump_all(DOCUMENTS, sort_keys=False))
    state_dir = directory / "state"
    try:
        yield lab.up(
            [directory / "manifests.yaml"],
            state_dir=state_dir,
            lab_id=f"w{time.time_ns() % 100000}",
            nodes=2,
            timeout=90,
            server=True,
        )
    finally:
        lab.down(state_dir)


def _get(state: lab.LabState, path: str) -> int:
    web = state.pods["shop/web"]
    argv = lab.exec_command(
        "shop/client",
        [sys.executable, "-c", REQUEST, str(web.ip), "8080", path],
        Path(state.state_dir),
    )
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    return int(completed.stdout.strip())


def _events(state: lab.LabState, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(f"{state.server}/api/v1/events", params={"type": "waf"}).json()
        if len(found["events"]) >= count:
            return list(found["events"])
        assert time.monotonic() < deadline, f"{len(found['events'])} event(s) arrived"
        time.sleep(0.3)


def test_attacks_are_blocked_inline_and_reported(waf_lab: lab.LabState) -> None:
    assert _get(waf_lab, "/products?page=2") == 200
    attacks = [
        "/search?q=1%27%20union%20select%20password%20from%20users--",
        "/download?file=../../../../etc/passwd",
        "/comment?text=%3Cscript%3Ealert(document.cookie)%3C/script%3E",
    ]
    assert [_get(waf_lab, path) for path in attacks] == [403, 403, 403]
    events = _events(waf_lab, 3)
    vectors = {e["attack_vector"] for e in events}
    assert {"SQL injection", "cross-site scripting"} <= vectors
    assert any("path traversal" in v or "file inclusion" in v for v in vectors), vectors
    for event in events:
        assert (event["source_namespace"], event["source_name"]) == ("shop", "client")
        assert (event["dest_namespace"], event["dest_name"]) == ("shop", "web")
        assert event["source_ip"] == waf_lab.pods["shop/client"].ip
        assert event["record"]["verdict"] == "blocked"
        assert event["mitre_ids"] == ["T1190"]
    # the live client loop's legitimate requests pass the WAF (and reach the workload)
    rows = lab.traffic(Path(waf_lab.state_dir), window=5.0)
    http = [r for r in rows if r["to"].endswith("/HTTP")]
    assert http and sum(r["allowed"] for r in http) > 0 and sum(r["denied"] for r in http) == 0
    local_log = Path(waf_lab.state_dir).glob("waf-events-*.jsonl")
    assert sum(len(p.read_text().splitlines()) for p in local_log) >= 3


def test_the_mode_changes_live(waf_lab: lab.LabState) -> None:
    detection = {**FIREWALL, "spec": {**FIREWALL["spec"], "mode": "DetectionOnly"}}
    attack = "/search?q=1%27%20or%20%271%27=%271"
    with open_store(waf_lab.datastore) as store:
        apply_documents(store, [detection])
        deadline = time.monotonic() + 30
        while _get(waf_lab, attack) != 200:
            assert time.monotonic() < deadline, "DetectionOnly never applied"
            time.sleep(0.3)
        apply_documents(store, [FIREWALL])
        deadline = time.monotonic() + 30
        while _get(waf_lab, attack) != 403:
            assert time.monotonic() < deadline, "On never applied again"
            time.sleep(0.3)
    # the proxy ships events in the background: wait for the detected one (the blocked
    # events of the other test may be there already)
    deadline = time.monotonic() + 30
    while not [e for e in _events(waf_lab, 1) if e["record"]["verdict"] == "detected"]:
        assert time.monotonic() < deadline, "a detected (not blocked) request is an event too"
        time.sleep(0.3)
