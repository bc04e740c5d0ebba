"""SecLang transformations (``t:…``) with the semantics of libmodsecurity3 (ModSecurity v3).

Values are ``str`` whose code points are bytes (latin-1 convention of the WAF package): every
transformation takes such a string and returns one, never decoding UTF-8 itself.

The behaviour follows ModSecurity v3.0.x (the reference build is 3.0.9), including its odd
corners, because the CRS regression tests were written against it: ``urlDecodeUni`` maps
``%uXXXX`` through the best-fit table of code page 20127 that ``modsecurity.conf`` loads with
``SecUnicodeMapFile unicode.mapping 20127``; ``cssDecode`` keeps only what precedes the first NUL
it produces; ``removeWhitespace`` also drops the bytes 0xA0 and 0xC2; C-locale character classes
(``isspace``, ``tolower``) apply, so only ASCII letters change case.

Speed matters more than elegance here: most values need no work, so every transformation
returns its input untouched when the characters it reacts to are absent, and the common ones
are built from ``str.translate``, ``str.replace`` and compiled regular expressions.
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

__all__ = ["Transformation", "UnknownTransformation", "get_transformation", "transformation_names"]

Transformation = Callable[[str], str]


class UnknownTransformation(ValueError):
    """The name after ``t:`` is not a transformation ModSecurity v3 knows."""


# --------------------------------------------------------------------------- helpers

_HEX = "0123456789abcdefABCDEF"
_WHITESPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale
_LONG_MAX = 2**63 - 1


def _x2c(high: str, low: str) -> int:
    """ModSecurity's ``x2c``: two hex digits to a byte, with its arithmetic on any character."""

    def digit(char: str) -> int:
        code = ord(char)
        return ((code & 0xDF) - ord("A") + 10) if code >= ord("A") else code - ord("0")

    return (digit(high) * 16 + digit(low)) & 0xFF


def _ascii_lower(value: str) -> str:
    # bytes.lower() changes only ASCII letters, like C's tolower() in the "C" locale.
    return value.lower() if value.isascii() else value.encode("latin-1").lower().decode("latin-1")


def _identity(value: str) -> str:
    return value


# --------------------------------------------------------------------------- case, nulls, space


def lowercase(value: str) -> str:
    return _ascii_lower(value)


def uppercase(value: str) -> str:
    return value.upper() if value.isascii() else value.encode("latin-1").upper().decode("latin-1")


