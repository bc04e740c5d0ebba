"""Scenario states replayed in many orders must leave the dataplane in one, expected, state."""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.calc import IPSetIntent, NamedPortSetIntent, PolicyIntent, build_graph
from palisade.policy import Action
from palisade.policy.synthetic import generate_cluster

from .dataplane import RecordingDataplane, resource_key
from .scenario import SCENARIO

Document = dict[str, Any]


def replay(
    documents: list[Document], *, node: str = "node-a", flush_each: bool = False
) -> RecordingDataplane:
    dataplane = RecordingDataplane()
    graph = build_graph(node, dataplane)
    for document in documents:
        graph.on_update(resource_key(document), document)
        if flush_each:
            graph.flush()
    graph.flush()
    return dataplane


def _members(dataplane: RecordingDataplane, set_id: str | None) -> frozenset[str]:
    assert set_id is not None
    return dataplane.sets[set_id].members


def check_expected(dataplane: RecordingDataplane) -> None:
    """The node-a intents of SCENARIO, written out by hand."""
    assert set(dataplane.endpoints) == {"wep:prod/web-1", "wep:prod/db-1"}
    web, db = dataplane.endpoints["wep:prod/web-1"], dataplane.endpoints["wep:prod/db-1"]
    assert web.ips == ("10.0.0.1",) and web.node == "node-a" and not web.deny_all
    assert web.profile_ids == ("kns.prod",)
    assert [(t.tier, t.policy_ids, t.default_action) for t in web.ingress_tiers] == [
        ("security", ("gnp:security.block-feed",), Action.PASS)
    ]
    assert web.egress_tiers == ()
    assert [(t.tier, t.policy_ids) for t in db.ingress_tiers] == [
        ("security", ("gnp:security.block-feed",)),
        ("default", ("knp:prod/db-from-web",)),
    ]
    assert [(t.tier, t.policy_ids, t.default_action) for t in db.egress_tiers] == [
        ("default", ("np:prod/web-http",), Action.DENY)
    ]
    # Staged policies are never programmed; policies apply only to local endpoints.
    assert set(dataplane.policies) == {
        "gnp:security.block-feed",
        "knp:prod/db-from-web",
        "np:prod/web-http",
    }
    assert set(dataplane.profiles) == {"kns.prod"}

    block = dataplane.policies["gnp:security.block-feed"]
    assert [r.action for r in block.ingress] == [Action.DENY, Action.PASS]
    assert _members(dataplane, block.ingress[0].source.selector_set_id) == {"198.51.100.0/24"}

    knp = dataplane.policies["knp:prod/db-from-web"]
    assert _members(dataplane, knp.ingress[0].source.selector_set_id) == {
        "10.0.0.1/32",
        "10.0.1.1/32",
    }
    egress = dataplane.policies["np:prod/web-http"].egress[0]
    assert egress.protocol == 6 and egress.destination.ports.ranges == ()
    (named,) = egress.destination.ports.named_port_set_ids
    assert isinstance(dataplane.sets[named], NamedPortSetIntent)
    assert _members(dataplane, named) == {"10.0.0.1,tcp:8080", "10.0.1.1,tcp:9090"}
    assert _members(dataplane, egress.destination.selector_set_id) == {
        "10.0.0.1/32",
        "10.0.1.1/32",
    }
    # The Kubernetes and the Calico "app == web" differ in effective selector (the former
    # also requires the k8s orchestrator label), so they are two sets.
    assert egress.destination.selector_set_id != knp.ingress[0].source.selector_set_id
    assert len([s for s in dataplane.sets.values() if isinstance(s, IPSetIntent)]) == 3
    for set_id in dataplane.sets:
        assert len(set_id) <= 31 and set_id.isalnum() and set_id[0].isalpha()


def test_forward_order_gives_the_expected_intents() -> None:
    check_expected(replay(SCENARIO))


