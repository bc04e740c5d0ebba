"""go-ftw in process: loading test files, the request bytes go-ftw 2.3.0 sends, the emulated
front end and backend, judging, and `palisade waf ftw`.

Expected request bytes follow go-ftw's ``ftwhttp`` builder as its source reads: request line
as written, the ``headers`` map sorted by name, autocomplete headers appended after them
(Content-Type, then Connection, then Content-Length), Content-Length when the body is not
empty or the method matches ``^POST|PUT|PATCH|DELETE$``.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from palisade.cli import app
from palisade.waf._ftw import (
    FtwRunner,
    StageObservation,
    albedo_response,
    crs_ci_configuration,
    crs_rule_files,
    find_crs_root,
    judge_stage,
    run_stage,
)
from palisade.waf._ftw_load import (
    FtwLoadError,
    LogExpectations,
    StageInput,
    StageOutput,
    load_ftw_file,
    load_overrides,
)
from palisade.waf._ftw_request import (
    BadTestInput,
    build_request,
    canonical_header_key,
    go_query_escape,
    go_query_unescape,
)
from palisade.waf._ftw_template import (
    TemplateExecError,
    TemplateParseError,
    TemplateUnsupported,
    render_go_template,
)
from palisade.waf._http import HttpRequest, HttpResponse

HEADERS = (("User-Agent", "OWASP CRS test agent"), ("Host", "localhost"))


def head_and_body(raw: bytes) -> tuple[list[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode().split("\r\n"), body


# ---- request bytes -------------------------------------------------------------------------


def test_get_without_body_sends_sorted_headers_connection_close_and_no_length() -> None:
    raw = build_request(StageInput(headers=(("b-header", "2"), ("Accept", "*/*"), *HEADERS)))
    assert raw == (
        b"GET / HTTP/1.1\r\n"
        b"Accept: */*\r\nHost: localhost\r\nUser-Agent: OWASP CRS test agent\r\n"
        b"b-header: 2\r\n"  # byte order: lower case sorts after upper case
        b"Connection: close\r\n\r\n"
    )


def test_no_host_header_is_added() -> None:
    lines, _ = head_and_body(build_request(StageInput(headers=(("Accept", "*/*"),))))
    assert not any(line.lower().startswith("host:") for line in lines)


def test_request_line_is_written_as_given() -> None:
    raw = build_request(StageInput(method="\tGET", uri='/a b"#', version=""))
    assert raw.startswith(b'\tGET /a b"# \r\n')


@pytest.mark.parametrize(
    ("method", "has_length"),
    [
        ("GET", False),
        ("POST", True),
        ("POSTX", True),  # ^POST
        ("XPOST", False),
        ("XPUTX", True),  # PUT and PATCH are unanchored in go-ftw's regex
        ("MPATCHY", True),
        ("DELETE", True),
        ("XDELETE", True),  # DELETE$
        ("DELETEX", False),
        ("OPTIONS", False),
    ],
)
def test_content_length_for_empty_body_follows_the_unanchored_method_regex(
    method: str, has_length: bool
) -> None:
    lines, _ = head_and_body(build_request(StageInput(method=method, headers=HEADERS)))
    assert ("Content-Length: 0" in lines) is has_length


def test_post_body_gets_form_content_type_and_is_query_escaped_per_key_and_value() -> None:
    stage = StageInput(method="POST", headers=HEADERS, data="a=b c&d=e/f=g&x y&k=<'\">\n")
    lines, body = head_and_body(build_request(stage))
    assert body == b"a=b+c&d=e%2Ff%3Dg&x+y&k=%3C%27%22%3E%0A"
    assert lines[-3:] == [
        "Content-Type: application/x-www-form-urlencoded",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]


@pytest.mark.parametrize("data", ["a=%41", "a=b+c", "a=%zz", "a=%4"])
def test_bodies_that_unescaping_changes_or_rejects_are_sent_as_they_are(data: str) -> None:
    _, body = head_and_body(build_request(StageInput(method="POST", data=data)))
    assert body == data.encode()


def test_urlencoding_needs_the_form_content_type_ignoring_case_only() -> None:
    def body_for(content_type: str) -> bytes:
        stage = StageInput(method="POST", headers=(("content-type", content_type),), data="a=b c")
        return head_and_body(build_request(stage))[1]

    assert body_for("Application/X-WWW-Form-Urlencoded") == b"a=b+c"
    assert body_for("application/x-www-form-urlencoded; charset=utf-8") == b"a=b c"
    assert body_for("application/json") == b"a=b c"


def test_existing_headers_are_matched_by_canonical_name() -> None:
    stage = StageInput(
        method="POST",
        headers=(
            ("content-type", "text/plain"),
            ("CONNECTION", "keep-alive"),
            ("content-length", "3"),
        ),
        data="abc",
    )
    lines, _ = head_and_body(build_request(stage))
    assert lines[1:] == ["CONNECTION: keep-alive", "content-length: 3", "content-type: text/plain"]


def test_multipart_lf_becomes_crlf_with_or_without_autocomplete() -> None:
    data = '--b\nContent-Disposition: form-data; name="a"\n\nx\r\n--b--\n'
    for autocomplete in (True, False):
        stage = StageInput(
            method="POST",
            headers=(("Content-Type", "Multipart/Form-Data; boundary=b"),),
            data=data,
            autocomplete_headers=autocomplete,
        )
        _, body = head_and_body(build_request(stage))
        assert body == data.replace("\n", "\r\n").encode()  # an existing CRLF becomes CRCRLF
    plain = StageInput(
        method="POST", headers=(("Content-Type", "multipart/form-data"),), data="a\n"
    )
    assert head_and_body(build_request(plain))[1] == b"a\n"  # no ';': not converted


def test_autocomplete_off_adds_and_changes_nothing() -> None:
    stage = StageInput(method="POST", headers=HEADERS, data="a=b c", autocomplete_headers=False)
    assert build_request(stage) == (
        b"POST / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: OWASP CRS test agent\r\n\r\na=b c"
    )


def test_repeat_template_builds_the_body_and_its_length() -> None:
    stage = StageInput(
        method="POST",
        headers=(("Content-Type", "text/plain"),),
        data='x{{ "1" | repeat 64200 }}y\n',
    )
    lines, body = head_and_body(build_request(stage))
    assert body == b"x" + b"1" * 64200 + b"y\n"
    assert f"Content-Length: {64200 + 3}" in lines


@pytest.mark.parametrize(
    "data",
    [
        "/login?user={{constructor.constructor('alert(1)')()}}",  # undefined function
        "{{ unclosed",
        '{{ "1" | repeat "x" }}',  # fails when executed: go-ftw also sends nothing
    ],
)
def test_templates_go_cannot_run_give_an_empty_body(data: str) -> None:
    lines, body = head_and_body(build_request(StageInput(method="POST", data=data)))
    assert body == b""
    assert "Content-Length: 0" in lines
    assert not any(line.startswith("Content-Type") for line in lines)


def test_body_is_utf8_as_go_holds_yaml_strings() -> None:
    stage = StageInput(method="POST", headers=(("Content-Type", "text/plain"),), data="é\x80")
    assert head_and_body(build_request(stage))[1] == "é\x80".encode()


def test_encoded_request_is_sent_exactly() -> None:
    raw = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n\xff"
    stage = StageInput(
        encoded_request=base64.b64encode(raw).decode(), headers=HEADERS, method="POST"
    )
    assert build_request(stage) == raw
    with pytest.raises(BadTestInput):
        build_request(StageInput(encoded_request="not base64!"))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("content-type", "Content-Type"),
        ("CONTENT-LENGTH", "Content-Length"),
        ("x-crs-test", "X-Crs-Test"),
        ("Content_Type", "Content_type"),
        ("bad name", "bad name"),  # a space: left as is
    ],
)
def test_canonical_header_key(name: str, canonical: str) -> None:
    assert canonical_header_key(name) == canonical


def test_query_escape_and_unescape_as_go() -> None:
    assert go_query_escape(b"a b~-_.*/\xc3\xa9") == b"a+b~-_.%2A%2F%C3%A9"
    assert go_query_unescape(b"a+b%41") == b"a bA"
    assert go_query_unescape(b"%4") is None


# ---- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("plain {not a template}", "plain {not a template}"),
        ('{{ "ab" | repeat 2 }}', "abab"),
        ("{{ repeat 3 `x` }}", "xxx"),
        ('{{ "a" | upper | repeat 2 }}', "AA"),
        ("a  {{- /* comment */ -}}  b", "ab"),
        ("a {{/* comment */}} b", "a  b"),
        ('a {{- "x" }} b', "ax b"),
        ('{{ "\\x41\\u00e9" }}', "Aé"),
        ("{{ 42 }}", "42"),
        ("{{ . }}", "<no value>"),
        ('{{ print "a" 1 }}', "a1"),
        ('{{ (repeat 2 "z") }}', "zz"),
    ],
)
def test_template_subset_renders_as_go(template: str, rendered: str) -> None:
    assert render_go_template(template) == rendered


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{{ nosuchfunction }}", TemplateParseError),
        ("{{ 'ab' }}", TemplateParseError),
        ("{{ /* open", TemplateParseError),
        ("{{ /* not right after the delimiter */ }}", TemplateParseError),
        ("{{/* c */ }}", TemplateParseError),
        ('{{ "x" 1 }}', TemplateParseError),
        ("{{ .Missing }}", TemplateExecError),
        ('{{ repeat -1 "a" }}', TemplateExecError),
        ("{{ if true }}x{{ end }}", TemplateUnsupported),
        ('{{ "a" | sha256sum }}', TemplateUnsupported),
    ],
)
def test_template_failures_are_classified(template: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        render_go_template(template)


# ---- loading -------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_loader_defaults_quirks_and_stray_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "942100.yaml",
        """\
        meta: {author: someone}
        author: stray key at the top
        tests:
          - desc: no test_id
            stages:
              - input:
                  port: 8080.0
                  version: ""
                  headers: {Content-Length: 12, X-Flag: true}
                  stop_magic: "yes"  # YAML 1.1 words count even quoted, as in yaml.v3
                  unknown_key: ignored
                output:
                  log_contains: id "942100"
          - test_id: 7
            stages:
              - input: {method: POST, data: "a=b\\n"}
                output: {status: 200, log: {no_expect_ids: [1, 0x10]}}
        """,
    )
    loaded = load_ftw_file(path)
    assert loaded.rule_id == 942100  # from the file name
    first, second = loaded.tests
    assert (first.name, second.name) == ("942100-1", "942100-7")
    stage = first.stages[0]
    assert stage.input.port == 8080 and stage.input.version == ""
    assert stage.input.headers == (("Content-Length", "12"), ("X-Flag", "true"))
    assert stage.input.autocomplete_headers is False
    assert stage.input.method == "GET" and stage.input.uri == "/"
    assert stage.output.log.match_regex == 'id "942100"'
    assert second.stages[0].output.status == 200
    assert second.stages[0].output.log.no_expect_ids == (1, 16)
    assert second.stages[0].input.data == "a=b\n"


def test_comment_only_file_has_no_tests(tmp_path: Path) -> None:
    path = write(tmp_path, "920539.yaml", "# nothing here\n# at all\n")
    assert load_ftw_file(path).tests == ()


def test_rule_id_as_written_names_the_tests(tmp_path: Path) -> None:
    path = write(
        tmp_path, "933200.yaml", "rule_id: 9331200\ntests:\n  - test_id: 3\n    stages: []\n"
    )
    assert load_ftw_file(path).tests[0].name == "9331200-3"


@pytest.mark.parametrize(
    ("text", "test", "field_path", "reason"),
    [
        ("rule_id: '5'\n", "", "rule_id", "expected an integer, got the quoted string '5'"),
        (
            "tests:\n  - test_id: 2\n    stages:\n      - input: {port: '80'}\n",
            "100-2",
            "tests[0].stages[0].input.port",
            "expected an integer",
        ),
        (
            "tests:\n  - stages:\n      - input: {headers: {A: 1, A: 2}}\n",
            "",
            "",
            "already defined",
        ),
        ("tests: {a: 1}\n", "", "tests", "expected a list of tests"),
        (
            "tests:\n  - test_id: 1\n    stages:\n      - stage: {input: {}}\n",
            "100-1",
            "tests[0].stages[0].stage",
            "schema v1",
        ),
        (
            "tests:\n  - test_id: 1\n    stages:\n"
            "      - input: {data: x, encoded_request: eA==}\n",
            "100-1",
            "tests[0].stages[0].input.data",
            "must not be set together",
        ),
        (
            "tests:\n  - test_id: 1\n    stages:\n      - output: {status: [200]}\n",
            "100-1",
            "tests[0].stages[0].output.status",
            "schema v1",
        ),
        (
            "tests:\n  - test_id: 1\n    stages:\n      - input: {data: '{{ \"a\" | sha1sum }}'}\n",
            "100-1",
            "tests[0].stages[0].input.data",
            "not supported",
        ),
        (
            "tests:\n  - test_id: 1\n    stages: []\n  - test_id: 1\n    stages: []\n",
            "100-1",
            "tests[1].test_id",
            "already used",
        ),
        ("tests: [\n", "", "", "invalid YAML"),
        (
            "tests:\n  - test_id: 1\n    stages:\n      - output: {expect_error: 'true'}\n",
            "100-1",
            "tests[0].stages[0].output.expect_error",
            "expected a boolean",
        ),
    ],
)
def test_malformed_files_give_one_error_with_file_test_path_and_reason(
    tmp_path: Path, text: str, test: str, field_path: str, reason: str
) -> None:
    path = write(tmp_path, "100.yaml", text)
    with pytest.raises(FtwLoadError) as caught:
        load_ftw_file(path)
    error = caught.value
    assert error.file == str(path)
    assert error.test == test
    assert error.path == field_path
    assert reason in error.reason
    assert str(error).startswith(str(path))


def test_overrides_replace_the_whole_output_of_listed_tests_and_stages(tmp_path: Path) -> None:
    tests = write(
        tmp_path,
        "920100.yaml",
        """\
        tests:
          - test_id: 4
            stages:
              - output: {log: {expect_ids: [920100]}}
              - output: {log: {expect_ids: [920100]}}
          - test_id: 5
            stages:
              - output: {log: {expect_ids: [920100]}}
        """,
    )
    overrides = load_overrides(
        write(
            tmp_path,
            "o.yaml",
            """\
            version: v0
            test_overrides:
              - rule_id: 920100
                test_ids: [4]
                stage_ids: [1]
                reason: front end answers 400
                output: {status: 400}
            """,
        )
    )
    four, five = load_ftw_file(tests).tests
    changed = overrides.apply(four)
    assert changed.stages[0].output.log.expect_ids == (920100,)
    assert changed.stages[1].output == StageOutput(status=400)
    assert overrides.apply(five) == five
    assert overrides.reason_for(four) == "front end answers 400"


# ---- front end, backend, judging ----------------------------------------------------------


@dataclass
class FakeMatch:
    id: int
    log_line: str
    logged: bool = True


@dataclass
class FakeResult:
    matches: list[FakeMatch]
    status: int | None = None
    blocked: bool = False

    def logged_ids(self) -> set[int]:
        return {m.id for m in self.matches if m.logged}


@dataclass
class FakeEngine:
    """Logs rule 1 when the request body holds "attack"; rule 2 when the response does."""

    seen: list[tuple[HttpRequest, HttpResponse | None]] = field(default_factory=list)

    def evaluate(self, request: HttpRequest, response: HttpResponse | None = None) -> FakeResult:
        self.seen.append((request, response))
        matches = []
        if b"attack" in request.body:
            matches.append(FakeMatch(1, '[id "1"] [data "attack\nsecond line"]'))
        if response is not None and b"leak" in response.body:
            matches.append(FakeMatch(2, '[id "2"] [msg "leak"]'))
        matches.append(FakeMatch(3, "", logged=False))
        return FakeResult(matches)


def post(body: bytes, uri: str = "/post", content_type: str = "text/plain") -> bytes:
    return (
        f"POST {uri} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_run_stage_reports_logged_ids_and_splits_log_lines_as_a_log_file_reads() -> None:
    seen = run_stage(FakeEngine(), post(b"an attack"))
    assert seen.status == 200 and seen.error is None
    assert seen.logged_ids == frozenset({1})
    assert seen.log_lines == ('[id "1"] [data "attack', 'second line"]')


def test_a_request_the_front_end_refuses_never_reaches_the_waf() -> None:
    engine = FakeEngine()
    seen = run_stage(engine, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\nattack")
    assert engine.seen == []
    assert seen.status == 400 and seen.log_lines == () and seen.logged_ids == frozenset()
    assert seen.front_end


def test_http09_request_gets_no_status_line_so_go_ftw_sees_an_error() -> None:
    seen = run_stage(FakeEngine(), b"GET / \r\nHost: localhost\r\n\r\n")
    assert seen.error is not None and seen.status is None


@pytest.mark.parametrize(
    ("connection", "version", "logged"),
    [("", "HTTP/1.1", {1}), ("Connection: close\r\n", "HTTP/1.1", set()), ("", "HTTP/1.0", set())],
)
def test_a_pipelined_request_on_a_kept_alive_connection_is_logged_too(
    connection: str, version: str, logged: set[int]
) -> None:
    second = post(b"an attack")
    first = f"GET / {version}\r\nHost: a\r\n{connection}\r\n".encode()
    engine = FakeEngine()
    seen = run_stage(engine, first + b"\r\n" + second)
    assert seen.status == 200 and seen.logged_ids == frozenset(logged)
    assert len(engine.seen) == 1 + len(logged)
    assert run_stage(FakeEngine(), first + b"hi=attack\r\n").logged_ids == frozenset()


def test_albedo_reflects_status_headers_and_body_into_the_response_phases() -> None:
    spec = {"status": 503, "headers": {"x-a": "1", "bad name": "dropped"}, "body": "a leak"}
    engine = FakeEngine()
    seen = run_stage(engine, post(json.dumps(spec).encode(), "/reflect", "application/json"))
    response = engine.seen[0][1]
    assert response is not None
    assert response.status == 503 and seen.status == 503
    assert response.body == b"a leak"
    assert dict(response.headers) == {
        "X-A": "1",
        "Content-Type": "text/plain; charset=utf-8",  # Go sniffs the body
        "Content-Length": "6",
    }
    assert seen.logged_ids == frozenset({2})
    assert seen.response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert seen.response.endswith(b"\r\n\r\na leak")


@pytest.mark.parametrize(
    ("spec", "status", "body", "content_type"),
    [
        ({"encodedBody": base64.b64encode(b"<html>x").decode()}, 200, b"<html>x", "text/html"),
        ({"Body": "<?xml version='1.0'?>"}, 200, b"<?xml version='1.0'?>", "text/xml"),
        ({"status": 42}, 400, b"Invalid status code: 42", "text/plain"),
        ({"status": "200"}, 400, b"Invalid JSON in request body", "text/plain"),
        (
            {"headers": {"Content-Type": "application/json"}, "body": "{}"},
            200,
            b"{}",
            "application/json",
        ),
        ({}, 200, b"", None),
        ([1, 2], 400, b"Invalid JSON in request body", "text/plain"),
        ({"body": {"a": 1}}, 400, b"Invalid JSON in request body", "text/plain"),
        ({"headers": {"a": 1}}, 400, b"Invalid JSON in request body", "text/plain"),
        ({"status": 200.0}, 400, b"Invalid JSON in request body", "text/plain"),
        ({"encodedBody": "%%%"}, 200, b"invalid base64 encoding of response body", "text/plain"),
    ],
)
def test_albedo_reflection_edge_cases(
    spec: object, status: int, body: bytes, content_type: str | None
) -> None:
    request = HttpRequest("POST", "/reflect", "HTTP/1.1", (), json.dumps(spec).encode())
    response = albedo_response(request)
    assert (response.status, response.body) == (status, body)
    found = dict(response.headers).get("Content-Type")
    assert (found or None) is None if content_type is None else found.startswith(content_type)


def test_albedo_takes_the_last_key_that_matches_a_field_ignoring_case() -> None:
    raw = b'{"status": 201, "STATUS": 202, "body": "a", "Body": "b"}'
    response = albedo_response(HttpRequest("POST", "/reflect", "HTTP/1.1", (), raw))
    assert (response.status, response.body) == (202, b"b")


@pytest.mark.parametrize(
    ("method", "uri"), [("GET", "/reflect"), ("POST", "/reflected"), ("POST", "/")]
)
def test_albedo_answers_anything_else_with_an_empty_200(method: str, uri: str) -> None:
    response = albedo_response(HttpRequest(method, uri, "HTTP/1.1", (), b'{"status": 500}'))
    assert (response.status, response.body) == (200, b"")


def observed(
    ids: set[int], lines: tuple[str, ...] = (), status: int | None = 200
) -> StageObservation:
    return StageObservation(status, None, lines, frozenset(ids))


def log(**fields: object) -> StageOutput:
    return StageOutput(log=LogExpectations(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expected", "seen", "passed", "why"),
    [
        (StageOutput(), observed(set()), True, "logged: none"),
        (log(expect_ids=(1, 2)), observed({1, 2, 3}), True, ""),
        (log(expect_ids=(1, 2)), observed({1}), False, "expected id 2 not logged"),
        (log(no_expect_ids=(3,)), observed({1}), True, ""),
        (log(no_expect_ids=(3, 1)), observed({1}), False, "unexpected id 1 logged"),
        (
            log(match_regex=r"found within ARGS:x\z"),
            observed({1}, ("a found within ARGS:x",)),
            True,
            "",
        ),
        (log(match_regex="^x$"), observed({1}, ("x\n",)), False, "no log line matches"),
        (log(no_match_regex=r'\[id "\d+"\]'), observed({1}, ('[id "1"]',)), False, "matches"),
        (log(no_match_regex=r'\[id "\d+"\]'), observed(set()), True, ""),
        (StageOutput(status=400), observed(set(), status=200), False, "status 200, expected 400"),
        (
            StageOutput(status=400, expect_error=True),
            StageObservation(None, "EOF", (), frozenset()),
            True,
            "transport error as expected",
        ),
        (StageOutput(expect_error=True), observed(set()), False, "expected a transport error"),
        (
            log(expect_ids=(1,)),
            StageObservation(None, "EOF", (), frozenset({1})),
            False,
            "transport error",
        ),
        (
            StageOutput(status=200, log=LogExpectations(expect_ids=(1,))),
            observed(set(), status=400),
            False,
            "status 400",
        ),
        (
            StageOutput(isolated=True, log=LogExpectations(expect_ids=(1,))),
            observed({1, 2}),
            False,
            "isolated",
        ),
        (
            StageOutput(response_contains="HTTP/1.1 2"),
            StageObservation(200, None, (), frozenset(), b"HTTP/1.1 200\r\n"),
            True,
            "",
        ),
    ],
)
def test_judging_follows_go_ftw(
    expected: StageOutput, seen: StageObservation, passed: bool, why: str
) -> None:
    verdict = judge_stage(expected, seen)
    assert verdict.passed is passed
    assert why in verdict.why


def test_the_recorded_result_of_a_test_is_its_last_stage(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "100.yaml",
        """\
        tests:
          - test_id: 1
            stages:
              - input: {method: POST, headers: {Host: a, Content-Type: text/plain}, data: attack}
                output: {log: {no_expect_ids: [1]}}
              - input: {method: POST, headers: {Host: a, Content-Type: text/plain}, data: calm}
                output: {log: {no_expect_ids: [1]}}
          - test_id: 2
            stages:
              - input: {method: POST, headers: {Host: a, Content-Type: text/plain}, data: calm}
                output: {log: {no_expect_ids: [1]}}
              - input: {method: POST, headers: {Host: a, Content-Type: text/plain}, data: attack}
                output: {log: {no_expect_ids: [1]}}
        """,
    )
    first, second = FtwRunner(FakeEngine()).run([load_ftw_file(path)])
    assert first.passed and "stage 1: unexpected id 1 logged" in first.why
    assert not second.passed


def test_runner_include_selects_by_rule_and_test_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "100.yaml",
        "tests:\n  - test_id: 1\n    stages: []\n  - test_id: 12\n    stages: []\n",
    )
    results = FtwRunner(FakeEngine(), include=re.compile(r"^100-1$")).run([load_ftw_file(path)])
    assert [r.test for r in results] == ["100-1"]


# ---- CRS CI configuration ------------------------------------------------------------------


def test_ci_configuration_holds_the_ci_settings() -> None:
    text = crs_ci_configuration()
    for setting in (
        "SecRuleEngine DetectionOnly",
        "SecRequestBodyAccess On",
        "SecResponseBodyAccess On",
        "SecResponseBodyMimeType text/plain text/html text/xml application/json",
        "SecArgumentsLimit 1000",
        "ctl:requestBodyProcessor=XML",
        "ctl:requestBodyProcessor=JSON",
        "setvar:tx.blocking_paranoia_level=4",
        "setvar:tx.arg_length=400",
        "setvar:tx.total_arg_length=6400",
        "setvar:tx.max_file_size=64100",
        "setvar:tx.combined_file_sizes=65535",
    ):
        assert setting in text
    assert "id:200002" not in crs_ci_configuration(body_rules=False)


def make_crs(root: Path, rule: str) -> Path:
    (root / "rules").mkdir(parents=True)
    (root / "plugins").mkdir()
    (root / "crs-setup.conf.example").write_text('SecDefaultAction "phase:2,log,auditlog,pass"\n')
    (root / "rules" / "REQUEST-901-INITIALIZATION.conf").write_text(rule)
    (root / "rules" / "REQUEST-900-X.conf.example").write_text("not loaded\n")
    (root / "plugins" / "empty-after.conf").write_text("")
    (root / "plugins" / "empty-before.conf").write_text("")
    tests = root / "tests" / "regression" / "tests" / "REQUEST-901"
    tests.mkdir(parents=True)
    return tests


def test_crs_files_load_in_the_container_order(tmp_path: Path) -> None:
    tests = make_crs(tmp_path, "")
    assert find_crs_root(tests) == tmp_path
    assert [p.name for p in crs_rule_files(tmp_path)] == [
        "crs-setup.conf.example",
        "empty-before.conf",
        "REQUEST-901-INITIALIZATION.conf",
        "empty-after.conf",
    ]
    assert crs_rule_files(tmp_path / "rules") == crs_rule_files(tmp_path)


# ---- the command ---------------------------------------------------------------------------

RULE = 'SecRule ARGS:q "@contains attack" "id:1001,phase:2,log,pass,msg:\'attack in q\'"\n'
CASES = """\
rule_id: 1001
tests:
  - test_id: 1
    stages:
      - input: {method: POST, headers: {Host: localhost}, data: "q=an attack"}
        output: {log: {expect_ids: [1001]}}
  - test_id: 2
    stages:
      - input: {method: POST, headers: {Host: localhost}, data: "q=calm"}
        output: {log: {expect_ids: [1001]}}
