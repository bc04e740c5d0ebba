"""Differential test: Palisade's WAF engine against libmodsecurity3 (nginx connector).

Both engines get the same rule configuration: the CRS v4.28 files as the CRS CI loads them
and the CI's engine settings (DetectionOnly, paranoia level 4, its limits), given to
``WafEngine.load`` and rendered into nginx's ``modsecurity_rules_file`` by
``modsec_reference.ModSecReference``. Each sampled request is sent byte for byte to nginx
on loopback and evaluated in process; the sets of logged rule ids must agree, except the
differences listed (with their cause) in ``modsec_differences.yaml``, and every listed
difference of a sampled request must still occur.

Sample: a fixed-seed sample of about 300 regression-test stages across every rule folder
(the exact request bytes go-ftw sends), about 50 benign requests (browser GETs, form POSTs,
JSON, multipart uploads, XML) and about 90 odd but well-formed ones (URI shapes and
encodings, a payload in every place a request can carry it, the body limits, responses),
each at the CI's paranoia level 4 and at level 1. Requests nginx answers by itself, before
ModSecurity runs (400, 505, …), are left out of the id comparison; our HTTP parser must
refuse them too. ``PALISADE_DIFF_FULL=1`` runs every stage instead (about 3,600 requests
per level, a few minutes); ``PALISADE_DIFF_REPORT=path.json`` writes every request's
outcome to ``path-pl<N>.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.waf import HttpRequest, HttpResponse, WafEngine
from palisade.waf._ftw import (
    _pipelined,
    albedo_response,
    crs_ci_configuration,
    crs_rule_files,
    load_test_files,
)
from palisade.waf._ftw_request import BadTestInput, build_request
from palisade.waf._http import HttpParseError, parse_request

from .modsec_reference import ModSecReference, ReferenceUnavailable

ROOT = Path(__file__).resolve().parents[2]
CRS = ROOT.parent / "shared" / "data" / "crs"
TESTS = CRS / "tests" / "regression" / "tests"
DIFFERENCES = Path(__file__).with_name("modsec_differences.yaml")

SEED = 20261127
SAMPLE_SIZE = 300
MIN_PER_FOLDER = 3
FULL = os.environ.get("PALISADE_DIFF_FULL") == "1"
REPORT = os.environ.get("PALISADE_DIFF_REPORT")

pytestmark = [
    pytest.mark.timeout(3600 if FULL else 300),
    pytest.mark.skipif(
        not TESTS.is_dir(), reason=f"the CRS regression corpus is not here ({TESTS})"
    ),
]


# ---- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    key: str  # "<rule>-<test>/<stage>" for regression stages, "benign/<name>" otherwise
    raw: bytes


def regression_stages() -> list[tuple[str, str, bytes]]:
    """(rule folder, key, raw request) for every stage of the corpus, in a stable order."""
    files, errors = load_test_files([TESTS])
    assert not errors, "test files that do not load:\n" + "\n".join(map(str, errors))
    stages: list[tuple[str, str, bytes]] = []
    for file in sorted(files, key=lambda f: str(f.path)):
        for test in file.tests:
            for number, stage in enumerate(test.stages, 1):
                try:
                    raw = build_request(stage.input)
                except BadTestInput:
                    continue  # go-ftw cannot send it either
                stages.append((file.path.parent.name, f"{test.name}/{number}", raw))
    return stages


def sample_stages(
    stages: list[tuple[str, str, bytes]], size: int, seed: int
) -> list[tuple[str, str, bytes]]:
    """A stratified sample: each rule folder in proportion to its stages, at least
    ``MIN_PER_FOLDER`` from each, drawn with a fixed seed."""
    rng = random.Random(seed)
    by_folder: dict[str, list[tuple[str, str, bytes]]] = defaultdict(list)
    for stage in stages:
        by_folder[stage[0]].append(stage)
    chosen: list[tuple[str, str, bytes]] = []
    for folder in sorted(by_folder):
        members = by_folder[folder]
        quota = max(MIN_PER_FOLDER, round(size * len(members) / len(stages)))
        chosen += rng.sample(members, min(quota, len(members)))
    return chosen


_BROWSERS = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
)

_GET_PATHS = (
    "/",
    "/index.html",
    "/static/js/app.3f9a1c.js",
    "/static/css/site.css?v=42",
    "/images/logo.png",
    "/favicon.ico",
    "/search?q=red+running+shoes&page=2",
    "/search?q=caf%C3%A9+au+lait&lang=fr",
    "/products?category=books&sort=price_asc&limit=20",
    "/products/12345/reviews?page=3",
    "/blog/2024/05/hello-world",
    "/api/v1/users/42",
    "/api/v1/items?ids=1,2,3&fields=name,price",
    "/?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale",
    "/login?next=%2Faccount%2Fsettings",
    "/account/orders?status=shipped&from=2024-01-01&to=2024-03-31",
    "/docs/getting-started.html",
    "/downloads/report-2024-q1.pdf",
    "/cart?item=1234&qty=2",
    "/calendar?date=2024-06-01&view=week",
    "/maps?lat=52.5200&lng=13.4050&zoom=12",
    "/news/local/weather-update-for-the-weekend",
)


def _head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _browser_headers(index: int, *, cookies: bool = True) -> list[tuple[str, str]]:
    agent, accept = _BROWSERS[index % len(_BROWSERS)]
    headers = [
        ("Host", "localhost"),
        ("User-Agent", agent),
        ("Accept", accept),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Referer", "http://localhost/"),
    ]
    if cookies and index % 2 == 0:
        headers.append(
            ("Cookie", f"session=a8f5f167f44f4964e6c998dee827110c; theme=dark; visits={index}")
        )
    headers.append(("Connection", "close"))
    return headers


def _with_body(
    method: str, target: str, headers: list[tuple[str, str]], content_type: str, body: bytes
) -> bytes:
    headers = [*headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return _head(method, target, headers) + body


def _multipart(boundary: str, parts: list[tuple[str, str | None, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, content_type, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def benign_requests() -> list[Sample]:
    """About 50 requests a browser or an API client sends in normal use."""
    samples: list[Sample] = []
    for index, path in enumerate(_GET_PATHS):
        samples.append(Sample(f"benign/get-{index}", _head("GET", path, _browser_headers(index))))
    api = [
        ("Host", "localhost"),
        ("User-Agent", "orders-client/2.3 (python-requests)"),
        ("Accept", "application/json"),
        ("Connection", "close"),
    ]
    samples += [
        Sample("benign/head", _head("HEAD", "/index.html", _browser_headers(1))),
        Sample(
            "benign/options-preflight",
            _head(
                "OPTIONS",
                "/api/v1/items",
                [
                    *_browser_headers(0, cookies=False),
                    ("Origin", "http://localhost:3000"),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "content-type"),
                ],
            ),
        ),
        Sample(
            "benign/get-bearer",
            _head(
                "GET",
                "/api/v1/me",
                [
                    *api,
                    (
                        "Authorization",
                        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN",
                    ),
                ],
            ),
        ),
    ]
    forms = {
        "login": b"username=alice&password=correct+horse+battery+staple&remember=on",
        "contact": (
            b"name=Bob+Smith&email=bob.smith%40example.com&subject=Order+question"
            b"&message=Hello%2C+I+ordered+a+blue+jacket+last+week+and+would+like+to+know"
            b"+when+it+ships.+Thanks+a+lot%21"
        ),
        "search": b"q=garden+tools&category=outdoor&price_max=50",
        "register": (
            b"first_name=Carla&last_name=Diaz&email=carla%40example.org&phone=%2B1+555+0100"
            b"&country=US&newsletter=1"
        ),
        "comment": (
            b"post_id=981&author=Dana&comment=Great+article%21+I+tried+the+recipe+and+it+"
            b"worked+well.+Next+time+I%27ll+add+more+garlic."
        ),
        "address": b"street=221B+Baker+Street&city=London&zip=NW1+6XE&notes=ring+twice",
        "checkout": b"cart_id=7781&shipping=express&gift_wrap=0&coupon=SPRING24",
        "settings": b"display_name=Eve&timezone=Europe%2FBerlin&language=de&notifications=weekly",
    }
    for index, (name, body) in enumerate(forms.items()):
        headers = [h for h in _browser_headers(index) if h[0] != "Connection"]
        headers += [("Origin", "http://localhost"), ("Connection", "close")]
        samples.append(
            Sample(
                f"benign/form-{name}",
                _with_body("POST", f"/{name}", headers, "application/x-www-form-urlencoded", body),
            )
        )
    documents: dict[str, Any] = {
        "order": {"customer_id": 1042, "items": [{"sku": "A-100", "qty": 2}], "express": False},
        "profile": {"name": "Frank", "email": "frank@example.com", "age": 37, "tags": ["vip"]},
        "nested": {"a": {"b": {"c": [1, 2, {"d": None}]}}, "ok": True},
        "text": {"title": "Weekly update", "body": "All systems normal. See you Monday!"},
        "unicode": {"city": "Zürich", "greeting": "Grüezi mitenand", "price": 12.5},
        "list": [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}],
        "search": {"query": "laptop", "filters": {"brand": ["acme", "globex"], "max": 999}},
        "event": {"type": "click", "target": "button#buy", "ts": 1717171717},
    }
    for name, document in documents.items():
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        samples.append(
            Sample(
                f"benign/json-{name}",
                _with_body("POST", f"/api/v1/{name}", api, "application/json", body),
            )
        )
    samples.append(
        Sample(
            "benign/json-put",
            _with_body("PUT", "/api/v1/users/42", api, "application/json", b'{"name":"Grace"}'),
        )
    )
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
    uploads: dict[str, list[tuple[str, str | None, str | None, bytes]]] = {
        "text-file": [
            ("description", None, None, b"Quarterly numbers"),
            ("file", "report.txt", "text/plain", b"revenue: 100\nexpenses: 80\n"),
        ],
        "image": [("avatar", "me.png", "image/png", png + b"\x00\x00\x00\x0aIDAT")],
        "fields-only": [("title", None, None, b"Holiday"), ("public", None, None, b"yes")],
        "csv": [("data", "contacts.csv", "text/csv", b"name,email\nHal,hal@example.com\n")],
        "two-files": [
            ("files", "a.txt", "text/plain", b"first file"),
            ("files", "b.txt", "text/plain", b"second file"),
        ],
    }
    for index, (name, parts) in enumerate(uploads.items()):
        boundary = f"----WebKitFormBoundary7MA4YWxkTrZu0gW{index}"
        headers = _browser_headers(index)
        samples.append(
            Sample(
                f"benign/multipart-{name}",
                _with_body(
                    "POST",
                    "/upload",
                    headers,
                    f"multipart/form-data; boundary={boundary}",
                    _multipart(boundary, parts),
                ),
            )
        )
    soap = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap='
        b'"http://www.w3.org/2003/05/soap-envelope"><soap:Body><GetPrice><Item>Apples</Item>'
        b"</GetPrice></soap:Body></soap:Envelope>"
    )
    samples.append(
        Sample("benign/xml-soap", _with_body("POST", "/soap", api, "application/soap+xml", soap))
    )
    samples.append(
        Sample(
            "benign/xml-doc",
            _with_body("POST", "/feed", api, "text/xml", b"<feed><entry id='1'>Hi</entry></feed>"),
        )
    )
    return samples


_EDGE_TARGETS = (
    "/a/../b/./c",
    "//double//slash",
    "/x%2fy%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/index.php/extra/path",
    "/a;jsessionid=123",
    "/%uff0e%uff0e/x",
    "/%c0%ae%c0%ae/x",
    "/x?a=1#frag",
    "/x#frag?b=2",
    "/file.bak",
    "/.git/config",
    "http://localhost/abs?x=1",
    "/?a",
    "/?=b",
    "/?a=1&a=2&a=3",
    "/?a[]=1&a[b]=2",
    "/?a=1;b=2",
    "/?%zz=1",
    "/?a=%",
    "/?a=%u12",
    "/?a=%u0041%u0042",
    "/?a=%ff%fe",
    "/?a=b%00c",
    "/?a=%C0%AF",
    "/?a=%E2%80%A8",
)
_EDGE_PAYLOADS = ("1' or '1'='1", "<script>alert(1)</script>", ";cat /etc/passwd")


_SQL_ERROR = "You have an error in your SQL syntax; check the manual for your MySQL server"


def reflected(key: str, status: int, content_type: str, body: str) -> list[Sample]:
    """A request for ``POST /reflect``: the backend answers as its JSON says."""
    document = {"status": status, "headers": {"Content-Type": content_type}, "body": body}
    headers = [("Host", "localhost"), ("User-Agent", "Mozilla/5.0"), ("Connection", "close")]
    raw = _with_body("POST", "/reflect", headers, "application/json", json.dumps(document).encode())
    return [Sample(key, raw)]


def edge_requests() -> list[Sample]:
    """Odd but well-formed requests: URI shapes and encodings, a payload in each place a
    request can carry it (query, cookie, headers, JSON, XML, multipart, chunked body), the
    body limits, and responses (data leaks under various content types, a 500)."""
    base = [("Host", "localhost"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*")]
    close = [("Connection", "close")]

    def request(
        method: str,
        target: str,
        extra: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bytes:
        headers = base + (extra or []) + close
        if body is None:
            return _head(method, target, headers)
        return _with_body(method, target, headers, content_type or "text/plain", body)

    samples = [
        Sample(f"edge/target-{n}", request("GET", target)) for n, target in enumerate(_EDGE_TARGETS)
    ]
    form = "application/x-www-form-urlencoded"
    boundary = "BOUND"
    for n, payload in enumerate(_EDGE_PAYLOADS):
        quoted = urllib.parse.quote(payload, safe="")
        plain = payload.replace('"', "")
        text = payload.encode()
        parts = {
            "mp-value": f'name="f"\r\n\r\n{payload}',
            "mp-filename": f'name="f"; filename="{plain}"\r\nContent-Type: text/plain\r\n\r\ndata',
            "mp-file": f'name="f"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n{payload}',
            "mp-name": f'name="{plain}"\r\n\r\nv',
        }
        multipart = {
            kind: f"--{boundary}\r\nContent-Disposition: form-data; {part}\r\n--{boundary}--\r\n"
            for kind, part in parts.items()
        }
        variants: dict[str, bytes] = {
            "query": request("GET", f"/?x={quoted}"),
            "query-name": request("GET", f"/?{quoted}=1"),
            "cookie": request("GET", "/", [("Cookie", f"a={payload}")]),
            "cookie-name": request("GET", "/", [("Cookie", f"{payload}=1")]),
            "referer": request("GET", "/", [("Referer", f"http://x/?q={quoted}")]),
            "header-twice": request("GET", "/", [("X-A", "1"), ("X-A", payload)]),
            "json-key": request(
                "POST", "/", None, json.dumps({payload: 1}).encode(), "application/json"
            ),
            "json-nested": request(
                "POST",
                "/",
                None,
                json.dumps({"a": [[payload], {"b": [payload, 1, None, True]}]}).encode(),
                "application/vnd.api+json",
            ),
            "json-array": request(
                "POST", "/", None, json.dumps([payload]).encode(), "application/json"
            ),
            "xml-cdata": request(
                "POST", "/", None, b"<r><![CDATA[" + text + b"]]></r>", "application/xml"
            ),
            "xml-broken": request("POST", "/", None, b"<r><x>" + text + b"</r>", "text/xml"),
            "text-body": request("POST", "/", None, text, "text/plain"),
            "form-semicolon": request("POST", "/", None, f"a=1;b={quoted}".encode(), form),
            "form-charset": request(
                "POST", "/", None, f"a={quoted}".encode(), form + "; charset=UTF-8"
            ),
            "chunked": _head(
                "POST",
                "/",
                [*base, ("Content-Type", form), ("Transfer-Encoding", "chunked"), *close],
            )
            + f"{len(quoted) + 2:x}\r\na={quoted}\r\n0\r\n\r\n".encode(),
        }
        for kind, body in multipart.items():
            content_type = f"multipart/form-data; boundary={boundary}"
            variants[kind] = request("POST", "/", None, body.encode(), content_type)
        samples += [Sample(f"edge/{kind}-{n}", raw) for kind, raw in variants.items()]
    many = "&".join(f"a{i}=1" for i in range(1001)).encode()
    samples += [
        Sample("edge/args-1001", request("POST", "/", None, many, form)),
        Sample(
            "edge/json-deep",
            request("POST", "/", None, b"[" * 600 + b"]" * 600, "application/json"),
        ),
        Sample("edge/json-broken", request("POST", "/", None, b'{"a": ', "application/json")),
        Sample(
            "edge/body-over-no-files-limit", request("POST", "/", None, b"a=" + b"x" * 140000, form)
        ),
        Sample("edge/method-foo", request("FOO", "/x")),
        Sample("edge/header-tabs", request("GET", "/", [("X-A", "\tvalue\t")])),
        *reflected("edge/reflect-leak", 200, "text/html; charset=utf-8", _SQL_ERROR),
        *reflected("edge/reflect-leak-upper-type", 200, "TEXT/HTML", _SQL_ERROR),
        *reflected("edge/reflect-500", 500, "text/plain", "Internal Server Error"),
        *reflected("edge/reflect-leak-json", 200, "application/json", _SQL_ERROR),
        Sample(
            "edge/content-type-unknown", request("POST", "/", None, b"a=1", "application/x-foo")
        ),
    ]
    return samples


@functools.cache
def the_sample() -> list[Sample]:
    stages = regression_stages()
    chosen = stages if FULL else sample_stages(stages, SAMPLE_SIZE, SEED)
    regression = [Sample(key, raw) for _, key, raw in chosen]
    return regression + benign_requests() + edge_requests()


# ---- our engine ----------------------------------------------------------------------------------


_NGINX_ADDS = (("Server", "nginx"), ("Connection", "close"))


def _ok_response() -> HttpResponse:
    """What the connector hands libmodsecurity3 for the plain backend's answer."""
    headers = (
        ("Date", formatdate(usegmt=True)),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
        *_NGINX_ADDS,
    )
    return HttpResponse(status=200, version="HTTP/1.1", headers=headers, body=b"ok\n")


