"""`palisade server`: resources through the API, flow ingest (idempotent batches) and queries,
and no record lost when the server restarts while agents ship flows."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml
from fastapi.testclient import TestClient

from palisade.flows import FlowRecord
from palisade.flowstore import ARROW_STREAM_MEDIA_TYPE, records_to_arrow, to_ipc_stream
from palisade.resources import store_key
from palisade.server import FlowShipper, ServerConfig, create_app
from palisade.server._client import encode_arrow, encode_records
from tests.server.conftest import PALISADE, ServerProcess

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all", "namespace": "shop"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


def record(index: int, *, action: str = "allow", namespace: str = "shop") -> FlowRecord:
    return FlowRecord(
        start_time=1_700_000_000 + index,
        end_time=1_700_000_015 + index,
        action=action,  # type: ignore[arg-type]
        reporter="dst",
        proto="tcp",
        source_ip="10.244.0.2",
        source_port=40000 + index,
        source_name=f"web-{index % 3}",
        source_name_aggr="web-*",
        source_namespace=namespace,
        source_type="wep",
        source_labels=("app=web",),
        dest_ip="10.244.0.9",
        dest_port=8080,
        dest_name="api-0",
        dest_name_aggr="api-*",
        dest_namespace="shop",
        dest_type="wep",
        dest_labels=("app=api",),
        enforced_policies=(
            "0|default|knp:shop/deny-all|deny|-1"
            if action == "deny"
            else "0|default|knp:shop/api|allow|0",
        ),
        bytes_in=100 + index,
        bytes_out=50,
        packets_in=3,
        packets_out=2,
        num_flows=1,
        num_flows_started=1,
        num_flows_completed=1,
        host="node-0",
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = ServerConfig(
        datastore=f"sqlite:///{tmp_path / 'store.db'}", flow_store=str(tmp_path / "flows.duckdb")
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


def test_resources_apply_atomically_with_located_problems(client: TestClient) -> None:
    good = yaml.safe_dump_all([NAMESPACE, POLICY])
    applied = client.post(
        "/api/v1/apply", content=good, headers={"Content-Type": "application/yaml"}
    )
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] == [
        str(store_key(NAMESPACE)),
        str(store_key(POLICY)),
    ]
    listed = client.get("/api/v1/resources", params={"kind": "NetworkPolicy"}).json()["items"]
    assert [item["metadata"]["name"] for item in listed] == ["deny-all"]

    bad_policy = {
        **POLICY,
        "metadata": {"name": "other", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Sideways"]},
    }
    other = {**NAMESPACE, "metadata": {"name": "other"}}
    rejected = client.post("/api/v1/apply", content=yaml.safe_dump_all([other, bad_policy]))
    assert rejected.status_code == 422
    problems = rejected.json()["problems"]
    assert len(problems) == 1 and "request.yaml:2:" in problems[0] and "policyTypes" in problems[0]
    # nothing of the rejected request was applied
    assert client.get("/api/v1/resources/Namespace/-/other").status_code == 404
    assert client.get("/api/v1/resources/Namespace/-/shop").json()["metadata"]["name"] == "shop"

    deleted = client.delete("/api/v1/resources/Namespace/-/shop")
    assert deleted.status_code == 200
    assert client.delete("/api/v1/resources/Namespace/-/shop").status_code == 404


def test_ingest_is_idempotent_per_batch_and_queries_filter(client: TestClient) -> None:
    records = [record(i) for i in range(10)] + [record(i, action="deny") for i in range(10, 14)]
    body = encode_records(records)
    first = client.post("/api/v1/flows/ingest", content=body, headers={"X-Palisade-Batch": "b1"})
    assert first.status_code == 200 and first.json()["imported"] == 14
    again = client.post("/api/v1/flows/ingest", content=body, headers={"X-Palisade-Batch": "b1"})
    assert again.status_code == 200 and again.json()["imported"] == 0
    assert client.get("/api/v1/health").json()["flow_records"] == 14

    denied = client.get("/api/v1/flows", params={"action": "deny"}).json()
    assert len(denied) == 4 and {r["action"] for r in denied} == {"deny"}
    assert FlowRecord.from_json(denied[0]) in records
    assert len(client.get("/api/v1/flows", params={"namespace": "nowhere"}).json()) == 0
    assert len(client.get("/api/v1/flows", params={"policy": "deny-all"}).json()) == 4

    broken = body + b'{"not": "a flow"}\nnot json\n'
    answer = client.post("/api/v1/flows/ingest", content=broken, headers={"X-Palisade-Batch": "b2"})
    assert answer.json()["imported"] == 14
    assert [m["line"] for m in answer.json()["malformed"]] == [15, 16]
    assert client.get("/api/v1/flows", params={"window": "bogus"}).status_code == 400


def test_ingest_takes_arrow_streams_whole_or_not_at_all(client: TestClient) -> None:
    records = [record(i) for i in range(10)] + [record(i, action="deny") for i in range(10, 14)]
    body = encode_arrow(records)
    headers = {"Content-Type": ARROW_STREAM_MEDIA_TYPE, "X-Palisade-Batch": "a1"}
    first = client.post("/api/v1/flows/ingest", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"batch": "a1", "imported": 14, "duplicate": False, "malformed": []}
    again = client.post("/api/v1/flows/ingest", content=body, headers=headers)
    assert again.json()["imported"] == 0 and again.json()["duplicate"]
    # the same batch id sent as NDJSON is the same batch
    json_again = client.post(
        "/api/v1/flows/ingest", content=encode_records(records), headers={"X-Palisade-Batch": "a1"}
    )
    assert json_again.json()["duplicate"]
    denied = client.get("/api/v1/flows", params={"action": "deny"}).json()
    assert len(denied) == 4 and FlowRecord.from_json(denied[0]) in records

    table = records_to_arrow(records)
    bad = table.set_column(4, "proto", pa.array([*table.column("proto").to_pylist()[:-1], ""]))
    headers["X-Palisade-Batch"] = "a2"
    refused = client.post("/api/v1/flows/ingest", content=to_ipc_stream(bad), headers=headers)
    assert refused.status_code == 422
    assert "row 14: proto: missing" in refused.json()["detail"]
    not_arrow = client.post("/api/v1/flows/ingest", content=body[:100], headers=headers)
    assert not_arrow.status_code == 422 and "not an Arrow IPC stream" in not_arrow.text
    assert client.get("/api/v1/health").json()["flow_records"] == 14
    # refused batches are not remembered: the fixed batch goes in under the same id
    fixed = client.post("/api/v1/flows/ingest", content=body, headers=headers)
    assert fixed.json()["imported"] == 14


def test_concurrent_arrow_batches_share_commits(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from palisade.flowstore import FlowStore

    groups: list[int] = []
    ingest = FlowStore.ingest_arrow_batches

    def slow_ingest(self: FlowStore, batches: Any) -> Any:
        groups.append(len(batches))
        time.sleep(0.1)  # a slow commit, during which the other requests queue up
        return ingest(self, batches)

    monkeypatch.setattr(FlowStore, "ingest_arrow_batches", slow_ingest)
    answers: list[int] = []

    def send(index: int) -> None:
        body = encode_arrow(record(index * 10 + i) for i in range(10))
        answer = client.post(
            "/api/v1/flows/ingest",
            content=body,
            headers={"Content-Type": ARROW_STREAM_MEDIA_TYPE, "X-Palisade-Batch": f"c{index}"},
        )
        answers.append(answer.json()["imported"])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [10] * 16
    assert client.get("/api/v1/health").json()["flow_records"] == 160
    assert sum(groups) == 16 and max(groups) > 1  # fewer commits than batches


def test_a_server_restarted_during_ingest_loses_no_record(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # segments an agent of the previous version spooled (NDJSON) before it was upgraded
    for index in range(3):
        body = encode_records(record(10_000 + index * 25 + i) for i in range(25))
        (spool / f"{index:020d}-0000000{index}.ndjson").write_bytes(body)
    server_process.start()
    shipper = FlowShipper(spool, server_process.url, node="node-0", backoff=(0.05, 0.1, 0.2))
    try:
        sent = 75
        for batch in range(40):
            segment = shipper.add(record(batch * 25 + i) for i in range(25))
            assert segment is not None and segment.suffix == ".arrows"  # spooled as Arrow
            sent += 25
            if batch in (10, 25):
                server_process.kill()  # mid-stream, batches spooled and some unacknowledged
            if batch in (14, 30):
                server_process.start()
        assert shipper.flush(timeout=60), shipper.last_error
        assert shipper.failures > 0  # the outages were felt, and retried through
        assert shipper.rejected_batches == 0
    finally:
        shipper.close()
    assert httpx.get(f"{server_process.url}/api/v1/health").json()["flow_records"] == sent
    flows = httpx.get(f"{server_process.url}/api/v1/flows", params={"limit": 5000}).json()
    assert sorted(f["start_time"] for f in flows) == sorted(
        [record(10_000 + i).start_time for i in range(75)]
        + [record(i).start_time for i in range(1000)]
    )
    # and the records survive the server's own restart
    server_process.stop()
    server_process.start()
    assert httpx.get(f"{server_process.url}/api/v1/health").json()["flow_records"] == sent


def test_a_batch_the_server_refuses_is_set_aside_not_retried_forever(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    table = records_to_arrow([record(0)])
    bad = table.set_column(2, "action", [["maybe"]])
    (spool / "00000000000000000001-00000001.arrows").write_bytes(to_ipc_stream(bad))
    server_process.start()
    shipper = FlowShipper(spool, server_process.url, node="node-0", backoff=(0.05,))
    try:
        shipper.add([record(1), record(2)])
        assert shipper.flush(timeout=30), shipper.last_error
    finally:
        shipper.close()
    assert shipper.rejected_batches == 1
    assert "action: maybe is not allow or deny" in (shipper.last_error or "")
    assert (spool / "rejected" / "00000000000000000001-00000001.arrows").exists()
    assert httpx.get(f"{server_process.url}/api/v1/health").json()["flow_records"] == 2


def test_flows_cli_queries_and_imports_through_the_server(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    server_process.start()
    data = tmp_path / "flows.ndjson"
    lines = encode_records([record(i) for i in range(5)]).decode().splitlines()
    lines.insert(2, "{broken")
    data.write_text("\n".join(lines) + "\n")
    environment = {**os.environ, "PALISADE_SERVER": server_process.url}
    outputs = []
    for _ in range(2):  # importing the same file twice stores it once
        imported = _palisade(environment, "flows", "import", str(data))
        assert imported.returncode == 0, imported.stderr
        outputs.append(imported.stdout)
    assert f"{data}:3:" in outputs[0] and "5 record(s) imported, 1 malformed" in outputs[0]
    assert "0 record(s) imported" in outputs[1] and "imported before" in outputs[1]
    listed = _palisade(environment, "flows", "--format", "json", "--namespace", "shop")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 5
    down = _palisade(None, "flows", "--server", "http://127.0.0.1:9")
    assert down.returncode == 1 and "127.0.0.1:9" in down.stderr


HUBBLE = Path(__file__).resolve().parents[1] / "flows" / "data" / "hubble_flows.ndjson"


def test_hubble_files_import_through_the_cli_and_top_and_denied_answer(
    server_process: ServerProcess,
) -> None:
    from palisade.flows import read_flows

    expected = read_flows(HUBBLE, "hubble")
    assert expected.records and expected.malformed  # the sample has good and broken lines
    server_process.start()
    environment = {**os.environ, "PALISADE_SERVER": server_process.url}
    imported = _palisade(environment, "flows", "import", str(HUBBLE))
    assert imported.returncode == 0, imported.stderr
    assert f"{len(expected.records)} record(s) imported" in imported.stdout
    assert f"{len(expected.malformed)} malformed line(s)" in imported.stdout
    for line, _ in expected.malformed:
        assert f"{HUBBLE}:{line}:" in imported.stdout
    assert httpx.get(f"{server_process.url}/api/v1/health").json()["flow_records"] == len(
        expected.records
    )
    for command, check in (("top", "bytes"), ("denied", "hit")):
        answer = _palisade(environment, "flows", command, "--format", "json")
        assert answer.returncode == 0, answer.stderr
        rows = json.loads(answer.stdout)
        assert rows and all(check in row for row in rows)


def _pod_document(name: str, ip: str, app: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


STAGED_DENY = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "StagedNetworkPolicy",
    "metadata": {"name": "api-locked", "namespace": "shop"},
    "spec": {
        "selector": "app == 'api'",
        "types": ["Ingress"],
        "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}],
    },
}


def test_whatif_replays_stored_flows_through_staged_and_proposed_policies(
    client: TestClient,
) -> None:
    cluster = [
        NAMESPACE,
        _pod_document("web-0", "10.244.0.2", "web"),
        _pod_document("api-0", "10.244.0.9", "api"),
    ]
    applied = client.post("/api/v1/apply", content=yaml.safe_dump_all([*cluster, STAGED_DENY]))
    assert applied.status_code == 200, applied.text
    body = encode_records([record(i) for i in range(6)])  # web-0 → api-0:8080, allowed
    assert client.post("/api/v1/flows/ingest", content=body).json()["imported"] == 6

    staged = client.post("/api/v1/whatif", params={"staged": "true"}).json()
    assert staged["allow_to_deny"]["flows"] >= 1 and staged["unknown"]["flows"] == 0
    (pair,) = staged["by_workload_pair"]
    assert (pair["source"], pair["destination"]) == ("shop/web-*", "shop/api-*")

    # nothing staged, nothing proposed: nothing changes; a proposed policy that allows: same
    unchanged = client.post("/api/v1/whatif", params={"staged": "false"}).json()
    assert unchanged["allow_to_deny"]["flows"] == 0
    bad = client.post("/api/v1/whatif", content="kind: NetworkPolicy\n")
    assert bad.status_code == 422


def test_recommend_and_whatif_take_flows_and_cluster_from_the_server(
    server_process: ServerProcess,
) -> None:
    import dataclasses
    import time

    server_process.start()
    cluster = [
        NAMESPACE,
        _pod_document("web-0", "10.244.0.2", "web"),
        _pod_document("api-0", "10.244.0.9", "api"),
    ]
    applied = httpx.post(
        f"{server_process.url}/api/v1/apply", content=yaml.safe_dump_all([*cluster, STAGED_DENY])
    )
    assert applied.status_code == 200, applied.text
    now = int(time.time())
    recent = [
        dataclasses.replace(record(i), start_time=now - 20, end_time=now - 5) for i in range(4)
    ]
    httpx.post(f"{server_process.url}/api/v1/flows/ingest", content=encode_records(recent))
    environment = {**os.environ, "PALISADE_SERVER": server_process.url}

    predicted = _palisade(environment, "whatif", "--staged", "--since", "1h", "--format", "json")
    assert predicted.returncode == 1, predicted.stderr  # an allowed flow would be denied
    report = json.loads(predicted.stdout)
    assert report["allow_to_deny"]["flows"] >= 1

    recommended = _palisade(environment, "recommend", "--since", "1h", "--namespace", "shop")
    assert recommended.returncode == 0, recommended.stderr
    documents = [d for d in yaml.safe_load_all(recommended.stdout) if d]
    assert documents and all(d["kind"].startswith("Staged") for d in documents)
    assert "app == 'web'" in recommended.stdout or 'app == "web"' in recommended.stdout


def _palisade(
    environment: dict[str, str] | None, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """The ``palisade`` command with ``arguments``, its output captured."""
    return subprocess.run(
        [str(PALISADE), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_an_arrow_batch_read_as_ndjson_by_an_older_server_is_sent_again_as_ndjson(
    tmp_path: Path,
) -> None:
    shipper = FlowShipper(tmp_path / "spool", "http://127.0.0.1:9", node="node-0")
    shipper.close()
    records = [record(i) for i in range(3)]
    segment = tmp_path / "spool" / "00000000000000000001-00000001.arrows"
    segment.write_bytes(encode_arrow(records))
    sent: list[tuple[bytes, str | None, bool]] = []

    class OldServer:
        def ingest(self, body: bytes, batch_id: str | None = None, *, arrow: bool = False) -> Any:
            sent.append((body, batch_id, arrow))
            if body.startswith(b"{"):
                return {"imported": body.count(b"\n"), "malformed": []}
            return {"imported": 0, "malformed": [{"line": 1, "reason": "not valid JSON"}]}

    shipper._send(OldServer(), segment)  # type: ignore[arg-type]
    assert [(batch_id, arrow) for _, batch_id, arrow in sent] == [
        ("node-0/00000000000000000001-00000001", True),
        ("node-0/00000000000000000001-00000001.ndjson", False),
    ]
    assert [FlowRecord.from_json(json.loads(line)) for line in sent[1][0].splitlines()] == records
