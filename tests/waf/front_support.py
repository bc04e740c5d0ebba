"""Shared pieces of the front-end tests: a real upstream, a raw HTTP client, stand-in engines.

Everything listens on 127.0.0.1 with ephemeral ports; every server is an async context manager
that stops its listener and cancels its connection tasks on the way out, failing test or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from palisade.waf import HttpRequest, HttpResponse, WafEngine, WafResult

# -- engines -------------------------------------------------------------------------------------

RULES = """
SecRuleEngine On
SecRequestBodyAccess On
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain
SecRule ARGS|ARGS_NAMES|REQUEST_FILENAME "@rx attack" \\
    "id:1001,phase:2,t:none,t:lowercase,deny,status:{status},log,msg:'attack seen'"
SecRule RESPONSE_BODY "@rx secret" "id:1002,phase:4,t:none,deny,status:403,log,msg:'leak'"
"""


def real_engine(status: int = 403) -> WafEngine:
    """The WAF engine with a two-rule set: "attack" in an argument or the path is refused
    with ``status`` (phase 2), "secret" in a text/plain response body with 403 (phase 4)."""
    return WafEngine.load([], before=RULES.format(status=status))


class RecordingEngine:
    """The real engine, remembering what it was asked and answered."""

    def __init__(self, inner: WafEngine) -> None:
        self.inner = inner
        self.seen: list[tuple[HttpRequest, HttpResponse | None, WafResult]] = []

    def evaluate(
        self, request: HttpRequest | bytes, response: HttpResponse | None = None
    ) -> WafResult:
        assert isinstance(request, HttpRequest)
        result = self.inner.evaluate(request, response)
        self.seen.append((request, response, result))
        return result


# -- stand-in engine: failures on demand (same evaluate signature as WafEngine) ------------------


@dataclass
class StandInResult:
    status: int | None
    blocked: bool


class StandInEngine:
    """Blocks a request whose target or body contains "attack" (403, or ``status``), and a
    response whose body contains "secret"; raises on "boom"; burns CPU on "slow"."""

    def __init__(self, status: int = 403, label: str = "first") -> None:
        self.status = status
        self.label = label
        self.seen: list[tuple[HttpRequest, HttpResponse | None]] = []

    def evaluate(
        self, request: HttpRequest | bytes, response: HttpResponse | None = None
    ) -> StandInResult:
        assert isinstance(request, HttpRequest)
        self.seen.append((request, response))
        text = request.uri + request.body.decode("latin-1")
        if "boom" in text:
            raise RuntimeError("engine failure for the test")
        if "slow" in text:
            end = time.process_time() + 2.0
            while time.process_time() < end:
                pass
        if "attack" in text:
            return StandInResult(self.status, True)
        if response is not None and b"secret" in response.body:
            return StandInResult(403, True)
        return StandInResult(None, False)


# -- the upstream --------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Upstream:
    """A tiny HTTP/1.1 origin: answers ``ok <method> <target>`` with a Content-Length, keeps
    connections alive, and has a few special targets for the framing tests."""

    received: list[Received] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return  # (a cancel here is the test's cleanup)
                method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ")
                headers: list[tuple[str, str]] = []
                while (h := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = h.decode("latin-1").partition(":")
                    headers.append((name, value.strip()))
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length)
                self.received.append(Received(method, target, headers, body))
                if not await self.answer(method, target, writer):
                    return
        finally:
            self.tasks.discard(task)
            writer.close()

    async def answer(self, method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        payload = f"ok {method} {target}".encode()
        if target == "/chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n"
                b"Content-Type: text/plain\r\n\r\n"
                b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            )
        elif target == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed until close")
            await writer.drain()
            return False
        elif target == "/vanish":
            return False  # reads the request, closes without an answer
        elif target in ("/truncated", "/head-only"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            if target == "/truncated":
                writer.write(b"12345")
            await writer.drain()
            return False
        elif target == "/delay":
            await asyncio.sleep(0.3)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndelayed")
        elif target == "/secret":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
                b"secret number"
            )
        elif target == "/hop":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Upstream-Private\r\n"
                b"X-Upstream-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Public: 1\r\n\r\nok"
            )
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(payload), b"" if method == "HEAD" else payload)
            )
        await writer.drain()
        return True


@contextlib.asynccontextmanager
async def running_upstream(sock: socket.socket | None = None) -> AsyncIterator[Upstream]:
    upstream = Upstream()
    if sock is not None:
        upstream.server = await asyncio.start_server(upstream.handle, sock=sock)
    else:
        upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        upstream.server.close()
        for task in list(upstream.tasks):
            task.cancel()
        await asyncio.gather(*upstream.tasks, return_exceptions=True)
        await upstream.server.wait_closed()


# -- a raw client ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class Client:
    """One client connection sending raw bytes and reading responses (CL, chunked, or close)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def reply(self, *, head_request: bool = False) -> Reply:
        async with asyncio.timeout(10):
            line = await self.reader.readuntil(b"\r\n")
            status = int(line.split(b" ")[1])
            headers: list[tuple[str, str]] = []
            while (h := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = h.decode("latin-1").partition(":")
                headers.append((name, value.strip()))
            reply = Reply(status, headers, b"")
            if head_request or status in (204, 304) or 100 <= status < 200:
                return reply
            if (reply.header("transfer-encoding") or "").lower() == "chunked":
                body = bytearray()
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                    if size == 0:
                        await self.reader.readuntil(b"\r\n")
                        break
                    body += await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
                reply.body = bytes(body)
            elif (length := reply.header("content-length")) is not None:
                reply.body = await self.reader.readexactly(int(length))
            else:
                reply.body = await self.reader.read()
            return reply

    async def closed_by_peer(self) -> bool:
        async with asyncio.timeout(10):
            return await self.reader.read(1) == b""

    async def request(self, raw: bytes) -> Reply:
        await self.send(raw)
        return await self.reply()


@contextlib.asynccontextmanager
async def connect(address: tuple[str, int]) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def get(target: str, *extra: str, host: str = "localhost") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def post(target: str, body: bytes, *extra: str) -> bytes:
    lines = [
        f"POST {target} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        *extra,
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + body
