"""The SecLang reader and the compiler's parsing of variables, operators and actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from palisade.waf import WafEngine, WafLoadError
from palisade.waf._rules import (
    parse_id_ranges,
    parse_target,
    parse_targets,
    split_actions,
    split_operator,
)
from palisade.waf._seclang import SecLangReader, split_arguments


def read(text: str, tmp_path: Path | None = None) -> SecLangReader:
    reader = SecLangReader()
    reader.read_text(text, "<test>", tmp_path or Path("."))
    return reader


# ---------------------------------------------------------------- lexical rules


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('SecRule ARGS "@rx a b" "id:1"', ["SecRule", "ARGS", "@rx a b", "id:1"]),
        (r'SecRule ARGS "@rx [\"\x5c]" "id:1"', ["SecRule", "ARGS", '@rx ["\\x5c]', "id:1"]),
        (r'SecRule ARGS "@rx a\\" "id:1"', ["SecRule", "ARGS", "@rx a\\\\", "id:1"]),
        ("SecRuleEngine   DetectionOnly", ["SecRuleEngine", "DetectionOnly"]),
        ('SecMarker "END-HOST-CHECK"', ["SecMarker", "END-HOST-CHECK"]),
        ('SecRule "REQUEST_HEADERS:a" "" ""', ["SecRule", "REQUEST_HEADERS:a", "", ""]),
    ],
)
def test_split_arguments(line: str, words: list[str]) -> None:
    assert split_arguments(line) == (words, None)


def test_unterminated_quote_is_an_error() -> None:
    _words, error = split_arguments('SecRule ARGS "@rx a')
    assert error is not None and "unterminated" in error


def test_continuations_and_comments_keep_the_first_line_number() -> None:
    reader = read(
        "# a comment \\\n"
        "\n"
        'SecRule ARGS "@rx x" \\\n'
        '    "id:1,\\\n'
        '    phase:2"\n'
        "   # indented comment\n"
        "SecMarker END\n"
    )
    assert reader.problems == []
    assert [(d.name, d.line) for d in reader.directives] == [("SecRule", 3), ("SecMarker", 7)]
    assert reader.directives[0].args == ("ARGS", "@rx x", "id:1,    phase:2")


def test_include_globs_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.conf").write_text("SecMarker B\n")
    (tmp_path / "sub" / "a.conf").write_text("SecMarker A\n")
    (tmp_path / "main.conf").write_text("Include sub/*.conf\nSecMarker MAIN\n")
    reader = SecLangReader()
    reader.read_file(tmp_path / "main.conf")
    assert reader.problems == []
    assert [d.args[0] for d in reader.directives] == ["A", "B", "MAIN"]
    assert reader.directives[0].file == str(tmp_path / "sub" / "a.conf")


def test_missing_include_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "main.conf").write_text("SecMarker A\nInclude nothere.conf\n")
    reader = SecLangReader()
    reader.read_file(tmp_path / "main.conf")
    assert reader.problems == [
        (str(tmp_path / "main.conf"), 2, "Include: no such file: nothere.conf")
    ]


def test_self_include_is_reported(tmp_path: Path) -> None:
    (tmp_path / "loop.conf").write_text("Include loop.conf\n")
    reader = SecLangReader()
    reader.read_file(tmp_path / "loop.conf")
    assert len(reader.problems) == 1 and "includes itself" in reader.problems[0][2]


# ---------------------------------------------------------------- actions, variables, operators


def test_split_actions_quoting() -> None:
    text = (
        "id:1,  phase:2,t:none,t:lowercase,msg:'a, b \\'c\\'',"
        "setvar:'tx.x=%{tx.y}',ctl:ruleRemoveTargetById=942100;ARGS:foo,nolog,"
        "logdata:'%{MATCHED_VAR}'"
    )
    assert split_actions(text) == [
        ("id", "1"),
        ("phase", "2"),
        ("t", "none"),
        ("t", "lowercase"),
        ("msg", "a, b 'c'"),
        ("setvar", "tx.x=%{tx.y}"),
        ("ctl", "ruleRemoveTargetById=942100;ARGS:foo"),
        ("nolog", None),
        ("logdata", "%{MATCHED_VAR}"),
    ]


def test_unterminated_action_quote_raises() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_actions("id:1,msg:'oops")


def test_parse_targets_selectors_counts_exclusions() -> None:
    targets = parse_targets(
        "ARGS|!ARGS:foo|&TX:Bar|REQUEST_COOKIES:/^_ga(?:_\\w+|x)?$/|XML:/*|XML://@*|REQUEST_URI"
    )
    texts = [t.text for t in targets]
    assert texts == [
        "ARGS",
        "!ARGS:foo",
        "&TX:Bar",
        "REQUEST_COOKIES:/^_ga(?:_\\w+|x)?$/",
        "XML:/*",
        "XML://@*",
        "REQUEST_URI",
    ]
    assert targets[2].key == "bar" and targets[2].count
    pattern = targets[3].pattern
    assert pattern is not None and pattern.search("_GA_abc")  # case-insensitive, as v3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NOPE", "unknown variable"),
        ("REQUEST_URI:x", "takes no key"),
        ("ARGS:/(/", "bad regular expression"),
        ("XML://a/b", "not supported"),
    ],
)
def test_bad_targets(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("@rx ^a b$", ("rx", "^a b$", False)),
        ("!@rx x", ("rx", "x", True)),
        ("^implicit$", ("rx", "^implicit$", False)),
        ("!implicit", ("rx", "implicit", True)),
        ("@unconditionalMatch", ("unconditionalMatch", "", False)),
        ("@eq 0", ("eq", "0", False)),
    ],
)
def test_split_operator(text: str, parsed: tuple[str, str, bool]) -> None:
    assert split_operator(text) == parsed


def test_id_ranges() -> None:
    assert parse_id_ranges("1 5-7,9") == [(1, 1), (5, 7), (9, 9)]
    with pytest.raises(ValueError):
        parse_id_ranges("7-5")


# ---------------------------------------------------------------- whole-file errors


def test_all_problems_are_collected_with_file_and_line() -> None:
    text = "\n".join(
        [
            'SecRule ARGS "@rx a" "id:1,phase:2,pass"',
            'SecRule NOPE "@rx a" "id:2,phase:2,pass"',
            'SecRule ARGS "@nosuchop a" "id:3,phase:2,pass"',
            'SecRule ARGS "@rx a" "id:4,phase:2,frobnicate"',
            'SecRule ARGS "@rx a" "id:5,phase:2,t:nosuchtransform"',
            'SecRule ARGS "@rx a" "phase:2,pass"',
            'SecRule ARGS "@rx a" "id:1,phase:2,pass"',
            "SecNoSuchDirective On",
            "SecRuleEngine Sometimes",
            'SecRule ARGS "@rx (" "id:6,phase:2,pass"',
        ]
    )
    with pytest.raises(WafLoadError) as caught:
        WafEngine.load([], before=text)
    lines = sorted(line for _, line, _ in caught.value.problems)
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert all(file == "<before>" for file, _, _ in caught.value.problems)
    reasons = {line: reason for _, line, reason in caught.value.problems}
    assert "unknown variable" in reasons[2]
    assert "frobnicate" in reasons[4]
    assert "nosuchtransform" in reasons[5]
    assert "no id" in reasons[6]
    assert "duplicated" in reasons[7]
    assert "unsupported directive" in reasons[8]


def test_dangling_chain_is_an_error() -> None:
    with pytest.raises(WafLoadError, match="no rule follows"):
        WafEngine.load([], before='SecRule ARGS "@rx a" "id:1,phase:2,pass,chain"')


def test_problems_in_files_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "a.conf"
    bad = tmp_path / "b.conf"
    good.write_text('SecRule ARGS "@rx a" "id:1,phase:2,pass"\n')
    bad.write_text('\n\nSecRule ARGS "@rx a" "id:2,phase:9,pass"\n')
    with pytest.raises(WafLoadError) as caught:
        WafEngine.load([good, bad])
    assert [(f, line) for f, line, _ in caught.value.problems] == [(str(bad), 3)]


def test_accepted_directives_load() -> None:
    engine = WafEngine.load(
        [],
        before="\n".join(
            [
                "SecRuleEngine DetectionOnly",
                "SecRequestBodyAccess On",
                "SecResponseBodyAccess On",
                "SecRequestBodyLimit 13107200",
                "SecRequestBodyNoFilesLimit 131072",
                "SecRequestBodyLimitAction Reject",
                "SecRequestBodyJsonDepthLimit 512",
                "SecArgumentsLimit 1000",
                "SecResponseBodyLimit 1048576",
                "SecResponseBodyLimitAction ProcessPartial",
                "SecResponseBodyMimeType text/plain text/html text/xml application/json",
                "SecAuditEngine RelevantOnly",
                "SecAuditLogParts ABIJDEFHZ",
                "SecDebugLogLevel 0",
                "SecPcreMatchLimit 100000",
                "SecTmpDir /tmp",
                'SecComponentSignature "OWASP_CRS/4.28.0"',
                "SecCollectionTimeout 600",
                'SecDefaultAction "phase:1,log,auditlog,pass"',
            ]
        ),
    )
    settings = engine.ruleset.settings
    assert settings.rule_engine == "DetectionOnly"
    assert settings.request_body_access and settings.response_body_access
    assert settings.request_body_no_files_limit == 131072
    assert settings.response_body_limit_action == "ProcessPartial"
    assert "application/json" in settings.response_body_mime_types
    assert settings.component_signatures == ["OWASP_CRS/4.28.0"]


def test_remove_and_update_apply_wherever_written() -> None:
    engine = WafEngine.load(
        [],
        before="\n".join(
            [
                "SecRuleRemoveById 3-4",
                'SecRule ARGS "@rx a" "id:1,phase:2,pass,tag:x"',
                'SecRule ARGS "@rx a" "id:2,phase:2,pass,tag:keep"',
                'SecRule ARGS "@rx a" "id:3,phase:2,pass"',
                'SecRule ARGS "@rx a" "id:4,phase:2,pass"',
                "SecRuleRemoveByTag x",
                'SecRuleUpdateTargetById 2 "!ARGS:foo|REQUEST_URI"',
            ]
        ),
    )
    ids = [r.id for r in engine.ruleset.phases[2]]
    assert ids == [2]
    rule = engine.ruleset.phases[2][0]
    assert [t.text for t in rule.targets] == ["ARGS", "REQUEST_URI"]
    assert [t.text for t in rule.exclusions] == ["!ARGS:foo"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('SecDefaultAction "phase:2,log"', "disruptive"),
        ('SecDefaultAction "phase:2,log,pass,id:5"', "not allowed"),
        ('SecAction "id:1,pass,chain"\nSecRule ARGS "@rx a" "pass"', "cannot start a chain"),
        ('SecRule ARGS "@streq" "id:1"', "needs an argument"),
    ],
)
def test_what_modsecurity_v3_rejects_is_rejected(text: str, reason: str) -> None:
    with pytest.raises(WafLoadError, match=reason):
        WafEngine.load([], before=text)
