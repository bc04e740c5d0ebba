"""Engine semantics on small hand-written rule sets (ModSecurity v3 behaviour)."""

from __future__ import annotations

import logging

import pytest

from palisade.waf import HttpRequest, HttpResponse, WafEngine, WafResult


def load(rules: str, *, mode: str = "On") -> WafEngine:
    return WafEngine.load([], before=f"SecRuleEngine {mode}\nSecRequestBodyAccess On\n{rules}")


def get(uri: str, *headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("GET", uri, "HTTP/1.1", (("Host", "example.com"), *headers), b"")


def post(uri: str, body: str) -> HttpRequest:
    headers = (
        ("Host", "example.com"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Length", str(len(body))),
    )
    return HttpRequest("POST", uri, "HTTP/1.1", headers, body.encode("latin-1"))


def by_id(result: WafResult, rule_id: int) -> list[str]:
    return [m.msg for m in result.matches if m.id == rule_id]


def test_simple_match_reports_variable_value_msg_and_log_line() -> None:
    engine = load(
        'SecRule ARGS "@rx ^ab" "id:10,phase:1,pass,t:none,t:lowercase,severity:\'CRITICAL\','
        "tag:'attack-x',msg:'found %{MATCHED_VAR_NAME}',logdata:'Matched Data: %{MATCHED_VAR}'\""
    )
    result = engine.evaluate(get("/p?q=ABC&other=zz"))
    assert result.logged_ids() == {10}
    match = result.matches[0]
    assert (match.variable, match.value) == ("ARGS:q", "abc")
    assert match.msg == "found ARGS:q"
    assert match.data == "Matched Data: abc"
    assert match.severity == "2"
    assert match.tags == ("attack-x",)
    for piece in ('[id "10"]', '[msg "found ARGS:q"]', '[severity "2"]', '[tag "attack-x"]'):
        assert piece in match.log_line
    assert result.status is None and not result.blocked


def test_raw_request_bytes_are_parsed() -> None:
    engine = load('SecRule REQUEST_METHOD "@streq PUT" "id:1,phase:1,pass"')
    result = engine.evaluate(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert result.logged_ids() == {1}


def test_chain_matches_only_when_every_link_matches_and_reports_last_matched_var() -> None:
    engine = load(
        'SecRule ARGS:a "@rx x" "id:1,phase:1,pass,chain,msg:\'last %{MATCHED_VAR}\'"\n'
        '    SecRule ARGS:b "@rx y" "t:none"\n'
    )
    both = engine.evaluate(get("/?a=x&b=y"))
    assert by_id(both, 1) == ["last y"]
    first_only = engine.evaluate(get("/?a=x&b=z"))
    assert first_only.matches == []


def test_setvar_of_a_chain_starter_runs_even_when_the_chain_fails() -> None:
    # v3 runs setvar per matching value, before the next link is tried (the CRS's 920450
    # collects header names that way).
    engine = load(
        'SecRule ARGS "@rx ^(v.*)$" "id:1,phase:1,pass,capture,'
        "setvar:'tx.seen_%{tx.1}=1',chain\"\n"
        '    SecRule ARGS:never "@rx ." "t:none"\n'
        'SecRule &TX:/^seen_/ "@eq 2" "id:2,phase:1,pass,msg:\'both seen\'"\n'
    )
    result = engine.evaluate(get("/?a=v1&b=v2&c=w"))
    assert by_id(result, 2) == ["both seen"]
    assert 1 not in result.logged_ids()


def test_setvar_operations_and_macros() -> None:
    engine = load(
        "\n".join(
            [
                'SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=10,'
                "setvar:'tx.name=%{REQUEST_HEADERS.host}'\"",
                'SecAction "id:2,phase:1,pass,nolog,setvar:tx.score=+5,setvar:tx.score=-3,'
                'setvar:tx.flag"',
                'SecAction "id:3,phase:1,pass,nolog,setvar:tx.gone=1,setvar:!tx.gone"',
                'SecRule TX:score "@eq 12" "id:4,phase:1,pass,'
                "msg:'%{tx.score} %{tx.name} %{tx.flag} %{rule.id}'\"",
                'SecRule &TX:gone "@eq 0" "id:5,phase:1,pass"',
                'SecRule TX:SCORE "@eq 12" "id:6,phase:1,pass"',
            ]
        )
    )
    result = engine.evaluate(get("/"))
    assert by_id(result, 4) == ["12 example.com 1 4"]
    assert {4, 5, 6} <= result.logged_ids()
    assert {1, 2, 3}.isdisjoint(result.logged_ids())


def test_operator_argument_with_macros_is_expanded_per_transaction() -> None:
    engine = load(
        'SecRule ARGS:limit "@rx ^(\\d+)$" "id:1,phase:1,pass,nolog,capture,'
        'setvar:tx.limit=%{tx.1}"\n'
        'SecRule ARGS:value "@gt %{tx.limit}" "id:2,phase:1,pass"\n'
    )
    assert engine.evaluate(get("/?limit=5&value=6")).logged_ids() == {2}
    assert engine.evaluate(get("/?limit=10&value=6")).logged_ids() == set()


def test_capture_fills_tx_0_to_9() -> None:
    engine = load(
        'SecRule ARGS:q "@rx (a)(b)(c)" "id:1,phase:1,pass,capture,'
        "logdata:'%{tx.0}|%{tx.1}|%{tx.3}'\""
    )
    result = engine.evaluate(get("/?q=xabcx"))
    assert result.matches[0].data == "abc|a|c"


def test_skip_after_jumps_to_the_marker_and_skip_counts_rules() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule ARGS:go "@streq far" "id:1,phase:1,pass,nolog,skipAfter:END"',
                'SecRule ARGS:go "@streq near" "id:2,phase:1,pass,nolog,skip:1"',
                'SecAction "id:3,phase:1,pass,msg:a3"',
                'SecAction "id:4,phase:1,pass,msg:a4"',
                "SecMarker END",
                'SecAction "id:5,phase:1,pass,msg:a5"',
            ]
        )
    )
    assert engine.evaluate(get("/?go=far")).logged_ids() == {5}
    assert engine.evaluate(get("/?go=near")).logged_ids() == {4, 5}
    assert engine.evaluate(get("/?go=none")).logged_ids() == {3, 4, 5}


