"""Executing a compiled rule set over one request (and optionally its response).

A :class:`Transaction` follows ModSecurity v3's order: phase 1 (request headers), phase 2
(request body, after the body processor ran), phase 3 (response headers), phase 4 (response
body), phase 5 (logging). Within a rule, every value of every variable goes through the
transformations and the operator; each match sets MATCHED_VAR*, captures into TX.0-9 and runs
the link's ``setvar``s at once (v3 runs them even when a later chain link fails — the CRS
relies on it, e.g. 920450); the other actions (ctl, skip, skipAfter, msg, logdata, the
disruptive action) run once the whole chain matched. Disruptive actions only act when the
rule engine is ``On``; in ``DetectionOnly`` everything else still runs and logs.

Variables are resolved lazily: a collection is built the first time a rule reads it, once
per transaction. Transformation results are cached per (transformation-chain node, value),
where chain nodes form a trie so that ``t:none,t:urlDecodeUni`` and
``t:none,t:urlDecodeUni,t:lowercase`` share their common prefix.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._http import HttpRequest, HttpResponse, RequestLineData, request_line_data
from ._macros import MacroRef
from ._operators import SETS_TX_CAPTURES
from ._plain import checkpoint
from ._prefilter import Prefilter, required_literals
from ._rules import Ctl, Rule, RuleSet, SetVar, Target
from ._transforms import get_transformation

if TYPE_CHECKING:
    from ._body import BodyResult

_SEVERITY_NAMES = (
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "DEBUG",
)
log = logging.getLogger("palisade.waf")
_UNIQUE = itertools.count(1)
_PROCESS_TAG = f"{os.getpid() % 100000:05d}"


@dataclass(slots=True)
class RuleMatch:
    """A rule (chain) that matched, as ModSecurity would report it."""

    id: int
    phase: int
    msg: str
    data: str
    severity: str | None  # numeric, as in ModSecurity's log ("2" for CRITICAL)
    tags: tuple[str, ...]
    variable: str  # e.g. "ARGS:foo"
    value: str  # matched (transformed) value
    logged: bool  # the rule logs (not nolog): what go-ftw sees
    log_line: str  # ModSecurity-style line ("" when the rule does not log)


@dataclass(slots=True)
class WafResult:
    """The verdict on one request."""

    status: int | None  # intervention status (None = allowed)
    blocked: bool
    inbound_score: int
    outbound_score: int
    matches: list[RuleMatch] = field(default_factory=list)
    unique_id: str = ""
    errors: list[str] = field(default_factory=list)  # rules that raised (evaluation went on)

    def logged_ids(self) -> set[int]:
        return {m.id for m in self.matches if m.logged}


class TransformationTrie:
    """Transformation chains as a trie of nodes; node 0 is the identity."""

    def __init__(self) -> None:
        self.parent: list[int] = [0]
        self.function: list[Callable[[str], str] | None] = [None]
        self.name: list[str] = [""]
        self._children: dict[tuple[int, str], int] = {}

    def node_for(self, names: Iterable[str]) -> int:
        node = 0
        for name in names:
            key = (node, name.lower())
            child = self._children.get(key)
            if child is None:
                child = len(self.parent)
                self._children[key] = child
                self.parent.append(node)
                self.function.append(get_transformation(name))
                self.name.append(name)
            node = child
        return node

    def path(self, node: int) -> list[int]:
        nodes: list[int] = []
        while node:
            nodes.append(node)
            node = self.parent[node]
        nodes.reverse()
        return nodes


def _to_int(text: str) -> int:
    """C ``atoi``-like: leading spaces, sign, digits; anything else counts as 0."""
    s = text.strip()
    end = 0
    if end < len(s) and s[end] in "+-":
        end += 1
    start_digits = end
    while end < len(s) and s[end].isdigit():
        end += 1
    if end == start_digits:
        return 0
    return int(s[:end])


Items = list[tuple[str, str, str]]  # (key, value, variable name)


class Transaction:
    """One request's evaluation. Not thread-safe; create one per request."""

    def __init__(
        self,
        engine: Any,
        request: HttpRequest,
        response: HttpResponse | None,
    ) -> None:
        self.engine = engine
        self.ruleset: RuleSet = engine.ruleset
        settings = self.ruleset.settings
        self.request = request
        self.response = response
        self.mode = settings.rule_engine
        self.request_body_access: bool | None = None  # ctl:requestBodyAccess
        self.response_body_access = settings.response_body_access
        self.started = time.monotonic()
        self.unique_id = f"{time.time_ns() // 1000}{_PROCESS_TAG}{next(_UNIQUE)}"
        self.tx: dict[str, tuple[str, str]] = {}
        self.persistent: dict[str, dict[str, tuple[str, str]]] = engine.persistent
        self.matched_var = ""
        self.matched_var_name = ""
        self.matched_vars: list[tuple[str, str]] = []
        self.skip_next = 0
        self.marker: str | None = None
        self.allow_type: str | None = None
        self.removed_ids: list[tuple[int, int]] = []
        self.removed_tags: list[str] = []
        self.body_processor: str | None = None
        # transformation results: one dict per trie node, value → transformed value
        self.cache: list[dict[str, str]] = [{} for _ in engine.trie.parent]
        self.matches: list[RuleMatch] = []
        self.errors: list[str] = []
        self.status: int | None = None
        self.interrupted = False
        self.phase = 0
        self._line: RequestLineData | None = None
        self._items: dict[str, Items] = {}
        self._scalars: dict[str, str | None] = {}
        self._body: BodyResult | None = None
        self._inbound_data_error = False
        self._outbound_data_error = False
        self._response_body: str | None = None
        self._request_body_text = ""
        # Values of rules' variables, shared between rules (see _candidates). ``version`` moves
        # whenever a collection that setvar, capture or ctl can change is written.
        self.version = 0
        self._value_cache: dict[tuple[int, tuple[Target, ...], int], list[tuple[str, str]]] = {}
        self._candidate_cache: dict[tuple[int, tuple[Target, ...], int, int], _Candidates] = {}
        self._removed_map: dict[int, tuple[Target, ...]] = {}
        self._indexes: dict[str, dict[str, Items]] = {}
        self._masks: dict[str, int] = {}
        self._slots: list[_Candidates | None] = []

    # ------------------------------------------------------------------ driving

    def run(self) -> WafResult:
        # Every phase starts only while the engine is not Off (ctl:ruleEngine=Off stops the
        # following phases, as v3's process* calls check it); an interruption ends the
        # request and response phases, the logging phase still runs.
        if self.mode != "Off":
            self._request_headers_setup()
            self._evaluate_phase(1)
        if self.mode != "Off" and not self.interrupted:
            run_phase_2 = self._process_request_body()
            if run_phase_2 and not self.interrupted:
                self._evaluate_phase(2)
        if self.response is not None and self.mode != "Off" and not self.interrupted:
            self._evaluate_phase(3)
            if self.mode != "Off" and not self.interrupted:
                self._prepare_response_body()
                self._evaluate_phase(4)
        if self.mode != "Off":
            self._evaluate_phase(5)
        return WafResult(
            status=self.status,
            blocked=self.status is not None,
            inbound_score=_to_int(self._tx_value("blocking_inbound_anomaly_score")),
            outbound_score=_to_int(self._tx_value("blocking_outbound_anomaly_score")),
            matches=self.matches,
            unique_id=self.unique_id,
            errors=self.errors,
        )

    def _request_headers_setup(self) -> None:
        content_type = self._header("content-type")
        if content_type is not None:
            lowered = content_type.lower()
            if lowered.startswith("multipart/form-data"):
                self.body_processor = "MULTIPART"
            if lowered.startswith("application/x-www-form-urlencoded"):
                self.body_processor = "URLENCODED"

    def _process_request_body(self) -> bool:
        """Run the body processor; False when phase 2 must not run (v3: the request body
        access is off — the processor still ran, the rules do not)."""
        settings = self.ruleset.settings
        body = self.request.body
        if settings.request_body_limit and len(body) > settings.request_body_limit:
            self._inbound_data_error = True
            if settings.request_body_limit_action == "ProcessPartial":
                body = body[: settings.request_body_limit]
            else:
                # libmodsecurity3 3.0.9 (checked in process) does not interrupt here even
                # with the engine On: the body that overflows is not kept, and phase 2
                # runs with INBOUND_DATA_ERROR set. The front end must bound bodies itself
                # (nginx answers 413 past client_max_body_size).
                body = b""
        from ._body import BodyLimits, process_body

        limits = BodyLimits(
            body_limit=settings.request_body_limit,
            no_files_limit=settings.request_body_no_files_limit,
            json_depth=settings.request_body_json_depth_limit,
            arguments_limit=settings.arguments_limit,
            limit_action=settings.request_body_limit_action,
        )
        self._body = process_body(body, self._header("content-type"), self.body_processor, limits)
        if self._body.exceeded:
            self._inbound_data_error = True
        self._scalars.clear()
        self._indexes.clear()
        self._items.pop("ARGS", None)
        self._items.pop("ARGS_NAMES", None)
        self._items.pop("ARGS_POST", None)
        self._items.pop("ARGS_POST_NAMES", None)
        if self.request_body_access is not None:
            access = self.request_body_access
        else:
            access = settings.request_body_access is not False
        if not access:
            return False
        self._request_body_text = body.decode("latin-1") if body else ""
        return True

    def _prepare_response_body(self) -> None:
        response = self.response
        settings = self.ruleset.settings
        if response is None or not self.response_body_access:
            return
        # v3 inspects the body only when the type cut at ";" equals a configured one exactly
        # (case and blanks count)
        content_type = self._response_content_type() or ""
        if content_type not in settings.response_body_mime_types:
            return
        body = response.body
        if settings.response_body_limit and len(body) > settings.response_body_limit:
            self._outbound_data_error = True
            if settings.response_body_limit_action != "ProcessPartial":
                return  # v3 3.0.9: not inspected, no interruption (checked in process)
            body = body[: settings.response_body_limit]
        self._response_body = body.decode("latin-1")
        self._scalars.pop("RESPONSE_BODY", None)

    def _evaluate_phase(self, phase: int) -> None:
        self.phase = phase
        if self.allow_type == "all" and phase != 5:
            return
        if self.allow_type == "request" and phase <= 2:
            return
        self._end_allow()
        self._value_cache.clear()
        self._candidate_cache.clear()
        self._slots = [None] * self.engine.slot_count
        evaluate = self._evaluate_rule
        for rule in self.ruleset.phases[phase]:
            checkpoint()  # lets a budget preempt the compiled engine here (see _plain)
            if self.marker is not None:
                if rule.kind == "marker" and rule.marker == self.marker:
                    self.marker = None
                continue
            if self.skip_next > 0:
                self.skip_next -= 1
                continue
            if self.allow_type is not None:
                continue
            kind = rule.kind
            if kind == "marker":
                continue
            if (
                self.removed_ids
                and kind == "rule"  # v3 checks ctl:ruleRemoveById in SecRule only
                and any(lo <= rule.id <= hi for lo, hi in self.removed_ids)
            ):
                continue
            if self.removed_tags and any(tag in rule.tags for tag in self.removed_tags):
                continue
            try:
                evaluate(rule)
            except Exception as exc:  # a faulty operator or transformation must not end
                # the evaluation of everything else (ModSecurity carries on as well)
                log.exception("WAF rule %s failed", rule.id)
                self.errors.append(f"rule {rule.id}: {type(exc).__name__}: {exc}")
            if self.interrupted:
                break

    def _end_allow(self) -> None:
        # A method of its own: an assignment of None in _evaluate_phase would let mypy (and
        # so mypyc) take allow_type for None throughout the loop, where rules set it.
        self.allow_type = None

    # ------------------------------------------------------------------ rules

    def _evaluate_rule(self, rule: Rule) -> None:
        if rule.kind == "action":
            state = _MessageState()
            for setvar in rule.setvars:
                self._setvar(setvar, rule)
            self._after_full_match(rule, rule, state)
            self._record(rule, state)
            return
        matched = self._evaluate_link(rule, rule, None)
        if matched is not None and (not rule.multi_match or matched.disruptive):
            # a multiMatch rule was logged value by value already (v3); an interruption
            # still gets its own line
            self._record(rule, matched)

    def _evaluate_link(
        self, link: Rule, top: Rule, state: _MessageState | None
    ) -> _MessageState | None:
        """The link's match (and its chain's), or None. ``state`` is created at the first
        matching value: most links match nothing and pay for nothing."""
        candidates = self._candidates(link, top)
        pairs = candidates.pairs
        if not pairs:  # nothing to test: no match, negated or not
            self._clear_matched()
            return None
        operator = link.operator
        if operator is None and link.operator_macro is not None:
            argument = link.operator_macro.expand(self._resolver(top))
            operator = self.engine.macro_operator(link, argument)
        else:
            argument = link.operator_arg
        match = operator.match
        negated = link.operator_negated
        # The literal pre-filter: a value that holds none of the literals every match of
        # the pattern needs cannot match; a candidate list without them is skipped whole.
        required = link.prefilter_mask if not negated else 0
        if required:
            union = candidates.union
            if union is None:
                union = candidates.union = _union(self._literal_mask, pairs)
            if not union & required:
                self._clear_matched()
                return None
        # v3 writes TX.0.. only for the operators that capture (rx, pm, detectSQLi, …); the
        # others leave TX alone even with `capture`.
        capture = link.capture and operator.name in SETS_TX_CAPTURES
        matched = False
        for name, candidate in pairs:
            if required and not (self._literal_mask(candidate) & required):
                continue  # none of the literals is there (``required`` implies not negated)
            result = match(candidate)
            if negated:
                if result is not None:
                    continue
            elif result is None:
                continue
            elif capture:
                self.version += 1
                tx = self.tx
                for index, text in enumerate(result):
                    if index and not text:
                        continue  # a group that took no part in the match: v3 keeps TX.n
                    tx[str(index)] = (str(index), text)
            if state is None:
                state = _MessageState()
            self.matched_var = candidate
            self.matched_var_name = name
            self.matched_vars.append((name, candidate))
            state.variable, state.value = name, candidate
            state.operator, state.parameter = link.operator_name, argument
            for setvar in link.setvars:
                self._setvar(setvar, top)
            if link is top and link.multi_match:
                self._record_value_match(top, state)
            matched = True
        if not matched or state is None:
            self._clear_matched()
            return None
        if link.chained and (
            link.chain is None or self._evaluate_link(link.chain, top, state) is None
        ):
            return None
        self._after_full_match(link, top, state)
        return state

    def _clear_matched(self) -> None:
        """A rule that does not match clears MATCHED_VAR* (v3's cleanMatchedVars)."""
        if self.matched_vars:
            self.matched_vars = []
        self.matched_var = ""
        self.matched_var_name = ""

    def _candidates(self, link: Rule, top: Rule) -> _Candidates:
        """(variable name, value to test) pairs of a link, transformations applied.

        Rules that read the same static variables share the values, and those that also
        share the transformation chain share the transformed values (in a slot per phase).
        A link that reads one TX variable reads it directly.
        """
        # ctl:ruleRemoveTarget* concerns the rule with the id (v3: not its chained links)
        removed = self._removed_map.get(top.id, ()) if self._removed_map and link is top else ()
        node = link.transform_node
        if not removed:
            tx_key = link.tx_key
            if tx_key is not None:
                entry = self.tx.get(tx_key)
                if entry is None:
                    return _Candidates([])
                value = entry[1]
                if node:
                    value = self._transform(node, value)
                return _Candidates([("TX:" + entry[0], value)])
            slot = link.slot
            if slot >= 0:
                cached = self._slots[slot]
                if cached is not None:
                    return cached
        else:
            slot = -1
        key = link.values_key
        if key >= 0:
            version = self.version if link.versioned else 0
            candidate_key = (key, removed, -1 - node if link.multi_match else node, version)
            cached = self._candidate_cache.get(candidate_key)
            if cached is not None:
                return cached
            value_key = (key, removed, version)
            values = self._value_cache.get(value_key)
            if values is None:
                values = self._value_cache[value_key] = self._collect(link, removed)
        else:
            values = self._collect(link, removed)
        if link.multi_match:
            pairs = [(n, c) for n, v in values for c in self._multi_values(node, v)]
        elif node == 0:
            pairs = values
        else:
            transform = self._transform
            pairs = [(n, transform(node, v)) for n, v in values]
        candidates = _Candidates(pairs)
        if slot >= 0:
            self._slots[slot] = candidates
        elif key >= 0:
            self._candidate_cache[candidate_key] = candidates
        return candidates

    def _collect(self, link: Rule, removed: tuple[Target, ...]) -> list[tuple[str, str]]:
        if len(link.targets) == 1:
            return self._values(link.targets[0], link, removed)
        out: list[tuple[str, str]] = []
        for target in link.targets:
            out.extend(self._values(target, link, removed))
        return out

    def _literal_mask(self, value: str) -> int:
        mask = self._masks.get(value)
        if mask is None:
            mask = self._masks[value] = self.engine.prefilter.scan(value)
        return mask

    def _after_full_match(self, link: Rule, top: Rule, state: _MessageState) -> None:
        resolve = self._resolver(top)
        for ctl in link.ctls:
            self._ctl(ctl)
        if link.skip:
            self.skip_next = link.skip
        if link.skip_after is not None:
            self.marker = link.skip_after
        if link.logdata is not None:
            state.data = link.logdata.expand(resolve)
        if link.msg is not None:
            state.msg = link.msg.expand(resolve)
        if link is not top or self.mode != "On":
            return
        action = top.disruptive
        status = top.status
        if action == "block":
            action = top.block_action
            if status is None:
                status = top.block_status
        if action in ("deny", "drop", "redirect"):
            self.status = status or (302 if action == "redirect" else 403)
            self.interrupted = True
            state.disruptive = True
        elif action is not None and action.startswith("allow"):
            self.allow_type = {"allow": "all", "allow:phase": "phase", "allow:request": "request"}[
                action
            ]

    def _record_value_match(self, rule: Rule, state: _MessageState) -> None:
        """libmodsecurity3 logs a multiMatch rule once per matching value, at once — before
        any chained link is tried and whatever nolog says; msg and logdata are there only
        when the rule has no chain."""
        line_state = _MessageState(
            operator=state.operator,
            parameter=state.parameter,
            variable=state.variable,
            value=state.value,
        )
        if not rule.chained:
            resolve = self._resolver(rule)
            line_state.msg = rule.msg.expand(resolve) if rule.msg is not None else ""
            line_state.data = rule.logdata.expand(resolve) if rule.logdata is not None else ""
        self._record(rule, line_state, logged=True)

    def _record(self, rule: Rule, state: _MessageState, *, logged: bool | None = None) -> None:
        # What v3 writes to the server log: a matching SecRule unless nolog; a SecAction
        # only with block or with log and a non-empty msg; an interruption always.
        if logged is None:
            if rule.kind == "action":
                logged = rule.disruptive == "block" or (rule.logs and bool(state.msg))
            else:
                logged = rule.logs
            logged = logged or state.disruptive
        severity = None if rule.severity is None else str(rule.severity)
        tags = rule.default_tags + rule.tags if rule.default_tags else rule.tags
        line = self._log_line(rule, state, severity, tags) if logged else ""
        self.matches.append(
            RuleMatch(
                id=rule.id,
                phase=rule.phase,
                msg=state.msg,
                data=state.data,
                severity=severity,
                tags=tags,
                variable=state.variable,
                value=state.value,
                logged=logged,
                log_line=line,
            )
        )

    def _log_line(
        self, rule: Rule, state: _MessageState, severity: str | None, tags: tuple[str, ...]
    ) -> str:
        if state.disruptive:
            head = f"ModSecurity: Access denied with code {self.status} (phase {rule.phase})."
        else:
            head = "ModSecurity: Warning."
        operator = state.operator[:1].upper() + state.operator[1:]
        if rule.kind == "action":
            matched = f"{head} "
        else:
            matched = (
                f"{head} Matched \"Operator `{operator}' with parameter "
                f"`{_clip(state.parameter)}' against variable `{state.variable}' "
                f"(Value: `{_hex(_clip(state.value))}' )"
            )
        parts = [
            matched,
            f'[file "{rule.file}"]',
            f'[line "{rule.line}"]',
            f'[id "{rule.id}"]',
            f'[rev "{_esc(rule.rev)}"]',
            f'[msg "{_esc(state.msg)}"]',
            f'[data "{_esc(_clip(state.data))}"]',
            f'[severity "{severity if severity is not None else "0"}"]',
            f'[ver "{_esc(rule.ver)}"]',
            f'[maturity "{rule.maturity or 0}"]',
            f'[accuracy "{rule.accuracy or 0}"]',
        ]
        parts.extend(f'[tag "{_esc(tag)}"]' for tag in tags)
        host = self.request.server_addr  # v3 names the server's address here
        parts.append(f'[hostname "{_esc(host)}"]')
        parts.append(f'[uri "{_esc(self._line_data().request_filename)}"]')
        parts.append(f'[unique_id "{self.unique_id}"]')
        return " ".join(parts)

    # ------------------------------------------------------------------ actions

    def _setvar(self, setvar: SetVar, rule: Rule) -> None:
        self.version += 1
        resolve = self._resolver(rule)
        key = setvar.key.expand(resolve)
        store = self.tx if setvar.collection == "TX" else self._persistent(setvar.collection)
        lowered = key.lower()
        operation = setvar.operation
        if operation == "delete":
            store.pop(lowered, None)
            return
        if operation == "one":
            store[lowered] = (key, "1")
            return
        value = setvar.value.expand(resolve)
        if operation == "=":
            store[lowered] = (key, value)
            return
        current = store.get(lowered)
        base = _to_int(current[1]) if current is not None else 0
        amount = _to_int(value)
        total = base + amount if operation == "+" else base - amount
        store[lowered] = (current[0] if current is not None else key, str(total))

    def _persistent(self, collection: str) -> dict[str, tuple[str, str]]:
        store = self.persistent.get(collection)
        if store is None:
            store = self.persistent[collection] = {}
        return store

    def _ctl(self, ctl: Ctl) -> None:
        option = ctl.option
        if option == "ruleRemoveById":
            self.removed_ids.extend(ctl.ranges)
        elif option == "ruleRemoveByTag":
            self.removed_tags.append(ctl.value)
        elif option == "ruleRemoveTargetById" and ctl.target is not None:
            self._remove_target(self.engine.rules_in_ranges(ctl.ranges), ctl.target)
        elif option == "ruleRemoveTargetByTag" and ctl.target is not None:
            self._remove_target(self.engine.rules_by_tag.get(ctl.value, ()), ctl.target)
        elif option == "ruleEngine":
            self.mode = ctl.value
        elif option == "requestBodyProcessor":
            self.body_processor = ctl.value
            self.version += 1
        elif option == "requestBodyAccess":
            self.request_body_access = ctl.value == "On"
        elif option == "responseBodyAccess":
            self.response_body_access = ctl.value == "On"
        # forceRequestBodyVariable, auditEngine, auditLogParts: no effect (as in v3)

    # ------------------------------------------------------------------ macros

    def _resolver(self, rule: Rule) -> Callable[[MacroRef], str]:
        def resolve(ref: MacroRef) -> str:
            return self._macro_value(ref, rule)

        return resolve

    def _macro_value(self, ref: MacroRef, rule: Rule) -> str:
        collection = ref.collection
        if collection == "TX":
            return self._tx_value(ref.key or "")
        if collection == "MATCHED_VAR":
            return self.matched_var
        if collection == "MATCHED_VAR_NAME":
            return self.matched_var_name
        if collection == "RULE":
            return self._rule_property(rule, (ref.key or "").lower())
        if collection in ("IP", "GLOBAL", "SESSION", "USER", "RESOURCE"):
            entry = self._persistent(collection).get((ref.key or "").lower())
            return entry[1] if entry is not None else ""
        if ref.key is None:
            return self._scalar(collection) or ""
        key = ref.key.lower()
        for item_key, value, _ in self._collection(collection):
            if item_key.lower() == key:
                return value
        return ""

    def _rule_property(self, rule: Rule, key: str) -> str:
        if key == "id":
            return str(rule.id)
        if key == "msg":
            return rule.msg.text if rule.msg is not None else ""
        if key == "logdata":
            return rule.logdata.text if rule.logdata is not None else ""
        if key == "severity":
            return "" if rule.severity is None else str(rule.severity)
        if key in ("ver", "rev"):
            return str(getattr(rule, key))
        if key == "phase":
            return str(rule.phase)
        return ""

    def _tx_value(self, key: str) -> str:
        entry = self.tx.get(key.lower())
        return entry[1] if entry is not None else ""

    # ------------------------------------------------------------------ transformations

    def _transform(self, node: int, value: str) -> str:
        """``value`` through the transformation chain ending at trie ``node`` (> 0)."""
        cache = self.cache[node]
        result = cache.get(value)
        if result is None:
            trie = self.engine.trie
            parent = trie.parent[node]
            base = self._transform(parent, value) if parent else value
            function = trie.function[node]
            assert function is not None
            result = cache[value] = function(base)
        return result

    def _multi_values(self, node: int, value: str) -> list[str]:
        values = [value]
        current = value
        for step in self.engine.trie.path(node):
            after = self._transform(step, value)
            if after != current:
                values.append(after)
                current = after
        return values

    # ------------------------------------------------------------------ variables

    def _values(
        self, target: Target, link: Rule, removed: tuple[Target, ...]
    ) -> list[tuple[str, str]]:
        collection = target.collection
        if collection in _SCALAR_NAMES:
            value = self._scalar(collection)
            if target.count:
                return [(collection, "1" if value is not None else "0")]
            if value is None or (removed and _excluded(removed, collection, None)):
                return []
            return [(collection, value)]
        selected: Items
        key = target.key
        if key is not None and collection == "TX":
            entry = self.tx.get(key)
            selected = [(entry[0], entry[1], f"TX:{entry[0]}")] if entry is not None else []
        else:
            items = self._collection(collection)
            if key is not None:
                if collection == "XML":
                    selected = [item for item in items if item[0] == key]
                else:
                    selected = self._key_index(collection, items).get(key, [])
            elif target.pattern is not None:
                search = target.pattern.search
                selected = [item for item in items if search(item[0])]
            else:
                selected = items
        if target.count:
            return [("&" + target.text.lstrip("&"), str(len(selected)))]
        exclusions = link.exclusions
        if not exclusions and not removed:
            return [(name, value) for _, value, name in selected]
        out: list[tuple[str, str]] = []
        for item_key, value, name in selected:
            if exclusions and _excluded(exclusions, collection, item_key):
                continue
            if removed and _excluded(removed, collection, item_key):
                continue
            out.append((name, value))
        return out

    def _key_index(self, collection: str, items: Items) -> dict[str, Items]:
        index = self._indexes.get(collection)
        if index is None:
            index = {}
            for item in items:
                index.setdefault(item[0].lower(), []).append(item)
            if collection not in _UNCACHED:
                self._indexes[collection] = index
        return index

    def _remove_target(self, rules: Iterable[Rule], target: Target) -> None:
        """``ctl:ruleRemoveTarget*``: ``target`` no longer applies to these rules."""
        removed = self._removed_map
        for rule in rules:
            removed[rule.id] = (*removed.get(rule.id, ()), target)

    def _header(self, lowered_name: str) -> str | None:
        for name, value in self.request.headers:
            if name.lower() == lowered_name:
                return value
        return None

    def _line_data(self) -> RequestLineData:
        if self._line is None:
            self._line = request_line_data(self.request)
        return self._line

    def _response_content_type(self) -> str | None:
        if self.response is None:
            return None
        for name, value in self.response.headers:
            if name.lower() == "content-type":
                return value.split(";", 1)[0]
        return None

    def _collection(self, collection: str) -> Items:
        items = self._items.get(collection)
        if items is None:
            items = self._build_collection(collection)
            if collection not in _UNCACHED:
                self._items[collection] = items
        return items

    def _build_collection(self, collection: str) -> Items:
        body = self._body
        if collection in ("ARGS", "ARGS_NAMES"):
            pairs = self._line_data().args_get
            if body is not None and body.args_post:
                pairs = pairs + body.args_post
            if collection == "ARGS":
                return _keyed(collection, pairs)
            return [(k, k, f"ARGS_NAMES:{k}") for k, _ in pairs]
        if collection == "ARGS_GET":
            return _keyed("ARGS_GET", self._line_data().args_get)
        if collection == "ARGS_POST":
            return _keyed("ARGS_POST", body.args_post if body is not None else ())
        if collection in ("ARGS_GET_NAMES", "ARGS_POST_NAMES"):
            return _names(collection, self._collection(collection[:-6]))
        if collection == "REQUEST_HEADERS":
            return _keyed("REQUEST_HEADERS", self.request.headers)
        if collection == "REQUEST_HEADERS_NAMES":
            return _names(collection, self._collection("REQUEST_HEADERS"))
        if collection == "REQUEST_COOKIES":
            return _keyed("REQUEST_COOKIES", self._line_data().cookies)
        if collection == "REQUEST_COOKIES_NAMES":
            return _names(collection, self._collection("REQUEST_COOKIES"))
        if collection == "RESPONSE_HEADERS":
            headers = self.response.headers if self.response is not None else ()
            return _keyed("RESPONSE_HEADERS", headers)
        if collection == "RESPONSE_HEADERS_NAMES":
            return _names(collection, self._collection("RESPONSE_HEADERS"))
        if collection == "TX":
            return [(k, v, f"TX:{k}") for k, v in self.tx.values()]
        if collection in ("IP", "GLOBAL", "SESSION", "USER", "RESOURCE"):
            return [(k, v, f"{collection}:{k}") for k, v in self._persistent(collection).values()]
        if collection == "MATCHED_VARS":
            return [(n, v, n) for n, v in self.matched_vars]
        if collection == "MATCHED_VARS_NAMES":
            return [(n, n, n) for n, _ in self.matched_vars]
        if body is None:
            return []
        if collection == "FILES":
            return [(f.field, f.filename, f"FILES:{f.field}") for f in body.files]
        if collection == "FILES_NAMES":
            return [(f.field, f.field, f"FILES_NAMES:{f.field}") for f in body.files]
        if collection == "FILES_SIZES":
            return [(f.field, str(f.size), f"FILES_SIZES:{f.field}") for f in body.files]
        if collection == "FILES_TMP_CONTENT":
            return [(f.field, f.content, f"FILES_TMP_CONTENT:{f.field}") for f in body.files]
        if collection == "MULTIPART_PART_HEADERS":
            return _keyed(collection, body.multipart_part_headers)
        if collection == "XML":
            return [(k, v, "XML") for k in ("/*",) for v in body.xml_text] + [
                ("//@*", v, "XML") for v in body.xml_attrs
            ]
        return []

    def _scalar(self, name: str) -> str | None:
        if name in self._scalars:
            return self._scalars[name]
        value = self._compute_scalar(name)
        if value is None and name not in _COMPUTED_SCALARS:
            # v3 keeps these in "anchored" variables, which yield their (empty) value even
            # when nothing set them: a rule over an unset one sees "".
            value = ""
        if name not in _UNCACHED:
            self._scalars[name] = value
        return value

    def _compute_scalar(self, name: str) -> str | None:
        request = self.request
        body = self._body
        if name.startswith("REQUEST_") or name == "QUERY_STRING":
            line = self._line_data()
            simple = {
                "REQUEST_LINE": line.request_line,
                "REQUEST_METHOD": line.request_method,
                "REQUEST_PROTOCOL": line.request_protocol,
                "REQUEST_URI": line.request_uri,
                "REQUEST_URI_RAW": line.request_uri_raw,
                "REQUEST_FILENAME": line.request_filename,
                "REQUEST_BASENAME": line.request_basename,
                "QUERY_STRING": line.query_string,
            }
            if name in simple:
                return simple[name]
            if name == "REQUEST_BODY":
                return self._request_body_text or None
            if name == "REQUEST_BODY_LENGTH":
                text = self._request_body_text
                return str(len(text)) if text else None
            return None
        if name == "MATCHED_VAR":
            return self.matched_var
        if name == "MATCHED_VAR_NAME":
            return self.matched_var_name
        if name == "REMOTE_ADDR":
            return request.remote_addr
        if name == "REMOTE_PORT":
            return str(request.remote_port)
        if name == "SERVER_ADDR":
            return request.server_addr
        if name == "SERVER_PORT":
            return str(request.server_port)
        if name == "SERVER_NAME":
            host = self._header("host")
            return host.split(":", 1)[0] if host is not None else None
        if name == "UNIQUE_ID":
            return self.unique_id
        if name == "REQBODY_PROCESSOR":
            return self.body_processor
        if name in ("REQBODY_ERROR", "REQBODY_PROCESSOR_ERROR"):
            if body is None:
                return None
            return "1" if body.error else "0"
        if name in ("REQBODY_ERROR_MSG", "REQBODY_PROCESSOR_ERROR_MSG"):
            return body.error if body is not None and body.error else None
        if name == "URLENCODED_ERROR":
            if (body is not None and body.urlencoded_error) or self._line_data().urlencoded_error:
                return "1"
            return None
        if name == "INBOUND_DATA_ERROR":
            return "1" if self._inbound_data_error else ("0" if self.phase >= 2 else None)
        if name == "OUTBOUND_DATA_ERROR":
            return "1" if self._outbound_data_error else ("0" if self.phase >= 4 else None)
        if name == "ARGS_COMBINED_SIZE":
            return str(sum(len(k) + len(v) for k, v, _ in self._collection("ARGS")))
        if name == "FILES_COMBINED_SIZE":
            return str(sum(f.size for f in body.files)) if body is not None else "0"
        if name.startswith("MULTIPART_"):
            if body is None or body.processor != "MULTIPART":
                return None
            value = body.multipart.get(name)
            return str(value) if value is not None else "0"
        if name == "FULL_REQUEST" or name == "FULL_REQUEST_LENGTH":
            text = "".join(f"{k}: {v}\n" for k, v in request.headers) + "\n\n"
            text += self._request_body_text
            return text if name == "FULL_REQUEST" else str(len(text))
        if name.startswith("RESPONSE_") or name == "STATUS_LINE":
            return self._response_scalar(name)
        if name == "DURATION":
            return str(int((time.monotonic() - self.started) * 1_000_000))
        if name.startswith("TIME"):
            return _time_value(name)
        if name == "HIGHEST_SEVERITY":
            severities = [int(m.severity) for m in self.matches if m.severity is not None]
            return str(min(severities)) if severities else "255"
        if name == "AUTH_TYPE":
            auth = self._header("authorization")
            return auth.split(" ", 1)[0] if auth else None
        if name == "MSC_PCRE_LIMITS_EXCEEDED":
            return "0"
        return None

    def _response_scalar(self, name: str) -> str | None:
        response = self.response
        if response is None:
            return None
        if name == "RESPONSE_STATUS":
            return str(response.status)
        if name == "RESPONSE_PROTOCOL":
            return response.version
        if name == "RESPONSE_CONTENT_TYPE":
            return self._response_content_type()
        if name == "RESPONSE_CONTENT_LENGTH":
            for key, value in response.headers:
                if key.lower() == "content-length":
                    return value
            return None
        if name == "RESPONSE_BODY":
            return self._response_body
        if name == "STATUS_LINE":
            return f"{response.version} {response.status}"
        return None


