"""ResourceMirror: watch events and relists turned into the smallest graph updates."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

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


Operation = tuple[str, int]  # ("put" | "delete" | "relist" | "replay", key index or start)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "delete", "relist", "replay"]), st.integers(0, 3)),
        max_size=40,
    )
)
def test_graph_always_converges_to_the_store(operations: list[Operation]) -> None:
    """Whatever mix of writes, relists and (re)played watches, from any revision the graph has
    seen or earlier: once the graph has the latest listing or the whole history after what it
    saw, it holds exactly what the store holds."""
    keys = [ResourceKey("Pod", "prod", name) for name in "abcd"]
    store: dict[ResourceKey, StoredResource] = {}
    history: list[WatchEvent] = []
    graph: dict[ResourceKey, dict[str, Any] | None] = {}
    mirror = ResourceMirror()
    seen = 0  # the revision the graph has caught up to

    def feed(update: Update | None) -> None:
        if update is not None:
            graph[update.key] = update.document

    for action, index in operations:
        revision = len(history) + 1
        if action == "put":
            key = keys[index]
            store[key] = _stored(key, revision)
            history.append(_put(key, revision))
        elif action == "delete" and keys[index] in store:
            del store[keys[index]]
            history.append(WatchEvent("DELETE", keys[index], None, revision))
        elif action == "relist":
            for update in mirror.on_listing(sorted(store.values(), key=lambda s: s.key)):
                feed(update)
            seen = len(history)
        elif action == "replay":
            start = max(0, seen - index)  # a renewed watch may start before what it saw
            for event in history[start:]:
                feed(mirror.on_event(event))
            seen = len(history)
        if seen == len(history):
            assert {k: v for k, v in graph.items() if v is not None} == {
                key: stored.value for key, stored in store.items()
            }
