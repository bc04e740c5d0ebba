"""The embedded backend: one SQLite file in WAL mode, shared safely between processes.

Tables:

- ``resources``: the current document per key and the revision that last wrote it;
- ``changelog``: one row per change, the history ``watch`` replays and polls;
- ``meta``: the store ``revision`` (the sequence every write transaction advances by one) and
  ``compact_revision`` (changelog rows below it have been dropped).

Every write is one ``BEGIN IMMEDIATE`` transaction, so writers in different processes queue on
SQLite's lock and revisions stay dense and ordered. Watchers poll the changelog through its
revision index; watchers in the writing process are also woken at once through a condition.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

from ._types import (
    DatastoreError,
    DatastoreUnavailable,
    ResourceKey,
    RevisionCompacted,
    StoreBase,
    StoredResource,
    WatchEvent,
    check_batch,
    decode_value,
    encode_value,
)

MEMORY = ":memory:"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);
CREATE TABLE IF NOT EXISTS resources (
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,  -- '' for cluster-scoped resources
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changelog (
    id        INTEGER PRIMARY KEY,
    revision  INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     TEXT  -- NULL for a delete
);
CREATE INDEX IF NOT EXISTS changelog_by_revision ON changelog (revision, id);
"""

# How often a waiting watcher looks for commits made by other connections or processes; one
# indexed lookup of a single row, so a short interval costs little.
POLL_INTERVAL = 0.01  # 100 indexed one-row lookups a second: ~0.5 % of a core per watcher
# Changelog rows fetched per read; a watcher never holds the connection while its consumer runs.
_PAGE_SIZE = 512
# How long a writer waits for another process's write transaction before giving up.
_BUSY_TIMEOUT = 10.0


class _Change(NamedTuple):
    revision: int
    key: ResourceKey
    value: str | None


class _Page(NamedTuple):
    changes: list[_Change]
    position: int  # every change with a revision up to here has been read


def _key_of(kind: str, namespace: str, name: str) -> ResourceKey:
    return ResourceKey(kind, namespace or None, name)


