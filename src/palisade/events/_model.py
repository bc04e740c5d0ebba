"""The security event: one record type for every detector.

A detector (the WAF today; DDoS, threat feeds, runtime defence and image scanning later) turns
what it saw into :class:`SecurityEvent` values. The common fields are those Calico Enterprise's
security events carry — who (source), against what (destination workload), how bad
(severity 0-100), what kind of attack (``attack_vector``) and where it sits in MITRE ATT&CK
(``mitre_ids``, ``mitre_tactic``). Whatever is particular to one detector goes into ``record``,
a JSON object whose shape belongs to that event ``type``.

Events are immutable; the operator's triage state (acknowledged, dismissed) lives beside them
in the store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Event types. A detector registers its own with :func:`register_type`.
EVENT_TYPES: dict[str, str] = {
    "waf": "a request matched the web application firewall's rules",
}

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def register_type(name: str, description: str) -> None:
    """Make ``name`` a known event type (idempotent)."""
    if not _TYPE_NAME.match(name):
        raise ValueError(f"event type {name!r}: lower-case letters, digits and _ only")
    EVENT_TYPES.setdefault(name, description)


class EventError(ValueError):
    """An event document that does not validate; the message names the field."""


@dataclass(frozen=True)
class SecurityEvent:
    type: str
    time: float
    description: str
    severity: int
    origin: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source_ip: str = ""
    source_port: int | None = None
    source_namespace: str = ""
    source_name: str = ""
    dest_ip: str = ""
    dest_port: int | None = None
    dest_namespace: str = ""
    dest_name: str = ""
    protocol: str = ""
    host: str = ""
    attack_vector: str = ""
    mitre_ids: tuple[str, ...] = ()
    mitre_tactic: str = ""
    mitigations: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["mitre_ids"] = list(self.mitre_ids)
        document["mitigations"] = list(self.mitigations)
        document["record"] = dict(self.record)
        return document


_STR_FIELDS = (
    "source_ip",
    "source_namespace",
    "source_name",
    "dest_ip",
    "dest_namespace",
    "dest_name",
    "protocol",
    "host",
    "attack_vector",
    "mitre_tactic",
)


def event_from_json(document: Any, *, where: str = "event") -> SecurityEvent:
    """Validate one event document (as :meth:`SecurityEvent.to_json` writes it)."""

    def fail(path: str, reason: str) -> EventError:
        return EventError(f"{where}: {path}: {reason}")

    if not isinstance(document, Mapping):
        raise fail("(document)", "an event is a JSON object")
    known = set(SecurityEvent.__dataclass_fields__)
    for key in document:
        if key not in known:
            raise fail(str(key), "unknown field")
    values: dict[str, Any] = {}
    for name in ("type", "description", "origin"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise fail(name, "required, a non-empty string")
        values[name] = value
    if values["type"] not in EVENT_TYPES:
        raise fail("type", f"unknown event type {values['type']!r} (known: {sorted(EVENT_TYPES)})")
    moment = document.get("time")
    if isinstance(moment, bool) or not isinstance(moment, int | float) or moment < 0:
        raise fail("time", "required, seconds since the epoch")
    values["time"] = float(moment)
    severity = document.get("severity")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 100:
        raise fail("severity", "required, an integer from 0 to 100")
    values["severity"] = severity
    if "id" in document:
        event_id = document["id"]
        if not isinstance(event_id, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", event_id):
            raise fail("id", "letters, digits and _ . : - only, at most 128")
        values["id"] = event_id
    for name in _STR_FIELDS:
        value = document.get(name, "")
        if not isinstance(value, str):
            raise fail(name, "a string")
        values[name] = value
    for name in ("source_port", "dest_port"):
        port = document.get(name)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise fail(name, "a port number from 0 to 65535")
        values[name] = port
    for name in ("mitre_ids", "mitigations"):
        items = document.get(name, [])
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise fail(name, "a list of strings")
        values[name] = tuple(items)
    record = document.get("record", {})
    if not isinstance(record, Mapping):
        raise fail("record", "a JSON object")
    values["record"] = dict(record)
    return SecurityEvent(**values)
