"""`palisade demo`: the engine on the demo application — matrix and explained verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.rule import Rule

from palisade.policy import reachability_matrix

from ._common import build_engine, console, fail, parse_port_spec
from ._policy import explain_flow, matrix_tables, render_verdict


def demo(
    directory: Annotated[
        Path, typer.Argument(help="Examples folder holding demo/ and demo-scenario.yaml.")
    ] = Path("examples"),
) -> None:
    """Run the policy engine on the demo application: reachability matrix and explanations."""
    manifests = directory / "demo"
    scenario_path = directory / "demo-scenario.yaml"
    if not manifests.is_dir() or not scenario_path.is_file():
        fail(f"{directory}: expected demo/ and demo-scenario.yaml inside")
    try:
        scenario: dict[str, Any] = yaml.safe_load(scenario_path.read_text()) or {}
    except yaml.YAMLError as exc:
        fail(f"{scenario_path}: {exc}")
    engine = build_engine([manifests])
    cluster = engine.cluster
    console.print(Rule("Palisade policy engine — demo application"))
    console.print(
        f"{len(cluster.pods)} pods in {len(cluster.namespaces)} namespaces, "
        f"{len(cluster.policies)} policies in "
        f"{len({p.tier for p in cluster.policies})} tiers, "
        f"{len(cluster.network_sets)} network sets"
    )
    specs = [parse_port_spec(str(p)) for p in scenario.get("probes", [])]
    matrix = reachability_matrix(engine, [s.probe for s in specs])
    for table in matrix_tables(matrix, [str(s) for s in specs]):
        console.print(table)
    for item in scenario.get("explain", []):
        console.print(Rule(f"explain {item['from']} → {item['to']} {item['port']}"))
        render_verdict(
            engine, explain_flow(engine, str(item["from"]), str(item["to"]), str(item["port"]))
        )
