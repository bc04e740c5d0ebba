"""Reverse-proxy front end: ``palisade waf proxy --listen … --upstream …``.

A thin asyncio shell around the engine. Per client connection (HTTP/1.1 keep-alive, requests
answered in order): read the head and the whole body (Content-Length or chunked, within
:class:`Limits`), evaluate request phases 1–2, then

- refused framing → 400/413/431/501/505 and the connection closes; the upstream never sees it;
- blocked → the engine's status (403 by default) with a short body; the upstream never sees it;
- engine failure or budget exceeded → forwarded (fail-open) or 503 (fail-closed);
- allowed → forwarded over a pooled keep-alive upstream connection, hop-by-hop fields
  removed (RFC 9110 §7.6.1) and the client added to ``X-Forwarded-For``; the response is
  streamed back, or — with ``inspect_response`` — buffered up to the response-body limit and
  evaluated through the response phases first.

Evaluations run on the event loop's thread by default: with the compiled engine, handing
them to worker threads (``threads`` > 0) cost more in hand-offs and GIL switches than the
overlap with the loop's socket work gained (bench: 892 vs 573–602 benign GETs/s).
``workers > 1`` forks that many processes after the engine is loaded (its compiled rules are
shared copy-on-write), each with its own ``SO_REUSEPORT`` listening socket on the same
address, so the kernel spreads connections.

``engine_factory`` is called once at start and again by :meth:`ProxyServer.reload` (``SIGHUP``
for :func:`run_proxy`): the new engine is built off the loop and swapped in atomically;
connections stay open, and a request in flight finishes on the engine it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from palisade.waf._front_engine import (
    DEFAULT_BUDGET,
    DEFAULT_THREADS,
    EngineFactory,
    EngineSlot,
    ResultHook,
    Verdict,
    WafEngineLike,
    denial_body,
)
from palisade.waf._front_http1 import (
    ConnectionTracker,
    FramingError,
    Limits,
    RequestHead,
    ResponseHead,
    end_to_end,
    read_chunked,
    read_request_body,
    read_request_head,
    read_response_head,
    render_head,
    simple_response,
)
from palisade.waf._http import HttpRequest, HttpResponse

__all__ = ["Limits", "ProxyServer", "run_proxy"]

log = logging.getLogger("palisade.waf.proxy")

_BLOCK = 65536
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(slots=True)
class _Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class _UpstreamPool:
    """Idle keep-alive connections to the upstream, most recently used first."""

    def __init__(self, address: tuple[str, int], size: int, timeout: float) -> None:
        self.address = address
        self.size = size
        self.timeout = timeout
        self._idle: list[_Upstream] = []

    async def acquire(self) -> tuple[_Upstream, bool]:
        """A connection and whether it was reused (a reused one may have been closed by the
        upstream in the meantime; the caller retries once on a fresh one)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        return await self.connect(), False

    async def connect(self) -> _Upstream:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(*self.address, limit=_BLOCK)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Upstream(reader, writer)

    def release(self, conn: _Upstream) -> None:
        if conn.usable() and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _UpstreamFailed(Exception):
    pass


