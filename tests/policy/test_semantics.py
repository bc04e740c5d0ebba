"""Calico policy semantics, case by case (spec sections 4 and 5), through the reference
evaluator and the vectorised matrix alike."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml

from palisade.policy import (
    Cluster,
    Flow,
    PolicyEngine,
    Probe,
    Verdict,
    protocol_number,
    reachability_matrix,
)
from palisade.policy._translate import compile_k8s_policy

BASE = """
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec:
  serviceAccountName: web-sa
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec:
  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: dev, labels: {app: tool}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.1}
"""


def engine_for(extra: str) -> PolicyEngine:
    documents: list[dict[str, Any]] = [d for d in yaml.safe_load_all(BASE + "\n---\n" + extra) if d]
    cluster = Cluster.from_documents(documents)
    assert not cluster.problems, cluster.problems
    return PolicyEngine(cluster)


def check(engine: PolicyEngine, src: str, dst: str, port: int, proto: str = "TCP") -> Verdict:
    """Evaluate one flow, and check the vectorised matrix agrees with the reference."""
    flow = Flow(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol_number(proto), port)
    verdict = engine.evaluate(flow)
    matrix = reachability_matrix(engine, [Probe(port, protocol_number(proto))])
    ips = {e.key: str(e.ips[0]) for e in engine.cluster.pods}
    by_ip = {ip: key for key, ip in ips.items()}
    if src in by_ip and dst in by_ip:
        assert matrix.as_dict(0)[by_ip[src]][by_ip[dst]] == verdict.allowed
    return verdict


WEB, DB, TOOL = "10.0.0.1", "10.0.0.2", "10.0.1.1"


def test_no_policy_profiles_allow() -> None:
    verdict = check(engine_for(""), TOOL, WEB, 8080)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert verdict.ingress.policy_strings() == ["0|__PROFILE__|pro:kns.prod|allow|0"]


def test_selected_endpoint_is_default_denied_and_hit_names_policy() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: prod}
spec:
  selector: app == "db"
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == "web"}
      destination: {ports: [5432]}
"""
    )
    allowed = check(engine, WEB, DB, 5432)
    assert allowed.allowed
    assert allowed.ingress is not None
    assert allowed.ingress.policy_strings() == ["0|default|np:prod/db-ingress|allow|0"]
    denied = check(engine, TOOL, DB, 5432)  # rule selector is scoped to namespace prod
    assert not denied.allowed
    assert denied.ingress is not None
    assert denied.ingress.policy_strings() == ["0|default|np:prod/db-ingress|deny|-1"]
    assert check(engine, WEB, DB, 5433).allowed is False
    assert check(engine, DB, WEB, 8080).allowed  # web is not selected


TIERS = """
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200, defaultAction: Pass}
"""


def test_earlier_tier_deny_wins_over_later_allow() -> None:
    engine = engine_for(
        TIERS
        + """
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: block-dev}
spec:
  tier: security
  selector: all()
  ingress:
    - {action: Deny, source: {namespaceSelector: env == "dev"}}
    - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-all, namespace: prod}
spec:
  selector: all()
  ingress: [{action: Allow}]
"""
    )
    denied = check(engine, TOOL, WEB, 8080)
    assert not denied.allowed
    assert denied.ingress is not None
    assert denied.ingress.policy_strings() == ["0|security|gnp:block-dev|deny|0"]
    allowed = check(engine, DB, WEB, 8080)
    assert allowed.allowed
    assert allowed.ingress is not None
    assert allowed.ingress.policy_strings() == [
        "0|security|gnp:block-dev|pass|1",
        "1|default|np:prod/allow-all|allow|0",
    ]


def test_tier_default_pass_and_tier_with_no_applying_policy_is_skipped() -> None:
    engine = engine_for(
        TIERS
        + """
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: platform-web}
spec:
  tier: platform
  selector: app == "web"
  ingress: [{action: Allow, protocol: UDP}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security-db-only}
spec:
  tier: security
  selector: app == "db"
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [5432]}}]
"""
    )
    # web: security tier has no policy for it (skipped); platform ends in Pass; profile allows.
    verdict = check(engine, TOOL, WEB, 8080)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert verdict.ingress.policy_strings() == [
        "0|platform|gnp:platform-web|pass|-1",
        "1|__PROFILE__|pro:kns.prod|allow|0",
    ]
    # db: security tier (default Deny) selects it and nothing matches port 80.
    assert not check(engine, TOOL, DB, 80).allowed
    assert check(engine, TOOL, DB, 5432).allowed


