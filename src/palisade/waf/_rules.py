"""SecLang directives → a compiled, indexed rule set (collect → compile → index).

:func:`compile_directives` walks the reader's directives once to *collect* rules, chains,
markers, default actions, exceptions (``SecRuleRemove*``, ``SecRuleUpdate*``) and engine
settings; then *compiles* each rule (variables, operator, transformations, actions) and
*indexes* the survivors per phase in file order. Every problem carries (file, line, reason);
the caller raises when there is any, so nothing is ever partially loaded.

Where a multi-pattern pre-filter plugs in: :class:`RuleSet.phases` holds, per phase, the
rules in evaluation order; a pre-filter would be built here from each rule's operator
(``@rx`` literals, ``@pm`` phrases) and consulted by the engine before running a rule's
operator over its values (see :meth:`palisade.waf._engine.Transaction._run_rule`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._macros import Macro, compile_macro, has_macro
from ._seclang import Directive, Problem

PHASE_NAMES = {"request": 2, "response": 4, "logging": 5}
SEVERITIES = {
    "EMERGENCY": 0,
    "ALERT": 1,
    "CRITICAL": 2,
    "ERROR": 3,
    "WARNING": 4,
    "NOTICE": 5,
    "INFO": 6,
    "DEBUG": 7,
}

# Collections addressed by key (``ARGS:foo``); everything else in VARIABLES is a scalar.
KEYED = frozenset(
    {
        "ARGS",
        "ARGS_GET",
        "ARGS_POST",
        "ARGS_NAMES",
        "ARGS_GET_NAMES",
        "ARGS_POST_NAMES",
        "REQUEST_HEADERS",
        "REQUEST_HEADERS_NAMES",
        "REQUEST_COOKIES",
        "REQUEST_COOKIES_NAMES",
        "RESPONSE_HEADERS",
        "RESPONSE_HEADERS_NAMES",
        "FILES",
        "FILES_NAMES",
        "FILES_SIZES",
        "FILES_TMPNAMES",
        "FILES_TMP_CONTENT",
        "MULTIPART_PART_HEADERS",
        "MATCHED_VARS",
        "MATCHED_VARS_NAMES",
        "TX",
        "IP",
        "GLOBAL",
        "SESSION",
        "USER",
        "RESOURCE",
        "XML",
        "ENV",
        "GEO",
        "RULE",
    }
)
SCALARS = frozenset(
    {
        "ARGS_COMBINED_SIZE",
        "AUTH_TYPE",
        "DURATION",
        "FILES_COMBINED_SIZE",
        "FULL_REQUEST",
        "FULL_REQUEST_LENGTH",
        "HIGHEST_SEVERITY",
        "INBOUND_DATA_ERROR",
        "MATCHED_VAR",
        "MATCHED_VAR_NAME",
        "MODSEC_BUILD",
        "MSC_PCRE_LIMITS_EXCEEDED",
        "MULTIPART_BOUNDARY_QUOTED",
        "MULTIPART_BOUNDARY_WHITESPACE",
        "MULTIPART_CRLF_LF_LINES",
        "MULTIPART_DATA_AFTER",
        "MULTIPART_DATA_BEFORE",
        "MULTIPART_FILENAME",
        "MULTIPART_FILE_LIMIT_EXCEEDED",
        "MULTIPART_HEADER_FOLDING",
        "MULTIPART_INVALID_HEADER_FOLDING",
        "MULTIPART_INVALID_PART",
        "MULTIPART_INVALID_QUOTING",
        "MULTIPART_LF_LINE",
        "MULTIPART_MISSING_SEMICOLON",
        "MULTIPART_NAME",
        "MULTIPART_STRICT_ERROR",
        "MULTIPART_UNMATCHED_BOUNDARY",
        "OUTBOUND_DATA_ERROR",
        "PATH_INFO",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "REMOTE_USER",
        "REQBODY_ERROR",
        "REQBODY_ERROR_MSG",
        "REQBODY_PROCESSOR",
        "REQBODY_PROCESSOR_ERROR",
        "REQBODY_PROCESSOR_ERROR_MSG",
        "REQUEST_BASENAME",
        "REQUEST_BODY",
        "REQUEST_BODY_LENGTH",
        "REQUEST_FILENAME",
        "REQUEST_LINE",
        "REQUEST_METHOD",
        "REQUEST_PROTOCOL",
        "REQUEST_URI",
        "REQUEST_URI_RAW",
        "RESPONSE_BODY",
        "RESPONSE_CONTENT_LENGTH",
        "RESPONSE_CONTENT_TYPE",
        "RESPONSE_PROTOCOL",
        "RESPONSE_STATUS",
        "SERVER_ADDR",
        "SERVER_NAME",
        "SERVER_PORT",
        "SESSIONID",
        "STATUS_LINE",
        "TIME",
        "TIME_DAY",
        "TIME_EPOCH",
        "TIME_HOUR",
        "TIME_MIN",
        "TIME_MON",
        "TIME_SEC",
        "TIME_WDAY",
        "TIME_YEAR",
        "UNIQUE_ID",
        "URLENCODED_ERROR",
        "USERID",
        "WEBAPPID",
        "WEBSERVER_ERROR_LOG",
    }
)
PERSISTENT = frozenset({"TX", "IP", "GLOBAL", "SESSION", "USER", "RESOURCE"})

# Actions that are accepted and have no effect in this engine (audit log, environment,
# sanitising the audit log, persistent-storage housekeeping).
_NO_EFFECT_ACTIONS = frozenset(
    {
        "sanitisearg",
        "sanitisematched",
        "sanitisematchedbytes",
        "sanitiserequestheader",
        "sanitiseresponseheader",
        "setenv",
        "setrsc",
        "setsid",
        "setuid",
        "initcol",
        "expirevar",
        "deprecatevar",
        "xmlns",
        "append",
        "prepend",
        "exec",
        "pause",
        "proxy",
    }
)
_DISRUPTIVE = frozenset({"pass", "deny", "drop", "allow", "redirect", "block"})
_CTL_OPTIONS = {
    "ruleremovebyid": "ruleRemoveById",
    "ruleremovebytag": "ruleRemoveByTag",
    "ruleremovebymsg": "ruleRemoveByMsg",
    "ruleremovetargetbyid": "ruleRemoveTargetById",
    "ruleremovetargetbytag": "ruleRemoveTargetByTag",
    "ruleremovetargetbymsg": "ruleRemoveTargetByMsg",
    "ruleengine": "ruleEngine",
    "requestbodyprocessor": "requestBodyProcessor",
    "forcerequestbodyvariable": "forceRequestBodyVariable",
    "requestbodyaccess": "requestBodyAccess",
    "responsebodyaccess": "responseBodyAccess",
    "auditengine": "auditEngine",
    "auditlogparts": "auditLogParts",
    "debugloglevel": "debugLogLevel",
    "parsexmlintoargs": "parseXmlIntoArgs",
    "hashengine": "hashEngine",
    "requestbodylimit": "requestBodyLimit",
}
_OPERATORS_WITHOUT_ARGUMENT = frozenset(
    {
        "unconditionalmatch",
        "nomatch",
        "detectsqli",
        "detectxss",
        "validateurlencoding",
        "validateutf8encoding",
        "rx",  # an empty pattern matches everything
    }
)
_ENGINE_MODES = {"on": "On", "off": "Off", "detectiononly": "DetectionOnly"}
_BODY_PROCESSORS = frozenset({"URLENCODED", "MULTIPART", "XML", "JSON"})

# Directives accepted and recorded without effect on evaluation.
_NO_EFFECT_DIRECTIVES = frozenset(
    {
        "secauditengine",
        "secauditlog",
        "secauditlog2",
        "secauditlogdirmode",
        "secauditlogfilemode",
        "secauditlogformat",
        "secauditlogparts",
        "secauditlogrelevantstatus",
        "secauditlogstoragedir",
        "secauditlogtype",
        "secdebuglog",
        "secdebugloglevel",
        "secunicodemapfile",
        "secpcrematchlimit",
        "secpcrematchlimitrecursion",
        "sectmpdir",
        "secdatadir",
        "secuploaddir",
        "secuploadkeepfiles",
        "secuploadfilemode",
        "secuploadfilelimit",
        "sectmpsaveuploadedfiles",
        "secargumentseparator",
        "seccookieformat",
        "seccookievzeroseparator",
        "secstatusengine",
        "secwebappid",
        "secsensorid",
        "secservertokens",
        "seccollectiontimeout",
        "sechttpblkey",
        "secgeolookupdb",
        "secconnengine",
        "secxmlexternalentity",
        "secremoterules",
        "secremoterulesfailaction",
        "secunicodecodepage",
        "secruleinheritance",
        "secrequestbodyinmemorylimit",
        "secresponsebodylimitaction",  # handled below too; listed for completeness
    }
)


@dataclass(frozen=True, slots=True)
class Target:
    """One element of a rule's variable list."""

    collection: str  # canonical upper-case name
    key: str | None = None  # lower-cased key for lookups (case-insensitive, as v3)
    key_text: str | None = None  # the key as written
    pattern: re.Pattern[str] | None = None  # ``:/regex/`` selector
    count: bool = False  # ``&``
    exclude: bool = False  # ``!``

    @property
    def text(self) -> str:
        prefix = "!" if self.exclude else ("&" if self.count else "")
        if self.pattern is not None:
            return f"{prefix}{self.collection}:/{self.pattern.pattern}/"
        if self.key_text is not None:
            return f"{prefix}{self.collection}:{self.key_text}"
        return prefix + self.collection


