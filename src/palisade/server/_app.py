"""The FastAPI application of ``palisade server``.

One process holds the resource datastore (SQLite by default, or etcd) and the DuckDB flow
store, and serves:

- resources: ``GET /api/v1/resources`` (``?kind=&namespace=``), ``GET|DELETE
  /api/v1/resources/{kind}/{namespace}/{name}`` (``-`` for a cluster-scoped resource's
  namespace), ``POST /api/v1/apply`` with YAML or JSON documents — validated by the same
  models as ``palisade apply``, every problem as ``file:document: field.path: reason``, and
  applied atomically (all or nothing);
- flow ingest: ``POST /api/v1/flows/ingest`` with an ``X-Palisade-Batch`` id and either an
  Apache Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``, Calico's
  field names as columns: what agents send; a batch that does not fit is refused whole with
  422) or Calico-format NDJSON (malformed lines reported, the rest stored); the answer (200)
  comes after the records are committed, and a batch id the store has seen is acknowledged
  again without adding anything, so an agent that retries after a lost answer or a server
  restart neither loses nor doubles a record. Arrow batches that arrive together share one
  transaction (group commit: while one commit runs, the batches arriving queue up and go in
  with the next), since DuckDB's cost per commit far exceeds its cost per row at agent batch
  sizes;
- flow queries: ``GET /api/v1/flows`` (Calico's field names), ``/flows/top``, ``/flows/denied``,
  and the service graph ``GET /api/v1/graph`` with ``/graph/edge``.

The flow store allows one writer; every call into it holds :attr:`ServerState.lock`. Retention
(by age and by count) runs every ``retention_interval`` seconds in a background thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from palisade.datastore import DatastoreError, ResourceKey, Store, open_store
from palisade.events import EventStore
from palisade.flowstore import ARROW_STREAM_MEDIA_TYPE, ArrowBatchError, FlowStore, IngestResult
from palisade.model import load_text
from palisade.resources import KUBERNETES_NETWORK_POLICY_KIND, apply_documents, store_key

from ._events import event_routes

API = "/api/v1"
STATIC = Path(__file__).with_name("static")
CONSOLE_ASSETS_ENV = "PALISADE_CONSOLE_ASSETS"


def console_assets() -> Path:
    """The npm packages the console serves: ``$PALISADE_CONSOLE_ASSETS``, or the checkout's
    ``console/node_modules`` (``make`` installs them there)."""
    explicit = os.environ.get(CONSOLE_ASSETS_ENV)
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[3] / "console" / "node_modules"


MAX_INGEST_BYTES = 256 << 20  # one agent batch; larger imports are sent in chunks
#: At most this many records per group commit of Arrow batches.
GROUP_COMMIT_RECORDS = 2_000_000


@dataclass
class ServerConfig:
    datastore: str = "sqlite:///palisade.db"
    flow_store: str = "palisade-flows.duckdb"
    retention_seconds: float | None = 7 * 86400.0
    max_records: int | None = 50_000_000
    retention_interval: float = 60.0
    event_store: str = ""  # empty: ``events.db`` beside the flow store
    event_retention_seconds: float | None = 30 * 86400.0
    max_events: int | None = 1_000_000


@dataclass
class ServerState:
    config: ServerConfig
    store: Store
    flows: FlowStore
    events: EventStore
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    commits: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.commits = GroupCommit(self)

    def ingest_arrow(self, batch_id: str | None, body: bytes) -> IngestResult:
        """One Arrow batch, committed with whatever other batches are waiting."""
        return self.commits.submit(batch_id, body)

    def retain(self) -> int:
        now = time.time()
        self.events.apply_retention(
            max_age_seconds=self.config.event_retention_seconds,
            max_events=self.config.max_events,
            now=now,
        )
        with self.lock:
            return self.flows.apply_retention(
                max_age_seconds=self.config.retention_seconds,
                max_records=self.config.max_records,
                now=now,
            )


@dataclass
class _Waiting:
    batch_id: str | None
    table: Any
    outcome: IngestResult | Exception | None = None


class GroupCommit:
    """Group commit of Arrow batches: a request thread queues its batch; the first one to
    find no commit running takes everything queued (up to ``GROUP_COMMIT_RECORDS``) into one
    :meth:`FlowStore.ingest_arrow_batches` transaction, the others wait for its outcome (or
    for their turn to write). Each request is answered only after the transaction holding its
    batch committed."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._condition = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def submit(self, batch_id: str | None, body: bytes) -> IngestResult:
        from palisade.flowstore._arrow import read_batch

        entry = _Waiting(batch_id, read_batch(body))  # decoded outside the store's lock
        with self._condition:
            self._queue.append(entry)
        while True:
            with self._condition:
                while entry.outcome is None and self._writing:
                    self._condition.wait()
                if entry.outcome is not None:
                    break
                self._writing = True
                group: list[_Waiting] = []
                records = 0
                while self._queue and (not group or records < GROUP_COMMIT_RECORDS):
                    group.append(self._queue.pop(0))
                    records += group[-1].table.num_rows
            outcomes: list[IngestResult | Exception]
            try:
                with self._state.lock:
                    outcomes = list(
                        self._state.flows.ingest_arrow_batches(
                            [(waiting.batch_id, waiting.table) for waiting in group]
                        )
                    )
            except Exception as exc:  # the store failed, not a batch: all may retry
                outcomes = [exc] * len(group)
            with self._condition:
                for waiting, outcome in zip(group, outcomes, strict=True):
                    waiting.outcome = outcome
                self._writing = False
                self._condition.notify_all()
        result = entry.outcome
        if isinstance(result, Exception):
            raise result
        return result


