"""Canonical printing (spec 1.6)."""

from __future__ import annotations

import pytest

from palisade.selector import parse
from palisade.selector._ast import Compare, CompareOp, Has, Membership, Node, Not, SetOp
from palisade.selector._printer import canonical, quote


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The table in spec 1.6.
        ("", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
        ("a startswith '\"'", "a starts with '\"'"),
        ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
        ("a in {'x\"y', 'b'}", 'a in {"b", \'x"y\'}'),
        ('a=="b"||c=="d"&&e=="f"', '(a == "b" || (c == "d" && e == "f"))'),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})',
        ),
        # Structure rules.
        ("(((a == 'b')))", 'a == "b"'),
        ("a == '1' && (b == '2' && c == '3')", '(a == "1" && (b == "2" && c == "3"))'),
        ("!(a == 'b')", '!a == "b"'),
        ("!(!has(a))", "!!has(a)"),
        ("a not in {}", "a not in {}"),
        # Set items sort by code point, which is UTF-8 byte order: "B" < "a" < "é" < "☃".
        ("a in {'☃', 'é', 'a', 'B'}", 'a in {"B", "a", "é", "☃"}'),
    ],
)
def test_canonical(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


def test_not_over_parenthesised_not_is_not_a_fixed_point() -> None:
    # Spec 1.6: Calico keeps NOT(NOT(x)) as two nodes, prints "!!x", and "!!x" re-parses
    # to x by the parity rule. Both halves of that behaviour are reproduced.
    once = parse("!(!has(a))")
    assert str(once) == "!!has(a)"
    twice = parse(str(once))
    assert str(twice) == "has(a)"
    assert once != twice
    assert once.matches({"a": "x"}) and twice.matches({"a": "x"})


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("v", '"v"'), ("", '""'), ("it's", '"it\'s"'), ('say "hi"', "'say \"hi\"'")],
)
def test_quote(value: str, quoted: str) -> None:
    assert quote(value) == quoted


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (Compare("k", CompareOp.ENDS_WITH, "x"), 'k ends with "x"'),
        (Membership("k", SetOp.NOT_IN, ("b", "a", "b")), 'k not in {"a", "b"}'),
        (Not(Not(Not(Has("k")))), "!!!has(k)"),
    ],
)
def test_canonical_of_built_trees(tree: Node, expected: str) -> None:
    assert canonical(tree) == expected
