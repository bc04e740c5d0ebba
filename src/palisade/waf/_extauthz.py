"""Envoy ``ext_authz`` front ends: the gRPC service and the HTTP service mode.

Both put Palisade where Calico's WAF sits in Envoy: Envoy asks before it routes a request, we
answer allow or deny. They only translate — Envoy's view of the request becomes an
:class:`HttpRequest`, the :class:`Verdict` becomes Envoy's answer; evaluation, the CPU budget
and fail-open/closed are :class:`EngineSlot`'s (shared with the proxy).

gRPC (``envoy.service.auth.v3.Authorization/Check``): the request is built from
``attributes.request.http`` — method, path (with its query, as Envoy sends it), protocol,
headers (``header_map`` with raw values when Envoy sends it, else the ``headers`` map;
``:authority`` becomes ``Host``, other pseudo-headers are dropped), the body when Envoy's
``with_request_body`` buffers it (``raw_body`` with ``pack_as_bytes``, else ``body``), and the
source/destination addresses. Allowed → ``OkHttpResponse``; blocked → ``DeniedHttpResponse``
with the engine's status; fail-closed → ``DeniedHttpResponse`` 503 (gRPC status UNAVAILABLE).

HTTP service mode: Envoy sends the original method, the path (after its ``path_prefix``, which
we strip), the forwarded headers and, with ``with_request_body``, the body. 200 means allow;
any other answer is passed back to the client by Envoy, so a refusal carries its status and a
short body. Envoy's own ``x-envoy-*`` fields are not part of the client's request and are left
out of the evaluation; the client address comes from ``x-envoy-external-address`` or the last
``X-Forwarded-For`` entry when present (this port must only be reachable by Envoy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from palisade.waf._front_engine import (
    DEFAULT_BUDGET,
    DEFAULT_THREADS,
    EngineFactory,
    EngineSlot,
    Outcome,
    ResultHook,
    Verdict,
    WafEngineLike,
    denial_body,
)
from palisade.waf._front_http1 import (
    ConnectionTracker,
    FramingError,
    Limits,
    read_request_body,
    read_request_head,
    simple_response,
)
from palisade.waf._http import HttpRequest

__all__ = [
    "ExtAuthzGrpcServer",
    "ExtAuthzHttpServer",
    "request_from_check",
    "serve_extauthz",
    "serve_extauthz_http",
]

log = logging.getLogger("palisade.waf.extauthz")

_TEXT_PLAIN = "text/plain; charset=utf-8"
_PROTOCOLS = {"HTTP/2": "HTTP/2.0", "HTTP/3": "HTTP/3.0"}


def _bytes_str(text: str) -> str:
    """A proto ``string`` (Unicode) as a WAF value (code points = bytes)."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def request_from_check(check: Any) -> HttpRequest:
    """The client's request as Envoy describes it in a ``CheckRequest``."""
    attributes = check.attributes
    http = attributes.request.http
    pairs: list[tuple[str, str]]
    if len(http.header_map.headers):
        pairs = [
            (h.key, h.raw_value.decode("latin-1") if h.raw_value else _bytes_str(h.value))
            for h in http.header_map.headers
        ]
    else:
        pairs = [(k, _bytes_str(v)) for k, v in http.headers.items()]
    headers: list[tuple[str, str]] = []
    authority = None
    for name, value in pairs:
        if name == ":authority":
            authority = value
        elif not name.startswith(":"):
            headers.append((name, value))
    if authority is not None and not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("host", authority))
    body = http.raw_body if http.raw_body else http.body.encode("utf-8", "surrogateescape")
    source = attributes.source.address.socket_address
    destination = attributes.destination.address.socket_address
    protocol = http.protocol or "HTTP/1.1"
    return HttpRequest(
        method=_bytes_str(http.method) or "GET",
        uri=_bytes_str(http.path) or "/",
        version=_PROTOCOLS.get(protocol, protocol),
        headers=tuple(headers),
        body=body,
        remote_addr=source.address or "0.0.0.0",
        remote_port=source.port_value,
        server_addr=destination.address or "0.0.0.0",
        server_port=destination.port_value,
    )


