"""The etcd backend against a real etcd 3.4: key layout, prefixes, failures and recovery."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from palisade.datastore import (
    DatastoreError,
    DatastoreUnavailable,
    EtcdStore,
    ResourceKey,
    WatchEvent,
    open_store,
)

if TYPE_CHECKING:
    from tests.etcd_server import EtcdServer

pytestmark = pytest.mark.timeout(90)


def gateway(server: EtcdServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A raw call to etcd's JSON gateway, to look at what the store wrote."""
    request = urllib.request.Request(
        f"{server.client_url}/v3/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def raw_keys(server: EtcdServer) -> dict[str, Any]:
    reply = gateway(server, "kv/range", {"key": b64("\0"), "range_end": b64("\0")})
    return {
        base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"]))
        for kv in reply.get("kvs", [])
    }


@pytest.mark.etcd
def test_key_layout_and_values(etcd_server: EtcdServer) -> None:
    with open_store(etcd_server.store_url("/calico/v3")) as store:
        store.put(ResourceKey("NetworkPolicy", "prod", "allow"), {"spec": {"order": 1}})
        store.put(ResourceKey("GlobalNetworkPolicy", None, "deny"), {"spec": {}})
    assert raw_keys(etcd_server) == {
        "/calico/v3/NetworkPolicy/prod/allow": {"spec": {"order": 1}},
        "/calico/v3/GlobalNetworkPolicy/_cluster/deny": {"spec": {}},
    }


@pytest.mark.etcd
def test_default_prefix_is_palisade(etcd_server: EtcdServer) -> None:
    with open_store(f"etcd://127.0.0.1:{etcd_server.client_port}") as store:
        store.put(ResourceKey("Thing", None, "t"), {})
    assert list(raw_keys(etcd_server)) == ["/palisade/Thing/_cluster/t"]


@pytest.mark.etcd
def test_revisions_are_etcds_own(etcd_server: EtcdServer) -> None:
    with open_store(etcd_server.store_url()) as store:
        revision = store.put(ResourceKey("Thing", None, "t"), {})
        header = gateway(etcd_server, "kv/range", {"key": b64("/test/Thing/_cluster/t")})
        assert int(header["header"]["revision"]) == revision == store.revision
        assert int(header["kvs"][0]["mod_revision"]) == revision


@pytest.mark.etcd
def test_prefixes_keep_stores_apart(etcd_server: EtcdServer) -> None:
    with (
        open_store(etcd_server.store_url("/a/")) as first,
        open_store(etcd_server.store_url("/a-b/")) as second,
    ):
        start = first.revision
        first.put(ResourceKey("Thing", None, "in-a"), {})
        second.put(ResourceKey("Thing", None, "in-a-b"), {})
        assert [str(i.key) for i in first.list()] == ["Thing/in-a"]
        assert [str(i.key) for i in second.list()] == ["Thing/in-a-b"]
        assert [str(e.key) for e in first.watch(start, timeout=0.5)] == ["Thing/in-a"]


@pytest.mark.etcd
def test_keys_of_another_layout_under_the_prefix_are_ignored(etcd_server: EtcdServer) -> None:
    gateway(etcd_server, "kv/put", {"key": b64("/test/stray"), "value": b64("{}")})
    gateway(etcd_server, "kv/put", {"key": b64("/test/a/b/c/d"), "value": b64("{}")})
    with open_store(etcd_server.store_url()) as store:
        store.put(ResourceKey("Thing", None, "t"), {})
        assert [str(i.key) for i in store.list()] == ["Thing/t"]
        assert [str(e.key) for e in store.watch(0, timeout=0.5)] == ["Thing/t"]


@pytest.mark.etcd
def test_list_pages_through_many_keys(
    etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palisade.datastore import _etcd

    monkeypatch.setattr(_etcd, "_PAGE_SIZE", 7)
    with open_store(etcd_server.store_url()) as store:
        store.apply([(ResourceKey("Thing", "ns", f"t{n:02}"), {"n": n}) for n in range(30)])
        store.put(ResourceKey("Other", None, "o"), {})
        things = store.list("Thing")
        assert [i.value["n"] for i in things] == list(range(30))
        assert len(store.list()) == 31


@pytest.mark.etcd
def test_batch_larger_than_etcds_txn_limit_is_refused_whole(etcd_server: EtcdServer) -> None:
    # etcd caps a transaction at --max-txn-ops (128 by default); the batch must not half-apply.
    with open_store(etcd_server.store_url()) as store:
        before = store.revision
        batch: list[tuple[ResourceKey, dict[str, Any]]] = [
            (ResourceKey("Thing", None, f"t{n}"), {}) for n in range(200)
        ]
        with pytest.raises(DatastoreError, match="too many operations"):
            store.apply(batch)
        assert store.revision == before
        assert store.list() == []


@pytest.mark.etcd
def test_watch_fails_when_etcd_dies_and_resumes_after_restart(etcd_server: EtcdServer) -> None:
    key = ResourceKey("Thing", None, "t")
    url = etcd_server.store_url()
    store = open_store(url)
    received: list[WatchEvent] = []
    failure: list[BaseException] = []
    first_event = threading.Event()

    start = store.revision

    def consume() -> None:
        try:
            for event in store.watch(start):
                received.append(event)
                first_event.set()
        except DatastoreUnavailable as exc:
            failure.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        store.put(key, {"n": 0})
        assert first_event.wait(10)
        etcd_server.kill()
        consumer.join(timeout=10)
        assert not consumer.is_alive()
        assert failure, "the watch must report that etcd went away"
        assert url in str(failure[0])

        began = time.monotonic()
        with pytest.raises(DatastoreUnavailable, match="Connection refused") as raised:
            store.get(key)
        assert time.monotonic() - began < 3
        assert url in str(raised.value)
    finally:
        store.close()
        consumer.join(timeout=10)

    etcd_server.start()  # same data directory and ports
    last_seen = received[-1].revision
    with open_store(url) as writer:
        writer.put(key, {"n": 1})
        writer.delete(key)
    with open_store(url) as resumed:
        rest = list(resumed.watch(last_seen, timeout=1))
    assert [(e.type, e.value["n"] if e.value else None) for e in rest] == [
        ("PUT", 1),
        ("DELETE", None),
    ]


# -- etcd that is not there ------------------------------------------------------------------


def test_refused_connection_is_unavailable_at_once() -> None:
    with socket.socket() as probe:  # a port that nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"etcd://127.0.0.1:{port}/test/"
    began = time.monotonic()
    with pytest.raises(DatastoreUnavailable) as raised:
        open_store(url)
    assert time.monotonic() - began < 2
    message = str(raised.value)
    assert url in message
    assert "Connection refused" in message
    assert "Traceback" not in message and "HTTPConnectionPool" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full, so new connections hang in the handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            # Linux queues backlog + 1 connections; further SYNs are dropped, not refused.
            for _ in range(2):
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.5)
                try:
                    filler.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_unreachable_etcd_times_out_within_two_seconds(unanswered_port: int) -> None:
    url = f"etcd://127.0.0.1:{unanswered_port}"
    began = time.monotonic()
    with pytest.raises(DatastoreUnavailable, match="timed out") as raised:
        open_store(url)
    elapsed = time.monotonic() - began
    assert elapsed < 2 + 1.0, f"took {elapsed:.1f} s"
    assert url in str(raised.value)


@pytest.mark.etcd
def test_store_type(etcd_server: EtcdServer) -> None:
    with open_store(etcd_server.store_url()) as store:
        assert isinstance(store, EtcdStore)
        assert repr(store) == f"EtcdStore({etcd_server.store_url()!r})"
