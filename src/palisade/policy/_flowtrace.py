"""What a node's flow logs need from the policy engine beyond the kernel's own trace.

The kernel tells the agent which rules decided a connection (the *enforced* trace, spec 6.2).
Two fields of a Calico flow record cannot come from there, and :class:`FlowTracer` computes
them from one compiled snapshot of the datastore (one *policy generation*):

- **the pending trace** (spec 4.10, 6.2): the same tier algorithm with every staged policy
  enforced in its place (``stagedAction: Set``, ``Learn`` and ``Ignore`` alike; ``Delete``
  leaves the same-named enforced policy out), in Calico's ``index|tier|kind:ns/name|action|rule``
  strings. Where no staged policy changes which policies apply to the reporting endpoint in
  the flow's direction, the pending evaluation *is* the enforced one, and
  :meth:`FlowTracer.pending` answers ``None``: the caller keeps the kernel's trace (Calico
  writes the enforced hits as the pending ones then);
- **the destination's Service** (spec 6.1 ``dest_service_*``): the Service whose cluster IP
  and port the flow was sent to, or — with no Service DNAT in the path, as in the lab — the
  Service that selects the destination pod and whose ``targetPort`` (a number, or a container
  port's name resolved on that pod) is the flow's destination port and protocol.

Both are pure functions of the snapshot and the flow's addresses, protocol and ports, so each
answer is cached per (direction, source, destination, protocol, destination port) — the source
port joins the key only when some rule matches source ports — for as long as the snapshot
lives; a new generation is a new tracer. Pods have one address per IP family, so the cache is
in effect per (source endpoint, destination endpoint, protocol, port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._cluster import Cluster
from ._evaluate import PolicyEngine
from ._types import Direction, Endpoint, Flow, IPAddress, ServiceInfo

FlowDirection = Literal["ingress", "egress"]

STAGED_POLICY_KINDS = frozenset(
    {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"}
)
WORKLOAD_CONTROLLER_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_PORTED = frozenset({6, 17, 132})
_DIRECTIONS = {"ingress": Direction.INGRESS, "egress": Direction.EGRESS}

PendingKey = tuple[str, int, str, str, int | None, int | None]
ServiceKey = tuple[str, int, int | None]


@dataclass(frozen=True, slots=True)
class ServiceHit:
    """A flow record's ``dest_service_*`` fields: the Service's namespace and name, the name
    of the service port (``-`` for an unnamed port, ``*`` when ports of several names fit) and
    its number (``None`` when several numbers fit)."""

    namespace: str
    name: str
    port_name: str
    port: int | None


def live_documents(documents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The documents of a live datastore as the dataplane sees them: workload controllers
    produce no endpoints (only Pods do) and a pod without an address owns none, so neither is
    given the offline addresses ``Cluster.from_documents`` invents for plain manifests."""
    kept = []
    for document in documents:
        kind = document.get("kind")
        if kind in WORKLOAD_CONTROLLER_KINDS:
            continue
        if kind == "Pod":
            status = document.get("status") or {}
            if not (status.get("podIP") or status.get("podIPs")):
                continue
        kept.append(document)
    return kept


