"""`palisade recommend` and `palisade whatif`: policy from recorded flows, and the effect of
a policy change on them, from Calico flow-log files (NDJSON, one record a line).

The commands read records through :func:`read_flow_files`, an iterator of
:class:`FlowRecord`; the library functions take any such iterable, so a server query
(``--since 1h``) can take the files' place without touching them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from palisade.flows import FlowFormat, FlowRecord, Malformed, iter_flows
from palisade.recommend import RecommendOptions, recommend
from palisade.whatif import DEFAULT_TRACE_LIMIT, WhatIfReport, whatif

from ._common import console, err_console, fail, load_documents

MAX_REPORTED_LINES = 20


@dataclass
class FlowFileProblems:
    """Lines that are not flow records: reported with file and line, then skipped."""

    lines: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_REPORTED_LINES:
            self.lines.append(text)

    def report(self) -> None:
        for line in self.lines:
            err_console.print(f"[yellow]warning:[/yellow] {line}", soft_wrap=True, markup=True)
        if self.count > len(self.lines):
            err_console.print(f"[yellow]warning:[/yellow] … {self.count - len(self.lines)} more")
        if self.count:
            err_console.print(f"{self.count} line(s) skipped: not flow records")


def read_flow_files(
    paths: Sequence[Path], problems: FlowFileProblems, format: FlowFormat = "calico"
) -> Iterator[FlowRecord]:
    """Flow records from NDJSON files (Calico flow logs by default, read with
    ``palisade.flows.iter_flows``), streamed; malformed lines are recorded in ``problems``
    with file and line number, lines holding no flow (Hubble's agent events) skipped."""
    for path in paths:
        for item in iter_flows(path, format):
            if isinstance(item, FlowRecord):
                yield item
            elif isinstance(item, Malformed):
                problems.add(f"{path}:{item.line}: {item.reason}")


def _check_files(paths: Sequence[Path], option: str) -> None:
    if not paths:
        fail(f"no flow records: give one or more NDJSON files with {option}")
    for path in paths:
        if not path.is_file():
            fail(f"{option} {path}: no such file")


class PolicyKindOption(StrEnum):
    calico = "calico"
    kubernetes = "kubernetes"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


FlowsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--flows",
        help="Calico flow-log NDJSON file, one record a line (repeatable); or use --since.",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Take the flows of this window (e.g. 1h) from the server's flow store instead.",
    ),
]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Server URL for --since (default: $PALISADE_SERVER)."),
]


def _flow_source(
    flows: list[Path] | None,
    since: str | None,
    server: str | None,
    problems: FlowFileProblems,
    flows_format: FlowFormat,
) -> Iterable[FlowRecord]:
    """Records from ``--flows`` files, or from the server's flow store for ``--since``."""
    if flows and since:
        fail("give --flows files or --since, not both")
    if not since:
        _check_files(flows or [], "--flows (or --since)")
        return read_flow_files(flows or [], problems, flows_format)
    from palisade.server import ServerClient, ServerError, parse_duration

    try:
        parse_duration(since)
        with ServerClient(server) as client:
            rows = client.flows(window=since, limit=SERVER_FLOW_LIMIT)
    except ValueError as exc:
        fail(f"--since: {exc}")
    except ServerError as exc:
        fail(str(exc), code=1)
    return [FlowRecord.from_json(row) for row in rows]


def _cluster_documents(paths: list[Path] | None, server: str | None, option: str) -> list[Any]:
    """Cluster documents from files, or (no files given) the server's datastore."""
    if paths:
        return load_documents(paths)
    from palisade.server import ServerClient, ServerError

    try:
        with ServerClient(server) as client:
            return list(client.get("/resources")["items"])
    except ServerError as exc:
        fail(f"no {option} given and the server's resources are out of reach: {exc}", code=1)


SERVER_FLOW_LIMIT = 5_000_000


class FlowFileFormat(StrEnum):
    calico = "calico"
    hubble = "hubble"
    auto = "auto"


