"""One window (~2 s, ~9 polls): per-window figures from the polls it holds (docs/design.md).

Every duration comes from the polls' own timestamps, never from a poll count, so the poll
interval can change without touching these formulas. A value that cannot be computed is None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from exporter.derive.histogram import HistDelta, delta, quantile
from exporter.samples import EngineSample, GpuReading, GpuSample, Histogram, ServingConfig

P99 = 0.99


@dataclass(frozen=True, slots=True)
class GpuWindow:
    index: int
    uuid: str
    name: str | None
    util_pct: float | None  # mean of polls
    mem_util_pct: float | None
    power_watts: float | None
    power_limit_watts: float | None
    mem_used_bytes: float | None  # last poll
    mem_used_peak_bytes: float | None  # max of polls
    mem_total_bytes: float | None
    temperature_c: float | None
    temperature_peak_c: float | None
    sm_clock_mhz: float | None
    energy_joules: float | None  # Δ total energy between the window's edge reads
    dram_bw_util_pct: float | None  # GPM, the last edge's reading
    in_last_poll: bool = True  # False: the GPU stopped answering during the window


@dataclass(frozen=True, slots=True)
class Window:
    start: float
    end: float
    duration: float | None  # vLLM span; None when fewer than two vLLM polls
    engine_polls: int
    gpu_polls: int
    engine_observed_at: float | None = None
    gpu_observed_at: float | None = None
    model_name: str | None = None
    model_names: tuple[str, ...] = ()
    serving: ServingConfig = field(default_factory=ServingConfig)
    process_start_time: float | None = None
    engines: int = 0  # data-parallel engines seen in the window's polls (0: not told)
    running: float | None = None  # time-weighted means
    waiting: float | None = None
    kv_usage: float | None = None
    kv_peak: float | None = None
    kv_last: float | None = None
    running_last: float | None = None
    running_peak: float | None = None  # max of polls
    waiting_capacity: float | None = None  # time-weighted mean; None: vLLM does not say
    d_generation_tokens: float | None = None  # None after a reset
    d_prompt_tokens: float | None = None
    d_requests: float | None = None
    d_finished_by_reason: Mapping[str, float] = field(default_factory=dict)  # reset: absent
    d_preemptions: float | None = None
    d_prefix_hits: float | None = None
    d_prefix_queries: float | None = None
    d_est_flops: float | None = None  # vLLM --enable-mfu-metrics counters (per GPU)
    d_est_bytes: float | None = None
    d_steps: float | None = None  # engine steps taken (None after a reset)
    # Tokens those steps generated, and prompt tokens they computed (not from the prefix cache)
    d_step_generated: float | None = None
    d_step_prefilled: float | None = None
    generation_tokens_total: float | None = None  # last poll's cumulative values
    requests_total: float | None = None
    ttft: HistDelta | None = None
    tpot: HistDelta | None = None
    prefill_time: HistDelta | None = None
    queue_time: HistDelta | None = None
    prompt_len: HistDelta | None = None
    output_len: HistDelta | None = None
    ttft_mean: float | None = None
    tpot_mean: float | None = None
    prefill_time_mean: float | None = None
    queue_time_mean: float | None = None
    prompt_len_mean: float | None = None
    ttft_p99: float | None = None
    tpot_p99: float | None = None
    gpus: tuple[GpuWindow, ...] = ()
    # Whether each source answered after the boundary poll this window shares with the last one:
    # a source that stopped answering makes its figures vanish after one window, not two.
    engine_answered: bool = True
    gpu_answered: bool = True

    def rate(self, d: float | None) -> float | None:
        """Counter delta per second; None on a reset or a zero duration (0 is a valid idle rate)."""
        if d is None or self.duration is None or self.duration <= 0:
            return None
        return d / self.duration

    @property
    def generation_tps(self) -> float | None:
        return self.rate(self.d_generation_tokens)

    @property
    def requests_per_second(self) -> float | None:
        return self.rate(self.d_requests)

    @property
    def preemptions_per_second(self) -> float | None:
        return self.rate(self.d_preemptions)

    @property
    def prefix_hit_ratio(self) -> float | None:
        if self.d_prefix_hits is None or self.d_prefix_queries is None:
            return None
        return self.d_prefix_hits / self.d_prefix_queries if self.d_prefix_queries > 0 else None

    @property
    def gpu_util_pct(self) -> float | None:
        """Mean over the server's GPUs, for the activity gate."""
        vals = [g.util_pct for g in self.gpus if g.util_pct is not None]
        return sum(vals) / len(vals) if vals else None


