"""Flow records as columns: endpoint references interned once, everything else as arrays.

Ten million records do not fit in Python objects in ten seconds; the flow store returns
columns anyway. :meth:`FlowColumns.from_records` is the seam for any iterable of records
(files today, the server's ``--since`` query later); producers that already hold columns
build :class:`FlowColumns` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
        refs: dict[EndpointRef, int] = {}
        src: list[int] = []
        dst: list[int] = []
        protocol: list[int] = []
        port: list[int] = []
        allowed: list[bool] = []
        protocols: dict[str, int] = {}
        start: int | None = None
        end: int | None = None
        for record in records:
            source = EndpointRef.source(record)
            destination = EndpointRef.destination(record)
            src.append(refs.setdefault(source, len(refs)))
            dst.append(refs.setdefault(destination, len(refs)))
            number = protocols.get(record.proto)
            if number is None:
                number = protocols[record.proto] = protocol_number(record.proto)
            protocol.append(number)
            port.append(NO_PORT if record.dest_port is None else record.dest_port)
            allowed.append(record.action == "allow")
            start = record.start_time if start is None else min(start, record.start_time)
            end = record.end_time if end is None else max(end, record.end_time)
        return cls(
            endpoints=list(refs),
            src=np.array(src, dtype=np.int32),
            dst=np.array(dst, dtype=np.int32),
            protocol=np.array(protocol, dtype=np.uint8),
            port=np.array(port, dtype=np.int32),
            allowed=np.array(allowed, dtype=bool),
            start_time=start,
            end_time=end,
        )
