"""ResourceKey: its text form, how it is read from a document, its order and its checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from palisade.datastore import DatastoreError, ResourceKey, StoredResource, WatchEvent


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (ResourceKey("NetworkPolicy", "default", "allow-dns"), "NetworkPolicy/default/allow-dns"),
        (ResourceKey("GlobalNetworkPolicy", None, "deny-all"), "GlobalNetworkPolicy/deny-all"),
        (ResourceKey("Tier", None, "security.v1"), "Tier/security.v1"),
    ],
)
def test_text_form_round_trips(key: ResourceKey, text: str) -> None:
    assert str(key) == text
    assert ResourceKey.parse(text) == key


@pytest.mark.parametrize(
    "text", ["", "NetworkPolicy", "a/b/c/d", "/name", "Kind/", "Kind//name", "Kind/ns/"]
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(DatastoreError):
        ResourceKey.parse(text)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "prod"}},
            ResourceKey("NetworkPolicy", "prod", "p"),
        ),
        (
            {"kind": "GlobalNetworkPolicy", "metadata": {"name": "g"}},
            ResourceKey("GlobalNetworkPolicy", None, "g"),
        ),
        (
            {"kind": "HostEndpoint", "metadata": {"name": "h", "namespace": ""}},
            ResourceKey("HostEndpoint", None, "h"),
        ),
    ],
)
def test_of_reads_kind_namespace_and_name(document: dict[str, Any], expected: ResourceKey) -> None:
    assert ResourceKey.of(document) == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"metadata": {"name": "p"}}, "no 'kind'"),
        ({"kind": "NetworkPolicy"}, "no 'metadata'"),
        ({"kind": "NetworkPolicy", "metadata": {}}, "metadata.name"),
        ({"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": 3}}, "namespace"),
        ({"kind": "NetworkPolicy", "metadata": {"name": "a/b"}}, "'/'"),
    ],
)
def test_of_explains_what_is_missing(document: dict[str, Any], message: str) -> None:
    with pytest.raises(DatastoreError, match=message):
        ResourceKey.of(document)


@pytest.mark.parametrize(
    ("kind", "namespace", "name"),
    [
        ("", None, "n"),
        ("Kind", None, ""),
        ("Kind", "", "n"),
        ("Ki/nd", None, "n"),
        ("Kind", "ns", "a/b"),
        ("Kind", "_cluster", "n"),
        ("Kind", None, "nul\x00"),
    ],
)
def test_constructor_rejects_segments_that_cannot_be_stored(
    kind: str, namespace: str | None, name: str
) -> None:
    with pytest.raises(DatastoreError):
        ResourceKey(kind, namespace, name)


def test_keys_are_values() -> None:
    key = ResourceKey("NetworkPolicy", "default", "p")
    assert key == ResourceKey("NetworkPolicy", "default", "p")
    assert len({key, ResourceKey("NetworkPolicy", "default", "p")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.name = "q"  # type: ignore[misc]
    assert not hasattr(key, "__dict__")


def test_keys_sort_by_kind_then_cluster_scope_first_then_namespace_then_name() -> None:
    keys = [
        ResourceKey("NetworkPolicy", "prod", "a"),
        ResourceKey("NetworkPolicy", "dev", "b"),
        ResourceKey("NetworkPolicy", None, "z"),
        ResourceKey("GlobalNetworkPolicy", None, "x"),
        ResourceKey("NetworkPolicy", "dev", "a"),
    ]
    assert [str(k) for k in sorted(keys)] == [
        "GlobalNetworkPolicy/x",
        "NetworkPolicy/z",
        "NetworkPolicy/dev/a",
        "NetworkPolicy/dev/b",
        "NetworkPolicy/prod/a",
    ]
    assert ResourceKey("A", None, "a") <= ResourceKey("A", "ns", "a")


def test_records_are_frozen_and_slotted() -> None:
    key = ResourceKey("Thing", None, "t")
    stored = StoredResource(key, {"a": 1}, 3)
    event = WatchEvent("DELETE", key, None, 4)
    for record in (stored, event):
        assert not hasattr(record, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.revision = 9  # type: ignore[misc]
