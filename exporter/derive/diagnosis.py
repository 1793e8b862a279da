"""Persistence, R4, issue groups and fixes: from per-window rule results to a diagnosis.

A rule that fired once is noise: a recommendation is significant only when the rule fired in at
least 3 evaluable windows and in at least 25% of the horizon's evaluable windows. R2's main path
has two exceptions (any window with preemptions; KV ≥ 95% in 2 windows); R4 is a configuration
fact and exempt. Rules are grouped by root cause, one primary per group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.horizon import Aggregate
from exporter.derive.rules import (
    ALL_RULES,
    NAMES,
    R1,
    R2_BACKLOG,
    R2_MAIN,
    R3,
    R4,
    R5,
    SKIP_REASONS,
    RuleKey,
    RuleResult,
)

GROUPS: Mapping[str, tuple[RuleKey, ...]] = {
    "memory": (R4, R2_MAIN, R2_BACKLOG),
    "scheduling": (R5, R1),
    "cache_reuse": (R3,),
}
TIE_ORDER: tuple[RuleKey, ...] = (R4, R2_MAIN, R2_BACKLOG, R5, R1, R3)


@dataclass(frozen=True, slots=True)
class RuleStatus:
    key: RuleKey
    name: str
    fired_windows: int
    evaluable_windows: int
    score: float  # fraction of evaluable windows fired (R4: 1.0 when firing)
    significant: bool
    latest: RuleResult | None  # the latest evaluable window's result
    fix: str = ""  # the action, in words (may quote a figure)
    evidence: str = ""  # the numbers that justify it
    fix_code: str = ""  # the action as a short fixed code (FIXES): exported, never churns

    @property
    def rule(self) -> str:
        return self.key[0]

    @property
    def variant(self) -> str:
        return self.key[1]


@dataclass(frozen=True, slots=True)
class IssueGroup:
    group: str
    primary: RuleStatus
    supporting: tuple[RuleStatus, ...]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    rules: tuple[RuleStatus, ...]
    groups: tuple[IssueGroup, ...]  # significant groups, highest primary score first


def _significant(key: RuleKey, fired: Sequence[RuleResult], evaluable: int) -> bool:
    n = len(fired)
    if key == R2_MAIN:
        if sum(r.preempting for r in fired) >= T.R2_PREEMPTION_WINDOWS:
            return True
        if sum(r.kv_critical for r in fired) >= T.R2_CRITICAL_WINDOWS:
            return True
    # n ≥ 3 fired windows are among the evaluable ones: evaluable ≥ 3 here.
    return n >= T.PERSIST_MIN_WINDOWS and n / evaluable >= T.PERSIST_MIN_SHARE


def _pct(v: float | None) -> str:
    """A ratio as a percentage, one decimal below 1% (never "0%" for 0.4%); "?" when unknown."""
    if v is None:
        return "?"
    return f"{v:.0%}" if v == 0 or abs(v) >= 0.01 else f"{v:.1%}"


def _num(v: float | None, spec: str) -> str:
    """A figure in ``spec``; "?" when unknown (never a 0 that was not measured)."""
    return "?" if v is None else format(v, spec)


# Every fix as a short fixed code (the issue_info label) and what it asks for.
FIXES: Mapping[str, str] = {
    "raise_client_concurrency": "raise client concurrency (more parallel requests)",
    "reduce_max_num_seqs_or_max_model_len": "reduce --max-num-seqs or --max-model-len",
    "expand_kv_pool": "expand the KV pool (--gpu-memory-utilization, --kv-cache-dtype fp8, or "
    "a lower --max-model-len)",
    "enable_prefix_caching": "enable --enable-prefix-caching and share prompt prefixes",
    "share_prompt_prefix": "move shared instructions to the start of prompts",
    "raise_tensor_parallel_size": "raise --tensor-parallel-size or use lower-precision weights",
    "raise_max_num_seqs": "raise --max-num-seqs (the KV peak leaves room)",
    "add_replica_or_lower_max_model_len": "add a replica or lower --max-model-len",
}


def fix_code(key: RuleKey, agg: Aggregate) -> str:
    """The fix for a rule as a code: it changes only when the decision behind it flips."""
    if key == R1:
        return "raise_client_concurrency"
    if key == R2_MAIN:
        return "reduce_max_num_seqs_or_max_model_len"
    if key == R2_BACKLOG:
        return "expand_kv_pool"
    if key == R3:
        disabled = agg.cache_config.get("enable_prefix_caching") == "False"
        return "enable_prefix_caching" if disabled else "share_prompt_prefix"
    if key == R4:
        return "raise_tensor_parallel_size"
    peak = agg.kv_usage_peak
    safe = peak is not None and peak < T.R5_KV_PEAK_SAFE_BELOW
    return "raise_max_num_seqs" if safe else "add_replica_or_lower_max_model_len"


def vram_peak_ratio(agg: Aggregate) -> float | None:
    """The fullest GPU's peak memory use over its total, over the horizon."""
    ratios = [g.mem_used_peak_bytes / g.mem_total_bytes for g in agg.gpus
              if g.mem_used_peak_bytes is not None and g.mem_total_bytes]  # fmt: skip
    return max(ratios) if ratios else None


