"""Property tests: hostile bytes never break the parsers, and the limits hold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.waf._body import BodyLimits, BodyResult, process_body
from palisade.waf._http import (
    HttpParseError,
    HttpRequest,
    _header_lines,
    _header_lines_fast,
    parse_request,
    parse_response,
    request_line_data,
)

PROCESSORS = [None, "URLENCODED", "MULTIPART", "JSON", "XML"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)

BIG = 1 << 30  # bodies here test depth and counts, not SecRequestBodyNoFilesLimit


def _parse_or_refuse(raw: bytes, **kwargs: Any) -> HttpRequest | None:
    try:
        return parse_request(raw, **kwargs)
    except HttpParseError as exc:
        assert exc.status in (400, 405, 414, 501, 505)
        return None


# --------------------------------------------------------------------------------------------
# parse_request


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes(raw: bytes) -> None:
    _parse_or_refuse(raw)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_after_a_valid_start(tail: bytes) -> None:
    request = _parse_or_refuse(b"POST /a?b=c HTTP/1.1\r\nHost: h\r\n" + tail)
    if request is not None:
        request_line_data(request)


_line_bytes = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"\tGET",
        b"|GET",
        b"X_Y-Z",
        b" ",
        b"  ",
        b"/",
        b"/a b",
        b"http://h",
        b"http://h:1/x",
        b"?",
        b"#",
        b"%",
        b"%2e",
        b"%00",
        b"..",
        b"/..",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"HTTP/2",
        b"HTTP/0.9",
        b"HTTP\\1.0",
        b"JUNK/1.0",
        b"\r",
        b"\x00",
        b"\x7f",
        b"\xff",
        b"*",
    ]
)


@FAST
@given(st.lists(_line_bytes, max_size=8))
def test_odd_request_lines(pieces: list[bytes]) -> None:
    request = _parse_or_refuse(b"".join(pieces) + b"\r\nHost: h\r\n\r\n")
    if request is not None:
        data = request_line_data(request)
        assert data.request_line.startswith(request.method + " ")
        assert data.request_protocol in data.request_line


header_name = st.text(alphabet="abcXYZ019-", min_size=1, max_size=12)
header_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)


@FAST
@given(
    st.sampled_from(["GET", "POST", "PUT", "REALLYLONGMETHOD", "A_B"]),
    st.text(alphabet="abc/?&=%+;.41x", max_size=40),
    st.lists(st.tuples(header_name, header_value), max_size=8),
    st.binary(max_size=300),
    st.booleans(),
)
def test_well_formed_requests_round_trip(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes, chunked: bool
) -> None:
    headers = [
        (k, v)
        for k, v in headers
        if k.lower() not in ("host", "content-length", "transfer-encoding")
    ]
    lines = [f"{method} /{path} HTTP/1.1", "Host: h"] + [f"{k}: {v}" for k, v in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:7], body[7:]) if c)
        payload += b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    raw = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload
    request = _parse_or_refuse(raw)
    if request is None:
        # only the path can make nginx refuse a request built like this
        assert "%" in path or ".." in path
        return
    assert request.headers[1 : 1 + len(headers)] == tuple(headers)
    assert request.body == body
    data = request_line_data(request)
    assert data.request_method == method
    assert data.request_uri_raw == "/" + path


@FAST
@given(
    latin1,
    latin1,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", "HTTP/1.5", "junk"]),
    st.lists(st.tuples(st.sampled_from(["Cookie", "cookie", "X"]), latin1), max_size=4),
)
def test_request_line_data_on_hand_made_requests(
    method: str, uri: str, version: str, headers: list[tuple[str, str]]
) -> None:
    data = request_line_data(HttpRequest(method, uri, version, tuple(headers), b""))
    assert data.request_line.startswith(f"{method} ")
    assert all(name for name, _ in data.cookies)
    if "?" in data.request_uri_raw:
        assert data.query_string == data.request_uri_raw.split("?", 1)[1]


_header_pieces = st.sampled_from(
    [b"X-A", b"b", b"Host", b"_", b".", b":", b": ", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\x00",
     b"\xe9", b"value", b"a b", b"-", b"0"]
)  # fmt: skip


@FAST
@given(st.lists(_header_pieces, max_size=30))
def test_header_fast_path_agrees_with_the_line_reader(pieces: list[bytes]) -> None:
    block = b"".join(pieces) + b"\r\n\r\n"
    fast = _header_lines_fast(block, 0, 65536)
    try:
        slow: object = _header_lines(block, 0, 0, 65536)
    except HttpParseError:
        slow = None
    if fast is not None:
        assert fast == slow


def test_huge_header_block_is_refused() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-A: b\r\n" * 2_000_000 + b"\r\n"
    with pytest.raises(HttpParseError) as refused:
        parse_request(raw)
    assert refused.value.status in (400, 431, 494)


def test_huge_single_header_is_refused() -> None:
    with pytest.raises(HttpParseError):
        parse_request(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 10_000_000 + b"\r\n\r\n")


def test_huge_body_is_sliced_not_copied_around() -> None:
    body = b"a=" + b"x" * 20_000_000
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    request = parse_request(raw)
    assert len(request.body) == len(body)
    result = process_body(
        request.body, "application/x-www-form-urlencoded", None, BodyLimits(body_limit=1000)
    )
    assert result.exceeded and result.args_post == ()


@FAST
@given(st.binary(max_size=400))
def test_parse_response_never_raises_anything_else(raw: bytes) -> None:
    try:
        parse_response(b"HTTP/1.1 200 OK\r\n" + raw)
        parse_response(raw)
    except HttpParseError:
        pass


# --------------------------------------------------------------------------------------------
# process_body


def _check(result: BodyResult, limits: BodyLimits) -> None:
    if result.processor in ("URLENCODED", "JSON") and limits.arguments_limit > 0:
        assert len(result.args_post) <= limits.arguments_limit
    for part in result.files:
        assert part.size == len(part.content)
    if result.multipart:
        strict = result.multipart["MULTIPART_STRICT_ERROR"]
        others = [
            v
            for k, v in result.multipart.items()
            if k
            not in (
                "MULTIPART_STRICT_ERROR",
                "MULTIPART_UNMATCHED_BOUNDARY",
                "MULTIPART_CRLF_LF_LINES",
            )
        ]
        assert strict >= int(any(others))
        if result.multipart["MULTIPART_CRLF_LF_LINES"]:
            assert result.multipart["MULTIPART_LF_LINE"]
    if result.error is not None:
        assert result.error.split(" ")[0] in ("Multipart", "JSON", "XML")


limits_strategy = st.builds(
    BodyLimits,
    body_limit=st.sampled_from([0, 10, 200, 13107200]),
    json_depth=st.sampled_from([0, 3, 512]),
    arguments_limit=st.sampled_from([0, 1, 5, 1000]),
    limit_action=st.sampled_from(["Reject", "ProcessPartial"]),
)


@FAST
@given(
    st.binary(max_size=500),
    st.sampled_from(PROCESSORS),
    limits_strategy,
    st.sampled_from(
        [
            None,
            "multipart/form-data; boundary=b",
            "application/x-www-form-urlencoded",
            'multipart/form-data; boundary="b"',
            "text/plain",
            "",
        ]
    ),
)
def test_every_processor_takes_arbitrary_bytes(
    body: bytes, processor: str | None, limits: BodyLimits, content_type: str | None
) -> None:
    result = process_body(body, content_type, processor, limits)
    _check(result, limits)
    if limits.body_limit and len(body) > limits.body_limit:
        assert result.exceeded


@FAST
@given(st.binary(max_size=300), limits_strategy)
def test_process_partial_never_reads_past_the_limit(body: bytes, limits: BodyLimits) -> None:
    limits = BodyLimits(body_limit=limits.body_limit or 50, limit_action="ProcessPartial")
    result = process_body(body, None, "URLENCODED", limits)
    consumed = sum(len(k) + len(v) for k, v in result.args_post)
    assert consumed <= limits.body_limit


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


def _leaves(value: object) -> int:
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    return 1


@FAST
@given(json_values)
def test_json_documents_give_one_argument_per_scalar(value: object) -> None:
    result = process_body(json.dumps(value).encode(), None, "JSON", BodyLimits(arguments_limit=0))
    assert result.error is None
    assert len(result.args_post) == _leaves(value)
    assert all(name.startswith("json") for name, _ in result.args_post)


@pytest.mark.parametrize("depth_limit", [0, 512])
@pytest.mark.parametrize(
    "document",
    [
        b"[" * 100_000 + b"1" + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,
    ],
)
def test_json_deep_nesting(document: bytes, depth_limit: int) -> None:
    result = process_body(
        document, None, "JSON", BodyLimits(json_depth=depth_limit, no_files_limit=BIG)
    )
    if depth_limit:
        assert result.error == "JSON parsing error: JSON depth limit exceeded"
        assert result.args_post == ()
    elif document.endswith(b"["):
        assert result.error is not None and "premature EOF" in result.error
    else:
        assert result.error is None and len(result.args_post) == 1


def test_xml_deep_nesting_and_entity_bomb() -> None:
    deep = b"<a>" * 100_000 + b"x" + b"</a>" * 100_000
    assert process_body(deep, None, "XML", BodyLimits(no_files_limit=BIG)).xml_text == ("x",)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l0 "lol">'
        + b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
        + b"]><l>&l9;</l>"
    )
    result = process_body(bomb, None, "XML", BodyLimits(no_files_limit=BIG))
    assert result.error is not None  # expat's amplification guard refuses the expansion


_mp_lines = st.sampled_from(
    [
        b"--b\r\n",
        b"--b--\r\n",
        b"--b\n",
        b"--b--",
        b"-- b\r\n",
        b"--b \r\n",
        b'--"b"\r\n',
        b"--bx\r\n",
        b"\r\n",
        b"\n",
        b'Content-Disposition: form-data; name="f"\r\n',
        b'Content-Disposition: form-data; name="g"; filename="x.txt"\r\n',
        b"Content-Disposition: form-data; name='s'\r\n",
        b"Content-Disposition: form-data; name=f\r\n",
        b'Content-Disposition: form-data; name="a\\"b\r\n',
        b"Content-Disposition: form-data;\r\n",
        b' name="folded"\r\n',
        b"\tx\r\n",
        b"\x0bvt\r\n",
        b"Content-Type: text/plain\r\n",
        b"X\x00: y\r\n",
        b"No colon here\r\n",
        b": no name\r\n",
        b"data line\r\n",
        b"x --b y\r\n",
        b"v" * 5000 + b"\r\n",
        b"w" * 4095 + b"\r\r\n",
        b"\xff\xfe\r\n",
    ]
)


@FAST
@given(
    st.lists(_mp_lines, max_size=25),
    st.sampled_from(
        [
            "multipart/form-data; boundary=b",
            'multipart/form-data; boundary="b"',
            "multipart/form-data boundary=b",
            "multipart/form-data; boundary =b",
        ]
    ),
)
def test_multipart_edge_cases(lines: list[bytes], content_type: str) -> None:
    limits = BodyLimits()
    result = process_body(b"".join(lines), content_type, None, limits)
    assert result.processor == "MULTIPART"
    _check(result, limits)
    names = {name for name, _ in result.args_post} | {part.field for part in result.files}
    assert "" not in names  # nameless parts are dropped (MULTIPART_INVALID_PART)
    if names:
        assert b"--b" in b"".join(lines)


def test_multipart_many_parts() -> None:
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nvalue\r\n'
    body = part * 20_000 + b"--b--\r\n"
    limits = BodyLimits(no_files_limit=BIG)  # this is about many parts, not the size limit
    result = process_body(body, "multipart/form-data; boundary=b", None, limits)
    assert len(result.args_post) == 20_000 and result.error is None
