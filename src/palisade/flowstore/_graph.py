"""Service-graph nodes: which node a flow endpoint belongs to, and back.

Node ids are ``kind:name`` strings that say what they stand for:

========================  ===================================================================
``namespace:<ns>``        the pods (``wep``) of a namespace that is not expanded
``workload:<ns>/<aggr>``  the pods of one workload (``*_name_aggr``) of an expanded namespace
``networkset:<ns>/<n>``   a NetworkSet (``ns`` endpoint type with a namespace)
``networkset:<n>``        a GlobalNetworkSet
``network:pub|pvt``       any other address, public or private (``net``)
``host:<name>``           a host endpoint (``hep``)
========================  ===================================================================

Node kinds are ``namespace``, ``workload``, ``network`` (network sets and pub/pvt) and
``host`` (host endpoints, which Calico's namespace view shows apart).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str
    kind: str
    namespace: str
    name: str
    endpoint_type: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "endpoint_type": self.endpoint_type,
        }


def node_for(
    endpoint_type: str, namespace: str, name_aggr: str, expand: Collection[str]
) -> GraphNode:
    """The node of an endpoint (Calico's ``*_type``, ``*_namespace``, ``*_name_aggr``)."""
    if endpoint_type == "wep":
        if namespace in expand:
            return GraphNode(
                f"workload:{namespace}/{name_aggr}", "workload", namespace, name_aggr, "wep"
            )
        return GraphNode(f"namespace:{namespace}", "namespace", namespace, namespace, "wep")
    if endpoint_type == "ns":
        scoped = f"{namespace}/{name_aggr}" if namespace != "-" else name_aggr
        return GraphNode(f"networkset:{scoped}", "network", namespace, name_aggr, "ns")
    if endpoint_type == "hep":
        return GraphNode(f"host:{name_aggr}", "host", "-", name_aggr, "hep")
    return GraphNode(f"network:{name_aggr}", "network", "-", name_aggr, "net")


def node_predicate(node_id: str, side: str) -> tuple[str, list[Any]]:
    """A SQL predicate (with parameters) selecting the flows whose ``side`` (``source`` or
    ``dest``) endpoint belongs to node ``node_id``; raises ``ValueError`` for an unknown id."""
    kind, _, rest = node_id.partition(":")
    if not rest:
        raise ValueError(f"{node_id!r} is not a graph node id")
    if kind == "namespace":
        return f"{side}_type = 'wep' AND {side}_namespace = ?", [rest]
    if kind == "workload":
        namespace, slash, name = rest.partition("/")
        if not slash:
            raise ValueError(f"{node_id!r}: a workload id is workload:<namespace>/<name>")
        return (
            f"{side}_type = 'wep' AND {side}_namespace = ? AND {side}_name_aggr = ?",
            [namespace, name],
        )
    if kind == "networkset":
        namespace, slash, name = rest.partition("/")
        if not slash:
            namespace, name = "-", rest
        return (
            f"{side}_type = 'ns' AND {side}_namespace = ? AND {side}_name_aggr = ?",
            [namespace, name],
        )
    if kind == "host":
        return f"{side}_type = 'hep' AND {side}_name_aggr = ?", [rest]
    if kind == "network":
        return f"{side}_type = 'net' AND {side}_name_aggr = ?", [rest]
    raise ValueError(f"{node_id!r}: unknown node kind {kind!r}")


#: Records that count once per connection in graph and talker totals. A connection between two
#: Calico endpoints is reported twice (``src`` and ``dst``); the record of its *last* enforcement
#: point counts: the destination's if the destination is a Calico endpoint, else the source's.
#: A denied connection has exactly one deny record (it goes no further), which counts.
COUNTED_ONCE = (
    "(action = 'deny' OR reporter = "
    "CASE WHEN dest_type IN ('wep', 'hep') THEN 'dst' ELSE 'src' END)"
)
