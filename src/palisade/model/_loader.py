"""Reading resources from YAML and JSON: every problem, with file, document, path and line.

Reading goes: text → documents (multi-document YAML, or JSON as one object, a list, or a
stream of objects) → ``List`` objects flattened → each document dispatched on
(apiVersion, kind) to its model → duplicates across everything loaded reported. Nothing
stops at the first problem, and no input makes these functions raise.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from palisade.model._admin import (
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
)
from palisade.model._calico import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    HostEndpoint,
    IPPool,
    NetworkPolicy,
    NetworkSet,
    Profile,
    StagedGlobalNetworkPolicy,
    StagedNetworkPolicy,
    Tier,
)
from palisade.model._errors import FieldIssues, Loc, ModelError, Problem, format_path
from palisade.model._k8s import K8sNetworkPolicy, StagedKubernetesNetworkPolicy
from palisade.model._waf import WebApplicationFirewall
from palisade.model._workloads import (
    DaemonSet,
    Deployment,
    Namespace,
    Pod,
    ReplicaSet,
    Service,
    ServiceAccount,
    StatefulSet,
)

Resource: TypeAlias = (
    Tier
    | NetworkPolicy
    | GlobalNetworkPolicy
    | StagedNetworkPolicy
    | StagedGlobalNetworkPolicy
    | StagedKubernetesNetworkPolicy
    | NetworkSet
    | GlobalNetworkSet
    | HostEndpoint
    | Profile
    | IPPool
    | K8sNetworkPolicy
    | AdminNetworkPolicy
    | BaselineAdminNetworkPolicy
    | ClusterNetworkPolicy
    | Namespace
    | Pod
    | Service
    | ServiceAccount
    | Deployment
    | StatefulSet
    | DaemonSet
    | ReplicaSet
    | WebApplicationFirewall
)

#: Every resource class, in the order of the ``Resource`` union.
RESOURCE_CLASSES: tuple[type[Resource], ...] = (
    Tier,
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    NetworkSet,
    GlobalNetworkSet,
    HostEndpoint,
    Profile,
    IPPool,
    K8sNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
    ClusterNetworkPolicy,
    Namespace,
    Pod,
    Service,
    ServiceAccount,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    WebApplicationFirewall,
)


def _kind_of(cls: type[Resource]) -> str:
    return str(cls.model_fields["kind"].default)


_CLASSES: dict[tuple[str, str], type[Resource]] = {
    (cls.API_VERSION, _kind_of(cls)): cls for cls in RESOURCE_CLASSES
}
_API_VERSIONS_BY_KIND: dict[str, list[str]] = {}
for _api_version, _kind in _CLASSES:
    _API_VERSIONS_BY_KIND.setdefault(_kind, []).append(_api_version)

FILE_SUFFIXES = (".yaml", ".yml", ".json")

# Documents deeper than this are not Kubernetes objects; the limit keeps every later step
# (validation, dumping) far from Python's recursion limit.
MAX_DEPTH = 100
# YAML aliases can make a small text expand enormously ("billion laughs").
MAX_NODES = 200_000
MAX_LIST_NESTING = 3


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a loaded resource came from; ``path`` is ``items[i]`` inside a List."""

    file: str
    document: int
    path: str = ""
    line: int | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Resources that loaded cleanly, every problem (errors), and warnings.

    A document with any problem contributes no resource. Of two resources with the same
    :attr:`~ResourceBase.key`, the first is kept and the second reported as a problem.
    ``origins`` maps each kept resource's key to where it was read.
    """

    resources: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    origins: dict[tuple[str, str | None, str], Origin] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------------ YAML


# libyaml's parser when PyYAML was built with it (about ten times faster on large dumps); the
# pure-Python one otherwise. Both give the same nodes, marks and errors.
_SafeLoaderBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Fallback(Exception):
    """The fast constructor met something only the full one handles (a recursive alias)."""


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_IN_PROGRESS = object()
# Scalars whose safe constructors are plain functions of the node (no state, no generators).
_PLAIN_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float")
)


class _YamlLoader(_SafeLoaderBase):  # type: ignore[valid-type,misc]
    """Safe YAML with only JSON-compatible values; timestamps stay strings, as in Kubernetes.

    Two shortcuts, for speed only (the values are those of PyYAML's safe constructor):
    implicit tags are resolved once per distinct (scalar, style) in a loader (a document dump
    repeats its keys and many values), and plain strings, mappings and sequences are built
    directly from the nodes, everything else (numbers, booleans, null, merge keys, rejected
    tags) by the safe constructor itself.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._resolved: dict[str, str] = {}  # plain scalar → tag

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        # Only plain scalars have implicit tags (a quoted one is a string whatever it holds);
        # this loader has no path resolvers, so the tag depends on the scalar alone.
        if kind is ScalarNode and implicit[0]:
            tag = self._resolved.get(value)
            if tag is None:
                tag = self._resolved[value] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]

    def construct_document(self, node: Node) -> Any:
        try:
            data = self._build(node, {})
        except _Fallback:
            return super().construct_document(node)
        # What the safe constructor's construct_document resets after each document.
        self.constructed_objects: dict[Node, Any] = {}
        self.recursive_objects: dict[Node, None] = {}
        self.deep_construct = False
        return data

    def _build(self, node: Node, built: dict[int, Any]) -> Any:
        cls = node.__class__
        tag = node.tag
        if cls is ScalarNode:
            if tag == _STR_TAG:
                return node.value
            if tag in _PLAIN_SCALAR_TAGS:
                return self.yaml_constructors[tag](self, node)
            return self.construct_object(node, deep=True)
        if cls is MappingNode and tag == _MAP_TAG:
            done = built.get(id(node))
            if done is not None:
                if done is _IN_PROGRESS:
                    raise _Fallback
                return done
            pairs = node.value
            for key, _ in pairs:
                if key.__class__ is not ScalarNode or key.tag != _STR_TAG:
                    raise _Fallback  # merge keys, non-string keys: the full constructor
            built[id(node)] = _IN_PROGRESS
            build = self._build
            mapping = {key.value: build(value, built) for key, value in pairs}
            built[id(node)] = mapping
            return mapping
        if cls is SequenceNode and tag == _SEQ_TAG:
            done = built.get(id(node))
            if done is not None:
                if done is _IN_PROGRESS:
                    raise _Fallback
                return done
            built[id(node)] = _IN_PROGRESS
            build = self._build
            sequence = [build(item, built) for item in node.value]
            built[id(node)] = sequence
            return sequence
        raise _Fallback


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _reject_tag(loader: yaml.SafeLoader, node: Node) -> Any:
    raise ConstructorError(
        None, None, f"unsupported YAML type {node.tag} (only JSON-compatible data)", node.start_mark
    )


