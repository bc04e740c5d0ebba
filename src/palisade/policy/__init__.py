"""The policy engine: Calico and Kubernetes policy semantics, exact and explained.

Every part of Palisade asks this package the same question — is this flow allowed, and by which
tier, policy and rule? ``PolicyEngine.evaluate`` answers one flow with its full trace (the
reference semantics, spec 4); ``reachability_matrix`` and ``batch_verdicts`` answer many flows at
once with the same semantics, vectorised; ``FlowTracer`` gives a node's flow logs what the
kernel cannot (the pending trace of staged policies, the destination's Service). Resources come
in as validated documents (``palisade.model``) and are compiled by ``Cluster.from_documents``,
which applies Calico's conversions (namespace scoping, Kubernetes → Calico translation, label
inheritance).

Semantics follow Calico v3.32 (policy names independent of tiers, ``kind:[ns/]name`` hit
strings, ClusterNetworkPolicy tiers); older forms are accepted on input.
"""

from ._batch import Connectivity, FlowBatch, batch_verdicts, connectivity
from ._cluster import BUILTIN_TIERS, POLICY_KINDS, Cluster
from ._evaluate import PROFILE_TIER, PolicyEngine, TierPolicies
from ._flowtrace import STAGED_POLICY_KINDS, FlowTracer, ServiceHit, live_documents
from ._matrix import Matrix, Probe, reachability_matrix
from ._translate import TranslationError
from ._types import (
    Action,
    CompiledPolicy,
    CompiledRule,
    Direction,
    DirectionResult,
    Endpoint,
    Flow,
    Hit,
    Outcome,
    PolicyKind,
    TraceStep,
    Verdict,
    protocol_name,
    protocol_number,
)

__all__ = [
    "BUILTIN_TIERS",
    "POLICY_KINDS",
    "PROFILE_TIER",
    "STAGED_POLICY_KINDS",
    "Action",
    "Cluster",
    "CompiledPolicy",
    "CompiledRule",
    "Connectivity",
    "Direction",
    "DirectionResult",
    "Endpoint",
    "Flow",
    "FlowBatch",
    "FlowTracer",
    "Hit",
    "Matrix",
    "Outcome",
    "PolicyEngine",
    "PolicyKind",
    "Probe",
    "ServiceHit",
    "TierPolicies",
    "TraceStep",
    "TranslationError",
    "Verdict",
    "batch_verdicts",
    "connectivity",
    "live_documents",
    "protocol_name",
    "protocol_number",
    "reachability_matrix",
]
