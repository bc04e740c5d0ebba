"""Transformations behave as libmodsecurity3 (v3.0.x) does, corner cases included."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palisade.waf._transforms import (
    UnknownTransformation,
    get_transformation,
    make_url_decode_uni,
    transformation_names,
)
from tests.shared_data import shared_path

# Every name the CRS v4 rules and crs-setup.conf.example write after "t:".
CRS_TRANSFORMATIONS = [
    "none",
    "urlDecodeUni",
    "lowercase",
    "jsDecode",
    "htmlEntityDecode",
    "utf8toUnicode",
    "removeNulls",
    "cssDecode",
    "cmdLine",
    "removeWhitespace",
    "replaceComments",
    "normalizePath",
    "escapeSeqDecode",
    "compressWhitespace",
    "normalizePathWin",
    "length",
    "base64Decode",
    "sha1",
    "hexEncode",
    "removeCommentsChar",
    "base64decode",
]


def apply(name: str, value: str) -> str:
    return get_transformation(name)(value)


@pytest.mark.parametrize("name", CRS_TRANSFORMATIONS)
def test_every_crs_transformation_exists(name: str) -> None:
    assert callable(get_transformation(name))


def test_every_transformation_written_in_the_crs_is_known() -> None:
    names = set()
    for path in [
        *shared_path("data", "crs", "rules").glob("*.conf"),
        shared_path("data", "crs", "crs-setup.conf.example"),
    ]:
        for line in path.read_text(encoding="latin-1").splitlines():
            if not line.lstrip().startswith("#"):
                names.update(re.findall(r"\bt:([A-Za-z0-9]+)", line))
    assert {"urlDecodeUni", "cmdLine", "normalizePathWin"} <= names
    for name in names:
        get_transformation(name)


def test_names_are_case_insensitive_and_unknown_ones_raise() -> None:
    assert get_transformation("URLDECODEUNI") is get_transformation("urlDecodeUni")
    assert get_transformation("normalisePath") is get_transformation("normalizePath")
    with pytest.raises(UnknownTransformation, match="alert"):
        get_transformation("alert")


CASES = [
    # lowercase/uppercase: C locale, only ASCII letters change
    ("lowercase", "AbC\xc9\xe9", "abc\xc9\xe9"),
    ("uppercase", "aBc\xe9", "ABC\xe9"),
    # urlDecode: valid %XX only, '+' is a space, broken escapes stay
    ("urlDecode", "a%41+b%2B", "aA b+"),
    ("urlDecode", "%zz%4%", "%zz%4%"),
    ("urlDecode", "%%41", "%A"),
    ("urlDecode", "%00%ff", "\x00\xff"),
    # urlDecodeUni: %uXXXX through code page 20127, else the low byte (full-width ASCII folded)
    ("urlDecodeUni", "%u0041%u4e2d%uffff", "A-\xff"),  # not in the 20127 map: low byte
    ("urlDecodeUni", "%uff41%uFF0F", "a/"),
    ("urlDecodeUni", "%u00e9%u2018", "e'"),  # best-fit entries of the map
    ("urlDecodeUni", "%U0130", "I"),
    ("urlDecodeUni", "%u12%u", "%u12%u"),  # too short: copied
    ("urlDecodeUni", "%uzzzz", "%uzzzz"),
    ("urlDecodeUni", "a+b%2b%41%4", "a b+A%4"),
    # htmlEntityDecode: numeric entities keep one byte; five names; ';' optional
    ("htmlEntityDecode", "&lt;&GT;&quot&amp;&nbsp;", '<>"&\xa0'),
    ("htmlEntityDecode", "&#x41;&#66&#X43;", "ABC"),
    ("htmlEntityDecode", "&#321;", "A"),  # 321 & 0xff
    ("htmlEntityDecode", "&#99999999999999999999999;", "\xff"),  # strtol saturates
    ("htmlEntityDecode", "&foo;&#;&#x;&", "&foo;&#;&#x;&"),
    ("htmlEntityDecode", "&ampx", "&ampx"),  # the name is the whole alphanumeric run
    # jsDecode
    ("jsDecode", r"\u0041\uff41\x41\101", "AaAA"),
    ("jsDecode", r"\477", "'7"),  # three octal digits only up to \377
    ("jsDecode", r"\n\t\q\'\\", "\n\tq'\\"),
    ("jsDecode", r"\U0041\u12\x4", "U0041u12x4"),
    ("jsDecode", "end\\", "end\\"),
    # cssDecode
    ("cssDecode", "\\41 b", "Ab"),  # one blank after a hex escape is eaten
    ("cssDecode", "\\ff41\\0ff41\\00ff41\\1ff41", "aaaA"),
    ("cssDecode", "a\\\nb\\zc\\", "abzc"),
    ("cssDecode", "x\\0 y", "x"),  # v3 rebuilds a C string: cut at the first NUL
    ("cssDecode", "p\x00q", "p"),
    # escapeSeqDecode
    ("escapeSeqDecode", r"\x41\X42\101\777", "AB" + "A\xff"),
    ("escapeSeqDecode", r"\xZZ\q\?", "xZZq?"),
    ("escapeSeqDecode", "a\\", "a\\"),
    # utf8toUnicode
    ("utf8toUnicode", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "%u00e9%u20ac%u1f600"),
    ("utf8toUnicode", "a\x00b", "ab"),
    ("utf8toUnicode", "\xc3b", "b"),  # broken sequence: the lead byte is dropped
    ("utf8toUnicode", "\x80\xff", "\x80\xff"),  # stray bytes are copied
    ("utf8toUnicode", "\xc0\x80", "%u0000\xc0"),  # overlong: lead byte appended
    ("utf8toUnicode", "\xed\xa0\x80", "%ud800\xed"),  # surrogate: lead byte appended
    # nulls and whitespace
    ("removeNulls", "a\x00b\x00", "ab"),
    ("replaceNulls", "a\x00b", "a b"),
    ("removeWhitespace", " a\tb\nc\x0bd\x0ce\rf\xa0g\xc2h", "abcdefgh"),
    ("compressWhitespace", "a \t\n b\xa0\xa0c", "a b\xa0\xa0c"),
    ("trim", " \t a b \r\n", "a b"),
    ("trimLeft", "  a ", "a "),
    ("trimRight", "  a ", "  a"),
    # comments
    ("replaceComments", "a/*x*/b/*c", "a b "),
    ("replaceComments", "a*/b", "a*/b"),
    ("removeCommentsChar", "a/*b*/c--d#e<!--f-->", "abcdef"),
    ("removeCommentsChar", "-/*-", "--"),  # no rescan behind an erased marker
    ("removeComments", "a/*x*/b--c", "ab"),
    ("removeComments", "a/*x*/", "a\x00"),  # v3 copies the byte after "*/" (the NUL)
    ("removeComments", "a<!--x", "a "),
    # cmdLine
    ("cmdLine", 'C:\\Win "dows" , /c  (Echo) ^a', "c:win dows/c(echo) a"),
    ("cmdLine", "a;;,b\t\r\nc", "a b c"),
    ("cmdLine", "  ls", " ls"),
    ("cmdLine", "\xc9X", "\xc9x"),
    # normalizePath
    ("normalizePath", "/a/b/../c", "/a/c"),
    ("normalizePath", "a/./b//c/", "a/b/c/"),
    ("normalizePath", "../../x", "../../x"),
    ("normalizePath", "/../x", "/x"),
    ("normalizePath", "/x/..", ""),
    ("normalizePath", ".", ""),
    ("normalizePath", "a\\..\\b", "a\\..\\b"),
    ("normalizePathWin", "a\\b\\..\\c", "a/c"),
    ("normalizePathWin", "\\x\\\\y", "/x/y"),
    # base64 (mbed TLS rules: strict, complete groups only)
    ("base64Decode", "YWJjZA==", "abcd"),
    ("base64Decode", "YWJjZA", "abc"),
    ("base64Decode", "YW\r\nJj", "abc"),
    ("base64Decode", "YW Jj", ""),
    ("base64Decode", "YW=Jj", ""),
    ("base64Decode", "!!", ""),
    ("base64DecodeExt", "Y.W.J.j", "abc"),
    ("base64DecodeExt", "YW\x00Jj", "abc"),  # a NUL is skipped, not an end
    ("base64DecodeExt", "YWJjZ", "abc"),
    ("base64DecodeExt", "YWJjZA", "abcd"),
    ("base64DecodeExt", "Y=WJj", ""),  # "=" after 4k+1 characters: nothing
    ("base64Encode", "abc\xff", "YWJj/w=="),
    # hex, length, parity, sql hex, url encode
    ("hexEncode", "A\xff\x00", "41ff00"),
    ("hexDecode", "41424", "AB"),
    ("sqlHexDecode", "0x414243 x 0x4", "ABC x 0x"),  # v3 loses the last byte...
    ("sqlHexDecode", "ab\x00cd", "ab"),  # ...and stops at a NUL
    ("sqlHexDecode", "0x4142", "AB"),  # unless a hex literal ends the value
    ("length", "a\x00\xff", "3"),
    ("parityZero7bit", "\xc1", "A"),
    ("parityEven7bit", "\x41\x43", "\x41\xc3"),
    ("parityOdd7bit", "\x41\x43", "\xc1\x43"),
    ("urlEncode", "a b*~\xff", "a+b*%7e%ff"),
]


@pytest.mark.parametrize(("name", "value", "expected"), CASES)
def test_modsecurity_v3_semantics(name: str, value: str, expected: str) -> None:
    assert apply(name, value) == expected


def test_hashes_are_raw_digests_of_the_bytes() -> None:
    value = "caf\xe9"
    assert apply("sha1", value) == hashlib.sha1(b"caf\xe9").digest().decode("latin-1")
    assert apply("md5", value) == hashlib.md5(b"caf\xe9").digest().decode("latin-1")
    assert apply("hexEncode", apply("sha1", "")) == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def test_url_decode_uni_without_a_unicode_map() -> None:
    decode = make_url_decode_uni(None)
    assert decode("%u0041%uff41%u00e9") == "Aa\xe9"


@pytest.mark.parametrize(
    "name",
    [
        "none",
        "urlDecode",
        "urlDecodeUni",
        "htmlEntityDecode",
        "jsDecode",
        "cssDecode",
        "escapeSeqDecode",
        "utf8toUnicode",
        "removeNulls",
        "replaceNulls",
        "replaceComments",
        "removeComments",
        "removeCommentsChar",
        "normalizePath",
        "normalizePathWin",
        "lowercase",
        "trim",
    ],
)
def test_values_without_special_characters_come_back_unchanged(name: str) -> None:
    value = "plain value 123"
    assert apply(name, value) == value


latin1_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=64)
# Inputs dense in the characters decoders react to.
escape_heavy = st.text(
    alphabet="%uUxX\\&#;/.*-<>!+0123456789abcdefABCDEF \x00\xc3\xa9\xff\n", max_size=64
)


@pytest.mark.parametrize("name", transformation_names())
@given(value=st.one_of(latin1_text, escape_heavy))
def test_no_transformation_raises_and_output_stays_bytes(name: str, value: str) -> None:
    result = apply(name, value)
    assert isinstance(result, str)
    assert all(ord(char) <= 0xFF for char in result)


@given(value=st.one_of(latin1_text, escape_heavy))
def test_decoders_never_grow_their_input(value: str) -> None:
    for name in ("urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode", "cssDecode"):
        assert len(apply(name, value)) <= len(value), name
    for name in ("escapeSeqDecode", "normalizePath", "normalizePathWin", "replaceComments"):
        assert len(apply(name, value)) <= len(value) + 1, name


@given(value=latin1_text)
def test_lowercase_is_idempotent_and_cmdline_has_no_double_spaces(value: str) -> None:
    once = apply("lowercase", value)
    assert apply("lowercase", once) == once
    assert "  " not in apply("cmdLine", value)
