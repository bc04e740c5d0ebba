"""The compiled matcher (spec 1.3 semantics, and the code it generates)."""

from __future__ import annotations

import pytest

from palisade.selector import parse
from palisade.selector._ast import And, Has, Node, Not, Or
from palisade.selector._compile import compile_matcher, matcher_source

LABELS = {"a": "abc", "e": "", "q": 'say "hi"'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all()", True),
        ("global()", True),
        ("!all()", False),
        ("has(a)", True),
        ("has(e)", True),
        ("has(z)", False),
        ("a == 'abc'", True),
        ("a == 'ab'", False),
        ("z == ''", False),
        ("e == ''", True),
        ("a != 'abc'", False),
        ("a != 'x'", True),
        ("z != 'x'", True),
        ("z != ''", True),
        ("e != ''", False),
        ("a in {'abc', 'x'}", True),
        ("a in {'abc'}", True),
        ("a in {'x', 'y'}", False),
        ("a in {}", False),
        ("z in {'x'}", False),
        ("z in {''}", False),
        ("e in {''}", True),
        ("a not in {'abc', 'x'}", False),
        ("a not in {'x'}", True),
        ("a not in {}", True),
        ("z not in {}", True),
        ("z not in {'x'}", True),
        ("a contains 'b'", True),
        ("a contains 'abc'", True),
        ("a contains 'abcd'", False),
        ("a contains ''", True),
        ("e contains ''", True),
        ("z contains ''", False),
        ("a starts with 'ab'", True),
        ("a starts with 'bc'", False),
        ("a starts with ''", True),
        ("z starts with ''", False),
        ("a ends with 'bc'", True),
        ("a ends with 'ab'", False),
        ("e ends with ''", True),
        ("z ends with ''", False),
        ("q contains '\"hi\"'", True),
        ("q == 'say \"hi\"'", True),
        ("has(a) && has(z)", False),
        ("has(z) || has(a)", True),
        ("!(has(z) || has(a))", False),
        ("!has(z) && !has(y)", True),
        ("!!has(z)", False),
        ("!(!has(z))", False),
    ],
)
def test_semantics(text: str, expected: bool) -> None:
    selector = parse(text)
    assert selector.matches(LABELS) is expected
    assert selector.matcher(LABELS) is expected


def test_accepts_any_mapping() -> None:
    class Labels(dict[str, str]):
        pass

    assert parse("a == 'x' && b not in {'y'}").matches(Labels(a="x"))


def test_generated_code_has_no_builtins_or_injection() -> None:
    # Labels and values are embedded with repr(); hostile text stays a literal.
    hostile = "x') or __import__('os').system('true') or ('"
    selector = parse(f'a == "{hostile}"')
    assert not selector.matches({"a": "y"})
    assert selector.matches({"a": hostile})


def _nested(depth: int) -> Node:
    """A tree ``depth`` levels deep cycling through NOT, AND and OR."""
    node: Node = Has("leaf")
    for level in range(depth):
        kind = level % 3
        if kind == 0:
            node = Not(node)
        elif kind == 1:
            node = And((Has("always"), node))
        else:
            node = Or((Has("never"), node))
    return node


@pytest.mark.parametrize("depth", [1, 49, 50, 51, 199, 3000])
def test_deep_trees_are_split_into_functions(depth: int) -> None:
    tree = _nested(depth)
    source = matcher_source(tree)
    assert ("def _part" in source) is (depth >= 49)
    # The number of NOTs decides the result, since "always" is present and "never" absent.
    nots = (depth + 2) // 3
    match = compile_matcher(tree)
    assert match({"always": "", "leaf": ""}) is (nots % 2 == 0)
    assert match({"always": ""}) is (nots % 2 == 1)


def test_wide_trees() -> None:
    width = 5000
    text = " || ".join(f"k{i} == 'v'" for i in range(width))
    selector = parse(text)
    assert selector.matches({f"k{width - 1}": "v"})
    assert not selector.matches({"k0": "w"})
    assert isinstance(selector._root, Or) and len(selector._root.operands) == width
    assert not isinstance(selector._root, And)
