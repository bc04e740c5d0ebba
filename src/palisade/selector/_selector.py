"""The public :class:`Selector` value and the functions that build one."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from palisade.selector._ast import (
    All,
    And,
    Compare,
    Global,
    Has,
    Leaf,
    Membership,
    Node,
    PostfixItem,
    from_postfix,
    rebuild,
    to_postfix,
    walk,
)
from palisade.selector._compile import Matcher, compile_matcher
from palisade.selector._errors import SelectorError
from palisade.selector._parser import parse_tree
from palisade.selector._printer import canonical
from palisade.selector._tokenizer import LABEL_CHARS

# Go's strings.TrimSpace trims Unicode White_Space. Python's str.strip() would also trim
# U+001C..U+001F, which Go keeps, so spell the set out.
_UNICODE_WHITESPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Selector:
    """A parsed Calico selector.

    Immutable and hashable. Two selectors are equal when their canonical strings are
    equal, which is how Calico compares them. Build one with :func:`parse`; the
    constructor takes a parse tree, which is this package's private business.
    """

    _root: Node
    _canonical: str = field(init=False)
    _hash: int = field(init=False)
    # Caches filled on first use; object.__setattr__ because the dataclass is frozen.
    _matcher: Matcher | None = field(init=False, default=None)
    _labels_used: frozenset[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        text = canonical(self._root)
        object.__setattr__(self, "_canonical", text)
        object.__setattr__(self, "_hash", hash(text))

    def __reduce__(self) -> tuple[Callable[[Sequence[PostfixItem]], Selector], tuple[object]]:
        # A flat form, because pickling the nested tree would recurse once per level.
        return (_from_postfix, (to_postfix(self._root),))

    def __copy__(self) -> Selector:
        return self

    def __deepcopy__(self, memo: object) -> Selector:
        return self

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return self._hash == other._hash and self._canonical == other._canonical

    def __hash__(self) -> int:
        return self._hash

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the selector matches an endpoint with these labels (spec 1.3)."""
        matcher = self._matcher
        if matcher is None:
            matcher = self.matcher
        return matcher(labels)

    @property
    def matcher(self) -> Matcher:
        """The compiled ``labels -> bool`` function behind :meth:`matches`.

        Calling it directly saves a method call per evaluation in hot loops.
        """
        matcher = self._matcher
        if matcher is None:
            matcher = compile_matcher(self._root)
            object.__setattr__(self, "_matcher", matcher)
        return matcher

    @property
    def unique_id(self) -> str:
        """``"s:" + base64url_nopad(SHA-224("s:" + canonical))`` (spec 1.9)."""
        payload = ("s:" + self._canonical).encode("utf-8", "surrogatepass")
        digest = hashlib.sha224(payload).digest()
        return "s:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @property
    def labels_used(self) -> frozenset[str]:
        """Every label name the selector tests."""
        used = self._labels_used
        if used is None:
            used = frozenset(
                node.label
                for node in walk(self._root)
                if isinstance(node, Has | Compare | Membership)
            )
            object.__setattr__(self, "_labels_used", used)
        return used

    @property
    def is_all(self) -> bool:
        """Whether the whole selector is exactly ``all()`` (also what "" parses to)."""
        return isinstance(self._root, All)

    def with_label_prefix(self, prefix: str) -> Selector:
        """Put ``prefix`` in front of every label name (spec 1.7).

        ``all()`` and ``global()`` are left alone. The prefix must be made of label
        characters, so that the result still prints as a selector.
        """
        bad = set(prefix) - LABEL_CHARS
        if bad:
            raise ValueError(f"label prefix {prefix!r} has non-label characters {sorted(bad)}")
        if not prefix:
            return self

        def prefixed(leaf: Leaf) -> Node:
            if isinstance(leaf, All | Global):
                return leaf
            return dataclasses.replace(leaf, label=prefix + leaf.label)

        return Selector(rebuild(self._root, prefixed))

    def replace_calls(
        self, all_with: Selector | None = None, global_with: Selector | None = None
    ) -> Selector:
        """Replace every ``all()`` and/or ``global()`` node by another selector's tree.

        The replacement goes in as one operand, like a parenthesised group, and nothing
        else is simplified. (Calico does this by text substitution on the selector string,
        which would also touch a quoted value such as ``a == "all()"``; that quirk is left
        to the caller.)
        """
        if all_with is None and global_with is None:
            return self
        all_root = all_with._root if all_with is not None else None
        global_root = global_with._root if global_with is not None else None

        def replaced(leaf: Leaf) -> Node:
            if all_root is not None and isinstance(leaf, All):
                return all_root
            if global_root is not None and isinstance(leaf, Global):
                return global_root
            return leaf

        root = rebuild(self._root, replaced)
        return self if root is self._root else Selector(root)


def _from_postfix(items: Sequence[PostfixItem]) -> Selector:
    return Selector(from_postfix(items))


ALL: Final = Selector(All())


def parse(text: str) -> Selector:
    """Parse a selector; raise :class:`SelectorError` if Calico would reject it.

    Results are cached: selectors are immutable and the same strings recur across
    policies, so repeated parses return the same object (compiled once, on first match).
    """
    return _parse_cached(text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Selector:
    return Selector(parse_tree(text))


def normalise(text: str) -> str:
    """Calico's ``Normalise`` helper (spec 1.8).

    Trims Unicode whitespace at both ends, then returns the canonical form, or the trimmed
    text unchanged when it does not parse.
    """
    trimmed = text.strip(_UNICODE_WHITESPACE)
    try:
        return str(parse(trimmed))
    except SelectorError:
        return trimmed


def and_selectors(*selectors: Selector) -> Selector:
    """``(s1) && (s2) && …`` with each operand kept as its own group.

    One selector is returned as it is; no selectors give :data:`ALL`.
    """
    if not selectors:
        return ALL
    if len(selectors) == 1:
        return selectors[0]
    return Selector(And(tuple(selector._root for selector in selectors)))
