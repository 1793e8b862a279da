"""How many requests per second the server can take before it breaks a limit (docs/capacity.md).

From the step-time fit (:mod:`exporter.derive.step_fit`) and the horizon's own mix of traffic:
with ``L`` generated tokens per request, Little's law gives the arrival rate that keeps a decode
batch ``B`` running as ``λ(B) = B / (L × step(B))``. Each limit caps the batch:

* ``tpot``: the step time at which TPOT at the 99th percentile reaches ``--slo-tpot`` (the
  percentile is the mean × the horizon's own p99 / mean);
* ``max_num_seqs``: ``--max-num-seqs`` per engine;
* ``kv_cache``: the batch at which the KV cache is full, at the horizon's KV per running request.

Capacity is the smallest of those rates and names its limit; the interval is a block jackknife
over the fit's points. When the evidence cannot carry an answer, nothing is given but a reason
(:data:`REASONS`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.derive.histogram import merge_latest
from exporter.derive.horizon import Aggregate
from exporter.derive.step_fit import StepFit, StepModel
from exporter.derive.window import Window

MIN_POINTS = 30  # a minute of active windows
MIN_BATCH_SPREAD = 1.5  # highest / lowest batch seen
MIN_BINS = 3  # quarter octaves of batch with points
EXTRAPOLATE_AT_MOST = 4.0  # the answer's batch, as a multiple of the highest batch seen
INTERVAL_WIDTH_AT_MOST = 0.6  # (upper - lower) / capacity
MISMATCH_AT_MOST = 0.3  # |predicted / measured step time at today's batch - 1|
OVERLOADED_WAITING = 1.0  # requests waiting, time-weighted over the horizon
CLOSED_LOOP_WINDOWS = 10  # active windows at one running peak that make a fixed concurrency
CLOSED_LOOP_FILL = 0.9  # ... each running at least this share of that peak on average
Z90 = 1.645  # a two-sided 90% interval
P99 = 0.99
RESOLVED_WIDTH = 0.5  # a p99 is read from a bucket at most this wide against its upper bound

LIMITS = ("tpot", "max_num_seqs", "kv_cache")
# Why capacity is withheld, checked in this order; each is a value of the `reason` label.
REASONS: Mapping[str, str] = {
    "overloaded": "requests wait for the scheduler: the load is at or past capacity",
    "tpot_unresolved": (f"the TPOT histogram's buckets cannot place its 99th percentile (it lies "
                        f"in the first bucket, or one wider than {RESOLVED_WIDTH:.0%} of its "
                        f"bound): the TPOT objective cannot be checked"),
    "config_changed": "the configuration changed and the fit starts again: too few windows since",
    "too_few_windows": f"fewer than {MIN_POINTS} active windows with engine steps and TPOT",
    "several_models": "the server serves several models: one fit cannot tell them apart",
    "no_load": "no request finished in the horizon: nothing to scale from",
    "missing_cap": "no --max-num-seqs: the scheduler's cap on the batch is unknown",
    "missing_kv": "the engine does not say how full its KV cache is",
    "no_batch_spread": (f"the batch varied less than {MIN_BATCH_SPREAD:g}x over fewer than "
                        f"{MIN_BINS} quarter octaves: the slope cannot be told"),
    "non_positive_slope": "the step time does not grow with the batch in the fit",
    "model_mismatch": (f"the fit's step time at today's batch is more than "
                       f"{MISMATCH_AT_MOST:.0%} off the measured TPOT"),
    "extrapolating": (f"the answer's batch is more than {EXTRAPOLATE_AT_MOST:g}x the highest "
                      f"batch seen"),
    "interval_too_wide": (f"the 90% interval is wider than {INTERVAL_WIDTH_AT_MOST:.0%} of the "
                          f"answer"),
    "closed_loop": ("a fixed number of clients drives the server (running never moves off one "
                    "peak): its rate follows the server's, so the answer is in concurrency"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mix:
    """The horizon's traffic, as ratios of sums over its evaluable windows."""

    load_rps: float  # requests finished per second
    tokens_per_request: float  # generated
    prefill_per_generated: float  # uncached prompt tokens per generated token
    tail_ratio: float | None  # TPOT p99 / mean, >= 1; None: no TPOT histogram moved
    batch_now: float | None  # generated tokens per engine step
    running_per_batch: float | None  # running requests per decode slot (prefills in flight)
    kv_per_batch: float | None  # share of an engine's KV cache per unit of its batch
    engines: int = 1  # data-parallel engines: each steps its own batch
    closed_loop: bool = False  # a fixed concurrency drives it (see :func:`closed_loop`)


