"""WAF verdicts as security events.

One request that matched at least one attack rule becomes one event: the CRS attack category
of its most severe match decides ``attack_vector`` and the ATT&CK technique; the record keeps
the request line, every matched rule (id, message, severity, tags, variable, data), the anomaly
scores and the verdict. Secrets never leave the proxy: the values of credential-bearing headers
and of cookies are masked wherever they appear — headers, matched data, rule messages.

The function takes structural types, so the event model does not import the WAF engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ._mitre import technique
from ._model import SecurityEvent

MASK = "****"

#: Headers whose values are credentials (compared in lower case).
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
    }
)

#: CRS severity → event severity (0-100).
SEVERITY = {"EMERGENCY": 100, "ALERT": 95, "CRITICAL": 90, "ERROR": 70, "WARNING": 50, "NOTICE": 30}
_NUMERIC_SEVERITY = {"0": "EMERGENCY", "1": "ALERT", "2": "CRITICAL", "3": "ERROR"}
_NUMERIC_SEVERITY |= {"4": "WARNING", "5": "NOTICE", "6": "INFO", "7": "DEBUG"}

#: CRS ``attack-*`` tag → (category shown to users, ATT&CK technique).
CATEGORIES: dict[str, tuple[str, str]] = {
    "attack-sqli": ("SQL injection", "T1190"),
    "attack-xss": ("cross-site scripting", "T1190"),
    "attack-rce": ("remote command execution", "T1190"),
    "attack-lfi": ("local file inclusion / path traversal", "T1190"),
    "attack-rfi": ("remote file inclusion", "T1190"),
    "attack-injection-php": ("PHP injection", "T1190"),
    "attack-injection-generic": ("code injection", "T1190"),
    "attack-injection-java": ("Java injection", "T1190"),
    "attack-ssrf": ("server-side request forgery", "T1190"),
    "attack-ssti": ("server-side template injection", "T1190"),
    "attack-fixation": ("session fixation", "T1190"),
    "attack-generic": ("generic attack", "T1190"),
    "attack-multipart-header": ("multipart attack", "T1190"),
    "attack-protocol": ("protocol violation", "T1190"),
    "attack-disclosure": ("data leakage", "T1190"),
    "attack-reputation-scanner": ("security scanner", "T1595.002"),
}
WEB_SHELL_TAG = "OWASP_CRS/WEB-SHELLS"


class MatchLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def msg(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def severity(self) -> str | None: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def variable(self) -> str: ...


class RequestLike(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def uri(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


def severity_name(value: str | None) -> str:
    if value is None:
        return ""
    text = value.strip().upper()
    return _NUMERIC_SEVERITY.get(text, text)


def classify(matches: Sequence[MatchLike]) -> tuple[str, str, MatchLike | None]:
    """(category, technique id, deciding match): the most severe match with an attack tag."""
    best: tuple[int, str, str, MatchLike] | None = None
    for match in matches:
        if WEB_SHELL_TAG in match.tags:
            found: tuple[str, str] | None = ("web shell", "T1505.003")
        else:
            found = next((CATEGORIES[t] for t in match.tags if t in CATEGORIES), None)
        if found is None:
            continue
        rank = SEVERITY.get(severity_name(match.severity), 0)
        if best is None or rank > best[0]:
            best = (rank, found[0], found[1], match)
    if best is None:
        return "", "", None
    return best[1], best[2], best[3]


def _secrets(headers: Sequence[tuple[str, str]]) -> list[str]:
    values: set[str] = set()
    for name, value in headers:
        lowered = name.lower()
        if lowered not in SECRET_HEADERS or not value.strip():
            continue
        values.add(value.strip())
        if lowered in ("cookie", "set-cookie"):
            for part in value.split(";"):
                _, _, cookie_value = part.partition("=")
                if len(cookie_value.strip()) >= 4:
                    values.add(cookie_value.strip())
        else:
            _scheme, _, credential = value.strip().partition(" ")
            if len(credential) >= 4:
                values.add(credential.strip())
    return sorted(values, key=len, reverse=True)


def mask(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def waf_event(
    *,
    request: RequestLike,
    matches: Sequence[MatchLike],
    blocked: bool,
    status: int | None,
    inbound_score: int,
    outbound_score: int,
    time: float,
    mode: str,
    source_ip: str = "",
    source_port: int | None = None,
    source_namespace: str = "",
    source_name: str = "",
    dest_ip: str = "",
    dest_port: int | None = None,
    dest_namespace: str = "",
    dest_name: str = "",
    origin: str = "waf",
) -> SecurityEvent | None:
    """The event for one inspected request, or ``None`` when no attack rule matched."""
    category, technique_id, deciding = classify(matches)
    if deciding is None:
        return None
    secrets = _secrets(request.headers)
    host = next((v for n, v in request.headers if n.lower() == "host"), "")
    rules: list[dict[str, Any]] = []
    for match in matches:
        secret_variable = match.variable.lower().startswith("request_cookies") or any(
            match.variable.lower() == f"request_headers:{name}" for name in SECRET_HEADERS
        )
        rules.append(
            {
                "id": match.id,
                "msg": mask(match.msg, secrets),
                "severity": severity_name(match.severity),
                "tags": list(match.tags),
                "variable": match.variable,
                "data": MASK if secret_variable and match.data else mask(match.data, secrets),
            }
        )
    found = technique(technique_id)
    verdict = "blocked" if blocked else "detected"
    target = f"{dest_namespace}/{dest_name}" if dest_name else dest_ip or host or "a workload"
    request_line = mask(f"{request.method} {request.uri} {request.version}".strip(), secrets)
    return SecurityEvent(
        type="waf",
        time=time,
        description=f"WAF {verdict} {category} against {target}: {mask(deciding.msg, secrets)}",
        severity=SEVERITY.get(severity_name(deciding.severity), 50),
        origin=origin,
        source_ip=source_ip,
        source_port=source_port,
        source_namespace=source_namespace,
        source_name=source_name,
        dest_ip=dest_ip,
        dest_port=dest_port,
        dest_namespace=dest_namespace,
        dest_name=dest_name,
        protocol="TCP",
        host=mask(host, secrets),
        attack_vector=category,
        mitre_ids=(found.id,),
        mitre_tactic=found.tactic,
        mitigations=(
            "Keep the workload's WAF in blocking mode, or exclude the rule for this path "
            "if the request is legitimate",
        ),
        record={
            "request_line": request_line,
            "headers": [
                [name, MASK if name.lower() in SECRET_HEADERS else mask(value, secrets)]
                for name, value in request.headers
            ],
            "rules": rules,
            "rule_ids": sorted({m.id for m in matches}),
            "inbound_anomaly_score": inbound_score,
            "outbound_anomaly_score": outbound_score,
            "verdict": verdict,
            "status": status,
            "mode": mode,
            "technique": {"id": found.id, "name": found.name, "tactic_id": found.tactic_id},
        },
    )
