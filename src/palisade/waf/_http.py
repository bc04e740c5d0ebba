"""HTTP/1.x messages as the WAF sees them: nginx 1.22 in front, libmodsecurity3 behind it.

`parse_request` turns the raw bytes a client sent into what the ModSecurity-nginx connector
hands to libmodsecurity3, and raises `HttpParseError` (with the status nginx would answer)
wherever nginx refuses the request before any rule runs. The model is nginx's request-line
and header-line state machines (``ngx_http_parse.c``) and the checks of
``ngx_http_process_request_header``:

- the method is ``[A-Z_-]+``; the URI is origin-form or absolute-form (kept as written in
  `HttpRequest`; ModSecurity is given only its path, ``http://host`` alone becoming ``/``);
  spaces or control bytes in the URI, a version other than ``HTTP/1.x`` (``HTTP/2`` and up:
  505), ``%`` not followed by two hex digits, ``%00`` or a ``..`` above the root in the path:
  all 400;
- no version at all is HTTP/0.9 (GET only, no headers are read);
- header names are letters, digits and ``-``; a name with any other visible byte (``_``,
  ``.``) is dropped silently (``ignore_invalid_headers``), a name with a space, a tab or a
  control byte — so also obs-fold — is a 400, as is a NUL in a value; a line without a colon
  is a header with an empty value;
- an HTTP/1.1 request needs exactly one valid Host; Content-Length must be digits and appear
  once; Transfer-Encoding must be ``chunked``, not next to a Content-Length, and not in
  HTTP/1.0 (501 for another coding); CONNECT and TRACE are answered 405.

`request_line_data` computes the phase-1 variables as ``Transaction::processURI`` does from
what nginx passes it (its unparsed URI, the method, ``0.9``/``1.0``/``1.1`` or the written
version). The parsers work on lines and whole byte strings; no per-byte Python loop sits on
the common path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "HttpParseError",
    "HttpRequest",
    "HttpResponse",
    "RequestLineData",
    "extract_arguments",
    "parse_cookies",
    "parse_request",
    "parse_response",
    "request_line_data",
    "uri_decode",
    "urldecode_nonstrict",
]

# nginx's large_client_header_buffers default (4 8k): a longer request line is a 414, a longer
# header line a 400.
_MAX_LINE = 8192


class HttpParseError(ValueError):
    """The front end refuses the request before any rule runs; `status` is what it answers."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request as nginx hands it to ModSecurity (latin-1 strings: code point N is byte N)."""

    method: str
    uri: str
    version: str  # as written ("HTTP/1.1"); "" for an HTTP/0.9 request line
    headers: tuple[tuple[str, str], ...]
    body: bytes
    remote_addr: str = "127.0.0.1"
    remote_port: int = 0
    server_addr: str = "127.0.0.1"
    server_port: int = 80


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class RequestLineData:
    """Phase-1 variables, computed as libmodsecurity3 does."""

    request_line: str
    request_method: str
    request_protocol: str
    request_uri: str
    request_uri_raw: str
    request_filename: str
    request_basename: str
    query_string: str
    args_get: tuple[tuple[str, str], ...]
    cookies: tuple[tuple[str, str], ...]
    urlencoded_error: bool = False  # URLENCODED_ERROR from the query string


# ---------------------------------------------------------------------------------------------
# request line