@dataclass(frozen=True, slots=True)
class SetVar:
    collection: str  # "TX", "IP", …
    key: Macro
    operation: str  # "=", "+", "-", "delete", "one"
    value: Macro


@dataclass(frozen=True, slots=True)
class Ctl:
    option: str  # canonical camelCase option name
    value: str
    ranges: tuple[tuple[int, int], ...] = ()  # ruleRemoveById / ruleRemoveTargetById
    target: Target | None = None  # ruleRemoveTarget*


@dataclass(frozen=True, slots=True)
class DefaultActions:
    phase: int
    disruptive: str | None = None
    status: int | None = None
    log: bool | None = None
    tags: tuple[str, ...] = ()
    transformations: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class Rule:
    """A compiled rule (SecRule, SecAction or SecMarker); chain links hang off ``chain``."""

    kind: str  # "rule", "action" or "marker"
    file: str
    line: int
    directory: Path
    id: int = 0
    phase: int = 2
    targets: tuple[Target, ...] = ()
    exclusions: tuple[Target, ...] = ()
    operator_name: str = "unconditionalMatch"
    operator_arg: str = ""
    operator_negated: bool = False
    operator: Any = None  # _operators.Operator, or None when the argument holds macros
    operator_macro: Macro | None = None
    transformations: tuple[str, ...] = ()  # as written, "none" included
    effective_transformations: tuple[str, ...] = ()  # after t:none and defaults
    transform_node: int = 0  # node of the engine's transformation trie
    values_key: int = -1  # shared id of (targets, exclusions) when they are static
    versioned: bool = False  # reads variables that setvar/capture/ctl change
    prefilter_mask: int = 0  # literals one of which a value needs for the operator to match
    slot: int = -1  # per-phase cache slot of the transformed values (static variables)
    tx_key: str | None = None  # the one TX variable the link reads (fast path)
    msg: Macro | None = None
    logdata: Macro | None = None
    tags: tuple[str, ...] = ()
    severity: int | None = None
    ver: str = ""
    rev: str = ""
    maturity: int | None = None
    accuracy: int | None = None
    disruptive: str | None = None
    status: int | None = None
    redirect: Macro | None = None
    setvars: tuple[SetVar, ...] = ()
    ctls: tuple[Ctl, ...] = ()
    capture: bool = False
    multi_match: bool = False
    log: bool | None = None
    skip: int = 0
    skip_after: str | None = None
    chained: bool = False  # has the ``chain`` action
    chain: Rule | None = None  # next link
    parent: Rule | None = None  # first link, for chain children
    marker: str | None = None
    # Resolved at index time:
    logs: bool = True
    block_action: str | None = None  # what ``block`` means in this rule's phase
    block_status: int | None = None
    default_tags: tuple[str, ...] = ()
    actions_text: str = ""


