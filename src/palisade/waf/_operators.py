"""SecLang operators (``@rx``, ``@pm``, …) with the semantics of libmodsecurity3 (ModSecurity v3).

Every operator is compiled once (:func:`compile_operator`) into an object whose ``match`` takes
a value (a ``str`` whose code points are bytes) and returns ``None`` or a tuple of captures:

- ``@rx``: element 0 the whole match, then every group up to the last one that took part (a
  group that did not take part yields ``""``; v3 leaves that TX variable untouched). v3 stores
  all of them, so a pattern with more than nine groups also sets ``TX.10`` and beyond;
- ``@pm``/``@pmFromFile``: what v3 puts in TX.0 — the text of the Aho-Corasick state where the
  first phrase ended (usually the phrase; "abcd bc" on "xabcd" gives "abc"), spelled as in the
  phrase list; ``@detectSQLi``: the libinjection fingerprint; ``@detectXSS``: the value;
- every other operator: the value (``@contains``-like ones: the argument). v3 does not touch TX
  for those even with ``capture``: :data:`SETS_TX_CAPTURES` names the operators that do.

An empty tuple means "matched, nothing captured" (v3's ``@rx`` with an empty pattern).

Regular expressions are PCRE2 in byte mode with ``DOTALL | MULTILINE`` and the JIT, as v3
compiles them; phrase matching is an Aho-Corasick automaton over ASCII-lower-cased text, like
v3's ``acmp`` in case-insensitive mode. Behaviour was checked against the libmodsecurity3 3.0.9
library (the reference build) by feeding both the same random values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import ahocorasick
import libinjection
import pcre2
from pcre2 import _cy as _pcre2_cy

from ._plain import raw as _raw

__all__ = [
    "SETS_TX_CAPTURES",
    "Operator",
    "OperatorError",
    "compile_operator",
    "operator_names",
]

Captures = tuple[str, ...]

#: Operators whose captures v3 writes to TX.0… when the rule has the ``capture`` action.
SETS_TX_CAPTURES = frozenset({"rx", "pm", "pmFromFile", "detectSQLi", "detectXSS"})


class OperatorError(ValueError):
    """Unknown operator or an argument it cannot compile (the reason is in the message)."""


class Operator(Protocol):
    name: str

    def match(self, value: str) -> Captures | None: ...


# --------------------------------------------------------------------------- helpers

_C_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_LLONG_MIN, _LLONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _ascii_lower(value: str) -> str:
    # bytes.lower() changes only ASCII letters, like C's tolower() in the "C" locale.
    return value.lower() if value.isascii() else value.encode("latin-1").lower().decode("latin-1")


def _atoll(text: str) -> int:
    """C ``atoll``: leading blanks, a sign, digits; 0 without digits, clamped on overflow."""
    found = _C_INTEGER.match(text)
    if found is None:
        return 0
    return max(_LLONG_MIN, min(_LLONG_MAX, int(found.group(1))))


def _stoi(text: str) -> int:
    """``std::stoi`` where any failure (no digits, out of ``int`` range) counts as 0."""
    found = _C_INTEGER.match(text)
    if found is None:
        return 0
    number = int(found.group(1))
    return number if _INT_MIN <= number <= _INT_MAX else 0


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        # An argument decoded as UTF-8 by a caller: its bytes are the UTF-8 encoding.
        return text.encode("utf-8")


def _read_data_file(data_dir: Path, argument: str) -> list[str]:
    """Lines of the (space-separated) files named by ``argument``, relative to ``data_dir``."""
    names = argument.split()
    if not names:
        raise OperatorError("no file name given")
    lines: list[str] = []
    for name in names:
        if name.startswith(("https://", "http://")):
            raise OperatorError(f"remote data files are not supported: {name}")
        path = Path(name)
        if not path.is_absolute():
            path = data_dir / path
        try:
            content = path.read_bytes().decode("latin-1")
        except OSError as error:
            raise OperatorError(f"cannot read {path}: {error.strerror}") from None
        lines.extend(content.split("\n"))
        if lines and lines[-1] == "":
            lines.pop()
    return lines


# --------------------------------------------------------------------------- @rx

# DOTALL | MULTILINE and no UTF: the options ModSecurity v3 passes to pcre2_compile. The Python
# binding adds ALT_BSUX (which turns "\\x{ff}" into a literal "x{ff}" and is used by the CRS) and
# NEVER_BACKSLASH_C; both are switched off again so patterns mean what they mean to v3.
_RX_FLAGS = pcre2.DOTALL | pcre2.MULTILINE
_PCRE2_ALT_BSUX = 0x00000002
_PCRE2_NEVER_BACKSLASH_C = 0x00100000
_MATCH_CONTEXT = pcre2._EMPTY_MATCH_CONTEXT


def compile_pcre(pattern: bytes) -> pcre2.Pattern:
    """Compile and JIT ``pattern`` with v3's options (raises ``pcre2.PatternError``)."""
    code = _pcre2_cy.compile(pattern, _RX_FLAGS, _PCRE2_ALT_BSUX | _PCRE2_NEVER_BACKSLASH_C)
    _pcre2_cy.jit_compile(code)
    return pcre2.Pattern(code, pattern, _RX_FLAGS, True, None)


