"""Calico's canonical string form of a selector tree (spec 1.6).

The canonical form is what Calico shows, compares and hashes, so it has to match Calico
byte for byte: n-ary nodes are always parenthesised, ``!`` never adds parentheses of its
own, set items come out sorted and de-duplicated, and a value is single-quoted only when
it contains a double quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from palisade.selector._ast import (
    All,
    And,
    Compare,
    Global,
    Has,
    Membership,
    Node,
    Not,
    Or,
    fold,
)


def quote(value: str) -> str:
    """Quote a literal the way Calico prints it (there are no escape sequences)."""
    return f"'{value}'" if '"' in value else f'"{value}"'


def _visit(node: Node, kids: Sequence[str]) -> str:
    if isinstance(node, Compare):
        return f"{node.label} {node.op.value} {quote(node.value)}"
    if isinstance(node, Membership):
        items = ", ".join(quote(value) for value in node.values)
        return f"{node.label} {node.op.value} {{{items}}}"
    if isinstance(node, Has):
        return f"has({node.label})"
    if isinstance(node, And):
        return "(" + " && ".join(kids) + ")"
    if isinstance(node, Or):
        return "(" + " || ".join(kids) + ")"
    if isinstance(node, Not):
        return "!" + kids[0]
    if isinstance(node, All):
        return "all()"
    if isinstance(node, Global):
        return "global()"
    assert_never(node)


def canonical(root: Node) -> str:
    """The canonical string of ``root``."""
    return fold(root, _visit)