@dataclass(frozen=True, slots=True)
class Capacity:
    """The answer, or why there is none (``withheld``, a key of :data:`REASONS`). Rates are
    requests per second; ``concurrency`` is running requests at capacity."""

    withheld: str | None = None
    requests_per_second: float | None = None
    lower: float | None = None
    upper: float | None = None
    limit: str | None = None
    bounds: Mapping[str, float] = field(default_factory=dict)
    headroom: float | None = None
    concurrency: float | None = None
    load: float | None = None
    model_error: float | None = None  # predicted / measured step time at today's batch - 1
    points: int = 0
    batch_high: float | None = None


def mix(ws: Sequence[Window], agg: Aggregate) -> Mix | None:
    """The traffic of ``ws`` (the horizon's evaluable windows); None when no request finished."""
    timed = [w for w in ws if w.duration and w.d_requests is not None]
    seconds = sum(w.duration or 0.0 for w in timed)
    requests = sum(w.d_requests or 0.0 for w in timed)
    both = [w for w in timed if w.d_generation_tokens is not None]
    done = sum(w.d_requests or 0.0 for w in both)
    gen = sum(w.d_generation_tokens or 0.0 for w in both)
    if seconds <= 0 or requests <= 0 or done <= 0 or gen <= 0:
        return None
    priced = [w for w in ws if w.d_prompt_tokens is not None and w.d_generation_tokens]
    uncached = sum(max(0.0, (w.d_prompt_tokens or 0.0) - (w.d_prefix_hits or 0.0)) for w in priced)
    gen_p = sum(w.d_generation_tokens or 0.0 for w in priced)
    tail = _tail_ratio(ws, agg.tpot_mean)
    batch = agg.decode_batch_per_step  # per engine step: each engine's own batch
    engines = max(1, agg.engines)
    # running is the sum over engines; KV usage the fullest engine's
    per_slot = agg.running_active / (batch * engines) if batch and agg.running_active else None
    return Mix(
        load_rps=requests / seconds,
        tokens_per_request=gen / done,
        prefill_per_generated=uncached / gen_p if gen_p > 0 else 0.0,
        tail_ratio=tail,
        batch_now=batch,
        running_per_batch=per_slot,
        kv_per_batch=_kv_per_batch(ws, engines, per_slot),
        engines=engines,
        closed_loop=closed_loop(ws),
    )


def _tail_ratio(ws: Sequence[Window], mean: float | None) -> float | None:
    """TPOT p99 / mean over the windows where requests finished; None unless the buckets place
    the p99: not in the first bucket (read from 0 up, anything inside it is a guess), nor in one
    wider than :data:`RESOLVED_WIDTH` of its upper bound, nor past the last finite bound."""
    h = merge_latest(t for w in ws if (t := w.tpot) is not None and t.count > 0)
    if h is None or not mean or not h.cumulative[-1] > 0:
        return None
    rank = P99 * h.cumulative[-1]
    b = next(i for i, c in enumerate(h.cumulative) if c >= rank)
    lo, hi = (h.bounds[b - 1] if b else 0.0), h.bounds[b]
    if b == 0 or math.isinf(hi) or hi - lo > RESOLVED_WIDTH * hi:
        return None
    below = h.cumulative[b - 1]
    p99 = lo + (hi - lo) * (rank - below) / (h.cumulative[b] - below)
    return max(1.0, p99 / mean)


def _kv_per_batch(ws: Sequence[Window], engines: int, per_slot: float | None) -> float | None:
    """The share of an engine's KV cache one unit of its decode batch holds: KV usage per
    running request on an engine, over the windows where requests ran (idle windows would
    dilute it), times the running requests per decode slot."""
    busy = [w for w in ws if w.running and w.kv_usage is not None and w.duration]
    kv = sum((w.kv_usage or 0.0) * (w.duration or 0.0) for w in busy)
    running = sum((w.running or 0.0) / engines * (w.duration or 0.0) for w in busy)
    if per_slot is None or kv <= 0 or running <= 0:
        return None
    return kv / running * per_slot


def closed_loop(ws: Sequence[Window]) -> bool:
    """A fixed number of clients, each sending its next request when the last one ends: in at
    least :data:`CLOSED_LOOP_WINDOWS` active windows the running requests peak at one same count
    (2 or more) and stay near it. Open-loop arrivals move the peak from window to window."""
    busy = [w for w in ws if w.running and w.running_peak is not None]
    peaks = {w.running_peak for w in busy}
    if len(busy) < CLOSED_LOOP_WINDOWS or len(peaks) != 1:
        return False
    (n,) = peaks
    return (
        n is not None and n >= 2 and all((w.running or 0.0) >= CLOSED_LOOP_FILL * n for w in busy)
    )


