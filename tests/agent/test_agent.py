"""The agent's loop against SQLite (and a real etcd) with a recording dataplane.

``RecordingDataplane`` (from the calc tests, which also checks that every reference resolves
when it is made) records what the graph asks for; ``apply`` takes a snapshot of it as the
*programmed* state, as the kernel would hold it. ``FlakyStore`` wraps a SQLite store and can
play an outage (every call raises ``DatastoreUnavailable``) or hold the agent's watch back
while the test writes and compacts behind its back. Every wait is bounded.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from palisade.agent import Agent, AgentConfig, AgentStatus, Phase, main
from palisade.calc import build_graph
from palisade.datastore import (
    DatastoreError,
    DatastoreUnavailable,
    ResourceKey,
    SqliteStore,
    Store,
    StoredResource,
    WatchEvent,
    open_store,
)
from tests.calc.dataplane import RecordingDataplane, resource_key
from tests.etcd_server import EtcdServer

NODE = "node-a"
WAIT = 10.0  # the longest any condition may take to come true
FAST = AgentConfig(
    apply_interval=0.05,
    resync_interval=30.0,
    watch_timeout=0.5,
    backoff_initial=0.05,
    backoff_max=0.2,
)


class Dataplane(RecordingDataplane):
    """A recording dataplane whose ``apply`` snapshots the state as programmed."""

    def __init__(self) -> None:
        super().__init__()
        self.programmed: tuple[object, ...] | None = None
        self._programmed_ids: tuple[set[str], set[str]] = (set(), set())
        self.apply_times: list[float] = []
        self.resyncs = 0
        self.failures_to_come = 0
        self._lock = threading.Lock()

    def apply(self) -> int:
        with self._lock:
            if self.failures_to_come:
                self.failures_to_come -= 1
                raise OSError("nft: simulated failure")
            self._program()
            self.apply_times.append(time.monotonic())
            return 1

    def _program(self) -> None:
        self.programmed = self.state()
        self._programmed_ids = (set(self.endpoints), set(self.policies))

    def resync(self) -> int:
        with self._lock:
            self.resyncs += 1
            self._program()  # re-programs what it wants, never less
            return 0

    def programmed_endpoints(self) -> set[str]:
        with self._lock:
            return set(self._programmed_ids[0])

    def programmed_policies(self) -> set[str]:
        with self._lock:
            return set(self._programmed_ids[1])


class FlakyStore:
    """A ``Store`` over SQLite that can be made unreachable or have its watches held back."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.hold_watches = threading.Event()
        self.release = threading.Event()
        self.watches_started = 0

    def _check(self) -> None:
        if self.down.is_set():
            raise DatastoreUnavailable("test datastore is down")

    @property
    def revision(self) -> int:
        self._check()
        return self.inner.revision

    def get(self, key: ResourceKey) -> StoredResource | None:
        self._check()
        return self.inner.get(key)

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[StoredResource]:
        self._check()
        return self.inner.list(kind, namespace)

    def put(self, key: ResourceKey, value: Mapping[str, Any]) -> int:
        self._check()
        return self.inner.put(key, value)

    def delete(self, key: ResourceKey) -> int | None:
        self._check()
        return self.inner.delete(key)

    def apply(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey] = (),
    ) -> int:
        self._check()
        return self.inner.apply(puts, deletes)

    def watch(
        self,
        from_revision: int,
        *,
        kinds: Collection[str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        self._check()
        self.watches_started += 1
        if self.hold_watches.is_set():
            assert self.release.wait(WAIT), "a held watch was never released"
        deadline = None if timeout is None else time.monotonic() + timeout
        position = from_revision
        while deadline is None or time.monotonic() < deadline:
            # Short inner watches, so an outage is noticed between them as a broken stream.
            for event in self.inner.watch(position, kinds=kinds, timeout=0.05):
                self._check()
                yield event
                position = event.revision
            self._check()

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# -- documents ----------------------------------------------------------------------------------


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _pod(name: str, ip: str, labels: dict[str, str], node: str = NODE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "prod", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _policy(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {
            "selector": selector,
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}],
        },
    }


BASE = [
    _namespace("prod"),
    _pod("web", "10.65.0.1", {"app": "web"}),
    _pod("db", "10.65.0.2", {"app": "db"}),
    _pod("elsewhere", "10.65.1.1", {"app": "db"}, node="node-b"),
]


def _put(store: Store, *documents: dict[str, Any]) -> int:
    return store.apply([(resource_key(document), document) for document in documents])


# -- harness ------------------------------------------------------------------------------------


class Running:
    """An agent on a thread; stopping it is bounded and reported."""

    def __init__(self, agent: Agent, dataplane: Dataplane) -> None:
        self.agent = agent
        self.dataplane = dataplane
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="agent-under-test", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:
            self.error = exc

    def wait(self, predicate: Callable[[AgentStatus], bool]) -> AgentStatus:
        return self.agent.wait_for(predicate, WAIT)

    def until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll a condition on the dataplane (bounded)."""
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.agent.status}"
            time.sleep(0.01)

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the agent did not stop"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "store.db"))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    """Starts agents (``start(store_or_opener, config=…)``); stops every one after the test."""
    running: list[Running] = []

    def launch(store: Store | Callable[[], Store], config: AgentConfig = FAST) -> Running:
        dataplane = Dataplane()
        agent = Agent(store, build_graph(NODE, dataplane), dataplane, config)
        running.append(Running(agent, dataplane))
        return running[-1]

    try:
        yield launch
    finally:
        for each in running:
            each.stop()


# -- tests --------------------------------------------------------------------------------------


def test_initial_sync_programs_the_node_in_one_apply(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    revision = _put(sqlite_store, *BASE, _policy("db-ingress", "app == 'db'"))
    run = start(sqlite_store)
    status = run.wait(lambda s: s.programmed)
    assert status.revision == revision and status.resources == len(BASE) + 1
    assert run.dataplane.programmed_endpoints() == {"wep:prod/web", "wep:prod/db"}
    assert run.dataplane.programmed_policies() == {"np:prod/db-ingress"}
    assert len(run.dataplane.apply_times) == 1
    # the graph was flushed once: each intent reached the dataplane once
    assert len(run.dataplane.calls) == len(set(run.dataplane.calls))
    assert run.wait(lambda s: s.phase is Phase.WATCHING).syncs == 1


def test_watch_feeds_updates_and_deletions(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    _put(sqlite_store, *BASE)
    run = start(sqlite_store)
    run.wait(lambda s: s.phase is Phase.WATCHING)
    policy = _policy("db-ingress", "app == 'db'")
    _put(sqlite_store, policy)
    run.until(lambda: run.dataplane.programmed_policies() == {"np:prod/db-ingress"}, "policy")
    # a label change takes db out of the policy's selector: the policy is no longer active
    _put(sqlite_store, _pod("db", "10.65.0.2", {"app": "cache"}))
    run.until(lambda: not run.dataplane.programmed_policies(), "policy to go")
    sqlite_store.delete(resource_key(BASE[2]))
    run.until(lambda: run.dataplane.programmed_endpoints() == {"wep:prod/web"}, "db to go")
    status = run.wait(lambda s: s.revision == sqlite_store.revision)
    assert status.syncs == 1 and status.phase is Phase.WATCHING


def test_a_burst_is_applied_in_few_transactions(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    config = AgentConfig(apply_interval=0.3, watch_timeout=0.5, backoff_initial=0.05)
    _put(sqlite_store, *BASE)
    run = start(sqlite_store, config)
    run.wait(lambda s: s.phase is Phase.WATCHING)
    began = time.monotonic()
    for index in range(40):  # one revision each
        _put(sqlite_store, _pod(f"burst-{index}", f"10.65.2.{index + 1}", {"app": "burst"}))
    written = time.monotonic() - began
    run.until(lambda: len(run.dataplane.programmed_endpoints()) == 42, "the burst")
    times = run.dataplane.apply_times
    # apply at most once per apply_interval, however many changes arrive
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.3 * 0.95, gaps
    assert len(times) - 1 <= 2 + written / 0.3, (len(times), written)


def test_compaction_leads_to_a_full_resync_that_removes_vanished_keys(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    flaky = FlakyStore(sqlite_store)
    flaky.hold_watches.set()  # the agent lists, then its watch waits for the test
    _put(sqlite_store, *BASE, _policy("db-ingress", "app == 'db'"))
    run = start(flaky)
    run.wait(lambda s: s.programmed)
    # behind the agent's back: db and the policy go, a pod comes, and history is compacted
    sqlite_store.apply(
        [(resource_key(p), p) for p in [_pod("new", "10.65.0.9", {"app": "new"})]],
        [resource_key(BASE[2]), resource_key(_policy("db-ingress", ""))],
    )
    _put(sqlite_store, _pod("web", "10.65.0.1", {"app": "web", "v": "2"}))
    sqlite_store.compact(sqlite_store.revision)
    flaky.release.set()
    status = run.wait(lambda s: s.syncs == 2 and s.phase is Phase.WATCHING)
    assert status.revision == sqlite_store.revision and status.datastore_failures == 0
    assert run.dataplane.programmed_endpoints() == {"wep:prod/web", "wep:prod/new"}
    assert not run.dataplane.programmed_policies()
    web = run.dataplane.endpoints["wep:prod/web"]
    assert web.endpoint_id == "wep:prod/web"
    # and it keeps watching from the resync's revision
    _put(sqlite_store, _policy("web-ingress", "app == 'web'"))
    run.until(lambda: run.dataplane.programmed_policies() == {"np:prod/web-ingress"}, "policy")


def test_outage_keeps_the_programmed_state_and_recovers(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    flaky = FlakyStore(sqlite_store)
    _put(sqlite_store, *BASE, _policy("db-ingress", "app == 'db'"))
    config = AgentConfig(
        apply_interval=0.05,
        resync_interval=0.2,
        watch_timeout=0.5,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    run = start(flaky, config)
    run.wait(lambda s: s.phase is Phase.WATCHING)
    before = run.dataplane.programmed
    assert before is not None
    flaky.down.set()
    status = run.wait(lambda s: s.phase is Phase.UNAVAILABLE and s.datastore_failures >= 3)
    assert status.last_error is not None and "down" in status.last_error
    # changes the agent cannot see yet
    sqlite_store.apply(
        [(resource_key(p), p) for p in [_pod("new", "10.65.0.9", {"app": "db"})]],
        [resource_key(BASE[1])],
    )
    resyncs = run.dataplane.resyncs
    run.until(lambda: run.dataplane.resyncs >= resyncs + 2, "dataplane resyncs in the outage")
    assert run.dataplane.programmed == before  # still enforced, never flushed
    assert run.dataplane.state() == before
    flaky.down.clear()
    status = run.wait(lambda s: s.phase is Phase.WATCHING and s.syncs == 2)
    assert status.datastore_failures == 0 and status.revision == sqlite_store.revision
    run.until(
        lambda: run.dataplane.programmed_endpoints() == {"wep:prod/db", "wep:prod/new"},
        "the changes made during the outage",
    )
    _put(sqlite_store, _policy("later", "app == 'db'"))
    run.until(
        lambda: run.dataplane.programmed_policies() == {"np:prod/db-ingress", "np:prod/later"},
        "a change after the outage",
    )


def test_nothing_is_programmed_before_the_first_successful_list(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    _put(sqlite_store, *BASE)
    attempts: list[float] = []
    reachable = threading.Event()

    def opener() -> Store:
        attempts.append(time.monotonic())
        if not reachable.is_set():
            raise DatastoreUnavailable("etcd datastore etcd://127.0.0.1:1/ is unavailable")
        return FlakyStore(sqlite_store)  # closing it would close the fixture's; harmless

    run = start(opener)
    status = run.wait(lambda s: s.datastore_failures >= 4)
    assert status.phase is Phase.UNAVAILABLE and not status.programmed
    assert run.dataplane.programmed is None and run.dataplane.resyncs == 0
    # backoff doubles between attempts (0.05 s, 0.1 s, 0.2 s, with jitter)
    assert attempts[3] - attempts[2] > (attempts[1] - attempts[0]) * 2
    reachable.set()
    run.wait(lambda s: s.programmed and s.phase is Phase.WATCHING)
    assert run.dataplane.programmed_endpoints() == {"wep:prod/web", "wep:prod/db"}


def test_a_failed_apply_is_retried(
    sqlite_store: SqliteStore, start: Callable[..., Running]
) -> None:
    _put(sqlite_store, *BASE)
    run = start(sqlite_store)
    run.wait(lambda s: s.phase is Phase.WATCHING)
    run.dataplane.failures_to_come = 2
    _put(sqlite_store, _policy("db-ingress", "app == 'db'"))
    status = run.wait(lambda s: s.dataplane_failures >= 2)
    assert status.last_error is not None and "simulated" in status.last_error
    run.until(lambda: run.dataplane.programmed_policies() == {"np:prod/db-ingress"}, "retry")
    assert run.wait(lambda s: s.dataplane_failures == 0).phase is Phase.WATCHING


def test_status_listener_hears_every_change_once(sqlite_store: SqliteStore) -> None:
    _put(sqlite_store, *BASE)
    seen: list[AgentStatus] = []
    dataplane = Dataplane()
    agent = Agent(
        sqlite_store, build_graph(NODE, dataplane), dataplane, FAST, on_status=seen.append
    )
    run = Running(agent, dataplane)
    try:
        run.wait(lambda s: s.phase is Phase.WATCHING)
        _put(sqlite_store, _policy("db-ingress", "app == 'db'"))
        run.wait(lambda s: s.applies == 2)
    finally:
        run.stop()
    phases = [status.phase for status in seen]
    assert phases[-1] is Phase.STOPPED and Phase.WATCHING in phases
    assert all(earlier != later for earlier, later in itertools.pairwise(seen))
    assert seen[-1].as_json()["phase"] == "stopped" and seen[-1].as_json()["applies"] == 2


def test_stop_is_prompt(sqlite_store: SqliteStore, start: Callable[..., Running]) -> None:
    run = start(sqlite_store, AgentConfig(watch_timeout=5.0))
    run.wait(lambda s: s.phase is Phase.WATCHING)
    began = time.monotonic()
    run.stop()
    assert time.monotonic() - began < 1.0
    assert run.agent.status.phase is Phase.STOPPED and run.error is None


def test_an_unusable_store_url_ends_the_agent() -> None:
    def opener() -> Store:
        return open_store("bogus://nowhere")

    dataplane = Dataplane()
    agent = Agent(opener, build_graph(NODE, dataplane), dataplane, FAST)
    with pytest.raises(DatastoreError, match="unknown scheme"):
        agent.run()
    assert dataplane.programmed is None
    assert main(["--node", NODE, "--datastore", "bogus://nowhere"]) == 2


@pytest.mark.etcd
def test_etcd_outage_keeps_state_and_later_changes_are_picked_up(
    etcd_server: EtcdServer, start: Callable[..., Running]
) -> None:
    url = etcd_server.store_url()
    with open_store(url) as writer:
        _put(writer, *BASE, _policy("db-ingress", "app == 'db'"))
    run = start(lambda: open_store(url))
    run.wait(lambda s: s.phase is Phase.WATCHING)
    before = run.dataplane.programmed
    etcd_server.stop()
    run.wait(lambda s: s.phase is Phase.UNAVAILABLE and s.datastore_failures >= 2)
    assert run.dataplane.programmed == before
    etcd_server.start()  # same data directory and ports
    run.wait(lambda s: s.phase is Phase.WATCHING and s.syncs == 2)
    with open_store(url) as writer:
        _put(writer, _policy("later", "app == 'db'"))
    run.until(
        lambda: run.dataplane.programmed_policies() == {"np:prod/db-ingress", "np:prod/later"},
        "a change after the outage",
    )
