"""The service graph on a small hand-made dataset: exact nodes and edges, expansion, edges'
records and policies."""

from __future__ import annotations

from typing import Any

import pytest

from palisade.flows import FlowRecord
from palisade.flowstore import FlowStore, node_for, node_predicate

ALLOW_API = "0|default|np:backend/default.allow-web|allow|0"
DENY_DB = "0|default|np:backend/default.db-deny|deny|-1"
DENY_PROM = "0|security|gnp:security.no-scrape|deny|1"


def flow(source: tuple[str, str, str], dest: tuple[str, str, str], **fields: Any) -> FlowRecord:
    """A record from ``(type, namespace, name_aggr)`` to ``(type, namespace, name_aggr)``."""
    values: dict[str, Any] = {
        "start_time": 1000,
        "end_time": 1015,
        "action": "allow",
        "reporter": "dst",
        "proto": "tcp",
        "source_type": source[0],
        "source_namespace": source[1],
        "source_name_aggr": source[2],
        "dest_type": dest[0],
        "dest_namespace": dest[1],
        "dest_name_aggr": dest[2],
        "num_flows": 1,
    }
    values.update(fields)
    return FlowRecord(**values)


WEB = ("wep", "frontend", "web-*")
API = ("wep", "backend", "api-*")
DB = ("wep", "backend", "db-*")
PROM = ("wep", "monitoring", "prom-*")
PUB = ("net", "-", "pub")
PVT = ("net", "-", "pvt")
DNS = ("ns", "-", "dns-servers")
PARTNERS = ("ns", "backend", "partners")
NODE = ("hep", "-", "node-1")

RECORDS = [
    # web → api, both ends report; the destination's record counts.
    flow(WEB, API, reporter="src", bytes_out=300, num_flows=3, enforced_policies=(ALLOW_API,)),
    flow(WEB, API, bytes_in=300, packets_in=3, num_flows=3, enforced_policies=(ALLOW_API,)),
    # web → db: allowed out of web, denied into db.
    flow(WEB, DB, reporter="src", bytes_out=40, num_flows=2),
    flow(
        WEB, DB, action="deny", bytes_in=40, packets_in=2, num_flows=2, enforced_policies=(DENY_DB,)
    ),
    # api → the internet, api → a global network set, api → a namespaced network set.
    flow(API, PUB, reporter="src", bytes_out=1000, packets_out=10, num_flows=1, proto="tcp"),
    flow(API, DNS, reporter="src", bytes_out=80, packets_out=2, num_flows=5, proto="udp"),
    flow(API, PARTNERS, reporter="src", bytes_out=7, num_flows=1),
    # a private address → web (only the destination reports).
    flow(PVT, WEB, bytes_in=50, num_flows=4),
    # prom → api denied at the source (egress): there is no destination record.
    flow(PROM, API, reporter="src", action="deny", num_flows=1, enforced_policies=(DENY_PROM,)),
    # a host endpoint → db.
    flow(NODE, DB, bytes_in=9, num_flows=1),
    # outside the window used below.
    flow(WEB, API, start_time=5000, end_time=5015, bytes_in=1, num_flows=100),
]


def edge(source: str, target: str, **counts: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "source": source,
        "target": target,
        "bytes": 0,
        "packets": 0,
        "flows": 0,
        "allowed": 0,
        "denied": 0,
        "protocols": ["tcp"],
    }
    values.update(counts)
    return values


def node(node_id: str, kind: str, namespace: str, name: str, endpoint_type: str) -> dict[str, str]:
    return {
        "id": node_id,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "endpoint_type": endpoint_type,
    }


@pytest.fixture
def store() -> FlowStore:
    flow_store = FlowStore()
    flow_store.ingest(RECORDS)
    return flow_store


def test_namespace_view(store: FlowStore) -> None:
    assert store.graph(until=2000) == {
        "nodes": [
            node("host:node-1", "host", "-", "node-1", "hep"),
            node("namespace:backend", "namespace", "backend", "backend", "wep"),
            node("namespace:frontend", "namespace", "frontend", "frontend", "wep"),
            node("namespace:monitoring", "namespace", "monitoring", "monitoring", "wep"),
            node("network:pub", "network", "-", "pub", "net"),
            node("network:pvt", "network", "-", "pvt", "net"),
            node("networkset:backend/partners", "network", "backend", "partners", "ns"),
            node("networkset:dns-servers", "network", "-", "dns-servers", "ns"),
        ],
        "edges": [
            edge("host:node-1", "namespace:backend", bytes=9, flows=1, allowed=1),
            edge("namespace:backend", "network:pub", bytes=1000, packets=10, flows=1, allowed=1),
            edge("namespace:backend", "networkset:backend/partners", bytes=7, flows=1, allowed=1),
            edge(
                "namespace:backend",
                "networkset:dns-servers",
                bytes=80,
                packets=2,
                flows=5,
                allowed=5,
                protocols=["udp"],
            ),
            edge(
                "namespace:frontend",
                "namespace:backend",
                bytes=340,
                packets=5,
                flows=5,
                allowed=3,
                denied=2,
            ),
            edge("namespace:monitoring", "namespace:backend", flows=1, denied=1),
            edge("network:pvt", "namespace:frontend", bytes=50, flows=4, allowed=4),
        ],
    }


