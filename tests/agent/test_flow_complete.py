"""The flow reporter's completion of kernel records, without a kernel: the pending (staged)
trace and the destination's Service, from the policy engine, per policy generation."""

from __future__ import annotations

import copy
import ipaddress
import time
from collections.abc import Sequence
from typing import Any

import pytest

from palisade.agent._flowlog import FlowReporter
from palisade.datastore import ResourceKey
from palisade.flows import FlowRecord
from palisade.flows._aggregate import aggregate
from palisade.flows._collect import FiveTuple, FlowCollector, Hit, network_info
from palisade.policy import Cluster, Flow, FlowTracer, PolicyEngine, live_documents
from palisade.resources import store_key

WEB, DB, BATCH, OUTSIDE = "10.244.1.2", "10.244.2.2", "10.244.2.3", "192.0.2.7"


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    ],
                }
            ]
        },
    }
    if ip:
        document["status"] = {"podIP": ip}
    return document


ALLOW_FROM_FRONT: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db-from-front", "namespace": "back"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "front"}}}
                ],
                "ports": [{"port": 8080}],
            }
        ],
    },
}
STAGED_DENY: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "StagedNetworkPolicy",
    "metadata": {"name": "deny-front", "namespace": "back"},
    "spec": {
        "order": 10,
        "selector": "app == 'db'",
        "types": ["Ingress"],
        "ingress": [
            {
                "action": "Deny",
                "protocol": "TCP",
                "source": {"namespaceSelector": "kubernetes.io/metadata.name == 'front'"},
            }
        ],
    },
}
DB_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "db", "namespace": "back"},
    "spec": {
        "selector": {"app": "db"},
        "clusterIP": "10.96.0.10",
        "ports": [
            {"name": "web", "port": 80, "targetPort": "http"},
            {"port": 5353, "targetPort": 53, "protocol": "UDP"},
        ],
    },
}
TOPOLOGY = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "front"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "back"}},
    _pod("front", "web", {"app": "web"}, WEB),
    _pod("back", "db", {"app": "db"}, DB),
    _pod("back", "batch", {"app": "batch"}, BATCH),
    _pod("back", "pending-pod", {"app": "db"}, None),  # no address: owns none
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",  # a controller: its pods are the Pod documents, not invented
        "metadata": {"name": "db", "namespace": "back"},
        "spec": {"template": {"metadata": {"labels": {"app": "db"}}}},
    },
]


def tracer(*documents: dict[str, Any]) -> FlowTracer:
    return FlowTracer.from_documents([*TOPOLOGY, ALLOW_FROM_FRONT, *documents])


def test_a_staged_deny_shows_in_the_pending_trace_of_the_direction_it_selects() -> None:
    flows = tracer(STAGED_DENY)
    assert flows.has_staged
    # db's ingress: the staged policy comes first and denies the front namespace
    assert flows.pending("ingress", 6, WEB, 40000, DB, 8080) == (
        "0|default|snp:back/deny-front|deny|0",
    )
    # batch is not in front: the staged policy matches nothing, the enforced policy decides
    assert flows.pending("ingress", 6, BATCH, 40000, DB, 8080) == (
        "0|default|knp:back/db-from-front|deny|-1",
    )
    # web's egress and batch's ingress: no staged policy applies, the kernel's trace stands
    assert flows.pending("egress", 6, WEB, 40000, DB, 8080) is None
    assert flows.pending("ingress", 6, WEB, 40000, BATCH, 8080) is None
    # the engine's own pending trace agrees
    engine = PolicyEngine(
        Cluster.from_documents(live_documents([*TOPOLOGY, ALLOW_FROM_FRONT, STAGED_DENY]))
    )
    verdict = engine.evaluate(Flow(_ip(WEB), _ip(DB), 6, 8080))
    assert verdict.allowed and not verdict.pending_allowed
    assert verdict.pending_ingress is not None
    assert tuple(verdict.pending_ingress.policy_strings()) == flows.pending(
        "ingress", 6, WEB, 1, DB, 8080
    )


def test_without_staged_policies_the_pending_trace_is_the_enforced_one() -> None:
    flows = tracer()
    assert not flows.has_staged
    assert flows.pending("ingress", 6, WEB, 40000, DB, 8080) is None
    assert flows.complete("ingress", (6, WEB, 40000, DB, 8080)) == (None, None)


