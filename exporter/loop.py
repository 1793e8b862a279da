"""The live poll loop: every source in its own thread, on a fixed, drift-free schedule.

Ticks are due at ``start + k × interval`` on the monotonic clock; a tick that overruns its slot
makes the loop skip to the next future slot — late ticks are dropped, never queued — so the
schedule never drifts and no source sees a burst of catch-up requests.

Which sources a tick polls is the pipeline's :class:`~exporter.pipeline.Plan`: vLLM at the
adaptive cadence, the GPUs every tick (NVML) or as often as they refresh (dcgm-exporter).

Each source polls in its own worker thread, so one source cannot hold another back: a tick
starts every idle source, waits until its slot ends at most, and takes what has come back. A
source still answering when the slot ends delivers at a later tick (its sample is timestamped
when it completes), and is not polled again meanwhile: a slow target is polled less often, not
reported down and not sent a second request while it still works on the first. Each source
bounds its own poll with a hard deadline (HTTP sources: :mod:`exporter.scrape.http_get`); one
that still has not returned long after it is reported as timed out on every tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

from exporter.pipeline import Pipeline
from exporter.ratelog import rate_limited
from exporter.samples import EngineSample, GpuSample, PollError, Tick
from exporter.scrape.source import EnginePoll, EngineSource, GpuSource

log = rate_limited(__name__)


@dataclass(slots=True)
class LoopStats:
    """The schedule's health: polls made, slots skipped, and how late recent polls started."""

    ticks: int = 0
    skipped: int = 0
    max_lateness: float = 0.0
    recent_lateness: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    polls: dict[str, int] = field(default_factory=dict)  # polls started, per source
    busy: dict[str, int] = field(default_factory=dict)  # ticks a source was still answering

    def lateness_quantile(self, q: float) -> float | None:
        values = sorted(self.recent_lateness)
        return values[min(len(values) - 1, int(q * len(values)))] if values else None


