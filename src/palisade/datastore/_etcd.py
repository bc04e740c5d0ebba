"""The distributed backend: etcd v3 through its JSON gRPC gateway.

Key layout: ``<prefix><kind>/<namespace or _cluster>/<name>``, value the document as JSON.
Revisions are etcd's own: a resource's revision is its key's ``mod_revision`` and
``EtcdStore.revision`` is the header revision of a read, so they line up with ``etcdctl``.
That also means the revision of an empty store is not 0 (a fresh etcd starts at 1) and that
writes under other prefixes advance it too.

Reads and writes go through ``etcd3gw``, the client the design names; it finds the gateway's
API path by asking ``/version`` (``/v3/`` for etcd 3.4, ``/v3beta/`` for 3.3) and that works
against the etcd 3.4 that Debian ships. Every write is one etcd transaction, so a batch is
atomic and shares one revision.

Watching does not use ``etcd3gw.Watcher``: checked against etcd 3.4, it drops the gateway's
``canceled`` message, so a watch from a compacted revision blocks forever instead of failing;
it ends silently when the stream breaks (the reader thread's exception is lost in a futures
executor), so a consumer never learns that it has to reconnect; and its request has no connect
timeout. The Store contract needs all three (``RevisionCompacted``, ``DatastoreUnavailable``,
bounded waits), so ``_follow`` reads the gateway's newline-delimited JSON watch stream itself
over ``http.client``, reusing the API path ``etcd3gw`` discovered.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import etcd3gw
from etcd3gw import exceptions as etcd_exceptions
from etcd3gw.types import KeyValue, RangeResponse, TxnResponse

from ._types import (
    CLUSTER_SCOPE,
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

DEFAULT_PREFIX = "/palisade/"
# An unreachable etcd must fail fast; a reachable one may take a while to answer during a
# leader election (etcd's own request timeout is several seconds).
CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 15.0
_PAGE_SIZE = 500

_T = TypeVar("_T")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | bytes) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix`` (etcd's range_end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # etcd: from the key to the end of the keyspace
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _reason(exc: BaseException) -> str:
    """The most specific cause in an exception chain ("Connection refused", not a repr)."""
    if isinstance(exc, etcd_exceptions.ConnectionTimeoutError | TimeoutError):
        return (
            f"timed out (connect timeout {CONNECT_TIMEOUT} s, request timeout {REQUEST_TIMEOUT} s)"
        )
    best: str | None = None
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            best = current.strerror
        linked = (current.__cause__, current.__context__, getattr(current, "reason", None))
        pending.extend(e for e in (*linked, *current.args) if isinstance(e, BaseException))
    if best is not None:
        return best
    if isinstance(exc, etcd_exceptions.Etcd3Exception) and exc.detail_text:
        return _gateway_message(exc.detail_text)
    return str(exc) or type(exc).__name__


def _gateway_message(body: str | bytes) -> str:
    """The ``message`` of a gateway error body, or the body itself."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text.strip()[:300]


