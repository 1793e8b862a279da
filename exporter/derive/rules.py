"""The five bottleneck rules, evaluated once per evaluable window (SPEC §10).

Each rule answers fired / not fired with the numbers behind the answer, or says why it could not
be evaluated (``skipped``). R4 is a configuration fact, decided from the roofline, not per window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.window import Window

RuleKey = tuple[str, str]  # (rule, variant)
R1: RuleKey = ("R1", "")
R2_MAIN: RuleKey = ("R2", "main")
R2_BACKLOG: RuleKey = ("R2", "backlog")
R3: RuleKey = ("R3", "")
R4: RuleKey = ("R4", "")
R5: RuleKey = ("R5", "")
ALL_RULES: tuple[RuleKey, ...] = (R1, R2_MAIN, R2_BACKLOG, R3, R4, R5)
NAMES: Mapping[RuleKey, str] = {
    R1: "Under-batching",
    R2_MAIN: "KV Cache Pressure",
    R2_BACKLOG: "KV Cache Pressure",
    R3: "Low Prefix Reuse",
    R4: "OOM Risk",
    R5: "Concurrency Saturation",
}


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
}


def _skip(code: str, why: str | None = None) -> RuleResult:
    return RuleResult(False, why or SKIP_REASONS[code], skipped=code)


def kv_capacity_tokens(cache_config: Mapping[str, str]) -> float | None:
    """``kv_cache_size_tokens``, else ``num_gpu_blocks × block_size``; None when unknown.

    >>> kv_capacity_tokens({"num_gpu_blocks": "12", "block_size": "128"})
    1536.0
    """
    try:
        if cache_config.get("kv_cache_size_tokens") not in (None, "", "None"):
            return float(cache_config["kv_cache_size_tokens"])
        return float(cache_config["num_gpu_blocks"]) * float(cache_config["block_size"])
    except (KeyError, ValueError):
        return None


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
    if w.gpu_observed_at is None or w.vllm_observed_at is None:
        return None
    return abs(w.gpu_observed_at - w.vllm_observed_at)


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
    capacity = kv_capacity_tokens(w.cache_config)
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
    disabled = w.cache_config.get("enable_prefix_caching") == "False"
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
    return RuleResult(fired, why if fired else f"not triggered ({why})")


def evaluate_window(w: Window, max_num_seqs: float | None) -> dict[RuleKey, RuleResult]:
    """R1, both R2 paths, R3 and R5 for one evaluable window."""
    main = _r2_main(w)
    return {
        R1: _r1(w, max_num_seqs),
        R2_MAIN: main,
        R2_BACKLOG: _r2_backlog(w, max_num_seqs, main),
        R3: _r3(w),
        R5: _r5(w, max_num_seqs),
    }