_SCALAR_NAMES: frozenset[str] = frozenset()  # filled below from _rules.SCALARS
# Variables whose values change while a phase runs: never shared between rules.
_VOLATILE = frozenset(
    {
        "MATCHED_VAR",
        "MATCHED_VAR_NAME",
        "MATCHED_VARS",
        "MATCHED_VARS_NAMES",
        "DURATION",
        "HIGHEST_SEVERITY",
        "TIME",
        "TIME_EPOCH",
        "TIME_SEC",
        "TIME_MIN",
        "TIME_HOUR",
        "TIME_DAY",
        "TIME_MON",
        "TIME_YEAR",
        "TIME_WDAY",
    }
)
# Variables that setvar, capture and ctl change: shared while Transaction.version holds.
_VERSIONED = frozenset({"TX", "IP", "GLOBAL", "SESSION", "USER", "RESOURCE", "REQBODY_PROCESSOR"})
# Scalars v3 computes on demand (absent when there is nothing to report); every other scalar
# is an anchored variable that always yields a value.
_COMPUTED_SCALARS = frozenset(
    {
        "DURATION",
        "HIGHEST_SEVERITY",
        "MODSEC_BUILD",
        "REMOTE_USER",
        "STATUS_LINE",
        "WEBSERVER_ERROR_LOG",
        "TIME",
        "TIME_EPOCH",
        "TIME_SEC",
        "TIME_MIN",
        "TIME_HOUR",
        "TIME_DAY",
        "TIME_MON",
        "TIME_YEAR",
        "TIME_WDAY",
    }
)
_UNCACHED = frozenset(
    {
        "TX",
        "IP",
        "GLOBAL",
        "SESSION",
        "USER",
        "RESOURCE",
        "MATCHED_VARS",
        "MATCHED_VARS_NAMES",
        "MATCHED_VAR",
        "MATCHED_VAR_NAME",
        "DURATION",
        "HIGHEST_SEVERITY",
        "REQBODY_PROCESSOR",
        "INBOUND_DATA_ERROR",
        "OUTBOUND_DATA_ERROR",
        "TIME",
        "TIME_EPOCH",
        "TIME_SEC",
        "TIME_MIN",
        "TIME_HOUR",
        "TIME_DAY",
        "TIME_MON",
        "TIME_YEAR",
        "TIME_WDAY",
    }
)


