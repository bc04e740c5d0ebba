"""Lexer for the selector language (spec 1.1).

Calico reads selectors byte by byte with a hand-written state machine; the awkward parts
are contextual: ``contains``, ``in``, ``starts with``, … are operators only straight after
a label (everywhere else they are ordinary labels), and ``has(``, ``all(``, ``global(``
are function forms only when the ``(`` touches the word. So the lexer, not the parser,
owns that context. It is pulled one token at a time, so that a grammar error earlier in
the text is reported before a lexical error later in it.

Positions are indices into the Python string. Everything outside string literals is
ASCII, so for valid selectors these equal Calico's byte offsets up to the first
non-ASCII literal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from palisade.selector._errors import SelectorError

LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-")
MAX_LABEL_LENGTH = 512
_WHITESPACE = frozenset(" \t")


class TokenKind(enum.Enum):
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    NOT = "!"
    AND = "&&"
    OR = "||"
    EQ = "=="
    NE = "!="
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"
    IN = "in"
    NOT_IN = "not in"
    ALL = "all()"
    GLOBAL = "global()"
    HAS = "has()"
    LABEL = "label"
    STRING = "string literal"
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    position: int
    # The label for LABEL and HAS, the unquoted contents for STRING, else "".
    value: str = ""

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind is TokenKind.EOF:
            return "end of input"
        if self.kind is TokenKind.LABEL:
            return f"label {self.value!r}"
        if self.kind is TokenKind.STRING:
            return "string literal"
        if self.kind is TokenKind.HAS:
            return "'has(…)'"
        return repr(self.kind.value)


_SINGLE_CHAR = {
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
    ",": TokenKind.COMMA,
}

# Keyword operators that may follow a label: (first word, optional second word, kind).
# Between two words any run of spaces/tabs, including none, is allowed; a word boundary is
# needed only after the last word.
_KEYWORD_OPERATORS: tuple[tuple[str, str, TokenKind], ...] = (
    ("contains", "", TokenKind.CONTAINS),
    ("starts", "with", TokenKind.STARTS_WITH),
    ("ends", "with", TokenKind.ENDS_WITH),
    ("in", "", TokenKind.IN),
    ("not", "in", TokenKind.NOT_IN),
)


class Tokenizer:
    """Pull-style lexer: call :meth:`next` until it returns an EOF token."""

    __slots__ = ("_after_label", "_pos", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._after_label = False

    def next(self) -> Token:
        text = self._text
        pos = self._skip_whitespace(self._pos)
        if self._after_label:
            self._after_label = False
            return self._operator_after_label(pos)
        if pos >= len(text):
            self._pos = pos
            return Token(TokenKind.EOF, pos)
        char = text[pos]
        kind = _SINGLE_CHAR.get(char)
        if kind is not None:
            self._pos = pos + 1
            return Token(kind, pos)
        if char == '"' or char == "'":
            end = text.find(char, pos + 1)
            if end < 0:
                raise SelectorError(pos, "unterminated string literal")
            self._pos = end + 1
            return Token(TokenKind.STRING, pos, text[pos + 1 : end])
        if char == "!":
            if text.startswith("!=", pos):
                raise SelectorError(pos, "unexpected '!=' (a comparison needs a label before it)")
            self._pos = pos + 1
            return Token(TokenKind.NOT, pos)
        if char == "&" or char == "|":
            if text.startswith(char * 2, pos):
                self._pos = pos + 2
                return Token(TokenKind.AND if char == "&" else TokenKind.OR, pos)
            raise SelectorError(pos, f"unexpected {char!r}; did you mean '{char * 2}'?")
        if char == "=":
            if text.startswith("==", pos):
                raise SelectorError(pos, "unexpected '==' (a comparison needs a label before it)")
            raise SelectorError(pos, "unexpected '='; did you mean '=='?")
        if text.startswith("has(", pos):
            return self._has(pos)
        if text.startswith("all(", pos):
            return self._empty_call(pos, len("all("), TokenKind.ALL)
        if text.startswith("global(", pos):
            return self._empty_call(pos, len("global("), TokenKind.GLOBAL)
        if char in LABEL_CHARS:
            label, self._pos = self._label(pos)
            self._after_label = True
            return Token(TokenKind.LABEL, pos, label)
        raise SelectorError(pos, f"unexpected character {char!r}")

    def _skip_whitespace(self, pos: int) -> int:
        text = self._text
        end = len(text)
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        return pos

    def _label(self, start: int) -> tuple[str, int]:
        text = self._text
        pos = start
        end = len(text)
        while pos < end and text[pos] in LABEL_CHARS:
            pos += 1
        if pos - start > MAX_LABEL_LENGTH:
            raise SelectorError(start, f"label longer than {MAX_LABEL_LENGTH} characters")
        return text[start:pos], pos

    def _has(self, start: int) -> Token:
        pos = self._skip_whitespace(start + len("has("))
        if pos >= len(self._text) or self._text[pos] not in LABEL_CHARS:
            raise SelectorError(pos, "expected a label inside 'has('")
        label, pos = self._label(pos)
        pos = self._skip_whitespace(pos)
        if not self._text.startswith(")", pos):
            raise SelectorError(pos, "expected ')' after the label in 'has('")
        self._pos = pos + 1
        return Token(TokenKind.HAS, start, label)

    def _empty_call(self, start: int, opening: int, kind: TokenKind) -> Token:
        pos = self._skip_whitespace(start + opening)
        if not self._text.startswith(")", pos):
            raise SelectorError(pos, f"expected ')' after '{self._text[start : start + opening]}'")
        self._pos = pos + 1
        return Token(kind, start)

    def _operator_after_label(self, start: int) -> Token:
        text = self._text
        if text.startswith("==", start):
            self._pos = start + 2
            return Token(TokenKind.EQ, start)
        if text.startswith("!=", start):
            self._pos = start + 2
            return Token(TokenKind.NE, start)
        for first, second, kind in _KEYWORD_OPERATORS:
            if not text.startswith(first, start):
                continue
            pos = start + len(first)
            if second:
                pos = self._skip_whitespace(pos)
                if not text.startswith(second, pos):
                    continue
                pos += len(second)
            if pos < len(text) and text[pos] in LABEL_CHARS:
                continue
            self._pos = pos
            return Token(kind, start)
        raise SelectorError(
            start,
            "expected an operator after the label "
            "('==', '!=', 'contains', 'starts with', 'ends with', 'in' or 'not in')",
        )
