"""The flow store's DuckDB schema: one wide ``flows`` table with Calico's field names, and the
ingested batch ids.

Lists (labels, domains, policy hits) are DuckDB ``VARCHAR[]`` columns. There is no secondary
index: DuckDB keeps min/max per row group (zone maps) for every column, and records arrive
roughly in time order (agents flush interval by interval, files are written in time order), so
a time window on ``end_time``/``start_time`` skips the row groups outside it. An ART index would
cost more at ingest than it saves on range scans.
"""

from __future__ import annotations

from typing import Final

#: (column, DuckDB type, default for a missing value or ``None`` when NULL is meaningful)
COLUMNS: Final[tuple[tuple[str, str, str | None], ...]] = (
    ("start_time", "BIGINT", None),
    ("end_time", "BIGINT", None),
    ("action", "VARCHAR", None),
    ("reporter", "VARCHAR", None),
    ("proto", "VARCHAR", None),
    ("source_ip", "VARCHAR", None),
    ("source_port", "INTEGER", None),
    ("source_name", "VARCHAR", "'-'"),
    ("source_name_aggr", "VARCHAR", "'-'"),
    ("source_namespace", "VARCHAR", "'-'"),
    ("source_type", "VARCHAR", "'net'"),
    ("source_labels", "VARCHAR[]", "[]"),
    ("dest_ip", "VARCHAR", None),
    ("dest_port", "INTEGER", None),
    ("dest_name", "VARCHAR", "'-'"),
    ("dest_name_aggr", "VARCHAR", "'-'"),
    ("dest_namespace", "VARCHAR", "'-'"),
    ("dest_type", "VARCHAR", "'net'"),
    ("dest_labels", "VARCHAR[]", "[]"),
    ("dest_service_namespace", "VARCHAR", "'-'"),
    ("dest_service_name", "VARCHAR", "'-'"),
    ("dest_service_port", "VARCHAR", "'-'"),
    ("dest_service_port_num", "INTEGER", None),
    ("dest_domains", "VARCHAR[]", "[]"),
    ("enforced_policies", "VARCHAR[]", "[]"),
    ("pending_policies", "VARCHAR[]", "[]"),
    ("bytes_in", "BIGINT", "0"),
    ("bytes_out", "BIGINT", "0"),
    ("packets_in", "BIGINT", "0"),
    ("packets_out", "BIGINT", "0"),
    ("num_flows", "BIGINT", "0"),
    ("num_flows_started", "BIGINT", "0"),
    ("num_flows_completed", "BIGINT", "0"),
    ("host", "VARCHAR", "'-'"),
    ("extra", "JSON", None),
)

COLUMN_NAMES: Final[tuple[str, ...]] = tuple(name for name, _, _ in COLUMNS)
RECORD_COLUMNS: Final[tuple[str, ...]] = COLUMN_NAMES[:-1]  # without "extra"

SCHEMA_VERSION: Final = 1

DDL: Final[tuple[str, ...]] = (
    "CREATE TABLE IF NOT EXISTS flows ("
    + ", ".join(
        f"{name} {kind}" + (" NOT NULL" if name in ("start_time", "end_time") else "")
        for name, kind, _ in COLUMNS
    )
    + ")",
    "CREATE TABLE IF NOT EXISTS ingest_batches ("
    "batch_id VARCHAR PRIMARY KEY, added BIGINT NOT NULL, ingested_at DOUBLE NOT NULL)",
    "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    # The edge rollup: the records that count once per connection (``_graph.COUNTED_ONCE``),
    # summed per hour of start time and per endpoint pair. The service graph and the top
    # talkers read it instead of the records, so their cost follows the number of distinct
    # edges, not the number of records.
    "CREATE TABLE IF NOT EXISTS edge_rollup (bucket BIGINT NOT NULL,"
    " source_type VARCHAR, source_namespace VARCHAR, source_name_aggr VARCHAR,"
    " dest_type VARCHAR, dest_namespace VARCHAR, dest_name_aggr VARCHAR, proto VARCHAR,"
    " action VARCHAR, bytes BIGINT, packets BIGINT, flows BIGINT)",
)

#: Seconds of start time per rollup bucket.
ROLLUP_BUCKET: Final = 3600

ROLLUP_KEYS: Final = (
    "source_type, source_namespace, source_name_aggr,"
    " dest_type, dest_namespace, dest_name_aggr, proto, action"
)
ROLLUP_SUMS: Final = (
    "sum(bytes_in + bytes_out) AS bytes, sum(packets_in + packets_out) AS packets,"
    " sum(num_flows) AS flows"
)

# The shape of one Calico flow-log document, as DuckDB's ``from_json`` reads it. Unknown fields
# are ignored (the fast path keeps only Calico's fields); ``extra`` is the store's own key for a
# record's uninterpreted fields when records come through ``FlowStore.ingest``.
_JSON_TYPES: Final[dict[str, str]] = {
    "source_labels": "STRUCT(labels VARCHAR[])",
    "dest_labels": "STRUCT(labels VARCHAR[])",
}


