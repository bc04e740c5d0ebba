"""The CRS v4.28.0 regression corpus, in process, through the WAF engine.

Configured as the CRS CI configures libmodsecurity3 (DetectionOnly, paranoia 4, the CI's
limits; see ../shared/data/crs/README.md), judged as go-ftw 2.3.0 judges, with the CI's
``nginx-overrides.yaml`` for the nginx front end. Acceptance: at least 99 % of the test cases
pass, every failure is listed in ``crs_known_failures.yaml`` with its reason, and every
listed test that ran still fails.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from palisade.waf._ftw import FtwRunner, load_crs_engine, load_overrides, load_test_files

ROOT = Path(__file__).resolve().parents[2]
CRS = ROOT.parent / "shared" / "data" / "crs"
TESTS = CRS / "tests" / "regression" / "tests"
OVERRIDES = CRS / "tests" / "regression" / "nginx-overrides.yaml"
KNOWN_FAILURES = Path(__file__).with_name("crs_known_failures.yaml")
REQUIRED_PASS_RATE = 0.99

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not TESTS.is_dir(), reason=f"the CRS regression corpus is not here ({TESTS})"
    ),
]


def _known_failures() -> dict[str, str]:
    document = yaml.safe_load(KNOWN_FAILURES.read_text(encoding="utf-8")) or {}
    failures = document.get("failures") or {}
    assert isinstance(failures, dict), "crs_known_failures.yaml: 'failures' must be a mapping"
    for name, reason in failures.items():
        assert isinstance(reason, str) and reason.strip(), f"{name}: a reason is required"
    return {str(name): str(reason) for name, reason in failures.items()}


def test_crs_regression_corpus() -> None:
    known = _known_failures()
    files, errors = load_test_files([TESTS])
    assert not errors, "test files that do not load:\n" + "\n".join(map(str, errors))
    engine = load_crs_engine(CRS)
    results = FtwRunner(engine, overrides=load_overrides(OVERRIDES)).run(files)
    assert results, "no test cases ran"

    failed = [r for r in results if not r.passed]
    rate = 1 - len(failed) / len(results)
    by_rule_file = Counter(Path(r.file).parent.name for r in failed)
    summary = (
        f"{len(results) - len(failed)} of {len(results)} passed ({100 * rate:.2f} %); "
        f"failures by rule file: {dict(by_rule_file.most_common())}"
    )
    unlisted = [f"{r.test} ({Path(r.file).name}): {r.why}" for r in failed if r.test not in known]
    ran = {r.test for r in results}
    failing = {r.test for r in failed}
    stale = sorted(name for name in known if name in ran and name not in failing)

    assert not unlisted, f"{summary}\nfailures not in {KNOWN_FAILURES.name}:\n" + "\n".join(
        unlisted[:200]
    )
    assert not stale, f"{summary}\nlisted in {KNOWN_FAILURES.name} but now passing: {stale}"
    assert rate >= REQUIRED_PASS_RATE, summary