@dataclass(slots=True)
class _Candidates:
    pairs: list[tuple[str, str]]
    union: int | None = None  # pre-filter literals present in any of the values


def _union(mask_of: Callable[[str], int], pairs: list[tuple[str, str]]) -> int:
    union = 0
    for _, value in pairs:
        union |= mask_of(value)
    return union


@dataclass(slots=True)
class _MessageState:
    operator: str = ""  # the last matching link's operator and argument (for the log line)
    parameter: str = ""  # the operator's argument, macros expanded
    msg: str = ""
    data: str = ""
    variable: str = ""
    value: str = ""
    disruptive: bool = False


def _keyed(collection: str, pairs: Iterable[tuple[str, str]]) -> Items:
    return [(k, v, f"{collection}:{k}") for k, v in pairs]


def _names(collection: str, items: Items) -> Items:
    return [(k, k, f"{collection}:{k}") for k, _, _ in items]


def _excluded(exclusions: tuple[Target, ...], collection: str, key: str | None) -> bool:
    return any(_target_covers(target, collection, key) for target in exclusions)


def _target_covers(target: Target, collection: str, key: str | None) -> bool:
    if target.collection != collection:
        return False
    if target.key is not None:
        return key is not None and key.lower() == target.key
    if target.pattern is not None:
        return key is not None and target.pattern.search(key) is not None
    return True