def remove_nulls(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def replace_nulls(value: str) -> str:
    return value.replace("\x00", " ") if "\x00" in value else value


# v3.0.x removes C whitespace plus the two bytes of a UTF-8 no-break space (0xC2 0xA0), each on
# its own wherever it appears.
_REMOVED_WHITESPACE = (_WHITESPACE + "\xa0\xc2").encode("latin-1")


def remove_whitespace(value: str) -> str:
    # bytes.translate runs in C over a 256-entry table; str.translate would look up a dict.
    data = value.encode("latin-1")
    stripped = data.translate(None, _REMOVED_WHITESPACE)
    return value if len(stripped) == len(data) else stripped.decode("latin-1")


_WHITESPACE_RUN = re.compile("[ \t\n\v\f\r]+")


def compress_whitespace(value: str) -> str:
    if (
        "  " not in value
        and "\t" not in value
        and "\n" not in value
        and "\r" not in value
        and "\v" not in value
        and "\f" not in value
    ):
        return value
    return _WHITESPACE_RUN.sub(" ", value)


def trim(value: str) -> str:
    return value.strip(_WHITESPACE)


def trim_left(value: str) -> str:
    return value.lstrip(_WHITESPACE)


def trim_right(value: str) -> str:
    return value.rstrip(_WHITESPACE)


# --------------------------------------------------------------------------- URL decoding


def url_decode(value: str) -> str:
    """``%XX`` (valid hex only) and ``+`` → space; invalid or truncated escapes stay as written."""
    if "%" not in value:
        return value.replace("+", " ") if "+" in value else value
    if "+" in value:
        value = value.replace("+", " ")
    return unquote_to_bytes(value.encode("latin-1")).decode("latin-1")


def _load_codepage(table: str) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for entry in table.split():
        code, _, byte = entry.partition(":")
        mapping[int(code, 16)] = chr(int(byte, 16))
    return mapping


# Best-fit mapping of code page 20127 (US-ASCII) from ModSecurity's unicode.mapping data file,
# which the reference configuration loads (SecUnicodeMapFile unicode.mapping 20127).
_CODEPAGE_20127 = (
    "00a0:20 00a1:21 00a2:63 00a4:24 00a5:59 00a6:7c 00a9:43 00aa:61 00ab:3c 00ad:2d "
    "00ae:52 00b2:32 00b3:33 00b7:2e 00b8:2c 00b9:31 00ba:6f 00bb:3e 00c0:41 00c1:41 "
    "00c2:41 00c3:41 00c4:41 00c5:41 00c6:41 00c7:43 00c8:45 00c9:45 00ca:45 00cb:45 "
    "00cc:49 00cd:49 00ce:49 00cf:49 00d0:44 00d1:4e 00d2:4f 00d3:4f 00d4:4f 00d5:4f "
    "00d6:4f 00d8:4f 00d9:55 00da:55 00db:55 00dc:55 00dd:59 00e0:61 00e1:61 00e2:61 "
    "00e3:61 00e4:61 00e5:61 00e6:61 00e7:63 00e8:65 00e9:65 00ea:65 00eb:65 00ec:69 "
    "00ed:69 00ee:69 00ef:69 00f1:6e 00f2:6f 00f3:6f 00f4:6f 00f5:6f 00f6:6f 00f8:6f "
    "00f9:75 00fa:75 00fb:75 00fc:75 00fd:79 00ff:79 0100:41 0101:61 0102:41 0103:61 "
    "0104:41 0105:61 0106:43 0107:63 0108:43 0109:63 010a:43 010b:63 010c:43 010d:63 "
    "010e:44 010f:64 0110:44 0111:64 0112:45 0113:65 0114:45 0115:65 0116:45 0117:65 "
    "0118:45 0119:65 011a:45 011b:65 011c:47 011d:67 011e:47 011f:67 0120:47 0121:67 "
    "0122:47 0123:67 0124:48 0125:68 0126:48 0127:68 0128:49 0129:69 012a:49 012b:69 "
    "012c:49 012d:69 012e:49 012f:69 0130:49 0131:69 0134:4a 0135:6a 0136:4b 0137:6b "
    "0139:4c 013a:6c 013b:4c 013c:6c 013d:4c 013e:6c 0141:4c 0142:6c 0143:4e 0144:6e "
    "0145:4e 0146:6e 0147:4e 0148:6e 014c:4f 014d:6f 014e:4f 014f:6f 0150:4f 0151:6f "
    "0152:4f 0153:6f 0154:52 0155:72 0156:52 0157:72 0158:52 0159:72 015a:53 015b:73 "
    "015c:53 015d:73 015e:53 015f:73 0160:53 0161:73 0162:54 0163:74 0164:54 0165:74 "
    "0166:54 0167:74 0168:55 0169:75 016a:55 016b:75 016c:55 016d:75 016e:55 016f:75 "
    "0170:55 0171:75 0172:55 0173:75 0174:57 0175:77 0176:59 0177:79 0178:59 0179:5a "
    "017b:5a 017c:7a 017d:5a 017e:7a 0180:62 0189:44 0191:46 0192:66 0197:49 019a:6c "
    "019f:4f 01a0:4f 01a1:6f 01ab:74 01ae:54 01af:55 01b0:75 01b6:7a 01cd:41 01ce:61 "
    "01cf:49 01d0:69 01d1:4f 01d2:6f 01d3:55 01d4:75 01d5:55 01d6:75 01d7:55 01d8:75 "
    "01d9:55 01da:75 01db:55 01dc:75 01de:41 01df:61 01e4:47 01e5:67 01e6:47 01e7:67 "
    "01e8:4b 01e9:6b 01ea:4f 01eb:6f 01ec:4f 01ed:6f 01f0:6a 0261:67 02b9:27 02ba:22 "
    "02bc:27 02c4:5e 02c6:5e 02c8:27 02cb:60 02cd:5f 02dc:7e 0300:60 0302:5e 0303:7e "
    "030e:22 0331:5f 0332:5f 2000:20 2001:20 2002:20 2003:20 2004:20 2005:20 2006:20 "
    "2010:2d 2011:2d 2013:2d 2014:2d 2018:27 2019:27 201a:2c 201c:22 201d:22 201e:22 "
    "2022:2e 2026:2e 2032:27 2035:60 2039:3c 203a:3e 2122:54 ff01:21 ff02:22 ff03:23 "
    "ff04:24 ff05:25 ff06:26 ff07:27 ff08:28 ff09:29 ff0a:2a ff0b:2b ff0c:2c ff0d:2d "
    "ff0e:2e ff0f:2f ff10:30 ff11:31 ff12:32 ff13:33 ff14:34 ff15:35 ff16:36 ff17:37 "
    "ff18:38 ff19:39 ff1a:3a ff1b:3b ff1c:3c ff1d:3d ff1e:3e ff20:40 ff21:41 ff22:42 "
    "ff23:43 ff24:44 ff25:45 ff26:46 ff27:47 ff28:48 ff29:49 ff2a:4a ff2b:4b ff2c:4c "
    "ff2d:4d ff2e:4e ff2f:4f ff30:50 ff31:51 ff32:52 ff33:53 ff34:54 ff35:55 ff36:56 "
    "ff37:57 ff38:58 ff39:59 ff3a:5a ff3b:5b ff3c:5c ff3d:5d ff3e:5e ff3f:5f ff40:60 "
    "ff41:61 ff42:62 ff43:63 ff44:64 ff45:65 ff46:66 ff47:67 ff48:68 ff49:69 ff4a:6a "
    "ff4b:6b ff4c:6c ff4d:6d ff4e:6e ff4f:6f ff50:70 ff51:71 ff52:72 ff53:73 ff54:74 "
    "ff55:75 ff56:76 ff57:77 ff58:78 ff59:79 ff5a:7a ff5b:7b ff5c:7c ff5d:7d ff5e:7e "
)
UNICODE_MAP_20127: dict[int, str] = _load_codepage(_CODEPAGE_20127)

_URL_UNI_ESCAPE = re.compile(r"%[uU]([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})|\+")


def _unicode_to_byte(code: int, unicode_map: dict[int, str] | None) -> str:
    if unicode_map is not None:
        mapped = unicode_map.get(code)
        if mapped is not None:
            return mapped
    # Not in the map: v3.0.9 keeps the low byte, shifting full-width ASCII (U+FF01..U+FF5E)
    # onto printable ASCII. (Later v3 releases write "x" instead; the reference is 3.0.9.)
    low = code & 0xFF
    if 0 < low < 0x5F and code >> 8 == 0xFF:
        return chr(low + 0x20)
    return chr(low)


def make_url_decode_uni(unicode_map: dict[int, str] | None) -> Transformation:
    """``urlDecodeUni`` with a given ``%uXXXX`` map (``None``: no ``SecUnicodeMapFile``)."""

    def replace(match: re.Match[str]) -> str:
        wide, narrow = match.group(1, 2)
        if wide is not None:
            return _unicode_to_byte(int(wide, 16), unicode_map)
        if narrow is not None:
            return chr(int(narrow, 16))
        return " "

    def url_decode_uni(value: str) -> str:
        if "%" not in value:
            return value.replace("+", " ") if "+" in value else value
        if "%u" not in value and "%U" not in value:
            return url_decode(value)  # identical for %XX and "+"
        return _URL_UNI_ESCAPE.sub(replace, value)

    return url_decode_uni


url_decode_uni = make_url_decode_uni(UNICODE_MAP_20127)


def url_encode(value: str) -> str:
    out = []
    for char in value:
        if char == " ":
            out.append("+")
        elif char == "*" or (char.isascii() and char.isalnum()):
            out.append(char)
        else:
            out.append(f"%{ord(char):02x}")
    return "".join(out)


# --------------------------------------------------------------------------- HTML, JS, CSS, C

_HTML_ENTITY = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([0-9A-Za-z]+);?)")
_HTML_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "nbsp": "\xa0"}


