"""How many requests per second the server can take before it breaks a limit (docs/capacity.md).

From the step-time fit (:mod:`exporter.derive.step_fit`) and the horizon's own mix of traffic:
with ``L`` generated tokens per request, Little's law gives the arrival rate that keeps a decode
batch ``B`` running as ``λ(B) = B / (L × step(B))``. Each limit caps the batch:

* ``tpot``: the batch at which TPOT at the 99th percentile reaches ``--slo-tpot``. A request's
  TPOT is the mean step time over its life, so its spread is the spread of the batch it lived
  beside: for Poisson arrivals a request that overlaps others for its whole life sees a mean
  batch whose variance is 2/3 of the batch (the decode part) and whose prefill interruptions
  vary as their count does; both scale with the arrivals' measured index of dispersion. The
  p99 is the fit's mean step time plus 2.33 of those standard deviations;
* ``ttft``: the batch at which TTFT at the 99th percentile reaches ``--slo-ttft``: today's TTFT
  p99 stretched with the step time, plus the wait for a slot. Requests hold one of the
  ``--max-num-seqs`` (or KV-bound) slots for ``L`` steps; the wait's tail is an M/M/c queue's
  (Erlang C), scaled by Kingman's ``(dispersion + service variability) / 2``: the arrivals'
  index of dispersion and the squared coefficient of variation of the requests' lengths (1,
  an exponential's, where the engine does not say);
* ``max_num_seqs``: ``--max-num-seqs`` per engine;
* ``kv_cache``: the batch at which the KV cache is full, at the horizon's KV per running request.

Capacity is the smallest of those rates and names its limit; the interval is a block jackknife
over the fit's points, widened by the self-check's error. When the evidence cannot carry an
answer, nothing is given but a reason (:data:`REASONS`). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from exporter.derive.histogram import HistDelta, merge_latest, share_above, squared_cv
from exporter.derive.horizon import Aggregate
from exporter.derive.step_fit import StepFit, StepModel, StepPoint, point
from exporter.derive.window import Window

MIN_POINTS = 30  # a minute of active windows
MIN_BATCH_SPREAD = 1.5  # highest / lowest batch seen
MIN_BINS = 3  # quarter octaves of batch with points
EXTRAPOLATE_AT_MOST = 4.0  # the answer's batch, as a multiple of the highest batch seen
INTERVAL_WIDTH_AT_MOST = 0.6  # (upper - lower) / capacity
MISMATCH_AT_MOST = 0.3  # |predicted / measured step time at today's batch - 1|
OVERLOADED_WAITING = 1.0  # requests waiting, time-weighted over the horizon
CLOSED_LOOP_WINDOWS = 10  # active windows at one running peak that make a fixed concurrency
CLOSED_LOOP_FILL = 0.8  # ... running at least this share of that peak on average
Z90 = 1.645  # a two-sided 90% interval
Z99 = 2.326  # the 99th percentile of a normal, in standard deviations
P99 = 0.99
OVERLAP = 2.0 / 3.0  # variance of the mean batch over a request's life, per unit of batch
STEADY_Z = 3.0  # the horizon's halves differ in load by this many standard errors ...
STEADY_CHANGE = 0.25  # ... and by more than this share: not steady

LIMITS = ("tpot", "ttft", "max_num_seqs", "kv_cache")
# Why capacity is withheld, checked in this order; each is a value of the `reason` label.
REASONS: Mapping[str, str] = {
    "overloaded": ("requests wait for the scheduler, more than 1% of them already miss an "
                   "objective, or the load is past the capacity computed for it"),
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
    "not_steady": (f"the load of the horizon's two halves differs by more than "
                   f"{STEADY_CHANGE:.0%} (and {STEADY_Z:g} standard errors): no one mix to scale"),
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
    dispersion: float  # the arrivals' variance / mean per window, 1 for Poisson (measured)
    steady: bool  # the horizon's two halves carry the same load (see :func:`steady`)
    ttft_p99: float | None  # today's TTFT p99, seconds (None: no TTFT histogram moved)
    batch_now: float | None  # generated tokens per engine step
    running_per_batch: float | None  # running requests per decode slot (prefills in flight)
    kv_per_batch: float | None  # share of an engine's KV cache per unit of its batch
    engines: int = 1  # data-parallel engines: each steps its own batch
    closed_loop: float | None = None  # the running count fixed clients hold (:func:`closed_loop`)
    # How much the time a request holds its slot varies: the squared coefficient of variation
    # of its generated tokens (None: unknown, taken as 1, an exponential's)
    service_cv2: float | None = None
    # The horizon's TPOT and TTFT observations: an objective already broken is no capacity left
    tpot: HistDelta | None = None
    ttft: HistDelta | None = None
    # The horizon's own fit points, each with its requests finished: the self-check
    recent: tuple[tuple[StepPoint, float], ...] = ()


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
    dispersion: float | None = None  # the arrivals' (Mix.dispersion), while there is a mix
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
    # As the step fit reads them: what the engine's steps made.
    priced = [w for w in ws if w.d_step_prefilled is not None and w.d_step_generated]
    uncached = sum(max(0.0, w.d_step_prefilled or 0.0) for w in priced)
    gen_p = sum(w.d_step_generated or 0.0 for w in priced)
    engines = max(1, agg.engines)
    batch, per_slot = _batch(ws, engines)
    return Mix(
        load_rps=requests / seconds,
        tokens_per_request=gen / done,
        prefill_per_generated=uncached / gen_p if gen_p > 0 else 0.0,
        ttft_p99=agg.ttft_p99,
        dispersion=dispersion(timed),
        steady=steady(timed),
        batch_now=batch,
        running_per_batch=per_slot,
        kv_per_batch=_kv_per_batch(ws, engines, per_slot),
        engines=engines,
        closed_loop=closed_loop(ws),
        service_cv2=_service_cv2(ws),
        tpot=merge_latest(h for w in ws if (h := w.tpot) is not None and h.count > 0),
        ttft=merge_latest(h for w in ws if (h := w.ttft) is not None and h.count > 0),
        recent=tuple(
            (p, w.tpot.count) for w in ws if w.tpot is not None and (p := point(w)) is not None
        ),  # fmt: skip
    )


def broken(m: Mix, tpot_target: float | None, ttft_target: float | None) -> bool:
    """Today's load already breaks an objective: more than 1% of the horizon's requests were
    certainly slower than it (in buckets that start past it; the bucket that holds it is not
    counted, so a coarse bucket never calls it)."""
    return any(
        h is not None and target is not None and (share_above(h, target) or 0.0) > 1 - P99
        for h, target in ((m.tpot, tpot_target), (m.ttft, ttft_target))
    )


def _service_cv2(ws: Sequence[Window]) -> float | None:
    """The squared coefficient of variation of the requests' generated tokens over ``ws`` (a
    request holds its slot for as many steps): from the output-length histogram's buckets."""
    merged = merge_latest(h for w in ws if (h := w.output_len) is not None and h.count > 0)
    return None if merged is None else squared_cv(merged)