def test_log_rule_never_decides() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: log-then-allow}
spec:
  selector: app == "web"
  ingress: [{action: Log}, {action: Allow, protocol: TCP}]
"""
    )
    verdict = check(engine, TOOL, WEB, 8080)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert [h.format(0) for h in verdict.ingress.logged] == ["0|default|gnp:log-then-allow|log|0"]
    assert not check(engine, TOOL, WEB, 53, "UDP").allowed


def test_policy_order_and_name_tie_break() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b-allow}
spec: {order: 10, selector: app == "web", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-deny}
spec: {order: 10, selector: app == "web", ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: unordered-allow}
spec: {selector: app == "db", ingress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-ordered-deny}
spec: {order: 999999, selector: app == "db", ingress: [{action: Deny}]}
"""
    )
    assert not check(engine, TOOL, WEB, 8080).allowed  # same order: "a-deny" sorts first
    assert not check(engine, TOOL, DB, 5432).allowed  # an unset order comes after any order


def test_types_without_rules_deny_that_direction() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: lock, namespace: prod}
spec:
  selector: app == "web"
  types: [Ingress, Egress]
  ingress: [{action: Allow}]
"""
    )
    assert check(engine, TOOL, WEB, 8080).allowed
    assert not check(engine, WEB, TOOL, 8080).allowed


def test_types_inferred_from_rules() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: egress-only, namespace: prod}
spec:
  selector: app == "web"
  egress: [{action: Allow, destination: {selector: app == "db"}}]
"""
    )
    assert check(engine, TOOL, WEB, 8080).allowed  # Egress only: ingress untouched
    assert check(engine, WEB, DB, 5432).allowed
    assert not check(engine, WEB, TOOL, 80).allowed


def test_named_ports_service_accounts_and_not_selector() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: db}
spec:
  selector: app == "db"
  ingress:
    - action: Allow
      protocol: TCP
      source: {serviceAccounts: {names: [web-sa]}}
      destination: {ports: [pg]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == "web"
  ingress:
    - action: Allow
      source: {notSelector: env == "dev" || app == "tool"}
"""
    )
    assert check(engine, WEB, DB, 5432).allowed
    assert not check(engine, TOOL, DB, 5432).allowed
    assert not check(engine, WEB, DB, 8080).allowed  # pg is 5432 on db
    assert check(engine, DB, WEB, 8080).allowed
    assert not check(engine, TOOL, WEB, 8080).allowed


def test_network_sets_scoping_and_global() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: prod, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: scanners, labels: {role: scanner}}
spec: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == "web"
  ingress:
    - action: Allow
      source: {selector: role == "partner"}
    - action: Allow
      source: {namespaceSelector: global(), selector: role == "scanner"}
"""
    )
    assert check(engine, "192.0.2.9", WEB, 8080).allowed
    assert check(engine, "198.51.100.3", WEB, 8080).allowed
    assert not check(engine, "203.0.113.1", WEB, 8080).allowed
    # A NetworkSet in another namespace is not reached by a plain NP rule selector.
    other = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: dev, labels: {role: partner}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  selector: app == "web"
  ingress: [{action: Allow, source: {selector: role == "partner"}}]
"""
    )
    assert not check(other, "192.0.2.9", WEB, 8080).allowed


def test_gnp_namespace_selector_all_excludes_host_endpoints() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {host: node1}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [10.1.0.1], profiles: [open]}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: open}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: namespaced-only}
spec:
  namespaceSelector: all()
  ingress: [{action: Deny}]
"""
    )
    assert not check(engine, TOOL, WEB, 8080).allowed
    assert check(engine, TOOL, "10.1.0.1", 22).allowed  # the HEP is not selected


