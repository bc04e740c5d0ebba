"""Grammar, tree shape and error reporting (spec 1.2, 1.4, 1.5)."""

from __future__ import annotations

import pickle

import pytest

from palisade.selector import SelectorError, parse
from palisade.selector._ast import (
    All,
    And,
    Compare,
    CompareOp,
    Global,
    Has,
    Membership,
    Node,
    Not,
    Or,
    SetOp,
)
from palisade.selector._parser import parse_tree

A = Compare("a", CompareOp.EQ, "1")
B = Compare("b", CompareOp.EQ, "2")
C = Compare("c", CompareOp.EQ, "3")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("", All()),
        (" \t ", All()),
        ("global()", Global()),
        ("(((a == '1')))", A),
        ("a == '1' && b == '2' && c == '3'", And((A, B, C))),
        ("a == '1' && (b == '2' && c == '3')", And((A, And((B, C))))),
        ("(a == '1' && b == '2') && c == '3'", And((And((A, B)), C))),
        ("a == '1' || b == '2' && c == '3'", Or((A, And((B, C))))),
        ("a == '1' && b == '2' || c == '3'", Or((And((A, B)), C))),
        ("!a == '1'", Not(A)),
        ("!!a == '1'", A),
        ("!!!a == '1'", Not(A)),
        ("! ! !a == '1'", Not(A)),
        ("!(a == '1')", Not(A)),
        ("!(!a == '1')", Not(Not(A))),
        ("!!(a == '1' || b == '2')", Or((A, B))),
        ("!(a == '1' || b == '2')", Not(Or((A, B)))),
        ("!has(x) || x starts with 'p' && r in {'a','b'}", Or((
            Not(Has("x")),
            And((Compare("x", CompareOp.STARTS_WITH, "p"), Membership("r", SetOp.IN, ("a", "b")))),
        ))),
        ("a in {}", Membership("a", SetOp.IN, ())),
        ("a not in {'x',}", Membership("a", SetOp.NOT_IN, ("x",))),
        ("a in {'b', 'a', 'b'}", Membership("a", SetOp.IN, ("a", "b"))),
    ],
)  # fmt: skip
def test_tree_shape(text: str, tree: Node) -> None:
    assert parse_tree(text) == tree


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("a == 1", 5, "expected string literal after '=='"),
        ("a == %", 5, "unexpected character '%'"),
        ("a == b", 5, "expected string literal after '=='"),
        ("a in 'x'", 5, "expected '{' after 'in'"),
        ("a in {'x' 'y'}", 10, "expected ',' or '}' in set, found string literal"),
        ("a in {,}", 6, "expected string literal or '}' in set, found ','"),
        ("()", 1, "expected an expression after '(', found ')'"),
        (")", 0, "expected an expression after start of selector, found ')'"),
        ("!", 1, "expected an expression after '!', found end of input"),
        ("has(a) &&", 9, "expected an expression after '&&', found end of input"),
        ("has(a) has(b)", 7, "unexpected 'has(…)'; expected '&&', '||', ')' or end of input"),
        ("(has(a)", 7, "expected ')' to close the '(' at position 0"),
        ("has(a))", 6, "unmatched ')'"),
        ("'b1' == b", 0, "expected an expression after start of selector, found string literal"),
        ("a", 1, "expected an operator after the label "
         "('==', '!=', 'contains', 'starts with', 'ends with', 'in' or 'not in')"),
    ],
)  # fmt: skip
def test_error_position_and_reason(text: str, position: int, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.position, error.reason) == (position, reason)
    assert str(error) == f"position {position}: {reason}"


def test_error_pickles() -> None:
    with pytest.raises(SelectorError) as caught:
        parse("a == b")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.position, copy.reason, str(copy)) == (5, caught.value.reason, str(caught.value))


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    depth = 5000
    negated = parse("!(" * depth + "has(a)" + ")" * depth)
    assert str(negated) == "!" * depth + "has(a)"
    assert negated.matches({"a": ""}) and not negated.matches({})
    assert parse("(" * depth + "has(a)" + ")" * depth) == parse("has(a)")
    unbalanced = "(" * depth + "has(a)" + ")" * (depth - 1)
    with pytest.raises(SelectorError, match="expected '\\)'"):
        parse(unbalanced)
