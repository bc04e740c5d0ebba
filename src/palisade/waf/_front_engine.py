"""The front ends' view of the engine: one guarded evaluation with fail-open/fail-closed.

The proxy and the ext_authz servers share this. :class:`EngineSlot` holds the current engine
(swapped atomically by :meth:`EngineSlot.reload`; a request keeps the engine it started with)
and turns one evaluation into a :class:`Verdict`:

- the engine's own verdict when it answers within the budget;
- otherwise — it raised, or ran past ``budget`` seconds — the configured failure policy:
  *open* lets the request through, *closed* answers 503.

Evaluations run on the event loop's thread by default (``threads=0``), where a ``SIGPROF``
interval timer enforces the budget in process CPU time (main thread only; elsewhere it is
checked after the fact); with ``threads`` > 0 they run on worker threads, where a watchdog
enforces it in wall-clock time from the evaluation's start. Either way the budget is
preemptive: :class:`EvaluationTimeout` is raised inside the engine's code at its next check
for signals (a long C call, such as one PCRE2 match, ends first; the mypyc-compiled engine
reaches such checks often enough — a test holds it to that). It derives from
``BaseException`` so that an engine's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import FrameType
from typing import Any, Protocol

from palisade.waf._http import HttpRequest, HttpResponse

log = logging.getLogger("palisade.waf.front")

DEFAULT_BUDGET = 0.5  # seconds per evaluation; CRS v4 PL1 needs a few ms
# Evaluation threads. 0 = on the event loop's thread: with the compiled engine (~0.6 ms for
# a benign GET) the hand-off to a pool and the GIL's switching cost more than they overlap
# (bench, interleaved runs: GET 892 req/s with 0, 573 with 1, 602 with 4 threads).
DEFAULT_THREADS = 0


class WafResultLike(Protocol):
    """What the front ends read from :class:`palisade.waf.WafResult`."""

    @property
    def status(self) -> int | None: ...

    @property
    def blocked(self) -> bool: ...


class WafEngineLike(Protocol):
    """The part of :class:`palisade.waf.WafEngine` the front ends use."""

    def evaluate(
        self, request: HttpRequest | bytes, response: HttpResponse | None = None
    ) -> Any: ...


EngineFactory = Callable[[], WafEngineLike]
ResultHook = Callable[[HttpRequest, Any], None]
"""Called with the request and the engine's WafResult after every evaluation that produced
one (Security Events hook). It runs on the event loop: it must be quick and must not raise."""


class Outcome(Enum):
    ALLOW = "allow"  # the engine let it through
    BLOCK = "block"  # the engine intervened
    FAIL_OPEN = "fail-open"  # the engine failed; policy lets it through
    FAIL_CLOSED = "fail-closed"  # the engine failed; policy answers 503


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    status: int  # HTTP status to answer when not allowed (403, 503, …); 200 when allowed
    result: Any  # the engine's WafResult, or None when it failed
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome in (Outcome.ALLOW, Outcome.FAIL_OPEN)


class EvaluationTimeout(BaseException):
    """Raised inside the engine when the evaluation's CPU budget ran out."""


class _CpuBudget:
    """A per-evaluation SIGPROF timer; usable only on the main thread."""

    def __init__(self) -> None:
        self._armed = False
        self._previous: Any = None
        self._installed = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        if self._installed:
            return True
        if signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
            return False  # someone else (a profiler) uses the timer
        self._previous = signal.signal(signal.SIGPROF, self._on_signal)
        self._installed = True
        return True

    def uninstall(self) -> None:
        if self._installed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self._previous)
            self._installed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            raise EvaluationTimeout

    def arm(self, seconds: float) -> None:
        self._armed = True
        signal.setitimer(signal.ITIMER_PROF, seconds)

    def disarm(self) -> None:
        # Clear the flag first: a signal landing between the two lines is then ignored.
        self._armed = False
        signal.setitimer(signal.ITIMER_PROF, 0)

    @property
    def installed(self) -> bool:
        return self._installed