def test_expanded_namespace(store: FlowStore) -> None:
    graph = store.graph(until=2000, expand=["backend"])
    assert [n["id"] for n in graph["nodes"]] == [
        "host:node-1",
        "namespace:frontend",
        "namespace:monitoring",
        "network:pub",
        "network:pvt",
        "networkset:backend/partners",
        "networkset:dns-servers",
        "workload:backend/api-*",
        "workload:backend/db-*",
    ]
    assert graph["edges"] == [
        edge("host:node-1", "workload:backend/db-*", bytes=9, flows=1, allowed=1),
        edge(
            "namespace:frontend", "workload:backend/api-*", bytes=300, packets=3, flows=3, allowed=3
        ),
        edge("namespace:frontend", "workload:backend/db-*", bytes=40, packets=2, flows=2, denied=2),
        edge("namespace:monitoring", "workload:backend/api-*", flows=1, denied=1),
        edge("network:pvt", "namespace:frontend", bytes=50, flows=4, allowed=4),
        edge("workload:backend/api-*", "network:pub", bytes=1000, packets=10, flows=1, allowed=1),
        edge("workload:backend/api-*", "networkset:backend/partners", bytes=7, flows=1, allowed=1),
        edge(
            "workload:backend/api-*",
            "networkset:dns-servers",
            bytes=80,
            packets=2,
            flows=5,
            allowed=5,
            protocols=["udp"],
        ),
    ]
    both = store.graph(until=2000, expand=["backend", "frontend"])
    assert (
        edge(
            "workload:frontend/web-*",
            "workload:backend/api-*",
            bytes=300,
            packets=3,
            flows=3,
            allowed=3,
        )
        in both["edges"]
    )


def test_time_window(store: FlowStore) -> None:
    assert store.graph(since=2000)["edges"] == [
        edge("namespace:frontend", "namespace:backend", bytes=1, flows=100, allowed=100)
    ]
    assert store.graph(since=9000) == {"nodes": [], "edges": []}


def test_graph_totals_equal_talker_totals(store: FlowStore) -> None:
    graph = store.graph()
    talkers = store.top_talkers(by="namespace", limit=100)
    assert sum(e["bytes"] for e in graph["edges"]) == sum(t["bytes"] for t in talkers)
    assert sum(e["flows"] for e in graph["edges"]) == sum(t["flows"] for t in talkers)


def test_edge_flows_and_policies(store: FlowStore) -> None:
    records = store.edge_flows("namespace:frontend", "namespace:backend", until=2000)
    assert sorted(records, key=repr) == sorted(RECORDS[:4], key=repr)
    to_db = store.edge_flows("namespace:frontend", "workload:backend/db-*")
    assert sorted(to_db, key=repr) == sorted(RECORDS[2:4], key=repr)
    assert store.edge_flows("namespace:frontend", "namespace:backend", limit=1) == [RECORDS[-1]]
    assert store.edge_flows("network:pvt", "namespace:frontend") == [RECORDS[7]]
    assert store.edge_flows("host:node-1", "workload:backend/db-*") == [RECORDS[9]]
    assert store.edge_flows("workload:backend/api-*", "networkset:dns-servers") == [RECORDS[5]]
    assert store.edge_flows("namespace:backend", "networkset:backend/partners") == [RECORDS[6]]
    assert store.edge_policies("namespace:frontend", "namespace:backend", until=2000) == [
        {
            "hit": ALLOW_API,
            "policy": "np:backend/default.allow-web",
            "tier": "default",
            "action": "allow",
            "reporter": "dst",
            "flows": 3,
        },
        {
            "hit": ALLOW_API,
            "policy": "np:backend/default.allow-web",
            "tier": "default",
            "action": "allow",
            "reporter": "src",
            "flows": 3,
        },
        {
            "hit": DENY_DB,
            "policy": "np:backend/default.db-deny",
            "tier": "default",
            "action": "deny",
            "reporter": "dst",
            "flows": 2,
        },
        {"hit": "", "policy": "", "tier": "", "action": "allow", "reporter": "src", "flows": 2},
    ]
    assert store.edge_policies("namespace:monitoring", "workload:backend/api-*") == [
        {
            "hit": DENY_PROM,
            "policy": "gnp:security.no-scrape",
            "tier": "security",
            "action": "deny",
            "reporter": "src",
            "flows": 1,
        },
    ]


@pytest.mark.parametrize("bad", ["nothing", "pod:x", "workload:no-slash", ":x"])
def test_unknown_node_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        node_predicate(bad, "source")


def test_node_ids_round_trip() -> None:
    for endpoint in (WEB, PUB, DNS, PARTNERS, NODE):
        for expand in ((), ("frontend", "backend")):
            graph_node = node_for(*endpoint, expand)
            predicate, _ = node_predicate(graph_node.id, "source")
            assert f"source_type = '{endpoint[0]}'" in predicate