for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _YamlLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _reject_tag)

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(slots=True)
class _RawDocument:
    index: int
    data: Any
    node: Node | None = None
    line_offset: int = 0


def _error_line(err: BaseException, text: str) -> int | None:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = getattr(mark, "line", None)
    if isinstance(line, int):
        return line + 1
    position = getattr(err, "position", None)  # the reader's errors give a character index
    if isinstance(position, int) and 0 <= position <= len(text):
        return text.count("\n", 0, position) + 1
    return None


def _yaml_error_reason(err: BaseException) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        parts = [p for p in (err.context, err.problem) if p]
        return "invalid YAML: " + ("; ".join(parts) if parts else type(err).__name__)
    if isinstance(err, yaml.reader.ReaderError):
        return (
            f"invalid YAML: unacceptable character #x{err.character:04x}"
            if isinstance(err.character, int)
            else "invalid YAML: text cannot be decoded"
        )
    if isinstance(err, RecursionError):
        return "invalid YAML: nested too deeply"
    return f"invalid YAML: {err}"


def _check_nodes(root: Node, file: str, index: int) -> list[Problem]:
    """Duplicate keys, alias cycles, excessive depth or expansion."""
    problems: list[Problem] = []
    count = 0

    def visit(node: Node, loc: Loc, ancestors: list[Node]) -> bool:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            problems.append(Problem(file, index, "", "document is too large", None))
            return False
        if any(node is a for a in ancestors):
            problems.append(
                Problem(file, index, format_path(loc), "recursive YAML alias", _line(node))
            )
            return False
        if len(ancestors) >= MAX_DEPTH:
            problems.append(
                Problem(file, index, "", f"document is nested deeper than {MAX_DEPTH} levels", None)
            )
            return False
        ancestors.append(node)
        try:
            if isinstance(node, MappingNode):
                seen: set[str] = set()
                for key, value in node.value:
                    segment: str | int = key.value if isinstance(key, ScalarNode) else "?"
                    if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                        if key.value in seen:
                            problems.append(
                                Problem(
                                    file,
                                    index,
                                    format_path((*loc, key.value)),
                                    f"duplicate key {key.value!r}",
                                    _line(key),
                                )
                            )
                        seen.add(key.value)
                    if not visit(value, (*loc, segment), ancestors):
                        return False
            elif isinstance(node, SequenceNode):
                for position, item in enumerate(node.value):
                    if not visit(item, (*loc, position), ancestors):
                        return False
        finally:
            ancestors.pop()
        return True

    visit(root, (), [])
    return problems


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _read_yaml(text: str, file: str) -> tuple[list[_RawDocument], list[Problem]]:
    documents: list[_RawDocument] = []
    problems: list[Problem] = []
    index = 1
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(text)
        while loader.check_node():
            node = loader.get_node()
            node_problems = _check_nodes(node, file, index) if node is not None else []
            if node_problems:
                problems.extend(node_problems)
            elif node is not None:
                documents.append(_RawDocument(index, loader.construct_document(node), node))
            index += 1
    except Exception as err:  # PyYAML raises several types on bad input; all are problems
        problems.append(Problem(file, index, "", _yaml_error_reason(err), _error_line(err, text)))
    finally:
        if loader is not None:
            loader.dispose()
    return documents, problems