def bounds(
    model: StepModel, m: Mix, tpot_target: float | None, cap: float
) -> dict[str, tuple[float, float]]:
    """Each limit's (decode batch, arrival rate in requests/s) under ``model``; a limit that
    cannot be computed is left out."""
    batches = {"max_num_seqs": cap / (m.running_per_batch or 1.0)}  # per engine
    if m.kv_per_batch:
        batches["kv_cache"] = 1.0 / m.kv_per_batch
    slope = model.slope(m.prefill_per_generated)
    if tpot_target is not None and m.tail_ratio is not None and slope > 0:
        batches["tpot"] = max(0.0, (tpot_target / m.tail_ratio - model.base) / slope)
    out = {}
    for limit, b in batches.items():
        step = model.step_seconds(b, m.prefill_per_generated)
        if step > 0:
            out[limit] = (b, m.engines * b / (m.tokens_per_request * step))
    return out


def _first(reasons: Sequence[tuple[bool, str]]) -> str | None:
    return next((r for bad, r in reasons if bad), None)


def _jackknife_se(f: StepFit, m: Mix, tpot_target: float | None, cap: float) -> float | None:
    """The block jackknife's standard error of the capacity (the smallest bound)."""
    reps = [min(r for _, r in b.values()) for lo in f.leave_outs
            if lo.slope(m.prefill_per_generated) > 0
            and (b := bounds(lo, m, tpot_target, cap))]  # fmt: skip
    g = len(reps)
    if g < 2:
        return None
    mean = sum(reps) / g
    return math.sqrt((g - 1) / g * sum((r - mean) ** 2 for r in reps))


def estimate(
    f: StepFit | None,
    m: Mix | None,
    agg: Aggregate,
    *,
    tpot_target: float | None,
    max_num_seqs: float | None,
    bins: int,
    since_change: bool,
) -> Capacity:
    """Capacity from the fit ``f`` over ``bins`` quarter octaves and the horizon's mix ``m``;
    ``since_change``: the fit's memory was dropped at a configuration change."""
    n = f.points if f else 0
    high = f.batch_high if f else None

    def withheld(reason: str, error: float | None = None) -> Capacity:
        load = m.load_rps if m else None
        return Capacity(reason, load=load, model_error=error, points=n, batch_high=high)

    early = _first([
        (agg.waiting is not None and agg.waiting >= OVERLOADED_WAITING, "overloaded"),
        (n < MIN_POINTS and since_change, "config_changed"),
        (n < MIN_POINTS, "too_few_windows"),
        (len(agg.model_names) > 1, "several_models"),
        (m is None, "no_load"),
        (not max_num_seqs, "missing_cap"),
        (tpot_target is not None and m is not None and m.tail_ratio is None, "tpot_unresolved"),
        (m is None or m.kv_per_batch is None, "missing_kv"),
    ])  # fmt: skip
    if early is not None or f is None or m is None or not max_num_seqs:
        return withheld(early or "too_few_windows")
    model, cap = f.model, max_num_seqs
    error = None
    if m.batch_now is not None and agg.tpot_mean:
        error = model.step_seconds(m.batch_now, m.prefill_per_generated) / agg.tpot_mean - 1.0
    shape = _first([
        (f.batch_high / f.batch_low < MIN_BATCH_SPREAD or bins < MIN_BINS, "no_batch_spread"),
        (model.slope(m.prefill_per_generated) <= 0, "non_positive_slope"),
        (error is not None and abs(error) > MISMATCH_AT_MOST, "model_mismatch"),
    ])  # fmt: skip
    each = bounds(model, m, tpot_target, cap)
    if shape is not None or not each:
        return withheld(shape or "non_positive_slope", error)
    limit = min(each, key=lambda k: each[k][1])
    batch, answer = each[limit]
    se = _jackknife_se(f, m, tpot_target, cap)
    late = _first([
        (batch > EXTRAPOLATE_AT_MOST * f.batch_high, "extrapolating"),
        (se is None or answer <= 0 or 2 * Z90 * se / answer > INTERVAL_WIDTH_AT_MOST,
         "interval_too_wide"),
    ])  # fmt: skip
    if late is not None or se is None:
        return withheld(late or "interval_too_wide", error)
    concurrency = batch * (m.running_per_batch or 1.0) * m.engines
    if m.closed_loop:
        # No arrival rate to scale: the concurrency the limit allows is the answer.
        return Capacity("closed_loop", concurrency=concurrency, load=m.load_rps, model_error=error,
                        points=n, batch_high=high)  # fmt: skip
    return Capacity(
        requests_per_second=answer,
        lower=max(0.0, answer - Z90 * se),
        upper=answer + Z90 * se,
        limit=limit,
        bounds={k: r for k, (_, r) in each.items()},
        headroom=answer - m.load_rps,
        concurrency=concurrency,
        load=m.load_rps,
        model_error=error,
        points=n,
        batch_high=high,
    )
