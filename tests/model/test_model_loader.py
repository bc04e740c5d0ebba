"""Loading YAML and JSON: documents, Lists, directories, problems with locations."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from palisade.model import (
    K8sNetworkPolicy,
    ModelError,
    Namespace,
    NetworkPolicy,
    Origin,
    Problem,
    load_paths,
    load_text,
    parse_document,
)


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


NS_A = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
NS_B = "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"


def test_problem_str() -> None:
    assert str(Problem("f.yaml", 2, "spec.selector", "bad", 7)) == "f.yaml:2: spec.selector: bad"
    assert str(Problem("f.yaml", 1, "", "invalid YAML")) == "f.yaml:1: invalid YAML"


def test_model_error_carries_problems() -> None:
    with pytest.raises(ModelError) as caught:
        parse_document({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "A"}})
    assert isinstance(caught.value, ValueError)
    [problem] = caught.value.problems
    assert (problem.file, problem.document, problem.path) == ("<document>", 1, "metadata.name")
    assert str(problem) in str(caught.value)


def test_parse_document_labels_problems() -> None:
    with pytest.raises(ModelError) as caught:
        parse_document({"kind": "Namespace"}, source="x.yaml", document=3)
    [problem] = caught.value.problems
    assert str(problem) == "x.yaml:3: apiVersion: required field is missing"


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        ([], "", "expected a mapping"),
        ("text", "", "expected a mapping"),
        ({}, "apiVersion", "required field is missing"),
        ({"apiVersion": "v1"}, "kind", "required field is missing"),
        ({"apiVersion": 1, "kind": "Pod"}, "apiVersion", "must be a string"),
        ({"apiVersion": "v1", "kind": "Widget"}, "kind", "unknown kind 'Widget'"),
        ({"apiVersion": "apps/v1beta1", "kind": "Deployment"}, "apiVersion", "expected 'apps/v1'"),
        (
            {"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy"},
            "apiVersion",
            "unsupported",
        ),
        ({"apiVersion": "v1", "kind": "List", "items": []}, "kind", "use load_text"),
    ],
)
def test_parse_document_rejects(doc: object, path: str, reason: str) -> None:
    with pytest.raises(ModelError) as caught:
        parse_document(doc)  # type: ignore[arg-type]
    assert any(p.path == path and reason in p.reason for p in caught.value.problems), (
        caught.value.problems
    )


def test_multi_document_yaml_counts_empty_documents() -> None:
    text = "---\n" + NS_A + "---\n---\n# only a comment\n---\n" + NS_B.replace("b}", "B}")
    result = load_text(text, "multi.yaml")
    assert [r.name for r in result.resources] == ["a"]
    [problem] = result.problems
    assert (problem.document, problem.path, problem.line) == (4, "metadata.name", 11)


def test_problem_line_numbers_point_at_the_field() -> None:
    text = dedent(
        """
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata:
          name: p
        spec:
          ingress:
          - action: Allow
            source:
              selector: "app == 'a'"
          - action: Allow
            destination:
              ports:
              - 80
              - 99999
        """
    )
    problems = load_text(text, "p.yaml").problems
    assert [(p.path, p.line) for p in problems] == [("spec.ingress[1].destination.ports[1]", 14)]


def test_missing_field_line_is_the_parent() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: false\n"
    [problem] = load_text(text, "p.yaml").problems
    assert (problem.path, problem.line) == ("spec.containers", 4)


def test_malformed_yaml_reports_line_and_keeps_earlier_documents() -> None:
    text = NS_A + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: [b\n"
    result = load_text(text, "bad.yaml")
    assert [r.name for r in result.resources] == ["a"]
    [problem] = result.problems
    assert problem.document == 2
    assert problem.reason.startswith("invalid YAML")
    assert problem.line == 8
    assert problem.path == ""


def test_yaml_tab_indentation() -> None:
    [problem] = load_text("a:\n\tb: 1\n", "t.yaml").problems
    assert problem.reason.startswith("invalid YAML") and problem.line == 2


def test_duplicate_yaml_keys() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n"
    result = load_text(text, "d.yaml")
    assert not result.resources
    [problem] = result.problems
    assert (problem.path, problem.line) == ("metadata.name", 5)
    assert "duplicate key" in problem.reason


def test_yaml_merge_keys_are_allowed() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: Namespace
        metadata:
          <<: {name: a}
          labels: &l {x: y}
        """
    )
    result = load_text(text, "m.yaml")
    assert result.ok, result.problems
    assert result.resources[0].name == "a"