class EtcdStore(StoreBase):
    """A ``Store`` in etcd v3 under a key prefix."""

    def __init__(self, host: str, port: int, prefix: str = DEFAULT_PREFIX, *, url: str) -> None:
        self._host = host
        self._port = port
        self._url = url
        self._prefix = prefix.encode("utf-8")
        self._client = etcd3gw.Etcd3Client(host=host, port=port, timeout=REQUEST_TIMEOUT)
        # requests takes a (connect, read) pair; etcd3gw hands the value through unchanged.
        self._client.timeout = (CONNECT_TIMEOUT, REQUEST_TIMEOUT)  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._watch_sockets: set[socket.socket] = set()
        self._closed = False
        try:
            self._current_revision()  # fail now, with the URL, if etcd is not there
        except BaseException:
            self._client.session.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def _unavailable(self, reason: str) -> DatastoreUnavailable:
        return DatastoreUnavailable(f"etcd datastore {self._url} is unavailable: {reason}")

    def _call(self, request: Callable[[], _T]) -> _T:
        """Run one gateway request, turning client exceptions into datastore errors."""
        if self._closed:
            raise DatastoreError(f"{self._url}: the store is closed")
        try:
            return request()
        except (
            etcd_exceptions.ConnectionFailedError,
            etcd_exceptions.ConnectionTimeoutError,
            etcd_exceptions.InternalServerError,
        ) as exc:
            raise self._unavailable(_reason(exc)) from None
        except etcd_exceptions.Etcd3Exception as exc:
            detail = _gateway_message(exc.detail_text) if exc.detail_text else str(exc)
            raise DatastoreError(
                f"etcd datastore {self._url} refused the request: {detail}"
            ) from None
        except (OSError, ValueError) as exc:  # requests' own errors, undecodable replies
            if isinstance(exc, DatastoreError):
                raise
            raise self._unavailable(_reason(exc)) from None

    def _range(self, payload: dict[str, Any]) -> RangeResponse:
        client = self._client
        return self._call(
            lambda: cast(RangeResponse, client.post(client.get_url("/kv/range"), json=payload))
        )

    def _txn(self, operations: list[dict[str, Any]]) -> TxnResponse:
        client = self._client
        txn: dict[str, Any] = {"compare": [], "success": operations, "failure": []}
        return self._call(lambda: client.transaction(txn))

    def _etcd_key(self, key: ResourceKey) -> bytes:
        namespace = key.namespace or CLUSTER_SCOPE
        return self._prefix + f"{key.kind}/{namespace}/{key.name}".encode()

    def _resource_key(self, etcd_key: bytes) -> ResourceKey | None:
        """The key stored under ``etcd_key``, or None for a key of some other layout."""
        if not etcd_key.startswith(self._prefix):
            return None
        parts = etcd_key[len(self._prefix) :].decode("utf-8", "replace").split("/")
        if len(parts) != 3:
            return None
        kind, namespace, name = parts
        try:
            return ResourceKey(kind, None if namespace == CLUSTER_SCOPE else namespace, name)
        except DatastoreError:
            return None

    def _current_revision(self) -> int:
        # A linearizable read of one key: cheap, and its header carries the store revision.
        response = self._range({"key": _b64(self._prefix), "keys_only": True})
        return int(response["header"]["revision"])

    def _stored(self, key: ResourceKey, kv: KeyValue) -> StoredResource:
        revision = int(kv["mod_revision"])
        return StoredResource(key, decode_value(_unb64(kv.get("value", "")), revision), revision)

    # -- reads ----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._current_revision()

    def get(self, key: ResourceKey) -> StoredResource | None:
        response = self._range({"key": _b64(self._etcd_key(key))})
        kvs = response.get("kvs", [])
        return self._stored(key, kvs[0]) if kvs else None

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[StoredResource]:
        start = self._prefix
        if kind is not None:
            start += f"{kind}/".encode()
            if namespace is not None:
                start += f"{namespace}/".encode()
        end = _prefix_end(start)
        found: list[StoredResource] = []
        revision: int | None = None
        while True:
            payload: dict[str, Any] = {
                "key": _b64(start),
                "range_end": _b64(end),
                "limit": _PAGE_SIZE,
            }
            if revision is not None:
                payload["revision"] = revision  # later pages read the first page's snapshot
            response = self._range(payload)
            revision = int(response["header"]["revision"])
            kvs = response.get("kvs", [])
            for kv in kvs:
                key = self._resource_key(_unb64(kv["key"]))
                if key is None or (kind is not None and key.kind != kind):
                    continue
                if namespace is not None and key.namespace != namespace:
                    continue
                found.append(self._stored(key, kv))
            if not response.get("more") or not kvs:
                break
            start = _unb64(kvs[-1]["key"]) + b"\x00"
        found.sort(key=lambda stored: stored.key.sort_key())
        return found

    # -- writes ---------------------------------------------------------------------------

    def _write(
        self,
        puts: Sequence[tuple[ResourceKey, Mapping[str, Any]]],
        deletes: Sequence[ResourceKey],
    ) -> tuple[int, int]:
        check_batch(puts, deletes)
        # Everything is encoded before etcd sees anything, and then sent as one transaction.
        operations: list[dict[str, Any]] = [
            {
                "request_put": {
                    "key": _b64(self._etcd_key(key)),
                    "value": _b64(encode_value(key, value).encode("utf-8")),
                }
            }
            for key, value in puts
        ]
        operations += [
            {"request_delete_range": {"key": _b64(self._etcd_key(key))}} for key in deletes
        ]
        if not operations:
            return self._current_revision(), 0
        response = self._txn(operations)
        changed = len(puts)
        for result in response.get("responses", []):
            deleted = result.get("response_delete_range")
            if deleted is not None:
                changed += int(deleted.get("deleted", 0))
        return int(response["header"]["revision"]), changed

    def compact(self, revision: int) -> None:
        """Drop etcd's history below ``revision`` (etcd compaction; it is cluster-wide)."""
        client = self._client
        url = client.get_url("/kv/compaction")
        try:
            self._call(lambda: client.post(url, json={"revision": revision, "physical": True}))
        except DatastoreUnavailable:
            raise
        except DatastoreError as exc:
            if "has been compacted" not in str(exc):
                raise

    # -- watch ----------------------------------------------------------------------------

    def _follow(
        self, from_revision: int, kinds: frozenset[str] | None, deadline: float | None
    ) -> Iterator[WatchEvent]:
        if self._closed:
            return
        start = self._prefix
        if kinds is not None and len(kinds) == 1:
            start += f"{next(iter(kinds))}/".encode()
        request = {
            "create_request": {
                "key": _b64(start),
                "range_end": _b64(_prefix_end(start)),
                # etcd reads 0 as "from now"; from_revision >= 0 keeps this at 1 or more.
                "start_revision": max(from_revision, 0) + 1,
            }
        }
        path = self._call(lambda: self._client.api_path) + "watch"
        position = from_revision
        connection = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        response: http.client.HTTPResponse | None = None
        sock: socket.socket | None = None
        try:
            try:
                connection.request(
                    "POST", path, json.dumps(request), {"Content-Type": "application/json"}
                )
                sock = connection.sock
                with self._lock:
                    if self._closed:
                        return
                    if sock is not None:
                        self._watch_sockets.add(sock)
                if sock is not None:
                    sock.settimeout(REQUEST_TIMEOUT)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unavailable(f"cannot start a watch: {_reason(exc)}") from None
            if response.status != 200:
                raise self._unavailable(
                    f"watch refused with HTTP {response.status}: "
                    f"{_gateway_message(response.read())}"
                )
            while True:
                if sock is not None:
                    if deadline is None:
                        sock.settimeout(None)
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        sock.settimeout(remaining)
                try:
                    line = response.readline()
                except TimeoutError:
                    return
                except (OSError, http.client.HTTPException) as exc:
                    if self._closed:
                        return
                    raise self._unavailable(f"watch stream broke: {_reason(exc)}") from None
                if not line:
                    if self._closed:
                        return
                    raise self._unavailable("etcd ended the watch stream")
                if not line.strip():
                    continue
                for event in self._watch_events(line, position):
                    position = event.revision
                    if kinds is None or event.key.kind in kinds:
                        yield event
        finally:
            if sock is not None:
                with self._lock:
                    self._watch_sockets.discard(sock)
            if response is not None:
                response.close()
            connection.close()

    def _watch_events(self, line: bytes, position: int) -> builtins.list[WatchEvent]:
        """The events in one message of the watch stream."""
        try:
            message = json.loads(line)
        except ValueError:
            raise self._unavailable(f"unreadable watch message {line[:200]!r}") from None
        if "error" in message:
            raise self._unavailable(f"watch failed: {_gateway_message(line)}")
        result = message.get("result", {})
        if result.get("canceled"):
            compact_revision = int(result.get("compact_revision", 0))
            if compact_revision:
                raise RevisionCompacted(position, compact_revision)
            reason = result.get("cancel_reason") or "no reason given"
            raise self._unavailable(f"etcd cancelled the watch: {reason}")
        events: builtins.list[WatchEvent] = []
        for raw in result.get("events", []):
            kv = raw["kv"]
            key = self._resource_key(_unb64(kv["key"]))
            if key is None:
                continue
            revision = int(kv["mod_revision"])
            if raw.get("type") == "DELETE":
                events.append(WatchEvent("DELETE", key, None, revision))
            else:
                value = decode_value(_unb64(kv.get("value", "")), revision)
                events.append(WatchEvent("PUT", key, value, revision))
        return events

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sockets = list(self._watch_sockets)
        for sock in sockets:
            # Wakes a watcher blocked in a read; it sees the store closed and ends.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._client.session.close()

    def __repr__(self) -> str:
        return f"EtcdStore({self._url!r})"
