"""EngineSlot: the budget's preemption on worker threads, raced against evaluations that end
right at the deadline."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest

from palisade.waf import HttpRequest, HttpResponse
from palisade.waf._front_engine import EngineSlot, Outcome
from tests.waf.front_support import StandInResult


class JitteryEngine:
    """Burns CPU in Python for the number of milliseconds the request's target names."""

    def evaluate(
        self, request: HttpRequest | bytes, response: HttpResponse | None = None
    ) -> StandInResult:
        assert isinstance(request, HttpRequest)
        end = time.monotonic() + int(request.uri.strip("/")) / 1000
        while time.monotonic() < end:
            pass
        return StandInResult(None, False)


def request(milliseconds: int) -> HttpRequest:
    return HttpRequest("GET", f"/{milliseconds}", "HTTP/1.1", (("Host", "x"),), b"")


def test_preemption_on_worker_threads_never_escapes_an_evaluation() -> None:
    rng = random.Random(7)

    async def scenario() -> None:
        slot = EngineSlot(JitteryEngine, fail_open=False, budget=0.02, threads=2)
        slot.start()
        try:
            outcomes = await asyncio.gather(
                *(slot.evaluate(request(rng.randrange(10, 40))) for _ in range(120))
            )
            seen = {verdict.outcome for verdict in outcomes}
            assert seen <= {Outcome.ALLOW, Outcome.FAIL_CLOSED}
            assert Outcome.FAIL_CLOSED in seen  # some ran past 20 ms and were cut
            # the worker threads survived every late or cleared exception
            after = await asyncio.gather(*(slot.evaluate(request(0)) for _ in range(8)))
            assert {verdict.outcome for verdict in after} == {Outcome.ALLOW}
            workers = [t for t in threading.enumerate() if t.name.startswith("waf-eval")]
            assert workers and all(t.is_alive() for t in workers)
        finally:
            slot.stop()

    asyncio.run(scenario())


def test_a_cut_evaluation_stops_burning_cpu() -> None:
    async def scenario() -> None:
        slot = EngineSlot(JitteryEngine, fail_open=True, budget=0.05, threads=1)
        slot.start()
        try:
            started = time.monotonic()
            verdict = await slot.evaluate(request(3000))
            assert verdict.outcome is Outcome.FAIL_OPEN
            # the single worker is free again long before the 3 s evaluation would have ended
            quick = await slot.evaluate(request(0))
            assert quick.outcome is Outcome.ALLOW
            assert time.monotonic() - started < 1.0
        finally:
            slot.stop()

    asyncio.run(scenario())


def _heavy_crs_request() -> HttpRequest:
    body = "&".join(f"field{i}=" + "words+and+more+words+" * 5 for i in range(950)).encode()
    headers = (
        ("Host", "localhost"),
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Content-Length", str(len(body))),
    )
    return HttpRequest("POST", "/form", "HTTP/1.1", headers, body)


@pytest.mark.parametrize("threads", [0, 1])
def test_the_budget_preempts_the_real_crs_engine(threads: int) -> None:
    """The compiled engine (make native) spends its time in C; the budget must still stop
    it mid-evaluation rather than after it — on the loop's thread (SIGPROF) and on a worker
    thread (asynchronous exception) alike."""
    from palisade.waf import _native
    from palisade.waf._ftw import load_crs_engine

    crs = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crs"
    if not crs.is_dir():
        pytest.skip(f"the CRS is not here ({crs})")
    engine = load_crs_engine(crs)
    heavy = _heavy_crs_request()
    started = time.monotonic()
    engine.evaluate(heavy)
    full = time.monotonic() - started
    assert full > 0.1, f"the request must be heavy enough to interrupt ({full:.3f} s)"
    slot = EngineSlot(lambda: engine, fail_open=False, budget=full / 20, threads=threads)
    slot.start()
    try:
        started = time.monotonic()
        verdict = asyncio.run(slot.evaluate(heavy))
        elapsed = time.monotonic() - started
    finally:
        slot.stop()
    assert verdict.outcome is Outcome.FAIL_CLOSED and verdict.status == 503
    assert "budget" in verdict.reason
    # interrupted well before the evaluation's own end (native: {_native.active()})
    assert elapsed < full / 2, (elapsed, full, _native.active())