def _metadata(verdict: Verdict) -> dict[str, Any]:
    """What Envoy may log (``%DYNAMIC_METADATA(envoy.filters.http.ext_authz:palisade_waf)%``)."""
    fields: dict[str, Any] = {"outcome": verdict.outcome.value}
    result = verdict.result
    if result is not None:
        fields["inbound_score"] = float(getattr(result, "inbound_score", 0))
        matches = getattr(result, "matches", ())
        ids = sorted({m.id for m in matches if getattr(m, "logged", True)})
        fields["rule_ids"] = ",".join(str(i) for i in ids)
    return {"palisade_waf": fields}


def _check_response(verdict: Verdict) -> Any:
    if verdict.allowed:
        response = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(),
        )
        response.dynamic_metadata.update(_metadata(verdict))
        return response
    code = (
        code_pb2.UNAVAILABLE
        if verdict.outcome is Outcome.FAIL_CLOSED
        else code_pb2.PERMISSION_DENIED
    )
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=verdict.reason or "blocked by the WAF"),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=verdict.status),
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="content-type", value=_TEXT_PLAIN)
                )
            ],
            body=denial_body(verdict).decode(),
        ),
    )
    response.dynamic_metadata.update(_metadata(verdict))
    return response


class _AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, slot: EngineSlot) -> None:
        self.slot = slot

    async def Check(self, request: Any, context: Any) -> Any:
        try:
            http_request = request_from_check(request)
        except Exception as exc:  # a CheckRequest we cannot read: the failure policy decides
            log.warning("unreadable CheckRequest: %s", exc)
            return _check_response(self.slot.failed(f"unreadable CheckRequest: {exc}"))
        return _check_response(await self.slot.evaluate(http_request))