def test_timestamps_stay_strings_and_other_yaml_types_are_rejected() -> None:
    text = NS_A.replace("{name: a}", "\n  name: a\n  creationTimestamp: 2024-01-02T03:04:05Z")
    result = load_text(text, "t.yaml")
    assert result.ok
    assert result.resources[0].metadata.creation_timestamp == "2024-01-02T03:04:05Z"
    binary = load_text("a: !!binary aGVsbG8=\n", "b.yaml")
    assert "unsupported YAML type" in binary.problems[0].reason
    python = load_text("a: !!python/object:os.system {}\n", "b.yaml")
    assert python.problems and python.problems[0].reason.startswith("invalid YAML")


def test_recursive_alias_and_alias_bomb() -> None:
    assert "recursive" in load_text("a: &x [*x]\n", "r.yaml").problems[0].reason
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    result = load_text("\n".join(bomb) + "\n", "bomb.yaml")
    assert [p.reason for p in result.problems] == ["document is too large"]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    deep = "[" * 150 + "]" * 150
    assert load_text(deep, "deep.yaml").problems
    assert load_text(deep, "deep.json").problems
    very_deep = "[" * 100_000
    assert load_text(very_deep, "deep.yaml").problems
    assert load_text(very_deep, "deep.json").problems
    nested: object = {}
    for _ in range(200):
        nested = {"a": nested}
    with pytest.raises(ModelError, match="nested deeper"):
        parse_document(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "env": [nested]}]},
            }
        )


def test_not_a_mapping_document() -> None:
    result = load_text("- a\n- b\n---\n42\n", "l.yaml")
    assert [(p.document, p.reason) for p in result.problems] == [
        (1, "expected a mapping (a Kubernetes object), got a list"),
        (2, "expected a mapping (a Kubernetes object), got int"),
    ]


def test_kind_list_is_flattened_with_item_paths() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: List
        metadata: {resourceVersion: ""}
        items:
        - apiVersion: v1
          kind: Namespace
          metadata: {name: a}
        - apiVersion: v1
          kind: Namespace
          metadata: {name: Bad}
        - apiVersion: v1
          kind: List
          items:
          - {apiVersion: v1, kind: Namespace, metadata: {name: c}}
        """
    )
    result = load_text(text, "list.yaml")
    assert [r.name for r in result.resources] == ["a", "c"]
    [problem] = result.problems
    assert (problem.document, problem.path, problem.line) == (1, "items[1].metadata.name", 10)
    assert result.origins[("Namespace", None, "c")] == Origin(
        "list.yaml", 1, "items[2].items[0]", 14
    )


def test_typed_list_fills_in_kind_and_api_version() -> None:
    text = json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicyList",
            "items": [{"metadata": {"name": "a", "namespace": "x"}, "spec": {"podSelector": {}}}],
        }
    )
    result = load_text(text, "np.json")
    assert result.ok, result.problems
    assert isinstance(result.resources[0], K8sNetworkPolicy)


def test_list_without_list_items() -> None:
    result = load_text("apiVersion: v1\nkind: List\nitems: {a: 1}\n", "l.yaml")
    assert [p.path for p in result.problems] == ["items"]
    assert load_text("apiVersion: v1\nkind: List\n", "l.yaml").ok


def test_json_single_object_list_and_stream() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
    single = load_text(json.dumps(ns), "one.json")
    assert [r.name for r in single.resources] == ["a"]
    many = [dict(ns, metadata={"name": n}) for n in "abc"]
    listed = load_text(json.dumps(many, indent=2), "list.json")
    assert [r.name for r in listed.resources] == ["a", "b", "c"]
    stream = load_text("\n".join(json.dumps(m) for m in many) + "\n", "lines.json")
    assert [r.name for r in stream.resources] == ["a", "b", "c"]


def test_json_problems_have_document_and_line() -> None:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b", "bogus": 1}},
    ]
    listed = load_text(json.dumps(docs, indent=2), "list.json")
    [problem] = listed.problems
    assert (problem.document, problem.path) == (2, "metadata.bogus")
    assert problem.line == 14
    stream = load_text("\n".join(json.dumps(d) for d in docs) + "\n{oops\n", "lines.json")
    assert [(p.document, p.path, p.line) for p in stream.problems] == [
        (2, "metadata.bogus", 2),
        (3, "", 3),
    ]
    assert stream.problems[1].reason.startswith("invalid JSON")


def test_problems_are_ordered_by_document() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: A}\n---\n[unclosed\n"
    result = load_text(text, "o.yaml")
    assert [p.document for p in result.problems] == [1, 2]


def test_duplicates_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS_A)
    (tmp_path / "b.yaml").write_text(NS_B + "---\n" + NS_A)
    result = load_paths([tmp_path])
    assert sorted(r.name for r in result.resources) == ["a", "b"]
    [problem] = result.problems
    assert problem.file == str(tmp_path / "b.yaml")
    assert (problem.document, problem.path, problem.line) == (2, "metadata.name", 7)
    assert "duplicate Namespace a" in problem.reason
    assert str(tmp_path / "a.yaml") in problem.reason
    assert result.origins[("Namespace", None, "a")].file == str(tmp_path / "a.yaml")


def test_duplicates_use_the_effective_namespace() -> None:
    doc = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p%s}\n"
    result = load_text(doc % "" + "---\n" + doc % ", namespace: default", "d.yaml")
    assert len(result.resources) == 1
    assert "duplicate NetworkPolicy default/p" in result.problems[0].reason


def test_same_name_in_different_api_groups_is_not_a_duplicate() -> None:
    calico = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\n"
    k8s = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p}\nspec: {podSelector: {}}\n"
    )
    result = load_text(calico + "---\n" + k8s, "both.yaml")
    assert result.ok, result.problems
    assert [type(r) for r in result.resources] == [NetworkPolicy, K8sNetworkPolicy]


def test_directories_are_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "deep").mkdir()
    (tmp_path / "b.yml").write_text(NS_B)
    (tmp_path / "a.yaml").write_text(NS_A)
    (tmp_path / "notes.txt").write_text("not: yaml: at all: [")
    (tmp_path / "z" / "c.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}})
    )
    (tmp_path / "z" / "deep" / "d.YAML").write_text(NS_A.replace("a}", "d}"))
    result = load_paths([tmp_path])
    assert result.ok, result.problems
    assert [r.name for r in result.resources] == ["a", "b", "c", "d"]


def test_explicit_files_and_missing_paths(tmp_path: Path) -> None:
    manifest = tmp_path / "policy.txt"
    manifest.write_text(NS_A)
    result = load_paths([manifest, str(tmp_path / "missing.yaml")])
    assert [r.name for r in result.resources] == ["a"]
    [problem] = result.problems
    assert (problem.document, problem.reason) == (0, "no such file or directory")


def test_unreadable_encoding(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"apiVersion: v1\nkind: \xff\xfe\n")
    [problem] = load_paths([bad]).problems
    assert (problem.document, problem.reason) == (0, "file is not UTF-8 (byte 21)")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + NS_A.encode())
    assert load_paths([bom]).ok


def test_unknown_fields_in_workloads_are_warnings() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: ns}
        spec:
          containers:
          - name: c
            futureField: 1
          someNewPodField: {}
        status:
          podIP: 10.0.0.1
          newStatus: x
        extraTopLevel: 1
        """
    )
    result = load_text(text, "pod.yaml")
    assert result.ok, result.problems
    assert sorted((w.path, w.line) for w in result.warnings) == [
        ("extraTopLevel", 12),
        ("spec.containers[0].futureField", 7),
        ("spec.someNewPodField", 8),
        ("status.newStatus", 11),
    ]
    pod = result.resources[0]
    assert pod.to_document()["spec"]["containers"][0]["futureField"] == 1


