"""Dataplane benchmark (issue 3): the node agent, the kernel and the lab, end to end.

    sudo .venv/bin/python bench/dataplane_bench.py                 # every figure
    sudo .venv/bin/python bench/dataplane_bench.py --only a,b      # some of them
    sudo .venv/bin/python bench/dataplane_bench.py --quick         # small smoke run (~30 s)

Needs root. Everything it makes is its own and is removed at the end, also after a failure or
Ctrl-C (SIGTERM too): the network namespace ``pal-b<hex>a`` of (a) and (b) and the agent
process it starts there, with ``--datastore etcd`` the etcd it starts, and labs with ids
``b<hex>`` whose state directories live in a temporary directory (taken down with
``lab.down`` on exactly those directories). Nothing else on the machine is touched. No
figure is asserted; the timings are printed.

(a) **Initial programming.** The datastore (SQLite, as the lab's) holds the cluster of
    ``bench/nft_bench.py`` — ``generate_cluster(namespaces=10, pods=1000, policies=500,
    tiers=2, seed=1)`` — with every Pod on one node (``spec.nodeName``, ``status.podIP``
    as generated). A real agent process (``python -m palisade.agent --netns NS --status-file
    F``) is started for that node in a fresh, empty namespace; the figure is the time from
    starting the process to its status file saying ``watching``, ``programmed`` at the
    store's revision (the first status the agent writes is after its initial list and apply,
    see ``Agent._sync``). Interpreter start-up and imports are included; the agent's log
    splits the time into start-up, list + calc graph feed, and flush + render + the nftables
    transaction. The kernel's table is then listed (libnftables, in the namespace) and its
    chains, rules and set elements are compared with what the driver renders for the same
    intents (``nft_bench.intents``). Pod namespaces are *not* created: the table matches
    workload interfaces by name (``iifname``/``oifname`` verdict maps keyed by
    ``workload_interface_name(ns, pod)``), so the interfaces need not exist for the rules to
    be programmed and counted; real pods are figure (c)'s and (d)'s business.
(b) **One policy change → rule live in the kernel.** With (a)'s agent still running, one
    GlobalNetworkPolicy that applies on the node gets an extra ingress rule whose port
    changes on every write (``Deny TCP dport 40000+i``), ``--changes`` times, with a random
    0.15–0.3 s pause before each write (longer than the agent's 100 ms apply interval, so each
    change is "the first after a quiet spell" and is not batched; random so the writes do not
    lock to the SQLite watch's 50 ms poll). Latency: from just before the store write to the
    kernel's announcement of the commit that adds a rule to that policy's ingress chain — a
    netlink socket in the node's namespace subscribed to the ``nftables`` multicast group
    (what ``nft monitor`` reads), returning at the new-generation message that ends the
    transaction, when the rules are live. Polling with listings was the first design and was
    dropped: at this size one ``list chain`` costs ~200 ms in libnftables (it fetches the
    table's chains and sets first), which both blurs the figure and takes the CPU and the
    kernel's nftables lock from the agent. The listing is still made once per change, after
    the pause (the agent is quiet then), to verify the chain has the new port. p50/p99 in ms.
    Breakdown: a second watch on a connection of its own in this process gives the store's
    delivery time (SQLite's watchers poll for other connections' commits every 10 ms), and
    the agent's DEBUG log ("dataplane applied at revision R", millisecond timestamps) when
    its ``apply()`` returned (after the commit: libnftables' own cache refresh and the route
    manager's netlink pass). Changes that waited for the agent's periodic dataplane resync
    (a full table read, every 90 s) are counted and shown. ``--datastore etcd`` runs (a) and
    (b) against a local etcd (the tests' ``EtcdServer``; its watch streams) instead.
(c) **Pod-to-pod TCP throughput.** A 2-node lab with three pods, all labelled
    ``app=iperf``: ``iperf-server`` on node-0 running ``iperf3 -s -p 5201`` as its manifest
    command, ``iperf-remote`` on node-1 (its traffic crosses the VXLAN overlay) and
    ``iperf-local`` on node-0 (same node, through the node namespace's forward hook). The
    client runs in the client pod through ``lab.exec_command``: ``iperf3 -c IP -t T -J``,
    median receiver throughput of ``--iperf-runs`` runs. With no policy (the namespace's
    allow-all profile), and — same lab, same run, in alternating rounds (no policy, policies,
    no policy, …: the policies are added and deleted again, so the load other processes put
    on the machine meanwhile falls on both conditions alike) — with 300 Calico
    NetworkPolicies selecting the pods, each with an ingress and an egress rule that never
    matches (``Deny TCP dport 10000+i``), and a last policy (order 1000) that allows
    everything: a new connection walks all 300 policies on both sides before the allow,
    established packets take the base chain's conntrack fast path — which is what the ratio
    (with / without) measures. The kernel's counters are read afterwards to show the allow
    rule was reached.
(d) **Lab scale.** ``lab up`` for a ladder of clusters (nodes × pods; one Deployment
    ``web`` with a TCP port, so every pod runs the lab's echo server, and one Kubernetes
    NetworkPolicy), each in a subprocess with a time cap (``--scale-step-cap``) and the whole
    ladder within ``--scale-budget``; per step: ``up`` time, ``down`` time and the memory the
    running lab's processes take (the sum of their PSS: agents, per-pod servers; the
    kernel's share is not counted). The ladder stops at the
    first failure or cap; the largest step that came up is the figure. A killed ``up`` is
    taken down by ``lab.down`` from its state file, as ``lab down`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # for --datastore etcd

from nft_bench import NODE, intents, namespace
from palisade import lab
from palisade.agent import AgentConfig
from palisade.dataplane.linux._libnft import LibnftSession, enter_netns
from palisade.dataplane.linux._libnft import available as libnftables_available
from palisade.dataplane.linux._nft_render import FAMILY, TABLE, policy_chain_name
from palisade.datastore import open_store
from palisade.policy.synthetic import generate_cluster
from palisade.resources import apply_documents, store_key

IPERF_PORT = 5201
NOOP_PORT_BASE = 10000
CHANGE_PORT_BASE = 40000
SCALE_LADDER = ((2, 10), (3, 30), (4, 60), (6, 100), (8, 150), (10, 200), (12, 300), (16, 400))
QUICK_LADDER = ((2, 4),)
RESYNC_INTERVAL = AgentConfig().resync_interval
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWRULE = 6
NFT_MSG_NEWGEN = 15
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) [\w.]+: (.*)$")


# -- results ----------------------------------------------------------------------------------


@dataclass
class Report:
    """Figures as (name, value, note) rows, printed as a table at the end."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, name: str, value: str, note: str = "") -> None:
        self.rows.append((name, value, note))
        print(f"  {name}: {value}" + (f"  ({note})" if note else ""), flush=True)

    def print(self) -> None:
        if not self.rows:
            return
        width = max(len(name) for name, _, _ in self.rows)
        value_width = max(len(value) for _, value, _ in self.rows)
        print()
        print(f"{'figure':<{width}}  {'value':>{value_width}}  note")
        for name, value, note in self.rows:
            print(f"{name:<{width}}  {value:>{value_width}}  {note}")