_METHOD = re.compile(rb"[A-Z_\-]+")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://")
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:\-._~!$&'()*+,;=]*\]|[A-Za-z0-9.\-]*)(?::[0-9]*)?")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_VERSION = re.compile(rb"HTTP/([0-9]+)\.([0-9]+) *")
_HEX2 = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _parse_request_line(line: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(method, URI as written, URI as nginx's unparsed_uri, version as written)."""
    if b"\r" in line:
        raise HttpParseError("invalid request line: CR inside the line")
    m = _METHOD.match(line)
    if m is None or m.end() >= len(line) or line[m.end()] != 0x20:
        raise HttpParseError("invalid method")
    method = m.group()
    pos = m.end()
    n = len(line)
    while pos < n and line[pos] == 0x20:
        pos += 1
    if pos >= n:
        raise HttpParseError("invalid request line: no URI")
    uri_end = line.find(b" ", pos)
    if uri_end < 0:
        uri_end = n
    written = line[pos:uri_end]
    first = line[pos]
    if first == 0x2F:  # "/"
        uri = line[pos:uri_end]
    else:
        s = _SCHEME.match(line, pos)
        if s is None:
            raise HttpParseError("invalid request line: URI")
        h = _HOST.match(line, s.end())
        after = h.end() if h is not None else s.end()
        if after >= n:
            raise HttpParseError("invalid request line: absolute URI ends at the host")
        nxt = line[after]
        if nxt == 0x20:  # "http://host HTTP/1.1": nginx takes "/" as the URI
            uri = b"/"
            uri_end = after
        elif nxt in (0x2F, 0x3F):  # "/" or "?"
            uri = line[after:uri_end]
        else:
            raise HttpParseError("invalid request line: host")
    if _CONTROL.search(written) is not None:
        raise HttpParseError("invalid request line: control character in the URI")
    pos = uri_end
    while pos < n and line[pos] == 0x20:
        pos += 1
    if pos >= n:  # HTTP/0.9
        if method != b"GET":
            raise HttpParseError("invalid HTTP/0.9 method")
        return method, written, uri, b""
    rest = line[pos:]
    if not rest.startswith(b"HTTP/"):
        raise HttpParseError("invalid request line: version")
    digits = rest[5:]
    if not digits[:1].isdigit() or digits[:1] == b"0":
        raise HttpParseError("invalid request line: version")
    # nginx checks the major version digit by digit: anything above 1 is a 505 at once.
    major_end = 0
    major = 0
    while major_end < len(digits) and 0x30 <= digits[major_end] <= 0x39:
        major = major * 10 + digits[major_end] - 0x30
        if major > 1:
            raise HttpParseError("HTTP version not supported", 505)
        major_end += 1
    v = _VERSION.fullmatch(rest)
    if v is None or int(v.group(2)) > 999:
        raise HttpParseError("invalid request line: version")
    return method, written, uri, rest.rstrip(b" ")


def _check_path(uri: bytes) -> None:
    """nginx's complex-URI pass over the path: bad escapes, %00 and '..' above the root."""
    end = len(uri)
    for stop in (b"?", b"#"):
        i = uri.find(stop)
        if 0 <= i < end:
            end = i
    path = uri[:end]
    if b"%" in path:
        if _BAD_PERCENT.search(path) is not None:
            raise HttpParseError("invalid request: bad escape in the URI")
        path = _HEX2.sub(lambda m: bytes((int(m.group(1), 16),)), path)
        if b"\x00" in path:
            raise HttpParseError("invalid request: %00 in the URI")
    if b"/." not in path:
        return
    depth = 0
    for segment in path.split(b"/")[1:]:
        if segment == b"..":
            if depth == 0:
                raise HttpParseError("invalid request: '..' above the root")
            depth -= 1
        elif segment and segment != b".":
            depth += 1


# ---------------------------------------------------------------------------------------------
# header lines

# nginx skips only spaces around a value (sw_space_before_value / sw_space_after_value): tabs stay
_GOOD_HEADER = re.compile(rb"([A-Za-z0-9\-]+): *(.*?) *")
_NAME_CHARS = re.compile(rb"[A-Za-z0-9\-]*")
_NAME_STOP = re.compile(rb"[\x00-\x20\x7f:]")
_HOST_FORBIDDEN = re.compile(rb"[\x00/\\]|\.\.")
# headers nginx accepts once (ngx_http_process_unique_header_line / process_host)
_UNIQUE = frozenset({b"host", b"content-length", b"transfer-encoding"})


def _parse_header_line(line: bytes) -> tuple[bytes, bytes] | None:
    """(name, value), None for a line nginx ignores; raises where nginx answers 400."""
    m = _GOOD_HEADER.fullmatch(line)
    if m is not None:
        value = m.group(2)
        if b"\x00" in value:
            raise HttpParseError("invalid header line: NUL in the value")
        return m.group(1), value
    first = line[0]
    if first <= 0x20 or first == 0x7F or first == 0x3A:
        raise HttpParseError("invalid header line (folding, space or colon first)")
    stop = _NAME_STOP.search(line)
    if stop is None:
        name, value = line, b""
    elif line[stop.start()] != 0x3A:
        raise HttpParseError("invalid header line: space or control byte in the name")
    else:
        name = line[: stop.start()]
        value = line[stop.start() + 1 :].strip(b" ")
    if b"\x00" in value:
        raise HttpParseError("invalid header line: NUL in the value")
    if _NAME_CHARS.fullmatch(name) is None:
        return None  # ignore_invalid_headers: "_", ".", 8-bit bytes ...
    return name, value


_HEX = re.compile(rb"[0-9A-Fa-f]+")


def _dechunk(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    n = len(data)
    while True:
        lf = data.find(b"\n", pos)
        if lf < 0:
            return b"".join(out)  # incomplete: keep what arrived
        line = data[pos:lf].rstrip(b"\r")
        for sep in (b";", b" ", b"\t"):
            cut = line.find(sep)
            if cut >= 0:
                line = line[:cut]
        if not line or len(line) > 15 or _HEX.fullmatch(line) is None:
            raise HttpParseError("invalid chunked body")
        size = int(line, 16)
        pos = lf + 1
        if size == 0:
            return b"".join(out)  # trailers are not passed on
        out.append(data[pos : pos + size])
        pos += size
        if pos >= n:
            return b"".join(out)
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        else:
            raise HttpParseError("invalid chunked body")


def _valid_host(value: bytes) -> bool:
    if not value or _HOST_FORBIDDEN.search(value) is not None:
        return False
    host = value
    if not host.startswith(b"["):
        host = host.split(b":", 1)[0]
    host = host.removesuffix(b".")
    return bool(host)


# Valid header-name bytes, deleted by `bytes.translate` to test a name in one C call.
_NAME_BYTES = bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B)) + b"-"


def _header_lines_fast(
    raw: bytes, pos: int, limit: int
) -> tuple[list[tuple[bytes, bytes]], int] | None:
    """The common case with bytes methods only: CRLF lines, each "name: value" with a valid
    name, no NUL or stray CR/LF, nothing near nginx's limits. None sends the block to
    `_header_lines`, the reference reader."""
    blank = raw.find(b"\r\n\r\n", pos - 2)
    if blank < pos - 2 or raw[pos - 2 : pos] != b"\r\n" or blank + 4 > limit:
        return None
    if blank < pos:
        return [], blank + 4
    block = raw[pos:blank]
    lines = block.split(b"\r\n")
    crlf = len(lines) - 1
    if block.count(b"\n") != crlf or block.count(b"\r") != crlf or b"\x00" in block:
        return None
    if len(block) > _MAX_LINE and max(map(len, lines)) > _MAX_LINE:
        return None
    found: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _NAME_BYTES):
            return None
        found.append((name, value.strip(b" ")))
    return found, blank + 4


