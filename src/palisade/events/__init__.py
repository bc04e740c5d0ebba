"""Security events: one model and one store for every detector (WAF today; DDoS, threat feeds,
runtime defence and image scanning add their own ``type``)."""

from ._mitre import ATTACK_VERSION, TECHNIQUES, Technique
from ._model import EVENT_TYPES, EventError, SecurityEvent, event_from_json, register_type
from ._store import EventStore, StoredEvent
from ._waf import MASK, SECRET_HEADERS, classify, waf_event

__all__ = [
    "ATTACK_VERSION",
    "EVENT_TYPES",
    "MASK",
    "SECRET_HEADERS",
    "TECHNIQUES",
    "EventError",
    "EventStore",
    "SecurityEvent",
    "StoredEvent",
    "Technique",
    "classify",
    "event_from_json",
    "register_type",
    "waf_event",
]
