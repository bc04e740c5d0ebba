"""Keys, records, events, errors and the ``Store`` protocol shared by every backend."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

# Cluster-scoped resources have no namespace. Backends that need a path segment in its place
# (etcd) use this marker; it cannot collide with a Kubernetes namespace, which is a DNS label and
# so never contains "_".
CLUSTER_SCOPE = "_cluster"


class DatastoreError(ValueError):
    """A request the datastore cannot carry out: a bad URL, key or value."""


class DatastoreUnavailable(DatastoreError):
    """The backend cannot be reached or failed; the message names the URL and the reason."""


class RevisionCompacted(DatastoreError):
    """A watch asked for changes older than the oldest the store still keeps.

    The consumer has missed changes it can no longer replay; it has to list the store again and
    watch from the revision of that list.
    """

    def __init__(self, requested_revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested_revision} has been compacted: the store keeps changes after "
            f"revision {compact_revision - 1} only; list again and watch from the current revision"
        )
        self.requested_revision = requested_revision
        self.compact_revision = compact_revision


def _check_segment(what: str, segment: str) -> None:
    if not isinstance(segment, str) or not segment:
        raise DatastoreError(f"resource key: {what} must be a non-empty string, got {segment!r}")
    if "/" in segment or "\x00" in segment:
        raise DatastoreError(f"resource key: {what} {segment!r} must not contain '/' or NUL")


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class ResourceKey:
    """The identity of a stored resource; ``namespace`` is None for cluster-scoped kinds.

    Keys order by kind, then namespace (cluster-scoped first), then name.
    """

    kind: str
    namespace: str | None
    name: str

    def __post_init__(self) -> None:
        _check_segment("kind", self.kind)
        if self.namespace is not None:
            _check_segment("namespace", self.namespace)
            if self.namespace == CLUSTER_SCOPE:
                raise DatastoreError(
                    f"resource key: namespace {CLUSTER_SCOPE!r} is reserved for cluster scope; "
                    "use namespace=None"
                )
        _check_segment("name", self.name)

    def __str__(self) -> str:
        if self.namespace is None:
            return f"{self.kind}/{self.name}"
        return f"{self.kind}/{self.namespace}/{self.name}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ResourceKey):
            return NotImplemented
        return self.sort_key() < other.sort_key()

    def sort_key(self) -> tuple[str, str, str]:
        """A tuple of strings that orders keys the way ``Store.list`` returns them."""
        return (self.kind, self.namespace or "", self.name)

    @classmethod
    def parse(cls, text: str) -> ResourceKey:
        """Read ``Kind/namespace/name`` or ``Kind/name``, the form ``str(key)`` writes."""
        parts = text.split("/")
        if len(parts) == 2:
            return cls(parts[0], None, parts[1])
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2])
        raise DatastoreError(
            f"resource key {text!r}: expected 'Kind/namespace/name' or 'Kind/name'"
        )

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> ResourceKey:
        """The key of a resource document: its ``kind``, ``metadata.namespace`` and ``.name``."""
        kind = document.get("kind")
        metadata = document.get("metadata")
        if not isinstance(kind, str) or not kind:
            raise DatastoreError("resource document has no 'kind'")
        if not isinstance(metadata, Mapping):
            raise DatastoreError(f"{kind} document has no 'metadata' mapping")
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise DatastoreError(f"{kind} document has no 'metadata.name'")
        namespace = metadata.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise DatastoreError(f"{kind}/{name}: 'metadata.namespace' must be a string")
        return cls(kind, namespace or None, name)


@dataclass(frozen=True, slots=True)
class StoredResource:
    """A resource as read back: its document and the revision that last modified it."""

    key: ResourceKey
    value: dict[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: the new document for ``PUT``, None for ``DELETE``."""

    type: Literal["PUT", "DELETE"]
    key: ResourceKey
    value: dict[str, Any] | None
    revision: int