# ------------------------------------------------------------------------ JSON


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\n\r":
        position += 1
    return position


def _json_node(text: str) -> Node | None:
    """A YAML node tree for a JSON text, used only to find line numbers."""
    try:
        return yaml.compose(text, Loader=_YamlLoader)
    except Exception:  # line numbers are a nicety; the JSON parser decides validity
        return None


def _read_json(text: str, file: str) -> tuple[list[_RawDocument], list[Problem]]:
    """One JSON value, a list of objects, or a stream of values (JSON lines)."""
    decoder = json.JSONDecoder()
    values: list[tuple[Any, int, int]] = []
    problems: list[Problem] = []
    position = _skip_space(text, 0)
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            problems.append(
                Problem(file, len(values) + 1, "", f"invalid JSON: {err.msg}", err.lineno)
            )
            break
        except RecursionError:
            problems.append(Problem(file, len(values) + 1, "", "invalid JSON: nested too deeply"))
            break
        values.append((value, position, end))
        position = _skip_space(text, end)
    documents: list[_RawDocument] = []
    if len(values) == 1 and isinstance(values[0][0], list):
        value, start, end = values[0]
        node = _json_node(text[start:end])
        offset = text.count("\n", 0, start)
        for position, item in enumerate(value):
            item_node = None
            if isinstance(node, SequenceNode) and position < len(node.value):
                item_node = node.value[position]
            documents.append(_RawDocument(position + 1, item, item_node, offset))
        return documents, problems
    for number, (value, start, end) in enumerate(values, start=1):
        offset = text.count("\n", 0, start)
        documents.append(_RawDocument(number, value, _json_node(text[start:end]), offset))
    return documents, problems