def test_rules_with_the_same_selector_share_one_set() -> None:
    twin = copy.deepcopy(SCENARIO[-2])
    twin["metadata"]["name"] = "web-http-twin"
    twin["spec"]["egress"][0]["destination"]["ports"] = [443]
    dataplane = replay([*SCENARIO, twin])
    first = dataplane.policies["np:prod/web-http"].egress[0].destination
    second = dataplane.policies["np:prod/web-http-twin"].egress[0].destination
    assert first.selector_set_id == second.selector_set_id
    assert second.ports.ranges == ((443, 443),)
    assert len([s for s in dataplane.sets.values() if isinstance(s, IPSetIntent)]) == 3


def test_reversed_order() -> None:
    check_expected(replay(list(reversed(SCENARIO))))


def test_one_at_a_time_with_flushes() -> None:
    check_expected(replay(SCENARIO, flush_each=True))
    check_expected(replay(list(reversed(SCENARIO)), flush_each=True))


@settings(max_examples=60, deadline=None)
@given(st.permutations(SCENARIO), st.booleans())
def test_any_order_gives_the_expected_intents(order: list[Document], flush_each: bool) -> None:
    check_expected(replay(order, flush_each=flush_each))


def _churned(documents: list[Document], rng: random.Random) -> list[tuple[Document, bool]]:
    """The documents with detours: wrong labels first, deletions and re-creations."""
    out: list[tuple[Document, bool]] = []
    for document in documents:
        roll = rng.random()
        if roll < 0.3:
            wrong = copy.deepcopy(document)
            wrong["metadata"]["labels"] = {"churn": str(rng.random())}
            out.append((wrong, False))
        elif roll < 0.5:
            out.append((document, False))
            out.append((document, True))  # deleted, then created again below
        out.append((document, False))
    return out


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False), st.booleans())
def test_squashed_detours_leave_the_same_state(rng: random.Random, flush_each: bool) -> None:
    dataplane = RecordingDataplane()
    graph = build_graph("node-a", dataplane)
    order = list(SCENARIO)
    rng.shuffle(order)
    for document, delete in _churned(order, rng):
        graph.on_update(resource_key(document), None if delete else document)
        if flush_each and rng.random() < 0.5:
            graph.flush()
    graph.flush()
    check_expected(dataplane)


def test_a_flush_without_changes_says_nothing() -> None:
    dataplane = RecordingDataplane()
    graph = build_graph("node-a", dataplane)
    for document in SCENARIO:
        graph.on_update(resource_key(document), document)
    assert graph.flush() > 0
    calls = len(dataplane.calls)
    for document in SCENARIO:  # the same documents again: nothing changed
        graph.on_update(resource_key(document), copy.deepcopy(document))
    assert graph.flush() == 0
    assert len(dataplane.calls) == calls


SYNTHETIC = generate_cluster(namespaces=4, pods=36, policies=30, tiers=2, seed=7)
for _index, _document in enumerate(d for d in SYNTHETIC if d["kind"] == "Pod"):
    _document["spec"]["nodeName"] = f"node-{'ab'[_index % 2]}"
REFERENCE = replay(SYNTHETIC).state()


def test_synthetic_reference_is_not_trivial() -> None:
    sets, policies, _profiles, endpoints = REFERENCE
    assert isinstance(sets, dict) and isinstance(policies, dict) and isinstance(endpoints, dict)
    assert len(endpoints) == 18 and len(policies) > 5 and len(sets) > 5
    assert all(isinstance(p, PolicyIntent) for p in policies.values())


def test_synthetic_reversed_and_one_at_a_time() -> None:
    assert replay(list(reversed(SYNTHETIC))).state() == REFERENCE
    assert replay(SYNTHETIC, flush_each=True).state() == REFERENCE
    assert replay(list(reversed(SYNTHETIC)), flush_each=True).state() == REFERENCE


@settings(max_examples=25, deadline=None)
@given(st.permutations(SYNTHETIC), st.booleans())
def test_synthetic_any_order(order: list[Document], flush_each: bool) -> None:
    assert replay(order, flush_each=flush_each).state() == REFERENCE
