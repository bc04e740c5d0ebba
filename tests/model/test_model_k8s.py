"""Kubernetes resources: NetworkPolicy, admin/cluster policies, core and apps objects."""

from __future__ import annotations

from typing import Any

import pytest

from palisade.model import (
    IPBlock,
    K8sNetworkPolicy,
    LabelSelector,
    NetworkPolicyPort,
    Pod,
    Service,
    StagedKubernetesNetworkPolicy,
)
from tests.model._helpers import assert_problem, assert_valid, k8s_np

POLICY_API = "policy.networking.k8s.io"


def obj(
    api_version: str,
    kind: str,
    spec: Any = None,
    *,
    name: str = "x",
    namespace: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": metadata}
    if spec is not None:
        doc["spec"] = spec
    doc.update(extra)
    return doc


def anp(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {"priority": 10, "subject": {"namespaces": {}}}
    return obj(f"{POLICY_API}/v1alpha1", "AdminNetworkPolicy", {**base, **spec}, **kw)


def banp(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {"subject": {"namespaces": {}}}
    return obj(f"{POLICY_API}/v1alpha1", "BaselineAdminNetworkPolicy", {**base, **spec}, **kw)


def cnp(spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}}
    return obj(f"{POLICY_API}/v1alpha2", "ClusterNetworkPolicy", {**base, **spec}, **kw)


def pod(spec: Any = None, **kw: Any) -> dict[str, Any]:
    if spec is None:
        spec = {"containers": [{"name": "c"}]}
    kw.setdefault("namespace", "ns")
    return obj("v1", "Pod", spec, **kw)


def deployment(spec: dict[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    return obj("apps/v1", kind, spec, namespace="ns")


TEMPLATE = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
SEL = {"matchLabels": {"app": "a"}}
NS_PEER = {"namespaces": {"matchLabels": {"team": "a"}}}
PODS_PEER = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}}

VALID: list[tuple[str, dict[str, Any]]] = [
    ("np-deny-all", k8s_np({"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]})),
    (
        "np-no-namespace",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "x"},
            "spec": {"podSelector": {}},
        },
    ),
    ("np-allow-all-rule", k8s_np({"podSelector": {}, "ingress": [{}], "egress": [{}]})),
    (
        "np-full",
        k8s_np(
            {
                "podSelector": {
                    "matchLabels": {"app": "web", "app.kubernetes.io/name": "x"},
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["a", "b"]},
                        {"key": "env", "operator": "NotIn", "values": ["dev"]},
                        {"key": "x", "operator": "Exists"},
                        {"key": "y", "operator": "DoesNotExist", "values": []},
                    ],
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {}},
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "y"}
                                }
                            },
                            {"podSelector": {"matchLabels": {"a": "b"}}, "namespaceSelector": {}},
                            {
                                "ipBlock": {
                                    "cidr": "10.0.0.0/8",
                                    "except": ["10.1.0.0/16", "10.2.0.0/24"],
                                }
                            },
                        ],
                        "ports": [
                            {"port": 80},
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "SCTP"},
                            {"port": "serve-80-tcp"},
                            {"protocol": "TCP", "port": 8000, "endPort": 9000},
                        ],
                    }
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}], "ports": []}],
            }
        ),
    ),
    (
        "np-ipblock-host-bits",
        k8s_np(
            {
                "podSelector": {},
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "10.244.0.10/4", "except": ["10.244.0.11/32"]}}]}
                ],
            }
        ),
    ),
    (
        "np-ipblock-except-equal",
        k8s_np(
            {
                "podSelector": {},
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}],
            }
        ),
    ),
    ("np-empty-from", k8s_np({"podSelector": {}, "ingress": [{"from": []}]})),
    ("np-status", k8s_np({"podSelector": {}}) | {"status": {}}),
    (
        "np-endport-equal",
        k8s_np({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 80}]}]}),
    ),
    (
        "anp-full",
        anp(
            {
                "subject": {
                    "pods": {"namespaceSelector": {"matchLabels": {"a": "b"}}, "podSelector": {}}
                },
                "ingress": [
                    {
                        "name": "allow-monitoring",
                        "action": "Allow",
                        "from": [NS_PEER, PODS_PEER],
                        "ports": [
                            {"portNumber": {"protocol": "TCP", "port": 80}},
                            {"portNumber": {"port": 443}},
                            {"portRange": {"protocol": "UDP", "start": 1000, "end": 2000}},
                            {"namedPort": "metrics"},
                        ],
                    },
                    {"action": "Pass", "from": [{"namespaces": {}}]},
                ],
                "egress": [
                    {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
                    {"action": "Allow", "to": [{"nodes": {"matchLabels": {"role": "x"}}}]},
                    {"action": "Pass", "to": [PODS_PEER]},
                ],
            }
        ),
    ),
    ("anp-priority-bounds", anp({"priority": 0})),
    ("anp-priority-max", anp({"priority": 1000})),
    ("anp-with-status", anp({}) | {"status": {"conditions": [{"type": "Ready"}]}}),
    ("anp-pods-no-ns-selector", anp({"subject": {"pods": {"podSelector": {}}}})),
    (
        "banp",
        banp(
            {
                "ingress": [{"action": "Deny", "from": [NS_PEER]}],
                "egress": [
                    {
                        "action": "Allow",
                        "to": [{"networks": ["10.0.0.0/8"]}],
                        "ports": [{"portNumber": {"port": 53, "protocol": "UDP"}}],
                    }
                ],
            },
            name="default",
        ),
    ),
    (
        "cnp-full",
        cnp(
            {
                "ingress": [
                    {
                        "name": "r1",
                        "action": "Accept",
                        "from": [NS_PEER, PODS_PEER],
                        "protocols": [
                            {"tcp": {"destinationPort": {"number": 80}}},
                            {"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                            {"sctp": {}},
                            {"destinationNamedPort": "http"},
                        ],
                    }
                ],
                "egress": [
                    {"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]},
                    {"action": "Pass", "to": [{"domainNames": ["*.example.com", "kubernetes.io"]}]},
                    {"action": "Accept", "to": [{"nodes": {}}], "protocols": [{"tcp": {}}]},
                    {
                        "action": "Accept",
                        "to": [PODS_PEER],
                        "protocols": [{"destinationNamedPort": "dns"}],
                    },
                ],
            }
        ),
    ),
    (
        "cnp-baseline",
        cnp(
            {"tier": "Baseline", "subject": {"pods": {"namespaceSelector": {}, "podSelector": {}}}}
        ),
    ),
    (
        "namespace",
        obj(
            "v1",
            "Namespace",
            name="prod",
            metadata={"name": "prod", "labels": {"kubernetes.io/metadata.name": "prod"}},
        ),
    ),
    (
        "namespace-dump",
        obj(
            "v1", "Namespace", {"finalizers": ["kubernetes"]}, name="x", status={"phase": "Active"}
        ),
    ),
    ("pod-minimal", pod()),
    (
        "pod-rich",
        pod(
            {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.25",
                        "ports": [
                            {"name": "http", "containerPort": 80},
                            {
                                "containerPort": 53,
                                "protocol": "UDP",
                                "hostPort": 5353,
                                "hostIP": "0.0.0.0",
                            },
                        ],
                        "command": ["nginx"],
                        "args": ["-g", "daemon off;"],
                        "env": [{"name": "A", "value": "1"}],
                        "resources": {"limits": {"cpu": "1"}},
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                        "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
                        "securityContext": {"runAsNonRoot": True},
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }
                ],
                "initContainers": [
                    {"name": "init", "ports": [{"containerPort": 9000, "name": "init-port"}]}
                ],
                "serviceAccountName": "web",
                "serviceAccount": "web",
                "nodeName": "node-1",
                "hostNetwork": False,
                "volumes": [{"name": "v", "emptyDir": {}}],
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "terminationGracePeriodSeconds": 30,
                "enableServiceLinks": True,
                "preemptionPolicy": "PreemptLowerPriority",
                "priority": 0,
            },
            metadata={
                "name": "web-1",
                "namespace": "ns",
                "labels": {"app": "web"},
                "uid": "u",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}],
            },
            status={
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                "hostIP": "192.168.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "qosClass": "BestEffort",
                "startTime": "2024-01-01T00:00:00Z",
            },
        ),
    ),
    (
        "service",
        obj(
            "v1",
            "Service",
            {
                "selector": {"app": "a"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"port": 53, "protocol": "UDP", "targetPort": "dns"},
                ],
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster",
            },
            name="s-x-a",
            namespace="x",
            status={"loadBalancer": {}},
        ),
    ),
    ("service-no-spec", obj("v1", "Service", name="s")),
    (
        "service-account",
        obj(
            "v1",
            "ServiceAccount",
            name="web",
            namespace="ns",
            secrets=[{"name": "t"}],
            automountServiceAccountToken=False,
        ),
    ),
    (
        "deployment",
        deployment(
            {
                "replicas": 3,
                "selector": SEL,
                "template": TEMPLATE,
                "strategy": {"type": "RollingUpdate"},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            }
        ),
    ),
    (
        "statefulset",
        deployment(
            {
                "selector": SEL,
                "template": TEMPLATE,
                "serviceName": "db",
                "volumeClaimTemplates": [],
                "podManagementPolicy": "OrderedReady",
            },
            "StatefulSet",
        ),
    ),
    (
        "daemonset",
        deployment(
            {"selector": SEL, "template": TEMPLATE, "updateStrategy": {"type": "OnDelete"}},
            "DaemonSet",
        ),
    ),
    (
        "replicaset",
        deployment({"replicas": 1, "selector": SEL, "template": TEMPLATE}, "ReplicaSet"),
    ),
]