class ProxyServer:
    """The proxy on one event loop. ``await start()``, then ``await close()``."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        upstream: tuple[str, int],
        *,
        fail_open: bool,
        inspect_response: bool = False,
        limits: Limits | None = None,
        budget: float | None = DEFAULT_BUDGET,
        on_result: ResultHook | None = None,
        pool_size: int = 32,
        engine: WafEngineLike | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.limits = limits or Limits()
        self.slot = EngineSlot(
            engine_factory,
            fail_open=fail_open,
            budget=budget,
            on_result=on_result,
            engine=engine,
            threads=threads,
        )
        self.inspect_response = inspect_response
        self.upstream = upstream
        self._pool = _UpstreamPool(upstream, pool_size, self.limits.upstream_timeout)
        self._server: asyncio.Server | None = None
        self._connections = ConnectionTracker()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(
        self, listen: tuple[str, int] | None = None, *, sock: socket.socket | None = None
    ) -> None:
        self.slot.start()
        if sock is not None:
            self._server = await asyncio.start_server(
                self._on_connection, sock=sock, limit=self.limits.max_header_bytes
            )
        else:
            assert listen is not None
            self._server = await asyncio.start_server(
                self._on_connection, *listen, limit=self.limits.max_header_bytes, backlog=1024
            )

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def reload(self) -> None:
        """Build a fresh engine from the factory and swap it in without dropping connections."""
        await self.slot.reload()

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening; let requests in flight finish for ``grace`` seconds; close the rest."""
        if self._server is not None:
            self._server.close()
        await self._connections.close(grace)
        if self._server is not None:
            await self._server.wait_closed()
        self._pool.close()
        self.slot.stop()

    # -- one client connection ---------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = self._connections.enter()
        try:
            await self._serve_connection(reader, writer, task)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # close() gave up waiting; asyncio's stream callback must not see the cancel
        except Exception:
            log.exception("proxy connection failed")
        finally:
            self._connections.leave(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
        first = True
        while True:
            if self._connections.closing:
                return  # shutting down: no new request on this connection
            timeout = self.limits.read_timeout if first else self.limits.keepalive_timeout
            first = False
            try:
                self._connections.idle(task, True)  # close() may end it while it waits
                head = await read_request_head(reader, self.limits, first_byte_timeout=timeout)
                self._connections.idle(task, False)
                if head is None:
                    return
                if head.expect_continue and (head.chunked or head.content_length):
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_request_body(reader, head, self.limits)
            except FramingError as exc:
                await self._refuse(writer, exc)
                return
            request = HttpRequest(
                method=head.method,
                uri=head.target,
                version=head.written_version,
                headers=tuple(head.headers),
                body=body,
                remote_addr=peer[0],
                remote_port=peer[1],
                server_addr=local[0],
                server_port=local[1],
            )
            if not await self._exchange(head, request, writer, peer[0]):
                return

    async def _refuse(self, writer: asyncio.StreamWriter, exc: FramingError) -> None:
        log.info("refused a request: %s", exc.reason)
        body = f"{exc.status} {exc.reason}\n".encode()
        writer.write(simple_response(exc.status, body, keep_alive=False))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _deny(
        self, writer: asyncio.StreamWriter, verdict: Verdict, head: RequestHead
    ) -> bool:
        keep_alive = head.keep_alive
        extra = [("Connection", "keep-alive")] if keep_alive and head.version == "HTTP/1.0" else []
        writer.write(
            simple_response(
                verdict.status,
                denial_body(verdict),
                keep_alive=keep_alive,
                extra=extra,
                head_only=head.method == "HEAD",
            )
        )
        await writer.drain()
        return keep_alive

    async def _exchange(
        self, head: RequestHead, request: HttpRequest, writer: asyncio.StreamWriter, client: str
    ) -> bool:
        """Evaluate, forward, answer; whether the client connection stays open."""
        # With response inspection the response-phase result (which repeats the request
        # phases' matches) is the one reported, so a request gives one Security Event.
        verdict = await self.slot.evaluate(request, report=not self.inspect_response)
        if not verdict.allowed:
            if self.inspect_response:
                self.slot.report(request, verdict)
            return await self._deny(writer, verdict, head)
        forwarded = self._forwarded_head(head, request, client)
        try:
            conn, response = await self._send_upstream(forwarded, request.body, head.method)
        except _UpstreamFailed as exc:
            log.warning("upstream %s:%d failed: %s", *self.upstream, exc)
            if self.inspect_response:
                self.slot.report(request, verdict)  # no response phase will report it
            writer.write(
                simple_response(
                    502, b"Bad Gateway\n", keep_alive=False, head_only=head.method == "HEAD"
                )
            )
            await writer.drain()
            return False
        try:
            if self.inspect_response:
                return await self._answer_inspected(head, request, conn, response, writer, verdict)
            return await self._relay(head, conn, response, writer, b"")
        except BaseException:
            conn.close()
            raise

    def _forwarded_head(self, head: RequestHead, request: HttpRequest, client: str) -> bytes:
        headers = [
            (k, v)
            for k, v in end_to_end(head.headers)
            if k.lower() not in ("content-length", "expect", "x-forwarded-for")
        ]
        prior = [v for k, v in head.headers if k.lower() == "x-forwarded-for"]
        headers.append(("X-Forwarded-For", ", ".join([*prior, client])))
        if request.body or head.content_length is not None or head.chunked:
            headers.append(("Content-Length", str(len(request.body))))
        return render_head(f"{head.method} {head.target} HTTP/1.1", headers)

    async def _send_upstream(
        self, forwarded: bytes, body: bytes, method: str
    ) -> tuple[_Upstream, ResponseHead]:
        conn, reused = await self._acquire()
        for attempt in (1, 2):
            try:
                conn.writer.write(forwarded + body if len(body) < _BLOCK else forwarded)
                if len(body) >= _BLOCK:
                    conn.writer.write(body)
                await conn.writer.drain()
                async with asyncio.timeout(self.limits.upstream_timeout):
                    response = await read_response_head(
                        conn.reader, self.limits, request_method=method
                    )
                return conn, response
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                conn.close()
                if not reused or attempt == 2 or method not in _IDEMPOTENT:
                    raise _UpstreamFailed(str(exc) or type(exc).__name__) from exc
                # A pooled connection the upstream had closed before it answered: most likely
                # it closed the idle connection as the request went out; an idempotent request
                # (RFC 9110 §9.2.2) may be sent again on a new one, as nginx does.
                conn, reused = await self._acquire(fresh=True)
            except (TimeoutError, FramingError) as exc:
                conn.close()
                raise _UpstreamFailed(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    async def _acquire(self, *, fresh: bool = False) -> tuple[_Upstream, bool]:
        try:
            if fresh:
                return await self._pool.connect(), False
            return await self._pool.acquire()
        except (OSError, TimeoutError) as exc:
            raise _UpstreamFailed(f"connect: {exc}") from exc

    async def _answer_inspected(
        self,
        head: RequestHead,
        request: HttpRequest,
        conn: _Upstream,
        response: ResponseHead,
        writer: asyncio.StreamWriter,
        request_verdict: Verdict,
    ) -> bool:
        """Buffer up to the inspection limit, run the response phases, then answer."""
        limit = self.limits.max_inspected_response
        buffered = bytearray()
        complete = False
        body_iter = self._upstream_body(conn, response)
        try:
            async with asyncio.timeout(self.limits.upstream_timeout):
                async for block in body_iter:
                    buffered += block
                    if len(buffered) >= limit:
                        break
                else:
                    complete = True
        except (asyncio.IncompleteReadError, FramingError, TimeoutError, ConnectionError) as exc:
            log.warning("upstream %s:%d failed mid-response: %s", *self.upstream, exc)
            conn.close()
            self.slot.report(request, request_verdict)  # no response phase will report it
            writer.write(
                simple_response(
                    502, b"Bad Gateway\n", keep_alive=False, head_only=head.method == "HEAD"
                )
            )
            return False
        verdict = await self.slot.evaluate(
            request,
            HttpResponse(
                status=response.status,
                version=response.version,
                headers=tuple(response.headers),
                body=bytes(buffered[:limit]),
            ),
        )
        if not verdict.allowed:
            await body_iter.aclose()
            conn.close()  # its body was not drained
            return await self._deny(writer, verdict, head)
        if complete:
            return await self._relay(head, conn, response, writer, bytes(buffered), done=True)
        return await self._relay(head, conn, response, writer, bytes(buffered), rest=body_iter)

    async def _upstream_body(
        self, conn: _Upstream, response: ResponseHead
    ) -> AsyncGenerator[bytes, None]:
        """The upstream's response body, block by block (yields nothing for no body)."""
        reader = conn.reader
        if response.chunked:
            async for chunk in read_chunked(reader, 1 << 62):
                yield chunk
        elif response.content_length is not None:
            left = response.content_length
            while left:
                block = await reader.read(min(left, _BLOCK))
                if not block:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(block)
                yield block
        else:
            while block := await reader.read(_BLOCK):
                yield block

    async def _relay(
        self,
        head: RequestHead,
        conn: _Upstream,
        response: ResponseHead,
        writer: asyncio.StreamWriter,
        prefix: bytes,
        *,
        done: bool = False,
        rest: AsyncGenerator[bytes, None] | None = None,
    ) -> bool:
        """Send the response head and stream the body; release or close the upstream."""
        keep_alive = head.keep_alive
        no_body = head.method == "HEAD" or response.status in (204, 304)
        headers = end_to_end(response.headers)
        chunk_out = False
        if done and not no_body:
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(prefix))))
        elif not no_body:
            if response.content_length is not None:
                pass  # the upstream's Content-Length stays
            elif head.version == "HTTP/1.1":
                chunk_out = True
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                keep_alive = False  # an HTTP/1.0 client reads to the end of the connection
        if not keep_alive:
            headers.append(("Connection", "close"))
        elif head.version == "HTTP/1.0":
            headers.append(("Connection", "keep-alive"))
        reason = response.reason or "-"
        # The head goes out with the first block of the body: one send, not two.
        out = render_head(f"HTTP/1.1 {response.status} {reason}", headers)
        if prefix and not no_body:
            out += b"%x\r\n%s\r\n" % (len(prefix), prefix) if chunk_out else prefix
        if not done and not no_body:
            body_iter = rest if rest is not None else self._upstream_body(conn, response)
            try:
                async with asyncio.timeout(self.limits.upstream_timeout) as deadline:
                    loop = asyncio.get_running_loop()
                    async for block in body_iter:
                        deadline.reschedule(loop.time() + self.limits.upstream_timeout)
                        out += b"%x\r\n%s\r\n" % (len(block), block) if chunk_out else block
                        writer.write(out)
                        out = b""
                        await writer.drain()
            except (asyncio.IncompleteReadError, FramingError, TimeoutError, ConnectionError):
                # The upstream broke mid-body: the client cannot be told otherwise.
                conn.close()
                if out:  # nothing reached the client yet: it can still be told
                    writer.write(simple_response(502, b"Bad Gateway\n", keep_alive=False))
                return False
            if chunk_out:
                out += b"0\r\n\r\n"
        if out:
            writer.write(out)
        await writer.drain()
        if response.keep_alive:
            self._pool.release(conn)
        else:
            conn.close()
        return keep_alive


