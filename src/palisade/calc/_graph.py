"""Wiring: one :func:`build_graph` connects the nodes; :class:`CalcGraph` is its front door.

::

    datastore update (ResourceKey, document | None)
      │
    CalcGraph.on_update: store the document, route it by kind
      │
      ├─ Pod, HostEndpoint, NetworkSet, GlobalNetworkSet,
      │  Namespace, ServiceAccount, Profile ───► EndpointCalculator
      │                                            │ all endpoints     │ all endpoints
      │                                            │ and network sets  │
      │                                            ▼                   ▼
      ├─ Service ────────────────────────────► RuleScanner     LocalEndpointCalculator
      │                                          ▲     ▲ active     │ labels    ▲ chains
      │                                          │     └─ profiles ─┤           │
      │                                          │                  ▼           │
      ├─ policies, Tier ─────────────────────────┼──────────────► PolicyResolver
      │                                          └─ active policies ─┘
      │                     IP-set, policy, profile intents │   │ endpoint intents
      ├─ Node, IPPool, IPAMBlock ──► RouteResolver ─ tunnel, peers, routes ─┐
      │                                                     ▼   ▼           │
      │                                               EventSequencer ◄──────┘
      │                                                     │ CalcGraph.flush()
      ▼                                                     ▼
                                     DataplaneCallbacks (+ RouteCallbacks, optional)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from palisade.datastore import ResourceKey
from palisade.policy import POLICY_KINDS

from ._documents import (
    ENDPOINT_KINDS,
    NETWORK_SET_KINDS,
    Document,
    builtin_tier,
    compile_policy,
    compile_service,
    compile_tier,
)
from ._endpoint_calculator import DEPENDENCY_KINDS, EndpointCalculator
from ._intents import DataplaneCallbacks, RouteCallbacks
from ._local_endpoints import LocalEndpointCalculator
from ._policy_resolver import PolicyResolver
from ._route_resolver import ROUTE_KINDS, VXLAN_DEVICE, VXLAN_VNI, RouteResolver
from ._rule_scanner import RuleScanner
from ._sequencer import EventSequencer

KUBERNETES_NETWORK_POLICY_KIND = "NetworkPolicy.networking.k8s.io"
"""The datastore kind of Kubernetes NetworkPolicy (its document kind clashes with Calico's)."""


@dataclass(frozen=True, slots=True)
class GraphStats:
    """How much work the graph has done; tests use it to check incrementality."""

    endpoint_recomputations: int
    chain_recomputations: int
    rule_translations: int


class CalcGraph:
    """Datastore updates in, dataplane callbacks out (on :meth:`flush`)."""

    def __init__(
        self,
        documents: dict[ResourceKey, Document],
        endpoints: EndpointCalculator,
        resolver: PolicyResolver,
        local_endpoints: LocalEndpointCalculator,
        rule_scanner: RuleScanner,
        sequencer: EventSequencer,
        route_resolver: RouteResolver | None = None,
    ) -> None:
        self._documents = documents
        self._endpoints = endpoints
        self._resolver = resolver
        self._local_endpoints = local_endpoints
        self._rule_scanner = rule_scanner
        self._sequencer = sequencer
        self._route_resolver = route_resolver

    def on_update(self, key: ResourceKey, document: Document | None) -> None:
        """A resource now has ``document`` (None: it is gone). Adds and modifications are the
        same thing here; kinds the graph does not use are ignored."""
        if document is None:
            self._documents.pop(key, None)
        else:
            self._documents[key] = document
        kind = key.kind
        if kind in ENDPOINT_KINDS or kind in NETWORK_SET_KINDS or kind in DEPENDENCY_KINDS:
            self._endpoints.on_update(key)
        elif kind in POLICY_KINDS or kind == KUBERNETES_NETWORK_POLICY_KIND:
            self._resolver.on_policy_update(
                key, compile_policy(document) if document is not None else None
            )
        elif kind == "Tier":
            tier = None
            if document is not None:
                try:
                    tier = compile_tier(document)
                except (ValueError, TypeError):
                    tier = None  # an unusable Tier is a missing one: after all others, Deny
            self._resolver.on_tier_update(key.name, tier or builtin_tier(key.name))
        elif kind == "Service":
            service = None
            if document is not None:
                try:
                    service = compile_service(document)
                except (ValueError, TypeError, KeyError):
                    service = None
            self._rule_scanner.on_service_update(key, service)
        elif kind in ROUTE_KINDS and self._route_resolver is not None:
            self._route_resolver.on_update(kind, key.name, document)

    def flush(self) -> int:
        """Tell the dataplane what changed since the last flush; returns the callback count.

        Chains, active rules and set members are computed here, from what the updates since
        the last flush marked dirty, so a burst of updates (a resync) computes each once.
        """
        self._resolver.flush()
        self._local_endpoints.flush()
        self._rule_scanner.flush()
        if self._route_resolver is not None:
            self._route_resolver.flush()
        return self._sequencer.flush()

    @property
    def stats(self) -> GraphStats:
        return GraphStats(
            endpoint_recomputations=self._endpoints.recomputations,
            chain_recomputations=self._resolver.chain_recomputations,
            rule_translations=self._rule_scanner.rule_translations,
        )


def build_graph(
    node_name: str,
    callbacks: DataplaneCallbacks,
    routes: RouteCallbacks | None = None,
    *,
    vxlan_device: str = VXLAN_DEVICE,
    vxlan_vni: int = VXLAN_VNI,
) -> CalcGraph:
    """The calculation graph of one node, reporting to ``callbacks``.

    The overlay (VXLAN device ``vxlan_device`` with ``vxlan_vni``, tunnel peers, routes per
    remote block) is reported to ``routes``, or to ``callbacks`` itself when that also
    implements :class:`RouteCallbacks`; with neither, Node, IPPool and IPAMBlock documents are
    ignored, as they were before the overlay existed.
    """
    if routes is None and isinstance(callbacks, RouteCallbacks):
        routes = callbacks
    sequencer = EventSequencer(callbacks, routes)
    route_resolver = None
    if routes is not None:
        route_resolver = RouteResolver(
            node_name,
            sequencer.on_tunnel_update,
            sequencer.on_tunnel_peer_update,
            sequencer.on_route_update,
            device=vxlan_device,
            vni=vxlan_vni,
        )
    rule_scanner = RuleScanner(
        sequencer.on_ipset_update, sequencer.on_policy_update, sequencer.on_profile_update
    )
    local_endpoints: LocalEndpointCalculator
    resolver = PolicyResolver(
        rule_scanner.on_policy_active,
        lambda endpoint_id, ingress, egress: local_endpoints.on_chains(
            endpoint_id, ingress, egress
        ),
    )
    local_endpoints = LocalEndpointCalculator(
        node_name, resolver, sequencer.on_endpoint_update, rule_scanner.on_profile_active
    )
    documents: dict[ResourceKey, Any] = {}
    endpoints = EndpointCalculator(documents, [rule_scanner, local_endpoints])
    return CalcGraph(
        documents, endpoints, resolver, local_endpoints, rule_scanner, sequencer, route_resolver
    )
