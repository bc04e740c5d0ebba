"""A recording fake dataplane and a tiny interpreter of intents, for the calc tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from palisade.calc import (
    KUBERNETES_NETWORK_POLICY_KIND,
    EndpointIntent,
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
from palisade.datastore import ResourceKey
from palisade.policy import Action, Flow, protocol_name


class OrderError(AssertionError):
    """The dataplane was told something out of dependency order."""


@dataclass
class RecordingDataplane:
    """Applies callbacks to a state and checks every reference resolves when it is made."""

    sets: dict[str, SetIntent] = field(default_factory=dict)
    policies: dict[str, PolicyIntent] = field(default_factory=dict)
    profiles: dict[str, ProfileIntent] = field(default_factory=dict)
    endpoints: dict[str, EndpointIntent] = field(default_factory=dict)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        self.calls.append(("set", set_id, ipset is not None))
        if ipset is None:
            users = [
                p
                for p, intent in [*self.policies.items(), *self.profiles.items()]
                if set_id in _set_ids(intent)
            ]
            if users:
                raise OrderError(f"set {set_id} removed while {users} use it")
            self.sets.pop(set_id)
        else:
            assert ipset.set_id == set_id
            self.sets[set_id] = ipset

    def _check_sets(self, intent: PolicyIntent | ProfileIntent) -> None:
        missing = _set_ids(intent) - set(self.sets)
        if missing:
            raise OrderError(f"{intent} refers to missing sets {missing}")

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        self.calls.append(("policy", policy_id, policy is not None))
        if policy is None:
            users = [
                e
                for e, intent in self.endpoints.items()
                if any(
                    policy_id in t.policy_ids for t in intent.ingress_tiers + intent.egress_tiers
                )
            ]
            if users:
                raise OrderError(f"policy {policy_id} removed while {users} use it")
            self.policies.pop(policy_id)
        else:
            self._check_sets(policy)
            self.policies[policy_id] = policy

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        self.calls.append(("profile", profile_id, profile is not None))
        if profile is None:
            users = [e for e, i in self.endpoints.items() if profile_id in i.profile_ids]
            if users:
                raise OrderError(f"profile {profile_id} removed while {users} use it")
            self.profiles.pop(profile_id)
        else:
            self._check_sets(profile)
            self.profiles[profile_id] = profile

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        self.calls.append(("endpoint", endpoint_id, endpoint is not None))
        if endpoint is None:
            self.endpoints.pop(endpoint_id)
            return
        for tier in endpoint.ingress_tiers + endpoint.egress_tiers:
            missing = set(tier.policy_ids) - set(self.policies)
            if missing:
                raise OrderError(f"{endpoint_id} refers to missing policies {missing}")
        missing = set(endpoint.profile_ids) - set(self.profiles)
        if missing:
            raise OrderError(f"{endpoint_id} refers to missing profiles {missing}")
        self.endpoints[endpoint_id] = endpoint

    def state(self) -> tuple[object, ...]:
        return (
            dict(self.sets),
            dict(self.policies),
            dict(self.profiles),
            dict(self.endpoints),
        )

    @property
    def empty(self) -> bool:
        return not (self.sets or self.policies or self.profiles or self.endpoints)


def _entity_set_ids(entity: EntityIntent) -> set[str]:
    ids = {
        entity.selector_set_id,
        entity.not_selector_set_id,
        entity.service_set_id,
        entity.service_port_set_id,
        *entity.ports.named_port_set_ids,
        *entity.not_ports.named_port_set_ids,
    }
    return {i for i in ids if i is not None}


def _set_ids(intent: PolicyIntent | ProfileIntent) -> set[str]:
    return {
        set_id
        for rule in intent.ingress + intent.egress
        for entity in (rule.source, rule.destination)
        for set_id in _entity_set_ids(entity)
    }


# -- the interpreter ----------------------------------------------------------------------------


class Interpreter:
    """Walks intent chains for one flow the way a dataplane's rules would."""

    def __init__(self, dataplane: RecordingDataplane) -> None:
        self.dp = dataplane
        self._networks: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}

    def _in_set(self, set_id: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        ipset = self.dp.sets[set_id]
        assert isinstance(ipset, IPSetIntent)
        nets = self._networks.get(set_id)
        if nets is None:
            nets = [ipaddress.ip_network(m) for m in ipset.members]
            self._networks[set_id] = nets
        return any(ip.version == n.version and ip in n for n in nets)

    def _in_port_set(self, set_id: str, member: str) -> bool:
        ipset = self.dp.sets[set_id]
        assert isinstance(ipset, NamedPortSetIntent)
        return member in ipset.members

    def _ports(
        self,
        ports: PortsIntent,
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        protocol: int,
        port: int | None,
    ) -> bool:
        if port is None:
            return False
        if any(low <= port <= high for low, high in ports.ranges):
            return True
        member = f"{ip},{protocol_name(protocol).lower()}:{port}"
        return any(self._in_port_set(s, member) for s in ports.named_port_set_ids)

    def _entity(
        self,
        entity: EntityIntent,
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        port: int | None,
        protocol: int,
    ) -> bool:
        if entity.nets is not None and not any(
            ip.version == n.version and ip in n for n in map(ipaddress.ip_network, entity.nets)
        ):
            return False
        if any(
            ip.version == n.version and ip in n for n in map(ipaddress.ip_network, entity.not_nets)
        ):
            return False
        if entity.selector_set_id is not None and not self._in_set(entity.selector_set_id, ip):
            return False
        if entity.not_selector_set_id is not None and self._in_set(entity.not_selector_set_id, ip):
            return False
        if entity.ports and not self._ports(entity.ports, ip, protocol, port):
            return False
        if entity.not_ports and self._ports(entity.not_ports, ip, protocol, port):
            return False
        if entity.service_set_id is not None and not self._in_set(entity.service_set_id, ip):
            return False
        if entity.service_port_set_id is not None:
            member = f"{ip},{protocol_name(protocol).lower()}:{port}"
            if port is None or not self._in_port_set(entity.service_port_set_id, member):
                return False
        return True

    @staticmethod
    def _icmp(match: ICMPIntent, flow: Flow) -> bool:
        if match.type is not None and flow.icmp_type != match.type:
            return False
        return not (match.code is not None and flow.icmp_code != match.code)

    def rule_matches(self, rule: RuleIntent, flow: Flow) -> bool:
        if rule.ip_version is not None and flow.src_ip.version != rule.ip_version:
            return False
        if rule.protocol is not None and flow.protocol != rule.protocol:
            return False
        if rule.not_protocol is not None and flow.protocol == rule.not_protocol:
            return False
        if rule.icmp is not None and not self._icmp(rule.icmp, flow):
            return False
        if rule.not_icmp is not None and self._icmp(rule.not_icmp, flow):
            return False
        if not self._entity(rule.source, flow.src_ip, flow.src_port, flow.protocol):
            return False
        return self._entity(rule.destination, flow.dst_ip, flow.dst_port, flow.protocol)

    def allowed(self, endpoint: EndpointIntent, ingress: bool, flow: Flow) -> bool:
        if endpoint.deny_all:
            return False
        for tier in endpoint.ingress_tiers if ingress else endpoint.egress_tiers:
            passed = False
            for policy_id in tier.policy_ids:
                policy = self.dp.policies[policy_id]
                verdict = self._first_verdict(policy.ingress if ingress else policy.egress, flow)
                if verdict is Action.ALLOW:
                    return True
                if verdict is Action.DENY:
                    return False
                if verdict is Action.PASS:
                    passed = True
                    break
            if passed or tier.default_action is Action.PASS:
                continue
            return False
        for profile_id in endpoint.profile_ids:
            profile = self.dp.profiles[profile_id]
            verdict = self._first_verdict(profile.ingress if ingress else profile.egress, flow)
            if verdict is not None:
                return verdict is Action.ALLOW  # Pass in a profile denies
        return False

    def _first_verdict(self, rules: tuple[RuleIntent, ...], flow: Flow) -> Action | None:
        for rule in rules:
            if rule.action is Action.LOG or not self.rule_matches(rule, flow):
                continue
            return rule.action
        return None


def resource_key(document: dict[str, object]) -> ResourceKey:
    """The datastore key a document is stored under (Kubernetes NetworkPolicy has its own)."""
    kind = str(document["kind"])
    if kind == "NetworkPolicy" and str(document.get("apiVersion", "")).startswith(
        "networking.k8s.io"
    ):
        kind = KUBERNETES_NETWORK_POLICY_KIND
    meta = document["metadata"]
    assert isinstance(meta, dict)
    namespace = meta.get("namespace")
    return ResourceKey(kind, str(namespace) if namespace else None, str(meta["name"]))
