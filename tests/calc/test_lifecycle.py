"""Deletion leaves nothing behind; incomplete inputs fail closed; changes stay local."""

from __future__ import annotations

import copy
import ipaddress
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.calc import CalcGraph, build_graph, workload_interface_name
from palisade.policy import Flow
from palisade.policy.synthetic import generate_cluster

from .dataplane import Interpreter, RecordingDataplane, resource_key
from .scenario import SCENARIO, namespace, pod
from .test_scenarios import SYNTHETIC, check_expected, replay

Document = dict[str, Any]


def _graph(documents: list[Document], node: str = "node-a") -> tuple[CalcGraph, RecordingDataplane]:
    dataplane = RecordingDataplane()
    graph = build_graph(node, dataplane)
    for document in documents:
        graph.on_update(resource_key(document), document)
    graph.flush()
    return graph, dataplane


# -- deletion ---------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_deleting_everything_empties_the_dataplane(rng: random.Random) -> None:
    documents = [*SCENARIO, *SYNTHETIC]
    graph, dataplane = _graph(documents, node=rng.choice(["node-a", "node-b"]))
    assert not dataplane.empty
    order = list(documents)
    rng.shuffle(order)
    for document in order:
        graph.on_update(resource_key(document), None)
        if rng.random() < 0.2:
            graph.flush()
    graph.flush()
    assert dataplane.empty, dataplane.state()


def test_deleting_every_policy_removes_every_set() -> None:
    graph, dataplane = _graph(SCENARIO)
    assert dataplane.sets
    for document in SCENARIO:
        if "Policy" in document["kind"]:
            graph.on_update(resource_key(document), None)
    graph.flush()
    assert dataplane.sets == {} and dataplane.policies == {}
    assert set(dataplane.endpoints) == {"wep:prod/web-1", "wep:prod/db-1"}
    for endpoint in dataplane.endpoints.values():
        assert endpoint.ingress_tiers == () and endpoint.egress_tiers == ()
        assert endpoint.profile_ids == ("kns.prod",)


def test_an_endpoint_moving_off_the_node_is_removed() -> None:
    graph, dataplane = _graph(SCENARIO)
    moved = copy.deepcopy(SCENARIO[4])  # db-1
    moved["spec"]["nodeName"] = "node-b"
    graph.on_update(resource_key(moved), moved)
    graph.flush()
    assert set(dataplane.endpoints) == {"wep:prod/web-1"}
    assert "np:prod/web-http" not in dataplane.policies  # it applied only to db-1 here


# -- fail closed ------------------------------------------------------------------------------

FLOW_TO_WEB = Flow(
    ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.0.0.1"), 6, dst_port=8080
)


def test_pods_without_their_namespace_are_denied_all() -> None:
    without = [d for d in SCENARIO if d["metadata"]["name"] != "prod"]
    graph, dataplane = _graph(without)
    assert set(dataplane.endpoints) == {"wep:prod/web-1", "wep:prod/db-1"}
    for endpoint in dataplane.endpoints.values():
        assert endpoint.deny_all
        assert endpoint.ingress_tiers == endpoint.egress_tiers == endpoint.profile_ids == ()
        assert endpoint.ips  # still known, so the dataplane can drop its traffic
        interpreter = Interpreter(dataplane)
        assert not interpreter.allowed(endpoint, True, FLOW_TO_WEB)
        assert not interpreter.allowed(endpoint, False, FLOW_TO_WEB)
    # No local endpoint is complete: nothing applies, so no policy, profile or set either.
    assert dataplane.policies == {} and dataplane.profiles == {} and dataplane.sets == {}

    graph.on_update(resource_key(SCENARIO[0]), SCENARIO[0])
    graph.flush()
    check_expected(dataplane)

    graph.on_update(resource_key(SCENARIO[0]), None)  # the namespace goes away again
    graph.flush()
    assert all(e.deny_all for e in dataplane.endpoints.values())
    assert dataplane.sets == {}


def test_incomplete_remote_pods_are_in_no_set() -> None:
    # tool (ns ops, node-b) has no Namespace: a rule selecting all() must not see it.
    documents = [d for d in SCENARIO if d["metadata"]["name"] != "ops"]
    _, dataplane = _graph(documents)
    block = dataplane.policies["gnp:security.block-feed"]
    assert "10.0.1.9/32" not in dataplane.sets[block.ingress[0].source.selector_set_id].members
    allow_all = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "from-anyone"},
        "spec": {
            "selector": "all()",
            "ingress": [{"action": "Allow", "source": {"selector": "all()"}}],
        },
    }
    _, dataplane = _graph([*documents, allow_all])
    rule = dataplane.policies["gnp:from-anyone"].ingress[0]
    members = dataplane.sets[rule.source.selector_set_id or ""].members
    assert members == {"10.0.0.1/32", "10.0.0.2/32", "10.0.1.1/32", "198.51.100.0/24"}


