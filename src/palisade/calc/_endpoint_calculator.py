"""The endpoint calculator node: Pod, HostEndpoint and network-set documents → compiled objects.

An endpoint's effective labels depend on other documents (its Namespace, ServiceAccount and
profiles); a network set's on its Namespace. The calculator keeps the two-way map between
objects and the documents they depend on (``dependency_to_objects`` / ``object_to_dependencies``)
so that a Namespace change recompiles exactly the pods and network sets in that namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from palisade.datastore import ResourceKey
from palisade.policy._types import Endpoint, NetworkSetInfo

from ._documents import (
    ENDPOINT_KINDS,
    NETWORK_SET_KINDS,
    CompiledEndpoint,
    Document,
    compile_endpoint,
    compile_network_set,
    endpoint_dependencies,
    network_set_dependencies,
)

DEPENDENCY_KINDS = frozenset({"Namespace", "ServiceAccount", "Profile"})


class EndpointListener(Protocol):
    def on_endpoint_update(self, endpoint_id: str, endpoint: CompiledEndpoint | None) -> None: ...

    def on_network_set_update(
        self, network_set_id: str, network_set: NetworkSetInfo | None, complete: bool
    ) -> None: ...


def network_set_id(key: ResourceKey) -> str:
    return f"ns:{key.namespace}/{key.name}" if key.namespace else f"gns:{key.name}"


def _broken_endpoint(doc: Document) -> CompiledEndpoint:
    """A document the engine cannot compile still names an endpoint that must fail closed."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(meta.get("name"))
    if doc.get("kind") == "HostEndpoint":
        node = spec.get("node")
        endpoint = Endpoint("hep", None, name, (), (), node=str(node) if node else None)
        return CompiledEndpoint(f"hep:{name}", endpoint, None, (), complete=False)
    namespace = str(meta.get("namespace") or "default")
    node = spec.get("nodeName")
    endpoint = Endpoint("wep", namespace, name, (), (), node=str(node) if node else None)
    return CompiledEndpoint(f"wep:{namespace}/{name}", endpoint, None, (), complete=False)


class EndpointCalculator:
    def __init__(
        self,
        documents: Mapping[ResourceKey, Document],
        listeners: Sequence[EndpointListener],
    ) -> None:
        self._documents = documents
        self._listeners = listeners
        self.dependency_to_objects: dict[ResourceKey, set[ResourceKey]] = {}
        self.object_to_dependencies: dict[ResourceKey, tuple[ResourceKey, ...]] = {}
        self._endpoints: dict[ResourceKey, CompiledEndpoint] = {}
        self._network_sets: dict[ResourceKey, tuple[NetworkSetInfo, bool]] = {}
        self.recomputations = 0

    def on_update(self, key: ResourceKey) -> None:
        """``key``'s document (already stored) changed or went away."""
        affected = set(self.dependency_to_objects.get(key, ()))
        if key.kind in ENDPOINT_KINDS or key.kind in NETWORK_SET_KINDS:
            affected.add(key)
        for object_key in sorted(affected):
            self._recompute(object_key)

    def _set_dependencies(self, key: ResourceKey, dependencies: tuple[ResourceKey, ...]) -> None:
        for old in self.object_to_dependencies.pop(key, ()):
            dependents = self.dependency_to_objects[old]
            dependents.discard(key)
            if not dependents:
                del self.dependency_to_objects[old]
        if dependencies:
            self.object_to_dependencies[key] = dependencies
            for new in dependencies:
                self.dependency_to_objects.setdefault(new, set()).add(key)

    def _recompute(self, key: ResourceKey) -> None:
        self.recomputations += 1
        doc = self._documents.get(key)
        lookup: Callable[[ResourceKey], Document | None] = self._documents.get
        if key.kind in ENDPOINT_KINDS:
            self._set_dependencies(key, endpoint_dependencies(doc) if doc is not None else ())
            endpoint: CompiledEndpoint | None = None
            if doc is not None:
                try:
                    endpoint = compile_endpoint(doc, lookup)
                except (ValueError, KeyError, TypeError):
                    endpoint = _broken_endpoint(doc)
            self._publish_endpoint(key, endpoint)
        else:
            self._set_dependencies(key, network_set_dependencies(doc) if doc is not None else ())
            compiled = compile_network_set(doc, lookup) if doc is not None else None
            old = self._network_sets.get(key)
            if compiled == old:
                return
            if compiled is None:
                del self._network_sets[key]
            else:
                self._network_sets[key] = compiled
            for listener in self._listeners:
                if compiled is None:
                    listener.on_network_set_update(network_set_id(key), None, False)
                else:
                    listener.on_network_set_update(network_set_id(key), *compiled)

    def _publish_endpoint(self, key: ResourceKey, endpoint: CompiledEndpoint | None) -> None:
        old = self._endpoints.get(key)
        if endpoint == old:
            return
        if old is not None and (endpoint is None or endpoint.endpoint_id != old.endpoint_id):
            del self._endpoints[key]
            for listener in self._listeners:
                listener.on_endpoint_update(old.endpoint_id, None)
        if endpoint is not None:
            self._endpoints[key] = endpoint
            for listener in self._listeners:
                listener.on_endpoint_update(endpoint.endpoint_id, endpoint)
