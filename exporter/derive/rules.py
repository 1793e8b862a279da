"""The five bottleneck rules (docs/rules.md), each in one place: :data:`RULES`.

A rule's entry holds everything about it: its name, issue group and documentation anchor, its
condition (per evaluable window, or a configuration fact such as R4's), when it is significant
earlier than the common persistence gate, and its advice (the fix as a code and in words, and
the evidence from the horizon). Its thresholds are in :mod:`~exporter.derive.thresholds`. The
order of :data:`RULES` is the tie order between issues. Adding a rule: its thresholds, its
functions and one entry here, and its section in docs/rules.md.

Each window condition answers fired / not fired with the numbers behind the answer, or says why
it could not be evaluated (``skipped``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.rule_advice import (
    Advice,
    Horizon,
    r1_advice,
    r2_backlog_advice,
    r2_main_advice,
    r3_advice,
    r4_advice,
    r5_advice,
    scheduler_cap,
)
from exporter.derive.window import Window

RuleKey = tuple[str, str]  # (rule, variant)
R1: RuleKey = ("R1", "")
R2_MAIN: RuleKey = ("R2", "main")
R2_BACKLOG: RuleKey = ("R2", "backlog")
R3: RuleKey = ("R3", "")
R4: RuleKey = ("R4", "")
R5: RuleKey = ("R5", "")


@dataclass(frozen=True, slots=True)
class RuleResult:
    fired: bool
    why: str = ""  # the numbers: why it fired, or why not (or why it was skipped)
    skipped: str | None = None  # a short code (SKIP_REASONS) when the rule could not be evaluated
    preempting: bool = False  # R2 main: preemptions in this window
    kv_critical: bool = False  # R2 main: KV peak ≥ 95%


# Why a rule could not be evaluated: short fixed codes (exported as a label), each with the
# sentence diagnose shows. A code never carries a live number, so its series does not churn.
SKIP_REASONS: Mapping[str, str] = {
    "max_num_seqs_unknown": "max_num_seqs unknown: pass --max-num-seqs",
    "no_waiting_count": "vLLM reported no waiting count",
    "no_prefill_delta": "no prefill-time delta in this window (reset or missing histogram)",
    "source_skew": "GPU and vLLM readings more than 1 s apart",
    "no_kv_data": "no KV usage or preemption data",
    "kv_capacity_unknown": "KV capacity unknown (no cache_config_info)",
    "no_backlog_inputs": "no KV usage, waiting count or prompt length",
    "not_in_catalog": "needs the GPU and the model in the catalog, and GPU memory data",
    "parallelism_mismatch": "TP x PP x DP disagrees with the GPUs seen: weights per GPU unknown",
}


def _skip(code: str, why: str | None = None) -> RuleResult:
    return RuleResult(False, why or SKIP_REASONS[code], skipped=code)


def _queue_ratio(running: float, waiting: float) -> float:
    total = running + waiting
    return waiting / total if total > 0 else 0.0


def _r1(w: Window, mns: float | None) -> RuleResult:
    if mns is None:
        return _skip("max_num_seqs_unknown")
    running, waiting = w.running or 0.0, w.waiting
    if waiting is None:
        return _skip("no_waiting_count")
    if w.prefill_time is None or w.duration is None:
        return _skip("no_prefill_delta")
    occ = running / mns
    prefill = w.prefill_time.sum
    share = prefill / w.duration
    if running <= 0:
        return RuleResult(False, "not triggered (no running requests)")
    if occ >= T.R1_OCCUPANCY_BELOW:
        return RuleResult(False, f"not triggered (occupancy {occ:.0%})")
    if waiting >= T.R1_WAITING_BELOW:
        return RuleResult(False, f"not triggered ({waiting:.1f} waiting)")
    if share >= T.R1_PREFILL_SHARE_BELOW or prefill >= T.R1_PREFILL_SECONDS_BELOW:
        return RuleResult(False, f"not triggered (prefill saturated at {share:.0%})")
    return RuleResult(
        True, f"occupancy {occ:.0%} ({running:.1f} of {mns:g}), {waiting:.1f} waiting"
    )


def _skew(w: Window) -> float | None:
    if w.gpu_observed_at is None or w.engine_observed_at is None:
        return None
    return abs(w.gpu_observed_at - w.engine_observed_at)


def _vram_ratio(w: Window) -> float | None:
    ratios = [
        g.mem_used_peak_bytes / g.mem_total_bytes
        for g in w.gpus
        if g.mem_used_peak_bytes is not None and g.mem_total_bytes
    ]
    return max(ratios) if ratios else None


def _r2_main(w: Window) -> RuleResult:
    skew = _skew(w)
    if skew is not None and skew > T.R2_MAX_SOURCE_SKEW_SECONDS:
        return _skip("source_skew", f"GPU and vLLM readings {skew:.1f}s apart")
    if w.kv_peak is None and w.d_preemptions is None:
        return _skip("no_kv_data")
    peak = w.kv_peak or 0.0
    preempting = (w.d_preemptions or 0.0) > 0
    vram = _vram_ratio(w)
    facts = [f"KV peak {peak:.0%}"]
    if preempting:
        facts.append(f"{w.d_preemptions:g} preemptions")
    if vram is not None and vram >= T.R2_VRAM_CORROBORATES_AT:
        facts.append(f"VRAM {vram:.0%}")
    fired = peak >= T.R2_KV_PEAK_AT_LEAST or preempting
    return RuleResult(
        fired,
        ", ".join(facts) if fired else f"not triggered (KV peak {peak:.0%}, no preemptions)",
        preempting=preempting,
        kv_critical=peak >= T.R2_KV_CRITICAL_AT_LEAST,
    )


def _r2_backlog(w: Window, mns: float | None, main: RuleResult) -> RuleResult:
    skew = _skew(w)
    if skew is not None and skew > T.R2_MAX_SOURCE_SKEW_SECONDS:
        return _skip("source_skew", f"GPU and vLLM readings {skew:.1f}s apart")
    if mns is None:
        return _skip("max_num_seqs_unknown")
    capacity = w.serving.kv_capacity_tokens
    if capacity is None:
        return _skip("kv_capacity_unknown")
    if w.kv_usage is None or w.waiting is None or w.prompt_len_mean is None:
        return _skip("no_backlog_inputs")
    running, waiting = w.running or 0.0, w.waiting
    ratio = _queue_ratio(running, waiting)
    free = capacity * (1.0 - w.kv_usage)
    demand = waiting * w.prompt_len_mean
    why = (
        f"queue ratio {ratio:.0%}; free KV {free:,.0f} tokens vs demand {demand:,.0f} "
        f"({waiting:.1f} waiting x {w.prompt_len_mean:.0f} prompt tokens); "
        f"running {running:.1f} of {mns:g}"
    )
    fired = ratio >= T.R2_BACKLOG_QUEUE_RATIO_AT_LEAST and free < demand and running < mns
    if fired and main.fired:
        return RuleResult(False, "suppressed by the main path")
    return RuleResult(fired, why if fired else f"not triggered ({why})")


def _r3(w: Window) -> RuleResult:
    disabled = w.serving.prefix_caching is False
    hit = 0.0 if disabled else w.prefix_hit_ratio
    prompt, rate, running = w.prompt_len_mean, w.requests_per_second, w.running or 0.0
    if hit is None or prompt is None or rate is None:
        return RuleResult(False, "not triggered (no prefix-cache queries or finished requests)")
    why = (
        f"prefix hit rate {hit:.0%}{' (prefix caching disabled)' if disabled else ''}, "
        f"{prompt:.0f} prompt tokens, {rate:.1f} req/s, {running:.1f} running"
    )
    fired = (
        hit < T.R3_HIT_RATE_BELOW
        and prompt >= T.R3_PROMPT_TOKENS_AT_LEAST
        and rate >= T.R3_REQUEST_RATE_AT_LEAST
        and running > T.R3_RUNNING_ABOVE
    )
    return RuleResult(fired, why if fired else f"not triggered ({why})")


def _r5(w: Window, mns: float | None) -> RuleResult:
    if mns is None:
        return _skip("max_num_seqs_unknown")
    if w.waiting is None:
        return _skip("no_waiting_count")
    running, waiting = w.running or 0.0, w.waiting
    ratio = _queue_ratio(running, waiting)
    why = f"running {running:.1f} of {mns:g}, {waiting:.1f} waiting (queue ratio {ratio:.0%})"
    fired = (
        abs(running - mns) <= T.R5_CAP_DISTANCE_AT_MOST
        and waiting >= T.R5_WAITING_AT_LEAST
        and ratio >= T.R5_QUEUE_RATIO_AT_LEAST
    )
    if not fired and w.waiting_capacity is not None and w.running_peak is not None:
        # Short requests free their slots between engine steps, so the window's mean of running
        # sits below the cap while every freed slot is taken at once. Where vLLM says how many
        # wait for the scheduler's capacity, the cap reached in the window and that queue are the
        # evidence (requests waiting for anything else, "deferred", do not count).
        capacity = w.waiting_capacity
        cap_ratio = _queue_ratio(running, capacity)
        fired = (
            w.running_peak >= mns
            and capacity >= T.R5_WAITING_AT_LEAST
            and cap_ratio >= T.R5_QUEUE_RATIO_AT_LEAST
        )
        why = (
            f"running {running:.1f} of {mns:g} (peak {w.running_peak:g}), {capacity:.1f} "
            f"waiting for capacity of {waiting:.1f} (queue ratio {cap_ratio:.0%})"
        )
    return RuleResult(fired, why if fired else f"not triggered ({why})")


def _r4_fact(a: Assessment | None) -> RuleResult:
    """OOM risk is a configuration fact: a GPU whose KV headroom is below zero."""
    if a is not None and not a.resolved.parallelism.consistent:
        return _skip("parallelism_mismatch")
    kv = a.roofline.kv_headroom_bytes if a else ()
    if not kv:
        return _skip("not_in_catalog")
    firing = any(v < 0 for _, v in kv)
    return RuleResult(firing, "KV headroom below zero" if firing else "not triggered")


def _r2_early(fired: Sequence[RuleResult]) -> bool:
    """R2's main path is significant at once on preemptions, or on KV >= 95% twice."""
    return (
        sum(r.preempting for r in fired) >= T.R2_PREEMPTION_WINDOWS
        or sum(r.kv_critical for r in fired) >= T.R2_CRITICAL_WINDOWS
    )


