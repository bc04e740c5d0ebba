"""Palisade's datastore: resources as JSON documents under store revisions, with watch.

A ``Store`` keeps each resource document (the full ``apiVersion``/``kind``/``metadata``/``spec``
mapping as a user wrote it, after validation) under a ``ResourceKey`` of kind, namespace and
name. Every write gets a new, strictly increasing store revision; ``apply`` writes a batch
atomically under one revision; ``watch`` replays every change after a revision and then follows
new ones, so a consumer that remembers the last revision it saw resumes after a disconnect
without losing a change. Reads put the revision that last modified a resource into its
``metadata.resourceVersion``.

Two backends, chosen by URL with ``open_store``:

- ``sqlite:///path.db`` (``sqlite:////abs/path.db``, ``sqlite://:memory:``): the embedded
  default, one WAL-mode file that several processes can share;
- ``etcd://host:port[/prefix]``: etcd v3, for high availability; revisions are etcd's own.

The datastore knows nothing of resource schemas: validation belongs to ``palisade.model``, and
turning changes into dataplane state belongs to ``palisade.calc``.
"""

from ._etcd import EtcdStore
from ._sqlite import SqliteStore
from ._types import (
    DatastoreError,
    DatastoreUnavailable,
    ResourceKey,
    RevisionCompacted,
    Store,
    StoredResource,
    WatchEvent,
)
from ._url import open_store

__all__ = [
    "DatastoreError",
    "DatastoreUnavailable",
    "EtcdStore",
    "ResourceKey",
    "RevisionCompacted",
    "SqliteStore",
    "Store",
    "StoredResource",
    "WatchEvent",
    "open_store",
]
