"""`palisade demo`: the demo application, in the lab (as root) or in the engine alone.

In the lab (``--lab``, the default as root): the manifests of ``DIR/demo`` become a cluster of
``--nodes`` network-namespace nodes with their policies enforced in the kernel and live
traffic between the workloads (their ``lab.palisade.io/traffic`` annotations), including the
compromised pod's denied lateral movement. The demo prints the real probe matrix beside the
engine's matrix of the same datastore, the pairs where they differ (none, if the kernel
enforces what the engine computes), a few explained verdicts and the live traffic; then stays
up, printing the traffic every ten seconds, until Ctrl-C (or returns at once with
``--detach``; ``palisade lab down`` removes the lab).

The WAF part (the scenario's ``waf`` section): one workload is protected by the WAF inline
(``lab.palisade.io/waf``, with the manifests' WebApplicationFirewall); the demo sends
legitimate requests and attacks (SQL injection, XSS, path traversal, a Log4Shell header) from
another pod and shows each answer and the Security Events the server received.

With ``--offline`` (the default when not root) only the engines run: the matrix and the
explained verdicts from the manifests, with offline pod addresses, and the WAF's verdict on
each of the scenario's requests, in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.columns import Columns
from rich.rule import Rule
from rich.table import Table

from palisade import lab
from palisade.policy import Cluster, Matrix, PolicyEngine, reachability_matrix
from palisade.server import ServerClient, ServerError

from ._common import PortSpec, build_engine, console, err_console, fail, parse_port_spec
from ._lab import StateDirOption, kernel_matrix, run_lab, traffic_table
from ._policy import explain_flow, matrix_tables, render_verdict

TRAFFIC_WINDOW = 10.0  # seconds of live traffic each report covers
FLOW_INTERVAL = 5.0  # the agents' flow-log interval in the demo (Calico's default is 15 s)
WARM_UP = 4.0  # seconds of traffic before the first report


def _scenario(directory: Path) -> tuple[Path, dict[str, Any]]:
    manifests = directory / "demo"
    scenario_path = directory / "demo-scenario.yaml"
    if not manifests.is_dir() or not scenario_path.is_file():
        fail(f"{directory}: expected demo/ and demo-scenario.yaml inside")
    try:
        scenario: dict[str, Any] = yaml.safe_load(scenario_path.read_text()) or {}
    except yaml.YAMLError as exc:
        fail(f"{scenario_path}: {exc}")
    return manifests, scenario


def _explain(engine: PolicyEngine, scenario: dict[str, Any]) -> None:
    for item in scenario.get("explain", []):
        console.print(Rule(f"explain {item['from']} → {item['to']} {item['port']}"))
        render_verdict(
            engine, explain_flow(engine, str(item["from"]), str(item["to"]), str(item["port"]))
        )


def _summary(engine: PolicyEngine) -> str:
    cluster = engine.cluster
    return (
        f"{len(cluster.pods)} pods in {len(cluster.namespaces)} namespaces, "
        f"{len(cluster.policies)} policies in {len({p.tier for p in cluster.policies})} tiers, "
        f"{len(cluster.network_sets)} network sets"
    )


def differences(kernel: Matrix, engine: Matrix, specs: list[str]) -> list[str]:
    """Pairs of distinct pods where the kernel and the engine disagree. A pod reaching itself
    never leaves its namespace, so the kernel always allows it: the diagonal is left out, as
    the Kubernetes conformance harness leaves it out."""
    found = []
    for index, spec in enumerate(specs):
        for i, source in enumerate(engine.pods):
            for j, destination in enumerate(engine.pods):
                real, computed = kernel.allowed[index][i, j], engine.allowed[index][i, j]
                if i != j and real != computed:
                    found.append(
                        f"{spec} {source} → {destination}: kernel "
                        f"{'allows' if real else 'denies'}, engine "
                        f"{'allows' if computed else 'denies'}"
                    )
    return found


def _show_lab(state: lab.LabState, specs: list[PortSpec], scenario: dict[str, Any]) -> None:
    state_dir = Path(state.state_dir)
    engine = PolicyEngine(Cluster.from_documents(lab.documents(state_dir)))
    console.print(Rule("Palisade — the demo application, enforced in the kernel"))
    console.print(f"{len(state.nodes)} nodes; {_summary(engine)}")
    for node in state.nodes:
        pods = ", ".join(k for k, r in sorted(state.pods.items()) if r.node == node)
        console.print(f"  {node}: {pods}", markup=False)
    labels = [str(s) for s in specs]
    computed = reachability_matrix(engine, [s.probe for s in specs])
    real = kernel_matrix(lab.probe(labels, state_dir), computed.pods)
    for real_table, engine_table in zip(
        matrix_tables(real, labels), matrix_tables(computed, labels), strict=True
    ):
        real_table.title = f"kernel (real probes) — {real_table.title}"
        engine_table.title = f"engine — {engine_table.title}"
        console.print(Columns([real_table, engine_table], padding=(0, 4)))
    wrong = differences(real, computed, labels)
    pairs = len(labels) * len(computed.pods) * (len(computed.pods) - 1)
    if wrong:
        console.print(f"[red]kernel and engine differ on {len(wrong)} of {pairs} pairs:[/red]")
        for line in wrong:
            console.print(f"  {line}", markup=False)
    else:
        console.print(f"[green]kernel == engine on all {pairs} pairs of distinct pods[/green]")
    console.print(
        "[dim](the diagonal is not compared: a pod reaching its own address never leaves its "
        "namespace, so no policy sees it)[/dim]"
    )
    _explain(engine, scenario)
    _report_traffic(state)
    _report_flows(state)


def _report_flows(state: lab.LabState) -> None:
    """What the agents reported from the kernel: denied flows with their denying policy."""
    if not state.server:
        return
    time.sleep(FLOW_INTERVAL + 1)  # one flow-log interval, so the first records are in
    console.print(Rule("flow logs (from the kernel, in the flow store)"))
    try:
        with ServerClient(state.server) as client:
            denied = client.get("/flows/denied", window="10m")
            total = client.health().get("flow_records")
    except ServerError as exc:
        console.print(f"[red]the flow store did not answer: {exc}[/red]")
        return
    table = Table(title=f"denied flows ({total} flow records stored)", title_justify="left")
    for column in ("FROM", "TO", "PORT", "REPORTER", "FLOWS", "DENIED BY"):
        table.add_column(column)
    for row in denied[:15]:
        table.add_row(
            f"{row['source_namespace']}/{row['source_name']}",
            f"{row['dest_namespace']}/{row['dest_name']}",
            f"{row['dest_port']}/{row['proto']}",
            str(row["reporter"]),
            str(row["flows"]),
            f"{row['tier']}|{row['policy']}",
        )
    console.print(table)
    console.print(f"console: {state.server}/ — `palisade flows --action deny` lists them too")


def _waf_requests(scenario: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    section = dict(scenario.get("waf") or {})
    return section, [dict(r) for r in section.get("requests") or []]


_SEND = """
import json, sys
from palisade.lab._client import http_get
ip, port, host, path, headers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
print(http_get(ip, port, path, host, json.loads(headers)))
"""


def _show_waf(state: lab.LabState, scenario: dict[str, Any]) -> None:
    """Send the scenario's requests from one pod to the protected one; show the answers and
    the Security Events the server received."""
    section, requests = _waf_requests(scenario)
    if not requests or not state.server:
        return
    source, target = str(section["from"]), str(section["to"])
    record = state.pods[target]
    console.print(Rule(f"WAF inline in front of {target} (OWASP CRS): requests from {source}"))
    table = Table(title_justify="left")
    for column in ("REQUEST", "PATH", "ANSWER"):
        table.add_column(column)
    started = time.time()
    blocked = 0
    host = target.split("/", 1)[1].rsplit("-", 1)[0]
    for request in requests:
        argv = lab.exec_command(
            source,
            [
                sys.executable,
                "-c",
                _SEND,
                str(record.ip),
                str(section.get("port", 80)),
                f"{host}.{target.split('/', 1)[0]}",
                str(request["path"]),
                json.dumps(request.get("headers") or {}),
            ],
            Path(state.state_dir),
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        answer = done.stdout.strip() if done.returncode == 0 else f"error: {done.stderr[-200:]}"
        blocked += answer == "403"
        shown = f"[red]{answer} blocked[/red]" if answer == "403" else answer
        table.add_row(str(request.get("label", "")), str(request["path"])[:60], shown)
    console.print(table)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with ServerClient(state.server) as client:
                events = [
                    e
                    for e in client.get("/events", type="waf", limit=100)["events"]
                    if e["time"] >= started - 1
                ]
        except ServerError as exc:
            console.print(f"[red]the server did not answer: {exc}[/red]")
            return
        if len(events) >= blocked:  # each blocked request is an event (so may others be)
            break
        time.sleep(0.5)
    console.print(_events_table(events))
    console.print(
        "`palisade events --type waf` lists them; the console's security events view "
        "acknowledges, dismisses, or excludes a rule for a path"
    )


def _events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Security Events: {len(events)}", title_justify="left")
    for column in ("SOURCE", "TARGET", "ATTACK", "RULES", "ATT&CK", "VERDICT"):
        table.add_column(column)
    for event in sorted(events, key=lambda e: float(e["time"])):
        record = event.get("record") or {}
        table.add_row(
            f"{event['source_namespace']}/{event['source_name']}"
            if event.get("source_name")
            else str(event.get("source_ip") or "-"),
            f"{event['dest_namespace']}/{event['dest_name']}",
            str(event["attack_vector"]),
            " ".join(str(i) for i in record.get("rule_ids", [])[:6]),
            f"{' '.join(event['mitre_ids'])} {event['mitre_tactic']}",
            str(record.get("verdict", "")),
        )
    return table


def _offline_waf(directory: Path, scenario: dict[str, Any]) -> None:
    """The WAF's verdict on the scenario's requests, in process, with the manifests'
    WebApplicationFirewall for the target."""
    from palisade.model import WebApplicationFirewall, load_paths
    from palisade.waf._config import crs_dir
    from palisade.waf._service import engine_for

    section, requests = _waf_requests(scenario)
    if not requests:
        return
    namespace = str(section["to"]).split("/", 1)[0]
    loaded = load_paths([directory / "demo"])
    firewalls = [r for r in loaded.resources if isinstance(r, WebApplicationFirewall)]
    spec = next((f.spec for f in firewalls if f.namespace == namespace), None)
    if spec is None:
        return
    try:
        engine = engine_for(spec, crs_dir())
    except FileNotFoundError as exc:
        err_console.print(f"WAF part skipped: {exc}")
        return
    console.print(Rule(f"WAF (OWASP CRS, {spec.mode}, PL{spec.paranoia_level}) on the requests"))
    table = Table(title_justify="left")
    for column in ("REQUEST", "VERDICT", "SCORE", "RULES"):
        table.add_column(column)
    for request in requests:
        headers = "".join(f"{k}: {v}\r\n" for k, v in (request.get("headers") or {}).items())
        raw = (
            f"GET {request['path']} HTTP/1.1\r\nHost: orders.api\r\n"
            f"User-Agent: palisade-demo/1\r\nAccept: */*\r\n{headers}\r\n"
        ).encode()
        result = engine.evaluate(raw)
        ids = sorted({m.id for m in result.matches if m.logged})
        table.add_row(
            str(request.get("label", "")),
            f"[red]blocked {result.status}[/red]" if result.blocked else "allowed",
            str(result.inbound_score),
            " ".join(str(i) for i in ids[:8]),
        )
    console.print(table)


def _report_traffic(state: lab.LabState) -> None:
    rows = lab.traffic(Path(state.state_dir), TRAFFIC_WINDOW)
    console.print(Rule("live traffic"))
    console.print(traffic_table(list(rows), TRAFFIC_WINDOW))
    allowed = sum(int(r["allowed"]) for r in rows)
    denied = sum(int(r["denied"]) for r in rows)
    console.print(
        f"{allowed} allowed and {denied} denied attempts in the last {TRAFFIC_WINDOW:g} s "
        f"({time.strftime('%H:%M:%S')})"
    )


def _tick(state: lab.LabState) -> None:
    rows = lab.traffic(Path(state.state_dir), TRAFFIC_WINDOW)
    denied = Table.grid(padding=(0, 2))
    for row in sorted(rows, key=lambda r: (str(r["from"]), str(r["to"]))):
        if row["denied"]:
            denied.add_row(f"  {row['from']} → {row['to']}", f"[red]{row['denied']} denied[/red]")
    console.print(
        f"{time.strftime('%H:%M:%S')} last {TRAFFIC_WINDOW:g} s: "
        f"{sum(int(r['allowed']) for r in rows)} allowed, "
        f"{sum(int(r['denied']) for r in rows)} denied"
    )
    console.print(denied)


def demo(
    directory: Annotated[
        Path, typer.Argument(help="Examples folder holding demo/ and demo-scenario.yaml.")
    ] = Path("examples"),
    in_lab: Annotated[
        bool | None,
        typer.Option(
            "--lab/--offline",
            help="In the lab, enforced for real (needs root), or the engine alone "
            "(default: the lab when root).",
        ),
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Lab nodes.")] = 3,
    detach: Annotated[bool, typer.Option("--detach", help="Leave the lab up and return.")] = False,
    lab_id: Annotated[str, typer.Option("--id", help="Lab id.")] = "0",
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """The demo application: reachability matrix, explained verdicts, and in the lab the
    kernel's real matrix beside the engine's with live traffic."""
    manifests, scenario = _scenario(directory)
    specs = [parse_port_spec(str(p)) for p in scenario.get("probes", [])]
    use_lab = in_lab if in_lab is not None else os.geteuid() == 0
    if not use_lab:
        if in_lab is None:
            err_console.print("not root: the engine alone (`sudo make demo` runs the lab)")
        engine = build_engine([manifests])
        console.print(Rule("Palisade policy engine — demo application"))
        console.print(_summary(engine))
        matrix = reachability_matrix(engine, [s.probe for s in specs])
        for table in matrix_tables(matrix, [str(s) for s in specs]):
            console.print(table)
        _explain(engine, scenario)
        _offline_waf(directory, scenario)
        return

    def shown(state: lab.LabState) -> None:
        time.sleep(WARM_UP)  # a few rounds of the client loops
        _show_lab(state, specs, scenario)
        _show_waf(state, scenario)

    run_lab(
        [manifests],
        nodes=nodes,
        lab_id=lab_id,
        state_dir=state_dir,
        detach=detach,
        on_up=shown,
        on_tick=_tick,
        tick=TRAFFIC_WINDOW,
        server=True,
        flows=lab.FlowSettings(interval=FLOW_INTERVAL),
    )