def _quantile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- cleanup ----------------------------------------------------------------------------------


def _terminate_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt, so every ``finally`` runs, as on Ctrl-C.

    Only in this process: pyroute2 forks children (without exec) to make namespaces and ends
    them with SIGTERM; a child inheriting the handler would run this process's cleanup."""
    main_pid = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def lab_place(base: Path, name: str) -> Iterator[tuple[str, Path]]:
    """A lab id and state directory of this run's own; the lab is taken down on the way out."""
    lab_id = f"b{secrets.token_hex(3)}"
    state_dir = base / f"lab-{name}"
    try:
        yield lab_id, state_dir
    finally:
        lab.down(state_dir)


# -- (a) and (b): one agent, 1,000 endpoints, 500 policies -----------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _log_times(path: Path) -> list[tuple[float, str]]:
    """(wall-clock time, message) of every line of an agent log."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match:
            stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
            found.append((stamp + int(match[2]) / 1000, match[4]))
    return found


def _count_listing(listing: dict[str, Any]) -> tuple[int, int, int]:
    """(chains, rules, set elements) of an ``nft -j list table`` listing."""
    chains = rules = elements = 0
    for item in listing.get("nftables", []):
        if "chain" in item:
            chains += 1
        elif "rule" in item:
            rules += 1
        elif "set" in item:
            elements += len(item["set"].get("elem", ()))
    return chains, rules, elements


def _has_port(listing: str, port: int) -> bool:
    """Whether a ``list chain`` listing has a rule matching destination port ``port``."""

    def walk(value: Any) -> bool:
        if isinstance(value, dict):
            match = value.get("match")
            if isinstance(match, dict) and match.get("right") == port:
                return True
            return any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return f"{port}" in listing and walk(json.loads(listing))


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_agent(
    args: argparse.Namespace, stack: contextlib.ExitStack, base: Path, report: Report
) -> None:
    """Figures (a) and (b); see the module docstring."""
    pods, policies = args.pods, args.policies
    _progress(f"(a) generating {pods} pods and {policies} policies on one node")
    documents = generate_cluster(namespaces=10, pods=pods, policies=policies, tiers=2, seed=1)
    for document in documents:
        if document["kind"] == "Pod":
            document["spec"]["nodeName"] = NODE
    expected = intents(pods, policies)  # the same documents, through the calc graph in process
    desired = expected.desired()
    expected_rules = sum(len(c.rules) for c in desired.chains.values())
    expected_rules += len(desired.base.rules) if desired.base else 0
    expected_chains = len(desired.chains) + (1 if desired.base else 0)

    if args.datastore == "etcd":
        from tests.etcd_server import EtcdServer  # the tests' etcd on loopback ports

        etcd = EtcdServer(base / "etcd-data")
        etcd.start()
        stack.callback(etcd.stop)
        url = etcd.store_url("/bench/")
    else:
        url = f"sqlite:///{base / 'agent.db'}"
    with open_store(url) as store:
        for first in range(0, len(documents), 100):  # etcd takes 128 operations per txn
            target = apply_documents(store, documents[first : first + 100])
    prefix = f"pal-b{secrets.token_hex(3)}"
    netns = stack.enter_context(namespace(prefix, "a"))
    status_path = base / "agent-status.json"
    log_path = base / "agent.log"
    command = [
        *(sys.executable, "-m", "palisade.agent", "--node", NODE, "--datastore", url),
        *("--netns", netns, "--status-file", str(status_path), "--log-level", "DEBUG"),
    ]
    _progress(f"(a) starting the agent in {netns} (store at revision {target})")
    with log_path.open("wb") as log_file:
        started_wall = time.time()
        started = time.perf_counter()
        agent = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C is ours: we stop it, then remove the namespace
        )
    stack.callback(_stop_process, agent)
    deadline = started + args.agent_timeout
    while True:
        status = _read_json(status_path)
        if (
            status.get("pid") == agent.pid
            and status.get("phase") == "watching"
            and status.get("programmed")
            and int(status.get("revision") or 0) >= target
        ):
            break
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited: {log_path.read_text()[-2000:]}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the agent did not program in {args.agent_timeout} s: {status}")
        time.sleep(0.01)
    initial = time.perf_counter() - started
    rss = _rss_mb(agent.pid)
    lines = _log_times(log_path)
    first = next((t for t, m in lines if m.startswith("agent for node")), None)
    synced = next((t for t, m in lines if m.startswith("synced with the datastore")), None)
    applied = next((t for t, m in lines if m.startswith("dataplane applied")), None)
    session = LibnftSession(netns)
    stack.callback(session.close)
    listed = time.perf_counter()
    listing = session.run(f"list table {FAMILY} {TABLE}")
    list_s = time.perf_counter() - listed
    chains, rules, elements = _count_listing(json.loads(listing.output))
    name = f"(a) initial programming, {len(expected.endpoints)} endpoints, {policies} policies"
    report.add(
        name, f"{initial:.2f} s", f"agent process start → status programmed; {args.datastore}"
    )
    if first and synced and applied:
        report.add(
            "(a)   of which start-up / list+graph / flush+apply",
            f"{first - started_wall:.2f} / {synced - first:.2f} / {applied - synced:.2f} s",
            "from the agent's log (ms timestamps)",
        )
    report.add(
        "(a) kernel table: chains / rules / set elements",
        f"{chains} / {rules} / {elements}",
        f"expected {expected_chains} chains, {expected_rules} rules "
        f"({'match' if (chains, rules) == (expected_chains, expected_rules) else 'MISMATCH'}); "
        f"listing took {list_s:.1f} s",
    )
    report.add("(a) agent RSS after programming", f"{rss:.0f} MB")
    if "b" in args.only:
        bench_change(args, documents, expected.policies, url, session, agent, log_path, report)


def _change_target(documents: list[dict[str, Any]], policy_ids: Any) -> dict[str, Any]:
    """The first GlobalNetworkPolicy with ingress that has a chain on the node."""
    for document in documents:
        if document["kind"] != "GlobalNetworkPolicy":
            continue
        spec = document["spec"]
        if "Ingress" in (spec.get("types") or ()) and f"gnp:{document['metadata']['name']}" in (
            policy_ids
        ):
            return document
    raise RuntimeError("no GlobalNetworkPolicy with ingress applies on the node")


def bench_change(
    args: argparse.Namespace,
    documents: list[dict[str, Any]],
    policy_ids: Any,
    url: str,
    session: LibnftSession,
    agent: subprocess.Popen[bytes],
    log_path: Path,
    report: Report,
) -> None:
    """Figure (b); see the module docstring."""
    original = _change_target(documents, policy_ids)
    policy_id = f"gnp:{original['metadata']['name']}"
    chain = policy_chain_name(policy_id, True)
    _progress(f"(b) {args.changes} changes of {policy_id} (chain {chain})")
    list_command = f"list chain {FAMILY} {TABLE} {chain}"
    latencies: list[float] = []
    writes: dict[int, tuple[float, float, float]] = {}  # revision → (wall, perf, latency)
    list_times: list[float] = []
    failures = unverified = 0
    verify: int | None = None
    rng = random.Random(7)
    watcher = _WatchTimes(url)
    commits = _CommitWatch(session.netns or "")
    try:
        with open_store(url) as store:
            for index in range(args.changes):
                port = CHANGE_PORT_BASE + index
                changed = copy.deepcopy(original)
                extra = {"action": "Deny", "protocol": "TCP", "destination": {"ports": [port]}}
                changed["spec"]["ingress"] = [*(changed["spec"].get("ingress") or ()), extra]
                time.sleep(rng.uniform(0.15, 0.3))
                if verify is not None:  # the last change, once the agent is quiet again
                    listed = time.perf_counter()
                    output = session.run(list_command).output
                    list_times.append(time.perf_counter() - listed)
                    unverified += not _has_port(output, verify)
                    verify = None
                commits.drain()
                written_wall = time.time()
                started = time.perf_counter()
                revision = apply_documents(store, [changed])
                seen = commits.wait_for(chain.encode() + b"\0", started + 15.0)
                if seen is None:
                    failures += 1
                    if agent.poll() is not None:
                        raise RuntimeError(f"the agent exited: {log_path.read_text()[-2000:]}")
                    continue
                latencies.append(seen - started)
                writes[revision] = (written_wall, started, seen - started)
                verify = port  # the kernel's chain must have the new rule by now
            if verify is not None:
                unverified += not _has_port(session.run(list_command).output, verify)
            apply_documents(store, [original])
    finally:
        watcher.stop()
        commits.close()
    if not latencies:
        raise RuntimeError("no policy change became visible in the kernel")
    milliseconds = [value * 1000 for value in latencies]
    problems = []
    if failures:
        problems.append(f"{failures} commits not seen within 15 s")
    if unverified:
        problems.append(f"{unverified} listings without the new rule after the commit")
    report.add(
        f"(b) one policy change → rule in kernel, p50 / p99 ({len(latencies)} changes)",
        f"{_quantile(milliseconds, 50):.1f} / {_quantile(milliseconds, 99):.1f} ms",
        f"target p99 < 50 ms; max {max(milliseconds):.1f} ms; mean "
        f"{statistics.mean(milliseconds):.1f} ms" + "".join(f"; {problem}" for problem in problems),
    )
    delivered = [
        (watcher.seen[revision] - started) * 1000
        for revision, (_, started, _) in writes.items()
        if revision in watcher.seen
    ]
    if delivered:
        report.add(
            "(b)   write → delivered to another connection's watch, p50 / p99",
            f"{_quantile(delivered, 50):.1f} / {_quantile(delivered, 99):.1f} ms",
            "a watcher in this process on a connection of its own, as the agent's is"
            + (
                ": SQLite polls for other connections' commits every 10 ms"
                if args.datastore == "sqlite"
                else ": etcd streams"
            ),
        )
    applied = {}
    resyncs = []
    for stamp, message in _log_times(log_path):
        match = re.match(r"dataplane applied at revision (\d+)", message)
        if match:
            applied.setdefault(int(match[1]), stamp)
        elif message.startswith("dataplane resynced"):
            resyncs.append(stamp)
    # A change whose wait spans the end of a dataplane resync waited for that resync.
    behind_resync = [
        latency * 1000
        for wall, _, latency in writes.values()
        if any(wall <= stamp <= wall + latency for stamp in resyncs)
    ]
    if resyncs:
        report.add(
            "(b)   changes that waited for the agent's periodic resync",
            f"{len(behind_resync)} of {len(latencies)}",
            f"{', '.join(f'{v:.0f}' for v in behind_resync) or '-'} ms; the agent re-reads the "
            f"whole table every {RESYNC_INTERVAL:g} s ({len(resyncs)} resyncs in this run)",
        )
    returned = [
        (applied[revision] - wall) * 1000
        for revision, (wall, _, _) in writes.items()
        if revision in applied
    ]
    if returned:
        report.add(
            "(b)   write → agent's apply() returned, p50 / p99",
            f"{_quantile(returned, 50):.1f} / {_quantile(returned, 99):.1f} ms",
            "agent's DEBUG log; nftables, then the route manager's netlink pass",
        )
    if list_times:
        report.add(
            "(b)   `list chain` of one policy chain (verification), median",
            f"{statistics.median(list_times) * 1000:.1f} ms",
            "libnftables in process; why the timing uses commit notifications instead",
        )


class _CommitWatch:
    """nftables commits in a namespace, as the kernel announces them to the ``nftables``
    netlink multicast group (what ``nft monitor`` listens to): event-driven, so observing
    costs the agent no CPU and no kernel lock, unlike polling with listings."""

    def __init__(self, netns: str) -> None:
        made: dict[str, Any] = {}

        def make() -> None:  # a throwaway thread enters the namespace; the socket stays there
            try:
                enter_netns(netns)
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
                made["socket"] = sock
            except BaseException as exc:
                made["error"] = exc

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        self._socket: socket.socket = made["socket"]

    def drain(self) -> None:
        """Forget what was announced so far."""
        self._socket.setblocking(False)
        try:
            while True:
                self._socket.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # ENOBUFS: the queue overflowed; it is empty now
            if exc.errno != errno.ENOBUFS:
                raise
        finally:
            self._socket.setblocking(True)

    def wait_for(self, needle: bytes, deadline: float) -> float | None:
        """When (``perf_counter``) the first commit (the new-generation message ending a
        transaction) with a new rule whose message contains ``needle`` was announced;
        ``None`` at ``deadline``."""
        found = False
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(1 << 20)
            except TimeoutError:
                return None
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            now = time.perf_counter()
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16:
                    break
                message = kind & 0xFF if kind >> 8 == NFNL_SUBSYS_NFTABLES else -1
                if message == NFT_MSG_NEWRULE and needle in data[offset : offset + length]:
                    found = True
                elif message == NFT_MSG_NEWGEN and found:
                    return now
                offset += (length + 3) & ~3

    def close(self) -> None:
        self._socket.close()


class _WatchTimes:
    """When each revision reaches a watch on a store connection of its own (a thread)."""

    def __init__(self, url: str) -> None:
        self.seen: dict[int, float] = {}
        self._stopping = threading.Event()
        self._store = open_store(url)
        self._start = self._store.revision
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        position = self._start
        while not self._stopping.is_set():
            for event in self._store.watch(position, timeout=0.5):
                self.seen.setdefault(event.revision, time.perf_counter())
                position = event.revision

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._store.close()


# -- (c): iperf3 between pods, 300 policies vs none -------------------------------------------


def _pod(name: str, node: str, command: list[str] | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "iperf3"}
    if command:
        container["command"] = command
        container["ports"] = [{"name": "iperf", "containerPort": IPERF_PORT, "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "iperf"}},
        "spec": {"nodeName": node, "containers": [container]},
    }


def _noop_policies(count: int) -> list[dict[str, Any]]:
    """``count`` policies whose rules never match iperf's traffic, then one that allows all."""
    policies = []
    for index in range(count):
        never = {
            "action": "Deny",
            "protocol": "TCP",
            "destination": {"ports": [NOOP_PORT_BASE + index]},
        }
        policies.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"bench-noop-{index:03d}", "namespace": "default"},
                "spec": {
                    "order": index + 1,
                    "selector": "app == 'iperf'",
                    "types": ["Ingress", "Egress"],
                    "ingress": [never],
                    "egress": [never],
                },
            }
        )
    policies.append(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "bench-allow", "namespace": "default"},
            "spec": {
                "order": 1000,
                "selector": "app == 'iperf'",
                "types": ["Ingress", "Egress"],
                "ingress": [{"action": "Allow"}],
                "egress": [{"action": "Allow"}],
            },
        }
    )
    return policies