class _Worker:
    """One source's thread: at most one poll in flight. Jobs go in and outcomes come back
    through the standard library's C queues (``SimpleQueue``): measured in bench/, a
    ``ThreadPoolExecutor`` and ``concurrent.futures.wait`` cost the loop several times more CPU a
    tick for the same handoff."""

    def __init__(self, name: str, mono: Callable[[], float], done: SimpleQueue[_Done]) -> None:
        self.name = name
        self._mono = mono
        self._jobs: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = SimpleQueue()
        self._done = done
        self.running = False
        self.outcome: tuple[Any, float] | BaseException | None = None
        self.started = 0.0
        self._thread = threading.Thread(target=self._run, name=f"poll-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args = job
            t0 = self._mono()
            outcome: tuple[Any, float] | BaseException
            try:
                outcome = (fn(*args), self._mono() - t0)
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which reports it
                outcome = e
            self._done.put((self, outcome))

    def submit(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Start a poll unless one is still running."""
        if self.running:
            return False
        self.running = True
        self.started = self._mono()
        self._jobs.put((fn, args))
        return True

    def finished(self, outcome: tuple[Any, float] | BaseException) -> None:
        self.running = False
        self.outcome = outcome

    def take(self) -> tuple[Any, float] | BaseException | None:
        """The finished poll's (result, duration), or what it raised; None while running."""
        outcome, self.outcome = self.outcome, None
        return outcome

    def close(self) -> None:
        self._jobs.put(None)  # the thread ends after the poll it may still be running


_Done = tuple[_Worker, "tuple[Any, float] | BaseException"]


class PollLoop:
    def __init__(
        self,
        pipeline: Pipeline,
        engine: EngineSource,
        gpu: GpuSource | None,
        *,
        interval: float,
        deadline: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._interval = interval
        self._deadline = deadline  # the sources' own; a poll this much over it is stuck
        self._mono = monotonic
        self._clock = clock
        self._on_tick = on_tick
        self._stop = threading.Event()
        self.stats = LoopStats()
        self._thread: threading.Thread | None = None
        self._pending: tuple[EngineSource, GpuSource | None] | None = None
        self._lock = threading.Lock()
        self._done: SimpleQueue[_Done] = SimpleQueue()  # every worker's finished polls
        self._install(engine, gpu)

    def _install(self, engine: EngineSource, gpu: GpuSource | None) -> None:
        self._engine, self._gpu = engine, gpu
        # Named as the pipeline names the engine's health: its kind ("vllm").
        self._vw = _Worker(self.pipeline.engine_source_name, self._mono, self._done)
        self._gw = _Worker("gpu", self._mono, self._done) if gpu is not None else None

    def replace_sources(self, engine: EngineSource, gpu: GpuSource | None) -> None:
        """New sources from a reload, taken over by the loop thread at its next tick."""
        with self._lock:
            self._pending = (engine, gpu)

    def _take_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            old = (self._engine, self._gpu, self._vw, self._gw)
            self._install(*pending)
            for worker in (old[2], old[3]):
                if worker is not None:
                    worker.close()
            for source in (old[0], old[1]):
                if source is not None:
                    source.close()

    def _collect(self, worker: _Worker, source: str) -> tuple[Any, float | None] | None:
        """The source's result for this tick: what came back, a timeout for a poll far over
        its deadline, or None (nothing new)."""
        taken = worker.take()
        if isinstance(taken, BaseException):
            log.error("%s poll raised %s: %s", source, type(taken).__name__, taken)
            return PollError(self._clock(), "internal", f"{type(taken).__name__}: {taken}"), None
        if taken is not None:
            return taken
        if worker.running:
            running = self._mono() - worker.started
            self.stats.busy[source] = self.stats.busy.get(source, 0) + 1
            if running > 2 * self._deadline + self._interval:
                detail = f"the poll started {running:.1f}s ago has not returned"
                return PollError(self._clock(), "timeout", detail), None
        return None

    def _wait(self, until: float) -> None:
        """Take finished polls until no current worker is running, or until ``until``."""
        current = (self._vw, self._gw)
        while True:
            try:
                if any(w is not None and w.running for w in current):
                    worker, outcome = self._done.get(timeout=max(0.0, until - self._mono()))
                else:
                    worker, outcome = self._done.get_nowait()
            except Empty:
                return
            if worker in current:  # else a source replaced by a reload: dropped
                worker.finished(outcome)

    def tick(self, until: float | None = None) -> Tick:
        """Start every idle source the pipeline's plan says is due, wait for them until
        ``until`` (monotonic; default: their deadline), and feed the pipeline what came back."""
        self._take_pending()
        plan = self.pipeline.plan(self._clock())
        for worker, fn, args, due in (
            (self._vw, self._engine.poll, (plan.models, plan.engine_complete), plan.engine),
            (self._gw, self._gpu.poll if self._gpu is not None else None, (plan.edge,), plan.gpu),
        ):
            if due and worker is not None and fn is not None and worker.submit(fn, *args):
                self.stats.polls[worker.name] = self.stats.polls.get(worker.name, 0) + 1
        if until is None:
            until = self._mono() + self._deadline + 0.5
        self._wait(until)

        got_v = self._collect(self._vw, self._vw.name)
        poll: EnginePoll | None = None
        engine: EngineSample | PollError | None = None
        vd: float | None = None
        if got_v is not None:
            first, vd = got_v
            if isinstance(first, EnginePoll):
                poll, engine = first, first.result
            else:
                engine = first
        gpu: GpuSample | PollError | None = None
        gd: float | None = None
        if self._gw is not None:
            got_g = self._collect(self._gw, "gpu")
            if got_g is not None:
                gpu, gd = got_g
        for name, r in ((self._vw.name, engine), ("gpu", gpu)):
            if isinstance(r, PollError):  # one line a minute per source and reason
                log.warning(f"{name} poll failed ({r.reason}): %s", r.detail)
        tick = Tick(
            engine=engine,
            gpu=gpu,
            engine_duration=vd,
            gpu_duration=gd,
            models=poll.models if poll else None,
            engine_body=poll.body if poll else None,
            models_body=poll.models_body if poll else None,
        )
        outcome = self.pipeline.add_tick(tick)
        if outcome.refused is not None:
            log.warning(
                "%s poll refused: %s", self._vw.name, outcome.refused
            )  # e.g. several processes
        if self._on_tick is not None:
            self._on_tick(tick)
        self.stats.ticks += 1
        return tick

    def run(
        self,
        max_ticks: int | None = None,
        duration: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Poll until stopped (:meth:`stop`, or ``stop`` set), ``max_ticks`` polls, or
        ``duration`` seconds."""
        start = self._mono()
        k = 0
        halt = stop or self._stop
        while not (self._stop.is_set() or halt.is_set()):
            deadline = start + k * self._interval
            lateness = max(0.0, self._mono() - deadline)
            self.stats.max_lateness = max(self.stats.max_lateness, lateness)
            self.stats.recent_lateness.append(lateness)
            try:
                self.tick(until=start + (k + 1) * self._interval)
            except Exception:  # noqa: BLE001 - a bug in one tick must not stop the profiler
                log.exception("poll tick failed")
            if max_ticks is not None and self.stats.ticks >= max_ticks:
                break
            now = self._mono()
            if duration is not None and now - start >= duration:
                break
            nxt = int((now - start) // self._interval) + 1
            self.stats.skipped += max(0, nxt - k - 1)
            k = nxt
            halt.wait(max(0.0, start + k * self._interval - self._mono()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="poll-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for worker in (self._vw, self._gw):
            if worker is not None:
                worker.close()

    def close_sources(self) -> None:
        self._engine.close()
        if self._gpu is not None:
            self._gpu.close()