@pytest.mark.parametrize(("doc",), [(d,) for _, d in VALID], ids=[i for i, _ in VALID])
def test_valid(doc: dict[str, Any]) -> None:
    assert_valid(doc)


def peer(p: dict[str, Any]) -> dict[str, Any]:
    return k8s_np({"podSelector": {}, "ingress": [{"from": [p]}]})


def port(p: dict[str, Any]) -> dict[str, Any]:
    return k8s_np({"podSelector": {}, "ingress": [{"ports": [p]}]})


def selector(s: dict[str, Any]) -> dict[str, Any]:
    return k8s_np({"podSelector": s})


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("np-no-spec", k8s_np(None), "spec", "required"),
    ("np-no-pod-selector", k8s_np({}), "spec.podSelector", "required"),
    ("np-null-pod-selector", k8s_np({"podSelector": None}), "spec.podSelector", "valid dictionary"),
    ("np-unknown-field", k8s_np({"podSelector": {}, "ingres": []}), "spec.ingres", "unknown field"),
    (
        "np-typo-from",
        k8s_np({"podSelector": {}, "ingress": [{"form": []}]}),
        "spec.ingress[0].form",
        "unknown field",
    ),
    (
        "np-egress-has-no-from",
        k8s_np({"podSelector": {}, "egress": [{"from": []}]}),
        "spec.egress[0].from",
        "unknown field",
    ),
    ("np-snake-case", k8s_np({"pod_selector": {}}), "spec.pod_selector", "unknown field"),
    (
        "np-bad-namespace",
        k8s_np({"podSelector": {}}, namespace="X_Y"),
        "metadata.namespace",
        "DNS-1123 label",
    ),
    ("np-bad-name", k8s_np({"podSelector": {}}, name="-x"), "metadata.name", "DNS-1123 subdomain"),
    (
        "np-policy-type",
        k8s_np({"podSelector": {}, "policyTypes": ["Forward"]}),
        "spec.policyTypes[0]",
        "Input should be",
    ),
    (
        "np-policy-types-repeat",
        k8s_np({"podSelector": {}, "policyTypes": ["Egress", "Egress"]}),
        "spec.policyTypes",
        "must not repeat",
    ),
    ("np-top-level-unknown", k8s_np({"podSelector": {}}) | {"extra": 1}, "extra", "unknown field"),
    (
        "selector-in-needs-values",
        selector({"matchExpressions": [{"key": "a", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values",
        "at least one value",
    ),
    (
        "selector-notin-empty",
        selector({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}),
        "spec.podSelector.matchExpressions[0].values",
        "at least one value",
    ),
    (
        "selector-exists-values",
        selector({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        "spec.podSelector.matchExpressions[0].values",
        "takes no values",
    ),
    (
        "selector-operator",
        selector({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
        "spec.podSelector.matchExpressions[0].operator",
        "Input should be",
    ),
    (
        "selector-expression-key",
        selector({"matchExpressions": [{"key": "a b", "operator": "Exists"}]}),
        "spec.podSelector.matchExpressions[0].key",
        "label key name",
    ),
    (
        "selector-expression-value",
        selector({"matchExpressions": [{"key": "a", "operator": "In", "values": ["a b"]}]}),
        "spec.podSelector.matchExpressions[0].values[0]",
        "label value",
    ),
    (
        "selector-match-labels-key",
        selector({"matchLabels": {"a/b/c": "x"}}),
        'spec.podSelector.matchLabels["a/b/c"]',
        "prefix",
    ),
    (
        "selector-match-labels-value",
        selector({"matchLabels": {"a": "-x"}}),
        "spec.podSelector.matchLabels.a",
        "label value",
    ),
    (
        "selector-unknown",
        selector({"matchLabel": {}}),
        "spec.podSelector.matchLabel",
        "unknown field",
    ),
    (
        "peer-empty",
        peer({}),
        "spec.ingress[0].from[0]",
        "must set podSelector, namespaceSelector or ipBlock",
    ),
    (
        "peer-ipblock-and-pods",
        peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[0].ipBlock",
        "cannot be combined",
    ),
    (
        "ipblock-no-prefix",
        peer({"ipBlock": {"cidr": "10.0.0.1"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "not a CIDR",
    ),
    (
        "ipblock-bad-cidr",
        peer({"ipBlock": {"cidr": "10.0.0.0/40"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "not a valid CIDR",
    ),
    (
        "ipblock-except-outside",
        peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "not inside",
    ),
    (
        "ipblock-except-larger",
        peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "not inside",
    ),
    (
        "ipblock-except-family",
        peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/16"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "not inside",
    ),
    (
        "ipblock-no-cidr",
        peer({"ipBlock": {"except": []}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
        "required",
    ),
    (
        "port-protocol",
        port({"protocol": "ICMP"}),
        "spec.ingress[0].ports[0].protocol",
        "Input should be",
    ),
    (
        "port-protocol-lower",
        port({"protocol": "tcp"}),
        "spec.ingress[0].ports[0].protocol",
        "Input should be",
    ),
    ("port-zero", port({"port": 0}), "spec.ingress[0].ports[0].port", "out of range"),
    ("port-too-big", port({"port": 65536}), "spec.ingress[0].ports[0].port", "out of range"),
    (
        "port-numeric-string",
        port({"port": "80"}),
        "spec.ingress[0].ports[0].port",
        "at least one letter",
    ),
    ("port-bad-name", port({"port": "Serve_80"}), "spec.ingress[0].ports[0].port", "lower-case"),
    (
        "end-port-before-port",
        port({"port": 90, "endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
        "between port",
    ),
    (
        "end-port-named",
        port({"port": "http", "endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
        "named port",
    ),
    ("end-port-no-port", port({"endPort": 80}), "spec.ingress[0].ports[0].endPort", "needs port"),
    (
        "end-port-too-big",
        port({"port": 80, "endPort": 70000}),
        "spec.ingress[0].ports[0].endPort",
        "65535",
    ),
    # AdminNetworkPolicy / BaselineAdminNetworkPolicy
    ("anp-priority-high", anp({"priority": 1001}), "spec.priority", "less than or equal to 1000"),
    (
        "anp-priority-missing",
        obj(f"{POLICY_API}/v1alpha1", "AdminNetworkPolicy", {"subject": {"namespaces": {}}}),
        "spec.priority",
        "required",
    ),
    (
        "anp-subject-both",
        anp({"subject": {"namespaces": {}, "pods": {"podSelector": {}}}}),
        "spec.subject.pods",
        "exactly one",
    ),
    ("anp-subject-none", anp({"subject": {}}), "spec.subject", "must be set"),
    (
        "anp-subject-pods-no-pod-selector",
        anp({"subject": {"pods": {"namespaceSelector": {}}}}),
        "spec.subject.pods.podSelector",
        "required",
    ),
    (
        "anp-action",
        anp({"ingress": [{"action": "Accept", "from": [NS_PEER]}]}),
        "spec.ingress[0].action",
        "Input should be",
    ),
    (
        "anp-from-empty",
        anp({"ingress": [{"action": "Allow", "from": []}]}),
        "spec.ingress[0].from",
        "at least 1",
    ),
    (
        "anp-from-missing",
        anp({"ingress": [{"action": "Allow"}]}),
        "spec.ingress[0].from",
        "required",
    ),
    (
        "anp-ingress-networks",
        anp({"ingress": [{"action": "Allow", "from": [{"networks": ["10.0.0.0/8"]}]}]}),
        "spec.ingress[0].from[0].networks",
        "unknown field",
    ),
    (
        "anp-peer-two",
        anp(
            {
                "egress": [
                    {"action": "Allow", "to": [{"namespaces": {}, "networks": ["10.0.0.0/8"]}]}
                ]
            }
        ),
        "spec.egress[0].to[0].networks",
        "exactly one",
    ),
    (
        "anp-network-bad",
        anp({"egress": [{"action": "Allow", "to": [{"networks": ["10.0.0.0"]}]}]}),
        "spec.egress[0].to[0].networks[0]",
        "not a CIDR",
    ),
    (
        "anp-port-two",
        anp(
            {
                "ingress": [
                    {
                        "action": "Allow",
                        "from": [NS_PEER],
                        "ports": [{"portNumber": {"port": 80}, "namedPort": "http"}],
                    }
                ]
            }
        ),
        "spec.ingress[0].ports[0].namedPort",
        "exactly one",
    ),
    (
        "anp-port-none",
        anp({"ingress": [{"action": "Allow", "from": [NS_PEER], "ports": [{}]}]}),
        "spec.ingress[0].ports[0]",
        "must be set",
    ),
    (
        "anp-port-range-order",
        anp(
            {
                "ingress": [
                    {
                        "action": "Allow",
                        "from": [NS_PEER],
                        "ports": [{"portRange": {"start": 80, "end": 80}}],
                    }
                ]
            }
        ),
        "spec.ingress[0].ports[0].portRange.end",
        "greater than start",
    ),
    (
        "anp-port-number-zero",
        anp(
            {
                "ingress": [
                    {"action": "Allow", "from": [NS_PEER], "ports": [{"portNumber": {"port": 0}}]}
                ]
            }
        ),
        "spec.ingress[0].ports[0].portNumber.port",
        "greater than or equal to 1",
    ),
    (
        "anp-named-port-bad",
        anp(
            {"ingress": [{"action": "Allow", "from": [NS_PEER], "ports": [{"namedPort": "HTTP"}]}]}
        ),
        "spec.ingress[0].ports[0].namedPort",
        "lower-case",
    ),
    (
        "anp-rule-name-long",
        anp({"ingress": [{"name": "x" * 101, "action": "Allow", "from": [NS_PEER]}]}),
        "spec.ingress[0].name",
        "at most 100",
    ),
    ("anp-namespaced", anp({}, namespace="ns"), "metadata.namespace", "cluster-scoped"),
    (
        "banp-pass",
        banp({"ingress": [{"action": "Pass", "from": [NS_PEER]}]}),
        "spec.ingress[0].action",
        "Input should be",
    ),
    ("banp-priority", banp({"priority": 1}), "spec.priority", "unknown field"),
    # ClusterNetworkPolicy
    ("cnp-tier", cnp({"tier": "Platform"}), "spec.tier", "Input should be"),
    (
        "cnp-no-tier",
        obj(
            f"{POLICY_API}/v1alpha2",
            "ClusterNetworkPolicy",
            {"priority": 1, "subject": {"namespaces": {}}},
        ),
        "spec.tier",
        "required",
    ),
    (
        "cnp-action-allow",
        cnp({"ingress": [{"action": "Allow", "from": [NS_PEER]}]}),
        "spec.ingress[0].action",
        "Input should be",
    ),
    (
        "cnp-protocol-two",
        cnp(
            {
                "ingress": [
                    {"action": "Accept", "from": [NS_PEER], "protocols": [{"tcp": {}, "udp": {}}]}
                ]
            }
        ),
        "spec.ingress[0].protocols[0].udp",
        "exactly one",
    ),
    (
        "cnp-protocols-empty",
        cnp({"ingress": [{"action": "Accept", "from": [NS_PEER], "protocols": []}]}),
        "spec.ingress[0].protocols",
        "at least 1",
    ),
    (
        "cnp-port-both",
        cnp(
            {
                "ingress": [
                    {
                        "action": "Accept",
                        "from": [NS_PEER],
                        "protocols": [
                            {
                                "tcp": {
                                    "destinationPort": {
                                        "number": 1,
                                        "range": {"start": 1, "end": 2},
                                    }
                                }
                            }
                        ],
                    }
                ]
            }
        ),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range",
        "exactly one",
    ),
    (
        "cnp-range-equal",
        cnp(
            {
                "ingress": [
                    {
                        "action": "Accept",
                        "from": [NS_PEER],
                        "protocols": [
                            {"udp": {"destinationPort": {"range": {"start": 5, "end": 5}}}}
                        ],
                    }
                ]
            }
        ),
        "spec.ingress[0].protocols[0].udp.destinationPort.range.end",
        "greater than start",
    ),
    (
        "cnp-named-port-networks",
        cnp(
            {
                "egress": [
                    {
                        "action": "Accept",
                        "to": [{"networks": ["10.0.0.0/8"]}],
                        "protocols": [{"destinationNamedPort": "http"}],
                    }
                ]
            }
        ),
        "spec.egress[0].to[0]",
        "destinationNamedPort",
    ),
    (
        "cnp-domain-bad",
        cnp({"egress": [{"action": "Accept", "to": [{"domainNames": ["a.*.com"]}]}]}),
        "spec.egress[0].to[0].domainNames[0]",
        "domain",
    ),
    (
        "cnp-too-many-rules",
        cnp({"ingress": [{"action": "Deny", "from": [NS_PEER]}] * 26}),
        "spec.ingress",
        "at most 25",
    ),
    (
        "cnp-old-ports-field",
        cnp({"ingress": [{"action": "Accept", "from": [NS_PEER], "ports": []}]}),
        "spec.ingress[0].ports",
        "unknown field",
    ),
    # core and apps
    ("namespace-name-dot", obj("v1", "Namespace", name="a.b"), "metadata.name", "DNS-1123 label"),
    (
        "namespace-with-namespace",
        obj("v1", "Namespace", name="a", namespace="b"),
        "metadata.namespace",
        "cluster-scoped",
    ),
    ("pod-no-spec", obj("v1", "Pod", name="p"), "spec", "required"),
    ("pod-no-containers", pod({}), "spec.containers", "required"),
    (
        "pod-container-no-name",
        pod({"containers": [{"image": "x"}]}),
        "spec.containers[0].name",
        "required",
    ),
    (
        "pod-container-port-zero",
        pod({"containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}),
        "spec.containers[0].ports[0].containerPort",
        "greater than or equal to 1",
    ),
    (
        "pod-container-port-missing",
        pod({"containers": [{"name": "c", "ports": [{"name": "http"}]}]}),
        "spec.containers[0].ports[0].containerPort",
        "required",
    ),
    (
        "pod-container-port-name",
        pod(
            {
                "containers": [
                    {
                        "name": "c",
                        "ports": [{"containerPort": 80, "name": "serve-80-tcp-long-name"}],
                    }
                ]
            }
        ),
        "spec.containers[0].ports[0].name",
        "longer than 15",
    ),
    (
        "pod-container-port-protocol",
        pod({"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "ICMP"}]}]}),
        "spec.containers[0].ports[0].protocol",
        "Input should be",
    ),
    (
        "pod-init-container-port",
        pod(
            {
                "containers": [{"name": "c"}],
                "initContainers": [{"name": "i", "ports": [{"containerPort": "x"}]}],
            }
        ),
        "spec.initContainers[0].ports[0].containerPort",
        "valid integer",
    ),
    (
        "pod-host-network-string",
        pod({"containers": [{"name": "c"}], "hostNetwork": "yes"}),
        "spec.hostNetwork",
        "valid boolean",
    ),
    (
        "pod-label",
        pod(metadata={"name": "p", "labels": {"a": "b c"}}),
        "metadata.labels.a",
        "label value",
    ),
    (
        "pod-ips",
        pod(status={"podIPs": [{"address": "1.2.3.4"}]}),
        "status.podIPs[0].ip",
        "required",
    ),
    ("service-name-digit", obj("v1", "Service", name="1abc"), "metadata.name", "DNS-1035"),
    (
        "service-type",
        obj("v1", "Service", {"type": "Internal"}, name="s"),
        "spec.type",
        "Input should be",
    ),
    (
        "service-port-missing",
        obj("v1", "Service", {"ports": [{"name": "a"}]}, name="s"),
        "spec.ports[0].port",
        "required",
    ),
    (
        "service-target-port",
        obj("v1", "Service", {"ports": [{"port": 80, "targetPort": 0}]}, name="s"),
        "spec.ports[0].targetPort",
        "out of range",
    ),
    (
        "service-selector-value",
        obj("v1", "Service", {"selector": {"a": 1}}, name="s"),
        "spec.selector.a",
        "valid string",
    ),
    ("deployment-no-selector", deployment({"template": TEMPLATE}), "spec.selector", "required"),
    ("deployment-no-template", deployment({"selector": SEL}), "spec.template", "required"),
    (
        "deployment-template-no-spec",
        deployment({"selector": SEL, "template": {"metadata": {}}}),
        "spec.template.spec",
        "required",
    ),
    (
        "deployment-template-label",
        deployment(
            {
                "selector": SEL,
                "template": {"metadata": {"labels": {"a": "-"}}, "spec": {"containers": []}},
            }
        ),
        "spec.template.metadata.labels.a",
        "label value",
    ),
    (
        "deployment-replicas",
        deployment({"replicas": "3", "selector": SEL, "template": TEMPLATE}),
        "spec.replicas",
        "valid integer",
    ),
    (
        "deployment-container-port",
        deployment(
            {
                "selector": SEL,
                "template": {
                    "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}
                },
            }
        ),
        "spec.template.spec.containers[0].ports[0].containerPort",
        "less than or equal to 65535",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(doc: dict[str, Any], path: str, reason: str) -> None:
    assert_problem(doc, path, reason)


def test_invalid_ids_are_unique() -> None:
    ids = [c[0] for c in INVALID] + [i for i, _ in VALID]
    assert len(ids) == len(set(ids))


def test_absent_and_empty_are_kept_apart() -> None:
    absent = assert_valid(k8s_np({"podSelector": {}}))
    empty = assert_valid(k8s_np({"podSelector": {}, "ingress": [], "egress": [{"to": []}]}))
    assert isinstance(absent, K8sNetworkPolicy) and isinstance(empty, K8sNetworkPolicy)
    assert absent.spec.ingress is None and absent.spec.policy_types is None
    assert empty.spec.ingress == []
    assert empty.spec.egress is not None and empty.spec.egress[0].to == []
    assert empty.spec.egress[0].ports is None
    assert "ingress" not in absent.to_document()["spec"]
    assert empty.to_document()["spec"]["ingress"] == []


def test_effective_policy_types() -> None:
    def types(spec: dict[str, Any]) -> list[str]:
        policy = assert_valid(k8s_np({"podSelector": {}, **spec}))
        assert isinstance(policy, K8sNetworkPolicy)
        return list(policy.spec.effective_policy_types)

    assert types({}) == ["Ingress"]
    assert types({"egress": [{}]}) == ["Ingress", "Egress"]
    assert types({"policyTypes": ["Egress"]}) == ["Egress"]


def test_k8s_and_calico_policies_have_distinct_keys() -> None:
    k8s = assert_valid(k8s_np({"podSelector": {}}, name="a", namespace="x"))
    assert k8s.key == ("KubernetesNetworkPolicy", "x", "a")
    assert k8s.kind == "NetworkPolicy"
    staged = assert_valid(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "StagedKubernetesNetworkPolicy",
            "metadata": {"name": "a"},
        }
    )
    assert isinstance(staged, StagedKubernetesNetworkPolicy)
    assert staged.key == ("StagedKubernetesNetworkPolicy", "default", "a")
    assert staged.spec.staged_action == "Set" and staged.spec.pod_selector.is_empty


def test_label_selector_matches() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "x", "operator": "Exists"},
                {"key": "y", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "web", "tier": "a", "x": ""})
    assert sel.matches({"app": "web", "tier": "b", "env": "prod", "x": "1"})
    assert not sel.matches({"app": "web", "tier": "c", "x": ""})
    assert not sel.matches({"app": "web", "tier": "a", "env": "dev", "x": ""})
    assert not sel.matches({"app": "web", "tier": "a", "x": "", "y": ""})
    assert not sel.matches({"tier": "a", "x": ""})
    assert LabelSelector().matches({}) and LabelSelector().is_empty


def test_ip_block_helpers() -> None:
    block = IPBlock.model_validate({"cidr": "10.244.0.10/4", "except": ["10.244.0.11/32"]})
    assert str(block.network) == "0.0.0.0/4"
    assert block.contains("10.244.0.10")
    assert not block.contains("10.244.0.11")
    assert not block.contains("fd00::1")
    assert not block.contains("200.0.0.1")


def test_port_defaults() -> None:
    port_entry = NetworkPolicyPort.model_validate({"port": 80})
    assert port_entry.protocol is None and port_entry.effective_protocol == "TCP"


def test_pod_helpers() -> None:
    resource = assert_valid(
        pod(
            {"containers": [{"name": "c"}], "serviceAccount": "old"},
            status={"podIP": "10.0.0.1"},
        )
    )
    assert isinstance(resource, Pod)
    assert resource.spec.effective_service_account == "old"
    assert resource.status is not None and resource.status.ips == ["10.0.0.1"]
    dual = assert_valid(
        pod(status={"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]})
    )
    assert isinstance(dual, Pod) and dual.status is not None
    assert dual.status.ips == ["10.0.0.1", "fd00::1"]
    assert dual.spec.effective_service_account == "default"
    assert dual.spec.containers[0].ports == []


def test_service_fields() -> None:
    resource = assert_valid(
        obj(
            "v1",
            "Service",
            {
                "selector": {"a": "b"},
                "clusterIP": "None",
                "ports": [{"port": 80, "targetPort": "http"}],
            },
            name="s",
        )
    )
    assert isinstance(resource, Service)
    assert resource.spec.cluster_ip == "None"
    assert resource.spec.ports[0].target_port == "http"
    assert resource.spec.ports[0].protocol == "TCP"
    assert resource.namespace == "default"
