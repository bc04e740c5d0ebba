"""Deterministic synthetic clusters and flows, for property tests and benchmarks.

``generate_cluster`` builds a list of resource documents shaped like a real cluster: team and
environment namespaces, Deployment-like groups of pods (``app``/``tier``/``version`` labels, one
service account per app, named container ports, addresses in 10.244.0.0/16 laid out in per-node
/24 blocks), and policies drawn from the patterns people actually write (default deny, allow
from the frontend, DNS egress to kube-dns, metrics scraping from monitoring, egress to the
internet except private ranges, threat-feed deny lists …), varied with every selector operator
and rule field the engine understands. With ``kubernetes_only=True`` only
``networking.k8s.io/v1`` NetworkPolicies are emitted, in the forms the Kubernetes API accepts.

``flows_from_cluster`` draws a columnar :class:`FlowBatch` of flows between the pods of such a
cluster, mostly to ports the destination declares, with some noise and some external peers.

The same arguments always give the same output (``random.Random(seed)`` and
``numpy.random.default_rng(seed)``; no hash-order dependence).
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._batch import FlowBatch

Document = dict[str, Any]

CALICO_API = "projectcalico.org/v3"
K8S_NETPOL_API = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POD_CIDR = ipaddress.IPv4Network("10.244.0.0/16")

_TEAMS = (
    "payments",
    "catalog",
    "identity",
    "search",
    "checkout",
    "data",
    "web",
    "mobile",
    "analytics",
    "messaging",
)
_ENVS = ("prod", "staging", "dev")


@dataclass(frozen=True, slots=True)
class _PortSpec:
    name: str
    port: int
    protocol: str  # "TCP" | "UDP" | "SCTP"


# role → (app names, ports). Some apps serve "http" on another number, so named ports resolve
# differently from pod to pod, as they do in real clusters.
_HTTP = _PortSpec("http", 8080, "TCP")
_METRICS = _PortSpec("metrics", 9090, "TCP")
_ROLES: dict[str, tuple[tuple[str, ...], tuple[_PortSpec, ...]]] = {
    "frontend": (("web", "storefront", "portal", "ui", "gateway"), (_HTTP, _METRICS)),
    "backend": (
        ("api", "orders", "billing", "inventory", "auth", "search", "cart", "users", "ledger"),
        (_HTTP, _PortSpec("grpc", 50051, "TCP"), _METRICS),
    ),
    "db": (("postgres", "mysql", "mongo"), (_PortSpec("db", 5432, "TCP"), _METRICS)),
    "cache": (("redis", "memcached"), (_PortSpec("redis", 6379, "TCP"), _METRICS)),
    "worker": (("worker", "scheduler", "indexer", "mailer"), (_METRICS,)),
    "collector": (
        ("fluentd", "vector"),
        (_PortSpec("forward", 24224, "TCP"), _PortSpec("syslog", 514, "UDP"), _METRICS),
    ),
    "signalling": (
        ("sip-proxy",),
        (_PortSpec("sip", 5060, "UDP"), _PortSpec("sigtran", 2905, "SCTP"), _METRICS),
    ),
}
_ROLE_WEIGHTS = {
    "frontend": 3,
    "backend": 6,
    "db": 2,
    "cache": 2,
    "worker": 2,
    "collector": 1,
    "signalling": 1,
}
_DB_PORTS = {"postgres": 5432, "mysql": 3306, "mongo": 27017, "redis": 6379, "memcached": 11211}
_HTTP_ALTERNATIVES = (8080, 8080, 8080, 8000, 3000, 8081)
_DNS_PORTS = (
    _PortSpec("dns", 53, "UDP"),
    _PortSpec("dns-tcp", 53, "TCP"),
    _PortSpec("metrics", 9153, "TCP"),
)
_PROMETHEUS_PORTS = (_PortSpec("web", 9090, "TCP"),)
_TYPE_CHOICES: tuple[list[str] | None, ...] = (["Ingress"], ["Egress"], ["Ingress", "Egress"], None)

# Addresses outside the cluster that policies and network sets talk about.
_PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
_EXTERNAL_RANGES = (
    "203.0.113.0/24",
    "198.51.100.0/24",
    "192.0.2.0/24",
    "52.94.0.0/16",
    "35.190.0.0/17",
    "151.101.0.0/16",
    "104.16.0.0/13",
)
_THREAT_RANGES = ("185.220.100.0/22", "45.155.205.0/24", "91.219.236.0/24", "194.26.29.0/24")


@dataclass(slots=True)
class _App:
    namespace: str
    name: str
    role: str
    version: str
    replicas: int
    ports: tuple[_PortSpec, ...]
    canary: bool = False

    @property
    def service_account(self) -> str:
        return self.name

    @property
    def labels(self) -> dict[str, str]:
        labels = {
            "app": self.name,
            "tier": self.role,
            "version": self.version,
            "app.kubernetes.io/name": self.name,
        }
        if self.canary:
            labels["canary"] = "true"
        return labels


@dataclass(slots=True)
class _Namespace:
    name: str
    labels: dict[str, str]
    apps: list[_App] = field(default_factory=list)


@dataclass(slots=True)
class _Model:
    namespaces: list[_Namespace]
    apps: list[_App]
    node_count: int
    network_set_labels: list[dict[str, str]] = field(default_factory=list)

    def namespace(self, name: str) -> _Namespace:
        for namespace in self.namespaces:
            if namespace.name == name:
                return namespace
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Topology


def _namespace_names(count: int, rng: random.Random) -> list[_Namespace]:
    names: list[_Namespace] = []
    special: list[_Namespace] = []
    if count >= 3:
        special.append(
            _Namespace("kube-system", {NAMESPACE_NAME_LABEL: "kube-system", "tier": "system"})
        )
        special.append(
            _Namespace(
                "monitoring",
                {NAMESPACE_NAME_LABEL: "monitoring", "team": "platform", "tier": "system"},
            )
        )
    combos = [(team, env) for env in _ENVS for team in _TEAMS]
    rng.shuffle(combos)
    index = 0
    while len(names) + len(special) < count:
        team, env = combos[index % len(combos)]
        suffix = "" if index < len(combos) else f"-{index // len(combos)}"
        name = f"{team}-{env}{suffix}"
        labels = {NAMESPACE_NAME_LABEL: name, "team": team, "env": env}
        if env == "prod" and rng.random() < 0.5:
            labels["compliance"] = rng.choice(("pci", "sox", "hipaa"))
        if rng.random() < 0.3:
            labels["istio-injection"] = "enabled"
        names.append(_Namespace(name, labels))
        index += 1
    return special + names


def _build_model(namespaces: int, pods: int, rng: random.Random) -> _Model:
    if namespaces < 1:
        raise ValueError("namespaces must be at least 1")
    if pods < 0:
        raise ValueError("pods must not be negative")
    per_node = 110 if pods <= 256 * 110 else 250
    if pods > 256 * 250:
        raise ValueError(f"{pods} pods do not fit in {POD_CIDR}")
    spaces = _namespace_names(namespaces, rng)
    model = _Model(spaces, [], max(1, math.ceil(pods / per_node)))
    remaining = pods
    used_names: set[tuple[str, str]] = set()
    if "kube-system" in (ns.name for ns in spaces) and remaining >= 4:
        dns = _App("kube-system", "coredns", "dns", "v1", 2, _DNS_PORTS)
        prometheus = _App("monitoring", "prometheus", "monitoring", "v2", 1, _PROMETHEUS_PORTS)
        for app in (dns, prometheus):
            model.namespace(app.namespace).apps.append(app)
            model.apps.append(app)
            used_names.add((app.namespace, app.name))
            remaining -= app.replicas
    workload_spaces = [ns for ns in spaces if ns.name not in ("kube-system", "monitoring")]
    workload_spaces = workload_spaces or spaces
    roles = list(_ROLE_WEIGHTS)
    weights = [_ROLE_WEIGHTS[r] for r in roles]
    turn = 0
    while remaining > 0:
        namespace = workload_spaces[turn % len(workload_spaces)]
        turn += 1
        role = rng.choices(roles, weights)[0]
        names, ports = _ROLES[role]
        base = rng.choice(names)
        name = base
        serial = 2
        while (namespace.name, name) in used_names:
            name = f"{base}-{serial}"
            serial += 1
        used_names.add((namespace.name, name))
        replicas = min(remaining, rng.choice((1, 1, 2, 2, 3, 3, 4, 6)))
        resolved: list[_PortSpec] = []
        for spec in ports:
            if spec.name == "http":
                spec = _PortSpec("http", rng.choice(_HTTP_ALTERNATIVES), "TCP")
            elif spec.name in ("db", "redis"):
                spec = _PortSpec(spec.name, _DB_PORTS.get(base, spec.port), "TCP")
            resolved.append(spec)
        app = _App(
            namespace.name,
            name,
            role,
            rng.choice(("v1", "v1", "v2", "v3")),
            replicas,
            tuple(resolved),
            canary=rng.random() < 0.1,
        )
        namespace.apps.append(app)
        model.apps.append(app)
        remaining -= replicas
    return model


def _hash_suffix(rng: random.Random, length: int, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _topology_documents(model: _Model, rng: random.Random) -> list[Document]:
    documents: list[Document] = []
    for namespace in model.namespaces:
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace.name, "labels": dict(namespace.labels)},
            }
        )
    for app in model.apps:
        team = model.namespace(app.namespace).labels.get("team", "platform")
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": app.service_account,
                    "namespace": app.namespace,
                    "labels": {"app": app.name, "team": team, "role": app.role},
                },
            }
        )
    pod_index = 0
    for app in model.apps:
        template_hash = _hash_suffix(rng, 10, "0123456789abcdef")
        replica_set = f"{app.name}-{template_hash}"
        for _ in range(app.replicas):
            node = pod_index % model.node_count
            host = 2 + pod_index // model.node_count
            ip = POD_CIDR.network_address + node * 256 + host
            pod_index += 1
            name = f"{replica_set}-{_hash_suffix(rng, 5, 'bcdfghjklmnpqrstvwxz2456789')}"
            labels = {**app.labels, "pod-template-hash": template_hash}
            documents.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": app.namespace,
                        "labels": labels,
                        "generateName": f"{replica_set}-",
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": replica_set,
                                "uid": f"{template_hash}-{app.namespace}",
                                "controller": True,
                            }
                        ],
                    },
                    "spec": {
                        "serviceAccountName": app.service_account,
                        "nodeName": f"node-{node:03d}",
                        "containers": [
                            {
                                "name": app.name,
                                "image": f"registry.example.com/{app.name}:{app.version}",
                                "ports": [
                                    {
                                        "name": port.name,
                                        "containerPort": port.port,
                                        "protocol": port.protocol,
                                    }
                                    for port in app.ports
                                ],
                            }
                        ],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": str(ip),
                        "podIPs": [{"ip": str(ip)}],
                    },
                }
            )
    return documents


# --------------------------------------------------------------------------------------------
# Calico selectors


def _quote(value: str) -> str:
    return f"'{value}'"


def _set(values: Sequence[str]) -> str:
    return "{" + ", ".join(_quote(v) for v in values) + "}"


class _Vocabulary:
    """Label values that exist in the model, so generated selectors select something."""

    def __init__(self, model: _Model, rng: random.Random) -> None:
        self.model = model
        self.rng = rng
        self.app_names = sorted({a.name for a in model.apps}) or ["api"]
        self.roles = sorted({a.role for a in model.apps}) or ["backend"]
        self.teams = sorted({ns.labels["team"] for ns in model.namespaces if "team" in ns.labels})
        self.envs = sorted({ns.labels["env"] for ns in model.namespaces if "env" in ns.labels})
        self.port_names = sorted({p.name for a in model.apps for p in a.ports}) or ["http"]

    def app(self, namespace: str | None = None) -> _App | None:
        candidates = [a for a in self.model.apps if namespace is None or a.namespace == namespace]
        return self.rng.choice(candidates) if candidates else None

    def pod_term(self) -> str:
        rng = self.rng
        choice = rng.randrange(10)
        if choice == 0:
            return f"app == {_quote(rng.choice(self.app_names))}"
        if choice == 1:
            return f"tier in {_set(rng.sample(self.roles, min(len(self.roles), 2)))}"
        if choice == 2:
            return f"tier == {_quote(rng.choice(self.roles))}"
        if choice == 3:
            return "has(canary)"
        if choice == 4:
            return "!has(canary)"
        if choice == 5:
            return f"version != {_quote(rng.choice(('v1', 'v2', 'v3')))}"
        if choice == 6:
            return f"tier not in {_set(rng.sample(self.roles, 1))}"
        if choice == 7:
            return f"app in {_set(rng.sample(self.app_names, min(len(self.app_names), 3)))}"
        if choice == 8:
            return f"has(app) && version == {_quote(rng.choice(('v1', 'v2')))}"
        return f"app.kubernetes.io/name == {_quote(rng.choice(self.app_names))}"

    def pod_selector(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            return self.pod_term()
        if roll < 0.75:
            return f"{self.pod_term()} && {self.pod_term()}"
        if roll < 0.85:
            return f"({self.pod_term()}) || ({self.pod_term()})"
        if roll < 0.92:
            return f"!({self.pod_term()})"
        return "all()"

    def namespace_selector(self, *, allow_global: bool) -> str:
        rng = self.rng
        options = []
        if self.envs:
            options.append(f"env == {_quote(rng.choice(self.envs))}")
            options.append(f"env in {_set(rng.sample(self.envs, min(2, len(self.envs))))}")
        if self.teams:
            options.append(f"team == {_quote(rng.choice(self.teams))}")
            options.append(f"team not in {_set(rng.sample(self.teams, 1))}")
        options.append("has(compliance)")
        options.append("!has(istio-injection)")
        ns = rng.choice(self.model.namespaces).name
        options.append(f"{NAMESPACE_NAME_LABEL} == {_quote(ns)}")
        options.append(f"projectcalico.org/name == {_quote(ns)}")
        options.append("all()")
        if allow_global:
            options.append("global()")
        return rng.choice(options)

    def network_set_selector(self) -> str:
        if not self.model.network_set_labels:
            return "role == 'external-api'"
        labels = self.rng.choice(self.model.network_set_labels)
        key = self.rng.choice(sorted(labels))
        return f"{key} == {_quote(labels[key])}"


# --------------------------------------------------------------------------------------------
# Network sets


def _network_sets(model: _Model, count: int, rng: random.Random) -> list[Document]:
    documents: list[Document] = []
    for index in range(count):
        kind = rng.random()
        nets: list[str]
        if kind < 0.3:
            labels = {"feed": "blocklist", "source": rng.choice(("abuse-ch", "spamhaus"))}
            nets = rng.sample(_THREAT_RANGES, rng.randint(1, 3))
        elif kind < 0.6:
            labels = {"role": "external-api", "vendor": rng.choice(("stripe", "twilio", "s3"))}
            nets = rng.sample(_EXTERNAL_RANGES, rng.randint(1, 2))
        elif kind < 0.8:
            # Overlaps the pod network: a selector on this set also matches those pods' IPs.
            labels = {"role": "legacy-nodes"}
            node = rng.randrange(model.node_count)
            nets = [f"10.244.{node}.0/25"]
        else:
            labels = {"role": "partners", "tier": "external"}
            nets = [f"100.{rng.randrange(64, 128)}.{rng.randrange(256)}.0/24", "192.0.2.17"]
        model.network_set_labels.append(labels)
        if rng.random() < 0.5 or len(model.namespaces) == 0:
            documents.append(
                {
                    "apiVersion": CALICO_API,
                    "kind": "GlobalNetworkSet",
                    "metadata": {
                        "name": f"{next(iter(labels.values()))}-{index}",
                        "labels": labels,
                    },
                    "spec": {"nets": nets},
                }
            )
        else:
            namespace = rng.choice(model.namespaces).name
            documents.append(
                {
                    "apiVersion": CALICO_API,
                    "kind": "NetworkSet",
                    "metadata": {
                        "name": f"{next(iter(labels.values()))}-{index}",
                        "namespace": namespace,
                        "labels": labels,
                    },
                    "spec": {"nets": nets},
                }
            )
    return documents


# --------------------------------------------------------------------------------------------
# Calico rules and policies


class _CalicoWriter:
    def __init__(self, model: _Model, vocab: _Vocabulary, rng: random.Random) -> None:
        self.model = model
        self.vocab = vocab
        self.rng = rng

    def ports(self, protocol: str | None) -> list[int | str]:
        rng = self.rng
        if protocol is None:
            return rng.sample(self.vocab.port_names, min(len(self.vocab.port_names), 2))
        if protocol == "UDP":
            options: list[list[int | str]] = [[53], [514], ["5000:5100"], ["dns"], [53, "syslog"]]
        else:
            options = [
                [8080],
                [80, 443],
                ["8000:8999"],
                ["http"],
                ["metrics"],
                [9090, "http"],
                [5432, 6379, 3306],
                ["1024:65535"],
                ["grpc", 50051],
            ]
        return rng.choice(options)

    def entity(self, scope_namespace: str | None, *, peer: bool) -> dict[str, Any]:
        """An EntityRule. ``peer``: the side that names the other party (source of ingress,
        destination of egress); the local side gets at most ports."""
        rng = self.rng
        entity: dict[str, Any] = {}
        if not peer:
            return entity
        roll = rng.random()
        if roll < 0.30:
            entity["selector"] = self.vocab.pod_selector()
        elif roll < 0.42:
            entity["namespaceSelector"] = self.vocab.namespace_selector(allow_global=True)
            if rng.random() < 0.6:
                entity["selector"] = self.vocab.pod_selector()
        elif roll < 0.50:
            entity["notSelector"] = self.vocab.pod_term()
            if rng.random() < 0.4:
                entity["selector"] = self.vocab.pod_term()
        elif roll < 0.58:
            accounts: dict[str, Any] = {}
            if rng.random() < 0.6:
                names = rng.sample(self.vocab.app_names, min(2, len(self.vocab.app_names)))
                accounts["names"] = names
            if not accounts or rng.random() < 0.3:
                accounts["selector"] = rng.choice(
                    (f"role == {_quote(rng.choice(self.vocab.roles))}", "has(team)", "all()")
                )
            entity["serviceAccounts"] = accounts
        elif roll < 0.68:
            entity["selector"] = self.vocab.network_set_selector()
            if scope_namespace is not None and rng.random() < 0.5:
                entity["namespaceSelector"] = rng.choice(("global()", "all()"))
        elif roll < 0.78:
            entity["nets"] = rng.sample(
                [*_EXTERNAL_RANGES, *_THREAT_RANGES, "10.244.0.0/16", "10.244.1.0/24"],
                rng.randint(1, 2),
            )
            if rng.random() < 0.3:
                entity["notNets"] = ["10.244.1.128/25"]
        elif roll < 0.83:
            entity["notNets"] = rng.sample([*_PRIVATE_RANGES, "10.244.2.0/24"], 1)
        # else: any peer
        return entity

    def rule(self, scope_namespace: str | None, direction: str) -> dict[str, Any]:
        rng = self.rng
        action = rng.choices(("Allow", "Deny", "Pass", "Log"), (55, 20, 15, 10))[0]
        protocol = rng.choices(("TCP", "UDP", None, "ICMP", "SCTP"), (50, 15, 28, 4, 3))[0]
        rule: dict[str, Any] = {"action": action}
        if protocol is not None:
            rule["protocol"] = protocol
            if rng.random() < 0.05 and protocol in ("TCP", "UDP"):
                rule["ipVersion"] = 4
        elif rng.random() < 0.1:
            rule["notProtocol"] = "UDP"
        if protocol == "ICMP":
            rule["icmp"] = {"type": 8}
        source = self.entity(scope_namespace, peer=direction == "ingress")
        destination = self.entity(scope_namespace, peer=direction == "egress")
        ports_allowed = protocol in ("TCP", "UDP", "SCTP", None)
        if ports_allowed and rng.random() < 0.6:
            if protocol == "SCTP":
                destination["ports"] = [2905]
            else:
                destination["ports"] = self.ports(protocol)
        if ports_allowed and protocol is not None and rng.random() < 0.12:
            destination["notPorts"] = rng.choice(([22], ["9000:9100"], [443]))
        elif protocol is None and rng.random() < 0.08:
            destination["notPorts"] = ["metrics"]
        if source:
            rule["source"] = source
        if destination:
            rule["destination"] = destination
        return rule

    def policy(
        self,
        kind: str,
        name: str,
        tier: str | None,
        namespace: str | None,
    ) -> Document:
        rng = self.rng
        spec: dict[str, Any] = {}
        if tier is not None:
            spec["tier"] = tier
        roll = rng.random()
        if roll < 0.85:
            spec["order"] = rng.choice((10, 50, 100, 100, 200, 250, 500, 1000)) + rng.choice(
                (0, 0, 0, 0.5)
            )
        spec["selector"] = self.vocab.pod_selector()
        if namespace is None:
            if rng.random() < 0.4:
                spec["namespaceSelector"] = self.vocab.namespace_selector(allow_global=False)
            if rng.random() < 0.1:
                spec["serviceAccountSelector"] = f"role == {_quote(rng.choice(self.vocab.roles))}"
        elif rng.random() < 0.1:
            spec["serviceAccountSelector"] = "has(team)"
        types = rng.choice(_TYPE_CHOICES)
        directions = types if types is not None else ["Ingress", "Egress"]
        for direction in directions:
            key = direction.lower()
            count = rng.choices((0, 1, 2, 3, 4), (8, 35, 30, 17, 10))[0]
            if types is None and key == "egress" and rng.random() < 0.5:
                count = 0
            if count or types is not None:
                spec[key] = [self.rule(namespace, key) for _ in range(count)]
        if types is not None:
            spec["types"] = types
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        document: Document = {
            "apiVersion": CALICO_API,
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        }
        if kind.startswith("Staged") and rng.random() < 0.2:
            document["spec"] = {"stagedAction": "Delete", **({"tier": tier} if tier else {})}
        return document


def _tiers(count: int, rng: random.Random) -> list[Document]:
    names = ("security", "platform", "application", "compliance", "tenants", "sre", "edge")
    documents: list[Document] = []
    for index in range(count):
        name = names[index] if index < len(names) else f"tier-{index}"
        # Alternate Deny and Pass defaults, starting from Deny; jitter the order a little, and
        # now and then leave it out (such a tier sorts after every ordered one, by name).
        default = "Pass" if index % 2 == 1 or (index >= 2 and rng.random() < 0.3) else "Deny"
        spec: dict[str, Any] = {"defaultAction": default}
        if index == 0 or rng.random() < 0.85:
            spec["order"] = 100 * (index + 1) + rng.choice((0, 0, 5))
        documents.append(
            {
                "apiVersion": CALICO_API,
                "kind": "Tier",
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    return documents


# --------------------------------------------------------------------------------------------
# Kubernetes NetworkPolicies


class _KubernetesWriter:
    def __init__(self, model: _Model, vocab: _Vocabulary, rng: random.Random) -> None:
        self.model = model
        self.vocab = vocab
        self.rng = rng

    def pod_selector(self, namespace: str) -> dict[str, Any]:
        rng = self.rng
        app = self.vocab.app(namespace) or self.vocab.app()
        roll = rng.random()
        if roll < 0.15 or app is None:
            return {}
        if roll < 0.55:
            return {"matchLabels": {"app": app.name}}
        if roll < 0.7:
            return {"matchLabels": {"tier": app.role}}
        if roll < 0.8:
            return {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": sorted({app.role, "frontend"})}
                ]
            }
        if roll < 0.87:
            return {
                "matchLabels": {"app": app.name},
                "matchExpressions": [
                    {"key": "version", "operator": "NotIn", "values": ["v1"]},
                ],
            }
        if roll < 0.94:
            return {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}
        return {"matchExpressions": [{"key": "canary", "operator": "Exists"}]}

    def namespace_selector(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        namespace = rng.choice(self.model.namespaces)
        if roll < 0.15:
            return {}
        if roll < 0.45:
            return {"matchLabels": {NAMESPACE_NAME_LABEL: namespace.name}}
        if roll < 0.6 and self.vocab.envs:
            return {"matchLabels": {"env": rng.choice(self.vocab.envs)}}
        if roll < 0.75 and self.vocab.teams:
            teams = rng.sample(self.vocab.teams, min(2, len(self.vocab.teams)))
            return {"matchExpressions": [{"key": "team", "operator": "In", "values": teams}]}
        if roll < 0.85:
            return {"matchExpressions": [{"key": "compliance", "operator": "Exists"}]}
        return {
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
        }

    def peer(self, namespace: str) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return {"podSelector": self.pod_selector(namespace)}
        if roll < 0.55:
            return {"namespaceSelector": self.namespace_selector()}
        if roll < 0.8:
            other = rng.choice(self.model.namespaces).name
            return {
                "namespaceSelector": self.namespace_selector(),
                "podSelector": self.pod_selector(other),
            }
        block: dict[str, Any]
        block_roll = rng.random()
        if block_roll < 0.4:
            block = {"cidr": "0.0.0.0/0", "except": list(_PRIVATE_RANGES)}
        elif block_roll < 0.6:
            block = {"cidr": rng.choice(_EXTERNAL_RANGES)}
        elif block_roll < 0.8:
            node = rng.randrange(self.model.node_count)
            block = {"cidr": f"10.244.{node}.0/24", "except": [f"10.244.{node}.0/28"]}
        else:
            block = {"cidr": "0.0.0.0/0"}
        return {"ipBlock": block}

    def ports(self) -> list[dict[str, Any]]:
        rng = self.rng
        options: list[list[dict[str, Any]]] = [
            [{"protocol": "TCP", "port": 8080}],
            [{"port": "http"}],
            [{"protocol": "TCP", "port": "metrics"}],
            [{"protocol": "TCP", "port": 8000, "endPort": 8999}],
            [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            [{"protocol": "UDP", "port": "syslog"}],
            [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 6379}],
            [{"protocol": "TCP", "port": "grpc"}, {"protocol": "TCP", "port": 9090}],
            [{"protocol": "UDP"}],
            [{"protocol": "SCTP", "port": 2905}],
            [{"protocol": "TCP", "port": 30000, "endPort": 32767}],
        ]
        return rng.choice(options)

    def rule(self, namespace: str, direction: str) -> dict[str, Any]:
        rng = self.rng
        rule: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.08:
            return rule  # allow everything in this direction
        if roll < 0.85:
            key = "from" if direction == "ingress" else "to"
            rule[key] = [self.peer(namespace) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        if rng.random() < 0.65:
            rule["ports"] = self.ports()
        return rule

    def policy(self, name: str, namespace: str, *, staged: bool = False) -> Document:
        rng = self.rng
        pattern = rng.random()
        spec: dict[str, Any] = {"podSelector": self.pod_selector(namespace)}
        if pattern < 0.12:
            # default deny (ingress, or ingress and egress)
            spec["podSelector"] = {}
            types = rng.choice((["Ingress"], ["Ingress", "Egress"]))
            spec["policyTypes"] = types
        elif pattern < 0.22:
            # DNS egress to kube-dns
            spec["policyTypes"] = ["Egress"]
            spec["egress"] = [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"app": "coredns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ]
        elif pattern < 0.3:
            # metrics scraping from the monitoring namespace
            spec["policyTypes"] = ["Ingress"]
            spec["ingress"] = [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: "monitoring"}
                            },
                            "podSelector": {"matchLabels": {"app": "prometheus"}},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": "metrics"}],
                }
            ]
        else:
            chosen = rng.choice(_TYPE_CHOICES)
            directions = chosen if chosen is not None else ["Ingress"]
            if chosen is None and rng.random() < 0.4:
                directions = ["Ingress", "Egress"]
            for direction in directions:
                key = direction.lower()
                count = rng.choices((0, 1, 2, 3), (10, 50, 28, 12))[0]
                if chosen is None and count == 0:
                    continue  # no `egress: []` without policyTypes (its defaulting is subtle)
                spec[key] = [self.rule(namespace, key) for _ in range(count)]
            if chosen is not None:
                spec["policyTypes"] = chosen
        return {
            "apiVersion": CALICO_API if staged else K8S_NETPOL_API,
            "kind": "StagedKubernetesNetworkPolicy" if staged else "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }


class _RealisticKubernetesWriter:
    """Kubernetes NetworkPolicies as production clusters write them (``realistic=True``).

    Where :class:`_KubernetesWriter` draws each policy as one small pattern (mostly one rule,
    one peer, one port), real clusters mostly hold per-application policies that lock a
    workload down in both directions at once (``policyTypes: [Ingress, Egress]``), each with
    several rules: ingress from the callers (same-namespace tiers, other teams' namespaces by
    ``namespaceSelector`` + ``podSelector``, the monitoring namespace on the named metrics port,
    the load balancer's ``ipBlock``), egress to DNS in kube-system (UDP and TCP 53), to the
    databases and caches (numeric ports), to internal services (named ports, ``endPort``
    ranges), to log collectors (UDP), to signalling (SCTP) and to the internet (``ipBlock``
    ``0.0.0.0/0`` except the private ranges, on 443). Selectors mix ``matchLabels`` with
    ``In``/``NotIn``/``Exists``/``DoesNotExist`` expressions. Next to those: per-namespace
    default-deny and allow-DNS policies and a few namespace-wide allowances.

    Proportions, per policy: ~12% default deny (half of them both directions), ~8% namespace-wide
    DNS egress, ~5% namespace-wide ingress (from the same namespace or an ingress controller
    range), ~75% per-application with 1–4 ingress and 1–5 egress rules (about two thirds of
    them both directions). ``policyTypes`` is written ``[Ingress, Egress]`` when both are
    listed (the order ``kubectl`` examples use).
    """

    def __init__(self, model: _Model, vocab: _Vocabulary, rng: random.Random) -> None:
        self.model = model
        self.vocab = vocab
        self.rng = rng

    # Selectors -------------------------------------------------------------------------

    def app_selector(self, app: _App) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return {"matchLabels": {"app": app.name}}
        if roll < 0.65:
            return {"matchLabels": {"app.kubernetes.io/name": app.name, "tier": app.role}}
        if roll < 0.8:
            return {
                "matchLabels": {"app": app.name},
                "matchExpressions": [
                    {"key": "version", "operator": "In", "values": sorted({app.version, "v2"})}
                ],
            }
        if roll < 0.9:
            return {
                "matchLabels": {"app": app.name},
                "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
            }
        return {
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": [app.name]},
                {"key": "version", "operator": "NotIn", "values": ["v0"]},
            ]
        }

    def role_selector(self, roles: Sequence[str]) -> dict[str, Any]:
        rng = self.rng
        if len(roles) == 1 and rng.random() < 0.6:
            return {"matchLabels": {"tier": roles[0]}}
        expression: dict[str, Any] = {"key": "tier", "operator": "In", "values": sorted(roles)}
        if rng.random() < 0.25:
            return {"matchExpressions": [expression, {"key": "app", "operator": "Exists"}]}
        return {"matchExpressions": [expression]}

    def namespace_selector(self, namespace: _Namespace) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        team = namespace.labels.get("team")
        env = namespace.labels.get("env")
        if roll < 0.45 or team is None:
            return {"matchLabels": {NAMESPACE_NAME_LABEL: namespace.name}}
        if roll < 0.65:
            return {"matchLabels": {"team": team}}
        if roll < 0.8 and env is not None:
            return {"matchLabels": {"team": team, "env": env}}
        if roll < 0.9:
            others = [t for t in self.vocab.teams if t != team]
            values = sorted({team, *rng.sample(others, min(1, len(others)))})
            return {"matchExpressions": [{"key": "team", "operator": "In", "values": values}]}
        return {
            "matchLabels": {"team": team},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
        }

    # Ports -----------------------------------------------------------------------------

    def port_entry(self, spec: _PortSpec) -> dict[str, Any]:
        """A port a workload serves, named (as in its container spec) or numeric."""
        rng = self.rng
        entry: dict[str, Any] = {}
        if spec.protocol != "TCP" or rng.random() < 0.7:
            entry["protocol"] = spec.protocol
        entry["port"] = spec.name if rng.random() < 0.45 else spec.port
        return entry

    def serving_ports(self, app: _App) -> list[dict[str, Any]]:
        served = [p for p in app.ports if p.name != "metrics"] or list(app.ports)
        return [self.port_entry(p) for p in served]

    # Rules -----------------------------------------------------------------------------

    def _callers(self, app: _App) -> list[_App]:
        wanted = {
            "frontend": ("frontend",),
            "backend": ("frontend", "backend", "worker"),
            "db": ("backend", "worker"),
            "cache": ("backend", "frontend", "worker"),
            "worker": ("backend",),
            "collector": ("frontend", "backend", "db", "cache", "worker"),
            "signalling": ("backend", "frontend"),
        }.get(app.role, ("backend",))
        return [a for a in self.model.apps if a.role in wanted and a is not app]

    def _callees(self, app: _App) -> list[_App]:
        wanted = {
            "frontend": ("backend", "cache"),
            "backend": ("backend", "db", "cache", "collector", "signalling"),
            "db": ("collector",),
            "cache": ("collector",),
            "worker": ("backend", "db", "cache", "collector"),
            "collector": (),
            "signalling": ("backend", "collector"),
        }.get(app.role, ("backend",))
        return [a for a in self.model.apps if a.role in wanted and a is not app]

    def ingress_rules(self, app: _App) -> list[dict[str, Any]]:
        rng = self.rng
        rules: list[dict[str, Any]] = []
        callers = self._callers(app)
        local = [a for a in callers if a.namespace == app.namespace]
        remote = [a for a in callers if a.namespace != app.namespace]
        count = rng.choices((1, 2, 3, 4), (25, 35, 25, 15))[0]
        if app.role == "frontend" and rng.random() < 0.6:
            # From the ingress controller / load balancer subnet, and the internet.
            rules.append(
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}},
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(_PRIVATE_RANGES)}},
                    ],
                    "ports": self.serving_ports(app),
                }
            )
        while len(rules) < count:
            roll = rng.random()
            if roll < 0.4 and local:
                roles = sorted({a.role for a in rng.sample(local, min(len(local), 2))})
                peers: list[dict[str, Any]] = [{"podSelector": self.role_selector(roles)}]
                if rng.random() < 0.3:
                    peers.append({"podSelector": self.app_selector(rng.choice(local))})
                rules.append({"from": peers, "ports": self.serving_ports(app)})
            elif roll < 0.7 and remote:
                caller = rng.choice(remote)
                peer = {
                    "namespaceSelector": self.namespace_selector(
                        self.model.namespace(caller.namespace)
                    ),
                    "podSelector": self.app_selector(caller)
                    if rng.random() < 0.7
                    else self.role_selector([caller.role]),
                }
                rule: dict[str, Any] = {"from": [peer]}
                if rng.random() < 0.9:
                    rule["ports"] = self.serving_ports(app)
                rules.append(rule)
            elif roll < 0.85:
                # Metrics scraping from the monitoring namespace, by the named port.
                rules.append(
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {NAMESPACE_NAME_LABEL: "monitoring"}
                                },
                                "podSelector": {"matchLabels": {"app": "prometheus"}},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": "metrics"}],
                    }
                )
            elif roll < 0.93:
                # Any pod of the namespaces of a team or environment, on a port range.
                rules.append(
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "env",
                                            "operator": "In",
                                            "values": ["prod", "staging"],
                                        }
                                    ]
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8999}],
                    }
                )
            else:
                # Health checks from the node network, often written as all of 10/8 (which
                # holds the pod network too).
                block: dict[str, Any] = {"cidr": "10.0.0.0/8"}
                if rng.random() < 0.5:
                    block["except"] = ["10.244.0.0/16"]
                rules.append(
                    {
                        "from": [{"ipBlock": block}],
                        "ports": [{"protocol": "TCP", "port": app.ports[0].port}],
                    }
                )
        return rules

    def dns_rule(self) -> dict[str, Any]:
        rng = self.rng
        peer: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}}
        }
        if rng.random() < 0.7:
            peer["podSelector"] = {"matchLabels": {"app": "coredns"}}
        return {
            "to": [peer],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }

    def egress_rules(self, app: _App) -> list[dict[str, Any]]:
        rng = self.rng
        rules: list[dict[str, Any]] = []
        if rng.random() < 0.85:
            rules.append(self.dns_rule())
        callees = self._callees(app)
        count = len(rules) + rng.choices((0, 1, 2, 3, 4), (10, 30, 30, 20, 10))[0]
        while len(rules) < count:
            roll = rng.random()
            if roll < 0.5 and callees:
                callee = rng.choice(callees)
                peer: dict[str, Any] = {"podSelector": self.app_selector(callee)}
                if callee.namespace != app.namespace or rng.random() < 0.2:
                    peer["namespaceSelector"] = self.namespace_selector(
                        self.model.namespace(callee.namespace)
                    )
                rules.append({"to": [peer], "ports": self.serving_ports(callee)})
            elif roll < 0.65:
                rules.append(
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(_PRIVATE_RANGES)}}],
                        "ports": [{"protocol": "TCP", "port": 443}],
                    }
                )
            elif roll < 0.75:
                cidrs = rng.sample(_EXTERNAL_RANGES, rng.randint(1, 2))
                rules.append(
                    {
                        "to": [{"ipBlock": {"cidr": c}} for c in cidrs],
                        "ports": [
                            {"protocol": "TCP", "port": 443},
                            {"protocol": "TCP", "port": 8443},
                        ],
                    }
                )
            elif roll < 0.85:
                # Logs to the collectors: syslog over UDP, forward over TCP.
                peer = {
                    "podSelector": {
                        "matchExpressions": [
                            {"key": "tier", "operator": "In", "values": ["collector"]}
                        ]
                    }
                }
                if rng.random() < 0.6:
                    peer["namespaceSelector"] = {}
                ports: list[dict[str, Any]] = [{"protocol": "UDP", "port": 514}]
                if rng.random() < 0.5:
                    ports.append({"protocol": "TCP", "port": rng.choice((24224, "forward"))})
                rules.append({"to": [peer], "ports": ports})
            elif roll < 0.92:
                # Internal services on a range (node ports, an app's port block).
                low, high = rng.choice(((30000, 32767), (8000, 8999), (50000, 50100)))
                rules.append(
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "env", "operator": "NotIn", "values": ["dev"]}
                                    ]
                                },
                                "podSelector": {
                                    "matchExpressions": [{"key": "app", "operator": "Exists"}]
                                },
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": low, "endPort": high}],
                    }
                )
            else:
                # Signalling over SCTP.
                rules.append(
                    {
                        "to": [{"podSelector": {"matchLabels": {"tier": "signalling"}}}],
                        "ports": [
                            {"protocol": "SCTP", "port": 2905},
                            {"protocol": "UDP", "port": "sip"},
                        ],
                    }
                )
        return rules

    # Policies --------------------------------------------------------------------------

    def policy(self, name: str, namespace: _Namespace) -> Document:
        rng = self.rng
        pattern = rng.random()
        spec: dict[str, Any]
        if pattern < 0.12 or not namespace.apps:
            types = rng.choice((["Ingress"], ["Ingress", "Egress"]))
            spec = {"podSelector": {}, "policyTypes": types}
        elif pattern < 0.2:
            spec = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [self.dns_rule()]}
        elif pattern < 0.25:
            peers: list[dict[str, Any]] = [{"podSelector": {}}]
            if rng.random() < 0.5:
                peers.append({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}})
            spec = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": peers}]}
        else:
            app = rng.choice(namespace.apps)
            spec = {"podSelector": self.app_selector(app)}
            roll = rng.random()
            types = (
                ["Ingress", "Egress"] if roll < 0.65 else ["Ingress"] if roll < 0.9 else ["Egress"]
            )
            if "Ingress" in types:
                spec["ingress"] = self.ingress_rules(app)
            if "Egress" in types:
                spec["egress"] = self.egress_rules(app)
            spec["policyTypes"] = types
        return {
            "apiVersion": K8S_NETPOL_API,
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace.name},
            "spec": spec,
        }


# --------------------------------------------------------------------------------------------
# Entry points


def generate_cluster(
    *,
    namespaces: int,
    pods: int,
    policies: int,
    tiers: int,
    seed: int,
    kubernetes_only: bool = False,
    realistic: bool = False,
) -> list[dict[str, Any]]:
    """A realistic synthetic cluster as resource documents (Namespace, ServiceAccount, Pod,
    policies and, unless ``kubernetes_only``, Tier, NetworkSet and GlobalNetworkSet).

    ``tiers`` Tier resources are created (ignored when ``kubernetes_only``); Calico policies are
    spread over them and the ``default`` tier. Deterministic in all arguments.

    ``realistic`` (only with ``kubernetes_only``) writes the NetworkPolicies as production
    clusters do (:class:`_RealisticKubernetesWriter`: per-application policies in both
    directions with several rules each, DNS egress, ipBlock with except, named and numeric
    ports, ranges, UDP and SCTP) instead of one small pattern per policy. The topology (the
    Namespace, ServiceAccount and Pod documents) is the same for both; the default output is
    unchanged.
    """
    if policies < 0 or tiers < 0:
        raise ValueError("policies and tiers must not be negative")
    if realistic and not kubernetes_only:
        raise ValueError("realistic policies are Kubernetes NetworkPolicies: pass kubernetes_only")
    rng = random.Random(seed)
    model = _build_model(namespaces, pods, rng)
    documents = _topology_documents(model, rng)
    vocab = _Vocabulary(model, rng)
    kubernetes = _KubernetesWriter(model, vocab, rng)
    workload_namespaces = [
        ns.name for ns in model.namespaces if ns.name not in ("kube-system", "monitoring")
    ] or [ns.name for ns in model.namespaces]
    if kubernetes_only and realistic:
        writer = _RealisticKubernetesWriter(model, vocab, rng)
        for index in range(policies):
            target = rng.choice(workload_namespaces)
            documents.append(writer.policy(f"netpol-{index:04d}", model.namespace(target)))
        return documents
    if kubernetes_only:
        for index in range(policies):
            target = rng.choice(workload_namespaces)
            documents.append(kubernetes.policy(f"netpol-{index:04d}", target))
        return documents

    tier_documents = _tiers(tiers, rng)
    documents.extend(tier_documents)
    tier_names: list[str | None] = [t["metadata"]["name"] for t in tier_documents]
    set_count = max(1, policies // 15) if policies else 0
    documents.extend(_network_sets(model, set_count, rng))
    vocab = _Vocabulary(model, rng)  # now with the network-set labels
    calico = _CalicoWriter(model, vocab, rng)
    kinds = (
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "KubernetesNetworkPolicy",
        "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
    )
    weights = (45, 25, 15, 5, 5, 5)
    tier_choices: list[str | None] = [*tier_names, None]
    verbs = ("allow", "deny", "isolate", "guard", "audit")
    # (kind, namespace, name, tier) of enforced policies, so that some staged policies preview
    # an update or a deletion of one of them (same kind family, namespace and name).
    enforced: dict[str, list[tuple[str | None, str, str | None]]] = {}
    for index in range(policies):
        kind = rng.choices(kinds, weights)[0]
        namespace: str | None = rng.choice(workload_namespaces)
        name = f"{rng.choice(vocab.app_names)}-{rng.choice(verbs)}-{index:04d}"
        tier = rng.choice(tier_choices)
        twin = kind.removeprefix("Staged")
        if kind != twin and enforced.get(twin) and rng.random() < 0.5:
            # Each enforced policy gets at most one staged twin: names stay unique per kind.
            candidates = enforced[twin]
            namespace, name, tier = candidates.pop(rng.randrange(len(candidates)))
        if "Global" in kind:
            namespace = None
        if kind == "KubernetesNetworkPolicy":
            assert namespace is not None
            documents.append(kubernetes.policy(name, namespace))
        elif kind == "StagedKubernetesNetworkPolicy":
            assert namespace is not None
            documents.append(kubernetes.policy(name, namespace, staged=True))
        else:
            documents.append(calico.policy(kind, name, tier, namespace))
        if kind == twin:
            enforced.setdefault(kind, []).append((namespace, name, tier))
    return documents


@dataclass(frozen=True, slots=True)
class _PodTable:
    ips: npt.NDArray[np.uint32]
    port_offsets: npt.NDArray[np.int64]
    port_counts: npt.NDArray[np.int64]
    port_numbers: npt.NDArray[np.uint16]
    port_protocols: npt.NDArray[np.uint8]
    external: npt.NDArray[np.uint32]


_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _pod_table(documents: Sequence[Mapping[str, Any]]) -> _PodTable:
    ips: list[int] = []
    offsets: list[int] = []
    counts: list[int] = []
    numbers: list[int] = []
    protocols: list[int] = []
    external: list[int] = [int(ipaddress.IPv4Address(a)) for a in ("8.8.8.8", "1.1.1.1")]
    for doc in documents:
        kind = doc.get("kind")
        if kind in ("NetworkSet", "GlobalNetworkSet"):
            for net_text in (doc.get("spec") or {}).get("nets") or ():
                net = ipaddress.ip_network(str(net_text), strict=False)
                if net.version == 4 and not net.subnet_of(POD_CIDR):
                    external.append(int(net.network_address) + min(net.num_addresses - 1, 7))
            continue
        if kind != "Pod":
            continue
        status = doc.get("status") or {}
        ip_text = status.get("podIP")
        if not ip_text:
            continue
        address = ipaddress.ip_address(str(ip_text))
        if address.version != 4:
            continue
        ips.append(int(address))
        offsets.append(len(numbers))
        count = 0
        for container in (doc.get("spec") or {}).get("containers") or ():
            for port in container.get("ports") or ():
                protocol = _PROTOCOL_NUMBERS.get(str(port.get("protocol") or "TCP"))
                if protocol is None:
                    continue
                numbers.append(int(port["containerPort"]))
                protocols.append(protocol)
                count += 1
        counts.append(count)
    return _PodTable(
        ips=np.array(ips, dtype=np.uint32),
        port_offsets=np.array(offsets, dtype=np.int64),
        port_counts=np.array(counts, dtype=np.int64),
        port_numbers=np.array(numbers, dtype=np.uint16),
        port_protocols=np.array(protocols, dtype=np.uint8),
        external=np.array(external, dtype=np.uint32),
    )


_COMMON_PORTS = np.array([80, 443, 22, 8080, 3306, 5432, 6379, 9090, 53, 8443], dtype=np.uint16)


def flows_from_cluster(documents: Sequence[Mapping[str, Any]], n: int, seed: int) -> FlowBatch:
    """``n`` IPv4 flows drawn from the cluster's pods, vectorised (10M flows in about a second).

    - Sources are uniform over pods; destinations follow a skewed popularity (some services
      are much busier than others).
    - 85% go to a port the destination pod declares, with its protocol; the rest go to a common
      port or a random one (TCP 80%, UDP 20%), which is what scans and misconfigurations look
      like.
    - 3% go to an external address (the network sets' ranges, public resolvers) on 443/TCP or
      53/UDP; 2% come from an external address.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    table = _pod_table(documents)
    count = len(table.ips)
    if count == 0:
        raise ValueError("the cluster has no pods with an IPv4 address")
    rng = np.random.default_rng(seed)
    src = rng.integers(0, count, size=n)
    popularity = 1.0 / np.power(np.arange(1, count + 1, dtype=np.float64), 0.8)
    popularity = popularity[rng.permutation(count)]
    cumulative = np.cumsum(popularity)
    cumulative /= cumulative[-1]
    # Sample through a quantised lookup table (one gather per flow, not a binary search). The
    # smallest Zipf(0.8) share is about 0.2/pods, so with 64 slots per pod every pod still gets
    # a dozen slots or more.
    slots = max(1 << 16, 64 * count)
    lookup = np.searchsorted(cumulative, (np.arange(slots) + 0.5) / slots, side="right")
    np.minimum(lookup, count - 1, out=lookup)
    dst = lookup[rng.integers(0, slots, size=n)]

    src_ip = table.ips[src]
    dst_ip = table.ips[dst]
    protocol = np.full(n, 6, dtype=np.uint8)
    dst_port = np.empty(n, dtype=np.uint16)

    # Declared ports.
    counts = table.port_counts[dst]
    declared = (rng.random(n) < 0.85) & (counts > 0)
    pick = table.port_offsets[dst] + (rng.random(n) * np.maximum(counts, 1)).astype(np.int64)
    pick = np.where(declared, pick, 0)
    if len(table.port_numbers):
        dst_port[:] = table.port_numbers[np.minimum(pick, len(table.port_numbers) - 1)]
        protocol[declared] = table.port_protocols[pick[declared]]
    # Noise: a common port or any port.
    noise = ~declared
    noise_count = int(noise.sum())
    common = rng.random(noise_count) < 0.5
    noise_ports = np.where(
        common,
        _COMMON_PORTS[rng.integers(0, len(_COMMON_PORTS), size=noise_count)],
        rng.integers(1, 65536, size=noise_count).astype(np.uint16),
    )
    dst_port[noise] = noise_ports
    protocol[noise] = np.where(rng.random(noise_count) < 0.8, 6, 17).astype(np.uint8)

    # External peers.
    roll = rng.random(n)
    outbound = roll < 0.03
    inbound = (roll >= 0.03) & (roll < 0.05)
    out_count = int(outbound.sum())
    dst_ip[outbound] = table.external[rng.integers(0, len(table.external), size=out_count)]
    web = rng.random(out_count) < 0.7
    dst_port[outbound] = np.where(web, 443, 53).astype(np.uint16)
    protocol[outbound] = np.where(web, 6, 17).astype(np.uint8)
    in_count = int(inbound.sum())
    src_ip[inbound] = table.external[rng.integers(0, len(table.external), size=in_count)]
    return FlowBatch(src_ip=src_ip, dst_ip=dst_ip, protocol=protocol, dst_port=dst_port)


__all__ = ["flows_from_cluster", "generate_cluster"]
