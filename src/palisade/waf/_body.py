"""Request body processors with libmodsecurity3's semantics: URLENCODED, MULTIPART, JSON, XML.

`process_body` never raises on bad input: every problem ends up in `BodyResult.error` (the
REQBODY_ERROR_MSG text, prefixed as v3 prefixes it) and, for multipart, in the MULTIPART_*
flags. What it reproduces of v3, on purpose:

- limits: a body over ``body_limit`` is cut to the limit (ProcessPartial) or not processed at
  all (Reject — v3 then intervenes with 403 itself); ``arguments_limit`` silently skips further
  URLENCODED/JSON arguments (v3's ``addArgument``) while multipart fields bypass it, as in v3;
- URLENCODED: the same splitting and decoding as the query string (`extract_arguments`);
- MULTIPART: ``multipart.cc`` re-enacted line by line (4096-byte line buffer, CRLF reserve,
  header folding, boundary checks, the flags and which of them make MULTIPART_STRICT_ERROR);
  like v3, a header-level error records a message but parsing goes on, and a form field that
  spans several lines loses its line breaks (v3 overwrites the held-back CRLF);
- JSON: yajl's grammar with v3's argument names (``json.a.b``, ``json.a.array_0``,
  ``empty-key``), an explicit stack (no recursion, so any depth is safe) and the depth limit;
- XML: expat (no external entities, no DTD fetching); XML:/* is the root's text content,
  XML://@* every attribute value.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from palisade.waf._http import extract_arguments

__all__ = ["MULTIPART_BUF_SIZE", "BodyLimits", "BodyResult", "FilePart", "process_body"]

MULTIPART_BUF_SIZE = 4096


@dataclass(frozen=True, slots=True)
class BodyLimits:
    body_limit: int = 13107200
    no_files_limit: int = 131072  # SecRequestBodyNoFilesLimit
    json_depth: int = 512
    arguments_limit: int = 1000  # the engine passes what is left after ARGS_GET
    limit_action: str = "Reject"  # or "ProcessPartial"


@dataclass(frozen=True, slots=True)
class FilePart:
    field: str
    filename: str
    size: int
    content: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class BodyResult:
    processor: str | None
    args_post: tuple[tuple[str, str], ...]
    files: tuple[FilePart, ...]
    xml_text: tuple[str, ...]
    xml_attrs: tuple[str, ...]
    multipart: dict[str, int]
    multipart_part_headers: tuple[tuple[str, str], ...]
    error: str | None
    urlencoded_error: bool
    exceeded: bool  # the body limit was hit (v3's INBOUND_DATA_ERROR); not the other limits


def process_body(
    body: bytes, content_type: str | None, processor: str | None, limits: BodyLimits
) -> BodyResult:
    """Run the request body processor v3 would run (see the module docstring)."""
    exceeded = False
    if limits.body_limit > 0 and len(body) > limits.body_limit:
        exceeded = True
        body = body[: limits.body_limit] if limits.limit_action == "ProcessPartial" else b""
    if processor is None:
        lowered = (content_type or "").lower()
        if lowered.startswith("multipart/form-data"):
            processor = "MULTIPART"
        elif lowered.startswith("application/x-www-form-urlencoded"):
            processor = "URLENCODED"
    else:
        processor = processor.upper()

    too_big = limits.no_files_limit > 0 and len(body) > limits.no_files_limit
    if too_big and processor in ("URLENCODED", "JSON", "XML"):
        # v3 (checked in process, Reject and ProcessPartial alike, no interruption): the
        # body is not parsed, REQBODY_ERROR and INBOUND_DATA_ERROR are set
        return _result(processor, error=_NO_FILES_ERROR, exceeded=True)
    if processor == "URLENCODED":
        pairs, invalid = extract_arguments(body.decode("latin-1"))
        limit = limits.arguments_limit
        if limit > 0 and len(pairs) > limit:
            pairs = pairs[:limit]  # v3 skips the rest silently
        return _result("URLENCODED", args=pairs, urlencoded_error=invalid, exceeded=exceeded)
    if processor == "MULTIPART":
        if content_type is None:  # v3 runs the parser only when there is a Content-Type
            return _result("MULTIPART", exceeded=exceeded)
        mp = _Multipart(content_type)
        if mp.init():
            mp.process(body)
        mp.complete()
        error = f"Multipart parsing error: {mp.error}" if mp.error else None
        if limits.no_files_limit > 0 and mp.no_files_bytes > limits.no_files_limit:
            # v3 counts the part headers and the non-file data; the parts are still parsed
            error, exceeded = error or _NO_FILES_ERROR, True
        return _result(
            "MULTIPART",
            args=mp.args,
            files=mp.files,
            multipart=mp.flags(),
            part_headers=mp.part_headers,
            error=error,
            exceeded=exceeded,
        )
    if processor == "JSON":
        parser = _Json(limits)
        error = parser.parse(body) if body else None
        return _result(
            "JSON",
            args=parser.args,
            error=f"JSON parsing error: {error}" if error else None,
            exceeded=exceeded,
        )
    if processor == "XML":
        text, attrs, xml_error = _parse_xml(body)
        return _result(
            "XML",
            xml_text=text,
            xml_attrs=attrs,
            error=f"XML parsing error: {xml_error}" if xml_error else None,
            exceeded=exceeded,
        )
    return _result(None, exceeded=exceeded)


_NO_FILES_ERROR = "Request body excluding files is bigger than the maximum expected."


def _result(
    processor: str | None,
    *,
    args: list[tuple[str, str]] | None = None,
    files: list[FilePart] | None = None,
    xml_text: tuple[str, ...] = (),
    xml_attrs: tuple[str, ...] = (),
    multipart: dict[str, int] | None = None,
    part_headers: list[tuple[str, str]] | None = None,
    error: str | None = None,
    urlencoded_error: bool = False,
    exceeded: bool = False,
) -> BodyResult:
    return BodyResult(
        processor=processor,
        args_post=tuple(args or ()),
        files=tuple(files or ()),
        xml_text=xml_text,
        xml_attrs=xml_attrs,
        multipart=multipart or {},
        multipart_part_headers=tuple(part_headers or ()),
        error=error,
        urlencoded_error=urlencoded_error,
        exceeded=exceeded,
    )


# ---------------------------------------------------------------------------------------------
# MULTIPART

_C_SPACE = b" \t\n\v\f\r"
_BOUNDARY_OK = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]*")
_TOKEN_CHAR = frozenset(
    c for c in range(33, 127) if chr(c) not in '()<>@,;:\\"/[]?='
)  # Multipart::is_token_char


def _count_boundary_params(value: bytes) -> int:
    """v3's count_boundary_params: "boundary" occurrences with an '=' somewhere after them."""
    lowered = value.lower()
    count = 0
    pos = lowered.find(b"boundary")
    while pos >= 0:
        pos += 8
        if lowered.find(b"=", pos) >= 0:
            count += 1
        pos = lowered.find(b"boundary", pos)
    return count