def test_host_endpoint_without_profiles_denies() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0}
spec: {node: node1, interfaceName: eth0, expectedIPs: [10.1.0.1]}
"""
    )
    assert not check(engine, TOOL, "10.1.0.1", 22).allowed


def test_protocol_negation_icmp_and_nets() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == "web"
  ingress:
    - {action: Allow, protocol: ICMP, icmp: {type: 8}}
    - {action: Allow, notProtocol: TCP, source: {nets: [10.0.0.0/16], notNets: [10.0.1.0/24]}}
"""
    )
    ping = Flow(ipaddress.ip_address(TOOL), ipaddress.ip_address(WEB), 1, icmp_type=8, icmp_code=0)
    assert engine.evaluate(ping).allowed
    reply = Flow(ipaddress.ip_address(TOOL), ipaddress.ip_address(WEB), 1, icmp_type=0)
    assert not engine.evaluate(reply).allowed
    assert check(engine, DB, WEB, 53, "UDP").allowed
    assert not check(engine, TOOL, WEB, 53, "UDP").allowed  # in notNets
    assert not check(engine, DB, WEB, 8080).allowed  # TCP excluded


def test_staged_policies_affect_only_the_pending_verdict() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-db, namespace: prod}
spec:
  selector: app == "db"
  ingress: [{action: Allow, source: {selector: app == "web"}}]
"""
    )
    verdict = check(engine, TOOL, DB, 5432)
    assert verdict.allowed  # a tier holding only staged policies has no end-of-tier deny
    assert not verdict.pending_allowed
    assert verdict.pending_ingress is not None
    assert verdict.pending_ingress.policy_strings() == ["0|default|snp:prod/lock-db|deny|-1"]
    verdict = check(engine, WEB, DB, 5432)
    assert verdict.allowed and verdict.pending_allowed


def test_staged_set_replaces_same_named_policy_in_pending_view() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  selector: app == "db"
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  selector: app == "db"
  ingress: [{action: Allow, source: {selector: app == "web"}}]
"""
    )
    verdict = check(engine, TOOL, DB, 5432)
    assert verdict.allowed and not verdict.pending_allowed


def test_kubernetes_translation_matches_calico() -> None:
    policy = compile_k8s_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"k": "v"}}},
                            {"podSelector": {"matchLabels": {"k2": "v2"}}},
                        ],
                        "ports": [
                            {"protocol": "UDP", "port": 90},
                            {"protocol": "TCP", "port": 80},
                        ],
                    }
                ],
            },
        }
    )
    assert str(policy.selector) == (
        '(projectcalico.org/orchestrator == "k8s" && projectcalico.org/namespace == "default")'
    )
    assert policy.order == 1000.0 and policy.tier == "default"
    rules = [(r.protocol, str(r.destination.ports), str(r.source.selector)) for r in policy.ingress]
    k_v = (
        '(projectcalico.org/namespace == "default" && '
        '(projectcalico.org/orchestrator == "k8s" && k == "v"))'
    )
    k2_v2 = k_v.replace('k == "v"', 'k2 == "v2"')
    assert rules == [(6, "80", k_v), (6, "80", k2_v2), (17, "90", k_v), (17, "90", k2_v2)]


def test_kubernetes_ports_merge_and_all_ports_win() -> None:
    policy = compile_k8s_policy(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "podSelector": {},
                "ingress": [
                    {
                        "ports": [
                            {"port": 82},
                            {"port": 80},
                            {"port": 81},
                            {"port": 9090},
                            {"port": "http"},
                            {"protocol": "UDP", "port": 53},
                            {"protocol": "UDP"},
                        ]
                    }
                ],
            },
        }
    )
    assert [(r.protocol, str(r.destination.ports)) for r in policy.ingress] == [
        (6, "80:82,9090,http"),
        (17, ""),
    ]