class Rx:
    __slots__ = ("_code", "_groups", "_pattern", "argument", "name")

    def __init__(self, argument: str) -> None:
        self.name = "rx"
        self.argument = argument
        try:
            self._pattern = compile_pcre(_to_bytes(argument))
        except Exception as error:  # PatternError, LibraryError (JIT)
            raise OperatorError(f"cannot compile regular expression: {error}") from None
        self._code = self._pattern._pcre2_code
        self._groups: int = self._pattern.groups

    def match(self, value: str) -> Captures | None:
        data = value.encode("latin-1")
        try:
            # The binding's low-level call skips building a Match object; almost every
            # evaluation is a miss, and only a hit pays for the second, capturing search.
            found, _offset, _options = _pcre2_cy.match(
                self._code, data, len(data), 0, _MATCH_CONTEXT, 0
            )
            if found is None:
                return None
            captured = self._pattern.search(data)
        except Exception:
            # Match or JIT-stack limits: v3 treats a failed pcre2_match as "no match".
            return None
        if captured is None:
            return None
        if not self._groups:
            return (captured.group(0).decode("latin-1"),)
        groups = captured.group(*range(self._groups + 1))
        last = len(groups)
        while last > 1 and groups[last - 1] is None:
            last -= 1
        return tuple("" if group is None else group.decode("latin-1") for group in groups[:last])


class _EmptyRx:
    """``@rx`` with an empty pattern: v3 reports a match without touching TX."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "rx"

    def match(self, value: str) -> Captures | None:
        return ()


# --------------------------------------------------------------------------- @pm, @pmFromFile

_PM_ESCAPABLE = frozenset(':;\\"')
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_pm_phrases(argument: str) -> list[str]:
    """Phrases of an ``@pm`` argument: optional surrounding quotes, ``|hex|`` bytes, ``\\``
    escapes of ``: ; \\ "``, then split on whitespace (v3's ``parse_pm_content`` + split)."""
    content = argument.lstrip(" \t")
    if len(content) >= 2 and content[0] == '"' and content[-1] == '"':
        content = content[1:-1]
    if not content:
        return []
    out: list[str] = []
    in_hex = False
    escaped = False
    pending = ""
    for char in content:
        if char == "|":
            in_hex = not in_hex
        elif not escaped and char == "\\":
            escaped = True
        elif in_hex:
            if char in _HEX_DIGITS:
                pending += char
                if len(pending) == 2:
                    out.append(chr(int(pending, 16)))
                    pending = ""
        elif escaped:
            if char not in _PM_ESCAPABLE:
                # v3 gives up on the whole argument and splits it as written.
                return argument.split()
            out.append(char)
            escaped = False
        else:
            out.append(char)
    return "".join(out).split()


