"""Calico projectcalico.org/v3 resources: tables of valid and invalid documents."""

from __future__ import annotations

from typing import Any

import pytest

from palisade.model import (
    EntityRule,
    GlobalNetworkPolicy,
    HostEndpoint,
    ICMPFields,
    IPPool,
    NetworkPolicy,
    Rule,
    StagedNetworkPolicy,
    Tier,
)
from tests.model._helpers import (
    assert_problem,
    assert_valid,
    calico,
    egress,
    gnp,
    ingress,
    np,
)


def allow(**fields: Any) -> dict[str, Any]:
    return {"action": "Allow", **fields}


VALID: list[tuple[str, dict[str, Any]]] = [
    ("np-no-spec", np()),
    ("np-empty-spec", np({})),
    ("np-no-namespace", calico("NetworkPolicy", {})),
    (
        "np-full",
        np(
            {
                "tier": "security",
                "order": 100,
                "selector": "app == 'web'",
                "serviceAccountSelector": "role == 'x'",
                "types": ["Ingress", "Egress"],
                "ingress": [
                    allow(
                        protocol="TCP",
                        source={"selector": "app == 'fe'", "namespaceSelector": "all()"},
                        destination={"ports": [80, "443", "8000:9000", "http"]},
                    )
                ],
                "egress": [{"action": "Deny"}],
                "performanceHints": ["AssumeNeededOnEveryNode"],
            }
        ),
    ),
    ("order-float", np({"order": 10.5})),
    ("tier-prefixed-name", np({"tier": "security"}, name="security.allow-dns")),
    ("knp-style-name", np({}, name="knp.default.allow-all")),
    ("default-prefixed-name", np({}, name="default.x")),
    ("all-actions", ingress(allow(), {"action": "Deny"}, {"action": "Log"}, {"action": "Pass"})),
    ("protocol-number", ingress(allow(protocol=6, destination={"ports": [22]}))),
    ("protocol-numeric-string", ingress(allow(protocol="17", destination={"ports": [53]}))),
    ("protocol-sctp", ingress(allow(protocol="SCTP", destination={"ports": [9]}))),
    ("protocol-udplite", ingress(allow(protocol="UDPLite"))),
    ("not-protocol", ingress(allow(notProtocol="ICMP"))),
    ("named-port-no-protocol", ingress(allow(destination={"ports": ["http", "metrics-2"]}))),
    ("not-ports", ingress(allow(protocol="TCP", source={"notPorts": [0, "1:1023"]}))),
    ("port-zero-and-max", ingress(allow(protocol="UDP", destination={"ports": [0, 65535]}))),
    ("icmp-type-code", ingress(allow(protocol="ICMP", ipVersion=4, icmp={"type": 8, "code": 0}))),
    ("icmp-type-only", ingress(allow(protocol=1, icmp={"type": 254}))),
    ("icmpv6", ingress(allow(protocol="ICMPv6", ipVersion=6, notICMP={"type": 128}))),
    ("icmp-empty", ingress(allow(protocol="ICMP", icmp={}))),
    (
        "nets-v4",
        ingress(allow(source={"nets": ["10.0.0.0/8", "192.168.1.1"], "notNets": ["10.1.0.0/16"]})),
    ),
    ("nets-v6", ingress(allow(ipVersion=6, destination={"nets": ["fd00::/8", "::1"]}))),
    ("nets-host-bits", ingress(allow(source={"nets": ["10.0.0.1/8"]}))),
    ("nets-catch-all-in-nets", ingress(allow(source={"nets": ["0.0.0.0/0"]}))),
    ("global-namespace-selector", ingress(allow(source={"namespaceSelector": "global()"}))),
    ("global-with-spaces", ingress(allow(source={"namespaceSelector": " \tglobal() "}))),
    ("not-selector", ingress(allow(source={"notSelector": "app == 'db'"}))),
    (
        "service-accounts",
        ingress(allow(source={"serviceAccounts": {"names": ["a", "b"], "selector": "x == 'y'"}})),
    ),
    ("services", egress(allow(destination={"services": {"name": "api", "namespace": "prod"}}))),
    ("services-no-namespace", egress(allow(destination={"services": {"name": "api"}}))),
    (
        "source-services-with-ports",
        ingress(allow(protocol="TCP", source={"services": {"name": "x"}, "ports": [80]})),
    ),
    (
        "http",
        ingress(
            allow(
                protocol="TCP",
                http={"methods": ["GET", "*"], "paths": [{"exact": "/a"}, {"prefix": "/b/"}]},
            )
        ),
    ),
    ("http-no-protocol", ingress(allow(http={"methods": ["GET"]}))),
    ("rule-metadata", ingress(allow(metadata={"annotations": {"name": "rule-1", "x": "y"}}))),
    ("domains", egress(allow(destination={"domains": ["example.com", "*.example.org"]}))),
    ("domains-middle-wildcard", egress(allow(destination={"domains": ["www.*.com"]}))),
    ("gnp-minimal", gnp({})),
    (
        "gnp-full",
        gnp(
            {
                "namespaceSelector": "env == 'prod'",
                "selector": "all()",
                "doNotTrack": True,
                "applyOnForward": True,
                "ingress": [allow()],
            }
        ),
    ),
    (
        "gnp-pre-dnat",
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Ingress"], "ingress": [allow()]}),
    ),
    ("gnp-single-label-name", gnp({}, name="allow-dns")),
    ("gnp-tier-prefixed-name", gnp({"tier": "platform"}, name="platform.allow-dns")),
    (
        "staged-np-set",
        calico(
            "StagedNetworkPolicy", {"stagedAction": "Set", "ingress": [allow()]}, namespace="ns"
        ),
    ),
    ("staged-np-default-action", calico("StagedNetworkPolicy", {"selector": "a == 'b'"})),
    ("staged-np-learn", calico("StagedNetworkPolicy", {"stagedAction": "Learn"})),
    ("staged-np-delete", calico("StagedNetworkPolicy", {"stagedAction": "Delete", "tier": "t1"})),
    (
        "staged-np-delete-types",
        calico("StagedNetworkPolicy", {"stagedAction": "Delete", "types": ["Ingress"]}),
    ),
    (
        "staged-gnp",
        calico(
            "StagedGlobalNetworkPolicy",
            {"stagedAction": "Ignore", "doNotTrack": True, "applyOnForward": True},
        ),
    ),
    ("staged-gnp-delete", calico("StagedGlobalNetworkPolicy", {"stagedAction": "Delete"})),
    (
        "staged-k8s",
        calico(
            "StagedKubernetesNetworkPolicy",
            {
                "podSelector": {"matchLabels": {"a": "b"}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
            },
            namespace="ns",
        ),
    ),
    ("staged-k8s-delete", calico("StagedKubernetesNetworkPolicy", {"stagedAction": "Delete"})),
    ("tier", calico("Tier", {"order": 100, "defaultAction": "Pass"}, name="security")),
    ("tier-no-spec", calico("Tier", name="security")),
    ("tier-no-order", calico("Tier", {"defaultAction": "Deny"}, name="t")),
    (
        "networkset",
        calico(
            "NetworkSet",
            {"nets": ["10.0.0.0/8", "1.2.3.4"]},
            namespace="ns",
            metadata={"name": "p", "namespace": "ns", "labels": {"role": "db"}},
        ),
    ),
    ("networkset-domains", calico("NetworkSet", {"allowedEgressDomains": ["*.example.com"]})),
    ("globalnetworkset", calico("GlobalNetworkSet", {"nets": ["fd00::/8"]})),
    ("hep-interface", calico("HostEndpoint", {"node": "n1", "interfaceName": "eth0"})),
    ("hep-star", calico("HostEndpoint", {"node": "n1", "interfaceName": "*"})),
    (
        "hep-ips",
        calico(
            "HostEndpoint",
            {
                "node": "n1",
                "expectedIPs": ["10.0.0.1", "fd00::1"],
                "profiles": ["p1"],
                "ports": [{"name": "ssh", "protocol": "TCP", "port": 22}],
            },
        ),
    ),
    (
        "profile",
        calico(
            "Profile",
            {"ingress": [allow()], "egress": [allow()], "labelsToApply": {"pcns.team": "a"}},
            name="kns.default",
        ),
    ),
    (
        "ippool-v4",
        calico(
            "IPPool",
            {
                "cidr": "10.244.0.0/16",
                "vxlanMode": "CrossSubnet",
                "natOutgoing": True,
                "blockSize": 26,
                "nodeSelector": "all()",
                "allowedUses": ["Workload", "Tunnel"],
                "assignmentMode": "Automatic",
            },
        ),
    ),
    (
        "ippool-ipip",
        calico("IPPool", {"cidr": "10.0.0.0/8", "ipipMode": "Always", "vxlanMode": "Never"}),
    ),
    (
        "ippool-v6",
        calico(
            "IPPool",
            {"cidr": "fd00::/48", "blockSize": 122, "disableBGPExport": True, "disabled": True},
        ),
    ),
    (
        "kubectl-dump-metadata",
        np(
            {},
            metadata={
                "name": "p",
                "namespace": "ns",
                "uid": "0f1d",
                "resourceVersion": "123",
                "generation": 2,
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "labels": {"projectcalico.org/tier": "default", "a": ""},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "ownerReferences": [{"kind": "X", "name": "y"}],
                "finalizers": ["a/b"],
                "generateName": "p-",
            },
        ),
    ),
]


@pytest.mark.parametrize(("doc",), [(d,) for _, d in VALID], ids=[i for i, _ in VALID])
def test_valid(doc: dict[str, Any]) -> None:
    assert_valid(doc)


def rule_path(i: int = 0, direction: str = "ingress") -> str:
    return f"spec.{direction}[{i}]"


LONG_SELECTOR = "a == '" + "x" * 1020 + "'"

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # unknown fields, everywhere in a policy
    ("unknown-spec-field", np({"foo": 1}), "spec.foo", "unknown field"),
    ("unknown-top-field", np({}, status={}), "status", "unknown field"),
    ("unknown-rule-field", ingress(allow(bogus=1)), "spec.ingress[0].bogus", "unknown field"),
    (
        "unknown-entity-field",
        ingress(allow(source={"net": ["10.0.0.0/8"]})),
        "spec.ingress[0].source.net",
        "unknown field",
    ),
    ("snake-case-key", gnp({"do_not_track": True}), "spec.do_not_track", "unknown field"),
    (
        "np-has-no-namespace-selector",
        np({"namespaceSelector": "a == 'b'"}),
        "spec.namespaceSelector",
        "unknown field",
    ),
    ("np-has-no-do-not-track", np({"doNotTrack": True}), "spec.doNotTrack", "unknown field"),
    (
        "unknown-metadata-field",
        np({}, metadata={"name": "p", "nme": "q"}),
        "metadata.nme",
        "unknown field",
    ),
    # action, protocol
    ("bad-action", ingress({"action": "Accept"}), "spec.ingress[0].action", "Input should be"),
    ("missing-action", ingress({}), "spec.ingress[0].action", "required"),
    (
        "protocol-lowercase",
        ingress(allow(protocol="tcp")),
        "spec.ingress[0].protocol",
        "unknown protocol",
    ),
    ("protocol-zero", ingress(allow(protocol=0)), "spec.ingress[0].protocol", "out of range"),
    ("protocol-256", ingress(allow(protocol="256")), "spec.ingress[0].protocol", "out of range"),
    (
        "protocol-bool",
        ingress(allow(protocol=True)),
        "spec.ingress[0].protocol",
        "protocol must be",
    ),
    (
        "not-protocol-bad",
        ingress(allow(notProtocol="GRE")),
        "spec.ingress[0].notProtocol",
        "unknown protocol",
    ),
    ("ip-version-5", ingress(allow(ipVersion=5)), "spec.ingress[0].ipVersion", "Input should be"),
    # ports
    (
        "port-too-big",
        ingress(allow(protocol="TCP", destination={"ports": [70000]})),
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "port-string-too-big",
        ingress(allow(protocol="TCP", destination={"ports": ["65536"]})),
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "port-negative",
        ingress(allow(protocol="TCP", destination={"ports": [-1]})),
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "port-range-reversed",
        ingress(allow(protocol="TCP", destination={"ports": ["90:80"]})),
        "spec.ingress[0].destination.ports[0]",
        "min greater than max",
    ),
    (
        "port-range-too-big",
        ingress(allow(protocol="TCP", destination={"ports": ["1:70000"]})),
        "spec.ingress[0].destination.ports[0]",
        "out of range",
    ),
    (
        "port-name-upper",
        ingress(allow(destination={"ports": ["HTTP"]})),
        "spec.ingress[0].destination.ports[0]",
        "lower-case",
    ),
    (
        "port-name-double-dash",
        ingress(allow(destination={"ports": ["a--b"]})),
        "spec.ingress[0].destination.ports[0]",
        "single '-'",
    ),
    (
        "port-name-leading-dash",
        ingress(allow(destination={"ports": ["-ab"]})),
        "spec.ingress[0].destination.ports[0]",
        "single '-'",
    ),
    (
        "port-name-too-long",
        ingress(allow(destination={"ports": ["a" * 16]})),
        "spec.ingress[0].destination.ports[0]",
        "longer than 15",
    ),
    (
        "port-float",
        ingress(allow(protocol="TCP", destination={"ports": [1.5]})),
        "spec.ingress[0].destination.ports[0]",
        "port must be",
    ),
    (
        "numeric-port-needs-protocol",
        ingress(allow(destination={"ports": [80]})),
        "spec.ingress[0].destination.ports[0]",
        "needs protocol",
    ),
    (
        "range-needs-protocol",
        ingress(allow(source={"notPorts": ["1:2"]})),
        "spec.ingress[0].source.notPorts[0]",
        "needs protocol",
    ),
    (
        "icmp-has-no-ports",
        ingress(allow(protocol="ICMP", destination={"ports": ["http"]})),
        "spec.ingress[0].destination.ports[0]",
        "does not have ports",
    ),
    (
        "too-many-ports",
        ingress(allow(protocol="TCP", destination={"ports": list(range(51))})),
        "spec.ingress[0].destination.ports",
        "at most 50",
    ),
    # icmp
    (
        "icmp-no-protocol",
        ingress(allow(icmp={"type": 8})),
        "spec.ingress[0].icmp",
        "needs protocol ICMP",
    ),
    (
        "icmp-tcp",
        ingress(allow(protocol="TCP", notICMP={"type": 8})),
        "spec.ingress[0].notICMP",
        "needs protocol ICMP",
    ),
    (
        "icmp-code-without-type",
        ingress(allow(protocol="ICMP", icmp={"code": 1})),
        "spec.ingress[0].icmp.code",
        "together with type",
    ),
    (
        "icmp-type-255",
        ingress(allow(protocol="ICMP", icmp={"type": 255})),
        "spec.ingress[0].icmp.type",
        "less than or equal to 254",
    ),
    (
        "icmp-code-256",
        ingress(allow(protocol="ICMP", icmp={"type": 3, "code": 256})),
        "spec.ingress[0].icmp.code",
        "less than or equal to 255",
    ),
    (
        "icmp-ipv6",
        ingress(allow(protocol="ICMP", ipVersion=6, icmp={"type": 8})),
        "spec.ingress[0].icmp",
        "ipVersion 6",
    ),
    (
        "icmpv6-ipv4",
        ingress(allow(protocol="ICMPv6", ipVersion=4, notICMP={"type": 8})),
        "spec.ingress[0].notICMP",
        "ipVersion 4",
    ),
    (
        "icmp-unknown-field",
        ingress(allow(protocol="ICMP", icmp={"typ": 8})),
        "spec.ingress[0].icmp.typ",
        "unknown field",
    ),
    # nets
    (
        "bad-cidr",
        ingress(allow(source={"nets": ["10.0.0.0/33"]})),
        "spec.ingress[0].source.nets[0]",
        "not a valid CIDR",
    ),
    (
        "not-an-ip",
        ingress(allow(source={"nets": ["example.com"]})),
        "spec.ingress[0].source.nets[0]",
        "not a valid CIDR",
    ),
    (
        "netmask-form",
        ingress(allow(source={"nets": ["10.0.0.0/255.0.0.0"]})),
        "spec.ingress[0].source.nets[0]",
        "bad prefix",
    ),
    (
        "mixed-families",
        ingress(allow(source={"nets": ["10.0.0.0/8"]}, destination={"nets": ["fd00::/8"]})),
        "spec.ingress[0].destination.nets[0]",
        "IPv6 CIDR",
    ),
    (
        "mixed-in-not-nets",
        ingress(allow(source={"nets": ["fd00::/8"], "notNets": ["10.0.0.0/8"]})),
        "spec.ingress[0].source.notNets[0]",
        "IPv4 CIDR",
    ),
    (
        "ip-version-mismatch",
        ingress(allow(ipVersion=6, source={"nets": ["10.0.0.0/8"]})),
        "spec.ingress[0].source.nets[0]",
        "IPv4 CIDR in a rule that is IPv6",
    ),
    (
        "not-nets-catch-all-v4",
        ingress(allow(source={"notNets": ["0.0.0.0/0"]})),
        "spec.ingress[0].source.notNets[0]",
        "catch-all",
    ),
    (
        "not-nets-catch-all-v6",
        egress(allow(destination={"notNets": ["::/0"]})),
        "spec.egress[0].destination.notNets[0]",
        "catch-all",
    ),
    # http
    (
        "http-on-deny",
        ingress({"action": "Deny", "http": {"methods": ["GET"]}}),
        "spec.ingress[0].http",
        "only allowed on Allow",
    ),
    (
        "http-udp",
        ingress(allow(protocol="UDP", http={"methods": ["GET"]})),
        "spec.ingress[0].http",
        "requires protocol TCP",
    ),
    (
        "http-path-both",
        ingress(allow(http={"paths": [{"exact": "/a", "prefix": "/b"}]})),
        "spec.ingress[0].http.paths[0]",
        "exactly one",
    ),
    (
        "http-path-none",
        ingress(allow(http={"paths": [{}]})),
        "spec.ingress[0].http.paths[0]",
        "exactly one",
    ),
    (
        "http-path-no-slash",
        ingress(allow(http={"paths": [{"prefix": "a"}]})),
        "spec.ingress[0].http.paths[0].prefix",
        "start with '/'",
    ),
    (
        "http-path-query",
        ingress(allow(http={"paths": [{"exact": "/a?b"}]})),
        "spec.ingress[0].http.paths[0].exact",
        "must not contain",
    ),
    (
        "http-empty-method",
        ingress(allow(http={"methods": [""]})),
        "spec.ingress[0].http.methods[0]",
        "at least 1",
    ),
    # services
    (
        "services-and-selector",
        egress(allow(destination={"services": {"name": "a"}, "selector": "x == 'y'"})),
        "spec.egress[0].destination.selector",
        "cannot be combined with services",
    ),
    (
        "services-and-nets",
        ingress(allow(source={"services": {"name": "a"}, "nets": ["10.0.0.0/8"]})),
        "spec.ingress[0].source.nets",
        "cannot be combined with services",
    ),
    (
        "services-and-sa",
        ingress(allow(source={"services": {"name": "a"}, "serviceAccounts": {"names": ["x"]}})),
        "spec.ingress[0].source.serviceAccounts",
        "cannot be combined",
    ),
    (
        "services-and-ns-selector",
        ingress(allow(source={"services": {"name": "a"}, "namespaceSelector": "all()"})),
        "spec.ingress[0].source.namespaceSelector",
        "cannot be combined",
    ),
    (
        "dest-services-and-ports",
        egress(allow(protocol="TCP", destination={"services": {"name": "a"}, "ports": [80]})),
        "spec.egress[0].destination.ports",
        "destination services",
    ),
    (
        "dest-services-and-not-ports",
        egress(allow(protocol="TCP", destination={"services": {"name": "a"}, "notPorts": [80]})),
        "spec.egress[0].destination.notPorts",
        "destination services",
    ),
    (
        "services-no-name",
        egress(allow(destination={"services": {"namespace": "x"}})),
        "spec.egress[0].destination.services.name",
        "required",
    ),
    (
        "services-empty-name",
        egress(allow(destination={"services": {"name": ""}})),
        "spec.egress[0].destination.services.name",
        "at least 1",
    ),
    (
        "services-bad-namespace",
        egress(allow(destination={"services": {"name": "a", "namespace": "Bad"}})),
        "spec.egress[0].destination.services.namespace",
        "DNS-1123 label",
    ),
    # domains
    (
        "domains-on-deny",
        egress({"action": "Deny", "destination": {"domains": ["a.com"]}}),
        "spec.egress[0].destination.domains",
        "only allowed on Allow",
    ),
    (
        "domains-in-source",
        egress(allow(source={"domains": ["a.com"]})),
        "spec.egress[0].source.domains",
        "only allowed in the destination",
    ),
    (
        "domains-on-ingress",
        ingress(allow(destination={"domains": ["a.com"]})),
        "spec.ingress[0].destination.domains",
        "only allowed on egress",
    ),
    (
        "domains-with-nets",
        egress(allow(destination={"domains": ["a.com"], "nets": ["10.0.0.0/8"]})),
        "spec.egress[0].destination.domains",
        "cannot be combined",
    ),
    (
        "domain-partial-wildcard",
        egress(allow(destination={"domains": ["a*.com"]})),
        "spec.egress[0].destination.domains[0]",
        "whole label",
    ),
    (
        "domain-two-wildcards",
        egress(allow(destination={"domains": ["*.*.com"]})),
        "spec.egress[0].destination.domains[0]",
        "at most one",
    ),
    (
        "domain-bad-label",
        egress(allow(destination={"domains": ["a..com"]})),
        "spec.egress[0].destination.domains[0]",
        "invalid label",
    ),
    # selectors
    ("selector-syntax", np({"selector": "app == "}), "spec.selector", "invalid selector"),
    (
        "selector-sa-syntax",
        np({"serviceAccountSelector": "has("}),
        "spec.serviceAccountSelector",
        "invalid selector",
    ),
    ("selector-global", np({"selector": "global()"}), "spec.selector", "global()"),
    ("selector-global-quoted", np({"selector": "a == 'global('"}), "spec.selector", "global()"),
    (
        "gnp-namespace-selector-global",
        gnp({"namespaceSelector": "global()"}),
        "spec.namespaceSelector",
        "global()",
    ),
    (
        "rule-selector-global",
        ingress(allow(source={"selector": "global()"})),
        "spec.ingress[0].source.selector",
        "global()",
    ),
    (
        "rule-not-selector-global",
        ingress(allow(source={"notSelector": "global()"})),
        "spec.ingress[0].source.notSelector",
        "global()",
    ),
    (
        "rule-ns-selector-global-and",
        ingress(allow(source={"namespaceSelector": "global() && all()"})),
        "spec.ingress[0].source.namespaceSelector",
        "whole namespaceSelector",
    ),
    (
        "rule-ns-selector-syntax",
        ingress(allow(destination={"namespaceSelector": "a in {"})),
        "spec.ingress[0].destination.namespaceSelector",
        "invalid selector",
    ),
    (
        "rule-sa-selector-syntax",
        ingress(allow(source={"serviceAccounts": {"selector": "!!"}})),
        "spec.ingress[0].source.serviceAccounts.selector",
        "invalid selector",
    ),
    ("selector-too-long", np({"selector": LONG_SELECTOR}), "spec.selector", "longer than 1024"),
    ("selector-not-string", np({"selector": 5}), "spec.selector", "valid string"),
    # spec-level fields
    ("types-unknown", np({"types": ["Forward"]}), "spec.types[0]", "Input should be"),
    ("types-repeated", np({"types": ["Ingress", "Ingress"]}), "spec.types", "must not repeat"),
    ("types-three", np({"types": ["Ingress", "Egress", "Ingress"]}), "spec.types", "at most 2"),
    ("order-string", np({"order": "high"}), "spec.order", "valid number"),
    ("order-inf", np({"order": float("inf")}), "spec.order", "finite"),
    ("order-bool", np({"order": True}), "spec.order", "valid number"),
    (
        "performance-hint-unknown",
        np({"performanceHints": ["Fast"]}),
        "spec.performanceHints[0]",
        "unknown performance hint",
    ),
    ("tier-invalid", np({"tier": "Bad.Tier"}), "spec.tier", "DNS-1123 label"),
    ("rules-not-a-list", np({"ingress": {"action": "Allow"}}), "spec.ingress", "valid list"),
    # metadata
    ("name-invalid", np({}, name="Bad_Name"), "metadata.name", "DNS-1123 subdomain"),
    ("name-too-long", np({}, name="a" * 254), "metadata.name", "253"),
    ("name-missing", np({}, metadata={"namespace": "ns"}), "metadata.name", "required"),
    (
        "metadata-missing",
        {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy"},
        "metadata",
        "required",
    ),
    ("namespace-invalid", np({}, namespace="Prod"), "metadata.namespace", "DNS-1123 label"),
    ("gnp-with-namespace", gnp({}, namespace="ns"), "metadata.namespace", "cluster-scoped"),
    (
        "label-key-invalid",
        np({}, metadata={"name": "p", "labels": {"-bad": "x"}}),
        'metadata.labels["-bad"]',
        "label key name",
    ),
    (
        "label-key-prefix-invalid",
        np({}, metadata={"name": "p", "labels": {"Example.com/a": "x"}}),
        'metadata.labels["Example.com/a"]',
        "prefix",
    ),
    (
        "label-value-too-long",
        np({}, metadata={"name": "p", "labels": {"a": "x" * 64}}),
        "metadata.labels.a",
        "longer than 63",
    ),
    (
        "label-value-bad-chars",
        np({}, metadata={"name": "p", "labels": {"a": "x y"}}),
        "metadata.labels.a",
        "label value",
    ),
    (
        "label-value-number",
        np({}, metadata={"name": "p", "labels": {"version": 1.0}}),
        "metadata.labels.version",
        "valid string",
    ),
    (
        "annotation-key-invalid",
        np({}, metadata={"name": "p", "annotations": {"a b": "x"}}),
        'metadata.annotations["a b"]',
        "label key name",
    ),
    (
        "generation-string",
        np({}, metadata={"name": "p", "generation": "2"}),
        "metadata.generation",
        "valid integer",
    ),
    # GlobalNetworkPolicy specifics
    ("gnp-dnt-needs-aof", gnp({"doNotTrack": True}), "spec.applyOnForward", "doNotTrack requires"),
    ("gnp-prednat-needs-aof", gnp({"preDNAT": True}), "spec.applyOnForward", "preDNAT requires"),
    (
        "gnp-prednat-and-dnt",
        gnp({"preDNAT": True, "doNotTrack": True, "applyOnForward": True}),
        "spec.preDNAT",
        "cannot both",
    ),
    (
        "gnp-prednat-egress",
        gnp({"preDNAT": True, "applyOnForward": True, "egress": [allow()]}),
        "spec.egress",
        "cannot have egress",
    ),
    (
        "gnp-prednat-egress-type",
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Egress"]}),
        "spec.types",
        "type Egress",
    ),
    ("gnp-bool-as-string", gnp({"applyOnForward": "true"}), "spec.applyOnForward", "valid boolean"),
    # staged
    (
        "staged-delete-with-selector",
        calico("StagedNetworkPolicy", {"stagedAction": "Delete", "selector": "a == 'b'"}),
        "spec.selector",
        "stagedAction is Delete",
    ),
    (
        "staged-delete-with-rules",
        calico("StagedGlobalNetworkPolicy", {"stagedAction": "Delete", "ingress": [allow()]}),
        "spec.ingress",
        "stagedAction is Delete",
    ),
    (
        "staged-delete-with-order",
        calico("StagedNetworkPolicy", {"stagedAction": "Delete", "order": 1}),
        "spec.order",
        "stagedAction is Delete",
    ),
    (
        "staged-action-unknown",
        calico("StagedNetworkPolicy", {"stagedAction": "Remove"}),
        "spec.stagedAction",
        "Input should be",
    ),
    (
        "staged-k8s-delete-with-rules",
        calico("StagedKubernetesNetworkPolicy", {"stagedAction": "Delete", "ingress": [{}]}),
        "spec.ingress",
        "stagedAction is Delete",
    ),
    (
        "staged-k8s-bad-peer",
        calico("StagedKubernetesNetworkPolicy", {"ingress": [{"from": [{}]}]}),
        "spec.ingress[0].from[0]",
        "must set",
    ),
    ("np-has-no-staged-action", np({"stagedAction": "Set"}), "spec.stagedAction", "unknown field"),
    # Tier
    ("tier-name-with-dot", calico("Tier", {}, name="a.b"), "metadata.name", "DNS-1123 label"),
    (
        "tier-default-action",
        calico("Tier", {"defaultAction": "Allow"}, name="t"),
        "spec.defaultAction",
        "Input should be",
    ),
    (
        "tier-with-namespace",
        calico("Tier", {}, name="t", namespace="ns"),
        "metadata.namespace",
        "cluster-scoped",
    ),
    # network sets
    (
        "networkset-namespace-label",
        calico(
            "NetworkSet", {}, metadata={"name": "p", "labels": {"projectcalico.org/namespace": "x"}}
        ),
        'metadata.labels["projectcalico.org/namespace"]',
        "set by Calico",
    ),
    (
        "networkset-bad-net",
        calico("NetworkSet", {"nets": ["10.0.0.300"]}),
        "spec.nets[0]",
        "not a valid CIDR",
    ),
    (
        "globalnetworkset-bad-domain",
        calico("GlobalNetworkSet", {"allowedEgressDomains": ["*a.com"]}),
        "spec.allowedEgressDomains[0]",
        "whole label",
    ),
    # HostEndpoint
    ("hep-no-spec", calico("HostEndpoint"), "spec", "required"),
    ("hep-no-node", calico("HostEndpoint", {"interfaceName": "eth0"}), "spec.node", "required"),
    (
        "hep-no-interface",
        calico("HostEndpoint", {"node": "n1"}),
        "spec",
        "at least one of interfaceName and expectedIPs",
    ),
    (
        "hep-bad-ip",
        calico("HostEndpoint", {"node": "n1", "expectedIPs": ["10.0.0.0/8"]}),
        "spec.expectedIPs[0]",
        "not a valid IP",
    ),
    (
        "hep-port-protocol",
        calico(
            "HostEndpoint",
            {
                "node": "n",
                "interfaceName": "e",
                "ports": [{"name": "a", "protocol": "ICMP", "port": 1}],
            },
        ),
        "spec.ports[0].protocol",
        "Input should be",
    ),
    (
        "hep-port-zero",
        calico(
            "HostEndpoint",
            {
                "node": "n",
                "interfaceName": "e",
                "ports": [{"name": "a", "protocol": "TCP", "port": 0}],
            },
        ),
        "spec.ports[0].port",
        "greater than or equal to 1",
    ),
    (
        "hep-port-name",
        calico(
            "HostEndpoint",
            {
                "node": "n",
                "interfaceName": "e",
                "ports": [{"name": "A", "protocol": "TCP", "port": 1}],
            },
        ),
        "spec.ports[0].name",
        "lower-case",
    ),
    # Profile
    (
        "profile-label-value",
        calico("Profile", {"labelsToApply": {"a": "b c"}}),
        "spec.labelsToApply.a",
        "label value",
    ),
    (
        "profile-bad-rule",
        calico(
            "Profile", {"egress": [{"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}}]}
        ),
        "spec.egress[0].icmp.code",
        "together with type",
    ),
    # IPPool
    ("ippool-no-cidr", calico("IPPool", {}), "spec.cidr", "required"),
    ("ippool-host-bits", calico("IPPool", {"cidr": "10.0.0.1/16"}), "spec.cidr", "strictly masked"),
    ("ippool-bare-ip", calico("IPPool", {"cidr": "10.0.0.1"}), "spec.cidr", "not a CIDR"),
    ("ippool-link-local", calico("IPPool", {"cidr": "169.254.0.0/24"}), "spec.cidr", "link-local"),
    ("ippool-link-local-v6", calico("IPPool", {"cidr": "fe80::/64"}), "spec.cidr", "link-local"),
    (
        "ippool-both-encaps",
        calico("IPPool", {"cidr": "10.0.0.0/8", "vxlanMode": "Always", "ipipMode": "CrossSubnet"}),
        "spec.ipipMode",
        "cannot both",
    ),
    (
        "ippool-ipip-v6",
        calico("IPPool", {"cidr": "fd00::/48", "ipipMode": "Always"}),
        "spec.ipipMode",
        "IPv4",
    ),
    (
        "ippool-block-size-range",
        calico("IPPool", {"cidr": "10.0.0.0/8", "blockSize": 19}),
        "spec.blockSize",
        "20-32",
    ),
    (
        "ippool-block-size-v6",
        calico("IPPool", {"cidr": "fd00::/48", "blockSize": 64}),
        "spec.blockSize",
        "116-128",
    ),
    (
        "ippool-block-bigger-than-pool",
        calico("IPPool", {"cidr": "10.0.0.0/28", "blockSize": 26}),
        "spec.blockSize",
        "larger than the pool",
    ),
    (
        "ippool-node-selector-global",
        calico("IPPool", {"cidr": "10.0.0.0/8", "nodeSelector": "global()"}),
        "spec.nodeSelector",
        "global()",
    ),
    (
        "ippool-allowed-uses",
        calico("IPPool", {"cidr": "10.0.0.0/8", "allowedUses": ["Everything"]}),
        "spec.allowedUses[0]",
        "Input should be",
    ),
    (
        "ippool-mode",
        calico("IPPool", {"cidr": "10.0.0.0/8", "vxlanMode": "always"}),
        "spec.vxlanMode",
        "Input should be",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid(doc: dict[str, Any], path: str, reason: str) -> None:
    assert_problem(doc, path, reason)


def test_invalid_ids_are_unique() -> None:
    ids = [c[0] for c in INVALID] + [i for i, _ in VALID]
    assert len(ids) == len(set(ids))


def test_every_problem_in_a_document_is_reported() -> None:
    from tests.model._helpers import problems_of

    doc = np(
        {
            "selector": "app == ",
            "ingress": [allow(protocol="tcp"), allow(destination={"ports": [99999]})],
            "egress": [{"action": "Nope"}],
        },
        name="Bad_Name",
    )
    paths = {p.path for p in problems_of(doc)}
    assert {
        "metadata.name",
        "spec.selector",
        "spec.ingress[0].protocol",
        "spec.ingress[1].destination.ports[0]",
        "spec.egress[0].action",
    } <= paths


def test_several_cross_field_problems_in_one_rule() -> None:
    from tests.model._helpers import problems_of

    doc = ingress(
        {
            "action": "Deny",
            "http": {"methods": ["GET"]},
            "icmp": {"type": 1},
            "source": {"nets": ["10.0.0.0/8"], "ports": [80]},
            "destination": {"nets": ["fd00::/8"]},
        }
    )
    paths = {p.path for p in problems_of(doc)}
    assert paths == {
        "spec.ingress[0].http",
        "spec.ingress[0].icmp",
        "spec.ingress[0].source.ports[0]",
        "spec.ingress[0].destination.nets[0]",
    }


def test_normalised_values() -> None:
    policy = assert_valid(
        ingress(
            allow(
                protocol="17",
                destination={"ports": ["53", "100:200", "dns", 8080]},
                source={"nets": ["10.0.0.1"]},
            )
        )
    )
    assert isinstance(policy, NetworkPolicy)
    rule = policy.spec.ingress[0]
    assert rule.protocol == 17
    assert rule.protocol_number == 17
    assert rule.destination.ports == [53, "100:200", "dns", 8080]
    assert rule.source.nets == ["10.0.0.1"]  # the user's string is kept


def test_defaults_and_python_names() -> None:
    rule = Rule(action="Allow", not_icmp=ICMPFields(type=8), protocol="ICMP")
    assert rule.not_icmp is not None and rule.not_icmp.type_ == 8
    assert rule.source == EntityRule()
    doc = rule.model_dump(by_alias=True, exclude_none=True)
    assert doc["notICMP"] == {"type": 8}
    policy = GlobalNetworkPolicy.model_validate(
        {"metadata": {"name": "x"}, "spec": {"preDNAT": True, "applyOnForward": True}}
    )
    assert policy.spec.pre_dnat and policy.api_version == "projectcalico.org/v3"
    staged = StagedNetworkPolicy.model_validate({"metadata": {"name": "x"}})
    assert staged.spec.staged_action == "Set"
    tier = Tier.model_validate({"metadata": {"name": "t"}})
    assert tier.spec.default_action == "Deny" and tier.spec.order is None


def test_keys_and_namespaces() -> None:
    policy = assert_valid(np({}, name="a", namespace=None))
    assert policy.namespace == "default"
    assert policy.metadata.namespace is None
    assert policy.key == ("NetworkPolicy", "default", "a")
    global_policy = assert_valid(gnp({}, name="a"))
    assert global_policy.namespace is None
    assert global_policy.key == ("GlobalNetworkPolicy", None, "a")
    hep = assert_valid(calico("HostEndpoint", {"node": "n", "interfaceName": "eth0"}, name="h"))
    assert isinstance(hep, HostEndpoint) and hep.key == ("HostEndpoint", None, "h")


def test_ippool_block_size_default() -> None:
    v4 = assert_valid(calico("IPPool", {"cidr": "10.0.0.0/8"}))
    v6 = assert_valid(calico("IPPool", {"cidr": "fd00::/48"}))
    assert isinstance(v4, IPPool) and isinstance(v6, IPPool)
    assert (v4.spec.effective_block_size, v6.spec.effective_block_size) == (26, 122)


def test_models_are_frozen() -> None:
    policy = assert_valid(np({"order": 1}))
    assert isinstance(policy, NetworkPolicy)
    with pytest.raises(ValueError, match="frozen"):
        policy.spec.order = 2  # type: ignore[misc]
