"""The Store contract, run against every backend (SQLite file and a real etcd)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from palisade.datastore import (
    DatastoreError,
    ResourceKey,
    RevisionCompacted,
    Store,
    WatchEvent,
    open_store,
)

pytestmark = pytest.mark.timeout(60)


def policy(name: str, namespace: str | None = "default", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy" if namespace else "GlobalNetworkPolicy",
        "metadata": metadata,
        "spec": spec or {"selector": "all()"},
    }


def put_doc(store: Store, document: dict[str, Any]) -> int:
    return store.put(ResourceKey.of(document), document)


class Writer:
    """Runs writes on a thread after a delay, and re-raises its failure on join."""

    def __init__(self, write: Callable[[], object], delay: float = 0.2) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            time.sleep(delay)
            try:
                write()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error


def take(events: Iterator[WatchEvent], count: int) -> list[WatchEvent]:
    """The next ``count`` events; then closes the watch, as a consumer that stops should."""
    try:
        return list(itertools.islice(events, count))
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


# -- put, get, list, delete --------------------------------------------------------------


def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.revision >= 0


def test_put_then_get_returns_document_with_resource_version(store: Store) -> None:
    document = policy("allow-dns", spec={"order": 10, "types": ["Egress"], "note": "ünïcode"})
    key = ResourceKey.of(document)

    revision = store.put(key, document)

    stored = store.get(key)
    assert stored is not None
    assert stored.key == key
    assert stored.revision == revision == store.revision
    expected = {**document, "metadata": {**document["metadata"], "resourceVersion": str(revision)}}
    assert stored.value == expected
    assert "resourceVersion" not in document["metadata"], "put must not change its argument"


def test_get_absent_key_is_none(store: Store) -> None:
    assert store.get(ResourceKey("NetworkPolicy", "default", "missing")) is None


def test_put_overwrites_and_moves_revision(store: Store) -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    first = store.put(key, policy("p", order=1))
    second = store.put(key, policy("p", order=2))

    stored = store.get(key)
    assert second > first
    assert stored is not None
    assert stored.revision == second
    assert stored.value["spec"] == {"order": 2}


def test_read_values_are_private_copies(store: Store) -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    store.put(key, policy("p"))
    first = store.get(key)
    assert first is not None
    first.value["spec"]["selector"] = "changed"
    again = store.get(key)
    assert again is not None
    assert again.value["spec"]["selector"] == "all()"


def test_list_sorts_by_key_and_filters(store: Store) -> None:
    documents = [
        policy("b", "prod"),
        policy("a", "prod"),
        policy("z", "dev"),
        policy("global-1", None),
        {"kind": "NetworkPolicyX", "metadata": {"name": "a", "namespace": "prod"}},
        {"kind": "HostEndpoint", "metadata": {"name": "node-1"}},
    ]
    for document in documents:
        put_doc(store, document)

    assert [str(item.key) for item in store.list()] == [
        "GlobalNetworkPolicy/global-1",
        "HostEndpoint/node-1",
        "NetworkPolicy/dev/z",
        "NetworkPolicy/prod/a",
        "NetworkPolicy/prod/b",
        "NetworkPolicyX/prod/a",
    ]
    assert [str(i.key) for i in store.list("NetworkPolicy")] == [
        "NetworkPolicy/dev/z",
        "NetworkPolicy/prod/a",
        "NetworkPolicy/prod/b",
    ]
    assert [str(i.key) for i in store.list("NetworkPolicy", "prod")] == [
        "NetworkPolicy/prod/a",
        "NetworkPolicy/prod/b",
    ]
    assert [str(i.key) for i in store.list(namespace="prod")] == [
        "NetworkPolicy/prod/a",
        "NetworkPolicy/prod/b",
        "NetworkPolicyX/prod/a",
    ]
    assert store.list("Nothing") == []
    for item in store.list():
        assert item.value["metadata"]["resourceVersion"] == str(item.revision)


def test_list_returns_cluster_scoped_and_namespaced_of_one_kind(store: Store) -> None:
    store.put(ResourceKey("Thing", None, "cluster-wide"), {"kind": "Thing"})
    store.put(ResourceKey("Thing", "ns", "local"), {"kind": "Thing"})
    assert [str(i.key) for i in store.list("Thing")] == ["Thing/cluster-wide", "Thing/ns/local"]
    assert [str(i.key) for i in store.list("Thing", "ns")] == ["Thing/ns/local"]


def test_delete(store: Store) -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    put_revision = store.put(key, policy("p"))

    delete_revision = store.delete(key)

    assert delete_revision is not None
    assert delete_revision > put_revision
    assert store.get(key) is None
    assert store.list() == []
    assert store.revision == delete_revision


def test_delete_absent_key_returns_none_and_keeps_revision(store: Store) -> None:
    store.put(ResourceKey("NetworkPolicy", "default", "other"), policy("other"))
    before = store.revision
    assert store.delete(ResourceKey("NetworkPolicy", "default", "missing")) is None
    assert store.revision == before


def test_revisions_increase_strictly(store: Store) -> None:
    start = store.revision
    key = ResourceKey("NetworkPolicy", "default", "p")
    revisions = [store.put(key, policy("p", order=n)) for n in range(5)]
    deleted = store.delete(key)
    assert deleted is not None
    revisions.append(deleted)
    revisions.append(store.apply([(key, policy("p"))]))

    assert revisions[0] > start
    assert all(later > earlier for earlier, later in itertools.pairwise(revisions))
    assert store.revision == revisions[-1]


# -- apply ---------------------------------------------------------------------------------


def test_apply_writes_a_batch_under_one_revision(store: Store) -> None:
    old = ResourceKey("NetworkPolicy", "default", "old")
    store.put(old, policy("old"))
    batch = [policy(f"p{n}") for n in range(20)] + [policy("g", None)]

    revision = store.apply([(ResourceKey.of(d), d) for d in batch], deletes=[old])

    assert store.revision == revision
    listed = store.list()
    assert sorted(str(i.key) for i in listed) == sorted(str(ResourceKey.of(d)) for d in batch)
    assert {item.revision for item in listed} == {revision}
    assert store.get(old) is None


def test_apply_failing_midway_writes_nothing(store: Store) -> None:
    kept = ResourceKey("NetworkPolicy", "default", "kept")
    store.put(kept, policy("kept"))
    before_revision = store.revision
    before = store.list()
    puts = [
        (ResourceKey("NetworkPolicy", "default", "first"), policy("first")),
        (ResourceKey("NetworkPolicy", "default", "bad"), {"spec": {"when": object()}}),
        (ResourceKey("NetworkPolicy", "default", "last"), policy("last")),
    ]

    with pytest.raises(DatastoreError, match=r"NetworkPolicy/default/bad.*JSON"):
        store.apply(puts, deletes=[kept])

    assert store.revision == before_revision
    assert store.list() == before


def test_apply_rejects_nan_as_not_json(store: Store) -> None:
    with pytest.raises(DatastoreError, match="JSON"):
        store.put(ResourceKey("Thing", None, "nan"), {"value": float("nan")})
    assert store.list() == []


def test_apply_rejects_a_key_named_twice(store: Store) -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    before = store.revision
    with pytest.raises(DatastoreError, match="more than once"):
        store.apply([(key, policy("p")), (key, policy("p", order=2))])
    with pytest.raises(DatastoreError, match="more than once"):
        store.apply([(key, policy("p"))], deletes=[key])
    assert store.revision == before
    assert store.get(key) is None


def test_apply_that_changes_nothing_keeps_revision(store: Store) -> None:
    store.put(ResourceKey("Thing", None, "a"), {"kind": "Thing"})
    before = store.revision
    assert store.apply([]) == before
    assert store.apply([], deletes=[ResourceKey("Thing", None, "absent")]) == before
    assert store.revision == before


# -- watch ---------------------------------------------------------------------------------


def test_watch_replays_history_then_streams_new_changes(store: Store) -> None:
    start = store.revision
    a, b = ResourceKey("NetworkPolicy", "default", "a"), ResourceKey("Thing", None, "b")
    history = [store.put(a, policy("a")), store.put(b, {"n": 1})]
    deleted = store.delete(a)
    assert deleted is not None
    history.append(deleted)

    def write_more() -> None:
        store.put(b, {"n": 2})
        store.apply([(a, policy("a", order=3)), (ResourceKey("Thing", None, "c"), {"n": 3})])

    writer = Writer(write_more)
    events = take(store.watch(start, timeout=20), 6)
    writer.join()

    assert [(e.type, str(e.key)) for e in events] == [
        ("PUT", "NetworkPolicy/default/a"),
        ("PUT", "Thing/b"),
        ("DELETE", "NetworkPolicy/default/a"),
        ("PUT", "Thing/b"),
        ("PUT", "NetworkPolicy/default/a"),
        ("PUT", "Thing/c"),
    ]
    assert [e.revision for e in events[:3]] == history
    assert events[3].revision < events[4].revision == events[5].revision == store.revision
    assert events[2].value is None
    assert events[3].value == {"n": 2, "metadata": {"resourceVersion": str(events[3].revision)}}


def test_watch_starts_after_the_given_revision(store: Store) -> None:
    key = ResourceKey("Thing", None, "t")
    revisions = [store.put(key, {"n": n}) for n in range(4)]

    events = list(store.watch(revisions[1], timeout=0.5))

    assert [e.revision for e in events] == revisions[2:]
    assert [e.value["n"] for e in events if e.value] == [2, 3]


def test_watch_from_current_revision_sees_only_new_changes(store: Store) -> None:
    store.put(ResourceKey("Thing", None, "before"), {})
    now = store.revision
    writer = Writer(lambda: store.put(ResourceKey("Thing", None, "after"), {}))
    events = take(store.watch(now, timeout=20), 1)
    writer.join()
    assert [str(e.key) for e in events] == ["Thing/after"]


def test_watch_filters_by_kind(store: Store) -> None:
    start = store.revision
    store.put(ResourceKey("Thing", None, "t1"), {})
    store.put(ResourceKey("Other", None, "o1"), {})
    store.put(ResourceKey("Thing", "ns", "t2"), {})
    store.put(ResourceKey("Third", None, "x"), {})

    only_things = list(store.watch(start, kinds={"Thing"}, timeout=0.5))
    two_kinds = list(store.watch(start, kinds=["Thing", "Third"], timeout=0.5))

    assert [str(e.key) for e in only_things] == ["Thing/t1", "Thing/ns/t2"]
    assert [str(e.key) for e in two_kinds] == ["Thing/t1", "Thing/ns/t2", "Third/x"]


def test_watch_ends_at_timeout(store: Store) -> None:
    began = time.monotonic()
    assert list(store.watch(store.revision, timeout=0.3)) == []
    elapsed = time.monotonic() - began
    assert 0.25 <= elapsed < 5


def test_watch_resumes_from_last_seen_revision_after_restart(store_url: str) -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    with open_store(store_url) as first:
        start = first.revision
        for n in range(3):
            first.put(key, policy("p", order=n))
        seen = take(first.watch(start, timeout=10), 2)
    last_seen = seen[-1].revision

    with open_store(store_url) as writer:
        writer.put(key, policy("p", order=3))
        writer.delete(key)

    with open_store(store_url) as resumed:
        rest = list(resumed.watch(last_seen, timeout=0.5))

    orders = [e.value["spec"]["order"] if e.value else None for e in seen + rest]
    assert orders == [0, 1, 2, 3, None]
    assert [e.type for e in rest] == ["PUT", "PUT", "DELETE"]


def test_watch_of_compacted_history_raises(store: Store) -> None:
    key = ResourceKey("Thing", None, "t")
    revisions = [store.put(key, {"n": n}) for n in range(5)]
    store.compact(revisions[3])  # type: ignore[attr-defined]

    with pytest.raises(RevisionCompacted) as raised:
        list(store.watch(revisions[0], timeout=5))
    assert raised.value.compact_revision == revisions[3]

    # From the revision just below the compaction point, nothing has been lost.
    events = list(store.watch(revisions[3] - 1, timeout=0.5))
    assert [e.revision for e in events] == revisions[3:]


def test_close_ends_a_running_watch(store_url: str) -> None:
    store = open_store(store_url)
    received: list[WatchEvent] = []
    ready = threading.Event()

    start = store.revision

    def consume() -> None:
        for event in store.watch(start):
            received.append(event)
            ready.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        store.put(ResourceKey("Thing", None, "t"), {})
        assert ready.wait(10)
    finally:
        store.close()
        consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert [str(e.key) for e in received] == ["Thing/t"]


def test_closed_store_refuses_requests(store_url: str) -> None:
    store = open_store(store_url)
    store.close()
    store.close()  # idempotent
    with pytest.raises(DatastoreError, match="closed"):
        store.get(ResourceKey("Thing", None, "t"))
    with pytest.raises(DatastoreError, match="closed"):
        store.put(ResourceKey("Thing", None, "t"), {})
    assert list(store.watch(0, timeout=0.1)) == []
