"""The workload endpoint record: the Pod document's addresses and node, set by the plugin.

The calculation graph turns Pods into endpoints (``status.podIP``/``podIPs`` and
``spec.nodeName``), so the plugin records an attachment there rather than in a document kind
nothing reads. A Pod document that does not exist yet (the plugin run without the lab or an
API server) is created with just those fields and marked, so DEL removes it again; an
existing one is updated, and DEL takes back only what ADD put in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from palisade.datastore import ResourceKey, Store

from ._protocol import CniError, ErrorCode

ANNOTATION_CONTAINER = "palisade.io/containerID"
ANNOTATION_INTERFACE = "palisade.io/interface"
ANNOTATION_CREATED = "palisade.io/createdByCNI"
ANNOTATION_SET_NODE = "palisade.io/nodeNameSetByCNI"


def pod_key(namespace: str, name: str) -> ResourceKey:
    return ResourceKey("Pod", namespace, name)


def _mapping(document: Mapping[str, Any], field: str, key: ResourceKey) -> dict[str, Any]:
    value = document.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CniError(
            ErrorCode.DATASTORE_FAILURE,
            f"{key}: '{field}' is not a mapping; not recording the endpoint",
        )
    return value


def record_endpoint(
    store: Store,
    namespace: str,
    name: str,
    node: str,
    container_id: str,
    host_interface: str,
    ips: Sequence[IPv4Address | IPv6Address],
) -> Callable[[], None]:
    """Write the attachment into the Pod document; returns how to put it back as it was."""
    key = pod_key(namespace, name)
    stored = store.get(key)
    before = copy.deepcopy(stored.value) if stored is not None else None
    document: dict[str, Any] = (
        copy.deepcopy(stored.value)
        if stored is not None
        else {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}}
    )
    metadata = _mapping(document, "metadata", key)
    spec = _mapping(document, "spec", key)
    status = _mapping(document, "status", key)
    annotations = _mapping(metadata, "annotations", key)
    metadata.pop("resourceVersion", None)
    annotations[ANNOTATION_CONTAINER] = container_id
    annotations[ANNOTATION_INTERFACE] = host_interface
    if stored is None:
        annotations[ANNOTATION_CREATED] = "true"
    if not spec.get("nodeName"):
        spec["nodeName"] = node
        annotations[ANNOTATION_SET_NODE] = "true"
    status["podIP"] = str(ips[0])
    status["podIPs"] = [{"ip": str(ip)} for ip in ips]
    metadata["annotations"] = annotations
    document.update(metadata=metadata, spec=spec, status=status)
    store.put(key, document)

    def restore() -> None:
        if before is None:
            store.delete(key)
        else:
            before.get("metadata", {}).pop("resourceVersion", None)
            store.put(key, before)

    return restore


def endpoint_container(store: Store, namespace: str, name: str) -> str | None:
    """The container id the Pod document records as attached, if any."""
    stored = store.get(pod_key(namespace, name))
    if stored is None:
        return None
    annotations = (stored.value.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_CONTAINER)
    return str(value) if value else None


def endpoint_ips(store: Store, namespace: str, name: str) -> list[str]:
    stored = store.get(pod_key(namespace, name))
    if stored is None:
        return []
    status = stored.value.get("status") or {}
    return [str(p.get("ip")) for p in status.get("podIPs") or () if isinstance(p, dict)]


def remove_endpoint(store: Store, namespace: str, name: str, container_id: str) -> bool:
    """Take back what ADD recorded for ``container_id``; ``False`` if it recorded nothing."""
    key = pod_key(namespace, name)
    stored = store.get(key)
    if stored is None:
        return False
    document = copy.deepcopy(stored.value)
    metadata = document.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if annotations.get(ANNOTATION_CONTAINER) != container_id:
        return False
    if annotations.get(ANNOTATION_CREATED) == "true":
        store.delete(key)
        return True
    if annotations.pop(ANNOTATION_SET_NODE, None) == "true":
        (document.get("spec") or {}).pop("nodeName", None)
    for annotation in (ANNOTATION_CONTAINER, ANNOTATION_INTERFACE):
        annotations.pop(annotation, None)
    status = document.get("status") or {}
    status.pop("podIP", None)
    status.pop("podIPs", None)
    metadata.pop("resourceVersion", None)
    store.put(key, document)
    return True