def _since(value: float | None, window: str | None) -> float | None:
    """``since`` as epoch seconds, or ``window`` as a duration back from now (``15m``)."""
    if window:
        return time.time() - parse_duration(window)
    return value


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` → seconds; ``ValueError`` otherwise."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = text.strip()
    scale = units.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 7d)") from None
    if value < 0:
        raise ValueError(f"{text!r}: a duration is not negative")
    return value * (scale or 1.0)


def _key(kind: str, namespace: str, name: str) -> ResourceKey:
    return ResourceKey(kind, None if namespace == "-" else namespace, name)


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The application; the datastore and flow store open when it starts and close when it
    stops (use it as an ASGI app, or in ``fastapi.testclient.TestClient`` as a context)."""
    config = config or ServerConfig()
    holder: dict[str, ServerState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if config.flow_store != ":memory:":
            Path(config.flow_store).parent.mkdir(parents=True, exist_ok=True)
        state = ServerState(
            config,
            open_store(config.datastore),
            FlowStore(config.flow_store),
            EventStore(_event_store_path(config)),
        )
        holder["state"] = state
        retention = threading.Thread(target=_retention_loop, args=(state,), daemon=True)
        retention.start()
        try:
            yield
        finally:
            state.stop.set()
            retention.join(timeout=5)
            with state.lock:
                state.flows.close()
            state.events.close()
            state.store.close()

    app = FastAPI(title="Palisade", version="1", lifespan=lifespan)

    def state() -> ServerState:
        return holder["state"]

    @app.get(f"{API}/health")
    def health() -> dict[str, Any]:
        current = state()
        with current.lock:
            records = current.flows.count()
        return {"status": "ok", "revision": current.store.revision, "flow_records": records}

    # -- resources ---------------------------------------------------------------------------

    @app.get(f"{API}/resources")
    def list_resources(kind: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        kinds: list[str | None] = [kind] if kind else [None]
        if kind == "NetworkPolicy":
            kinds.append(KUBERNETES_NETWORK_POLICY_KIND)
        items = [
            item.value for k in kinds for item in state().store.list(kind=k, namespace=namespace)
        ]
        return {"kind": "List", "items": items}

    @app.get(API + "/resources/{kind}/{namespace}/{name}")
    def get_resource(kind: str, namespace: str, name: str) -> dict[str, Any]:
        found = state().store.get(_key(kind, namespace, name))
        if found is None:
            raise HTTPException(404, f"{kind} {namespace}/{name} not found")
        return dict(found.value)

    @app.delete(API + "/resources/{kind}/{namespace}/{name}")
    def delete_resource(kind: str, namespace: str, name: str) -> dict[str, Any]:
        key = _key(kind, namespace, name)
        store = state().store
        if store.get(key) is None:
            raise HTTPException(404, f"{kind} {namespace}/{name} not found")
        try:
            revision = store.apply([], deletes=[key])
        except DatastoreError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {"deleted": str(key), "revision": revision}

    @app.post(f"{API}/apply")
    async def apply(request: Request) -> JSONResponse:
        body = (await request.body()).decode("utf-8", errors="replace")
        json_body = "json" in request.headers.get("content-type", "")
        result = load_text(body, "request.json" if json_body else "request.yaml")
        if result.problems:
            return JSONResponse(
                {"applied": [], "problems": [str(p) for p in result.problems]}, status_code=422
            )
        documents = [resource.to_document() for resource in result.resources]
        try:
            revision = apply_documents(state().store, documents)
        except DatastoreError as exc:
            raise HTTPException(503, str(exc)) from exc
        return JSONResponse(
            {"applied": [str(store_key(d)) for d in documents], "revision": revision}
        )

    # -- flows -------------------------------------------------------------------------------

    @app.post(f"{API}/flows/ingest")
    async def ingest(
        request: Request,
        batch: Annotated[str | None, Header(alias="X-Palisade-Batch")] = None,
    ) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_INGEST_BYTES:
            raise HTTPException(413, f"a batch holds at most {MAX_INGEST_BYTES} bytes")
        current = state()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == ARROW_STREAM_MEDIA_TYPE:
            try:
                result = await run_in_threadpool(current.ingest_arrow, batch, body)
            except ArrowBatchError as exc:
                raise HTTPException(422, f"Arrow batch refused: {exc}") from exc
        else:

            def ingest_ndjson() -> IngestResult:
                with current.lock:
                    return current.flows.ingest_ndjson(body, batch_id=batch)

            result = await run_in_threadpool(ingest_ndjson)
        return {
            "batch": batch,
            "imported": result.imported,
            "duplicate": result.duplicate,
            "malformed": [{"line": line, "reason": reason} for line, reason in result.malformed],
        }

    @app.get(f"{API}/flows")
    def flows(
        since: float | None = None,
        until: float | None = None,
        window: Annotated[str | None, Query(description="e.g. 15m, 1h, 7d")] = None,
        namespace: str | None = None,
        workload: str | None = None,
        action: str | None = None,
        policy: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        current = state()
        with current.lock:
            records = current.flows.query(
                since=_since(since, window),
                until=until,
                namespace=namespace,
                workload=workload,
                action=action,
                policy=policy,
                limit=limit,
            )
        return [record.to_json() for record in records]

    @app.get(f"{API}/flows/top")
    def top(
        by: str = "workload",
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        current = state()
        with current.lock:
            return current.flows.top_talkers(
                since=_since(since, window), until=until, by=by, limit=limit
            )

    @app.get(f"{API}/flows/denied")
    def denied(
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        current = state()
        with current.lock:
            return current.flows.denied(since=_since(since, window), until=until, limit=limit)

    @app.get(f"{API}/graph")
    def graph(
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
        expand: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        current = state()
        with current.lock:
            return current.flows.graph(
                since=_since(since, window), until=until, expand=tuple(expand or ())
            )

    @app.get(f"{API}/graph/edge")
    def graph_edge(
        source: str,
        target: str,
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        current = state()
        with current.lock:
            records = current.flows.edge_flows(
                source, target, since=_since(since, window), until=until, limit=limit
            )
        return [record.to_json() for record in records]

    @app.post(f"{API}/whatif")
    async def whatif_endpoint(
        request: Request,
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
        staged: bool = True,
        limit: int = 2_000_000,
    ) -> dict[str, Any]:
        """Replay the stored flows of a window through the datastore's policies with the
        staged ones enforced (``staged``), and/or through proposed policies in the body (YAML
        or JSON documents, validated like ``apply``); which flows would change verdict."""
        from palisade.whatif import whatif

        body = (await request.body()).decode("utf-8", errors="replace")
        proposed: list[dict[str, Any]] = []
        if body.strip():
            result = load_text(body, "request.yaml")
            if result.problems:
                raise HTTPException(422, [str(p) for p in result.problems])
            proposed = [resource.to_document() for resource in result.resources]
        current = state()
        documents = [item.value for item in current.store.list()]
        with current.lock:
            records = current.flows.query(since=_since(since, window), until=until, limit=limit)
        report = whatif(records, documents, proposed, staged=staged)
        return report.to_json()

    app.include_router(event_routes(lambda: state().events, _since, lambda: state().store, API))

    # -- the console ---------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/vendor/cytoscape.min.js", include_in_schema=False)
    def cytoscape() -> FileResponse:
        library = console_assets() / "cytoscape" / "dist" / "cytoscape.min.js"
        if not library.is_file():
            raise HTTPException(
                404, f"{library} is missing: run `make` (it installs the console's npm packages)"
            )
        return FileResponse(library, media_type="text/javascript")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


def _event_store_path(config: ServerConfig) -> str:
    if config.event_store:
        return config.event_store
    if config.flow_store == ":memory:":
        return ":memory:"
    return str(Path(config.flow_store).with_name("palisade-events.db"))


def _retention_loop(state: ServerState) -> None:
    while not state.stop.wait(state.config.retention_interval):
        with contextlib.suppress(Exception):  # the next round retries; queries are unaffected
            state.retain()
