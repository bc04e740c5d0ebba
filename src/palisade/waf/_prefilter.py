"""Multi-pattern pre-filter: skip ``@rx`` operators whose required literals are absent.

For each ``@rx`` pattern we compute, from its parse tree, a set of literal strings such that
*every* match of the pattern contains at least one of them ("any-of" set). One Aho-Corasick
automaton over all these literals scans each distinct (transformed) value once per
transaction; a rule's regex then only runs on values where one of its literals occurs.

Soundness matters more than coverage: a literal is only required when the parse is certain.
Patterns are parsed with Python's own regular-expression parser (the CRS's PCRE syntax is
mostly shared); anything it rejects, and constructs where PCRE and Python disagree (POSIX
classes), leave the rule without a pre-filter. Literal runs keep printable ASCII only (so
``\\v``, which is a character class in PCRE but a single byte for Python, never becomes a
literal), and both literals and values are lower-cased, which only weakens the condition.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import ahocorasick

# The parser behind ``re`` (``sre_parse`` is its deprecated alias); no type stubs.
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

_HEX_BRACES = re.compile(r"(?<!\\)((?:\\\\)*)\\x\{([0-9a-fA-F]{1,4})\}")
_MIN_LITERAL = 3
# Values longer than this are not scanned (every literal counts as present): on long values
# one Python-level step per literal occurrence would cost more than the regexes it saves.
_MAX_SCAN = 4096


def _to_python_syntax(pattern: str) -> str:
    def replace(match: re.Match[str]) -> str:
        value = int(match.group(2), 16)
        escape = f"\\x{value:02x}" if value < 0x100 else f"\\u{value:04x}"
        return match.group(1) + escape

    return _HEX_BRACES.sub(replace, pattern)


def required_literals(pattern: str) -> frozenset[str] | None:
    """A set of lower-cased strings one of which every match contains, or None."""
    if "[:" in pattern:
        return None
    try:
        tree = _parser.parse(_to_python_syntax(pattern))
    except (re.error, ValueError, OverflowError, RecursionError):
        return None
    try:
        result = _sequence(list(tree))
    except RecursionError:
        return None
    if result is None or min(len(s) for s in result) < _MIN_LITERAL:
        return None
    return frozenset(result)


def _better(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    key_a = (min(len(s) for s in a), -len(a))
    key_b = (min(len(s) for s in b), -len(b))
    return b if key_b > key_a else a


def _literal_text(items: list[Any]) -> str | None:
    chars: list[str] = []
    for op, av in items:
        if op is _c.LITERAL and 0x20 <= av <= 0x7E:
            chars.append(chr(av).lower())
        elif op is _c.SUBPATTERN:
            inner = _literal_text(list(av[-1]))
            if inner is None:
                return None
            chars.append(inner)
        else:
            return None
    return "".join(chars)


def _sequence(items: list[Any]) -> set[str] | None:
    best: set[str] | None = None
    run: list[str] = []

    def flush() -> None:
        nonlocal best
        if run:
            best = _better(best, {"".join(run)})
            run.clear()

    for op, av in items:
        if op is _c.LITERAL:
            if 0x20 <= av <= 0x7E:
                run.append(chr(av).lower())
            else:
                flush()
            continue
        if op is _c.SUBPATTERN:
            inner_items = list(av[-1])
            text = _literal_text(inner_items)
            if text is not None:
                run.append(text)
                continue
            flush()
            best = _better(best, _sequence(inner_items))
            continue
        flush()
        if op is _c.BRANCH:
            union: set[str] = set()
            for alternative in av[1]:
                found = _sequence(list(alternative))
                if found is None:
                    union = set()
                    break
                union |= found
            if union:
                best = _better(best, union)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)):
            low, _high, sub = av
            if low >= 1:
                best = _better(best, _sequence(list(sub)))
        elif op is getattr(_c, "ATOMIC_GROUP", None):
            best = _better(best, _sequence(list(av)))
        # anything else (classes, anchors, lookarounds, back-references) requires nothing
    flush()
    return best


class Prefilter:
    """One automaton over every rule's required literals; values map to literal bitmasks."""

    def __init__(self) -> None:
        self._bits: dict[str, int] = {}
        self._automaton: Any = None

    def mask_for(self, literals: frozenset[str]) -> int:
        mask = 0
        for literal in literals:
            bit = self._bits.get(literal)
            if bit is None:
                bit = self._bits[literal] = 1 << len(self._bits)
            mask |= bit
        return mask

    def freeze(self) -> None:
        automaton = ahocorasick.Automaton()
        for literal, bit in self._bits.items():
            automaton.add_word(literal, bit)
        if self._bits:
            automaton.make_automaton()
            self._automaton = automaton

    def scan(self, value: str) -> int:
        """Bitmask of the literals present in ``value`` (case-insensitively)."""
        if self._automaton is None or not value:
            return 0
        if len(value) > _MAX_SCAN:
            return -1  # all bits set
        mask = 0
        for _, bit in self._automaton.iter(value.lower()):
            mask |= bit
        return mask