def _header_lines(
    raw: bytes, pos: int, start: int, max_header_bytes: int
) -> tuple[list[tuple[bytes, bytes]], int]:
    """The header block line by line, as nginx reads it: (name, value) pairs, body offset."""
    lines: list[tuple[bytes, bytes]] = []
    while True:
        lf = raw.find(b"\n", pos)
        if lf < 0:
            raise HttpParseError("incomplete header")
        if lf - start > max_header_bytes:
            raise HttpParseError("request header too large")
        hline = raw[pos:lf]
        pos = lf + 1
        stripped = hline.rstrip(b"\r")
        if not stripped:
            if len(hline) > 1:
                raise HttpParseError("invalid end of header")
            return lines, pos
        if b"\r" in stripped:
            raise HttpParseError("invalid header line: CR inside the line")
        if len(stripped) > _MAX_LINE:
            raise HttpParseError("header line too long")
        parsed = _parse_header_line(stripped)
        if parsed is not None:
            lines.append(parsed)


def parse_request(raw: bytes, *, max_header_bytes: int = 65536) -> HttpRequest:
    """Parse one HTTP/1.x request as nginx 1.22 does; raise `HttpParseError` where it refuses.

    Leading empty lines are skipped; a body shorter than its Content-Length (or an unfinished
    chunked body) is taken as it is; bytes after the body are ignored.
    """
    start = 0
    n = len(raw)
    while start < n and raw[start] in (0x0D, 0x0A):
        start += 1
    lf = raw.find(b"\n", start)
    if lf < 0:
        raise HttpParseError("incomplete request line")
    line = raw[start:lf]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > _MAX_LINE:
        raise HttpParseError("request line too long", 414)
    method_b, uri_b, path_b, version_b = _parse_request_line(line)
    _check_path(path_b)
    method = method_b.decode("latin-1")
    uri = uri_b.decode("latin-1")
    version = version_b.decode("latin-1")
    if not version_b:  # HTTP/0.9: nginx reads no headers and no body
        return HttpRequest(method, uri, version, (), b"")

    pos = lf + 1
    found = _header_lines_fast(raw, pos, start + max_header_bytes)
    if found is None:
        found = _header_lines(raw, pos, start, max_header_bytes)
    lines, pos = found

    headers: list[tuple[str, str]] = []
    unique: dict[bytes, bytes] = {}
    for name, value in lines:
        lname = name.lower()
        if lname in _UNIQUE:
            if lname in unique:
                raise HttpParseError(f"duplicate {name.decode('latin-1')} header")
            unique[lname] = value
            if lname == b"host" and not _valid_host(value):
                raise HttpParseError("invalid Host header")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))

    version_match = _VERSION.fullmatch(version_b)
    http11 = version_match is not None and int(version_match.group(2)) >= 1
    if http11 and b"host" not in unique and not _absolute_with_host(line):
        raise HttpParseError("HTTP/1.1 request without Host header")
    content_length: int | None = None
    cl = unique.get(b"content-length")
    if cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise HttpParseError("invalid Content-Length header")
        content_length = int(cl)
    chunked = False
    te = unique.get(b"transfer-encoding")
    if te is not None:
        if not http11:
            raise HttpParseError("Transfer-Encoding in an HTTP/1.0 request")
        if te.lower() != b"chunked":
            raise HttpParseError("unknown Transfer-Encoding", 501)
        if content_length is not None:
            raise HttpParseError("both Content-Length and Transfer-Encoding")
        chunked = True
    if method_b in (b"CONNECT", b"TRACE"):
        raise HttpParseError(f"{method} method not allowed", 405)

    if chunked:
        body = _dechunk(raw[pos:])
    elif content_length:
        body = raw[pos : pos + content_length]
    else:
        body = b""
    return HttpRequest(method, uri, version, tuple(headers), body)


