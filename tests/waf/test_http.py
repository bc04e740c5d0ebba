"""The request parser against nginx 1.22's rules, and the phase-1 variables against v3's."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.waf._http import (
    HttpParseError,
    HttpRequest,
    extract_arguments,
    parse_cookies,
    parse_request,
    parse_response,
    request_line_data,
    uri_decode,
    urldecode_nonstrict,
)

HEADERS = b"Host: localhost\r\nUser-Agent: OWASP CRS test agent\r\n\r\n"


def _status(raw: bytes) -> int | None:
    """None when nginx passes the request on, else the status it answers."""
    try:
        parse_request(raw)
    except HttpParseError as exc:
        return exc.status
    return None


# --------------------------------------------------------------------------------------------
# request line (ngx_http_parse_request_line and the checks after it)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/1.1", None),
        (b"GET / HTTP/1.0", None),
        (b"REALLYLONGUNREALMETHOD / HTTP/1.1", None),  # unknown methods pass
        (b"PROP_FIND-X / HTTP/1.1", None),  # '_' and '-' are method characters
        (b"\tGET / HTTP/1.1", 400),  # a method starts with [A-Z_-]
        (b"|GET / HTTP/1.1", 400),
        (b"get / HTTP/1.1", 400),  # lower case is not a method
        (b"GET  /  HTTP/1.1", None),  # extra spaces around the URI are skipped
        (b"GET / HTTP/1.1 ", None),  # and after the version
        (b"GET / HTTP\\1.0", 400),
        (b"GET / JUNK/1.0", 400),
        (b"GET / 1.1", 400),
        (b"GET / TEST", 400),
        (b"GET / HTTP/0.9", 400),  # the major version starts with 1-9
        (b"GET / HTTP/0.8", 400),
        (b"GET / HTTP/2", 505),  # a major version above 1 is "not supported"
        (b"GET / HTTP/4.0", 505),
        (b"GET / HTTP/10.0", 505),
        (b"GET / HTTP/1", 400),
        (b"GET / HTTP/1.1x", 400),
        (b"GET / HTTP/1.999", None),
        (b"GET / HTTP/1.1000", 400),
        (b"GET /a b HTTP/1.1", 400),  # a raw space inside the URI
        (b"GET /a\x01b HTTP/1.1", 400),  # control bytes in the URI
        (b"GET /a\x7fb HTTP/1.1", 400),
        (b"GET /?a=\x00 HTTP/1.1", 400),
        (b"GET /\xe9t\xe9 HTTP/1.1", None),  # 8-bit bytes are fine
        (b"GET /index.html:80?I=Like&Apples=Today#tag HTTP/1.1", None),  # colon, fragment
        (b"GET /%zz HTTP/1.1", 400),  # a bad escape in the path
        (b"GET /a%2 HTTP/1.1", 400),
        (b"GET /a%00b HTTP/1.1", 400),
        (b"GET /?a=%zz&b=%00 HTTP/1.1", None),  # the query string is not decoded
        (b"GET /../etc/passwd HTTP/1.1", 400),  # above the root
        (b"GET /a/../../b HTTP/1.1", 400),
        (b"GET /a/%2e%2e/%2e%2e/b HTTP/1.1", 400),  # decoded dots count too
        (b"GET /a/../b HTTP/1.1", None),
        (b"GET /a/..%2fb HTTP/1.1", None),
        (b"GET /?x=/../../ HTTP/1.1", None),
        (b"GET http://localhost/a?b=c HTTP/1.1", None),
        (b"GET http://localhost HTTP/1.1", None),
        (b"GET http://localhost:8080/ HTTP/1.1", None),
        (b"GET http://localhost\r HTTP/1.1", 400),
        (b"GET http:/localhost/ HTTP/1.1", 400),
        (b"GET 1http://localhost/ HTTP/1.1", 400),
        (b"OPTIONS * HTTP/1.1", 400),  # nginx has no asterisk-form
        (b"CONNECT www.coreruleset.org:80 HTTP/1.1", 400),
        (b"CONNECT / HTTP/1.1", 405),
        (b"TRACE / HTTP/1.1", 405),
        (b"GET", 400),
        (b"GET ", 400),
    ],
)
def test_request_line_as_nginx(line: bytes, status: int | None) -> None:
    assert _status(line + b"\r\n" + HEADERS) == status


def test_request_line_with_bare_lf_and_leading_empty_lines() -> None:
    request = parse_request(b"\r\n\r\nGET /x HTTP/1.1\nHost: a\n\n")
    assert (request.method, request.uri, request.version) == ("GET", "/x", "HTTP/1.1")
    assert request.headers == (("Host", "a"),)


def test_cr_inside_the_request_line_is_refused() -> None:
    assert _status(b"GET /a\rb HTTP/1.1\r\n" + HEADERS) == 400
    assert _status(b"GET / HTTP/1.1\r\r\n" + HEADERS) == 400


def test_request_line_longer_than_nginx_buffer_is_414() -> None:
    assert _status(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HEADERS) == 414


def test_http09_request_reads_no_headers() -> None:
    request = parse_request(b"GET / \r\nUser-Agent: x\r\nHost: y\r\n\r\n")
    assert request.version == ""
    assert request.headers == ()
    assert request_line_data(request).request_protocol == "HTTP/0.9"
    assert request_line_data(request).request_line == "GET / HTTP/0.9"
    assert _status(b"POST / \r\n\r\n") == 400  # HTTP/0.9 knows only GET


def test_absolute_uri_modsecurity_sees_only_the_path() -> None:
    request = parse_request(b"GET http://localhost/a/b.php?c=d HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.uri == "http://localhost/a/b.php?c=d"  # as written
    data = request_line_data(request)
    assert (data.request_uri_raw, data.request_line) == (
        "/a/b.php?c=d",
        "GET /a/b.php?c=d HTTP/1.1",
    )
    bare = request_line_data(parse_request(b"GET http://localhost HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (bare.request_uri_raw, bare.request_line) == ("/", "GET / HTTP/1.1")
    # the request line names the host, so HTTP/1.1 needs no Host header
    assert parse_request(b"GET http://localhost/ HTTP/1.1\r\n\r\n").uri == "http://localhost/"


# --------------------------------------------------------------------------------------------
# header lines (ngx_http_parse_header_line, ignore_invalid_headers, ngx_http_process_*)


def _headers(block: bytes) -> tuple[tuple[str, str], ...]:
    return parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n" + block + b"\r\n").headers[1:]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"X-A: b\r\n", (("X-A", "b"),)),
        (b"X-A:b\r\n", (("X-A", "b"),)),
        (b"X-A:   b  c   \r\n", (("X-A", "b  c"),)),  # spaces around the value trimmed
        (b"X-A: \tabc\r\n", (("X-A", "\tabc"),)),  # nginx trims spaces only, never tabs
        (b"X-A:\ta\tb \t \r\n", (("X-A", "\ta\tb \t"),)),
        (b"X-A: \r\n", (("X-A", ""),)),
        (b"NoColon\r\n", (("NoColon", ""),)),  # a line without colon: empty value
        (b"X_Filename: a\r\n", ()),  # underscores: dropped (ignore_invalid_headers)
        (b"X.Filename: a\r\n", ()),
        (b"X\xe9: a\r\n", ()),
        (b"a: 1\r\nA: 2\r\n", (("a", "1"), ("A", "2"))),  # repeats kept, case kept
        (b"Content-Type: a\r\nContent-Type: b\r\n", (("Content-Type", "a"), ("Content-Type", "b"))),
        (b"X: a:b\r\n", (("X", "a:b"),)),
        (b"X: \x01\xff\r\n", (("X", "\x01\xff"),)),
        (b"X: a\r\r\n", (("X", "a"),)),
    ],
)
def test_header_lines(block: bytes, expected: tuple[tuple[str, str], ...]) -> None:
    assert _headers(block) == expected


@pytest.mark.parametrize(
    "block",
    [
        b"X: a\r\n folded\r\n",  # obs-fold
        b"X: a\r\n\tfolded\r\n",
        b"X A: b\r\n",  # space in the name
        b"X\tA: b\r\n",
        b"X : b\r\n",
        b": b\r\n",  # no name
        b"X: a\x00b\r\n",  # NUL in the value
        b"X\x00: b\r\n",
        b"X: a\rb\r\n",  # CR inside the line
        b"Host: other\r\n",  # a second Host
        b"Content-Length: 1\r\nContent-Length: 1\r\n",
        b"X: " + b"a" * 9000 + b"\r\n",  # longer than nginx's header buffer
    ],
)
def test_header_lines_nginx_refuses(block: bytes) -> None:
    assert _status(b"GET / HTTP/1.1\r\nHost: h\r\n" + block + b"\r\n") == 400


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        (b"localhost", True),
        (b"localhost:8080", True),
        (b"localhost%00", True),  # the CRS sends "%00" as three characters
        (b"localhost%1F", True),
        (b"[::1]:80", True),
        (b"local/host", False),
        (b"local\\host", False),
        (b"a..b", False),
        (b"", False),
        (b".", False),
    ],
)
def test_host_validation(host: bytes, ok: bool) -> None:
    status = _status(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status == (None if ok else 400)


def test_host_is_required_from_http11_only() -> None:
    assert _status(b"GET / HTTP/1.1\r\nUser-Agent: a\r\n\r\n") == 400
    assert _status(b"GET / HTTP/1.0\r\nUser-Agent: a\r\n\r\n") is None


def test_header_block_limit() -> None:
    block = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + block + b"\r\n"
    assert _status(raw) is None
    with pytest.raises(HttpParseError):
        parse_request(raw, max_header_bytes=4096)


@pytest.mark.parametrize(
    "raw",
    [b"", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r\nHost: a"],
)
def test_incomplete_requests(raw: bytes) -> None:
    with pytest.raises(HttpParseError):
        parse_request(raw)


# --------------------------------------------------------------------------------------------
# body framing


def _post(headers: bytes, body: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\nHost: h\r\n" + headers + b"\r\n" + body


def test_content_length_body_and_what_follows_is_ignored() -> None:
    request = parse_request(_post(b"Content-Length: 3\r\n", b"a=bGET / HTTP/1.1\r\n"))
    assert request.body == b"a=b"


def test_no_length_means_no_body() -> None:
    assert parse_request(_post(b"", b"a=b")).body == b""


def test_short_body_is_taken_as_it_is() -> None:
    assert parse_request(_post(b"Content-Length: 10\r\n", b"a=b")).body == b"a=b"


@pytest.mark.parametrize("value", [b"-1", b"1 2", b"abc", b"0x10", b"+5", b"99999999999999999999"])
def test_invalid_content_length(value: bytes) -> None:
    assert _status(_post(b"Content-Length: " + value + b"\r\n", b"")) == 400


def test_chunked_body_is_decoded() -> None:
    body = b"3;ext=1\r\nfoo\r\n4\r\n=bar\r\n0\r\nTrailer: x\r\n\r\n"
    request = parse_request(_post(b"Transfer-Encoding: chunked\r\n", body))
    assert request.body == b"foo=bar"


def test_chunked_errors() -> None:
    assert _status(_post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nfoo\r\n0\r\n\r\n")) == 400
    assert _status(_post(b"Transfer-Encoding: chunked\r\n", b"3\r\nfooX0\r\n\r\n")) == 400
    both = b"Content-Length: 7\r\nTransfer-Encoding: chunked\r\n"
    assert _status(_post(both, b"7\r\nfoo=bar\r\n0\r\n\r\n")) == 400
    te10 = b"Transfer-Encoding: chunked\r\n"
    assert _status(_post(te10, b"0\r\n\r\n", version=b"HTTP/1.0")) == 400
    assert _status(_post(b"Transfer-Encoding: gzip\r\n", b"")) == 501


# --------------------------------------------------------------------------------------------
# ModSecurity v3: processURI, extractArguments, cookies


@pytest.mark.parametrize(
    ("value", "decoded", "invalid"),
    [
        ("a+b", "a b", False),
        ("a%20b", "a b", False),
        ("%41%4a%4A", "AJJ", False),
        ("%zz", "%zz", True),
        ("%4", "%4", True),
        ("abc%", "abc%", True),
        ("%%41", "%A", True),
        ("%2B+", "+ ", False),
        ("%00", "\x00", False),
        ("%ff", "\xff", False),
    ],
)
def test_urldecode_nonstrict(value: str, decoded: str, invalid: bool) -> None:
    assert urldecode_nonstrict(value) == (decoded, invalid)


def test_uri_decode_keeps_plus_and_bad_escapes() -> None:
    assert uri_decode("/a+b%20c%zz%41") == "/a+b c%zzA"


@pytest.mark.parametrize(
    ("query", "args"),
    [
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a=1=2", [("a", "1=2")]),  # split on the first '='
        ("a", [("a", "")]),
        ("a=", [("a", "")]),
        ("=x", [("", "x")]),
        ("a=1&", [("a", "1")]),  # a trailing empty piece is dropped
        ("a=1&&b=2", [("a", "1"), ("", ""), ("b", "2")]),  # one in between is kept
        ("&", [("", "")]),
        ("&&", [("", ""), ("", "")]),
        ("a+b=c+d", [("a b", "c d")]),
        ("%61=%62", [("a", "b")]),
        ("a%3D=b%26c", [("a=", "b&c")]),
        ("a=1;b=2", [("a", "1;b=2")]),  # ';' is no separator
    ],
)
def test_extract_arguments(query: str, args: list[tuple[str, str]]) -> None:
    assert extract_arguments(query)[0] == args


@pytest.mark.parametrize(
    ("header", "cookies"),
    [
        ("a=b", [("a", "b")]),
        ("a=b; c=d", [("a", "b"), ("c", "d")]),
        ("a=b;c=d", [("a", "b"), ("c", "d")]),
        ("a=b=c", [("a", "b=c")]),
        ("a", [("a", "")]),  # a cookie without '=' is a name
        ("a ; b", [("a ", ""), ("b", "")]),  # names are only left-trimmed
        ("=x; y=z", [("y", "z")]),  # nameless cookies are skipped
        ("  =x", []),
        (";;a=1", [("a", "1")]),
        ("a=1;", [("a", "1")]),
        ("a=1 ; b=2  \t", [("a", "1 "), ("b", "2")]),  # only the last value is right-trimmed
        ("a=%41+", [("a", "%41+")]),  # values are not decoded
        ("", []),
    ],
)
def test_cookies(header: str, cookies: list[tuple[str, str]]) -> None:
    assert parse_cookies(header) == cookies


def test_cookies_from_every_cookie_header() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\ncookie: b=2; c\r\n\r\n"
    assert request_line_data(parse_request(raw)).cookies == (("a", "1"), ("b", "2"), ("c", ""))


@pytest.mark.parametrize(
    ("uri", "filename", "basename", "query", "request_uri"),
    [
        ("/", "/", "", "", "/"),
        ("/a/b.php", "/a/b.php", "b.php", "", "/a/b.php"),
        ("/a/b/", "/a/b/", "", "", "/a/b/"),
        ("/a%2fb.php?x=%41", "/a/b.php", "b.php", "x=%41", "/a/b.php?x=A"),
        ("/a%3fb?c", "/a", "a", "c", "/a?b?c"),  # a decoded '?' ends REQUEST_FILENAME
        ("/a\\b.asp", "/a\\b.asp", "b.asp", "", "/a\\b.asp"),
        # v3 (processURI) cuts the raw target at the first "#" (not at a decoded %23)
        ("/x?a=1#frag", "/x", "x", "a=1", "/x?a=1"),
        ("/x#frag?b=2", "/x", "x", "", "/x"),
        ("/x%23y?a=1%23b#c#d", "/x#y", "x#y", "a=1%23b", "/x#y?a=1#b"),
        ("#x", "", "", "", ""),
        ("/a+b", "/a+b", "a+b", "", "/a+b"),
        ("?q", "", "", "q", "?q"),
    ],
)
def test_processuri_variables(
    uri: str, filename: str, basename: str, query: str, request_uri: str
) -> None:
    data = request_line_data(HttpRequest("GET", uri, "HTTP/1.1", (), b""))
    assert data.request_filename == filename
    assert data.request_basename == basename
    assert data.query_string == query
    assert data.request_uri == request_uri
    assert data.request_uri_raw == uri
    assert data.request_line == f"GET {uri} HTTP/1.1"


@pytest.mark.parametrize(
    ("version", "protocol"),
    [
        ("HTTP/1.1", "HTTP/1.1"),
        ("HTTP/1.0", "HTTP/1.0"),
        ("HTTP/1.00", "HTTP/1.0"),  # nginx's numeric version, not the text
        ("HTTP/1.01", "HTTP/1.1"),
        ("HTTP/1.5", "HTTP/1.5"),  # unknown ones: the text after "HTTP/"
        ("", "HTTP/0.9"),
    ],
)
def test_request_protocol(version: str, protocol: str) -> None:
    data = request_line_data(HttpRequest("GET", "/", version, (), b""))
    assert data.request_protocol == protocol
    assert data.request_line == f"GET / {protocol}"


def test_args_get_and_urlencoded_error() -> None:
    data = request_line_data(HttpRequest("GET", "/?a=%zz&b+c=d", "HTTP/1.1", (), b""))
    assert data.args_get == (("a", "%zz"), ("b c", "d"))
    assert data.urlencoded_error
    cut = request_line_data(HttpRequest("GET", "/?a=1#f&b=2", "HTTP/1.1", (), b""))
    assert cut.args_get == (("a", "1"),)
    clean = request_line_data(HttpRequest("GET", "/?a=%41", "HTTP/1.1", (), b""))
    assert clean.args_get == (("a", "A"),) and not clean.urlencoded_error


def test_absolute_uri_in_a_hand_made_request() -> None:
    """An HttpRequest built by a front end may carry an absolute URI: nginx's view applies."""
    data = request_line_data(HttpRequest("GET", "http://h:80/p?q=1", "HTTP/1.1", (), b""))
    assert (data.request_uri, data.request_filename, data.query_string) == ("/p?q=1", "/p", "q=1")


