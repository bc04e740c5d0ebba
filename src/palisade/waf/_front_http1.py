"""HTTP/1.x message framing on asyncio streams, for the proxy and the HTTP ext_authz server.

Strict where a lax reading would let a request be framed differently by us and by the
upstream (request smuggling): both Content-Length and Transfer-Encoding, several different
Content-Lengths, a transfer coding other than a final ``chunked``, obsolete line folding,
whitespace before a header's colon — all are refused (400), as RFC 9112 allows. Lines may end
in CRLF or a bare LF (RFC 9112 §2.2), as nginx accepts.

Header values are ``str`` whose code points are the bytes (latin-1), as everywhere in the WAF.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from palisade.waf._front_engine import reason_phrase
from palisade.waf._http import HttpParseError, parse_request

# RFC 9110 §7.6.1: fields that describe one connection, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_FIELD_NAME = re.compile(rb"[^\x00-\x20\x7f:]+")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) (\d{3})(?: ([^\r\n]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class ConnectionTracker:
    """A server's connection tasks, and which of them wait between requests: closing the
    server ends the waiting ones at once and gives the busy ones a grace period."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self._idle: set[asyncio.Task[None]] = set()
        self.closing = False

    def enter(self) -> asyncio.Task[None]:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._idle.discard(task)

    def idle(self, task: asyncio.Task[None], idle: bool) -> None:
        if idle:
            self._idle.add(task)
        else:
            self._idle.discard(task)

    async def close(self, grace: float) -> None:
        self.closing = True
        for task in list(self._idle):
            task.cancel()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class FramingError(Exception):
    """The peer sent something we refuse; ``status`` is the answer for a client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyTooLarge(FramingError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body larger than {limit} bytes")


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 65536  # request/status line plus all header lines
    max_headers: int = 200
    max_body_bytes: int = 13_107_200  # ModSecurity's default SecRequestBodyLimit
    keepalive_timeout: float = 75.0  # idle client connection (nginx's default)
    read_timeout: float = 60.0  # a client's started request must arrive within this
    upstream_timeout: float = 60.0  # connect, and the upstream's response head
    max_inspected_response: int = 524_288  # ModSecurity's default SecResponseBodyLimit


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0": how we speak to the client
    written_version: str  # as the request line has it (nginx takes HTTP/1.2 as 1.1): the WAF's
    headers: list[tuple[str, str]]
    content_length: int | None
    chunked: bool
    keep_alive: bool  # what the client asked for (version default + Connection)
    expect_continue: bool


@dataclass(slots=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    content_length: int | None
    chunked: bool
    keep_alive: bool


async def _read_raw_line(reader: asyncio.StreamReader, budget: list[int]) -> bytes:
    """One line with its terminator; ``budget`` is the bytes left for the whole head."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise FramingError(431, "header line too long") from exc
    budget[0] -= len(line)
    if budget[0] < 0:
        raise FramingError(431, "header too large")
    return line


async def _read_line(reader: asyncio.StreamReader, budget: list[int]) -> bytes:
    """One line without its terminator; ``budget`` is the bytes left for the whole head."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise FramingError(431, "header line too long") from exc
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FramingError(400, "connection closed inside the header") from exc
        raise
    budget[0] -= len(line)
    if budget[0] < 0:
        raise FramingError(431, "header too large")
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1]


async def _read_fields(
    reader: asyncio.StreamReader, budget: list[int], limits: Limits
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = await _read_line(reader, budget)
        if not line:
            return headers
        if line[0] in b" \t":
            raise FramingError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _FIELD_NAME.fullmatch(name):
            raise FramingError(400, "malformed header line")
        if b"\r" in value or b"\0" in value:
            raise FramingError(400, "invalid character in a header value")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        if len(headers) > limits.max_headers:
            raise FramingError(431, "too many header fields")


def _tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            out.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return out


def _framing(headers: list[tuple[str, str]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) after the smuggling checks."""
    codings = _tokens(headers, "transfer-encoding")
    lengths = {v.strip() for k, v in headers if k.lower() == "content-length"}
    if codings:
        if lengths:
            raise FramingError(400, "both Content-Length and Transfer-Encoding")
        if codings != ["chunked"]:
            raise FramingError(501, "unsupported transfer coding")
        return None, True
    if not lengths:
        return None, False
    if len(lengths) > 1:
        raise FramingError(400, "conflicting Content-Length values")
    (text,) = lengths
    if "," in text:
        parts = {p.strip() for p in text.split(",")}
        if len(parts) != 1:
            raise FramingError(400, "conflicting Content-Length values")
        (text,) = parts
    if not text.isdigit() or len(text) > 18:
        raise FramingError(400, "invalid Content-Length")
    return int(text), False