class ExtAuthzGrpcServer:
    """The gRPC ``Authorization`` service on one event loop: ``await start(listen)``, then
    ``await close()``. ``port`` is the bound port (give port 0 for an ephemeral one)."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        fail_open: bool,
        budget: float | None = DEFAULT_BUDGET,
        on_result: ResultHook | None = None,
        engine: WafEngineLike | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.slot = EngineSlot(
            engine_factory,
            fail_open=fail_open,
            budget=budget,
            on_result=on_result,
            engine=engine,
            threads=threads,
        )
        self._server: Any = None
        self.port = 0

    async def start(self, listen: tuple[str, int]) -> None:
        self.slot.start()
        self._server = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            _AuthorizationServicer(self.slot), self._server
        )
        host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        self.port = self._server.add_insecure_port(f"{host}:{listen[1]}")
        if not self.port:
            raise OSError(f"cannot listen on {listen[0]}:{listen[1]}")
        await self._server.start()

    async def reload(self) -> None:
        await self.slot.reload()

    async def close(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self.slot.stop()


class ExtAuthzHttpServer:
    """Envoy's HTTP ext_authz service mode on a small asyncio HTTP/1.1 server."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        fail_open: bool,
        path_prefix: str = "",
        limits: Limits | None = None,
        budget: float | None = DEFAULT_BUDGET,
        on_result: ResultHook | None = None,
        engine: WafEngineLike | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.slot = EngineSlot(
            engine_factory,
            fail_open=fail_open,
            budget=budget,
            on_result=on_result,
            engine=engine,
            threads=threads,
        )
        self.path_prefix = path_prefix.rstrip("/")
        self.limits = limits or Limits()
        self._server: asyncio.Server | None = None
        self._connections = ConnectionTracker()

    async def start(self, listen: tuple[str, int]) -> None:
        self.slot.start()
        self._server = await asyncio.start_server(
            self._on_connection, *listen, limit=self.limits.max_header_bytes
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def reload(self) -> None:
        await self.slot.reload()

    async def close(self, grace: float = 5.0) -> None:
        if self._server is not None:
            self._server.close()
        await self._connections.close(grace)
        if self._server is not None:
            await self._server.wait_closed()
        self.slot.stop()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = self._connections.enter()
        try:
            await self._serve(reader, writer, task)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # close() gave up waiting; asyncio's stream callback must not see the cancel
        except Exception:
            log.exception("ext_authz connection failed")
        finally:
            self._connections.leave(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
        while not self._connections.closing:
            try:
                self._connections.idle(task, True)  # close() may end it while it waits
                head = await read_request_head(
                    reader, self.limits, first_byte_timeout=self.limits.keepalive_timeout
                )
                self._connections.idle(task, False)
                if head is None:
                    return
                body = await read_request_body(reader, head, self.limits)
            except FramingError as exc:
                # Envoy never sends these: refuse, and close the connection.
                writer.write(
                    simple_response(exc.status, f"{exc.reason}\n".encode(), keep_alive=False)
                )
                await writer.drain()
                return
            target = head.target
            if self.path_prefix and target.startswith(self.path_prefix):
                target = target[len(self.path_prefix) :] or "/"
                if not target.startswith("/"):
                    target = "/" + target
            headers = [(k, v) for k, v in head.headers if not k.lower().startswith("x-envoy-")]
            remote = _client_address(head.headers) or peer[0]
            request = HttpRequest(
                method=head.method,
                uri=target,
                version=head.written_version,
                headers=tuple(headers),
                body=body,
                remote_addr=remote,
                remote_port=peer[1] if remote == peer[0] else 0,
                server_addr=local[0],
                server_port=local[1],
            )
            verdict = await self.slot.evaluate(request)
            status, body = (200, b"") if verdict.allowed else (verdict.status, denial_body(verdict))
            writer.write(
                simple_response(
                    status, body, keep_alive=head.keep_alive, head_only=head.method == "HEAD"
                )
            )
            await writer.drain()
            if not head.keep_alive:
                return


def _client_address(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "x-envoy-external-address" and value.strip():
            return value.strip()
    forwarded = [v for k, v in headers if k.lower() == "x-forwarded-for"]
    if forwarded:
        last = ",".join(forwarded).split(",")[-1].strip()
        return last or None
    return None


# -- running them as services ------------------------------------------------------------------


async def _until_signalled(server: ExtAuthzGrpcServer | ExtAuthzHttpServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await server.reload()
        except Exception:
            log.exception("WAF engine reload failed; the previous engine stays")

    def on_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        await stop.wait()
    finally:
        for task in reloads:
            task.cancel()
        await server.close()


def serve_extauthz(
    engine_factory: EngineFactory,
    listen: tuple[str, int],
    *,
    fail_open: bool,
    budget: float | None = DEFAULT_BUDGET,
    on_result: ResultHook | None = None,
    threads: int = DEFAULT_THREADS,
) -> None:
    """Run the gRPC ext_authz service until SIGTERM/SIGINT; SIGHUP reloads the engine."""

    async def main() -> None:
        server = ExtAuthzGrpcServer(
            engine_factory, fail_open=fail_open, budget=budget, on_result=on_result, threads=threads
        )
        await server.start(listen)
        log.info("ext_authz (gRPC) listening on %s:%d", listen[0], server.port)
        await _until_signalled(server)

    asyncio.run(main())


def serve_extauthz_http(
    engine_factory: EngineFactory,
    listen: tuple[str, int],
    *,
    fail_open: bool,
    path_prefix: str = "",
    budget: float | None = DEFAULT_BUDGET,
    on_result: ResultHook | None = None,
    threads: int = DEFAULT_THREADS,
) -> None:
    """Run the HTTP ext_authz service until SIGTERM/SIGINT; SIGHUP reloads the engine."""

    async def main() -> None:
        server = ExtAuthzHttpServer(
            engine_factory,
            fail_open=fail_open,
            path_prefix=path_prefix,
            budget=budget,
            on_result=on_result,
            threads=threads,
        )
        await server.start(listen)
        log.info("ext_authz (HTTP) listening on %s:%d", *server.address)
        await _until_signalled(server)

    asyncio.run(main())