def test_ctl_rule_remove_by_id_and_target_are_scoped_to_the_transaction() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule REQUEST_FILENAME "@streq /admin" "id:1,phase:1,pass,nolog,'
                "ctl:ruleRemoveById=10-11,"
                'ctl:ruleRemoveTargetById=12;ARGS:secret"',
                'SecRule ARGS "@rx x" "id:10,phase:1,pass"',
                'SecRule ARGS "@rx x" "id:11,phase:2,pass"',
                'SecRule ARGS "@rx x" "id:12,phase:2,pass"',
            ]
        )
    )
    admin = engine.evaluate(get("/admin?secret=x"))
    assert admin.logged_ids() == set()
    admin_other = engine.evaluate(get("/admin?secret=x&open=x"))
    assert admin_other.logged_ids() == {12}
    assert admin_other.matches[-1].variable == "ARGS:open"
    elsewhere = engine.evaluate(get("/page?secret=x"))
    assert elsewhere.logged_ids() == {10, 11, 12}


def test_ctl_rule_remove_by_tag_and_rule_engine() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule ARGS:mode "@streq quiet" "id:1,phase:1,pass,nolog,'
                'ctl:ruleRemoveByTag=noisy"',
                'SecRule ARGS:mode "@streq watch" "id:2,phase:1,pass,nolog,'
                'ctl:ruleEngine=DetectionOnly"',
                'SecRule ARGS "@rx x" "id:10,phase:2,deny,tag:noisy"',
            ]
        )
    )
    assert engine.evaluate(get("/?mode=quiet&a=x")).logged_ids() == set()
    watched = engine.evaluate(get("/?mode=watch&a=x"))
    assert watched.logged_ids() == {10} and not watched.blocked
    enforced = engine.evaluate(get("/?mode=on&a=x"))
    assert enforced.blocked and enforced.status == 403


def test_exclusions_and_update_target() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule ARGS|!ARGS:safe "@rx evil" "id:1,phase:1,pass"',
                'SecRule ARGS "@rx evil" "id:2,phase:1,pass"',
                'SecRuleUpdateTargetById 2 "!ARGS:/^tok/"',
            ]
        )
    )
    assert engine.evaluate(get("/?TOKEN=evil")).logged_ids() == {1}
    assert engine.evaluate(get("/?safe=evil")).logged_ids() == {2}
    assert engine.evaluate(get("/?other=evil")).logged_ids() == {1, 2}