def _html_entity(match: re.Match[str]) -> str:
    hex_digits, dec_digits, name = match.group(1, 2, 3)
    if name is not None:
        decoded = _HTML_NAMED.get(name.lower())
        return match.group(0) if decoded is None else decoded
    # strtol saturates at LONG_MAX, then the result is cut to one byte.
    number = int(hex_digits, 16) if hex_digits is not None else int(dec_digits)
    return chr(min(number, _LONG_MAX) & 0xFF)


def html_entity_decode(value: str) -> str:
    """``&#DD;``, ``&#xHH;`` (``;`` optional, one byte kept) and quot/amp/lt/gt/nbsp."""
    if "&" not in value:
        return value
    return _HTML_ENTITY.sub(_html_entity, value)


_JS_ESCAPE = re.compile(
    r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([0-3][0-7]{0,2}|[4-7][0-7]?)|(.))", re.DOTALL
)
_FF = ("ff", "fF", "Ff", "FF")
_C_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _js_escape(match: re.Match[str]) -> str:
    wide, narrow, octal, other = match.group(1, 2, 3, 4)
    if wide is not None:
        low = int(wide[2:], 16)
        if 0 < low < 0x5F and wide[:2] in _FF:
            low += 0x20  # full-width ASCII
        return chr(low)
    if narrow is not None:
        return chr(int(narrow, 16))
    if octal is not None:
        return chr(int(octal, 8))
    return _C_SIMPLE_ESCAPES.get(other, other)


