"""go-ftw, in process: CRS regression tests run through :class:`WafEngine` and judged as
go-ftw 2.3.0 judges them against the CRS CI's libmodsecurity3 + nginx container.

Pieces (each usable on its own):

- :func:`crs_ci_configuration` / :func:`load_crs_engine` — the engine as the CRS CI
  configures it: the container's ModSecurity settings and content-type rules, the CI's
  ``tx`` overrides, ``crs-setup.conf.example``, the (empty) plugins and ``rules/*.conf`` in
  name order.
- :func:`run_stage` — the raw request bytes through an emulated front end (nginx's parser:
  a request it refuses gets its 400/505 and the WAF never sees it), the engine, and an
  emulated backend (albedo: ``POST /reflect`` answers as its JSON says, anything else
  ``200`` with no body). Its :class:`StageObservation` is what go-ftw would see: the
  status, a transport error, the log lines of the stage's window.
- :func:`judge_stage` — go-ftw's checks in go-ftw's order.
- :class:`FtwRunner` — files → :class:`TestResult` (the recorded result of a test is its
  last stage's, as go-ftw 2.3.0 records it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Protocol

from ._ftw_load import (
    FtwFile,
    FtwLoadError,
    FtwTest,
    Overrides,
    StageOutput,
    collect_test_files,
    go_regex_to_python,
    load_ftw_file,
    load_overrides,
)
from ._ftw_request import BadTestInput, build_request, canonical_header_key
from ._http import HttpParseError, HttpRequest, HttpResponse, parse_request

__all__ = [
    "CRS_CI_TX_OVERRIDES",
    "FtwRunner",
    "StageObservation",
    "StageVerdict",
    "TestResult",
    "albedo_response",
    "crs_ci_configuration",
    "crs_rule_files",
    "find_crs_root",
    "judge_stage",
    "load_crs_engine",
    "run_stage",
]


class RuleMatchLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def logged(self) -> bool: ...
    @property
    def log_line(self) -> str: ...


class WafResultLike(Protocol):
    @property
    def status(self) -> int | None: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def matches(self) -> Sequence[RuleMatchLike]: ...
    def logged_ids(self) -> set[int]: ...


class WafEngineLike(Protocol):
    """What the runner needs of :class:`palisade.waf.WafEngine` (tests pass stand-ins)."""

    def evaluate(
        self, request: HttpRequest, response: HttpResponse | None = None
    ) -> WafResultLike: ...


# The CRS CI's docker-compose environment, turned into crs-setup rules by the container.
CRS_CI_TX_OVERRIDES: tuple[tuple[int, str, str], ...] = (
    (900000, "blocking_paranoia_level", "4"),
    (900320, "arg_length", "400"),
    (900330, "total_arg_length", "6400"),
    (900340, "max_file_size", "64100"),
    (900350, "combined_file_sizes", "65535"),
)

# The owasp/modsecurity-crs container's ModSecurity settings (modsecurity.conf after its
# MODSEC_* environment), as the CRS CI's docker-compose sets them.
_CONTAINER_SETTINGS = """\
SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecRequestBodyLimit 13107200
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 512
SecArgumentsLimit 1000
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecResponseBodyLimit 1048576
SecResponseBodyLimitAction ProcessPartial
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\\+|/)|text/)xml" \\
    "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" \\
    "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/[a-z0-9.-]+[+]json" \\
    "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
"""

# The container's request-body checks; they log (DetectionOnly), so they show in the window.
_CONTAINER_BODY_RULES = """\
SecRule &ARGS "@ge 1000" \\
    "id:200007,phase:2,t:none,log,deny,status:400,\\
    msg:'Failed to fully parse request body due to large argument count',severity:2"
SecRule REQBODY_ERROR "!@eq 0" \\
    "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',\\
    logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" \\
    "id:200003,phase:2,t:none,log,deny,status:400,\\
    msg:'Multipart request body failed strict validation: \\
