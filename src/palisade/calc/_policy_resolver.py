"""The policy resolver node: local endpoint → ordered tiers and policies, per direction.

It indexes the selectors of enforced policies against the labels of this node's complete
endpoints, keeps ``policy_to_endpoints`` / ``endpoint_to_policies`` with symmetric add and
remove, and recomputes the chains only of endpoints whose matches, policy order or tier
changed. A policy is *active* while it applies to at least one local endpoint; only active
policies reach the rule scanner, so a node programs only the rules it can use.

Ordering, tier defaults and the treatment of a policy naming an unknown tier come from the
engine (``CompiledPolicy.sort_key``, ``TierInfo.sort_key``, ``Cluster.tier``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from palisade.datastore import ResourceKey
from palisade.policy import Cluster
from palisade.policy._types import Action, CompiledPolicy, Direction, TierInfo

from ._intents import TierChain
from ._label_index import SelectorIndex

PolicyActiveCallback = Callable[[str, CompiledPolicy | None], None]
ChainsCallback = Callable[[str, tuple[TierChain, ...], tuple[TierChain, ...]], None]


def in_enforced_pipeline(policy: CompiledPolicy) -> bool:
    """Staged policies are never enforced; doNotTrack and preDNAT policies act before
    connection tracking on host endpoints, outside the normal pipeline (spec 4.11)."""
    return not (policy.staged or policy.do_not_track or policy.pre_dnat)


def _ordering(policy: CompiledPolicy) -> tuple[object, ...]:
    return (policy.tier, policy.sort_key, policy.types)


class PolicyResolver:
    def __init__(self, on_policy_active: PolicyActiveCallback, on_chains: ChainsCallback) -> None:
        self._on_policy_active = on_policy_active
        self._on_chains = on_chains
        self._index = SelectorIndex(self._match_started, self._match_stopped)
        self._cluster = Cluster()  # holds the tiers; Cluster.tier() answers unknown names
        self._policies: dict[str, CompiledPolicy] = {}
        self._key_to_policy_id: dict[ResourceKey, str] = {}
        self.tier_to_policies: dict[str, set[str]] = {}
        self.policy_to_endpoints: dict[str, set[str]] = {}
        self.endpoint_to_policies: dict[str, set[str]] = {}
        self._local_endpoints: set[str] = set()
        self._active: dict[str, CompiledPolicy] = {}
        self._dirty_endpoints: set[str] = set()
        self._dirty_policies: set[str] = set()
        self.chain_recomputations = 0

    # -- inputs -----------------------------------------------------------------------------

    def on_policy_update(self, key: ResourceKey, policy: CompiledPolicy | None) -> None:
        if policy is not None and not in_enforced_pipeline(policy):
            policy = None
        old_id = self._key_to_policy_id.pop(key, None)
        new_id = policy.hit_part if policy is not None else None
        if old_id is not None and old_id != new_id:
            self._remove_policy(old_id)
        if policy is None or new_id is None:
            return
        self._key_to_policy_id[key] = new_id
        old = self._policies.get(new_id)
        if old is not None:
            self.tier_to_policies[old.tier].discard(new_id)
            if _ordering(old) != _ordering(policy):
                self._dirty_endpoints |= self.policy_to_endpoints.get(new_id, set())
        self._policies[new_id] = policy
        self.tier_to_policies.setdefault(policy.tier, set()).add(new_id)
        self._index.update_selector(new_id, policy.selector)
        self._dirty_policies.add(new_id)

    def _remove_policy(self, policy_id: str) -> None:
        old = self._policies.pop(policy_id, None)
        if old is None:
            return
        self._index.update_selector(policy_id, None)
        members = self.tier_to_policies.get(old.tier)
        if members is not None:
            members.discard(policy_id)
            if not members:
                del self.tier_to_policies[old.tier]
        self._dirty_policies.add(policy_id)

    def on_tier_update(self, name: str, tier: TierInfo | None) -> None:
        if tier is None:
            self._cluster.tiers.pop(name, None)
        else:
            self._cluster.tiers[name] = tier
        for policy_id in self.tier_to_policies.get(name, ()):
            self._dirty_endpoints |= self.policy_to_endpoints.get(policy_id, set())

    def on_endpoint_labels(self, endpoint_id: str, labels: Mapping[str, str] | None) -> None:
        """A local, complete endpoint's effective labels; None: not (or no longer) one."""
        self._index.update_labels(endpoint_id, labels)
        if labels is None:
            self._local_endpoints.discard(endpoint_id)
            self._dirty_endpoints.discard(endpoint_id)
        else:
            self._local_endpoints.add(endpoint_id)
            self._dirty_endpoints.add(endpoint_id)

    # -- the two-way index ------------------------------------------------------------------

    def _match_started(self, policy_id: str, endpoint_id: str) -> None:
        self.policy_to_endpoints.setdefault(policy_id, set()).add(endpoint_id)
        self.endpoint_to_policies.setdefault(endpoint_id, set()).add(policy_id)
        self._dirty_endpoints.add(endpoint_id)
        self._dirty_policies.add(policy_id)

    def _match_stopped(self, policy_id: str, endpoint_id: str) -> None:
        for index, outer, inner in (
            (self.policy_to_endpoints, policy_id, endpoint_id),
            (self.endpoint_to_policies, endpoint_id, policy_id),
        ):
            values = index.get(outer)
            if values is not None:
                values.discard(inner)
                if not values:
                    del index[outer]
        self._dirty_endpoints.add(endpoint_id)
        self._dirty_policies.add(policy_id)

    # -- outputs ----------------------------------------------------------------------------

    def flush(self) -> None:
        dirty_policies, self._dirty_policies = self._dirty_policies, set()
        for policy_id in sorted(dirty_policies):
            wanted = (
                self._policies.get(policy_id) if self.policy_to_endpoints.get(policy_id) else None
            )
            if wanted == self._active.get(policy_id):
                continue
            if wanted is None:
                del self._active[policy_id]
            else:
                self._active[policy_id] = wanted
            self._on_policy_active(policy_id, wanted)
        dirty_endpoints, self._dirty_endpoints = self._dirty_endpoints, set()
        for endpoint_id in sorted(dirty_endpoints & self._local_endpoints):
            ingress, egress = self._chains(endpoint_id)
            self._on_chains(endpoint_id, ingress, egress)

    def _chains(self, endpoint_id: str) -> tuple[tuple[TierChain, ...], tuple[TierChain, ...]]:
        self.chain_recomputations += 1
        by_tier: dict[str, list[CompiledPolicy]] = {}
        for policy_id in self.endpoint_to_policies.get(endpoint_id, ()):
            policy = self._policies[policy_id]
            by_tier.setdefault(policy.tier, []).append(policy)
        tiers = sorted((self._cluster.tier(name) for name in by_tier), key=lambda t: t.sort_key)
        result: list[tuple[TierChain, ...]] = []
        for direction in (Direction.INGRESS, Direction.EGRESS):
            chains: list[TierChain] = []
            for tier in tiers:
                policies = sorted(
                    (p for p in by_tier[tier.name] if direction in p.types),
                    key=lambda p: p.sort_key,
                )
                if not policies:
                    continue
                default = Action.PASS if tier.default_action is Action.PASS else Action.DENY
                chains.append(
                    TierChain(tier.name, default, tuple(p.hit_part for p in policies), True)
                )
            result.append(tuple(chains))
        return result[0], result[1]