def _arrivals(w: Window) -> float:
    """Requests admitted in the window: first tokens given (TTFT observations), else finished."""
    return w.ttft.count if w.ttft is not None else (w.d_requests or 0.0)


def dispersion(ws: Sequence[Window]) -> float:
    """The arrivals' index of dispersion over windows of unequal length: Pearson's χ² of the
    counts against one rate, over its degrees of freedom. Poisson gives 1, bursts more; a load
    that moved within the horizon adds to it too, which only widens the tail. Fewer than two
    windows, or none admitted: 1."""
    seconds = sum(w.duration or 0.0 for w in ws)
    counts = [(_arrivals(w), w.duration or 0.0) for w in ws]
    total = sum(c for c, _ in counts)
    if len(counts) < 2 or seconds <= 0 or total <= 0:
        return 1.0
    rate = total / seconds
    chi2 = sum((c - rate * d) ** 2 / (rate * d) for c, d in counts if d > 0)
    return chi2 / (len(counts) - 1)


def steady(ws: Sequence[Window]) -> bool:
    """The first and the second half of the horizon (split at its middle in time) carry one
    load: their rates differ by less than :data:`STEADY_CHANGE` or than :data:`STEADY_Z`
    standard errors of Poisson counts."""
    if len(ws) < 2:
        return True
    middle = (ws[0].start + ws[-1].end) / 2
    halves = ([w for w in ws if w.end <= middle], [w for w in ws if w.end > middle])
    n = [sum(_arrivals(w) for w in h) for h in halves]
    d = [sum(w.duration or 0.0 for w in h) for h in halves]
    if min(d) <= 0:
        return True
    r = [n[i] / d[i] for i in (0, 1)]
    se = math.sqrt(n[0] / d[0] ** 2 + n[1] / d[1] ** 2)
    change = abs(r[0] - r[1]) / max(r) if max(r) > 0 else 0.0
    return not (change > STEADY_CHANGE and abs(r[0] - r[1]) > STEADY_Z * se)


