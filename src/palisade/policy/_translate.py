"""Resource documents → the engine's compiled form, with Calico's conversions.

Input is validated resource documents (the camelCase JSON form that ``palisade.model`` produces and
the datastore keeps), so this module depends on the wire format Calico and Kubernetes define, not
on Python attribute names. It does what Calico's update processors and Kubernetes converters do:

- policy selectors get their namespace / service-account scoping (spec 4.4);
- rule selectors get theirs (spec 4.5);
- Kubernetes NetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy and
  ClusterNetworkPolicy become tiered Calico policies (spec 5);
- pods, host endpoints and network sets get their effective labels (spec 1.11).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from palisade.selector import Selector, SelectorError, and_selectors, parse

from ._types import (
    PORTED_PROTOCOLS,
    Action,
    CompiledPolicy,
    CompiledProfile,
    CompiledRule,
    Direction,
    EntityMatch,
    ICMPMatch,
    IPAddress,
    IPNetwork,
    NamedPort,
    PolicyKind,
    PortMatch,
    PortRange,
    ServiceRef,
    protocol_number,
)

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAME_LABEL = "projectcalico.org/name"
K8S_NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."

HAS_NAMESPACE = parse(f"has({NAMESPACE_LABEL})")
HAS_NO_NAMESPACE = parse(f"!has({NAMESPACE_LABEL})")
HAS_SERVICE_ACCOUNT = parse(f"has({SERVICE_ACCOUNT_LABEL})")
K8S_ORCHESTRATED = f"{ORCHESTRATOR_LABEL} == 'k8s'"

DEFAULT_TIER = "default"
KUBERNETES_POLICY_ORDER = 1000.0


class TranslationError(ValueError):
    """A resource that validated but cannot be compiled (e.g. a selector that does not parse)."""


Document = Mapping[str, Any]


def _spec(doc: Document) -> Mapping[str, Any]:
    spec = doc.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _meta(doc: Document) -> Mapping[str, Any]:
    meta = doc.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(doc: Document) -> dict[str, str]:
    labels = _meta(doc).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


# Memos for one compilation of a cluster (see :func:`compile_memo`): selectors and entity
# rules repeat across the policies of a cluster (the same peers, DNS and monitoring rules,
# namespace terms), and compiling them is pure. Nothing is kept between compilations.
_MEMO: ContextVar[dict[object, Any] | None] = ContextVar("palisade_translate_memo", default=None)


@contextmanager
def compile_memo() -> Iterator[None]:
    """Share compiled selectors and entity rules between the policies compiled inside."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _freeze(value: Any) -> Any:
    """A hashable image of a document fragment (mappings, lists, scalars), types kept."""
    if isinstance(value, Mapping):
        return (dict, tuple((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (list, tuple(_freeze(v) for v in value))
    return (type(value), value)


def _intern(selector: Selector) -> Selector:
    """The first equal selector of this compilation, so that equal selectors built different
    ways share one object (and one compiled matcher)."""
    memo = _MEMO.get()
    if memo is None:
        return selector
    interned: Selector = memo.setdefault(("interned", selector), selector)
    return interned


def _parse(text: str, where: str) -> Selector:
    memo = _MEMO.get()
    if memo is not None:
        cached = memo.get(("selector", text))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
    try:
        selector = parse(text)
    except SelectorError as exc:
        raise TranslationError(f"{where}: invalid selector {text!r}: {exc}") from None
    if memo is not None:
        memo[("selector", text)] = selector
    return selector


def parse_net(text: str) -> IPNetwork:
    """A CIDR or a bare address; host bits are allowed and masked off (Calico and Kubernetes
    normalise ``10.0.0.1/24`` to ``10.0.0.0/24``)."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.strip())


# --------------------------------------------------------------------------------------------
# Ports


def _parse_ports(values: Sequence[int | str] | None) -> PortMatch:
    ranges: list[PortRange] = []
    names: list[str] = []
    for value in values or ():
        if isinstance(value, int):
            ranges.append(PortRange(value, value))
            continue
        text = str(value)
        if text.isdigit():
            ranges.append(PortRange(int(text), int(text)))
        elif ":" in text and all(part.isdigit() for part in text.split(":", 1)):
            low, high = (int(part) for part in text.split(":", 1))
            ranges.append(PortRange(low, high))
        else:
            names.append(text)
    return PortMatch(tuple(ranges), tuple(names))


def merge_port_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sort and merge into the fewest ranges (``80, 81, 82, 9090`` → ``80:82, 9090``)."""
    merged: list[PortRange] = []
    for current in sorted(ranges, key=lambda r: (r.low, r.high)):
        if merged and current.low <= merged[-1].high + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.low, max(last.high, current.high))
        else:
            merged.append(current)
    return tuple(merged)


# --------------------------------------------------------------------------------------------
# Calico policies


@dataclass(frozen=True, slots=True)
class _Scope:
    """Where a rule's selectors are evaluated: the policy's namespace, or cluster-wide."""

    namespace: str | None


def _namespace_term(namespace: str) -> Selector:
    return parse(f"{NAMESPACE_LABEL} == {_quote(namespace)}")


def _combine(current: Selector | None, extra: Selector) -> Selector:
    return extra if current is None else and_selectors(current, extra)


def policy_selector(
    spec: Mapping[str, Any], namespace: str | None, where: str, *, namespaced: bool
) -> Selector:
    """The effective policy selector of spec 4.4."""
    text = str(spec.get("selector") or "").strip()
    current: Selector | None = _parse(text, f"{where}: spec.selector") if text else None
    if namespaced:
        assert namespace is not None
        current = _combine(current, _namespace_term(namespace))
        sa_text = str(spec.get("serviceAccountSelector") or "").strip()
        if sa_text:
            try:
                sa = parse(sa_text).with_label_prefix(SERVICE_ACCOUNT_PREFIX)
            except SelectorError:
                sa = None  # Calico ignores an SA selector that does not parse (spec 4.4).
            if sa is not None:
                current = _combine(current, sa)
        return current
    ns_text = str(spec.get("namespaceSelector") or "").strip()
    if ns_text:
        ns = _parse(ns_text, f"{where}: spec.namespaceSelector").with_label_prefix(NAMESPACE_PREFIX)
        current = _combine(current, ns).replace_calls(all_with=HAS_NAMESPACE)
    sa_text = str(spec.get("serviceAccountSelector") or "").strip()
    if sa_text:
        sa = _parse(sa_text, f"{where}: spec.serviceAccountSelector").with_label_prefix(
            SERVICE_ACCOUNT_PREFIX
        )
        current = _combine(current, sa).replace_calls(all_with=HAS_SERVICE_ACCOUNT)
    return _intern(current if current is not None else parse("all()"))


def compile_entity(entity: Mapping[str, Any] | None, scope: _Scope, where: str) -> EntityMatch:
    """An EntityRule with the selector scoping of spec 4.5."""
    if not entity:
        return EntityMatch()
    memo = _MEMO.get()
    if memo is None:
        return _compile_entity(entity, scope, where)
    try:
        key = ("entity", scope.namespace, _freeze(entity))
        hash(key)
    except TypeError:  # an unhashable scalar somewhere: compile without the memo
        return _compile_entity(entity, scope, where)
    cached: EntityMatch | None = memo.get(key)
    if cached is None:
        cached = memo[key] = _compile_entity(entity, scope, where)
    return cached


def _compile_entity(entity: Mapping[str, Any], scope: _Scope, where: str) -> EntityMatch:
    sa_part: Selector | None = None
    service_accounts = entity.get("serviceAccounts")
    if service_accounts:
        sa_selector_text = str(service_accounts.get("selector") or "").strip()
        if sa_selector_text:
            sa_part = _parse(sa_selector_text, f"{where}.serviceAccounts.selector")
            sa_part = sa_part.with_label_prefix(SERVICE_ACCOUNT_PREFIX)
        names = [str(n) for n in service_accounts.get("names") or ()]
        if names:
            names_sel = parse(
                f"{SERVICE_ACCOUNT_LABEL} in {{{', '.join(_quote(n) for n in names)}}}"
            )
            sa_part = _combine(sa_part, names_sel)

    ns_part: Selector | None = None
    ns_text = str(entity.get("namespaceSelector") or "").strip()
    if ns_text:
        ns_part = (
            _parse(ns_text, f"{where}.namespaceSelector")
            .with_label_prefix(NAMESPACE_PREFIX)
            .replace_calls(all_with=HAS_NAMESPACE, global_with=HAS_NO_NAMESPACE)
        )
    elif scope.namespace is not None:
        ns_part = _namespace_term(scope.namespace)

    selector_text = str(entity.get("selector") or "").strip()
    sel_part = sa_part
    if selector_text:
        sel_part = _combine(sel_part, _parse(selector_text, f"{where}.selector"))

    not_selector_text = str(entity.get("notSelector") or "").strip()
    not_selector = _parse(not_selector_text, f"{where}.notSelector") if not_selector_text else None

    effective: Selector | None = sel_part
    if ns_part is not None and (sel_part is not None or not_selector is not None or ns_text):
        effective = ns_part if sel_part is None else and_selectors(ns_part, sel_part)

    nets_raw = entity.get("nets")
    nets = tuple(parse_net(str(n)) for n in nets_raw) if nets_raw else None
    not_nets = tuple(parse_net(str(n)) for n in entity.get("notNets") or ())

    service: ServiceRef | None = None
    services = entity.get("services")
    if services:
        service_ns = str(services.get("namespace") or "") or (scope.namespace or "")
        service = ServiceRef(service_ns, str(services.get("name") or ""))

    return EntityMatch(
        nets=nets,
        not_nets=not_nets,
        selector=_intern(effective) if effective is not None else None,
        not_selector=_intern(not_selector) if not_selector is not None else None,
        ports=_parse_ports(entity.get("ports")),
        not_ports=_parse_ports(entity.get("notPorts")),
        service=service,
    )


def _icmp(value: Mapping[str, Any] | None) -> ICMPMatch | None:
    if not value:
        return None
    icmp_type = value.get("type")
    icmp_code = value.get("code")
    return ICMPMatch(
        int(icmp_type) if icmp_type is not None else None,
        int(icmp_code) if icmp_code is not None else None,
    )


def compile_rule(rule: Mapping[str, Any], index: int, scope: _Scope, where: str) -> CompiledRule:
    protocol = rule.get("protocol")
    not_protocol = rule.get("notProtocol")
    ip_version = rule.get("ipVersion")
    metadata = rule.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return CompiledRule(
        index=index,
        action=Action(str(rule.get("action"))),
        ip_version=int(ip_version) if ip_version is not None else None,
        protocol=protocol_number(protocol) if protocol is not None else None,
        not_protocol=protocol_number(not_protocol) if not_protocol is not None else None,
        icmp=_icmp(rule.get("icmp")),
        not_icmp=_icmp(rule.get("notICMP")),
        source=compile_entity(rule.get("source"), scope, f"{where}.source"),
        destination=compile_entity(rule.get("destination"), scope, f"{where}.destination"),
        name=annotations.get("name"),
    )


def _compile_rules(
    rules: Sequence[Mapping[str, Any]] | None, scope: _Scope, where: str
) -> tuple[CompiledRule, ...]:
    return tuple(
        compile_rule(rule, i, scope, f"{where}[{i}]") for i, rule in enumerate(rules or ())
    )


def infer_types(spec: Mapping[str, Any]) -> frozenset[Direction]:
    """Spec 4.8: explicit types win; else Ingress, plus Egress when egress rules exist (and
    Egress alone when only egress rules exist)."""
    types = spec.get("types")
    if types:
        return frozenset(Direction(str(t)) for t in types)
    has_egress = bool(spec.get("egress"))
    has_ingress = bool(spec.get("ingress"))
    if has_egress and has_ingress:
        return frozenset({Direction.INGRESS, Direction.EGRESS})
    if has_egress:
        return frozenset({Direction.EGRESS})
    return frozenset({Direction.INGRESS})


_CALICO_KINDS = {
    "NetworkPolicy": PolicyKind.NETWORK_POLICY,
    "GlobalNetworkPolicy": PolicyKind.GLOBAL_NETWORK_POLICY,
    "StagedNetworkPolicy": PolicyKind.STAGED_NETWORK_POLICY,
    "StagedGlobalNetworkPolicy": PolicyKind.STAGED_GLOBAL_NETWORK_POLICY,
}


def compile_calico_policy(doc: Document, source: str = "") -> CompiledPolicy:
    kind = _CALICO_KINDS[str(doc["kind"])]
    spec = _spec(doc)
    meta = _meta(doc)
    name = str(meta.get("name"))
    namespace = str(meta.get("namespace") or "default") if kind.namespaced else None
    where = source or f"{kind.value} {name}"
    scope = _Scope(namespace)
    order = spec.get("order")
    return CompiledPolicy(
        kind=kind,
        namespace=namespace,
        name=name,
        tier=str(spec.get("tier") or DEFAULT_TIER),
        order=float(order) if order is not None else None,
        selector=policy_selector(spec, namespace, where, namespaced=kind.namespaced),
        types=infer_types(spec),
        ingress=_compile_rules(spec.get("ingress"), scope, f"{where}: spec.ingress"),
        egress=_compile_rules(spec.get("egress"), scope, f"{where}: spec.egress"),
        staged_action=str(spec.get("stagedAction") or "Set") if kind.staged else None,
        do_not_track=bool(spec.get("doNotTrack")),
        pre_dnat=bool(spec.get("preDNAT")),
        apply_on_forward=bool(spec.get("applyOnForward")),
        source=source,
    )


def compile_profile(doc: Document) -> CompiledProfile:
    spec = _spec(doc)
    name = str(_meta(doc).get("name"))
    scope = _Scope(None)
    labels = spec.get("labelsToApply") or {}
    return CompiledProfile(
        name=name,
        ingress=_compile_rules(spec.get("ingress"), scope, f"Profile {name}: spec.ingress"),
        egress=_compile_rules(spec.get("egress"), scope, f"Profile {name}: spec.egress"),
        labels_to_apply=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
    )


# --------------------------------------------------------------------------------------------
# Kubernetes label selectors → Calico selectors (spec 5.1)


def k8s_selector(selector: Mapping[str, Any] | None, *, pods: bool) -> str:
    terms: list[str] = [K8S_ORCHESTRATED] if pods else []
    if selector is None:
        return " && ".join(terms)
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not pods and not match_labels and not expressions:
        return "all()"
    for key in sorted(match_labels):
        terms.append(f"{key} == {_quote(str(match_labels[key]))}")
    for expression in expressions:
        key = str(expression.get("key"))
        operator = str(expression.get("operator"))
        values = ", ".join(_quote(str(v)) for v in expression.get("values") or ())
        if operator == "In":
            terms.append(f"{key} in {{ {values} }}")
        elif operator == "NotIn":
            terms.append(f"{key} not in {{ {values} }}")
        elif operator == "Exists":
            terms.append(f"has({key})")
        elif operator == "DoesNotExist":
            terms.append(f"! has({key})")
        else:
            raise TranslationError(f"unknown label selector operator {operator!r}")
    return " && ".join(terms)


@dataclass(frozen=True, slots=True)
class _PortGroup:
    protocol: int | None
    ports: tuple[int | str, ...]


def _k8s_port_groups(ports: Sequence[Mapping[str, Any]] | None) -> list[_PortGroup]:
    """Spec 5.2 step 2: group by protocol, "all ports" wins, merge numeric ports."""
    if not ports:
        return [_PortGroup(None, ())]
    by_protocol: dict[str, tuple[list[PortRange], list[str], bool]] = {}
    for entry in ports:
        protocol = str(entry.get("protocol") or "TCP")
        ranges, names, _all = by_protocol.setdefault(protocol, ([], [], False))
        port = entry.get("port")
        if port is None:
            by_protocol[protocol] = (ranges, names, True)
            continue
        end_port = entry.get("endPort")
        if isinstance(port, int) or str(port).isdigit():
            low = int(port)
            ranges.append(PortRange(low, int(end_port) if end_port is not None else low))
        else:
            names.append(str(port))
    groups: list[_PortGroup] = []
    for protocol in sorted(by_protocol):
        ranges, names, all_ports = by_protocol[protocol]
        number = protocol_number(protocol)
        if all_ports:
            groups.append(_PortGroup(number, ()))
            continue
        rendered: list[int | str] = [
            r.low if r.low == r.high else f"{r.low}:{r.high}" for r in merge_port_ranges(ranges)
        ]
        groups.append(_PortGroup(number, (*rendered, *names)))
    return groups


def _k8s_peer(peer: Mapping[str, Any] | None) -> dict[str, Any]:
    """A NetworkPolicyPeer as a Calico EntityRule document (spec 5.2 step 1)."""
    if peer is None:
        return {}
    ip_block = peer.get("ipBlock")
    if ip_block:
        return {
            "nets": [str(parse_net(str(ip_block["cidr"])))],
            "notNets": [str(parse_net(str(e))) for e in ip_block.get("except") or ()],
        }
    pod_selector = peer.get("podSelector")
    namespace_selector = peer.get("namespaceSelector")
    entity: dict[str, Any] = {}
    if namespace_selector is not None:
        entity["namespaceSelector"] = k8s_selector(namespace_selector, pods=False)
    entity["selector"] = k8s_selector(pod_selector, pods=True)
    return entity


def _k8s_rules(
    rules: Sequence[Mapping[str, Any]] | None, direction: Direction
) -> list[dict[str, Any]]:
    peer_key = "from" if direction is Direction.INGRESS else "to"
    calico_rules: list[dict[str, Any]] = []
    for rule in rules or ():
        peers = rule.get(peer_key) or [None]
        for group in _k8s_port_groups(rule.get("ports")):
            for peer in peers:
                entity = _k8s_peer(peer)
                calico: dict[str, Any] = {"action": "Allow"}
                if group.protocol is not None:
                    calico["protocol"] = group.protocol
                if direction is Direction.INGRESS:
                    calico["source"] = entity
                    if group.ports:
                        calico["destination"] = {"ports": list(group.ports)}
                else:
                    if group.ports:
                        entity = {**entity, "ports": list(group.ports)}
                    calico["destination"] = entity
                calico_rules.append(calico)
    return calico_rules


def k8s_policy_types(spec: Mapping[str, Any]) -> list[str]:
    """policyTypes as the Kubernetes API server defaults them, then as Calico reads them."""
    types = spec.get("policyTypes")
    if types is None:
        # The API server fills in Ingress always, plus Egress when egress rules exist.
        return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    ordered = [t for t in ("Ingress", "Egress") if t in types]
    return ordered or ["Ingress"]


def compile_k8s_policy(doc: Document, source: str = "") -> CompiledPolicy:
    """networking.k8s.io/v1 NetworkPolicy (or StagedKubernetesNetworkPolicy) → Calico (5.1)."""
    staged = doc.get("kind") == "StagedKubernetesNetworkPolicy"
    kind = (
        PolicyKind.STAGED_KUBERNETES_NETWORK_POLICY
        if staged
        else PolicyKind.KUBERNETES_NETWORK_POLICY
    )
    spec = _spec(doc)
    meta = _meta(doc)
    name = str(meta.get("name"))
    # Accept the older stored form of the name (v3.31 and earlier prefixed it).
    name = name.removeprefix("knp.default.")
    namespace = str(meta.get("namespace") or "default")
    where = source or f"{kind.value} {namespace}/{name}"
    calico_spec: dict[str, Any] = {
        "selector": k8s_selector(spec.get("podSelector") or {}, pods=True),
        "types": k8s_policy_types(spec),
        "ingress": _k8s_rules(spec.get("ingress"), Direction.INGRESS),
        "egress": _k8s_rules(spec.get("egress"), Direction.EGRESS),
    }
    scope = _Scope(namespace)
    return CompiledPolicy(
        kind=kind,
        namespace=namespace,
        name=name,
        tier=DEFAULT_TIER,
        order=KUBERNETES_POLICY_ORDER,
        selector=policy_selector(calico_spec, namespace, where, namespaced=True),
        types=frozenset(Direction(t) for t in calico_spec["types"]),
        ingress=_compile_rules(calico_spec["ingress"], scope, f"{where}: spec.ingress"),
        egress=_compile_rules(calico_spec["egress"], scope, f"{where}: spec.egress"),
        staged_action=str(spec.get("stagedAction") or "Set") if staged else None,
        source=source,
    )


# --------------------------------------------------------------------------------------------
# AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1) and ClusterNetworkPolicy (v1alpha2)

ADMIN_TIER = "adminnetworkpolicy"
BASELINE_TIER = "baselineadminnetworkpolicy"
KUBE_ADMIN_TIER = "kube-admin"
KUBE_BASELINE_TIER = "kube-baseline"


def _cluster_subject(subject: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not subject:
        return None
    if subject.get("namespaces") is not None:
        return {
            "selector": K8S_ORCHESTRATED,
            "namespaceSelector": k8s_selector(subject["namespaces"], pods=False),
        }
    pods = subject.get("pods")
    if pods is not None:
        return {
            "selector": k8s_selector(pods.get("podSelector") or {}, pods=True),
            "namespaceSelector": k8s_selector(pods.get("namespaceSelector") or {}, pods=False),
        }
    return None


def _cluster_peers(
    peers: Sequence[Mapping[str, Any]] | None, direction: Direction
) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    for peer in peers or ():
        if peer.get("namespaces") is not None:
            entities.append({"namespaceSelector": k8s_selector(peer["namespaces"], pods=False)})
        elif peer.get("pods") is not None:
            pods = peer["pods"]
            entities.append(
                {
                    "selector": k8s_selector(pods.get("podSelector") or {}, pods=True),
                    "namespaceSelector": k8s_selector(
                        pods.get("namespaceSelector") or {}, pods=False
                    ),
                }
            )
        elif direction is Direction.EGRESS and peer.get("networks") is not None:
            entities.append({"nets": [str(parse_net(str(n))) for n in peer["networks"]]})
        else:
            raise TranslationError(f"unsupported peer {dict(peer)!r}")
    return entities


def _cluster_port_groups(rule: Mapping[str, Any]) -> list[_PortGroup]:
    """Ports of ANP/BANP (``ports``) and ClusterNetworkPolicy (``protocols``)."""
    groups: dict[int, list[int | str]] = {}
    entries = rule.get("ports")
    protocols = rule.get("protocols")
    if entries is None and protocols is None:
        return [_PortGroup(None, ())]
    for entry in entries or ():
        if entry.get("namedPort") is not None:
            # Spec 5.3: named ports are unsupported; the rule then matches all ports.
            return [_PortGroup(None, ())]
        if entry.get("portNumber") is not None:
            number = entry["portNumber"]
            proto = protocol_number(str(number.get("protocol") or "TCP").upper())
            groups.setdefault(proto, []).append(int(number["port"]))
        elif entry.get("portRange") is not None:
            port_range = entry["portRange"]
            proto = protocol_number(str(port_range.get("protocol") or "TCP").upper())
            groups.setdefault(proto, []).append(f"{port_range['start']}:{port_range['end']}")
        else:
            raise TranslationError(f"unsupported port entry {dict(entry)!r}")
    named: list[str] = []
    for entry in protocols or ():
        if entry.get("destinationNamedPort") is not None:
            named.append(str(entry["destinationNamedPort"]))
            continue
        for proto_name in ("tcp", "udp", "sctp"):
            if proto_name in entry:
                proto = protocol_number(proto_name.upper())
                port_spec = entry[proto_name] or {}
                destination = port_spec.get("destinationPort")
                if destination is None:
                    groups.setdefault(proto, [])
                elif isinstance(destination, Mapping) and "range" in destination:
                    rng = destination["range"]
                    groups.setdefault(proto, []).append(f"{rng['start']}:{rng['end']}")
                elif isinstance(destination, Mapping) and "number" in destination:
                    groups.setdefault(proto, []).append(int(destination["number"]))
                else:
                    groups.setdefault(proto, []).append(int(destination))
    result = [
        _PortGroup(proto, tuple(ports))
        for proto, ports in sorted(groups.items(), key=lambda item: item[0])
    ]
    if named:
        result.append(_PortGroup(None, tuple(named)))
    return result


_CLUSTER_ACTIONS = {"Allow": "Allow", "Accept": "Allow", "Deny": "Deny", "Pass": "Pass"}


def _cluster_rules(
    rules: Sequence[Mapping[str, Any]] | None, direction: Direction, allowed: frozenset[str]
) -> list[dict[str, Any]]:
    peer_key = "from" if direction is Direction.INGRESS else "to"
    out: list[dict[str, Any]] = []
    for rule in rules or ():
        action = _CLUSTER_ACTIONS.get(str(rule.get("action")))
        name = rule.get("name")
        metadata = {"annotations": {"name": str(name)}} if name else None
        try:
            if action is None or str(rule.get("action")) not in allowed:
                raise TranslationError(f"unsupported action {rule.get('action')!r}")
            peers = _cluster_peers(rule.get(peer_key), direction)
            groups = _cluster_port_groups(rule)
        except (TranslationError, KeyError, TypeError, ValueError):
            # Fail closed (spec 5.3): a broken Deny/Pass becomes a bare Deny; Allow is dropped.
            if action in ("Deny", "Pass"):
                out.append({"action": "Deny", **({"metadata": metadata} if metadata else {})})
            continue
        for group in groups:
            for entity in peers:
                calico: dict[str, Any] = {"action": action}
                if metadata:
                    calico["metadata"] = metadata
                if group.protocol is not None:
                    calico["protocol"] = group.protocol
                if direction is Direction.INGRESS:
                    calico["source"] = entity
                    if group.ports:
                        calico["destination"] = {"ports": list(group.ports)}
                else:
                    calico["destination"] = (
                        {**entity, "ports": list(group.ports)} if group.ports else entity
                    )
                out.append(calico)
    return out


def compile_cluster_policy(doc: Document, source: str = "") -> CompiledPolicy | None:
    """AdminNetworkPolicy / BaselineAdminNetworkPolicy / ClusterNetworkPolicy → a GNP-shaped
    policy in its tier. Returns None for a policy Calico ignores (no subject, unknown tier)."""
    kind_name = str(doc.get("kind"))
    spec = _spec(doc)
    name = str(_meta(doc).get("name"))
    if kind_name == "AdminNetworkPolicy":
        kind, tier = PolicyKind.KUBERNETES_ADMIN_NETWORK_POLICY, ADMIN_TIER
        order: float | None = float(spec.get("priority", 0))
        actions = frozenset({"Allow", "Deny", "Pass"})
    elif kind_name == "BaselineAdminNetworkPolicy":
        kind, tier = PolicyKind.KUBERNETES_BASELINE_ADMIN_NETWORK_POLICY, BASELINE_TIER
        order = KUBERNETES_POLICY_ORDER
        actions = frozenset({"Allow", "Deny"})
    else:
        kind = PolicyKind.KUBERNETES_CLUSTER_NETWORK_POLICY
        tier_name = spec.get("tier")
        if tier_name == "Admin":
            tier = KUBE_ADMIN_TIER
        elif tier_name == "Baseline":
            tier = KUBE_BASELINE_TIER
        else:
            return None
        order = float(spec.get("priority", 0))
        actions = frozenset({"Accept", "Deny", "Pass"})
    subject = _cluster_subject(spec.get("subject"))
    if subject is None:
        return None
    ingress = _cluster_rules(spec.get("ingress"), Direction.INGRESS, actions)
    egress = _cluster_rules(spec.get("egress"), Direction.EGRESS, actions)
    types = set()
    if spec.get("ingress"):
        types.add(Direction.INGRESS)
    if spec.get("egress"):
        types.add(Direction.EGRESS)
    where = source or f"{kind_name} {name}"
    scope = _Scope(None)
    return CompiledPolicy(
        kind=kind,
        namespace=None,
        name=name,
        tier=tier,
        order=order,
        selector=policy_selector(subject, None, where, namespaced=False),
        # No rules at all: both directions (Felix's reading of an empty list; Pass tier).
        types=frozenset(types) or frozenset(Direction),
        ingress=_compile_rules(ingress, scope, f"{where}: spec.ingress"),
        egress=_compile_rules(egress, scope, f"{where}: spec.egress"),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Endpoints


def effective_labels(
    own: Mapping[str, str], profiles: Sequence[Sequence[tuple[str, str]]]
) -> tuple[tuple[str, str], ...]:
    """Own labels first, then each profile's labelsToApply in order; the first hit wins."""
    merged = dict(own)
    for profile_labels in profiles:
        for key, value in profile_labels:
            merged.setdefault(key, value)
    return tuple(sorted(merged.items()))


def namespace_profile_labels(namespace: str, labels: Mapping[str, str]) -> list[tuple[str, str]]:
    out = [(NAMESPACE_PREFIX + k, v) for k, v in labels.items()]
    out.append((NAMESPACE_PREFIX + NAME_LABEL, namespace))
    return out


def service_account_profile_labels(name: str, labels: Mapping[str, str]) -> list[tuple[str, str]]:
    out = [(SERVICE_ACCOUNT_PREFIX + k, v) for k, v in labels.items()]
    out.append((SERVICE_ACCOUNT_PREFIX + NAME_LABEL, name))
    return out


def pod_own_labels(
    labels: Mapping[str, str], namespace: str, service_account: str | None
) -> dict[str, str]:
    """Spec 1.11: pod labels minus pcns./pcsa. ones, plus Calico's namespace, orchestrator and
    service-account labels."""
    own = {
        k: v
        for k, v in labels.items()
        if not k.startswith(NAMESPACE_PREFIX) and not k.startswith(SERVICE_ACCOUNT_PREFIX)
    }
    own[NAMESPACE_LABEL] = namespace
    own[ORCHESTRATOR_LABEL] = "k8s"
    if service_account:
        own[SERVICE_ACCOUNT_LABEL] = service_account
    return own


def container_named_ports(pod_spec: Mapping[str, Any]) -> tuple[NamedPort, ...]:
    ports: list[NamedPort] = []
    for group in ("containers", "initContainers"):
        for container in pod_spec.get(group) or ():
            for port in container.get("ports") or ():
                name = port.get("name")
                if not name:
                    continue
                proto = str(port.get("protocol") or "TCP")
                if proto not in ("TCP", "UDP", "SCTP"):
                    continue
                ports.append(
                    NamedPort(str(name), protocol_number(proto), int(port["containerPort"]))
                )
    return tuple(ports)


def is_ported(protocol: int | None) -> bool:
    return protocol in PORTED_PROTOCOLS
