"""Observations → least-privilege policies (Calico or Kubernetes), network sets and YAML."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import yaml

from palisade.flows import FlowRecord, proto_name
from palisade.policy import Cluster

from ._evidence import (
    EGRESS,
    INGRESS,
    SYSTEM_NAMESPACES,
    Evidence,
    Observation,
    Peer,
    Resolver,
    collect,
    is_dns,
    is_monitoring,
)
from ._workloads import Workload, WorkloadIndex

Document = dict[str, Any]
CALICO_API = "projectcalico.org/v3"
K8S_API = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
SET_LABEL = "palisade.io/network-set"
PURPOSE_ANNOTATION = "palisade.io/purpose"
RECOMMENDED_ANNOTATION = "palisade.io/recommended-from"
_PROTOCOL_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP", 1: "ICMP", 58: "ICMPv6"}
_DNS_PORT = 53
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"


@dataclass(frozen=True, slots=True)
class RecommendOptions:
    """How to write the recommendation.

    ``namespaces`` empty: every namespace whose pods the records show as a local side
    (the system namespaces only when named). ``kind="kubernetes"`` always writes one policy
    per workload: a Kubernetes policy's rules cannot name the local pods, so one policy per
    namespace could not be least-privilege.
    """

    tier: str = "default"
    kind: Literal["calico", "kubernetes"] = "calico"
    enforced: bool = False
    per_workload: bool = False
    namespaces: tuple[str, ...] = ()
    external_prefix: int = 24


@dataclass(frozen=True)
class Recommendation:
    documents: list[Document]
    options: RecommendOptions
    records: int
    used: int
    start_time: int | None
    end_time: int | None
    namespaces: tuple[str, ...]
    ignored: Mapping[str, int] = field(default_factory=dict)
    observations: int = 0
    """Distinct (direction, workload, peer, protocol, port) the evidence reduced to."""
    idle_workloads: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def header(self) -> list[str]:
        def when(value: int | None) -> str:
            if value is None:
                return "-"
            return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        kinds = sorted({d["kind"] for d in self.documents if "Set" not in d["kind"]})
        sets = sum(1 for d in self.documents if d["kind"].endswith("NetworkSet"))
        policies = len(self.documents) - sets
        lines = [
            "Least-privilege policies recommended by Palisade from observed flows.",
            f"Window: {when(self.start_time)} to {when(self.end_time)}"
            + (
                f" ({self.end_time - self.start_time} s)."
                if self.start_time is not None and self.end_time is not None
                else "."
            ),
            f"Evidence: {self.records} flow records read, {self.used} allowed records used "
            "(dst-reported for ingress, src-reported for egress), "
            f"{self.observations} distinct observations.",
        ]
        for reason, count in sorted(self.ignored.items()):
            lines.append(f"  not used: {count} ({reason})")
        lines.append(f"Namespaces: {', '.join(self.namespaces) or '-'}.")
        lines.append(
            f"{policies} {'/'.join(kinds) or 'policies'}"
            + (f" in tier {self.options.tier!r}" if self.options.kind == "calico" else "")
            + f", {sets} network sets."
        )
        lines.append(
            "Each policy selects its pods for ingress and egress, so once enforced anything "
            "not allowed here is denied."
        )
        if self.idle_workloads:
            lines.append(
                "No traffic observed (everything denied): " + ", ".join(self.idle_workloads)
            )
        lines.extend(self.notes)
        if not self.options.enforced:
            lines.append(
                "Staged: preview the effect on recorded traffic with `palisade whatif "
                "--staged`; `palisade recommend --enforced` writes the enforced kinds."
            )
        return lines

    def to_yaml(self) -> str:
        header = "".join(f"# {line}\n" for line in self.header())
        body = yaml.safe_dump_all(self.documents, sort_keys=False, default_flow_style=False)
        return header + ("---\n" + body if self.documents else "")


# --------------------------------------------------------------------------------------------
# Ports


PortValue = int | str


def _port_values(
    ports: Iterable[int], name_of: Callable[[int], str | None]
) -> tuple[PortValue, ...]:
    """Numbers with a declared name become the name; the other numbers are merged into
    ranges ("low:high"). Ranges first, ascending, then names."""
    names: set[str] = set()
    numbers: list[int] = []
    for port in sorted(set(ports)):
        name = name_of(port)
        if name is not None:
            names.add(name)
        else:
            numbers.append(port)
    values: list[PortValue] = []
    runs: list[list[int]] = []
    for port in numbers:
        if runs and port == runs[-1][-1] + 1:
            runs[-1].append(port)
        else:
            runs.append([port])
    for run in runs:
        values.append(run[0] if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return (*values, *sorted(names))


def _ports_order(ports: Sequence[PortValue]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, v, "") if isinstance(v, int) else (1, 0, v) for v in ports)


# --------------------------------------------------------------------------------------------
# The recommender


@dataclass(frozen=True, slots=True)
class _RuleKey:
    rank: int  # 0: DNS, 1: monitoring, 2: the rest
    peer: Peer
    protocol: int | None
    ports: tuple[PortValue, ...]


class _Recommender:
    def __init__(
        self,
        cluster: Cluster,
        index: WorkloadIndex,
        resolver: Resolver,
        evidence: Evidence,
        options: RecommendOptions,
    ) -> None:
        self.cluster = cluster
        self.resolver = resolver
        self.index = index
        self.evidence = evidence
        self.options = options
        self.sets: dict[str, Document] = {}
        self.notes: list[str] = []
        self.by_local: dict[tuple[str, Workload], dict[tuple[Peer, int], set[int | None]]] = {}
        for observation in evidence.observations:
            self._add(observation)

    def _add(self, observation: Observation) -> None:
        table = self.by_local.setdefault((observation.direction, observation.local), {})
        peer = observation.peer
        if (
            observation.direction == EGRESS
            and peer.workload is not None
            and is_dns(peer.workload)
            and observation.port == _DNS_PORT
            and observation.protocol in (6, 17)
        ):
            # DNS falls back to TCP for large answers: allow both once either is seen.
            table.setdefault((peer, 17), set()).add(_DNS_PORT)
            table.setdefault((peer, 6), set()).add(_DNS_PORT)
            return
        table.setdefault((peer, observation.protocol), set()).add(observation.port)

    def _rank(self, direction: str, peer: Peer) -> int:
        if peer.workload is not None:
            if direction == EGRESS and is_dns(peer.workload):
                return 0
            if direction == INGRESS and is_monitoring(peer.workload):
                return 1
        return 2

    def _name_of(
        self, direction: str, local: Workload, peer: Peer, protocol: int
    ) -> Callable[[int], str | None]:
        owner = local if direction == INGRESS else peer.workload
        if owner is None:
            return lambda port: None
        return lambda port: self.index.named_port(owner, protocol, port)

    def rules_of(self, direction: str, local: Workload) -> dict[_RuleKey, None]:
        keys: dict[_RuleKey, None] = {}
        table = self.by_local.get((direction, local), {})
        for (peer, protocol), ports in table.items():
            numbers = [p for p in ports if p is not None]
            name_of = self._name_of(direction, local, peer, protocol)
            rank = self._rank(direction, peer)
            if rank == 0:
                # The DNS rule holds port 53 only; anything else to the DNS pods is ordinary.
                others = [p for p in numbers if p != _DNS_PORT]
                if others:
                    keys[_RuleKey(2, peer, protocol, _port_values(others, name_of))] = None
                numbers = [p for p in numbers if p == _DNS_PORT]
                if not numbers:
                    continue
            keys[_RuleKey(rank, peer, protocol, _port_values(numbers, name_of))] = None
        return keys

    # -- Calico -----------------------------------------------------------------------------

    def calico_peer(self, peer: Peer, namespace: str) -> dict[str, Any]:
        if peer.kind == "workload" and peer.workload is not None:
            entity: dict[str, Any] = {"selector": self.index.selector(peer.workload).calico()}
            if peer.namespace != namespace:
                entity["namespaceSelector"] = f"projectcalico.org/name == '{peer.namespace}'"
            return entity
        if peer.kind == "set" and peer.set_labels:
            selector = " && ".join(f"{k} == '{v}'" for k, v in peer.set_labels)
            entity = {"selector": selector}
            if not peer.namespace:
                entity["namespaceSelector"] = "global()"
            elif peer.namespace != namespace:
                entity["namespaceSelector"] = f"projectcalico.org/name == '{peer.namespace}'"
        elif peer.kind == "set":
            entity = {"nets": list(peer.nets)}
        else:
            entity = {}
        if peer.exclude_pods:
            entity["notSelector"] = f"has({ORCHESTRATOR_LABEL})"
        if entity:
            return entity
        if peer.kind == "pub":
            return {"nets": ["0.0.0.0/0"], "notNets": list(PRIVATE_RANGES)}
        if peer.kind == "pvt":
            # Private addresses, but no pod: pods are allowed only by their own rules.
            return {"nets": list(PRIVATE_RANGES), "notSelector": f"has({ORCHESTRATOR_LABEL})"}
        return {"nets": list(peer.nets)}

    def _new_set(self, namespace: str, nets: Sequence[str]) -> str:
        digest = hashlib.sha256("\n".join([namespace, *nets]).encode()).hexdigest()[:10]
        name = f"recommended-external-{digest}"
        self.sets[f"{namespace}/{name}"] = {
            "apiVersion": CALICO_API,
            "kind": "NetworkSet",
            "metadata": {"name": name, "namespace": namespace, "labels": {SET_LABEL: name}},
            "spec": {"nets": list(nets)},
        }
        return name

    def calico_rules(
        self, direction: str, members: Sequence[Workload], namespace: str
    ) -> list[dict[str, Any]]:
        """Rules for the policy selecting ``members``; a rule names its local workloads
        unless it applies to every member."""
        grouped: dict[_RuleKey, list[Workload]] = {}
        for local in members:
            for key in self.rules_of(direction, local):
                grouped.setdefault(key, []).append(local)
        # Observed external networks with the same ports and locals share one NetworkSet.
        merged: dict[tuple[int, int | None, tuple[PortValue, ...], tuple[Workload, ...]], list[str]]
        merged = {}
        rules: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for key, locals_ in grouped.items():
            locals_key = tuple(sorted(locals_))
            everyone = len(locals_key) == len(members)
            if key.peer.kind == "nets":
                merged.setdefault((key.rank, key.protocol, key.ports, locals_key), []).extend(
                    key.peer.nets
                )
                continue
            entity = self.calico_peer(key.peer, namespace)
            rules.append(
                (
                    (key.rank, key.peer, key.protocol or 0, _ports_order(key.ports), locals_key),
                    self._calico_rule(direction, entity, key, locals_key, everyone, namespace),
                )
            )
        for (rank, protocol, ports, locals_key), nets in merged.items():
            everyone = len(locals_key) == len(members)
            unique = sorted(set(nets))
            set_name = self._new_set(namespace, unique)
            entity = {"selector": f"{SET_LABEL} == '{set_name}'"}
            key = _RuleKey(rank, Peer("nets", "", set_name, tuple(unique)), protocol, ports)
            rules.append(
                (
                    (rank, key.peer, protocol or 0, _ports_order(ports), locals_key),
                    self._calico_rule(direction, entity, key, locals_key, everyone, namespace),
                )
            )
        rules.sort(key=lambda item: item[0])
        return self._merge_dns([rule for _, rule in rules])

    def _local_selector(self, locals_: Sequence[Workload]) -> str:
        selectors = [self.index.selector(w).calico() for w in locals_]
        if len(selectors) == 1:
            return selectors[0]
        return " || ".join(f"({s})" for s in selectors)

    def _calico_rule(
        self,
        direction: str,
        peer_entity: dict[str, Any],
        key: _RuleKey,
        locals_: Sequence[Workload],
        everyone: bool,
        namespace: str,
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {"action": "Allow"}
        if key.protocol is not None:
            rule["protocol"] = _PROTOCOL_NAMES.get(key.protocol, key.protocol)
        local_entity: dict[str, Any] = {}
        if not everyone:
            local_entity["selector"] = self._local_selector(locals_)
        if direction == INGRESS:
            if key.ports:
                local_entity["ports"] = list(key.ports)
            rule["source"] = peer_entity
            if local_entity:
                rule["destination"] = local_entity
        else:
            if local_entity:
                rule["source"] = local_entity
            destination = dict(peer_entity)
            if key.ports:
                destination["ports"] = list(key.ports)
            rule["destination"] = destination
        if key.rank == 0:
            rule["metadata"] = {"annotations": {PURPOSE_ANNOTATION: "dns"}}
        elif key.rank == 1:
            rule["metadata"] = {"annotations": {PURPOSE_ANNOTATION: "monitoring"}}
        return rule

    @staticmethod
    def _merge_dns(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """DNS over UDP and TCP as one rule when the DNS pods name both ports (a Calico rule
        has one protocol, but named ports carry theirs)."""
        dns = [
            r
            for r in rules
            if (r.get("metadata") or {}).get("annotations", {}).get(PURPOSE_ANNOTATION) == "dns"
        ]
        rest = [r for r in rules if r not in dns]
        by_target: dict[str, list[dict[str, Any]]] = {}
        for rule in dns:
            target = {k: v for k, v in rule["destination"].items() if k != "ports"}
            by_target.setdefault(repr((rule.get("source"), target)), []).append(rule)
        merged: list[dict[str, Any]] = []
        for group in by_target.values():
            ports = [p for r in group for p in r["destination"].get("ports", ())]
            if len(group) > 1 and all(isinstance(p, str) and ":" not in p for p in ports):
                rule = {k: v for k, v in group[0].items() if k != "protocol"}
                rule["destination"] = {**group[0]["destination"], "ports": sorted(set(ports))}
                merged.append(rule)
            else:
                merged.extend(group)
        return merged + rest

    def calico_policy(self, name: str, namespace: str, members: Sequence[Workload]) -> Document:
        if self.options.per_workload:
            selector = self.index.selector(members[0]).calico()
        else:
            selector = "all()"
        spec: dict[str, Any] = {"tier": self.options.tier, "selector": selector}
        spec["types"] = ["Ingress", "Egress"]
        spec["ingress"] = self.calico_rules(INGRESS, members, namespace)
        spec["egress"] = self.calico_rules(EGRESS, members, namespace)
        kind = "NetworkPolicy" if self.options.enforced else "StagedNetworkPolicy"
        return {
            "apiVersion": CALICO_API,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "annotations": self._annotation()},
            "spec": spec,
        }

    def _annotation(self) -> dict[str, str]:
        evidence = self.evidence
        return {
            RECOMMENDED_ANNOTATION: f"{evidence.used} allowed flow records, "
            f"{evidence.start_time}-{evidence.end_time}"
        }

    # -- Kubernetes -------------------------------------------------------------------------

    def kubernetes_peers(self, peer: Peer, namespace: str) -> list[dict[str, Any]]:
        if peer.kind == "workload" and peer.workload is not None:
            entity: dict[str, Any] = {
                "podSelector": self.index.selector(peer.workload).kubernetes()
            }
            if peer.namespace != namespace:
                entity["namespaceSelector"] = {
                    "matchLabels": {NAMESPACE_NAME_LABEL: peer.namespace}
                }
            return [entity]
        if peer.kind == "pub":
            return [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}}]
        nets = PRIVATE_RANGES if peer.kind == "pvt" else peer.nets
        if peer.kind == "pvt" or peer.exclude_pods:
            blocks: list[dict[str, Any]] = []
            for net in nets:
                excepted = self.pod_networks(net)
                block: dict[str, Any] = {"cidr": net}
                if excepted:
                    block["except"] = excepted
                blocks.append({"ipBlock": block})
            return blocks
        return [{"ipBlock": {"cidr": net}} for net in nets]

    def pod_networks(self, within: str) -> list[str]:
        """Networks to except from ``within`` so that no endpoint is inside (a Kubernetes
        ipBlock cannot exclude pods by selector): the /16s holding endpoints when they fit
        inside, else each endpoint's own address."""
        outer = ipaddress.ip_network(within)
        excepted: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        for address in self.resolver.endpoints_in(outer):
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address
            if outer.version == 4:
                ip = ipaddress.IPv4Address(address)
            else:
                ip = ipaddress.IPv6Address(address)
            wide = ipaddress.ip_network(f"{ip}/16", strict=False) if ip.version == 4 else None
            if wide is not None and wide.prefixlen > outer.prefixlen:
                excepted.add(wide)
            else:
                excepted.add(ipaddress.ip_network(ip))
        return sorted(str(n) for n in excepted)

    def kubernetes_rules(self, direction: str, local: Workload) -> list[dict[str, Any]]:
        table = self.by_local.get((direction, local), {})
        per_peer: dict[Peer, list[dict[str, Any]]] = {}
        for (peer, protocol), ports in sorted(
            table.items(), key=lambda item: (item[0][0], item[0][1])
        ):
            if protocol not in _PROTOCOL_NAMES or protocol in (1, 58):
                self.notes.append(
                    f"{local.key}: {direction} {proto_name(protocol)} with {peer.name} "
                    "cannot be written as a Kubernetes NetworkPolicy (TCP, UDP, SCTP only)"
                )
                continue
            values = _port_values(
                [p for p in ports if p is not None], self._name_of(direction, local, peer, protocol)
            )
            for value in values:
                entry: dict[str, Any] = {"protocol": _PROTOCOL_NAMES[protocol]}
                if isinstance(value, str) and ":" in value:
                    low, high = value.split(":")
                    entry["port"], entry["endPort"] = int(low), int(high)
                else:
                    entry["port"] = value
                per_peer.setdefault(peer, []).append(entry)
        # Peers allowed on exactly the same ports share a rule.
        by_ports: dict[tuple[int, str], list[Peer]] = {}
        port_lists: dict[str, list[dict[str, Any]]] = {}
        for peer, entries in per_peer.items():
            text = repr(entries)
            port_lists[text] = entries
            by_ports.setdefault((self._rank(direction, peer), text), []).append(peer)
        rules = []
        for (_, text), peers in sorted(
            by_ports.items(), key=lambda item: (item[0][0], sorted(item[1]))
        ):
            entities = [e for p in sorted(peers) for e in self.kubernetes_peers(p, local.namespace)]
            side = "from" if direction == INGRESS else "to"
            rules.append({side: entities, "ports": port_lists[text]})
        return rules

    def kubernetes_policy(self, name: str, local: Workload) -> Document:
        spec: dict[str, Any] = {
            "podSelector": self.index.selector(local).kubernetes(),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": self.kubernetes_rules(INGRESS, local),
            "egress": self.kubernetes_rules(EGRESS, local),
        }
        if self.options.enforced:
            api, kind = K8S_API, "NetworkPolicy"
        else:
            api, kind = CALICO_API, "StagedKubernetesNetworkPolicy"
        return {
            "apiVersion": api,
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": local.namespace,
                "annotations": self._annotation(),
            },
            "spec": spec,
        }


