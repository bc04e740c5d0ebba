"""The vectorised paths agree with the reference evaluator, cell by cell and flow by flow.

``reachability_matrix`` and ``batch_verdicts`` (``_matrix``) re-implement the tier algorithm of
``PolicyEngine.evaluate`` (``_evaluate``) over boolean vectors. These properties check that, for
random clusters, every matrix cell and every batch verdict equals ``evaluate(...).allowed``:

- clusters from ``palisade.policy.synthetic.generate_cluster`` at small sizes (tiers with Pass
  defaults, Allow/Deny/Pass/Log rules, staged policies with Set/Delete, network sets, named
  ports, notSelector, notNets, notPorts, serviceAccounts, Kubernetes policies mixed in);
- clusters whose Calico policies hypothesis draws field by field over a fixed small topology,
  so a failure shrinks to a minimal policy set.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from palisade.policy import (
    Cluster,
    Flow,
    FlowBatch,
    PolicyEngine,
    Probe,
    batch_verdicts,
    protocol_number,
    reachability_matrix,
)
from palisade.policy.synthetic import flows_from_cluster, generate_cluster

TCP = protocol_number("TCP")
UDP = protocol_number("UDP")
SCTP = protocol_number("SCTP")

# Numeric and named probes; the names are container-port names the generator uses.
PROBES = [
    Probe(8080, TCP),
    Probe(53, UDP),
    Probe(5432, TCP),
    Probe(2905, SCTP),
    Probe("http", TCP),
    Probe("metrics", TCP),
    Probe("dns", UDP),
    Probe("syslog", UDP),
]

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _matrix_mismatches(documents: list[dict[str, Any]], probes: list[Probe]) -> list[str]:
    cluster = Cluster.from_documents(documents)
    assert not cluster.problems, cluster.problems
    engine = PolicyEngine(cluster)
    matrix = reachability_matrix(engine, probes)
    pods = {pod.key: pod for pod in cluster.pods}
    mismatches: list[str] = []
    for index, probe in enumerate(probes):
        for src, row in matrix.as_dict(index).items():
            for dst, vectorised in row.items():
                destination = pods[dst]
                try:
                    port = engine.resolve_port(destination, probe.port, probe.protocol)
                except LookupError:
                    expected = False  # the destination has no such named port: no connection
                else:
                    flow = Flow(pods[src].ips[0], destination.ips[0], probe.protocol, port)
                    expected = engine.evaluate(flow).allowed
                if vectorised != expected:
                    mismatches.append(
                        f"{probe.port}/{probe.protocol} {src} -> {dst}: "
                        f"matrix {vectorised}, evaluate {expected}"
                    )
    return mismatches


def _batch_mismatches(documents: list[dict[str, Any]], batch: FlowBatch) -> list[str]:
    engine = PolicyEngine(Cluster.from_documents(documents))
    verdicts = batch_verdicts(engine, batch)
    assert verdicts.shape == (len(batch),)
    mismatches: list[str] = []
    for index in range(len(batch)):
        flow = batch.flow(index)
        expected = engine.evaluate(flow).allowed
        if bool(verdicts[index]) != expected:
            mismatches.append(f"{flow}: batch {bool(verdicts[index])}, evaluate {expected}")
    return mismatches


# --------------------------------------------------------------------------------------------
# Generated clusters

cluster_sizes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "namespaces": st.integers(1, 6),
        "pods": st.integers(1, 16),
        "policies": st.integers(0, 16),
        "tiers": st.integers(0, 3),
    }
)


@SETTINGS
@given(sizes=cluster_sizes)
def test_matrix_equals_evaluate_on_generated_clusters(sizes: dict[str, int]) -> None:
    documents = generate_cluster(**sizes)
    mismatches = _matrix_mismatches(documents, PROBES)
    assert not mismatches, "\n".join(mismatches[:20])


@SETTINGS
@given(sizes=cluster_sizes, flow_seed=st.integers(0, 2**32 - 1))
def test_batch_equals_evaluate_on_generated_clusters(sizes: dict[str, int], flow_seed: int) -> None:
    documents = generate_cluster(**sizes)
    batch = flows_from_cluster(documents, 300, flow_seed)
    mismatches = _batch_mismatches(documents, batch)
    assert not mismatches, "\n".join(mismatches[:20])


def test_generator_is_deterministic() -> None:
    sizes = {"namespaces": 4, "pods": 30, "policies": 25, "tiers": 2, "seed": 11}
    assert generate_cluster(**sizes) == generate_cluster(**sizes)
    assert generate_cluster(**sizes) != generate_cluster(**{**sizes, "seed": 12})
    documents = generate_cluster(**sizes)
    first, second = flows_from_cluster(documents, 1000, 5), flows_from_cluster(documents, 1000, 5)
    for column in ("src_ip", "dst_ip", "protocol", "dst_port"):
        assert (getattr(first, column) == getattr(second, column)).all(), column


def test_generator_exercises_the_calico_features() -> None:
    """The generated clusters the properties run on do contain what they claim to test."""
    documents = generate_cluster(namespaces=6, pods=40, policies=80, tiers=3, seed=7)
    kinds = {doc["kind"] for doc in documents}
    assert {
        "Tier",
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
        "NetworkSet",
        "GlobalNetworkSet",
        "ServiceAccount",
    } <= kinds
    tiers = [doc for doc in documents if doc["kind"] == "Tier"]
    assert any(t["spec"]["defaultAction"] == "Pass" for t in tiers)
    text = repr(documents)
    for needle in (
        "'Pass'",
        "'Deny'",
        "'Log'",
        "'notSelector'",
        "'notNets'",
        "'notPorts'",
        "'serviceAccounts'",
        "'namespaceSelector'",
        "'stagedAction': 'Delete'",
        "has(",
        " in {",
        "!has(",
        "'8000:8999'",
        "'http'",
    ):
        assert needle in text, needle


def test_realistic_kubernetes_policies() -> None:
    """``realistic=True``: the same topology, NetworkPolicies with what production ones hold;
    the default writer's output is not affected by the option's existence."""
    sizes = {"namespaces": 10, "pods": 200, "policies": 50, "tiers": 0, "seed": 1}
    plain = generate_cluster(**sizes, kubernetes_only=True)
    realistic = generate_cluster(**sizes, kubernetes_only=True, realistic=True)
    assert realistic == generate_cluster(**sizes, kubernetes_only=True, realistic=True)
    assert plain == generate_cluster(**sizes, kubernetes_only=True, realistic=False)
    topology = [d for d in plain if d["kind"] != "NetworkPolicy"]
    assert [d for d in realistic if d["kind"] != "NetworkPolicy"] == topology
    policies = [d for d in realistic if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 50
    assert {d["apiVersion"] for d in policies} == {"networking.k8s.io/v1"}
    rules = [
        rule
        for doc in policies
        for direction in ("ingress", "egress")
        for rule in doc["spec"].get(direction) or ()
    ]
    assert len(rules) / len(policies) >= 2.5  # several rules per policy
    both = [d for d in policies if d["spec"].get("policyTypes") == ["Ingress", "Egress"]]
    assert len(both) >= len(policies) / 3
    text = repr(policies)
    for needle in (
        "'operator': 'In'",
        "'operator': 'NotIn'",
        "'operator': 'Exists'",
        "'operator': 'DoesNotExist'",
        "'except': ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']",
        "'endPort':",
        "'protocol': 'UDP', 'port': 53",
        "'protocol': 'SCTP'",
        "'port': 'metrics'",
        "'port': 'http'",
        "'kubernetes.io/metadata.name': 'kube-system'",
    ):
        assert needle in text, needle
    peers = [p for rule in rules for p in rule.get("from") or rule.get("to") or ()]
    assert any("namespaceSelector" in p and "podSelector" in p for p in peers)
    with pytest.raises(ValueError, match="kubernetes_only"):
        generate_cluster(**sizes, realistic=True)


# --------------------------------------------------------------------------------------------
# Policies drawn field by field over a fixed topology

_NAMESPACES = {"red": {"team": "a", "env": "prod"}, "blue": {"team": "b"}}
_PODS: list[tuple[str, str, dict[str, str], str | None, list[tuple[str, int, str]]]] = [
    # namespace, name, labels, service account, [(port name, number, protocol)]
    ("red", "web", {"app": "web", "role": "frontend"}, "web", [("http", 8080, "TCP")]),
    (
        "red",
        "db",
        {"app": "db", "role": "backend"},
        None,
        [("db", 5432, "TCP"), ("http", 80, "TCP"), ("dns", 53, "UDP")],
    ),
    ("blue", "api", {"app": "api", "role": "backend"}, "api", [("http", 9000, "TCP")]),
    ("blue", "job", {"app": "job", "canary": "true"}, "api", [("dns", 5353, "UDP")]),
]


def _topology() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        for ns, labels in _NAMESPACES.items()
    ]
    documents.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "api", "namespace": "blue", "labels": {"trusted": "yes"}},
        }
    )
    for index, (ns, name, labels, account, ports) in enumerate(_PODS):
        ip = str(ipaddress.IPv4Address("10.244.0.2") + index)
        spec: dict[str, Any] = {
            "containers": [
                {
                    "name": "main",
                    "ports": [
                        {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
                    ],
                }
            ]
        }
        if account:
            spec["serviceAccountName"] = account
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": spec,
                "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
            }
        )
    documents.append(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkSet",
            "metadata": {"name": "outside", "labels": {"kind": "ext"}},
            "spec": {"nets": ["203.0.113.0/24", "10.244.0.4/32"]},
        }
    )
    documents.append(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkSet",
            "metadata": {"name": "half", "namespace": "red", "labels": {"kind": "ext"}},
            "spec": {"nets": ["10.244.0.2/31"]},
        }
    )
    return documents


_SELECTORS = [
    "app == 'web'",
    "app in {'web', 'api'}",
    "role != 'frontend'",
    "has(canary)",
    "!has(canary)",
    "kind == 'ext'",
    "app == 'db' || kind == 'ext'",
    "all()",
    "projectcalico.org/namespace == 'blue'",
]
_NAMESPACE_SELECTORS = ["team == 'a'", "all()", "global()", "!has(env)"]
_PORT_VALUES: list[int | str] = [80, 8080, 53, "8000:9000", "1:1024", "http", "dns", "db"]
_NETS = [["10.244.0.2/32"], ["10.244.0.0/24"], ["203.0.113.0/24"], ["10.244.0.4/31"]]

entities = st.fixed_dictionaries(
    {},
    optional={
        "selector": st.sampled_from(_SELECTORS),
        "notSelector": st.sampled_from(_SELECTORS),
        "namespaceSelector": st.sampled_from(_NAMESPACE_SELECTORS),
        "nets": st.sampled_from(_NETS),
        "notNets": st.sampled_from(_NETS),
        "ports": st.lists(st.sampled_from(_PORT_VALUES), min_size=1, max_size=3),
        "notPorts": st.lists(st.sampled_from(_PORT_VALUES), min_size=1, max_size=2),
        "serviceAccounts": st.sampled_from(
            [{"names": ["api"]}, {"names": ["web", "api"]}, {"selector": "trusted == 'yes'"}]
        ),
    },
)
rules = st.fixed_dictionaries(
    {"action": st.sampled_from(["Allow", "Deny", "Pass", "Log"])},
    optional={
        "protocol": st.sampled_from(["TCP", "UDP", "ICMP"]),
        "source": entities,
        "destination": entities,
    },
)


@st.composite
def drawn_clusters(draw: st.DrawFn) -> list[dict[str, Any]]:
    documents = _topology()
    tier_names = ["t1", "t2", "t3"][: draw(st.integers(0, 3))]
    for name in tier_names:
        spec: dict[str, Any] = {"defaultAction": draw(st.sampled_from(["Deny", "Pass"]))}
        order = draw(st.sampled_from([None, 10, 20, 20]))
        if order is not None:
            spec["order"] = order
        documents.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Tier",
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    count = draw(st.integers(1, 5))
    for index in range(count):
        kind = draw(
            st.sampled_from(
                [
                    "NetworkPolicy",
                    "GlobalNetworkPolicy",
                    "StagedNetworkPolicy",
                    "StagedGlobalNetworkPolicy",
                ]
            )
        )
        spec = {
            "selector": draw(st.sampled_from(_SELECTORS)),
            "ingress": draw(st.lists(rules, max_size=3)),
            "egress": draw(st.lists(rules, max_size=3)),
        }
        tier = draw(st.sampled_from([None, "missing-tier", *tier_names]))
        if tier is not None:
            spec["tier"] = tier
        order = draw(st.sampled_from([None, 10, 10, 100]))
        if order is not None:
            spec["order"] = order
        types = draw(st.sampled_from([None, ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
        if types is not None:
            spec["types"] = types
        metadata: dict[str, Any] = {"name": f"p{index % 3}"}  # name clashes: staged twins
        if "Global" not in kind:
            metadata["namespace"] = draw(st.sampled_from(sorted(_NAMESPACES)))
        elif draw(st.booleans()):
            spec["namespaceSelector"] = draw(st.sampled_from(["team == 'a'", "all()"]))
        if kind.startswith("Staged") and draw(st.booleans()):
            spec["stagedAction"] = draw(st.sampled_from(["Set", "Delete"]))
        documents.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": kind,
                "metadata": metadata,
                "spec": spec,
            }
        )
    return documents


DRAWN_PROBES = [
    Probe(8080, TCP),
    Probe(80, TCP),
    Probe(53, UDP),
    Probe("http", TCP),
    Probe("dns", UDP),
    Probe("db", TCP),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=drawn_clusters())
def test_matrix_equals_evaluate_on_drawn_policies(documents: list[dict[str, Any]]) -> None:
    note(repr([d for d in documents if d["kind"] not in ("Namespace", "Pod")]))
    mismatches = _matrix_mismatches(documents, DRAWN_PROBES)
    assert not mismatches, "\n".join(mismatches[:20])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=drawn_clusters(), flow_seed=st.integers(0, 2**32 - 1))
def test_batch_equals_evaluate_on_drawn_policies(
    documents: list[dict[str, Any]], flow_seed: int
) -> None:
    note(repr([d for d in documents if d["kind"] not in ("Namespace", "Pod")]))
    batch = flows_from_cluster(documents, 120, flow_seed)
    mismatches = _batch_mismatches(documents, batch)
    assert not mismatches, "\n".join(mismatches[:20])
