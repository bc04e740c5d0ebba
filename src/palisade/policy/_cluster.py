"""A compiled snapshot of a cluster: endpoints, network sets, services, tiers, policies, profiles.

Built from resource documents (files or the datastore). Pods without an address get one from a
deterministic offline allocator, so ``palisade policy matrix`` works on plain manifests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._translate import (
    ADMIN_TIER,
    BASELINE_TIER,
    DEFAULT_TIER,
    K8S_NAMESPACE_NAME_LABEL,
    KUBE_ADMIN_TIER,
    KUBE_BASELINE_TIER,
    NAMESPACE_LABEL,
    TranslationError,
    compile_calico_policy,
    compile_cluster_policy,
    compile_k8s_policy,
    compile_memo,
    compile_profile,
    container_named_ports,
    effective_labels,
    namespace_profile_labels,
    parse_ip,
    parse_net,
    pod_own_labels,
    service_account_profile_labels,
)
from ._types import (
    Action,
    CompiledPolicy,
    CompiledProfile,
    CompiledRule,
    Endpoint,
    IPAddress,
    NamedPort,
    NetworkSetInfo,
    ServiceInfo,
    ServicePort,
    TierInfo,
    protocol_number,
)

BUILTIN_TIERS = {
    DEFAULT_TIER: TierInfo(DEFAULT_TIER, 1_000_000.0, Action.DENY),
    KUBE_ADMIN_TIER: TierInfo(KUBE_ADMIN_TIER, 1_000.0, Action.PASS),
    KUBE_BASELINE_TIER: TierInfo(KUBE_BASELINE_TIER, 10_000_000.0, Action.PASS),
    ADMIN_TIER: TierInfo(ADMIN_TIER, 1_000.0, Action.PASS),
    BASELINE_TIER: TierInfo(BASELINE_TIER, 10_000_000.0, Action.PASS),
}

DEFAULT_POD_CIDR = ipaddress.ip_network("10.244.0.0/16")

POLICY_KINDS = frozenset(
    {
        "NetworkPolicy",
        "GlobalNetworkPolicy",
        "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
    }
)
"""Document kinds the engine compiles into policies (Kubernetes NetworkPolicy is kind
``NetworkPolicy`` with a ``networking.k8s.io`` apiVersion)."""
_WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.get("metadata") or {}


def _spec(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.get("spec") or {}


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


@dataclass
class Cluster:
    tiers: dict[str, TierInfo] = field(default_factory=lambda: dict(BUILTIN_TIERS))
    policies: list[CompiledPolicy] = field(default_factory=list)
    profiles: dict[str, CompiledProfile] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    network_sets: list[NetworkSetInfo] = field(default_factory=list)
    services: list[ServiceInfo] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def pods(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.kind == "wep"]

    def endpoint(self, key: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.key == key:
                return endpoint
        return None

    def tier(self, name: str) -> TierInfo:
        # A policy naming a missing tier: sorted after every existing tier, default Deny (2.1).
        return self.tiers.get(name) or TierInfo(name, None, Action.DENY, exists=False)

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Mapping[str, Any]],
        *,
        pod_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network = DEFAULT_POD_CIDR,
    ) -> Cluster:
        return _Builder(list(documents), pod_cidr).build()


class _Builder:
    def __init__(
        self,
        documents: list[Mapping[str, Any]],
        pod_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network,
    ) -> None:
        self.documents = documents
        self.pod_cidr = pod_cidr
        self.cluster = Cluster()
        self.service_accounts: dict[tuple[str, str], dict[str, str]] = {}

    def _of_kind(self, *kinds: str) -> list[Mapping[str, Any]]:
        return [d for d in self.documents if d.get("kind") in kinds]

    def build(self) -> Cluster:
        with compile_memo():
            return self._build()

    def _build(self) -> Cluster:
        cluster = self.cluster
        for doc in self._of_kind("Namespace"):
            name = str(_meta(doc).get("name"))
            labels = _str_map(_meta(doc).get("labels"))
            labels.setdefault(K8S_NAMESPACE_NAME_LABEL, name)
            cluster.namespaces[name] = labels
        for doc in self._of_kind("ServiceAccount"):
            meta = _meta(doc)
            ns = str(meta.get("namespace") or "default")
            self.service_accounts[(ns, str(meta.get("name")))] = _str_map(meta.get("labels"))
        for doc in self._of_kind("Tier"):
            spec = _spec(doc)
            name = str(_meta(doc).get("name"))
            order = spec.get("order")
            default = Action.PASS if spec.get("defaultAction") == "Pass" else Action.DENY
            if name in (DEFAULT_TIER, KUBE_ADMIN_TIER, KUBE_BASELINE_TIER):
                continue  # built-in tiers have fixed settings
            cluster.tiers[name] = TierInfo(
                name, float(order) if order is not None else None, default
            )
        for doc in self._of_kind("Profile"):
            profile = compile_profile(doc)
            cluster.profiles[profile.name] = profile
        self._build_pods()
        self._build_host_endpoints()
        self._build_network_sets()
        self._build_services()
        self._build_policies()
        return cluster

    # -- namespaces and their profiles ------------------------------------------------------

    def _namespace(self, name: str) -> dict[str, str]:
        labels = self.cluster.namespaces.get(name)
        if labels is None:
            labels = {K8S_NAMESPACE_NAME_LABEL: name}
            self.cluster.namespaces[name] = labels
        profile_name = f"kns.{name}"
        if profile_name not in self.cluster.profiles:
            allow_all = (CompiledRule(index=0, action=Action.ALLOW),)
            self.cluster.profiles[profile_name] = CompiledProfile(
                profile_name,
                ingress=allow_all,
                egress=allow_all,
                labels_to_apply=tuple(namespace_profile_labels(name, labels)),
            )
        return labels

    def _service_account_profile(self, namespace: str, name: str) -> str:
        profile_name = f"ksa.{namespace}.{name}"
        if profile_name not in self.cluster.profiles:
            labels = self.service_accounts.get((namespace, name), {})
            self.cluster.profiles[profile_name] = CompiledProfile(
                profile_name,
                ingress=(),
                egress=(),
                labels_to_apply=tuple(service_account_profile_labels(name, labels)),
            )
        return profile_name

    # -- pods -------------------------------------------------------------------------------

    def _pod_documents(self) -> list[tuple[Mapping[str, Any], str | None]]:
        """Pods, plus one pod per replica of workloads whose pods are not in the input."""
        pods: list[tuple[Mapping[str, Any], str | None]] = [
            (doc, None) for doc in self._of_kind("Pod")
        ]
        existing = [
            (str(_meta(doc).get("namespace") or "default"), _str_map(_meta(doc).get("labels")))
            for doc, _ in pods
        ]
        for doc in self._of_kind(*_WORKLOAD_KINDS):
            meta = _meta(doc)
            spec = _spec(doc)
            namespace = str(meta.get("namespace") or "default")
            template = spec.get("template") or {}
            template_meta = template.get("metadata") or {}
            labels = _str_map(template_meta.get("labels"))
            selector = _str_map((spec.get("selector") or {}).get("matchLabels")) or labels
            if any(
                ns == namespace and all(pod_labels.get(k) == v for k, v in selector.items())
                for ns, pod_labels in existing
            ):
                continue  # the dump already holds this workload's pods
            replicas = 1 if doc.get("kind") == "DaemonSet" else spec.get("replicas", 1)
            name = str(meta.get("name"))
            for index in range(int(replicas if replicas is not None else 1)):
                pod = {
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{name}-{index}",
                        "namespace": namespace,
                        "labels": labels,
                        "generateName": f"{name}-",
                    },
                    "spec": template.get("spec") or {},
                }
                pods.append((pod, f"{name}-"))
        return pods

    def _build_pods(self) -> None:
        pods = self._pod_documents()
        pod_ips = [self._pod_ips(doc) for doc, _ in pods]
        used: set[IPAddress] = {ip for ips in pod_ips for ip in ips}
        allocator = (ip for ip in self.pod_cidr.hosts() if ip not in used)
        for (doc, generate_name), ips in zip(pods, pod_ips, strict=True):
            meta = _meta(doc)
            spec = _spec(doc)
            status = doc.get("status") or {}
            if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
                continue
            namespace = str(meta.get("namespace") or "default")
            name = str(meta.get("name"))
            ns_labels = self._namespace(namespace)
            service_account = spec.get("serviceAccountName") or spec.get("serviceAccount")
            service_account = str(service_account) if service_account else None
            profiles = [f"kns.{namespace}"]
            if service_account:
                profiles.append(self._service_account_profile(namespace, service_account))
            own = pod_own_labels(_str_map(meta.get("labels")), namespace, service_account)
            if not ips:
                try:
                    ips = (next(allocator),)
                except StopIteration:
                    self.cluster.problems.append(f"Pod {namespace}/{name}: pod CIDR exhausted")
                    continue
            profile_labels = [self.cluster.profiles[p].labels_to_apply for p in profiles]
            del ns_labels
            self.cluster.endpoints.append(
                Endpoint(
                    kind="wep",
                    namespace=namespace,
                    name=name,
                    labels=effective_labels(own, profile_labels),
                    ips=ips,
                    named_ports=container_named_ports(spec),
                    profiles=tuple(profiles),
                    service_account=service_account,
                    node=str(spec.get("nodeName")) if spec.get("nodeName") else None,
                    generate_name=str(meta.get("generateName") or generate_name or "") or None,
                )
            )

    @staticmethod
    def _pod_ips(doc: Mapping[str, Any]) -> tuple[IPAddress, ...]:
        status = doc.get("status") or {}
        texts: list[str] = [str(p.get("ip")) for p in status.get("podIPs") or () if p.get("ip")]
        if status.get("podIP") and str(status["podIP"]) not in texts:
            texts.insert(0, str(status["podIP"]))
        return tuple(parse_ip(t) for t in texts)

    # -- host endpoints and network sets -----------------------------------------------------

    def _build_host_endpoints(self) -> None:
        for doc in self._of_kind("HostEndpoint"):
            spec = _spec(doc)
            name = str(_meta(doc).get("name"))
            profiles = tuple(str(p) for p in spec.get("profiles") or ())
            profile_labels = [
                self.cluster.profiles[p].labels_to_apply
                for p in profiles
                if p in self.cluster.profiles
            ]
            self.cluster.endpoints.append(
                Endpoint(
                    kind="hep",
                    namespace=None,
                    name=name,
                    labels=effective_labels(_str_map(_meta(doc).get("labels")), profile_labels),
                    ips=tuple(parse_ip(str(ip)) for ip in spec.get("expectedIPs") or ()),
                    named_ports=tuple(
                        NamedPort(
                            str(p["name"]), protocol_number(str(p["protocol"])), int(p["port"])
                        )
                        for p in spec.get("ports") or ()
                    ),
                    profiles=profiles,
                    node=str(spec.get("node")) if spec.get("node") else None,
                )
            )

    def _build_network_sets(self) -> None:
        for doc in self._of_kind("NetworkSet", "GlobalNetworkSet"):
            meta = _meta(doc)
            nets = []
            for text in _spec(doc).get("nets") or ():
                try:
                    nets.append(parse_net(str(text)))
                except ValueError:
                    continue  # Calico skips invalid entries when converting (2.4)
            labels = _str_map(meta.get("labels"))
            namespace: str | None = None
            if doc.get("kind") == "NetworkSet":
                namespace = str(meta.get("namespace") or "default")
                self._namespace(namespace)
                labels[NAMESPACE_LABEL] = namespace
                profile = self.cluster.profiles[f"kns.{namespace}"]
                effective = effective_labels(labels, [profile.labels_to_apply])
            else:
                effective = tuple(sorted(labels.items()))
            self.cluster.network_sets.append(
                NetworkSetInfo(namespace, str(meta.get("name")), effective, tuple(nets))
            )

    def _build_services(self) -> None:
        for doc in self._of_kind("Service"):
            meta = _meta(doc)
            spec = _spec(doc)
            selector = spec.get("selector")
            cluster_ips = [
                parse_ip(str(ip))
                for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or ())]
                if ip and str(ip) != "None"
            ]
            self.cluster.services.append(
                ServiceInfo(
                    namespace=str(meta.get("namespace") or "default"),
                    name=str(meta.get("name")),
                    selector=tuple(sorted(_str_map(selector).items()))
                    if selector is not None
                    else None,
                    ports=tuple(
                        ServicePort(
                            name=p.get("name"),
                            protocol=protocol_number(str(p.get("protocol") or "TCP")),
                            port=int(p["port"]),
                            target_port=p.get("targetPort", p["port"]),
                        )
                        for p in spec.get("ports") or ()
                    ),
                    cluster_ips=tuple(dict.fromkeys(cluster_ips)),
                )
            )

    # -- policies ---------------------------------------------------------------------------

    def _build_policies(self) -> None:
        for doc in self._of_kind(*POLICY_KINDS):
            kind = str(doc.get("kind"))
            meta = _meta(doc)
            namespace = meta.get("namespace")
            label = (
                f"{kind} {namespace}/{meta.get('name')}"
                if namespace
                else f"{kind} {meta.get('name')}"
            )
            try:
                policy: CompiledPolicy | None
                api_version = str(doc.get("apiVersion") or "")
                if (
                    kind == "NetworkPolicy" and api_version.startswith("networking.k8s.io")
                ) or kind == "StagedKubernetesNetworkPolicy":
                    policy = compile_k8s_policy(doc)
                elif kind in (
                    "AdminNetworkPolicy",
                    "BaselineAdminNetworkPolicy",
                    "ClusterNetworkPolicy",
                ):
                    policy = compile_cluster_policy(doc)
                else:
                    policy = compile_calico_policy(doc)
            except (TranslationError, ValueError, KeyError, TypeError) as exc:
                self.cluster.problems.append(f"{label}: {exc}")
                continue
            if policy is None:
                self.cluster.problems.append(f"{label}: ignored (no subject or unknown tier)")
                continue
            if policy.namespace is not None:
                self._namespace(policy.namespace)
            self.cluster.policies.append(policy)
