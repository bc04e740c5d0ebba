"""The nftables dataplane: renderer unit tests, and kernel tests inside test-made namespaces.

Kernel tests (marked ``root``) build a node namespace with routed veths (Calico style: a /32
and a /128 per pod, link-local gateways, static neighbours, no bridge) to pod namespaces,
program the node through :class:`NftablesDataplane` from the calc graph, and compare real
connection attempts — TCP connects, UDP echoes, ICMP/ICMPv6 echo requests, for every ordered
pair of pods — with ``PolicyEngine.evaluate``: on a hand-written cluster (tiers, Pass, Deny,
Log, named ports, notNets, ICMP), before and after a live change, and on generated clusters.
Every nft command runs inside the test's own node namespace, and every process a test starts
is killed in teardown, before the namespaces are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any

import pytest

from palisade.calc import (
    EndpointIntent,
    EntityIntent,
    IPSetIntent,
    NamedPortSetIntent,
    PolicyIntent,
    PortsIntent,
    ProfileIntent,
    RuleIntent,
    TierChain,
    build_graph,
    workload_interface_name,
)
from palisade.dataplane.linux import Neighbour, Netlink, Route
from palisade.dataplane.linux._libnft import available as libnftables_available
from palisade.dataplane.linux._libnft import enter_netns
from palisade.dataplane.linux._netns import run_in_netns
from palisade.dataplane.linux._nft_render import (
    BASE_CHAIN,
    FROM_MAP,
    MAX_NAME,
    TO_MAP,
    Ruleset,
    delta_commands,
    endpoint_chain_name,
    policy_chain_name,
    render_ruleset,
    ruleset_commands,
    set_name,
)
from palisade.dataplane.linux._nftables import NftablesDataplane, NftablesError, parse_listing
from palisade.policy import Action, Cluster, Flow, PolicyEngine
from palisade.policy.synthetic import generate_cluster
from tests.calc.dataplane import resource_key

from .conftest import Namespaces

# -- renderer -----------------------------------------------------------------------------------

SEL = "pals" + "a" * 26
NAMED = "paln" + "b" * 26
LONG_ID = "np:a-rather-long-namespace-name/an-even-longer-policy-name-than-that"


def _policy(policy_id: str = "np:prod/web", *rules: RuleIntent) -> PolicyIntent:
    return PolicyIntent(policy_id, ingress=rules, egress=())


def _endpoint(
    endpoint_id: str = "wep:prod/web-1",
    interface: str | None = "pal0123456789a",
    tiers: tuple[TierChain, ...] = (),
    profiles: tuple[str, ...] = ("kns.prod",),
    deny_all: bool = False,
) -> EndpointIntent:
    return EndpointIntent(
        endpoint_id, "node-a", interface, ("10.0.0.1",), tiers, (), profiles, deny_all
    )


ALLOW_ALL = ProfileIntent(
    "kns.prod", (RuleIntent(0, Action.ALLOW),), (RuleIntent(0, Action.ALLOW),)
)


def _rules(ruleset: Ruleset, chain: str) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(rule.comment, list(rule.expr)) for rule in ruleset.chains[chain].rules]


def test_policy_chain_matches_sets_ports_and_sets_verdict_mark() -> None:
    rule = RuleIntent(
        3,
        Action.ALLOW,
        protocol=6,
        source=EntityIntent(selector_set_id=SEL),
        destination=EntityIntent(ports=PortsIntent(ranges=((80, 80), (8000, 8080)))),
    )
    ruleset = render_ruleset(
        {SEL: IPSetIntent(SEL, frozenset({"10.0.0.1/32"}))},
        {"np:prod/web": _policy("np:prod/web", rule)},
        {},
        {},
    )
    chain = policy_chain_name("np:prod/web", ingress=True)
    assert chain.startswith("pal-pi-") and len(chain) <= MAX_NAME
    assert policy_chain_name("np:prod/web", ingress=False).startswith("pal-po-")
    rules = _rules(ruleset, chain)
    assert len(rules) == 2  # an IPv4 and an IPv6 variant: the selector set is split by family
    comment, expr = rules[0]
    assert comment.startswith("policy np:prod/web ingress 3 #")
    assert {"counter": None} in expr
    assert expr[-1] == {"return": None}
    text = json.dumps(expr)
    assert f'"@{set_name(SEL, 4)}"' in text
    assert '"l4proto"' in text and '"range": [8000, 8080]' in text
    assert '"mark"' in text
    assert f'"@{set_name(SEL, 6)}"' in json.dumps(rules[1][1])


def test_set_intents_split_by_family_and_merge_overlaps() -> None:
    members = frozenset({"10.0.0.0/24", "10.0.0.5/32", "10.0.1.0/24", "fd00::1/128"})
    ruleset = render_ruleset({SEL: IPSetIntent(SEL, members)}, {}, {}, {})
    v4, v6 = ruleset.sets[set_name(SEL, 4)], ruleset.sets[set_name(SEL, 6)]
    assert v4.type == ("ipv4_addr",) and v4.interval
    assert v4.elements == {"10.0.0.0/23"}
    assert v6.type == ("ipv6_addr",) and v6.elements == {"fd00::1/128"}
    assert all(len(name) <= MAX_NAME for name in ruleset.sets)


def test_named_port_sets_are_address_protocol_port_concatenations() -> None:
    intent = NamedPortSetIntent(NAMED, frozenset({"10.0.0.5,tcp:8080", "fd00::5,udp:53"}))
    ruleset = render_ruleset({NAMED: intent}, {}, {}, {})
    v4 = ruleset.sets[set_name(NAMED, 4)]
    assert v4.type == ("ipv4_addr", "inet_proto", "inet_service") and not v4.interval
    assert v4.elements == {"10.0.0.5 6 8080"}
    assert ruleset.sets[set_name(NAMED, 6)].elements == {"fd00::5 17 53"}
    commands = ruleset_commands(ruleset)
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in commands if "set" in c.get("add", {})}
    assert sets[set_name(NAMED, 4)]["elem"] == [{"concat": ["10.0.0.5", 6, 8080]}]


def test_long_ids_are_hashed_to_legal_unique_names() -> None:
    names = {
        policy_chain_name(LONG_ID, True),
        policy_chain_name(LONG_ID + "x", True),
        endpoint_chain_name("wep:" + "n" * 60 + "/pod", True),
        endpoint_chain_name("wep:" + "n" * 60 + "/pod", False),
        set_name("x" * 40, 4),
    }
    assert len(names) == 5
    assert all(len(name) <= MAX_NAME for name in names)


def test_ports_or_named_port_becomes_consecutive_variants() -> None:
    rule = RuleIntent(
        0,
        Action.DENY,
        protocol=6,
        destination=EntityIntent(
            nets=("10.1.0.0/16",),
            ports=PortsIntent(ranges=((22, 22),), named_port_set_ids=(NAMED,)),
        ),
    )
    sets = {NAMED: NamedPortSetIntent(NAMED, frozenset())}
    ruleset = render_ruleset(sets, {"gnp:x": _policy("gnp:x", rule)}, {}, {})
    rules = _rules(ruleset, policy_chain_name("gnp:x", True))
    # nets are IPv4 only, so no IPv6 variant; two alternatives for the ports
    assert len(rules) == 2
    assert '"th"' in json.dumps(rules[0][1]) and f"@{set_name(NAMED, 4)}" in json.dumps(rules[1][1])
    assert len({comment for comment, _ in rules}) == 2


def test_family_variants_are_pinned_to_their_family() -> None:
    """Regression: the IPv6 variant of a rule whose only address match is an IPv4 ``notNets``
    has no IPv6 address expression left, and must still not match IPv4 packets."""
    rule = RuleIntent(
        1,
        Action.ALLOW,
        protocol=6,
        source=EntityIntent(not_nets=("10.0.0.0/8",)),
        destination=EntityIntent(ports=PortsIntent(ranges=((8080, 8080),))),
    )
    ruleset = render_ruleset({}, {"np:a/b": _policy("np:a/b", rule)}, {}, {})
    v4, v6 = _rules(ruleset, policy_chain_name("np:a/b", True))
    nfproto = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}
    assert v6[1][0] == nfproto and "saddr" not in json.dumps(v6[1])
    assert v4[1][0]["match"]["right"] == "ipv4" and '"saddr"' in json.dumps(v4[1])


def test_log_rules_log_and_fall_through() -> None:
    ruleset = render_ruleset({}, {"gnp:l": _policy("gnp:l", RuleIntent(0, Action.LOG))}, {}, {})
    [(_, expr)] = _rules(ruleset, policy_chain_name("gnp:l", True))
    assert "log" in expr[-1] and {"return": None} not in expr


def test_endpoint_chains_walk_tiers_then_profiles_then_drop() -> None:
    tiers = (
        TierChain("security", Action.PASS, ("gnp:a", "gnp:b"), True),
        TierChain("default", Action.DENY, ("np:prod/web",), True),
    )
    policies = {
        p: _policy(p, RuleIntent(0, Action.ALLOW)) for p in ("gnp:a", "gnp:b", "np:prod/web")
    }
    endpoint = _endpoint(tiers=tiers)
    ruleset = render_ruleset(
        {}, policies, {"kns.prod": ALLOW_ALL}, {endpoint.endpoint_id: endpoint}
    )
    to_chain = endpoint_chain_name(endpoint.endpoint_id, True)
    comments = [c.rsplit(" #", 1)[0].split(" ", 3)[-1] for c, _ in _rules(ruleset, to_chain)]
    assert comments == [
        "tier security start",
        "tier security policy gnp:a",
        "tier security policy gnp:b",
        "tier security allow",
        "tier security deny",  # no end-of-tier deny: the tier's default is Pass
        "tier default start",
        "tier default policy np:prod/web",
        "tier default allow",
        "tier default deny",
        "tier default end-of-tier deny",
        "profiles start",
        "profile kns.prod",
        "profiles allow",
        "profiles deny",
        "no verdict",
    ]
    to_rules = _rules(ruleset, to_chain)
    assert {"accept": None} in to_rules[3][1]
    from_chain = endpoint_chain_name(endpoint.endpoint_id, False)
    assert {"return": None} in _rules(ruleset, from_chain)[2][1]  # egress allow returns
    assert ruleset.maps[TO_MAP] == {"pal0123456789a": to_chain}
    assert ruleset.maps[FROM_MAP] == {"pal0123456789a": from_chain}


def test_deny_all_endpoint_drops_everything() -> None:
    endpoint = _endpoint(profiles=(), deny_all=True)
    ruleset = render_ruleset({}, {}, {}, {endpoint.endpoint_id: endpoint})
    for ingress in (True, False):
        [(comment, expr)] = _rules(ruleset, endpoint_chain_name(endpoint.endpoint_id, ingress))
        assert "deny-all" in comment and expr == [{"counter": None}, {"drop": None}]


def test_full_ruleset_json_shape() -> None:
    endpoint = _endpoint()
    ruleset = render_ruleset({}, {}, {"kns.prod": ALLOW_ALL}, {endpoint.endpoint_id: endpoint})
    commands = ruleset_commands(ruleset)
    json.dumps({"nftables": commands})  # serialisable
    assert commands[0] == {"add": {"table": {"family": "inet", "name": "palisade"}}}
    rules = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert rules and all(r["comment"] and {"counter": None} in r["expr"] for r in rules)
    assert all(len(r["comment"]) <= 128 for r in rules)
    base = [c["add"]["chain"] for c in commands if c.get("add", {}).get("chain", {}).get("hook")]
    assert base == [
        {
            "family": "inet",
            "table": "palisade",
            "name": BASE_CHAIN,
            "type": "filter",
            "hook": "forward",
            "prio": 0,
            "policy": "accept",
        }
    ]
    base_rules = [r for r in rules if r["chain"] == BASE_CHAIN]
    assert "ct" in json.dumps(base_rules[0]) and {"accept": None} in base_rules[0]["expr"]
    assert any(f"@{FROM_MAP}" in json.dumps(r) for r in base_rules)
    assert any(f"@{TO_MAP}" in json.dumps(r) for r in base_rules)


def _object_of(command: dict[str, Any]) -> str:
    """The chain a rule command edits, or the object another command names."""
    [(kind, body)] = next(iter(command.values())).items()
    return str(body["chain"] if kind == "rule" else body["name"])


def test_delta_touches_only_what_changed() -> None:
    endpoint = _endpoint(tiers=(TierChain("default", Action.DENY, ("np:prod/web",), True),))
    sets = {SEL: IPSetIntent(SEL, frozenset({"10.0.0.1/32"}))}
    rule = RuleIntent(0, Action.ALLOW, source=EntityIntent(selector_set_id=SEL))
    before = render_ruleset(
        sets,
        {"np:prod/web": _policy("np:prod/web", rule)},
        {"kns.prod": ALLOW_ALL},
        {endpoint.endpoint_id: endpoint},
    )
    assert delta_commands(before, before, create_table=False) == []

    def with_members(*members: str) -> Ruleset:
        return render_ruleset(
            {SEL: IPSetIntent(SEL, frozenset(members))},
            {"np:prod/web": _policy("np:prod/web", rule)},
            {"kns.prod": ALLOW_ALL},
            {endpoint.endpoint_id: endpoint},
        )

    # a set that only gains members gets just those, with no element command (see
    # delta_commands: nft would list every interval set's elements first)
    delta = delta_commands(before, with_members("10.0.0.1/32", "10.0.9.0/24"), False)
    assert delta == [
        {
            "add": {
                "set": {
                    "family": "inet",
                    "table": "palisade",
                    "name": set_name(SEL, 4),
                    "type": "ipv4_addr",
                    "flags": ["interval"],
                    "elem": [{"prefix": {"addr": "10.0.9.0", "len": 24}}],
                }
            }
        }
    ]
    # a set that loses a member is flushed and refilled, nothing else
    delta = delta_commands(before, with_members("10.0.0.2/32"), create_table=False)
    assert [next(iter(c)) for c in delta] == ["flush", "add"]
    assert {_object_of(c) for c in delta} == {set_name(SEL, 4)}
    assert delta[1]["add"]["set"]["elem"] == ["10.0.0.2"]
    # a rule change rewrites only that policy's chain
    denied = RuleIntent(0, Action.DENY, source=EntityIntent(selector_set_id=SEL))
    after = render_ruleset(
        sets,
        {"np:prod/web": _policy("np:prod/web", denied)},
        {"kns.prod": ALLOW_ALL},
        {endpoint.endpoint_id: endpoint},
    )
    delta = delta_commands(before, after, create_table=False)
    touched = {_object_of(command) for command in delta}
    assert touched == {policy_chain_name("np:prod/web", True)}
    # removing the endpoint removes its chains and map entries before the policy's chains
    gone = render_ruleset(sets, {}, {}, {})
    delta = delta_commands(before, gone, create_table=False)
    verbs = [(verb, next(iter(body))) for c in delta for verb, body in c.items()]
    first_delete = verbs.index(("delete", "chain"))
    assert all(i < first_delete for i, v in enumerate(verbs) if v == ("flush", "chain"))
    assert verbs.index(("flush", "map")) < verbs.index(("delete", "chain"))
    assert ("delete", "element") not in verbs


def test_parse_listing_normalises_what_nft_prints() -> None:
    listing = {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "inet", "name": "palisade", "handle": 1}},
            {
                "set": {
                    "family": "inet",
                    "name": "s4",
                    "table": "palisade",
                    "type": "ipv4_addr",
                    "flags": ["interval"],
                    "elem": [
                        {"prefix": {"addr": "10.0.0.0", "len": 24}},
                        "10.1.0.5",
                        {"range": ["10.2.0.0", "10.2.1.255"]},
                        {"elem": {"val": "10.3.0.1", "counter": {"packets": 0, "bytes": 0}}},
                    ],
                }
            },
            {
                "set": {
                    "family": "inet",
                    "name": "n4",
                    "table": "palisade",
                    "type": ["ipv4_addr", "inet_proto", "inet_service"],
                    "elem": [{"concat": ["10.0.0.5", "tcp", 8080]}],
                }
            },
            {
                "map": {
                    "family": "inet",
                    "name": FROM_MAP,
                    "table": "palisade",
                    "type": "ifname",
                    "map": "verdict",
                    "elem": [["pal0", {"jump": {"target": "pal-fr-x"}}]],
                }
            },
            {"chain": {"family": "inet", "table": "palisade", "name": "pal-fr-x"}},
            {
                "chain": {
                    "family": "inet",
                    "table": "palisade",
                    "name": BASE_CHAIN,
                    "hook": "forward",
                }
            },
            {"rule": {"chain": "pal-fr-x", "comment": "a #1", "expr": [{"drop": None}]}},
            {"rule": {"chain": "pal-fr-x", "expr": [{"accept": None}]}},  # someone else's
            {"rule": {"chain": BASE_CHAIN, "comment": "b #2", "expr": [{"accept": None}]}},
        ]
    }
    ruleset = parse_listing(listing)
    assert ruleset.sets["s4"].elements == {
        "10.0.0.0/24",
        "10.1.0.5/32",
        "10.2.0.0/23",
        "10.3.0.1/32",
    }
    assert ruleset.sets["s4"].interval and not ruleset.sets["n4"].interval
    assert ruleset.sets["n4"].elements == {"10.0.0.5 6 8080"}
    assert ruleset.maps == {FROM_MAP: {"pal0": "pal-fr-x"}}
    assert ruleset.chains["pal-fr-x"].signature == ("a #1", "")
    assert ruleset.base is not None and ruleset.base.signature == ("b #2",)
    assert BASE_CHAIN not in ruleset.chains


# -- kernel -------------------------------------------------------------------------------------

NODE = "node-a"
PORTS = ("tcp/8080", "tcp/5432", "udp/8080", "icmp/8")
"""What a probe tries on every ordered pair of pods: ``protocol/port``, or ``icmp/8`` for an
echo request (ICMPv6 echo over IPv6)."""
IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
HOST_GATEWAY = "169.254.1.1"
HOST_GATEWAY6 = "fe80::1"


def _namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _pod(
    key: str, ips: tuple[str, ...], labels: dict[str, str], http: int | None
) -> dict[str, Any]:
    namespace, name = key.split("/")
    ports = [{"name": "http", "containerPort": http, "protocol": "TCP"}] if http else []
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]},
    }


PODS = {
    "prod/web": (("10.65.0.1", "fd00:65::1"), {"app": "web"}, 8080),
    "prod/db": (("10.65.0.2", "fd00:65::2"), {"app": "db"}, 5432),  # same port name, new number
    "ops/tool": (("10.65.0.3", "fd00:65::3"), {"app": "tool"}, None),
    "dev/evil": (("10.65.0.4",), {"app": "evil"}, None),  # IPv4 only
}

SECURITY_TIER: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "Tier",
    "metadata": {"name": "security"},
    "spec": {"order": 100, "defaultAction": "Deny"},
}
QUARANTINE: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "security.quarantine"},
    "spec": {
        "tier": "security",
        "order": 10,
        "selector": "all()",
        "types": ["Ingress", "Egress"],
        "ingress": [
            {"action": "Deny", "source": {"selector": "app == 'evil'"}},
            {"action": "Pass"},
        ],
        "egress": [
            {"action": "Pass", "destination": {"selector": "app in {'web', 'db'}"}},
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}},
            {"action": "Pass", "protocol": "ICMP"},
            {"action": "Pass", "protocol": "ICMPv6"},
        ],
    },
}
DB_INGRESS: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db-ingress", "namespace": "prod"},
    "spec": {
        "selector": "app == 'db'",
        "types": ["Ingress"],
        "ingress": [
            {
                "action": "Log",
                "source": {"selector": "app == 'tool'", "namespaceSelector": "all()"},
            },
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'web'"},
                "destination": {"ports": ["http"]},
            },
        ],
    },
}
WEB_FROM_OPS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-from-ops", "namespace": "prod"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "ops"}}}]}],
    },
}
PING_EVIL: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "ping-evil"},
    "spec": {
        "order": 50,
        "selector": "app == 'evil'",
        "types": ["Ingress"],
        "ingress": [
            {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 8}},
            {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
            {"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}},
        ],
    },
}
WEB_NO_PING: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web-no-ping", "namespace": "prod"},
    "spec": {
        "order": 1,
        "selector": "app == 'web'",
        "types": ["Ingress"],
        "ingress": [
            {"action": "Deny", "protocol": "ICMP", "source": {"notNets": ["10.65.0.2/32"]}}
        ],
    },
}
BLOCK_TOOL: dict[str, Any] = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "security.block-tool"},
    "spec": {
        "tier": "security",
        "order": 1,
        "selector": "app == 'web'",
        "types": ["Ingress"],
        "ingress": [{"action": "Deny", "source": {"selector": "app == 'tool'"}}],
    },
}

DOCUMENTS: list[dict[str, Any]] = [
    _namespace("prod", {"env": "prod"}),
    _namespace("ops", {"env": "ops"}),
    _namespace("dev", {"env": "dev"}),
    *(_pod(key, ips, labels, http) for key, (ips, labels, http) in PODS.items()),
    SECURITY_TIER,
    QUARANTINE,
    DB_INGRESS,
    WEB_FROM_OPS,
    PING_EVIL,
    WEB_NO_PING,
]

LISTENER = r"""
import socket, sys, threading
def echo(conn):
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
def serve(server):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
def serve_udp(server):
    while True:
        data, peer = server.recvfrom(4096)
        server.sendto(data, peer)