def _goes_to_reflector(request: HttpRequest) -> bool:
    """nginx's ``location = /reflect`` (and ``/reflect/``) of the reference."""
    target = request.uri.split("?", 1)[0]
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    return target in ("/reflect", "/reflect/")


def backend_response(request: HttpRequest) -> HttpResponse:
    """The backend's answer as libmodsecurity3 sees it behind the reference's nginx."""
    if not _goes_to_reflector(request):
        return _ok_response()
    answer = albedo_response(request)
    headers = tuple((n, v) for n, v in answer.headers if n.lower() not in ("server", "date"))
    headers += (("Date", formatdate(usegmt=True)), *_NGINX_ADDS)
    return dataclasses.replace(answer, headers=headers)


def reflect(raw: bytes) -> bytes:
    """The reference's /reflect backend: albedo's answer to the request nginx proxies."""
    try:
        answer = albedo_response(parse_request(raw))
    except HttpParseError:
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = "Status"
    head = [f"HTTP/1.1 {answer.status} {reason}"]
    head += [f"{name}: {value}" for name, value in answer.headers]
    head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body


@dataclass
class Ours:
    ids: set[int]
    front_end: str | None = None  # our HTTP parser refused the request (reason)


def evaluate_ours(engine: WafEngine, raw: bytes, server_port: int) -> Ours:
    """The ids our engine logs for the connection, pipelined requests included (as nginx
    goes on with them)."""
    try:
        request = parse_request(raw)
    except HttpParseError as exc:
        return Ours(set(), f"{exc.status}: {exc}")
    request = dataclasses.replace(request, server_port=server_port)
    result = engine.evaluate(request, backend_response(request))
    ids = set(result.logged_ids())
    rest = None if result.blocked else _pipelined(raw, request)
    if rest is not None:
        try:
            second = dataclasses.replace(parse_request(rest), server_port=server_port)
        except HttpParseError:
            second = None
        if second is not None:
            ids |= engine.evaluate(second, backend_response(second)).logged_ids()
    return Ours(ids)


