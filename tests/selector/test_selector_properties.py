"""Property tests: printing round-trips, parse robustness, compiled vs interpreted."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.selector import Selector, SelectorError, parse
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
from palisade.selector._compile import compile_matcher
from palisade.selector._parser import parse_tree
from palisade.selector._printer import canonical

# A small label vocabulary so generated selectors and label maps overlap; it includes
# operator words, which are valid labels.
LABEL_NAMES = ["a", "b", "c", "in", "not", "has", "all", "contains", "x.y/z-1", "_"]
labels = st.sampled_from(LABEL_NAMES) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_./-", min_size=1, max_size=12
)
# Values may hold one kind of quote (a value with both cannot be written), spaces,
# backslashes, braces, non-ASCII and control characters.
values = st.text(alphabet='ab "\\{},é☃\n\t', max_size=4) | st.text(max_size=6)
printable_values = values.filter(lambda value: not ('"' in value and "'" in value))

leaves: st.SearchStrategy[Node] = st.one_of(
    st.just(All()),
    st.just(Global()),
    st.builds(Has, labels),
    st.builds(Compare, labels, st.sampled_from(CompareOp), printable_values),
    st.builds(
        Membership,
        labels,
        st.sampled_from(SetOp),
        st.lists(printable_values, max_size=4).map(tuple),
    ),
)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    operands = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, operands), st.builds(Or, operands))


trees = st.recursive(leaves, _extend, max_leaves=20)
label_maps = st.dictionaries(
    st.sampled_from(LABEL_NAMES), st.sampled_from(["", "a", "b", "ab", '"', "é"]) | values
)


def evaluate(node: Node, label_map: Mapping[str, str]) -> bool:
    """Reference interpreter, written straight from the table in spec 1.3."""
    if isinstance(node, All | Global):
        return True
    if isinstance(node, Has):
        return node.label in label_map
    if isinstance(node, Compare):
        if node.op is CompareOp.NE:
            return label_map.get(node.label) != node.value
        if node.label not in label_map:
            return False
        value = label_map[node.label]
        if node.op is CompareOp.EQ:
            return value == node.value
        if node.op is CompareOp.CONTAINS:
            return node.value in value
        if node.op is CompareOp.STARTS_WITH:
            return value.startswith(node.value)
        return value.endswith(node.value)
    if isinstance(node, Membership):
        present_in = node.label in label_map and label_map[node.label] in node.values
        return present_in if node.op is SetOp.IN else not present_in
    if isinstance(node, Not):
        return not evaluate(node.operand, label_map)
    if isinstance(node, And):
        return all(evaluate(operand, label_map) for operand in node.operands)
    return any(evaluate(operand, label_map) for operand in node.operands)


def collapse_double_not(node: Node) -> Node:
    """The tree that printing ``node`` and parsing it back gives (spec 1.6).

    Printing NOT(NOT(x)) gives "!!x", which parses by parity, so every run of directly
    nested NOTs keeps only its parity. Nothing else changes.
    """
    if isinstance(node, Not):
        count = 0
        inner: Node = node
        while isinstance(inner, Not):
            count += 1
            inner = inner.operand
        inner = collapse_double_not(inner)
        return Not(inner) if count % 2 else inner
    if isinstance(node, And | Or):
        return type(node)(tuple(collapse_double_not(operand) for operand in node.operands))
    return node


@given(trees)
@settings(deadline=None)
def test_canonical_form_reparses_to_the_same_tree_up_to_not_parity(tree: Node) -> None:
    expected = collapse_double_not(tree)
    reparsed = parse_tree(canonical(tree))
    assert reparsed == expected
    # With no NOT directly over a NOT, printing is a fixed point and equality holds.
    assert canonical(expected) == canonical(reparsed)
    if expected == tree:
        assert parse(canonical(tree)) == Selector(tree)


@given(trees, label_maps)
@settings(max_examples=300, deadline=None)
def test_compiled_matcher_agrees_with_reference_interpreter(
    tree: Node, label_map: dict[str, str]
) -> None:
    expected = evaluate(tree, label_map)
    assert compile_matcher(tree)(label_map) is expected
    # Printing and re-parsing never changes the answer.
    assert parse(canonical(tree)).matches(label_map) is expected


@given(trees, label_maps, st.sampled_from(["pcns.", "pcsa.", "visited/"]))
@settings(deadline=None)
def test_label_prefix_is_renaming(tree: Node, label_map: dict[str, str], prefix: str) -> None:
    prefixed = Selector(tree).with_label_prefix(prefix)
    renamed = {prefix + key: value for key, value in label_map.items()}
    assert prefixed.matches(renamed) is evaluate(tree, label_map)
    assert prefixed.labels_used == {prefix + label for label in Selector(tree).labels_used}


def _check_parse_only_raises_selector_error(text: str) -> None:
    try:
        selector = parse(text)
    except SelectorError as error:
        assert 0 <= error.position <= len(text)
        return
    # Whatever parses prints to something that parses, and one more round is stable.
    again = parse(str(selector))
    assert str(parse(str(again))) == str(again)


@given(st.text())
@settings(deadline=None)
def test_parse_arbitrary_text(text: str) -> None:
    _check_parse_only_raises_selector_error(text)


@given(st.binary())
@settings(deadline=None)
def test_parse_arbitrary_bytes(data: bytes) -> None:
    _check_parse_only_raises_selector_error(data.decode("latin-1"))


# Text built from the language's own pieces reaches far more of the grammar than
# uniformly random characters do.
_PIECES = [" ", "\t", "!", "&&", "||", "&", "|", "=", "==", "!=", "(", ")", "{", "}", ",",
           '"v"', "'w'", '"', "'", "a", "b", "has(", "all(", "global(", "in", "not", "contains",
           "starts", "with", "ends", "startswith", "notin", "\n", "é"]  # fmt: skip


@given(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join))
@settings(max_examples=500, deadline=None)
def test_parse_selector_like_text(text: str) -> None:
    _check_parse_only_raises_selector_error(text)


@st.composite
def spellings(draw: st.DrawFn, tree: Node) -> str:
    """Some text that Calico parses to exactly ``tree``, in a randomly chosen spelling:
    extra spaces and tabs, either quote, redundant brackets and double negations,
    duplicated and reordered set items, ``startswith``/``notin`` without the space."""
    gap = st.sampled_from(["", " ", "  ", "\t", " \t "])
    separator = st.sampled_from([" ", "  ", "\t"])

    def literal(value: str) -> str:
        if '"' in value:
            return f"'{value}'"
        if "'" in value:
            return f'"{value}"'
        return draw(st.sampled_from([f'"{value}"', f"'{value}'"]))

    def render(node: Node) -> str:
        text = render_bare(node)
        if isinstance(node, And | Or):
            return f"({draw(gap)}{text}{draw(gap)})"
        if draw(st.booleans()) and not isinstance(node, Not):
            text = f"({draw(gap)}{text}{draw(gap)})"
        if draw(st.integers(0, 4)) == 0:
            # An even run of '!' cancels out by the parity rule.
            text = f"!{draw(gap)}!{draw(gap)}{text}"
        return text

    def render_bare(node: Node) -> str:
        if isinstance(node, All):
            return f"all({draw(gap)})"
        if isinstance(node, Global):
            return f"global({draw(gap)})"
        if isinstance(node, Has):
            return f"has({draw(gap)}{node.label}{draw(gap)})"
        if isinstance(node, Compare):
            if node.op in (CompareOp.EQ, CompareOp.NE):
                operator = node.op.value
                before = draw(gap)
            else:
                first, _, second = node.op.value.partition(" ")
                operator = first + (draw(gap) + second if second else "")
                before = draw(separator)
            return f"{node.label}{before}{operator}{draw(gap)}{literal(node.value)}"
        if isinstance(node, Membership):
            operator = "in" if node.op is SetOp.IN else f"not{draw(gap)}in"
            duplicates = (
                draw(st.lists(st.sampled_from(node.values), max_size=2)) if node.values else []
            )
            items = draw(st.permutations([*node.values, *duplicates]))
            comma = f"{draw(gap)},{draw(gap)}"
            body = comma.join(literal(item) for item in items)
            trailing_comma = draw(st.booleans())
            if items and trailing_comma:
                body += comma
            braces = f"{{{draw(gap)}{body}{draw(gap)}}}"
            return f"{node.label}{draw(separator)}{operator}{draw(gap)}{braces}"
        if isinstance(node, Not):
            inner = node.operand
            operand = render(inner)
            if isinstance(inner, Not):
                # Without brackets "!!" would cancel out; NOT(NOT(x)) is spelled "!(!x)".
                operand = f"({draw(gap)}{operand}{draw(gap)})"
            return f"!{draw(gap)}{operand}"
        joiner = " && " if isinstance(node, And) else " || "
        return joiner.join(render(operand) for operand in node.operands)

    top = render_bare(tree) if isinstance(tree, And | Or) and draw(st.booleans()) else render(tree)
    return f"{draw(gap)}{top}{draw(gap)}"


@given(st.data(), trees)
@settings(max_examples=300, deadline=None)
def test_every_spelling_parses_to_the_same_tree(data: st.DataObject, tree: Node) -> None:
    text = data.draw(spellings(tree))
    assert parse_tree(text) == tree


@given(st.data(), trees)
@settings(max_examples=300, deadline=None)
def test_mutated_selectors_only_raise_selector_error(data: st.DataObject, tree: Node) -> None:
    text = data.draw(spellings(tree))
    position = data.draw(st.integers(0, len(text)))
    edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    piece = data.draw(st.sampled_from(_PIECES) | st.characters())
    if edit == "delete":
        text = text[:position] + text[position + 1 :]
    elif edit == "insert":
        text = text[:position] + piece + text[position:]
    else:
        text = text[:position] + piece + text[position + 1 :]
    _check_parse_only_raises_selector_error(text)
