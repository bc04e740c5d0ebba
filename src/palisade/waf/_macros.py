"""Macro strings (``%{tx.score}``, ``%{MATCHED_VAR}``, ``%{rule.id}``) compiled once.

A :class:`Macro` is a tuple of literal text and references; expanding it asks a resolver for
each reference. An unknown reference expands to the empty string, as in ModSecurity v3.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_MACRO = re.compile(r"%\{([^}]*)\}")


@dataclass(frozen=True, slots=True)
class MacroRef:
    collection: str  # upper case: "TX", "MATCHED_VAR", "RULE", "REQUEST_HEADERS", …
    key: str | None  # as written (lookups are case-insensitive)


Resolver = Callable[[MacroRef], str]


@dataclass(frozen=True, slots=True)
class Macro:
    text: str
    parts: tuple[str | MacroRef, ...]

    @property
    def is_constant(self) -> bool:
        return all(isinstance(part, str) for part in self.parts)

    def expand(self, resolve: Resolver) -> str:
        if len(self.parts) == 1:
            only = self.parts[0]
            return only if isinstance(only, str) else resolve(only)
        return "".join(part if isinstance(part, str) else resolve(part) for part in self.parts)


def parse_macro_ref(body: str) -> MacroRef:
    for separator in (".", ":"):
        if separator in body:
            collection, key = body.split(separator, 1)
            return MacroRef(collection.strip().upper(), key.strip())
    return MacroRef(body.strip().upper(), None)


def compile_macro(text: str) -> Macro:
    parts: list[str | MacroRef] = []
    position = 0
    for match in _MACRO.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(parse_macro_ref(match.group(1)))
        position = match.end()
    if position < len(text) or not parts:
        parts.append(text[position:])
    return Macro(text, tuple(parts))


def has_macro(text: str) -> bool:
    return _MACRO.search(text) is not None
