"""Intents → nftables objects: the pure half of the nftables dataplane (no I/O).

:func:`render_ruleset` turns the calc graph's intents into a :class:`Ruleset` — named sets,
regular chains, two verdict maps and the base chain of the table ``inet palisade`` — and
:func:`ruleset_commands` / :func:`delta_commands` turn rulesets into the ``{"nftables": [...]}``
command list that ``nft -j -f -`` applies as one transaction. The chain layout is described in
``_nftables``'s docstring.

Rules are compared by their comment, never by their expressions: nft prints expressions back in
a normalised form (``meta l4proto 6 th dport 80`` comes back as ``tcp dport 80``), so every
rule's comment ends in a digest of the expressions we rendered, and two rules are the same when
their comments are.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from typing import Any, Generic, TypeVar

from palisade.calc import (
    EndpointIntent,
    EntityIntent,
    ICMPIntent,
    IPSetIntent,
    PolicyIntent,
    ProfileIntent,
    RuleIntent,
    SetIntent,
)
from palisade.flows._collect import hit_prefix
from palisade.policy import Action

Json = dict[str, Any]

FAMILY = "inet"
TABLE = "palisade"
FLOW_LOG_GROUP = 30
"""The NFLOG group the deciding rules log to; the node's flow collector binds it."""
BASE_CHAIN = "forward"
FROM_MAP = "pal-from-wl"
"""``iifname`` → ``jump pal-fr-<ep>``: egress policy of the workload a packet comes from."""
TO_MAP = "pal-to-wl"
"""``oifname`` → ``jump pal-to-<ep>``: ingress policy of the workload a packet goes to."""

MAX_NAME = 31
MARK_MASK = 0x00030000
"""The packet-mark bits a policy chain leaves its verdict in (0: no verdict yet)."""
MARK_ALLOW = 0x00010000
MARK_DENY = 0x00020000
MARK_PASS = 0x00030000
_MARK_BY_ACTION = {Action.ALLOW: MARK_ALLOW, Action.DENY: MARK_DENY, Action.PASS: MARK_PASS}
assert MARK_DENY & MARK_PASS and not MARK_DENY & MARK_PASS & MARK_ALLOW  # see _PROFILES_DENY

PORT_PROTOCOLS = (6, 17, 33, 132, 136)  # tcp, udp, dccp, sctp, udplite: ports at bytes 0-3
_PROTOCOL_NUMBERS = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "dccp": 33,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "sctp": 132,
    "udplite": 136,
}


# -- the object model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NftSet:
    """A named set. ``elements`` are normalised strings: ``10.0.0.0/24``, ``10.0.0.5/32`` for
    address sets, ``10.0.0.5 6 8080`` (address, protocol number, port) for named-port sets."""

    name: str
    type: tuple[str, ...]
    interval: bool
    elements: frozenset[str]