async def read_request_head(
    reader: asyncio.StreamReader, limits: Limits, *, first_byte_timeout: float
) -> RequestHead | None:
    """The next request's head, or ``None`` when the client closed the connection cleanly
    (or stayed idle past ``first_byte_timeout``) between requests.

    The head is judged by :func:`parse_request` — nginx's rules, the ones the WAF's regression
    tests were written against — so the proxy refuses exactly what nginx in front of
    ModSecurity refuses, with the same status."""
    budget = [limits.max_header_bytes]
    try:
        async with asyncio.timeout(first_byte_timeout):
            line = await _read_raw_line(reader, budget)
            while line in (b"\r\n", b"\n"):  # RFC 9112 §2.2: empty lines before the request
                line = await _read_raw_line(reader, budget)
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        return None
    if b" HTTP/" not in line:
        try:
            parse_request(line)  # raises with nginx's status for a malformed line
        except HttpParseError as exc:
            raise FramingError(exc.status, exc.reason) from exc
        raise FramingError(400, "HTTP/0.9 requests are not served")
    lines = [line]
    try:
        async with asyncio.timeout(limits.read_timeout):
            while True:
                line = await _read_raw_line(reader, budget)
                lines.append(line)
                if line in (b"\r\n", b"\n"):
                    break
                if len(lines) > limits.max_headers:
                    raise FramingError(431, "too many header fields")
    except TimeoutError as exc:
        raise FramingError(408, "request header timeout") from exc
    except asyncio.IncompleteReadError as exc:
        raise FramingError(400, "connection closed inside the header") from exc
    try:
        request = parse_request(b"".join(lines), max_header_bytes=limits.max_header_bytes)
    except HttpParseError as exc:
        raise FramingError(exc.status, exc.reason) from exc
    headers = list(request.headers)
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length":
            content_length = int(value)
        elif lowered == "transfer-encoding":
            chunked = True  # parse_request allows only "chunked", and not beside a length
    connection = _tokens(headers, "connection")
    http11 = request.version != "HTTP/1.0"
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    expect = [v.strip().lower() for k, v in headers if k.lower() == "expect"]
    return RequestHead(
        method=request.method,
        target=request.uri,
        version="HTTP/1.1" if http11 else "HTTP/1.0",
        written_version=request.version,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        expect_continue=http11 and "100-continue" in expect,
    )


async def read_chunked(reader: asyncio.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The decoded data of a chunked body, chunk by chunk; trailers are read and dropped.
    The caller bounds the time."""
    total = 0
    budget = [65536]  # for the chunk-size lines and trailers together
    while True:
        line = await _read_line(reader, budget)
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise FramingError(400, "malformed chunk size")
        size = int(match.group(1), 16)
        if size == 0:
            while await _read_line(reader, budget):
                pass  # trailer fields: not forwarded (they would be hop-by-hop for us)
            return
        total += size
        if total > limit:
            raise BodyTooLarge(limit)
        data = await reader.readexactly(size)
        if await _read_line(reader, budget):
            raise FramingError(400, "chunk not followed by CRLF")
        yield data


async def read_request_body(
    reader: asyncio.StreamReader, head: RequestHead, limits: Limits
) -> bytes:
    if head.content_length is not None and head.content_length > limits.max_body_bytes:
        raise BodyTooLarge(limits.max_body_bytes)
    try:
        async with asyncio.timeout(limits.read_timeout):
            if head.chunked:
                return b"".join([c async for c in read_chunked(reader, limits.max_body_bytes)])
            if head.content_length:
                return await reader.readexactly(head.content_length)
    except asyncio.IncompleteReadError as exc:
        raise FramingError(400, "connection closed inside the body") from exc
    except TimeoutError as exc:
        raise FramingError(408, "request body timeout") from exc
    return b""


async def read_response_head(
    reader: asyncio.StreamReader, limits: Limits, *, request_method: str
) -> ResponseHead:
    """The upstream's next final response head (1xx interim responses are skipped)."""
    while True:
        budget = [limits.max_header_bytes]
        line = await _read_line(reader, budget)
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise FramingError(502, "malformed status line from the upstream")
        headers = await _read_fields(reader, budget, limits)
        status = int(match.group(2))
        if 100 <= status < 200:
            continue
        version = match.group(1).decode("latin-1")
        connection = _tokens(headers, "connection")
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        content_length: int | None
        if request_method == "HEAD" or status in (204, 304):
            content_length, chunked = 0, False
        else:
            try:
                content_length, chunked = _framing(headers)
            except FramingError as exc:
                raise FramingError(502, f"upstream: {exc.reason}") from exc
        if content_length is None and not chunked:
            keep_alive = False  # the body ends when the connection does
        return ResponseHead(
            version=version,
            status=status,
            reason=(match.group(3) or b"").decode("latin-1"),
            headers=headers,
            content_length=content_length,
            chunked=chunked,
            keep_alive=keep_alive,
        )


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields to forward: hop-by-hop ones and those named in Connection removed."""
    named = set(_tokens(headers, "connection"))
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def render_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    parts = [start_line, "\r\n"]
    for name, value in headers:
        parts += [name, ": ", value, "\r\n"]
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def simple_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    extra: list[tuple[str, str]] | None = None,
    head_only: bool = False,
) -> bytes:
    """A complete short response (errors, refusals, the ext_authz answers); ``head_only``
    for an answer to HEAD (the length is announced, the body is not sent)."""
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *(extra or []),
    ]
    if not keep_alive:
        headers.append(("Connection", "close"))
    head = render_head(f"HTTP/1.1 {status} {reason_phrase(status)}", headers)
    return head if head_only else head + body
