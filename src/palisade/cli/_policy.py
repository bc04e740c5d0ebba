"""`palisade policy explain|matrix`: the engine's answers, readable."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from palisade.policy import (
    DirectionResult,
    Flow,
    Matrix,
    Outcome,
    PolicyEngine,
    Verdict,
    protocol_number,
    reachability_matrix,
)

from ._common import build_engine, console, fail, parse_port_spec, resolve_peer

app = typer.Typer(help="Ask the policy engine: explain one flow, or the reachability matrix.")

FilesOption = Annotated[
    list[Path], typer.Option("-f", "--filename", help="Manifest file or directory (repeatable).")
]


class MatrixFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def render_direction(result: DirectionResult, title: str) -> Table:
    verdict = "[green]allow[/green]" if result.allowed else "[red]deny[/red]"
    table = Table(title=f"{title} of {result.endpoint}: {verdict}", title_justify="left")
    for column in ("tier", "policy", "rule", "outcome", "note"):
        table.add_column(column)
    for step in result.trace:
        rule = "" if step.rule_index is None else str(step.rule_index)
        outcome = step.outcome.value
        if step.outcome in (Outcome.MATCHED, Outcome.END_OF_TIER) and step.action is not None:
            outcome = f"{outcome} → {step.action.value}"
        table.add_row(step.tier, step.policy, rule, outcome, step.note)
    return table


def render_verdict(engine: PolicyEngine, verdict: Verdict) -> None:
    word = "[bold green]ALLOWED[/bold green]" if verdict.allowed else "[bold red]DENIED[/bold red]"
    source = verdict.source_endpoint or engine.describe_ip(verdict.flow.src_ip)
    destination = verdict.destination_endpoint or engine.describe_ip(verdict.flow.dst_ip)
    console.print(f"{word}  {verdict.flow}  ({source} → {destination})")
    deciding = verdict.deciding
    if deciding is not None and deciding.deciding is not None:
        hit = deciding.deciding
        rule = "tier default action" if hit.rule_index == -1 else f"rule {hit.rule_index}"
        console.print(
            f"decided by {deciding.direction.value.lower()} of {deciding.endpoint}: tier "
            f"{hit.tier!r}, {hit.policy}, {rule} ({hit.action.value})",
            markup=False,
        )
    if verdict.pending_allowed != verdict.allowed:
        pending = "allowed" if verdict.pending_allowed else "denied"
        console.print(f"[yellow]with staged policies enforced it would be {pending}[/yellow]")
    for result, title in ((verdict.egress, "egress"), (verdict.ingress, "ingress")):
        if result is not None:
            console.print(render_direction(result, title))
            if result.hits:
                console.print(
                    Text("  enforced_policies: " + ", ".join(result.policy_strings()), style="dim")
                )
    for result, title in ((verdict.pending_egress, "egress"), (verdict.pending_ingress, "ingress")):
        if result is not None and result.hits and any(h.staged for h in result.hits):
            console.print(
                Text(
                    f"  pending_policies ({title}): " + ", ".join(result.policy_strings()),
                    style="dim",
                )
            )


def explain_flow(engine: PolicyEngine, source: str, destination: str, port_text: str) -> Verdict:
    spec = parse_port_spec(port_text)
    src_ip = resolve_peer(engine, source, "--from")
    dst_ip = resolve_peer(engine, destination, "--to")
    protocol = protocol_number(spec.protocol)
    try:
        port = engine.resolve_port(engine.endpoint_for_ip(dst_ip), spec.port, protocol)
    except LookupError as exc:
        fail(f"--port {port_text!r}: {exc}")
    return engine.evaluate(Flow(src_ip, dst_ip, protocol, dst_port=port))


@app.command()
def explain(
    filename: FilesOption,
    from_: Annotated[str, typer.Option("--from", help="Source: NS/POD, host endpoint or IP.")],
    to: Annotated[str, typer.Option("--to", help="Destination: NS/POD, host endpoint or IP.")],
    port: Annotated[str, typer.Option("--port", help="PORT/PROTOCOL, e.g. 80/TCP or http/TCP.")],
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
) -> None:
    """Explain whether a flow is allowed: verdict, deciding tier/policy/rule, and the trace."""
    engine = build_engine(filename)
    verdict = explain_flow(engine, from_, to, port)
    if output == "json":
        console.print_json(json.dumps(verdict_json(verdict)))
    elif output == "text":
        render_verdict(engine, verdict)
    else:
        fail(f"--output {output!r}: must be text or json")
    raise typer.Exit(0 if verdict.allowed else 1)


def verdict_json(verdict: Verdict) -> dict[str, object]:
    def direction(result: DirectionResult | None) -> dict[str, object] | None:
        if result is None:
            return None
        return {
            "endpoint": result.endpoint,
            "allowed": result.allowed,
            "policies": result.policy_strings(),
            "trace": [
                {
                    "tier": s.tier,
                    "policy": s.policy,
                    "rule": s.rule_index,
                    "outcome": s.outcome.value,
                    "action": s.action.value if s.action else None,
                }
                for s in result.trace
            ],
        }

    return {
        "flow": str(verdict.flow),
        "source": verdict.source_endpoint,
        "destination": verdict.destination_endpoint,
        "allowed": verdict.allowed,
        "pending_allowed": verdict.pending_allowed,
        "egress": direction(verdict.egress),
        "ingress": direction(verdict.ingress),
        "pending_egress": direction(verdict.pending_egress),
        "pending_ingress": direction(verdict.pending_ingress),
    }


def matrix_json(matrix: Matrix, specs: list[str]) -> dict[str, object]:
    probes = []
    for index, spec in enumerate(specs):
        port, _, protocol = spec.partition("/")
        probes.append({"port": port, "protocol": protocol, "allowed": matrix.as_dict(index)})
    return {"probes": probes}


def matrix_csv(matrix: Matrix, specs: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["port", "protocol", "from", "to", "allowed"])
    for index, spec in enumerate(specs):
        port, _, protocol = spec.partition("/")
        for src, row in matrix.as_dict(index).items():
            for dst, allowed in row.items():
                writer.writerow([port, protocol, src, dst, "true" if allowed else "false"])
    return buffer.getvalue()


def matrix_tables(matrix: Matrix, specs: list[str]) -> list[Table]:
    """One truth table per probe: rows are sources, numbered columns the same pods as
    destinations (numbers keep the table narrow whatever the pod names)."""
    tables = []
    for index, spec in enumerate(specs):
        grid = matrix.allowed[index]
        allowed = int(grid.sum())
        table = Table(
            title=f"{spec}: {allowed} of {grid.size} pairs allowed (rows: from, columns: to)",
            title_justify="left",
        )
        table.add_column("#", justify="right", style="dim")
        table.add_column("from \\ to")
        for number in range(1, len(matrix.pods) + 1):
            table.add_column(str(number), justify="center")
        for i, src in enumerate(matrix.pods):
            cells = [
                "[green]✓[/green]" if grid[i, j] else "[red]✗[/red]"
                for j in range(len(matrix.pods))
            ]
            table.add_row(str(i + 1), src, *cells)
        tables.append(table)
    return tables


@app.command()
def matrix(
    filename: FilesOption,
    port: Annotated[
        list[str], typer.Option("--port", help="PORT/PROTOCOL probe (repeatable), e.g. 80/TCP.")
    ],
    format: Annotated[MatrixFormat, typer.Option("--format", help="Output format.")] = (
        MatrixFormat.table
    ),
) -> None:
    """The verdict for every ordered pair of pods, for each probe."""
    specs = [parse_port_spec(p) for p in port]
    engine = build_engine(filename)
    result = reachability_matrix(engine, [s.probe for s in specs])
    labels = [str(s) for s in specs]
    if format is MatrixFormat.json:
        print(json.dumps(matrix_json(result, labels)))
    elif format is MatrixFormat.csv:
        print(matrix_csv(result, labels), end="")
    else:
        for table in matrix_tables(result, labels):
            console.print(table)
