"""Operators behave as libmodsecurity3 (v3.0.x) does; every CRS operator compiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palisade.waf._operators import (
    OperatorError,
    compile_operator,
    operator_names,
    parse_pm_phrases,
)
from tests.shared_data import shared_path

HERE = Path(__file__).parent


def op(name: str, argument: str = "", data_dir: Path = HERE) -> object:
    return compile_operator(name, argument, data_dir=data_dir)


def matches(name: str, argument: str, value: str, data_dir: Path = HERE) -> tuple[str, ...] | None:
    return compile_operator(name, argument, data_dir=data_dir).match(value)


# --------------------------------------------------------------------------- CRS corpus

_SECRULE = re.compile(
    r'^[ \t]*SecRule[ \t]+(?:"(?:[^"\\]|\\.)*"|\S+)[ \t]+"((?:[^"\\]|\\.)*)"', re.MULTILINE
)
_OPERATOR = re.compile(r"(!?)@([A-Za-z0-9]+)(?:[ \t]+(.*))?\Z", re.DOTALL)


def crs_operators() -> list[tuple[str, str, str]]:
    """(file, operator name, argument) of every SecRule in the CRS rule files."""
    found = []
    for path in sorted(shared_path("data", "crs", "rules").glob("*.conf")):
        text = path.read_bytes().decode("latin-1").replace("\\\n", "")
        for rule in _SECRULE.finditer(text):
            operator = rule.group(1).replace('\\"', '"')
            parsed = _OPERATOR.match(operator)
            if parsed is None:  # no "@": an implicit @rx
                found.append((path.name, "rx", operator))
            else:
                found.append((path.name, parsed.group(2), parsed.group(3) or ""))
    return found


def test_every_crs_operator_compiles() -> None:
    rules_dir = shared_path("data", "crs", "rules")
    operators = crs_operators()
    names = {name for _file, name, _argument in operators}
    assert {"rx", "pm", "pmFromFile", "detectSQLi", "validateByteRange", "ipMatch"} <= names
    assert len(operators) > 600
    failures = []
    for file, name, argument in operators:
        try:
            compiled = compile_operator(name, argument, data_dir=rules_dir)
        except OperatorError as error:
            failures.append(f"{file}: @{name} {argument[:60]!r}: {error}")
            continue
        compiled.match("a harmless value")
    assert failures == []


def test_crs_regexes_use_pcre_syntax_the_way_v3_reads_it() -> None:
    # \x{ff} in a class (rule 933...) must be the byte 0xff, not a literal "x{ff}".
    assert matches("rx", r"^[A-Z_a-z\x7f-\x{ff}]+$", "caf\xe9") == ("caf\xe9",)
    assert matches("rx", r"^[A-Z_a-z\x7f-\x{ff}]+$", "x{}") is None


# --------------------------------------------------------------------------- @rx


def test_rx_captures_whole_match_then_groups() -> None:
    assert matches("rx", r"(\d+)-(\d+)", "id 12-34") == ("12-34", "12", "34")


def test_rx_groups_after_the_last_participating_one_are_left_out() -> None:
    assert matches("rx", r"(a)|(b)(c)?", "xb") == ("b", "", "b")


def test_rx_is_dotall_and_multiline_and_case_sensitive() -> None:
    assert matches("rx", "a.b", "a\nb") == ("a\nb",)
    assert matches("rx", "^foo$", "x\nfoo\ny") == ("foo",)
    assert matches("rx", "foo", "FOO") is None
    assert matches("rx", "(?i)foo", "FOO") == ("FOO",)


def test_rx_works_on_bytes_not_utf8() -> None:
    # "é" in UTF-8 is two bytes: "." takes one, \w takes none of them (no UCP).
    assert matches("rx", "^..$", "\xc3\xa9") == ("\xc3\xa9",)
    assert matches("rx", r"\w", "\xc3\xa9") is None
    assert matches("rx", r"\xc3", "\xc3\xa9") == ("\xc3",)


def test_rx_empty_pattern_matches_without_captures() -> None:
    assert matches("rx", "", "anything") == ()


def test_rx_bad_pattern_is_an_operator_error() -> None:
    with pytest.raises(OperatorError, match="regular expression"):
        op("rx", "(unclosed")
    with pytest.raises(OperatorError):
        op("rx", r"\u0041")  # PCRE2 without ALT_BSUX rejects \u


# --------------------------------------------------------------------------- @pm family


def test_pm_is_case_insensitive_on_ascii_and_reports_the_phrase() -> None:
    assert matches("pm", "Foo bar", "xxFOOxx") == ("Foo",)
    assert matches("pm", "foo", "\xc9FOO") == ("foo",)
    assert matches("pm", "\xe9t\xe9", "\xc9T\xc9") is None  # no case folding beyond ASCII
    assert matches("pm", "foo bar", "nothing here") is None


def test_pm_reports_the_automaton_state_where_the_first_phrase_ends() -> None:
    # v3's acmp reports the text of the state, not the phrase found through its fail link.
    assert matches("pm", "abcd bc", "xabcd") == ("abc",)
    assert matches("pm", "abc b", "abx") == ("ab",)
    assert matches("pm", "bc abcd", "xbcd") == ("bc",)
    assert matches("pm", "FooBar foo", "xFOOBAR") == ("Foo",)  # spelled like the first phrase


def test_pm_fail_links_take_one_step_only() -> None:
    """acmp links a node to the same letter under its parent's failure node, or else to the
    root: a phrase that starts inside a partial match of a longer one can be missed."""
    assert matches("pm", ".env secrets.json", "/secrets.env") is None
    assert matches("pm", ".env secrets.json", "/a.env") == (".env",)
    assert matches("pm", ".env secrets.json", "/secrets.json.env") == ("secrets.json",)
    # "abc" links to "bc" (the "c" under "ab"'s link "b"), and "bc" on to "c": "cy" is found
    assert matches("pm", "abcd bce cy", "abcy") == ("cy",)
    # without "bc", "abc" links to the root ("b" has no "c"), and "cy" is missed
    assert matches("pm", "abcd bx cy", "abcy") is None


def test_pm_argument_grammar() -> None:
    assert parse_pm_phrases('  "a b"') == ["a", "b"]
    assert parse_pm_phrases("|41 42|c") == ["ABc"]
    assert parse_pm_phrases(r"a\;b \:") == ["a;b", ":"]
    assert parse_pm_phrases(r"a\qb") == [r"a\qb"]  # unsupported escape: split as written
    assert parse_pm_phrases("") == []
    assert matches("pm", "", "anything") is None


def test_pm_from_file_reads_phrases_relative_to_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "words.data").write_bytes(b"# comment\n\n  # indented comment\nEvil\n/etc/Passwd\n")
    (tmp_path / "more.data").write_bytes(b"other\n")
    assert matches("pmFromFile", "words.data", "x/ETC/passwd", tmp_path) == ("/etc/Passwd",)
    assert matches("pmf", "words.data more.data", "another", tmp_path) == ("other",)
    assert matches("pmFromFile", "words.data", "comment", tmp_path) is None
    assert op("pmf", "words.data", tmp_path).name == "pmFromFile"  # type: ignore[attr-defined]
    with pytest.raises(OperatorError, match=r"missing\.data"):
        op("pmFromFile", "missing.data", tmp_path)


def test_pm_from_file_on_crs_data() -> None:
    rules = shared_path("data", "crs", "rules")
    assert matches("pmFromFile", "lfi-os-files.data", "../../ETC/PASSWD", rules) is not None
    assert matches("pmFromFile", "lfi-os-files.data", "hello world", rules) is None


# --------------------------------------------------------------------------- strings


def test_string_operators() -> None:
    assert matches("streq", "POST", "POST") == ("POST",)
    assert matches("streq", "POST", "post") is None
    assert matches("contains", "ab", "xaby") == ("ab",)
    assert matches("contains", "", "x") == ("",)
    assert matches("strmatch", "ab", "xaby") == ("ab",)
    assert matches("beginsWith", "ab", "abc") == ("ab",)
    assert matches("beginsWith", "abc", "ab") is None
    assert matches("endsWith", "bc", "abc") == ("bc",)
    assert matches("endsWith", "", "abc") == ("",)


def test_within_is_a_substring_of_the_argument() -> None:
    assert matches("within", "GET HEAD POST", "HEAD") == ("HEAD",)
    assert matches("within", "GET HEAD POST", "ET H") == ("ET H",)  # v3: plain substring
    assert matches("within", "GET HEAD POST", "PUT") is None
    assert matches("within", "GET", "") == ("",)  # an empty value is always within
    assert matches("within", "GET", "\x00GET") is None


def test_contains_word_needs_non_letters_around() -> None:
    assert matches("containsWord", "select", "a select b") == ("select",)
    assert matches("containsWord", "select", "a select") == ("select",)
    assert matches("containsWord", "select", "select(1)") == ("select",)
    assert matches("containsWord", "select", "select") == ("select",)
    assert matches("containsWord", "select", "selected") is None
    assert matches("containsWord", "select", "unselect x") is None
    assert matches("containsWord", "select", "selectx select1") == ("select",)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("name", "argument", "value", "expected"),
    [
        ("eq", "0", "abc", True),  # no digits: 0
        ("eq", "5", " 5xyz", True),  # leading blanks and trailing garbage ignored
        ("eq", "0", "99999999999", True),  # out of int range: stoi fails → 0
        ("eq", "1", "+1", True),
        ("lt", "5", "3", True),
        ("lt", "5", "5", False),
        ("le", "5", "5", True),
        ("gt", "5", "-6", False),
        ("ge", "1", "", False),
        ("gt", "0", "99999999999", True),  # atoll keeps 64 bits
        ("lt", "abc", "-1", True),
    ],
)
def test_numeric_operators(name: str, argument: str, value: str, expected: bool) -> None:
    assert (matches(name, argument, value) is not None) is expected


# --------------------------------------------------------------------------- validation


def test_validate_byte_range() -> None:
    crs = "9,10,13,32-126,128-255"
    assert matches("validateByteRange", crs, "hello\tworld\xff") is None
    assert matches("validateByteRange", crs, "nul\x00") == ("nul\x00",)
    assert matches("validateByteRange", crs, "del\x7f") is not None
    assert matches("validateByteRange", "32-36,38-126", "a%b") is not None
    assert matches("validateByteRange", "1-255", "") is None
    # Malformed pieces are ignored like v3 does (it only logs them).
    assert matches("validateByteRange", "65,300,x-y,70-60", "A") is None
    assert matches("validateByteRange", "65,300,x-y,70-60", "B") is not None


def test_validate_url_encoding() -> None:
    assert matches("validateUrlEncoding", "", "a%41b%2f") is None
    assert matches("validateUrlEncoding", "", "a%4") is not None  # too close to the end
    assert matches("validateUrlEncoding", "", "%zz") is not None
    assert matches("validateUrlEncoding", "", "%u0041") is not None
    assert matches("validateUrlEncoding", "", "") is None


@pytest.mark.parametrize(
    ("value", "invalid"),
    [
        ("plain", False),
        ("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", False),
        ("\xc3", True),  # missing byte
        ("\xc3A", True),  # bad continuation
        ("\x80", True),  # stray continuation byte
        ("\xc0\x80", True),  # overlong
        ("\xed\xa0\x80", True),  # surrogate
        ("\xf5\x80\x80\x80", True),  # lead byte beyond U+10FFFF
        ("\xf4\x90\x80\x80", False),  # v3 lets 0xF4 through above U+10FFFF
    ],
)
def test_validate_utf8_encoding(value: str, invalid: bool) -> None:
    assert (matches("validateUtf8Encoding", "", value) is not None) is invalid


# --------------------------------------------------------------------------- addresses


def test_ip_match_with_addresses_networks_and_ipv6() -> None:
    assert matches("ipMatch", "127.0.0.1,::1", "127.0.0.1") == ("127.0.0.1",)
    assert matches("ipMatch", "127.0.0.1,::1", "::1") == ("::1",)
    assert matches("ipMatch", "127.0.0.1,::1", "127.0.0.2") is None
    assert matches("ipMatch", "10.0.0.0/8, 2001:db8::/32", "10.9.8.7") is not None
    assert matches("ipMatch", "10.0.0.0/8, 2001:db8::/32", "2001:db8::5") is not None
    assert matches("ipMatch", "10.0.0.0/8", "not an address") is None
    assert matches("ipMatch", "10.0.0.0/8", " 10.1.2.3") is None  # no trimming of the value
    with pytest.raises(OperatorError, match="999"):
        op("ipMatch", "10.0.0.999")


def test_ip_match_from_file(tmp_path: Path) -> None:
    (tmp_path / "ips.txt").write_text("# trusted\n192.168.0.0/16\n10.1.1.1 # one host\n")
    assert matches("ipMatchFromFile", "ips.txt", "192.168.4.4", tmp_path) is not None
    assert matches("ipMatchF", "ips.txt", "10.1.1.1", tmp_path) is not None
    assert matches("ipMatchFromFile", "ips.txt", "10.1.1.2", tmp_path) is None


# --------------------------------------------------------------------------- libinjection


def test_detect_sqli_returns_the_fingerprint() -> None:
    assert matches("detectSQLi", "", "1' or '1'='1") == ("s&sos",)
    assert matches("detectSQLi", "", "hello world") is None


def test_detect_sqli_sees_bytes_not_utf8() -> None:
    # A latin-1 byte is one byte for libinjection, as in v3; it must not raise either.
    assert matches("detectSQLi", "", "\xe9' or 1=1--") is not None


def test_detect_xss() -> None:
    assert matches("detectXSS", "", "<script>alert(1)</script>") is not None
    assert matches("detectXSS", "", "just text") is None


# --------------------------------------------------------------------------- registry


def test_unconditional_and_no_match() -> None:
    assert matches("unconditionalMatch", "", "x") == ("x",)
    assert matches("noMatch", "", "x") is None


def test_names_are_case_insensitive_and_canonical() -> None:
    assert op("RX", "a").name == "rx"  # type: ignore[attr-defined]
    assert op("detectsqli").name == "detectSQLi"  # type: ignore[attr-defined]
    assert "pmFromFile" in operator_names()
    with pytest.raises(OperatorError, match="verifyCC"):
        op("verifyCC", "x")


latin1_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)


@given(value=latin1_text)
def test_no_operator_raises_on_arbitrary_bytes(value: str) -> None:
    for name, argument in [
        ("rx", r"(?i)(a|b)+\W"),
        ("pm", "a b c"),
        ("validateByteRange", "32-126"),
        ("validateUrlEncoding", ""),
        ("validateUtf8Encoding", ""),
        ("detectSQLi", ""),
        ("detectXSS", ""),
        ("ipMatch", "127.0.0.1,::1"),
        ("lt", "10"),
        ("eq", "1"),
        ("within", "abc"),
        ("containsWord", "a"),
    ]:
        result = matches(name, argument, value)
        assert result is None or isinstance(result, tuple)
