"""Policy recommendation: least-privilege policies from the flows a cluster really had.

``recommend(records, documents, options)`` reads flow records of a window (allowed ones are
the evidence: ``dst``-reported records for ingress, ``src``-reported for egress), groups pods
into workloads by their stable labels (volatile ones such as ``pod-template-hash`` dropped),
and writes, per namespace or per workload, a policy that selects the workloads and allows
exactly what was seen: per peer the observed ports (named where the destination declares
the name, contiguous numbers merged into ranges), intra-namespace peers by selector,
cross-namespace peers with a namespace selector, existing network sets reused and other
external addresses aggregated into new NetworkSets, DNS to kube-dns (UDP and TCP 53) and
monitoring scrapes as rules of their own. Output: documents, and YAML with a header giving
the evidence. Deterministic for the same input.

Left to others: reading records (files, the flow store), applying the result.
"""

from ._evidence import SYSTEM_NAMESPACES, Peer
from ._recommend import Recommendation, RecommendOptions, recommend
from ._workloads import (
    PREFERRED_KEYS,
    VOLATILE_LABELS,
    Workload,
    WorkloadIndex,
    WorkloadSelector,
    stable_labels,
)

__all__ = [
    "PREFERRED_KEYS",
    "SYSTEM_NAMESPACES",
    "VOLATILE_LABELS",
    "Peer",
    "RecommendOptions",
    "Recommendation",
    "Workload",
    "WorkloadIndex",
    "WorkloadSelector",
    "recommend",
    "stable_labels",
]