@dataclass(slots=True)
class EngineSettings:
    rule_engine: str = "On"  # ModSecurity's default when SecRuleEngine is absent
    request_body_access: bool | None = None  # None: not configured (v3 then runs phase 2)
    response_body_access: bool = False
    request_body_limit: int = 13107200
    request_body_no_files_limit: int = 1048576
    request_body_limit_action: str = "Reject"
    request_body_json_depth_limit: int = 10000
    arguments_limit: int = 1000
    response_body_limit: int = 524288
    response_body_limit_action: str = "Reject"
    response_body_mime_types: tuple[str, ...] = ("text/plain", "text/html")
    component_signatures: list[str] = field(default_factory=list)
    recorded: list[tuple[str, str]] = field(default_factory=list)  # accepted, no effect


@dataclass(slots=True)
class RuleSet:
    settings: EngineSettings
    phases: dict[int, list[Rule]]  # 1..5, in evaluation order (markers included)
    rules_by_id: dict[int, Rule]
    defaults: dict[int, DefaultActions]


# --------------------------------------------------------------------------- variables


def _split_variables(text: str) -> list[str]:
    """Split ``A|!B:/x|y/|XML:/*`` on the pipes that separate variables."""
    parts: list[str] = []
    i, n, start = 0, len(text), 0
    while i < n:
        c = text[i]
        if (
            c == ":"
            and i + 1 < n
            and text[i + 1] == "/"
            and not text[start:i].upper().lstrip("!&").startswith("XML")
        ):
            # regex selector: runs to the next unescaped '/' followed by '|' or the end
            j = i + 2
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "/" and (j + 1 == n or text[j + 1] == "|"):
                    break
                j += 1
            i = j + 1
            continue
        if c == ":" and i + 1 < n and text[i + 1] == "'":
            j = text.find("'", i + 2)
            i = n if j < 0 else j + 1
            continue
        if c == "|":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_target(text: str) -> Target:
    """Parse one variable (``!ARGS:foo``, ``&TX:x``, ``REQUEST_COOKIES:/^_ga/``)."""
    original = text
    exclude = count = False
    if text.startswith("!"):
        exclude, text = True, text[1:]
    if text.startswith("&"):
        count, text = True, text[1:]
    if not text:
        raise ValueError(f"empty variable in {original!r}")
    name, sep, key = text.partition(":")
    collection = name.strip().upper()
    if collection not in KEYED and collection not in SCALARS:
        raise ValueError(f"unknown variable {name!r}")
    if not sep:
        return Target(collection, count=count, exclude=exclude)
    if collection in SCALARS:
        raise ValueError(f"variable {collection} takes no key")
    if collection == "XML":
        if key not in ("/*", "//@*"):
            raise ValueError(f"XML XPath {key!r} is not supported (only /* and //@*)")
        return Target(collection, key, key, None, count, exclude)
    if len(key) >= 2 and key.startswith("/") and key.endswith("/"):
        try:
            pattern = re.compile(key[1:-1], re.IGNORECASE | re.DOTALL)
        except re.error as exc:
            raise ValueError(f"bad regular expression in {original!r}: {exc}") from None
        return Target(collection, None, None, pattern, count, exclude)
    if len(key) >= 2 and key.startswith("'") and key.endswith("'"):
        key = key[1:-1]
    if not key:
        raise ValueError(f"empty key in {original!r}")
    return Target(collection, key.lower(), key, None, count, exclude)


