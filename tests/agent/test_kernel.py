"""The agent programming a real kernel: a test-made node namespace routing to pod namespaces
(the dataplane tests' test bed), policy written to the store, real TCP connects as the proof.

Each test waits for the kernel to follow by probing until the observed matrix equals the
policy engine's (bounded; a probe round takes about a second, as denied connects time out),
and stops its agent and every process before the namespaces go.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palisade.agent import AgentConfig, run_agent
from palisade.datastore import Store, open_store
from tests.calc.dataplane import resource_key
from tests.dataplane import test_nftables
from tests.dataplane.test_nftables import CLIENT, NFT, Lab, LabFactory, _handles
from tests.etcd_server import EtcdServer

NODE = "node-a"  # the test bed's pods run on this node
PORTS = ("tcp/8080",)
PODS: dict[str, tuple[str, ...]] = {
    "prod/web": ("10.65.0.1",),
    "prod/db": ("10.65.0.2",),
    "ops/tool": ("10.65.0.3",),
}
LABELS = {"prod/web": {"app": "web"}, "prod/db": {"app": "db"}, "ops/tool": {"app": "tool"}}
CONVERGE = 20.0  # seconds the kernel may take to match the store (usually one probe round)


def _documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        for name in ("prod", "ops")
    ]
    for key, ips in PODS.items():
        namespace, name = key.split("/")
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": LABELS[key]},
                "spec": {"nodeName": NODE, "containers": [{"name": "main"}]},
                "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ips[0]}]},
            }
        )
    return documents


BASE = _documents()

# The dataplane tests' test bed, under a name of its own here: a node namespace routing to pod
# namespaces; its processes are killed and the namespaces deleted after the test.
kernel_lab = test_nftables.make_lab
DB_FROM_WEB: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db-from-web", "namespace": "prod"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
}
NO_TOOL_TO_WEB: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "no-tool-to-web"},
    "spec": {
        "selector": "app == 'web'",
        "types": ["Ingress"],
        "ingress": [
            {"action": "Deny", "source": {"selector": "app == 'tool'"}},
            {"action": "Allow"},
        ],
    },
}


def _put(store: Store, *documents: dict[str, Any]) -> None:
    store.apply([(resource_key(document), document) for document in documents])


def _converge(lab: Lab, documents: list[dict[str, Any]]) -> None:
    """Probe until the kernel's verdicts are the engine's for ``documents`` (bounded)."""
    expected = lab.expected(documents)
    assert len(set(expected.values())) == 2 or not documents[len(BASE) :], expected
    deadline = time.monotonic() + CONVERGE
    while (observed := lab.probe()) != expected:
        wrong = {k: v for k, v in observed.items() if expected[k] != v}
        assert time.monotonic() < deadline, f"kernel still differs from the engine: {wrong}"


def _table_exists(netns: str) -> bool:
    listed = subprocess.run(
        ["ip", "netns", "exec", netns, NFT, "list", "table", "inet", "palisade"],
        capture_output=True,
        check=False,
    )
    return listed.returncode == 0


class AgentProcesses:
    """``python -m palisade.agent`` processes, each logging to a file and reporting its status
    to a status file; the fixture kills whatever is still running after the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[subprocess.Popen[bytes]] = []
        self.status_path = directory / "agent-status.json"

    def start(self, url: str, netns: str) -> subprocess.Popen[bytes]:
        log_path = self.directory / f"agent-{len(self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "palisade.agent", "--node", NODE),
                    *("--datastore", url, "--netns", netns, "--log-level", "DEBUG"),
                    *("--status-file", str(self.status_path)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        index = self.started.index(process)
        return (self.directory / f"agent-{index}.log").read_text(errors="replace")

    def wait_enforcing(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        """The status file once ``process`` reports the store's state programmed (bounded)."""
        deadline = time.monotonic() + CONVERGE
        while True:
            try:
                status = json.loads(self.status_path.read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("pid") == process.pid and status.get("phase") == "watching":
                assert status["programmed"] and status["node"] == NODE, status
                return dict(status)
            assert process.poll() is None, self.log(process)
            assert time.monotonic() < deadline, f"agent not enforcing: {status}"
            time.sleep(0.05)


@pytest.fixture
def agent_processes(tmp_path: Path) -> Iterator[AgentProcesses]:
    processes = AgentProcesses(tmp_path)
    try:
        yield processes
    finally:
        for process in processes.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.root
def test_agent_process_follows_policy_changes_and_stops_on_sigterm(
    kernel_lab: LabFactory, agent_processes: AgentProcesses, sqlite_url: str
) -> None:
    lab = kernel_lab(PODS, PORTS)
    lab.start_listeners()
    with open_store(sqlite_url) as store:
        _put(store, *BASE, DB_FROM_WEB)
        agent = agent_processes.start(sqlite_url, lab.node)
        _converge(lab, [*BASE, DB_FROM_WEB])
        _put(store, NO_TOOL_TO_WEB)
        store.delete(resource_key(DB_FROM_WEB))
        _converge(lab, [*BASE, NO_TOOL_TO_WEB])
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=10) == 0, agent_processes.log(agent)
    assert _table_exists(lab.node)  # left in place for the next agent to adopt
    assert "received SIGTERM" in agent_processes.log(agent)
    assert json.loads(agent_processes.status_path.read_text())["phase"] == "stopped"


@pytest.mark.root
def test_a_killed_agent_is_replaced_without_a_rule_disappearing(
    kernel_lab: LabFactory, agent_processes: AgentProcesses, sqlite_url: str
) -> None:
    """Kill -9 the agent under a live TCP connection and start another: the table stays as it
    is throughout (the new agent adopts it, re-creating nothing), the connection keeps
    flowing, and the new agent enforces later changes."""
    lab = kernel_lab(PODS, PORTS)
    lab.start_listeners()
    with open_store(sqlite_url) as store:
        _put(store, *BASE, NO_TOOL_TO_WEB)
    first = agent_processes.start(sqlite_url, lab.node)
    agent_processes.wait_enforcing(first)
    tool_netns, _ = lab.pods["ops/tool"]
    client = lab.spawn(tool_netns, CLIENT, PODS["prod/db"][0], "8080")
    assert client.stdin is not None and client.stdout is not None

    def echo(text: str) -> str:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(text + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    assert client.stdout.readline().strip() == "connected"
    assert echo("one") == "one"
    handles = _handles(lab.node)
    first.kill()
    first.wait(timeout=10)
    assert _handles(lab.node) == handles and echo("two") == "two"
    second = agent_processes.start(sqlite_url, lab.node)
    status = agent_processes.wait_enforcing(second)
    assert status["applies"] >= 1 and status["syncs"] == 1
    assert _handles(lab.node) == handles  # its first apply changed nothing
    assert echo("three") == "three"
    # the new agent follows changes: new connections from tool to db are now denied, the
    # established one keeps flowing through the fast path
    with open_store(sqlite_url) as store:
        _put(store, DB_FROM_WEB)
    _converge(lab, [*BASE, NO_TOOL_TO_WEB, DB_FROM_WEB])
    assert echo("four") == "four"


@pytest.mark.root
@pytest.mark.etcd
def test_enforcement_survives_an_etcd_outage_and_resumes_after_it(
    kernel_lab: LabFactory, etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="palisade.agent")
    lab = kernel_lab(PODS, PORTS)
    lab.start_listeners()
    url = etcd_server.store_url()
    with open_store(url) as store:
        _put(store, *BASE, DB_FROM_WEB)
    stop = threading.Event()
    config = AgentConfig(resync_interval=1.0, watch_timeout=2.0, backoff_max=1.0)
    agent = threading.Thread(
        target=run_agent, args=(NODE, url, lab.node, stop), kwargs={"config": config}
    )
    agent.start()

    def logged(text: str) -> bool:
        return any(text in record.getMessage() for record in caplog.records)

    try:
        _converge(lab, [*BASE, DB_FROM_WEB])
        etcd_server.stop()
        deadline = time.monotonic() + CONVERGE
        while not (logged("datastore unavailable") and logged("retry 3 ")):
            assert time.monotonic() < deadline, "the agent did not notice the outage"
            time.sleep(0.05)
        # the kernel is re-read during the outage (and keeps the state) …
        caplog.clear()
        while not logged("dataplane resynced"):
            assert time.monotonic() < deadline, "no dataplane resync during the outage"
            time.sleep(0.05)
        # … and after several retries and a resync the policy is enforced as before
        assert lab.probe() == lab.expected([*BASE, DB_FROM_WEB])
        etcd_server.start()  # same data directory, same ports
        with open_store(url) as store:
            _put(store, NO_TOOL_TO_WEB)
        _converge(lab, [*BASE, DB_FROM_WEB, NO_TOOL_TO_WEB])
        assert logged("synced with the datastore")
    finally:
        stop.set()
        agent.join(10)
        assert not agent.is_alive(), "the agent did not stop"