def _cstr(data: bytes) -> bytes:
    """The C string view of a buffer: up to the first NUL."""
    nul = data.find(b"\x00")
    return data if nul < 0 else data[:nul]


def _chomp(value: bytes) -> bytes:
    """utils::string::chomp: trailing CR/LF removed, unless the value is nothing but CR/LF."""
    stripped = value.rstrip(b"\r\n")
    return stripped if stripped else value


class _Part:
    __slots__ = (
        "content",
        "file",
        "filename",
        "header_lines",
        "header_order",
        "headers",
        "last_header",
        "name",
        "size",
        "value_parts",
    )

    def __init__(self) -> None:
        self.name = b""
        self.filename = b""
        self.file = False
        self.headers: dict[bytes, tuple[bytes, bytes]] = {}  # lowered name → (name, value)
        self.header_order: list[bytes] = []
        self.header_lines: list[bytes] = []  # as received, for MULTIPART_PART_HEADERS
        self.last_header = b""
        self.value_parts: list[bytes] = []
        self.content: list[bytes] = []
        self.size = 0


class _Multipart:
    """Re-enacts v3's Multipart (init, process, process_part_header/data, complete)."""

    def __init__(self, content_type: str) -> None:
        self.header = content_type.encode("latin-1", "replace")
        self.boundary = b""
        self.error = ""
        self.parts: list[_Part] = []
        self.mpp: _Part | None = None
        self.mpp_state = 0
        self.reserve = b""
        self.seen_data = False
        self.is_complete = False
        self.boundary_count = 0
        self.pending = b""  # an unfinished last line, left in v3's buffer
        self.pending_contains_line = True
        self.f_error = 0
        self.f_data_before = 0
        self.f_data_after = 0
        self.f_header_folding = 0
        self.f_boundary_quoted = 0
        self.f_lf_line = 0
        self.f_crlf_line = 0
        self.f_unmatched_boundary = 0
        self.f_boundary_whitespace = 0
        self.f_missing_semicolon = 0
        self.f_invalid_quoting = 0
        self.f_invalid_part = 0
        self.f_invalid_header_folding = 0
        self.args: list[tuple[str, str]] = []
        self.files: list[FilePart] = []
        self.part_headers: list[tuple[str, str]] = []
        self.no_files_bytes = 0  # part header lines and non-file data (v3's no-files length)

    def _fail(self, message: str) -> bool:
        self.f_error = 1
        self.error = message
        return False

    # -- Content-Type --------------------------------------------------------------------------

    def init(self) -> bool:
        header = self.header
        if not header:
            return self._fail("Multipart: Content-Type header not available.")
        if len(header) > 1024:
            return self._fail("Multipart: Invalid boundary in C-T (length).")
        if header[:19].lower() != b"multipart/form-data":
            return self._fail("Multipart: Invalid MIME type.")
        if _count_boundary_params(header) > 1:
            return self._fail("Multipart: Multiple boundary parameters in C-T.")
        at = _cstr(header).find(b"boundary")
        if at < 0:
            if _count_boundary_params(header) > 0:
                return self._fail("Multipart: Invalid boundary in C-T (case sensitivity).")
            return self._fail("Multipart: Boundary not found in C-T.")
        seen_semicolon = False
        for c in header[19:at]:
            if c in _C_SPACE:
                continue
            if not seen_semicolon and c == 0x3B:
                seen_semicolon = True
            else:
                return self._fail("Multipart: Invalid boundary in C-T (malformed).")
        if not seen_semicolon:
            self.f_missing_semicolon = 1
        eq = header.find(b"=", at + 8)
        if eq < 0:
            return self._fail("Multipart: Invalid boundary in C-T (malformed).")
        for c in header[at + 8 : eq]:
            if c in _C_SPACE:
                self.f_boundary_whitespace = 1
            else:
                return self._fail("Multipart: Invalid boundary in C-T (parameter name).")
        value = _cstr(header[eq + 1 :])
        if value[:1] and value[0] in _C_SPACE:
            self.f_boundary_whitespace = 1
        if len(value) >= 2 and value[0] == 0x22 and value[-1] == 0x22:
            self.boundary = value[1:-1]
            if not self.boundary:
                return True  # v3 returns -1 from a bool function here: "success"
            self.f_boundary_quoted = 1
        else:
            if value[:1] == b'"' or (len(value) >= 2 and value[-1] == 0x22):
                return self._fail("Multipart: Invalid boundary in C-T (quote).")
            self.boundary = value
            if not value:
                return False
        if _count_boundary_params(self.boundary) != 0:
            return self._fail("Multipart: Invalid boundary in C-T (content).")
        if _BOUNDARY_OK.fullmatch(self.boundary) is None or self.boundary.endswith(b" "):
            return self._fail("Multipart: Invalid boundary in C-T (characters).")
        return True

    # -- body ----------------------------------------------------------------------------------

    def process(self, data: bytes) -> None:
        if not data:
            return
        self.seen_data = True
        pos = 0
        n = len(data)
        contains_line = True
        while pos < n:
            nl = data.find(b"\n", pos, pos + MULTIPART_BUF_SIZE)
            forced = False  # v3 processes a full buffer even without a line end
            if nl >= 0:
                buf = data[pos : nl + 1]
            else:
                buf = data[pos : pos + MULTIPART_BUF_SIZE]
                if len(buf) < MULTIPART_BUF_SIZE:
                    # the rest stays in v3's buffer, looked at only by complete()
                    self.pending = buf
                    self.pending_contains_line = contains_line
                    return
                forced = True
                if buf[-1] == 0x0D:  # v3 never takes '\r' as the last byte of the buffer
                    buf = buf[:-1]
            pos += len(buf)
            if not self._line(buf, contains_line, forced):
                return
            contains_line = buf[-1] == 0x0A
            if self.is_complete and pos < n:
                self.f_data_after = 1
                return
        self.pending = b""
        self.pending_contains_line = contains_line

    def _line(self, buf: bytes, contains_line: bool, forced: bool) -> bool:
        """One buffer of v3's loop; False when v3 stops processing."""
        boundary = self.boundary
        blen = len(boundary)
        cbuf = _cstr(buf)
        as_boundary = False
        if contains_line and len(cbuf) > 3 and cbuf.startswith(b"--"):
            if len(cbuf) >= blen + 2 and cbuf[2 : 2 + blen] == boundary:
                end = 2 + blen
                if self.boundary_count > 0:
                    self.f_unmatched_boundary = 2
                final = False
                if cbuf[end : end + 2] == b"--":
                    final = True
                    end += 2
                    if self.is_complete:
                        return self._fail("Multipart: Invalid boundary (final duplicate).")
                tail = cbuf[end:]
                if tail not in (b"\r\n", b"\n"):
                    return self._fail("Multipart: Invalid boundary: " + cbuf.decode("latin-1"))
                if tail == b"\n":
                    self.f_lf_line = 1
                else:
                    self.f_crlf_line = 1
                self._boundary(final)
                if final:
                    self.is_complete = True
                as_boundary = True
                self.boundary_count += 1
            else:
                if (
                    self.f_boundary_quoted
                    and len(cbuf) >= blen + 3
                    and cbuf[2:3] == b'"'
                    and cbuf[3 : 3 + blen] == boundary
                ):
                    return self._fail("Multipart: Invalid boundary (quotes).")
                rest = cbuf[2:].lstrip(_C_SPACE)
                if len(rest) != len(cbuf) - 2 and rest[:blen] == boundary:
                    return self._fail("Multipart: Invalid boundary (whitespace).")
                self.f_unmatched_boundary = 1
        elif contains_line and buf.find(b"--" + boundary) >= 0:
            self.f_unmatched_boundary = 1
        if not as_boundary:
            if self.mpp is None:
                self.f_data_before = 1
            elif self.mpp_state == 0:
                if forced:
                    return self._fail(
                        f"Multipart: Part header line over {MULTIPART_BUF_SIZE} bytes long"
                    )
                self.no_files_bytes += len(buf)
                if not self._part_header(buf, self.mpp):
                    return False
            else:
                self._part_data(buf, self.mpp)
        return True

    def _part_header(self, buf: bytes, part: _Part) -> bool:
        """One part header line; False when v3 stops processing the body (a bad
        Content-Disposition at the end of the headers), True otherwise, errors or not."""
        if b"\x00" in buf:
            self.error = "Multipart: Nul byte in part headers."
            return True
        if len(buf) > 1 and buf[-2] == 0x0D:
            self.f_crlf_line = 1
        else:
            self.f_lf_line = 1
        if buf in (b"\r\n", b"\n"):
            entry = part.headers.get(b"content-disposition")
            if entry is None:
                self.error = "Multipart: Part missing Content-Disposition header."
                return True
            value = entry[1]
            rc = self._content_disposition(value, part)
            if rc < 0:
                self.error = (
                    f"Multipart: Invalid Content-Disposition header ({rc}): "
                    + value.decode("latin-1")
                )
                self.f_invalid_part = 1  # and v3 stops here
                return False
            if not part.name:
                self.error = "Multipart: Content-Disposition header missing name field."
                self.f_invalid_part = 1  # and v3 stops here
                return False
            if part.filename:
                if b"filename=" not in value:
                    self.error = "Multipart: Invalid Content-Disposition header (filename)."
                    self.f_invalid_part = 1  # and v3 stops here
                    return False
                part.file = True
            self.mpp_state = 1
            part.last_header = b""
            name = part.name.decode("latin-1")
            for line in part.header_lines:
                self.part_headers.append((name, line.decode("latin-1")))
            return True
        if buf[0] in _C_SPACE:
            self.f_header_folding = 1
            if buf[0] not in b" \t":
                self.f_invalid_header_folding = 1
            if not part.last_header:
                self.error = "Multipart: Invalid part header (folding error)."
                return True
            data = buf.lstrip(_C_SPACE)
            if any(c not in b" \t" for c in buf[: len(buf) - len(data)]):
                self.f_invalid_header_folding = 1
            key = part.last_header.lower()
            hname, old = part.headers[key]
            new_value = old + b" " + _chomp(data)
            part.headers[key] = (hname, new_value)
            part.header_lines.append(buf)
            if len(new_value) > MULTIPART_BUF_SIZE:
                self.error = "Multipart: Part header too long."
            return True
        colon = buf.find(b":")
        if colon < 0:
            self.error = "Multipart: Invalid part header (colon missing): " + buf.decode("latin-1")
            return True
        if colon == 0:
            self.error = "Multipart: Invalid part header (header name missing)."
            return True
        hname = buf[:colon]  # 3.0.9 takes any bytes as the name (newer releases refuse some)
        hvalue = _chomp(buf[colon + 1 :].lstrip(b" \t"))
        key = hname.lower()
        if key in part.headers:
            return True  # v3: "Duplicate part header", no error message
        part.last_header = hname
        part.headers[key] = (hname, hvalue)
        part.header_order.append(key)
        part.header_lines.append(buf)  # v3 keeps the line end
        return True

    def _content_disposition(self, value: bytes, part: _Part) -> int:
        """v3's parse_content_disposition; negative return codes are v3's."""
        if not value.startswith(b"form-data"):
            return -1
        n = len(value)
        p = 9
        while p < n and value[p] in b"\t ":
            p += 1
        if p >= n:
            return 1
        if value[p] != 0x3B:
            return -2
        p += 1
        while p < n:
            while p < n and value[p] in b"\t ":
                p += 1
            if p >= n:
                return -3
            start = p
            while p < n and value[p] not in b"=\t ":
                p += 1
            if p >= n:
                return -4
            pname = value[start:p]
            while p < n and value[p] in b"\t ":
                p += 1
            if p >= n:
                return -5
            if value[p] != 0x3D:
                return -13
            p += 1
            while p < n and value[p] in b"\t ":
                p += 1
            if p >= n:
                return -6
            quote = value[p]
            # 3.0.9 looks for a single quote in a name or filename only when the value was
            # not double-quoted (name="a'b" is fine, name=a'b is not)
            check_quotes = quote != 0x22
            if quote in b"\"'":
                if quote == 0x27:
                    self.f_invalid_quoting = 1
                p += 1
                if p >= n:
                    return -7
                out = bytearray()
                while p < n:
                    c = value[p]
                    if c == 0x5C:
                        if p + 1 >= n:
                            return -8
                        if value[p + 1] in (quote, 0x5C):
                            p += 1
                    elif c == quote:
                        break
                    out.append(value[p])
                    p += 1
                p += 1  # over the closing quote (v3 reads past the end if there is none)
                pvalue = bytes(out)
            else:
                start = p
                while p < n and value[p] in _TOKEN_CHAR:
                    p += 1
                pvalue = value[start:p]
            if pname == b"name":
                if check_quotes and b"'" in pvalue:
                    self.f_invalid_quoting = 1
                if part.name:
                    return -14
                part.name = pvalue
            elif pname == b"filename":
                if check_quotes and b"'" in pvalue:
                    self.f_invalid_quoting = 1
                if part.filename:
                    return -15
                part.filename = pvalue
            else:
                return -11
            if p < n:
                while p < n and value[p] in b"\t ":
                    p += 1
                if p >= n:
                    return 1
                if value[p] != 0x3B:
                    if value[p - 1] in b"'\"":
                        self.f_invalid_quoting = 1
                    return -12
                p += 1
        return 1

    def _part_data(self, buf: bytes, part: _Part) -> None:
        if buf.endswith(b"\r\n"):
            data, reserved = buf[:-2], b"\r\n"
        elif buf.endswith(b"\n"):
            data, reserved = buf[:-1], b"\n"
        else:
            data, reserved = buf, b""
        if part.file:
            if self.reserve:
                part.content.append(self.reserve)
            part.content.append(data)
            part.size += len(data) + len(self.reserve)
        else:
            # v3 assigns the held-back line end and then overwrites it with the data
            part.value_parts.append(data)
            self.no_files_bytes += len(data) + len(self.reserve)
        self.reserve = reserved

    def _boundary(self, final: bool) -> None:
        part = self.mpp
        if part is not None:
            if part.name:
                self.parts.append(part)
            else:
                self.f_invalid_part = 1
            self.mpp = None
        if not final:
            self.mpp = _Part()
            self.mpp_state = 0
            self.reserve = b""

    def complete(self) -> None:
        if self.seen_data and not self.is_complete:
            if self.boundary_count > 0:
                if self.pending_contains_line and self.pending == b"--" + self.boundary + b"--":
                    self._boundary(True)
                    self.is_complete = True
                if not self.is_complete:
                    self.error = "Multipart: Final boundary missing."
            else:
                self.error = "Multipart: No boundaries found in payload."
        if not self.is_complete:
            return  # v3 adds no ARGS_POST and no FILES from a body it did not finish
        for part in self.parts:
            name = part.name.decode("latin-1")
            if part.file:
                headers = tuple(
                    (h.decode("latin-1"), v.decode("latin-1"))
                    for h, v in (part.headers[k] for k in part.header_order)
                )
                self.files.append(
                    FilePart(
                        field=name,
                        filename=part.filename.decode("latin-1"),
                        size=part.size,
                        content=b"".join(part.content).decode("latin-1"),
                        headers=headers,
                    )
                )
            else:
                self.args.append((name, b"".join(part.value_parts).decode("latin-1")))

    def flags(self) -> dict[str, int]:
        strict = int(
            bool(
                self.f_error
                or self.f_boundary_quoted
                or self.f_boundary_whitespace
                or self.f_data_before
                or self.f_data_after
                or self.f_header_folding
                or self.f_lf_line
                or self.f_missing_semicolon
                or self.f_invalid_quoting
                or self.f_invalid_part
                or self.f_invalid_header_folding
            )
        )
        return {
            "MULTIPART_STRICT_ERROR": strict,
            "MULTIPART_UNMATCHED_BOUNDARY": self.f_unmatched_boundary,
            "MULTIPART_DATA_BEFORE": self.f_data_before,
            "MULTIPART_DATA_AFTER": self.f_data_after,
            "MULTIPART_BOUNDARY_QUOTED": self.f_boundary_quoted,
            "MULTIPART_BOUNDARY_WHITESPACE": self.f_boundary_whitespace,
            "MULTIPART_HEADER_FOLDING": self.f_header_folding,
            "MULTIPART_LF_LINE": self.f_lf_line,
            "MULTIPART_CRLF_LF_LINES": int(bool(self.f_crlf_line and self.f_lf_line)),
            "MULTIPART_MISSING_SEMICOLON": self.f_missing_semicolon,
            "MULTIPART_INVALID_QUOTING": self.f_invalid_quoting,
            "MULTIPART_INVALID_PART": self.f_invalid_part,
            "MULTIPART_INVALID_HEADER_FOLDING": self.f_invalid_header_folding,
            "MULTIPART_FILE_LIMIT_EXCEEDED": 0,  # only counted when v3 extracts files
        }


