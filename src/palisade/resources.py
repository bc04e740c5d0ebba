"""How validated resources go into a store: their keys, and ``kubectl apply``-style updates.

Used by ``palisade apply`` and by the lab, so both write the same keys the same way.

Keys: a Kubernetes ``networking.k8s.io`` NetworkPolicy shares its kind name with Calico's
``projectcalico.org/v3`` NetworkPolicy, so it is stored under the group-qualified kind
:data:`KUBERNETES_NETWORK_POLICY_KIND`; every other resource under its own kind.

Updates: applying a resource replaces what the user declares (labels, annotations, spec) and
keeps what the cluster filled in that the manifest does not carry. For a Pod that is its
``status`` (the address the CNI plugin recorded) and ``spec.nodeName`` (where it was
scheduled), as ``kubectl apply`` leaves a running pod's status and node alone: re-applying a
pod manifest with new labels relabels the pod, and policy follows the new labels, without
taking the pod out of the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from palisade.calc import KUBERNETES_NETWORK_POLICY_KIND
from palisade.datastore import ResourceKey, Store

__all__ = ["KUBERNETES_NETWORK_POLICY_KIND", "apply_documents", "merge_applied", "store_key"]


def store_key(document: Mapping[str, Any]) -> ResourceKey:
    """The datastore key of a resource document."""
    key = ResourceKey.of(document)
    if document.get("kind") == "NetworkPolicy" and str(document.get("apiVersion", "")).startswith(
        "networking.k8s.io"
    ):
        return ResourceKey(KUBERNETES_NETWORK_POLICY_KIND, key.namespace, key.name)
    return key


def merge_applied(stored: Mapping[str, Any] | None, incoming: Mapping[str, Any]) -> dict[str, Any]:
    """The document to write when ``incoming`` is applied over ``stored`` (see the module)."""
    result = dict(incoming)
    if stored is None or incoming.get("kind") != "Pod":
        return result
    if "status" not in result and stored.get("status") is not None:
        result["status"] = stored["status"]
    stored_node = (stored.get("spec") or {}).get("nodeName")
    spec = dict(result.get("spec") or {})
    if stored_node and not spec.get("nodeName"):
        spec["nodeName"] = stored_node
        result["spec"] = spec
    return result


def apply_documents(
    store: Store, documents: Iterable[Mapping[str, Any]], deletes: Iterable[ResourceKey] = ()
) -> int:
    """Write ``documents`` (merged over what is stored) and delete ``deletes``, atomically;
    returns the store revision."""
    writes = []
    for document in documents:
        key = store_key(document)
        current = store.get(key) if document.get("kind") == "Pod" else None
        writes.append((key, merge_applied(current.value if current else None, document)))
    return store.apply(writes, deletes=list(deletes))
