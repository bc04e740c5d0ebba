"""The WAF in front of one workload: settings from the datastore, Security Events out.

``palisade waf proxy`` puts these together around :func:`palisade.waf._proxy.run_proxy`:

- :class:`FirewallSettings` follows the datastore: the WebApplicationFirewall that selects the
  workload's pod (its namespace and labels) gives the engine's settings; a change to either —
  the resource, or the pod's labels — reloads the engine live (``SIGHUP`` to the proxy, which
  builds the new engine off the event loop and swaps it in; connections stay open). Without a
  datastore, the settings are the command line's. A workload no resource selects is not
  inspected (mode ``Off``).
- :func:`engine_for` builds the engine: the CRS with the resource's SecLang around it.
- :class:`EventShipper` sends each request that matched attack rules to the server as a
  Security Event, in batches, retried with backoff; while the server is away it keeps up to
  ``max_queue`` events and counts what it had to drop.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from palisade.datastore import DatastoreError, Store
from palisade.events import SecurityEvent, waf_event
from palisade.model import (
    ModelError,
    WebApplicationFirewall,
    WebApplicationFirewallSpec,
    parse_document,
)

from ._config import crs_files, engine_config, select_firewall

log = logging.getLogger("palisade.waf.service")

OFF = WebApplicationFirewallSpec(mode="Off")


def engine_for(spec: WebApplicationFirewallSpec, crs: Path) -> Any:
    """A :class:`palisade.waf.WafEngine` running the CRS at ``crs`` with ``spec``'s settings."""
    from palisade.waf import WafEngine

    config = engine_config(spec)
    return WafEngine.load(crs_files(crs), before=config.before + config.setup, after=config.after)


class FirewallSettings:
    """The settings that apply to one workload, kept current from the datastore."""

    def __init__(
        self,
        store: Store | None,
        namespace: str,
        pod: str,
        *,
        fallback: WebApplicationFirewallSpec = OFF,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.pod = pod
        self.fallback = fallback
        self.spec = fallback
        self.source = "command line"
        self._peers: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> bool:
        """Read the datastore again; True when the settings changed."""
        if self.store is None:
            return False
        pods = self.store.list(kind="Pod")
        peers: dict[str, tuple[str, str]] = {}
        labels: dict[str, str] | None = None
        for item in pods:
            metadata = item.value.get("metadata") or {}
            namespace = metadata.get("namespace") or "default"
            name = str(metadata.get("name"))
            for entry in (item.value.get("status") or {}).get("podIPs") or []:
                if isinstance(entry, dict) and entry.get("ip"):
                    peers[str(entry["ip"])] = (namespace, name)
            ip = (item.value.get("status") or {}).get("podIP")
            if ip:
                peers[str(ip)] = (namespace, name)
            if namespace == self.namespace and name == self.pod:
                labels = dict(metadata.get("labels") or {})
        firewalls: list[WebApplicationFirewall] = []
        for item in self.store.list(kind="WebApplicationFirewall", namespace=self.namespace):
            try:
                resource = parse_document(item.value)
            except ModelError as exc:  # stored by an older version, say: skip, say why
                log.warning("skipping %s: %s", item.key, exc)
                continue
            if isinstance(resource, WebApplicationFirewall):
                firewalls.append(resource)
        chosen = select_firewall(firewalls, self.namespace, labels) if labels is not None else None
        spec = chosen.spec if chosen else self.fallback
        source = f"WebApplicationFirewall {chosen.namespace}/{chosen.name}" if chosen else "none"
        with self._lock:
            self._peers = peers
            changed = spec != self.spec
            self.spec, self.source = spec, source
        return changed

    def peer(self, ip: str) -> tuple[str, str] | None:
        with self._lock:
            return self._peers.get(ip)

    def follow(self, on_change: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """A thread that watches the datastore and calls ``on_change`` when settings change."""

        def run() -> None:
            assert self.store is not None
            revision = self.store.revision
            while not stop.is_set():
                try:
                    for event in self.store.watch(
                        revision, kinds=("WebApplicationFirewall", "Pod"), timeout=1.0
                    ):
                        revision = event.revision
                        if self.refresh():
                            log.info("WAF settings changed (%s): reloading", self.source)
                            on_change()
                        if stop.is_set():
                            return
                except DatastoreError as exc:
                    log.warning("datastore watch: %s; resuming", exc)
                    stop.wait(1.0)
                    revision = self.store.revision
                    if self.refresh():
                        on_change()

        thread = threading.Thread(target=run, name="waf-settings", daemon=True)
        thread.start()
        return thread


class EventShipper:
    """Security Events to ``POST /api/v1/events`` on the server, batched and retried.

    Safe across ``fork``: each process starts its own sender on its first event."""

    def __init__(
        self,
        server: str | None,
        *,
        sink: Callable[[SecurityEvent], None] | None = None,
        batch: int = 200,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        self.server = server.rstrip("/") if server else None
        self.sink = sink
        self.batch = batch
        self.interval = interval
        self.dropped = 0
        self.sent = 0
        self._queue: collections.deque[SecurityEvent] = collections.deque()
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._pid = -1
        self._closing = False

    def add(self, event: SecurityEvent) -> None:
        if self.sink is not None:
            self.sink(event)
        if self.server is None:
            return
        with self._cond:
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="waf-events", daemon=True).start()
            if len(self._queue) >= self.batch:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            with self._cond:
                self._cond.notify()
            time.sleep(0.05)
        return not self.pending()

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _client(self) -> tuple[httpx.Client, str]:
        """An HTTP client for the server; ``unix:/path`` reaches it over a Unix socket (from
        another network namespace, say)."""
        assert self.server is not None
        if self.server.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=self.server[len("unix:") :])
            return httpx.Client(transport=transport, timeout=10.0), "http://palisade"
        return httpx.Client(timeout=10.0), self.server

    def _run(self) -> None:
        backoff = self.interval
        client, base = self._client()
        with client:
            while True:
                with self._cond:
                    if not self._queue:
                        if self._closing:
                            return
                        self._cond.wait(self.interval)
                    batch = list(self._queue)[: self.batch]
                if not batch:
                    continue
                try:
                    answer = client.post(f"{base}/api/v1/events", json=[e.to_json() for e in batch])
                    ok = answer.status_code == 200
                    if answer.status_code == 422:  # the server will never take these
                        log.error("server rejected %d event(s): %s", len(batch), answer.text)
                        ok = True
                except httpx.HTTPError as exc:
                    log.warning("sending events: %s", exc)
                    ok = False
                if ok:
                    sent = {id(e) for e in batch}  # the batch holds them: ids stay unique
                    with self._cond:
                        while self._queue and id(self._queue[0]) in sent:
                            self._queue.popleft()
                        self.sent += len(batch)
                    backoff = self.interval
                else:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)


