"""The server's security-event API.

- ``POST /api/v1/events``: a JSON array of events (or ``{"events": [...]}``) from a detector.
  Every document is validated first; one bad document rejects the whole batch (422, every
  problem listed as ``events[i]: field: reason``) and stores nothing. Event ids the store holds
  already are acknowledged again without a copy, so a detector can retry a batch.
- ``GET /api/v1/events`` (``?type=&since=&window=&namespace=&workload=&include_dismissed=&limit=``),
  newest first; ``GET /api/v1/events/{id}``.
- ``POST /api/v1/events/{id}/acknowledge`` and ``/dismiss`` (``?undo=true`` takes it back).
- ``POST /api/v1/events/{id}/exclusion`` (``?scope=path|workload``, optional JSON body
  ``{"rule_ids": [...]}``): for a WAF event, add an exclusion of its attack rules (or the
  given ones) to the WebApplicationFirewall that protects the event's workload — for the
  request's path only, or for every path — through the same validation and atomic apply as
  ``palisade apply``. The event is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from palisade.datastore import DatastoreError, ResourceKey, Store
from palisade.events import EventError, EventStore, SecurityEvent, event_from_json
from palisade.model import WebApplicationFirewall, parse_document
from palisade.resources import apply_documents, store_key
from palisade.waf._config import select_firewall, with_exclusion

MAX_EVENT_BATCH_BYTES = 16 << 20


def parse_event_batch(body: bytes) -> tuple[list[SecurityEvent], list[str]]:
    """The events of one batch, or the problems that reject it."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return [], [f"events: not JSON: {exc}"]
    if isinstance(document, dict) and set(document) == {"events"}:
        document = document["events"]
    if not isinstance(document, list):
        return [], ['events: a JSON array of events, or {"events": [...]}']
    events: list[SecurityEvent] = []
    problems: list[str] = []
    for index, item in enumerate(document):
        try:
            events.append(event_from_json(item, where=f"events[{index}]"))
        except EventError as exc:
            problems.append(str(exc))
    return events, problems


def _attack_rule_ids(event: SecurityEvent) -> list[int]:
    rules = event.record.get("rules") or []
    return sorted(
        {
            int(rule["id"])
            for rule in rules
            if any(str(tag).startswith("attack-") for tag in rule.get("tags") or [])
        }
    )


def _request_path(event: SecurityEvent) -> str:
    parts = str(event.record.get("request_line") or "").split(" ")
    target = parts[1] if len(parts) > 1 else "/"
    if "://" in target:  # absolute form
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = target.split("?", 1)[0].split("#", 1)[0] or "/"
    return path if path.startswith("/") else "/" + path


def add_exclusion(
    datastore: Store, event: SecurityEvent, *, scope: str, rule_ids: list[int] | None
) -> dict[str, Any]:
    """Write the exclusion for ``event`` (see the module); ``LookupError``/``ValueError``
    say why it cannot be done."""
    if event.type != "waf":
        raise ValueError(f"event {event.id} is a {event.type} event, not a WAF event")
    if scope not in ("path", "workload"):
        raise ValueError(f"scope {scope!r}: path or workload")
    ids = rule_ids if rule_ids else _attack_rule_ids(event)
    if not ids:
        raise ValueError(f"event {event.id} names no attack rule to exclude")
    namespace, name = event.dest_namespace, event.dest_name
    pod = datastore.get(ResourceKey("Pod", namespace, name)) if name else None
    if pod is None:
        raise LookupError(f"the event's workload {namespace}/{name} is not in the datastore")
    labels = (pod.value.get("metadata") or {}).get("labels") or {}
    firewalls = []
    for item in datastore.list(kind="WebApplicationFirewall", namespace=namespace):
        resource = parse_document(item.value)
        if isinstance(resource, WebApplicationFirewall):
            firewalls.append(resource)
    firewall = select_firewall(firewalls, namespace, labels)
    if firewall is None:
        raise LookupError(f"no WebApplicationFirewall protects {namespace}/{name}")
    document = with_exclusion(
        firewall,
        ids,
        path=_request_path(event) if scope == "path" else None,
        reason=f"from security event {event.id}",
    )
    apply_documents(datastore, [document])
    return document


def event_routes(
    store: Callable[[], EventStore],
    resolve_since: Callable[[float | None, str | None], float | None],
    datastore: Callable[[], Store] | None = None,
    prefix: str = "/api/v1",
) -> APIRouter:
    router = APIRouter(prefix=prefix)

    @router.post("/events")
    async def ingest_events(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_EVENT_BATCH_BYTES:
            raise HTTPException(413, f"a batch holds at most {MAX_EVENT_BATCH_BYTES} bytes")
        events, problems = parse_event_batch(body)
        if problems:
            return JSONResponse({"stored": 0, "problems": problems}, status_code=422)
        stored = store().add(events)
        return JSONResponse({"stored": stored, "duplicate": len(events) - stored})

    @router.get("/events")
    def list_events(
        type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        window: Annotated[str | None, Query(description="e.g. 15m, 1h, 7d")] = None,
        namespace: str | None = None,
        workload: str | None = None,
        include_dismissed: bool = False,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> dict[str, Any]:
        found = store().query(
            type=type,
            since=resolve_since(since, window),
            until=until,
            namespace=namespace,
            workload=workload,
            include_dismissed=include_dismissed,
            limit=limit,
        )
        return {"events": [item.to_json() for item in found]}

    @router.get("/events/{event_id}")
    def get_event(event_id: str) -> dict[str, Any]:
        found = store().get(event_id)
        if found is None:
            raise HTTPException(404, f"event {event_id} not found")
        return found.to_json()

    def _triage(event_id: str, **state: bool) -> dict[str, Any]:
        try:
            return store().set_state(event_id, **state).to_json()
        except KeyError:
            raise HTTPException(404, f"event {event_id} not found") from None

    @router.post("/events/{event_id}/acknowledge")
    def acknowledge(event_id: str, undo: bool = False) -> dict[str, Any]:
        return _triage(event_id, acknowledged=not undo)

    @router.post("/events/{event_id}/dismiss")
    def dismiss(event_id: str, undo: bool = False) -> dict[str, Any]:
        return _triage(event_id, dismissed=not undo)

    @router.post("/events/{event_id}/exclusion")
    async def exclusion(event_id: str, request: Request, scope: str = "path") -> dict[str, Any]:
        if datastore is None:
            raise HTTPException(501, "this server has no resource datastore")
        found = store().get(event_id)
        if found is None:
            raise HTTPException(404, f"event {event_id} not found")
        body = await request.body()
        rule_ids: list[int] | None = None
        if body.strip():
            try:
                requested = json.loads(body).get("rule_ids")
                rule_ids = [int(i) for i in requested] if requested else None
            except (ValueError, TypeError, AttributeError):
                raise HTTPException(422, 'body: {"rule_ids": [942100, ...]}') from None
        try:
            document = add_exclusion(datastore(), found.event, scope=scope, rule_ids=rule_ids)
        except LookupError as exc:
            raise HTTPException(409, str(exc.args[0])) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except DatastoreError as exc:
            raise HTTPException(503, str(exc)) from None
        store().set_state(event_id, acknowledged=True)
        return {"applied": str(store_key(document)), "resource": document}

    return router
