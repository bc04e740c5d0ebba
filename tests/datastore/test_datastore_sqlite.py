"""The SQLite backend: revisions from 0, WAL, several handles and processes on one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from palisade.datastore import (
    DatastoreUnavailable,
    ResourceKey,
    SqliteStore,
    WatchEvent,
    _sqlite,
    open_store,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'palisade.db'}"


def test_new_store_starts_at_revision_zero_and_counts_by_one(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.revision == 0
        assert store.list() == []
        assert list(store.watch(0, timeout=0)) == []
        revisions = [store.put(ResourceKey("Thing", None, f"t{n}"), {}) for n in range(3)]
        assert revisions == [1, 2, 3]


def test_file_is_in_wal_mode(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url) as store:
        store.put(ResourceKey("Thing", None, "t"), {})
        raw = sqlite3.connect(tmp_path / "palisade.db")
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            raw.close()


def test_relative_path_is_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.db") as store:
        store.put(ResourceKey("Thing", None, "t"), {})
    assert (tmp_path / "relative.db").is_file()


def test_two_handles_on_one_file_see_each_others_writes(db_url: str) -> None:
    with open_store(db_url) as first, open_store(db_url) as second:
        a = first.put(ResourceKey("Thing", None, "from-first"), {"by": 1})
        b = second.put(ResourceKey("Thing", None, "from-second"), {"by": 2})
        assert b == a + 1
        assert first.revision == second.revision == b
        assert [str(i.key) for i in first.list()] == ["Thing/from-first", "Thing/from-second"]
        assert second.get(ResourceKey("Thing", None, "from-first")) is not None


def test_watch_sees_writes_made_through_another_handle(db_url: str) -> None:
    with open_store(db_url) as watcher, open_store(db_url) as writer:
        start = watcher.revision
        received: list[WatchEvent] = []

        def consume() -> None:
            for event in watcher.watch(start, timeout=20):
                received.append(event)
                if len(received) == 3:
                    return

        consumer = threading.Thread(target=consume)
        consumer.start()
        for n in range(3):
            writer.put(ResourceKey("Thing", None, f"t{n}"), {"n": n})
        consumer.join(timeout=30)
        assert not consumer.is_alive()
        assert [e.revision for e in received] == [1, 2, 3]


def test_writers_in_separate_processes_share_one_revision_sequence(db_url: str) -> None:
    script = textwrap.dedent(
        f"""
        from palisade.datastore import ResourceKey, open_store
        with open_store({db_url!r}) as store:
            for n in range(40):
                store.put(ResourceKey("Thing", "child", f"t{{n}}"), {{"n": n}})
        """
    )
    with open_store(db_url) as store:
        child = subprocess.Popen([sys.executable, "-c", script])
        try:
            parent_revisions = [
                store.put(ResourceKey("Thing", "parent", f"t{n}"), {"n": n}) for n in range(40)
            ]
        finally:
            assert child.wait(timeout=60) == 0
        assert store.revision == 80
        assert len(store.list()) == 80
        events = list(store.watch(0, timeout=0))
        assert [e.revision for e in events] == list(range(1, 81))
        assert set(parent_revisions) <= {e.revision for e in events}


def test_watch_pages_through_a_long_history(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "_PAGE_SIZE", 4)
    with open_store(db_url) as store:
        big_batch = [(ResourceKey("Thing", None, f"b{n:02}"), {"n": n}) for n in range(10)]
        revisions = [store.put(ResourceKey("Thing", None, "single"), {"n": n}) for n in range(3)]
        batch_revision = store.apply(big_batch)
        revisions += [store.put(ResourceKey("Other", None, f"o{n}"), {}) for n in range(5)]

        events = list(store.watch(0, timeout=0))
        things = list(store.watch(0, kinds={"Thing"}, timeout=0))

    expected = revisions[:3] + [batch_revision] * 10 + revisions[3:]
    assert [e.revision for e in events] == expected
    assert [str(e.key) for e in events[3:13]] == [f"Thing/b{n:02}" for n in range(10)]
    assert [e.revision for e in things] == expected[:13]


def test_compaction_keeps_later_history(db_url: str) -> None:
    with open_store(db_url) as store:
        assert isinstance(store, SqliteStore)
        for n in range(6):
            store.put(ResourceKey("Thing", None, "t"), {"n": n})
        store.compact(4)
        store.compact(2)  # already compacted further: nothing to do
        assert [e.revision for e in store.watch(3, timeout=0)] == [4, 5, 6]
        with pytest.raises(ValueError, match="store is at 6"):
            store.compact(7)


def test_unopenable_file_is_unavailable_with_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'state.db'}"
    with pytest.raises(DatastoreUnavailable, match="no-such-dir") as raised:
        open_store(url)
    assert url in str(raised.value)


def test_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatastoreUnavailable, match="not a database"):
        open_store(f"sqlite:///{path}")


def test_database_from_a_newer_schema_is_refused(db_url: str, tmp_path: Path) -> None:
    open_store(db_url).close()
    raw = sqlite3.connect(tmp_path / "palisade.db")
    try:
        raw.execute("PRAGMA user_version = 99")
        raw.commit()
    finally:
        raw.close()
    with pytest.raises(ValueError, match="newer Palisade"):
        open_store(db_url)