def js_decode(value: str) -> str:
    """``\\uHHHH`` (low byte, full-width ASCII folded), ``\\xHH``, octal, ``\\n``-style escapes."""
    if "\\" not in value:
        return value
    return _JS_ESCAPE.sub(_js_escape, value)


_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\n\v\f\r]?|(\n)|(.)|$)", re.DOTALL)


def _css_escape(match: re.Match[str]) -> str:
    digits, newline, other = match.group(1, 2, 3)
    if digits is None:
        return "" if newline is not None or other is None else other
    count = len(digits)
    if count == 1:
        return chr(int(digits, 16))
    low = int(digits[-2:], 16)
    # Four digits, or five/six with leading zeros, may be full-width ASCII (U+FF01..U+FF5E).
    if count == 4:
        full_width_check = True
    elif count == 5:
        full_width_check = digits[0] == "0"
    elif count == 6:
        full_width_check = digits[:2] == "00"
    else:
        full_width_check = False
    if full_width_check and 0 < low < 0x5F and digits[count - 4 : count - 2] in _FF:
        low += 0x20
    return chr(low)


def css_decode(value: str) -> str:
    """CSS 2 escapes: 1–6 hex digits (last byte kept), escaped newline dropped, ``\\c`` → ``c``.

    ModSecurity v3.0.x rebuilds the result from a C string, so it ends at the first NUL.
    """
    if "\\" not in value:
        return value.partition("\x00")[0] if "\x00" in value else value
    decoded = _CSS_ESCAPE.sub(_css_escape, value)
    return decoded.partition("\x00")[0]


