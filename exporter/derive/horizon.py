"""Aggregates over the horizon of recent windows (docs/design.md).

Which windows feed which figure: histogram means, p99s, throughput and GPU utilization/power use
active windows; KV mean, prefix hit rate, prompt length and running/waiting use evaluable windows;
cumulative totals come from the last window. Rates are time-weighted (Σdelta / Σduration), means
of histograms are weighted by observations (ΣΔsum / ΣΔcount), p99s come from merged bucket deltas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.derive.gate import Gate
from exporter.derive.histogram import HistDelta, merge_latest, quantile
from exporter.derive.window import P99, GpuWindow, Window
from exporter.samples import ServingConfig

GatedWindow = tuple[Window, Gate]


@dataclass(frozen=True, slots=True)
class GpuAggregate:
    index: int
    uuid: str
    name: str | None
    util_ratio: float | None = None
    mem_util_ratio: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    mem_used_bytes: float | None = None
    mem_used_peak_bytes: float | None = None
    mem_total_bytes: float | None = None
    temperature_c: float | None = None
    temperature_peak_c: float | None = None
    sm_clock_hz: float | None = None
    dram_bw_util_ratio: float | None = None
    energy_joules: float | None = None  # over the active windows
    energy_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Aggregate:
    windows_total: int = 0
    windows_evaluable: int = 0
    windows_active: int = 0
    horizon_start: float | None = None
    horizon_end: float | None = None
    engine_fresh: bool = False  # the latest window holds vLLM data
    gpu_fresh: bool = False
    model_name: str | None = None
    model_names: tuple[str, ...] = ()
    serving: ServingConfig = field(default_factory=ServingConfig)
    engines: int = 0  # data-parallel engines in the latest evaluable window (0: not told)
    generation_tps: float | None = None
    # The spread of the active windows' own generated tokens/s (the status page draws it)
    generation_tps_range: tuple[float, float] | None = None
    prompt_tps: float | None = None
    requests_per_second: float | None = None
    # share of the requests finished in the evaluable windows, by vLLM's finished_reason
    finished_ratio_by_reason: Mapping[str, float] = field(default_factory=dict)
    preemptions_per_second: float | None = None
    running: float | None = None
    waiting: float | None = None
    running_active: float | None = None  # batch B for the roofline
    kv_usage_mean: float | None = None
    kv_usage_peak: float | None = None
    prefix_hit_ratio: float | None = None
    ttft_mean: float | None = None
    ttft_p99: float | None = None
    tpot_mean: float | None = None
    tpot_p99: float | None = None
    prefill_time_mean: float | None = None
    queue_time_mean: float | None = None
    prompt_tokens_mean: float | None = None
    generation_tokens_total: float | None = None
    energy_joules: float | None = None  # all GPUs, over active windows where every GPU has it
    energy_tokens: float | None = None  # generated tokens in those same windows
    est_flops_per_second: float | None = None  # vLLM's analytic FLOP/s per GPU, active windows
    est_bytes_per_second: float | None = None
    engine_steps_per_second: float | None = None  # active windows
    # Generated tokens per engine step over the active windows: the mean decode batch, exact
    # from counters (a ratio of sums, not a mean of per-window ratios).
    decode_batch_per_step: float | None = None
    requests_total: float | None = None
    # Wall-clock basis (docs/design.md): vLLM spans of the evaluable and the active windows, and the
    # tokens generated in the evaluable windows whose counter delta is known, over their spans.
    observed_seconds: float = 0.0
    active_seconds: float = 0.0
    observed_tokens: float | None = None
    observed_token_seconds: float = 0.0
    gpus: tuple[GpuAggregate, ...] = ()


def _per_step(ws: Sequence[Window]) -> float | None:
    """Tokens generated per engine step, over the windows where both counters moved known."""
    both = [(w.d_step_generated, w.d_steps) for w in ws
            if w.d_step_generated is not None and w.d_steps is not None]  # fmt: skip
    steps = sum(s for _, s in both)
    return sum(g for g, _ in both) / steps if steps > 0 else None


def _weighted(ws: Sequence[Window], get: Callable[[Window], float | None]) -> float | None:
    """Time-weighted mean of a per-window value over windows where it and the duration exist."""
    num = den = 0.0
    for w in ws:
        v = get(w)
        if v is not None and w.duration is not None and w.duration > 0:
            num += v * w.duration
            den += w.duration
    return num / den if den > 0 else None


def _ratio_of_sums(
    ws: Sequence[Window],
    num: Callable[[Window], float | None],
    den: Callable[[Window], float | None],
) -> float | None:
    """Σnum / Σden over windows where both are known; None unless Σden > 0."""
    n = d = 0.0
    for w in ws:
        a, b = num(w), den(w)
        if a is not None and b is not None:
            n += a
            d += b
    return n / d if d > 0 else None


def _hist_mean(ws: Sequence[Window], get: Callable[[Window], HistDelta | None]) -> float | None:
    """ΣΔsum / ΣΔcount; a window without observations adds 0 to both (its Δsum is 0 too)."""
    return _ratio_of_sums(
        ws,
        lambda w: None if (h := get(w)) is None else h.sum,
        lambda w: None if (h := get(w)) is None else h.count,
    )


def _hist_p99(ws: Sequence[Window], get: Callable[[Window], HistDelta | None]) -> float | None:
    # Windows without observations do not count: an idle window on new bucket bounds must not
    # hide the busy windows on the old ones.
    merged = merge_latest(h for w in ws if (h := get(w)) is not None and h.count > 0)
    return None if merged is None else quantile(P99, merged.bounds, merged.cumulative)


def _shares(deltas: Sequence[Mapping[str, float]]) -> Mapping[str, float]:
    """Each key's share of the sum over every window whose deltas are known; {} when nothing
    finished.

    >>> _shares([{"stop": 3.0, "error": 1.0}, {}, {"stop": 4.0, "error": 0.0}])
    {'stop': 0.875, 'error': 0.125}
    """
    sums: dict[str, float] = {}
    for d in deltas:
        for k, v in d.items():
            sums[k] = sums.get(k, 0.0) + v
    total = sum(sums.values())
    return {k: v / total for k, v in sums.items()} if total > 0 else {}


def _peak(values: Sequence[float | None], current: float | None) -> float | None:
    present = [v for v in values if v is not None]
    if current is not None:
        present.append(current)
    return max(present) if present else None


def _pct_to_ratio(v: float | None) -> float | None:
    return None if v is None else v / 100.0


def _gpu_aggregates(
    all_ws: Sequence[Window], evaluable: Sequence[Window], active: Sequence[Window]
) -> tuple[GpuAggregate, ...]:
    latest = next((w for w in reversed(all_ws) if w.gpus), None)
    if latest is None:
        return ()
    # State gauges describe the device now: the latest window with GPU data, which is the last
    # evaluable window whenever vLLM answers. Peaks are taken over evaluable windows (all windows
    # when none is evaluable) and never fall below the current value.
    peak_ws = evaluable or all_ws

    def per_gpu(ws: Sequence[Window]) -> dict[int, list[tuple[Window, GpuWindow]]]:
        """Each GPU's windows, in one pass (not one pass per GPU)."""
        out: dict[int, list[tuple[Window, GpuWindow]]] = {}
        for w in ws:
            for g in w.gpus:
                out.setdefault(g.index, []).append((w, g))
        return out

    def weighted(
        pairs: list[tuple[Window, GpuWindow]], get: Callable[[GpuWindow], float | None]
    ) -> float | None:
        num = den = 0.0
        for w, g in pairs:
            v = get(g)
            span = w.end - w.start
            if v is not None and span > 0:
                num += v * span
                den += span
        return num / den if den > 0 else None

    out = []
    active_by_gpu, peaks_by_gpu = per_gpu(active), per_gpu(peak_ws)
    for now in (g for g in latest.gpus if g.in_last_poll):  # a vanished GPU is not current
        act = active_by_gpu.get(now.index, [])
        peaks = peaks_by_gpu.get(now.index, [])
        energy = [(g.energy_joules, w.end - w.start) for w, g in act if g.energy_joules is not None]
        out.append(
            GpuAggregate(
                index=now.index,
                uuid=now.uuid,
                name=now.name,
                util_ratio=_pct_to_ratio(weighted(act, lambda g: g.util_pct)),
                mem_util_ratio=_pct_to_ratio(weighted(act, lambda g: g.mem_util_pct)),
                power_watts=weighted(act, lambda g: g.power_watts),
                power_limit_watts=now.power_limit_watts,
                mem_used_bytes=now.mem_used_bytes,
                mem_used_peak_bytes=_peak(
                    [g.mem_used_peak_bytes for _, g in peaks], now.mem_used_bytes
                ),
                mem_total_bytes=now.mem_total_bytes,
                temperature_c=now.temperature_c,
                temperature_peak_c=_peak(
                    [g.temperature_peak_c for _, g in peaks], now.temperature_c
                ),
                sm_clock_hz=None if now.sm_clock_mhz is None else now.sm_clock_mhz * 1e6,
                dram_bw_util_ratio=_pct_to_ratio(weighted(act, lambda g: g.dram_bw_util_pct)),
                energy_joules=sum(e for e, _ in energy) if energy else None,
                energy_seconds=sum(s for _, s in energy) if energy else None,
            )
        )
    return tuple(out)