@dataclass(frozen=True, slots=True)
class NftRule:
    """One rule; ``comment`` names its origin and ends in a digest of ``expr`` (its identity)."""

    comment: str
    expr: tuple[Json, ...] = field(compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class NftChain:
    name: str
    rules: tuple[NftRule, ...]

    @property
    def signature(self) -> tuple[str, ...]:
        return tuple(rule.comment for rule in self.rules)


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything Palisade keeps in its table, except the table itself.

    ``chains`` are the regular chains; ``base`` is the hooked ``forward`` chain; ``maps`` are
    the two interface-name verdict maps (interface → chain jumped to).
    """

    sets: dict[str, NftSet]
    chains: dict[str, NftChain]
    maps: dict[str, dict[str, str]]
    base: NftChain | None


# -- names --------------------------------------------------------------------------------------


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@lru_cache(maxsize=1 << 16)
def object_name(prefix: str, object_id: str) -> str:
    """``prefix + object_id`` when that is short and plain; otherwise a readable stem plus a
    digest of the id, so the name stays unique and at most 31 characters long."""
    plain = all(c.isalnum() or c in "-_." for c in object_id)
    if plain and len(prefix) + len(object_id) <= MAX_NAME:
        return prefix + object_id
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in object_id)
    room = MAX_NAME - len(prefix) - 9
    return f"{prefix}{stem[:room]}-{_digest(object_id)}"


def policy_chain_name(policy_id: str, ingress: bool) -> str:
    return object_name("pal-pi-" if ingress else "pal-po-", policy_id)


def profile_chain_name(profile_id: str, ingress: bool) -> str:
    return object_name("pal-ri-" if ingress else "pal-ro-", profile_id)


def endpoint_chain_name(endpoint_id: str, ingress: bool) -> str:
    """``pal-to-…`` holds the endpoint's ingress policy (traffic to it), ``pal-fr-…`` egress."""
    return object_name("pal-to-" if ingress else "pal-fr-", endpoint_id)


@lru_cache(maxsize=1 << 16)
def set_name(set_id: str, version: int) -> str:
    """Set ids are ≤ 30 characters, so the family digit keeps the name ≤ 31."""
    name = f"{set_id}{version}"
    return (
        name if len(name) <= MAX_NAME else object_name("pal", set_id)[: MAX_NAME - 1] + str(version)
    )


# -- sets ---------------------------------------------------------------------------------------


def _networks(
    members: Iterable[str], version: int
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The members of one family, merged: an interval set refuses overlapping elements."""
    return _collapse([ipaddress.ip_network(m, strict=False) for m in members], version)


def _collapse(
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], version: int
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if version == 4:
        return list(
            ipaddress.collapse_addresses(
                n for n in networks if isinstance(n, ipaddress.IPv4Network)
            )
        )
    return list(
        ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    )


@lru_cache(maxsize=1 << 17)
def _member_range(member: str) -> tuple[int, int, int]:
    """``10.0.0.0/24`` → (4, first address, last address) as integers. Cached: the same pod
    address is a member of many sets, and parsing it is most of what rendering a set costs."""
    network = ipaddress.ip_network(member, strict=False)
    first = int(network.network_address)
    return network.version, first, first + network.num_addresses - 1


def _collapsed_members(members: Iterable[str], version: int) -> frozenset[str]:
    """``str`` of each network ``ipaddress.collapse_addresses`` gives for the members of one
    family, computed on integers: overlapping and adjacent ranges merge, and each merged range
    is cut into the fewest aligned blocks (the one minimal CIDR cover of a range)."""
    ranges = sorted(
        (first, last) for family, first, last in map(_member_range, members) if family == version
    )
    bits = 32 if version == 4 else 128
    merged: list[list[int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    blocks = []
    for first, last in merged:
        while first <= last:
            aligned = (first & -first).bit_length() - 1 if first else bits
            fits = (last - first + 1).bit_length() - 1
            size = min(aligned, fits)
            blocks.append(f"{address(first)}/{bits - size}")
            first += 1 << size
    return frozenset(blocks)


def _parse_named_port(
    member: str,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]:
    """``10.0.0.5,tcp:8080`` → (address, protocol number, port)."""
    address, _, rest = member.partition(",")
    protocol, _, port = rest.partition(":")
    return ipaddress.ip_address(address), protocol_number(protocol), int(port)


def protocol_number(protocol: str | int) -> int:
    """``tcp`` / ``"6"`` / 6 → 6."""
    if isinstance(protocol, int):
        return protocol
    text = protocol.strip().lower()
    if text.isdigit():
        return int(text)
    if text in _PROTOCOL_NUMBERS:
        return _PROTOCOL_NUMBERS[text]
    return socket.getprotobyname(text)  # nft prints protocols by their /etc/protocols name


def render_sets(set_id: str, intent: SetIntent) -> list[NftSet]:
    """One IPv4 and one IPv6 set per intent, so a rule's family variant always has its set."""
    result = []
    if isinstance(intent, IPSetIntent):
        for version, address_type in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            elements = _collapsed_members(intent.members, version)
            result.append(NftSet(set_name(set_id, version), (address_type,), True, elements))
        return result
    parsed = [_parse_named_port(m) for m in intent.members]
    for version, address_type in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        elements = frozenset(f"{a} {p} {port}" for a, p, port in parsed if a.version == version)
        concat = (address_type, "inet_proto", "inet_service")
        result.append(NftSet(set_name(set_id, version), concat, False, elements))
    return result


def set_element_json(nft_set: NftSet, element: str) -> Any:
    if len(nft_set.type) == 1:
        # Elements are normalised already (``str`` of a network), so the text splits as is.
        address, _, length = element.partition("/")
        if int(length) == (32 if nft_set.type[0] == "ipv4_addr" else 128):
            return address
        return {"prefix": {"addr": address, "len": int(length)}}
    address, protocol, port = element.split(" ")
    return {"concat": [address, int(protocol), int(port)]}


# -- expressions --------------------------------------------------------------------------------


def _payload(protocol: str, name: str) -> Json:
    return {"payload": {"protocol": protocol, "field": name}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _mark_bits() -> Json:
    return {"&": [_meta("mark"), MARK_MASK]}


def _set_mark(value: int) -> Json:
    cleared = {"&": [_meta("mark"), 0xFFFFFFFF ^ MARK_MASK]}
    return {
        "mangle": {"key": _meta("mark"), "value": {"|": [cleared, value]} if value else cleared}
    }


_COUNTER: Json = {"counter": None}
_RETURN: Json = {"return": None}
_ACCEPT: Json = {"accept": None}
_DROP: Json = {"drop": None}


def _address_json(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def _nets_json(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> Any:
    if len(networks) == 1:
        return _address_json(networks[0])
    return {"set": [_address_json(n) for n in networks]}


def _ranges_json(ranges: Sequence[tuple[int, int]]) -> Any:
    items: list[Any] = [low if low == high else {"range": [low, high]} for low, high in ranges]
    return items[0] if len(items) == 1 else {"set": items}


def _has_addresses(entity: EntityIntent) -> bool:
    return bool(
        entity.nets is not None
        or entity.not_nets
        or entity.selector_set_id
        or entity.not_selector_set_id
        or entity.service_set_id
        or entity.service_port_set_id
        or entity.ports.named_port_set_ids
        or entity.not_ports.named_port_set_ids
    )


def _entity_alternatives(
    entity: EntityIntent, version: int | None, source: bool, with_ports: bool = True
) -> list[list[Json]] | None:
    """The entity's matches as alternatives (any one may match; each is ANDed expressions).

    ``None``: nothing can match (a ``nets`` list with none of this address family, or a port
    match on a variant for packets without ports). ``with_ports=False`` renders the variant for
    packets without ports, where a ``notPorts`` holds trivially.
    """
    side = "saddr" if source else "daddr"
    port_field = _payload("th", "sport" if source else "dport")
    common: list[Json] = []
    address: Json | None = None
    if version is not None:
        address = _payload("ip" if version == 4 else "ip6", side)
        if entity.nets is not None:
            nets = _networks(entity.nets, version)
            if not nets:
                return None
            common.append(_match(address, _nets_json(nets)))
        not_nets = _networks(entity.not_nets, version)
        if not_nets:
            common.append(_match(address, _nets_json(not_nets), "!="))
        for set_id, op in (
            (entity.selector_set_id, "=="),
            (entity.not_selector_set_id, "!="),
            (entity.service_set_id, "=="),
        ):
            if set_id is not None:
                common.append(_match(address, "@" + set_name(set_id, version), op))

    def named(set_id: str, op: str) -> Json:
        assert address is not None and version is not None
        key = {"concat": [address, _meta("l4proto"), port_field]}
        return _match(key, "@" + set_name(set_id, version), op)

    if not with_ports:
        if entity.ports or entity.service_port_set_id is not None:
            return None
        return [common]
    if entity.service_port_set_id is not None:
        common.append(named(entity.service_port_set_id, "=="))
    if entity.not_ports.ranges:
        common.append(_match(port_field, _ranges_json(entity.not_ports.ranges), "!="))
    for set_id in entity.not_ports.named_port_set_ids:
        common.append(named(set_id, "!="))
    if not entity.ports:
        return [common]
    alternatives: list[list[Json]] = []
    if entity.ports.ranges:
        alternatives.append([*common, _match(port_field, _ranges_json(entity.ports.ranges))])
    for set_id in entity.ports.named_port_set_ids:
        alternatives.append([*common, named(set_id, "==")])
    return alternatives


def _icmp_matches(match: ICMPIntent, protocol: int | None) -> list[Json]:
    header = "icmpv6" if protocol == 58 else "icmp"
    found = []
    if match.type is not None:
        found.append(_match(_payload(header, "type"), match.type))
    if match.code is not None:
        found.append(_match(_payload(header, "code"), match.code))
    return found


def _rule_variants(rule: RuleIntent) -> list[list[Json]]:
    """Every ANDed expression list whose union is the rule's match (first-match order kept by
    emitting them consecutively with the same action)."""
    base: list[Json] = []
    if rule.protocol is not None:
        base.append(_match(_meta("l4proto"), rule.protocol))
    if rule.not_protocol is not None:
        base.append(_match(_meta("l4proto"), rule.not_protocol, "!="))
    uses_ports = any(
        e.ports or e.not_ports or e.service_port_set_id for e in (rule.source, rule.destination)
    )
    # ``th`` reads bytes 0-3 of any transport header, and only port protocols have ports
    # there; a packet without ports fails a ports match and passes a notPorts match.
    port_modes: list[tuple[list[Json], bool]]
    if not uses_ports or rule.protocol in PORT_PROTOCOLS:
        port_modes = [([], True)]
    elif rule.protocol is not None:
        port_modes = [([], False)]
    else:
        port_protocols = {"set": list(PORT_PROTOCOLS)}
        port_modes = [
            ([_match(_meta("l4proto"), port_protocols)], True),
            ([_match(_meta("l4proto"), port_protocols, "!=")], False),
        ]
    if rule.icmp is not None:
        base.extend(_icmp_matches(rule.icmp, rule.protocol))
    not_icmp: list[list[Json]] = [[]]
    if rule.not_icmp is not None:
        # not (type == T and code == C)  ==  type != T  or  (type == T and code != C)
        header = "icmpv6" if rule.protocol == 58 else "icmp"
        not_type = rule.not_icmp.type
        not_code = rule.not_icmp.code
        if not_type is not None and not_code is not None:
            not_icmp = [
                [_match(_payload(header, "type"), not_type, "!=")],
                [
                    _match(_payload(header, "type"), not_type),
                    _match(_payload(header, "code"), not_code, "!="),
                ],
            ]
        elif not_type is not None:
            not_icmp = [[_match(_payload(header, "type"), not_type, "!=")]]
        elif not_code is not None:
            not_icmp = [[_match(_payload(header, "code"), not_code, "!=")]]
        if rule.protocol is None:  # a packet of another protocol has no ICMP header to match
            icmp_protocol = 58 if header == "icmpv6" else 1
            not_icmp.insert(0, [_match(_meta("l4proto"), icmp_protocol, "!=")])
    addressed = _has_addresses(rule.source) or _has_addresses(rule.destination)
    versions: list[int | None] = (
        [v for v in (4, 6) if rule.ip_version in (None, v)] if addressed else [None]
    )
    variants: list[list[Json]] = []
    for version in versions:
        # Pin the family even where no address of it is matched (a variant with only a
        # ``notNets`` of the other family would otherwise match every packet).
        pinned = version if version is not None else rule.ip_version
        family: list[Json] = []
        if pinned is not None:
            family.append(_match(_meta("nfproto"), "ipv4" if pinned == 4 else "ipv6"))
        for guard, with_ports in port_modes:
            sources = _entity_alternatives(rule.source, version, True, with_ports)
            destinations = _entity_alternatives(rule.destination, version, False, with_ports)
            if sources is None or destinations is None:
                continue
            for icmp_part, source, destination in product(not_icmp, sources, destinations):
                variants.append([*family, *base, *guard, *icmp_part, *source, *destination])
    return variants


def _comment(attribution: str, expr: Sequence[Json]) -> str:
    # repr is deterministic here (every dict is built in one fixed order) and much cheaper
    return _comment_text(attribution, repr(expr))


def _comment_text(attribution: str, expr_text: str) -> str:
    if len(attribution) > 100:
        attribution = attribution[:90] + "~" + _digest(attribution)
    digest = _digest(attribution + expr_text, 10)
    return f"{attribution} #{digest}"


def _rule(attribution: str, expr: list[Json]) -> NftRule:
    return NftRule(_comment(attribution, expr), tuple(expr))


def _flow_log(direction: str, policy: str, action: str, rule: int) -> Json:
    """NFLOG to the flow collector: the packet and which hit it met (see
    ``palisade.flows._collect``). Only packets outside established connections walk the policy
    chains, so this logs first packets of connections and denied attempts."""
    prefix = hit_prefix("ingress" if direction == "ingress" else "egress", policy, action, rule)
    return {"log": {"prefix": prefix, "group": FLOW_LOG_GROUP}}


def render_rules(
    owner: str, direction: str, rules: Sequence[RuleIntent], hit_part: str | None = None
) -> tuple[NftRule, ...]:
    """A policy's or profile's rules for one direction. Each match logs its hit to the flow
    collector (``hit_part``: the policy part of its Calico hit string), sets the verdict mark
    and returns; a Log rule logs and falls through to the next rule."""
    rendered: list[NftRule] = []
    for rule in rules:
        attribution = f"{owner} {direction} {rule.rule_index}"
        if rule.action is Action.LOG:
            prefix = f"pal {owner[:40]} {direction[0]}{rule.rule_index} "
            action = [_COUNTER, {"log": {"prefix": prefix}}]
        elif hit_part is not None:
            verdict = rule.action.value.lower()
            action = [
                _COUNTER,
                _flow_log(direction, hit_part, verdict, rule.rule_index),
                _set_mark(_MARK_BY_ACTION[rule.action]),
                _RETURN,
            ]
        else:
            action = [_COUNTER, _set_mark(_MARK_BY_ACTION[rule.action]), _RETURN]
        for index, variant in enumerate(_rule_variants(rule)):
            suffix = f" v{index}" if index else ""
            rendered.append(_rule(attribution + suffix, [*variant, *action]))
    return tuple(rendered)


def render_policy(policy: PolicyIntent) -> list[NftChain]:
    owner = f"policy {policy.policy_id}"
    return [
        NftChain(
            policy_chain_name(policy.policy_id, True),
            render_rules(owner, "ingress", policy.ingress, policy.policy_id),
        ),
        NftChain(
            policy_chain_name(policy.policy_id, False),
            render_rules(owner, "egress", policy.egress, policy.policy_id),
        ),
    ]


def render_profile(profile: ProfileIntent) -> list[NftChain]:
    owner = f"profile {profile.profile_id}"
    return [
        NftChain(
            profile_chain_name(profile.profile_id, True),
            render_rules(owner, "ingress", profile.ingress, f"pro:{profile.profile_id}"),
        ),
        NftChain(
            profile_chain_name(profile.profile_id, False),
            render_rules(owner, "egress", profile.egress, f"pro:{profile.profile_id}"),
        ),
    ]


class _Fixed:
    """An expression list every endpoint chain has, built once with its ``repr`` (the comment
    digest's input): a node's endpoint chains share these objects instead of building and
    printing the same nested dicts ten thousands of times."""

    __slots__ = ("expr", "text")

    def __init__(self, *expr: Json) -> None:
        self.expr = expr
        self.text = repr(list(expr))


def _fixed_rule(attribution: str, fixed: _Fixed) -> NftRule:
    return NftRule(_comment_text(attribution, fixed.text), fixed.expr)


_NO_VERDICT = _match(_mark_bits(), 0)
_START = _Fixed(_COUNTER, _set_mark(0))
_DENY_ALL = _Fixed(_COUNTER, _DROP)


@lru_cache(maxsize=65536)
def _end_of_tier(ingress: bool, last_policy: str) -> _Fixed:
    """No rule of the tier matched: its default, Deny, logged as Calico's ``-1`` hit naming the
    tier's last policy (shared by the endpoints whose tier ends in the same policy)."""
    direction = "ingress" if ingress else "egress"
    return _Fixed(_NO_VERDICT, _COUNTER, _flow_log(direction, last_policy, "deny", -1), _DROP)


_TIER_DENY = _Fixed(_match(_mark_bits(), MARK_DENY), _COUNTER, _DROP)
# Deny or Pass: the one bit both set (Allow and "no verdict" leave it clear). A bit test, not
# ``mark & MASK in {deny, pass}``: the kernel walks the whole transaction for every anonymous
# set a rule binds, which made a node's first full load quadratic in its endpoints.
_PROFILES_DENY = _Fixed(
    _match({"&": [_meta("mark"), MARK_DENY & MARK_PASS]}, MARK_DENY & MARK_PASS), _COUNTER, _DROP
)
# Allowed traffic to a workload is accepted here; allowed traffic from one returns to the base
# chain, which goes on to the destination's ingress chain.
_ALLOW = {
    ingress: _Fixed(_match(_mark_bits(), MARK_ALLOW), _COUNTER, _set_mark(0), verdict)
    for ingress, verdict in ((True, _ACCEPT), (False, _RETURN))
}
_JUMP_TEXT = f"[{_NO_VERDICT!r}, {_COUNTER!r}, {{'jump': {{'target': "


def _jump_rule(attribution: str, target: str) -> NftRule:
    expr = (_NO_VERDICT, _COUNTER, {"jump": {"target": target}})
    return NftRule(_comment_text(attribution, _JUMP_TEXT + repr(target) + "}}]"), expr)


def _endpoint_rules(endpoint: EndpointIntent, ingress: bool) -> tuple[NftRule, ...]:
    who = f"endpoint {endpoint.endpoint_id} {'ingress' if ingress else 'egress'}"
    if endpoint.deny_all:
        return (_fixed_rule(f"{who} deny-all", _DENY_ALL),)
    rules: list[NftRule] = []
    for tier in endpoint.ingress_tiers if ingress else endpoint.egress_tiers:
        if not tier.policy_ids:
            continue
        stage = f"{who} tier {tier.tier}"
        rules.append(_fixed_rule(f"{stage} start", _START))
        for policy_id in tier.policy_ids:
            target = policy_chain_name(policy_id, ingress)
            rules.append(_jump_rule(f"{stage} policy {policy_id}", target))
        rules.append(_fixed_rule(f"{stage} allow", _ALLOW[ingress]))
        rules.append(_fixed_rule(f"{stage} deny", _TIER_DENY))
        if tier.has_enforced and tier.default_action is not Action.PASS:
            rules.append(
                _fixed_rule(
                    f"{stage} end-of-tier deny",
                    _end_of_tier(ingress, tier.policy_ids[-1]),
                )
            )
    if endpoint.profile_ids:
        rules.append(_fixed_rule(f"{who} profiles start", _START))
        for profile_id in endpoint.profile_ids:
            target = profile_chain_name(profile_id, ingress)
            rules.append(_jump_rule(f"{who} profile {profile_id}", target))
        rules.append(_fixed_rule(f"{who} profiles allow", _ALLOW[ingress]))
        rules.append(_fixed_rule(f"{who} profiles deny", _PROFILES_DENY))  # Pass denies (4.7)
    rules.append(_fixed_rule(f"{who} no verdict", _DENY_ALL))
    return tuple(rules)


def render_endpoint(endpoint: EndpointIntent) -> list[NftChain]:
    return [
        NftChain(
            endpoint_chain_name(endpoint.endpoint_id, ingress), _endpoint_rules(endpoint, ingress)
        )
        for ingress in (True, False)
    ]


def render_base_chain() -> NftChain:
    ct_state = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    invalid = _match({"ct": {"key": "state"}}, "invalid", "in")
    return NftChain(
        BASE_CHAIN,
        (
            _rule("base established", [ct_state, _COUNTER, _ACCEPT]),
            _rule("base invalid", [invalid, _COUNTER, _DROP]),
            _rule(
                "base from-workload dispatch",
                [_COUNTER, {"vmap": {"key": _meta("iifname"), "data": "@" + FROM_MAP}}],
            ),
            _rule(
                "base to-workload dispatch",
                [_COUNTER, {"vmap": {"key": _meta("oifname"), "data": "@" + TO_MAP}}],
            ),
        ),
    )


_BASE = render_base_chain()


_Rendered = TypeVar("_Rendered")


class _RenderCache(Generic[_Rendered]):
    """One kind of intent, each rendered once and kept while the intent stays the same."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[object, list[_Rendered]]] = {}

    def refresh(
        self, intents: Mapping[str, Any], render: Callable[[str, Any], list[_Rendered]]
    ) -> bool:
        """Re-render what changed, forget what went; whether anything did. Allocates nothing
        for an unchanged intent, so a large node's unchanged state costs a dict lookup each."""
        changed = False
        if len(self.entries) != len(intents) or self.entries.keys() != intents.keys():
            for key in self.entries.keys() - intents.keys():
                del self.entries[key]
                changed = True
        for key, intent in intents.items():
            hit = self.entries.get(key)
            if hit is not None and (hit[0] is intent or hit[0] == intent):
                continue
            self.entries[key] = (intent, render(key, intent))
            changed = True
        return changed


class RulesetRenderer:
    """:func:`render_ruleset` with memory: each intent is rendered once and its objects reused
    while the intent stays the same, so after one change only that change is re-rendered (and
    the unchanged chains are the same objects, which :func:`delta_commands` skips at once).

    The dicts of a returned :class:`Ruleset` are never changed afterwards; a kind of object
    (sets, chains, maps) whose intents did not change is the very same dict as last time.
    """

    def __init__(self) -> None:
        self._sets: _RenderCache[NftSet] = _RenderCache()
        self._policies: _RenderCache[NftChain] = _RenderCache()
        self._profiles: _RenderCache[NftChain] = _RenderCache()
        self._endpoints: _RenderCache[NftChain] = _RenderCache()
        self._last: Ruleset | None = None

    def render(
        self,
        sets: Mapping[str, SetIntent],
        policies: Mapping[str, PolicyIntent],
        profiles: Mapping[str, ProfileIntent],
        endpoints: Mapping[str, EndpointIntent],
    ) -> Ruleset:
        # an endpoint without an interface has nothing to dispatch on: no traffic here
        dispatched = {k: e for k, e in endpoints.items() if e.interface is not None}
        sets_changed = self._sets.refresh(sets, render_sets)
        chains_changed = self._policies.refresh(policies, lambda _, p: render_policy(p))
        chains_changed |= self._profiles.refresh(profiles, lambda _, p: render_profile(p))
        endpoints_changed = self._endpoints.refresh(dispatched, lambda _, e: render_endpoint(e))
        last = self._last
        if last is not None and not (sets_changed or chains_changed or endpoints_changed):
            return last
        if last is not None and not sets_changed:
            nft_sets = last.sets
        else:
            nft_sets = {}
            for _, rendered_sets in self._sets.entries.values():
                for nft_set in rendered_sets:
                    nft_sets[nft_set.name] = nft_set
        maps = last.maps if last is not None and not endpoints_changed else None
        if last is not None and not (chains_changed or endpoints_changed):
            chains = last.chains
        else:
            chains = {}
            for cache in (self._policies, self._profiles):
                for _, rendered in cache.entries.values():
                    for chain in rendered:
                        chains[chain.name] = chain
            from_map: dict[str, str] = {}
            to_map: dict[str, str] = {}
            for endpoint, (to_chain, from_chain) in self._endpoints.entries.values():
                assert isinstance(endpoint, EndpointIntent) and endpoint.interface is not None
                chains[to_chain.name] = to_chain
                chains[from_chain.name] = from_chain
                to_map[endpoint.interface] = to_chain.name
                from_map[endpoint.interface] = from_chain.name
            if maps is None:
                maps = {FROM_MAP: from_map, TO_MAP: to_map}
        assert maps is not None
        self._last = Ruleset(nft_sets, chains, maps, _BASE)
        return self._last


def render_ruleset(
    sets: Mapping[str, SetIntent],
    policies: Mapping[str, PolicyIntent],
    profiles: Mapping[str, ProfileIntent],
    endpoints: Mapping[str, EndpointIntent],
) -> Ruleset:
    """The whole desired table for these intents (pure)."""
    return RulesetRenderer().render(sets, policies, profiles, endpoints)


# -- commands -----------------------------------------------------------------------------------


def _ref(kind: str, **extra: Any) -> Json:
    return {kind: {"family": FAMILY, "table": TABLE, **extra}}


def table_command(verb: str) -> Json:
    return {verb: {"table": {"family": FAMILY, "name": TABLE}}}


def set_object(nft_set: NftSet, elements: Iterable[str] = ()) -> Json:
    """The set, with ``elements`` (added to it, if it exists already)."""
    body: Json = {"family": FAMILY, "table": TABLE, "name": nft_set.name}
    body["type"] = nft_set.type[0] if len(nft_set.type) == 1 else list(nft_set.type)
    if nft_set.interval:
        body["flags"] = ["interval"]
    items = [set_element_json(nft_set, e) for e in sorted(elements)]
    if items:
        body["elem"] = items
    return {"set": body}


def map_object(name: str, entries: Mapping[str, str] | None = None) -> Json:
    """An interface → chain verdict map, with ``entries`` (added to it, if it exists)."""
    body = _ref("map", name=name, type="ifname", map="verdict")
    if entries:
        items = [[ifname, {"jump": {"target": chain}}] for ifname, chain in sorted(entries.items())]
        body["map"]["elem"] = items
    return body


def chain_object(name: str) -> Json:
    if name == BASE_CHAIN:
        return _ref(
            "chain",
            name=name,
            type="filter",
            hook="forward",
            prio=0,
            policy="accept",
        )
    return _ref("chain", name=name)


def rule_command(chain: str, rule: NftRule) -> Json:
    return {"add": _ref("rule", chain=chain, comment=rule.comment, expr=rule.expr)}


def empty_ruleset() -> Ruleset:
    return Ruleset({}, {}, {FROM_MAP: {}, TO_MAP: {}}, None)


def delta_commands(actual: Ruleset, desired: Ruleset, create_table: bool) -> list[Json]:
    """The smallest command list that turns ``actual`` into ``desired``, ordered so no command
    refers to an object that does not exist yet or removes one that is still referenced.

    A chain whose rules differ is flushed and refilled (within the one transaction); so is a
    set or map that loses elements, while one that only gains them gets just those.
    """
    commands: list[Json] = []
    if create_table:
        commands.append(table_command("add"))
    # Unchanged objects are usually the very same objects (the renderer reuses them), so the
    # scans below cost a dict lookup per object and sort only what differs.
    touched_sets = sorted(
        name for name, nft_set in desired.sets.items() if actual.sets.get(name) is not nft_set
    )
    replaced_sets = {
        name
        for name in touched_sets
        if name in actual.sets
        and (actual.sets[name].type, actual.sets[name].interval)
        != (desired.sets[name].type, desired.sets[name].interval)
    }
    changed = sorted(
        (
            chain
            for name, chain in desired.chains.items()
            if (old_chain := actual.chains.get(name)) is None
            or (old_chain is not chain and old_chain.signature != chain.signature)
            or _references(chain, replaced_sets)
        ),
        key=lambda chain: chain.name,
    )
    removed = [actual.chains[name] for name in sorted(actual.chains.keys() - desired.chains.keys())]
    # 1. empty every chain about to be rewritten or removed, so nothing still refers to what
    #    changes below (all within one transaction: no packet sees the empty chains)
    for chain in changed:
        if chain.name in actual.chains:
            commands.append({"flush": _ref("chain", name=chain.name)})
    for chain in removed:
        commands.append({"flush": _ref("chain", name=chain.name)})
    # 2. sets: replace those whose type drifted, create new ones, change contents. Never an
    #    element command: for a batch with one, nft first lists the elements of every interval
    #    set in the namespace (its cache rule), which at a thousand sets costs more than the
    #    rest of a change. New elements come with an ``add set``; a set that loses elements is
    #    flushed and refilled, still within the one transaction.
    for name in sorted(replaced_sets):
        commands.append({"delete": _ref("set", name=name)})
    for name in touched_sets:
        nft_set = desired.sets[name]
        old = actual.sets.get(name)
        if old is None or name in replaced_sets:
            commands.append({"add": set_object(nft_set, nft_set.elements)})
        elif old.elements - nft_set.elements:
            commands.append({"flush": _ref("set", name=name)})
            commands.append({"add": set_object(nft_set, nft_set.elements)})
        elif nft_set.elements - old.elements:
            commands.append({"add": set_object(nft_set, nft_set.elements - old.elements)})
    # 3. chains: create all first, so every jump target exists, then fill them
    for name in sorted(desired.chains.keys() - actual.chains.keys()):
        commands.append({"add": chain_object(name)})
    for chain in changed:
        commands.extend(rule_command(chain.name, rule) for rule in chain.rules)
    # 4. dispatch maps, the same way as sets
    for name, entries in sorted(desired.maps.items()):
        before_map = actual.maps.get(name)
        if before_map is None:
            commands.append({"add": map_object(name, entries)})
        elif before_map == entries:
            continue
        elif any(entries.get(k) != v for k, v in before_map.items()):
            commands.append({"flush": _ref("map", name=name)})
            commands.append({"add": map_object(name, entries)})
        else:
            fresh = {k: v for k, v in entries.items() if before_map.get(k) != v}
            commands.append({"add": map_object(name, fresh)})
    # 5. the base chain, once everything it dispatches to exists
    if desired.base is not None:
        if actual.base is None:
            commands.append({"add": chain_object(BASE_CHAIN)})
        if actual.base is None or actual.base.signature != desired.base.signature:
            if actual.base is not None:
                commands.append({"flush": _ref("chain", name=BASE_CHAIN)})
            commands.extend(rule_command(BASE_CHAIN, rule) for rule in desired.base.rules)
    # 6. removals, now that nothing refers to them
    for chain in removed:
        commands.append({"delete": _ref("chain", name=chain.name)})
    for name in sorted(set(actual.maps) - set(desired.maps)):
        commands.append({"delete": _ref("map", name=name)})
    for name in sorted(actual.sets.keys() - desired.sets.keys()):
        commands.append({"delete": _ref("set", name=name)})
    return commands


def _references(chain: NftChain, set_names: set[str]) -> bool:
    if not set_names:
        return False
    text = json.dumps([rule.expr for rule in chain.rules])
    return any(f'"@{name}"' in text for name in set_names)


def ruleset_commands(ruleset: Ruleset) -> list[Json]:
    """The commands that create ``ruleset`` in a table that does not exist yet."""
    return delta_commands(empty_ruleset(), ruleset, create_table=True)


__all__ = [
    "BASE_CHAIN",
    "FROM_MAP",
    "MARK_ALLOW",
    "MARK_DENY",
    "MARK_MASK",
    "MARK_PASS",
    "TO_MAP",
    "NftChain",
    "NftRule",
    "NftSet",
    "Ruleset",
    "RulesetRenderer",
    "delta_commands",
    "endpoint_chain_name",
    "policy_chain_name",
    "profile_chain_name",
    "render_ruleset",
    "ruleset_commands",
    "set_name",
]