def _iperf(state_dir: Path, client: str, server_ip: str, seconds: float | None) -> float:
    """One run's receiver throughput in Gbit/s (``seconds=None``: 1 KB only, a readiness
    check)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(IPERF_PORT), "-J", "--connect-timeout", "2000"]
    argv += ["-n", "1K"] if seconds is None else ["-t", f"{seconds:g}"]
    try:
        completed = subprocess.run(
            lab.exec_command(client, argv, state_dir),
            capture_output=True,
            text=True,
            timeout=(seconds or 0) + 30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"iperf3 from {client} did not end: {' '.join(argv)}") from None
    try:
        result = json.loads(completed.stdout)
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(
            f"iperf3 from {client} failed: {completed.stdout[-600:]} {completed.stderr[-600:]}"
        ) from None


def _wait_server(state_dir: Path, client: str, server_ip: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _iperf(state_dir, client, server_ip, None)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def bench_throughput(
    args: argparse.Namespace, stack: contextlib.ExitStack, base: Path, report: Report
) -> None:
    """Figure (c); see the module docstring."""
    manifests = base / "manifests-c"
    manifests.mkdir()
    pods = [
        _pod("iperf-server", "node-0", ["iperf3", "-s", "-p", str(IPERF_PORT)]),
        _pod("iperf-remote", "node-1", None),
        _pod("iperf-local", "node-0", None),
    ]
    (manifests / "pods.yaml").write_text("\n---\n".join(json.dumps(p) for p in pods) + "\n")
    lab_id, state_dir = stack.enter_context(lab_place(base, "c"))
    _progress(f"(c) lab {lab_id}: 2 nodes, iperf3 server on node-0")
    state = lab.up([manifests], state_dir=state_dir, lab_id=lab_id, nodes=2, timeout=120)
    server_ip = state.pods["default/iperf-server"].ip
    assert server_ip is not None
    clients = {"cross-node (VXLAN)": "default/iperf-remote", "same node": "default/iperf-local"}
    _wait_server(state_dir, clients["cross-node (VXLAN)"], server_ip)
    policies = _noop_policies(args.iperf_policies)
    samples: dict[tuple[str, bool], list[float]] = {}
    programming: list[float] = []
    # Rounds alternate no policy / policies (ABAB…), so that the machine's drifting load
    # falls on both conditions alike; the policies are added and deleted between rounds.
    for round_ in range(args.iperf_runs):
        for with_policies in (False, True):
            if with_policies or round_ > 0:
                with open_store(state.datastore) as store:
                    if with_policies:
                        apply_documents(store, policies)
                    else:
                        apply_documents(store, [], deletes=[store_key(p) for p in policies])
                started = time.perf_counter()
                lab.wait_programmed(state, timeout=300)
                if with_policies:
                    programming.append(time.perf_counter() - started)
            for label, client in clients.items():
                value = _iperf(state_dir, client, server_ip, args.iperf_seconds)
                samples.setdefault((label, with_policies), []).append(value)
                _progress(
                    f"(c) round {round_ + 1}, {label}, "
                    f"{'with' if with_policies else 'no'} policies: {value:.2f} Gbit/s"
                )
    report.add(
        f"(c) {len(policies)} policies programmed on both nodes in",
        f"{statistics.median(programming):.2f} s",
        "one store write → lab.wait_programmed, median",
    )
    results = {key: statistics.median(values) for key, values in samples.items()}
    reached = _allow_hits(state.nodes["node-0"])
    for label in clients:
        without, with_ = results[(label, False)], results[(label, True)]
        report.add(
            f"(c) iperf3 {label}: no policy / {args.iperf_policies} policies",
            f"{without:.2f} / {with_:.2f} Gbit/s",
            f"median of {args.iperf_runs} × {args.iperf_seconds:g} s, rounds alternating",
        )
        report.add(
            f"(c) throughput ratio {label}",
            f"{with_ / without * 100:.1f} %",
            "target ≥ 95 %",
        )
    report.add(
        "(c) bench-allow rules hit on node-0 (packets)",
        str(reached),
        "new connections walked every policy to the final allow",
    )


def _allow_hits(netns: str) -> int:
    session = LibnftSession(netns)
    try:
        listing = json.loads(session.run(f"list table {FAMILY} {TABLE}").output)
    finally:
        session.close()
    packets = 0
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and "bench-allow" in str(rule.get("comment", "")):
            for expression in rule.get("expr", ()):
                if "counter" in expression:
                    packets += int(expression["counter"].get("packets", 0))
    return packets


# -- (d): how large a lab comes up ----------------------------------------------------------


_UP_SCRIPT = (
    "import sys; from pathlib import Path; from palisade import lab; "
    "lab.up([Path(sys.argv[1])], state_dir=Path(sys.argv[2]), lab_id=sys.argv[3], "
    "nodes=int(sys.argv[4]), timeout=float(sys.argv[5]))"
)


def _lab_memory_mb(state_dir: Path) -> tuple[float, int]:
    """The proportional set size (PSS) of the lab's live processes, in MB, and their number:
    agents, servers and commands (the kernel's share — namespaces, veths, tables — is not
    counted; ``MemAvailable`` differences are too noisy on a shared machine)."""
    state = lab.LabState.load(state_dir)
    total_kb = 0
    count = 0
    for record in state.processes if state is not None else ():
        try:
            text = Path(f"/proc/{record.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total_kb += int(line.split()[1])
                count += 1
    return total_kb / 1024, count


def _scale_manifests(directory: Path, pods: int) -> None:
    directory.mkdir()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": pods,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "echo",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                    "ports": [{"port": 8080}],
                }
            ],
        },
    }
    text = json.dumps(deployment) + "\n---\n" + json.dumps(policy) + "\n"
    (directory / "web.yaml").write_text(text)


def bench_scale(
    args: argparse.Namespace, stack: contextlib.ExitStack, base: Path, report: Report
) -> None:
    """Figure (d); see the module docstring."""
    ladder = QUICK_LADDER if args.quick else SCALE_LADDER
    began = time.monotonic()
    largest: tuple[int, int, float] | None = None
    header = f"{'nodes':>5} {'pods':>5} {'up s':>8} {'down s':>7} {'PSS MB':>8} {'procs':>6}"
    print(f"  {header}  result")
    for step, (nodes, pods) in enumerate(ladder):
        remaining = args.scale_budget - (time.monotonic() - began)
        if remaining <= 10:
            report.add(
                "(d) ladder stopped", "budget", f"--scale-budget {args.scale_budget:g} s spent"
            )
            break
        cap = min(args.scale_step_cap, remaining)
        manifests = base / f"manifests-d{step}"
        _scale_manifests(manifests, pods)
        with lab_place(base, f"d{step}") as (lab_id, state_dir):
            _progress(f"(d) lab {lab_id}: {nodes} nodes, {pods} pods, cap {cap:.0f} s")
            started = time.perf_counter()
            outcome = "up"
            try:
                completed = subprocess.run(
                    [
                        *(sys.executable, "-c", _UP_SCRIPT, str(manifests), str(state_dir)),
                        *(lab_id, str(nodes), str(cap)),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=cap,
                    check=False,
                )
                if completed.returncode != 0:
                    outcome = "failed: " + (completed.stderr.strip().splitlines() or ["?"])[-1]
            except subprocess.TimeoutExpired:
                outcome = f"cap: not up within {cap:.0f} s"
            up_s = time.perf_counter() - started
            memory, processes = _lab_memory_mb(state_dir)
            started = time.perf_counter()
            lab.down(state_dir)
            down_s = time.perf_counter() - started
        print(
            f"  {nodes:>5} {pods:>5} {up_s:>8.1f} {down_s:>7.1f} {memory:>8.0f} {processes:>6}"
            f"  {outcome}",
            flush=True,
        )
        note = "" if outcome == "up" else outcome
        report.add(
            f"(d) lab {nodes} nodes × {pods} pods: up / down / memory",
            f"{up_s:.1f} s / {down_s:.1f} s / {memory:.0f} MB",
            note or f"PSS of the lab's {processes} processes",
        )
        if outcome != "up":
            break
        largest = (nodes, pods, up_s)
    if largest:
        nodes, pods, up_s = largest
        report.add("(d) largest lab up", f"{nodes} × {pods} pods in {up_s:.1f} s")


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small smoke run of every figure")
    parser.add_argument("--only", default="a,b,c,d", help="figures to run, e.g. a,b (default all)")
    parser.add_argument("--pods", type=int, default=None, help="(a) endpoints (default 1000)")
    parser.add_argument("--policies", type=int, default=None, help="(a) policies (default 500)")
    parser.add_argument("--changes", type=int, default=None, help="(b) changes (default 200)")
    parser.add_argument(
        "--datastore",
        choices=("sqlite", "etcd"),
        default="sqlite",
        help="(a), (b): the agent's store (default sqlite, as the lab's; etcd: a local etcd)",
    )
    parser.add_argument("--agent-timeout", type=float, default=600.0)
    parser.add_argument("--iperf-policies", type=int, default=None, help="(c) default 300")
    parser.add_argument("--iperf-runs", type=int, default=None, help="(c) default 3")
    parser.add_argument("--iperf-seconds", type=float, default=None, help="(c) default 5")
    parser.add_argument("--scale-step-cap", type=float, default=240.0, help="(d) seconds")
    parser.add_argument("--scale-budget", type=float, default=1200.0, help="(d) seconds")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "pods": (100, 1000),
        "policies": (50, 500),
        "changes": (20, 200),
        "iperf_policies": (30, 300),
        "iperf_runs": (1, 3),
        "iperf_seconds": (1.0, 5.0),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only - set("abcd")
    if unknown:
        parser.error(f"--only: unknown figures {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        print("needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if not libnftables_available():
        print("libnftables.so.1 cannot be loaded (install nftables)", file=sys.stderr)
        return 2
    _terminate_on_sigterm()
    report = Report()
    print(
        f"dataplane benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs{' (quick)' if quick else ''}"
    )
    steps: list[tuple[str, Callable[..., None]]] = []
    if "a" in args.only or "b" in args.only:
        args.only.add("a")
        steps.append(("ab", bench_agent))
    if "c" in args.only:
        steps.append(("c", bench_throughput))
    if "d" in args.only:
        steps.append(("d", bench_scale))
    failed = False
    try:
        with tempfile.TemporaryDirectory(prefix="palisade-dataplane-bench-") as temporary:
            base = Path(temporary)
            for name, function in steps:
                with contextlib.ExitStack() as stack:
                    try:
                        function(args, stack, base, report)
                    except (RuntimeError, lab.LabError, OSError) as exc:
                        failed = True
                        report.add(f"({name}) FAILED", type(exc).__name__, str(exc)[:300])
    except KeyboardInterrupt:
        print("interrupted; everything made was removed", file=sys.stderr)
        report.print()
        return 130
    report.print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
