"""Lexical rules (spec 1.1), checked through the tokenizer and through parse()."""

from __future__ import annotations

import pytest

from palisade.selector import SelectorError, parse
from palisade.selector._tokenizer import Token, Tokenizer, TokenKind


def _tokens(text: str) -> list[Token]:
    tokenizer = Tokenizer(text)
    tokens = [tokenizer.next()]
    while tokens[-1].kind is not TokenKind.EOF:
        tokens.append(tokenizer.next())
    return tokens


def test_token_stream_with_positions() -> None:
    assert _tokens("a == \"b\" && !has( c ) || d notin {'e',}") == [
        Token(TokenKind.LABEL, 0, "a"),
        Token(TokenKind.EQ, 2),
        Token(TokenKind.STRING, 5, "b"),
        Token(TokenKind.AND, 9),
        Token(TokenKind.NOT, 12),
        Token(TokenKind.HAS, 13, "c"),
        Token(TokenKind.OR, 22),
        Token(TokenKind.LABEL, 25, "d"),
        Token(TokenKind.NOT_IN, 27),
        Token(TokenKind.LBRACE, 33),
        Token(TokenKind.STRING, 34, "e"),
        Token(TokenKind.COMMA, 37),
        Token(TokenKind.RBRACE, 38),
        Token(TokenKind.EOF, 39),
    ]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # Labels may start with any label character.
        ('-a == "x"', '-a == "x"'),
        ('/ == "x"', '/ == "x"'),
        ('1x == "x"', '1x == "x"'),
        ("has(_.-/9)", "has(_.-/9)"),
        # Tabs are whitespace, like spaces.
        ('\ta\t==\t"b"\t', 'a == "b"'),
        # No escapes: a backslash is an ordinary character; the other quote is fine inside.
        ('a == "x\\"', 'a == "x\\"'),
        ("a == 'it\"s'", "a == 'it\"s'"),
        ('a == ""', 'a == ""'),
        ('a == "é\n☃"', 'a == "é\n☃"'),
        # Function forms allow spaces and tabs inside the brackets.
        ("all( )", "all()"),
        ("global(\t)", "global()"),
        ("has( a )", "has(a)"),
        # Keyword operators need a word boundary after them, not before what follows.
        ('a contains"x"', 'a contains "x"'),
        ('a in{"x"}', 'a in {"x"}'),
        ('a notin{"x"}', 'a not in {"x"}'),
        ('a not   in {"x"}', 'a not in {"x"}'),
        ('a startswith"x"', 'a starts with "x"'),
        ('a ends\t\twith "x"', 'a ends with "x"'),
        # The same words are ordinary labels elsewhere.
        ('in in {"a"}', 'in in {"a"}'),
        ('not in {"x"}', 'not in {"x"}'),
        ('has == "x"', 'has == "x"'),
        ('all == "x"', 'all == "x"'),
        ('global != "x"', 'global != "x"'),
        ('not not in {"x"}', 'not not in {"x"}'),
        ('ends ends with "x"', 'ends ends with "x"'),
        # `!` right before `=` is always `!=`.
        ('a!="b"', 'a != "b"'),
        ('!a=="b"', '!a == "b"'),
        ("a" * 512 + ' == "x"', "a" * 512 + ' == "x"'),
    ],
)
def test_valid_lexical_forms(text: str, canonical: str) -> None:
    assert str(parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ('a == "b"\n', 8),  # newline is not whitespace
        ('\na == "b"', 0),
        ('a == "b" \r', 9),
        ("a" * 513 + ' == "x"', 0),
        ("has(" + "a" * 513 + ")", 4),
        ('a = "b"', 2),
        ('a == "b" & has(c)', 9),
        ('a == "b" | has(c)', 9),
        ("all ()", 4),  # `all` is a label here, and a label needs an operator
        ("has (a)", 4),
        ("has()", 4),
        ("has(a b)", 6),
        ("has(a", 5),
        ("all(x)", 4),
        ("global(", 7),
        ('a inx {"x"}', 2),
        ('a containsx "x"', 2),
        ('a starts withx "x"', 2),
        ('a startsx with "x"', 2),
        ('a not {"x"}', 2),
        ('a == "unterminated', 5),
        ("a == 'mixed\"", 5),
        ('é == "x"', 0),
        ('a == "x" && b# == "y"', 13),
        ('!= "x"', 0),
        ('== "x"', 0),
    ],
)
def test_lexical_errors(text: str, position: int) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert caught.value.position == position


def test_grammar_error_before_later_lexical_error() -> None:
    # The tokenizer is pulled lazily, so `b` (a label where a literal belongs) is reported
    # rather than the missing operator after it.
    with pytest.raises(SelectorError) as caught:
        parse("a == b")
    assert caught.value.position == 5
    assert caught.value.reason == "expected string literal after '=='"
    assert str(caught.value) == "position 5: expected string literal after '=='"
