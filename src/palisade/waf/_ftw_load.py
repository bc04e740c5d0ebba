"""Loading go-ftw test files (``ftw-tests-schema`` v2) and platform-override files.

The YAML is read as go-ftw 2.3.0 (Go's ``yaml.v3`` into the schema's structs) reads it:
unknown keys are ignored, a plain scalar decodes into a string field as its text (``80`` →
``"80"``, ``true`` → ``"true"``), integer and boolean fields take plain scalars only, a null
leaves the field at its default. A missing ``rule_id`` is taken from the digits of the file
name and a missing ``test_id`` from the test's 1-based position. A file that has no
document (comments only) holds no tests.

Everything else that go-ftw would refuse (a quoted number where an integer belongs, a
duplicate key, ``data`` together with ``encoded_request``, a template beyond what
:mod:`._ftw_template` implements) is one :class:`FtwLoadError` for the file, naming the
test, the field path and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ._ftw_template import TemplateError, TemplateUnsupported, render_go_template

__all__ = [
    "FtwFile",
    "FtwLoadError",
    "FtwTest",
    "LogExpectations",
    "Override",
    "Overrides",
    "Stage",
    "StageInput",
    "StageOutput",
    "collect_test_files",
    "load_ftw_file",
    "load_overrides",
]


class FtwLoadError(ValueError):
    """A test (or overrides) file go-ftw could not use: file, test, field path, reason."""

    def __init__(self, file: Path | str, reason: str, *, test: str = "", path: str = "") -> None:
        self.file = str(file)
        self.test = test
        self.path = path
        self.reason = reason
        where = self.file
        if test:
            where += f": test {test}"
        if path:
            where += f": {path}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class StageInput:
    """The request of a stage, as written (defaults as go-ftw applies them)."""

    dest_addr: str = "localhost"
    port: int = 80
    protocol: str = "http"
    method: str = "GET"
    uri: str = "/"
    version: str = "HTTP/1.1"
    headers: tuple[tuple[str, str], ...] = ()  # the `headers` map, in file order
    ordered_headers: tuple[tuple[str, str], ...] | None = None
    data: str | None = None
    encoded_data: str | None = None
    encoded_request: str | None = None
    autocomplete_headers: bool = True


@dataclass(frozen=True, slots=True)
class LogExpectations:
    expect_ids: tuple[int, ...] = ()
    no_expect_ids: tuple[int, ...] = ()
    match_regex: str = ""
    no_match_regex: str = ""


@dataclass(frozen=True, slots=True)
class StageOutput:
    """What a stage expects. ``log_contains``/``no_log_contains`` are already folded into
    ``log.match_regex``/``log.no_match_regex`` as go-ftw does after loading."""

    status: int | None = None
    response_contains: str = ""
    log: LogExpectations = field(default_factory=LogExpectations)
    expect_error: bool = False
    retry_once: bool = False
    isolated: bool = False


@dataclass(frozen=True, slots=True)
class Stage:
    input: StageInput
    output: StageOutput


@dataclass(frozen=True, slots=True)
class FtwTest:
    rule_id: int
    test_id: int
    stages: tuple[Stage, ...]
    desc: str = ""
    tags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """go-ftw's identifier, used by overrides and ``--include``: ``<rule_id>-<test_id>``."""
        return f"{self.rule_id}-{self.test_id}"


@dataclass(frozen=True, slots=True)
class FtwFile:
    path: Path
    rule_id: int
    tests: tuple[FtwTest, ...]


@dataclass(frozen=True, slots=True)
class Override:
    """One ``test_overrides`` entry: its ``output`` replaces the whole expected output."""

    rule_id: int
    test_ids: tuple[int, ...]
    stage_ids: tuple[int, ...]
    reason: str
    output: StageOutput


@dataclass(frozen=True, slots=True)
class Overrides:
    path: Path
    entries: tuple[Override, ...]

    def apply(self, test: FtwTest) -> FtwTest:
        """``test`` with the expected outputs the overrides replace (go-ftw's rule: every
        entry for the test's rule id and test id, on the listed stages or all of them)."""
        stages = list(test.stages)
        for entry in self.entries:
            if entry.rule_id != test.rule_id or test.test_id not in entry.test_ids:
                continue
            for index, stage in enumerate(stages):
                if not entry.stage_ids or index in entry.stage_ids:
                    stages[index] = replace(stage, output=entry.output)
        return replace(test, stages=tuple(stages))

    def reason_for(self, test: FtwTest) -> str | None:
        for entry in self.entries:
            if entry.rule_id == test.rule_id and test.test_id in entry.test_ids:
                return entry.reason.strip()
        return None


