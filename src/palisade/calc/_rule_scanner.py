"""The rule scanner node: active rules → rule intents that name shared sets, and set members.

Each distinct selector used by an active rule (as ``selector`` or ``notSelector``, in any policy
or profile) becomes one IP set; each distinct (selector, port name) one named-port set; each
Service a rule names one address set (source side) and one ``ip,proto:port`` set (destination
side). ``set_to_owners`` / ``owner_to_sets`` count the rules' owners per set, so a set exists
exactly while some active rule uses it and is shared by all of them.

Set members follow the label index: every complete endpoint and network set of the cluster is
a labelled object, and every set's selector is registered under the set's id, so a label
change moves an object's addresses in or out of just the sets whose match changed. Members
are reference-counted per address, as two objects may contribute the same address.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from palisade.datastore import ResourceKey
from palisade.policy import Cluster, PolicyEngine
from palisade.policy._types import (
    CompiledPolicy,
    CompiledProfile,
    CompiledRule,
    EntityMatch,
    ICMPMatch,
    NetworkSetInfo,
    PortMatch,
    ServiceInfo,
    ServiceRef,
    protocol_name,
)
from palisade.selector import ALL, Selector

from ._documents import CompiledEndpoint
from ._intents import (
    EntityIntent,
    ICMPIntent,
    IPSetIntent,
    NamedPortSetIntent,
    PolicyIntent,
    PortsIntent,
    ProfileIntent,
    RuleIntent,
    SetIntent,
)
from ._label_index import SelectorIndex

SetCallback = Callable[[str, SetIntent | None], None]
PolicyCallback = Callable[[str, PolicyIntent | None], None]
ProfileCallback = Callable[[str, ProfileIntent | None], None]


def _short_id(prefix: str, text: str) -> str:
    """``prefix`` + 26 hex digits: at most 30 characters, a legal nftables and ipset name."""
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:26]


def selector_set_id(selector: Selector) -> str:
    return _short_id("pals", selector.unique_id)


def named_port_set_id(selector: Selector | None, port_name: str) -> str:
    return _short_id("paln", f"{selector.unique_id if selector else '*'}|{port_name}")


def service_set_id(service: ServiceRef, *, ports: bool) -> str:
    return _short_id("palw" if ports else "palv", f"{service.namespace}/{service.name}")


def address_member(ip: object) -> str:
    text = str(ip)
    return f"{text}/128" if ":" in text else f"{text}/32"


def port_member(ip: object, protocol: int, port: int) -> str:
    return f"{ip},{protocol_name(protocol).lower()}:{port}"


@dataclass(frozen=True, slots=True)
class _SetDefinition:
    """What a set holds: addresses (selector), named ports, or a Service's addresses/ports."""

    selector: Selector | None = None
    port_name: str | None = None
    service: ServiceRef | None = None
    service_ports: bool = False

    @property
    def is_port_set(self) -> bool:
        return self.port_name is not None or self.service_ports


LabelledObject = CompiledEndpoint | NetworkSetInfo