def parse_targets(text: str) -> list[Target]:
    return [parse_target(part) for part in _split_variables(text)]


# --------------------------------------------------------------------------- actions


def split_actions(text: str) -> list[tuple[str, str | None]]:
    """``id:1,msg:'a, b',t:none`` → [("id", "1"), ("msg", "a, b"), ("t", "none")]."""
    actions: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in ":,":
            i += 1
        name = text[start:i].strip()
        if i >= n or text[i] == ",":
            actions.append((name, None))
            continue
        i += 1  # ':'
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "'":
            i += 1
            buf: list[str] = []
            closed = False
            while i < n:
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] == "'":
                    buf.append("'")
                    i += 2
                    continue
                if ch == "'":
                    closed = True
                    i += 1
                    break
                buf.append(ch)
                i += 1
            if not closed:
                raise ValueError(f"unterminated quoted value of action {name!r}")
            actions.append((name, "".join(buf)))
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] != ",":
                raise ValueError(f"unexpected text after action {name!r}: {text[i : i + 20]!r}")
            continue
        start = i
        while i < n and text[i] != ",":
            i += 1
        actions.append((name, text[start:i].strip()))
    return actions


def parse_id_ranges(text: str) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        low, dash, high = token.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"bad rule id or range {token!r}") from None
        if last < first:
            raise ValueError(f"empty rule id range {token!r}")
        ranges.append((first, last))
    if not ranges:
        raise ValueError("no rule id given")
    return ranges


def _parse_setvar(value: str) -> SetVar:
    text = value.strip()
    delete = text.startswith("!")
    if delete:
        text = text[1:]
    name, eq, rhs = text.partition("=")
    collection, dot, key = name.strip().partition(".")
    if not dot or not key:
        raise ValueError(f"setvar needs collection.name: {value!r}")
    collection = collection.upper()
    if collection not in PERSISTENT:
        raise ValueError(f"setvar on unsupported collection {collection!r}")
    if delete:
        return SetVar(collection, compile_macro(key), "delete", compile_macro(""))
    if not eq:
        return SetVar(collection, compile_macro(key), "one", compile_macro("1"))
    operation = "="
    if rhs.startswith("+"):
        operation, rhs = "+", rhs[1:]
    elif rhs.startswith("-"):
        operation, rhs = "-", rhs[1:]
    return SetVar(collection, compile_macro(key), operation, compile_macro(rhs))


def _parse_ctl(value: str) -> Ctl:
    option, eq, rest = value.partition("=")
    canonical = _CTL_OPTIONS.get(option.strip().lower())
    if canonical is None or not eq:
        raise ValueError(f"unsupported ctl {value!r}")
    rest = rest.strip()
    if canonical == "ruleRemoveById":
        return Ctl(canonical, rest, tuple(parse_id_ranges(rest)))
    if canonical in ("ruleRemoveTargetById", "ruleRemoveTargetByTag", "ruleRemoveTargetByMsg"):
        what, semi, variable = rest.partition(";")
        if not semi:
            raise ValueError(f"ctl:{canonical} needs 'what;VARIABLE': {value!r}")
        target = parse_target(variable.strip())
        ranges = tuple(parse_id_ranges(what)) if canonical == "ruleRemoveTargetById" else ()
        return Ctl(canonical, what.strip(), ranges, target)
    if canonical == "ruleEngine":
        mode = _ENGINE_MODES.get(rest.lower())
        if mode is None:
            raise ValueError(f"ctl:ruleEngine: unknown mode {rest!r}")
        return Ctl(canonical, mode)
    if canonical == "requestBodyProcessor":
        if rest.upper() not in _BODY_PROCESSORS:
            raise ValueError(f"ctl:requestBodyProcessor: unknown processor {rest!r}")
        return Ctl(canonical, rest.upper())
    if canonical in ("forceRequestBodyVariable", "requestBodyAccess", "responseBodyAccess"):
        if rest.lower() not in ("on", "off"):
            raise ValueError(f"ctl:{canonical} takes On or Off, not {rest!r}")
        return Ctl(canonical, rest.capitalize())
    return Ctl(canonical, rest)