class SqliteStore(StoreBase):
    """A ``Store`` in one SQLite file (or in memory, for tests)."""

    def __init__(self, path: str, *, url: str | None = None) -> None:
        self._url = url or f"sqlite:///{path}"
        self._lock = threading.Lock()
        # Local writers bump ``_writes`` and notify; local watchers wait on it between polls.
        self._changed = threading.Condition(self._lock)
        self._writes = 0
        self._closed = False
        try:
            self._db = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=OFF")
            with self._transaction(immediate=True):
                (version,) = self._db.execute("PRAGMA user_version").fetchone()
                if version > _SCHEMA_VERSION:
                    raise DatastoreError(
                        f"{self._url}: written by a newer Palisade (schema {version}, "
                        f"this one knows {_SCHEMA_VERSION})"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unavailable(exc) from None
            raise

    # -- helpers --------------------------------------------------------------------------

    def _unavailable(self, exc: sqlite3.Error) -> DatastoreUnavailable:
        return DatastoreUnavailable(f"SQLite datastore {self._url} failed: {exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise DatastoreError(f"{self._url}: the store is closed")

    @contextmanager
    def _transaction(self, *, immediate: bool = False) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers never both read the same
        # revision; a plain BEGIN gives readers one consistent snapshot of several tables.
        self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, name: str) -> int:
        (value,) = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(value)

    # -- reads ----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        with self._lock:
            self._check_open()
            try:
                return self._meta("revision")
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None

    def get(self, key: ResourceKey) -> StoredResource | None:
        with self._lock:
            self._check_open()
            try:
                row = self._db.execute(
                    "SELECT value, revision FROM resources"
                    " WHERE kind = ? AND namespace = ? AND name = ?",
                    (key.kind, key.namespace or "", key.name),
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None
        if row is None:
            return None
        value, revision = row
        return StoredResource(key, decode_value(value, revision), revision)

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[StoredResource]:
        where: list[str] = []
        params: list[str] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if namespace is not None:
            where.append("namespace = ?")
            params.append(namespace)
        query = "SELECT kind, namespace, name, value, revision FROM resources"
        if where:
            query += " WHERE " + " AND ".join(where)
        # SQLite compares TEXT bytewise in UTF-8, which is code-point order, as Python does.
        query += " ORDER BY kind, namespace, name"
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None
        return [
            StoredResource(_key_of(k, ns, n), decode_value(value, revision), revision)
            for k, ns, n, value, revision in rows
        ]

    # -- writes ---------------------------------------------------------------------------

    def _write(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey],
    ) -> tuple[int, int]:
        """Apply a batch in one transaction; returns (revision, number of changes)."""
        check_batch(puts, deletes)
        with self._lock:
            self._check_open()
            try:
                with self._transaction(immediate=True):
                    revision = self._meta("revision") + 1
                    changes = 0
                    for key, value in puts:
                        # Encoding inside the transaction: a bad value rolls back the batch.
                        text = encode_value(key, value)
                        self._record(revision, key, text)
                        changes += 1
                    for key in deletes:
                        changes += self._record(revision, key, None)
                    if changes == 0:
                        return revision - 1, 0
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE name = 'revision'", (revision,)
                    )
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None
            self._writes += 1
            self._changed.notify_all()
            return revision, changes

    def _record(self, revision: int, key: ResourceKey, value: str | None) -> int:
        """Write one change into ``resources`` and ``changelog``; returns 1, or 0 if no-op."""
        ident = (key.kind, key.namespace or "", key.name)
        if value is None:
            deleted = self._db.execute(
                "DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?", ident
            ).rowcount
            if not deleted:
                return 0
        else:
            self._db.execute(
                "INSERT INTO resources (kind, namespace, name, value, revision)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, namespace, name)"
                " DO UPDATE SET value = excluded.value, revision = excluded.revision",
                (*ident, value, revision),
            )
        self._db.execute(
            "INSERT INTO changelog (revision, kind, namespace, name, value) VALUES (?, ?, ?, ?, ?)",
            (revision, *ident, value),
        )
        return 1

    def compact(self, revision: int) -> None:
        """Drop the history below ``revision``; watches from earlier revisions then fail.

        Like etcd's compaction: afterwards ``watch(from_revision)`` needs
        ``from_revision >= revision - 1``.
        """
        with self._lock:
            self._check_open()
            try:
                with self._transaction(immediate=True):
                    current = self._meta("revision")
                    if revision > current:
                        raise DatastoreError(
                            f"cannot compact to revision {revision}: the store is at {current}"
                        )
                    if revision <= self._meta("compact_revision"):
                        return
                    self._db.execute("DELETE FROM changelog WHERE revision < ?", (revision,))
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE name = 'compact_revision'", (revision,)
                    )
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None

    # -- watch ----------------------------------------------------------------------------

    def _follow(
        self, position: int, kinds: frozenset[str] | None, deadline: float | None
    ) -> Iterator[WatchEvent]:
        while True:
            with self._lock:
                if self._closed:
                    return
                writes_seen = self._writes
                page = self._read_changes(position, kinds)
            for change in page.changes:
                yield self._event(change)
            position = page.position
            if page.changes:
                continue  # there may be more pages; read again before waiting
            with self._changed:
                while not self._closed and self._writes == writes_seen:
                    wait = POLL_INTERVAL
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        wait = min(wait, remaining)
                    if not self._changed.wait(wait):
                        break  # time to poll for other connections' commits

    def _read_changes(self, position: int, kinds: frozenset[str] | None) -> _Page:
        """The changes after ``position`` (one page, never splitting a revision)."""
        self._check_open()
        kind_filter = ""
        kind_params: list[str] = []
        if kinds is not None:
            if not kinds:
                kind_filter = " AND 0"
            else:
                kind_filter = f" AND kind IN ({', '.join('?' * len(kinds))})"
                kind_params = sorted(kinds)
        columns = "SELECT revision, kind, namespace, name, value FROM changelog"
        try:
            with self._transaction():
                current = self._meta("revision")
                if current <= position:
                    return _Page([], position)
                compacted = self._meta("compact_revision")
                if position + 1 < compacted:
                    raise RevisionCompacted(position, compacted)
                rows = self._db.execute(
                    f"{columns} WHERE revision > ?{kind_filter} ORDER BY revision, id LIMIT ?",
                    (position, *kind_params, _PAGE_SIZE),
                ).fetchall()
                if len(rows) < _PAGE_SIZE:
                    return _Page([self._change(row) for row in rows], current)
                # A full page: finish its last revision so the next read can start after it.
                last = rows[-1][0]
                rows = [row for row in rows if row[0] != last]
                rows += self._db.execute(
                    f"{columns} WHERE revision = ?{kind_filter} ORDER BY id",
                    (last, *kind_params),
                ).fetchall()
                return _Page([self._change(row) for row in rows], last)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None

    @staticmethod
    def _change(row: tuple[int, str, str, str, str | None]) -> _Change:
        revision, kind, namespace, name, value = row
        return _Change(revision, _key_of(kind, namespace, name), value)

    @staticmethod
    def _event(change: _Change) -> WatchEvent:
        kind: Literal["PUT", "DELETE"] = "DELETE" if change.value is None else "PUT"
        value = None if change.value is None else decode_value(change.value, change.revision)
        return WatchEvent(kind, change.key, value, change.revision)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self._url!r})"
