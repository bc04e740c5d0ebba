"""Datastore URLs: what each form opens, and the messages for the ones that are wrong."""

from __future__ import annotations

import pytest

from palisade.datastore import DatastoreError, ResourceKey, SqliteStore, open_store
from palisade.datastore._url import EtcdLocation, SqliteLocation, parse_url


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("sqlite:///state.db", SqliteLocation("state.db")),
        ("sqlite:///var/palisade.db", SqliteLocation("var/palisade.db")),
        ("sqlite:////var/lib/palisade/state.db", SqliteLocation("/var/lib/palisade/state.db")),
        ("sqlite://:memory:", SqliteLocation(":memory:")),
        ("SQLITE://:memory:", SqliteLocation(":memory:")),
        ("etcd://127.0.0.1:2379", EtcdLocation("127.0.0.1", 2379, "/palisade/")),
        ("etcd://etcd.internal:2379/", EtcdLocation("etcd.internal", 2379, "/palisade/")),
        ("etcd://etcd:12379/calico/v3", EtcdLocation("etcd", 12379, "/calico/v3/")),
        ("etcd://etcd:2379/tenant-a/", EtcdLocation("etcd", 2379, "/tenant-a/")),
        ("etcd://etcd", EtcdLocation("etcd", 2379, "/palisade/")),
        ("etcd://[::1]:2379/p", EtcdLocation("::1", 2379, "/p/")),
    ],
)
def test_parse_url(url: str, location: SqliteLocation | EtcdLocation) -> None:
    assert parse_url(url) == location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("state.db", "no scheme"),
        ("postgres://db/palisade", "unknown scheme 'postgres'"),
        ("sqlite://host/state.db", "no host"),
        ("sqlite:///", "no database file name"),
        ("sqlite:////var/lib/", "no database file name"),
        ("sqlite:///state.db?mode=ro", "no query"),
        ("etcd://", "no etcd host"),
        ("etcd://:2379/p", "no etcd host"),
        ("etcd://etcd:notaport", "bad port"),
        ("etcd://etcd:99999", "bad port"),
        ("etcd://user:secret@etcd:2379", "credentials"),
        ("etcd://etcd:2379/p?x=1", "no query"),
        ("etcd://etcd:2379/a//b", "empty segment"),
    ],
)
def test_bad_urls_say_what_is_wrong_and_what_is_expected(url: str, message: str) -> None:
    with pytest.raises(DatastoreError, match=message) as raised:
        open_store(url)
    assert "etcd://host:port[/prefix]" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_memory_stores_are_private() -> None:
    with open_store("sqlite://:memory:") as first, open_store("sqlite://:memory:") as second:
        assert isinstance(first, SqliteStore)
        first.put(ResourceKey.parse("Thing/a"), {"x": 1})
        assert second.list() == []
        assert first.revision == 1
        assert second.revision == 0
