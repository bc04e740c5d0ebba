"""Flow records → evidence: which local workload talked to which peer, on which ports.

Only allowed records count. A connection between two pods is reported twice (§6.1): the
``dst`` record is the evidence for the destination's ingress, the ``src`` record for the
source's egress, so each side is judged on what its own node saw. Records are reduced to
(direction, local workload, peer, protocol, port) and deduplicated.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from palisade.flows import PROTO_NUMBERS, FlowRecord
from palisade.policy import Cluster, Endpoint

from ._workloads import Labels, Workload, WorkloadIndex

if TYPE_CHECKING:
    from palisade.policy._types import NetworkSetInfo

INGRESS = "ingress"
EGRESS = "egress"
PORTED = frozenset({6, 17, 132})

#: Namespaces left out unless named: their pods talk to the API server, nodes and each
#: other in ways a short recording rarely shows in full.
SYSTEM_NAMESPACES = frozenset(
    {
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "calico-system",
        "calico-apiserver",
        "tigera-operator",
    }
)
_DNS_NAMES = frozenset({"kube-dns", "coredns"})
_APP_KEYS = ("k8s-app", "app", "app.kubernetes.io/name")
_MONITORING_NAMES = frozenset({"prometheus", "vmagent", "grafana-agent", "otel-collector"})


@dataclass(frozen=True, slots=True, order=True)
class Peer:
    """The other side of a flow, as a rule names it.

    ``workload``: pods of a workload; ``set``: an existing NetworkSet/GlobalNetworkSet
    (``namespace`` empty for global ones); ``nets``: observed addresses outside the
    cluster, aggregated to a prefix; ``pub``/``pvt``: an external address whose IP was
    aggregated away (any public address, any private address that is not a pod).
    """

    kind: str
    namespace: str
    name: str
    nets: tuple[str, ...] = ()
    set_labels: Labels = ()
    exclude_pods: bool = False
    """An existing set whose networks hold pods, named by a record without an address:
    the rule excludes the pods, which only their own rules may allow."""
    workload: Workload | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    direction: str
    local: Workload
    peer: Peer
    protocol: int
    port: int | None


@dataclass
class Evidence:
    """What the records said, with every record accounted for."""

    records: int = 0
    used: int = 0
    start_time: int | None = None
    end_time: int | None = None
    ignored: Counter[str] = field(default_factory=Counter)
    observations: set[Observation] = field(default_factory=set)
    local_namespaces: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Side:
    type: str
    ip: str | None
    name: str
    name_aggr: str
    namespace: str
    labels: tuple[str, ...]


def _source(record: FlowRecord) -> _Side:
    return _Side(
        record.source_type,
        record.source_ip,
        record.source_name,
        record.source_name_aggr,
        record.source_namespace,
        record.source_labels,
    )


def _destination(record: FlowRecord) -> _Side:
    return _Side(
        record.dest_type,
        record.dest_ip,
        record.dest_name,
        record.dest_name_aggr,
        record.dest_namespace,
        record.dest_labels,
    )


def protocol_of(text: str) -> int | None:
    number = PROTO_NUMBERS.get(text.lower())
    if number is not None:
        return number
    return int(text) if text.isdigit() else None


def is_dns(workload: Workload) -> bool:
    labels = dict(workload.labels)
    return workload.namespace == "kube-system" and any(
        labels.get(key) in _DNS_NAMES for key in _APP_KEYS
    )


def is_monitoring(workload: Workload) -> bool:
    labels = dict(workload.labels)
    return workload.namespace == "monitoring" or any(
        labels.get(key) in _MONITORING_NAMES for key in _APP_KEYS
    )


def _own_set_labels(network_set: NetworkSetInfo) -> Labels:
    return tuple(
        (k, v)
        for k, v in network_set.labels
        if not k.startswith(("projectcalico.org/", "pcns.", "pcsa."))
    )


class Resolver:
    """Record sides → workloads, existing network sets, or external networks."""

    def __init__(self, cluster: Cluster, index: WorkloadIndex, external_prefix: int) -> None:
        self.cluster = cluster
        self.index = index
        self.external_prefix = external_prefix
        self.pods = {pod.key: pod for pod in cluster.pods}
        self.by_ip: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, Endpoint] = {}
        for endpoint in cluster.endpoints:
            for ip in endpoint.ips:
                if ip not in self.by_ip or endpoint.kind == "wep":
                    self.by_ip[ip] = endpoint
        self.by_generate_name: dict[tuple[str, str], list[Endpoint]] = {}
        for pod in cluster.pods:
            if pod.generate_name:
                key = (pod.namespace or "default", pod.generate_name)
                self.by_generate_name.setdefault(key, []).append(pod)
        self.hosts = {e.name: e for e in cluster.endpoints if e.kind == "hep"}
        self.sets = {(s.namespace or "", s.name): s for s in cluster.network_sets}
        self._endpoint_addresses = {
            version: sorted(int(ip) for ip in self.by_ip if ip.version == version)
            for version in (4, 6)
        }

    def _ip(self, text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        if not text:
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None

    def workloads(self, side: _Side) -> list[Workload]:
        """The workloads a ``wep`` side stands for (several only for an ambiguous
        aggregate)."""
        # Names first: cluster documents written as manifests give pods offline addresses
        # (the engine's allocator), not the ones the records saw.
        pods: list[Endpoint] = []
        namespace = side.namespace
        if side.name not in ("-", ""):
            pod = self.pods.get(f"{namespace}/{side.name}")
            pods = [pod] if pod is not None else []
        if not pods and side.name_aggr not in ("-", ""):
            if side.name_aggr.endswith("*"):
                pods = self.by_generate_name.get((namespace, side.name_aggr[:-1]), [])
            else:
                pod = self.pods.get(f"{namespace}/{side.name_aggr}")
                pods = [pod] if pod is not None else []
        if not pods:
            ip = self._ip(side.ip)
            endpoint = self.by_ip.get(ip) if ip is not None else None
            if endpoint is not None and endpoint.kind == "wep":
                pods = [endpoint]
        if len(pods) > 1 and side.labels:
            wanted = set(side.labels)
            pods = [p for p in pods if wanted <= {f"{k}={v}" for k, v in p.labels}] or pods
        found = {self.index.workload_of(p) for p in pods}
        return sorted(w for w in found if w is not None)

    def peers(self, side: _Side, local_namespace: str) -> list[Peer] | str:
        """The peer(s) a side stands for, or why it cannot be named."""
        if side.type == "wep":
            workloads = self.workloads(side)
            if workloads:
                return [Peer("workload", w.namespace, w.name, workload=w) for w in workloads]
            return "unknown pod"
        ip = self._ip(side.ip)
        if side.type == "hep":
            host = self.hosts.get(side.name) or self.hosts.get(side.name_aggr)
            if host is None and ip is not None:
                endpoint = self.by_ip.get(ip)
                host = endpoint if endpoint is not None and endpoint.kind == "hep" else None
            if host is None or not host.ips:
                return "unknown host endpoint"
            nets = tuple(sorted(str(ipaddress.ip_network(a)) for a in host.ips))
            return [Peer("nets", "", f"host {host.name}", nets=nets)]
        if side.type == "ns":
            namespace = "" if side.namespace in ("-", "") else side.namespace
            for name in (side.name, side.name_aggr):
                network_set = self.sets.get((namespace, name))
                if network_set is None:
                    continue
                holds_pods = self._holds_endpoints(network_set)
                if not holds_pods or ip is None:
                    return [self._set_peer(network_set, exclude_pods=holds_pods)]
        if ip is None:
            # Aggregation level 2 (Calico's default for allowed flows) keeps only "pub" or
            # "pvt": the rule can only name all public, or all private non-pod, addresses.
            if side.name_aggr in ("pub", "pvt"):
                return [Peer(side.name_aggr, "", side.name_aggr)]
            return "external peer without an address (aggregated away)"
        if ip in self.by_ip and self.by_ip[ip].kind == "wep":
            return self.peers(_Side("wep", side.ip, "-", "-", "-", ()), local_namespace)
        network_set = self._containing_set(ip, local_namespace)
        if network_set is not None:
            return [self._set_peer(network_set)]
        net = self._aggregate(ip)
        return [Peer("nets", "", str(net), nets=(str(net),))]

    def _aggregate(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The observed address's network at the configured prefix, narrowed until it holds
        no endpoint of the cluster: a node's tunnel address inside the pod range must not
        open a rule to the pods around it."""
        prefix = min(self.external_prefix if ip.version == 4 else 64, ip.max_prefixlen)
        while True:
            net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
            if prefix >= ip.max_prefixlen or not self.endpoints_in(net):
                return net
            prefix += 1

    def _set_peer(self, network_set: NetworkSetInfo, *, exclude_pods: bool = False) -> Peer:
        return Peer(
            "set",
            network_set.namespace or "",
            network_set.name,
            nets=tuple(sorted(str(n) for n in network_set.nets)),
            set_labels=_own_set_labels(network_set),
            exclude_pods=exclude_pods,
        )

    def endpoints_in(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[int]:
        """Addresses of cluster endpoints inside ``net``, ascending."""
        addresses = self._endpoint_addresses[net.version]
        low = bisect.bisect_left(addresses, int(net.network_address))
        high = bisect.bisect_right(addresses, int(net.broadcast_address))
        return addresses[low:high]

    def _holds_endpoints(self, network_set: NetworkSetInfo) -> bool:
        return any(self.endpoints_in(net) for net in network_set.nets)

    def _containing_set(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, local_namespace: str
    ) -> NetworkSetInfo | None:
        """The network set flow logs would name the address by (§6.1, the newer ranking):
        the local namespace's sets, then global ones, then other namespaces'; longest
        prefix; then name. Sets that hold endpoint addresses (a whole private range, say) are
        not reused: a rule naming them would open the pods inside too."""
        best: tuple[int, int, str] | None = None
        chosen: NetworkSetInfo | None = None
        for network_set in self.cluster.network_sets:
            if self._holds_endpoints(network_set):
                continue
            for net in network_set.nets:
                if net.version != ip.version or ip not in net:
                    continue
                if network_set.namespace == local_namespace:
                    rank = 0
                elif network_set.namespace is None:
                    rank = 1
                else:
                    rank = 2
                candidate = (rank, -net.prefixlen, network_set.key)
                if best is None or candidate < best:
                    best, chosen = candidate, network_set
        return chosen


def collect(
    records: Iterable[FlowRecord],
    resolver: Resolver,
    namespaces: frozenset[str] | None,
) -> Evidence:
    """Reduce records to observations for the local workloads of ``namespaces`` (None: any
    namespace except the system ones)."""
    evidence = Evidence()
    for record in records:
        evidence.records += 1
        evidence.start_time = (
            record.start_time
            if evidence.start_time is None
            else min(evidence.start_time, record.start_time)
        )
        evidence.end_time = (
            record.end_time
            if evidence.end_time is None
            else max(evidence.end_time, record.end_time)
        )
        if record.action != "allow":
            evidence.ignored["denied"] += 1
            continue
        if record.reporter == "dst":
            direction, local_side, peer_side = INGRESS, _destination(record), _source(record)
        elif record.reporter == "src":
            direction, local_side, peer_side = EGRESS, _source(record), _destination(record)
        else:
            evidence.ignored["forwarded (reporter fwd)"] += 1
            continue
        if local_side.type != "wep":
            evidence.ignored[f"local side is not a pod ({local_side.type})"] += 1
            continue
        protocol = protocol_of(record.proto)
        if protocol is None:
            evidence.ignored[f"unknown protocol {record.proto!r}"] += 1
            continue
        port = record.dest_port
        if protocol in PORTED and port is None:
            evidence.ignored["no destination port (aggregated away)"] += 1
            continue
        if protocol not in PORTED:
            port = None
        locals_ = [
            w
            for w in resolver.workloads(local_side)
            if (w.namespace in namespaces if namespaces is not None else True)
        ]
        if not locals_:
            known = resolver.workloads(local_side)
            evidence.ignored["outside the namespaces" if known else "unknown local pod"] += 1
            continue
        if namespaces is None:
            locals_ = [w for w in locals_ if w.namespace not in SYSTEM_NAMESPACES]
            if not locals_:
                evidence.ignored["outside the namespaces"] += 1
                continue
        peers = resolver.peers(peer_side, locals_[0].namespace)
        if isinstance(peers, str):
            evidence.ignored[f"{direction} peer: {peers}"] += 1
            continue
        evidence.used += 1
        for local in locals_:
            evidence.local_namespaces.add(local.namespace)
            for peer in peers:
                evidence.observations.add(Observation(direction, local, peer, protocol, port))
    return evidence