class _Acmp:
    """libmodsecurity3's Aho-Corasick matcher (acmp) with its quirks, as a plain trie.

    Each node's text is the prefix spelled like the first phrase that created it. Its
    failure link is computed in one step only: the child for the same letter of the parent's
    failure node, or else the root (a correct Aho-Corasick keeps falling back along the
    parent's failure chain). So after "secrets." fails towards "secrets.json", acmp is back
    at the root and misses a ".env" that started inside. A node "matches" when it ends a
    phrase or when some node on its failure chain does; acmp then reports the node's own
    text (``abcd bc`` on ``xabcd`` reports ``abc``)."""

    __slots__ = ("_children", "_fail", "_last", "_other", "_text")

    def __init__(self, phrases: Sequence[tuple[str, str]]) -> None:
        children: list[dict[str, int]] = [{}]
        parent: list[int] = [0]
        letter: list[str] = [""]
        text: list[str] = [""]
        last: list[bool] = [False]
        for lowered, phrase in phrases:
            node = 0
            for depth, char in enumerate(lowered):
                child = children[node].get(char)
                if child is None:
                    child = len(children)
                    children.append({})
                    parent.append(node)
                    letter.append(char)
                    text.append(phrase[: depth + 1])
                    last.append(False)
                    children[node][char] = child
                node = child
            last[node] = True
        fail = [0] * len(children)
        level = list(children[0].values())
        while level:  # breadth first: a parent's link is known before its children's
            following: list[int] = []
            for node in level:
                if parent[node] != 0:
                    fail[node] = children[fail[parent[node]]].get(letter[node], 0)
                following.extend(children[node].values())
            level = following
        other = [False] * len(children)
        for node in range(1, len(children)):
            link = fail[node]
            while link != 0 and not last[link]:
                link = fail[link]
            other[node] = link != 0
        self._children = children
        self._fail = fail
        self._last = last
        self._other = other
        self._text = text

    def first(self, lowered: str) -> str | None:
        """The text acmp reports for the first match in ``lowered``, None without one."""
        children, fail, last, other = self._children, self._fail, self._last, self._other
        node = 0
        for char in lowered:
            while True:
                found = children[node].get(char)
                if found is not None:
                    if last[found]:
                        return self._text[found]
                    node = found
                    break
                if node == 0:
                    break
                node = fail[node]
            if other[node]:
                return self._text[node]
        return None


class Pm:
    __slots__ = ("_acmp", "_automaton", "argument", "name")

    def __init__(self, name: str, argument: str, phrases: list[str]) -> None:
        self.name = name
        self.argument = argument
        pairs = [(_ascii_lower(phrase), phrase) for phrase in phrases if phrase]
        # a correct Aho-Corasick (pyahocorasick, in C) finds every phrase acmp can find: the
        # faithful but slow _Acmp only runs on values where it found one
        automaton = ahocorasick.Automaton()
        for lowered, _phrase in pairs:
            if lowered not in automaton:
                automaton.add_word(lowered, lowered)
        self._automaton: ahocorasick.Automaton | None = None
        if len(automaton):
            automaton.make_automaton()
            self._automaton = automaton
        self._acmp = _Acmp(pairs)

    def match(self, value: str) -> Captures | None:
        if self._automaton is None or not value:
            return None
        lowered = _ascii_lower(value)
        for _found in self._automaton.iter(lowered):
            reported = self._acmp.first(lowered)
            return None if reported is None else (reported,)
        return None


def _pm_file_phrases(data_dir: Path, argument: str) -> list[str]:
    phrases = []
    for line in _read_data_file(data_dir, argument):
        # Comment: a '#' preceded only by blanks; empty lines are skipped too.
        if not line or line.lstrip(" \t\n\v\f\r").startswith("#"):
            continue
        phrases.append(line)
    return phrases


# --------------------------------------------------------------------------- string operators


class _StringOperator:
    """An operator comparing the value with its (fixed) argument."""

    __slots__ = ("_test", "argument", "name")

    def __init__(self, name: str, argument: str, test: Callable[[str, str], Captures | None]):
        self.name = name
        self.argument = argument
        self._test = test

    def match(self, value: str) -> Captures | None:
        return self._test(value, self.argument)


def _streq(value: str, argument: str) -> Captures | None:
    return (value,) if value == argument else None


def _contains(value: str, argument: str) -> Captures | None:
    return (argument,) if argument in value else None


def _strmatch(value: str, argument: str) -> Captures | None:
    return (argument,) if argument in value else None


def _begins_with(value: str, argument: str) -> Captures | None:
    return (argument,) if value.startswith(argument) else None


def _ends_with(value: str, argument: str) -> Captures | None:
    return (argument,) if value.endswith(argument) else None


def _within(value: str, argument: str) -> Captures | None:
    if not value:
        return (value,)
    return (value,) if value in argument else None


def _is_letter(char: str) -> bool:
    return ("A" <= char <= "Z") or ("a" <= char <= "z")


def _contains_word(value: str, argument: str) -> Captures | None:
    """The argument bounded by non-letters (v3 only treats ASCII letters as word characters)."""
    if not argument:
        return (argument,)
    if not value:
        return None
    if value == argument:
        return (argument,)
    size = len(argument)
    position = value.find(argument)
    while position >= 0:
        before_ok = position == 0 or not _is_letter(value[position - 1])
        after = position + size
        after_ok = after >= len(value) or not _is_letter(value[after])
        if position == 0:
            # v3 at offset 0 demands a non-letter after the word, even at the end of the value.
            if after < len(value) and after_ok:
                return (argument,)
        elif before_ok and after_ok:
            return (argument,)
        position = value.find(argument, position + 1)
    return None