def test_missing_service_account_fails_closed_except_default() -> None:
    documents = [
        namespace("prod", {}),
        pod("api", "10.0.0.5", "node-a", {"app": "api"}, service_account="backend"),
        pod("job", "10.0.0.6", "node-a", {"app": "job"}, service_account="default"),
    ]
    graph, dataplane = _graph(documents)
    assert dataplane.endpoints["wep:prod/api"].deny_all
    job = dataplane.endpoints["wep:prod/job"]
    assert not job.deny_all and job.profile_ids == ("kns.prod", "ksa.prod.default")
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "backend", "namespace": "prod", "labels": {"team": "a"}},
    }
    graph.on_update(resource_key(service_account), service_account)
    graph.flush()
    api = dataplane.endpoints["wep:prod/api"]
    assert not api.deny_all and api.profile_ids == ("kns.prod", "ksa.prod.backend")
    assert api.interface == workload_interface_name("prod", "api")
    assert len(api.interface) <= 15


def test_host_endpoint_without_its_profile_fails_closed() -> None:
    host_endpoint = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "HostEndpoint",
        "metadata": {"name": "node-a-eth0", "labels": {"role": "host"}},
        "spec": {
            "node": "node-a",
            "interfaceName": "eth0",
            "expectedIPs": ["192.0.2.10"],
            "profiles": ["host-default"],
        },
    }
    profile = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "host-default"},
        "spec": {
            "ingress": [{"action": "Allow", "source": {"selector": "role == 'host'"}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {"zone": "a"},
        },
    }
    graph, dataplane = _graph([host_endpoint])
    assert dataplane.endpoints["hep:node-a-eth0"].deny_all
    graph.on_update(resource_key(profile), profile)
    graph.flush()
    endpoint = dataplane.endpoints["hep:node-a-eth0"]
    assert not endpoint.deny_all and endpoint.interface == "eth0"
    assert endpoint.profile_ids == ("host-default",)
    rule = dataplane.profiles["host-default"].ingress[0]
    assert dataplane.sets[rule.source.selector_set_id or ""].members == {"192.0.2.10/32"}


def test_an_uncompilable_pod_fails_closed() -> None:
    broken = pod("bad", "not-an-ip", "node-a", {"app": "web"})
    _, dataplane = _graph([*SCENARIO, broken])
    assert dataplane.endpoints["wep:prod/bad"].deny_all
    check_expected_without_bad = {
        k: v for k, v in dataplane.endpoints.items() if k != "wep:prod/bad"
    }
    assert set(check_expected_without_bad) == {"wep:prod/web-1", "wep:prod/db-1"}


# -- incrementality ---------------------------------------------------------------------------

BIG = generate_cluster(namespaces=5, pods=90, policies=60, tiers=3, seed=11)
for _index, _document in enumerate(d for d in BIG if d["kind"] == "Pod"):
    _document["spec"]["nodeName"] = f"node-{'ab'[_index % 2]}"


def _delta(
    graph: CalcGraph, dataplane: RecordingDataplane, change: list[Document | tuple[Document, None]]
) -> tuple[Any, list[tuple[str, str, bool]]]:
    before_stats, before_calls = graph.stats, len(dataplane.calls)
    for item in change:
        if isinstance(item, tuple):
            graph.on_update(resource_key(item[0]), None)
        else:
            graph.on_update(resource_key(item), item)
    graph.flush()
    after = graph.stats
    stats = (
        after.endpoint_recomputations - before_stats.endpoint_recomputations,
        after.chain_recomputations - before_stats.chain_recomputations,
        after.rule_translations - before_stats.rule_translations,
    )
    return stats, dataplane.calls[before_calls:]


def test_a_rule_change_recomputes_only_that_policy() -> None:
    graph, dataplane = _graph(BIG)
    active = next(
        d
        for d in BIG
        if d["kind"] == "NetworkPolicy"
        and d["apiVersion"].startswith("projectcalico")
        and f"np:{d['metadata']['namespace']}/{d['metadata']['name']}" in dataplane.policies
        and d["spec"].get("ingress")
    )
    changed = copy.deepcopy(active)
    changed["spec"]["ingress"] = [{"action": "Log"}, *changed["spec"]["ingress"]]
    (endpoints, chains, rules), calls = _delta(graph, dataplane, [changed])
    policy_id = f"np:{active['metadata']['namespace']}/{active['metadata']['name']}"
    assert calls == [("policy", policy_id, True)]
    assert endpoints == 0 and chains == 0
    assert rules == len(changed["spec"]["ingress"]) + len(changed["spec"].get("egress") or ())


def test_a_label_change_touches_only_that_pod_and_its_sets() -> None:
    graph, dataplane = _graph(BIG)
    pods = [d for d in BIG if d["kind"] == "Pod"]
    subject = next(p for p in pods if p["spec"]["nodeName"] == "node-a")
    donor = next(p for p in pods if p["metadata"]["labels"] != subject["metadata"]["labels"])
    changed = copy.deepcopy(subject)
    changed["metadata"]["labels"] = dict(donor["metadata"]["labels"])
    old_sets = dict(dataplane.sets)
    (endpoints, chains, rules), calls = _delta(graph, dataplane, [changed])
    assert (
        endpoints == 1
        and chains <= 1
        and rules <= sum(len(p.ingress) + len(p.egress) for p in dataplane.policies.values())
    )
    address = f"{subject['status']['podIP']}/32"
    subject_id = f"wep:{subject['metadata']['namespace']}/{subject['metadata']['name']}"
    for kind, object_id, present in calls:
        if kind == "set" and present and object_id in old_sets:
            # The pod moved in or out of every set that changed, and nothing else did.
            before = old_sets[object_id].members
            after = dataplane.sets[object_id].members
            assert {m for m in before ^ after if not m.startswith(address[:-3] + ",")} <= {address}
        elif kind == "endpoint":
            assert object_id == subject_id


def test_a_remote_label_change_recomputes_no_chain() -> None:
    graph, dataplane = _graph(BIG)
    remote = next(p for p in BIG if p["kind"] == "Pod" and p["spec"]["nodeName"] == "node-b")
    changed = copy.deepcopy(remote)
    changed["metadata"]["labels"]["extra"] = "yes"
    (endpoints, chains, _), calls = _delta(graph, dataplane, [changed])
    assert endpoints == 1 and chains == 0
    assert all(kind == "set" for kind, _, _ in calls)


def test_a_namespace_change_recomputes_only_its_members() -> None:
    graph, dataplane = _graph(BIG)
    ns = next(d for d in BIG if d["kind"] == "Namespace")
    name = ns["metadata"]["name"]
    members = [
        d
        for d in BIG
        if d["kind"] in ("Pod", "NetworkSet") and d["metadata"].get("namespace") == name
    ]
    changed = copy.deepcopy(ns)
    changed["metadata"]["labels"]["new-label"] = "x"
    (endpoints, _, _), _ = _delta(graph, dataplane, [changed])
    assert endpoints == len(members) > 0


def test_a_new_policy_for_one_pod_recomputes_one_chain() -> None:
    graph, dataplane = _graph(BIG)
    subject = copy.deepcopy(
        next(p for p in BIG if p["kind"] == "Pod" and p["spec"]["nodeName"] == "node-a")
    )
    subject["metadata"]["labels"]["solo"] = "yes"
    _delta(graph, dataplane, [subject])
    policy = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "solo"},
        "spec": {
            "selector": "solo == 'yes'",
            "ingress": [{"action": "Deny", "source": {"nets": ["203.0.113.0/24"]}}],
        },
    }
    (endpoints, chains, rules), calls = _delta(graph, dataplane, [policy])
    subject_id = f"wep:{subject['metadata']['namespace']}/{subject['metadata']['name']}"
    assert (endpoints, chains, rules) == (0, 1, 1)
    assert calls == [("policy", "gnp:solo", True), ("endpoint", subject_id, True)]
    rule = dataplane.policies["gnp:solo"].ingress[0]
    assert rule.source.nets == ("203.0.113.0/24",) and rule.source.selector_set_id is None
    (endpoints, chains, rules), calls = _delta(graph, dataplane, [(policy, None)])
    assert (endpoints, chains, rules) == (0, 1, 0)
    assert calls == [("endpoint", subject_id, True), ("policy", "gnp:solo", False)]


