"""Flow logs: Calico's flow-log record, and (as they are built) aggregation and importers.

See :mod:`palisade.flows._record` for the record and its conventions.
"""

from ._record import (
    PROTO_NAMES,
    PROTO_NUMBERS,
    Action,
    EndpointType,
    FlowRecord,
    Reporter,
    proto_name,
)

__all__ = [
    "PROTO_NAMES",
    "PROTO_NUMBERS",
    "Action",
    "EndpointType",
    "FlowRecord",
    "Reporter",
    "proto_name",
]
