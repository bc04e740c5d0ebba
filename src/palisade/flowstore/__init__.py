"""The flow store: flow-log records in DuckDB, and the questions asked of them.

:class:`FlowStore` keeps :class:`palisade.flows.FlowRecord`s in one wide DuckDB table with
Calico's field names (``_schema.py``), takes them as records, as Calico NDJSON (parsed and
validated inside DuckDB) or as Apache Arrow batches (the agents' form, read by DuckDB almost
without copying), remembers ingested batch ids in the same transaction as the records (an agent
that retries a batch adds nothing twice), and answers record queries, top talkers, denied
traffic, the namespace-level service graph with expandable namespaces, an edge's records and
policies, and retention. It leaves collecting records to the agents, aggregating them to
:mod:`palisade.flows`, and serving them to the server.
"""

from ._arrow import (
    ARROW_STREAM_MEDIA_TYPE,
    ArrowBatchError,
    arrow_schema,
    records_to_arrow,
    to_ipc_stream,
)
from ._graph import GraphNode, node_for, node_predicate
from ._store import FlowStore, IngestResult

__all__ = [
    "ARROW_STREAM_MEDIA_TYPE",
    "ArrowBatchError",
    "FlowStore",
    "GraphNode",
    "IngestResult",
    "arrow_schema",
    "node_for",
    "node_predicate",
    "records_to_arrow",
    "to_ipc_stream",
]