def test_replay_of_big_cluster_matches_in_reverse() -> None:
    assert replay(list(reversed(BIG))).state() == replay(BIG).state()


def test_a_tier_change_recomputes_only_endpoints_with_policies_in_it() -> None:
    graph, dataplane = _graph(SCENARIO)
    tier = copy.deepcopy(next(d for d in SCENARIO if d["kind"] == "Tier"))
    tier["spec"]["defaultAction"] = "Deny"
    (endpoints, chains, rules), calls = _delta(graph, dataplane, [tier])
    assert (endpoints, chains, rules) == (0, 2, 0)  # web-1 and db-1 both use the tier
    assert {c[1] for c in calls} == {"wep:prod/web-1", "wep:prod/db-1"}
    web = dataplane.endpoints["wep:prod/web-1"]
    assert [(t.tier, t.default_action.value) for t in web.ingress_tiers] == [("security", "Deny")]
    (_, chains, _), _ = _delta(graph, dataplane, [(tier, None)])  # no Tier resource: Deny, last
    assert chains == 2
    db = dataplane.endpoints["wep:prod/db-1"]
    assert [t.tier for t in db.ingress_tiers] == ["default", "security"]


def test_a_pod_without_addresses_has_none() -> None:
    addressless = pod("pending", "10.0.0.77", "node-a", {"app": "web"})
    del addressless["status"]
    _, dataplane = _graph([*SCENARIO, addressless])
    endpoint = dataplane.endpoints["wep:prod/pending"]
    assert endpoint.ips == () and not endpoint.deny_all
    assert endpoint.ingress_tiers == dataplane.endpoints["wep:prod/web-1"].ingress_tiers
    knp = dataplane.policies["knp:prod/db-from-web"]
    assert dataplane.sets[knp.ingress[0].source.selector_set_id or ""].members == {
        "10.0.0.1/32",
        "10.0.1.1/32",
    }
