"""Flow logs: Calico's flow-log record, its aggregation levels and importers.

- :mod:`palisade.flows._record`: :class:`FlowRecord` and its conventions (Calico's fields);
- :mod:`palisade.flows._aggregate`: aggregation at Calico's levels 0–3, per node and interval;
- :mod:`palisade.flows._import`: Calico Enterprise flow-log NDJSON and Hubble
  ``hubble observe -o json`` files, streamed, with every malformed line reported.

Storing and querying records is :mod:`palisade.flowstore`'s job.
"""

from ._aggregate import (
    DEFAULT_INTERVAL,
    DEFAULT_LEVEL_ALLOWED,
    DEFAULT_LEVEL_DENIED,
    AggregationLevel,
    Aggregator,
    aggregate,
    aggregate_by_action,
    iter_aggregate,
)
from ._import import (
    FlowFormat,
    ImportItem,
    ImportResult,
    Malformed,
    Skipped,
    iter_calico,
    iter_flows,
    iter_hubble,
    read_flows,
)
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
    "DEFAULT_INTERVAL",
    "DEFAULT_LEVEL_ALLOWED",
    "DEFAULT_LEVEL_DENIED",
    "PROTO_NAMES",
    "PROTO_NUMBERS",
    "Action",
    "AggregationLevel",
    "Aggregator",
    "EndpointType",
    "FlowFormat",
    "FlowRecord",
    "ImportItem",
    "ImportResult",
    "Malformed",
    "Reporter",
    "Skipped",
    "aggregate",
    "aggregate_by_action",
    "iter_aggregate",
    "iter_calico",
    "iter_flows",
    "iter_hubble",
    "proto_name",
    "read_flows",
]