_ANSI_C_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\?'\"])|[xX]([0-9a-fA-F]{2})|([0-7]{1,3})|(.))", re.DOTALL
)
_ANSI_C_SIMPLE = {**_C_SIMPLE_ESCAPES, "\\": "\\", "?": "?", "'": "'", '"': '"'}


def _ansi_c_escape(match: re.Match[str]) -> str:
    simple, hex_digits, octal, other = match.group(1, 2, 3, 4)
    if simple is not None:
        return _ANSI_C_SIMPLE[simple]
    if hex_digits is not None:
        return chr(int(hex_digits, 16))
    if octal is not None:
        return chr(int(octal, 8) & 0xFF)
    return str(other)


def escape_seq_decode(value: str) -> str:
    """ANSI C escapes; an unknown escape keeps only its character, a final ``\\`` stays."""
    if "\\" not in value:
        return value
    return _ANSI_C_ESCAPE.sub(_ansi_c_escape, value)


# --------------------------------------------------------------------------- UTF-8 → %uXXXX


def _utf8_sequence_length(lead: int) -> int:
    if lead & 0xE0 == 0xC0:
        return 2
    if lead & 0xF0 == 0xE0:
        return 3
    if lead & 0xF8 == 0xF0:
        return 4
    return 0


def utf8_to_unicode(value: str) -> str:
    """Valid multi-byte UTF-8 sequences become ``%uXXXX`` (lower-case hex, at least 4 digits).

    Follows v3.0.x byte for byte: a lead byte whose continuation bytes are missing or wrong is
    dropped, other stray bytes are copied, NUL bytes vanish, and after an overlong form or a
    surrogate the lead byte is appended to the ``%u`` form.
    """
    if value.isascii() and "\x00" not in value:
        return value
    data = value.encode("latin-1")
    size = len(data)
    out: list[str] = []
    i = 0
    while i < size:
        lead = data[i]
        if lead < 0x80:
            if lead:
                out.append(chr(lead))
            i += 1
            continue
        length = _utf8_sequence_length(lead)
        if length == 0:
            out.append(chr(lead))
            i += 1
            continue
        if length == 4 and lead >= 0xF5:
            out.append(chr(lead))
        tail = data[i + 1 : i + length]
        if len(tail) < length - 1 or any(byte & 0xC0 != 0x80 for byte in tail):
            i += 1  # invalid sequence: the lead byte is dropped
            continue
        code = lead & (0x7F >> length)
        for byte in tail:
            code = (code << 6) | (byte & 0x3F)
        out.append(f"%u{code:04x}")
        if 0xD800 <= code <= 0xDFFF:
            out.append(chr(lead))
        if code < (0x80, 0x800, 0x10000)[length - 2]:
            out.append(chr(lead))
        i += length
    return "".join(out)


# --------------------------------------------------------------------------- comments, shell


def replace_comments(value: str) -> str:
    """Each ``/* … */`` (or an unterminated ``/* …``) becomes one space."""
    if "/*" not in value:
        return value
    out: list[str] = []
    position = 0
    while True:
        start = value.find("/*", position)
        if start < 0:
            out.append(value[position:])
            break
        out.append(value[position:start])
        end = value.find("*/", start + 2)
        out.append(" ")
        if end < 0:
            break
        position = end + 2
    return "".join(out)


_COMMENT_CHARS = re.compile(r"/\*|\*/|<!--|-->|--|#")


def remove_comments_char(value: str) -> str:
    """Deletes the comment markers ``/*``, ``*/``, ``<!--``, ``-->``, ``--`` and ``#``.

    v3 erases a marker and looks again at the same index, never behind it, so a marker formed
    across an erased one survives (``-/*-`` → ``--``): exactly a left-to-right substitution.
    """
    if "/*" not in value and "*/" not in value and "--" not in value and "#" not in value:
        return value
    return _COMMENT_CHARS.sub("", value)