def _scan(value: Any) -> list[tuple[Loc, str]]:
    """Problems no model should see: excessive depth, and numbers JSON cannot carry."""
    issues: list[tuple[Loc, str]] = []
    stack: list[tuple[Any, Loc]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            return [((), f"document is nested deeper than {MAX_DEPTH} levels")]
        if isinstance(item, float) and not math.isfinite(item):
            issues.append((loc, "must be a finite number (JSON has no Infinity or NaN)"))
        elif isinstance(item, Mapping):
            stack.extend(
                (v, (*loc, k if isinstance(k, str | int) else str(k))) for k, v in item.items()
            )
        elif isinstance(item, list | tuple):
            stack.extend((v, (*loc, i)) for i, v in enumerate(item))
    return sorted(issues, key=lambda issue: format_path(issue[0]))


# ------------------------------------------------------------------ documents


def _node_line(node: Node | None, loc: Loc, offset: int) -> int | None:
    """The line of the deepest node along ``loc`` (a key's own line for mapping entries)."""
    if node is None:
        return None
    line = _line(node)
    current: Node = node
    for segment in loc:
        if isinstance(current, MappingNode):
            match = None
            for key, value in current.value:
                if isinstance(key, ScalarNode) and key.value == str(segment):
                    match = (key, value)
            if match is None:
                break
            line, current = _line(match[0]), match[1]
        elif (
            isinstance(current, SequenceNode)
            and isinstance(segment, int)
            and 0 <= segment < len(current.value)
        ):
            current = current.value[segment]
            line = _line(current)
        else:
            break
    return line + offset


# Pydantic names some validation steps in error locations (``function-after[...]``); they
# are not part of the document.
_VALIDATOR_SEGMENT = re.compile(
    r"(function-(before|after|wrap|plain)|union|tagged-union|nullable|chain|lax-or-strict"
    r"|json-or-python|constrained-\w+)\[.*\]",
    re.DOTALL,
)


def _clean_loc(loc: Sequence[str | int]) -> Loc:
    """Drop pydantic's markers (``[key]``, validator names) from an error location."""
    return tuple(
        segment
        for segment in loc
        if not (
            isinstance(segment, str)
            and (segment == "[key]" or _VALIDATOR_SEGMENT.fullmatch(segment))
        )
    )


def _reason(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    message = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


@dataclass(slots=True)
class _Context:
    file: str
    document: int
    node: Node | None
    line_offset: int

    def problem(self, loc: Loc, reason: str) -> Problem:
        return Problem(
            self.file,
            self.document,
            format_path(loc),
            reason,
            _node_line(self.node, loc, self.line_offset),
        )


def _extra_fields(value: Any, loc: Loc) -> Iterator[Loc]:
    """Locations of keys kept by loose models (fields Kubernetes may define but we don't)."""
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            yield (*loc, key)
        for name, info in type(value).model_fields.items():
            yield from _extra_fields(getattr(value, name), (*loc, info.alias or name))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _extra_fields(item, (*loc, position))


def _validate(
    data: Mapping[Any, Any], prefix: Loc, ctx: _Context
) -> tuple[Resource | None, list[Problem], list[Problem]]:
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    problems: list[Problem] = []
    for alias, value in (("apiVersion", api_version), ("kind", kind)):
        if value is None:
            problems.append(ctx.problem((*prefix, alias), "required field is missing"))
        elif not isinstance(value, str):
            problems.append(ctx.problem((*prefix, alias), "must be a string"))
    if problems:
        return None, problems, []
    assert isinstance(api_version, str) and isinstance(kind, str)
    cls = _CLASSES.get((api_version, kind))
    if cls is None:
        if kind in _API_VERSIONS_BY_KIND:
            expected = " or ".join(repr(v) for v in _API_VERSIONS_BY_KIND[kind])
            return (
                None,
                [
                    ctx.problem(
                        (*prefix, "apiVersion"),
                        f"unsupported apiVersion {api_version!r} for kind {kind} "
                        f"(expected {expected})",
                    )
                ],
                [],
            )
        return (
            None,
            [ctx.problem((*prefix, "kind"), f"unknown kind {kind!r} (apiVersion {api_version!r})")],
            [],
        )
    try:
        context = {"name_rule": cls.NAME_RULE, "namespaced": cls.NAMESPACED}
        resource = cls.model_validate(data, by_alias=True, by_name=False, context=context)
    except ValidationError as err:
        for error in err.errors():
            loc = _clean_loc(error["loc"])
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, FieldIssues):
                problems.extend(ctx.problem((*prefix, *loc, *sub), r) for sub, r in cause.issues)
            else:
                problems.append(ctx.problem((*prefix, *loc), _reason(error)))
        return None, problems, []
    warnings = [
        ctx.problem((*prefix, *loc), "unknown field (kept, but not used)")
        for loc in _extra_fields(resource, ())
    ]
    return resource, [], warnings


def _is_list(data: Mapping[Any, Any]) -> bool:
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind.endswith("List"):
        return False
    return kind == "List" or (kind not in _API_VERSIONS_BY_KIND and "items" in data)


@dataclass(slots=True)
class _Parsed:
    resource: Resource
    origin: Origin
    loc: Loc
    name_line: int | None


def _parse_value(
    data: Any, prefix: Loc, ctx: _Context, nesting: int
) -> tuple[list[_Parsed], list[Problem], list[Problem]]:
    if not isinstance(data, Mapping):
        what = "a list" if isinstance(data, list) else type(data).__name__
        return (
            [],
            [ctx.problem(prefix, f"expected a mapping (a Kubernetes object), got {what}")],
            [],
        )
    if not _is_list(data):
        resource, problems, warnings = _validate(data, prefix, ctx)
        parsed = []
        if resource is not None:
            line = _node_line(ctx.node, prefix, ctx.line_offset)
            origin = Origin(ctx.file, ctx.document, format_path(prefix), line)
            name_loc = (*prefix, "metadata", "name")
            parsed.append(_Parsed(resource, origin, name_loc, ctx.problem(name_loc, "").line))
        return parsed, problems, warnings
    items = data.get("items")
    if items is None:
        return [], [], []
    if not isinstance(items, list):
        return [], [ctx.problem((*prefix, "items"), "items must be a list")], []
    if nesting >= MAX_LIST_NESTING:
        return [], [ctx.problem(prefix, "Lists are nested too deeply")], []
    kind = str(data.get("kind"))
    item_kind = kind[: -len("List")] if kind != "List" else None
    results: list[_Parsed] = []
    problems = []
    warnings = []
    for position, item in enumerate(items):
        if item_kind and isinstance(item, Mapping) and "kind" not in item:
            # Typed lists (``NetworkPolicyList``) may leave kind and apiVersion off items.
            item = {"kind": item_kind, "apiVersion": data.get("apiVersion"), **item}
        parsed, item_problems, item_warnings = _parse_value(
            item, (*prefix, "items", position), ctx, nesting + 1
        )
        results.extend(parsed)
        problems.extend(item_problems)
        warnings.extend(item_warnings)
    return results, problems, warnings


class _Collector:
    def __init__(self) -> None:
        self.result = LoadResult()

    def add_text(self, text: str, file: str) -> None:
        reader = _read_json if file.lower().endswith(".json") else _read_yaml
        documents, problems = reader(text, file)
        for document in documents:
            if document.data is None:
                continue
            ctx = _Context(file, document.index, document.node, document.line_offset)
            scanned = _scan(document.data)
            if scanned:
                problems.extend(ctx.problem(loc, reason) for loc, reason in scanned)
                continue
            parsed, document_problems, warnings = _parse_value(document.data, (), ctx, 0)
            problems.extend(document_problems)
            self.result.warnings.extend(warnings)
            for item in parsed:
                duplicate = self._add(item)
                if duplicate is not None:
                    problems.append(duplicate)
        # A reader's problem (bad YAML in document 3) comes after the documents before it.
        self.result.problems.extend(sorted(problems, key=lambda problem: problem.document))

    def _add(self, item: _Parsed) -> Problem | None:
        key = item.resource.key
        first = self.result.origins.get(key)
        if first is not None:
            kind, namespace, name = key
            where = f"{first.file}:{first.document}"
            if first.path:
                where += f" ({first.path})"
            return Problem(
                item.origin.file,
                item.origin.document,
                format_path(item.loc),
                f"duplicate {kind} {namespace + '/' if namespace else ''}{name}: "
                f"already defined at {where}",
                item.name_line,
            )
        self.result.resources.append(item.resource)
        self.result.origins[key] = item.origin
        return None

    def add_file(self, path: Path) -> None:
        file = str(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            self.result.problems.append(Problem(file, 0, "", f"cannot read file: {err.strerror}"))
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            self.result.problems.append(
                Problem(file, 0, "", f"file is not UTF-8 (byte {err.start})", None)
            )
            return
        self.add_text(text, file)


def load_text(text: str, source: str) -> LoadResult:
    """Load resources from a text; ``source`` names it in problems (``.json`` selects JSON)."""
    collector = _Collector()
    collector.add_text(text, source)
    return collector.result


def _files_under(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.lower().endswith(FILE_SUFFIXES):
                found.append(Path(root) / name)
    return sorted(found)


def load_paths(paths: Sequence[str | Path]) -> LoadResult:
    """Load files and directories (recursively: ``.yaml``, ``.yml``, ``.json``, sorted)."""
    collector = _Collector()
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            for file in _files_under(path):
                collector.add_file(file)
        elif path.exists():
            collector.add_file(path)
        else:
            collector.result.problems.append(Problem(str(path), 0, "", "no such file or directory"))
    return collector.result


def parse_document(
    doc: Mapping[str, Any], *, source: str = "<document>", document: int = 1
) -> Resource:
    """Validate one document (a mapping) into its resource; raise :class:`ModelError`.

    ``source`` and ``document`` only label the problems. ``List`` objects hold several
    resources and are rejected here; load them with :func:`load_text`.
    """
    ctx = _Context(source, document, None, 0)
    if isinstance(doc, Mapping) and _is_list(doc):
        raise ModelError([ctx.problem(("kind",), "a List holds several resources; use load_text")])
    scanned = _scan(doc)
    if scanned:
        raise ModelError([ctx.problem(loc, reason) for loc, reason in scanned])
    parsed, problems, _warnings = _parse_value(doc, (), ctx, MAX_LIST_NESTING)
    if problems or not parsed:
        raise ModelError(problems or [ctx.problem((), "no resource in document")])
    return parsed[0].resource