class _ActionError(ValueError):
    pass


def apply_actions(rule: Rule, actions: list[tuple[str, str | None]], problems: list[str]) -> None:
    """Fold parsed actions into ``rule``; reasons for bad ones go to ``problems``."""
    transformations = list(rule.transformations)
    tags = list(rule.tags)
    setvars = list(rule.setvars)
    ctls = list(rule.ctls)
    from ._transforms import UnknownTransformation, get_transformation

    for raw_name, value in actions:
        name = raw_name.lower()
        try:
            if name == "id":
                if value is None or not value.strip().isdigit() or int(value) <= 0:
                    raise _ActionError(f"bad id {value!r}")
                rule.id = int(value)
            elif name == "phase":
                if value is None:
                    raise _ActionError("phase needs a value")
                phase = PHASE_NAMES.get(value.strip().lower())
                if phase is None:
                    if not value.strip().isdigit() or not 1 <= int(value) <= 5:
                        raise _ActionError(f"bad phase {value!r}")
                    phase = int(value)
                rule.phase = phase
            elif name == "msg":
                rule.msg = compile_macro(value or "")
            elif name == "logdata":
                rule.logdata = compile_macro(value or "")
            elif name == "tag":
                tags.append(value or "")
            elif name == "severity":
                text = (value or "").strip()
                if text.isdigit() and 0 <= int(text) <= 7:
                    rule.severity = int(text)
                elif text.upper() in SEVERITIES:
                    rule.severity = SEVERITIES[text.upper()]
                else:
                    raise _ActionError(f"bad severity {value!r}")
            elif name in ("ver", "rev"):
                setattr(rule, name, value or "")
            elif name in ("maturity", "accuracy"):
                text = (value or "").strip()
                if not text.isdigit():
                    raise _ActionError(f"bad {name} {value!r}")
                setattr(rule, name, int(text))
            elif name == "t":
                tname = (value or "").strip()
                if tname.lower() != "none":
                    try:
                        get_transformation(tname)
                    except UnknownTransformation as unknown:
                        raise _ActionError(f"unknown transformation {tname!r}: {unknown}") from None
                transformations.append("none" if tname.lower() == "none" else tname)
            elif name == "chain":
                rule.chained = True
            elif name == "skip":
                text = (value or "").strip()
                if not text.isdigit() or int(text) < 1:
                    raise _ActionError(f"bad skip count {value!r}")
                rule.skip = int(text)
            elif name == "skipafter":
                if not value:
                    raise _ActionError("skipAfter needs a marker")
                rule.skip_after = value.strip()
            elif name == "setvar":
                if not value:
                    raise _ActionError("setvar needs a value")
                setvars.append(_parse_setvar(value))
            elif name == "ctl":
                if not value:
                    raise _ActionError("ctl needs a value")
                ctls.append(_parse_ctl(value))
            elif name == "capture":
                rule.capture = True
            elif name == "multimatch":
                rule.multi_match = True
            elif name in ("log", "auditlog"):
                # libmodsecurity3 keeps one "save the message" flag that these four
                # actions set in the order written: the last one decides whether the
                # match is logged (so CRS 980170's noauditlog silences it).
                rule.log = True
            elif name in ("nolog", "noauditlog"):
                rule.log = False
            elif name in _DISRUPTIVE:
                if name == "redirect":
                    if not value:
                        raise _ActionError("redirect needs a URL")
                    rule.redirect = compile_macro(value)
                rule.disruptive = name
            elif name == "allow":
                rule.disruptive = "allow"
            elif name == "status":
                text = (value or "").strip()
                if not text.isdigit():
                    raise _ActionError(f"bad status {value!r}")
                rule.status = int(text)
            elif name in _NO_EFFECT_ACTIONS:
                pass
            else:
                raise _ActionError(f"unknown action {raw_name!r}")
        except ValueError as exc:
            problems.append(str(exc))
        if name == "allow" and value:
            if value.lower() not in ("phase", "request"):
                problems.append(f"bad allow scope {value!r}")
            else:
                rule.disruptive = "allow:" + value.lower()
    rule.transformations = tuple(transformations)
    rule.tags = tuple(tags)
    rule.setvars = tuple(setvars)
    rule.ctls = tuple(ctls)


# --------------------------------------------------------------------------- operators