# ---- known differences -----------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    only_reference: frozenset[int] = frozenset()
    only_ours: frozenset[int] = frozenset()
    # The front ends disagree: "ours-refuses" (nginx passed the request to ModSecurity, our
    # HTTP parser refused it) or "ours-accepts" (nginx answered by itself, ours parsed it).
    front_end: str | None = None

    def __bool__(self) -> bool:
        return bool(self.only_reference or self.only_ours or self.front_end)

    def __or__(self, other: Difference) -> Difference:
        return Difference(
            self.only_reference | other.only_reference,
            self.only_ours | other.only_ours,
            self.front_end or other.front_end,
        )

    def covers(self, other: Difference) -> bool:
        return (
            other.only_reference <= self.only_reference
            and other.only_ours <= self.only_ours
            and other.front_end in (None, self.front_end)
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "only_reference": sorted(self.only_reference),
            "only_ours": sorted(self.only_ours),
        }
        if self.front_end:
            out["front_end"] = self.front_end
        return out


@dataclass(frozen=True)
class KnownDifference:
    """An entry of ``modsec_differences.yaml``. With a list of ``requests`` the difference
    must occur on each of them (when sampled); with ``requests: any`` the listed ids may
    differ on any request, and must do so on at least one sampled request."""

    cause: str
    difference: Difference
    requests: frozenset[str] | None  # None: any request