@pytest.mark.parametrize(
    ("kind", "name", "part"),
    [
        ("StagedGlobalNetworkPolicy", "deny-front", "sgnp:deny-front"),
        ("StagedNetworkPolicy", "deny-front", "snp:back/deny-front"),
    ],
)
@pytest.mark.parametrize("action", ["Set", "Learn", "Ignore", None])
def test_staged_kinds_and_actions_other_than_delete_preview_the_policy(
    kind: str, name: str, part: str, action: str | None
) -> None:
    staged = copy.deepcopy(STAGED_DENY)
    staged["kind"] = kind
    if kind.startswith("StagedGlobal"):
        del staged["metadata"]["namespace"]
    if action is not None:
        staged["spec"]["stagedAction"] = action
    flows = tracer(staged)
    assert flows.pending("ingress", 6, WEB, 40000, DB, 8080) == (f"0|default|{part}|deny|0",)


def test_a_staged_kubernetes_policy_replaces_its_enforced_twin_and_delete_removes_it() -> None:
    update = copy.deepcopy(ALLOW_FROM_FRONT)
    update["kind"] = "StagedKubernetesNetworkPolicy"
    update["apiVersion"] = "projectcalico.org/v3"
    update["spec"]["ingress"][0]["ports"] = [{"port": 9090}]  # the update narrows the port
    flows = tracer(update)
    assert flows.pending("ingress", 6, WEB, 40000, DB, 8080) == (
        "0|default|sknp:back/db-from-front|deny|-1",
    )
    delete = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedKubernetesNetworkPolicy",
        "metadata": {"name": "db-from-front", "namespace": "back"},
        "spec": {"stagedAction": "Delete"},
    }
    flows = tracer(delete)
    # without the policy no tier applies to db: its namespace profile allows
    assert flows.pending("ingress", 6, BATCH, 40000, DB, 8080) == (
        "0|__PROFILE__|pro:kns.back|allow|0",
    )


def test_pending_answers_are_cached_per_pair_and_port_not_per_source_port() -> None:
    flows = tracer(STAGED_DENY)
    assert not flows.uses_source_ports
    for port in range(40000, 40100):
        flows.pending("ingress", 6, WEB, port, DB, 8080)
    assert flows.evaluations == 1
    flows.pending("ingress", 6, WEB, 40000, DB, 8081)
    assert flows.evaluations == 2


def test_source_ports_join_the_cache_key_when_a_rule_matches_them() -> None:
    staged = copy.deepcopy(STAGED_DENY)
    staged["spec"]["ingress"][0]["source"]["ports"] = ["40000:40009"]
    flows = tracer(staged)
    assert flows.uses_source_ports
    denied = ("0|default|snp:back/deny-front|deny|0",)
    assert flows.pending("ingress", 6, WEB, 40005, DB, 8080) == denied
    assert flows.pending("ingress", 6, WEB, 40010, DB, 8080) == (
        "0|default|knp:back/db-from-front|allow|0",
    )


def test_the_destination_service_by_selected_pod_and_target_port() -> None:
    flows = tracer(DB_SERVICE)
    assert not flows.has_staged
    http = flows.service(DB, 6, 8080)  # targetPort "http": db's container port 8080
    assert http is not None
    assert (http.namespace, http.name, http.port_name, http.port) == ("back", "db", "web", 80)
    dns = flows.service(DB, 17, 53)  # a numeric target port, an unnamed service port
    assert dns is not None and (dns.port_name, dns.port) == ("-", 5353)
    assert flows.service(DB, 6, 53) is None  # the protocol must fit too
    assert flows.service(DB, 6, 9090) is None  # no port of the Service targets it
    assert flows.service(BATCH, 6, 8080) is None  # not selected
    assert flows.service(OUTSIDE, 6, 8080) is None
    assert flows.service(DB, 1, None) is None
    # before DNAT: the cluster IP with the service port
    direct = flows.service("10.96.0.10", 6, 80)
    assert direct is not None and (direct.name, direct.port_name, direct.port) == ("db", "web", 80)
    assert flows.service("10.96.0.10", 6, 8080) is None


def test_several_fitting_service_ports_and_services_without_selectors() -> None:
    both = copy.deepcopy(DB_SERVICE)
    both["spec"]["ports"] = [
        {"name": "a", "port": 80, "targetPort": 8080},
        {"name": "b", "port": 81, "targetPort": "http"},
    ]
    flows = tracer(both)
    hit = flows.service(DB, 6, 8080)
    assert hit is not None and (hit.port_name, hit.port) == ("*", None)
    headless = copy.deepcopy(DB_SERVICE)
    del headless["spec"]["selector"]
    assert tracer(headless).service(DB, 6, 8080) is None
    other_namespace = copy.deepcopy(DB_SERVICE)
    other_namespace["metadata"]["namespace"] = "front"
    assert tracer(other_namespace).service(DB, 6, 8080) is None


def test_address_less_pods_and_controllers_own_no_address() -> None:
    engine = tracer(STAGED_DENY).engine
    assert sorted(e.key for e in engine.cluster.endpoints) == ["back/batch", "back/db", "front/web"]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


