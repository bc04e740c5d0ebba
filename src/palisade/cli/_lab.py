"""`palisade lab up|status|probe|exec|down`: the one-machine cluster of network namespaces.

While a lab is up, point ``palisade apply|get|delete`` at its datastore with the line
``lab up`` prints: ``export PALISADE_DATASTORE=sqlite:////run/palisade/lab/store.db``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from palisade import lab
from palisade.dataplane.linux import NetlinkError
from palisade.datastore import DatastoreError
from palisade.policy import Matrix, Probe

from ._common import console, err_console, fail, parse_port_spec
from ._policy import MatrixFormat, matrix_tables

app = typer.Typer(help="A cluster of network namespaces on this machine, enforced for real.")

StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="The lab's state directory (default: $PALISADE_LAB_DIR or /run/palisade/lab).",
    ),
]


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


ERRORS = (lab.LabError, NetlinkError, DatastoreError, OSError, ValueError)


def run_lab(
    manifests: list[Path],
    *,
    nodes: int,
    lab_id: str,
    state_dir: Path,
    detach: bool,
    on_up: Callable[[lab.LabState], None] | None = None,
    on_tick: Callable[[lab.LabState], None] | None = None,
    tick: float = 10.0,
    server: bool = False,
    flows: lab.FlowSettings | None = None,
) -> None:
    """Bring a lab up; then call ``on_up``, and either return (``detach``) or call ``on_tick``
    every ``tick`` seconds until Ctrl-C or SIGTERM, then take the lab down. A failed or
    interrupted ``up`` removes whatever it made and exits 1."""
    try:
        existing = lab.LabState.load(state_dir)
    except ValueError as exc:
        fail(f"{exc}; run `palisade lab down` or remove the file", code=1)
    if existing is not None:
        fail(f"a lab is up already ({state_dir}): run `palisade lab down` first", code=1)
    if os.geteuid() != 0:
        fail("the lab needs root (network namespaces and nftables): run it with sudo", code=1)
    building = threading.Event()
    building.set()
    stop = threading.Event()

    owner = os.getpid()

    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            # a child pyroute2 forked (to make a namespace) and now stops: as if unhandled
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if building.is_set():
            raise KeyboardInterrupt  # interrupts up, which is then undone below
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            err_console.print(f"building the lab from {', '.join(map(str, manifests))} …")
            state = lab.up(
                manifests,
                state_dir=state_dir,
                lab_id=lab_id,
                nodes=nodes,
                server=server,
                flows=flows,
            )
            building.clear()
        except (KeyboardInterrupt, *ERRORS) as exc:
            lab.down(state_dir)  # whatever the failed up made
            fail(f"lab up failed; everything it made is removed again: {exc!r}", code=1)
        console.print(
            f"lab {state.lab_id} up: {len(state.nodes)} node(s), {len(state.pods)} pod(s)",
            markup=False,
        )
        print(f"export PALISADE_DATASTORE={state.datastore}", flush=True)
        if state.server:
            print(f"export PALISADE_SERVER={state.server}", flush=True)
            console.print(f"console: {state.server}/", markup=False)
        if on_up is not None:
            on_up(state)
        if detach:
            err_console.print("the lab stays up: `palisade lab down` removes it")
            return
        err_console.print("Ctrl-C takes the lab down")
        while not stop.wait(tick):
            if on_tick is not None:
                on_tick(state)
        lab.down(state_dir)
        err_console.print("lab down")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@app.command()
def up(
    filename: Annotated[
        list[Path], typer.Option("-f", "--filename", help="Manifest file or directory.")
    ],
    detach: Annotated[
        bool, typer.Option("--detach", help="Leave the lab running and return.")
    ] = False,
    nodes: Annotated[
        int, typer.Option("--nodes", help="Number of nodes (network namespaces joined by VXLAN).")
    ] = 1,
    lab_id: Annotated[
        str, typer.Option("--id", help="Lab id: namespaces are named pal-l<ID>-…")
    ] = "0",
    server: Annotated[
        bool,
        typer.Option("--server", help="Run a palisade server (API, flow store, console) too."),
    ] = False,
    flow_interval: Annotated[
        float, typer.Option("--flow-interval", help="Seconds per flow-log interval.")
    ] = 15.0,
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """Build the lab from manifests; stay up until Ctrl-C (then take it down) or --detach."""
    run_lab(
        filename,
        nodes=nodes,
        lab_id=lab_id,
        state_dir=state_dir,
        detach=detach,
        server=server,
        flows=lab.FlowSettings(interval=flow_interval),
    )


def kernel_matrix(result: dict[str, Any], pods: list[str]) -> Matrix:
    """``lab.probe``'s JSON as a :class:`Matrix` over ``pods`` (the engine's order)."""
    grids = [
        np.array([[probe["allowed"][s][d] for d in pods] for s in pods], dtype=bool)
        for probe in result["probes"]
    ]
    return Matrix(pods, [Probe(0, 0) for _ in grids], grids)


@app.command()
def down(state_dir: StateDirOption = lab.DEFAULT_STATE_DIR) -> None:
    """Remove every namespace, process, table and file the lab made (idempotent)."""
    try:
        report = lab.down(state_dir)
    except ERRORS as exc:
        fail(str(exc), code=1)
    console.print(
        f"removed {len(report.namespaces)} namespace(s), {len(report.processes)} process(es), "
        f"{len(report.files)} file(s)",
        markup=False,
    )


@app.command()
def status(
    format: Annotated[StatusFormat, typer.Option("--format", help="Output format.")] = (
        StatusFormat.table
    ),
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """Nodes, pods with their IPs, and the agents' status."""
    try:
        report = lab.status(state_dir)
    except ERRORS as exc:
        fail(str(exc), code=1)
    if format is StatusFormat.json:
        print(json.dumps(report))
        return
    console.print(f"lab {report['lab']} ({report['phase']}), datastore {report['datastore']}")
    table = Table()
    for column in ("POD", "IP", "NODE", "NETNS"):
        table.add_column(column)
    for key, pod in report["pods"].items():
        table.add_row(key, pod["ip"] or "", pod["node"], pod["netns"])
    console.print(table)
    for node, agent in report["agents"].items():
        console.print(
            f"agent {node}: pid {agent.get('pid')} "
            f"{'running' if agent.get('alive') else 'NOT RUNNING'}, phase {agent.get('phase')}, "
            f"revision {agent.get('revision')}, programmed {agent.get('programmed')}",
            markup=False,
        )


