"""The `palisade` command end to end, in process (typer's CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from palisade.cli import app
from tests.etcd_server import EtcdServer
from tests.shared_data import (
    conformance_cases,
    conformance_ips,
    conformance_step_documents,
    load_case,
)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def write_docs(path: Path, documents: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


GOOD = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  selector: all()
  types: [Egress]
  egress:
    - action: Allow
      protocol: UDP
      destination: {ports: [53]}
"""

BAD = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: app == web
  ingress:
    - action: Allow
      protocol: TCP
      destination: {ports: [70000]}
      source: {nets: [10.0.0.0/33]}
  bogusField: 1
"""


def test_validate_accepts_good_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", str(write_text(tmp_path / "g.yaml", GOOD))])
    assert result.exit_code == 0, result.output
    assert "1 resource(s) valid" in result.output


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_reports_each_problem_with_location(tmp_path: Path) -> None:
    bad = write_text(tmp_path / "bad.yaml", GOOD + "---\n" + BAD)
    result = runner.invoke(app, ["validate", "-f", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith(str(bad))]
    # selector, port out of range, bad CIDR, unknown field: one line each, in document 2
    assert len(lines) >= 4, result.output
    assert all(line.startswith(f"{bad}:2: ") for line in lines), lines
    text = "\n".join(lines)
    assert "spec.selector" in text
    assert "spec.ingress[0].destination.ports[0]" in text
    assert "spec.ingress[0].source.nets[0]" in text
    assert "bogusField" in text


def test_apply_is_atomic_and_get_delete_round_trip(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    good = write_text(tmp_path / "g.yaml", GOOD)
    mixed = write_text(tmp_path / "m.yaml", GOOD.replace("allow-dns", "other") + "---\n" + BAD)
    result = runner.invoke(app, ["apply", "-f", str(mixed), "--datastore", store])
    assert result.exit_code == 2
    result = runner.invoke(app, ["get", "gnp", "-o", "json", "--datastore", store])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["items"] == []  # nothing of the bad batch was written
    result = runner.invoke(app, ["apply", "-f", str(good), "--datastore", store])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["get", "gnp", "allow-dns", "-o", "json", "--datastore", store])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["spec"]["egress"][0]["protocol"] == "UDP"
    result = runner.invoke(app, ["delete", "gnp", "allow-dns", "--datastore", store])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["get", "gnp", "allow-dns", "--datastore", store])
    assert result.exit_code == 1


def test_matrix_json_shape_and_values_on_a_conformance_case(tmp_path: Path) -> None:
    path = next(p for p in conformance_cases() if "deny-ingress" in p.stem)
    case = load_case(path)
    ips = conformance_ips(case)
    manifest = write_docs(tmp_path / "case.yaml", conformance_step_documents(case, 0, ips))
    probe = case["steps"][0]["probes"][0]
    spec = f"{probe['port']}/{probe['protocol']}"
    result = runner.invoke(
        app, ["policy", "matrix", "-f", str(manifest), "--port", spec, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["probes"]
    (only,) = data["probes"]
    assert only["port"] == str(probe["port"]) and only["protocol"] == probe["protocol"]
    assert set(only["allowed"]) == set(case["pod_order"])
    for src, row in probe["expected"].items():
        for dst, expected in row.items():
            if src != dst:
                assert only["allowed"][src][dst] is expected, (src, dst)


def test_matrix_csv_and_named_port(tmp_path: Path) -> None:
    path = conformance_cases()[0]
    case = load_case(path)
    manifest = write_docs(
        tmp_path / "case.yaml", conformance_step_documents(case, 0, conformance_ips(case))
    )
    result = runner.invoke(
        app,
        ["policy", "matrix", "-f", str(manifest), "--port", "serve-80-tcp/TCP", "--format", "csv"],
    )
    assert result.exit_code == 0, result.output
    rows = result.output.strip().splitlines()
    assert rows[0] == "port,protocol,from,to,allowed"
    assert len(rows) == 1 + 81


@pytest.mark.parametrize(
    ("source", "destination", "port", "allowed", "expect"),
    [
        ("storefront/web-0", "api/orders-0", "8080/TCP", True, "knp:api/backends"),
        ("api/legacy-batch", "data/redis-0", "6379/TCP", False, "gnp:quarantine"),
        ("storefront/web-1", "169.254.169.254", "80/TCP", False, "gnp:block-metadata-and-threats"),
        ("api/catalog-0", "data/postgres-0", "5432/TCP", True, "snp:data/postgres-orders-only"),
    ],
)
def test_explain_names_the_deciding_policy(
    source: str, destination: str, port: str, allowed: bool, expect: str
) -> None:
    result = runner.invoke(
        app,
        [
            "policy",
            "explain",
            "-f",
            str(REPO / "examples" / "demo"),
            "--from",
            source,
            "--to",
            destination,
            "--port",
            port,
            "-o",
            "json",
        ],
    )
    assert result.exit_code == (0 if allowed else 1), result.output
    data = json.loads(result.output)
    assert data["allowed"] is allowed
    everything = json.dumps(data)
    assert expect in everything


def test_explain_staged_policy_changes_pending_verdict() -> None:
    result = runner.invoke(
        app,
        [
            "policy",
            "explain",
            "-f",
            str(REPO / "examples" / "demo"),
            "--from",
            "api/catalog-0",
            "--to",
            "data/postgres-0",
            "--port",
            "5432/TCP",
            "-o",
            "json",
        ],
    )
    data = json.loads(result.output)
    assert data["allowed"] is True
    assert data["pending_allowed"] is False
    assert any("snp:data/postgres-orders-only" in p for p in data["pending_ingress"]["policies"])


def test_bad_port_spec_and_unknown_pod_are_clear_errors() -> None:
    demo = str(REPO / "examples" / "demo")
    result = runner.invoke(app, ["policy", "matrix", "-f", demo, "--port", "80/ICMP"])
    assert result.exit_code == 2 and "protocol must be TCP, UDP or SCTP" in result.output
    result = runner.invoke(
        app,
        [
            "policy",
            "explain",
            "-f",
            demo,
            "--from",
            "nope/x",
            "--to",
            "api/orders-0",
            "--port",
            "80/TCP",
        ],
    )
    assert result.exit_code == 2 and "no such pod" in result.output


def test_demo_runs_on_the_examples_offline() -> None:
    # (the lab variant, the default as root, is tests/lab/test_lab_demo.py)
    result = runner.invoke(app, ["demo", str(REPO / "examples"), "--offline"])
    assert result.exit_code == 0, result.output
    assert "pairs allowed" in result.output
    assert "ALLOWED" in result.output and "DENIED" in result.output


@pytest.mark.etcd
def test_apply_get_delete_against_etcd(tmp_path: Path, etcd_server: EtcdServer) -> None:
    store = etcd_server.store_url("/palisade-cli/")
    demo = str(REPO / "examples" / "demo")
    result = runner.invoke(app, ["apply", "-f", demo, "--datastore", store])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["get", "networkpolicy", "-n", "data", "-o", "json", "--datastore", store]
    )
    assert result.exit_code == 0, result.output
    names = sorted(item["metadata"]["name"] for item in json.loads(result.output)["items"])
    assert names == ["default-deny", "stores"]
    result = runner.invoke(app, ["delete", "-f", demo, "--datastore", store])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["get", "gnp", "-o", "json", "--datastore", store])
    assert json.loads(result.output)["items"] == []


def test_errors_with_brackets_are_printed_verbatim() -> None:
    result = runner.invoke(app, ["get", "gnp", "--datastore", "bogus://[/x]"])
    assert result.exit_code == 1
    assert "bogus://[/x]" in result.output