@runtime_checkable
class Store(Protocol):
    """Resources as JSON documents under a monotonically increasing store revision.

    Every write gets a new revision, a batch written with ``apply`` shares one. ``watch`` replays
    the changes after a revision and then follows new ones, so a consumer that lists, remembers
    the revision and watches from it never misses a change, even across reconnects.
    """

    @property
    def revision(self) -> int:
        """The current store revision (0 for a new, empty store where the backend allows)."""
        ...

    def get(self, key: ResourceKey) -> StoredResource | None:
        """The resource stored under ``key``, or None."""
        ...

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[StoredResource]:
        """The resources of ``kind`` in ``namespace`` (None: any), sorted by key."""
        ...

    def put(self, key: ResourceKey, value: Mapping[str, Any]) -> int:
        """Store ``value`` under ``key``; returns the new revision."""
        ...

    def delete(self, key: ResourceKey) -> int | None:
        """Remove ``key``; returns the new revision, or None if nothing was stored there."""
        ...

    def apply(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey] = (),
    ) -> int:
        """Write a batch atomically under one new revision; returns that revision.

        Nothing is written if any part fails. A batch that changes nothing (only deletes of
        absent keys) leaves the revision as it is and returns it.
        """
        ...

    def watch(
        self,
        from_revision: int,
        *,
        kinds: Collection[str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        """Every change with a revision above ``from_revision``, in order, then new ones.

        The iterator ends ``timeout`` seconds after the call (None: never) or when the store is
        closed. Iterating raises ``RevisionCompacted`` if changes after ``from_revision`` are
        no longer kept, and ``DatastoreUnavailable`` if the backend goes away; either way the
        consumer resumes by watching again from the last revision it saw.
        """
        ...

    def close(self) -> None:
        """Release the backend's connections and end running watches."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def check_batch(
    puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]], deletes: Sequence[ResourceKey]
) -> None:
    """Refuse a batch that names a key twice, which has no single meaning (etcd rejects it)."""
    seen: set[ResourceKey] = set()
    for key in [key for key, _ in puts] + list(deletes):
        if not isinstance(key, ResourceKey):
            raise DatastoreError(f"expected a ResourceKey, got {key!r}")
        if key in seen:
            raise DatastoreError(f"batch names {key} more than once")
        seen.add(key)


def encode_value(key: ResourceKey, value: Mapping[str, Any]) -> str:
    """The JSON text stored for ``value``; raises DatastoreError if it is not JSON."""
    if not isinstance(value, Mapping):
        raise DatastoreError(f"{key}: value must be a mapping, got {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DatastoreError(f"{key}: value is not JSON-serialisable: {exc}") from exc


def decode_value(text: str | bytes, revision: int) -> dict[str, Any]:
    """The stored document with ``metadata.resourceVersion`` set to ``revision``."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise DatastoreError(f"stored value is not a JSON object: {str(text)[:80]!r}")
    metadata = value.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata["resourceVersion"] = str(revision)
    return value


class StoreBase:
    """What both backends share: ``put``, ``delete`` and ``apply`` over ``_write`` (every
    change is one batch: one transaction, one new revision), ``watch`` over ``_follow``, and
    the context-manager protocol over ``close``."""

    def _follow(
        self, from_revision: int, kinds: frozenset[str] | None, deadline: float | None
    ) -> Iterator[WatchEvent]:
        """Changes after ``from_revision`` in order, then new ones until ``deadline``."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def watch(
        self,
        from_revision: int,
        *,
        kinds: Collection[str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = None if kinds is None else frozenset(kinds)
        return self._follow(from_revision, wanted, deadline)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey],
    ) -> tuple[int, int]:
        """Apply a batch atomically; returns (revision, number of changes)."""
        raise NotImplementedError

    def put(self, key: ResourceKey, value: Mapping[str, Any]) -> int:
        return self.apply([(key, value)])

    def delete(self, key: ResourceKey) -> int | None:
        revision, changed = self._write([], [key])
        return revision if changed else None

    def apply(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey] = (),
    ) -> int:
        revision, _ = self._write(puts, deletes)
        return revision