@app.command()
def probe(
    port: Annotated[
        list[str], typer.Option("--port", help="PORT/PROTOCOL probe (repeatable), e.g. 80/TCP.")
    ],
    format: Annotated[MatrixFormat, typer.Option("--format", help="table or json.")] = (
        MatrixFormat.table
    ),
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """Real connection attempts between every ordered pair of pods, as a matrix."""
    specs = [str(parse_port_spec(p)) for p in port]
    try:
        result = lab.probe(specs, state_dir)
    except ERRORS as exc:
        fail(str(exc), code=1)
    if format is MatrixFormat.json:
        print(json.dumps(result))
    elif format is MatrixFormat.table:
        probes = result["probes"]
        matrix = kernel_matrix(result, list(probes[0]["allowed"]) if probes else [])
        for table in matrix_tables(matrix, specs):
            console.print(table)
    else:
        fail(f"--format {format.value}: the lab prints table or json")


@app.command(name="exec", context_settings={"allow_extra_args": True})
def exec_(
    pod: Annotated[str, typer.Argument(help="NS/POD")],
    command: Annotated[list[str], typer.Argument(help="The command (after --).")],
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """Run a command inside a pod's network namespace: `palisade lab exec NS/POD -- CMD`."""
    try:
        argv = lab.exec_command(pod, command, state_dir)
    except ERRORS as exc:
        fail(str(exc), code=1)
    raise typer.Exit(subprocess.run(argv, check=False).returncode)


def traffic_table(rows: list[dict[str, object]], window: float) -> Table:
    """The client loops' attempts per source and target, denied first."""
    table = Table(title=f"live traffic, last {window:g} s", title_justify="left")
    for column, justify in (("FROM", "left"), ("TO", "left"), ("ALLOWED", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("DENIED", justify="right")
    for row in sorted(rows, key=lambda r: (-int(str(r["denied"])), str(r["from"]), str(r["to"]))):
        denied = int(str(row["denied"]))
        table.add_row(
            str(row["from"]),
            str(row["to"]),
            str(row["allowed"]),
            f"[red]{denied}[/red]" if denied else "0",
        )
    return table


@app.command()
def traffic(
    since: Annotated[float, typer.Option("--since", help="Window in seconds.")] = 10.0,
    format: Annotated[StatusFormat, typer.Option("--format", help="Output format.")] = (
        StatusFormat.table
    ),
    state_dir: StateDirOption = lab.DEFAULT_STATE_DIR,
) -> None:
    """What the pods' client loops (annotation lab.palisade.io/traffic) saw: allowed and
    denied attempts per source and target."""
    try:
        rows = lab.traffic(state_dir, since)
    except ERRORS as exc:
        fail(str(exc), code=1)
    if format is StatusFormat.json:
        print(json.dumps(rows))
    else:
        console.print(traffic_table(list(rows), since))