def _time_value(name: str) -> str:
    now = time.localtime()
    table = {
        "TIME": time.strftime("%H:%M:%S", now),
        "TIME_EPOCH": str(int(time.time())),
        "TIME_SEC": f"{now.tm_sec:02d}",
        "TIME_MIN": f"{now.tm_min:02d}",
        "TIME_HOUR": f"{now.tm_hour:02d}",
        "TIME_DAY": f"{now.tm_mday:02d}",
        "TIME_MON": f"{now.tm_mon - 1:02d}",
        "TIME_YEAR": str(now.tm_year),
        "TIME_WDAY": str((now.tm_wday + 1) % 7),
    }
    return table.get(name, "")


_NEEDS_HEX = re.compile(r'[^\x20-\x7e]|["\\]')
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _hex(text: str) -> str:
    """Bytes outside printable ASCII as ``\\xHH`` (v3's matched-value display)."""
    if _NOT_PRINTABLE.search(text) is None:
        return text
    return _NOT_PRINTABLE.sub(lambda m: f"\\x{ord(m.group()) & 0xFF:02x}", text)


def _esc(text: str) -> str:
    """Bytes outside printable ASCII, quotes and backslashes as ``\\xHH`` (v3's log)."""
    if _NEEDS_HEX.search(text) is None:
        return text
    return _NEEDS_HEX.sub(lambda m: f"\\x{ord(m.group()) & 0xFF:02x}", text)