def load_differences() -> tuple[dict[str, str], list[KnownDifference]]:
    document = yaml.safe_load(DIFFERENCES.read_text(encoding="utf-8")) or {}
    causes = document.get("causes") or {}
    assert isinstance(causes, dict), f"{DIFFERENCES.name}: 'causes' must be a mapping"
    for name, reason in causes.items():
        assert isinstance(reason, str) and reason.strip(), f"cause {name}: a reason is required"
    entries: list[KnownDifference] = []
    for entry in document.get("differences") or []:
        cause = entry.get("cause")
        assert cause in causes, f"{entry}: unknown cause {cause!r}"
        difference = Difference(
            frozenset(int(i) for i in entry.get("only_reference") or []),
            frozenset(int(i) for i in entry.get("only_ours") or []),
            entry.get("front_end"),
        )
        assert difference.front_end in (None, "ours-refuses", "ours-accepts"), entry
        assert difference, f"{entry}: no difference listed"
        requests = entry.get("requests")
        if requests == "any":
            scope = None
        else:
            assert isinstance(requests, list) and requests, f"{entry}: requests: a list or any"
            scope = frozenset(str(key) for key in requests)
        entries.append(KnownDifference(str(cause), difference, scope))
    return {str(k): str(v) for k, v in causes.items()}, entries


def judge_differences(
    observed: dict[str, Difference], sampled: set[str], known: list[KnownDifference]
) -> tuple[list[str], list[str]]:
    """(unexplained differences, listed differences that no longer occur)."""
    anywhere = Difference()
    for entry in known:
        if entry.requests is None:
            anywhere = anywhere | entry.difference
    unexplained: list[str] = []
    stale: list[str] = []
    for key in sorted(sampled):
        seen = observed.get(key, Difference())
        listed = Difference()
        for entry in known:
            if entry.requests is not None and key in entry.requests:
                listed = listed | entry.difference
                if not seen.covers(entry.difference):
                    stale.append(
                        f"{key} ({entry.cause}): listed {entry.difference.to_json()}, "
                        f"observed {seen.to_json()}"
                    )
        if not (listed | anywhere).covers(seen):
            unexplained.append(f"{key}: {seen.to_json()}")
    for entry in known:
        if entry.requests is None and not any(
            d.covers(entry.difference) or _overlaps(d, entry.difference) for d in observed.values()
        ):
            stale.append(f"any request ({entry.cause}): {entry.difference.to_json()} never seen")
    return unexplained, stale


def _overlaps(seen: Difference, listed: Difference) -> bool:
    return bool(
        seen.only_reference & listed.only_reference
        or seen.only_ours & listed.only_ours
        or (seen.front_end is not None and seen.front_end == listed.front_end)
    )


# ---- the tests -------------------------------------------------------------------------------


CI_PARANOIA = 4  # the CRS CI's blocking_paranoia_level; the sample keys carry no prefix there
PARANOIA_LEVELS = (CI_PARANOIA, 1)  # and the level production runs with by default


def configuration(paranoia: int) -> str:
    """The CRS CI's engine configuration, at ``paranoia``."""
    text = crs_ci_configuration()
    setting = f"setvar:tx.blocking_paranoia_level={CI_PARANOIA}"
    assert setting in text, "the CRS CI configuration no longer sets the paranoia level"
    return text.replace(setting, f"setvar:tx.blocking_paranoia_level={paranoia}")


def key_prefix(paranoia: int) -> str:
    return "" if paranoia == CI_PARANOIA else f"pl{paranoia}/"


@pytest.fixture(scope="module", params=PARANOIA_LEVELS, ids=lambda n: f"pl{n}")
def paranoia(request: pytest.FixtureRequest) -> int:
    level: int = request.param
    return level


@pytest.fixture(scope="module")
def reference(paranoia: int) -> Iterator[ModSecReference]:
    try:
        server = ModSecReference(
            crs_rule_files(CRS), before=configuration(paranoia), reflector=reflect
        )
    except ReferenceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


@pytest.fixture(scope="module")
def engine(paranoia: int) -> WafEngine:
    return WafEngine.load(crs_rule_files(CRS), before=configuration(paranoia))