"""


def test_cli_json_shape_and_exit_code(tmp_path: Path) -> None:
    tests = make_crs(tmp_path, RULE)
    (tests / "1001.yaml").write_text(CASES)
    result = CliRunner().invoke(app, ["waf", "ftw", str(tests), "--format", "json"])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert list(document) == ["passed", "failed", "results"]
    assert (document["passed"], document["failed"]) == (1, 1)
    assert [list(r) for r in document["results"]] == [["file", "test", "passed", "why"]] * 2
    assert [(r["test"], r["passed"]) for r in document["results"]] == [
        ("1001-1", True),
        ("1001-2", False),
    ]
    assert document["results"][0]["file"] == str(tests / "1001.yaml")

    only_first = CliRunner().invoke(app, ["waf", "ftw", str(tests), "--include", "-1$"])
    assert only_first.exit_code == 0, only_first.output
    assert "1 of 1 tests passed (100.00 %)" in only_first.stdout


def test_cli_table_lists_failures_and_the_pass_rate(tmp_path: Path) -> None:
    tests = make_crs(tmp_path, RULE)
    (tests / "1001.yaml").write_text(CASES)
    result = CliRunner().invoke(app, ["waf", "ftw", str(tests / "1001.yaml")])
    assert result.exit_code == 1
    assert "1001-2" in result.stdout and "expected id 1001 not logged" in result.stdout
    assert "1 of 2 tests passed (50.00 %)" in result.stdout


def test_cli_needs_rules_when_the_tests_are_not_in_a_crs(tmp_path: Path) -> None:
    (tmp_path / "1001.yaml").write_text(CASES)
    result = CliRunner().invoke(app, ["waf", "ftw", str(tmp_path)])
    assert result.exit_code == 2
    assert "--rules" in result.stderr


def test_cli_reports_malformed_files_and_runs_nothing(tmp_path: Path) -> None:
    tests = make_crs(tmp_path, RULE)
    (tests / "1001.yaml").write_text("rule_id: '1001'\n")
    result = CliRunner().invoke(app, ["waf", "ftw", str(tests)])
    assert result.exit_code == 2
    assert "1001.yaml: rule_id: expected an integer" in result.stderr
