"""Parse-tree nodes for selectors, and an iterative fold over them.

The tree is kept exactly as Calico's parser builds it (no simplification), because the
canonical printer, and with it equality and unique IDs, depends on its shape: for example
NOT over a parenthesised NOT stays two nodes (spec 1.6).

Trees can be far deeper than Python's recursion limit (``!(!(!(…)))`` nests one level per
two characters), so every whole-tree operation goes through :func:`fold`, which keeps its
own stack instead of recursing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

T = TypeVar("T")


class CompareOp(enum.Enum):
    """Operators that compare one label's value with one string literal."""

    EQ = "=="
    NE = "!="
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"


class SetOp(enum.Enum):
    """Operators that compare one label's value with a set of string literals."""

    IN = "in"
    NOT_IN = "not in"


@dataclass(frozen=True, slots=True)
class All:
    """``all()``: always true."""


@dataclass(frozen=True, slots=True)
class Global:
    """``global()``: always true as a boolean; its meaning is given by the field it is in."""


@dataclass(frozen=True, slots=True)
class Has:
    """``has(label)``: the label is present, whatever its value."""

    label: str


@dataclass(frozen=True, slots=True)
class Compare:
    """``label <op> "value"``."""

    label: str
    op: CompareOp
    value: str


@dataclass(frozen=True, slots=True)
class Membership:
    """``label in {…}`` or ``label not in {…}``.

    ``values`` is always sorted (code-point order, which is UTF-8 byte order) and free of
    duplicates, because that is how the canonical form prints it and two selectors that
    print the same must compare equal.
    """

    label: str
    op: SetOp
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``."""

    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    """``a && b && …`` with at least two operands; nested groups stay nested."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``a || b || …`` with at least two operands; nested groups stay nested."""

    operands: tuple[Node, ...]


Leaf: TypeAlias = All | Global | Has | Compare | Membership
Node: TypeAlias = All | Global | Has | Compare | Membership | Not | And | Or

_NO_CHILDREN: tuple[Node, ...] = ()


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-trees of ``node``, left to right."""
    if isinstance(node, And | Or):
        return node.operands
    if isinstance(node, Not):
        return (node.operand,)
    return _NO_CHILDREN


def walk(root: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children, left to right."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


def fold(root: Node, visit: Callable[[Node, Sequence[T]], T]) -> T:
    """Post-order fold: ``visit(node, results_of_children)`` for every node, bottom up.

    Children are visited left to right, so ``visit`` may rely on that order (the compiler
    uses it to number hoisted functions deterministically).
    """
    results: list[T] = []
    # Each entry is (node, expanded); a node is pushed once to expand its children and once
    # more, below them, to combine their results when they are done.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        kids = children(node)
        if not kids:
            results.append(visit(node, ()))
        elif expanded:
            count = len(kids)
            kid_results = results[-count:]
            del results[-count:]
            results.append(visit(node, kid_results))
        else:
            stack.append((node, True))
            stack.extend((kid, False) for kid in reversed(kids))
    return results[0]


def rebuild(root: Node, leaf: Callable[[Leaf], Node]) -> Node:
    """Copy of ``root`` with every leaf replaced by ``leaf(leaf_node)``.

    Inner nodes are copied only when one of their children changed, so an unchanged tree
    comes back as the very same object.
    """

    def visit(node: Node, kids: Sequence[Node]) -> Node:
        if isinstance(node, Not):
            return node if kids[0] is node.operand else Not(kids[0])
        if isinstance(node, And | Or):
            if all(new is old for new, old in zip(kids, node.operands, strict=True)):
                return node
            return type(node)(tuple(kids))
        return leaf(node)

    return fold(root, visit)


# Postfix form: leaves as themselves, inner nodes as (operator, operand count). Flat, so
# that pickling a very deep tree does not recurse.
PostfixItem: TypeAlias = Leaf | tuple[str, int]


def to_postfix(root: Node) -> tuple[PostfixItem, ...]:
    """``root`` as a flat post-order sequence (see :func:`from_postfix`)."""
    items: list[PostfixItem] = []

    def visit(node: Node, kids: Sequence[None]) -> None:
        if isinstance(node, Not):
            items.append(("!", 1))
        elif isinstance(node, And):
            items.append(("&&", len(kids)))
        elif isinstance(node, Or):
            items.append(("||", len(kids)))
        else:
            items.append(node)

    fold(root, visit)
    return tuple(items)


def from_postfix(items: Sequence[PostfixItem]) -> Node:
    """Rebuild the tree that :func:`to_postfix` flattened."""
    stack: list[Node] = []
    for item in items:
        if not isinstance(item, tuple):
            stack.append(item)
            continue
        operator, count = item
        start = len(stack) - count
        operands = tuple(stack[start:])
        del stack[start:]
        if operator == "!":
            stack.append(Not(operands[0]))
        else:
            stack.append(And(operands) if operator == "&&" else Or(operands))
    (root,) = stack
    return root
