"""Every shared Calico test vector (shared/data/calico-selectors/cases.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from palisade.selector import SelectorError, parse

CASES_PATH = Path(__file__).resolve().parents[3] / "shared/data/calico-selectors/cases.json"


def _load_cases() -> list[dict[str, Any]]:
    # A missing file must fail the run, not silently shrink it to zero cases.
    if not CASES_PATH.is_file():
        raise FileNotFoundError(f"selector test vectors not found at {CASES_PATH}")
    cases: list[dict[str, Any]] = json.loads(CASES_PATH.read_text(encoding="utf-8"))
    return cases


CASES = _load_cases()
MATCH_CASES = [case for case in CASES if "match" in case]
INVALID_CASES = [case for case in CASES if case.get("valid") is False]
CANONICAL_CASES = [case for case in CASES if "canonical" in case]


def _id(case: dict[str, Any]) -> str:
    text: str = case["selector"]
    return text if len(text) <= 60 else text[:57] + "..."


def test_every_case_has_a_known_shape() -> None:
    assert len(CASES) == 322
    assert len(MATCH_CASES) + len(INVALID_CASES) + len(CANONICAL_CASES) == len(CASES)


@pytest.mark.parametrize("case", MATCH_CASES, ids=_id)
def test_match(case: dict[str, Any]) -> None:
    selector = parse(case["selector"])
    assert selector.matches(case["labels"]) is case["match"]
    # Calico's tests check the canonical string evaluates the same way.
    assert parse(str(selector)).matches(case["labels"]) is case["match"]


@pytest.mark.parametrize("case", INVALID_CASES, ids=_id)
def test_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SelectorError):
        parse(case["selector"])


@pytest.mark.parametrize("case", CANONICAL_CASES, ids=_id)
def test_canonical(case: dict[str, Any]) -> None:
    selector = parse(case["selector"])
    assert str(selector) == case["canonical"]
    # The README promises every canonical string here is a fixed point.
    assert str(parse(case["canonical"])) == case["canonical"]
    assert parse(case["canonical"]) == selector
