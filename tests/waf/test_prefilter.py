"""The @rx pre-filter: required literals are sound, and it never changes a verdict."""

from __future__ import annotations

import functools

import pytest

from palisade.waf import HttpParseError, WafEngine, parse_request
from palisade.waf._ftw import crs_ci_configuration, crs_rule_files, load_test_files
from palisade.waf._ftw_request import build_request
from palisade.waf._prefilter import Prefilter, required_literals
from tests.shared_data import shared_path


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"(?i)(?:sel|ins)ect\s+\w+from", {"from"}),
        (r"abc|def", {"abc", "def"}),
        (r"a?bcd", {"bcd"}),
        (r"(?i)\bUNION\b.{1,100}?\bselect\b", {"select"}),
        (r"\x{ff}abc", {"abc"}),
        (r"(?:ab|c*)def", {"def"}),
        (r"(?:abc)+x", {"abc"}),
        (r"abc\vcd", {"abc"}),  # \v is a class in PCRE: it ends a literal run
    ],
)
def test_required_literals(pattern: str, literals: set[str]) -> None:
    assert required_literals(pattern) == frozenset(literals)


@pytest.mark.parametrize(
    "pattern",
    [
        r"[[:alpha:]]+xx",  # POSIX classes: Python would read the brackets differently
        r"a|bc",  # one alternative too short
        r"x*",
        r"(?<name>ab)cd",  # PCRE-only syntax Python rejects
        r"^(?i)abc",  # flags mid-pattern
    ],
)
def test_no_prefilter_when_unsure(pattern: str) -> None:
    assert required_literals(pattern) is None


def test_scan_is_case_insensitive() -> None:
    prefilter = Prefilter()
    mask = prefilter.mask_for(frozenset({"select"}))
    prefilter.freeze()
    assert prefilter.scan("xx SeLeCt yy") & mask
    assert not prefilter.scan("nothing here") & mask


@functools.cache
def _engines() -> tuple[WafEngine, WafEngine]:
    crs = shared_path("data", "crs")
    files = crs_rule_files(crs)
    before = crs_ci_configuration()
    return (
        WafEngine.load(files, before=before),
        WafEngine.load(files, before=before, prefilter=False),
    )


def test_prefilter_never_changes_a_result_on_the_regression_corpus() -> None:
    with_prefilter, without = _engines()
    files, _ = load_test_files([shared_path("data", "crs", "tests", "regression", "tests")])
    compared = 0
    for file in files:
        for test in file.tests[::6]:
            for stage in test.stages:
                try:
                    request = parse_request(build_request(stage.input))
                except HttpParseError:
                    continue
                a = with_prefilter.evaluate(request)
                b = without.evaluate(request)
                assert [(m.id, m.variable, m.value, m.data) for m in a.matches] == [
                    (m.id, m.variable, m.value, m.data) for m in b.matches
                ], test.name
                compared += 1
    assert compared > 500


def test_long_values_count_as_holding_every_literal() -> None:
    prefilter = Prefilter()
    mask = prefilter.mask_for(frozenset({"select"}))
    prefilter.freeze()
    assert prefilter.scan("x" * 10_000) & mask