def tpot_p99(model: StepModel, m: Mix, batch: float) -> float:
    """The 99th percentile of TPOT at a mean decode ``batch`` (see the module's docstring)."""
    return model.step_seconds(batch, m.prefill_per_generated) + Z99 * math.sqrt(
        _tail_variance(model, m) * batch
    )


def _tail_variance(model: StepModel, m: Mix) -> float:
    """Variance of a request's mean step time per unit of batch: the batch's overlap part and
    the prefill interruptions' count part, scaled by the arrivals' dispersion (never below
    Poisson's: smoother arrivals than Poisson are not counted on)."""
    decode = OVERLAP * model.per_sequence**2
    prefill = (model.per_prefill_token * m.prefill_per_generated) ** 2
    return max(1.0, m.dispersion) * (decode + prefill)


def _tpot_batch(model: StepModel, m: Mix, target: float) -> float:
    """The batch at which :func:`tpot_p99` reaches ``target``: with ``x² = batch``, the root of
    ``s x² + z √v x + (a − target) = 0``; 0 when the base step alone exceeds it."""
    s = model.slope(m.prefill_per_generated)
    k = Z99 * math.sqrt(_tail_variance(model, m))
    room = target - model.base
    if room <= 0:
        return 0.0
    x = (-k + math.sqrt(k * k + 4 * s * room)) / (2 * s)
    return x * x


def _batch(ws: Sequence[Window], engines: int) -> tuple[float | None, float | None]:
    """Today's decode batch per engine step, and the running requests per decode slot: both
    weighted by time over the windows where the engine stepped. (A ratio of the horizon's sums
    of tokens and steps would weigh each window by its steps, and short steps at small batches
    are many: against time-weighted running requests it made a 1.0 ratio read 1.25.)"""
    busy = [w for w in ws if w.d_steps and w.d_step_generated and w.duration
            and w.running is not None]  # fmt: skip
    seconds = sum(w.duration or 0.0 for w in busy)
    batch = sum((w.d_step_generated or 0.0) / (w.d_steps or 1.0) * (w.duration or 0.0)
                for w in busy)  # fmt: skip
    running = sum((w.running or 0.0) * (w.duration or 0.0) for w in busy)
    if seconds <= 0 or batch <= 0:
        return None, None
    # running is the sum over engines; each engine steps its own batch
    return batch / seconds, (running / (batch * engines) if running > 0 else None)


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


def closed_loop(ws: Sequence[Window]) -> float | None:
    """The running requests a fixed number of clients holds, each sending its next request when
    the last one ends; None when arrivals are open. In at least :data:`CLOSED_LOOP_WINDOWS`
    active windows the running requests peak at one same count (2 or more) and average at
    least :data:`CLOSED_LOOP_FILL` of it (a client's own turn between requests leaves a slot
    empty for a moment: on a real vLLM, 16 clients averaged 12.9 to 16). Open-loop arrivals move
    the peak from window to window; a server held at its cap holds one peak too, so the cap
    itself is told apart by :func:`estimate`."""
    busy = [w for w in ws if w.running and w.running_peak is not None and w.duration]
    peaks = {w.running_peak for w in busy}
    if len(busy) < CLOSED_LOOP_WINDOWS or len(peaks) != 1:
        return None
    (n,) = peaks
    seconds = sum(w.duration or 0.0 for w in busy)
    mean = sum((w.running or 0.0) * (w.duration or 0.0) for w in busy) / seconds
    return n if n is not None and n >= 2 and mean >= CLOSED_LOOP_FILL * n else None


