"""`palisade waf proxy` as users run it: a real process in front of a real HTTP upstream on
loopback, with the OWASP CRS; settings from the datastore's WebApplicationFirewall, changed
live; Security Events in the server."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from palisade.datastore import open_store
from palisade.resources import apply_documents
from tests.server.conftest import PALISADE, ServerProcess, free_port

ATTACK = "/search?q=1%27%20union%20select%20password%20from%20users--"
BROWSER = {"Host": "shop.example", "User-Agent": "Mozilla/5.0", "Accept": "text/html"}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "frontend-0", "namespace": "shop", "labels": {"app": "frontend"}},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def firewall(mode: str) -> dict[str, object]:
    return {
        "apiVersion": "palisade.io/v1",
        "kind": "WebApplicationFirewall",
        "metadata": {"name": "frontend", "namespace": "shop"},
        "spec": {"selector": "app == 'frontend'", "mode": mode},
    }


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.seen.append(self.path)
        body = b"hello from the workload\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def start_proxy(tmp_path: Path, upstream: int, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (tmp_path / "proxy.log").open("ab")
    process = subprocess.Popen(
        [
            str(PALISADE),
            "waf",
            "proxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            f"127.0.0.1:{upstream}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline() if readable else b""
    if line.strip() != b"ready":
        process.kill()
        process.wait()
        pytest.fail(f"proxy did not start: {(tmp_path / 'proxy.log').read_text()}")
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdout is not None:
        process.stdout.close()
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_blocking_mode_from_the_command_line(tmp_path: Path, upstream: int) -> None:
    events_log = tmp_path / "events.jsonl"
    process, url = start_proxy(tmp_path, upstream, "--mode", "On", "--events-log", str(events_log))
    try:
        benign = httpx.get(f"{url}/products?page=2", headers=BROWSER)
        assert benign.status_code == 200 and benign.text == "hello from the workload\n"
        attack = httpx.get(f"{url}{ATTACK}", headers=BROWSER)
        assert attack.status_code == 403
        assert _Handler.seen == ["/products?page=2"]  # the attack never reached the workload
        (line,) = events_log.read_text().splitlines()
        event = json.loads(line)
        assert event["type"] == "waf" and event["attack_vector"] == "SQL injection"
        assert event["record"]["verdict"] == "blocked" and 949110 in event["record"]["rule_ids"]
    finally:
        stop(process)
    assert process.returncode == 0


def test_settings_follow_the_workloads_firewall_live(tmp_path: Path, upstream: int) -> None:
    server = ServerProcess(tmp_path / "server")
    server.directory.mkdir()
    server.start()
    datastore = f"sqlite:///{server.directory / 'store.db'}"
    store = open_store(datastore)
    process = None
    try:
        apply_documents(store, [POD, firewall("DetectionOnly")])
        process, url = start_proxy(
            tmp_path,
            upstream,
            *("--datastore", datastore, "--namespace", "shop", "--pod", "frontend-0"),
            *("--server", server.url),
        )
        # detection only (Calico's default): the attack passes and becomes an event
        assert httpx.get(f"{url}{ATTACK}", headers=BROWSER).status_code == 200
        events = _events(server.url, 1)
        assert events[0]["record"]["verdict"] == "detected"
        assert events[0]["dest_namespace"] == "shop" and events[0]["dest_name"] == "frontend-0"
        assert events[0]["record"]["mode"] == "DetectionOnly"

        apply_documents(store, [firewall("On")])  # blocking, live: no restart
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}{ATTACK}", headers=BROWSER).status_code != 403:
            assert time.monotonic() < deadline, "the new mode never applied"
            time.sleep(0.2)
        assert process.poll() is None
        assert httpx.get(f"{url}/ok", headers=BROWSER).status_code == 200
        blocked = _events(server.url, 1, verdict="blocked")
        assert blocked[0]["record"]["status"] == 403 and blocked[0]["record"]["mode"] == "On"
    finally:
        if process is not None:
            stop(process)
        store.close()
        server.stop()


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(PALISADE), "waf", "proxy", "--listen", "nowhere", "--upstream", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--listen 'nowhere': expected HOST:PORT" in result.stderr
    result = subprocess.run(
        [
            str(PALISADE),
            "waf",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:1",
            "--rules",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no OWASP CRS found" in result.stderr


def _events(
    url: str, at_least: int, *, verdict: str | None = None, timeout: float = 20.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(f"{url}/api/v1/events", params={"type": "waf"}).json()["events"]
        found = [e for e in found if verdict is None or e["record"]["verdict"] == verdict]
        if len(found) >= at_least:
            return list(found)
        assert time.monotonic() < deadline, f"only {len(found)} event(s) arrived"
        time.sleep(0.2)


def test_two_workers_follow_the_datastore_and_report(tmp_path: Path, upstream: int) -> None:
    """Each forked worker follows the store and ships its own events (threads do not survive
    a fork)."""
    server = ServerProcess(tmp_path / "server")
    server.directory.mkdir()
    server.start()
    datastore = f"sqlite:///{server.directory / 'store.db'}"
    store = open_store(datastore)
    process = None
    try:
        apply_documents(store, [POD, firewall("DetectionOnly")])
        process, url = start_proxy(
            tmp_path,
            upstream,
            *("--datastore", datastore, "--namespace", "shop", "--pod", "frontend-0"),
            *("--server", server.url, "--workers", "2"),
        )
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            assert httpx.get(f"{url}{ATTACK}", headers=BROWSER).status_code == 200
        assert len(_events(server.url, 6)) >= 6
        apply_documents(store, [firewall("On")])
        deadline = time.monotonic() + 30
        while True:
            answers = {httpx.get(f"{url}{ATTACK}", headers=BROWSER).status_code for _ in range(6)}
            if answers == {403}:  # every worker reloaded
                break
            assert time.monotonic() < deadline, f"workers still answer {answers}"
            time.sleep(0.3)
    finally:
        if process is not None:
            stop(process)
        store.close()
        server.stop()


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ext_authz did not start: {log.read_text()}")
        time.sleep(0.1)


def test_extauthz_command_grpc_and_http(tmp_path: Path) -> None:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc

    from tests.waf.test_extauthz import check_request

    for mode in ("grpc", "http"):
        port = free_port()
        log = tmp_path / f"extauthz-{mode}.log"
        process = subprocess.Popen(
            [
                str(PALISADE),
                *("waf", "extauthz", "--listen", f"127.0.0.1:{port}", "--mode", "On"),
                *(["--http"] if mode == "http" else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        try:
            _wait_port(port, process, log)
            if mode == "grpc":
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                    allowed = stub.Check(check_request("/shop?item=42"), timeout=10)
                    denied = stub.Check(check_request(ATTACK), timeout=10)
                assert allowed.status.code == 0 and allowed.HasField("ok_response")
                assert denied.status.code != 0 and denied.denied_response.status.code == 403
            else:
                allowed_answer = httpx.get(f"http://127.0.0.1:{port}/shop?item=42", headers=BROWSER)
                denied_answer = httpx.get(f"http://127.0.0.1:{port}{ATTACK}", headers=BROWSER)
                assert allowed_answer.status_code == 200
                assert denied_answer.status_code == 403
        finally:
            stop(process)