ALLOWED = Hit("default", "knp:back/db-from-front", "allow", 0)


def _reporter() -> FlowReporter:
    return FlowReporter("node-1", None, lambda records: None)


def _feed(reporter: FlowReporter, *documents: dict[str, Any]) -> None:
    for document in documents:
        reporter.on_document(store_key(document), document)


def _collect(
    reporter: FlowReporter, keys: Sequence[FiveTuple], *, complete: bool = True
) -> list[FlowRecord]:
    """Level-0 records of allowed connections into db, as db's node reports them."""
    collector = FlowCollector("node-1", reporter.hits, network_info)
    for key in keys:
        collector.on_logged(reporter.hits.prefix("ingress", ALLOWED), key, 60, now=1.0)
    tracer = reporter.tracer() if complete else None
    return collector.flush(0, 15, complete=tracer.complete if tracer else None)


def test_the_reporter_completes_collector_records_per_policy_generation() -> None:
    reporter = _reporter()
    _feed(reporter, *TOPOLOGY, ALLOW_FROM_FRONT)
    assert reporter.tracer() is None  # nothing staged, no Service: no engine at all
    assert reporter.tracer_builds == 0
    key = (6, WEB, 40000, DB, 8080)
    (plain,) = _collect(reporter, [key])
    assert plain.enforced_policies == ("0|default|knp:back/db-from-front|allow|0",)
    assert plain.pending_policies == plain.enforced_policies
    assert (plain.dest_service_name, plain.dest_service_port_num) == ("-", None)

    _feed(reporter, STAGED_DENY, DB_SERVICE)
    first = reporter.tracer()
    assert first is not None and reporter.tracer() is first  # one build per generation
    (completed,) = _collect(reporter, [key])
    assert completed.enforced_policies == plain.enforced_policies
    assert completed.pending_policies == ("0|default|snp:back/deny-front|deny|0",)
    assert (
        completed.dest_service_namespace,
        completed.dest_service_name,
        completed.dest_service_port,
        completed.dest_service_port_num,
    ) == ("back", "db", "web", 80)
    # aggregation keeps both (level 2), and level 3 drops the service port as Calico does
    (level2,) = aggregate([completed], 2)
    assert level2.pending_policies == completed.pending_policies
    assert level2.dest_service_port == "web"
    (level3,) = aggregate([completed], 3)
    assert (level3.dest_service_name, level3.dest_service_port) == ("db", "-")

    # a new generation: the staged policy gone, the Service still there
    reporter.on_document(store_key(STAGED_DENY), None)
    second = reporter.tracer()
    assert second is not None and second is not first and not second.has_staged
    (again,) = _collect(reporter, [key])
    assert again.pending_policies == again.enforced_policies
    assert again.dest_service_name == "db"
    reporter.on_document(store_key(DB_SERVICE), None)
    assert reporter.tracer() is None
    assert reporter.tracer_builds == 2
    # kinds that do not shape policy are not kept, nor do they start a generation
    node = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n"}}
    generation = reporter._generation
    reporter.on_document(ResourceKey("Node", None, "n"), node)
    assert reporter._generation == generation


def test_the_pending_trace_costs_microseconds_per_new_flow() -> None:
    """Not a benchmark, a bound (the figures are printed): what completing a record costs the
    reporter, cached (a pair and port seen before, another source port) and uncached (a new
    pair or port of this policy generation: one pending evaluation and one Service lookup)."""
    reporter = _reporter()
    _feed(reporter, *TOPOLOGY, ALLOW_FROM_FRONT, STAGED_DENY, DB_SERVICE)
    tracer = reporter.tracer()
    assert tracer is not None
    cached = [(6, WEB, 1024 + i, DB, 8080) for i in range(20_000)]
    (record,) = _collect(reporter, cached[:1])
    assert record.pending_policies == ("0|default|snp:back/deny-front|deny|0",)

    def per_call(keys: Sequence[FiveTuple]) -> float:
        started = time.perf_counter()
        for key in keys:
            tracer.complete("ingress", key)
        return (time.perf_counter() - started) / len(keys)

    per_cached = per_call(cached)
    fresh = [(6, WEB, 40000, DB, port) for port in range(10_000, 12_000)]
    evaluations = tracer.evaluations
    per_new = per_call(fresh)
    assert tracer.evaluations - evaluations == len(fresh)
    print(
        f"pending trace + service per record: {per_cached * 1e6:.2f} µs cached, "
        f"{per_new * 1e6:.1f} µs for a new pair/port"
    )
    assert per_cached < 20e-6 and per_new < 2e-3
