"""Talking to ``palisade server``: a small REST client, and the agents' flow shipper.

:class:`FlowShipper` is how an agent hands flow records to the server without losing any: each
batch is first written to a spool directory as one segment — an Apache Arrow IPC stream
(``.arrows``) with Calico's field names as columns, exactly the body sent — written to a
temporary name, fsynced, then renamed, so a segment is whole or absent; then sent with the
segment's name as its batch id, and deleted only after the server acknowledged it. A failed
send (server down, restarting, timing out) is retried with backoff, oldest segment first; an
agent restarted with the same spool directory sends what the previous run left. The server
acknowledges a batch id it has already stored without storing it again, so a retry after a lost
acknowledgement does not double anything. Segment names are unique (time in nanoseconds and
random bits), so a later batch never reuses an acknowledged id.

Segments that an earlier version spooled as Calico NDJSON (``.ndjson``) are still sent, as
NDJSON, in name (time) order with the Arrow ones and under the same batch-id scheme, so an
agent upgraded with a full spool loses nothing and a batch acknowledged before the upgrade is
not stored twice.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from palisade.flows import FlowRecord
from palisade.flowstore import ARROW_STREAM_MEDIA_TYPE, records_to_arrow, to_ipc_stream

DEFAULT_SERVER = "http://127.0.0.1:8470"
SERVER_ENV = "PALISADE_SERVER"


class ServerError(RuntimeError):
    """The server answered with an error (``status``), or could not be reached (``None``)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def server_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get(SERVER_ENV) or DEFAULT_SERVER


class ServerClient:
    """Synchronous client of the server's REST API."""

    def __init__(self, url: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = server_url(url).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"{self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json()
            except ValueError:
                detail = response.text
            raise ServerError(
                f"{method} {path}: {response.status_code} {detail}", response.status_code
            )
        return response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def ingest(
        self, body: bytes, batch_id: str | None = None, *, arrow: bool = False
    ) -> dict[str, Any]:
        """Send one batch: Calico NDJSON, or an Arrow IPC stream (``arrow``)."""
        headers = {"Content-Type": ARROW_STREAM_MEDIA_TYPE if arrow else "application/x-ndjson"}
        if batch_id is not None:
            headers["X-Palisade-Batch"] = batch_id
        result: dict[str, Any] = self._call("POST", "/flows/ingest", content=body, headers=headers)
        return result

    def flows(self, **params: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", "/flows", params={k: v for k, v in params.items() if v is not None}
        )
        return result

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json_body: Any = None, **params: Any) -> Any:
        return self._call(
            "POST", path, json=json_body, params={k: v for k, v in params.items() if v is not None}
        )

    def apply(self, text: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/apply", content=text.encode(), headers={"Content-Type": "application/yaml"}
        )
        return result


def encode_records(records: Iterable[FlowRecord]) -> bytes:
    """Calico-format NDJSON."""
    return b"".join(
        json.dumps(record.to_json(), separators=(",", ":")).encode() + b"\n" for record in records
    )


def encode_arrow(records: Iterable[FlowRecord]) -> bytes:
    """An Arrow IPC stream of the records (empty bytes for no records)."""
    table = records_to_arrow(records)
    return to_ipc_stream(table) if table.num_rows else b""


#: Spool segment suffixes: Arrow (written now) and NDJSON (written by earlier versions).
SEGMENT_SUFFIXES = (".arrows", ".ndjson")


class FlowShipper:
    """Spool, send, acknowledge, retry (see the module docstring)."""

    def __init__(
        self,
        spool: Path,
        url: str | None = None,
        *,
        node: str = "node",
        backoff: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0),
        timeout: float = 10.0,
    ) -> None:
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.url = server_url(url)
        self._backoff = tuple(backoff)
        self._timeout = timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self.sent_batches = 0
        self.rejected_batches = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="flow-shipper", daemon=True)
        self._thread.start()

    def add(self, records: Iterable[FlowRecord]) -> Path | None:
        """Spool one batch (nothing for an empty one); returns the segment."""
        body = encode_arrow(records)
        if not body:
            return None
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.arrows"
        temporary = self.spool / f".{name}.tmp"
        with temporary.open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        segment = self.spool / name
        os.replace(temporary, segment)
        self._idle.clear()
        self._wake.set()
        return segment

    def pending(self) -> list[Path]:
        return sorted(
            (path for path in self.spool.glob("*.*") if path.suffix in SEGMENT_SUFFIXES),
            key=lambda path: path.name,
        )

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every spooled segment is acknowledged (False: time ran out)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop sending; what is not acknowledged stays in the spool for the next run."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _reject(self, segment: Path, reason: str) -> None:
        rejected = self.spool / "rejected"
        rejected.mkdir(exist_ok=True)
        os.replace(segment, rejected / segment.name)
        (rejected / f"{segment.name}.reason").write_text(reason + "\n")
        self.rejected_batches += 1
        self.last_error = reason

    def _send(self, client: ServerClient, segment: Path) -> None:
        batch_id = f"{self.node}/{segment.stem}"
        if segment.suffix != ".arrows":
            client.ingest(segment.read_bytes(), batch_id=batch_id)
            return
        body = segment.read_bytes()
        answer = client.ingest(body, batch_id=batch_id, arrow=True)
        if answer.get("malformed"):
            # A server that predates Arrow ingest read the stream as NDJSON lines (and
            # remembered the id with nothing added): send the records again as NDJSON, under
            # an id of their own, so that nothing is lost in a rolling upgrade.
            from palisade.flowstore._arrow import read_batch
            from palisade.flowstore._store import _record_from_row

            table = read_batch(body)
            rows = zip(*(column.to_pylist() for column in table.columns), strict=True)
            records = [_record_from_row(row) for row in rows]
            client.ingest(encode_records(records), batch_id=f"{batch_id}.ndjson")

    def _run(self) -> None:
        failures = 0
        with ServerClient(self.url, timeout=self._timeout) as client:
            while not self._stop.is_set():
                segments = self.pending()
                if not segments:
                    self._idle.set()
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                segment = segments[0]
                try:
                    self._send(client, segment)
                except ServerError as exc:
                    if exc.status == 422:
                        # The server will never take this segment (it says why): keep it
                        # aside for inspection rather than block every later batch.
                        self._reject(segment, str(exc))
                        continue
                    self.failures += 1
                    self.last_error = str(exc)
                    delay = self._backoff[min(failures, len(self._backoff) - 1)]
                    failures += 1
                    self._stop.wait(delay)
                    continue
                except OSError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    delay = self._backoff[min(failures, len(self._backoff) - 1)]
                    failures += 1
                    self._stop.wait(delay)
                    continue
                failures = 0
                segment.unlink(missing_ok=True)
                self.sent_batches += 1
