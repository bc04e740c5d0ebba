"""The security event store: SQLite, embedded in the server.

Events arrive in batches (a WAF proxy ships what it saw); a batch is stored in one transaction
and an event id the store already holds is ignored, so a sender that retries never doubles an
event. Triage — acknowledge, dismiss — updates the row in place. Queries filter by type, time
window, namespace and workload, newest first.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._model import SecurityEvent, event_from_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    severity INTEGER NOT NULL,
    dest_namespace TEXT NOT NULL,
    dest_name TEXT NOT NULL,
    document TEXT NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    dismissed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_type_time ON events (type, time);
"""


@dataclass(frozen=True)
class StoredEvent:
    event: SecurityEvent
    acknowledged: bool
    dismissed: bool

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = self.event.to_json()
        document["acknowledged"] = self.acknowledged
        document["dismissed"] = self.dismissed
        return document


class EventStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, events: Iterable[SecurityEvent]) -> int:
        """Store a batch atomically; returns how many were new."""
        rows = [
            (
                e.id,
                e.time,
                e.type,
                e.severity,
                e.dest_namespace,
                e.dest_name,
                json.dumps(e.to_json(), separators=(",", ":")),
            )
            for e in events
        ]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO events (id, time, type, severity, dest_namespace,"
                    " dest_name, document) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def query(
        self,
        *,
        type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        namespace: str | None = None,
        workload: str | None = None,
        include_dismissed: bool = False,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("type", type), ("dest_namespace", namespace)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if workload is not None:
            clauses.append("dest_name = ?")
            params.append(workload)
        if since is not None:
            clauses.append("time >= ?")
            params.append(since)
        if until is not None:
            clauses.append("time < ?")
            params.append(until)
        if not include_dismissed:
            clauses.append("dismissed = 0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(max(0, limit))
        with self._lock:
            rows = self._db.execute(
                f"SELECT document, acknowledged, dismissed FROM events {where}"
                " ORDER BY time DESC, id LIMIT ?",
                params,
            ).fetchall()
        return [_stored(row) for row in rows]

    def get(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            row = self._db.execute(
                "SELECT document, acknowledged, dismissed FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        return _stored(row) if row else None

    def set_state(
        self, event_id: str, *, acknowledged: bool | None = None, dismissed: bool | None = None
    ) -> StoredEvent:
        """Acknowledge or dismiss an event (or take that back); ``KeyError`` if unknown."""
        with self._lock:
            for column, value in (("acknowledged", acknowledged), ("dismissed", dismissed)):
                if value is not None:
                    self._db.execute(
                        f"UPDATE events SET {column} = ? WHERE id = ?", (int(value), event_id)
                    )
        stored = self.get(event_id)
        if stored is None:
            raise KeyError(event_id)
        return stored

    def count(self) -> int:
        with self._lock:
            (total,) = self._db.execute("SELECT count(*) FROM events").fetchone()
        return int(total)

    def apply_retention(
        self, *, max_age_seconds: float | None, max_events: int | None, now: float
    ) -> int:
        """Drop events older than ``max_age_seconds`` and the oldest beyond ``max_events``."""
        with self._lock:
            before = self._db.total_changes
            if max_age_seconds is not None:
                self._db.execute("DELETE FROM events WHERE time < ?", (now - max_age_seconds,))
            if max_events is not None:
                self._db.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events"
                    " ORDER BY time DESC, id LIMIT -1 OFFSET ?)",
                    (max(0, max_events),),
                )
            return self._db.total_changes - before


def _stored(row: tuple[str, int, int]) -> StoredEvent:
    document, acknowledged, dismissed = row
    return StoredEvent(event_from_json(json.loads(document)), bool(acknowledged), bool(dismissed))
