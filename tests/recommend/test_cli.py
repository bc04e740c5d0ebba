"""`palisade recommend` and `palisade whatif` end to end, in process."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from palisade.cli import app
from palisade.model import load_paths
from palisade.policy import Cluster, PolicyEngine
from palisade.policy.synthetic import generate_cluster
from tests.recommend.flowgen import records_for, sample_flows

runner = CliRunner()


def _inputs(tmp_path: Path, seed: int = 11) -> tuple[Path, Path]:
    documents = generate_cluster(namespaces=5, pods=40, policies=20, tiers=1, seed=seed)
    cluster_dir = tmp_path / "cluster"
    cluster_dir.mkdir()
    (cluster_dir / "all.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    engine = PolicyEngine(Cluster.from_documents(documents))
    flows = sample_flows(engine.cluster, 200, seed)
    lines = [
        json.dumps(record.to_json())
        for i, flow in enumerate(flows)
        for record in records_for(engine, flow, aggregated=i % 2 == 0)
    ]
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps({"action": "allow"}))
    lines.insert(7, "")
    flow_file = tmp_path / "flows.ndjson"
    flow_file.write_text("\n".join(lines) + "\n")
    return cluster_dir, flow_file


def test_recommend_writes_valid_staged_yaml_and_reports_bad_lines(tmp_path: Path) -> None:
    cluster_dir, flow_file = _inputs(tmp_path)
    out = tmp_path / "recommended.yaml"
    result = runner.invoke(
        app, ["recommend", "--flows", str(flow_file), "-f", str(cluster_dir), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "flows.ndjson:4:" in result.output
    assert "flows.ndjson:6:" in result.output
    text = out.read_text()
    assert text.startswith("# Least-privilege policies recommended by Palisade")
    loaded = load_paths([out])
    assert not loaded.problems, loaded.problems
    kinds = {r.to_document()["kind"] for r in loaded.resources}
    assert "StagedNetworkPolicy" in kinds
    # Deterministic: the same input gives the same text.
    again = tmp_path / "again.yaml"
    runner.invoke(
        app, ["recommend", "--flows", str(flow_file), "-f", str(cluster_dir), "-o", str(again)]
    )
    assert again.read_text() == text


def test_recommend_kubernetes_enforced_to_stdout(tmp_path: Path) -> None:
    cluster_dir, flow_file = _inputs(tmp_path)
    result = runner.invoke(
        app,
        [
            "recommend",
            "--flows",
            str(flow_file),
            "-f",
            str(cluster_dir),
            "--kind",
            "kubernetes",
            "--enforced",
            "--per-workload",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "apiVersion: networking.k8s.io/v1" in result.stdout


def test_whatif_staged_json_and_table(tmp_path: Path) -> None:
    cluster_dir, flow_file = _inputs(tmp_path)
    result = runner.invoke(
        app,
        [
            "whatif",
            "--flows",
            str(flow_file),
            "--cluster",
            str(cluster_dir),
            "--staged",
            "--format",
            "json",
        ],
    )
    assert result.exit_code in (0, 1), result.output
    start = result.stdout.index("{")
    report = json.loads(result.stdout[start:])
    assert report["mode"] == "staged"
    assert report["records"] == sum(
        report[k]["records"] for k in ("unchanged", "allow_to_deny", "deny_to_allow", "unknown")
    )
    assert result.exit_code == (1 if report["allow_to_deny"]["records"] else 0)
    table = runner.invoke(
        app, ["whatif", "--flows", str(flow_file), "--cluster", str(cluster_dir), "--staged"]
    )
    assert "verdict changes" in table.stdout


def test_whatif_proposed_recommendation(tmp_path: Path) -> None:
    cluster_dir, flow_file = _inputs(tmp_path)
    proposed = tmp_path / "proposed.yaml"
    runner.invoke(
        app,
        [
            "recommend",
            "--flows",
            str(flow_file),
            "-f",
            str(cluster_dir),
            "--enforced",
            "-o",
            str(proposed),
        ],
    )
    result = runner.invoke(
        app,
        [
            "whatif",
            "-f",
            str(proposed),
            "--flows",
            str(flow_file),
            "--cluster",
            str(cluster_dir),
            "--format",
            "json",
        ],
    )
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["mode"] == "proposed"


def test_whatif_needs_something_to_compare(tmp_path: Path) -> None:
    cluster_dir, flow_file = _inputs(tmp_path)
    result = runner.invoke(
        app, ["whatif", "--flows", str(flow_file), "--cluster", str(cluster_dir)]
    )
    assert result.exit_code == 2
    missing = runner.invoke(
        app, ["recommend", "--flows", str(tmp_path / "nope.ndjson"), "-f", str(cluster_dir)]
    )
    assert missing.exit_code == 2
    assert "no such file" in missing.output
