"""Fixtures for the datastore tests: a real etcd on loopback, and a store of each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.etcd_server import EtcdServer, etcd_server  # noqa: F401  (fixture)

from palisade.datastore import Store, open_store


@pytest.fixture(params=["sqlite-file", pytest.param("etcd", marks=pytest.mark.etcd)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of each backend."""
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return server.store_url()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened
