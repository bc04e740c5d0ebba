"""The ext_authz front ends, called as Envoy calls them: gRPC through generated stubs, and the
HTTP service mode over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2

from palisade.waf import WafEngine
from palisade.waf._extauthz import ExtAuthzGrpcServer, ExtAuthzHttpServer
from palisade.waf._front_engine import WafEngineLike
from tests.shared_data import shared_path
from tests.waf.front_support import (
    RecordingEngine,
    StandInEngine,
    connect,
    get,
    post,
    real_engine,
)

pytestmark = pytest.mark.timeout(60, method="thread")

AttributeContext = attribute_context_pb2.AttributeContext
FORM = b"application/x-www-form-urlencoded"
CRS_BEFORE = "SecRuleEngine On\nSecRequestBodyAccess On\n"


def check_request(
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    raw_headers: list[tuple[str, bytes]] | None = None,
    body: str = "",
    raw_body: bytes = b"",
    protocol: str = "HTTP/1.1",
) -> Any:
    """A CheckRequest shaped like Envoy's (pseudo-headers in the map, lower-case names)."""
    http = AttributeContext.HttpRequest(
        id="1",
        method=method,
        path=path,
        host="shop.example",
        scheme="http",
        protocol=protocol,
        headers=headers
        if headers is not None
        else {":authority": "shop.example", ":method": method, ":path": path, "user-agent": "t"},
        body=body,
        raw_body=raw_body,
    )
    if raw_headers is not None:
        http.header_map.CopyFrom(
            base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in raw_headers]
            )
        )
    peer = AttributeContext.Peer(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="192.0.2.7", port_value=40000)
        )
    )
    destination = AttributeContext.Peer(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="10.1.2.3", port_value=8080)
        )
    )
    return external_auth_pb2.CheckRequest(
        attributes=AttributeContext(
            source=peer, destination=destination, request=AttributeContext.Request(http=http)
        )
    )


@contextlib.asynccontextmanager
async def grpc_service(
    factory: Callable[[], WafEngineLike] = real_engine, **options: Any
) -> AsyncIterator[tuple[ExtAuthzGrpcServer, Any]]:
    options.setdefault("fail_open", False)
    server = ExtAuthzGrpcServer(factory, **options)
    await server.start(("127.0.0.1", 0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, external_auth_pb2_grpc.AuthorizationStub(channel)
    finally:
        await server.close(grace=0.5)


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def test_grpc_allows_a_clean_request_and_builds_it_as_envoy_describes_it() -> None:
    engine = RecordingEngine(real_engine())

    async def scenario() -> None:
        async with grpc_service(lambda: engine) as (_server, stub):
            response = await stub.Check(check_request("/shop?item=42"), timeout=5)
            assert response.status.code == code_pb2.OK
            assert response.HasField("ok_response")
            (request, _, result), *_ = engine.seen
            assert not result.matches
            assert request.method == "GET"
            assert request.uri == "/shop?item=42"
            assert request.version == "HTTP/1.1"
            assert request.headers == (("host", "shop.example"), ("user-agent", "t"))
            assert (request.remote_addr, request.remote_port) == ("192.0.2.7", 40000)
            assert (request.server_addr, request.server_port) == ("10.1.2.3", 8080)

    run(scenario)


def test_grpc_denies_with_the_engines_status_and_a_body() -> None:
    async def scenario() -> None:
        async with grpc_service(lambda: real_engine(status=406)) as (_server, stub):
            response = await stub.Check(check_request("/?q=attack"), timeout=5)
            assert response.status.code == code_pb2.PERMISSION_DENIED
            assert response.HasField("denied_response")
            assert response.denied_response.status.code == 406
            assert "blocked" in response.denied_response.body
            assert response.denied_response.headers[0].header.key == "content-type"
            waf = response.dynamic_metadata.fields["palisade_waf"].struct_value.fields
            assert waf["outcome"].string_value == "block"
            assert waf["rule_ids"].string_value == "1001"

    run(scenario)


def test_grpc_reads_raw_header_values_and_bodies() -> None:
    engine = RecordingEngine(real_engine())

    async def scenario() -> None:
        async with grpc_service(lambda: engine) as (_server, stub):
            raw = [
                (":authority", b"shop.example"),
                (":path", b"/form"),
                ("x-bin", b"\xff\x01"),
                ("content-type", FORM),
            ]
            response = await stub.Check(
                check_request("/form", method="POST", raw_headers=raw, raw_body=b"a=\xffattack"),
                timeout=5,
            )
            assert response.denied_response.status.code == 403
            request = engine.seen[-1][0]
            assert request.headers == (
                ("host", "shop.example"),
                ("x-bin", "\xff\x01"),
                ("content-type", FORM.decode()),
            )
            assert request.body == b"a=\xffattack"
            # the string body (Envoy without pack_as_bytes) and HTTP/2 as ModSecurity names it
            response = await stub.Check(
                check_request("/form", method="POST", body="a=é", protocol="HTTP/2"), timeout=5
            )
            assert response.status.code == code_pb2.OK
            request = engine.seen[-1][0]
            assert request.body == "a=é".encode()
            assert request.version == "HTTP/2.0"

    run(scenario)


@pytest.mark.parametrize("fail_open", [True, False])
def test_grpc_failure_policy(fail_open: bool) -> None:
    async def scenario() -> None:
        async with grpc_service(StandInEngine, fail_open=fail_open) as (_server, stub):
            response = await stub.Check(check_request("/boom"), timeout=5)
            if fail_open:
                assert response.status.code == code_pb2.OK
            else:
                assert response.status.code == code_pb2.UNAVAILABLE
                assert response.denied_response.status.code == 503

    run(scenario)


def test_grpc_reload() -> None:
    engines = iter([real_engine(status=403), real_engine(status=429)])

    async def scenario() -> None:
        async with grpc_service(lambda: next(engines)) as (server, stub):
            first = await stub.Check(check_request("/attack"), timeout=5)
            assert first.denied_response.status.code == 403
            await server.reload()
            second = await stub.Check(check_request("/attack"), timeout=5)
            assert second.denied_response.status.code == 429

    run(scenario)


# -- HTTP service mode ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http_service(
    factory: Callable[[], WafEngineLike] = real_engine, **options: Any
) -> AsyncIterator[ExtAuthzHttpServer]:
    options.setdefault("fail_open", False)
    server = ExtAuthzHttpServer(factory, **options)
    await server.start(("127.0.0.1", 0))
    try:
        yield server
    finally:
        await server.close(grace=0.5)


def test_http_mode_allows_and_denies_on_one_connection() -> None:
    engine = RecordingEngine(real_engine())

    async def scenario() -> None:
        async with (
            http_service(lambda: engine, path_prefix="/authz") as server,
            connect(server.address) as client,
        ):
            allowed = await client.request(
                get(
                    "/authz/shop?item=1",
                    "X-Envoy-Expected-Rq-Timeout-Ms: 200",
                    "X-Forwarded-For: 198.51.100.1, 192.0.2.9",
                )
            )
            assert allowed.status == 200
            request = engine.seen[-1][0]
            assert request.uri == "/shop?item=1"
            assert request.remote_addr == "192.0.2.9"
            assert all(not k.lower().startswith("x-envoy-") for k, _ in request.headers)
            denied = await client.request(post("/authz/form", b"comment=attack"))
            assert denied.status == 403
            assert b"blocked" in denied.body
            assert engine.seen[-1][0].body == b"comment=attack"
            assert (await client.request(get("/authz/"))).status == 200

    run(scenario)


@pytest.mark.parametrize("fail_open", [True, False])
def test_http_mode_failure_policy(fail_open: bool) -> None:
    async def scenario() -> None:
        async with (
            http_service(StandInEngine, fail_open=fail_open) as server,
            connect(server.address) as client,
        ):
            reply = await client.request(get("/boom"))
            assert reply.status == (200 if fail_open else 503)

    run(scenario)


def test_http_mode_refuses_malformed_requests() -> None:
    async def scenario() -> None:
        async with http_service() as server, connect(server.address) as client:
            reply = await client.request(b"GET / HTTP/1.1\r\n\r\n")
            assert reply.status == 400
            assert await client.closed_by_peer()

    run(scenario)


def test_http_mode_answers_head_without_a_body() -> None:
    async def scenario() -> None:
        async with http_service() as server, connect(server.address) as client:
            await client.send(b"HEAD /?q=attack HTTP/1.1\r\nHost: shop\r\n\r\n")
            assert (await client.reply(head_request=True)).status == 403
            assert (await client.request(get("/fine"))).status == 200

    run(scenario)


def test_grpc_with_the_core_rule_set_as_envoy_sends_an_attack_and_a_clean_request() -> None:
    """CRS v4 at PL1, anomaly blocking: Envoy's view of a SQL injection is denied by 949110
    after 942100; a browser's plain request passes without a match."""
    crs = shared_path("data", "crs")
    rules = [crs / "crs-setup.conf.example", *sorted((crs / "rules").glob("*.conf"))]
    engine = RecordingEngine(WafEngine.load(rules, before=CRS_BEFORE))
    browser = {
        ":authority": "localhost",
        ":method": "GET",
        ":path": "/",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "accept": "*/*",
    }

    async def scenario() -> None:
        async with grpc_service(lambda: engine) as (_server, stub):
            attack = "/?id=1%27%20OR%20%271%27=%271"
            denied = await stub.Check(
                check_request(attack, headers={**browser, ":path": attack}), timeout=30
            )
            assert denied.denied_response.status.code == 403
            assert {942100, 949110} <= engine.seen[-1][2].logged_ids()
            allowed = await stub.Check(check_request("/", headers=browser), timeout=30)
            assert allowed.status.code == code_pb2.OK
            assert engine.seen[-1][2].logged_ids() == set()

    run(scenario)
