"""Security events: the model's validation, the SQLite store, WAF events and their masking,
and the embedded ATT&CK techniques checked against MITRE's own data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from palisade.events import (
    MASK,
    TECHNIQUES,
    EventError,
    EventStore,
    SecurityEvent,
    event_from_json,
    register_type,
    waf_event,
)
from tests.shared_data import shared_path


@dataclass(frozen=True)
class Match:
    id: int
    msg: str
    data: str = ""
    severity: str | None = "CRITICAL"
    tags: tuple[str, ...] = ()
    variable: str = "ARGS:q"
    logged: bool = True


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    uri: str = "/search?q=1%27%20or%201=1"
    version: str = "HTTP/1.1"
    headers: tuple[tuple[str, str], ...] = field(
        default=(
            ("Host", "shop.example"),
            ("Authorization", "Bearer s3cr3t-token-value"),
            ("Cookie", "session=abcdef123456; theme=dark"),
        )
    )


def _event(**changes: object) -> SecurityEvent:
    values: dict[str, object] = {
        "type": "waf",
        "time": 1000.0,
        "description": "test",
        "severity": 50,
        "origin": "test",
    }
    values.update(changes)
    return SecurityEvent(**values)  # type: ignore[arg-type]


def test_round_trip_through_json() -> None:
    event = _event(mitre_ids=("T1190",), record={"rules": [{"id": 942100}]}, dest_port=8080)
    assert event_from_json(json.loads(json.dumps(event.to_json()))) == event


@pytest.mark.parametrize(
    ("change", "field_path"),
    [
        ({"type": "nonsense"}, "type"),
        ({"severity": 101}, "severity"),
        ({"severity": True}, "severity"),
        ({"time": "yesterday"}, "time"),
        ({"dest_port": 70000}, "dest_port"),
        ({"mitre_ids": "T1190"}, "mitre_ids"),
        ({"record": []}, "record"),
        ({"colour": "red"}, "colour"),
        ({"id": "has space"}, "id"),
        ({"description": ""}, "description"),
    ],
)
def test_invalid_documents_name_the_field(change: dict[str, object], field_path: str) -> None:
    document = _event().to_json() | change
    with pytest.raises(EventError) as error:
        event_from_json(document, where="batch.json:3")
    assert str(error.value).startswith(f"batch.json:3: {field_path}: ")


def test_detectors_register_their_own_types() -> None:
    with pytest.raises(EventError):
        event_from_json(_event().to_json() | {"type": "ddos_test"})
    register_type("ddos_test", "a test detector")
    assert event_from_json(_event().to_json() | {"type": "ddos_test"}).type == "ddos_test"
    with pytest.raises(ValueError):
        register_type("Bad Name", "x")


def test_store_is_idempotent_filters_and_triages(tmp_path: object) -> None:
    store = EventStore(f"{tmp_path}/events.db")
    events = [
        _event(id=f"e{i}", time=100.0 + i, dest_namespace="shop" if i % 2 else "bank")
        for i in range(10)
    ]
    assert store.add(events) == 10
    assert store.add(events[:3]) == 0  # a retried batch adds nothing
    assert store.count() == 10
    newest = store.query(limit=3)
    assert [s.event.id for s in newest] == ["e9", "e8", "e7"]
    assert {s.event.id for s in store.query(namespace="shop")} == {"e1", "e3", "e5", "e7", "e9"}
    assert [s.event.id for s in store.query(since=107.0)] == ["e9", "e8", "e7"]
    assert [s.event.id for s in store.query(since=101.0, until=103.0)] == ["e2", "e1"]
    assert store.set_state("e9", acknowledged=True).acknowledged
    store.set_state("e8", dismissed=True)
    visible = [s.event.id for s in store.query(limit=3)]
    assert visible == ["e9", "e7", "e6"]
    assert store.query(limit=1)[0].acknowledged
    assert "e8" in {s.event.id for s in store.query(include_dismissed=True)}
    with pytest.raises(KeyError):
        store.set_state("missing", dismissed=True)
    store.close()
    reopened = EventStore(f"{tmp_path}/events.db")  # the state survives a restart
    stored = reopened.get("e8")
    assert stored is not None and stored.dismissed
    assert reopened.apply_retention(max_age_seconds=5, max_events=None, now=110.0) == 5
    assert reopened.apply_retention(max_age_seconds=None, max_events=2, now=110.0) == 3
    assert [s.event.id for s in reopened.query(include_dismissed=True)] == ["e9", "e8"]


def test_a_bad_batch_stores_nothing() -> None:
    store = EventStore()
    good = _event(id="ok")
    store.add([_event(id="before")])
    with pytest.raises(AttributeError):
        store.add([good, object()])  # type: ignore[list-item]
    assert [s.event.id for s in store.query()] == ["before"]


def test_waf_event_maps_category_technique_and_masks_secrets() -> None:
    matches = [
        Match(920350, "Host header is a numeric IP address", "x", "WARNING", ("attack-protocol",)),
        Match(
            942100,
            "SQL Injection Attack Detected via libinjection",
            "Matched Data: s&1 found within ARGS:q: 1' or 1=1",
            "CRITICAL",
            ("application-multi", "attack-sqli", "paranoia-level/1"),
        ),
        Match(
            932999,
            "test rule on a cookie",
            "Matched Data: abcdef123456",
            "ERROR",
            ("attack-rce",),
            "REQUEST_COOKIES:session",
        ),
        Match(
            949110,
            "Inbound Anomaly Score Exceeded (Total Score: 12)",
            "",
            "EMERGENCY",
            ("anomaly-evaluation",),
            "TX:blocking_inbound_anomaly_score",
        ),
    ]
    event = waf_event(
        request=Request(),
        matches=matches,
        blocked=True,
        status=403,
        inbound_score=12,
        outbound_score=0,
        time=5.0,
        mode="On",
        source_ip="10.0.0.9",
        dest_namespace="shop",
        dest_name="frontend",
    )
    assert event is not None
    assert event.attack_vector == "SQL injection"
    assert event.mitre_ids == ("T1190",)
    assert event.mitre_tactic == "Initial Access"
    assert event.severity == 90
    assert "blocked SQL injection against shop/frontend" in event.description
    text = json.dumps(event.to_json())
    assert "s3cr3t-token-value" not in text and "abcdef123456" not in text
    headers = dict(event.record["headers"])
    assert headers["Authorization"] == MASK and headers["Cookie"] == MASK
    assert headers["Host"] == "shop.example"
    assert event.record["rule_ids"] == [920350, 932999, 942100, 949110]
    assert event.record["request_line"] == "GET /search?q=1%27%20or%201=1 HTTP/1.1"
    assert event_from_json(json.loads(text)) == event


def test_waf_event_for_web_shells_and_scanners_and_none_without_attack() -> None:
    shell = waf_event(
        request=Request(),
        matches=[Match(955100, "Web shell detected", tags=("OWASP_CRS/WEB-SHELLS", "attack-rce"))],
        blocked=False,
        status=None,
        inbound_score=0,
        outbound_score=5,
        time=1.0,
        mode="DetectionOnly",
    )
    assert shell is not None and shell.mitre_ids == ("T1505.003",)
    assert shell.record["verdict"] == "detected"
    scanner = waf_event(
        request=Request(),
        matches=[Match(913100, "scanner", severity="2", tags=("attack-reputation-scanner",))],
        blocked=False,
        status=None,
        inbound_score=5,
        outbound_score=0,
        time=1.0,
        mode="DetectionOnly",
    )
    assert scanner is not None and scanner.mitre_tactic == "Reconnaissance"
    assert scanner.severity == 90  # numeric CRS severity 2 is CRITICAL
    quiet = waf_event(
        request=Request(),
        matches=[Match(901001, "setup", tags=())],
        blocked=False,
        status=None,
        inbound_score=0,
        outbound_score=0,
        time=1.0,
        mode="On",
    )
    assert quiet is None


def test_embedded_techniques_agree_with_mitre_data() -> None:
    index = json.loads(shared_path("data", "mitre", "enterprise-techniques-index.json").read_text())
    techniques = {t["id"]: t for t in index["techniques"]}
    tactics = {t["id"]: t["name"] for t in index["tactics"]}
    for technique in TECHNIQUES.values():
        official = techniques[technique.id]
        assert official["name"] == technique.name, technique.id
        assert technique.tactic_id in official["tactic_ids"], technique.id
        assert tactics[technique.tactic_id] == technique.tactic, technique.id
