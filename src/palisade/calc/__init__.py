"""The calculation graph: datastore updates in, one node's dataplane intents out.

``build_graph(node_name, callbacks)`` returns a :class:`CalcGraph`. Feed it
``on_update(ResourceKey, document | None)`` for every datastore change (``None``: deleted; an
add and a modify are the same call) and call ``flush()`` when the dataplane should catch up.
It is pure, synchronous and in memory: no I/O, threads or asyncio. The agent owns the watch
loop; a dataplane driver implements :class:`DataplaneCallbacks`.

What comes out (``_intents``): one :class:`IPSetIntent` per distinct selector used by an active
rule and one :class:`NamedPortSetIntent` per (selector, named port) or Service, shared by every
rule that uses it; a :class:`PolicyIntent` / :class:`ProfileIntent` per policy or profile that
applies to at least one endpoint of this node, whose rules name sets by id; and an
:class:`EndpointIntent` per local endpoint with its ordered ingress and egress tiers
(:class:`TierChain`), then its profiles. For the VXLAN overlay (``_route_resolver``, whose
docstring describes the Node document): a :class:`TunnelIntent` for this node's VXLAN device,
a :class:`TunnelPeerIntent` per remote node and a :class:`RouteIntent` per remote IPAM block
of a ``vxlanMode: Always``/``CrossSubnet`` pool, reported to an optional
:class:`RouteCallbacks` (``build_graph(node, callbacks, routes)``).

Design note — the invariants:

- **One semantics.** Every document is compiled by the policy engine (``palisade.policy``):
  ``_documents`` builds a one-resource snapshot with ``Cluster.from_documents`` (the
  documents it depends on included), so label inheritance, namespace scoping, Kubernetes and
  admin-policy translation, tier defaults and policy order are the engine's. Service sets use
  the engine's own Service resolution. ``tests/calc`` checks the intents against
  ``PolicyEngine.evaluate`` flow by flow.
- **Incremental.** Each node recomputes only what an update touches: the endpoint calculator
  recompiles the objects that depend on the changed document; the policy resolver recomputes
  the chains of endpoints whose policy matches, policy order or tiers changed (a rule-only
  change recomputes no chain); the rule scanner moves one object's addresses in or out of the
  sets whose selector match changed (via ``palisade.selector.LabelIndex``).
- **Per node.** Chains are computed for endpoints whose ``node`` is this node; a policy or
  profile is *active*, and programmed, only while one of them uses it; a set exists only while
  an active rule uses it. Set members come from the whole cluster.
- **Fail closed.** An endpoint is *incomplete* when a document its labels come from is
  missing: a pod's Namespace; its ServiceAccount unless it is ``default`` (which Kubernetes
  creates in every namespace); a host endpoint's Profiles; or when its document does not
  compile. An incomplete local endpoint gets ``EndpointIntent(deny_all=True)`` with no
  chains or profiles, and no incomplete endpoint (nor a namespaced network set whose Namespace
  is missing) is a member of any set, since its labels are not known. Documents the engine
  rejects are treated as absent (the model validates them before they are stored).
- **Not in the normal pipeline.** Staged policies are never programmed; doNotTrack and preDNAT
  policies (host-endpoint, pre-conntrack) are left out until the dataplane has those hooks.
  Pods without addresses keep their interface and chains but have no addresses; workload
  controllers (Deployments…) produce no endpoints: only Pods do.
- **Ordering contract.** :class:`EventSequencer` merges repeated updates and flushes only what
  changed since the last flush, sets → policies → profiles → endpoints, removals in reverse,
  so a dataplane never sees a reference to something missing.

Ids: endpoints ``wep:<ns>/<pod>`` or ``hep:<name>``; policies their Calico hit part
(``np:ns/name``, ``gnp:name``, ``knp:ns/name``…); profiles their name (``kns.<ns>``,
``ksa.<ns>.<sa>``); sets ``pals``/``paln``/``palv``/``palw`` + 26 hex digits (selector, named
port, Service addresses, Service ports) — at most 30 characters, legal nftables set names. A
pod's host interface is :func:`workload_interface_name`.
"""

from palisade.naming import workload_interface_name

from ._documents import CompiledEndpoint
from ._graph import KUBERNETES_NETWORK_POLICY_KIND, CalcGraph, GraphStats, build_graph
from ._intents import (
    DataplaneCallbacks,
    EndpointIntent,
    EntityIntent,
    ICMPIntent,
    IPSetIntent,
    NamedPortSetIntent,
    PolicyIntent,
    PortsIntent,
    ProfileIntent,
    RouteCallbacks,
    RouteIntent,
    RuleIntent,
    SetIntent,
    TierChain,
    TunnelIntent,
    TunnelPeerIntent,
)
from ._route_resolver import (
    IPAM_BLOCK_KIND,
    IPPOOL_KIND,
    NODE_KIND,
    TUNNEL_ADDRESS_ANNOTATION,
    UNDERLAY_ANNOTATION,
    VXLAN_DEVICE,
    VXLAN_MAC_ANNOTATION,
    VXLAN_VNI,
    NodeInfo,
    parse_node,
)
from ._sequencer import EventSequencer

__all__ = [
    "IPAM_BLOCK_KIND",
    "IPPOOL_KIND",
    "KUBERNETES_NETWORK_POLICY_KIND",
    "NODE_KIND",
    "TUNNEL_ADDRESS_ANNOTATION",
    "UNDERLAY_ANNOTATION",
    "VXLAN_DEVICE",
    "VXLAN_MAC_ANNOTATION",
    "VXLAN_VNI",
    "CalcGraph",
    "CompiledEndpoint",
    "DataplaneCallbacks",
    "EndpointIntent",
    "EntityIntent",
    "EventSequencer",
    "GraphStats",
    "ICMPIntent",
    "IPSetIntent",
    "NamedPortSetIntent",
    "NodeInfo",
    "PolicyIntent",
    "PortsIntent",
    "ProfileIntent",
    "RouteCallbacks",
    "RouteIntent",
    "RuleIntent",
    "SetIntent",
    "TierChain",
    "TunnelIntent",
    "TunnelPeerIntent",
    "build_graph",
    "parse_node",
    "workload_interface_name",
]
