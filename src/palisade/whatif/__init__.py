"""What-if: replay the flows of a window through a proposed or staged policy set.

``whatif(records, cluster_documents, proposed, staged=...)`` (or ``replay`` on
:class:`FlowColumns`) answers "which of these flows would change verdict?": the current
verdict is the cluster documents' enforced one; the new one comes from the proposed
documents applied over the cluster (same kind, namespace and name replace) and, with
``staged``, the pending view (staged policies enforced in their place). Flows are
deduplicated by (source, destination, protocol, port), references without addresses
(aggregation level 2) mapped back to an endpoint of the cluster, and both verdicts come
from the batch engine. Changed flows are grouped by workload pair (``namespace/name_aggr``)
and by the tier, policy and rule deciding the new verdict (the reference evaluator, once
per class of flows no rule can tell apart). Flows that cannot be replayed are counted as
unknown, by reason.

Left to others: reading records (files, the flow store) and presenting the report.
"""

from ._columns import NO_PORT, UNKNOWN_PROTOCOL, EndpointRef, FlowColumns
from ._replay import (
    ALLOW_TO_DENY,
    DEFAULT_TRACE_LIMIT,
    DENY_TO_ALLOW,
    PairChange,
    PolicyChange,
    WhatIfReport,
    merge_documents,
    pending_cluster,
    replay,
    whatif,
)

__all__ = [
    "ALLOW_TO_DENY",
    "DEFAULT_TRACE_LIMIT",
    "DENY_TO_ALLOW",
    "NO_PORT",
    "UNKNOWN_PROTOCOL",
    "EndpointRef",
    "FlowColumns",
    "PairChange",
    "PolicyChange",
    "WhatIfReport",
    "merge_documents",
    "pending_cluster",
    "replay",
    "whatif",
]
