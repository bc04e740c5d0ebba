"""Flow records as columns: endpoint references interned once, everything else as arrays.

Ten million records do not fit in Python objects in ten seconds; the flow store returns
columns anyway. :meth:`FlowColumns.from_records` is the seam for any iterable of records
(files today, the server's ``--since`` query later); producers that already hold columns
build :class:`FlowColumns` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from palisade.flows import PROTO_NUMBERS, FlowRecord

UNKNOWN_PROTOCOL = 255
"""Protocol column value for a ``proto`` text that is neither a known name nor a number
(255 is IANA-reserved, so no real flow has it)."""
NO_PORT = -1


@dataclass(frozen=True, slots=True, order=True)
class EndpointRef:
    """One side of a record, as the record names it (``-``/None where aggregated away)."""

    type: str
    namespace: str
    name: str
    name_aggr: str
    ip: str | None
    labels: tuple[str, ...] = ()

    @classmethod
    def source(cls, record: FlowRecord) -> EndpointRef:
        return cls(
            record.source_type,
            record.source_namespace,
            record.source_name,
            record.source_name_aggr,
            record.source_ip,
            record.source_labels,
        )

    @classmethod
    def destination(cls, record: FlowRecord) -> EndpointRef:
        return cls(
            record.dest_type,
            record.dest_namespace,
            record.dest_name,
            record.dest_name_aggr,
            record.dest_ip,
            record.dest_labels,
        )

    @property
    def group(self) -> str:
        """The workload-level name reports group by: ``namespace/name_aggr``, else the
        aggregated name (``pub``, ``pvt``, a host or global set), else the address."""
        name = self.name_aggr if self.name_aggr not in ("-", "") else self.name
        if name in ("-", ""):
            name = self.ip or "-"
        if self.namespace not in ("-", ""):
            return f"{self.namespace}/{name}"
        return name


def protocol_number(text: str) -> int:
    number = PROTO_NUMBERS.get(text.lower())
    if number is not None:
        return number
    if text.isdigit() and int(text) < UNKNOWN_PROTOCOL:
        return int(text)
    return UNKNOWN_PROTOCOL


@dataclass(frozen=True)
class FlowColumns:
    """Records as columns; ``src``/``dst`` index ``endpoints``."""

    endpoints: Sequence[EndpointRef]
    src: npt.NDArray[np.int32]
    dst: npt.NDArray[np.int32]
    protocol: npt.NDArray[np.uint8]
    port: npt.NDArray[np.int32]
    """Destination port, ``NO_PORT`` where the record has none."""
    allowed: npt.NDArray[np.bool_]
    """The record's own action (its reporter's direction)."""
    start_time: int | None = None
    end_time: int | None = None

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def from_records(cls, records: Iterable[FlowRecord]) -> FlowColumns:
        # Plain tuples as keys: hashing a frozen dataclass rebuilds its tuple every time.
        refs: dict[tuple[Any, ...], int] = {}
        src: list[int] = []
        dst: list[int] = []
        protocol: list[int] = []
        port: list[int] = []
        allowed: list[bool] = []
        protocols: dict[str, int] = {}
        start: int | None = None
        end: int | None = None
        for record in records:
            source = (
                record.source_type,
                record.source_namespace,
                record.source_name,
                record.source_name_aggr,
                record.source_ip,
                record.source_labels,
            )
            index = refs.get(source)
            if index is None:
                index = refs[source] = len(refs)
            src.append(index)
            destination = (
                record.dest_type,
                record.dest_namespace,
                record.dest_name,
                record.dest_name_aggr,
                record.dest_ip,
                record.dest_labels,
            )
            index = refs.get(destination)
            if index is None:
                index = refs[destination] = len(refs)
            dst.append(index)
            number = protocols.get(record.proto)
            if number is None:
                number = protocols[record.proto] = protocol_number(record.proto)
            protocol.append(number)
            dest_port = record.dest_port
            port.append(NO_PORT if dest_port is None else dest_port)
            allowed.append(record.action == "allow")
            if start is None or record.start_time < start:
                start = record.start_time
            if end is None or record.end_time > end:
                end = record.end_time
        return cls(
            endpoints=[EndpointRef(*key) for key in refs],
            src=np.array(src, dtype=np.int32),
            dst=np.array(dst, dtype=np.int32),
            protocol=np.array(protocol, dtype=np.uint8),
            port=np.array(port, dtype=np.int32),
            allowed=np.array(allowed, dtype=bool),
            start_time=start,
            end_time=end,
        )
