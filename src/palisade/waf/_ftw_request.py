"""The exact bytes go-ftw 2.3.0 writes to the socket for a stage.

Steps (go-ftw's ``ftwhttp`` request builder; README of the CRS data snapshot):

1. ``METHOD SP URI SP VERSION CRLF`` exactly as written.
2. The ``headers`` map sorted by name (byte order), then whatever autocomplete appends:
   header lookups compare names as Go's ``textproto.CanonicalMIMEHeaderKey`` does.
3. The body: ``data`` rendered as a Go template (empty when the template fails), or
   ``encoded_data`` base64-decoded.
4. With autocomplete and a non-empty body: ``Content-Type:
   application/x-www-form-urlencoded`` when absent; when a Content-Type equals that value
   (ignoring case) and URL-query-unescaping the body would not change it, each ``&``-separated
   token is query-escaped, key and value separately.
5. Any Content-Type containing ``multipart/form-data;`` (ignoring case): every LF becomes
   CRLF, with or without autocomplete.
6. With autocomplete: ``Connection: close`` unless present; ``Content-Length`` unless
   present, when the body is non-empty or the method matches the (unanchored for the middle
   alternatives) regex ``^POST|PUT|PATCH|DELETE$``.

``encoded_request`` replaces all of it with its base64-decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

from ._ftw_load import StageInput
from ._ftw_template import TemplateError, render_go_template

__all__ = [
    "BadTestInput",
    "build_request",
    "canonical_header_key",
    "go_query_escape",
    "go_query_unescape",
    "stage_body",
]

_METHODS_WITH_BODY = re.compile(r"^POST|PUT|PATCH|DELETE\Z")
_FORM = "application/x-www-form-urlencoded"
_TOKEN_BYTES = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class BadTestInput(ValueError):
    """The stage cannot be turned into a request (go-ftw stops with an error)."""


def canonical_header_key(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: a name with a byte outside the token set is
    left as is; otherwise the first letter and every letter after ``-`` are upper case, the
    rest lower case."""
    if any(char not in _TOKEN_BYTES for char in name):
        return name
    out: list[str] = []
    upper = True
    for char in name:
        out.append(char.upper() if upper else char.lower())
        upper = char == "-"
    return "".join(out)


def go_query_unescape(text: bytes) -> bytes | None:
    """Go's ``url.QueryUnescape`` on bytes; ``None`` where Go returns an error."""
    out = bytearray()
    index = 0
    while index < len(text):
        byte = text[index]
        if byte == 0x25:  # %
            pair = text[index + 1 : index + 3]
            if len(pair) < 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            out.append(int(pair, 16))
            index += 3
        elif byte == 0x2B:  # +
            out.append(0x20)
            index += 1
        else:
            out.append(byte)
            index += 1
    return bytes(out)


def go_query_escape(text: bytes) -> bytes:
    """Go's ``url.QueryEscape``: unreserved bytes kept, space as ``+``, the rest ``%XX``."""
    return urllib.parse.quote_plus(text, safe="").encode("ascii")


def _encode_form(body: bytes) -> bytes:
    """go-ftw's "encode if not yet encoded" step for urlencoded bodies."""
    if go_query_unescape(body) != body:
        return body
    tokens: list[bytes] = []
    for token in body.split(b"&"):
        if b"=" in token:
            key, value = token.split(b"=", 1)
            tokens.append(go_query_escape(key) + b"=" + go_query_escape(value))
        else:
            tokens.append(go_query_escape(token))
    return b"&".join(tokens)


def _go_bytes(text: str) -> bytes:
    """A YAML/Go string as the bytes Go holds: UTF-8; ``\\xNN`` escapes from a template are
    carried as lone surrogates (U+DC80..U+DCFF) and become the raw byte; any other lone
    surrogate becomes U+FFFD as Go's conversion makes it."""
    out = bytearray()
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        elif 0xD800 <= code <= 0xDFFF:
            out += "\ufffd".encode()
        else:
            out += char.encode("utf-8")
    return bytes(out)


def stage_body(stage: StageInput) -> bytes:
    """The body before autocomplete: the rendered ``data`` template (empty when Go's template
    fails to parse or run), else the decoded ``encoded_data`` (empty when not base64)."""
    if stage.data is not None:
        try:
            return _go_bytes(render_go_template(stage.data))
        except TemplateError:
            return b""
    if stage.encoded_data is not None:
        try:
            return base64.b64decode(
                stage.encoded_data.replace("\r", "").replace("\n", ""), validate=True
            )
        except (binascii.Error, ValueError):
            return b""
    return b""


def build_request(stage: StageInput) -> bytes:
    """The raw request go-ftw sends for ``stage``; :class:`BadTestInput` when it cannot."""
    if stage.encoded_request:
        try:
            return base64.b64decode(
                stage.encoded_request.replace("\r", "").replace("\n", ""), validate=True
            )
        except (binascii.Error, ValueError) as exc:
            raise BadTestInput(f"encoded_request is not valid base64: {exc}") from None

    if stage.ordered_headers is not None:
        headers = list(stage.ordered_headers)
    else:
        headers = sorted(stage.headers, key=lambda pair: _go_bytes(pair[0]))

    def has(name: str) -> bool:
        return any(canonical_header_key(n) == name for n, _ in headers)

    def values(name: str) -> list[str]:
        return [v for n, v in headers if canonical_header_key(n) == name]

    body = stage_body(stage)
    if body and stage.autocomplete_headers:
        if not has("Content-Type"):
            headers.append(("Content-Type", _FORM))
        if any(value.lower() == _FORM for value in values("Content-Type")):
            body = _encode_form(body)
    if any("multipart/form-data;" in value.lower() for value in values("Content-Type")):
        body = body.replace(b"\n", b"\r\n")
    if stage.autocomplete_headers:
        if not has("Connection"):
            headers.append(("Connection", "close"))
        if not has("Content-Length") and (body or _METHODS_WITH_BODY.search(stage.method)):
            headers.append(("Content-Length", str(len(body))))

    out = bytearray(_go_bytes(f"{stage.method} {stage.uri} {stage.version}\r\n"))
    for name, value in headers:
        out += _go_bytes(f"{name}: {value}\r\n")
    out += b"\r\n"
    out += body
    return bytes(out)
