"""The event sequencer: the contract between the graph and a dataplane.

The graph may update the same object many times before the dataplane is told anything; the
sequencer keeps only the latest value per object and, on :meth:`EventSequencer.flush`, emits
just what differs from the previous flush, in an order in which nothing is ever referred to
before it exists or removed while still referred to:

    updates:  IP sets → policies → profiles → endpoints → tunnel → tunnel peers → routes
    removals: routes → tunnel peers → tunnel → endpoints → profiles → policies → IP sets

The overlay (tunnel, peers, routes) goes to an optional :class:`RouteCallbacks`; without one,
its updates are dropped and not counted. Routes come after policy on the way in and go first
on the way out, so a path to a pod never exists before the chains that guard it.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._intents import (
    DataplaneCallbacks,
    EndpointIntent,
    PolicyIntent,
    ProfileIntent,
    RouteCallbacks,
    RouteIntent,
    SetIntent,
    TunnelIntent,
    TunnelPeerIntent,
)

T = TypeVar("T")


class _Buffer(Generic[T]):
    """Latest wanted value per id, and what the dataplane was last told."""

    def __init__(self) -> None:
        self.pending: dict[str, T | None] = {}
        self.flushed: dict[str, T] = {}

    def put(self, object_id: str, value: T | None) -> None:
        self.pending[object_id] = value

    def take(self) -> tuple[list[tuple[str, T]], list[str]]:
        updates: list[tuple[str, T]] = []
        removals: list[str] = []
        for object_id in sorted(self.pending):
            value = self.pending[object_id]
            if value is None:
                if object_id in self.flushed:
                    removals.append(object_id)
                    del self.flushed[object_id]
            elif self.flushed.get(object_id) != value:
                updates.append((object_id, value))
                self.flushed[object_id] = value
        self.pending.clear()
        return updates, removals


class EventSequencer:
    """Buffers the graph's outputs and emits them in dependency order on :meth:`flush`."""

    def __init__(self, callbacks: DataplaneCallbacks, routes: RouteCallbacks | None = None) -> None:
        self._callbacks = callbacks
        self._route_callbacks = routes
        self._tunnels: _Buffer[TunnelIntent] = _Buffer()
        self._peers: _Buffer[TunnelPeerIntent] = _Buffer()
        self._routes: _Buffer[RouteIntent] = _Buffer()
        self._sets: _Buffer[SetIntent] = _Buffer()
        self._policies: _Buffer[PolicyIntent] = _Buffer()
        self._profiles: _Buffer[ProfileIntent] = _Buffer()
        self._endpoints: _Buffer[EndpointIntent] = _Buffer()

    def on_ipset_update(self, set_id: str, ipset: SetIntent | None) -> None:
        self._sets.put(set_id, ipset)

    def on_policy_update(self, policy_id: str, policy: PolicyIntent | None) -> None:
        self._policies.put(policy_id, policy)

    def on_profile_update(self, profile_id: str, profile: ProfileIntent | None) -> None:
        self._profiles.put(profile_id, profile)

    def on_endpoint_update(self, endpoint_id: str, endpoint: EndpointIntent | None) -> None:
        self._endpoints.put(endpoint_id, endpoint)

    def on_tunnel_update(self, device: str, tunnel: TunnelIntent | None) -> None:
        if self._route_callbacks is not None:
            self._tunnels.put(device, tunnel)

    def on_tunnel_peer_update(self, node: str, peer: TunnelPeerIntent | None) -> None:
        if self._route_callbacks is not None:
            self._peers.put(node, peer)

    def on_route_update(self, dst_cidr: str, route: RouteIntent | None) -> None:
        if self._route_callbacks is not None:
            self._routes.put(dst_cidr, route)

    def flush(self) -> int:
        """Emit every change since the last flush; returns how many callbacks were made."""
        callbacks = self._callbacks
        set_updates, set_removals = self._sets.take()
        policy_updates, policy_removals = self._policies.take()
        profile_updates, profile_removals = self._profiles.take()
        endpoint_updates, endpoint_removals = self._endpoints.take()
        tunnel_updates, tunnel_removals = self._tunnels.take()
        peer_updates, peer_removals = self._peers.take()
        route_updates, route_removals = self._routes.take()
        for set_id, ipset in set_updates:
            callbacks.on_ipset_update(set_id, ipset)
        for policy_id, policy in policy_updates:
            callbacks.on_policy_update(policy_id, policy)
        for profile_id, profile in profile_updates:
            callbacks.on_profile_update(profile_id, profile)
        for endpoint_id, endpoint in endpoint_updates:
            callbacks.on_endpoint_update(endpoint_id, endpoint)
        overlay = self._route_callbacks
        if overlay is not None:
            for device, tunnel in tunnel_updates:
                overlay.on_tunnel_update(device, tunnel)
            for node, peer in peer_updates:
                overlay.on_tunnel_peer_update(node, peer)
            for dst_cidr, route in route_updates:
                overlay.on_route_update(dst_cidr, route)
            for dst_cidr in route_removals:
                overlay.on_route_update(dst_cidr, None)
            for node in peer_removals:
                overlay.on_tunnel_peer_update(node, None)
            for device in tunnel_removals:
                overlay.on_tunnel_update(device, None)
        for endpoint_id in endpoint_removals:
            callbacks.on_endpoint_update(endpoint_id, None)
        for profile_id in profile_removals:
            callbacks.on_profile_update(profile_id, None)
        for policy_id in policy_removals:
            callbacks.on_policy_update(policy_id, None)
        for set_id in set_removals:
            callbacks.on_ipset_update(set_id, None)
        return sum(
            len(batch)
            for batch in (
                set_updates,
                policy_updates,
                profile_updates,
                endpoint_updates,
                endpoint_removals,
                profile_removals,
                policy_removals,
                set_removals,
                tunnel_updates,
                peer_updates,
                route_updates,
                route_removals,
                peer_removals,
                tunnel_removals,
            )
        )
