"""From a WebApplicationFirewall resource to the engine's configuration.

:func:`engine_config` turns the resource's settings into SecLang text around the CRS:

- ``before`` (loaded before ``crs-setup.conf``): the engine settings (mode, body access and
  limits, the JSON/XML body processors chosen by Content-Type, the body-parse rules that reject
  what cannot be inspected) and the exclusions scoped to paths, as phase-1 rules that switch
  rules off with ``ctl`` for matching requests;
- ``setup`` (loaded after ``crs-setup.conf``, before the rules): paranoia level and anomaly
  thresholds (the CRS's 900000/900110 settings);
- ``after`` (after the rules): exclusions for every path — ``SecRuleRemoveById``/``ByTag``, or
  ``SecRuleUpdateTargetById`` when only some variables are excluded.

:func:`select_firewall` picks the resource that applies to a pod. :func:`crs_dir` finds the
rule set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palisade.model import parse_document
from palisade.model._waf import WebApplicationFirewall, WebApplicationFirewallSpec
from palisade.selector import parse as parse_selector

CRS_ENV = "PALISADE_CRS_DIR"
#: Rule ids for the exclusions this module writes (the CRS leaves 1-99,999 to local rules).
EXCLUSION_ID_BASE = 10000


@dataclass(frozen=True)
class EngineConfig:
    before: str
    setup: str
    after: str
    mode: str
    fail_open: bool
    inspect_responses: bool


def crs_dir(explicit: str | Path | None = None) -> Path:
    """The CRS: ``explicit``, ``$PALISADE_CRS_DIR``, the CRS v4 beside this checkout
    (``../shared/data/crs``), or Debian's ``modsecurity-crs`` package."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    elif os.environ.get(CRS_ENV):
        candidates.append(Path(os.environ[CRS_ENV]))
    else:
        candidates.append(Path(__file__).resolve().parents[4] / "shared" / "data" / "crs")
        candidates.append(Path("/usr/share/modsecurity-crs"))
    for candidate in candidates:
        if (candidate / "rules").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no OWASP CRS found (looked in {', '.join(str(c) for c in candidates)}); "
        f"set {CRS_ENV} to a CRS folder holding rules/*.conf"
    )


def crs_files(root: Path) -> list[Path]:
    """The CRS files in load order: the setup file, then ``rules/*.conf`` by name."""
    setup = next(
        (p for p in (root / "crs-setup.conf", root / "crs-setup.conf.example") if p.is_file()),
        None,
    )
    rules = sorted((root / "rules").glob("*.conf"))
    return ([setup] if setup else []) + rules


ENGINE_SETTINGS = """\
SecRequestBodyAccess On
SecRequestBodyLimit {body_limit}
SecRequestBodyNoFilesLimit 131072
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 512
SecArgumentsLimit 1000
SecResponseBodyAccess {response_access}
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecResponseBodyLimit 1048576
SecResponseBodyLimitAction ProcessPartial
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\\+|/)|text/)xml" \\
    "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" \\
    "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule &ARGS "@ge 1000" \\
    "id:200007,phase:2,t:none,log,deny,status:400,\\
    msg:'Failed to fully parse request body due to large argument count',severity:2"
SecRule REQBODY_ERROR "!@eq 0" \\
    "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',\\
    logdata:'%{{reqbody_error_msg}}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" \\
    "id:200003,phase:2,t:none,log,deny,status:400,\\
    msg:'Multipart request body failed strict validation'"
"""


