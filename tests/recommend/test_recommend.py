"""What the recommended policies look like, on a small hand-written cluster."""

from __future__ import annotations

from typing import Any

import pytest

from palisade.flows import FlowRecord
from palisade.model import parse_document
from palisade.policy import Cluster
from palisade.recommend import RecommendOptions, WorkloadIndex, recommend, stable_labels


def pod(
    namespace: str,
    name: str,
    ip: str,
    labels: dict[str, str],
    ports: list[tuple[str, int, str]] = (),  # type: ignore[assignment]
    generate_name: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if generate_name:
        meta["generateName"] = generate_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
                    ],
                }
            ]
        },
        "status": {"podIP": ip},
    }


CLUSTER: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
    for n in ("shop", "other", "kube-system", "monitoring")
] + [
    pod(
        "shop",
        "web-5d8f9c7b6-abcde",
        "10.244.0.10",
        {"app": "web", "pod-template-hash": "5d8f9c7b6"},
        [("http", 80, "TCP")],
        "web-5d8f9c7b6-",
    ),
    pod(
        "shop",
        "web-5d8f9c7b6-fghij",
        "10.244.0.11",
        {"app": "web", "pod-template-hash": "5d8f9c7b6"},
        [("http", 80, "TCP")],
        "web-5d8f9c7b6-",
    ),
    pod(
        "shop",
        "api-7c9d8e6f5-aaaaa",
        "10.244.0.20",
        {"app": "api", "pod-template-hash": "7c9d8e6f5"},
        [("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
        "api-7c9d8e6f5-",
    ),
    pod(
        "shop",
        "api-canary-6b5c4d3e2-bbbbb",
        "10.244.0.21",
        {"app": "api", "track": "canary", "pod-template-hash": "6b5c4d3e2"},
        [("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
        "api-canary-6b5c4d3e2-",
    ),
    pod(
        "shop",
        "db-0",
        "10.244.0.30",
        {
            "app": "db",
            "controller-revision-hash": "db-66f",
            "statefulset.kubernetes.io/pod-name": "db-0",
        },
        [("pg", 5432, "TCP")],
        "db-",
    ),
    pod("other", "client-1", "10.244.1.10", {"app": "client"}),
    pod(
        "kube-system",
        "coredns-1",
        "10.244.2.10",
        {"k8s-app": "kube-dns"},
        [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")],
    ),
    pod("monitoring", "prometheus-0", "10.244.3.10", {"app": "prometheus"}),
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet",
        "metadata": {"name": "partners", "labels": {"role": "partner"}},
        "spec": {"nets": ["203.0.113.0/24"]},
    },
]


def record(
    reporter: str,
    src: tuple[str, str, str],
    dst: tuple[str, str, str] | str,
    port: int,
    proto: str = "tcp",
    action: str = "allow",
) -> FlowRecord:
    """src/dst: (namespace, pod name, ip); dst may be an external IP."""
    if isinstance(dst, str):
        dst_fields: dict[str, Any] = {"dest_ip": dst, "dest_type": "net", "dest_name_aggr": "pub"}
    else:
        dst_fields = {
            "dest_namespace": dst[0],
            "dest_name": dst[1],
            "dest_ip": dst[2],
            "dest_type": "wep",
        }
    return FlowRecord(
        start_time=1_700_000_000,
        end_time=1_700_000_300,
        action=action,  # type: ignore[arg-type]
        reporter=reporter,  # type: ignore[arg-type]
        proto=proto,
        source_namespace=src[0],
        source_name=src[1],
        source_ip=src[2],
        source_type="wep",
        dest_port=port,
        **dst_fields,
    )


WEB = ("shop", "web-5d8f9c7b6-abcde", "10.244.0.10")
API = ("shop", "api-7c9d8e6f5-aaaaa", "10.244.0.20")
DB = ("shop", "db-0", "10.244.0.30")
CLIENT = ("other", "client-1", "10.244.1.10")
DNS = ("kube-system", "coredns-1", "10.244.2.10")
PROMETHEUS = ("monitoring", "prometheus-0", "10.244.3.10")


def both(
    src: tuple[str, str, str], dst: tuple[str, str, str], port: int, proto: str = "tcp"
) -> list[FlowRecord]:
    return [record("src", src, dst, port, proto), record("dst", src, dst, port, proto)]


RECORDS = [
    *both(WEB, API, 8080),
    *both(WEB, API, 8081),
    *both(WEB, API, 8082),
    *both(WEB, API, 8090),
    record("src", WEB, DNS, 53, "udp"),
    record("dst", PROMETHEUS, API, 9090),
    *both(API, DB, 5432),
    record("src", API, "203.0.113.9", 443),
    record("src", API, "8.8.8.8", 53, "udp"),
    record("src", API, "8.8.4.4", 53, "udp"),
    record("src", DB, "10.244.0.99", 8472, "udp"),
    record("dst", CLIENT, WEB, 80),
    record("dst", CLIENT, API, 8080, action="deny"),
]


def _policy(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in documents if d["metadata"]["name"] == name)


def test_stable_labels_drop_volatile_ones() -> None:
    labels = {
        "app": "db",
        "pod-template-hash": "x",
        "controller-revision-hash": "y",
        "statefulset.kubernetes.io/pod-name": "db-0",
        "pod-template-generation": "3",
        "projectcalico.org/namespace": "shop",
        "pcns.team": "a",
    }
    assert stable_labels(labels.items()) == (("app", "db"),)


def test_selectors_are_the_smallest_that_tell_workloads_apart() -> None:
    index = WorkloadIndex(Cluster.from_documents(CLUSTER))
    by_name = {w.key: w for w in index.workloads}
    assert index.selector(by_name["shop/web"]).calico() == "app == 'web'"
    # The canary shares app=api and has one more label: the stable one must exclude it.
    assert index.selector(by_name["shop/api"]).calico() == "app == 'api' && !has(track)"
    canary = next(w for w in index.workloads if dict(w.labels).get("track") == "canary")
    assert index.selector(canary).calico() == "app == 'api' && track == 'canary'"
    assert index.selector(by_name["shop/db"]).calico() == "app == 'db'"
    assert index.selector(by_name["shop/api"]).kubernetes() == {
        "matchLabels": {"app": "api"},
        "matchExpressions": [{"key": "track", "operator": "DoesNotExist"}],
    }


def test_calico_per_workload_rules() -> None:
    result = recommend(RECORDS, CLUSTER, RecommendOptions(per_workload=True, tier="security"))
    for document in result.documents:
        parse_document(document)
    web = _policy(result.documents, "recommended-web")
    assert web["kind"] == "StagedNetworkPolicy"
    assert web["spec"]["tier"] == "security"
    assert web["spec"]["types"] == ["Ingress", "Egress"]
    egress = web["spec"]["egress"]
    # DNS first, as one rule: the DNS pods name both ports, so no protocol is needed.
    assert egress[0] == {
        "action": "Allow",
        "destination": {
            "selector": "k8s-app == 'kube-dns'",
            "namespaceSelector": "projectcalico.org/name == 'kube-system'",
            "ports": ["dns", "dns-tcp"],
        },
        "metadata": {"annotations": {"palisade.io/purpose": "dns"}},
    }
    # Same-namespace peer: no namespaceSelector; named port and a merged range.
    assert egress[1]["destination"] == {
        "selector": "app == 'api' && !has(track)",
        "ports": ["8081:8082", 8090, "http"],
    }
    # Cross-namespace ingress from the client, on the named port.
    assert web["spec"]["ingress"] == [
        {
            "action": "Allow",
            "protocol": "TCP",
            "source": {
                "selector": "app == 'client'",
                "namespaceSelector": "projectcalico.org/name == 'other'",
            },
            "destination": {"ports": ["http"]},
        }
    ]
    api = _policy(result.documents, "recommended-api")
    assert api["spec"]["ingress"][0]["metadata"] == {
        "annotations": {"palisade.io/purpose": "monitoring"}
    }
    egress_targets = [r["destination"] for r in api["spec"]["egress"]]
    # The existing GlobalNetworkSet is reused; the other addresses get a new NetworkSet.
    assert {"selector": "role == 'partner'", "namespaceSelector": "global()", "ports": [443]} in (
        egress_targets
    )
    new_sets = [
        d
        for d in result.documents
        if d["kind"] == "NetworkSet" and "8.8.8.0/24" in d["spec"]["nets"]
    ]
    assert len(new_sets) == 1
    assert new_sets[0]["spec"]["nets"] == ["8.8.4.0/24", "8.8.8.0/24"]
    assert new_sets[0]["metadata"]["namespace"] == "shop"
    # The canary saw no traffic: its policy denies everything.
    canary = next(
        d for d in result.documents if d["metadata"]["name"].startswith("recommended-api-")
    )
    assert canary["spec"]["ingress"] == [] and canary["spec"]["egress"] == []
    text = result.to_yaml()
    assert "# Evidence: 18 flow records read, 17 allowed records used" in text
    assert "Tier 'security' is not in the cluster documents" in text
    assert "shop/api-2" in text  # idle workloads are named in the header


def test_calico_per_namespace_names_the_local_workloads() -> None:
    result = recommend(RECORDS, CLUSTER, RecommendOptions(enforced=True))
    policy = _policy(result.documents, "recommended")
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["selector"] == "all()"
    assert result.namespaces == ("shop",)
    db_rule = next(r for r in policy["spec"]["ingress"] if r["destination"].get("ports") == ["pg"])
    assert db_rule["destination"]["selector"] == "app == 'db'"
    assert db_rule["source"] == {"selector": "app == 'api' && !has(track)"}


def test_kubernetes_policies() -> None:
    result = recommend(RECORDS, CLUSTER, RecommendOptions(kind="kubernetes", tier="x"))
    for document in result.documents:
        parse_document(document)
    web = _policy(result.documents, "recommended-web")
    assert web["kind"] == "StagedKubernetesNetworkPolicy"
    assert web["spec"]["egress"][0] == {
        "to": [
            {
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
            }
        ],
        "ports": [{"protocol": "TCP", "port": "dns-tcp"}, {"protocol": "UDP", "port": "dns"}],
    }
    api_rule = web["spec"]["egress"][1]
    assert {"protocol": "TCP", "port": 8081, "endPort": 8082} in api_rule["ports"]
    api = _policy(result.documents, "recommended-api")
    blocks = [p for r in api["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    assert {"ipBlock": {"cidr": "8.8.8.0/24"}} in blocks
    assert "--tier ignored" in result.to_yaml()
    enforced = recommend(RECORDS, CLUSTER, RecommendOptions(kind="kubernetes", enforced=True))
    assert {d["apiVersion"] for d in enforced.documents} == {"networking.k8s.io/v1"}


def test_output_is_deterministic() -> None:
    first = recommend(RECORDS, CLUSTER).to_yaml()
    assert recommend(list(reversed(RECORDS)), list(reversed(CLUSTER))).to_yaml() == first


@pytest.mark.parametrize("aggregated", ["pub", "pvt"])
def test_external_peers_without_address(aggregated: str) -> None:
    flow = FlowRecord(
        start_time=1,
        end_time=2,
        action="allow",
        reporter="src",
        proto="tcp",
        source_namespace="shop",
        source_name_aggr="web-5d8f9c7b6-*",
        source_type="wep",
        dest_name_aggr=aggregated,
        dest_port=443,
    )
    result = recommend([flow], CLUSTER, RecommendOptions(per_workload=True))
    web = _policy(result.documents, "recommended-web")
    destination = web["spec"]["egress"][0]["destination"]
    if aggregated == "pub":
        assert destination["nets"] == ["0.0.0.0/0"]
    else:
        assert destination["notSelector"] == "has(projectcalico.org/orchestrator)"
    assert "aggregation level 2" in result.to_yaml()


def test_external_networks_never_cover_pods() -> None:
    """An address inside the pod range that is no pod (a node's tunnel address) gets the
    largest network around it that holds no endpoint, not the pods' /24."""
    result = recommend(RECORDS, CLUSTER, RecommendOptions(per_workload=True))
    nets = sorted(
        n for d in result.documents if d["kind"] == "NetworkSet" for n in d["spec"]["nets"]
    )
    assert "10.244.0.64/26" in nets
    assert "10.244.0.0/24" not in nets


def test_network_sets_that_hold_pods_are_not_opened_to_the_pods() -> None:
    internal = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet",
        "metadata": {"name": "internal", "labels": {"role": "internal"}},
        "spec": {"nets": ["10.0.0.0/8"]},
    }
    with_address = record("src", API, "10.9.9.9", 443)
    named_only = FlowRecord(
        start_time=1,
        end_time=2,
        action="allow",
        reporter="src",
        proto="tcp",
        source_namespace="shop",
        source_name=API[1],
        source_type="wep",
        dest_type="ns",
        dest_name_aggr="internal",
        dest_port=8443,
    )
    cluster = [*CLUSTER, internal]
    calico = recommend([with_address, named_only], cluster, RecommendOptions(per_workload=True))
    api = _policy(calico.documents, "recommended-api")
    destinations = [rule["destination"] for rule in api["spec"]["egress"]]
    # The address is aggregated on its own instead of reusing the set around the pods.
    sets = [d for d in calico.documents if d["kind"] == "NetworkSet"]
    assert [s["spec"]["nets"] for s in sets] == [["10.9.9.0/24"]]
    # Named by the set only: the set, minus every pod.
    assert {
        "selector": "role == 'internal'",
        "namespaceSelector": "global()",
        "notSelector": "has(projectcalico.org/orchestrator)",
        "ports": [8443],
    } in destinations
    kubernetes = recommend([named_only], cluster, RecommendOptions(kind="kubernetes"))
    api = _policy(kubernetes.documents, "recommended-api")
    assert api["spec"]["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}
    ]


def test_dns_without_named_ports_is_udp_and_tcp_53() -> None:
    cluster = [
        d
        for d in CLUSTER
        if not (d["kind"] == "Pod" and d["metadata"]["namespace"] == "kube-system")
    ]
    cluster.append(pod("kube-system", "coredns-1", "10.244.2.10", {"k8s-app": "kube-dns"}))
    result = recommend([record("src", WEB, DNS, 53, "udp")], cluster, RecommendOptions())
    egress = _policy(result.documents, "recommended")["spec"]["egress"]
    assert [(r["protocol"], r["destination"]["ports"]) for r in egress] == [
        ("TCP", [53]),
        ("UDP", [53]),
    ]
    assert all(r["metadata"]["annotations"]["palisade.io/purpose"] == "dns" for r in egress)
