"""`palisade server` and `palisade flows`: the server, and flow queries through its API."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from palisade.server import ServerClient, ServerConfig, ServerError, create_app, parse_duration
from palisade.server._client import DEFAULT_SERVER

from ._common import console, datastore_url, fail

ServerOption = Annotated[
    str | None,
    typer.Option("--server", help=f"Server URL (default: $PALISADE_SERVER or {DEFAULT_SERVER})."),
]


def server(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to listen on (loopback by default).")
    ] = "127.0.0.1:8470",
    datastore: Annotated[
        str | None, typer.Option("--datastore", help="Resource datastore URL.")
    ] = None,
    flow_store: Annotated[
        Path, typer.Option("--flow-store", help="The DuckDB flow-store file.")
    ] = Path("palisade-flows.duckdb"),
    retention: Annotated[
        str, typer.Option("--retention", help="Keep flow records this long (e.g. 7d, 12h).")
    ] = "7d",
    max_records: Annotated[
        int, typer.Option("--max-records", help="Keep at most this many flow records.")
    ] = 50_000_000,
    unix_socket: Annotated[
        Path | None,
        typer.Option(
            "--unix-socket",
            help="Also listen on this Unix socket (reachable from every network namespace).",
        ),
    ] = None,
    event_store: Annotated[
        Path | None,
        typer.Option(
            "--event-store", help="The security-event SQLite file (default: beside the flow store)."
        ),
    ] = None,
) -> None:
    """Run the API server: resources, flow ingest and queries, the service graph."""
    import uvicorn

    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit():
        fail(f"--listen {listen!r}: expected HOST:PORT")
    try:
        seconds = parse_duration(retention)
    except ValueError as exc:
        fail(f"--retention: {exc}")
    config = ServerConfig(
        datastore=datastore_url(datastore),
        flow_store=str(flow_store),
        retention_seconds=seconds,
        max_records=max_records,
        event_store=str(event_store) if event_store else "",
    )
    console.print(f"palisade server on http://{host}:{port_text} (datastore {config.datastore})")
    if unix_socket is None:
        uvicorn.run(create_app(config), host=host, port=int(port_text), log_level="warning")
        return
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host.strip("[]"), int(port_text)))
    unix_socket.unlink(missing_ok=True)  # one a killed server left behind
    local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    local.bind(str(unix_socket))
    console.print(f"and on unix:{unix_socket}")
    uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning")).run(
        sockets=[tcp, local]
    )


class FlowFormat(StrEnum):
    table = "table"
    json = "json"


def check_since(since: str | None) -> None:
    """Exit 2 with one clear line when ``--since`` is not a duration."""
    if since is not None:
        try:
            parse_duration(since)
        except ValueError as exc:
            fail(f"--since: {exc}")


def _client(url: str | None) -> ServerClient:
    return ServerClient(url)


def _hits(record: dict[str, Any]) -> str:
    policies = record.get("policies") or {}
    hits = sorted(policies.get("enforced_policies") or [], key=lambda h: int(h.split("|")[0]))
    return hits[-1].split("|", 1)[1] if hits else "-"


def _peer(record: dict[str, Any], side: str) -> str:
    namespace = record.get(f"{side}_namespace") or "-"
    name = record.get(f"{side}_name")
    if not name or name == "-":
        name = record.get(f"{side}_name_aggr") or "-"
    if name == "-" and record.get(f"{side}_ip"):
        name = str(record[f"{side}_ip"])
    return name if namespace == "-" else f"{namespace}/{name}"


flows_app = typer.Typer(help="Flow records: query the server's flow store, import files.")


@flows_app.callback(invoke_without_command=True)
def flows(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    workload: Annotated[str | None, typer.Option("--workload")] = None,
    action: Annotated[str | None, typer.Option("--action", help="allow or deny")] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="A policy name (substring).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="e.g. 15m, 1h, 7d")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    format: Annotated[FlowFormat, typer.Option("--format")] = FlowFormat.table,
    server_url: ServerOption = None,
) -> None:
    """Flow records from the server's flow store (json: Calico's field names)."""
    if ctx.invoked_subcommand is not None:
        return
    if action is not None and action not in ("allow", "deny"):
        fail(f"--action {action!r}: allow or deny")
    check_since(since)
    try:
        with _client(server_url) as client:
            records = client.flows(
                window=since,
                namespace=namespace,
                workload=workload,
                action=action,
                policy=policy,
                limit=limit,
            )
    except ServerError as exc:
        fail(str(exc), code=1)
    if format is FlowFormat.json:
        print(json.dumps(records))
        return
    table = Table(title=f"{len(records)} flow record(s)", title_justify="left")
    for column in ("END", "REPORTER", "ACTION", "FROM", "TO", "PORT", "FLOWS", "BYTES", "POLICY"):
        table.add_column(column)
    for record in records:
        action_text = str(record.get("action"))
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(float(record.get("end_time") or 0))),
            str(record.get("reporter")),
            f"[red]{action_text}[/red]" if action_text == "deny" else action_text,
            _peer(record, "source"),
            _peer(record, "dest"),
            f"{record.get('dest_port') or '-'}/{record.get('proto')}",
            str(record.get("num_flows")),
            str(int(record.get("bytes_in") or 0) + int(record.get("bytes_out") or 0)),
            _hits(record),
        )
    console.print(table)


IMPORT_CHUNK_LINES = 50_000


class ImportFormat(StrEnum):
    auto = "auto"
    calico = "calico"
    hubble = "hubble"


@flows_app.command(name="import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Flow-log files (NDJSON).")],
    format: Annotated[
        ImportFormat,
        typer.Option(
            "--format",
            help="calico (Calico Enterprise flow logs), hubble (`hubble observe -o json`), "
            "or auto: decided per file by its first record.",
        ),
    ] = ImportFormat.auto,
    server_url: ServerOption = None,
) -> None:
    """Import flow-log files into the server's flow store, in chunks; a chunk sent twice is
    stored once, so an interrupted import can be repeated. Malformed lines are counted and
    listed with their line numbers; the rest is imported."""
    import hashlib

    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    missing = [f for f in files if not f.is_file()]
    if missing:
        fail(", ".join(f"{f}: no such file" for f in missing))
    imported = duplicates = skipped = 0
    malformed: list[str] = []
    try:
        with (
            _client(server_url) as client,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TransferSpeedColumn(),
                console=console,
            ) as progress,
        ):
            for path in files:
                task = progress.add_task(str(path), total=path.stat().st_size)
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                kind = format.value if format is not ImportFormat.auto else _detect(path)
                if kind == "hubble":
                    chunks = _converted_chunks(path, malformed)
                else:
                    chunks = _raw_chunks(path)
                for index, (chunk, first_line, size) in enumerate(chunks):
                    answer = client.ingest(chunk, batch_id=f"import/{digest}/{index}")
                    imported += int(answer.get("imported") or 0)
                    duplicates += bool(answer.get("duplicate"))
                    malformed.extend(
                        f"{path}:{first_line + int(m['line']) - 1}: {m['reason']}"
                        for m in answer.get("malformed") or []
                    )
                    progress.advance(task, size)
                progress.update(task, completed=path.stat().st_size)
                if kind == "hubble":
                    skipped += sum(1 for line in malformed if line.startswith("skipped "))
    except ServerError as exc:
        fail(str(exc), code=1)
    problems = [line for line in malformed if not line.startswith("skipped ")]
    for line in problems:
        console.print(line, markup=False)
    console.print(f"{imported} record(s) imported, {len(problems)} malformed line(s)")
    if skipped:
        console.print(f"{skipped} line(s) held no flow (Hubble agent or debug events)")
    if duplicates:
        console.print(f"{duplicates} chunk(s) were imported before and were not stored again")


def _detect(path: Path) -> str:
    from palisade.flows._import import detect_format

    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                found = detect_format(json.loads(line))
            except ValueError:
                continue
            if found is not None:
                return found
    return "calico"


def _raw_chunks(path: Path) -> Any:
    """Calico NDJSON as it is (the server validates it): (bytes, first line, size read)."""
    first_line = 1
    for chunk in _chunks(path):
        yield chunk, first_line, len(chunk)
        first_line += chunk.count(b"\n")


def _converted_chunks(path: Path, problems: list[str]) -> Any:
    """Another format read here and sent as Calico NDJSON; malformed and skipped lines go to
    ``problems`` with their line numbers."""
    from palisade.flows import Malformed, Skipped, iter_flows
    from palisade.server._client import encode_records

    batch: list[Any] = []
    for item in iter_flows(path, "hubble"):
        if isinstance(item, Malformed):
            problems.append(f"{path}:{item.line}: {item.reason}")
        elif isinstance(item, Skipped):
            problems.append(f"skipped {path}:{item.line}: {item.reason}")
        else:
            batch.append(item)
            if len(batch) == IMPORT_CHUNK_LINES:
                yield encode_records(batch), 1, 0
                batch = []
    if batch:
        yield encode_records(batch), 1, 0


def _chunks(path: Path) -> Any:
    with path.open("rb") as handle:
        lines: list[bytes] = []
        for line in handle:
            lines.append(line if line.endswith(b"\n") else line + b"\n")
            if len(lines) == IMPORT_CHUNK_LINES:
                yield b"".join(lines)
                lines = []
        if lines:
            yield b"".join(lines)


@flows_app.command()
def top(
    by: Annotated[str, typer.Option("--by", help="workload or namespace")] = "workload",
    since: Annotated[str | None, typer.Option("--since", help="e.g. 15m, 1h, 7d")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 10,
    format: Annotated[FlowFormat, typer.Option("--format")] = FlowFormat.table,
    server_url: ServerOption = None,
) -> None:
    """Top talkers: the pairs that moved the most bytes."""
    if by not in ("workload", "namespace"):
        fail(f"--by {by!r}: workload or namespace")
    _table_or_json(
        "/flows/top", {"by": by, "window": since, "limit": limit}, format, server_url, "top talkers"
    )


@flows_app.command()
def denied(
    since: Annotated[str | None, typer.Option("--since", help="e.g. 15m, 1h, 7d")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    format: Annotated[FlowFormat, typer.Option("--format")] = FlowFormat.table,
    server_url: ServerOption = None,
) -> None:
    """Denied flows, with the policy hit that denied them."""
    _table_or_json(
        "/flows/denied", {"window": since, "limit": limit}, format, server_url, "denied flows"
    )


def _table_or_json(
    path: str, params: dict[str, Any], format: FlowFormat, server_url: str | None, title: str
) -> None:
    check_since(params.get("window"))
    try:
        with _client(server_url) as client:
            rows = client.get(path, **params)
    except ServerError as exc:
        fail(str(exc), code=1)
    if format is FlowFormat.json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{title}: {len(rows)}", title_justify="left")
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    console.print(table)