def _absolute_with_host(line: bytes) -> bool:
    """An absolute-form request line names the host itself (nginx then needs no Host)."""
    m = _METHOD.match(line)
    if m is None:
        return False
    rest = line[m.end() :].lstrip(b" ")
    s = _SCHEME.match(rest)
    if s is None:
        return False
    h = _HOST.match(rest, s.end())
    return h is not None and h.end() > s.end()


# ---------------------------------------------------------------------------------------------
# response

_STATUS_LINE = re.compile(rb"(HTTP/[0-9]+\.[0-9]+) +([0-9]{3})(?:[ .].*)?")


def parse_response(raw: bytes) -> HttpResponse:
    """Parse an HTTP/1.x response (status line, headers, body by length, chunks or to EOF)."""
    lf = raw.find(b"\n")
    if lf < 0:
        raise HttpParseError("incomplete status line")
    m = _STATUS_LINE.fullmatch(raw[:lf].rstrip(b"\r"))
    if m is None:
        raise HttpParseError("invalid status line")
    headers: list[tuple[str, str]] = []
    pos = lf + 1
    while True:
        lf = raw.find(b"\n", pos)
        if lf < 0:
            line, pos = raw[pos:].rstrip(b"\r"), len(raw)
            if line:
                _add_response_header(headers, line)
            break
        line = raw[pos:lf].rstrip(b"\r")
        pos = lf + 1
        if not line:
            break
        _add_response_header(headers, line)
    rest = raw[pos:]
    lowered = {k.lower(): v for k, v in headers}
    status = int(m.group(2))
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    elif lowered.get("transfer-encoding", "").lower() == "chunked":
        try:
            body = _dechunk(rest)
        except HttpParseError:
            body = rest
    elif lowered.get("content-length", "").strip().isdigit():
        body = rest[: int(lowered["content-length"].strip())]
    else:
        body = rest
    return HttpResponse(status, m.group(1).decode("latin-1"), tuple(headers), body)


def _add_response_header(headers: list[tuple[str, str]], line: bytes) -> None:
    name, sep, value = line.partition(b":")
    if not sep or not name or name != name.strip():
        return  # not a header line; a client skips it
    headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))


# ---------------------------------------------------------------------------------------------
# ModSecurity v3: processURI, extractArguments, cookies

_PCT_OR_PLUS = re.compile(r"%[0-9A-Fa-f]{2}|\+")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")


def _decode_match(m: re.Match[str]) -> str:
    s = m.group()
    return " " if s == "+" else chr(int(s[1:], 16))


def urldecode_nonstrict(value: str) -> tuple[str, bool]:
    """v3's urldecode_nonstrict_inplace: %XX and '+' decoded; (text, an invalid % was seen)."""
    if "%" not in value and "+" not in value:
        return value, False
    invalid = value.count("%") != len(_PCT.findall(value))
    return _PCT_OR_PLUS.sub(_decode_match, value), invalid


def uri_decode(value: str) -> str:
    """v3's utils::uri_decode (REQUEST_URI, REQUEST_FILENAME): %XX only, '+' stays."""
    if "%" not in value:
        return value
    return _PCT.sub(lambda m: chr(int(m.group()[1:], 16)), value)