# --- the registry -----------------------------------------------------------------------------

WindowCondition = Callable[[Window, float | None, Mapping[RuleKey, RuleResult]], RuleResult]


@dataclass(frozen=True, slots=True)
class Rule:
    """Everything about one rule (or one of R2's two paths)."""

    key: RuleKey
    name: str
    group: str  # the issue group: one primary per group
    anchor: str  # its section in docs/rules.md
    advice: Callable[[Horizon], Advice]
    window: WindowCondition | None = None  # evaluated per evaluable window
    fact: Callable[[Assessment | None], RuleResult] | None = None  # a configuration fact
    early: Callable[[Sequence[RuleResult]], bool] | None = None  # significant before the gate


# In tie order: between issues of equal score, the earlier one is the primary.
RULES: tuple[Rule, ...] = (
    Rule(R4, "OOM Risk", "memory", "r4", r4_advice, fact=_r4_fact),
    Rule(R2_MAIN, "KV Cache Pressure", "memory", "r2", r2_main_advice,
         window=lambda w, mns, done: _r2_main(w), early=_r2_early),
    Rule(R2_BACKLOG, "KV Cache Pressure", "memory", "r2", r2_backlog_advice,
         window=lambda w, mns, done: _r2_backlog(w, mns, done[R2_MAIN])),
    Rule(R5, "Concurrency Saturation", "scheduling", "r5", r5_advice,
         window=lambda w, mns, done: _r5(w, mns)),
    Rule(R1, "Under-batching", "scheduling", "r1", r1_advice,
         window=lambda w, mns, done: _r1(w, mns)),
    Rule(R3, "Low Prefix Reuse", "cache_reuse", "r3", r3_advice,
         window=lambda w, mns, done: _r3(w)),
)  # fmt: skip
BY_KEY: Mapping[RuleKey, Rule] = {r.key: r for r in RULES}
# Display order: R1 … R5, R2's main path before its backlog path.
ALL_RULES: tuple[RuleKey, ...] = tuple(sorted(BY_KEY, key=lambda k: (k[0], k[1] != "main")))
NAMES: Mapping[RuleKey, str] = {r.key: r.name for r in RULES}


def evaluate_window(w: Window, max_num_seqs: float | None) -> dict[RuleKey, RuleResult]:
    """Every window condition for one evaluable window (R2's backlog path sees the main's)."""
    done: dict[RuleKey, RuleResult] = {}
    cap = scheduler_cap(max_num_seqs, w.engines)
    for rule in RULES:
        if rule.window is not None:
            done[rule.key] = rule.window(w, cap, done)
    return {k: done[k] for k in ALL_RULES if k in done}
