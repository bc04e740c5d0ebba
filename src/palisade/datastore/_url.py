"""Datastore URLs: which backend, and where.

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (three slashes and a
  relative path, four for an absolute one, as SQLAlchemy spells them);
- ``sqlite://:memory:``, a private in-memory store for tests;
- ``etcd://host:port[/prefix]``, keys under ``prefix`` (default ``/palisade/``).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from ._etcd import DEFAULT_PREFIX, EtcdStore
from ._sqlite import MEMORY, SqliteStore
from ._types import DatastoreError, Store

_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite://:memory: or etcd://host:port[/prefix]"
_ETCD_DEFAULT_PORT = 2379


@dataclass(frozen=True, slots=True)
class SqliteLocation:
    path: str  # a file path, or ":memory:"


@dataclass(frozen=True, slots=True)
class EtcdLocation:
    host: str
    port: int
    prefix: str


def _bad(url: str, why: str) -> DatastoreError:
    return DatastoreError(f"bad datastore URL {url!r}: {why} (expected {_FORMS})")


def parse_url(url: str) -> SqliteLocation | EtcdLocation:
    """Where a datastore URL points; raises DatastoreError saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise _bad(str(url), "empty")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _bad(url, "no scheme")
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _parse_sqlite(url, rest)
    if scheme == "etcd":
        return _parse_etcd(url)
    raise _bad(url, f"unknown scheme {scheme!r}")


def _parse_sqlite(url: str, rest: str) -> SqliteLocation:
    # Not urllib.parse: ":memory:" is no host, and a path is taken literally.
    if "?" in rest or "#" in rest:
        raise _bad(url, "SQLite URLs take no query or fragment")
    if rest == MEMORY:
        return SqliteLocation(MEMORY)
    if not rest.startswith("/"):
        raise _bad(url, "SQLite URLs have no host; the path follows 'sqlite:///'")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise _bad(url, "no database file name")
    return SqliteLocation(path)


def _parse_etcd(url: str) -> EtcdLocation:
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise _bad(url, "etcd URLs take no query or fragment")
    if parts.username is not None or parts.password is not None:
        raise _bad(url, "credentials in etcd URLs are not supported")
    if not parts.hostname:
        raise _bad(url, "no etcd host")
    try:
        port = parts.port
    except ValueError as exc:
        raise _bad(url, f"bad port: {exc}") from None
    prefix = parts.path
    if prefix in ("", "/"):
        prefix = DEFAULT_PREFIX
    elif "//" in prefix:
        raise _bad(url, "empty segment in the key prefix")
    elif not prefix.endswith("/"):
        prefix += "/"
    return EtcdLocation(parts.hostname, _ETCD_DEFAULT_PORT if port is None else port, prefix)


def open_store(url: str) -> Store:
    """Open the datastore a URL names.

    Raises ``DatastoreError`` for a malformed URL and ``DatastoreUnavailable`` (a subclass) when
    the backend cannot be opened or reached.
    """
    location = parse_url(url)
    if isinstance(location, SqliteLocation):
        return SqliteStore(location.path, url=url)
    return EtcdStore(location.host, location.port, location.prefix, url=url)
