"""Aggregation of flow records at Calico's levels (``calico-policy.md`` §6.3).

Records merge when they come from the same node (``host``), fall in the same interval window
(``start_time // interval``; windows are aligned to the epoch, so a window of 60 s is the union
of four windows of 15 s) and agree on every field the level keeps. ``action`` and ``reporter``
are always kept apart, and so are different *enforced* policy traces: one output record per
distinct trace (the trace is a set of hits, so its order does not matter).

A merged record has:

- ``start_time``/``end_time``: the earliest start and the latest end of its inputs;
- labels: the labels every input has (intersection); ``dest_domains``: the union;
- ``enforced_policies``: the trace (sorted by hit index); ``pending_policies``: those of the
  input that ended last (Calico computes the pending trace when it writes the log, against the
  policies of that moment, so the newest one stands for the group);
- counters summed: bytes, packets, ``num_flows``, ``num_flows_started``,
  ``num_flows_completed`` (as Calico's aggregator adds them; connections that differ only in
  what the level drops are distinct connections);
- ``extra``: the fields whose value is the same in every input.

Pure functions: records in, records out. Aggregating at level *a* and then at level *b* gives
what aggregating once at ``max(a, b)`` gives (with the same or a coarser interval), and the
counters' totals never change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from ._record import FlowRecord


class AggregationLevel(IntEnum):
    """Calico's ``flowLogsFileAggregationKindFor…`` values."""

    NOTHING = 0
    SOURCE_PORTS = 1
    IPS_AND_SOURCE_PORTS = 2
    IPS_AND_PORTS = 3


#: Calico's defaults: allowed flows at level 2, denied flows at level 1.
DEFAULT_LEVEL_ALLOWED = AggregationLevel.IPS_AND_SOURCE_PORTS
DEFAULT_LEVEL_DENIED = AggregationLevel.SOURCE_PORTS
DEFAULT_INTERVAL = 15

COUNTERS = (
    "bytes_in",
    "bytes_out",
    "packets_in",
    "packets_out",
    "num_flows",
    "num_flows_started",
    "num_flows_completed",
)


def hit_index(hit: str) -> int:
    """The index of a policy-hit string (``index|tier|policy|action|rule``); -1 if it has none."""
    head = hit.split("|", 1)[0]
    try:
        return int(head)
    except ValueError:
        return -1


def sorted_hits(hits: Iterable[str]) -> tuple[str, ...]:
    """Hits in trace order: by index, then by text (Calico stores the lists as sets)."""
    return tuple(sorted(set(hits), key=lambda hit: (hit_index(hit), hit)))


def coarsen(record: FlowRecord, level: int) -> FlowRecord:
    """The record with the fields ``level`` aggregates away set to ``None``/``"-"``."""
    changes: dict[str, Any] = {}
    if level >= AggregationLevel.SOURCE_PORTS:
        changes["source_port"] = None
    if level >= AggregationLevel.IPS_AND_SOURCE_PORTS:
        changes.update(source_ip=None, dest_ip=None, source_name="-", dest_name="-")
    if level >= AggregationLevel.IPS_AND_PORTS:
        changes.update(dest_port=None, dest_service_port="-", dest_service_port_num=None)
    return replace(record, **changes) if changes else record


def window_start(start_time: int, interval: int) -> int:
    return start_time - start_time % interval


def aggregation_key(record: FlowRecord, level: int, interval: int) -> tuple[Any, ...]:
    """What records must share to merge at ``level`` (``record`` already coarsened)."""
    return (
        record.host,
        window_start(record.start_time, interval),
        record.action,
        record.reporter,
        record.proto,
        record.source_ip,
        record.source_port,
        record.source_name,
        record.source_name_aggr,
        record.source_namespace,
        record.source_type,
        record.dest_ip,
        record.dest_port,
        record.dest_name,
        record.dest_name_aggr,
        record.dest_namespace,
        record.dest_type,
        record.dest_service_namespace,
        record.dest_service_name,
        record.dest_service_port,
        record.dest_service_port_num,
        frozenset(record.enforced_policies),
    )


@dataclass(slots=True)
class _Group:
    """One output record being built."""

    first: FlowRecord
    start_time: int
    end_time: int
    source_labels: set[str]
    dest_labels: set[str]
    dest_domains: set[str]
    pending: tuple[int, tuple[str, ...]]
    counters: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: FlowRecord) -> _Group:
        return cls(
            first=record,
            start_time=record.start_time,
            end_time=record.end_time,
            source_labels=set(record.source_labels),
            dest_labels=set(record.dest_labels),
            dest_domains=set(record.dest_domains),
            pending=(record.end_time, sorted_hits(record.pending_policies)),
            counters=[getattr(record, name) for name in COUNTERS],
            extra=dict(record.extra),
        )

    def add(self, record: FlowRecord) -> None:
        self.start_time = min(self.start_time, record.start_time)
        self.end_time = max(self.end_time, record.end_time)
        self.source_labels.intersection_update(record.source_labels)
        self.dest_labels.intersection_update(record.dest_labels)
        self.dest_domains.update(record.dest_domains)
        self.pending = max(self.pending, (record.end_time, sorted_hits(record.pending_policies)))
        for position, name in enumerate(COUNTERS):
            self.counters[position] += getattr(record, name)
        if self.extra:
            self.extra = _common_items(self.extra, record.extra)

    def record(self) -> FlowRecord:
        return replace(
            self.first,
            start_time=self.start_time,
            end_time=self.end_time,
            source_labels=tuple(sorted(self.source_labels)),
            dest_labels=tuple(sorted(self.dest_labels)),
            dest_domains=tuple(sorted(self.dest_domains)),
            enforced_policies=sorted_hits(self.first.enforced_policies),
            pending_policies=self.pending[1],
            extra=self.extra,
            bytes_in=self.counters[0],
            bytes_out=self.counters[1],
            packets_in=self.counters[2],
            packets_out=self.counters[3],
            num_flows=self.counters[4],
            num_flows_started=self.counters[5],
            num_flows_completed=self.counters[6],
        )


def _common_items(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in left.items() if key in right and right[key] == value}


def _check(level: int, interval: int) -> None:
    if level not in tuple(AggregationLevel):
        raise ValueError(f"aggregation level {level} is not 0, 1, 2 or 3")
    if interval <= 0:
        raise ValueError(f"interval {interval} is not a positive number of seconds")


class Aggregator:
    """Incremental aggregation: :meth:`add` records, :meth:`records` the result so far."""

    def __init__(self, level: int, *, interval: int = DEFAULT_INTERVAL) -> None:
        _check(level, interval)
        self.level = level
        self.interval = interval
        self._groups: dict[tuple[Any, ...], _Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, record: FlowRecord) -> None:
        coarse = coarsen(record, self.level)
        key = aggregation_key(coarse, self.level, self.interval)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = _Group.of(coarse)
        else:
            group.add(coarse)

    def records(self) -> list[FlowRecord]:
        """Ordered by window, then in the order their groups first appeared."""
        ordered = sorted(self._groups.items(), key=lambda item: item[0][1])  # stable
        return [group.record() for _, group in ordered]

    def clear(self) -> None:
        self._groups.clear()


def aggregate(
    records: Iterable[FlowRecord], level: int, *, interval: int = DEFAULT_INTERVAL
) -> list[FlowRecord]:
    """Records aggregated at ``level`` per node and ``interval``-second window, ordered by
    window and then in the order their groups first appeared."""
    aggregator = Aggregator(level, interval=interval)
    for record in records:
        aggregator.add(record)
    return aggregator.records()


def aggregate_by_action(
    records: Iterable[FlowRecord],
    *,
    allowed: int = DEFAULT_LEVEL_ALLOWED,
    denied: int = DEFAULT_LEVEL_DENIED,
    interval: int = DEFAULT_INTERVAL,
) -> list[FlowRecord]:
    """Allowed and denied records each at their own level, as Felix is configured."""
    allowed_records: list[FlowRecord] = []
    denied_records: list[FlowRecord] = []
    for record in records:
        (allowed_records if record.action == "allow" else denied_records).append(record)
    merged = aggregate(allowed_records, allowed, interval=interval)
    merged += aggregate(denied_records, denied, interval=interval)
    return sorted(merged, key=lambda record: window_start(record.start_time, interval))


def iter_aggregate(
    records: Iterable[FlowRecord], level: int, *, interval: int = DEFAULT_INTERVAL
) -> Iterator[FlowRecord]:
    """:func:`aggregate` for long, time-ordered inputs: a window's records are yielded as soon
    as a record of a later window arrives, so memory holds one window's groups.

    A record older than the current window (out of order) starts its own groups and is yielded
    with the next flush: totals stay right, but its window may be split into more records than
    :func:`aggregate` would give.
    """
    aggregator = Aggregator(level, interval=interval)
    current: int | None = None
    for record in records:
        window = window_start(record.start_time, interval)
        if current is None or window > current:
            if current is not None:
                yield from aggregator.records()
                aggregator.clear()
            current = window
        aggregator.add(record)
    yield from aggregator.records()


__all__ = [
    "COUNTERS",
    "DEFAULT_INTERVAL",
    "DEFAULT_LEVEL_ALLOWED",
    "DEFAULT_LEVEL_DENIED",
    "AggregationLevel",
    "Aggregator",
    "aggregate",
    "aggregate_by_action",
    "aggregation_key",
    "coarsen",
    "hit_index",
    "iter_aggregate",
    "sorted_hits",
    "window_start",
]