def _fix_and_evidence(
    key: RuleKey, n: int, evaluable: int, agg: Aggregate, a: Assessment | None, mns: float | None
) -> tuple[str, str]:
    seen = f"in {n} of {evaluable} windows"
    if key == R1:
        occ = None if agg.running is None or not mns else agg.running / mns
        return (
            "Raise client concurrency (more parallel requests): the scheduler has room.",
            f"occupancy {_pct(occ)} of --max-num-seqs {_num(mns, 'g')}, "
            f"{_num(agg.waiting, '.1f')} waiting, {seen}",
        )
    if key == R2_MAIN:
        pre = agg.preemptions_per_second
        extra = f"; {pre:.2f} preemptions/s" if pre else ""
        vram = vram_peak_ratio(agg)
        if vram is not None and vram >= T.R2_VRAM_CORROBORATES_AT:
            extra += f"; VRAM peak {_pct(vram)}"
        return (
            "Reduce --max-num-seqs or --max-model-len.",
            f"KV peak {_pct(agg.kv_usage_peak)} (mean {_pct(agg.kv_usage_mean)}) {seen}{extra}",
        )
    if key == R2_BACKLOG:
        return (
            "Expand the KV pool: raise --gpu-memory-utilization if VRAM headroom exists; switch "
            "to an fp8 KV cache (--kv-cache-dtype fp8); or reduce --max-model-len.",
            f"requests queue for KV memory before it fills: {_num(agg.waiting, '.1f')} waiting, "
            f"KV mean {_pct(agg.kv_usage_mean)}, {seen}",
        )
    if key == R3:
        disabled = fix_code(key, agg) == "enable_prefix_caching"
        fix = (
            "Enable --enable-prefix-caching, then restructure prompts to share a prefix."
            if disabled
            else "Move shared instructions to the start of prompts, standardize templates, and "
            "avoid unique tokens at the beginning."
        )
        hit = "prefix caching disabled" if disabled else f"hit rate {_pct(agg.prefix_hit_ratio)}"
        return fix, (
            f"{hit}, {_num(agg.prompt_tokens_mean, '.0f')} prompt tokens, "
            f"{_num(agg.requests_per_second, '.1f')} req/s, {seen}"
        )
    if key == R4:
        fix = "Raise --tensor-parallel-size, or use a lower-precision weight format (e.g. fp8)."
        if a is None or a.roofline.weight_bytes is None:
            return fix, "needs the GPU and the model in the catalog"
        worst = min((kv for _, kv in a.roofline.kv_headroom_bytes), default=None)
        tp = a.resolved.inputs.tp
        return fix, (
            f"weights need {a.roofline.weight_bytes / tp / 1e9:.1f} GB per GPU "
            f"({a.resolved.dtype}, TP {tp}); KV headroom "
            f"{_num(None if worst is None else worst / 1e9, '.1f')} GB"
        )
    # R5
    peak = agg.kv_usage_peak
    fix = (
        f"Raise --max-num-seqs (KV peak {_pct(peak)} leaves room)."
        if fix_code(key, agg) == "raise_max_num_seqs"
        else f"Add a replica or lower --max-model-len: raising --max-num-seqs at KV peak "
        f"{_pct(peak)} would cause thrashing."
    )
    return fix, (
        f"running {_num(agg.running, '.1f')} at the cap --max-num-seqs {_num(mns, 'g')}, "
        f"{_num(agg.waiting, '.1f')} waiting, {seen}"
    )


def diagnose(
    window_results: Sequence[Mapping[RuleKey, RuleResult]],
    agg: Aggregate,
    assessment: Assessment | None,
    max_num_seqs: float | None,
) -> Diagnosis:
    """``window_results``: the rule results of each evaluable window in the horizon, in order."""
    evaluable = len(window_results)
    statuses: list[RuleStatus] = []
    for key in ALL_RULES:
        latest: RuleResult | None
        if key == R4:
            kv = assessment.roofline.kv_headroom_bytes if assessment else ()
            firing = any(v < 0 for _, v in kv)
            if kv:
                latest = RuleResult(firing, "KV headroom below zero" if firing else "not triggered")
            else:
                latest = RuleResult(False, SKIP_REASONS["not_in_catalog"], skipped="not_in_catalog")
            fired_n = 1 if firing else 0
            score, significant = (1.0 if firing else 0.0), firing
        else:
            results = [r[key] for r in window_results if key in r]
            fired = [r for r in results if r.fired]
            fired_n = len(fired)
            score = fired_n / evaluable if evaluable else 0.0
            significant = _significant(key, fired, evaluable)
            latest = results[-1] if results else None
        fix, evidence = _fix_and_evidence(key, fired_n, evaluable, agg, assessment, max_num_seqs)
        statuses.append(
            RuleStatus(
                key,
                NAMES[key],
                fired_n,
                evaluable,
                score,
                significant,
                latest,
                fix,
                evidence,
                fix_code(key, agg),
            )  # fmt: skip
        )
    by_key = {s.key: s for s in statuses}
    groups = []
    for group, keys in GROUPS.items():
        members = sorted(
            (by_key[k] for k in keys if by_key[k].significant),
            key=lambda s: (-s.score, TIE_ORDER.index(s.key)),
        )
        if members:
            groups.append(IssueGroup(group, members[0], tuple(members[1:])))
    groups.sort(key=lambda g: (-g.primary.score, TIE_ORDER.index(g.primary.key)))
    return Diagnosis(tuple(statuses), tuple(groups))
