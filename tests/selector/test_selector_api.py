"""The public Selector API: identity, IDs, rewrites and helpers."""

from __future__ import annotations

import copy
import pickle

import pytest

import palisade.selector as selector_package
from palisade.selector import ALL, Selector, and_selectors, normalise, parse


def test_public_names() -> None:
    assert sorted(selector_package.__all__) == sorted(
        ["ALL", "LabelIndex", "Selector", "SelectorError", "and_selectors", "normalise", "parse"]
    )


@pytest.mark.parametrize(
    ("text", "unique_id"),
    [
        ("all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ("", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
        ("!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
        ("! (has( b)||! has(a ))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
        ('!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
        ('a == "b"', "s:flMh0m0X_BowkAK_W3j3MgH8oQOsj3WxGDoXCQ"),
        ("a == 'b'", "s:flMh0m0X_BowkAK_W3j3MgH8oQOsj3WxGDoXCQ"),
    ],
)
def test_unique_id(text: str, unique_id: str) -> None:
    assert parse(text).unique_id == unique_id


def test_equality_and_hash_follow_the_canonical_form() -> None:
    first, second = parse("a=='b'&&has(c)"), parse('(a == "b") && has( c )')
    assert first == second and hash(first) == hash(second)
    assert len({first, second, parse("has(c) && a == 'b'")}) == 2
    assert first != '(a == "b" && has(c))'
    assert repr(first) == "Selector('(a == \"b\" && has(c))')"


def test_immutable_and_copyable() -> None:
    selector = parse("a in {'x', 'y'}")
    with pytest.raises(AttributeError):
        selector._root = parse("has(a)")._root  # type: ignore[misc]
    # CPython 3.11's frozen+slots dataclasses raise TypeError, not AttributeError, for
    # names that are not fields; either way nothing is stored.
    with pytest.raises((AttributeError, TypeError)):
        selector.anything = 1  # type: ignore[attr-defined]
    assert copy.copy(selector) is selector and copy.deepcopy(selector) is selector
    restored = pickle.loads(pickle.dumps(selector))
    assert restored == selector and restored.matches({"a": "y"})


def test_pickle_keeps_the_tree_not_just_the_text() -> None:
    # "!!has(a)" would re-parse to has(a); the tree must survive as NOT(NOT(has(a))).
    selector = parse("!(!has(a))")
    assert str(pickle.loads(pickle.dumps(selector))) == "!!has(a)"


def test_labels_used_and_is_all() -> None:
    selector = parse("a == 'x' || !has(b) && c in {'1'} && all() && d not in {} && e contains ''")
    assert selector.labels_used == frozenset("abcde")
    assert parse("all()").labels_used == frozenset()
    assert parse("").is_all and parse(" all( ) ").is_all and ALL.is_all
    assert not parse("global()").is_all
    assert not parse("all() && all()").is_all
    assert not parse("!all()").is_all


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("k == 'v' || has(x)", "visited/", '(visited/k == "v" || has(visited/x))'),
        (
            "a != 'v' && b contains 'c' && c starts with 'd' && d ends with 'e'",
            "pcns.",
            '(pcns.a != "v" && pcns.b contains "c" && pcns.c starts with "d" '
            '&& pcns.d ends with "e")',
        ),
        ("!(a in {'x'} || b not in {'y'})", "p/", '!(p/a in {"x"} || p/b not in {"y"})'),
        ("all() && global()", "pcsa.", "(all() && global())"),
        ("!(!has(a))", "x.", "!!has(x.a)"),
    ],
)
def test_with_label_prefix(text: str, prefix: str, expected: str) -> None:
    assert str(parse(text).with_label_prefix(prefix)) == expected


def test_with_label_prefix_rejects_non_label_characters() -> None:
    with pytest.raises(ValueError, match="non-label"):
        parse("has(a)").with_label_prefix('x "')
    selector = parse("has(a)")
    assert selector.with_label_prefix("") is selector


NS = "has(projectcalico.org/namespace)"
NOT_NS = "!has(projectcalico.org/namespace)"


@pytest.mark.parametrize(
    ("text", "all_with", "global_with", "expected"),
    [
        ("all()", NS, None, NS),
        ("global()", NS, NOT_NS, NOT_NS),
        ("(pcns.a == 'x' || all()) && global()", NS, None,
         '((pcns.a == "x" || has(projectcalico.org/namespace)) && global())'),
        ("!all() && global()", NS, NOT_NS,
         "(!has(projectcalico.org/namespace) && !has(projectcalico.org/namespace))"),
        # The replacement is kept as one operand, like a parenthesised group.
        ("all() && c == 'z'", "a == 'x' && b == 'y'", None,
         '((a == "x" && b == "y") && c == "z")'),
        ("all() || c == 'z'", "a == 'x' && b == 'y'", None,
         '((a == "x" && b == "y") || c == "z")'),
        ("has(all)", NS, NOT_NS, "has(all)"),
    ],
)  # fmt: skip
def test_replace_calls(
    text: str, all_with: str | None, global_with: str | None, expected: str
) -> None:
    replaced = parse(text).replace_calls(
        all_with=parse(all_with) if all_with is not None else None,
        global_with=parse(global_with) if global_with is not None else None,
    )
    assert str(replaced) == expected


def test_replace_calls_without_changes_returns_the_same_selector() -> None:
    selector = parse("has(a) && b == 'c'")
    assert selector.replace_calls(all_with=parse("has(x)")) is selector
    assert selector.replace_calls() is selector


def test_and_selectors() -> None:
    combined = and_selectors(parse('a=="1" || b=="2"'), parse('c=="3"'))
    assert str(combined) == '((a == "1" || b == "2") && c == "3")'
    nested = and_selectors(parse("a == '1' && b == '2'"), parse("has(c)"), ALL)
    assert str(nested) == '((a == "1" && b == "2") && has(c) && all())'
    # Spec 4.4's example, built from its parts.
    namespaced = and_selectors(
        parse("mylabel == 'selectme'"), parse("projectcalico.org/namespace == 'namespace2'")
    )
    policy = and_selectors(namespaced, parse("role == 'development'").with_label_prefix("pcsa."))
    assert str(policy) == str(
        parse(
            "((mylabel == 'selectme') && projectcalico.org/namespace == 'namespace2') "
            '&& pcsa.role == "development"'
        )
    )
    single = parse("has(a)")
    assert and_selectors(single) is single
    assert and_selectors() == ALL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  a=='b'\n", 'a == "b"'),
        ("\n\r\t a=='b' \u3000\u00a0\x85", 'a == "b"'),
        ("", "all()"),
        ("\n", "all()"),
        # Unparseable input comes back trimmed, not normalised.
        ("  a = 'b' \n", "a = 'b'"),
        ("a=='b'\n&&has(c)", "a=='b'\n&&has(c)"),
        # U+001F is not Unicode White_Space (Go keeps it), although str.strip() drops it.
        ("\x1fa=='b'", "\x1fa=='b'"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_parse_results_are_shared() -> None:
    assert parse("has(shared)") is parse("has(shared)")


def test_selector_is_constructible_only_from_trees() -> None:
    assert Selector(parse("has(a)")._root) == parse("has(a)")