def split_operator(text: str) -> tuple[str, str, bool]:
    """``"!@rx foo"`` → ("rx", "foo", True); no ``@`` means ``@rx`` of the whole text."""
    s = text.lstrip()
    negated = False
    if s.startswith("!"):
        negated, s = True, s[1:].lstrip()
    if not s.startswith("@"):
        return "rx", s, negated
    name, _, argument = s[1:].partition(" ")
    if "\t" in name:
        name, _, more = name.partition("\t")
        argument = more + (" " + argument if argument else "")
    return name, argument.lstrip(" \t"), negated


# --------------------------------------------------------------------------- compile


def _on_off(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("on", "off"):
        raise ValueError(f"expected On or Off, not {value!r}")
    return lowered == "on"


def _positive_int(value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"expected a number, not {value!r}")
    return int(value)


@dataclass(slots=True)
class _Exceptions:
    remove_ids: list[tuple[int, int]] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    remove_msgs: list[str] = field(default_factory=list)
    update_targets: list[tuple[list[tuple[int, int]], list[Target], Directive]] = field(
        default_factory=list
    )
    update_targets_by: list[tuple[str, str, list[Target]]] = field(default_factory=list)
    update_actions: list[tuple[int, list[tuple[str, str | None]], Directive]] = field(
        default_factory=list
    )


def compile_directives(directives: list[Directive]) -> tuple[RuleSet, list[Problem]]:
    """Collect → compile → index. Returns the rule set and every problem found."""
    problems: list[Problem] = []
    settings = EngineSettings()
    defaults: dict[int, DefaultActions] = {}
    exceptions = _Exceptions()
    ordered: list[Rule] = []  # top-level rules and markers in file order
    open_chain: Rule | None = None

    def problem(d: Directive, reason: str) -> None:
        problems.append((d.file, d.line, f"{d.name}: {reason}"))

    for d in directives:
        name = d.name.lower()
        args = d.args
        try:
            if name in ("secrule", "secaction"):
                rule = _compile_rule(d, problem)
                if rule is None:
                    continue
                if open_chain is not None:
                    rule.parent = open_chain.parent or open_chain
                    rule.phase = rule.parent.phase
                    open_chain.chain = rule
                    if rule.id:
                        problem(d, "a chained rule may not have an id")
                else:
                    if not rule.id:
                        problem(d, "rule has no id")
                        continue
                    ordered.append(rule)
                open_chain = rule if rule.chained else None
                continue
            if open_chain is not None:
                problems.append(
                    (open_chain.file, open_chain.line, "chain: no rule follows the chained rule")
                )
                open_chain = None
            if name == "secmarker":
                if len(args) != 1:
                    raise ValueError("takes exactly one marker name")
                ordered.append(Rule("marker", d.file, d.line, d.directory, marker=args[0]))
            elif name == "secdefaultaction":
                if len(args) != 1:
                    raise ValueError("takes one quoted action list")
                holder = Rule("action", d.file, d.line, d.directory)
                holder.phase = 0
                reasons: list[str] = []
                apply_actions(holder, split_actions(args[0]), reasons)
                for reason in reasons:
                    problem(d, reason)
                if holder.phase == 0:
                    raise ValueError("needs a phase")
                if holder.disruptive is None:
                    raise ValueError("must specify a disruptive action (as ModSecurity v3)")
                unsuitable = [
                    a
                    for a, _ in split_actions(args[0])
                    if a.lower() in ("id", "chain", "skip", "skipafter")
                ]
                if unsuitable:
                    raise ValueError(f"action {unsuitable[0]!r} is not allowed here")
                defaults[holder.phase] = DefaultActions(
                    holder.phase,
                    holder.disruptive,
                    holder.status,
                    holder.log,
                    holder.tags,
                    tuple(t for t in holder.transformations),
                )
            elif name == "secruleengine":
                mode = _ENGINE_MODES.get(args[0].lower()) if len(args) == 1 else None
                if mode is None:
                    raise ValueError("takes On, Off or DetectionOnly")
                settings.rule_engine = mode
            elif name == "secrequestbodyaccess":
                settings.request_body_access = _on_off(_one(args))
            elif name == "secresponsebodyaccess":
                settings.response_body_access = _on_off(_one(args))
            elif name == "secrequestbodylimit":
                settings.request_body_limit = _positive_int(_one(args))
            elif name == "secrequestbodynofileslimit":
                settings.request_body_no_files_limit = _positive_int(_one(args))
            elif name == "secrequestbodyjsondepthlimit":
                settings.request_body_json_depth_limit = _positive_int(_one(args))
            elif name == "secargumentslimit":
                settings.arguments_limit = _positive_int(_one(args))
            elif name == "secresponsebodylimit":
                settings.response_body_limit = _positive_int(_one(args))
            elif name in ("secrequestbodylimitaction", "secresponsebodylimitaction"):
                value = _one(args)
                canonical = {"reject": "Reject", "processpartial": "ProcessPartial"}.get(
                    value.lower()
                )
                if canonical is None:
                    raise ValueError("takes Reject or ProcessPartial")
                if name == "secrequestbodylimitaction":
                    settings.request_body_limit_action = canonical
                else:
                    settings.response_body_limit_action = canonical
            elif name == "secresponsebodymimetype":
                if not args:
                    raise ValueError("needs at least one MIME type")
                # kept as written: v3 compares them with the response type byte for byte
                settings.response_body_mime_types = tuple(t for a in args for t in a.split())
            elif name == "secresponsebodymimetypesclear":
                settings.response_body_mime_types = ()
            elif name == "seccomponentsignature":
                settings.component_signatures.append(_one(args))
            elif name == "secruleremovebyid":
                if not args:
                    raise ValueError("needs rule ids")
                exceptions.remove_ids.extend(parse_id_ranges(" ".join(args)))
            elif name == "secruleremovebytag":
                if not args:
                    raise ValueError("needs a tag")
                exceptions.remove_tags.extend(args)
            elif name == "secruleremovebymsg":
                if not args:
                    raise ValueError("needs a message")
                exceptions.remove_msgs.extend(args)
            elif name == "secruleupdatetargetbyid":
                if len(args) not in (2, 3):
                    raise ValueError("takes a rule id and a variable list")
                exceptions.update_targets.append(
                    (parse_id_ranges(args[0]), parse_targets(args[1]), d)
                )
            elif name in ("secruleupdatetargetbytag", "secruleupdatetargetbymsg"):
                if len(args) not in (2, 3):
                    raise ValueError("takes a tag or message and a variable list")
                by = "tag" if name.endswith("tag") else "msg"
                exceptions.update_targets_by.append((by, args[0], parse_targets(args[1])))
            elif name == "secruleupdateactionbyid":
                if len(args) != 2:
                    raise ValueError("takes a rule id and an action list")
                rule_id = int(args[0].split(":")[0])
                exceptions.update_actions.append((rule_id, split_actions(args[1]), d))
            elif name in _NO_EFFECT_DIRECTIVES:
                settings.recorded.append((d.name, " ".join(args)))
            else:
                raise ValueError("unsupported directive")
        except (ValueError, IndexError) as exc:
            problem(d, str(exc) or "bad arguments")
    if open_chain is not None:
        problems.append(
            (open_chain.file, open_chain.line, "chain: no rule follows the chained rule")
        )

    rules_by_id: dict[int, Rule] = {}
    for rule in ordered:
        if rule.kind == "marker":
            continue
        if rule.id in rules_by_id:
            other = rules_by_id[rule.id]
            problems.append(
                (
                    rule.file,
                    rule.line,
                    f"rule id {rule.id} is duplicated ({other.file}:{other.line})",
                )
            )
            continue
        rules_by_id[rule.id] = rule

    # SecRuleUpdateTargetById / SecRuleUpdateActionById apply wherever they are written.
    # An update naming no loaded rule is accepted, as v3 does (exclusions written for rules
    # that a paranoia level or a missing file leaves out must not break loading).
    for ranges, targets, _ in exceptions.update_targets:
        for rule in rules_by_id.values():
            if any(lo <= rule.id <= hi for lo, hi in ranges):
                rule.targets += tuple(t for t in targets if not t.exclude)
                rule.exclusions += tuple(t for t in targets if t.exclude)
    for by, key, targets in exceptions.update_targets_by:
        for rule in rules_by_id.values():
            if (by == "tag" and key in rule.tags) or (
                by == "msg" and rule.msg is not None and rule.msg.text == key
            ):
                rule.targets += tuple(t for t in targets if not t.exclude)
                rule.exclusions += tuple(t for t in targets if t.exclude)
    for rule_id, actions, d in exceptions.update_actions:
        target_rule = rules_by_id.get(rule_id)
        if target_rule is None:
            continue
        if any(a[0].lower() in ("id", "phase", "chain") for a in actions):
            problem(d, "may not change id, phase or chain")
            continue
        for reason in _update_actions(target_rule, actions):
            problem(d, reason)

    def removed(rule: Rule) -> bool:
        if any(lo <= rule.id <= hi for lo, hi in exceptions.remove_ids):
            return True
        if any(tag in rule.tags for tag in exceptions.remove_tags):
            return True
        return rule.msg is not None and rule.msg.text in exceptions.remove_msgs

    phases: dict[int, list[Rule]] = {p: [] for p in range(1, 6)}
    for rule in ordered:
        if rule.kind == "marker":
            for phase_rules in phases.values():
                phase_rules.append(rule)
            continue
        if rule.id not in rules_by_id or rules_by_id[rule.id] is not rule or removed(rule):
            continue
        _finish(rule, defaults)
        phases[rule.phase].append(rule)
    return RuleSet(settings, phases, rules_by_id, defaults), problems


def _update_actions(rule: Rule, actions: list[tuple[str, str | None]]) -> list[str]:
    """SecRuleUpdateActionById as libmodsecurity3 3.0.9 runs it: the added actions run
    before the rule's own, so the rule's own msg, logdata, severity and log flags win; any
    added action other than a transformation replaces the rule's own disruptive action by the
    added one (or by none); transformations are appended to the rule's."""
    added = Rule(rule.kind, rule.file, rule.line, rule.directory)
    reasons: list[str] = []
    apply_actions(added, actions, reasons)
    if reasons:
        return reasons
    if added.transformations:
        rule.transformations = rule.transformations + added.transformations
    if any(name.lower() != "t" for name, _ in actions):
        rule.disruptive = added.disruptive
        rule.status = added.status if added.status is not None else rule.status
        rule.redirect = added.redirect
    if rule.log is None:
        rule.log = added.log
    if rule.msg is None:
        rule.msg = added.msg
    if rule.logdata is None:
        rule.logdata = added.logdata
    if rule.severity is None:
        rule.severity = added.severity
    rule.tags += added.tags
    rule.setvars += added.setvars
    rule.ctls += added.ctls
    rule.capture = rule.capture or added.capture
    rule.multi_match = rule.multi_match or added.multi_match
    rule.skip = rule.skip or added.skip
    rule.skip_after = rule.skip_after or added.skip_after
    return []


def _one(args: tuple[str, ...]) -> str:
    if len(args) != 1:
        raise ValueError("takes exactly one argument")
    return args[0]


def _finish(rule: Rule, defaults: dict[int, DefaultActions]) -> None:
    """Resolve what depends on the phase's SecDefaultAction, for every link."""
    default = defaults.get(rule.phase, DefaultActions(rule.phase))
    link: Rule | None = rule
    while link is not None:
        link.phase = rule.phase
        names = link.transformations
        if "none" in names:
            last_none = len(names) - 1 - names[::-1].index("none")
            link.effective_transformations = names[last_none + 1 :]
        else:
            link.effective_transformations = tuple(default.transformations) + names
        link = link.chain
    rule.logs = rule.log if rule.log is not None else (default.log is not False)
    rule.block_action = default.disruptive if default.disruptive != "block" else None
    rule.block_status = default.status
    rule.default_tags = default.tags


def _compile_rule(d: Directive, problem: Any) -> Rule | None:
    is_action = d.name.lower() == "secaction"
    expected = 1 if is_action else 3
    args = d.args
    if is_action and len(args) == 0:
        args = ("",)
    if not is_action and len(args) == 2:
        args = (*args, "")
    if len(args) != expected:
        problem(d, f"expected {expected} arguments, got {len(d.args)}")
        return None
    rule = Rule("action" if is_action else "rule", d.file, d.line, d.directory)
    rule.actions_text = args[-1]
    ok = True
    if not is_action:
        try:
            targets = parse_targets(args[0])
        except ValueError as exc:
            problem(d, str(exc))
            ok = False
            targets = []
        rule.targets = tuple(t for t in targets if not t.exclude)
        rule.exclusions = tuple(t for t in targets if t.exclude)
        if targets and not rule.targets:
            problem(d, "every variable is an exclusion")
            ok = False
        name, argument, negated = split_operator(args[1])
        rule.operator_name, rule.operator_arg, rule.operator_negated = name, argument, negated
        if not argument and name.lower() not in _OPERATORS_WITHOUT_ARGUMENT:
            problem(d, f"operator @{name} needs an argument")
            ok = False
        else:
            try:
                _compile_operator(rule)
            except ValueError as exc:
                problem(d, str(exc))
                ok = False
    try:
        actions = split_actions(args[-1])
    except ValueError as exc:
        problem(d, str(exc))
        return None
    reasons: list[str] = []
    apply_actions(rule, actions, reasons)
    if is_action and rule.chained:
        reasons.append("SecAction cannot start a chain")
    for reason in reasons:
        problem(d, reason)
    if reasons:
        ok = False
    return rule if ok else None


def _compile_operator(rule: Rule) -> None:
    from ._operators import OperatorError, compile_operator

    if has_macro(rule.operator_arg):
        rule.operator_macro = compile_macro(rule.operator_arg)
        # Validate the operator name with a harmless constant argument.
        try:
            compile_operator(rule.operator_name, "0", data_dir=rule.directory)
        except OperatorError as exc:
            if "unknown" in str(exc).lower():
                raise ValueError(str(exc)) from None
        return
    try:
        rule.operator = compile_operator(
            rule.operator_name, rule.operator_arg, data_dir=rule.directory
        )
    except OperatorError as exc:
        raise ValueError(f"operator @{rule.operator_name}: {exc}") from None


def copy_rule(rule: Rule, **changes: Any) -> Rule:
    return replace(rule, **changes)
