"""The WAF service around the proxy: settings followed from a real SQLite datastore, and
Security Events shipped to a real `palisade server` (retried while it is away)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from palisade.datastore import open_store
from palisade.events import SecurityEvent
from palisade.model import WebApplicationFirewallSpec
from palisade.resources import apply_documents
from palisade.waf._service import EventShipper, FirewallSettings, event_hook, json_lines_sink
from tests.events.test_events import Match as _Match
from tests.server.conftest import ServerProcess


def _pod(labels: dict[str, str], name: str = "frontend-0", ip: str = "10.244.0.5") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        "status": {"podIP": ip},
    }


def _firewall(mode: str, selector: str = "app == 'frontend'") -> dict:
    return {
        "apiVersion": "palisade.io/v1",
        "kind": "WebApplicationFirewall",
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {"selector": selector, "mode": mode, "paranoiaLevel": 2},
    }


def test_settings_follow_the_datastore(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        apply_documents(
            store, [_pod({"app": "frontend"}), _pod({"app": "x"}, "client", "10.0.0.7")]
        )
        settings = FirewallSettings(store, "shop", "frontend-0")
        assert settings.spec.mode == "Off" and settings.source == "none"  # not protected
        assert settings.peer("10.0.0.7") == ("shop", "client")

        changes: list[str] = []
        stop = threading.Event()
        thread = settings.follow(lambda: changes.append(settings.spec.mode), stop)
        try:
            apply_documents(store, [_firewall("DetectionOnly")])
            _wait(lambda: changes == ["DetectionOnly"])
            assert settings.spec.paranoia_level == 2
            assert settings.source == "WebApplicationFirewall shop/frontend"
            apply_documents(store, [_firewall("On")])
            _wait(lambda: changes == ["DetectionOnly", "On"])
            # the pod's labels change: the firewall no longer selects it
            apply_documents(store, [_pod({"app": "other"})])
            _wait(lambda: changes == ["DetectionOnly", "On", "Off"])
            # an unrelated pod changing reloads nothing
            apply_documents(store, [_pod({"app": "y"}, "client", "10.0.0.8")])
            _wait(lambda: settings.peer("10.0.0.8") == ("shop", "client"))
            assert changes == ["DetectionOnly", "On", "Off"]
        finally:
            stop.set()
            thread.join(timeout=5)
    finally:
        store.close()


def test_settings_without_a_datastore_are_the_command_lines() -> None:
    spec = WebApplicationFirewallSpec(mode="On", paranoia_level=3)
    settings = FirewallSettings(None, "", "", fallback=spec)
    assert settings.spec is spec and not settings.refresh()


@dataclass(frozen=True)
class _Result:
    matches: list[_Match]
    blocked: bool = True
    status: int | None = 403
    inbound_score: int = 5
    outbound_score: int = 0


@dataclass(frozen=True)
class _Request:
    method: str = "GET"
    uri: str = "/?q=union+select"
    version: str = "HTTP/1.1"
    headers: tuple[tuple[str, str], ...] = field(default=(("Host", "shop"),))
    remote_addr: str = "10.0.0.7"
    remote_port: int = 40000


def test_events_reach_the_server_and_survive_its_absence(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    server.directory.mkdir()
    log_file = tmp_path / "events.jsonl"
    shipper = EventShipper(server.url, sink=json_lines_sink(log_file), interval=0.1)
    settings = FirewallSettings(None, "", "", fallback=WebApplicationFirewallSpec(mode="On"))
    hook = event_hook(settings, shipper, dest_ip="10.244.0.5", dest_port=80)
    attack = _Result([_Match(942100, "SQL injection", tags=("attack-sqli",))])
    try:
        hook(_Request(), attack)  # the server is not up yet: the event waits
        hook(_Request(), _Result([], blocked=False, status=None))  # nothing matched: no event
        hook(_Request(), _Result([_Match(1, "quiet", tags=("attack-sqli",), logged=False)]))
        time.sleep(0.5)
        assert shipper.pending() == 1
        server.start()
        assert shipper.flush(timeout=20)
        stored = httpx.get(f"{server.url}/api/v1/events").json()["events"]
        assert len(stored) == 1
        assert stored[0]["attack_vector"] == "SQL injection"
        assert stored[0]["source_ip"] == "10.0.0.7" and stored[0]["dest_port"] == 80
        assert stored[0]["record"]["mode"] == "On" and stored[0]["record"]["status"] == 403
        lines = log_file.read_text().splitlines()
        assert len(lines) == 1  # the local log has it too
        assert json.loads(lines[0])["id"] == stored[0]["id"]
    finally:
        shipper.close()
        server.stop()


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    shipper = EventShipper("http://127.0.0.1:9", max_queue=3, interval=60)
    events = [
        SecurityEvent(type="waf", time=float(i), description="x", severity=1, origin="t")
        for i in range(5)
    ]
    for event in events:
        shipper.add(event)
    assert shipper.pending() == 3 and shipper.dropped == 2


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_events_reach_the_server_over_its_unix_socket(tmp_path: Path) -> None:
    import subprocess

    from tests.server.conftest import PALISADE, free_port

    socket_path = tmp_path / "server.sock"
    port = free_port()
    server = subprocess.Popen(
        [
            str(PALISADE),
            "server",
            *("--listen", f"127.0.0.1:{port}"),
            *("--datastore", f"sqlite:///{tmp_path / 'store.db'}"),
            *("--flow-store", str(tmp_path / "flows.duckdb")),
            *("--unix-socket", str(socket_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shipper = EventShipper(f"unix:{socket_path}", interval=0.1)
    try:
        _wait(socket_path.exists, timeout=30)
        settings = FirewallSettings(None, "", "", fallback=WebApplicationFirewallSpec(mode="On"))
        event_hook(settings, shipper)(
            _Request(), _Result([_Match(942100, "SQL injection", tags=("attack-sqli",))])
        )
        assert shipper.flush(timeout=20)
        stored = httpx.get(f"http://127.0.0.1:{port}/api/v1/events").json()["events"]
        assert [e["attack_vector"] for e in stored] == ["SQL injection"]
    finally:
        shipper.close()
        server.terminate()
        server.wait(timeout=10)