def test_counts_and_regex_keys() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule &ARGS "@eq 3" "id:1,phase:1,pass"',
                'SecRule &REQUEST_HEADERS:X-Missing "@eq 0" "id:2,phase:1,pass"',
                'SecRule ARGS_NAMES:/^p_/ "@rx ." "id:3,phase:1,pass"',
                'SecRule REQUEST_HEADERS:HOST "@streq example.com" "id:4,phase:1,pass"',
            ]
        )
    )
    assert engine.evaluate(get("/?a=1&P_x=2&c=3")).logged_ids() == {1, 2, 3, 4}


def test_multimatch_tests_the_value_before_and_after_each_transformation() -> None:
    rules = 'SecRule ARGS:q "@streq {}" "id:1,phase:1,pass,t:none,t:removeWhitespace,t:uppercase{}"'
    for wanted, value in (("a b", "a+b"), ("ab", "a+b"), ("AB", "a+b")):
        plain = load(rules.format(wanted, "")).evaluate(get(f"/?q={value}"))
        multi = load(rules.format(wanted, ",multiMatch")).evaluate(get(f"/?q={value}"))
        # without multiMatch only the final value is tested; with it, the original and
        # every value a transformation changed
        assert plain.logged_ids() == ({1} if wanted == "AB" else set())
        assert multi.logged_ids() == {1}


def test_t_none_drops_default_transformations() -> None:
    engine = load(
        'SecDefaultAction "phase:1,log,pass,t:lowercase"\n'
        'SecRule ARGS:q "@streq abc" "id:1,phase:1"\n'
        'SecRule ARGS:q "@streq abc" "id:2,phase:1,t:none"\n'
    )
    assert engine.evaluate(get("/?q=ABC")).logged_ids() == {1}


def test_detection_only_runs_everything_and_never_blocks() -> None:
    rules = "\n".join(
        [
            'SecRule ARGS "@rx attack" "id:1,phase:1,deny,status:406"',
            'SecAction "id:2,phase:2,pass,msg:a2"',
        ]
    )
    enforced = load(rules).evaluate(get("/?a=attack"))
    assert enforced.status == 406 and enforced.blocked
    assert enforced.logged_ids() == {1}  # phase 2 never runs after an interruption
    detected = load(rules, mode="DetectionOnly").evaluate(get("/?a=attack"))
    assert detected.status is None and not detected.blocked
    assert detected.logged_ids() == {1, 2}
    off = load(rules, mode="Off").evaluate(get("/?a=attack"))
    assert off.matches == []


def test_block_takes_the_phase_default_disruptive_action() -> None:
    blocking = load(
        'SecDefaultAction "phase:2,log,deny,status:418"\n'
        'SecRule ARGS "@rx attack" "id:1,phase:2,block"\n'
    )
    result = blocking.evaluate(get("/?a=attack"))
    assert result.status == 418
    passing = load(
        'SecDefaultAction "phase:2,log,pass"\nSecRule ARGS "@rx attack" "id:1,phase:2,block"\n'
    )
    result = passing.evaluate(get("/?a=attack"))
    assert result.status is None and result.logged_ids() == {1}


def test_nolog_default_and_rule_log_flags() -> None:
    engine = load(
        'SecDefaultAction "phase:1,nolog,pass"\n'
        'SecAction "id:1,phase:1,msg:a1"\n'
        'SecAction "id:2,phase:1,log,msg:a2"\n'
    )
    result = engine.evaluate(get("/"))
    assert [m.id for m in result.matches] == [1, 2]
    assert result.logged_ids() == {2}
    assert result.matches[0].log_line == ""


def test_allow_skips_remaining_request_rules() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule REMOTE_ADDR "@ipMatch 10.0.0.0/8" "id:1,phase:1,allow,nolog"',
                'SecRule ARGS "@rx attack" "id:2,phase:1,deny"',
                'SecRule ARGS "@rx attack" "id:3,phase:2,deny"',
            ]
        )
    )
    trusted = HttpRequest("GET", "/?a=attack", "HTTP/1.1", (("Host", "h"),), b"", "10.1.2.3")
    assert engine.evaluate(trusted).matches[0].id == 1
    assert not engine.evaluate(trusted).blocked
    assert engine.evaluate(get("/?a=attack")).blocked


def test_post_body_arguments_and_request_body() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule ARGS_POST:user "@streq admin" "id:1,phase:2,pass"',
                'SecRule REQBODY_PROCESSOR "@streq URLENCODED" "id:2,phase:1,pass"',
                'SecRule REQUEST_BODY "@contains user=admin" "id:3,phase:2,pass"',
                'SecRule ARGS_POST:user "@streq admin" "id:4,phase:1,pass"',
            ]
        )
    )
    result = engine.evaluate(post("/login", "user=admin&pw=x"))
    assert result.logged_ids() == {1, 2, 3}