# ---- YAML as yaml.v3 gives it ---------------------------------------------------------------


class _Plain(str):
    """A plain (unquoted) scalar: only these decode into integer and boolean fields."""

    __slots__ = ()


class _DuplicateKey(yaml.YAMLError):
    pass


_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
# yaml.v3 into a bool: YAML 1.2's true/false from plain scalars only; YAML 1.1's words from
# any scalar (it compares the string), for compatibility.
_TRUE_12, _FALSE_12 = frozenset({"true", "True", "TRUE"}), frozenset({"false", "False", "FALSE"})
_TRUE_11 = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
_FALSE_11 = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9_]*|0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]+|0[bB][01_]+)")


class _Loader(getattr(yaml, "CBaseLoader", yaml.BaseLoader)):  # type: ignore[misc]
    """No implicit typing (every scalar a string, plain ones marked), nulls as None,
    duplicate mapping keys an error — as yaml.v3 decodes into go-ftw's structs."""


def _construct_scalar(loader: _Loader, node: yaml.ScalarNode) -> str | None:
    value = loader.construct_scalar(node)
    if not node.style:  # None from the Python parser, "" from libyaml's
        return None if value in _NULLS else _Plain(value)
    return str(value)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | None):
            raise _DuplicateKey(
                f"line {key_node.start_mark.line + 1}: a mapping key must be a scalar"
            )
        if key in mapping:
            raise _DuplicateKey(
                f"line {key_node.start_mark.line + 1}: mapping key {key!r} already defined"
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_scalar)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FtwLoadError(path, f"cannot read: {exc}") from None
    try:
        for document in yaml.load_all(text, Loader=_Loader):
            return document  # yaml.v3 decodes the first document only
    except yaml.YAMLError as exc:
        raise FtwLoadError(path, f"invalid YAML: {' '.join(str(exc).split())}") from None
    return None


# ---- typed fields ------------------------------------------------------------------------------


class _Fields:
    """Typed access to one mapping, with errors naming the file, test and field path."""

    def __init__(self, file: Path, test: str, path: str, mapping: object) -> None:
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise FtwLoadError(
                file, f"expected a mapping, got {_kind(mapping)}", test=test, path=path
            )
        self.file, self.test, self.path, self.mapping = file, test, path, mapping

    def error(self, key: str, reason: str) -> FtwLoadError:
        return FtwLoadError(self.file, reason, test=self.test, path=self._at(key))

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def sub(self, key: str) -> _Fields:
        return _Fields(self.file, self.test, self._at(key), self.mapping.get(key))

    def item(self, key: str, index: int, value: object) -> _Fields:
        """The mapping ``value``, element ``index`` of the list under ``key``."""
        return _Fields(self.file, self.test, self._at(f"{key}[{index}]"), value)

    def has(self, key: str) -> bool:
        return self.mapping.get(key) is not None

    def raw(self, key: str) -> object:
        return self.mapping.get(key)

    def string(self, key: str) -> str | None:
        value = self.mapping.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self.error(key, f"expected a string, got {_kind(value)}")

    def integer(self, key: str, *, unsigned: bool = False) -> int | None:
        value = self.mapping.get(key)
        if value is None:
            return None
        return _to_int(value, unsigned, lambda reason: self.error(key, reason))

    def boolean(self, key: str) -> bool | None:
        value = self.mapping.get(key)
        if value is None:
            return None
        if value in _TRUE_11 or (isinstance(value, _Plain) and value in _TRUE_12):
            return True
        if value in _FALSE_11 or (isinstance(value, _Plain) and value in _FALSE_12):
            return False
        raise self.error(key, f"expected a boolean, got {_describe(value)}")

    def integers(self, key: str, *, unsigned: bool = False) -> tuple[int, ...]:
        value = self.mapping.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of integers, got {_describe(value)}")
        return tuple(
            _to_int(item, unsigned, lambda reason, i=i: self.error(f"{key}[{i}]", reason))
            for i, item in enumerate(value)
        )

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.mapping.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {_describe(value)}")
        return tuple(value)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self.mapping.get(key)
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping of names to values, got {_kind(value)}")
        pairs: list[tuple[str, str]] = []
        for name, item in value.items():
            if item is not None and not isinstance(item, str):
                raise self.error(f"{key}.{name}", f"expected a string, got {_kind(item)}")
            pairs.append(("" if name is None else name, "" if item is None else item))
        return tuple(pairs)