for spec in sys.argv[1:]:
    protocol, port = spec.split("/")
    if protocol == "icmp":
        continue  # the kernel answers echo requests itself
    if protocol == "udp":
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", int(port)))
        threading.Thread(target=serve_udp, args=(server,), daemon=True).start()
        continue
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("::", int(port)))
    server.listen(64)
    threading.Thread(target=serve, args=(server,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

PROBE = r"""
import json, os, socket, struct, sys, time
from concurrent.futures import ThreadPoolExecutor
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
def ping(ip, ident):
    v6 = ":" in ip
    family, protocol = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    )
    request, reply = (128, 129) if v6 else (8, 0)
    packet = struct.pack("!BBHHH", request, 0, 0, ident, 1) + b"palisade"
    if not v6:  # the kernel fills in the ICMPv6 checksum itself
        packet = struct.pack("!BBHHH", request, 0, checksum(packet), ident, 1) + b"palisade"
    with socket.socket(family, socket.SOCK_RAW, protocol) as conn:
        conn.sendto(packet, (ip, 0))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            data, peer = conn.recvfrom(2048)
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]
            kind, _, _, got, _ = struct.unpack("!BBHHH", data[:8])
            if kind == reply and got == ident and peer[0] == ip:
                return True
    return False
def attempt(target):
    ip, spec, index = target
    protocol, port = spec.split("/")
    try:
        if protocol == "icmp":
            return ping(ip, (os.getpid() * 64 + index) & 0xFFFF)
        if protocol == "udp":
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as conn:
                conn.settimeout(1.0)
                conn.connect((ip, int(port)))
                conn.send(b"probe")
                return conn.recv(64) == b"probe"
        with socket.create_connection((ip, int(port)), timeout=1.0):
            return True
    except OSError:
        return False
targets = [(ip, spec, index) for index, (ip, spec) in enumerate(json.loads(sys.argv[1]))]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(attempt, targets))))
"""

CLIENT = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2.0)
print("connected", flush=True)
for line in sys.stdin:
    conn.sendall(line.encode())
    print(conn.recv(4096).decode().strip(), flush=True)
"""


Attempt = tuple[str, str, str, int]
"""(source pod, destination pod, ``protocol/port``, IP version)."""


@dataclass
class Lab:
    """A node namespace routing to pod namespaces; ``pods``: ``ns/name`` → (netns, ips)."""

    node: str
    ports: tuple[str, ...] = PORTS
    pods: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def spawn(self, netns: str, script: str, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [IP, "netns", "exec", netns, sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def start_listeners(self) -> None:
        started = [self.spawn(netns, LISTENER, *self.ports) for netns, _ in self.pods.values()]
        for process in started:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.stderr

    def _pairs(self) -> list[tuple[str, str, str, str, str]]:
        """(source, destination, source ip, destination ip, port) for every ordered pair of
        pods, every address family both have, every port."""
        return [
            (source, destination, source_ip, destination_ip, port)
            for source, (_, source_ips) in self.pods.items()
            for destination, (_, destination_ips) in self.pods.items()
            if destination != source
            for source_ip in source_ips
            for destination_ip in destination_ips
            if ip_address(source_ip).version == ip_address(destination_ip).version
            for port in self.ports
        ]

    def probe(self) -> dict[Attempt, bool]:
        """Real connection attempts (TCP connect, UDP echo) for every ordered pair of pods on
        every port and address family, all at once; a dropped attempt gives up after 1 s."""
        runs = {}
        for source, (netns, _) in self.pods.items():
            targets = [pair for pair in self._pairs() if pair[0] == source]
            argument = json.dumps([[pair[3], pair[4]] for pair in targets])
            runs[source] = (targets, self.spawn(netns, PROBE, argument))
        observed: dict[Attempt, bool] = {}
        for targets, process in runs.values():
            out, err = process.communicate(timeout=15)
            assert process.returncode == 0, err
            for pair, allowed in zip(targets, json.loads(out), strict=True):
                source, destination, _, destination_ip, port = pair
                observed[(source, destination, port, ip_address(destination_ip).version)] = allowed
        return observed

    def expected(self, documents: list[dict[str, Any]]) -> dict[Attempt, bool]:
        engine = PolicyEngine(Cluster.from_documents(documents))
        verdicts: dict[Attempt, bool] = {}
        for source, destination, source_ip, destination_ip, spec in self._pairs():
            protocol, port = spec.split("/")
            version = ip_address(destination_ip).version
            source_address, destination_address = ip_address(source_ip), ip_address(destination_ip)
            if protocol == "icmp":  # an echo request: ``icmp/8``, ICMPv6 type 128 over IPv6
                flow = (
                    Flow(source_address, destination_address, 1, icmp_type=8, icmp_code=0)
                    if version == 4
                    else Flow(source_address, destination_address, 58, icmp_type=128, icmp_code=0)
                )
            else:
                number = {"tcp": 6, "udp": 17}[protocol]
                flow = Flow(source_address, destination_address, number, int(port))
            verdicts[(source, destination, spec, version)] = engine.evaluate(flow).allowed
        return verdicts


def _attach_pod(node: str, pod_netns: str, host_interface: str, ips: tuple[str, ...]) -> None:
    """Calico-style routed veth: the pod has a /32 (and a /128) and default routes through
    link-local gateways; static neighbours on both ends, so no ARP, NDP or proxy-ARP."""
    with Netlink(node) as nl:
        nl.create_veth(host_interface, "eth0", peer_netns=pod_netns)
        nl.set_up(host_interface)
        host_mac = nl.link(host_interface).mac
    assert host_mac is not None
    with Netlink(pod_netns) as nl:
        nl.set_sysctl("net.ipv6.conf.eth0.accept_dad", 0)  # addresses usable at once
        nl.set_up("lo")
        nl.set_up("eth0")
        for ip in ips:
            address = ip_address(ip)
            gateway = ip_address(HOST_GATEWAY if address.version == 4 else HOST_GATEWAY6)
            default = ip_network("0.0.0.0/0" if address.version == 4 else "::/0")
            nl.add_address("eth0", ip_interface(f"{ip}/{address.max_prefixlen}"))
            nl.add_neighbour(Neighbour(gateway, host_mac, "eth0"))
            nl.add_route(Route(default, gateway, "eth0", onlink=True))
        pod_mac = nl.link("eth0").mac
    assert pod_mac is not None
    with Netlink(node) as nl:
        for ip in ips:
            address = ip_address(ip)
            nl.add_route(Route(ip_network(f"{ip}/{address.max_prefixlen}"), None, host_interface))
            nl.add_neighbour(Neighbour(address, pod_mac, host_interface))


LabFactory = Callable[[dict[str, tuple[str, ...]], tuple[str, ...]], Lab]


@pytest.fixture
def make_lab(netns: Namespaces) -> Iterator[LabFactory]:
    """Builds labs (``ns/pod`` → addresses, ports to probe); kills their processes after."""
    built: list[Lab] = []

    def make(pods: dict[str, tuple[str, ...]], ports: tuple[str, ...]) -> Lab:
        lab = Lab(netns.new(f"n{len(built)}"), ports)
        built.append(lab)
        with Netlink(lab.node) as nl:
            nl.set_up("lo")
            nl.set_sysctl("net.ipv4.ip_forward", 1)
            nl.set_sysctl("net.ipv6.conf.all.forwarding", 1)
        for index, (key, ips) in enumerate(pods.items()):
            pod_netns = netns.new(f"p{len(built)}-{index}")
            namespace, name = key.split("/")
            _attach_pod(lab.node, pod_netns, workload_interface_name(namespace, name), ips)
            lab.pods[key] = (pod_netns, ips)
        return lab

    try:
        yield make
    finally:
        processes = [process for lab in built for process in lab.processes]
        for process in processes:
            process.kill()
        for process in processes:
            process.communicate(timeout=10)  # reaps it and closes its pipes


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    return make_lab({key: ips for key, (ips, _, _) in PODS.items()}, PORTS)


def _program(driver: NftablesDataplane, documents: list[dict[str, Any]]) -> int:
    graph = build_graph(NODE, driver)
    for document in documents:
        graph.on_update(resource_key(document), document)
    graph.flush()
    return driver.apply()


@pytest.mark.root
def test_kernel_verdicts_equal_engine_verdicts(lab: Lab) -> None:
    driver = NftablesDataplane(lab.node)
    graph = build_graph(NODE, driver)
    for document in DOCUMENTS:
        graph.on_update(resource_key(document), document)
    graph.flush()
    assert driver.apply() > 0
    lab.start_listeners()
    expected = lab.expected(DOCUMENTS)
    # the case exercises both outcomes in both address families
    for version in (4, 6):
        assert {v for key, v in expected.items() if key[3] == version} == {True, False}
    for spec in PORTS:
        assert {v for key, v in expected.items() if key[2] == spec} == {True, False}
    assert lab.probe() == expected
    # counters on every rule: the Log rule of db-ingress saw the tool's attempts
    counters = driver.read_counters()
    assert counters and all(c.comment for c in counters)
    logged = [c for c in counters if c.comment.startswith("policy np:prod/db-ingress ingress 0 #")]
    assert logged and logged[0].packets > 0
    # live change: the quarantine goes, a block on the tool comes; the kernel follows the engine
    changed = [d for d in DOCUMENTS if d is not QUARANTINE] + [BLOCK_TOOL]
    graph.on_update(resource_key(QUARANTINE), None)
    graph.on_update(resource_key(BLOCK_TOOL), BLOCK_TOOL)
    graph.flush()
    assert driver.apply() > 0
    assert lab.probe() == lab.expected(changed)
    assert driver.apply() == 0  # in sync: nothing to send


BACKENDS = [
    pytest.param(
        True,
        id="libnftables",
        marks=pytest.mark.skipif(not libnftables_available(), reason="no libnftables.so.1"),
    ),
    pytest.param(False, id="nft"),
]


@pytest.fixture
def closing() -> Iterator[Callable[[NftablesDataplane], NftablesDataplane]]:
    """Closes the drivers a test makes (ends their libnftables threads), also on failure."""
    drivers: list[NftablesDataplane] = []

    def register(driver: NftablesDataplane) -> NftablesDataplane:
        drivers.append(driver)
        return driver

    try:
        yield register
    finally:
        for driver in drivers:
            driver.close()


@pytest.mark.root
@pytest.mark.parametrize("libnftables", BACKENDS)
def test_failed_batch_changes_nothing(
    netns: Namespaces, closing: Callable[[NftablesDataplane], NftablesDataplane], libnftables: bool
) -> None:
    driver = closing(NftablesDataplane(netns.a, libnftables=libnftables))
    assert driver.backend == ("libnftables" if libnftables else "nft")
    assert _program(driver, DOCUMENTS) > 0
    before = driver.read_table()
    assert before is not None
    bad = [
        {"add": {"chain": {"family": "inet", "table": "palisade", "name": "pal-new"}}},
        {"delete": {"set": {"family": "inet", "table": "palisade", "name": "pal-missing"}}},
    ]
    with pytest.raises(NftablesError) as caught:
        driver.run_batch(bad)
    assert "nft -j -f -" in caught.value.command and netns.a in caught.value.command
    assert caught.value.message
    after = driver.read_table()
    assert after is not None and "pal-new" not in after.chains
    assert _shape(after) == _shape(before)
    # a driver batch that nft rejects (port out of range) leaves the ruleset as it was too
    bad_rule = RuleIntent(
        0, Action.ALLOW, protocol=6, destination=EntityIntent(ports=PortsIntent(((70000, 70000),)))
    )
    [policy_id] = [p for p in driver.policies if "db-ingress" in p]
    good = driver.policies[policy_id]
    driver.on_policy_update(policy_id, PolicyIntent(policy_id, (bad_rule,), ()))
    with pytest.raises(NftablesError):
        driver.apply()
    assert _shape(driver.read_table()) == _shape(before)
    driver.on_policy_update(policy_id, good)
    assert driver.apply() == 0  # re-read after the failure: the kernel already has this


@pytest.mark.root
@pytest.mark.parametrize("libnftables", BACKENDS)
def test_set_and_map_changes_reach_the_kernel(
    netns: Namespaces, closing: Callable[[NftablesDataplane], NftablesDataplane], libnftables: bool
) -> None:
    """Members gained (``add set`` with just them), members lost (flush and refill), an
    endpoint gone (its map entries flushed away): the kernel ends up with the desired table."""
    driver = closing(NftablesDataplane(netns.a, libnftables=libnftables))
    _program(driver, DOCUMENTS)
    set_id, intent = next((k, v) for k, v in driver.sets.items() if isinstance(v, IPSetIntent))
    members = sorted(intent.members)
    steps = [
        frozenset({*members, "10.99.0.0/24", "10.99.1.7/32", "fd00:99::/64"}),  # gained
        frozenset({*members[1:], "10.99.0.0/23"}),  # lost one, and two merge
        frozenset(),  # emptied
        intent.members,
    ]
    for step in steps:
        driver.on_ipset_update(set_id, IPSetIntent(set_id, step))
        assert driver.apply() > 0
        assert not any("element" in body for c in driver.last_commands for body in c.values())
        assert _shape(driver.read_table()) == _shape(driver.desired())
    endpoint_id = next(iter(driver.endpoints))
    driver.on_endpoint_update(endpoint_id, None)
    assert driver.apply() > 0
    assert _shape(driver.read_table()) == _shape(driver.desired())


@pytest.mark.root
@pytest.mark.skipif(not libnftables_available(), reason="no libnftables.so.1")
def test_libnftables_and_nft_program_and_list_the_same(
    netns: Namespaces, closing: Callable[[NftablesDataplane], NftablesDataplane]
) -> None:
    """The in-process path and the ``nft`` process path are interchangeable: the same
    intents give the same table, and both read any table back identically."""
    documents = generate_cluster(namespaces=3, pods=16, policies=16, tiers=2, seed=5)
    for document in documents:
        if document["kind"] == "Pod":
            document["spec"]["nodeName"] = NODE
    in_process = closing(NftablesDataplane(netns.a, libnftables=True))
    spawning = closing(NftablesDataplane(netns.b, libnftables=False))
    assert _program(in_process, documents) == _program(spawning, documents) > 0
    assert in_process.last_commands == spawning.last_commands
    reader_a = closing(NftablesDataplane(netns.a, libnftables=False))
    reader_b = closing(NftablesDataplane(netns.b, libnftables=True))
    listing_a = in_process.list_table()
    assert listing_a is not None and listing_a == reader_a.list_table()
    assert spawning.list_table() == reader_b.list_table()
    assert _shape(in_process.read_table()) == _shape(spawning.read_table())
    assert _shape(in_process.read_table()) == _shape(in_process.desired())
    assert in_process.read_counters() == reader_a.read_counters()
    # one driver adopts what the other programmed, without a single change
    adopting = closing(NftablesDataplane(netns.b, libnftables=True))
    assert _program(adopting, documents) == 0


@pytest.mark.root
@pytest.mark.skipif(not libnftables_available(), reason="no libnftables.so.1")
def test_libnftables_thread_runs_in_the_drivers_namespace(
    netns: Namespaces, closing: Callable[[NftablesDataplane], NftablesDataplane]
) -> None:
    def namespace_of_thread(thread_id: int | None) -> int:
        return os.stat(f"/proc/self/task/{thread_id}/ns/net").st_ino

    driver = closing(NftablesDataplane(netns.a, libnftables=True))
    assert not _libnft_threads(netns.prefix)  # no thread before the first call
    assert driver.read_table() is None
    [thread] = _libnft_threads(netns.a)
    assert thread.native_id is not None
    assert namespace_of_thread(thread.native_id) == os.stat(f"/var/run/netns/{netns.a}").st_ino
    # the caller stays where it was
    assert namespace_of_thread(threading.get_native_id()) == os.stat("/proc/self/ns/net").st_ino
    # the table lands in that namespace only
    driver.run_batch([{"add": {"table": {"family": "inet", "name": "palisade"}}}])
    other = closing(NftablesDataplane(netns.b, libnftables=True))
    assert other.read_table() is None and driver.read_table() is not None
    driver.close()
    other.close()
    assert not _libnft_threads(netns.prefix)  # both threads ended
    assert driver.read_table() is not None  # a closed driver starts a new thread when needed
    driver.close()
    # a missing namespace is an error, not an absent table
    missing = closing(NftablesDataplane(netns.prefix + "gone", libnftables=True))
    with pytest.raises(NftablesError, match="cannot enter network namespace"):
        missing.read_table()


@pytest.mark.root
@pytest.mark.skipif(not libnftables_available(), reason="no libnftables.so.1")
def test_libnftables_without_netns_works_where_its_caller_is(netns: Namespaces) -> None:
    """``netns=None`` programs the namespace of the thread that first talks to the kernel
    (here a thread that entered the test's namespace, so the host's tables stay untouched)."""
    outcome: list[object] = []

    def caller() -> None:
        try:
            enter_netns(netns.a)
            with NftablesDataplane(None, libnftables=True) as driver:
                assert driver.read_table() is None
                driver.run_batch([{"add": {"table": {"family": "inet", "name": "palisade"}}}])
                outcome.append(driver.read_table())
        except BaseException as exc:  # reported by the test thread below
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join()
    [found] = outcome
    assert isinstance(found, Ruleset), found
    with NftablesDataplane(netns.a, libnftables=False) as reader:
        assert reader.read_table() is not None


def _libnft_threads(netns_prefix: str) -> list[threading.Thread]:
    name = f"palisade-libnftables-{netns_prefix}"
    return [thread for thread in threading.enumerate() if thread.name.startswith(name)]


def _shape(ruleset: Ruleset | None) -> tuple[object, ...]:
    assert ruleset is not None
    return (
        ruleset.sets,
        {name: chain.signature for name, chain in ruleset.chains.items()},
        ruleset.maps,
        ruleset.base.signature if ruleset.base else None,
    )


@pytest.mark.root
def test_resync_repairs_drift(netns: Namespaces) -> None:
    driver = NftablesDataplane(netns.a)
    _program(driver, DOCUMENTS)
    desired = _shape(driver.desired())
    some_chain = next(name for name in driver.desired().chains if name.startswith("pal-pi-"))
    some_set = next(name for name, s in driver.desired().sets.items() if s.elements)
    driver.run_batch(
        [
            {"flush": {"chain": {"family": "inet", "table": "palisade", "name": some_chain}}},
            {"flush": {"set": {"family": "inet", "table": "palisade", "name": some_set}}},
            {"delete": {"chain": {"family": "inet", "table": "palisade", "name": BASE_CHAIN}}},
        ]
    )
    assert driver.apply() == 0  # the driver believes its last apply...
    assert driver.resync() > 0  # ...until it looks
    assert _shape(driver.read_table()) == desired
    skipped = driver.skipped_resyncs
    assert driver.resync() == 0
    assert driver.skipped_resyncs == skipped + 1  # nothing committed since: no read needed
    # another process changes the table: the generation moves, the resync reads and repairs
    run_in_netns(netns.a, ["nft", "flush", "chain", "inet", "palisade", some_chain], check=True)
    assert driver.resync() > 0 and driver.skipped_resyncs == skipped + 1
    assert _shape(driver.read_table()) == desired
    assert driver.resync(force=True) == 0  # a forced read finds nothing to repair
    # someone deletes the whole table; the next change fails against the driver's memory,
    # so the driver reads the table back and programs it afresh in the same apply()
    driver.run_batch([{"delete": {"table": {"family": "inet", "name": "palisade"}}}])
    endpoint_id = next(iter(driver.endpoints))
    driver.on_endpoint_update(endpoint_id, None)
    assert driver.apply() > 0
    assert _shape(driver.read_table()) == _shape(driver.desired())


@pytest.mark.root
def test_restarted_driver_adopts_table_and_live_connection_survives(lab: Lab) -> None:
    first = NftablesDataplane(lab.node)
    _program(first, DOCUMENTS)
    lab.start_listeners()
    assert lab.expected(DOCUMENTS)[("ops/tool", "prod/web", "tcp/8080", 4)]
    tool_netns, _ = lab.pods["ops/tool"]
    client = lab.spawn(tool_netns, CLIENT, PODS["prod/web"][0][0], "8080")
    assert client.stdin is not None and client.stdout is not None

    def echo(text: str) -> str:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(text + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    assert client.stdout.readline().strip() == "connected"
    assert echo("one") == "one"
    handles = _handles(lab.node)
    # a new agent process: a fresh driver and graph adopt the table, changing nothing
    second = NftablesDataplane(lab.node)
    assert _program(second, DOCUMENTS) == 0
    assert _handles(lab.node) == handles  # not a single object was re-created
    assert echo("two") == "two"
    # new connections from the tool are now denied; the established one keeps flowing
    second_graph_documents = [*DOCUMENTS, BLOCK_TOOL]
    third = NftablesDataplane(lab.node)
    assert _program(third, second_graph_documents) > 0
    observed = lab.probe()
    assert observed == lab.expected(second_graph_documents)
    assert not observed[("ops/tool", "prod/web", "tcp/8080", 4)]
    assert echo("three") == "three"


def _handles(netns: str) -> list[tuple[str, int]]:
    listing = subprocess.run(
        [IP, "netns", "exec", netns, NFT, "-j", "-a", "list", "table", "inet", "palisade"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(
        (kind, int(body["handle"]))
        for item in json.loads(listing)["nftables"]
        for kind, body in item.items()
        if isinstance(body, dict) and "handle" in body
    )


@pytest.mark.root
@pytest.mark.parametrize("seed", range(3))
def test_kernel_accepts_synthetic_clusters_and_reads_them_back(
    netns: Namespaces, seed: int
) -> None:
    """A broad feature mix (tiers, network sets, notNets, port ranges, named ports, ICMP,
    service accounts…) renders to a batch nft accepts, and reading the table back finds
    exactly what was rendered (so a restart adopts it without a single change)."""
    documents = generate_cluster(namespaces=3, pods=24, policies=24, tiers=2, seed=seed)
    for document in documents:
        if document["kind"] == "Pod":
            document["spec"]["nodeName"] = NODE
    driver = NftablesDataplane(netns.a)
    assert _program(driver, documents) > 0
    assert driver.policies and driver.sets
    assert _shape(driver.read_table()) == _shape(driver.desired())
    assert driver.resync() == 0
    # removing everything leaves an empty table behind, and nothing references a stale object
    for store in (driver.endpoints, driver.profiles, driver.policies, driver.sets):
        store.clear()
    assert driver.apply() > 0
    emptied = driver.read_table()
    assert emptied is not None and not emptied.chains and not emptied.sets
    assert driver.delete_table() and driver.read_table() is None


SMALL = (2, 8, 12, 1)  # namespaces, pods, policies, tiers
TWO_TIERS = (3, 10, 16, 2)


@pytest.mark.root
@pytest.mark.parametrize(
    ("size", "seed"),
    [
        *((SMALL, seed) for seed in (1, 3, 4, 5, 7)),
        *((TWO_TIERS, seed) for seed in (11, 12, 16)),
    ],
    ids=lambda value: "x".join(map(str, value)) if isinstance(value, tuple) else str(value),
)
def test_kernel_verdicts_equal_engine_verdicts_on_synthetic_clusters(
    make_lab: LabFactory, size: tuple[int, int, int, int], seed: int
) -> None:
    """Generated clusters (tiers, network sets, named ports, notNets, ranges, Kubernetes and
    Calico policies): the real probe matrix equals the engine's, seed by seed."""
    namespaces, pod_count, policies, tiers = size
    documents = generate_cluster(
        namespaces=namespaces, pods=pod_count, policies=policies, tiers=tiers, seed=seed
    )
    pods = [d for d in documents if d["kind"] == "Pod"]
    for pod in pods:
        pod["spec"]["nodeName"] = NODE
    container_ports = Counter(
        f"{port.get('protocol', 'TCP').lower()}/{port['containerPort']}"
        for pod in pods
        for container in pod["spec"]["containers"]
        for port in container.get("ports", ())
    )
    # the two most used TCP ports and the most used UDP one: named ports are in play
    tcp = [p for p, _ in container_ports.most_common() if p.startswith("tcp/")][:2]
    udp = [p for p, _ in container_ports.most_common() if p.startswith("udp/")][:1]
    ports = (*tcp, *(udp or ["udp/53"]), "icmp/8")
    lab = make_lab(
        {
            f"{p['metadata']['namespace']}/{p['metadata']['name']}": (p["status"]["podIP"],)
            for p in pods
        },
        ports,
    )
    driver = NftablesDataplane(lab.node)
    assert _program(driver, documents) > 0
    lab.start_listeners()
    expected = lab.expected(documents)
    assert set(expected.values()) == {True, False}
    assert lab.probe() == expected
