"""What the agent has told the calc graph, so a relist can be turned into the smallest update.

Sans-I/O: :class:`ResourceMirror` takes watch events and listings and returns the
``(key, document | None)`` updates the graph needs; it never reads the store itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from palisade.datastore import ResourceKey, StoredResource, WatchEvent


@dataclass(frozen=True, slots=True)
class Update:
    """One input for ``CalcGraph.on_update``: the resource's document, or None if it is gone."""

    key: ResourceKey
    document: dict[str, Any] | None


class ResourceMirror:
    """The revision of every resource the graph currently holds, keyed by resource.

    A resource's revision is the store revision that last modified it, so an unchanged
    revision means an unchanged document and a relist can skip it.
    """

    def __init__(self) -> None:
        self.resource_revisions: dict[ResourceKey, int] = {}

    def __len__(self) -> int:
        return len(self.resource_revisions)

    def on_event(self, event: WatchEvent) -> Update | None:
        """The update a watch event makes, or None if the graph already has it (a replay)."""
        known = self.resource_revisions.get(event.key)
        if known is not None and known >= event.revision:
            return None  # a replay of a change that a later listing already showed
        if event.value is None:
            if known is None:
                return None
            del self.resource_revisions[event.key]
            return Update(event.key, None)
        self.resource_revisions[event.key] = event.revision
        return Update(event.key, event.value)

    def on_listing(self, listing: Iterable[StoredResource]) -> list[Update]:
        """The updates that turn what the graph holds into ``listing``, the whole store.

        Keys that vanished come first, as deletions, then new and changed resources; a resource
        whose revision is unchanged gives no update.
        """
        listed = {stored.key: stored for stored in listing}
        updates = [
            Update(key, None) for key in sorted(self.resource_revisions) if key not in listed
        ]
        for key in [update.key for update in updates]:
            del self.resource_revisions[key]
        for key in sorted(listed):
            stored = listed[key]
            if self.resource_revisions.get(key) != stored.revision:
                self.resource_revisions[key] = stored.revision
                updates.append(Update(key, stored.value))
        return updates