FlowFormatOption = Annotated[
    FlowFileFormat,
    typer.Option("--flows-format", help="Format of the --flows files."),
]


def recommend_command(
    flows: FlowsOption = None,
    filename: Annotated[
        list[Path] | None,
        typer.Option(
            "-f",
            "--filename",
            help="Cluster manifests: file or directory (repeatable); default with --since: "
            "the server's resources.",
        ),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Recommend for this namespace (repeatable). Default: every namespace the "
            "flows show, system namespaces left out.",
        ),
    ] = None,
    tier: Annotated[str, typer.Option("--tier", help="Tier of Calico policies.")] = "default",
    kind: Annotated[
        PolicyKindOption, typer.Option("--kind", help="Calico or Kubernetes policies.")
    ] = PolicyKindOption.calico,
    enforced: Annotated[
        bool, typer.Option("--enforced", help="Enforced kinds instead of staged ones.")
    ] = False,
    per_workload: Annotated[
        bool, typer.Option("--per-workload", help="One policy per workload, not per namespace.")
    ] = False,
    external_prefix: Annotated[
        int, typer.Option("--external-prefix", help="Aggregate external addresses to /N.")
    ] = 24,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the YAML here, not stdout.")
    ] = None,
    flows_format: FlowFormatOption = FlowFileFormat.calico,
    since: SinceOption = None,
    server: ServerOption = None,
) -> None:
    """Least-privilege policies from recorded flows (staged unless --enforced)."""
    if not 0 <= external_prefix <= 32:
        fail("--external-prefix must be 0-32")
    problems = FlowFileProblems()
    records = _flow_source(flows, since, server, problems, flows_format.value)
    documents = _cluster_documents(filename, server, "-f")
    options = RecommendOptions(
        tier=tier,
        kind="kubernetes" if kind is PolicyKindOption.kubernetes else "calico",
        enforced=enforced,
        per_workload=per_workload,
        namespaces=tuple(namespace or ()),
        external_prefix=external_prefix,
    )
    result = recommend(records, documents, options)
    problems.report()
    if result.records == 0:
        fail("no flow records in the input")
    text = result.to_yaml()
    summary = Table(
        title=f"{result.used} of {result.records} records used as evidence",
        title_justify="left",
    )
    for column in ("kind", "namespace", "name", "ingress rules", "egress rules"):
        summary.add_column(column)
    for document in result.documents:
        spec = document.get("spec") or {}
        meta = document.get("metadata") or {}
        summary.add_row(
            str(document.get("kind")),
            str(meta.get("namespace", "")),
            str(meta.get("name")),
            str(len(spec.get("ingress") or ())) if "ingress" in spec else "",
            str(len(spec.get("egress") or ())) if "egress" in spec else "",
        )
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(summary)
        console.print(f"written to {output}")
    else:
        print(text, end="")
        err_console.print(summary)


def _summary_table(report: WhatIfReport) -> Table:
    table = Table(title=f"what-if ({report.mode}): verdict changes", title_justify="left")
    table.add_column("")
    table.add_column("records", justify="right")
    table.add_column("flows", justify="right")
    table.add_row(
        "[red]allow → deny[/red]",
        f"{report.allow_to_deny_records:,}",
        f"{report.allow_to_deny_flows:,}",
    )
    table.add_row(
        "[green]deny → allow[/green]",
        f"{report.deny_to_allow_records:,}",
        f"{report.deny_to_allow_flows:,}",
    )
    table.add_row("unchanged", f"{report.unchanged_records:,}", f"{report.unchanged_flows:,}")
    table.add_row(
        "[yellow]unknown[/yellow]", f"{report.unknown_records:,}", f"{report.unknown_flows:,}"
    )
    for reason, (records, flows) in sorted(report.unknown.items()):
        table.add_row(f"  {reason}", f"{records:,}", f"{flows:,}", style="dim")
    table.add_row("total", f"{report.records:,}", f"{report.flows:,}", style="bold")
    return table