def recommend(
    records: Iterable[FlowRecord],
    documents: Sequence[Mapping[str, Any]],
    options: RecommendOptions | None = None,
) -> Recommendation:
    """Least-privilege policies for the workloads the flow records show.

    ``records``: flow records of one window (any iterable, read once; the server will pass
    its own query results here). ``documents``: the cluster's resource documents (pods,
    namespaces, services, network sets; its policies are not consulted).
    """
    options = options or RecommendOptions()
    if not 0 <= options.external_prefix <= 32:
        raise ValueError("external_prefix must be 0-32")
    topology = [d for d in documents if d.get("kind") not in _POLICY_KINDS]
    cluster = Cluster.from_documents(topology)
    index = WorkloadIndex(cluster)
    resolver = Resolver(cluster, index, options.external_prefix)
    wanted = frozenset(options.namespaces) if options.namespaces else None
    evidence = collect(records, resolver, wanted)
    namespaces = sorted(
        wanted if wanted is not None else evidence.local_namespaces - SYSTEM_NAMESPACES
    )
    recommender = _Recommender(cluster, index, resolver, evidence, options)
    policies: list[Document] = []
    idle: list[str] = []
    active = {local for _, local in recommender.by_local}
    for namespace in namespaces:
        members = index.by_namespace.get(namespace, [])
        idle.extend(w.key for w in members if w not in active)
        if options.kind == "kubernetes":
            policies.extend(
                recommender.kubernetes_policy(f"recommended-{w.name}", w) for w in members
            )
        elif options.per_workload:
            policies.extend(
                recommender.calico_policy(f"recommended-{w.name}", namespace, [w]) for w in members
            )
        elif members:
            policies.append(recommender.calico_policy("recommended", namespace, members))
    notes = list(dict.fromkeys(recommender.notes))
    broad = sorted({o.peer.kind for o in evidence.observations if o.peer.kind in ("pub", "pvt")})
    if broad:
        what = " and every ".join("public" if k == "pub" else "private non-pod" for k in broad)
        notes.append(
            "Some external peers had no address (flow-log aggregation level 2): rules allow "
            f"every {what} address on the observed ports. Record at aggregation level 1 for "
            "per-network rules."
        )
    if options.kind == "calico" and options.tier not in cluster.tiers:
        notes.append(
            f"Tier {options.tier!r} is not in the cluster documents: create it before applying."
        )
    if options.kind == "kubernetes" and options.tier != "default":
        notes.append("Kubernetes policies always evaluate in the 'default' tier; --tier ignored.")
    sets = [recommender.sets[key] for key in sorted(recommender.sets)]
    return Recommendation(
        documents=[*sets, *policies],
        options=options,
        records=evidence.records,
        used=evidence.used,
        start_time=evidence.start_time,
        end_time=evidence.end_time,
        namespaces=tuple(namespaces),
        ignored=dict(sorted(evidence.ignored.items())),
        observations=len(evidence.observations),
        idle_workloads=tuple(sorted(idle)),
        notes=tuple(notes),
    )


_POLICY_KINDS = frozenset(
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