# ---------------------------------------------------------------------------------------------
# JSON

_JSON_TOKEN = re.compile(
    rb"[ \t\n\r]*(?:"
    rb"(?P<punct>[{}\[\]:,])"
    rb'|"(?P<string>(?:[^"\\\x00-\x1f]|\\.)*)"'
    rb"|(?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
    rb"|(?P<literal>true|false|null)"
    rb")",
    re.DOTALL,
)
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))", re.DOTALL)
_JSON_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r"}
_JSON_SIMPLE["t"] = "\t"
_SURROGATES = re.compile("[\ud800-\udfff]")


class _JsonError(Exception):
    pass


def _json_string(raw: bytes) -> str:
    """A JSON string's value as the UTF-8 bytes yajl hands over (latin-1 code points)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _JsonError("lexical error: invalid bytes in UTF8 string.") from None
    if "\\" not in text:
        return raw.decode("latin-1")

    def unescape(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return chr(int(m.group(1), 16))
        char = _JSON_SIMPLE.get(m.group(2))
        if char is None:
            raise _JsonError(
                "lexical error: inside a string, '\\' occurs before a character which it may not."
            )
        return char

    value = _JSON_ESCAPE.sub(unescape, text)
    if _SURROGATES.search(value) is not None:
        # pairs combine; a lone surrogate becomes '?', as yajl writes it
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        value = value.replace("\ufffd", "?")
    return value.encode("utf-8").decode("latin-1")


class _Container:
    __slots__ = ("counter", "is_array", "name")

    def __init__(self, name: str, is_array: bool) -> None:
        self.name = name
        self.is_array = is_array
        self.counter = 0

    def segment(self) -> str:
        if self.is_array:
            return f"{self.name}.array_{self.counter}"
        return f"{self.name}."


class _Json:
    """yajl's event order with v3's JSON callbacks, on an explicit stack.

    An argument's name is the path of the open containers, as v3 builds it for every value.
    The part above the innermost container is joined only when a value needs it and kept
    until the stack changes, so deep documents cost neither quadratic time nor memory.
    """

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.args: list[tuple[str, str]] = []
        self.containers: list[_Container] = []
        self.key = ""
        self._base: str | None = None  # "".join of the segments above the innermost container

    def _current_key(self) -> str:
        if not self.containers:
            return "json"
        if not self.key:
            return "" if self.containers[-1].is_array else "empty-key"
        key, self.key = self.key, ""
        return key

    def _add(self, value: str) -> None:
        if self.containers:
            top = self.containers[-1]
            if self._base is None:
                self._base = "".join(c.segment() for c in self.containers[:-1])
            path = self._base + top.segment()
            if top.is_array:
                top.counter += 1
                data = ""
            else:
                data = self._current_key()
        else:
            path, data = "", self._current_key()
        limit = self.limits.arguments_limit
        if limit > 0 and len(self.args) >= limit:
            return
        self.args.append((path + data, value))

    def _open(self, is_array: bool) -> None:
        name = self._current_key()
        self.containers.append(_Container(name, is_array))
        self._base = None
        depth = self.limits.json_depth
        if depth > 0 and len(self.containers) > depth:
            raise _JsonError("JSON depth limit exceeded")

    def _close(self) -> None:
        self.containers.pop()
        self._base = None
        if self.containers and self.containers[-1].is_array:
            self.containers[-1].counter += 1

    def parse(self, body: bytes) -> str | None:
        try:
            self._parse(body)
        except _JsonError as exc:
            return str(exc)
        return None

    def _parse(self, body: bytes) -> None:
        # states: "value" (a value must come), "key" (key or '}' right after '{'),
        # "key!" (a key after ','), "colon", "after" (',' or the container's end),
        # "first" (value or ']' right after '['), "done"
        state = "value"
        stack: list[bool] = []  # True for arrays
        pos = 0
        match = _JSON_TOKEN.match
        while True:
            m = match(body, pos)
            if m is None:
                rest = body[pos:].lstrip(b" \t\n\r")
                if not rest:
                    if state == "done":
                        return
                    raise _JsonError("parse error: premature EOF")
                if state == "done":
                    raise _JsonError("parse error: trailing garbage")
                raise _JsonError("lexical error: invalid char in json text.")
            pos = m.end()
            if state == "done":
                raise _JsonError("parse error: trailing garbage")
            punct = m.group("punct")
            if state == "colon":
                if punct != b":":
                    raise _JsonError(
                        "parse error: object key and value must be separated by a colon (':')"
                    )
                state = "value"
                continue
            if state in ("key", "key!"):
                string = m.group("string")
                if string is not None:
                    self.key = _json_string(string)
                    state = "colon"
                    continue
                if punct == b"}" and state == "key":
                    self._close()
                    stack.pop()
                    state = "after" if stack else "done"
                    continue
                raise _JsonError("parse error: invalid object key (must be a string)")
            if state == "after":
                if punct == b",":
                    state = "value" if stack[-1] else "key!"
                    continue
                if punct in (b"]", b"}") and (punct == b"]") == stack[-1]:
                    self._close()
                    stack.pop()
                    state = "after" if stack else "done"
                    continue
                raise _JsonError(
                    "parse error: after array element, I expect ',' or ']'"
                    if stack[-1]
                    else "parse error: after key and value, inside map, I expect ',' or '}'"
                )
            # a value (state "value" or "first")
            if punct == b"]" and state == "first":
                self._close()
                stack.pop()
                state = "after" if stack else "done"
                continue
            if punct == b"{":
                self._open(False)
                stack.append(False)
                state = "key"
                continue
            if punct == b"[":
                self._open(True)
                stack.append(True)
                state = "first"
                continue
            if punct is not None:
                raise _JsonError("parse error: unallowed token at this point in JSON text")
            string = m.group("string")
            if string is not None:
                self._add(_json_string(string))
            elif m.group("number") is not None:
                self._add(m.group("number").decode("latin-1"))
            else:
                literal = m.group("literal")
                self._add("" if literal == b"null" else literal.decode("latin-1"))
            state = "after" if stack else "done"


# ---------------------------------------------------------------------------------------------
# XML


class _XmlCollector:
    __slots__ = ("attrs", "depth", "seen_root", "text")

    def __init__(self) -> None:
        self.depth = 0
        self.seen_root = False
        self.text: list[str] = []
        self.attrs: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        self.seen_root = True
        self.attrs.extend(attrib.values())

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        if self.depth > 0:
            self.text.append(data)

    def close(self) -> None:
        return None


def _utf8_latin1(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def _parse_xml(body: bytes) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    collector = _XmlCollector()
    parser = ET.XMLParser(target=collector)
    try:
        parser.feed(body)
        parser.close()
    except (ET.ParseError, ValueError, LookupError):
        # v3 reports only that the document is not well formed, and keeps libxml2's partial
        # tree: XML:/* and XML://@* still see what was parsed before the error
        error: str | None = "XML: Failed parsing document."
    else:
        error = None
    if not collector.seen_root:
        return (), (), error
    text = _utf8_latin1("".join(collector.text))
    return (text,), tuple(_utf8_latin1(a) for a in collector.attrs), error
