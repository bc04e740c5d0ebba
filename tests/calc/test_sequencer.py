"""The event sequencer merges updates and flushes in dependency order."""

from __future__ import annotations

from palisade.calc import (
    EndpointIntent,
    EntityIntent,
    EventSequencer,
    IPSetIntent,
    PolicyIntent,
    ProfileIntent,
    RuleIntent,
    TierChain,
)
from palisade.policy import Action

from .dataplane import RecordingDataplane

SET = IPSetIntent("pals1", frozenset({"10.0.0.1/32"}))
RULE = RuleIntent(0, Action.ALLOW, source=EntityIntent(selector_set_id="pals1"))
POLICY = PolicyIntent("gnp:p", ingress=(RULE,), egress=())
PROFILE = ProfileIntent("kns.prod", ingress=(RULE,), egress=())
CHAIN = TierChain("default", Action.DENY, ("gnp:p",), True)
ENDPOINT = EndpointIntent(
    "wep:prod/a", "node-a", "pal0", ("10.0.0.2",), (CHAIN,), (), ("kns.prod",)
)


def test_updates_flush_sets_then_policies_then_profiles_then_endpoints() -> None:
    dataplane = RecordingDataplane()
    sequencer = EventSequencer(dataplane)
    sequencer.on_endpoint_update("wep:prod/a", ENDPOINT)
    sequencer.on_profile_update("kns.prod", PROFILE)
    sequencer.on_policy_update("gnp:p", POLICY)
    sequencer.on_ipset_update("pals1", SET)
    assert sequencer.flush() == 4
    assert [c[0] for c in dataplane.calls] == ["set", "policy", "profile", "endpoint"]


def test_removals_flush_in_reverse() -> None:
    dataplane = RecordingDataplane()
    sequencer = EventSequencer(dataplane)
    for update in (
        lambda: sequencer.on_ipset_update("pals1", SET),
        lambda: sequencer.on_policy_update("gnp:p", POLICY),
        lambda: sequencer.on_profile_update("kns.prod", PROFILE),
        lambda: sequencer.on_endpoint_update("wep:prod/a", ENDPOINT),
    ):
        update()
    sequencer.flush()
    dataplane.calls.clear()
    sequencer.on_ipset_update("pals1", None)
    sequencer.on_policy_update("gnp:p", None)
    sequencer.on_profile_update("kns.prod", None)
    sequencer.on_endpoint_update("wep:prod/a", None)
    assert sequencer.flush() == 4
    assert dataplane.calls == [
        ("endpoint", "wep:prod/a", False),
        ("profile", "kns.prod", False),
        ("policy", "gnp:p", False),
        ("set", "pals1", False),
    ]
    assert dataplane.empty


def test_repeated_updates_merge_and_unchanged_ones_vanish() -> None:
    dataplane = RecordingDataplane()
    sequencer = EventSequencer(dataplane)
    sequencer.on_ipset_update("pals1", IPSetIntent("pals1", frozenset()))
    sequencer.on_ipset_update("pals1", SET)
    sequencer.on_ipset_update("pals2", SET)
    sequencer.on_ipset_update("pals2", None)  # created and removed between flushes: nothing
    assert sequencer.flush() == 1
    assert dataplane.sets == {"pals1": SET}
    sequencer.on_ipset_update("pals1", IPSetIntent("pals1", frozenset({"10.0.0.1/32"})))
    sequencer.on_ipset_update("pals3", None)  # never existed
    assert sequencer.flush() == 0
    sequencer.on_ipset_update("pals1", None)
    sequencer.on_ipset_update("pals1", SET)  # removed and restored: no change
    assert sequencer.flush() == 0
    assert len(dataplane.calls) == 1
