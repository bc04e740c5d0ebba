"""FlowStore: ingestion (records and NDJSON), batch ids, queries, talkers, denied, retention."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from palisade.flows import FlowRecord
from palisade.flowstore import FlowStore


def record(**fields: Any) -> FlowRecord:
    values: dict[str, Any] = {
        "start_time": 1_700_000_000,
        "end_time": 1_700_000_015,
        "action": "allow",
        "reporter": "dst",
        "proto": "tcp",
        "source_type": "wep",
        "source_namespace": "frontend",
        "source_name_aggr": "web-7d9f8c6b5-*",
        "dest_type": "wep",
        "dest_namespace": "backend",
        "dest_name_aggr": "api-5c4b8d7f9-*",
        "dest_port": 8080,
        "enforced_policies": ("0|default|np:backend/allow-web|allow|0",),
        "num_flows": 1,
    }
    values.update(fields)
    return FlowRecord(**values)


def ndjson(*records: FlowRecord) -> bytes:
    return b"".join(json.dumps(r.to_json()).encode() + b"\n" for r in records)


def test_records_round_trip_through_the_store() -> None:
    full = record(
        source_ip="10.0.0.1",
        source_port=43512,
        source_name="web-7d9f8c6b5-x2k4p",
        source_labels=("app=web", "tier=front"),
        dest_ip="fd00::5",
        dest_name="api-5c4b8d7f9-abcde",
        dest_labels=("app=api",),
        dest_service_namespace="backend",
        dest_service_name="api",
        dest_service_port="http",
        dest_service_port_num=80,
        dest_domains=("api.example.com",),
        pending_policies=("0|default|snp:backend/default.new|deny|-1",),
        bytes_in=1,
        bytes_out=2,
        packets_in=3,
        packets_out=4,
        num_flows=5,
        num_flows_started=6,
        num_flows_completed=7,
        host="node-1",
        extra={"all_policies": ["0|default|np:backend/allow-web|allow|0"], "process_name": "-"},
    )
    with FlowStore() as store:
        assert store.ingest([full]) == 1
        (back,) = store.query()
    assert back == full
    assert back.extra == full.extra


def test_ndjson_ingest_matches_record_ingest() -> None:
    records = [record(start_time=i, end_time=i + 15, bytes_in=i) for i in range(50)]
    with FlowStore() as by_records, FlowStore() as by_ndjson:
        by_records.ingest(records)
        result = by_ndjson.ingest_ndjson(ndjson(*records))
        assert result.added == result.imported == 50
        assert result.malformed == []
        assert not result.duplicate
        assert by_records.query() == by_ndjson.query()


def test_clean_files_take_the_direct_path_and_bad_ones_are_staged() -> None:
    with FlowStore() as store:
        staged: list[Path] = []
        stage = store._stage_with_duckdb

        def spy(path: Path, *, tolerant: bool) -> None:
            staged.append(path)
            stage(path, tolerant=tolerant)

        store._stage_with_duckdb = spy  # type: ignore[method-assign]
        assert store.ingest_ndjson(ndjson(record(), record())).added == 2
        assert staged == []
        result = store.ingest_ndjson(ndjson(record()) + b"garbage\n" + ndjson(record()))
        assert (result.added, result.malformed) == (2, [(2, "not valid JSON")])
        assert len(staged) >= 1
        assert store.count() == 4
        assert store.graph()["edges"][0]["flows"] == 4  # the rollup took both paths' rows


def test_ndjson_defaults_for_missing_optional_fields() -> None:
    line = b'{"start_time":10,"end_time":25,"action":"deny","reporter":"src","proto":"udp"}\n'
    with FlowStore() as store:
        store.ingest_ndjson(line)
        (back,) = store.query()
    assert back == FlowRecord(
        start_time=10, end_time=25, action="deny", reporter="src", proto="udp"
    )


def test_malformed_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    good = json.dumps(record().to_json())
    lines = [
        good,
        "garbage",
        "",
        '{"start_time": 1}',
        "[1, 2]",
        good.replace('"allow"', '"maybe"'),
        good.replace('"reporter": "dst"', '"reporter": "up"'),
        '{"start_time": "soon", "end_time": 2, "action": "allow", "reporter": "src", '
        '"proto": "tcp"}',
        good.replace('"source_type": "wep"', '"source_type": "pod"'),
        '{"start_time": 1, "end_time": 2, "action": "allow", "reporter": "src"}',
        '{"start_time": 1, "end_time": 2, "action": "allow", "reporter": "src", "proto": "tcp"',
        good,
        "   ",
    ]
    path = tmp_path / "flows.ndjson"
    path.write_text("\n".join(lines) + "\n")
    with FlowStore() as store:
        result = store.ingest_ndjson(path)
        assert store.count() == 2
    assert result.added == 2
    assert result.malformed == [
        (2, "not valid JSON"),
        (4, "end_time: missing or not an integer"),
        (5, "not a JSON object"),
        (6, "action: maybe is not allow or deny"),
        (7, "reporter: up is not src, dst or fwd"),
        (8, "start_time: missing or not an integer"),
        (9, "source_type: pod is not wep, hep, ns or net"),
        (10, "proto: missing"),
        (11, "not valid JSON"),
    ]


def test_lines_duckdb_cannot_read_are_staged_from_python(tmp_path: Path) -> None:
    good = json.dumps(record().to_json()).encode()
    path = tmp_path / "flows.ndjson"
    path.write_bytes(good + b"\n\xff\xfe not utf-8 \x01\x02\n" + good + b"\n")
    with FlowStore() as store:
        result = store.ingest_ndjson(path)
    assert result.added == 2
    assert [line for line, _ in result.malformed] == [2]


def test_batch_ids_are_idempotent_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    batch = ndjson(record(), record(bytes_in=7))
    with FlowStore(path) as store:
        assert store.ingest_ndjson(batch, batch_id="agent-1:42").added == 2
        again = store.ingest_ndjson(batch, batch_id="agent-1:42")
        assert again.added == 0 and again.duplicate
        assert store.ingest([record()], batch_id="agent-1:43") == 1
        assert store.ingest([record()], batch_id="agent-1:43") == 0
    with FlowStore(path) as store:
        assert store.count() == 3
        assert store.batch_ingested("agent-1:42")
        assert store.ingest_ndjson(batch, batch_id="agent-1:42").duplicate
        assert store.ingest([record()], batch_id="agent-1:43") == 0
        assert store.ingest_ndjson(batch, batch_id="agent-1:44").added == 2
        assert store.count() == 5


def test_a_failed_batch_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    with FlowStore() as store:
        failing = "INSERT INTO flows SELECT * FROM no_such_table"
        store._insert_direct = failing + " WHERE ? IS NULL"  # type: ignore[misc]
        store._insert_select = failing  # type: ignore[misc]
        with pytest.raises(Exception, match="no_such_table"):
            store.ingest_ndjson(ndjson(record()), batch_id="b")
        assert not store.batch_ingested("b")
        assert store.count() == 0


def test_query_filters() -> None:
    records = [
        record(start_time=0, end_time=15),
        record(
            start_time=15,
            end_time=30,
            action="deny",
            enforced_policies=("0|security|gnp:security.quarantine|deny|1",),
        ),
        record(
            start_time=30,
            end_time=45,
            source_namespace="ops",
            source_name_aggr="-",
            source_name="job-1",
            dest_namespace="db",
            dest_name_aggr="pg-*",
            enforced_policies=(),
            pending_policies=("0|default|snp:db/default.lock|deny|0",),
        ),
    ]
    with FlowStore() as store:
        store.ingest(records)
        assert store.query() == records[::-1]
        assert store.query(limit=1) == [records[2]]
        assert store.query(since=30) == [records[2], records[1]]
        assert store.query(until=15) == [records[0]]
        assert store.query(since=16, until=30) == [records[1]]
        assert store.query(namespace="backend") == [records[1], records[0]]
        assert store.query(namespace="db") == [records[2]]
        assert store.query(namespace="ops") == [records[2]]
        assert store.query(workload="web-7d9f8c6b5-*") == [records[1], records[0]]
        assert store.query(workload="job-1") == [records[2]]
        assert store.query(workload="pg-*") == [records[2]]
        assert store.query(action="deny") == [records[1]]
        assert store.query(policy="quarantine") == [records[1]]
        assert store.query(policy="np:backend/") == [records[0]]
        assert store.query(policy="db/default.lock") == [records[2]]
        assert store.query(policy="security|") == []  # only the policy part is searched


def test_top_talkers_count_each_connection_once() -> None:
    records = [
        # web → api, seen at both ends: the destination's record counts.
        record(reporter="src", bytes_out=100, packets_out=1, num_flows=2),
        record(
            reporter="dst", bytes_in=100, bytes_out=20, packets_in=1, packets_out=1, num_flows=2
        ),
        # web → db denied at the destination: the deny record counts, the allow does not.
        record(reporter="src", dest_name_aggr="db-*", bytes_out=10, num_flows=1),
        record(reporter="dst", action="deny", dest_name_aggr="db-*", bytes_in=10, num_flows=1),
        # api → the internet: only the source reports.
        record(
            reporter="src",
            source_namespace="backend",
            source_name_aggr="api-*",
            dest_type="net",
            dest_namespace="-",
            dest_name_aggr="pub",
            bytes_out=5000,
            num_flows=4,
        ),
    ]
    with FlowStore() as store:
        store.ingest(records)
        assert store.top_talkers() == [
            {
                "source_namespace": "backend",
                "source_name": "api-*",
                "dest_namespace": "-",
                "dest_name": "pub",
                "bytes": 5000,
                "packets": 0,
                "flows": 4,
            },
            {
                "source_namespace": "frontend",
                "source_name": "web-7d9f8c6b5-*",
                "dest_namespace": "backend",
                "dest_name": "api-5c4b8d7f9-*",
                "bytes": 120,
                "packets": 2,
                "flows": 2,
            },
            {
                "source_namespace": "frontend",
                "source_name": "web-7d9f8c6b5-*",
                "dest_namespace": "backend",
                "dest_name": "db-*",
                "bytes": 10,
                "packets": 0,
                "flows": 1,
            },
        ]
        assert store.top_talkers(by="namespace", limit=1) == [
            {
                "source_namespace": "backend",
                "dest_namespace": "-",
                "bytes": 5000,
                "packets": 0,
                "flows": 4,
            },
        ]
        assert store.top_talkers(by="namespace")[1]["flows"] == 3
        with pytest.raises(ValueError, match="by"):
            store.top_talkers(by="pod")


def test_denied_names_the_last_enforced_hit() -> None:
    hits = (
        "1|default|np:backend/default.deny-all|deny|-1",
        "0|security|gnp:security.baseline|pass|0",
    )
    records = [
        record(action="deny", enforced_policies=hits, num_flows=3, bytes_in=30, packets_in=3),
        record(action="deny", enforced_policies=hits, num_flows=2, start_time=100, end_time=115),
        record(
            action="deny",
            reporter="src",
            source_namespace="monitoring",
            source_name_aggr="prom-*",
            dest_port=9090,
            num_flows=1,
            enforced_policies=(
                "10|security|gnp:security.egress|deny|2",
                "9|security|gnp:security.other|pass|0",
            ),
        ),
        record(action="allow", num_flows=50),
    ]
    with FlowStore() as store:
        store.ingest(records)
        assert store.denied() == [
            {
                "source_namespace": "frontend",
                "source_name": "web-7d9f8c6b5-*",
                "source_type": "wep",
                "dest_namespace": "backend",
                "dest_name": "api-5c4b8d7f9-*",
                "dest_type": "wep",
                "proto": "tcp",
                "dest_port": 8080,
                "reporter": "dst",
                "policy": "np:backend/default.deny-all",
                "tier": "default",
                "hit": hits[0],
                "bytes": 30,
                "packets": 3,
                "flows": 5,
            },
            {
                "source_namespace": "monitoring",
                "source_name": "prom-*",
                "source_type": "wep",
                "dest_namespace": "backend",
                "dest_name": "api-5c4b8d7f9-*",
                "dest_type": "wep",
                "proto": "tcp",
                "dest_port": 9090,
                "reporter": "src",
                "policy": "gnp:security.egress",
                "tier": "security",
                "hit": "10|security|gnp:security.egress|deny|2",
                "bytes": 0,
                "packets": 0,
                "flows": 1,
            },
        ]
        assert [d["flows"] for d in store.denied(until=1000)] == [2]
        assert len(store.denied(limit=1)) == 1


def test_retention_by_age_and_by_count() -> None:
    records = [record(start_time=t, end_time=t + 15) for t in range(0, 150, 15)]
    with FlowStore() as store:
        store.ingest(records)
        assert store.apply_retention(max_age_seconds=100, now=160) == 3  # ends 15, 30, 45
        assert store.count() == 7
        assert min(r.end_time for r in store.query()) == 60
        assert store.apply_retention(max_records=4) == 3
        assert sorted(r.end_time for r in store.query()) == [105, 120, 135, 150]
        assert store.apply_retention(max_records=10, max_age_seconds=1e9, now=160) == 0
        assert store.apply_retention() == 0


def test_ingest_of_nothing() -> None:
    with FlowStore() as store:
        assert store.ingest([]) == 0
        assert store.ingest_ndjson(b"").added == 0
        assert store.ingest_ndjson(b"\n\n").malformed == []
        assert store.query() == []
        assert store.graph() == {"nodes": [], "edges": []}
        assert store.denied() == [] and store.top_talkers() == []


def test_records_with_equal_fields_are_all_kept() -> None:
    with FlowStore() as store:
        assert store.ingest([record(), record()]) == 2
        assert store.ingest([replace(record(), extra={"x": 1})]) == 1
        assert store.count() == 3


DATA = Path(__file__).parents[1] / "flows" / "data"


def test_import_file_in_either_format(tmp_path: Path) -> None:
    with FlowStore(tmp_path / "flows.duckdb") as store:
        hubble = store.import_file(DATA / "hubble_flows.ndjson", batch_id="hubble-1")
        assert hubble.added == 10
        assert [line for line, _ in hubble.malformed] == [14, 15, 16, 17, 18, 19]
        assert hubble.skipped == [(11, "not a flow"), (12, "not a flow")]
        assert store.import_file(DATA / "hubble_flows.ndjson", batch_id="hubble-1").duplicate
        calico = store.import_file(DATA / "calico_flows.ndjson", format="auto")
        assert calico.added == 8
        assert store.count() == 18
        (dropped,) = store.query(policy="postgres-lockdown")
        assert dropped.extra == {"drop_reason_desc": "POLICY_DENIED", "Summary": "TCP Flags: SYN"}
        assert store.import_file(DATA / "hubble_flows.ndjson", format="hubble").added == 10