# --------------------------------------------------------------------------- numbers


class _Numeric:
    __slots__ = ("_compare", "_limit", "argument", "name")

    def __init__(self, name: str, argument: str) -> None:
        self.name = name
        self.argument = argument
        # v3: @eq converts both sides with std::stoi (errors → 0), the others with atoll.
        convert = _stoi if name == "eq" else _atoll
        self._limit = convert(argument)
        comparisons: dict[str, Callable[[int, int], bool]] = {
            "eq": int.__eq__,
            "ge": int.__ge__,
            "gt": int.__gt__,
            "le": int.__le__,
            "lt": int.__lt__,
        }
        test = comparisons[name]
        limit = self._limit
        self._compare: Callable[[str], bool] = lambda value: test(convert(value), limit)

    def match(self, value: str) -> Captures | None:
        return (value,) if self._compare(value) else None


# --------------------------------------------------------------------------- validation


def _byte_range_class(argument: str) -> str:
    """The allowed bytes of ``@validateByteRange 9,10,13,32-126`` as a regex class body."""
    allowed = [False] * 256
    for part in argument.split(","):
        start_text, dash, end_text = part.partition("-")
        start = _stoi_strict(start_text)
        if not dash:
            if start is not None and 0 <= start <= 255:
                allowed[start] = True
            continue
        end = _stoi_strict(end_text)
        # v3 ignores a malformed or out-of-range piece (it logs and carries on).
        if start is None or end is None or not (0 <= start <= end <= 255):
            continue
        for code in range(start, end + 1):
            allowed[code] = True
    return "".join(re.escape(chr(code)) for code in range(256) if allowed[code])


def _stoi_strict(text: str) -> int | None:
    found = _C_INTEGER.match(text)
    return None if found is None else int(found.group(1))


class ValidateByteRange:
    __slots__ = ("_outside", "argument", "name")

    def __init__(self, argument: str) -> None:
        self.name = "validateByteRange"
        self.argument = argument
        allowed = _byte_range_class(argument)
        self._outside = re.compile(f"[^{allowed}]" if allowed else "[\\x00-\\xff]")

    def match(self, value: str) -> Captures | None:
        return (value,) if self._outside.search(value) else None


_BAD_URL_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def _validate_url_encoding(value: str, _argument: str) -> Captures | None:
    """A ``%`` not followed by two hex digits (including one too close to the end)."""
    if "%" not in value:
        return None
    return (value,) if _BAD_URL_ESCAPE.search(value) else None


def _utf8_error(data: bytes) -> bool:
    """v3's UTF-8 validation: missing or bad continuation bytes, invalid lead bytes, leads
    ≥ 0xF5, surrogates and overlong forms are errors (code points above U+10FFFF reachable
    with 0xF4 are not)."""
    size = len(data)
    i = 0
    while i < size:
        lead = data[i]
        if lead < 0x80:
            i += 1
            continue
        if lead & 0xE0 == 0xC0:
            length, code = 2, lead & 0x1F
        elif lead & 0xF0 == 0xE0:
            length, code = 3, lead & 0x0F
        elif lead & 0xF8 == 0xF0:
            if lead >= 0xF5:
                return True
            length, code = 4, lead & 0x07
        else:
            return True
        if size - i < length:
            return True
        for byte in data[i + 1 : i + length]:
            if byte & 0xC0 != 0x80:
                return True
            code = (code << 6) | (byte & 0x3F)
        if 0xD800 <= code <= 0xDFFF or code < (0x80, 0x800, 0x10000)[length - 2]:
            return True
        i += length
    return False


def _validate_utf8_encoding(value: str, _argument: str) -> Captures | None:
    if value.isascii():
        return None
    data = value.encode("latin-1")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # Python's decoder is stricter above U+10FFFF: ask the exact v3 rules.
        return (value,) if _utf8_error(data) else None
    return None


# --------------------------------------------------------------------------- @ipMatch

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(entries: list[str]) -> tuple[_Network, ...]:
    networks: list[_Network] = []
    for entry in entries:
        for token in entry.split(","):
            token = token.strip(" \t\r\n")
            if not token:
                continue
            try:
                networks.append(ipaddress.ip_network(token, strict=False))
            except ValueError:
                raise OperatorError(f"invalid IP address or network: {token!r}") from None
    return tuple(networks)


