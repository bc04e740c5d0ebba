"""Documents → the policy engine's compiled forms, one resource at a time.

The engine compiles whole snapshots (``Cluster.from_documents``); the graph needs one endpoint,
network set, policy, tier or service at a time. Each function here builds a tiny snapshot from
the resource and the documents it depends on, so every conversion (label inheritance, namespace
scoping, Kubernetes translation) stays the engine's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from palisade.datastore import ResourceKey
from palisade.naming import workload_interface_name
from palisade.policy import BUILTIN_TIERS, POLICY_KINDS, Cluster
from palisade.policy._types import (
    CompiledPolicy,
    CompiledProfile,
    Endpoint,
    NetworkSetInfo,
    ServiceInfo,
    TierInfo,
)

Document = Mapping[str, Any]
Lookup = Callable[[ResourceKey], Document | None]

ENDPOINT_KINDS = frozenset({"Pod", "HostEndpoint"})
NETWORK_SET_KINDS = frozenset({"NetworkSet", "GlobalNetworkSet"})


DEFAULT_SERVICE_ACCOUNT = "default"


def _meta(doc: Document) -> Mapping[str, Any]:
    return doc.get("metadata") or {}


def _spec(doc: Document) -> Mapping[str, Any]:
    return doc.get("spec") or {}


def namespace_key(namespace: str) -> ResourceKey:
    return ResourceKey("Namespace", None, namespace)


def profile_key(name: str) -> ResourceKey:
    return ResourceKey("Profile", None, name)


def service_account_key(namespace: str, name: str) -> ResourceKey:
    return ResourceKey("ServiceAccount", namespace, name)


@dataclass(frozen=True, slots=True)
class CompiledEndpoint:
    """An endpoint as the engine sees it, plus what the graph needs around it.

    ``complete`` is false when a document the endpoint's labels depend on is missing (see the
    package docstring); such an endpoint is programmed deny-all and kept out of IP sets.
    """

    endpoint_id: str
    endpoint: Endpoint
    interface: str | None
    profiles: tuple[CompiledProfile, ...]
    complete: bool


def endpoint_dependencies(doc: Document) -> tuple[ResourceKey, ...]:
    """The documents an endpoint's labels and profiles are computed from."""
    meta, spec = _meta(doc), _spec(doc)
    if doc.get("kind") == "HostEndpoint":
        return tuple(profile_key(str(p)) for p in spec.get("profiles") or ())
    namespace = str(meta.get("namespace") or "default")
    keys = [namespace_key(namespace), profile_key(f"kns.{namespace}")]
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if service_account:
        keys.append(service_account_key(namespace, str(service_account)))
        keys.append(profile_key(f"ksa.{namespace}.{service_account}"))
    return tuple(keys)


def _required(doc: Document) -> tuple[ResourceKey, ...]:
    """Dependencies whose absence makes the endpoint incomplete."""
    meta, spec = _meta(doc), _spec(doc)
    if doc.get("kind") == "HostEndpoint":
        return endpoint_dependencies(doc)
    namespace = str(meta.get("namespace") or "default")
    keys = [namespace_key(namespace)]
    service_account = spec.get("serviceAccountName") or spec.get("serviceAccount")
    if service_account and service_account != DEFAULT_SERVICE_ACCOUNT:
        keys.append(service_account_key(namespace, str(service_account)))
    return tuple(keys)


def _has_addresses(doc: Document) -> bool:
    status = doc.get("status") or {}
    return bool(status.get("podIP") or status.get("podIPs"))


def compile_endpoint(doc: Document, lookup: Lookup) -> CompiledEndpoint | None:
    """A Pod or HostEndpoint document with its dependencies; None when it is no endpoint
    (host-network or finished pods). Raises what the engine raises on malformed input."""
    dependencies = [d for d in (lookup(k) for k in endpoint_dependencies(doc)) if d is not None]
    cluster = Cluster.from_documents([*dependencies, doc])
    if not cluster.endpoints:
        return None
    endpoint = cluster.endpoints[0]
    if doc.get("kind") == "HostEndpoint":
        endpoint_id = f"hep:{endpoint.name}"
        interface_name = _spec(doc).get("interfaceName")
        interface = str(interface_name) if interface_name and interface_name != "*" else None
    else:
        endpoint_id = f"wep:{endpoint.namespace}/{endpoint.name}"
        interface = workload_interface_name(str(endpoint.namespace), endpoint.name)
        if not _has_addresses(doc):
            # The snapshot compiler gives address-less pods offline addresses; a dataplane
            # must only ever see the pod's real ones.
            endpoint = dataclasses.replace(endpoint, ips=())
    profiles = tuple(cluster.profiles[p] for p in endpoint.profiles if p in cluster.profiles)
    complete = all(lookup(key) is not None for key in _required(doc))
    return CompiledEndpoint(endpoint_id, endpoint, interface, profiles, complete)


def network_set_dependencies(doc: Document) -> tuple[ResourceKey, ...]:
    if doc.get("kind") != "NetworkSet":
        return ()
    namespace = str(_meta(doc).get("namespace") or "default")
    return (namespace_key(namespace), profile_key(f"kns.{namespace}"))


def compile_network_set(doc: Document, lookup: Lookup) -> tuple[NetworkSetInfo, bool]:
    """The network set with its effective labels, and whether its namespace is known."""
    keys = network_set_dependencies(doc)
    dependencies = [d for d in (lookup(k) for k in keys) if d is not None]
    cluster = Cluster.from_documents([*dependencies, doc])
    complete = not keys or lookup(keys[0]) is not None
    return cluster.network_sets[0], complete


def is_policy_document(doc: Document) -> bool:
    return str(doc.get("kind")) in POLICY_KINDS


def compile_policy(doc: Document) -> CompiledPolicy | None:
    """The engine's compiled policy, or None when the engine rejects or ignores it."""
    cluster = Cluster.from_documents([doc])
    return cluster.policies[0] if cluster.policies else None


def compile_tier(doc: Document) -> TierInfo:
    name = str(_meta(doc).get("name"))
    return Cluster.from_documents([doc]).tier(name)


def builtin_tier(name: str) -> TierInfo | None:
    return BUILTIN_TIERS.get(name)


def compile_service(doc: Document) -> ServiceInfo:
    return Cluster.from_documents([doc]).services[0]