def test_response_phases() -> None:
    engine = WafEngine.load(
        [],
        before="\n".join(
            [
                "SecRuleEngine DetectionOnly",
                "SecResponseBodyAccess On",
                "SecResponseBodyMimeType text/html",
                'SecRule RESPONSE_STATUS "@streq 500" "id:1,phase:3,pass"',
                'SecRule RESPONSE_HEADERS:Content-Type "@contains html" "id:2,phase:3,pass"',
                'SecRule RESPONSE_BODY "@contains ORA-00933" "id:3,phase:4,pass"',
            ]
        ),
    )
    response = HttpResponse(
        500, "HTTP/1.1", (("Content-Type", "text/html; charset=utf-8"),), b"<p>ORA-00933</p>"
    )
    assert engine.evaluate(get("/"), response).logged_ids() == {1, 2, 3}
    assert engine.evaluate(get("/")).logged_ids() == set()


def test_anomaly_scores_are_reported() -> None:
    engine = load(
        "\n".join(
            [
                'SecAction "id:1,phase:1,pass,nolog,setvar:tx.blocking_inbound_anomaly_score=0"',
                'SecRule ARGS "@rx attack" "id:2,phase:1,pass,'
                'setvar:tx.blocking_inbound_anomaly_score=+5"',
            ]
        )
    )
    assert engine.evaluate(get("/?a=attack&b=attack")).inbound_score == 10


def test_transformation_results_are_shared_between_rules() -> None:
    engine = load(
        'SecRule ARGS "@rx ^abc$" "id:1,phase:1,pass,t:none,t:urlDecodeUni"\n'
        'SecRule ARGS "@rx ^abc$" "id:2,phase:1,pass,t:none,t:urlDecodeUni,t:lowercase"\n'
    )
    assert engine.trie.parent[engine.ruleset.phases[1][1].transform_node] == (
        engine.ruleset.phases[1][0].transform_node
    )
    assert engine.evaluate(get("/?q=%2561bc")).logged_ids() == {1, 2}
    assert engine.evaluate(get("/?q=%2541BC")).logged_ids() == {2}


def test_request_body_access_off_skips_phase_two_as_v3_does() -> None:
    rules = 'SecAction "id:1,phase:2,pass,msg:a1"\nSecAction "id:2,phase:1,pass,msg:a2"\n'
    off = WafEngine.load([], before="SecRuleEngine On\nSecRequestBodyAccess Off\n" + rules)
    assert off.evaluate(get("/")).logged_ids() == {2}
    unset = WafEngine.load([], before="SecRuleEngine On\n" + rules)
    assert unset.evaluate(get("/")).logged_ids() == {1, 2}
    forced = WafEngine.load(
        [],
        before="SecRuleEngine On\nSecRequestBodyAccess Off\n"
        + rules
        + 'SecAction "id:3,phase:1,pass,nolog,ctl:requestBodyAccess=On"\n',
    )
    assert forced.evaluate(get("/")).logged_ids() == {1, 2}


def test_unset_scalars_yield_an_empty_value_and_collections_nothing() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule REQUEST_BODY "@rx ^$" "id:1,phase:2,pass"',
                'SecRule &REQUEST_BODY "@eq 1" "id:2,phase:2,pass"',
                'SecRule REQBODY_PROCESSOR "!@rx (?:URLENCODED|MULTIPART|XML|JSON)" '
                '"id:3,phase:1,pass"',
                'SecRule ARGS_POST "@rx ^$" "id:4,phase:2,pass"',
                'SecRule &ARGS_POST "@eq 0" "id:5,phase:2,pass"',
            ]
        )
    )
    assert engine.evaluate(get("/")).logged_ids() == {1, 2, 3, 5}


def test_ctl_rule_engine_off_stops_the_following_phases() -> None:
    engine = load(
        'SecRule ARGS:off "@streq 1" "id:1,phase:1,pass,nolog,ctl:ruleEngine=Off"\n'
        'SecAction "id:2,phase:1,pass,msg:a2"\n'
        'SecAction "id:3,phase:2,pass,msg:a3"\n'
    )
    assert engine.evaluate(get("/?off=1")).logged_ids() == {2}
    assert engine.evaluate(get("/?off=0")).logged_ids() == {2, 3}