def engine_config(spec: WebApplicationFirewallSpec) -> EngineConfig:
    before = [f"SecRuleEngine {spec.mode}"]
    before.append(
        ENGINE_SETTINGS.format(
            body_limit=spec.request_body_limit,
            response_access="On" if spec.inspect_responses else "Off",
        )
    )
    after: list[str] = []
    next_id = EXCLUSION_ID_BASE
    for exclusion in spec.exclusions:
        controls: list[str] = []
        for rule_id in exclusion.rule_ids:
            if exclusion.targets:
                controls += [f"ctl:ruleRemoveTargetById={rule_id};{t}" for t in exclusion.targets]
            else:
                controls.append(f"ctl:ruleRemoveById={rule_id}")
        for tag in exclusion.tags:
            if exclusion.targets:
                controls += [f"ctl:ruleRemoveTargetByTag={tag};{t}" for t in exclusion.targets]
            else:
                controls.append(f"ctl:ruleRemoveByTag={tag}")
        if exclusion.paths:
            for path in exclusion.paths:
                before.append(
                    f'SecRule REQUEST_FILENAME "@beginsWith {path}" '
                    f'"id:{next_id},phase:1,pass,nolog,t:none,{",".join(controls)}"'
                )
                next_id += 1
            continue
        for rule_id in exclusion.rule_ids:
            if exclusion.targets:
                after += [
                    f'SecRuleUpdateTargetById {rule_id} "!{target}"' for target in exclusion.targets
                ]
            else:
                after.append(f"SecRuleRemoveById {rule_id}")
        for tag in exclusion.tags:
            if exclusion.targets:
                # SecRuleUpdateTargetByTag is not in every engine; a rule that always runs
                # removes the targets of the tagged rules instead.
                before.append(
                    f'SecAction "id:{next_id},phase:1,pass,nolog,t:none,'
                    + ",".join(f"ctl:ruleRemoveTargetByTag={tag};{t}" for t in exclusion.targets)
                    + '"'
                )
                next_id += 1
            else:
                after.append(f'SecRuleRemoveByTag "{tag}"')
    level = spec.paranoia_level
    setup = (
        f'SecAction "id:900000,phase:1,pass,nolog,t:none,'
        f'setvar:tx.blocking_paranoia_level={level}"\n'
        f'SecAction "id:900110,phase:1,pass,nolog,t:none,'
        f"setvar:tx.inbound_anomaly_score_threshold={spec.inbound_anomaly_threshold},"
        f'setvar:tx.outbound_anomaly_score_threshold={spec.outbound_anomaly_threshold}"\n'
    )
    return EngineConfig(
        before="\n".join(before) + "\n",
        setup=setup,
        after="\n".join(after) + ("\n" if after else ""),
        mode=spec.mode,
        fail_open=spec.fail_open,
        inspect_responses=spec.inspect_responses,
    )


def select_firewall(
    firewalls: Iterable[WebApplicationFirewall], namespace: str, labels: Mapping[str, str]
) -> WebApplicationFirewall | None:
    """The resource protecting a pod: of those in its namespace whose selector matches its
    labels, the first by name (so the choice is stable when several match)."""
    matching = [
        fw
        for fw in firewalls
        if fw.namespace == namespace and parse_selector(fw.spec.selector).matches(labels)
    ]
    return min(matching, key=lambda fw: fw.name) if matching else None


def with_exclusion(
    firewall: WebApplicationFirewall,
    rule_ids: Iterable[int],
    *,
    path: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The firewall's document with one more exclusion (rules off, under ``path`` if given);
    an identical exclusion already present is not added twice."""
    document = firewall.to_document()
    exclusion: dict[str, Any] = {"ruleIds": [str(i) for i in sorted(set(rule_ids))]}
    if not exclusion["ruleIds"]:
        raise ValueError("an exclusion needs at least one rule id")
    if path:
        exclusion["paths"] = [path]
    spec = document.setdefault("spec", {})
    exclusions = spec.setdefault("exclusions", [])
    for existing in exclusions:
        if (
            existing.get("ruleIds") == exclusion["ruleIds"]
            and existing.get("paths", []) == (exclusion.get("paths", []))
            and not existing.get("targets")
            and not existing.get("tags")
        ):
            return document
    if reason:
        exclusion["reason"] = reason
    exclusions.append(exclusion)
    # Validate through the model, so the server never stores what `palisade apply` rejects.
    return parse_document(document, source=f"{firewall.namespace}/{firewall.name}").to_document()