def _energy(active: Sequence[Window]) -> tuple[float | None, float | None]:
    """(Σ joules of all GPUs, Σ generated tokens) over active windows where both are exact."""
    joules = toks = 0.0
    for w in active:
        e = [g.energy_joules for g in w.gpus]
        if w.gpus and all(x is not None for x in e) and w.d_generation_tokens is not None:
            joules += sum(x for x in e if x is not None)
            toks += w.d_generation_tokens
    return (joules, toks) if toks > 0 else (None, None)  # no token: no joules per token


def _range(values: Sequence[float | None]) -> tuple[float, float] | None:
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else None


def _span(w: Window) -> float:
    return w.duration if w.duration is not None and w.duration > 0 else 0.0


def _observed_tokens(evaluable: Sequence[Window]) -> tuple[float | None, float]:
    """(Σ generated tokens, Σ seconds) over evaluable windows whose token delta is known."""
    known = [w for w in evaluable if w.d_generation_tokens is not None and _span(w) > 0]
    if not known:
        return None, 0.0
    return sum(w.d_generation_tokens or 0.0 for w in known), sum(_span(w) for w in known)


def aggregate(windows: Sequence[GatedWindow], gpu_hold: float = 0.0) -> Aggregate:
    """Aggregate the horizon, oldest window first.

    GPU figures are fresh while the latest window holds GPU data, or, for a GPU source polled
    less often than windows close (dcgm-exporter refreshes every 30 s), while the latest
    window with GPU data ended at most ``gpu_hold`` seconds before the latest window.
    """
    if not windows:
        return Aggregate()
    all_ws = [w for w, _ in windows]
    evaluable = [w for w, g in windows if g.evaluable]
    active = [w for w, g in windows if g.active]
    last = all_ws[-1]
    last_eval = evaluable[-1] if evaluable else None
    energy_joules, energy_tokens = _energy(active)
    observed_tokens, observed_token_seconds = _observed_tokens(evaluable)
    gpu_fresh = bool(last.gpus) and last.gpu_answered
    if not gpu_fresh and gpu_hold > 0:
        with_gpu = next((w for w in reversed(all_ws) if w.gpus), None)
        gpu_fresh = with_gpu is not None and last.end - with_gpu.end <= gpu_hold
    return Aggregate(
        windows_total=len(all_ws),
        windows_evaluable=len(evaluable),
        windows_active=len(active),
        horizon_start=all_ws[0].start,
        horizon_end=last.end,
        engine_fresh=last.engine_polls > 0 and last.engine_answered,
        gpu_fresh=gpu_fresh,
        model_name=next((w.model_name for w in reversed(all_ws) if w.model_name), None),
        model_names=next((w.model_names for w in reversed(all_ws) if w.model_names), ()),
        serving=(last_eval or last).serving,
        engines=(last_eval or last).engines,
        generation_tps=_weighted(active, lambda w: w.generation_tps),
        generation_tps_range=_range([w.generation_tps for w in active]),
        prompt_tps=_weighted(active, lambda w: w.rate(w.d_prompt_tokens)),
        requests_per_second=_weighted(active, lambda w: w.requests_per_second),
        finished_ratio_by_reason=_shares([w.d_finished_by_reason for w in evaluable]),
        preemptions_per_second=_weighted(active, lambda w: w.preemptions_per_second),
        running=_weighted(evaluable, lambda w: w.running),
        waiting=_weighted(evaluable, lambda w: w.waiting),
        running_active=_weighted(active, lambda w: w.running),
        kv_usage_mean=_weighted(evaluable, lambda w: w.kv_usage),
        # Each window's peak includes its last poll: never below the current value.
        kv_usage_peak=_peak([w.kv_peak for w in evaluable], None),
        prefix_hit_ratio=_ratio_of_sums(
            evaluable, lambda w: w.d_prefix_hits, lambda w: w.d_prefix_queries
        ),
        ttft_mean=_hist_mean(active, lambda w: w.ttft),
        ttft_p99=_hist_p99(active, lambda w: w.ttft),
        tpot_mean=_hist_mean(active, lambda w: w.tpot),
        tpot_p99=_hist_p99(active, lambda w: w.tpot),
        prefill_time_mean=_hist_mean(active, lambda w: w.prefill_time),
        queue_time_mean=_hist_mean(active, lambda w: w.queue_time),
        prompt_tokens_mean=_hist_mean(evaluable, lambda w: w.prompt_len),
        generation_tokens_total=last.generation_tokens_total,
        requests_total=last.requests_total,
        energy_joules=energy_joules,
        energy_tokens=energy_tokens,
        est_flops_per_second=_weighted(active, lambda w: w.rate(w.d_est_flops)),
        est_bytes_per_second=_weighted(active, lambda w: w.rate(w.d_est_bytes)),
        engine_steps_per_second=_weighted(active, lambda w: w.rate(w.d_steps)),
        decode_batch_per_step=_per_step(active),
        observed_seconds=sum(_span(w) for w in evaluable),
        active_seconds=sum(_span(w) for w in active),
        observed_tokens=observed_tokens,
        observed_token_seconds=observed_token_seconds,
        # A GPU source that stopped answering takes every GPU-derived figure with it.
        gpus=_gpu_aggregates(all_ws, evaluable, active) if gpu_fresh else (),
    )