def event_hook(
    settings: FirewallSettings,
    shipper: EventShipper,
    *,
    dest_ip: str = "",
    dest_port: int | None = None,
) -> Callable[[Any, Any], None]:
    """The proxy's result hook: one Security Event per request that matched attack rules."""

    def on_result(request: Any, result: Any) -> None:
        logged = [m for m in getattr(result, "matches", ()) if getattr(m, "logged", True)]
        if not logged:
            return
        source = settings.peer(request.remote_addr)
        event = waf_event(
            request=request,
            matches=logged,
            blocked=bool(result.blocked),
            status=result.status,
            inbound_score=int(getattr(result, "inbound_score", 0)),
            outbound_score=int(getattr(result, "outbound_score", 0)),
            time=time.time(),
            mode=settings.spec.mode,
            source_ip=request.remote_addr,
            source_port=request.remote_port or None,
            source_namespace=source[0] if source else "",
            source_name=source[1] if source else "",
            dest_ip=dest_ip,
            dest_port=dest_port,
            dest_namespace=settings.namespace if settings.store is not None else "",
            dest_name=settings.pod if settings.store is not None else "",
            origin="waf/proxy",
        )
        if event is not None:
            shipper.add(event)

    return on_result


def json_lines_sink(path: Path) -> Callable[[SecurityEvent], None]:
    """Append each event to ``path`` as one JSON line (``--events-log``)."""
    lock = threading.Lock()

    def write(event: SecurityEvent) -> None:
        line = json.dumps(event.to_json(), separators=(",", ":")) + "\n"
        with lock, path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    return write


def reload_self() -> None:
    """Ask the running proxy (this process, or its supervisor) to rebuild its engine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGHUP)