def _pairs_table(report: WhatIfReport, limit: int) -> Table:
    table = Table(title="by workload pair", title_justify="left")
    for column in ("change", "source", "destination", "records", "flows", "ports"):
        table.add_column(column, justify="right" if column in ("records", "flows") else "left")
    for pair in report.by_pair[:limit]:
        style = "red" if pair.change.startswith("allow") else "green"
        table.add_row(
            f"[{style}]{pair.change}[/{style}]",
            pair.source,
            pair.destination,
            f"{pair.records:,}",
            f"{pair.flows:,}",
            ", ".join(pair.ports),
        )
    if len(report.by_pair) > limit:
        table.caption = f"{len(report.by_pair) - limit} more pairs (--limit, or --format json)"
    return table


def _policies_table(report: WhatIfReport, limit: int) -> Table:
    table = Table(title="by deciding policy (new verdict)", title_justify="left")
    for column in ("change", "tier", "policy", "rule", "records", "flows"):
        table.add_column(column, justify="right" if column in ("records", "flows") else "left")
    for change in report.by_policy[:limit]:
        rule = (
            ""
            if change.rule is None
            else ("end of tier" if change.rule == -1 else str(change.rule))
        )
        style = "red" if change.change.startswith("allow") else "green"
        table.add_row(
            f"[{style}]{change.change}[/{style}]",
            change.tier,
            change.policy,
            rule,
            f"{change.records:,}",
            f"{change.flows:,}",
        )
    return table


def whatif_command(
    flows: FlowsOption = None,
    cluster: Annotated[
        list[Path] | None,
        typer.Option(
            "--cluster",
            help="Cluster manifests: file or directory (repeatable); default with --since: "
            "the server's resources.",
        ),
    ] = None,
    filename: Annotated[
        list[Path] | None,
        typer.Option(
            "-f",
            "--filename",
            help="Proposed policies, applied over the cluster's (same kind, namespace and "
            "name replace); repeatable.",
        ),
    ] = None,
    staged: Annotated[
        bool,
        typer.Option("--staged", help="Treat staged policies as enforced (the pending view)."),
    ] = False,
    format: Annotated[
        ReportFormat, typer.Option("--format", help="Output format.")
    ] = ReportFormat.table,
    limit: Annotated[int, typer.Option("--limit", help="Rows per table.")] = 20,
    flows_format: FlowFormatOption = FlowFileFormat.calico,
    trace_limit: Annotated[
        int,
        typer.Option(
            "--trace-limit",
            help="Classes of changed flows traced to their deciding policy, the busiest "
            "first; the rest are counted as not traced.",
        ),
    ] = DEFAULT_TRACE_LIMIT,
    since: SinceOption = None,
    server: ServerOption = None,
) -> None:
    """Which recorded flows would change verdict under proposed or staged policies.

    Exits 1 when some allowed flow would be denied, 0 otherwise."""
    if not filename and not staged:
        fail("nothing to compare: give proposed policies with -f, or --staged")
    problems = FlowFileProblems()
    records = _flow_source(flows, since, server, problems, flows_format.value)
    documents = _cluster_documents(cluster, server, "--cluster")
    proposed: list[dict[str, Any]] = load_documents(filename) if filename else []
    report = whatif(
        records,
        documents,
        proposed,
        staged=staged,
        trace_limit=trace_limit,
    )
    problems.report()
    if format is ReportFormat.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        console.print(_summary_table(report))
        if report.by_pair:
            console.print(_pairs_table(report, limit))
            console.print(_policies_table(report, limit))
        if report.untraced_flows:
            console.print(
                f"[dim]{report.untraced_flows:,} changed flows not traced to a policy "
                "(over the trace limit)[/dim]"
            )
        if report.model_disagreements:
            console.print(
                f"[yellow]{report.model_disagreements:,} denied records are allowed by the "
                "current cluster documents: they may not be what the cluster enforced[/yellow]"
            )
    raise typer.Exit(1 if report.allow_to_deny_records else 0)