PE %{REQBODY_PROCESSOR_ERROR}, \\
BQ %{MULTIPART_BOUNDARY_QUOTED}, \\
BW %{MULTIPART_BOUNDARY_WHITESPACE}, \\
DB %{MULTIPART_DATA_BEFORE}, \\
DA %{MULTIPART_DATA_AFTER}, \\
HF %{MULTIPART_HEADER_FOLDING}, \\
LF %{MULTIPART_LF_LINE}, \\
SM %{MULTIPART_MISSING_SEMICOLON}, \\
IQ %{MULTIPART_INVALID_QUOTING}, \\
IP %{MULTIPART_INVALID_PART}, \\
IH %{MULTIPART_INVALID_HEADER_FOLDING}, \\
FL %{MULTIPART_FILE_LIMIT_EXCEEDED}'"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" \\
    "id:200004,phase:2,t:none,log,deny,\\
    msg:'Multipart parser detected a possible unmatched boundary.'"
"""


def crs_ci_configuration(*, body_rules: bool = True) -> str:
    """SecLang loaded before the CRS files: the container's settings and content-type rules
    (and, with ``body_rules``, its logging body checks), then the CI's ``tx`` overrides."""
    parts = [_CONTAINER_SETTINGS]
    if body_rules:
        parts.append(_CONTAINER_BODY_RULES)
    for rule_id, name, value in CRS_CI_TX_OVERRIDES:
        parts.append(
            f'SecAction "id:{rule_id},phase:1,pass,t:none,nolog,setvar:tx.{name}={value}"\n'
        )
    return "".join(parts)