def _to_int(value: object, unsigned: bool, error: Any) -> int:
    if isinstance(value, _Plain) and _INT.fullmatch(value):
        text = value.replace("_", "")
        if re.fullmatch(r"[-+]?0[0-7]+", text):
            text = text.replace("0", "0o", 1)  # YAML 1.1 octal, as yaml.v3 keeps accepting
        number = int(text, 0)
        if unsigned and number < 0:
            raise error(f"expected a non-negative integer, got {number}")
        return number
    if isinstance(value, _Plain) and _FLOAT.fullmatch(value):
        number_f = float(value)
        if number_f.is_integer() and not (unsigned and number_f < 0):
            return int(number_f)  # yaml.v3 stores an integral float into an int field
    raise error(f"expected an integer, got {_describe(value)}")


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return "a scalar"


def _describe(value: object) -> str:
    if isinstance(value, _Plain):
        return repr(str(value))
    if isinstance(value, str):
        return f"the quoted string {value!r}"
    return _kind(value)


# ---- schema ------------------------------------------------------------------------------------


def _parse_input(fields: _Fields) -> StageInput:
    defaults = StageInput()
    autocomplete = fields.boolean("autocomplete_headers")
    stop_magic = fields.boolean("stop_magic")  # the old name, with the opposite meaning
    if autocomplete is None:
        autocomplete = True if stop_magic is None else not stop_magic
    ordered: tuple[tuple[str, str], ...] | None = None
    raw_ordered = fields.raw("ordered_headers")
    if raw_ordered is not None:
        if not isinstance(raw_ordered, list):
            raise fields.error("ordered_headers", f"expected a list, got {_kind(raw_ordered)}")
        items: list[tuple[str, str]] = []
        for index, item in enumerate(raw_ordered):
            entry = fields.item("ordered_headers", index, item)
            items.append((entry.string("name") or "", entry.string("value") or ""))
        ordered = tuple(items)
    data = fields.string("data")
    encoded_request = fields.string("encoded_request")
    if data and encoded_request:
        raise fields.error("data", "'data' and 'encoded_request' must not be set together")
    port = fields.integer("port")
    return StageInput(
        dest_addr=fields.string("dest_addr") or defaults.dest_addr,
        port=defaults.port if port is None else port,
        protocol=fields.string("protocol") or defaults.protocol,
        method=_default(fields.string("method"), defaults.method),
        uri=_default(fields.string("uri"), defaults.uri),
        version=_default(fields.string("version"), defaults.version),
        headers=fields.string_map("headers"),
        ordered_headers=ordered,
        data=data,
        encoded_data=fields.string("encoded_data"),
        encoded_request=encoded_request or None,
        autocomplete_headers=autocomplete,
    )


def _default(value: str | None, default: str) -> str:
    """go-ftw's getters: only an absent (nil) field takes the default; "" stays ""."""
    return default if value is None else value


def _parse_output(fields: _Fields) -> StageOutput:
    log = fields.sub("log")
    expectations = LogExpectations(
        expect_ids=log.integers("expect_ids", unsigned=True),
        no_expect_ids=log.integers("no_expect_ids", unsigned=True),
        match_regex=log.string("match_regex") or "",
        no_match_regex=log.string("no_match_regex") or "",
    )
    # The old fields only count when the new ones are empty (go-ftw's post-load step).
    log_contains = fields.string("log_contains") or ""
    no_log_contains = fields.string("no_log_contains") or ""
    if log_contains and not log.has("expect_ids") and not expectations.match_regex:
        expectations = replace(expectations, match_regex=log_contains)
    if no_log_contains and not log.has("no_expect_ids") and not expectations.no_match_regex:
        expectations = replace(expectations, no_match_regex=no_log_contains)
    for key in ("match_regex", "no_match_regex"):
        pattern = getattr(expectations, key)
        if pattern:
            try:
                re.compile(go_regex_to_python(pattern))
            except re.error as exc:
                raise log.error(key, f"not a valid regular expression: {exc}") from None
    if fields.has("response_contains"):
        try:
            re.compile(go_regex_to_python(fields.string("response_contains") or ""))
        except re.error as exc:
            raise fields.error(
                "response_contains", f"not a valid regular expression: {exc}"
            ) from None
    isolated = fields.boolean("isolated") or False
    if isolated and len(expectations.expect_ids) != 1:
        raise fields.error("isolated", "'isolated' needs exactly one 'expect_ids' entry")
    raw_status = fields.raw("status")
    if isinstance(raw_status, list):
        raise fields.error("status", "expected one integer (schema v2), got a list (schema v1)")
    return StageOutput(
        status=fields.integer("status"),
        response_contains=fields.string("response_contains") or "",
        log=expectations,
        expect_error=fields.boolean("expect_error") or False,
        retry_once=fields.boolean("retry_once") or False,
        isolated=isolated,
    )