# -- running it as a service -------------------------------------------------------------------


def _listening_socket(
    listen: tuple[str, int], *, reuse_port: bool, backlog: int = 1024
) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(listen)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


_CONTROL_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


async def _serve_until_signalled(
    server: ProxyServer, sock: socket.socket, on_ready: Callable[[tuple[str, int]], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    def on_reload() -> None:
        task = loop.create_task(_reload_logged(server))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    # a forked worker starts with these blocked (see run_proxy): what arrived meanwhile is
    # delivered now, to the handlers
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _CONTROL_SIGNALS)
    await server.start(sock=sock)
    if on_ready is not None:
        on_ready(server.address)
    try:
        await stop.wait()
    finally:
        for task in reloads:
            task.cancel()
        await server.close()


async def _reload_logged(server: ProxyServer) -> None:
    try:
        await server.reload()
    except Exception:
        log.exception("WAF engine reload failed; the previous engine stays")


def run_proxy(
    engine_factory: EngineFactory,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    *,
    fail_open: bool,
    workers: int = 1,
    inspect_response: bool = False,
    limits: Limits | None = None,
    budget: float | None = DEFAULT_BUDGET,
    on_result: ResultHook | None = None,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    threads: int = DEFAULT_THREADS,
    on_worker_start: Callable[[], None] | None = None,
) -> None:
    """Run the proxy until SIGTERM/SIGINT; SIGHUP reloads the engine from ``engine_factory``.

    ``workers > 1`` forks that many worker processes (SO_REUSEPORT sockets on one address);
    the parent forwards SIGTERM/SIGINT/SIGHUP to them and waits. ``on_ready`` gets the bound
    address once listening (in the parent, once every worker is forked, for workers > 1).
    ``on_worker_start`` runs in each serving process before it serves — after the fork for
    workers > 1 — to start what the hooks need there (threads do not survive a fork).
    """
    engine = engine_factory()  # load once: forked workers share the compiled rules

    def make_server() -> ProxyServer:
        return ProxyServer(
            engine_factory,
            upstream,
            fail_open=fail_open,
            inspect_response=inspect_response,
            limits=limits,
            budget=budget,
            on_result=on_result,
            engine=engine,
            threads=threads,
        )

    if workers <= 1:
        sock = _listening_socket(listen, reuse_port=False)
        if on_worker_start is not None:
            on_worker_start()
        asyncio.run(_serve_until_signalled(make_server(), sock, on_ready))
        return

    # Reserve the port (an ephemeral one too) with a bound socket that never listens, so
    # the kernel hands it no connections; each worker listens on its own SO_REUSEPORT socket.
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(listen)
    bound = holder.getsockname()[:2]
    children: list[int] = []
    # Until a worker's loop has its handlers (and the parent its forwarding), a SIGHUP would
    # end it (the default action) and take the service down: the signals wait, blocked.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
    try:
        for _ in range(workers):
            sock = _listening_socket(bound, reuse_port=True)
            pid = os.fork()
            if pid == 0:  # worker
                code = 0
                try:
                    holder.close()
                    if on_worker_start is not None:
                        on_worker_start()
                    asyncio.run(_serve_until_signalled(make_server(), sock, None))
                except BaseException:
                    log.exception("proxy worker failed")
                    code = 1
                finally:
                    os._exit(code)
            sock.close()
            children.append(pid)
        if on_ready is not None:
            on_ready(bound)
        _supervise(children)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        holder.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _supervise(children: list[int]) -> None:
    """Forward signals to the workers; return when one of them has ended or we are told to stop."""

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {s: signal.signal(s, forward) for s in _CONTROL_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _CONTROL_SIGNALS)
    try:
        alive = set(children)
        while alive:
            pid, _status = os.wait()
            alive.discard(pid)
            children.remove(pid)
            if alive:
                forward(signal.SIGTERM, None)  # one worker gone: take the service down whole
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