def remove_comments(value: str) -> str:
    """v3's removeComments: drops ``/*…*/`` and ``<!--…-->`` and cuts at ``--`` or ``#``."""
    if "/*" not in value and "--" not in value and "#" not in value and "<!--" not in value:
        return value
    data = value
    size = len(data)

    def at(index: int) -> str:
        return data[index] if index < size else "\x00"

    out: list[str] = []
    i = 0
    in_comment = False
    while i < size:
        if not in_comment:
            if data.startswith("/*", i):
                in_comment = True
                i += 2
            elif data.startswith("<!--", i):
                in_comment = True
                i += 4
            elif data.startswith("--", i) or data[i] == "#":
                break
            else:
                out.append(data[i])
                i += 1
        elif data.startswith("*/", i) or data.startswith("-->", i):
            in_comment = False
            i += 2 if data[i] == "*" else 3
            out.append(at(i))  # v3 copies the next byte unconditionally (the NUL at the end)
            i += 1
        else:
            i += 1
    if in_comment:
        out.append(" ")
    return "".join(out)


_CMDLINE_TABLE = bytes.maketrans(
    b",;\t\r\n" + string.ascii_uppercase.encode(), b"     " + string.ascii_lowercase.encode()
)
_CMDLINE_DELETED = b"\"'\\^"


def cmd_line(value: str) -> str:
    """Shell de-obfuscation: drop ``" ' \\ ^``, fold ``, ; \\t \\r \\n`` and spaces into one
    space, remove a space before ``/`` or ``(``, lower-case ASCII."""
    value = value.encode("latin-1").translate(_CMDLINE_TABLE, _CMDLINE_DELETED).decode("latin-1")
    while "  " in value:  # each pass halves every run of spaces
        value = value.replace("  ", " ")
    if " /" in value:
        value = value.replace(" /", "/")
    if " (" in value:
        value = value.replace(" (", "(")
    return value


# --------------------------------------------------------------------------- paths


def _normalize_path(value: str, windows: bool) -> str:
    """Port of v3's ``normalize_path_inplace`` (``src``/``dst`` cursors over one buffer)."""
    if not value:
        return value
    path = bytearray(value.encode("latin-1"))
    slash, backslash, dot = 0x2F, 0x5C, 0x2E
    end = len(path) - 1
    relative = not (path[0] == slash or (windows and path[0] == backslash))
    trailing = path[end] == slash or (windows and path[end] == backslash)
    src = dst = 0
    hit_root = False
    done = False
    while not done and src <= end and dst <= end:
        if windows:
            if path[src] == backslash:
                path[src] = slash
            if src < end and path[src + 1] == backslash:
                path[src + 1] = slash
        if src == end:
            done = True
        # Only the last byte of a segment (before a slash or at the end) is normalised.
        if done or path[src + 1] == slash:
            if src != end and path[src] == slash:
                pass  # empty segment: the copy below folds the repeated slashes
            elif path[src] == dot:
                if dst > 0 and path[dst - 1] == dot:
                    if not (relative and (hit_root or dst - 2 <= 0)):
                        dst -= 3  # drop "..", and the segment before it
                        while dst > 0 and path[dst] != slash:
                            dst -= 1
                        if dst <= 0:
                            hit_root = True
                            dst = 0
                            if not relative and src == end:
                                dst += 1
                        if done:
                            continue
                        src += 1
                    else:
                        hit_root = True
                elif dst == 0:
                    if done:
                        continue
                    src += 1
                elif path[dst - 1] == slash:
                    if done:
                        continue
                    dst -= 1
                    src += 1
            elif dst > 0:
                hit_root = False
        if path[src] == slash:
            while src < end and (
                path[src + 1] == slash or (windows and path[src + 1] == backslash)
            ):
                src += 1
            if relative and dst == 0:
                src += 1
                continue
        path[dst] = path[src]
        dst += 1
        src += 1
    if not trailing and dst > 0 and path[dst - 1] == slash:
        dst -= 1
    return path[:dst].decode("latin-1")