def find_crs_root(start: Path) -> Path | None:
    """The CRS folder (holding ``rules/`` and ``crs-setup.conf.example``) at or above
    ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "crs-setup.conf.example").is_file() and (folder / "rules").is_dir():
            return folder
    return None


def crs_rule_files(rules_dir: Path) -> list[Path]:
    """The files the CRS container loads, in its order: setup, plugin configs and "before"
    files, ``rules/*.conf`` by name, plugin "after" files. ``rules_dir`` may be the CRS
    folder or its ``rules/`` folder."""
    root = rules_dir if (rules_dir / "rules").is_dir() else rules_dir.parent
    rules = root / "rules" if (root / "rules").is_dir() else rules_dir
    files: list[Path] = []
    for setup in ("crs-setup.conf", "crs-setup.conf.example"):
        if (root / setup).is_file():
            files.append(root / setup)
            break
    plugins = root / "plugins"
    files += sorted(plugins.glob("*-config.conf")) + sorted(plugins.glob("*-before.conf"))
    files += sorted(rules.glob("*.conf"))
    files += sorted(plugins.glob("*-after.conf"))
    return files


def load_crs_engine(rules_dir: Path, *, body_rules: bool = True) -> WafEngineLike:
    """A :class:`WafEngine` configured as the CRS CI's container."""
    from . import WafEngine

    files = crs_rule_files(rules_dir)
    if not any(f.name.startswith("REQUEST-901") for f in files):
        raise FileNotFoundError(f"{rules_dir}: no CRS rules (REQUEST-901-*.conf) found")
    engine: WafEngineLike = WafEngine.load(
        files, before=crs_ci_configuration(body_rules=body_rules)
    )
    return engine


# ---- one stage -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageObservation:
    """What go-ftw sees of one stage."""

    status: int | None  # None when no response could be read
    error: str | None  # the transport error go-ftw would get, if any
    log_lines: tuple[str, ...]  # the WAF's log lines in the stage's window
    logged_ids: frozenset[int]
    response: bytes = b""  # the raw response (status line, headers, body) for response_contains
    front_end: str = ""  # why the front end refused the request, if it did


_GO_SNIFF_HTML = (
    b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT",
    b"<TABLE", b"<A", b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--",
)  # fmt: skip


def _sniff_content_type(body: bytes) -> str:
    """Go's ``http.DetectContentType`` for the text-like bodies a reflector returns."""
    data = body[:512]
    if data.startswith((b"\xfe\xff", b"\xff\xfe")):
        return "text/plain; charset=utf-16" + ("be" if data[0] == 0xFE else "le")
    if data.startswith(b"\xef\xbb\xbf"):
        return "text/plain; charset=utf-8"
    stripped = data.lstrip(b"\t\n\x0c\r ")
    for signature in _GO_SNIFF_HTML:
        head = stripped[: len(signature)]
        after = stripped[len(signature) : len(signature) + 1]
        if head.upper() == signature and after and after in b" >":
            return "text/html; charset=utf-8"
    if stripped.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"%!PS-Adobe-"):
        return "application/postscript"
    binary = set(range(0x00, 0x09)) | {0x0B} | set(range(0x0E, 0x1B)) | set(range(0x1C, 0x20))
    if any(byte in binary for byte in data):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


_VALID_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class _JsonObject(list[tuple[str, object]]):
    """A JSON object as its key/value pairs, in document order (duplicates kept)."""


def _go_json_field(pairs: _JsonObject, name: str) -> object:
    """Go's ``encoding/json`` into a struct: every key equal to the field's name ignoring
    case sets it, in document order, so the last one wins."""
    value: object = None
    for key, item in pairs:
        if key.lower() == name.lower():
            value = item
    return value


def albedo_response(request: HttpRequest) -> HttpResponse:
    """The response of the CRS CI's backend (albedo 0.3.0) to ``request``."""
    path = urllib.parse.urlsplit(request.uri).path if "://" in request.uri else request.uri
    path = path.split("?", 1)[0]
    if request.method != "POST" or path not in ("/reflect", "/reflect/"):
        return HttpResponse(200, "HTTP/1.1", (("Content-Length", "0"),), b"")

    def plain(status: int, text: str) -> HttpResponse:
        body = text.encode()
        headers = (
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        )
        return HttpResponse(status, "HTTP/1.1", headers, body)

    try:
        document = json.loads(
            request.body.decode("utf-8", "replace"), object_pairs_hook=_JsonObject
        )
        if not isinstance(document, _JsonObject):
            raise ValueError("not an object")
        status = _go_json_field(document, "status")
        headers = _go_json_field(document, "headers")
        body = _go_json_field(document, "body")
        encoded = _go_json_field(document, "encodedBody")
        if status is None:
            status = 0
        if not isinstance(status, int) or isinstance(status, bool):
            raise ValueError("status")
        if headers is None:
            headers = _JsonObject()
        if not isinstance(headers, _JsonObject):
            raise ValueError("headers")
        header_values: dict[str, str] = {}
        for name, value in headers:
            if value is not None and not isinstance(value, str):
                raise ValueError("headers")
            header_values[name] = value or ""
        for text in (body, encoded):
            if text is not None and not isinstance(text, str):
                raise ValueError("body")
    except ValueError:
        return plain(400, "Invalid JSON in request body")
    if 0 < status < 100 or status >= 600:
        return plain(400, f"Invalid status code: {status}")
    status = status or 200
    payload: bytes
    if body:
        payload = str(body).encode("utf-8", "surrogatepass")
    elif encoded:
        try:
            payload = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            payload = b"invalid base64 encoding of response body"
    else:
        payload = b""
    reflected: dict[str, str] = {}
    for name, value in header_values.items():
        # Go's server drops invalid names and values (CR, LF, NUL) when it writes the head.
        if not _VALID_HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
            continue
        reflected[canonical_header_key(name)] = value
    if payload and "Content-Type" not in reflected:
        reflected["Content-Type"] = _sniff_content_type(payload)
    reflected.setdefault("Content-Length", str(len(payload)))
    return HttpResponse(status, "HTTP/1.1", tuple(sorted(reflected.items())), payload)


def _render_response(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The response as nginx sends it to go-ftw (for ``response_contains``)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {status} {reason}", "Server: nginx"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _pipelined(raw: bytes, request: HttpRequest) -> bytes | None:
    """Bytes after the first request that nginx reads as the next request on the connection:
    only when the connection stays open (HTTP/1.1 without ``Connection: close``, HTTP/1.0
    with ``keep-alive``) and the first request is framed by length, not chunks."""
    tokens = {
        token.strip().lower()
        for name, value in request.headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    keep_alive = "keep-alive" in tokens if request.version == "HTTP/1.0" else "close" not in tokens
    if not keep_alive or not request.version.startswith("HTTP/1."):
        return None
    if any(name.lower() == "transfer-encoding" for name, _ in request.headers):
        return None
    end = _HEAD_END.search(raw)
    if end is None:
        return None
    rest = raw[end.end() + len(request.body) :].lstrip(b"\r\n")  # nginx skips empty lines
    return rest or None


def _transaction(
    engine: WafEngineLike, request: HttpRequest
) -> tuple[HttpResponse, WafResultLike, tuple[str, ...]]:
    backend = albedo_response(request)
    result = engine.evaluate(request, backend)
    # go-ftw reads the error log line by line: a log line holding a raw newline is two lines.
    lines = tuple(part for m in result.matches if m.logged for part in m.log_line.split("\n"))
    return backend, result, lines


def run_stage(engine: WafEngineLike, raw: bytes) -> StageObservation:
    """Send ``raw`` through the emulated front end, the WAF and the backend."""
    try:
        request = parse_request(raw)
    except HttpParseError as exc:
        # nginx answers before ModSecurity runs: no log lines for this stage.
        page = f"<html><head><title>{exc.status}</title></head></html>".encode()
        response = _render_response(exc.status, [("Content-Type", "text/html")], page)
        return StageObservation(exc.status, None, (), frozenset(), response, str(exc))
    backend, result, lines = _transaction(engine, request)
    ids = set(result.logged_ids())
    if not request.version:
        # An HTTP/0.9 request gets a bare body, no status line: go-ftw's reader fails.
        return StageObservation(
            None, "malformed HTTP response (HTTP/0.9 reply)", lines, frozenset(ids)
        )
    status = result.status if result.blocked and result.status else backend.status
    rest = None if result.blocked else _pipelined(raw, request)
    if rest is not None:
        # go-ftw reads only the first response, but nginx goes on with a complete pipelined
        # request before the end marker arrives, and its log lines fall into the window.
        try:
            second = parse_request(rest)
        except HttpParseError:
            second = None  # nginx answers 400 (or waits for the rest): nothing is logged
        if second is not None:
            _, second_result, second_lines = _transaction(engine, second)
            lines += second_lines
            ids |= second_result.logged_ids()
    response = _render_response(status, backend.headers, backend.body)
    return StageObservation(status, None, lines, frozenset(ids), response)


# ---- judging ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageVerdict:
    passed: bool
    why: str


def _ids(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "none"


def judge_stage(expected: StageOutput, seen: StageObservation) -> StageVerdict:
    """go-ftw's checks, in its order: expect_error (alone), status, response_contains, the
    log's match_regex/expect_ids/isolated, then no_match_regex/no_expect_ids."""
    if expected.expect_error:
        if seen.error is not None:
            return StageVerdict(True, f"transport error as expected ({seen.error})")
        return StageVerdict(False, f"expected a transport error, got status {seen.status}")
    if seen.error is not None:
        return StageVerdict(False, f"transport error: {seen.error}")
    if expected.status is not None and seen.status != expected.status:
        cause = f" (front end: {seen.front_end})" if seen.front_end else ""
        return StageVerdict(False, f"status {seen.status}{cause}, expected {expected.status}")
    if expected.response_contains:
        text = seen.response.decode("latin-1")
        if not re.search(go_regex_to_python(expected.response_contains), text):
            return StageVerdict(False, f"response does not match {expected.response_contains!r}")
    log = expected.log
    logged = f"logged: {_ids(seen.logged_ids)}"
    if seen.front_end:
        logged += f"; front end answered {seen.status}: {seen.front_end}"
    if log.match_regex:
        pattern = re.compile(go_regex_to_python(log.match_regex))
        if not any(pattern.search(line) for line in seen.log_lines):
            return StageVerdict(False, f"no log line matches {log.match_regex!r} ({logged})")
    missing = [i for i in log.expect_ids if i not in seen.logged_ids]
    if missing:
        return StageVerdict(False, f"expected id {_ids(missing)} not logged ({logged})")
    if expected.isolated and len(seen.logged_ids) != 1:
        return StageVerdict(False, f"isolated: expected only {_ids(log.expect_ids)} ({logged})")
    if log.no_match_regex:
        pattern = re.compile(go_regex_to_python(log.no_match_regex))
        hits = [line for line in seen.log_lines if pattern.search(line)]
        if hits:
            return StageVerdict(
                False, f"a log line matches {log.no_match_regex!r}: {hits[0][:300]} ({logged})"
            )
    unexpected = [i for i in log.no_expect_ids if i in seen.logged_ids]
    if unexpected:
        return StageVerdict(False, f"unexpected id {_ids(unexpected)} logged ({logged})")
    return StageVerdict(True, logged)


# ---- runner ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestResult:
    file: str
    test: str
    passed: bool
    why: str

    __test__ = False  # not a pytest test class

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "test": self.test, "passed": self.passed, "why": self.why}


class FtwRunner:
    """Runs go-ftw test files against one engine."""

    def __init__(
        self,
        engine: WafEngineLike,
        *,
        overrides: Overrides | None = None,
        include: re.Pattern[str] | None = None,
    ) -> None:
        self.engine = engine
        self.overrides = overrides
        self.include = include

    def run_test(self, file: FtwFile, test: FtwTest) -> TestResult:
        note = ""
        if self.overrides is not None:
            reason = self.overrides.reason_for(test)
            if reason is not None:
                test = self.overrides.apply(test)
                note = f" [output overridden: {' '.join(reason.split())}]"
        verdicts: list[StageVerdict] = []
        for stage in test.stages:
            try:
                raw = build_request(stage.input)
            except BadTestInput as exc:
                verdicts.append(StageVerdict(False, str(exc)))
                continue
            try:
                seen = run_stage(self.engine, raw)
            except Exception as exc:  # an engine fault fails this test, not the whole run
                verdicts.append(StageVerdict(False, f"engine error: {type(exc).__name__}: {exc}"))
                continue
            verdicts.append(judge_stage(stage.output, seen))
        if not verdicts:
            return TestResult(str(file.path), test.name, True, "no stages" + note)
        # go-ftw 2.3.0 records the last stage's result; earlier failures are only printed.
        last = verdicts[-1]
        why = last.why
        if len(verdicts) > 1:
            earlier = [
                f"stage {i + 1}: {v.why}" for i, v in enumerate(verdicts[:-1]) if not v.passed
            ]
            if earlier:
                why += " (earlier stages failed, not recorded: " + "; ".join(earlier) + ")"
        return TestResult(str(file.path), test.name, last.passed, why + note)

    def run_file(self, file: FtwFile) -> Iterator[TestResult]:
        for test in file.tests:
            if self.include is not None and not self.include.search(test.name):
                continue
            yield self.run_test(file, test)

    def run(
        self,
        files: Iterable[FtwFile],
        progress: Callable[[TestResult], None] | None = None,
    ) -> list[TestResult]:
        results: list[TestResult] = []
        for file in files:
            for result in self.run_file(file):
                results.append(result)
                if progress is not None:
                    progress(result)
        return results


def load_test_files(paths: Iterable[Path | str]) -> tuple[list[FtwFile], list[FtwLoadError]]:
    """Every test file under ``paths``; malformed ones come back as errors, one per file."""
    files: list[FtwFile] = []
    errors: list[FtwLoadError] = []
    for path in collect_test_files(paths):
        try:
            files.append(load_ftw_file(path))
        except FtwLoadError as exc:
            errors.append(exc)
    return files, errors


__all__ += ["load_overrides", "load_test_files"]
