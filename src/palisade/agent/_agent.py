"""The agent's loop: list and watch the store, feed the calc graph, apply the dataplane.

One thread runs :meth:`Agent.run`; it alone touches the graph and the dataplane. A watcher
thread per watch follows the store and hands events over through a queue, tagged with its
generation so events of a watch the loop has given up on are dropped. The loop waits on that
queue with a timeout computed from its own deadlines (next apply, next dataplane resync, next
datastore retry), so nothing in it sleeps blindly and a stop is seen within ``_STOP_POLL``.

Invariant: the dataplane only ever hears about states the store really had. A failed list
feeds nothing, and a datastore outage changes nothing in the graph, so the last programmed
state stays programmed (and is resynced periodically) until the store is back and relisted.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from palisade.datastore import (
    DatastoreError,
    DatastoreUnavailable,
    ResourceKey,
    RevisionCompacted,
    Store,
    WatchEvent,
)

from ._mirror import ResourceMirror, Update

log = logging.getLogger("palisade.agent")

_STOP_POLL = 0.2  # longest wait between looks at the stop event
_DRAIN_LIMIT = 10_000  # events taken from the queue before the loop looks at its deadlines


class Graph(Protocol):
    """What the agent needs of ``palisade.calc.CalcGraph``."""

    def on_update(self, key: ResourceKey, document: dict[str, Any] | None) -> None: ...

    def flush(self) -> int: ...


class DataplaneDriver(Protocol):
    """What the agent needs of a dataplane driver beyond ``DataplaneCallbacks`` (which the
    graph calls): programming what the callbacks recorded, and repairing drift."""

    def apply(self) -> int: ...

    def resync(self) -> int: ...


StoreSource = Store | Callable[[], Store]
"""A store the caller owns, or a function that opens one (the agent then owns and reopens it)."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Timing. ``apply_interval``: the dataplane is applied at most once per this many
    seconds (the first change after a quiet spell is applied at once, a burst is batched);
    ``resync_interval``: how often the dataplane re-reads the kernel and repairs drift;
    ``watch_timeout``: how long one watch request lasts before the watcher renews it;
    ``backoff_initial``/``backoff_max``: retry delays after datastore or dataplane failures."""

    apply_interval: float = 0.1
    resync_interval: float = 90.0
    watch_timeout: float = 5.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        for name in ("apply_interval", "resync_interval", "watch_timeout", "backoff_initial"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"AgentConfig.{name} must be a finite number >= 0: {value!r}")
        if self.watch_timeout <= 0 or self.resync_interval <= 0:
            raise ValueError("AgentConfig: watch_timeout and resync_interval must be > 0")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("AgentConfig.backoff_max must be at least backoff_initial")

    def backoff(self, failures: int) -> float:
        """The delay before retry number ``failures`` (1, 2, …): doubling, capped, with a
        little jitter so that many agents do not retry in step."""
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 30))
        return delay * random.uniform(0.8, 1.0)


class Phase(enum.Enum):
    """Where the agent is: ``STARTING`` before the first sync, ``WATCHING`` in sync and
    following changes, ``RESYNCING`` relisting after a compaction, ``UNAVAILABLE`` when the
    datastore cannot be reached (the last state stays programmed), ``STOPPED`` after run()."""

    STARTING = "starting"
    WATCHING = "watching"
    RESYNCING = "resyncing"
    UNAVAILABLE = "unavailable"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of the agent. ``revision``: the store revision the graph reflects (None before
    the first sync); ``programmed``: the dataplane has been applied at least once; ``syncs``:
    successful lists (the initial sync and every full resync); ``datastore_failures``: failed
    attempts since the datastore was last reached."""

    phase: Phase
    revision: int | None
    resources: int
    programmed: bool
    syncs: int
    applies: int
    dataplane_resyncs: int
    datastore_failures: int
    dataplane_failures: int
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        """The status as a JSON-ready mapping (``phase`` by its value)."""
        return {
            "phase": self.phase.value,
            "revision": self.revision,
            "resources": self.resources,
            "programmed": self.programmed,
            "syncs": self.syncs,
            "applies": self.applies,
            "dataplane_resyncs": self.dataplane_resyncs,
            "datastore_failures": self.datastore_failures,
            "dataplane_failures": self.dataplane_failures,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class _WatchEnded:
    """The watcher's last word: the exception that ended its watch, or None when the store
    ended it early (closed)."""

    error: Exception | None


_Item = tuple[int, WatchEvent | _WatchEnded | None]  # (generation, event); None wakes the loop


class _Watcher:
    """A thread that follows ``store`` from a revision and queues what it sees."""

    def __init__(
        self,
        store: Store,
        from_revision: int,
        generation: int,
        inbox: queue.SimpleQueue[_Item],
        timeout: float,
    ) -> None:
        self._store = store
        self._position = from_revision
        self._generation = generation
        self._inbox = inbox
        self._timeout = timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"palisade-agent-watch-{generation}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                received = False
                for event in self._store.watch(self._position, timeout=self._timeout):
                    if self._stopping.is_set():
                        return
                    self._inbox.put((self._generation, event))
                    self._position = event.revision
                    received = True
                # A watch that ends long before its timeout with nothing in it was ended by
                # the store (closed): renewing it would spin.
                if not received and time.monotonic() - started < self._timeout / 2:
                    if not self._stopping.is_set():
                        self._inbox.put((self._generation, _WatchEnded(None)))
                    return
        except Exception as exc:  # reported to the loop, which decides; never lost
            if not self._stopping.is_set():
                self._inbox.put((self._generation, _WatchEnded(exc)))

    def signal_stop(self) -> None:
        self._stopping.set()

    def stop(self, wait: float) -> None:
        self._stopping.set()
        self._thread.join(wait)
        if self._thread.is_alive():
            log.debug("watch thread %s still in a request; left to end on its own", self._thread)


@dataclass
class _Counters:
    syncs: int = 0
    applies: int = 0
    dataplane_resyncs: int = 0
    datastore_failures: int = 0
    dataplane_failures: int = 0
    last_error: str | None = None


class Agent:
    """One node's agent: ``store`` → ``graph`` → ``dataplane``, until stopped.

    ``graph`` is the node's calc graph, built with ``dataplane`` as its callbacks (see
    :func:`palisade.agent.run_agent` for the real wiring). ``store`` is a :class:`Store` the
    caller owns, or a function that opens one; with a function the agent opens the store
    itself, retries while it cannot, reopens it after a failure and closes it at the end.
    ``on_status`` is called from the loop's thread whenever the status has changed (at most
    once per turn of the loop, and once more when it stops).
    """

    def __init__(
        self,
        store: StoreSource,
        graph: Graph,
        dataplane: DataplaneDriver,
        config: AgentConfig | None = None,
        *,
        on_status: Callable[[AgentStatus], None] | None = None,
    ) -> None:
        if isinstance(store, Store):
            self._store: Store | None = store
            self._open: Callable[[], Store] | None = None
        else:
            self._store = None
            self._open = store
        self._graph = graph
        self._dataplane = dataplane
        self.config = config or AgentConfig()
        self._mirror = ResourceMirror()
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._watcher: _Watcher | None = None
        self._generation = 0
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._phase = Phase.STARTING
        self._revision: int | None = None
        self._counters = _Counters()
        self._on_status = on_status
        self._reported: AgentStatus | None = None
        # Loop state; only the run() thread touches it.
        self._need_sync = True
        self._sync_at = 0.0
        self._pending = False  # graph updates not yet flushed and applied
        self._apply_retry = False  # the last apply failed; its intents are still to program
        self._apply_at = 0.0  # earliest time of the next apply
        self._programmed = False
        self._resync_at = math.inf

    # -- public ---------------------------------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        with self._changed:
            counters = self._counters
            return AgentStatus(
                phase=self._phase,
                revision=self._revision,
                resources=len(self._mirror),
                programmed=self._programmed,
                syncs=counters.syncs,
                applies=counters.applies,
                dataplane_resyncs=counters.dataplane_resyncs,
                datastore_failures=counters.datastore_failures,
                dataplane_failures=counters.dataplane_failures,
                last_error=counters.last_error,
            )

    def wait_for(self, predicate: Callable[[AgentStatus], bool], timeout: float) -> AgentStatus:
        """Block until ``predicate(status)`` holds; raises ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                status = self.status
                if predicate(status):
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"agent status did not get there in {timeout} s: {status}")
                self._changed.wait(remaining)

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread)."""
        self._stop.set()
        self._inbox.put((-1, None))

    def run(self, stop: threading.Event | None = None) -> None:
        """Sync, then follow the store until :meth:`stop` is called or ``stop`` is set.

        Returns normally on stop. Datastore and dataplane failures are logged and retried;
        only a malformed store (an opener raising a ``DatastoreError`` that is not
        ``DatastoreUnavailable``, e.g. a bad URL) ends the loop with that exception. The
        dataplane is left as it is on return: a restarted agent adopts it.
        """
        try:
            while not self._stop.is_set() and not (stop is not None and stop.is_set()):
                self._step()
                self._report()
        finally:
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.signal_stop()
            if self._open is not None:
                self._close_store()  # also ends a watch blocked in a request
            if watcher is not None:
                # A store the caller owns cannot be closed here to cut its watch short; the
                # watcher, a daemon, then ends on its own within watch_timeout, queuing nothing.
                watcher.stop(wait=_STOP_POLL)
            self._set_phase(Phase.STOPPED)
            self._report()
            log.info("agent stopped at revision %s", self._revision)

    def _report(self) -> None:
        if self._on_status is None:
            return
        status = self.status
        if status == self._reported:
            return
        self._reported = status
        try:
            self._on_status(status)
        except Exception:
            log.exception("status listener failed")

    # -- the loop -------------------------------------------------------------------------

    def _step(self) -> None:
        now = time.monotonic()
        if self._need_sync and now >= self._sync_at:
            self._sync()
        now = time.monotonic()
        if (self._pending or self._apply_retry) and now >= self._apply_at:
            self._flush_and_apply()
        now = time.monotonic()
        if self._programmed and now >= self._resync_at:
            self._resync_dataplane()
        self._receive(self._next_deadline() - time.monotonic())

    def _next_deadline(self) -> float:
        deadlines = [time.monotonic() + _STOP_POLL, self._resync_at]
        if self._need_sync:
            deadlines.append(self._sync_at)
        if self._pending or self._apply_retry:
            deadlines.append(self._apply_at)
        return min(deadlines)

    def _receive(self, wait: float) -> None:
        try:
            item = self._inbox.get(timeout=max(wait, 0.0))
        except queue.Empty:
            return
        for _ in range(_DRAIN_LIMIT):
            self._handle(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
        self._handle(item)

    def _handle(self, item: _Item) -> None:
        generation, payload = item
        if payload is None or generation != self._generation:
            return  # a wake-up, or left over from a watch given up on
        if isinstance(payload, _WatchEnded):
            self._on_watch_ended(payload.error)
            return
        update = self._mirror.on_event(payload)
        if update is not None:
            self._feed(update)
        with self._changed:
            self._revision = payload.revision

    def _on_watch_ended(self, error: Exception | None) -> None:
        self._stop_watcher()
        self._need_sync = True
        if isinstance(error, RevisionCompacted):
            log.warning("watch fell behind compaction (%s); relisting the datastore", error)
            self._sync_at = time.monotonic()
            self._set_phase(Phase.RESYNCING)
            return
        reason = "the store ended the watch" if error is None else _describe(error)
        self._datastore_failed(reason, error)

    def _sync(self) -> None:
        """List the whole store and bring the graph to it; start watching after it."""
        self._stop_watcher()
        try:
            store = self._get_store()
            revision = store.revision  # read first: the listing is at least this new
            listing = store.list()
        except (DatastoreError, OSError) as exc:
            if self._open is not None and self._store is None and _is_permanent(exc):
                raise
            self._datastore_failed(_describe(exc), exc)
            return
        previous = self._revision
        if previous is not None and revision < previous:
            log.warning(
                "datastore revision went back from %d to %d: a different or restored store",
                previous,
                revision,
            )
        updates = self._mirror.on_listing(listing)
        for update in updates:
            self._feed(update)
        failed_attempts = self._counters.datastore_failures
        with self._changed:
            self._revision = revision
            self._counters.syncs += 1
            self._counters.datastore_failures = 0
            self._changed.notify_all()
        self._need_sync = False
        log.log(
            logging.WARNING if self._phase is Phase.RESYNCING else logging.INFO,
            "synced with the datastore at revision %d%s: %d resources, %d changed",
            revision,
            f" after {failed_attempts} failed attempts" if failed_attempts else "",
            len(listing),
            len(updates),
        )
        # The (re)sync's changes are applied at once, in one transaction, whatever the rate
        # limit: they are what the dataplane has been missing.
        self._pending = True
        self._apply_at = 0.0
        self._flush_and_apply()
        self._generation += 1
        self._watcher = _Watcher(
            store, revision, self._generation, self._inbox, self.config.watch_timeout
        )
        self._set_phase(Phase.WATCHING)

    def _feed(self, update: Update) -> None:
        try:
            self._graph.on_update(update.key, update.document)
        except Exception:
            # The graph is meant to treat what it cannot use as absent; if it raises anyway,
            # one resource must not stop the node's enforcement.
            log.exception("calc graph failed on %s; continuing without it", update.key)
        self._pending = True

    def _flush_and_apply(self) -> None:
        if self._pending:
            self._pending = False
            try:
                self._graph.flush()
            except Exception:
                log.exception("calc graph flush failed")
        now = time.monotonic()
        try:
            commands = self._dataplane.apply()
        except Exception as exc:
            self._apply_retry = True
            with self._changed:
                self._counters.dataplane_failures += 1
                failures = self._counters.dataplane_failures
                self._counters.last_error = f"dataplane: {_describe(exc)}"
                self._changed.notify_all()
            delay = self.config.backoff(failures)
            log.error("dataplane apply failed (retrying in %.1f s): %s", delay, _describe(exc))
            self._apply_at = now + delay
            return
        self._apply_retry = False
        self._apply_at = now + self.config.apply_interval
        if not self._programmed:
            self._resync_at = now + self.config.resync_interval
        with self._changed:
            self._programmed = True
            self._counters.applies += 1
            self._counters.dataplane_failures = 0
            self._changed.notify_all()
        log.debug("dataplane applied at revision %s: %d commands", self._revision, commands)

    def _resync_dataplane(self) -> None:
        self._resync_at = time.monotonic() + self.config.resync_interval
        try:
            repaired = self._dataplane.resync()
        except Exception as exc:
            with self._changed:
                self._counters.dataplane_failures += 1
                self._counters.last_error = f"dataplane resync: {_describe(exc)}"
                self._changed.notify_all()
            log.error("dataplane resync failed: %s", _describe(exc))
            self._resync_at = time.monotonic() + min(
                self.config.resync_interval, self.config.backoff(1)
            )
            return
        with self._changed:
            self._counters.dataplane_resyncs += 1
            self._changed.notify_all()
        if repaired:
            log.warning("dataplane resynced: drift repaired with %d commands", repaired)
        else:
            log.debug("dataplane resynced: no drift")

    # -- datastore plumbing ---------------------------------------------------------------

    def _get_store(self) -> Store:
        if self._store is None:
            assert self._open is not None
            self._store = self._open()
        return self._store

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:  # closing a broken connection may fail; it is gone anyway
                log.debug("closing the datastore failed: %s", exc)

    def _datastore_failed(self, reason: str, error: BaseException | None) -> None:
        with self._changed:
            self._counters.datastore_failures += 1
            failures = self._counters.datastore_failures
            self._counters.last_error = f"datastore: {reason}"
            self._changed.notify_all()
        delay = self.config.backoff(failures)
        self._sync_at = time.monotonic() + delay
        self._need_sync = True
        if self._open is not None:
            self._close_store()  # reopened on the next attempt: a fresh connection
        if error is not None and not isinstance(error, DatastoreError | OSError):
            log.error("datastore watch failed unexpectedly", exc_info=error)
        # Loud when the outage starts, then a reminder every tenth attempt.
        level = logging.WARNING if failures == 1 or failures % 10 == 0 else logging.DEBUG
        state = "keeping the programmed state" if self._programmed else "nothing programmed yet"
        log.log(
            level,
            "datastore unavailable (%s); %s; retry %d in %.1f s",
            reason,
            state,
            failures,
            delay,
        )
        self._set_phase(Phase.UNAVAILABLE)

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self._generation += 1  # whatever it still queues is dropped
            watcher.stop(wait=self.config.watch_timeout + 1.0)

    def _set_phase(self, phase: Phase) -> None:
        with self._changed:
            if self._phase is not phase:
                log.debug("agent phase %s → %s", self._phase.value, phase.value)
            self._phase = phase
            self._changed.notify_all()


def _is_permanent(exc: BaseException) -> bool:
    """An opener's error that retrying cannot fix: a malformed URL, a store of the future."""
    return isinstance(exc, DatastoreError) and not isinstance(exc, DatastoreUnavailable)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