def time_weighted_mean(points: Sequence[tuple[float, float]]) -> float | None:
    """Trapezoidal mean of (t, v) points; one point → its value.

    Trapezoids use every scrape including both boundary polls, and a boundary interval shared by
    two windows is counted once in each, as the window formulas require.

    >>> time_weighted_mean([(0.0, 0.0), (1.0, 2.0), (3.0, 2.0)])  # (1×1 + 2×2) / 3
    1.6666666666666667
    """
    if not points:
        return None
    if len(points) == 1:
        return points[0][1]
    span = points[-1][0] - points[0][0]
    if span <= 0:
        return sum(v for _, v in points) / len(points)
    area = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in pairwise(points))
    return area / span


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _last(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def counter_delta(values: Sequence[float | None]) -> float | None:
    """last − first over a counter's polls; None if any step goes backwards (a reset).

    >>> counter_delta([10.0, 12.0, 15.0]), counter_delta([10.0, 2.0, 15.0])
    (5.0, None)
    >>> counter_delta([4.0, 4.0])
    0.0
    """
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return None
    if any(b < a for a, b in pairwise(present)):
        return None
    return present[-1] - present[0]


def _hist(
    polls: Sequence[EngineSample], get: Callable[[EngineSample], Histogram | None]
) -> tuple[HistDelta | None, float | None, float | None]:
    """(delta, mean with the cumulative fallback, p99) for one histogram family; nothing when
    the window's last poll was read partly (its histograms end before the window does)."""
    present = [h for p in polls if (h := get(p)) is not None]
    if not present or not polls[-1].complete:
        return None, None, None
    first, last = present[0], present[-1]
    d = delta(first, last) if len(present) > 1 else None
    if d is not None and d.count > 0:
        return d, d.sum / d.count, quantile(P99, d.bounds, d.cumulative)
    # Δcount ≤ 0 (idle, or a reset): the last poll's cumulative mean; no p99 (a stale p99 lies).
    return d, last.mean, None


def _gpu_windows(gpu_polls: Sequence[GpuSample]) -> tuple[GpuWindow, ...]:
    by_index: dict[int, list[GpuReading]] = {}
    for poll in gpu_polls:
        for r in poll.gpus:
            by_index.setdefault(r.index, []).append(r)
    last_poll = {r.index for r in gpu_polls[-1].gpus} if gpu_polls else set()
    out = []
    for index in sorted(by_index):
        rs = by_index[index]
        last = rs[-1]
        energy = counter_delta([r.energy_mj for r in rs])
        out.append(
            GpuWindow(
                index=index,
                uuid=last.uuid,
                name=last.name,
                util_pct=_mean([r.util_gpu_pct for r in rs]),
                mem_util_pct=_mean([r.util_mem_pct for r in rs]),
                power_watts=_mean([r.power_watts for r in rs]),
                power_limit_watts=_last([r.power_limit_watts for r in rs]),
                mem_used_bytes=last.mem_used_bytes,
                mem_used_peak_bytes=_max([r.mem_used_bytes for r in rs]),
                mem_total_bytes=_last([r.mem_total_bytes for r in rs]),
                temperature_c=last.temperature_c,
                temperature_peak_c=_max([r.temperature_c for r in rs]),
                sm_clock_mhz=last.sm_clock_mhz,
                energy_joules=None if energy is None else energy / 1000.0,
                dram_bw_util_pct=_last([r.dram_bw_util_pct for r in rs]),
                in_last_poll=index in last_poll,
            )
        )
    return tuple(out)


def build_window(
    engine_polls: Sequence[EngineSample],
    gpu_polls: Sequence[GpuSample],
    *,
    start: float,
    end: float,
) -> Window:
    """Per-window figures from the window's successful polls, in time order.

    ``start`` and ``end`` are the times of the window's first and last ticks, failed polls included.
    """
    gpus = _gpu_windows(gpu_polls)
    gpu_at = gpu_polls[-1].observed_at if gpu_polls else None
    if not engine_polls:
        return Window(start, end, None, 0, len(gpu_polls), gpu_observed_at=gpu_at, gpus=gpus)

    v = engine_polls
    last = v[-1]
    duration = v[-1].observed_at - v[0].observed_at if len(v) > 1 else None

    def series(get: Callable[[EngineSample], float | None]) -> list[tuple[float, float]]:
        return [(p.observed_at, x) for p in v if (x := get(p)) is not None]

    def d(get: Callable[[EngineSample], float | None]) -> float | None:
        return counter_delta([get(p) for p in v])

    ttft, ttft_mean, ttft_p99 = _hist(v, lambda p: p.ttft)
    tpot, tpot_mean, tpot_p99 = _hist(v, lambda p: p.tpot)
    prefill, prefill_mean, _ = _hist(v, lambda p: p.prefill_time)
    queue, queue_mean, _ = _hist(v, lambda p: p.queue_time)
    plen, plen_mean, _ = _hist(v, lambda p: p.prompt_len)
    olen, _, _ = _hist(v, lambda p: p.output_len)
    gen = d(lambda p: p.generation_tokens)
    kv = [p.kv_usage for p in v]
    return Window(
        start=start,
        end=end,
        duration=duration,
        engine_polls=len(v),
        gpu_polls=len(gpu_polls),
        engine_observed_at=last.observed_at,
        gpu_observed_at=gpu_at,
        model_name=_last_str([p.model_name for p in v]),
        model_names=next((p.model_names for p in reversed(v) if p.model_names), ()),
        serving=last.serving,
        process_start_time=last.process_start_time,
        engines=max(p.engines for p in v),
        running=time_weighted_mean(series(lambda p: p.running)),
        waiting=time_weighted_mean(series(lambda p: p.waiting)),
        kv_usage=time_weighted_mean(series(lambda p: p.kv_usage)),
        kv_peak=_max(kv),
        kv_last=_last(kv),
        running_last=_last([p.running for p in v]),
        running_peak=_max([p.running for p in v]),
        waiting_capacity=time_weighted_mean(series(lambda p: p.waiting_capacity)),
        d_generation_tokens=gen,
        d_prompt_tokens=d(lambda p: p.prompt_tokens),
        d_requests=d(lambda p: p.requests_finished),
        d_finished_by_reason={
            reason: delta
            for reason in last.finished_by_reason
            if (delta := counter_delta([p.finished_by_reason.get(reason) for p in v])) is not None
        },
        d_preemptions=d(lambda p: p.preemptions),
        d_prefix_hits=d(lambda p: p.prefix_hits),
        d_prefix_queries=d(lambda p: p.prefix_queries),
        d_est_flops=d(lambda p: p.est_flops),
        d_est_bytes=d(
            lambda p: (
                None
                if p.est_read_bytes is None or p.est_write_bytes is None
                else p.est_read_bytes + p.est_write_bytes
            )
        ),
        d_steps=d(lambda p: p.steps),
        d_step_generated=d(_step_generated),
        d_step_prefilled=d(_step_prefilled),
        generation_tokens_total=last.generation_tokens,
        requests_total=last.requests_finished,
        ttft=ttft,
        tpot=tpot,
        prefill_time=prefill,
        queue_time=queue,
        prompt_len=plen,
        output_len=olen,
        ttft_mean=ttft_mean,
        tpot_mean=tpot_mean,
        prefill_time_mean=prefill_mean,
        queue_time_mean=queue_mean,
        prompt_len_mean=plen_mean,
        ttft_p99=ttft_p99,
        tpot_p99=tpot_p99,
        gpus=gpus,
    )


def _last_str(values: Sequence[str | None]) -> str | None:
    return next((x for x in reversed(values) if x is not None), None)


def _step_generated(s: EngineSample) -> float | None:
    return s.step_generated if s.step_generated is not None else s.generation_tokens


def _step_prefilled(s: EngineSample) -> float | None:
    if s.step_prefilled is not None:
        return s.step_prefilled
    if s.prompt_tokens is None:
        return None
    # Cumulative and never falling: each prefill adds its prompt and at most as many hits.
    return s.prompt_tokens - (s.prefix_hits or 0.0)