def test_known_differences_are_judged_exactly() -> None:
    """The bookkeeping: a listed difference must occur as listed, ``any`` entries only
    permit their ids, and the YAML file itself loads."""
    causes, known = load_differences()
    assert all(entry.cause in causes for entry in known)
    listed = [
        KnownDifference("a", Difference(frozenset({1}), frozenset()), frozenset({"k1"})),
        KnownDifference("b", Difference(frozenset(), frozenset({9})), None),
    ]
    seen = {
        "k1": Difference(frozenset({1}), frozenset({9})),
        "k3": Difference(only_ours=frozenset({9})),
    }
    assert judge_differences(seen, {"k1", "k2", "k3"}, listed) == ([], [])
    unexplained, stale = judge_differences({"k2": Difference(frozenset({1}))}, {"k1", "k2"}, listed)
    assert [line.split(":")[0] for line in unexplained] == ["k2"]
    assert len(stale) == 2  # k1 no longer differs; 9 never differs anywhere
    refused = {"k1": Difference(frozenset({1}), front_end="ours-refuses")}
    assert judge_differences(refused, {"k1"}, listed[:1])[0]  # the front end is not listed


def test_reference_correlates_requests(reference: ModSecReference, paranoia: int) -> None:
    """The harness itself: a clean request logs nothing, an attack logs its rule, a
    pipelined pair gives two transactions, and a request nginx refuses never reaches
    ModSecurity."""
    clean = reference.send(
        b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\n"
        b"Accept: text/html\r\nConnection: close\r\n\r\n"
    )
    assert clean.processed and clean.status == 200
    assert clean.logged_ids() == set(), clean.transactions
    attack = reference.send(
        b"GET /?id=1%27%20OR%20%271%27=%271 HTTP/1.1\r\nHost: localhost\r\n"
        b"User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    assert {942100, 949110} <= attack.logged_ids()
    assert (942432 in attack.logged_ids()) == (paranoia >= 4)  # a paranoia-level-4 rule
    pair = reference.send(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
        b"GET /?q=<script>alert(1)</script> HTTP/1.1\r\nHost: localhost\r\n"
        b"User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    assert [t.request_number for t in pair.transactions] == [1, 2]
    assert all(t.ended for t in pair.transactions)
    assert not pair.transactions[0].ids and 941100 in pair.transactions[1].ids
    refused = reference.send(b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n")  # no Host: 400
    assert refused.status == 400 and not refused.processed


def test_matched_ids_agree_with_libmodsecurity3(
    reference: ModSecReference, engine: WafEngine, paranoia: int
) -> None:
    causes, known = load_differences()
    prefix = key_prefix(paranoia)
    samples = [Sample(prefix + s.key, s.raw) for s in the_sample()]
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(keys), "sample keys are not unique"

    report: list[dict[str, Any]] = []
    compared = 0
    front_end_skipped: set[str] = set()
    observed: dict[str, Difference] = {}
    for sample in samples:
        ref = reference.send(sample.raw)
        ours = evaluate_ours(engine, sample.raw, reference.port)
        row: dict[str, Any] = {"key": sample.key, "status": ref.status, "error": ref.error}
        if not ref.processed:
            # nginx answered by itself (400, 505, …): ModSecurity never saw the request.
            front_end_skipped.add(sample.key)
            row.update(skipped=True, our_front_end=ours.front_end, ours=sorted(ours.ids))
            report.append(row)
            if ours.front_end is None:
                observed[sample.key] = Difference(front_end="ours-accepts")
            continue
        compared += 1
        ref_ids = ref.logged_ids()
        diff = Difference(
            frozenset(ref_ids - ours.ids),
            frozenset(ours.ids - ref_ids),
            None if ours.front_end is None else "ours-refuses",
        )
        row.update(
            skipped=False,
            reference=sorted(ref_ids),
            ours=sorted(ours.ids),
            our_front_end=ours.front_end,
            clipped=sum(t.clipped for t in ref.transactions),
            **diff.to_json(),
        )
        report.append(row)
        if diff:
            observed[sample.key] = diff

    agreeing = compared - sum(1 for key in observed if key not in front_end_skipped)
    summary = (
        f"paranoia level {paranoia}, {len(samples)} requests: {compared} compared, "
        f"{len(front_end_skipped)} answered by nginx itself; "
        f"ids agree on {agreeing} ({100 * agreeing / max(compared, 1):.1f} %)"
    )
    if REPORT:
        path = Path(REPORT)
        path.with_name(f"{path.stem}-pl{paranoia}{path.suffix}").write_text(
            json.dumps({"summary": summary, "requests": report}, indent=1), encoding="utf-8"
        )

    unexplained, stale = judge_differences(observed, set(keys), known)
    assert compared >= 0.8 * len(samples), summary
    assert not unexplained, (
        f"{summary}\ndifferences not explained in {DIFFERENCES.name} (reference = "
        f"libmodsecurity3):\n" + "\n".join(unexplained)
    )
    assert not stale, f"{summary}\nlisted in {DIFFERENCES.name} but not observed:\n" + "\n".join(
        stale
    )
    unused = sorted(set(causes) - {entry.cause for entry in known})
    assert not unused, f"{DIFFERENCES.name}: causes no difference refers to: {unused}"
