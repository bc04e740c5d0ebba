"""Flow records as Apache Arrow: the schema agents send and the store reads, and conversions.

An Arrow batch of flow records has Calico's field names as columns, the same as the store's
``flows`` table (``_schema.COLUMNS``): times and counters ``int64``, ports ``int32``, strings
``string``, labels, domains and policy hits ``list<string>``, ``extra`` a JSON text of a
record's uninterpreted fields. Batches travel as Arrow IPC *streams*
(``application/vnd.apache.arrow.stream``). A batch may leave out optional columns (they take
Calico's defaults, as in a JSON document) and may use other widths of integer, large or
dictionary-encoded strings (cast on arrival); it may not carry columns the schema does not
know, or values of another kind (a string where a number belongs).

pyarrow is imported when first needed, so that importing the store stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from palisade.flows import FlowRecord

from ._schema import ARROW_TYPE_NAMES, COLUMN_NAMES, COLUMNS, RECORD_COLUMNS, REQUIRED_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

#: The media type of an Arrow IPC stream (IANA registration of Apache Arrow).
ARROW_STREAM_MEDIA_TYPE = "application/vnd.apache.arrow.stream"


class ArrowBatchError(ValueError):
    """An Arrow batch that is not a set of flow records; nothing of it was stored."""


@cache
def arrow_schema() -> pa.Schema:
    """The Arrow schema of a batch of flow records (the ``flows`` table's columns)."""
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "string": pa.string(),
        "list<string>": pa.list_(pa.string()),
    }
    return pa.schema([(name, types[ARROW_TYPE_NAMES[kind]]) for name, kind, _ in COLUMNS])


def records_to_arrow(records: Iterable[FlowRecord]) -> pa.Table:
    """Flow records as an Arrow table of :func:`arrow_schema` (``extra`` as JSON text)."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {name: [] for name in COLUMN_NAMES}
    extra = columns["extra"]
    record_columns = [(name, columns[name]) for name in RECORD_COLUMNS]
    for record in records:
        for name, values in record_columns:
            values.append(getattr(record, name))
        extra.append(
            json.dumps(dict(record.extra), separators=(",", ":")) if record.extra else None
        )
    return pa.Table.from_pydict(columns, schema=arrow_schema())


def to_ipc_stream(table: pa.Table) -> bytes:
    """``table`` as the bytes of one Arrow IPC stream."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def read_batch(source: Any) -> pa.Table:
    """An Arrow table from a table, a record batch, the bytes of an IPC stream, or the path of
    a file holding one (memory-mapped); :class:`ArrowBatchError` if it is none of these."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    try:
        if isinstance(source, (str, Path)):
            with pa.memory_map(str(source)) as mapped:
                return pa.ipc.open_stream(mapped).read_all()
        if isinstance(source, (bytes, bytearray, memoryview)):
            return pa.ipc.open_stream(pa.py_buffer(source)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise ArrowBatchError(f"not an Arrow IPC stream: {exc}") from None
    raise TypeError(f"an Arrow batch: a table, record batch, IPC bytes or path, not {source!r}")


def conform(table: pa.Table) -> pa.Table:
    """``table`` with exactly :func:`arrow_schema`'s columns, in order: missing optional
    columns as nulls (the store gives them their defaults), other integer widths and string
    encodings cast. :class:`ArrowBatchError` names every column that does not fit."""
    import pyarrow as pa

    schema = arrow_schema()
    names = table.column_names
    problems: list[str] = []
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.append(f"duplicate column(s): {', '.join(duplicated)}")
    unknown = [name for name in names if name not in schema.names]
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    columns: list[Any] = []
    for expected in schema:
        if expected.name not in names or expected.name in duplicated:
            columns.append(pa.nulls(table.num_rows, expected.type))
            continue
        column = table.column(expected.name)
        if column.type != expected.type:
            if not _same_kind(column.type, expected.type):
                problems.append(f"column {expected.name}: {column.type}, expected {expected.type}")
                continue
            try:
                column = column.cast(expected.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                problems.append(f"column {expected.name}: {exc}")
                continue
        columns.append(column)
    if problems:
        raise ArrowBatchError("; ".join(problems))
    return pa.Table.from_arrays(columns, schema=schema)


def _same_kind(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type ``actual`` may be cast to ``expected``: integers to integers,
    strings (large, view, dictionary-encoded) to strings, lists of strings to lists; a column
    of nulls to anything."""
    import pyarrow as pa

    types = pa.types
    if types.is_null(actual):
        return True
    if types.is_dictionary(actual):
        return _same_kind(actual.value_type, expected)
    if types.is_integer(expected):
        return bool(types.is_integer(actual))
    if types.is_string(expected):
        return bool(types.is_string(actual) or types.is_large_string(actual)) or (
            str(actual) == "string_view"
        )
    if types.is_list(expected):
        is_list = types.is_list(actual) or types.is_large_list(actual)
        return bool(is_list) and _same_kind(actual.value_type, expected.value_type)
    return False