def test_ctl_rule_remove_by_id_spares_secaction_as_v3_does() -> None:
    engine = load(
        'SecAction "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=2-3"\n'
        'SecAction "id:2,phase:1,pass,msg:a2"\n'
        'SecRule REQUEST_METHOD "@streq GET" "id:3,phase:1,pass"\n'
    )
    assert engine.evaluate(get("/")).logged_ids() == {2}


def test_update_action_by_id_replaces_the_disruptive_action() -> None:
    # v3 runs the added actions before the rule's own: the rule's msg stays
    engine = load(
        'SecRule ARGS "@rx attack" "id:1,phase:1,deny,msg:\'old\'"\n'
        "SecRuleUpdateActionById 1 \"pass,msg:'new'\"\n"
        'SecRule ARGS "@rx attack" "id:2,phase:1,pass"\n'
        "SecRuleUpdateActionById 2 \"msg:'added'\"\n"
    )
    result = engine.evaluate(get("/?a=attack"))
    assert not result.blocked
    assert (by_id(result, 1), by_id(result, 2)) == (["old"], ["added"])


def test_a_rule_that_raises_is_reported_and_the_rest_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = load(
        'SecRule REQUEST_URI "@rx ." "id:1,phase:1,pass,msg:a1"\n'
        'SecAction "id:2,phase:1,pass,msg:a2"\n'
    )
    first = engine.ruleset.phases[1][0]

    class Broken:  # an operator that fails (rule fields are typed: the operator is Any)
        name = "rx"

        def match(self, value: str) -> None:
            raise RuntimeError("boom")

    first.operator = Broken()
    with caplog.at_level(logging.ERROR, logger="palisade.waf"):
        result = engine.evaluate(get("/"))
    assert result.logged_ids() == {2}
    assert result.errors == ["rule 1: RuntimeError: boom"]
    assert "WAF rule 1 failed" in caplog.text


def test_secaction_logs_only_with_block_or_a_message_as_v3_does() -> None:
    engine = load(
        'SecAction "id:1,phase:1,pass"\n'
        "SecAction \"id:2,phase:1,pass,msg:'said'\"\n"
        'SecAction "id:3,phase:1,block,nolog"\n'
        "SecAction \"id:4,phase:1,pass,nolog,msg:'quiet'\"\n"
    )
    result = engine.evaluate(get("/"))
    assert [m.id for m in result.matches] == [1, 2, 3, 4]
    assert result.logged_ids() == {2, 3}


def test_an_interruption_is_logged_even_with_nolog() -> None:
    rule = 'SecRule ARGS "@rx a" "id:1,phase:1,deny,nolog"\n'
    assert load(rule).evaluate(get("/?a=a")).logged_ids() == {1}
    assert load(rule, mode="DetectionOnly").evaluate(get("/?a=a")).logged_ids() == set()


def test_multimatch_logs_each_matching_value_even_when_the_chain_fails() -> None:
    # libmodsecurity3 3.0.9 writes one line per matching value of a multiMatch rule as soon
    # as it matches (CRS 942131 shows up that way although its chain fails)
    plain = load(
        'SecRule ARGS "@rx a" "id:1,phase:1,pass,nolog,multiMatch,msg:\'m %{MATCHED_VAR}\'"'
    )
    result = plain.evaluate(get("/?a=a&b=ba&c=x"))
    assert [(m.id, m.msg, m.logged) for m in result.matches] == [
        (1, "m a", True),
        (1, "m ba", True),
    ]
    chained = load(
        'SecRule ARGS "@rx a" "id:1,phase:1,pass,multiMatch,chain,msg:\'m\'"\n'
        '    SecRule ARGS:zz "@rx x" ""\n'
    )
    result = chained.evaluate(get("/?a=a"))
    assert [(m.id, m.msg, m.logged) for m in result.matches] == [(1, "", True)]


def test_update_target_by_tag_and_msg_and_for_absent_rules() -> None:
    engine = load(
        "\n".join(
            [
                'SecRule ARGS "@rx evil" "id:1,phase:1,pass,tag:\'attack-x\'"',
                'SecRule ARGS "@rx evil" "id:2,phase:1,pass,msg:\'Evil found\'"',
                'SecRuleUpdateTargetByTag attack-x "!ARGS:a"',
                "SecRuleUpdateTargetByMsg 'Evil found' \"!ARGS:b\"".replace("'", '"', 2),
                'SecRuleUpdateTargetById 999 "!ARGS:c"',
            ]
        )
    )
    assert engine.evaluate(get("/?a=evil")).logged_ids() == {2}
    assert engine.evaluate(get("/?b=evil")).logged_ids() == {1}