# --------------------------------------------------------------------------------------------
# responses


def test_parse_response_lengths() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello extra"
    response = parse_response(raw)
    assert (response.status, response.version, response.body) == (200, "HTTP/1.1", b"hello")
    assert response.headers == (("Content-Type", "text/html"), ("Content-Length", "5"))
    chunked = parse_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert chunked.body == b"hello"
    assert parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nrest of it").body == b"rest of it"
    assert parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""


@pytest.mark.parametrize(
    "raw", [b"", b"HTTP/1.1 OK\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"200\r\n"]
)
def test_parse_response_refuses_bad_status_lines(raw: bytes) -> None:
    with pytest.raises(HttpParseError):
        parse_response(raw)


# --------------------------------------------------------------------------------------------
# the CRS regression corpus: what nginx refuses and what it must pass on

CRS_TESTS = Path("/work/shared/data/crs/tests/regression")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _ftw_request(stage_input: dict[str, Any]) -> bytes:
    """Close to go-ftw's request (no sprig templates, no body re-encoding)."""
    if "encoded_request" in stage_input:
        return base64.b64decode(stage_input["encoded_request"])
    headers = {str(k): str(v) for k, v in (stage_input.get("headers") or {}).items()}
    data = stage_input.get("data")
    body = b"" if data is None or "{{" in str(data) else str(data).encode("utf-8")
    lowered = {k.lower() for k in headers}
    content_types = [v.lower() for k, v in headers.items() if k.lower() == "content-type"]
    if any("multipart/form-data;" in v for v in content_types):
        body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if stage_input.get("autocomplete_headers", True):
        if body and "content-type" not in lowered:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if "connection" not in lowered:
            headers["Connection"] = "close"
        if body and "content-length" not in lowered:
            headers["Content-Length"] = str(len(body))
    line = "{} {} {}".format(
        stage_input.get("method", "GET"),
        stage_input.get("uri", "/"),
        stage_input.get("version", "HTTP/1.1"),
    )
    lines = [line] + [f"{k}: {headers[k]}" for k in sorted(headers, key=str.encode)]
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


def _crs_stages() -> list[tuple[str, bytes, dict[str, Any]]]:
    overrides: dict[tuple[int, int], dict[str, Any]] = {}
    doc = yaml.load((CRS_TESTS / "nginx-overrides.yaml").read_text(), _LOADER)
    for override in doc["test_overrides"]:
        for test_id in override.get("test_ids", []):
            overrides[(override["rule_id"], test_id)] = override.get("output", {})
    stages = []
    for path in sorted(CRS_TESTS.glob("tests/*/*.yaml")):
        doc = yaml.load(path.read_text(), _LOADER)
        if not doc:
            continue
        rule_id = doc.get("rule_id") or int(path.stem)
        for test in doc["tests"]:
            for stage in test["stages"]:
                output = dict(stage.get("output") or {})
                output.update(overrides.get((rule_id, test["test_id"]), {}))
                name = f"{rule_id}-{test['test_id']}"
                stages.append((name, _ftw_request(stage.get("input") or {}), output))
    return stages


@pytest.mark.skipif(not CRS_TESTS.is_dir(), reason="CRS regression tests not available")
def test_crs_corpus_front_end_outcomes() -> None:
    stages = _crs_stages()
    assert len(stages) > 3000
    refused, passed = [], []
    for name, raw, output in stages:
        status = _status(raw)
        wanted = output.get("status")
        if wanted in (400, 505):
            refused.append((name, wanted, status))
        elif (output.get("log") or {}).get("expect_ids") and status is not None:
            passed.append((name, status))  # a rule must see it, so nginx must pass it on
    assert passed == []
    assert refused and all(wanted == got for _, wanted, got in refused), refused
    for name, raw, _ in stages:
        try:
            request = parse_request(raw)
        except HttpParseError:
            continue
        request_line_data(request)  # never raises on anything nginx passes on
        assert name
