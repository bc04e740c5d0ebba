"""Aggregation at Calico's levels: examples per level, and properties (totals, idempotence)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.flows import FlowRecord
from palisade.flows._aggregate import (
    COUNTERS,
    Aggregator,
    aggregate,
    aggregate_by_action,
    iter_aggregate,
    sorted_hits,
)

ALLOW = "0|default|np:shop/default.allow-web|allow|0"
DENY = "0|default|np:shop/default.deny|deny|-1"


def flow(**fields: Any) -> FlowRecord:
    values: dict[str, Any] = {
        "start_time": 1_000_000_000,
        "end_time": 1_000_000_010,
        "action": "allow",
        "reporter": "src",
        "proto": "tcp",
        "source_ip": "10.0.0.1",
        "source_port": 40000,
        "source_name": "web-abc-1",
        "source_name_aggr": "web-abc-*",
        "source_namespace": "shop",
        "source_type": "wep",
        "source_labels": ("app=web", "pod-template-hash=abc"),
        "dest_ip": "10.0.0.2",
        "dest_port": 8080,
        "dest_name": "api-def-1",
        "dest_name_aggr": "api-def-*",
        "dest_namespace": "shop",
        "dest_type": "wep",
        "dest_labels": ("app=api",),
        "dest_service_namespace": "shop",
        "dest_service_name": "api",
        "dest_service_port": "http",
        "dest_service_port_num": 80,
        "enforced_policies": (ALLOW,),
        "pending_policies": (ALLOW,),
        "bytes_in": 10,
        "bytes_out": 20,
        "packets_in": 1,
        "packets_out": 2,
        "num_flows": 1,
        "num_flows_started": 1,
        "num_flows_completed": 0,
        "host": "node-1",
    }
    values.update(fields)
    return FlowRecord(**values)


def totals(records: list[FlowRecord]) -> dict[str, int]:
    return {name: sum(getattr(r, name) for r in records) for name in COUNTERS}


def test_level_0_merges_only_equal_five_tuples() -> None:
    a, b = flow(), flow(bytes_in=5, start_time=1_000_000_003, end_time=1_000_000_014)
    other_port = flow(source_port=40001)
    (merged, kept) = aggregate([a, other_port, b], 0)
    assert merged == flow(
        bytes_in=15,
        bytes_out=40,
        packets_in=2,
        packets_out=4,
        num_flows=2,
        num_flows_started=2,
        end_time=1_000_000_014,
    )
    assert kept == other_port


def test_level_1_drops_source_ports() -> None:
    (merged,) = aggregate([flow(), flow(source_port=40001), flow(source_port=40002)], 1)
    assert merged.source_port is None
    assert merged.source_ip == "10.0.0.1" and merged.source_name == "web-abc-1"
    assert merged.num_flows == 3 and merged.bytes_in == 30


def test_level_2_groups_pods_by_name_aggr() -> None:
    records = [
        flow(),
        flow(
            source_ip="10.0.0.7",
            source_name="web-abc-2",
            source_port=1,
            source_labels=("app=web", "pod-template-hash=abc", "zone=a"),
        ),
        flow(dest_ip="10.0.0.9", dest_name="api-def-2"),
    ]
    assert len(aggregate(records, 1)) == 3
    (merged,) = aggregate(records, 2)
    assert (merged.source_ip, merged.dest_ip, merged.source_name, merged.dest_name) == (
        None,
        None,
        "-",
        "-",
    )
    assert merged.source_port is None and merged.dest_port == 8080
    assert merged.source_labels == ("app=web", "pod-template-hash=abc")  # the intersection
    assert merged.num_flows == 3


def test_level_3_drops_the_destination_port_and_service_port() -> None:
    records = [flow(), flow(dest_port=8443, dest_service_port="https", dest_service_port_num=443)]
    assert len(aggregate(records, 2)) == 2
    (merged,) = aggregate(records, 3)
    assert (merged.dest_port, merged.dest_service_port, merged.dest_service_port_num) == (
        None,
        "-",
        None,
    )
    assert merged.dest_service_name == "api"


@pytest.mark.parametrize(
    "difference",
    [
        {"action": "deny"},
        {"reporter": "dst"},
        {"host": "node-2"},
        {"start_time": 1_000_000_015, "end_time": 1_000_000_020},
        {"enforced_policies": (DENY,)},
        {"proto": "udp"},
        {"dest_namespace": "other"},
        {"source_type": "ns"},
        {"dest_service_name": "-"},
    ],
)
def test_kept_apart_at_every_level(difference: dict[str, Any]) -> None:
    for level in range(4):
        assert len(aggregate([flow(), flow(**difference)], level)) == 2


def test_enforced_trace_is_a_set_and_pending_is_the_newest() -> None:
    trace = ("1|default|np:shop/default.b|allow|0", "0|sec|gnp:sec.a|pass|1")
    newer_pending = ("0|default|snp:shop/default.new|deny|-1",)
    (merged,) = aggregate(
        [
            flow(enforced_policies=trace),
            flow(
                enforced_policies=trace[::-1],
                end_time=1_000_000_012,
                pending_policies=newer_pending,
            ),
        ],
        0,
    )
    assert merged.enforced_policies == trace[::-1]  # by index
    assert merged.pending_policies == newer_pending


def test_domains_union_and_extra_common_values() -> None:
    (merged,) = aggregate(
        [
            flow(dest_domains=("a.example",), extra={"process_name": "curl", "k": 1}),
            flow(dest_domains=("b.example", "a.example"), extra={"process_name": "curl", "k": 2}),
        ],
        1,
    )
    assert merged.dest_domains == ("a.example", "b.example")
    assert merged.extra == {"process_name": "curl"}


def test_windows_are_aligned_to_the_epoch() -> None:
    records = [flow(start_time=t, end_time=t + 5) for t in (0, 14, 15, 29, 30, 59, 60)]
    assert [(r.start_time, r.end_time, r.num_flows) for r in aggregate(records, 0)] == [
        (0, 19, 2),
        (15, 34, 2),
        (30, 35, 1),
        (59, 64, 1),
        (60, 65, 1),
    ]
    assert [r.num_flows for r in aggregate(records, 0, interval=60)] == [6, 1]


def test_default_levels_by_action() -> None:
    records = [
        flow(source_ip="10.0.0.5", source_port=1),
        flow(source_ip="10.0.0.6", source_port=2),
        flow(action="deny", source_ip="10.0.0.5", source_port=1, enforced_policies=(DENY,)),
        flow(action="deny", source_ip="10.0.0.6", source_port=2, enforced_policies=(DENY,)),
    ]
    merged = aggregate_by_action(records)
    assert [(r.action, r.source_ip, r.num_flows) for r in merged] == [
        ("allow", None, 2),
        ("deny", "10.0.0.5", 1),
        ("deny", "10.0.0.6", 1),
    ]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="level"):
        aggregate([], 4)
    with pytest.raises(ValueError, match="interval"):
        aggregate([], 1, interval=0)
    assert aggregate([], 2) == []
    assert list(iter_aggregate([], 2)) == []


def test_sorted_hits_tolerates_odd_strings() -> None:
    assert sorted_hits(["10|t|p|allow|0", "2|t|p|allow|0", "x", "2|t|p|allow|0"]) == (
        "x",
        "2|t|p|allow|0",
        "10|t|p|allow|0",
    )


# -- properties ---------------------------------------------------------------------------

hits = st.sampled_from([ALLOW, DENY, "1|sec|gnp:sec.a|pass|0", "0|sec|gnp:sec.a|pass|0"])
labels = st.lists(st.sampled_from(["app=web", "app=api", "tier=a", "zone=x"]), unique=True)
counter = st.integers(min_value=0, max_value=10**9)


@st.composite
def records(draw: st.DrawFn) -> FlowRecord:
    start = draw(st.integers(min_value=0, max_value=200))
    return flow(
        start_time=start,
        end_time=start + draw(st.integers(min_value=0, max_value=30)),
        action=draw(st.sampled_from(["allow", "deny"])),
        reporter=draw(st.sampled_from(["src", "dst"])),
        proto=draw(st.sampled_from(["tcp", "udp", "icmp"])),
        host=draw(st.sampled_from(["node-1", "node-2"])),
        source_ip=draw(st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", None])),
        source_port=draw(st.sampled_from([1, 2, None])),
        source_name=draw(st.sampled_from(["web-1", "web-2", "-"])),
        source_labels=tuple(draw(labels)),
        dest_ip=draw(st.sampled_from(["10.0.1.1", "10.0.1.2"])),
        dest_port=draw(st.sampled_from([80, 443, None])),
        dest_service_port=draw(st.sampled_from(["http", "-"])),
        dest_labels=tuple(draw(labels)),
        dest_domains=tuple(draw(st.lists(st.sampled_from(["a.example", "b.example"])))),
        enforced_policies=tuple(draw(st.lists(hits, max_size=2, unique=True))),
        pending_policies=tuple(draw(st.lists(hits, max_size=2, unique=True))),
        bytes_in=draw(counter),
        bytes_out=draw(counter),
        packets_in=draw(counter),
        packets_out=draw(counter),
        num_flows=draw(st.integers(min_value=0, max_value=5)),
        num_flows_started=draw(st.integers(min_value=0, max_value=5)),
        num_flows_completed=draw(st.integers(min_value=0, max_value=5)),
    )


record_lists = st.lists(records(), max_size=40)
levels = st.integers(min_value=0, max_value=3)


@settings(max_examples=200)
@given(record_lists, levels, st.sampled_from([1, 15, 60]))
def test_totals_are_preserved(inputs: list[FlowRecord], level: int, interval: int) -> None:
    assert totals(aggregate(inputs, level, interval=interval)) == totals(inputs)


@settings(max_examples=200)
@given(record_lists, levels, levels, st.sampled_from([(15, 15), (15, 60), (1, 15)]))
def test_aggregating_twice_is_aggregating_once_at_the_coarser_level(
    inputs: list[FlowRecord], first: int, second: int, intervals: tuple[int, int]
) -> None:
    fine, coarse = intervals
    twice = aggregate(aggregate(inputs, first, interval=fine), second, interval=coarse)
    once = aggregate(inputs, max(first, second), interval=coarse)
    assert Counter(twice) == Counter(once)


@settings(max_examples=100)
@given(record_lists, levels)
def test_aggregation_is_idempotent_and_never_merges_verdicts(
    inputs: list[FlowRecord], level: int
) -> None:
    merged = aggregate(inputs, level)
    assert aggregate(merged, level) == merged
    verdicts = {(r.action, r.reporter, r.host, r.start_time // 15) for r in inputs}
    assert {(r.action, r.reporter, r.host, r.start_time // 15) for r in merged} == verdicts
    traces = {frozenset(r.enforced_policies) for r in inputs}
    assert {frozenset(r.enforced_policies) for r in merged} == traces


@settings(max_examples=100)
@given(record_lists, levels)
def test_streaming_matches_batch_on_time_ordered_input(
    inputs: list[FlowRecord], level: int
) -> None:
    ordered = sorted(inputs, key=lambda r: r.start_time)
    assert Counter(iter_aggregate(ordered, level)) == Counter(aggregate(ordered, level))
    # Out of order: totals still right.
    assert totals(list(iter_aggregate(inputs, level))) == totals(inputs)


def test_aggregator_is_incremental() -> None:
    aggregator = Aggregator(1)
    aggregator.add(flow())
    aggregator.add(flow(source_port=2))
    assert len(aggregator) == 1
    assert aggregator.records()[0].num_flows == 2
    aggregator.clear()
    assert aggregator.records() == []
