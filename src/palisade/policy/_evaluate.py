"""The reference evaluator: one flow at a time, with the full trace (spec 4).

This is the definition of Palisade's policy semantics. The vectorised matrix and batch paths in
``_matrix`` compute the same verdicts faster and are tested against this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import groupby
from operator import itemgetter

from palisade.selector import Selector

from ._cluster import Cluster
from ._translate import NAMESPACE_LABEL
from ._types import (
    Action,
    CompiledPolicy,
    CompiledRule,
    Direction,
    DirectionResult,
    Endpoint,
    EntityMatch,
    Flow,
    Hit,
    ICMPMatch,
    IPAddress,
    NetworkSetInfo,
    Outcome,
    PolicyKind,
    PortMatch,
    ServiceInfo,
    TierInfo,
    TraceStep,
    Verdict,
)

PROFILE_TIER = "__PROFILE__"

_STAGED_TWIN = {
    PolicyKind.STAGED_NETWORK_POLICY: PolicyKind.NETWORK_POLICY,
    PolicyKind.STAGED_GLOBAL_NETWORK_POLICY: PolicyKind.GLOBAL_NETWORK_POLICY,
    PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY: PolicyKind.KUBERNETES_NETWORK_POLICY,
}


@dataclass(frozen=True, slots=True)
class TierPolicies:
    tier: TierInfo
    policies: tuple[CompiledPolicy, ...]

    @property
    def has_enforced(self) -> bool:
        return any(not p.staged for p in self.policies)


@dataclass(frozen=True, slots=True)
class _Owner:
    labels: dict[str, str]
    endpoint: Endpoint | None
    network_set: NetworkSetInfo | None


class PolicyEngine:
    """Answers "is this flow allowed, and by which tier, policy and rule?" for one cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._applying: dict[
            tuple[tuple[tuple[str, str], ...], Direction, bool, bool], tuple[TierPolicies, ...]
        ] = {}
        self._selected: dict[tuple[tuple[str, str], ...], frozenset[int]] = {}
        self._ip_owner_cache: dict[IPAddress, tuple[_Owner, ...]] = {}
        self._selector_ip_cache: dict[tuple[Selector, IPAddress], bool] = {}

    # -- indexes ----------------------------------------------------------------------------

    @cached_property
    def _normal_policies(self) -> list[CompiledPolicy]:
        """Policies of the normal pipeline; doNotTrack and preDNAT policies act only on host
        endpoints before connection tracking (spec 4.11)."""
        return [p for p in self.cluster.policies if not (p.do_not_track or p.pre_dnat)]

    @cached_property
    def ordered_tiers(self) -> list[tuple[TierInfo, list[CompiledPolicy], list[CompiledPolicy]]]:
        """(tier, enforced-view policies, pending-view policies) in evaluation order.

        doNotTrack and preDNAT policies act only on host endpoints before connection tracking
        (spec 4.11) and are not part of this pipeline.
        """
        normal = self._normal_policies
        staged_keys = {(_STAGED_TWIN[p.kind], p.namespace, p.name): p for p in normal if p.staged}
        by_tier: dict[str, tuple[list[CompiledPolicy], list[CompiledPolicy]]] = {}
        for policy in normal:
            enforced, pending = by_tier.setdefault(policy.tier, ([], []))
            if policy.staged:
                if policy.staged_action != "Delete":
                    pending.append(policy)
                continue
            enforced.append(policy)
            # A staged policy of the same name previews an update (Set) or a removal (Delete)
            # of this one, so the pending view leaves the enforced version out.
            if (policy.kind, policy.namespace, policy.name) not in staged_keys:
                pending.append(policy)
        tiers = sorted((self.cluster.tier(name) for name in by_tier), key=lambda t: t.sort_key)
        result = []
        for tier in tiers:
            enforced, pending = by_tier[tier.name]
            enforced.sort(key=lambda p: p.sort_key)
            pending.sort(key=lambda p: p.sort_key)
            result.append((tier, enforced, pending))
        return result

    @cached_property
    def _endpoints_by_ip(self) -> dict[IPAddress, list[Endpoint]]:
        index: dict[IPAddress, list[Endpoint]] = {}
        for endpoint in self.cluster.endpoints:
            for ip in endpoint.ips:
                index.setdefault(ip, []).append(endpoint)
        return index

    @cached_property
    def _endpoint_labels(self) -> dict[int, dict[str, str]]:
        return {id(e): dict(e.labels) for e in self.cluster.endpoints}

    @cached_property
    def _service_index(self) -> dict[tuple[str, str], ServiceInfo]:
        return {(s.namespace, s.name): s for s in self.cluster.services}

    def endpoint_for_ip(self, ip: IPAddress) -> Endpoint | None:
        """The workload endpoint that owns ``ip`` (workloads win over host endpoints)."""
        owners = self._endpoints_by_ip.get(ip, [])
        for endpoint in owners:
            if endpoint.kind == "wep":
                return endpoint
        return owners[0] if owners else None

    def describe_ip(self, ip: IPAddress) -> str:
        """A name for an address, as flow logs give one: the endpoint that owns it, else the
        network set whose CIDR contains it most specifically (``ns/name`` or ``name``), else
        ``pvt`` for private and ``pub`` for public addresses."""
        endpoint = self.endpoint_for_ip(ip)
        if endpoint is not None:
            return endpoint.key
        best: tuple[int, str] | None = None
        for network_set in self.cluster.network_sets:
            for net in network_set.nets:
                if ip.version == net.version and ip in net:
                    candidate = (-net.prefixlen, network_set.key)
                    if best is None or candidate < best:
                        best = candidate
        if best is not None:
            return f"networkset {best[1]}"
        return "pvt" if ip.is_private else "pub"

    def _owners(self, ip: IPAddress) -> tuple[_Owner, ...]:
        cached = self._ip_owner_cache.get(ip)
        if cached is not None:
            return cached
        owners = [
            _Owner(self._endpoint_labels[id(e)], e, None) for e in self._endpoints_by_ip.get(ip, [])
        ]
        for network_set in self.cluster.network_sets:
            if any(ip.version == net.version and ip in net for net in network_set.nets):
                owners.append(_Owner(dict(network_set.labels), None, network_set))
        result = tuple(owners)
        self._ip_owner_cache[ip] = result
        return result

    def ip_matches(self, ip: IPAddress, selector: Selector) -> bool:
        """Does ``ip`` belong to an endpoint or network set that ``selector`` matches?"""
        key = (selector, ip)
        cached = self._selector_ip_cache.get(key)
        if cached is None:
            cached = any(selector.matches(owner.labels) for owner in self._owners(ip))
            self._selector_ip_cache[key] = cached
        return cached

    @cached_property
    def _policy_rank_enforced(self) -> dict[int, tuple[int, int, CompiledPolicy]]:
        return {
            id(policy): (t, position, policy)
            for t, (_, enforced, _) in enumerate(self.ordered_tiers)
            for position, policy in enumerate(enforced)
        }

    @cached_property
    def _policy_rank_pending(self) -> dict[int, tuple[int, int, CompiledPolicy]]:
        return {
            id(policy): (t, position, policy)
            for t, (_, _, pending) in enumerate(self.ordered_tiers)
            for position, policy in enumerate(pending)
        }

    @cached_property
    def _policy_rank_traced(self) -> dict[int, tuple[int, int, CompiledPolicy]]:
        """Enforced policies plus the staged ones, in tier order: what an enforced evaluation
        walks past, so that its trace can show the staged policies it skipped."""
        ranks: dict[int, tuple[int, int, CompiledPolicy]] = {}
        for t, (_, enforced, pending) in enumerate(self.ordered_tiers):
            walked = sorted(
                [*enforced, *(p for p in pending if p.staged)], key=lambda p: p.sort_key
            )
            for position, policy in enumerate(walked):
                ranks[id(policy)] = (t, position, policy)
        return ranks

    @cached_property
    def _policies_by_scope(
        self,
    ) -> tuple[list[CompiledPolicy], dict[str, list[CompiledPolicy]]]:
        """Cluster-wide policies, and namespaced ones by namespace: a namespaced policy's
        effective selector requires its namespace (spec 4.4), so only endpoints of that
        namespace need to be tested against it."""
        cluster_wide: list[CompiledPolicy] = []
        by_namespace: dict[str, list[CompiledPolicy]] = {}
        for policy in self._normal_policies:
            if policy.kind.namespaced and policy.namespace is not None:
                by_namespace.setdefault(policy.namespace, []).append(policy)
            else:
                cluster_wide.append(policy)
        return cluster_wide, by_namespace

    def _selected_by(self, labels: tuple[tuple[str, str], ...]) -> frozenset[int]:
        """Ids of the policies whose selector matches these effective labels."""
        cached = self._selected.get(labels)
        if cached is None:
            label_map = dict(labels)
            cluster_wide, by_namespace = self._policies_by_scope
            namespace = label_map.get(NAMESPACE_LABEL)
            candidates = [*cluster_wide, *by_namespace.get(namespace or "", ())]
            cached = frozenset(id(p) for p in candidates if p.selector.matcher(label_map))
            self._selected[labels] = cached
        return cached

    def applying(
        self, endpoint: Endpoint, direction: Direction, *, pending: bool, traced: bool = False
    ) -> tuple[TierPolicies, ...]:
        """Tiers taking part in ``endpoint``'s pipeline for ``direction`` (spec 4.3), each with
        the policies that apply, in order."""
        # Applicability depends only on the effective labels, so endpoints that share them
        # (every replica of a workload) share the answer.
        key = (endpoint.labels, direction, pending, traced)
        cached = self._applying.get(key)
        if cached is not None:
            return cached
        # The selected policies, in evaluation order, grouped into their tiers.
        if pending:
            rank = self._policy_rank_pending
        else:
            rank = self._policy_rank_traced if traced else self._policy_rank_enforced
        chosen = sorted(
            (rank[pid] for pid in self._selected_by(endpoint.labels) if pid in rank),
        )
        result = [
            TierPolicies(self.ordered_tiers[tier_index][0], tuple(p for _, _, p in group))
            for tier_index, group_iter in groupby(
                (entry for entry in chosen if direction in entry[2].types), key=itemgetter(0)
            )
            for group in [list(group_iter)]
        ]
        cached = tuple(result)
        self._applying[key] = cached
        return cached

    # -- rule matching ----------------------------------------------------------------------

    def service_members(
        self, ref_namespace: str, ref_name: str
    ) -> tuple[set[IPAddress], set[tuple[IPAddress, int, int]]]:
        """IPs behind a Service, and its (ip, protocol, target port) triples, both pre-DNAT
        (cluster IP, service port) and post-DNAT (pod IP, resolved target port)."""
        service = self._service_index.get((ref_namespace, ref_name))
        ips: set[IPAddress] = set()
        triples: set[tuple[IPAddress, int, int]] = set()
        if service is None:
            return ips, triples
        for cluster_ip in service.cluster_ips:
            ips.add(cluster_ip)
            for port in service.ports:
                triples.add((cluster_ip, port.protocol, port.port))
        if service.selector is None:
            return ips, triples
        selector = dict(service.selector)
        for endpoint in self.cluster.endpoints:
            if endpoint.kind != "wep" or endpoint.namespace != service.namespace:
                continue
            labels = self._endpoint_labels[id(endpoint)]
            if not all(labels.get(k) == v for k, v in selector.items()):
                continue
            for ip in endpoint.ips:
                ips.add(ip)
                for port in service.ports:
                    target = port.target_port
                    number = (
                        target
                        if isinstance(target, int)
                        else endpoint.named_port(str(target), port.protocol)
                    )
                    if number is not None:
                        triples.add((ip, port.protocol, int(number)))
        return ips, triples

    def _named_port_matches(
        self,
        name: str,
        ip: IPAddress,
        protocol: int,
        port: int,
        selector: Selector | None,
    ) -> bool:
        for owner in self._owners(ip):
            endpoint = owner.endpoint
            if endpoint is None:
                continue
            if selector is not None and not selector.matches(owner.labels):
                continue
            if endpoint.named_port(name, protocol) == port:
                return True
        return False

    def _ports_match(
        self,
        ports: PortMatch,
        ip: IPAddress,
        protocol: int,
        port: int | None,
        selector: Selector | None,
    ) -> bool:
        if port is None:
            return False
        if any(port in r for r in ports.ranges):
            return True
        return any(
            self._named_port_matches(name, ip, protocol, port, selector) for name in ports.names
        )

    def entity_matches(
        self,
        entity: EntityMatch,
        ip: IPAddress,
        port: int | None,
        protocol: int,
        *,
        is_destination: bool,
    ) -> bool:
        if entity.nets is not None and not any(
            ip.version == net.version and ip in net for net in entity.nets
        ):
            return False
        if any(ip.version == net.version and ip in net for net in entity.not_nets):
            return False
        if entity.selector is not None and not self.ip_matches(ip, entity.selector):
            return False
        if entity.not_selector is not None and self.ip_matches(ip, entity.not_selector):
            return False
        if entity.ports and not self._ports_match(
            entity.ports, ip, protocol, port, entity.selector
        ):
            return False
        if entity.not_ports and self._ports_match(
            entity.not_ports, ip, protocol, port, entity.selector
        ):
            return False
        if entity.service is not None:
            ips, triples = self.service_members(entity.service.namespace, entity.service.name)
            if is_destination:
                if port is None or (ip, protocol, port) not in triples:
                    return False
            elif ip not in ips:
                return False
        return True

    @staticmethod
    def _icmp_matches(match: ICMPMatch, flow: Flow) -> bool:
        if match.type is not None and flow.icmp_type != match.type:
            return False
        return not (match.code is not None and flow.icmp_code != match.code)

    def rule_matches(self, rule: CompiledRule, flow: Flow) -> bool:
        if rule.ip_version is not None and flow.src_ip.version != rule.ip_version:
            return False
        if rule.protocol is not None and flow.protocol != rule.protocol:
            return False
        if rule.not_protocol is not None and flow.protocol == rule.not_protocol:
            return False
        if rule.icmp is not None and not self._icmp_matches(rule.icmp, flow):
            return False
        if rule.not_icmp is not None and self._icmp_matches(rule.not_icmp, flow):
            return False
        if not rule.source.is_any and not self.entity_matches(
            rule.source, flow.src_ip, flow.src_port, flow.protocol, is_destination=False
        ):
            return False
        return rule.destination.is_any or self.entity_matches(
            rule.destination, flow.dst_ip, flow.dst_port, flow.protocol, is_destination=True
        )

    # -- the tier algorithm -----------------------------------------------------------------

    def evaluate_direction(
        self, endpoint: Endpoint, direction: Direction, flow: Flow, *, pending: bool = False
    ) -> DirectionResult:
        hits: list[Hit] = []
        logged: list[Hit] = []
        trace: list[TraceStep] = []

        def finish(allowed: bool) -> DirectionResult:
            return DirectionResult(
                endpoint.key, direction, allowed, tuple(hits), tuple(trace), tuple(logged)
            )

        for tier_policies in self.applying(endpoint, direction, pending=pending, traced=True):
            tier = tier_policies.tier
            passed = False
            for policy in tier_policies.policies:
                if policy.staged and not pending:
                    trace.append(
                        TraceStep(tier.name, policy.hit_part, None, Outcome.SKIPPED_STAGED)
                    )
                    continue
                decided = False
                for rule in policy.rules(direction):
                    if not self.rule_matches(rule, flow):
                        continue
                    hit = Hit(tier.name, policy.hit_part, rule.action, rule.index, policy.staged)
                    trace.append(
                        TraceStep(
                            tier.name, policy.hit_part, rule.index, Outcome.MATCHED, rule.action
                        )
                    )
                    if rule.action is Action.LOG:
                        logged.append(hit)
                        continue
                    hits.append(hit)
                    if rule.action is Action.ALLOW:
                        return finish(True)
                    if rule.action is Action.DENY:
                        return finish(False)
                    passed = True
                    decided = True
                    break
                if decided:
                    break
                trace.append(TraceStep(tier.name, policy.hit_part, None, Outcome.NO_MATCH))
            if passed:
                continue
            enforced = [p for p in tier_policies.policies if pending or not p.staged]
            if not enforced:
                continue  # only staged policies applied: no end-of-tier action (spec 4.6)
            last = enforced[-1]
            action = Action.PASS if tier.default_action is Action.PASS else Action.DENY
            hits.append(Hit(tier.name, last.hit_part, action, -1, last.staged))
            trace.append(
                TraceStep(
                    tier.name,
                    last.hit_part,
                    -1,
                    Outcome.END_OF_TIER,
                    action,
                    note=f"no rule matched in tier {tier.name!r}; its default action is "
                    f"{tier.default_action.value}",
                )
            )
            if action is Action.DENY:
                return finish(False)
        return self._evaluate_profiles(endpoint, direction, flow, hits, trace, logged)

    def _evaluate_profiles(
        self,
        endpoint: Endpoint,
        direction: Direction,
        flow: Flow,
        hits: list[Hit],
        trace: list[TraceStep],
        logged: list[Hit],
    ) -> DirectionResult:
        def finish(allowed: bool) -> DirectionResult:
            return DirectionResult(
                endpoint.key, direction, allowed, tuple(hits), tuple(trace), tuple(logged)
            )

        for name in endpoint.profiles:
            profile = self.cluster.profiles.get(name)
            if profile is None:
                continue
            for rule in profile.rules(direction):
                if not self.rule_matches(rule, flow):
                    continue
                hit = Hit(PROFILE_TIER, profile.hit_part, rule.action, rule.index)
                trace.append(
                    TraceStep(
                        PROFILE_TIER, profile.hit_part, rule.index, Outcome.MATCHED, rule.action
                    )
                )
                if rule.action is Action.LOG:
                    logged.append(hit)
                    continue
                # A Pass in a profile denies, as Calico's own evaluator does (spec 4.7).
                allowed = rule.action is Action.ALLOW
                hits.append(Hit(PROFILE_TIER, profile.hit_part, rule.action, rule.index))
                return finish(allowed)
            trace.append(TraceStep(PROFILE_TIER, profile.hit_part, None, Outcome.NO_MATCH))
        trace.append(
            TraceStep(
                PROFILE_TIER,
                "",
                None,
                Outcome.END_OF_TIER,
                Action.DENY,
                note="no profile allowed the traffic: denied",
            )
        )
        return finish(False)

    # -- flows ------------------------------------------------------------------------------

    def evaluate(self, flow: Flow) -> Verdict:
        source = self.endpoint_for_ip(flow.src_ip)
        destination = self.endpoint_for_ip(flow.dst_ip)

        def pipeline(pending: bool) -> tuple[DirectionResult | None, DirectionResult | None]:
            egress = (
                self.evaluate_direction(source, Direction.EGRESS, flow, pending=pending)
                if source is not None
                else None
            )
            ingress = (
                self.evaluate_direction(destination, Direction.INGRESS, flow, pending=pending)
                if destination is not None
                else None
            )
            return egress, ingress

        egress, ingress = pipeline(False)
        pending_egress, pending_ingress = pipeline(True)

        def allowed(*results: DirectionResult | None) -> bool:
            return all(r.allowed for r in results if r is not None)

        return Verdict(
            flow=flow,
            allowed=allowed(egress, ingress),
            egress=egress,
            ingress=ingress,
            pending_allowed=allowed(pending_egress, pending_ingress),
            pending_egress=pending_egress,
            pending_ingress=pending_ingress,
            source_endpoint=source.key if source else None,
            destination_endpoint=destination.key if destination else None,
        )

    def resolve_port(self, destination: Endpoint | None, port: int | str, protocol: int) -> int:
        """A probe port: a number, or a named port resolved on the destination endpoint."""
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        if destination is not None:
            number = destination.named_port(port, protocol)
            if number is not None:
                return number
        raise LookupError(f"{destination.key if destination else '?'} has no port named {port!r}")
