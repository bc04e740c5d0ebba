"""EngineSlot: the budget's preemption on worker threads, raced against evaluations that end
right at the deadline."""

from __future__ import annotations

import asyncio
import random
import threading
import time

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