def test_unknown_fields_in_policies_are_errors_not_warnings() -> None:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p}\nspec: {podSelector: {}, ingresss: []}\n"
    )
    result = load_text(text, "p.yaml")
    assert not result.warnings
    assert [(p.path, p.reason) for p in result.problems] == [("spec.ingresss", "unknown field")]


def test_several_problems_in_several_documents_are_all_reported() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: Namespace
        metadata: {name: A, labels: {"a b": c}}
        ---
        apiVersion: v1
        kind: Gadget
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: g, namespace: x}
        spec: {selector: "has(", ingress: [{action: Maybe}]}
        """
    )
    problems = load_text(text, "many.yaml").problems
    assert [(p.document, p.path) for p in problems] == [
        (1, "metadata.name"),
        (1, 'metadata.labels["a b"]'),
        (2, "kind"),
        (3, "metadata.namespace"),
        (3, "spec.selector"),
        (3, "spec.ingress[0].action"),
    ]


def test_empty_inputs() -> None:
    for text in ("", "\n", "---\n", "# comment\n", "---\n...\n"):
        result = load_text(text, "e.yaml")
        assert result.ok and not result.resources and not result.warnings
    assert load_text("", "e.json").ok
    assert load_text("  \n", "e.json").ok
    assert load_text("null", "n.json").ok


def test_resources_keep_their_types() -> None:
    result = load_text(NS_A, "ns.yaml")
    assert isinstance(result.resources[0], Namespace)
    assert result.origins[("Namespace", None, "a")] == Origin("ns.yaml", 1, "", 1)


def test_non_finite_numbers_are_problems() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec:\n  containers: [{name: c}]\n  overhead: {cpu: .inf}\n"
    )
    result = load_text(text, "p.yaml")
    assert [(p.path, p.line) for p in result.problems] == [("spec.overhead.cpu", 6)]
    assert "finite" in result.problems[0].reason


def test_control_characters_report_a_line() -> None:
    [problem] = load_text("a: 1\nb: \x07\n", "c.yaml").problems
    assert (problem.line, problem.reason) == (2, "invalid YAML: unacceptable character #x0007")
