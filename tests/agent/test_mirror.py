"""ResourceMirror: watch events and relists turned into the smallest graph updates."""

from __future__ import annotations

from typing import Any

from palisade.agent import ResourceMirror, Update
from palisade.datastore import ResourceKey, StoredResource, WatchEvent

A = ResourceKey("Pod", "prod", "a")
B = ResourceKey("Pod", "prod", "b")
C = ResourceKey("Namespace", None, "prod")


def _doc(name: str, revision: int) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "resourceVersion": str(revision)}}


def _put(key: ResourceKey, revision: int) -> WatchEvent:
    return WatchEvent("PUT", key, _doc(key.name, revision), revision)


def _stored(key: ResourceKey, revision: int) -> StoredResource:
    return StoredResource(key, _doc(key.name, revision), revision)


def test_events_become_updates_and_replays_are_skipped() -> None:
    mirror = ResourceMirror()
    assert mirror.on_event(_put(A, 3)) == Update(A, _doc("a", 3))
    assert mirror.on_event(_put(A, 3)) is None  # a renewed watch replaying what it saw
    assert mirror.on_event(WatchEvent("DELETE", B, None, 4)) is None  # never known
    assert mirror.on_event(WatchEvent("DELETE", A, None, 5)) == Update(A, None)
    assert len(mirror) == 0


def test_listing_diff_deletes_vanished_keys_first_and_skips_unchanged() -> None:
    mirror = ResourceMirror()
    assert [u.key for u in mirror.on_listing([_stored(A, 2), _stored(B, 3)])] == [A, B]
    updates = mirror.on_listing([_stored(B, 3), _stored(C, 7)])
    assert updates == [Update(A, None), Update(C, _doc("prod", 7))]
    assert mirror.on_listing([_stored(B, 9), _stored(C, 7)]) == [Update(B, _doc("b", 9))]
    assert mirror.on_listing([]) == [Update(C, None), Update(B, None)]  # in key order
    assert len(mirror) == 0


def test_events_older_than_a_listing_are_replays() -> None:
    """After a relist at a newer state, the watch from the older revision replays changes the
    listing already showed; they must not take the graph back (a delete then re-put of B)."""
    mirror = ResourceMirror()
    mirror.on_listing([_stored(B, 12)])
    assert mirror.on_event(WatchEvent("DELETE", B, None, 11)) is None
    assert mirror.on_event(_put(B, 12)) is None
    assert mirror.on_event(_put(B, 13)) == Update(B, _doc("b", 13))