def erlang_c(c: int, a: float) -> float:
    """The chance an arrival waits in an M/M/c queue offered ``a`` erlangs (Erlang B by its
    stable recursion, then C); 1 at or past saturation."""
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


def ttft_p99(model: StepModel, m: Mix, batch: float, slots: float) -> float | None:
    """TTFT's 99th percentile at a mean decode ``batch`` per engine with ``slots`` running
    requests per engine (see the module's docstring); None without today's TTFT or batch."""
    now = model.step_seconds(m.batch_now or 0.0, m.prefill_per_generated)
    if m.ttft_p99 is None or not m.batch_now or now <= 0:
        return None  # a fit whose step at today's batch is not positive cannot stretch it
    step = model.step_seconds(batch, m.prefill_per_generated)
    unqueued = m.ttft_p99 * step / now
    per_slot = m.running_per_batch or 1.0
    c = max(1, math.floor(slots * m.engines))
    a = batch * per_slot * m.engines  # running requests: the offered erlangs
    hold = per_slot * m.tokens_per_request * step  # seconds a request holds its slot
    waits = erlang_c(c, a)
    if waits >= 1.0:
        return math.inf
    wait = hold * math.log(waits / (1 - P99)) / (c - a) if waits > 1 - P99 else 0.0
    service = 1.0 if m.service_cv2 is None else m.service_cv2
    return unqueued + (max(1.0, m.dispersion) + service) / 2.0 * wait


def _ttft_batch(model: StepModel, m: Mix, target: float, slots: float, high: float) -> float:
    """The largest batch up to ``high`` whose :func:`ttft_p99` stays within ``target``
    (bisection: it grows with the batch)."""
    first = ttft_p99(model, m, 0.0, slots)
    if first is None or first > target:
        return 0.0
    lo, hi = 0.0, high
    for _ in range(40):
        mid = (lo + hi) / 2
        t = ttft_p99(model, m, mid, slots)
        lo, hi = (mid, hi) if t is not None and t <= target else (lo, mid)
    return lo