def extract_arguments(text: str, separator: str = "&") -> tuple[list[tuple[str, str]], bool]:
    """v3's Transaction::extractArguments: split on '&' (a trailing empty piece dropped, empty
    pieces in between kept as an argument with an empty name), then on the first '=', and
    url-decode name and value; also returns whether an invalid %-escape was seen."""
    if not text:
        return [], False
    pieces = text.split(separator)
    if pieces[-1] == "":
        pieces.pop()
    args: list[tuple[str, str]] = []
    invalid = False
    for piece in pieces:
        name, _, value = piece.partition("=")
        name, bad_name = urldecode_nonstrict(name)
        value, bad_value = urldecode_nonstrict(value)
        invalid = invalid or bad_name or bad_value
        args.append((name, value))
    return args, invalid


_SPACE = " \t\n\v\f\r"


def parse_cookies(header_value: str) -> list[tuple[str, str]]:
    """v3's Cookie header parsing: split on ';' (a trailing empty piece dropped), trailing
    whitespace of the last piece removed, empty pieces skipped, split on the first '=', the
    name left-trimmed, nameless cookies skipped; values are kept as sent (no decoding)."""
    pieces = header_value.split(";")
    if pieces and pieces[-1] == "":
        pieces.pop()
    if pieces:
        pieces[-1] = pieces[-1].rstrip(_SPACE)
    cookies: list[tuple[str, str]] = []
    for piece in pieces:
        if not piece:
            continue
        name, _, value = piece.partition("=")
        name = name.lstrip(_SPACE)
        if name:
            cookies.append((name, value))
    return cookies


_VERSION_TEXT = re.compile(r"HTTP/([0-9]+)\.([0-9]+) *")


def _modsec_http_version(version: str) -> str:
    """What the ModSecurity-nginx connector passes as the version."""
    if version == "HTTP/1.1":
        return "1.1"
    if not version:
        return "0.9"
    m = _VERSION_TEXT.fullmatch(version)
    if m is not None:
        code = int(m.group(1)) * 1000 + int(m.group(2))
        known = {9: "0.9", 1000: "1.0", 1001: "1.1", 2000: "2.0"}
        if code in known:
            return known[code]
    if len(version) > 5 and version.startswith("HTTP/"):
        return version[5:]
    return "1.0"


def _nginx_unparsed_uri(uri: str) -> str:
    """nginx keeps only the path (and query) of an absolute-form URI; a bare host is '/'."""
    if uri.startswith("/") or "://" not in uri:
        return uri
    m = _SCHEME.match(uri.encode("latin-1"))
    if m is None:
        return uri
    h = _HOST.match(uri.encode("latin-1"), m.end())
    after = h.end() if h is not None else m.end()
    rest = uri[after:]
    return rest if rest else "/"


def request_line_data(request: HttpRequest) -> RequestLineData:
    """REQUEST_LINE, REQUEST_URI, ARGS_GET, REQUEST_COOKIES, … as libmodsecurity3 computes them
    from what nginx passes (``Transaction::processURI`` and ``addRequestHeader``)."""
    method = request.method
    uri_raw = _nginx_unparsed_uri(request.uri)
    http_version = _modsec_http_version(request.version)
    # v3 cuts a "#fragment" (a raw "#", not %23) before it splits path and query; only
    # REQUEST_URI_RAW and REQUEST_LINE keep it
    fragment = uri_raw.find("#")
    uri = uri_raw[:fragment] if fragment >= 0 else uri_raw
    decoded = uri_decode(uri)
    raw_q = uri.find("?")
    query_string = uri[raw_q + 1 :] if raw_q >= 0 else ""
    dec_q = decoded.find("?")
    filename = decoded[:dec_q] if dec_q >= 0 else decoded
    slash = max(filename.rfind("/"), filename.rfind("\\"))
    basename = filename[slash + 1 :] if slash >= 0 else ""

    parsed_uri = decoded
    if decoded and decoded[0] != "/":
        # v3 strips "scheme://host" from an absolute URI (its index arithmetic accepts a
        # leading "//" too when there is no colon)
        scheme = decoded.find(":") + 1
        netloc = decoded.find("//", scheme)
        if netloc == scheme:
            path = decoded.find("/", netloc + 2)
            if path >= 0:
                parsed_uri = decoded[path:]

    args_get, invalid = extract_arguments(query_string) if query_string else ([], False)
    cookies: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name.lower() == "cookie":
            cookies.extend(parse_cookies(value))
    return RequestLineData(
        request_line=f"{method} {uri_raw} HTTP/{http_version}",
        request_method=method,
        request_protocol=f"HTTP/{http_version}",
        request_uri=parsed_uri,
        request_uri_raw=uri_raw,
        request_filename=filename,
        request_basename=basename,
        query_string=query_string,
        args_get=tuple(args_get),
        cookies=tuple(cookies),
        urlencoded_error=invalid,
    )