class IpMatch:
    __slots__ = ("_v4", "_v6", "argument", "name")

    def __init__(self, name: str, argument: str, entries: list[str]) -> None:
        self.name = name
        self.argument = argument
        networks = _parse_networks(entries)
        self._v4 = tuple(net for net in networks if isinstance(net, ipaddress.IPv4Network))
        self._v6 = tuple(net for net in networks if isinstance(net, ipaddress.IPv6Network))

    def match(self, value: str) -> Captures | None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return None
        networks: tuple[_Network, ...] = (
            self._v4 if isinstance(address, ipaddress.IPv4Address) else self._v6
        )
        for network in networks:
            if address in network:
                return (value,)
        return None


def _ip_file_entries(data_dir: Path, argument: str) -> list[str]:
    return [line.partition("#")[0] for line in _read_data_file(data_dir, argument)]


# --------------------------------------------------------------------------- libinjection


def _detect_sqli(value: str, _argument: str) -> Captures | None:
    result = libinjection.is_sql_injection(_raw(value))
    if result["is_sqli"]:
        fingerprint = result["fingerprint"]
        if isinstance(fingerprint, bytes):
            fingerprint = fingerprint.decode("latin-1")
        return (str(fingerprint),)
    return None


def _detect_xss(value: str, _argument: str) -> Captures | None:
    return (value,) if libinjection.is_xss(_raw(value))["is_xss"] else None


def _unconditional_match(value: str, _argument: str) -> Captures | None:
    return (value,)


def _no_match(_value: str, _argument: str) -> Captures | None:
    return None


# --------------------------------------------------------------------------- registry

_CANONICAL = {
    name.lower(): name
    for name in (
        "rx",
        "pm",
        "pmFromFile",
        "streq",
        "contains",
        "containsWord",
        "strmatch",
        "beginsWith",
        "endsWith",
        "within",
        "eq",
        "ge",
        "gt",
        "le",
        "lt",
        "validateByteRange",
        "validateUrlEncoding",
        "validateUtf8Encoding",
        "ipMatch",
        "ipMatchFromFile",
        "detectSQLi",
        "detectXSS",
        "unconditionalMatch",
        "noMatch",
    )
}
_ALIASES = {"pmf": "pmFromFile", "ipmatchf": "ipMatchFromFile"}

_SIMPLE: dict[str, Callable[[str, str], Captures | None]] = {
    "streq": _streq,
    "contains": _contains,
    "containsWord": _contains_word,
    "strmatch": _strmatch,
    "beginsWith": _begins_with,
    "endsWith": _ends_with,
    "within": _within,
    "validateUrlEncoding": _validate_url_encoding,
    "validateUtf8Encoding": _validate_utf8_encoding,
    "detectSQLi": _detect_sqli,
    "detectXSS": _detect_xss,
    "unconditionalMatch": _unconditional_match,
    "noMatch": _no_match,
}


def compile_operator(name: str, argument: str, *, data_dir: Path) -> Operator:
    """Compile ``@name argument`` (``name`` without ``@``, any case; negation is the caller's).

    ``data_dir`` is where relative file names of ``@pmFromFile``/``@ipMatchFromFile`` live.
    Raises :class:`OperatorError` for an unknown operator or an argument it cannot use.
    """
    key = name.lower()
    canonical = _ALIASES.get(key) or _CANONICAL.get(key)
    if canonical is None:
        raise OperatorError(f"unsupported operator @{name}")
    if canonical == "rx":
        return Rx(argument) if argument else _EmptyRx()
    if canonical == "pm":
        return Pm("pm", argument, parse_pm_phrases(argument))
    if canonical == "pmFromFile":
        return Pm("pmFromFile", argument, _pm_file_phrases(data_dir, argument))
    if canonical in ("eq", "ge", "gt", "le", "lt"):
        return _Numeric(canonical, argument)
    if canonical == "validateByteRange":
        return ValidateByteRange(argument)
    if canonical == "ipMatch":
        return IpMatch("ipMatch", argument, [argument])
    if canonical == "ipMatchFromFile":
        return IpMatch("ipMatchFromFile", argument, _ip_file_entries(data_dir, argument))
    return _StringOperator(canonical, argument, _SIMPLE[canonical])


def operator_names() -> tuple[str, ...]:
    """Canonical names of every supported operator (aliases ``pmf`` and ``ipMatchF`` too)."""
    return (*sorted(_CANONICAL.values()), "pmf", "ipMatchF")
