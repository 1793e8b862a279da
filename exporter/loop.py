"""The live poll loop: both sources in parallel on a fixed, drift-free schedule.

Deadlines are ``start + k × interval`` on the monotonic clock. A poll that overruns its slot makes
the loop skip to the next future deadline — late ticks are dropped, never queued — so the
schedule never drifts and vLLM never sees a burst of catch-up requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from exporter.pipeline import Pipeline
from exporter.samples import GpuSample, ModelsInfo, PollError, Tick, VllmSample
from exporter.scrape.nvml import GpuSource

log = logging.getLogger(__name__)


class VllmSource(Protocol):
    def poll(self) -> VllmSample | PollError: ...

    def models(self) -> ModelsInfo | None: ...


@dataclass(slots=True)
class LoopStats:
    """The schedule's health: polls made, slots skipped, and how late recent polls started."""

    ticks: int = 0
    skipped: int = 0
    max_lateness: float = 0.0
    recent_lateness: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def lateness_quantile(self, q: float) -> float | None:
        values = sorted(self.recent_lateness)
        return values[min(len(values) - 1, int(q * len(values)))] if values else None


class _ErrorLog:
    """One log line per (source, reason) per minute: a dead endpoint must not flood the log."""

    def __init__(self, clock: Callable[[], float], every: float = 60.0) -> None:
        self._clock, self._every = clock, every
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, source: str, err: PollError) -> None:
        now = self._clock()
        key = (source, err.reason)
        if now - self._last.get(key, -1e18) >= self._every:
            self._last[key] = now
            log.warning("%s poll failed (%s): %s", source, err.reason, err.detail)


class PollLoop:
    def __init__(
        self,
        pipeline: Pipeline,
        vllm: VllmSource,
        gpu: GpuSource | None,
        *,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._vllm, self._gpu = vllm, gpu
        self._interval = interval
        self._mono = monotonic
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poll")
        self._errors = _ErrorLog(monotonic)
        self.stats = LoopStats()
        self._thread: threading.Thread | None = None

    def _poll_vllm(
        self, want_models: bool
    ) -> tuple[VllmSample | PollError, float, ModelsInfo | None]:
        t0 = self._mono()
        result = self._vllm.poll()
        took = self._mono() - t0
        models = self._vllm.models() if want_models and isinstance(result, VllmSample) else None
        return result, took, models

    def _poll_gpu(self, edge: bool) -> tuple[GpuSample | PollError, float]:
        assert self._gpu is not None
        t0 = self._mono()
        result = self._gpu.poll(edge)
        return result, self._mono() - t0

    def tick(self) -> Tick:
        """Poll both sources once, in parallel, and feed the pipeline."""
        edge = self.pipeline.next_is_edge
        # vLLM in the worker, the GPUs here meanwhile: one thread hand-off per poll, not two.
        fv = self._pool.submit(self._poll_vllm, self.pipeline.models_wanted)
        gpu, gd = self._poll_gpu(edge) if self._gpu is not None else (None, None)
        vllm, vd, models = fv.result()
        for name, r in (("vllm", vllm), ("gpu", gpu)):
            if isinstance(r, PollError):
                self._errors(name, r)
        tick = Tick(vllm=vllm, gpu=gpu, vllm_duration=vd, gpu_duration=gd, models=models)
        if models is None and self.pipeline.models_wanted and isinstance(vllm, VllmSample):
            # vLLM answered /metrics but not /v1/models: ask again only after a restart.
            self.pipeline.set_models(None)
        self.pipeline.add_tick(tick)
        if self._on_tick is not None:
            self._on_tick(tick)
        self.stats.ticks += 1
        return tick

    def run(self, max_ticks: int | None = None, duration: float | None = None) -> None:
        """Poll until stopped, ``max_ticks`` polls, or ``duration`` seconds."""
        start = self._mono()
        k = 0
        while not self._stop.is_set():
            deadline = start + k * self._interval
            lateness = max(0.0, self._mono() - deadline)
            self.stats.max_lateness = max(self.stats.max_lateness, lateness)
            self.stats.recent_lateness.append(lateness)
            try:
                self.tick()
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
            self._stop.wait(max(0.0, start + k * self._interval - self._mono()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="poll-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
