"""Property tests: no input makes loading raise anything but the documented errors."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.model import (
    RESOURCE_CLASSES,
    LoadResult,
    ModelError,
    Problem,
    ResourceBase,
    load_text,
    parse_document,
)
from tests.model import test_model_calico, test_model_k8s

# PALISADE_FUZZ_EXAMPLES raises the example count for a longer local run.
EXAMPLES = int(os.environ.get("PALISADE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID_DOCS: list[dict[str, Any]] = [doc for _, doc in test_model_calico.VALID] + [
    doc for _, doc in test_model_k8s.VALID
]

KINDS = sorted(
    {(cls.API_VERSION, str(cls.model_fields["kind"].default)) for cls in RESOURCE_CLASSES}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        ["", "TCP", "Allow", "10.0.0.0/8", "::/0", "80:90", "http", "all()", "global()", "a == 'b'"]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["spec", "metadata", "name", "ports", "from"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


def check_result(result: LoadResult, text: str) -> None:
    assert isinstance(result, LoadResult)
    lines = len(text.splitlines()) + 1  # YAML also breaks lines at \r, NEL, LS and PS
    for problem in [*result.problems, *result.warnings]:
        assert isinstance(problem, Problem)
        assert isinstance(problem.reason, str) and problem.reason
        assert problem.document >= 0
        assert problem.line is None or 1 <= problem.line <= lines + 1
        str(problem)
    for resource in result.resources:
        assert isinstance(resource, ResourceBase)


def parse_or_problems(doc: Any) -> None:
    try:
        resource = parse_document(doc)
    except ModelError as err:
        assert err.problems
        for problem in err.problems:
            assert isinstance(problem, Problem) and problem.reason
            assert "function-" not in problem.path  # pydantic's validator names are dropped
        return
    assert parse_document(resource.to_document()) == resource


@FUZZ
@given(st.text())
def test_load_text_never_raises_on_text(text: str) -> None:
    check_result(load_text(text, "fuzz.yaml"), text)
    check_result(load_text(text, "fuzz.json"), text)


@FUZZ
@given(st.binary())
def test_load_text_never_raises_on_bytes(data: bytes) -> None:
    text = data.decode("latin-1")
    check_result(load_text(text, "fuzz.yaml"), text)
    check_result(load_text(text, "fuzz.json"), text)


@FUZZ
@given(json_values)
def test_parse_document_never_raises_on_json_values(value: Any) -> None:
    parse_or_problems(value)


@FUZZ
@given(st.sampled_from(KINDS), json_values, json_values)
def test_parse_document_never_raises_on_known_kinds(
    kind: tuple[str, str], metadata: Any, spec: Any
) -> None:
    parse_or_problems({"apiVersion": kind[0], "kind": kind[1], "metadata": metadata, "spec": spec})


def locations(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(locations(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(locations(item, (*prefix, index)))
    return found


def mutate(doc: Any, loc: tuple[Any, ...], operation: str, value: Any, key: str) -> Any:
    if not loc:
        return value
    doc = copy.deepcopy(doc)
    parent = doc
    for segment in loc[:-1]:
        parent = parent[segment]
    last = loc[-1]
    if operation == "replace":
        parent[last] = value
    elif operation == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = value
    return doc


@settings(max_examples=5 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_documents(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(VALID_DOCS))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        loc = data.draw(st.sampled_from(locations(doc)))
        operation = data.draw(st.sampled_from(["replace", "delete", "add"]))
        value = data.draw(json_values)
        key = data.draw(st.sampled_from(["x", "selector", "ports", "nets", "action", "name"]))
        doc = mutate(doc, loc, operation, value, key)
    parse_or_problems(doc)


@FUZZ
@given(st.lists(json_values, max_size=4))
def test_yaml_and_json_dumps_of_random_documents(documents: list[Any]) -> None:
    text = yaml.safe_dump_all(documents)
    check_result(load_text(text, "dump.yaml"), text)
    try:
        text = json.dumps(documents)
    except ValueError:
        return
    check_result(load_text(text, "dump.json"), text)
    lines = "\n".join(json.dumps(d) for d in documents)
    check_result(load_text(lines, "lines.json"), lines)


@FUZZ
@given(st.sampled_from(VALID_DOCS), st.sampled_from(["yaml", "json"]))
def test_valid_documents_load_from_text(doc: dict[str, Any], fmt: str) -> None:
    text = yaml.safe_dump(doc) if fmt == "yaml" else json.dumps(doc)
    result = load_text(text, f"doc.{fmt}")
    assert result.ok and len(result.resources) == 1
    assert result.resources[0] == parse_document(doc)


def test_unknown_null_key_in_a_loose_part_round_trips() -> None:
    # Found by the fuzzer: `spec.x: null` on a Deployment was kept as an extra field, then
    # dropped by to_document, so the resource was not equal to itself after a round trip.
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": []}},
            "x": None,
            "y": 1,
        },
    }
    resource = parse_document(doc)
    assert parse_document(resource.to_document()) == resource
    assert resource.to_document()["spec"]["y"] == 1