class RuleScanner:
    def __init__(
        self,
        on_set: SetCallback,
        on_policy: PolicyCallback,
        on_profile: ProfileCallback,
    ) -> None:
        self._on_set = on_set
        self._on_policy = on_policy
        self._on_profile = on_profile
        self._index = SelectorIndex(self._match_started, self._match_stopped)
        self._objects: dict[str, LabelledObject] = {}
        self._services: dict[tuple[str, str], ServiceInfo] = {}
        self._service_key_to_ref: dict[ResourceKey, tuple[str, str]] = {}
        self._definitions: dict[str, _SetDefinition] = {}
        self._members: dict[str, Counter[str]] = {}
        self.set_to_owners: dict[str, set[str]] = {}
        self.owner_to_sets: dict[str, frozenset[str]] = {}
        self._dirty_sets: set[str] = set()
        self.rule_translations = 0

    # -- rule owners ------------------------------------------------------------------------

    def on_policy_active(self, policy_id: str, policy: CompiledPolicy | None) -> None:
        owner = f"policy:{policy_id}"
        if policy is None:
            self._set_owner_sets(owner, {})
            self._on_policy(policy_id, None)
            return
        used: dict[str, _SetDefinition] = {}
        intent = PolicyIntent(
            policy_id,
            self._rules(policy.ingress, used),
            self._rules(policy.egress, used),
        )
        self._set_owner_sets(owner, used)
        self._on_policy(policy_id, intent)

    def on_profile_active(self, profile_id: str, profile: CompiledProfile | None) -> None:
        owner = f"profile:{profile_id}"
        if profile is None:
            self._set_owner_sets(owner, {})
            self._on_profile(profile_id, None)
            return
        used: dict[str, _SetDefinition] = {}
        intent = ProfileIntent(
            profile_id, self._rules(profile.ingress, used), self._rules(profile.egress, used)
        )
        self._set_owner_sets(owner, used)
        self._on_profile(profile_id, intent)

    def _set_owner_sets(self, owner: str, used: dict[str, _SetDefinition]) -> None:
        old = self.owner_to_sets.pop(owner, frozenset())
        new = frozenset(used)
        if new:
            self.owner_to_sets[owner] = new
        for set_id in sorted(new - old):
            owners = self.set_to_owners.setdefault(set_id, set())
            owners.add(owner)
            if len(owners) == 1:
                self._define(set_id, used[set_id])
        for set_id in sorted(old - new):
            owners = self.set_to_owners[set_id]
            owners.discard(owner)
            if not owners:
                del self.set_to_owners[set_id]
                self._undefine(set_id)

    def _define(self, set_id: str, definition: _SetDefinition) -> None:
        self._definitions[set_id] = definition
        self._members[set_id] = Counter()
        self._dirty_sets.add(set_id)
        if definition.service is None:
            self._index.update_selector(set_id, definition.selector or ALL)

    def _undefine(self, set_id: str) -> None:
        if self._definitions[set_id].service is None:
            self._index.update_selector(set_id, None)  # reports every match stopping
        del self._definitions[set_id]
        del self._members[set_id]
        self._dirty_sets.add(set_id)

    # -- rules → intents --------------------------------------------------------------------

    def _rules(
        self, rules: tuple[CompiledRule, ...], used: dict[str, _SetDefinition]
    ) -> tuple[RuleIntent, ...]:
        self.rule_translations += len(rules)
        return tuple(
            RuleIntent(
                rule_index=rule.index,
                action=rule.action,
                ip_version=rule.ip_version,
                protocol=rule.protocol,
                not_protocol=rule.not_protocol,
                icmp=_icmp(rule.icmp),
                not_icmp=_icmp(rule.not_icmp),
                source=self._entity(rule.source, used, destination=False),
                destination=self._entity(rule.destination, used, destination=True),
            )
            for rule in rules
        )

    def _entity(
        self, entity: EntityMatch, used: dict[str, _SetDefinition], *, destination: bool
    ) -> EntityIntent:
        if entity.is_any:
            return EntityIntent()

        def address_set(selector: Selector | None) -> str | None:
            if selector is None:
                return None
            set_id = selector_set_id(selector)
            used[set_id] = _SetDefinition(selector=selector)
            return set_id

        def ports(match: PortMatch) -> PortsIntent:
            # Named ports resolve on endpoints the entity's (effective) selector matches.
            named: list[str] = []
            for name in match.names:
                set_id = named_port_set_id(entity.selector, name)
                used[set_id] = _SetDefinition(selector=entity.selector, port_name=name)
                named.append(set_id)
            return PortsIntent(tuple((r.low, r.high) for r in match.ranges), tuple(named))

        service_ips: str | None = None
        service_ports: str | None = None
        if entity.service is not None:
            set_id = service_set_id(entity.service, ports=destination)
            used[set_id] = _SetDefinition(service=entity.service, service_ports=destination)
            if destination:
                service_ports = set_id
            else:
                service_ips = set_id
        return EntityIntent(
            nets=tuple(str(n) for n in entity.nets) if entity.nets is not None else None,
            not_nets=tuple(str(n) for n in entity.not_nets),
            selector_set_id=address_set(entity.selector),
            not_selector_set_id=address_set(entity.not_selector),
            ports=ports(entity.ports),
            not_ports=ports(entity.not_ports),
            service_set_id=service_ips,
            service_port_set_id=service_ports,
        )

    # -- labelled objects -------------------------------------------------------------------

    def on_endpoint_update(self, endpoint_id: str, endpoint: CompiledEndpoint | None) -> None:
        if endpoint is not None and not endpoint.complete:
            endpoint = None  # incomplete labels must not decide set membership
        namespaces = {
            o.endpoint.namespace
            for o in (endpoint, self._objects.get(endpoint_id))
            if isinstance(o, CompiledEndpoint)
        }
        self._update_object(endpoint_id, endpoint)
        if namespaces:
            self._dirty_service_sets(lambda ref: ref.namespace in namespaces)

    def on_network_set_update(
        self, network_set_id: str, network_set: NetworkSetInfo | None, complete: bool
    ) -> None:
        self._update_object(network_set_id, network_set if complete else None)

    def _update_object(self, object_id: str, new: LabelledObject | None) -> None:
        old = self._objects.get(object_id)
        if old == new:
            return
        labels = None if new is None else dict(_labels(new))
        if old is not None and (new is None or _contribution_key(old) != _contribution_key(new)):
            # Addresses or named ports change: leave every set with the old ones first.
            self._index.update_labels(object_id, None)
        if new is None:
            self._objects.pop(object_id, None)
        else:
            self._objects[object_id] = new
        self._index.update_labels(object_id, labels)

    def _match_started(self, set_id: str, object_id: str) -> None:
        members = self._members[set_id]
        for member in self._contribution(set_id, self._objects[object_id]):
            members[member] += 1
        self._dirty_sets.add(set_id)

    def _match_stopped(self, set_id: str, object_id: str) -> None:
        members = self._members.get(set_id)
        if members is None:
            return
        for member in self._contribution(set_id, self._objects[object_id]):
            members[member] -= 1
            if members[member] <= 0:
                del members[member]
        self._dirty_sets.add(set_id)

    def _contribution(self, set_id: str, obj: LabelledObject) -> list[str]:
        definition = self._definitions[set_id]
        if isinstance(obj, NetworkSetInfo):
            return [] if definition.is_port_set else [str(net) for net in obj.nets]
        endpoint = obj.endpoint
        if definition.port_name is None:
            return [address_member(ip) for ip in endpoint.ips]
        return [
            port_member(ip, named.protocol, named.port)
            for named in endpoint.named_ports
            if named.name == definition.port_name
            for ip in endpoint.ips
        ]

    # -- services ---------------------------------------------------------------------------

    def on_service_update(self, key: ResourceKey, service: ServiceInfo | None) -> None:
        old_ref = self._service_key_to_ref.pop(key, None)
        if old_ref is not None:
            self._services.pop(old_ref, None)
        refs = {old_ref} if old_ref else set()
        if service is not None:
            ref = (service.namespace, service.name)
            self._services[ref] = service
            self._service_key_to_ref[key] = ref
            refs.add(ref)
        self._dirty_service_sets(lambda r: (r.namespace, r.name) in refs)

    def _dirty_service_sets(self, wanted: Callable[[ServiceRef], bool]) -> None:
        for set_id, definition in self._definitions.items():
            if definition.service is not None and wanted(definition.service):
                self._dirty_sets.add(set_id)

    def _service_members(self, definition: _SetDefinition) -> frozenset[str]:
        """The engine's own answer for one Service, from a snapshot of just that Service and
        the complete workload endpoints of its namespace."""
        assert definition.service is not None
        ref = definition.service
        service = self._services.get((ref.namespace, ref.name))
        if service is None:
            return frozenset()
        endpoints = [
            o.endpoint
            for o in self._objects.values()
            if isinstance(o, CompiledEndpoint) and o.endpoint.namespace == ref.namespace
        ]
        engine = PolicyEngine(Cluster(endpoints=endpoints, services=[service]))
        ips, triples = engine.service_members(ref.namespace, ref.name)
        if definition.service_ports:
            return frozenset(port_member(ip, proto, port) for ip, proto, port in triples)
        return frozenset(address_member(ip) for ip in ips)

    # -- outputs ----------------------------------------------------------------------------

    def flush(self) -> None:
        dirty, self._dirty_sets = self._dirty_sets, set()
        for set_id in sorted(dirty):
            definition = self._definitions.get(set_id)
            if definition is None:
                self._on_set(set_id, None)
                continue
            if definition.service is not None:
                members = self._service_members(definition)
            else:
                members = frozenset(self._members[set_id])
            if definition.is_port_set:
                self._on_set(set_id, NamedPortSetIntent(set_id, members))
            else:
                self._on_set(set_id, IPSetIntent(set_id, members))


def _icmp(match: ICMPMatch | None) -> ICMPIntent | None:
    return ICMPIntent(match.type, match.code) if match is not None else None


def _labels(obj: LabelledObject) -> tuple[tuple[str, str], ...]:
    return obj.endpoint.labels if isinstance(obj, CompiledEndpoint) else obj.labels


def _contribution_key(obj: LabelledObject) -> object:
    if isinstance(obj, CompiledEndpoint):
        return (obj.endpoint.ips, obj.endpoint.named_ports)
    return obj.nets