class _Run:
    """One evaluation on a worker thread, as the watchdog sees it."""

    __slots__ = ("deadline", "done", "injected", "injecting", "thread")

    def __init__(self, thread: int, deadline: float) -> None:
        self.thread = thread
        self.deadline = deadline
        self.done = False
        self.injecting = False
        self.injected = False


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int

_PENDING: Any = object()
_TIMED_OUT: Any = object()


class _ThreadBudget:
    """Preempts evaluations on worker threads: a watchdog thread raises
    :class:`EvaluationTimeout` inside an evaluation that ran past its wall-clock budget
    (``PyThreadState_SetAsyncExc``, delivered at the thread's next bytecode).

    The hand-shake (``done``/``injecting``/``injected``, each a single store under the GIL)
    guarantees the exception is raised inside :meth:`run` or cleared before ``run`` returns,
    never in the executor's own code."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._runs: dict[int, _Run] = {}
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        if self._watchdog is None:
            self._stop.clear()
            self._watchdog = threading.Thread(target=self._watch, name="waf-budget", daemon=True)
            self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None

    def _watch(self) -> None:
        interval = min(0.05, self.budget / 5)
        while not self._stop.wait(interval):
            now = time.monotonic()
            for run in list(self._runs.values()):
                if run.deadline <= now and not run.injected:
                    run.injecting = True
                    if not run.done:
                        _set_async_exc(run.thread, EvaluationTimeout)
                        run.injected = True
                    run.injecting = False

    def run(self, engine: WafEngineLike, request: HttpRequest, response: Any) -> Any:
        """``engine.evaluate`` on this (worker) thread: its result, ``_TIMED_OUT``, or the
        exception it raised (returned, not raised)."""
        thread = threading.get_ident()
        record = _Run(thread, time.monotonic() + self.budget)
        outcome: Any = _PENDING
        while True:
            try:
                if outcome is _PENDING:
                    self._runs[thread] = record
                    try:
                        outcome = engine.evaluate(request, response)
                    except EvaluationTimeout:
                        outcome = _TIMED_OUT
                    except Exception as exc:
                        outcome = exc
                record.done = True
                while record.injecting:  # the watchdog read "not done" just before
                    time.sleep(0)
                if record.injected:
                    _set_async_exc(thread, ctypes.py_object())  # clear one not yet delivered
                self._runs.pop(thread, None)
                return outcome
            except EvaluationTimeout:  # delivered after the evaluation ended: absorbed
                if outcome is _PENDING:
                    outcome = _TIMED_OUT


class EngineSlot:
    """The current engine plus the failure policy; shared by all connections of a server.

    ``threads`` > 0 evaluates on that many worker threads, with a wall-clock budget per
    evaluation (for engines slow enough that overlapping the loop's socket work pays for
    the hand-off); ``threads=0`` (the default) evaluates on the event loop's thread with a
    CPU-time budget."""

    def __init__(
        self,
        engine_factory: EngineFactory,
        *,
        fail_open: bool,
        budget: float | None = DEFAULT_BUDGET,
        on_result: ResultHook | None = None,
        engine: WafEngineLike | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self._factory = engine_factory
        self.engine: WafEngineLike = engine if engine is not None else engine_factory()
        self.fail_open = fail_open
        self.budget = budget
        self.on_result = on_result
        self.threads = threads
        self._timer = _CpuBudget()
        self._thread_budget = _ThreadBudget(budget) if budget is not None and threads else None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.generation = 1  # bumped by every successful reload

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (and their watchdog), or install the preemptive CPU
        budget for the loop's thread (main thread only; otherwise checked afterwards)."""
        if self.threads:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.threads, thread_name_prefix="waf-eval"
                )
            if self._thread_budget is not None:
                self._thread_budget.start()
        elif self.budget is not None:
            self._timer.install()

    def stop(self) -> None:
        self._timer.uninstall()
        if self._thread_budget is not None:
            self._thread_budget.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def reload(self) -> None:
        """Build a new engine off the event loop and swap it in; the old one keeps serving
        meanwhile. A factory that raises leaves the current engine in place (and re-raises)."""
        loop = asyncio.get_running_loop()
        new_engine = await loop.run_in_executor(None, self._factory)
        self.engine = new_engine  # one attribute store: atomic for every later evaluation
        self.generation += 1
        log.info("WAF engine reloaded (generation %d)", self.generation)

    # -- evaluation --------------------------------------------------------------------------

    async def evaluate(
        self, request: HttpRequest, response: HttpResponse | None = None, *, report: bool = True
    ) -> Verdict:
        """The verdict on ``request`` (and ``response``). ``report=False`` holds back the
        result hook — for a request-phase verdict that a response-phase one will follow (the
        caller then reports whichever verdict is final with :meth:`report`)."""
        if self._executor is None:
            return self.evaluate_here(request, response, report=report)
        engine = self.engine
        if self._thread_budget is not None:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._thread_budget.run, engine, request, response
            )
        else:
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor, _evaluate_catching, engine, request, response
            )
        if outcome is _TIMED_OUT:
            return self.failed(f"engine exceeded its budget of {self.budget} s")
        if isinstance(outcome, Exception):
            return self._engine_error(request, outcome)
        return self._verdict(request, outcome, report)

    def evaluate_here(
        self, request: HttpRequest, response: HttpResponse | None = None, *, report: bool = True
    ) -> Verdict:
        """:meth:`evaluate` on the calling thread (CPU budget: preemptive on the main thread)."""
        engine = self.engine
        budget = self.budget
        preemptive = budget is not None and self._timer.installed
        started = time.process_time()
        try:
            if preemptive:
                assert budget is not None
                self._timer.arm(budget)
                try:
                    result = engine.evaluate(request, response)
                finally:
                    self._timer.disarm()
            else:
                result = engine.evaluate(request, response)
        except EvaluationTimeout:
            return self.failed(f"engine exceeded its budget of {budget} s CPU")
        except Exception as exc:
            return self._engine_error(request, exc)
        if budget is not None and not preemptive and time.process_time() - started > budget:
            return self.failed(f"engine exceeded its budget of {budget} s CPU")
        return self._verdict(request, result, report)

    def _verdict(self, request: HttpRequest, result: Any, report: bool) -> Verdict:
        if result.blocked:
            status = result.status if result.status is not None else 403
            verdict = Verdict(Outcome.BLOCK, status, result)
        else:
            verdict = Verdict(Outcome.ALLOW, 200, result)
        if report:
            self.report(request, verdict)
        return verdict

    def _engine_error(self, request: HttpRequest, exc: Exception) -> Verdict:
        log.error(
            "WAF engine failed on %s %s",
            request.method,
            request.uri,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return self.failed(f"engine error: {type(exc).__name__}: {exc}")

    def report(self, request: HttpRequest, verdict: Verdict) -> None:
        """Hand the engine's result to the result hook (nothing when the engine failed)."""
        if self.on_result is None or verdict.result is None:
            return
        try:
            self.on_result(request, verdict.result)
        except Exception:
            log.exception("WAF result hook failed")

    def failed(self, reason: str) -> Verdict:
        log.warning("WAF %s: %s", "fail-open" if self.fail_open else "fail-closed", reason)
        if self.fail_open:
            return Verdict(Outcome.FAIL_OPEN, 200, None, reason)
        return Verdict(Outcome.FAIL_CLOSED, 503, None, reason)


def _evaluate_catching(engine: WafEngineLike, request: HttpRequest, response: Any) -> Any:
    try:
        return engine.evaluate(request, response)
    except Exception as exc:
        return exc


def reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def denial_body(verdict: Verdict) -> bytes:
    """The short body of a refusal."""
    if verdict.outcome is Outcome.FAIL_CLOSED:
        return b"Service Unavailable: the web application firewall could not decide\n"
    phrase = reason_phrase(verdict.status)
    return f"{verdict.status} {phrase}: blocked by the web application firewall\n".encode()
