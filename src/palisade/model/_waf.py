"""WebApplicationFirewall: which workloads the WAF protects, and how (``palisade.io/v1``).

A namespaced resource. Its ``selector`` (Calico selector syntax) picks pods of its namespace;
the WAF proxy in front of a matching workload runs the OWASP CRS with these settings, and
picks up changes live. Defaults follow what Calico ships: detection only, paranoia level 1,
the CRS's anomaly thresholds (inbound 5, outbound 4).

Exclusions switch rules off for a workload — whole rules (by id, id range or tag), only some
request variables of a rule (``targets``), and optionally only under some paths.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from palisade.model._base import ResourceBase, StrictModel
from palisade.model._errors import IssueCollector
from palisade.model._validate import Selector

PALISADE_API_VERSION = "palisade.io/v1"

_RULE_ID = re.compile(r"^[1-9][0-9]{0,8}(-[1-9][0-9]{0,8})?$")
_TARGET = re.compile(r"^[A-Z_]+(:[^\s,;\"']+)?$")
_TAG = re.compile(r"^[A-Za-z0-9_./-]+$")


class WafExclusion(StrictModel):
    """Rules (``ruleIds``: ``942100`` or ``942100-942199``; ``tags``) not to apply — to the
    listed ``targets`` only (``ARGS:q``, ``REQUEST_COOKIES:session``) if given, under the
    listed path prefixes only (``paths``) if given."""

    rule_ids: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    reason: str | None = None

    @field_validator("rule_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> WafExclusion:
        issues = IssueCollector()
        if not self.rule_ids and not self.tags:
            issues.add((), "name the rules to exclude: ruleIds or tags")
        for index, rule_id in enumerate(self.rule_ids):
            if not _RULE_ID.match(rule_id):
                issues.add(("ruleIds", index), "a rule id (942100) or a range (942100-942199)")
            elif "-" in rule_id:
                low, high = (int(part) for part in rule_id.split("-"))
                if low > high:
                    issues.add(("ruleIds", index), "the range's start is after its end")
        for index, tag in enumerate(self.tags):
            if not _TAG.match(tag):
                issues.add(("tags", index), "letters, digits and _ . / - only")
        for index, target in enumerate(self.targets):
            if not _TARGET.match(target):
                issues.add(("targets", index), "a variable such as ARGS:q or REQUEST_COOKIES")
        for index, path in enumerate(self.paths):
            if not path.startswith("/") or any(c in path for c in "\"'\\ \t\r\n"):
                issues.add(("paths", index), "a path prefix starting with / (no quotes, spaces)")
        issues.raise_if_any()
        return self


class WebApplicationFirewallSpec(StrictModel):
    selector: Selector = "all()"
    mode: Literal["DetectionOnly", "On", "Off"] = "DetectionOnly"
    paranoia_level: StrictInt = Field(default=1, ge=1, le=4)
    inbound_anomaly_threshold: StrictInt = Field(default=5, ge=1, le=10000)
    outbound_anomaly_threshold: StrictInt = Field(default=4, ge=1, le=10000)
    fail_open: StrictBool = True
    inspect_responses: StrictBool = False
    request_body_limit: StrictInt = Field(default=13107200, ge=1024, le=1 << 30)
    exclusions: list[WafExclusion] = Field(default_factory=list)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted On/Off as a boolean.
        if value is True:
            return "On"
        if value is False:
            return "Off"
        return value


class WebApplicationFirewall(ResourceBase):
    """The WAF settings of the workloads its selector picks in its namespace."""

    API_VERSION: ClassVar[str] = PALISADE_API_VERSION
    NAMESPACED: ClassVar[bool] = True

    api_version: str = PALISADE_API_VERSION
    kind: Literal["WebApplicationFirewall"] = "WebApplicationFirewall"
    spec: WebApplicationFirewallSpec = Field(default_factory=WebApplicationFirewallSpec)