def _clip(text: str, limit: int = 200) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ({len(text) - limit} characters omitted)"


def _init_scalars() -> None:
    from ._rules import SCALARS

    global _SCALAR_NAMES
    _SCALAR_NAMES = frozenset(SCALARS)


_init_scalars()


def severity_name(severity: str | None) -> str | None:
    """ "2" → "CRITICAL" (for callers that prefer names)."""
    if severity is None or not severity.isdigit() or int(severity) >= len(_SEVERITY_NAMES):
        return None
    return _SEVERITY_NAMES[int(severity)]


class WafLoadError(Exception):
    """Loading failed; ``problems`` lists every (file, line, reason) found."""

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        self.problems = problems
        shown = "\n".join(f"{file}:{line}: {reason}" for file, line, reason in problems[:20])
        more = f"\n… and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) loading the WAF rules:\n{shown}{more}")


class _NeverMatches:
    name = "never"

    def match(self, value: str) -> tuple[str, ...] | None:
        return None


_MACRO_OPERATOR_CACHE_LIMIT = 4096


class WafEngine:
    """A loaded rule set; :meth:`evaluate` runs one request (and response) through it.

    The engine is immutable after loading except for the in-memory persistent collections
    (IP, GLOBAL, SESSION, …) and the cache of operators whose argument holds macros.
    """

    def __init__(self, ruleset: RuleSet, *, prefilter: bool = True) -> None:
        self.ruleset = ruleset
        self.trie = TransformationTrie()
        self.prefilter = Prefilter()
        self.persistent: dict[str, dict[str, tuple[str, str]]] = {}
        self._macro_operators: dict[tuple[int, str], Any] = {}
        value_keys: dict[tuple[tuple[Target, ...], tuple[Target, ...]], int] = {}
        slots: dict[tuple[int, int, bool], int] = {}
        for phase_rules in ruleset.phases.values():
            for rule in phase_rules:
                link: Rule | None = rule
                while link is not None:
                    link.transform_node = self.trie.node_for(link.effective_transformations)
                    collections = {t.collection for t in link.targets}
                    if link.targets and not collections & _VOLATILE:
                        signature = (link.targets, link.exclusions)
                        link.values_key = value_keys.setdefault(signature, len(value_keys))
                        link.versioned = bool(collections & _VERSIONED)
                        if not link.versioned:
                            slot_key = (link.values_key, link.transform_node, link.multi_match)
                            link.slot = slots.setdefault(slot_key, len(slots))
                    if len(link.targets) == 1 and not link.exclusions and not link.multi_match:
                        only = link.targets[0]
                        if (
                            only.collection == "TX"
                            and only.key is not None
                            and only.pattern is None
                            and not only.count
                            and not only.exclude
                        ):
                            link.tx_key = only.key
                    if prefilter and link.operator_name.lower() == "rx" and link.operator:
                        literals = required_literals(link.operator_arg)
                        if literals:
                            link.prefilter_mask = self.prefilter.mask_for(literals)
                    link = link.chain
        self.prefilter.freeze()
        self.slot_count = len(slots)
        self.rules_by_tag: dict[str, list[Rule]] = {}
        ordered: list[Rule] = []
        for phase_rules in ruleset.phases.values():
            for rule in phase_rules:
                if rule.kind == "marker":
                    continue
                ordered.append(rule)
                for tag in rule.tags:
                    self.rules_by_tag.setdefault(tag, []).append(rule)
        ordered.sort(key=lambda r: r.id)
        self._rules_sorted = ordered
        self._ids_sorted = [r.id for r in ordered]

    @classmethod
    def load(
        cls,
        paths: Iterable[os.PathLike[str] | str],
        *,
        before: str = "",
        after: str = "",
        prefilter: bool = True,
    ) -> WafEngine:
        from pathlib import Path

        from ._rules import compile_directives
        from ._seclang import SecLangReader

        path_list = [Path(p) for p in paths]
        base = path_list[0].parent if path_list else Path.cwd()
        reader = SecLangReader()
        if before:
            reader.read_text(before, "<before>", base)
        for path in path_list:
            reader.read_file(path)
        if after:
            reader.read_text(after, "<after>", base)
        ruleset, problems = compile_directives(reader.directives)
        all_problems = reader.problems + problems
        if all_problems:
            raise WafLoadError(all_problems)
        return cls(ruleset, prefilter=prefilter)

    @property
    def rule_engine(self) -> str:
        return self.ruleset.settings.rule_engine

    def evaluate(
        self, request: HttpRequest | bytes, response: HttpResponse | None = None
    ) -> WafResult:
        """Run one request (raw bytes are parsed first; :class:`HttpParseError` propagates,
        the front end answers 400 as nginx would) and, when given, its response through
        phases 1-5. Phases 3-4 run only with a response; phase 5 always runs."""
        if isinstance(request, bytes | bytearray):
            from ._http import parse_request

            request = parse_request(bytes(request))
        return Transaction(self, request, response).run()

    def rules_in_ranges(self, ranges: Iterable[tuple[int, int]]) -> list[Rule]:
        found: list[Rule] = []
        for low, high in ranges:
            start = bisect.bisect_left(self._ids_sorted, low)
            end = bisect.bisect_right(self._ids_sorted, high)
            found.extend(self._rules_sorted[start:end])
        return found

    def macro_operator(self, rule: Rule, argument: str) -> Any:
        key = (id(rule), argument)
        operator = self._macro_operators.get(key)
        if operator is None:
            from ._operators import OperatorError, compile_operator

            try:
                operator = compile_operator(rule.operator_name, argument, data_dir=rule.directory)
            except OperatorError:
                operator = _NeverMatches()
            if len(self._macro_operators) >= _MACRO_OPERATOR_CACHE_LIMIT:
                self._macro_operators.clear()
            self._macro_operators[key] = operator
        return operator
