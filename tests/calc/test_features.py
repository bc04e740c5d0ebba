"""Calico features the synthetic clusters do not exercise, checked flow by flow against the engine:
Services, notNets, port ranges and notPorts, named ports on the source, ICMP, Log, Pass, tiers
with a missing Tier resource, profiles with rules, host endpoints and IPv6."""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from palisade.calc import EndpointIntent, build_graph
from palisade.policy import Cluster, Flow, PolicyEngine

from .dataplane import Interpreter, RecordingDataplane, resource_key
from .scenario import SCENARIO, namespace, pod

CALICO = "projectcalico.org/v3"


def _policy(kind: str, name: str, spec: dict[str, Any], ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": CALICO, "kind": kind, "metadata": meta, "spec": spec}


FEATURES: list[dict[str, Any]] = [
    *SCENARIO,
    namespace("edge", {"zone": "dmz"}),
    pod("gw", "10.0.2.1", "node-c", {"app": "gw"}, namespace="edge", ports=(("dns", 53, "UDP"),)),
    {
        **pod("v6", "fd00::5", "node-b", {"app": "web"}, namespace="edge"),
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    },
    {
        "apiVersion": CALICO,
        "kind": "HostEndpoint",
        "metadata": {"name": "node-a-eth0", "labels": {"role": "host"}},
        "spec": {"node": "node-a", "interfaceName": "eth0", "expectedIPs": ["192.0.2.10"]},
    },
    {
        "apiVersion": CALICO,
        "kind": "Profile",
        "metadata": {"name": "kns.edge"},
        "spec": {
            "ingress": [
                {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8}},
                {"action": "Allow", "source": {"notNets": ["10.0.1.0/24"]}},
            ],
            "egress": [{"action": "Pass", "protocol": "UDP"}, {"action": "Allow"}],
        },
    },
    _policy(
        "GlobalNetworkPolicy",
        "ghost.rules",
        {
            "tier": "ghost",  # no Tier resource: after every tier, default Deny
            "selector": "app == 'gw'",
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": ["dns"]}}],
        },
    ),
    _policy(
        "NetworkPolicy",
        "web-svc",
        {
            "selector": "app == 'web'",
            "types": ["Ingress", "Egress"],
            "ingress": [
                {"action": "Log"},
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"services": {"name": "web"}},
                },
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"namespaceSelector": "zone == 'dmz'", "ports": ["dns", "1000:2000"]},
                    "destination": {"ports": ["8000:9000"], "notPorts": [8500]},
                },
                {"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}},
            ],
            "egress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "destination": {"services": {"name": "web", "namespace": "prod"}},
                },
                {"action": "Deny", "notProtocol": "UDP"},
                {"action": "Allow", "destination": {"notSelector": "app == 'web'"}},
            ],
        },
        ns="prod",
    ),
    _policy(
        "GlobalNetworkPolicy",
        "security.hosts",
        {
            "tier": "security",
            "order": 1,
            "selector": "role == 'host'",
            "ingress": [
                {"action": "Allow", "ipVersion": 4, "source": {"nets": ["10.0.0.0/16"]}},
                {"action": "Pass"},
            ],
        },
    ),
]

NODES = ("node-a", "node-b", "node-c")


def test_features_match_the_engine_flow_by_flow() -> None:
    owner: dict[str, tuple[RecordingDataplane, EndpointIntent]] = {}
    for node in NODES:
        dataplane = RecordingDataplane()
        graph = build_graph(node, dataplane)
        for document in FEATURES:
            graph.on_update(resource_key(document), document)
        graph.flush()
        for endpoint in dataplane.endpoints.values():
            assert not endpoint.deny_all
            for ip in endpoint.ips:
                owner.setdefault(ip, (dataplane, endpoint))
    engine = PolicyEngine(Cluster.from_documents(FEATURES))
    assert set(owner) == {str(ip) for e in engine.cluster.endpoints for ip in e.ips}
    addresses = [*owner, "198.51.100.9", "10.96.0.10", "203.0.113.1"]
    checked = 0
    for src, dst in itertools.product(addresses, repeat=2):
        source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        if source.version != destination.version:
            continue
        flows = [Flow(source, destination, 1, icmp_type=t, icmp_code=0) for t in (0, 8)]
        flows += [
            Flow(source, destination, protocol, dst_port=port, src_port=src_port)
            for protocol in (6, 17)
            for port in (53, 80, 8080, 8500, 9090)
            for src_port in (None, 53, 1500)
        ]
        for flow in flows:
            verdict = engine.evaluate(flow)
            for result, ip, ingress in ((verdict.egress, src, False), (verdict.ingress, dst, True)):
                if result is None:
                    continue
                dataplane, endpoint = owner[ip]
                got = Interpreter(dataplane).allowed(endpoint, ingress, flow)
                assert got == result.allowed, (
                    flow,
                    "ingress" if ingress else "egress",
                    result.trace,
                )
                checked += 1
    assert checked > 1000


def test_service_sets_follow_their_pods() -> None:
    dataplane = RecordingDataplane()
    graph = build_graph("node-a", dataplane)
    for document in FEATURES:
        graph.on_update(resource_key(document), document)
    graph.flush()
    policy = dataplane.policies["np:prod/web-svc"]
    source_set = policy.ingress[1].source.service_set_id
    port_set = policy.egress[0].destination.service_port_set_id
    assert source_set and port_set
    assert dataplane.sets[source_set].members == {"10.96.0.10/32", "10.0.0.1/32", "10.0.1.1/32"}
    assert dataplane.sets[port_set].members == {
        "10.96.0.10,tcp:80",
        "10.0.0.1,tcp:8080",
        "10.0.1.1,tcp:9090",
    }
    web_2 = next(d for d in FEATURES if d["metadata"]["name"] == "web-2")
    graph.on_update(resource_key(web_2), None)
    graph.flush()
    assert dataplane.sets[port_set].members == {"10.96.0.10,tcp:80", "10.0.0.1,tcp:8080"}
    service = next(d for d in FEATURES if d["kind"] == "Service")
    graph.on_update(resource_key(service), None)
    graph.flush()
    assert dataplane.sets[port_set].members == frozenset()
