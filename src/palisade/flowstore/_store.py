"""The DuckDB flow store (see the package docstring)."""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from palisade.flows import FlowFormat, FlowRecord, Malformed, Skipped, iter_flows
from palisade.flows._import import detect_format

from ._arrow import ArrowBatchError, conform, read_batch
from ._graph import COUNTED_ONCE, GraphNode, node_for, node_predicate
from ._schema import (
    ARROW_INVALID_REASON,
    COLUMN_NAMES,
    DDL,
    MALFORMED_REASON,
    RECORD_COLUMNS,
    ROLLUP_BUCKET,
    ROLLUP_KEYS,
    ROLLUP_SUMS,
    SCHEMA_VERSION,
    VALID_ROW,
    column_value,
    json_structure,
    staged_value,
    valid_row,
)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingestion did.

    ``added``: records stored; ``malformed``: ``(line, reason)`` for every line that was not a
    valid record (lines count from 1; blank lines are skipped, not malformed);
    ``duplicate``: the batch id had been ingested before, so nothing was added.
    """

    added: int
    malformed: list[tuple[int, str]] = field(default_factory=list)
    duplicate: bool = False
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """Valid lines that hold no flow (Hubble's agent and lost-event lines)."""

    @property
    def imported(self) -> int:
        """The same as ``added``."""
        return self.added

    @property
    def malformed_count(self) -> int:
        return len(self.malformed)


#: The hit that decided a record: the enforced hit with the highest index (Calico stores the
#: lists as sets, so the position in the list says nothing). The index is zero-padded so that
#: a string sort is a numeric sort; the padding is cut off again.
_DECIDING_HIT = (
    "(list_sort(list_transform(enforced_policies,"
    " lambda h: lpad(split_part(h, '|', 1), 12, '0') || '#' || h))[-1])[14:]"
)

_SCRATCH_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class FlowStore:
    """Flow records in DuckDB: ``":memory:"`` (the default) or a database file.

    Thread-safe: one connection, used under a lock (DuckDB serialises writers anyway).
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._connection = duckdb.connect(self.path)
        with self._lock:
            for statement in DDL:
                self._connection.execute(statement)
            self._connection.execute(
                "INSERT INTO store_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [str(SCHEMA_VERSION)],
            )
        self._structure = json_structure()
        staged_columns = ", ".join(f"{staged_value(name)} AS {name}" for name in COLUMN_NAMES)
        self._insert_select = (
            f"INSERT INTO flows ({', '.join(COLUMN_NAMES)}) SELECT "
            + ", ".join(staged_value(name) for name in COLUMN_NAMES)
            + " FROM staging WHERE NOT bad"
        )
        self._rollup_select = _rollup_insert(
            f"(SELECT {staged_columns} FROM staging WHERE NOT bad)", "true"
        )
        # The reader's columns are read directly (wrapping each row in a struct to share the
        # staged path's expressions cost a fifth of the time).
        self._insert_direct = (
            f"INSERT INTO flows ({', '.join(COLUMN_NAMES)}) SELECT "
            + ", ".join(staged_value(name, row="") for name in COLUMN_NAMES)
            + " FROM read_json(?, format='newline_delimited',"
            f" columns={_read_json_columns(self._structure)})"
            f" WHERE CASE WHEN {valid_row(row='')} THEN true"
            " ELSE error('a line is not a valid flow-log record') END"
        )
        self._rollup_direct = _rollup_insert("flows", "rowid > ?")
        arrow_columns = ", ".join(f"{column_value(name)} AS {name}" for name in COLUMN_NAMES)
        self._insert_arrow = (
            f"INSERT INTO flows ({', '.join(COLUMN_NAMES)}) SELECT {arrow_columns}"
            f" FROM arrow_batch WHERE CASE WHEN {valid_row(row='')} THEN true"
            " ELSE error('a row is not a valid flow-log record') END"
        )
        self._rollup_arrow = _rollup_insert(f"(SELECT {arrow_columns} FROM arrow_batch)", "true")
        with self._lock:
            self._rollup_rows = self._scalar("SELECT count(*) FROM edge_rollup")
            if self._rollup_rows == 0 and self._scalar("SELECT count(*) FROM flows"):
                self._rebuild_rollup(None)  # a store written before the rollup existed
        self._rollup_appended = 0

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- ingestion -------------------------------------------------------------------------

    def ingest(self, records: Iterable[FlowRecord], *, batch_id: str | None = None) -> int:
        """Store ``records``; returns the number added (0 for a batch id already ingested)."""
        with _scratch_file() as scratch:
            with scratch.open("w", encoding="utf-8") as out:
                for record in records:
                    out.write(_document_line(record))
            return self._ingest_file(scratch, batch_id).added

    def ingest_ndjson(
        self, source: bytes | str | Path, *, batch_id: str | None = None
    ) -> IngestResult:
        """Store Calico flow-log documents, one per line (a file path or the bytes themselves).

        The fast path: DuckDB reads the lines, parses them with ``from_json`` into a staging
        table and validates them in SQL; valid rows go in with one ``INSERT … SELECT``, in the
        same transaction as the batch id. Fields other than Calico's are not kept (the
        importers in :mod:`palisade.flows` keep them in ``FlowRecord.extra``).
        """
        if isinstance(source, bytes):
            with _scratch_file() as scratch:
                scratch.write_bytes(source)
                return self._ingest_file(scratch, batch_id)
        return self._ingest_file(Path(source), batch_id)

    def import_file(
        self, path: str | Path, *, format: FlowFormat = "auto", batch_id: str | None = None
    ) -> IngestResult:
        """A flow file users already have: Calico Enterprise flow logs (the fast path, as
        :meth:`ingest_ndjson`) or ``hubble observe -o json`` output (converted line by line by
        :func:`palisade.flows.iter_hubble` into a scratch file of Calico documents, then the
        fast path: memory stays flat, and the file goes in in one transaction)."""
        path = Path(path)
        if format == "auto":
            format = _sniff_format(path)
        if format == "calico":
            return self.ingest_ndjson(path, batch_id=batch_id)
        if batch_id is not None and self.batch_ingested(batch_id):
            return IngestResult(added=0, duplicate=True)
        malformed: list[tuple[int, str]] = []
        skipped: list[tuple[int, str]] = []
        with _scratch_file() as scratch:
            with scratch.open("w", encoding="utf-8") as out:
                for item in iter_flows(path, format):
                    if isinstance(item, Malformed):
                        malformed.append((item.line, item.reason))
                    elif isinstance(item, Skipped):
                        skipped.append((item.line, item.reason))
                    else:
                        out.write(_document_line(item))
            result = self._ingest_file(scratch, batch_id)
        return IngestResult(
            added=result.added,
            malformed=sorted(malformed + result.malformed),
            duplicate=result.duplicate,
            skipped=skipped,
        )

    def ingest_arrow(self, source: Any, *, batch_id: str | None = None) -> IngestResult:
        """Store a batch of flow records in Arrow form: a ``pyarrow.Table`` or
        ``RecordBatch``, the bytes of an Arrow IPC stream, or the path of a file holding one,
        with Calico's field names as columns (see :mod:`palisade.flowstore._arrow`).

        The batch goes in whole, in one transaction with its batch id, or not at all: a batch
        that is not an IPC stream, has columns the schema does not know or of the wrong kind,
        or a row that is not a valid record (a required field missing, an action that is not
        allow or deny, …) raises :class:`ArrowBatchError` naming the first problem, and
        nothing is stored. A batch id already stored is acknowledged with ``duplicate=True``.
        """
        (outcome,) = self.ingest_arrow_batches([(batch_id, source)])
        if isinstance(outcome, ArrowBatchError):
            raise outcome
        return outcome

    def ingest_arrow_batches(
        self, batches: Sequence[tuple[str | None, Any]]
    ) -> list[IngestResult | ArrowBatchError]:
        """Several Arrow batches (``(batch_id, source)`` as for :meth:`ingest_arrow`) in one
        transaction — the server's group commit: one commit, one rollup append and one scan
        for many agents' batches. Each batch's outcome, in order: its result, or the
        :class:`ArrowBatchError` that kept it out (the other batches still go in)."""
        outcomes: list[IngestResult | ArrowBatchError | None] = [None] * len(batches)
        tables: dict[int, Any] = {}
        for index, (_, source) in enumerate(batches):
            try:
                tables[index] = conform(read_batch(source))
            except ArrowBatchError as exc:
                outcomes[index] = exc
        with self._lock:
            ids = [batch_id for batch_id, _ in batches if batch_id is not None]
            stored: set[str] = set()
            if ids:
                stored = {
                    str(row[0])
                    for row in self._connection.execute(
                        "SELECT batch_id FROM ingest_batches WHERE list_contains(?, batch_id)",
                        [ids],
                    ).fetchall()
                }
            pending: list[int] = []
            for index in tables:
                batch_id = batches[index][0]
                if batch_id is not None and batch_id in stored:
                    outcomes[index] = IngestResult(added=0, duplicate=True)
                    continue
                if batch_id is not None:
                    stored.add(batch_id)  # the same id twice in one group: the first counts
                pending.append(index)
            if pending:
                try:
                    self._insert_arrow_batches([(batches[i][0], tables[i]) for i in pending])
                except duckdb.Error:
                    # Some batch holds an invalid row: find which, and store the others.
                    for index in pending:
                        problem = self._arrow_problem(tables[index])
                        if problem is not None:
                            outcomes[index] = ArrowBatchError(problem)
                    good = [i for i in pending if outcomes[i] is None]
                    if len(good) == len(pending):
                        raise  # not a row's fault: the store's own
                    pending = good
                    if pending:
                        self._insert_arrow_batches([(batches[i][0], tables[i]) for i in pending])
                for index in pending:
                    outcomes[index] = IngestResult(added=tables[index].num_rows)
        return [outcome or IngestResult(added=0) for outcome in outcomes]

    def _insert_arrow_batches(self, batches: Sequence[tuple[str | None, Any]]) -> None:
        """Conformed tables and their ids in one transaction (raises ``duckdb.Error`` on an
        invalid row, having stored nothing)."""
        import pyarrow as pa

        connection = self._connection
        table = pa.concat_tables([t for _, t in batches]) if len(batches) > 1 else batches[0][1]
        now = time.time()
        ids = [(batch_id, t.num_rows, now) for batch_id, t in batches if batch_id is not None]
        self._register("arrow_batch", table)
        connection.execute("SET preserve_insertion_order = false")
        try:
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute(self._insert_arrow).fetchall()
                row = connection.execute(self._rollup_arrow).fetchone()
                appended = int(row[0]) if row else 0
                if ids:
                    connection.execute(
                        "INSERT INTO ingest_batches SELECT unnest(?), unnest(?), unnest(?)",
                        [[i[0] for i in ids], [i[1] for i in ids], [i[2] for i in ids]],
                    ).fetchall()
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        finally:
            connection.execute("SET preserve_insertion_order = true")
            connection.unregister("arrow_batch")
        self._rollup_rows += appended
        self._rollup_appended += appended
        if self._rollup_appended > max(50_000, self._rollup_rows // 2):
            self._compact_rollup()

    def _register(self, name: str, table: Any) -> None:
        # DuckDB refuses to register a view while an earlier statement's result is not
        # exhausted (a ``fetchone`` leaves it open): finish it with a trivial statement.
        self._connection.execute("SELECT 1").fetchall()
        self._connection.register(name, table)

    def _arrow_problem(self, table: Any) -> str | None:
        """The first invalid row of a conformed table, as ``row N: reason`` (rows count from
        1), with how many more there are; ``None`` if every row is valid."""
        connection = self._connection
        self._register("arrow_check", table)
        try:
            rows = connection.execute(
                f"SELECT row_no, {ARROW_INVALID_REASON}, count(*) OVER () FROM"
                " (SELECT *, row_number() OVER () AS row_no FROM arrow_check)"
                f" WHERE NOT ({valid_row(row='')}"
                " AND (extra IS NULL OR json_valid(extra))) ORDER BY row_no LIMIT 1"
            ).fetchall()
        finally:
            connection.unregister("arrow_check")
        if not rows:
            return None
        row_no, reason, bad = rows[0]
        more = f" (and {int(bad) - 1} more invalid row(s))" if int(bad) > 1 else ""
        return f"row {int(row_no)}: {reason}{more}; nothing of the batch was stored"

    def batch_ingested(self, batch_id: str) -> bool:
        with self._lock:
            row = self._connection.execute(
                "SELECT 1 FROM ingest_batches WHERE batch_id = ?", [batch_id]
            ).fetchone()
        return row is not None

    def _ingest_file(self, path: Path, batch_id: str | None) -> IngestResult:
        with self._lock:
            connection = self._connection
            if batch_id is not None and self.batch_ingested(batch_id):
                return IngestResult(added=0, duplicate=True)
            try:
                return self._ingest_direct(path, batch_id)
            except duckdb.Error:
                pass  # some line is malformed: stage, to find and report every one
            exact = False
            try:
                self._stage_with_duckdb(path, tolerant=False)
            except duckdb.Error:
                try:
                    # Some line is not JSON: parse again, turning such lines into NULL.
                    self._stage_with_duckdb(path, tolerant=True)
                except duckdb.Error:
                    # Lines DuckDB's CSV reader refuses (invalid UTF-8, stray control
                    # characters): stage line by line from Python, slower but exact.
                    self._stage_with_python(path)
                    exact = True
            try:
                malformed = self._malformed(path, exact)
                connection.execute("BEGIN TRANSACTION")
                try:
                    row = connection.execute(self._insert_select).fetchone()
                    added = int(row[0]) if row else 0
                    row = connection.execute(self._rollup_select).fetchone()
                    appended = int(row[0]) if row else 0
                    if batch_id is not None:
                        connection.execute(
                            "INSERT INTO ingest_batches VALUES (?, ?, ?)",
                            [batch_id, added, time.time()],
                        )
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
            finally:
                connection.execute("DROP TABLE IF EXISTS staging")
            self._rollup_rows += appended
            self._rollup_appended += appended
            if self._rollup_appended > max(50_000, self._rollup_rows // 2):
                self._compact_rollup()
            return IngestResult(added=added, malformed=malformed)

    def _ingest_direct(self, path: Path, batch_id: str | None) -> IngestResult:
        """The fast path for a file whose every line is valid: DuckDB's JSON reader (every
        field typed, strict) straight into ``flows`` in one pass, the rollup from the rows
        just added, and the batch id, in one transaction. Any malformed line raises (the JSON
        reader's own errors, or ``error()`` on a row that fails validation) and rolls it all
        back; the caller then stages the file to report each bad line."""
        connection = self._connection
        # Without insertion order, both threads append row groups as they parse (1.5x here);
        # records stay grouped by the part of the file they came from, which is what the
        # time zone maps need. The staged path numbers rows, so it keeps the order.
        connection.execute("SET preserve_insertion_order = false")
        connection.execute("BEGIN TRANSACTION")
        try:
            before = self._scalar("SELECT coalesce(max(rowid), -1) FROM flows")
            row = connection.execute(self._insert_direct, [str(path)]).fetchone()
            added = int(row[0]) if row else 0
            row = connection.execute(self._rollup_direct, [before]).fetchone()
            appended = int(row[0]) if row else 0
            if batch_id is not None:
                connection.execute(
                    "INSERT INTO ingest_batches VALUES (?, ?, ?)", [batch_id, added, time.time()]
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.execute("SET preserve_insertion_order = true")
        self._rollup_rows += appended
        self._rollup_appended += appended
        if self._rollup_appended > max(50_000, self._rollup_rows // 2):
            self._compact_rollup()
        return IngestResult(added=added)

    def _lines(self, path: Path) -> str:
        # Each line becomes one VARCHAR (no delimiter, quote or escape character occurs in
        # JSON text), blank lines included (as NULL), so row numbers are line numbers.
        return (
            f"read_csv({_sql_string(str(path))}, columns={{'line': 'VARCHAR'}},"
            " delim='\\x01', quote='', escape='', header=false, auto_detect=false,"
            " max_line_size=16777216, new_line='\\n')"
        )

    def _parsed(self, tolerant: bool = True) -> str:
        # Fields of the wrong type are NULL. ``try`` turns a line that is not JSON into NULL,
        # at a cost (a third of the parsing time), so the first attempt goes without it.
        parsed = f"from_json(line, {_sql_string(self._structure)})"
        return f"try({parsed})" if tolerant else parsed

    def _stage_with_duckdb(self, path: Path, *, tolerant: bool) -> None:
        # The fast path keeps only the parsed rows and a flag: no line text, no line numbers
        # (numbering the rows costs as much as parsing them). ``_malformed`` reads the file
        # again, with numbers, only when some line was bad.
        self._connection.execute(
            "CREATE OR REPLACE TEMP TABLE staging AS"
            f" SELECT r, NOT {VALID_ROW} AS bad, NULL::BIGINT AS line_no, NULL AS bad_line"
            f" FROM (SELECT line, {self._parsed(tolerant)} AS r FROM {self._lines(path)})"
            " WHERE line IS NOT NULL"
        )

    def _stage_with_python(self, path: Path) -> None:
        connection = self._connection
        connection.execute("CREATE OR REPLACE TEMP TABLE raw_lines (line_no BIGINT, line VARCHAR)")
        batch: list[tuple[int, str]] = []
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    batch.append((number, text))
                if len(batch) >= 10_000:
                    connection.executemany("INSERT INTO raw_lines VALUES (?, ?)", batch)
                    batch.clear()
        if batch:
            connection.executemany("INSERT INTO raw_lines VALUES (?, ?)", batch)
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE staging AS"
            f" SELECT r, NOT {VALID_ROW} AS bad, line_no, CASE WHEN NOT {VALID_ROW} THEN line END"
            f" AS bad_line FROM (SELECT line_no, line, {self._parsed()} AS r FROM raw_lines)"
        )
        connection.execute("DROP TABLE raw_lines")

    def _malformed(self, path: Path, exact: bool) -> list[tuple[int, str]]:
        connection = self._connection
        row = connection.execute("SELECT count(*) FROM staging WHERE bad").fetchone()
        if not row or not row[0]:
            return []
        source = "staging"
        if not exact:
            source = (
                f"(SELECT line_no, r, line AS bad_line FROM (SELECT row_number() OVER ()"
                f" AS line_no, line, {self._parsed()} AS r FROM {self._lines(path)})"
                f" WHERE line IS NOT NULL AND NOT {VALID_ROW})"
            )
        return [
            (int(line), str(reason))
            for line, reason in connection.execute(
                f"SELECT line_no, {MALFORMED_REASON} FROM {source}"
                " WHERE bad_line IS NOT NULL AND trim(bad_line) <> '' ORDER BY line_no"
            ).fetchall()
        ]

    # -- the edge rollup -----------------------------------------------------------------

    def _scalar(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        row = self._connection.execute(sql, list(parameters)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _compact_rollup(self) -> None:
        """Merge the rollup rows of the same bucket and edge (each batch appends its own)."""
        connection = self._connection
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE rollup_compact AS"
            f" SELECT bucket, {ROLLUP_KEYS}, sum(bytes) AS bytes, sum(packets) AS packets,"
            f" sum(flows) AS flows FROM edge_rollup GROUP BY bucket, {ROLLUP_KEYS}"
        )
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute("DELETE FROM edge_rollup")
            connection.execute("INSERT INTO edge_rollup SELECT * FROM rollup_compact")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        finally:
            connection.execute("DROP TABLE IF EXISTS rollup_compact")
        self._rollup_rows = self._scalar("SELECT count(*) FROM edge_rollup")
        self._rollup_appended = 0

    def _rebuild_rollup(self, before: int | None) -> None:
        """Recompute the rollup's buckets that start before ``before`` (all if ``None``)
        from the records (after retention deleted some)."""
        connection = self._connection
        if before is None:
            connection.execute("DELETE FROM edge_rollup")
            connection.execute(_rollup_insert("flows", "true"))
        else:
            connection.execute("DELETE FROM edge_rollup WHERE bucket < ?", [before])
            connection.execute(_rollup_insert("flows", "start_time < ?"), [before])
        self._rollup_rows = self._scalar("SELECT count(*) FROM edge_rollup")
        self._rollup_appended = 0

    def _edges(self, since: float | None, until: float | None) -> tuple[str, list[Any]]:
        """A subquery of counted-once traffic in a window (``ROLLUP_KEYS``, ``bytes``,
        ``packets``, ``flows``): whole rollup buckets inside the window, and the records of
        the partly covered buckets at its ends."""
        low = None if since is None else math.ceil(since / ROLLUP_BUCKET) * ROLLUP_BUCKET
        high = None if until is None else math.floor(until / ROLLUP_BUCKET) * ROLLUP_BUCKET
        rollup_parameters: list[Any] = []
        if low is not None and high is not None and low >= high:
            rollup_where = in_rollup = "false"  # no whole bucket inside: records only
        else:
            conditions: list[str] = []
            if low is not None:
                conditions.append("bucket >= ?")
                rollup_parameters.append(low)
            if high is not None:
                conditions.append("bucket < ?")
                rollup_parameters.append(high)
            rollup_where = " AND ".join(conditions) or "true"
            in_rollup = (
                " AND ".join(c.replace("bucket", "start_time") for c in conditions) or "true"
            )
        where, parameters = _window(since, until)
        where += [COUNTED_ONCE, f"NOT ({in_rollup})"]
        sql = (
            f"(SELECT {ROLLUP_KEYS}, bytes, packets, flows FROM edge_rollup"
            f" WHERE {rollup_where}"
            f" UNION ALL SELECT {ROLLUP_KEYS}, bytes_in + bytes_out, packets_in + packets_out,"
            f" num_flows FROM flows WHERE {' AND '.join(where)})"
        )
        return sql, [*rollup_parameters, *parameters, *rollup_parameters]

    # -- reading ---------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            row = self._connection.execute("SELECT count(*) FROM flows").fetchone()
        return int(row[0]) if row else 0

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        namespace: str | None = None,
        workload: str | None = None,
        action: str | None = None,
        policy: str | None = None,
        limit: int = 1000,
    ) -> list[FlowRecord]:
        """Records, newest first. ``namespace``/``workload`` match the source or the
        destination (``workload``: the ``*_name_aggr`` or the ``*_name``); ``policy`` is a
        substring of the policy part of an enforced or pending hit."""
        where, parameters = _window(since, until)
        if namespace is not None:
            where.append("(source_namespace = ? OR dest_namespace = ?)")
            parameters += [namespace, namespace]
        if workload is not None:
            where.append(
                "(source_name_aggr = ? OR source_name = ? OR dest_name_aggr = ? OR dest_name = ?)"
            )
            parameters += [workload] * 4
        if action is not None:
            where.append("action = ?")
            parameters.append(action)
        if policy is not None:
            where.append(
                "(len(list_filter(enforced_policies, lambda h: contains(split_part(h, '|', 3), ?)))"
                " > 0 OR len(list_filter(pending_policies,"
                " lambda h: contains(split_part(h, '|', 3), ?))) > 0)"
            )
            parameters += [policy, policy]
        return self._records(where, parameters, limit)

    def _records(self, where: list[str], parameters: list[Any], limit: int) -> list[FlowRecord]:
        sql = (
            f"SELECT {', '.join(COLUMN_NAMES)} FROM flows"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY end_time DESC, start_time DESC LIMIT ?"
        )
        with self._lock:
            rows = self._connection.execute(sql, [*parameters, limit]).fetchall()
        return [_record_from_row(row) for row in rows]

    def top_talkers(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        by: str = "workload",
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """The busiest (source, destination) pairs by bytes, each connection counted once.

        Keys: ``source_namespace``, ``dest_namespace`` (and ``source_name``, ``dest_name``,
        the ``*_name_aggr``, when ``by="workload"``), ``bytes``, ``packets``, ``flows``.
        """
        if by not in ("workload", "namespace"):
            raise ValueError(f"by: {by!r} is not workload or namespace")
        keys = ["source_namespace", "dest_namespace"]
        if by == "workload":
            keys = ["source_namespace", "source_name_aggr", "dest_namespace", "dest_name_aggr"]
        edges, parameters = self._edges(since, until)
        sql = (
            f"SELECT {', '.join(keys)}, sum(bytes) AS bytes, sum(packets) AS packets,"
            f" sum(flows) AS flows FROM {edges} GROUP BY ALL"
            f" ORDER BY bytes DESC, {', '.join(keys)} LIMIT ?"
        )
        with self._lock:
            rows = self._connection.execute(sql, [*parameters, limit]).fetchall()
        names = [key.replace("_name_aggr", "_name") for key in keys]
        return [
            {**dict(zip(names, row[: len(keys)], strict=True)), **_totals(row[len(keys) :])}
            for row in rows
        ]

    def denied(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Denied (source, destination, port) groups with the hit that denied them.

        Keys: ``source_namespace``, ``source_name``, ``source_type``, ``dest_namespace``,
        ``dest_name``, ``dest_type``, ``proto``, ``dest_port``, ``reporter``, ``policy`` (the
        deciding hit's policy part), ``tier``, ``hit`` (the whole hit string), ``bytes``,
        ``packets``, ``flows``; most flows first.
        """
        where, parameters = _window(since, until)
        where.append("action = 'deny'")
        sql = (
            # Summed per distinct trace first, so the deciding hit is found once per group.
            "SELECT source_namespace, source_name_aggr, source_type, dest_namespace,"
            " dest_name_aggr, dest_type, proto, dest_port, reporter, hit,"
            " sum(bytes), sum(packets), sum(flows) AS flows FROM (SELECT *,"
            f" {_DECIDING_HIT} AS hit FROM (SELECT source_namespace, source_name_aggr,"
            " source_type, dest_namespace, dest_name_aggr, dest_type, proto, dest_port,"
            " reporter, enforced_policies, sum(bytes_in + bytes_out) AS bytes,"
            " sum(packets_in + packets_out) AS packets, sum(num_flows) AS flows"
            f" FROM flows WHERE {' AND '.join(where)} GROUP BY ALL))"
            " GROUP BY ALL ORDER BY flows DESC, source_namespace, source_name_aggr,"
            " dest_namespace, dest_name_aggr, dest_port LIMIT ?"
        )
        with self._lock:
            rows = self._connection.execute(sql, [*parameters, limit]).fetchall()
        keys = (
            "source_namespace",
            "source_name",
            "source_type",
            "dest_namespace",
            "dest_name",
            "dest_type",
            "proto",
            "dest_port",
            "reporter",
        )
        result = []
        for row in rows:
            hit = row[9] or ""
            parts = hit.split("|")
            result.append(
                {
                    **dict(zip(keys, row[:9], strict=True)),
                    "policy": parts[2] if len(parts) == 5 else "",
                    "tier": parts[1] if len(parts) == 5 else "",
                    "hit": hit,
                    **_totals(row[10:]),
                }
            )
        return result

    def graph(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        expand: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The service graph at namespace level, the namespaces in ``expand`` broken out into
        their workloads (see :mod:`palisade.flowstore._graph` for the node ids).

        Edges: ``source``, ``target``, ``bytes``, ``packets``, ``flows`` (each connection
        counted once, at its last enforcement point), ``allowed`` and ``denied`` (flows by
        verdict), ``protocols`` (sorted ``proto`` values). Read from the edge rollup (hourly
        sums per endpoint pair) plus the records of partly covered hours at the window's
        ends, aggregated in SQL per (type, namespace, name_aggr of workloads only where
        needed), so neither side's work grows with the number of records.
        """
        expanded = sorted(set(expand))
        edge_source, parameters = self._edges(since, until)

        def name_key(side: str) -> str:
            return (
                f"CASE WHEN {side}_type <> 'wep' OR list_contains(?::VARCHAR[], "
                f"{side}_namespace) THEN {side}_name_aggr ELSE '' END"
            )

        sql = (
            f"SELECT source_type, source_namespace, {name_key('source')} AS source_key,"
            f" dest_type, dest_namespace, {name_key('dest')} AS dest_key,"
            " sum(bytes), sum(packets), sum(flows),"
            " sum(flows) FILTER (WHERE action = 'allow'),"
            " sum(flows) FILTER (WHERE action = 'deny'), list(DISTINCT proto)"
            f" FROM {edge_source}"
            " GROUP BY source_type, source_namespace, source_key,"
            " dest_type, dest_namespace, dest_key"
        )
        with self._lock:
            rows = self._connection.execute(sql, [expanded, expanded, *parameters]).fetchall()
        nodes: dict[str, GraphNode] = {}
        edges: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            source = node_for(row[0], row[1], row[2], expanded)
            target = node_for(row[3], row[4], row[5], expanded)
            nodes[source.id] = source
            nodes[target.id] = target
            edge = edges.setdefault(
                (source.id, target.id),
                {
                    "source": source.id,
                    "target": target.id,
                    "bytes": 0,
                    "packets": 0,
                    "flows": 0,
                    "allowed": 0,
                    "denied": 0,
                    "protocols": set(),
                },
            )
            edge["bytes"] += int(row[6] or 0)
            edge["packets"] += int(row[7] or 0)
            edge["flows"] += int(row[8] or 0)
            edge["allowed"] += int(row[9] or 0)
            edge["denied"] += int(row[10] or 0)
            edge["protocols"].update(row[11] or ())
        for edge in edges.values():
            edge["protocols"] = sorted(edge["protocols"])
        return {
            "nodes": [nodes[key].as_dict() for key in sorted(nodes)],
            "edges": [edges[key] for key in sorted(edges)],
        }

    def edge_flows(
        self,
        source_id: str,
        target_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[FlowRecord]:
        """The records behind one graph edge (every reporter), newest first; each carries the
        policy hits that decided it (see also :meth:`edge_policies`)."""
        where, parameters = self._edge_where(source_id, target_id, since, until)
        return self._records(where, parameters, limit)

    def edge_policies(
        self,
        source_id: str,
        target_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """The hits that decided the flows of one edge: ``hit``, ``policy``, ``tier``,
        ``action``, ``reporter``, ``flows``, most flows first."""
        where, parameters = self._edge_where(source_id, target_id, since, until)
        sql = (
            f"SELECT hit, action, reporter, sum(flows) AS flows FROM (SELECT *,"
            f" {_DECIDING_HIT} AS hit FROM (SELECT enforced_policies, action, reporter,"
            f" sum(num_flows) AS flows FROM flows WHERE {' AND '.join(where)} GROUP BY ALL))"
            " GROUP BY ALL ORDER BY flows DESC, hit, action, reporter"
        )
        with self._lock:
            rows = self._connection.execute(sql, parameters).fetchall()
        result = []
        for hit, action, reporter, flows in rows:
            parts = (hit or "").split("|")
            result.append(
                {
                    "hit": hit or "",
                    "policy": parts[2] if len(parts) == 5 else "",
                    "tier": parts[1] if len(parts) == 5 else "",
                    "action": action,
                    "reporter": reporter,
                    "flows": int(flows or 0),
                }
            )
        return result

    @staticmethod
    def _edge_where(
        source_id: str, target_id: str, since: float | None, until: float | None
    ) -> tuple[list[str], list[Any]]:
        where, parameters = _window(since, until)
        for node_id, side in ((source_id, "source"), (target_id, "dest")):
            predicate, values = node_predicate(node_id, side)
            where.append(f"({predicate})")
            parameters += values
        return where, parameters

    # -- retention -------------------------------------------------------------------------

    def apply_retention(
        self,
        *,
        max_age_seconds: float | None = None,
        max_records: int | None = None,
        now: float | None = None,
    ) -> int:
        """Delete records that ended more than ``max_age_seconds`` before ``now`` and then the
        oldest (by end time) beyond ``max_records``; returns how many were deleted."""
        deleted = 0
        with self._lock:
            connection = self._connection
            latest_deleted_end: float | None = None
            if max_age_seconds is not None:
                cutoff = (time.time() if now is None else now) - max_age_seconds
                row = connection.execute(
                    "DELETE FROM flows WHERE end_time < ?", [cutoff]
                ).fetchone()
                if row and row[0]:
                    deleted += int(row[0])
                    latest_deleted_end = cutoff
            if max_records is not None:
                excess = self.count() - max(max_records, 0)
                if excess > 0:
                    oldest = (
                        "SELECT rowid, end_time FROM flows ORDER BY end_time, start_time LIMIT ?"
                    )
                    latest = self._scalar(f"SELECT max(end_time) FROM ({oldest})", [excess])
                    row = connection.execute(
                        f"DELETE FROM flows WHERE rowid IN (SELECT rowid FROM ({oldest}))",
                        [excess],
                    ).fetchone()
                    deleted += int(row[0]) if row else 0
                    latest_deleted_end = max(latest_deleted_end or latest, latest)
            if latest_deleted_end is not None:
                # A deleted record started no later than it ended: the buckets to recompute
                # are those up to the one holding the latest deleted end.
                bucket = math.floor(latest_deleted_end / ROLLUP_BUCKET) * ROLLUP_BUCKET
                self._rebuild_rollup(bucket + ROLLUP_BUCKET)
        return deleted

    def checkpoint(self) -> None:
        """Write the WAL into the database file (DuckDB also does this on its own)."""
        with self._lock:
            self._connection.execute("CHECKPOINT")


def _rollup_insert(source: str, condition: str) -> str:
    """The statement that sums ``source``'s counted-once records into the rollup."""
    return (
        f"INSERT INTO edge_rollup SELECT start_time - start_time % {ROLLUP_BUCKET} AS bucket,"
        f" {ROLLUP_KEYS}, {ROLLUP_SUMS} FROM {source} WHERE {COUNTED_ONCE} AND {condition}"
        f" GROUP BY bucket, {ROLLUP_KEYS}"
    )


def _window(since: float | None, until: float | None) -> tuple[list[str], list[Any]]:
    """Records overlapping ``[since, until)``."""
    where: list[str] = []
    parameters: list[Any] = []
    if since is not None:
        where.append("end_time >= ?")
        parameters.append(since)
    if until is not None:
        where.append("start_time < ?")
        parameters.append(until)
    return where, parameters


def _totals(values: Sequence[Any]) -> dict[str, int]:
    return {
        "bytes": int(values[0] or 0),
        "packets": int(values[1] or 0),
        "flows": int(values[2] or 0),
    }


_TUPLE_COLUMNS = frozenset(
    ("source_labels", "dest_labels", "dest_domains", "enforced_policies", "pending_policies")
)


def _record_from_row(row: Sequence[Any]) -> FlowRecord:
    values: dict[str, Any] = {}
    for name, value in zip(RECORD_COLUMNS, row, strict=False):
        values[name] = tuple(value or ()) if name in _TUPLE_COLUMNS else value
    extra = row[len(RECORD_COLUMNS)]
    parsed = json.loads(extra) if extra else {}
    return FlowRecord(**values, extra=parsed if isinstance(parsed, dict) else {})


def _read_json_columns(structure: str) -> str:
    """``read_json``'s ``columns`` struct literal for a ``from_json`` structure."""
    members = json.loads(structure)
    return "{" + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in members.items()) + "}"


def _document_line(record: FlowRecord) -> str:
    """The record as a staging line: its Calico document, with its uninterpreted fields under
    the store's own ``extra`` key (the column they are kept in)."""
    document = record.to_json()
    for key in record.extra:
        document.pop(key, None)
    if record.extra:
        document["extra"] = dict(record.extra)
    return json.dumps(document, separators=(",", ":")) + "\n"


def _sniff_format(path: Path) -> FlowFormat:
    with path.open("rb") as lines:
        for raw in itertools.islice(lines, 1000):
            try:
                found = detect_format(json.loads(raw))
            except (ValueError, RecursionError):
                continue
            if found is not None:
                return found
    return "calico"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def _scratch_file() -> Iterator[Path]:
    handle, name = tempfile.mkstemp(prefix="palisade-flows-", suffix=".ndjson", dir=_SCRATCH_DIR)
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