def go_regex_to_python(pattern: str) -> str:
    """A Go (RE2) pattern as Python ``re`` reads it: ``\\z`` is Python's ``\\Z``; Python's
    ``$`` also matches before a final newline, RE2's (without ``m``) does not."""
    multiline = re.search(r"\(\?[a-zA-Z]*m", pattern) is not None
    out: list[str] = []
    index = 0
    in_class = False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            pair = pattern[index : index + 2]
            out.append("\\Z" if pair == "\\z" and not in_class else pair)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append("\\Z" if char == "$" and not in_class and not multiline else char)
        index += 1
    return "".join(out)


def _check_template(data: str | None, error: Any) -> None:
    if data is None or "{{" not in data:
        return
    try:
        render_go_template(data)
    except TemplateUnsupported as exc:
        raise error(f"template not supported: {exc}") from None
    except TemplateError:
        return  # go-ftw sends no body; that is the request this stage makes


def _parse_test(file: Path, rule_id: int, position: int, raw: object, index: int) -> FtwTest:
    fields = _Fields(file, f"#{position}", f"tests[{index}]", raw)
    test_id = fields.integer("test_id", unsigned=True) or position
    name = f"{rule_id}-{test_id}"
    fields = _Fields(file, name, f"tests[{index}]", raw)
    raw_stages = fields.raw("stages")
    if raw_stages is None:
        raw_stages = []
    if not isinstance(raw_stages, list):
        raise fields.error("stages", f"expected a list of stages, got {_kind(raw_stages)}")
    stages: list[Stage] = []
    for stage_index, raw_stage in enumerate(raw_stages):
        stage = fields.item("stages", stage_index, raw_stage)
        if stage.has("stage") and not stage.has("input"):
            raise stage.error("stage", "schema v1 'stage:' wrapper; v2 puts input/output here")
        stage_input = _parse_input(stage.sub("input"))
        _check_template(stage_input.data, lambda reason, s=stage: s.error("input.data", reason))
        stages.append(Stage(input=stage_input, output=_parse_output(stage.sub("output"))))
    return FtwTest(
        rule_id=rule_id,
        test_id=test_id,
        stages=tuple(stages),
        desc=fields.string("desc") or "",
        tags=fields.strings("tags"),
    )


def load_ftw_file(path: Path | str) -> FtwFile:
    """One go-ftw test file; raises :class:`FtwLoadError` (one per file) when malformed."""
    path = Path(path)
    document = _read_yaml(path)
    top = _Fields(path, "", "", document)
    rule_id = top.integer("rule_id", unsigned=True) or 0
    if rule_id == 0:
        digits = re.search(r"\d+", path.name)
        if digits is None:
            raise top.error("rule_id", "missing, and the file name has no digits to fall back on")
        rule_id = int(digits.group())
    raw_tests = top.raw("tests")
    if raw_tests is None:
        raw_tests = []
    if not isinstance(raw_tests, list):
        raise top.error("tests", f"expected a list of tests, got {_kind(raw_tests)}")
    tests = tuple(
        _parse_test(path, rule_id, index + 1, raw, index) for index, raw in enumerate(raw_tests)
    )
    seen: dict[int, int] = {}
    for index, test in enumerate(tests):
        if test.test_id in seen:
            raise FtwLoadError(
                path,
                f"test_id {test.test_id} already used by tests[{seen[test.test_id]}]",
                test=test.name,
                path=f"tests[{index}].test_id",
            )
        seen[test.test_id] = index
    return FtwFile(path=path, rule_id=rule_id, tests=tests)


def load_overrides(path: Path | str) -> Overrides:
    """A go-ftw platform-overrides file (``test_overrides`` entries)."""
    path = Path(path)
    top = _Fields(path, "", "", _read_yaml(path))
    raw_entries = top.raw("test_overrides")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise top.error("test_overrides", f"expected a list, got {_kind(raw_entries)}")
    entries: list[Override] = []
    for index, raw in enumerate(raw_entries):
        entry = top.item("test_overrides", index, raw)
        rule_id = entry.integer("rule_id", unsigned=True)
        if rule_id is None:
            raise entry.error("rule_id", "missing")
        entries.append(
            Override(
                rule_id=rule_id,
                test_ids=entry.integers("test_ids", unsigned=True),
                stage_ids=entry.integers("stage_ids", unsigned=True),
                reason=entry.string("reason") or "",
                output=_parse_output(entry.sub("output")),
            )
        )
    return Overrides(path=path, entries=tuple(entries))


def collect_test_files(paths: Iterable[Path | str]) -> list[Path]:
    """The ``*.yaml``/``*.yml`` files named or found (recursively, sorted) under ``paths``."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            )
        else:
            found.append(path)
    return found