def bounds(
    model: StepModel,
    m: Mix,
    tpot_target: float | None,
    cap: float,
    ttft_target: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Each limit's (decode batch, arrival rate in requests/s) under ``model``; a limit that
    cannot be computed is left out."""
    batches = {"max_num_seqs": cap / (m.running_per_batch or 1.0)}  # per engine
    if m.kv_per_batch:
        batches["kv_cache"] = 1.0 / m.kv_per_batch
    slope = model.slope(m.prefill_per_generated)
    if tpot_target is not None and slope > 0:
        batches["tpot"] = _tpot_batch(model, m, tpot_target)
    if ttft_target is not None and m.ttft_p99 is not None and m.batch_now and slope > 0:
        # Slots in running requests: the cap, or fewer where the KV cache fills first.
        slots_batch = min(batches["max_num_seqs"], batches.get("kv_cache", math.inf))
        slots = slots_batch * (m.running_per_batch or 1.0)
        batches["ttft"] = _ttft_batch(model, m, ttft_target, slots, slots_batch)
    out = {}
    for limit, b in batches.items():
        step = model.step_seconds(b, m.prefill_per_generated)
        if step > 0:
            out[limit] = (b, m.engines * b / (m.tokens_per_request * step))
    return out


def self_check(model: StepModel, m: Mix) -> float | None:
    """The fit's mean TPOT over the horizon against the measured one, minus 1: each window's
    requests at the fit's step time for that window's own batch and prefill (the same
    weighing as the measured mean's, request by request)."""
    predicted = sum(model.at(p) * n for p, n in m.recent)
    measured = sum(p.step_seconds * n for p, n in m.recent)
    return predicted / measured - 1.0 if measured > 0 else None


def _first(reasons: Sequence[tuple[bool, str]]) -> str | None:
    return next((r for bad, r in reasons if bad), None)


def _jackknife_se(
    f: StepFit, m: Mix, tpot_target: float | None, cap: float, ttft_target: float | None
) -> float | None:
    """The block jackknife's standard error of the capacity (the smallest bound)."""
    reps = [min(r for _, r in b.values()) for lo in f.leave_outs
            if lo.slope(m.prefill_per_generated) > 0
            and (b := bounds(lo, m, tpot_target, cap, ttft_target))]  # fmt: skip
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
    ttft_target: float | None = None,
    max_num_seqs: float | None,
    bins: int,
    since_change: bool,
) -> Capacity:
    """Capacity from the fit ``f`` over ``bins`` quarter octaves and the horizon's mix ``m``;
    ``since_change``: the fit's memory was dropped at a configuration change."""
    n = f.points if f else 0
    high = f.batch_high if f else None

    def withheld(reason: str, error: float | None = None) -> Capacity:
        load, dispersion = (m.load_rps, m.dispersion) if m else (None, None)
        return Capacity(reason, load=load, model_error=error, points=n, batch_high=high,
                        dispersion=dispersion)  # fmt: skip

    early = _first([
        (agg.waiting is not None and agg.waiting >= OVERLOADED_WAITING, "overloaded"),
        (m is not None and broken(m, tpot_target, ttft_target), "overloaded"),
        (n < MIN_POINTS and since_change, "config_changed"),
        (n < MIN_POINTS, "too_few_windows"),
        (len(agg.model_names) > 1, "several_models"),
        (m is None, "no_load"),
        (not max_num_seqs, "missing_cap"),
        (m is None or m.kv_per_batch is None, "missing_kv"),
    ])  # fmt: skip
    if early is not None or f is None or m is None or not max_num_seqs:
        return withheld(early or "too_few_windows")
    model, cap = f.model, max_num_seqs
    error = self_check(model, m)
    shape = _first([
        (f.batch_high / f.batch_low < MIN_BATCH_SPREAD or bins < MIN_BINS, "no_batch_spread"),
        (model.slope(m.prefill_per_generated) <= 0, "non_positive_slope"),
        (error is not None and abs(error) > MISMATCH_AT_MOST, "model_mismatch"),
    ])  # fmt: skip
    each = bounds(model, m, tpot_target, cap, ttft_target)
    if shape is not None or not each:
        return withheld(shape or "non_positive_slope", error)
    limit = min(each, key=lambda k: each[k][1])
    batch, answer = each[limit]
    se = _jackknife_se(f, m, tpot_target, cap, ttft_target)
    if se is not None and error is not None:
        # The jackknife sees only how the fit moves with its windows; a fit off at today's
        # load by the self-check's error may be off by as much at capacity.
        se = math.hypot(se, error * answer)
    late = _first([
        # Past capacity the objectives break before any queue forms (a TPOT limit): the
        # load's own answer says so, even while the horizon is still moving to it.
        (m.load_rps >= answer, "overloaded"),
        (not m.steady, "not_steady"),
        (batch > EXTRAPOLATE_AT_MOST * f.batch_high, "extrapolating"),
        (se is None or answer <= 0 or 2 * Z90 * se / answer > INTERVAL_WIDTH_AT_MOST,
         "interval_too_wide"),
    ])  # fmt: skip
    if late is not None or se is None:
        return withheld(late or "interval_too_wide", error)
    concurrency = batch * (m.running_per_batch or 1.0) * m.engines
    if m.closed_loop is not None and m.closed_loop < cap * m.engines:
        # No arrival rate to scale: the concurrency the limit allows is the answer.
        return Capacity("closed_loop", concurrency=concurrency, load=m.load_rps, model_error=error,
                        points=n, batch_high=high, dispersion=m.dispersion)  # fmt: skip
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
        dispersion=m.dispersion,
    )
