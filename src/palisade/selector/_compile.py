"""Turn a selector tree into a plain Python function over a label mapping.

Matching runs millions of times per policy recalculation, so a tree walk per call is too
slow. Instead each selector becomes the source of one Python expression, compiled once;
CPython then evaluates it with no per-node dispatch, and ``x in {"a", "b"}`` becomes a
frozenset lookup. Missing labels fall out of ``labels.get``: ``None`` equals no string and
is in no set, which gives Calico's rules (``!=`` and ``not in`` true when absent, the
others false) without extra branches.

CPython's own parser refuses deeply nested expressions (it allows ~200 open brackets), so a
fragment nested deeper than ``_HOIST_DEPTH`` is moved into a function of its own and
referred to by a call. Call depth at match time is then the tree depth divided by that
limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, assert_never, cast

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
    fold,
)

Matcher = Callable[[Mapping[str, str]], bool]

_HOIST_DEPTH = 50


class _Fragment(NamedTuple):
    source: str
    # Bracket nesting of ``source``; every fragment is wrapped in its own brackets.
    depth: int


def _leaf_source(node: Compare | Membership | Has) -> str:
    label = repr(node.label)
    if isinstance(node, Has):
        return f"({label} in labels)"
    if isinstance(node, Membership):
        values = node.values
        if not values:
            return "True" if node.op is SetOp.NOT_IN else "False"
        if len(values) == 1:
            test = "!=" if node.op is SetOp.NOT_IN else "=="
            return f"(labels.get({label}) {test} {values[0]!r})"
        test = "not in" if node.op is SetOp.NOT_IN else "in"
        items = ", ".join(repr(value) for value in values)
        return f"(labels.get({label}) {test} {{{items}}})"
    op, value = node.op, repr(node.value)
    if op is CompareOp.EQ:
        return f"(labels.get({label}) == {value})"
    if op is CompareOp.NE:
        return f"(labels.get({label}) != {value})"
    # An empty needle matches any present value, so the test reduces to presence.
    if not node.value:
        return f"({label} in labels)"
    if op is CompareOp.CONTAINS:
        return f"({value} in labels.get({label}, ''))"
    if op is CompareOp.STARTS_WITH:
        return f"labels.get({label}, '').startswith({value})"
    if op is CompareOp.ENDS_WITH:
        return f"labels.get({label}, '').endswith({value})"
    assert_never(op)


def matcher_source(root: Node) -> str:
    """Python source defining ``_match(labels) -> bool`` (plus any hoisted helpers)."""
    helpers: list[str] = []

    def visit(node: Node, kids: Sequence[_Fragment]) -> _Fragment:
        if isinstance(node, All | Global):
            return _Fragment("True", 0)
        if isinstance(node, Has | Compare | Membership):
            return _Fragment(_leaf_source(node), 1)
        if isinstance(node, Not):
            fragment = _Fragment(f"(not {kids[0].source})", kids[0].depth + 1)
        elif isinstance(node, And | Or):
            joiner = " and " if isinstance(node, And) else " or "
            source = "(" + joiner.join(kid.source for kid in kids) + ")"
            fragment = _Fragment(source, max(kid.depth for kid in kids) + 1)
        else:
            assert_never(node)
        if fragment.depth < _HOIST_DEPTH:
            return fragment
        name = f"_part{len(helpers)}"
        helpers.append(f"def {name}(labels):\n    return {fragment.source}\n")
        return _Fragment(f"{name}(labels)", 1)

    body = fold(root, visit).source
    return "".join(helpers) + f"def _match(labels):\n    return {body}\n"


def compile_matcher(root: Node) -> Matcher:
    """A function ``labels -> bool`` equivalent to evaluating ``root`` (spec 1.3)."""
    namespace: dict[str, object] = {"__builtins__": {}}
    exec(compile(matcher_source(root), "<selector>", "exec"), namespace)
    return cast(Matcher, namespace["_match"])