class FlowTracer:
    """The pending trace and the destination Service of flows, against one cluster snapshot
    (see the module docstring). Not thread-safe: one caller (the flow reporter's thread)."""

    def __init__(self, engine: PolicyEngine, *, cache_limit: int = 65_536) -> None:
        self.engine = engine
        self.cache_limit = cache_limit
        # The pending view differs from the enforced one somewhere: some tier's list changes.
        self.has_staged = any(
            [id(p) for p in enforced] != [id(p) for p in pending]
            for _, enforced, pending in engine.ordered_tiers
        )
        cluster = engine.cluster
        rules = [
            rule for policy in cluster.policies for rule in (*policy.ingress, *policy.egress)
        ] + [
            rule
            for profile in cluster.profiles.values()
            for rule in (*profile.ingress, *profile.egress)
        ]
        self.uses_source_ports = any(r.source.ports or r.source.not_ports for r in rules)
        self._services = sorted(cluster.services, key=lambda s: (s.namespace, s.name))
        self._services_by_namespace: dict[str, list[ServiceInfo]] = {}
        for service in self._services:
            if service.selector:  # no selector (or an empty one): no pods behind it
                self._services_by_namespace.setdefault(service.namespace, []).append(service)
        self._cluster_ips = {ip for s in self._services for ip in s.cluster_ips}
        self._pending: dict[PendingKey, tuple[str, ...] | None] = {}
        self._service: dict[ServiceKey, ServiceHit | None] = {}
        self._differs: dict[tuple[tuple[tuple[str, str], ...], Direction], bool] = {}
        self._addresses: dict[str, IPAddress | None] = {}
        self.evaluations = 0
        """Pending evaluations run (cache misses that needed the engine)."""

    @classmethod
    def from_documents(
        cls, documents: Iterable[Mapping[str, Any]], *, cache_limit: int = 65_536
    ) -> FlowTracer:
        """A tracer over a live datastore's documents (see :func:`live_documents`)."""
        cluster = Cluster.from_documents(live_documents(documents))
        return cls(PolicyEngine(cluster), cache_limit=cache_limit)

    def complete(
        self,
        direction: FlowDirection,
        flow: tuple[int, str, int | None, str, int | None],
    ) -> tuple[tuple[str, ...] | None, ServiceHit | None]:
        """Both answers for a flow collector's 5-tuple ``(protocol, source, source port,
        destination, destination port)`` as its reporting endpoint sees it in ``direction``:
        (:meth:`pending`, :meth:`service`)."""
        protocol, source, source_port, destination, destination_port = flow
        return (
            self.pending(direction, protocol, source, source_port, destination, destination_port),
            self.service(destination, protocol, destination_port),
        )

    # -- the pending trace --------------------------------------------------------------------

    def pending(
        self,
        direction: FlowDirection,
        protocol: int,
        source: str,
        source_port: int | None,
        destination: str,
        destination_port: int | None,
    ) -> tuple[str, ...] | None:
        """The pending trace of the reporting endpoint (the source for ``egress``, the
        destination for ``ingress``), or ``None`` when it is the enforced trace (no staged
        policy changes what applies there, or the snapshot does not know the endpoint)."""
        if not self.has_staged:
            return None
        key: PendingKey = (
            direction,
            protocol,
            source,
            destination,
            destination_port,
            source_port if self.uses_source_ports else None,
        )
        try:
            return self._pending[key]
        except KeyError:
            pass
        result = self._evaluate(
            direction, protocol, source, source_port, destination, destination_port
        )
        if len(self._pending) >= self.cache_limit:
            self._pending.clear()
        self._pending[key] = result
        return result

    def _evaluate(
        self,
        direction: FlowDirection,
        protocol: int,
        source: str,
        source_port: int | None,
        destination: str,
        destination_port: int | None,
    ) -> tuple[str, ...] | None:
        src_ip, dst_ip = self._address(source), self._address(destination)
        if src_ip is None or dst_ip is None:
            return None
        way = _DIRECTIONS[direction]
        local = self.engine.endpoint_for_ip(src_ip if way is Direction.EGRESS else dst_ip)
        if local is None or not self._staged_changes(local, way):
            return None
        ported = protocol in _PORTED
        flow = Flow(
            src_ip,
            dst_ip,
            protocol,
            dst_port=destination_port if ported else None,
            src_port=source_port if ported else None,
        )
        self.evaluations += 1
        result = self.engine.evaluate_direction(local, way, flow, pending=True)
        return tuple(result.policy_strings())

    def _address(self, text: str) -> IPAddress | None:
        try:
            return self._addresses[text]
        except KeyError:
            pass
        if len(self._addresses) >= self.cache_limit:
            self._addresses.clear()
        try:
            address: IPAddress | None = ipaddress.ip_address(text)
        except ValueError:
            address = None
        self._addresses[text] = address
        return address

    def _staged_changes(self, endpoint: Endpoint, direction: Direction) -> bool:
        """Do the pending and enforced views apply different policies to ``endpoint``?"""
        key = (endpoint.labels, direction)
        cached = self._differs.get(key)
        if cached is None:

            def shape(pending: bool) -> list[tuple[str, list[int]]]:
                applying = self.engine.applying(endpoint, direction, pending=pending)
                return [(t.tier.name, [id(p) for p in t.policies]) for t in applying]

            cached = self._differs[key] = shape(True) != shape(False)
        return cached

    # -- the destination's Service ------------------------------------------------------------

    def service(self, destination: str, protocol: int, port: int | None) -> ServiceHit | None:
        """The Service a flow to ``destination`` on ``port``/``protocol`` went to, if any."""
        if not self._services or port is None:
            return None
        key: ServiceKey = (destination, protocol, port)
        try:
            return self._service[key]
        except KeyError:
            pass
        result = self._find_service(destination, protocol, port)
        if len(self._service) >= self.cache_limit:
            self._service.clear()
        self._service[key] = result
        return result

    def _find_service(self, destination: str, protocol: int, port: int) -> ServiceHit | None:
        ip = self._address(destination)
        if ip is None:
            return None
        if ip in self._cluster_ips:  # before Service DNAT: the cluster IP and service port
            for service in self._services:
                if ip in service.cluster_ips:
                    found = [p for p in service.ports if p.protocol == protocol and p.port == port]
                    if found:
                        return _hit(service, found)
            return None
        endpoint = self.engine.endpoint_for_ip(ip)
        if endpoint is None or endpoint.kind != "wep" or endpoint.namespace is None:
            return None
        labels = dict(endpoint.labels)
        for service in self._services_by_namespace.get(endpoint.namespace, ()):
            assert service.selector is not None
            if not all(labels.get(k) == v for k, v in service.selector):
                continue
            found = [
                p
                for p in service.ports
                if p.protocol == protocol
                and _target_port(endpoint, p.target_port, protocol) == port
            ]
            if found:
                return _hit(service, found)
        return None


def _hit(service: ServiceInfo, ports: list[Any]) -> ServiceHit:
    names = {str(p.name) if p.name else "-" for p in ports}
    numbers = {int(p.port) for p in ports}
    return ServiceHit(
        service.namespace,
        service.name,
        names.pop() if len(names) == 1 else "*",
        numbers.pop() if len(numbers) == 1 else None,
    )


def _target_port(endpoint: Endpoint, target: int | str, protocol: int) -> int | None:
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    return endpoint.named_port(target, protocol)
