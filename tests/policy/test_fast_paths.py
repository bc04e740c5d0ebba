"""The speed-only shortcuts give exactly what the plain paths give.

- ``palisade.model._loader._YamlLoader`` builds plain strings, mappings and sequences itself
  and memoises implicit tag resolution; every value must equal PyYAML's safe constructor's
  (with the same resolvers and rejected tags), and every error must be the same error.
- ``Cluster.from_documents`` shares compiled selectors and entity rules between the policies
  of one compilation (``compile_memo``); the compiled policies must equal those compiled
  without sharing, and nothing may be shared between two compilations.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from palisade.model._loader import _YamlLoader
from palisade.policy import Cluster
from palisade.policy import _translate as translate
from palisade.policy.synthetic import generate_cluster


class _Reference(yaml.SafeLoader):
    """The safe constructor with _YamlLoader's resolvers and constructors, no shortcuts."""


_Reference.yaml_implicit_resolvers = _YamlLoader.yaml_implicit_resolvers
_Reference.yaml_constructors = _YamlLoader.yaml_constructors


def _load(loader: type[yaml.SafeLoader], text: str) -> tuple[str, Any]:
    try:
        return "ok", list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as err:
        return "error", (type(err).__name__, getattr(err, "problem", None))


YAML_CASES = [
    "a: 1\nb: [x, 2, 3.5, true, null, ~, '7', \"8\"]\nc: {d: e}\n",
    "when: 2001-12-14\nhex: 0x1f\noctal: 0o17\nsep: 1_000\ninf: .inf\nempty:\n",
    "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
    "shared: &s [1, 2]\nagain: *s\n",
    "1: one\nnull: none\ntrue: yes\n",
    "? [1, 2]\n: unhashable\n",
    "loop: &l [*l]\n",
    "data: !!binary aGVsbG8=\n",
    "tagged: !!str 42\nset: !!set {a, b}\n",
    "unknown: !custom {a: 1}\n",
    "dup: 1\ndup: 2\n",
    "a: \"1\"\nb: 1\nc: 'true'\nd: true\ne: !!str 5\nf: ! 5\ng: ! x\n",
    "--- {a: 1}\n--- [b]\n--- c\n---\n",
]


@pytest.mark.parametrize("text", YAML_CASES)
def test_fast_yaml_loader_equals_the_safe_constructor(text: str) -> None:
    fast, reference = _load(_YamlLoader, text), _load(_Reference, text)
    assert repr(fast) == repr(reference)


def test_fast_yaml_loader_keeps_aliases_shared() -> None:
    (data,) = yaml.load_all("a: &x {k: [1]}\nb: *x\n", Loader=_YamlLoader)
    assert data["a"] is data["b"]


def test_fast_yaml_loader_on_a_generated_cluster() -> None:
    documents = generate_cluster(
        namespaces=6, pods=40, policies=30, tiers=0, seed=3, kubernetes_only=True, realistic=True
    )
    text = yaml.safe_dump_all(documents, sort_keys=False)
    assert list(yaml.load_all(text, Loader=_YamlLoader)) == documents


def _compiled(documents: list[dict[str, Any]]) -> list[Any]:
    cluster = Cluster.from_documents(documents)
    assert cluster.policies
    return [*cluster.policies, *cluster.endpoints, *cluster.profiles.values()]


@pytest.mark.parametrize("kubernetes_only", [False, True])
def test_compile_memo_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, kubernetes_only: bool
) -> None:
    documents = generate_cluster(
        namespaces=5, pods=30, policies=60, tiers=2, seed=9, kubernetes_only=kubernetes_only
    )
    shared = _compiled(documents)
    assert translate._MEMO.get() is None  # nothing outlives a compilation

    class _NoMemo:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr("palisade.policy._cluster.compile_memo", _NoMemo)
    assert _compiled(documents) == shared
