"""The local endpoint calculator node: this node's endpoints → endpoint intents.

It picks the endpoints whose node is this node, hands the complete ones' labels to the policy
resolver, joins the resolver's chains with the endpoint's addresses, interface and profiles,
and keeps ``profile_to_endpoints`` so a profile is programmed while a local endpoint uses it.
Incomplete endpoints get a deny-all intent and no policies or profiles.
"""

from __future__ import annotations

from collections.abc import Callable

from palisade.policy._types import CompiledProfile, NetworkSetInfo

from ._documents import CompiledEndpoint
from ._intents import EndpointIntent, TierChain
from ._policy_resolver import PolicyResolver

EndpointIntentCallback = Callable[[str, EndpointIntent | None], None]
ProfileActiveCallback = Callable[[str, CompiledProfile | None], None]

_NO_CHAINS: tuple[tuple[TierChain, ...], tuple[TierChain, ...]] = ((), ())


class LocalEndpointCalculator:
    def __init__(
        self,
        node_name: str,
        resolver: PolicyResolver,
        on_endpoint: EndpointIntentCallback,
        on_profile_active: ProfileActiveCallback,
    ) -> None:
        self._node = node_name
        self._resolver = resolver
        self._on_endpoint = on_endpoint
        self._on_profile_active = on_profile_active
        self._endpoints: dict[str, CompiledEndpoint] = {}
        self._chains: dict[str, tuple[tuple[TierChain, ...], tuple[TierChain, ...]]] = {}
        self.profile_to_endpoints: dict[str, set[str]] = {}
        self.endpoint_to_profiles: dict[str, frozenset[str]] = {}
        self._profile_content: dict[str, CompiledProfile] = {}
        self._active_profiles: dict[str, CompiledProfile] = {}
        self._dirty_endpoints: set[str] = set()
        self._dirty_profiles: set[str] = set()
        self._emitted: dict[str, EndpointIntent] = {}

    # -- from the endpoint calculator -------------------------------------------------------

    def on_endpoint_update(self, endpoint_id: str, endpoint: CompiledEndpoint | None) -> None:
        if endpoint is not None and endpoint.endpoint.node != self._node:
            endpoint = None
        if endpoint is None and endpoint_id not in self._endpoints:
            return
        self._dirty_endpoints.add(endpoint_id)
        if endpoint is None:
            del self._endpoints[endpoint_id]
            self._chains.pop(endpoint_id, None)
            self._set_profiles(endpoint_id, frozenset())
            self._resolver.on_endpoint_labels(endpoint_id, None)
            return
        self._endpoints[endpoint_id] = endpoint
        if not endpoint.complete:
            self._chains.pop(endpoint_id, None)
            self._set_profiles(endpoint_id, frozenset())
            self._resolver.on_endpoint_labels(endpoint_id, None)
            return
        for profile in endpoint.profiles:
            if self._profile_content.get(profile.name) != profile:
                self._profile_content[profile.name] = profile
                self._dirty_profiles.add(profile.name)
        self._set_profiles(endpoint_id, frozenset(p.name for p in endpoint.profiles))
        self._resolver.on_endpoint_labels(endpoint_id, endpoint.endpoint.label_map)

    def on_network_set_update(
        self, network_set_id: str, network_set: NetworkSetInfo | None, complete: bool
    ) -> None:
        del network_set_id, network_set, complete  # network sets have no chains

    def _set_profiles(self, endpoint_id: str, profiles: frozenset[str]) -> None:
        old = self.endpoint_to_profiles.pop(endpoint_id, frozenset())
        if profiles:
            self.endpoint_to_profiles[endpoint_id] = profiles
        for name in old - profiles:
            users = self.profile_to_endpoints[name]
            users.discard(endpoint_id)
            if not users:
                del self.profile_to_endpoints[name]
                self._dirty_profiles.add(name)
        for name in profiles - old:
            self.profile_to_endpoints.setdefault(name, set()).add(endpoint_id)
            self._dirty_profiles.add(name)

    # -- from the policy resolver -----------------------------------------------------------

    def on_chains(
        self, endpoint_id: str, ingress: tuple[TierChain, ...], egress: tuple[TierChain, ...]
    ) -> None:
        if self._chains.get(endpoint_id) != (ingress, egress):
            self._chains[endpoint_id] = (ingress, egress)
            self._dirty_endpoints.add(endpoint_id)

    # -- outputs ----------------------------------------------------------------------------

    def flush(self) -> None:
        dirty_profiles, self._dirty_profiles = self._dirty_profiles, set()
        for name in sorted(dirty_profiles):
            wanted = self._profile_content.get(name) if name in self.profile_to_endpoints else None
            if wanted is None:
                self._profile_content.pop(name, None)
            if wanted == self._active_profiles.get(name):
                continue
            if wanted is None:
                del self._active_profiles[name]
            else:
                self._active_profiles[name] = wanted
            self._on_profile_active(name, wanted)
        dirty_endpoints, self._dirty_endpoints = self._dirty_endpoints, set()
        for endpoint_id in sorted(dirty_endpoints):
            intent = self._intent(endpoint_id)
            if intent == self._emitted.get(endpoint_id):
                continue
            if intent is None:
                del self._emitted[endpoint_id]
            else:
                self._emitted[endpoint_id] = intent
            self._on_endpoint(endpoint_id, intent)

    def _intent(self, endpoint_id: str) -> EndpointIntent | None:
        compiled = self._endpoints.get(endpoint_id)
        if compiled is None:
            return None
        endpoint = compiled.endpoint
        ips = tuple(str(ip) for ip in endpoint.ips)
        if not compiled.complete:
            return EndpointIntent(
                endpoint_id, self._node, compiled.interface, ips, (), (), (), deny_all=True
            )
        ingress, egress = self._chains.get(endpoint_id, _NO_CHAINS)
        return EndpointIntent(
            endpoint_id,
            self._node,
            compiled.interface,
            ips,
            ingress,
            egress,
            tuple(p.name for p in compiled.profiles),
        )
