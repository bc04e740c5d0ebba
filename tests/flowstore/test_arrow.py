"""FlowStore.ingest_arrow: Arrow batches go in whole or not at all, once per batch id, and read
back as the same records as the other ingestion paths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from palisade.flowstore import (
    ArrowBatchError,
    FlowStore,
    arrow_schema,
    records_to_arrow,
    to_ipc_stream,
)
from tests.flowstore.test_store import ndjson, record


def records() -> list:  # type: ignore[type-arg]
    return [
        record(start_time=1_700_000_000 + i, end_time=1_700_000_015 + i, bytes_in=i)
        for i in range(6)
    ] + [
        record(
            action="deny",
            source_ip="10.0.0.1",
            source_labels=("app=web", "tier=front"),
            dest_labels=("app=api",),
            dest_domains=("api.example.com",),
            pending_policies=("0|default|np:backend/staged|deny|-1",),
            extra={"process_name": "curl", "num_process_names": 1},
        )
    ]


def stored(store: FlowStore) -> list:  # type: ignore[type-arg]
    return sorted(store.query(limit=1000), key=lambda r: (r.start_time, r.action, r.bytes_in))


def test_arrow_reads_back_as_the_records_and_as_ndjson_does(tmp_path: Path) -> None:
    table = records_to_arrow(records())
    assert table.schema == arrow_schema()
    with FlowStore() as by_arrow, FlowStore() as by_ndjson, FlowStore() as by_records:
        assert by_arrow.ingest_arrow(table).added == len(records())
        by_ndjson.ingest_ndjson(ndjson(*records()))
        by_records.ingest(records())
        assert stored(by_arrow) == stored(by_ndjson) == stored(by_records)
        assert [r.extra for r in stored(by_arrow)] == [r.extra for r in stored(by_records)]
        assert by_arrow.graph() == by_ndjson.graph()
        assert by_arrow.top_talkers() == by_ndjson.top_talkers()
    # the same from IPC stream bytes, a file, and a record batch
    path = tmp_path / "batch.arrows"
    path.write_bytes(to_ipc_stream(table))
    for source in (to_ipc_stream(table), path, str(path), table.to_batches()[0]):
        with FlowStore() as store:
            assert store.ingest_arrow(source).added == len(records())
            assert stored(store) == sorted(records(), key=lambda r: (r.start_time, r.action))


def test_batch_ids_are_idempotent_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "flows.duckdb"
    body = to_ipc_stream(records_to_arrow(records()))
    with FlowStore(path) as store:
        assert store.ingest_arrow(body, batch_id="node-0/1").added == 7
        again = store.ingest_arrow(body, batch_id="node-0/1")
        assert again.added == 0 and again.duplicate
    with FlowStore(path) as store:
        assert store.ingest_arrow(body, batch_id="node-0/1").duplicate
        assert store.ingest_ndjson(ndjson(record()), batch_id="node-0/1").duplicate
        assert store.ingest_arrow(body, batch_id="node-0/2").added == 7
        assert store.count() == 14


def test_optional_columns_take_calico_defaults_and_other_encodings_are_cast() -> None:
    table = pa.table(
        {
            "start_time": pa.array([1_700_000_000], pa.int32()),
            "end_time": pa.array([1_700_000_015], pa.uint32()),
            "action": pa.array(["allow"]).dictionary_encode(),
            "reporter": pa.array(["src"], pa.large_string()),
            "proto": ["udp"],
            "dest_port": pa.array([53], pa.int64()),
            "source_labels": pa.array([["a=b"]], pa.large_list(pa.large_string())),
        }
    )
    with FlowStore() as store:
        assert store.ingest_arrow(table).added == 1
        (got,) = store.query()
    assert got == record(
        action="allow",
        reporter="src",
        proto="udp",
        dest_port=53,
        source_labels=("a=b",),
        source_type="net",
        source_namespace="-",
        source_name_aggr="-",
        dest_type="net",
        dest_namespace="-",
        dest_name_aggr="-",
        enforced_policies=(),
        num_flows=0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.append_column("colour", pa.array(["red"] * t.num_rows)), "unknown column"),
        (lambda t: t.drop_columns(["action"]), "missing required column.*action"),
        (
            lambda t: t.set_column(0, "start_time", pa.array(["1"] * t.num_rows)),
            "column start_time: string, expected int64",
        ),
        (
            lambda t: t.set_column(13, "dest_port", pa.array([1 << 40] * t.num_rows)),
            "column dest_port: .*not in range",
        ),
        (
            lambda t: t.set_column(11, "source_labels", pa.array(["a=b"] * t.num_rows)),
            "column source_labels: string, expected list",
        ),
        (
            lambda t: t.set_column(2, "action", pa.array(["allow"] * 5 + ["permit", "x"])),
            r"row 6: action: permit is not allow or deny \(and 1 more invalid row",
        ),
        (
            lambda t: t.set_column(3, "reporter", pa.array(["dst"] * 6 + [None], pa.string())),
            "row 7: reporter: missing",
        ),
        (
            lambda t: t.set_column(34, "extra", pa.array(["{not json"] + [None] * 6)),
            "row 1: extra: not a JSON text",
        ),
    ],
)
def test_a_bad_batch_is_refused_whole_with_one_clear_error(change, message) -> None:  # type: ignore[no-untyped-def]
    bad = change(records_to_arrow(records()))
    with FlowStore() as store:
        store.ingest_arrow(records_to_arrow([record()]), batch_id="before")
        with pytest.raises(ArrowBatchError, match=message):
            store.ingest_arrow(to_ipc_stream(bad), batch_id="bad")
        assert store.count() == 1
        assert not store.batch_ingested("bad")  # the agent may send it again, fixed
        assert store.ingest_arrow(records_to_arrow(records()), batch_id="bad").added == 7


def test_bytes_that_are_not_an_arrow_stream_are_refused() -> None:
    with FlowStore() as store:
        with pytest.raises(ArrowBatchError, match="not an Arrow IPC stream"):
            store.ingest_arrow(ndjson(record()), batch_id="b")
        assert store.count() == 0 and not store.batch_ingested("b")


def test_batches_in_one_transaction_each_get_their_outcome() -> None:
    good = records_to_arrow(records())
    bad = good.set_column(2, "action", pa.array(["nope"] * good.num_rows))
    with FlowStore() as store:
        store.ingest_arrow(good, batch_id="old")
        outcomes = store.ingest_arrow_batches(
            [
                ("a", good),
                ("b", bad),
                ("old", good),
                ("a", good),  # the same id twice in one group: stored once
                (None, to_ipc_stream(records_to_arrow([replace(record(), bytes_in=1)]))),
                ("c", b"garbage"),
            ]
        )
        assert [getattr(o, "added", None) for o in outcomes] == [7, None, 0, 0, 1, None]
        assert [getattr(o, "duplicate", None) for o in outcomes][2:4] == [True, True]
        assert isinstance(outcomes[1], ArrowBatchError) and "row 1: action" in str(outcomes[1])
        assert isinstance(outcomes[5], ArrowBatchError)
        assert store.count() == 7 + 7 + 1
        assert store.batch_ingested("a") and not store.batch_ingested("b")
        assert not store.batch_ingested("c")