def _path_is_normal(value: str) -> bool:
    # Without "//", "/.", ".." and a leading "." no rule of the algorithm applies (note that any
    # segment ending in "..", like "a..", counts as a back-reference for v3).
    return (
        "//" not in value and "/." not in value and ".." not in value and not value.startswith(".")
    )


def normalize_path(value: str) -> str:
    """Removes ``./``, ``../`` (with the segment before) and repeated slashes."""
    if _path_is_normal(value):
        return value
    return _normalize_path(value, windows=False)


def normalize_path_win(value: str) -> str:
    """:func:`normalize_path` after turning backslashes into slashes."""
    if "\\" not in value and _path_is_normal(value):
        return value
    return _normalize_path(value, windows=True)


# --------------------------------------------------------------------------- encodings, hashes

_B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
_B64_VALUE = {char: index for index, char in enumerate(_B64_ALPHABET)}


def base64_decode(value: str) -> str:
    """mbed TLS ``base64_decode`` as v3 calls it: any invalid input decodes to nothing; spaces
    only before a line end; at most two ``=``; only complete 4-character groups produce bytes."""
    value = value.partition("\x00")[0]  # v3 measures the input with strlen()
    size = len(value)
    padding = 0
    i = 0
    while i < size:
        spaces = 0
        while i < size and value[i] == " ":
            i += 1
            spaces += 1
        if i == size:
            break
        char = value[i]
        if char == "\r" and i + 1 < size and value[i + 1] == "\n":
            i += 1
            continue
        if char == "\n":
            i += 1
            continue
        if spaces:
            return ""
        if char == "=":
            padding += 1
            if padding > 2:
                return ""
        elif char not in _B64_VALUE or padding:
            return ""
        i += 1
    out = bytearray()
    accumulator = 0
    count = 0
    keep = 3
    for char in value[:i]:
        if char in "\r\n ":
            continue
        if char == "=":
            keep -= 1
            digit = 0
        else:
            digit = _B64_VALUE[char]
        accumulator = ((accumulator << 6) | digit) & 0xFFFFFF
        count += 1
        if count == 4:
            count = 0
            chunk = accumulator.to_bytes(3, "big")
            out += chunk[: max(keep, 0)]
    return out.decode("latin-1")


_B64_STRIP = re.compile("[^A-Za-z0-9+/]")


def base64_decode_ext(value: str) -> str:
    """Forgiving base64: characters outside the alphabet (and ``=``) are skipped, a trailing
    partial group yields its complete bytes."""
    if "=" in value:
        # v3 rejects the whole input when a "=" follows 4k+1 alphabet characters.
        valid = 0
        for char in value:
            if char == "=":
                if valid % 4 == 1:
                    return ""
            elif char in _B64_VALUE:
                valid += 1
    cleaned = _B64_STRIP.sub("", value)
    usable = len(cleaned) - len(cleaned) % 4
    decoded = base64.b64decode(cleaned[:usable]) if usable else b""
    rest = cleaned[usable:]
    if len(rest) >= 2:
        decoded += base64.b64decode(rest + "=" * (4 - len(rest)))
    return decoded.decode("latin-1")


def base64_encode(value: str) -> str:
    return base64.b64encode(value.encode("latin-1")).decode("ascii")


def hex_encode(value: str) -> str:
    return value.encode("latin-1").hex()


def hex_decode(value: str) -> str:
    """Pairs of characters through ``x2c`` (no validation, an odd last character is lost)."""
    pairs = len(value) // 2
    return "".join(chr(_x2c(value[2 * k], value[2 * k + 1])) for k in range(pairs))


_HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")