def json_structure() -> str:
    """The ``from_json`` structure of a Calico flow-log document (a JSON text)."""
    members: list[str] = []
    for name, kind, _ in COLUMNS:
        if name in ("enforced_policies", "pending_policies"):
            continue
        members.append(f'"{name}":"{_JSON_TYPES.get(name, kind)}"')
    members.append('"policies":"STRUCT(enforced_policies VARCHAR[], pending_policies VARCHAR[])"')
    return "{" + ",".join(members) + "}"


def staged_value(name: str, row: str = "r") -> str:
    """The SQL expression that reads column ``name`` from a parsed document: the struct
    ``row`` (the staged path), or the reader's own columns when ``row`` is empty."""
    default = dict((n, d) for n, _, d in COLUMNS)[name]
    prefix = f"{row}." if row else ""
    if name in ("source_labels", "dest_labels"):
        expression = f"{prefix}{name}.labels"
    elif name in ("enforced_policies", "pending_policies"):
        expression = f"{prefix}policies.{name}"
    else:
        expression = f"{prefix}{name}"
    return f"coalesce({expression}, {default})" if default is not None else expression


def valid_row(row: str = "r") -> str:
    """Whether a parsed document's required fields are present and valid (see
    :func:`staged_value` for ``row``)."""
    p = f"{row}." if row else ""
    return (
        f"coalesce({p}start_time IS NOT NULL AND {p}end_time IS NOT NULL"
        f" AND {p}action IN ('allow', 'deny') AND {p}reporter IN ('src', 'dst', 'fwd')"
        f" AND {p}proto IS NOT NULL AND {p}proto <> ''"
        f" AND coalesce({p}source_type, 'net') IN ('wep', 'hep', 'ns', 'net')"
        f" AND coalesce({p}dest_type, 'net') IN ('wep', 'hep', 'ns', 'net'), false)"
    )


#: Rows whose required fields are present and valid (``r`` is the staged struct).
VALID_ROW: Final = valid_row("r")


def _field_reasons(p: str) -> str:
    """The ``WHEN … THEN`` arms naming a record's first invalid required field (``p``: the
    prefix of its fields, such as ``r.``), ending with ``ELSE``."""
    return f"""  WHEN {p}start_time IS NULL THEN 'start_time: missing or not an integer'
  WHEN {p}end_time IS NULL THEN 'end_time: missing or not an integer'
  WHEN {p}action IS NULL THEN 'action: missing'
  WHEN {p}action NOT IN ('allow', 'deny') THEN 'action: ' || {p}action || ' is not allow or deny'
  WHEN {p}reporter IS NULL THEN 'reporter: missing'
  WHEN {p}reporter NOT IN ('src', 'dst', 'fwd')
    THEN 'reporter: ' || {p}reporter || ' is not src, dst or fwd'
  WHEN {p}proto IS NULL OR {p}proto = '' THEN 'proto: missing'
  WHEN coalesce({p}source_type, 'net') NOT IN ('wep', 'hep', 'ns', 'net')
    THEN 'source_type: ' || {p}source_type || ' is not wep, hep, ns or net'
  ELSE 'dest_type: ' || {p}dest_type || ' is not wep, hep, ns or net'
"""


#: Why a staged row is malformed (``bad_line`` is its text, ``r`` its parsed struct).
MALFORMED_REASON: Final = (
    "CASE\n  WHEN r IS NULL THEN 'not valid JSON'\n"
    "  WHEN json_type(bad_line) <> 'OBJECT' THEN 'not a JSON object'\n"
    + _field_reasons("r.")
    + "END"
)

#: Why a row of an Arrow batch (the table's own columns) is not a valid record.
ARROW_INVALID_REASON: Final = (
    "CASE\n  WHEN extra IS NOT NULL AND NOT json_valid(extra) THEN 'extra: not a JSON text'\n"
    + _field_reasons("")
    + "END"
)

#: The Arrow type of each DuckDB column type: what agents send (``FlowStore.ingest_arrow``).
ARROW_TYPE_NAMES: Final[dict[str, str]] = {
    "BIGINT": "int64",
    "INTEGER": "int32",
    "VARCHAR": "string",
    "VARCHAR[]": "list<string>",
    "JSON": "string",
}

#: Columns an Arrow batch must have (the others default as in ``COLUMNS``).
REQUIRED_COLUMNS: Final = ("start_time", "end_time", "action", "reporter", "proto")


def column_value(name: str) -> str:
    """The SQL expression for column ``name`` of a flat source (an Arrow batch conformed to
    :func:`palisade.flowstore._arrow.arrow_schema`): the value, or its default when NULL."""
    default = dict((n, d) for n, _, d in COLUMNS)[name]
    return f"coalesce({name}, {default})" if default is not None else name
