"""The edge rollup answers like the records would: graphs and talkers over any window, after
batches, compaction, retention and reopening, equal a reference computed from the records."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from palisade.flows import FlowRecord
from palisade.flowstore import FlowStore, node_for

NAMESPACES = ("shop", "db", "ops")
WORKLOADS = ("api-*", "web-*", "cache-*")


def random_records(rng: random.Random, count: int) -> list[FlowRecord]:
    records = []
    for _ in range(count):
        start = 1_000_000 + rng.randrange(0, 6 * 3600)

        def side() -> dict[str, str]:
            kind = rng.choice(("wep", "wep", "wep", "net", "ns", "hep"))
            if kind == "wep":
                return {
                    "type": kind,
                    "namespace": rng.choice(NAMESPACES),
                    "name_aggr": rng.choice(WORKLOADS),
                }
            if kind == "net":
                return {"type": kind, "namespace": "-", "name_aggr": rng.choice(("pub", "pvt"))}
            if kind == "ns":
                return {"type": kind, "namespace": rng.choice(("-", "ops")), "name_aggr": "feeds"}
            return {"type": kind, "namespace": "-", "name_aggr": "node-1"}

        source, dest = side(), side()
        records.append(
            FlowRecord(
                start_time=start,
                end_time=start + rng.choice((0, 15, 300, 5000)),
                action=rng.choice(("allow", "allow", "deny")),
                reporter=rng.choice(("src", "dst")),
                proto=rng.choice(("tcp", "udp")),
                source_type=source["type"],  # type: ignore[arg-type]
                source_namespace=source["namespace"],
                source_name_aggr=source["name_aggr"],
                dest_type=dest["type"],  # type: ignore[arg-type]
                dest_namespace=dest["namespace"],
                dest_name_aggr=dest["name_aggr"],
                bytes_in=rng.randrange(1000),
                bytes_out=rng.randrange(1000),
                packets_in=rng.randrange(10),
                packets_out=rng.randrange(10),
                num_flows=rng.randrange(1, 5),
            )
        )
    return records


def counted(record: FlowRecord) -> bool:
    last_hop = "dst" if record.dest_type in ("wep", "hep") else "src"
    return record.action == "deny" or record.reporter == last_hop


def in_window(record: FlowRecord, since: float | None, until: float | None) -> bool:
    return (since is None or record.end_time >= since) and (
        until is None or record.start_time < until
    )


def reference_graph(
    records: list[FlowRecord], since: float | None, until: float | None, expand: list[str]
) -> dict[tuple[str, str], tuple[int, ...]]:
    edges: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in records:
        if not (counted(r) and in_window(r, since, until)):
            continue
        source = node_for(r.source_type, r.source_namespace, r.source_name_aggr, expand).id
        target = node_for(r.dest_type, r.dest_namespace, r.dest_name_aggr, expand).id
        edge = edges[(source, target)]
        edge[0] += r.bytes_in + r.bytes_out
        edge[1] += r.packets_in + r.packets_out
        edge[2] += r.num_flows
        edge[3 if r.action == "allow" else 4] += r.num_flows
    return {key: tuple(value) for key, value in edges.items()}


def store_graph(
    store: FlowStore, since: float | None, until: float | None, expand: list[str]
) -> dict[tuple[str, str], tuple[int, ...]]:
    graph: dict[str, Any] = store.graph(since=since, until=until, expand=expand)
    return {
        (e["source"], e["target"]): (
            e["bytes"],
            e["packets"],
            e["flows"],
            e["allowed"],
            e["denied"],
        )
        for e in graph["edges"]
    }


WINDOWS = [
    (None, None),
    (1_000_000 + 3600, None),
    (None, 1_000_000 + 7200),
    (1_000_000 + 1800, 1_000_000 + 9000.5),
    (1_000_000 + 3600, 1_000_000 + 7200),
    (1_000_000 + 100, 1_000_000 + 200),
    (1_000_000 + 4000, 1_000_000 + 3000),
]


def check(store: FlowStore, records: list[FlowRecord]) -> None:
    for since, until in WINDOWS:
        for expand in ([], ["shop"], ["shop", "db", "ops"]):
            assert store_graph(store, since, until, expand) == reference_graph(
                records, since, until, expand
            ), (since, until, expand)
        talkers = store.top_talkers(since=since, until=until, by="namespace", limit=1000)
        expected: dict[tuple[str, str], int] = defaultdict(int)
        for r in records:
            if counted(r) and in_window(r, since, until):
                expected[(r.source_namespace, r.dest_namespace)] += r.bytes_in + r.bytes_out
        assert {(t["source_namespace"], t["dest_namespace"]): t["bytes"] for t in talkers} == {
            key: value for key, value in expected.items()
        }


@pytest.mark.parametrize("seed", [1, 2])
def test_rollup_matches_the_records(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = random_records(rng, 600)
    path = tmp_path / "flows.duckdb"
    with FlowStore(path) as store:
        for start in range(0, len(records), 50):  # many batches: many rollup rows per edge
            store.ingest(records[start : start + 50])
        check(store, records)
        store._compact_rollup()
        check(store, records)
        deleted = store.apply_retention(max_age_seconds=3 * 3600, now=1_000_000 + 5 * 3600)
        records = [r for r in records if r.end_time >= 1_000_000 + 2 * 3600]
        assert deleted and store.count() == len(records)
        check(store, records)
        store.apply_retention(max_records=200)
        kept = sorted(store.query(limit=10_000), key=repr)
        records = [r for r in records if r in kept]
        check(store, kept)
    with FlowStore(path) as store:
        check(store, kept)
        store._connection.execute("DELETE FROM edge_rollup")
    with FlowStore(path) as store:  # a store without a rollup gets one
        check(store, kept)
