"""Workloads as policy sees them: pods grouped by their stable labels, and the smallest
selector that picks out each group within its namespace."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from palisade.policy import Cluster, Endpoint

#: Labels that controllers set per revision or per pod: they change on every rollout (or
#: differ between replicas), so a policy selecting on them would stop matching.
VOLATILE_LABELS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "pod-template-generation",
        "apps.kubernetes.io/pod-index",
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-completion-index",
        "job-name",
        "batch.kubernetes.io/job-name",
        "security.istio.io/tlsMode",
        "service.istio.io/canonical-revision",
    }
)
#: Label-key prefixes Calico adds (effective labels), never written by users on pods.
_CALICO_PREFIXES = ("projectcalico.org/", "pcns.", "pcsa.")
#: Keys that name an application, in order of preference for selectors and names.
PREFERRED_KEYS = ("app", "app.kubernetes.io/name", "k8s-app", "name", "component")

Labels = tuple[tuple[str, str], ...]


def stable_labels(labels: Iterable[tuple[str, str]]) -> Labels:
    """The labels of a pod that survive rollouts: its own labels minus volatile ones."""
    return tuple(
        sorted(
            (key, value)
            for key, value in labels
            if key not in VOLATILE_LABELS and not key.startswith(_CALICO_PREFIXES)
        )
    )


@dataclass(frozen=True, slots=True, order=True)
class Workload:
    """Pods of one namespace with the same stable labels: no policy can tell them apart."""

    namespace: str
    labels: Labels
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class WorkloadSelector:
    """Labels that must be equal, and keys that must be absent."""

    equal: Labels
    absent: tuple[str, ...] = ()

    def calico(self) -> str:
        terms = [f"{key} == {_quote(value)}" for key, value in self.equal]
        terms += [f"!has({key})" for key in self.absent]
        return " && ".join(terms) if terms else "all()"

    def kubernetes(self) -> dict[str, object]:
        selector: dict[str, object] = {}
        if self.equal:
            selector["matchLabels"] = dict(self.equal)
        if self.absent:
            selector["matchExpressions"] = [
                {"key": key, "operator": "DoesNotExist"} for key in self.absent
            ]
        return selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.equal) and not any(
            k in labels for k in self.absent
        )


def _quote(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:50].strip("-") or "pods"


def _base_name(pod: Endpoint, labels: Labels) -> str:
    label_map = dict(labels)
    for key in PREFERRED_KEYS:
        if key in label_map:
            return _dns_name(label_map[key])
    if pod.generate_name:
        # Deployment pods: <deployment>-<hash>-; the hash part is volatile.
        parts = pod.generate_name.rstrip("-").split("-")
        if len(parts) > 1 and re.fullmatch(r"[0-9a-f]{6,10}", parts[-1]):
            parts = parts[:-1]
        return _dns_name("-".join(parts))
    return _dns_name(pod.name)


class WorkloadIndex:
    """Every pod's workload, and each workload's pods and selector."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        by_key: dict[tuple[str, Labels], list[Endpoint]] = {}
        for pod in sorted(cluster.pods, key=lambda e: e.key):
            namespace = pod.namespace or "default"
            by_key.setdefault((namespace, stable_labels(pod.labels)), []).append(pod)
        self.workloads: list[Workload] = []
        self.pods: dict[Workload, list[Endpoint]] = {}
        self.of_pod: dict[str, Workload] = {}
        used: set[tuple[str, str]] = set()
        for (namespace, labels), pods in sorted(by_key.items()):
            base = _base_name(pods[0], labels)
            name, serial = base, 2
            while (namespace, name) in used:
                name, serial = f"{base}-{serial}", serial + 1
            used.add((namespace, name))
            workload = Workload(namespace, labels, name)
            self.workloads.append(workload)
            self.pods[workload] = pods
            for pod in pods:
                self.of_pod[pod.key] = workload
        self.by_namespace: dict[str, list[Workload]] = {}
        for workload in self.workloads:
            self.by_namespace.setdefault(workload.namespace, []).append(workload)
        self._selectors: dict[Workload, WorkloadSelector] = {}

    def workload_of(self, pod: Endpoint) -> Workload | None:
        return self.of_pod.get(pod.key)

    def selector(self, workload: Workload) -> WorkloadSelector:
        """The smallest label selector (preferred keys first) that matches this workload's
        pods and no other pod of its namespace."""
        cached = self._selectors.get(workload)
        if cached is not None:
            return cached
        others = [dict(w.labels) for w in self.by_namespace[workload.namespace] if w != workload]
        own = dict(workload.labels)
        order = [k for k in PREFERRED_KEYS if k in own]
        order += sorted(k for k in own if k not in order)
        chosen: list[str] = []

        def rivals(keys: Sequence[str]) -> list[dict[str, str]]:
            return [o for o in others if all(o.get(k) == own[k] for k in keys)]

        remaining = others
        for key in order:
            if chosen and not remaining:
                break
            narrowed = rivals([*chosen, key])
            if not chosen or len(narrowed) < len(remaining):
                # The first key always (a readable selector), later ones only if they help.
                chosen.append(key)
                remaining = narrowed
        absent: set[str] = set()
        for rival in remaining:
            # A rival that has every label of ours and more: exclude one of its extra keys.
            absent.add(min(k for k in rival if k not in own))
        selector = WorkloadSelector(
            tuple(sorted((k, own[k]) for k in chosen)), tuple(sorted(absent))
        )
        self._selectors[workload] = selector
        return selector

    def named_port(self, workload: Workload, protocol: int, port: int) -> str | None:
        """The name every pod of the workload gives ``port``/``protocol``, if they agree."""
        names: set[str | None] = set()
        for pod in self.pods[workload]:
            matching = [
                n.name for n in pod.named_ports if n.protocol == protocol and n.port == port
            ]
            names.add(matching[0] if len(matching) == 1 else None)
        if len(names) == 1:
            return names.pop()
        return None
