"""The mypyc-compiled engine against the same engine run as plain Python.

``make`` builds the compiled modules (``make native``); the package loads them only when they
were built from the sources in the tree. The differential runs part of the CRS regression
corpus (protocol enforcement, RCE, XSS, SQL injection, Java) through both, each in a process
of its own, and asserts that every stage gets the same status, the same logged rule ids and
the same log lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from palisade.waf import _native

ROOT = Path(__file__).resolve().parents[2]
CRS = ROOT.parent / "shared" / "data" / "crs"
TESTS = CRS / "tests" / "regression" / "tests"
SAMPLE = (
    "REQUEST-920-PROTOCOL-ENFORCEMENT",
    "REQUEST-932-APPLICATION-ATTACK-RCE",
    "REQUEST-941-APPLICATION-ATTACK-XSS",
    "REQUEST-942-APPLICATION-ATTACK-SQLI",
    "REQUEST-944-APPLICATION-ATTACK-JAVA",
)

_OBSERVE = r"""
import json, re, sys
from pathlib import Path
from palisade.waf import _native
from palisade.waf._ftw import load_crs_engine, load_test_files, run_stage
from palisade.waf._ftw_request import BadTestInput, build_request

crs, *folders = sys.argv[1:]
engine = load_crs_engine(Path(crs))
files, errors = load_test_files([Path(f) for f in folders])
assert not errors, errors
unique = re.compile(r'\[unique_id "[^"]*"\]')
out = {"native": _native.active(), "stages": {}}
for file in files:
    for test in file.tests:
        for index, stage in enumerate(test.stages):
            try:
                raw = build_request(stage.input)
            except BadTestInput:
                continue
            seen = run_stage(engine, raw)
            out["stages"][f"{test.name}/{index}"] = [
                seen.status,
                sorted(seen.logged_ids),
                [unique.sub("", line) for line in seen.log_lines],
            ]
json.dump(out, sys.stdout)
"""


def _observe(native: bool) -> dict[str, object]:
    env = {**os.environ, "PALISADE_WAF_NATIVE": "1" if native else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _OBSERVE, str(CRS), *(str(TESTS / name) for name in SAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not TESTS.is_dir(), reason=f"the CRS regression corpus is not here ({TESTS})")
@pytest.mark.skipif(
    not (_native.build_dir() / "complete").is_file(),
    reason="no compiled build of these sources: `make native` makes it (make test does)",
)
def test_compiled_engine_agrees_with_plain_python_on_the_crs_corpus() -> None:
    compiled = _observe(native=True)
    plain = _observe(native=False)
    assert compiled["native"] is True and plain["native"] is False
    stages_compiled = compiled["stages"]
    stages_plain = plain["stages"]
    assert isinstance(stages_compiled, dict) and isinstance(stages_plain, dict)
    assert len(stages_plain) > 500, "the sample ran too few stages to mean anything"
    assert stages_compiled.keys() == stages_plain.keys()
    differing = [k for k in stages_plain if stages_plain[k] != stages_compiled[k]]
    assert not differing, (
        f"{len(differing)} stages differ, e.g. {differing[0]}: "
        f"plain {stages_plain[differing[0]]} compiled {stages_compiled[differing[0]]}"
    )
    blocked_or_logged = sum(1 for v in stages_plain.values() if v[1])
    assert blocked_or_logged > 300, "the sample should be mostly attacks that rules log"


_WHICH = (
    "from palisade.waf import _native; import palisade.waf._engine as e; "
    "print(_native.active(), e.__file__.endswith('.py'))"
)


def _which_engine(native_dir: Path) -> list[str]:
    env = {**os.environ, "PALISADE_NATIVE_DIR": str(native_dir), "PALISADE_WAF_NATIVE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _WHICH], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(
    not (_native.build_dir() / "complete").is_file(),
    reason="no compiled build of these sources: `make native` makes it (make test does)",
)
def test_a_build_of_other_sources_is_not_loaded(tmp_path: Path) -> None:
    """The real build, copied under its own digest, is loaded; the same files under another
    digest (a build of other sources) are not: after an edit, plain Python runs."""
    build = _native.build_dir()
    shutil.copytree(build, tmp_path / "right" / build.name)
    assert _which_engine(tmp_path / "right") == ["True", "False"]
    shutil.copytree(build, tmp_path / "stale" / ("0" * len(build.name)))
    assert _which_engine(tmp_path / "stale") == ["False", "True"]


def test_native_can_be_switched_off() -> None:
    code = "from palisade.waf import _native; print(_native.active())"
    env = {**os.environ, "PALISADE_WAF_NATIVE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "False"
