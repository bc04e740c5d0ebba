"""A small hand-written cluster whose node-a intents are known, used by several tests."""

from __future__ import annotations

from typing import Any


def pod(
    name: str,
    ip: str,
    node: str,
    labels: dict[str, str],
    *,
    namespace: str = "prod",
    service_account: str | None = None,
    ports: tuple[tuple[str, int, str], ...] = (),
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [
            {
                "name": "main",
                "ports": [
                    {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports
                ],
            }
        ],
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


SCENARIO: list[dict[str, Any]] = [
    namespace("prod", {"env": "prod"}),
    namespace("ops", {"env": "ops"}),
    pod("web-1", "10.0.0.1", "node-a", {"app": "web"}, ports=(("http", 8080, "TCP"),)),
    pod("web-2", "10.0.1.1", "node-b", {"app": "web"}, ports=(("http", 9090, "TCP"),)),
    pod("db-1", "10.0.0.2", "node-a", {"app": "db"}),
    pod("tool", "10.0.1.9", "node-b", {"app": "tool"}, namespace="ops"),
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Tier",
        "metadata": {"name": "security"},
        "spec": {"order": 100, "defaultAction": "Pass"},
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkSet",
        "metadata": {"name": "blocked", "labels": {"feed": "blocked"}},
        "spec": {"nets": ["198.51.100.0/24"]},
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "security.block-feed"},
        "spec": {
            "tier": "security",
            "order": 10,
            "selector": "all()",
            "types": ["Ingress"],
            "ingress": [
                {"action": "Deny", "source": {"selector": "feed == 'blocked'"}},
                {"action": "Pass"},
            ],
        },
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-from-web", "namespace": "prod"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        },
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-http", "namespace": "prod"},
        "spec": {
            "selector": "app == 'db'",
            "types": ["Egress"],
            "egress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "destination": {"selector": "app == 'web'", "ports": ["http"]},
                }
            ],
        },
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "StagedNetworkPolicy",
        "metadata": {"name": "staged-deny", "namespace": "prod"},
        "spec": {"selector": "all()", "ingress": [{"action": "Deny"}]},
    },
]
