"""Builders and assertions shared by the model tests."""

from __future__ import annotations

from typing import Any

import pytest

from palisade.model import ModelError, Problem, Resource, parse_document

CALICO = "projectcalico.org/v3"


def calico(
    kind: str, spec: Any = None, *, name: str = "p", namespace: str | None = None, **extra: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    doc: dict[str, Any] = {"apiVersion": CALICO, "kind": kind, "metadata": metadata}
    if spec is not None:
        doc["spec"] = spec
    doc.update(extra)
    return doc


def np(spec: Any = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("namespace", "ns")
    return calico("NetworkPolicy", spec, **kw)


def gnp(spec: Any = None, **kw: Any) -> dict[str, Any]:
    return calico("GlobalNetworkPolicy", spec, **kw)


def ingress(*rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return np({"ingress": list(rules), **spec})


def egress(*rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return np({"egress": list(rules), **spec})


def k8s_np(spec: Any, *, name: str = "p", namespace: str = "ns") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
    }
    if spec is not None:
        doc["spec"] = spec
    return doc


def problems_of(doc: Any) -> list[Problem]:
    with pytest.raises(ModelError) as caught:
        parse_document(doc)
    assert caught.value.problems, "ModelError without problems"
    return caught.value.problems


def assert_problem(doc: Any, path: str, reason: str) -> None:
    problems = problems_of(doc)
    matching = [p for p in problems if p.path == path and reason in p.reason]
    assert matching, f"no problem at {path!r} containing {reason!r}; got: " + "; ".join(
        f"{p.path!r}: {p.reason}" for p in problems
    )


def assert_valid(doc: Any) -> Resource:
    try:
        resource = parse_document(doc)
    except ModelError as err:
        pytest.fail(f"unexpected problems:\n{err}")
    # Every valid resource survives a round trip through its document form.
    assert parse_document(resource.to_document()) == resource
    return resource