def sql_hex_decode(value: str) -> str:
    """``0xHHHH…`` literals to their bytes, with v3.0.x's loop as it is: it counts input bytes
    from one and stops when the count reaches the length, so the last byte is lost unless a
    hex literal ends the value; it also stops at the first NUL."""
    size = len(value)
    if size == 0:
        return value
    data = value.encode("latin-1") + b"\x00\x00\x00"
    out = bytearray()
    i = 0
    count = 0
    while True:
        count += 1
        if count >= size or data[i] == 0:
            break
        if (
            data[i] == 0x30  # "0x" or "0X" and two hex digits
            and data[i + 1] in (0x58, 0x78)
            and data[i + 2] in _HEX_BYTES
            and data[i + 3] in _HEX_BYTES
        ):
            i += 2
            count += 2
            while data[i] in _HEX_BYTES and data[i + 1] in _HEX_BYTES:
                out.append(int(data[i : i + 2], 16))
                i += 2
                count += 2
        out.append(data[i])
        i += 1
    return out.partition(b"\x00")[0].decode("latin-1")


def md5(value: str) -> str:
    return hashlib.md5(value.encode("latin-1"), usedforsecurity=False).digest().decode("latin-1")


def sha1(value: str) -> str:
    return hashlib.sha1(value.encode("latin-1"), usedforsecurity=False).digest().decode("latin-1")


def length(value: str) -> str:
    return str(len(value))


def _parity_table(kind: str) -> dict[int, int]:
    table: dict[int, int] = {}
    for code in range(256):
        odd_bits = bin(code).count("1") % 2 == 1
        if kind == "zero":
            table[code] = code & 0x7F
        elif kind == "even":
            table[code] = code | 0x80 if odd_bits else code & 0x7F
        else:
            table[code] = code & 0x7F if odd_bits else code | 0x80
    return table


_PARITY_EVEN = _parity_table("even")
_PARITY_ODD = _parity_table("odd")
_PARITY_ZERO = _parity_table("zero")


def parity_even_7bit(value: str) -> str:
    return value.translate(_PARITY_EVEN)


def parity_odd_7bit(value: str) -> str:
    return value.translate(_PARITY_ODD)


def parity_zero_7bit(value: str) -> str:
    return value.translate(_PARITY_ZERO)


# --------------------------------------------------------------------------- registry

_TRANSFORMATIONS: dict[str, Transformation] = {
    "none": _identity,
    "base64decode": base64_decode,
    "base64decodeext": base64_decode_ext,
    "base64encode": base64_encode,
    "cmdline": cmd_line,
    "compresswhitespace": compress_whitespace,
    "cssdecode": css_decode,
    "escapeseqdecode": escape_seq_decode,
    "hexdecode": hex_decode,
    "hexencode": hex_encode,
    "htmlentitydecode": html_entity_decode,
    "jsdecode": js_decode,
    "length": length,
    "lowercase": lowercase,
    "md5": md5,
    "normalisepath": normalize_path,
    "normalizepath": normalize_path,
    "normalisepathwin": normalize_path_win,
    "normalizepathwin": normalize_path_win,
    "parityeven7bit": parity_even_7bit,
    "parityodd7bit": parity_odd_7bit,
    "parityzero7bit": parity_zero_7bit,
    "removecomments": remove_comments,
    "removecommentschar": remove_comments_char,
    "removenulls": remove_nulls,
    "removewhitespace": remove_whitespace,
    "replacecomments": replace_comments,
    "replacenulls": replace_nulls,
    "sha1": sha1,
    "sqlhexdecode": sql_hex_decode,
    "trim": trim,
    "trimleft": trim_left,
    "trimright": trim_right,
    "uppercase": uppercase,
    "urldecode": url_decode,
    "urldecodeuni": url_decode_uni,
    "urlencode": url_encode,
    "utf8tounicode": utf8_to_unicode,
}


def get_transformation(name: str) -> Transformation:
    """The transformation written ``t:name`` (any case). ``none`` returns the identity."""
    try:
        return _TRANSFORMATIONS[name.lower()]
    except KeyError:
        raise UnknownTransformation(f"unknown transformation {name!r}") from None


def transformation_names() -> tuple[str, ...]:
    """Lower-case names of every supported transformation."""
    return tuple(sorted(_TRANSFORMATIONS))