ADMIN = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
    - name: deny-dev
      action: Deny
      from: [{namespaces: {matchLabels: {env: dev}}}]
    - name: pass-prod
      action: Pass
      from: [{namespaces: {matchLabels: {env: prod}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
    - name: deny-all
      action: Deny
      from: [{namespaces: {}}]
"""


def test_admin_and_baseline_admin_policies() -> None:
    engine = engine_for(ADMIN)
    denied = check(engine, TOOL, WEB, 8080)
    assert not denied.allowed
    assert denied.ingress is not None
    assert denied.ingress.policy_strings() == ["0|adminnetworkpolicy|kanp:guard|deny|0"]
    # Pass skips to the default tier (empty: no applying policy) and then the baseline denies.
    passed = check(engine, DB, WEB, 8080)
    assert not passed.allowed
    assert passed.ingress is not None
    assert passed.ingress.policy_strings() == [
        "0|adminnetworkpolicy|kanp:guard|pass|1",
        "1|baselineadminnetworkpolicy|kbanp:default|deny|0",
    ]
    # A namespaced allow in the default tier comes before the baseline tier.
    with_np = engine_for(
        ADMIN
        + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{}]
"""
    )
    assert check(with_np, DB, WEB, 8080).allowed


def test_cluster_network_policy_tiers() -> None:
    engine = engine_for(
        """
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-accept}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
    - name: accept-dev-http
      action: Accept
      from: [{namespaces: {matchLabels: {env: dev}}}]
      protocols: [{tcp: {destinationPort: {number: 8080}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny}
spec:
  tier: Baseline
  priority: 5
  subject: {namespaces: {}}
  ingress:
    - {name: deny, action: Deny, from: [{namespaces: {}}]}
"""
    )
    verdict = check(engine, TOOL, WEB, 8080)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert verdict.ingress.policy_strings() == ["0|kube-admin|kcnp:admin-accept|allow|0"]
    assert not check(engine, TOOL, WEB, 8081).allowed


def test_policy_in_missing_tier_is_evaluated_last_with_deny() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: orphan}
spec:
  tier: no-such-tier
  selector: app == "web"
  ingress: [{action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == "web"
  ingress: [{action: Pass}]
"""
    )
    verdict = check(engine, TOOL, WEB, 8080)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert [h.tier for h in verdict.ingress.hits] == ["default", "no-such-tier", "__PROFILE__"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["web-sa"], True), (["other"], False)],
)
def test_policy_service_account_selector(names: list[str], expected: bool) -> None:
    engine = engine_for(
        f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web-sa, namespace: prod, labels: {{role: frontend}}}}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: by-sa, namespace: prod}}
spec:
  serviceAccountSelector: projectcalico.org/name in {{{", ".join(repr(n) for n in names)}}}
  types: [Ingress]
"""
    )
    # The policy (no rules) denies ingress to the pods whose service account it selects.
    assert check(engine, TOOL, WEB, 8080).allowed is not expected


def test_enforced_trace_shows_skipped_staged_policies() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-db, namespace: prod}
spec:
  order: 1
  selector: app == "db"
  ingress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db, namespace: prod}
spec:
  order: 2
  selector: app == "db"
  ingress: [{action: Allow}]
"""
    )
    verdict = check(engine, TOOL, DB, 5432)
    assert verdict.allowed and not verdict.pending_allowed
    assert verdict.ingress is not None
    outcomes = [(step.policy, step.outcome.value) for step in verdict.ingress.trace]
    assert outcomes == [("snp:prod/lock-db", "skipped-staged"), ("np:prod/db", "matched")]
    assert verdict.ingress.policy_strings() == ["0|default|np:prod/db|allow|0"]


def test_describe_ip_names_endpoints_network_sets_and_networks() -> None:
    engine = engine_for(
        """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: wide}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: narrow, namespace: prod}
spec: {nets: [192.0.2.8/29]}
"""
    )
    describe = engine.describe_ip
    assert describe(ipaddress.ip_address(WEB)) == "prod/web"
    assert describe(ipaddress.ip_address("192.0.2.9")) == "networkset prod/narrow"
    assert describe(ipaddress.ip_address("192.0.2.100")) == "networkset wide"
    assert describe(ipaddress.ip_address("10.9.9.9")) == "pvt"
    assert describe(ipaddress.ip_address("8.8.8.8")) == "pub"
