"""`palisade events`: security events from the server's event store, and their triage."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from palisade.server import ServerError

from ._common import console, fail
from ._server import FlowFormat, ServerOption, _client, check_since

events_app = typer.Typer(help="Security events (WAF, and later other detectors): list, triage.")


@events_app.callback(invoke_without_command=True)
def events(
    ctx: typer.Context,
    type: Annotated[str | None, typer.Option("--type", help="e.g. waf")] = None,
    since: Annotated[str | None, typer.Option("--since", help="e.g. 15m, 1h, 7d")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    workload: Annotated[str | None, typer.Option("--workload")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include dismissed events.")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    format: Annotated[FlowFormat, typer.Option("--format")] = FlowFormat.table,
    server_url: ServerOption = None,
) -> None:
    """Security events, newest first (json: the event documents)."""
    if ctx.invoked_subcommand is not None:
        return
    check_since(since)
    params: dict[str, Any] = {
        "type": type,
        "window": since,
        "namespace": namespace,
        "workload": workload,
        "include_dismissed": all_,
        "limit": limit,
    }
    try:
        with _client(server_url) as client:
            found = client.get("/events", **params)["events"]
    except ServerError as exc:
        fail(str(exc), code=1)
    if format is FlowFormat.json:
        print(json.dumps(found))
        return
    table = Table(title=f"{len(found)} security event(s)", title_justify="left")
    for column in ("TIME", "ID", "TYPE", "SEV", "STATE", "SOURCE", "TARGET", "ATT&CK", "WHAT"):
        table.add_column(column)
    for event in found:
        state = "dismissed" if event["dismissed"] else "ack" if event["acknowledged"] else "new"
        target = (
            f"{event['dest_namespace']}/{event['dest_name']}"
            if event["dest_name"]
            else event["dest_ip"] or event["host"] or "-"
        )
        rules = event.get("record", {}).get("rule_ids") or []
        what = event["attack_vector"] or event["description"]
        if rules:
            what = f"{what} (rules {', '.join(str(r) for r in rules[:4])})"
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(float(event["time"]))),
            event["id"][:12],
            event["type"],
            str(event["severity"]),
            state,
            event["source_ip"] or event["source_name"] or "-",
            target,
            ",".join(event["mitre_ids"]) or "-",
            what,
        )
    console.print(table)


def _triage(action: str, event_id: str, undo: bool, server_url: str | None) -> None:
    try:
        with _client(server_url) as client:
            result = client.post(f"/events/{event_id}/{action}", undo=undo)
    except ServerError as exc:
        fail(str(exc), code=1)
    state = "acknowledged" if result["acknowledged"] else "not acknowledged"
    if result["dismissed"]:
        state += ", dismissed"
    console.print(f"event {result['id']}: {state}")


@events_app.command()
def ack(
    event_id: Annotated[str, typer.Argument(help="The event id.")],
    undo: Annotated[bool, typer.Option("--undo", help="Take the acknowledgement back.")] = False,
    server_url: ServerOption = None,
) -> None:
    """Acknowledge an event."""
    _triage("acknowledge", event_id, undo, server_url)


@events_app.command()
def dismiss(
    event_id: Annotated[str, typer.Argument(help="The event id.")],
    undo: Annotated[bool, typer.Option("--undo", help="Bring a dismissed event back.")] = False,
    server_url: ServerOption = None,
) -> None:
    """Dismiss an event (hidden from the default listing, kept in the store)."""
    _triage("dismiss", event_id, undo, server_url)
