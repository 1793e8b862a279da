"""Each rule's advice: the fix and the evidence, worked from the horizon (docs/rules.md). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.horizon import Aggregate


@dataclass(frozen=True, slots=True)
class Horizon:
    """What a rule's advice is worked from: the horizon and how often the rule fired in it."""

    fired_windows: int
    evaluable_windows: int
    agg: Aggregate
    assessment: Assessment | None
    max_num_seqs: float | None

    @property
    def seen(self) -> str:
        return f"in {self.fired_windows} of {self.evaluable_windows} windows"

    @property
    def cap(self) -> float | None:
        return scheduler_cap(self.max_num_seqs, self.agg.engines)

    @property
    def cap_words(self) -> str:
        """The cap as the flag gives it, per engine when the server has several."""
        mns = _num(self.max_num_seqs, "g")
        engines = self.agg.engines
        return f"--max-num-seqs {mns}" + (f" x {engines} engines" if engines > 1 else "")


@dataclass(frozen=True, slots=True)
class Advice:
    fix_code: str  # a key of FIXES: the exported label, which changes only with the decision
    fix: str  # the action, in words (may quote a figure)
    evidence: str  # the numbers that justify it


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


def vram_peak_ratio(agg: Aggregate) -> float | None:
    """The fullest GPU's peak memory use over its total, over the horizon."""
    ratios = [g.mem_used_peak_bytes / g.mem_total_bytes for g in agg.gpus
              if g.mem_used_peak_bytes is not None and g.mem_total_bytes]  # fmt: skip
    return max(ratios) if ratios else None


def r1_advice(h: Horizon) -> Advice:
    agg, cap = h.agg, h.cap
    occ = None if agg.running is None or not cap else agg.running / cap
    return Advice(
        "raise_client_concurrency",
        "Raise client concurrency (more parallel requests): the scheduler has room.",
        f"occupancy {_pct(occ)} of {h.cap_words}, {_num(agg.waiting, '.1f')} waiting, {h.seen}",
    )


def r2_main_advice(h: Horizon) -> Advice:
    agg = h.agg
    pre = agg.preemptions_per_second
    extra = f"; {pre:.2f} preemptions/s" if pre else ""
    vram = vram_peak_ratio(agg)
    if vram is not None and vram >= T.R2_VRAM_CORROBORATES_AT:
        extra += f"; VRAM peak {_pct(vram)}"
    return Advice(
        "reduce_max_num_seqs_or_max_model_len",
        "Reduce --max-num-seqs or --max-model-len.",
        f"KV peak {_pct(agg.kv_usage_peak)} (mean {_pct(agg.kv_usage_mean)}) {h.seen}{extra}",
    )


def r2_backlog_advice(h: Horizon) -> Advice:
    agg = h.agg
    return Advice(
        "expand_kv_pool",
        "Expand the KV pool: raise --gpu-memory-utilization if VRAM headroom exists; switch "
        "to an fp8 KV cache (--kv-cache-dtype fp8); or reduce --max-model-len.",
        f"requests queue for KV memory before it fills: {_num(agg.waiting, '.1f')} waiting, "
        f"KV mean {_pct(agg.kv_usage_mean)}, {h.seen}",
    )


def r3_advice(h: Horizon) -> Advice:
    agg = h.agg
    disabled = agg.serving.prefix_caching is False
    hit = "prefix caching disabled" if disabled else f"hit rate {_pct(agg.prefix_hit_ratio)}"
    evidence = (
        f"{hit}, {_num(agg.prompt_tokens_mean, '.0f')} prompt tokens, "
        f"{_num(agg.requests_per_second, '.1f')} req/s, {h.seen}"
    )
    if disabled:
        return Advice(
            "enable_prefix_caching",
            "Enable --enable-prefix-caching, then restructure prompts to share a prefix.",
            evidence,
        )
    return Advice(
        "share_prompt_prefix",
        "Move shared instructions to the start of prompts, standardize templates, and avoid "
        "unique tokens at the beginning.",
        evidence,
    )


def r4_advice(h: Horizon) -> Advice:
    fix = "Raise --tensor-parallel-size, or use a lower-precision weight format (e.g. fp8)."
    a = h.assessment
    if a is None or a.roofline.weight_bytes is None:
        return Advice(
            "raise_tensor_parallel_size", fix, "needs the GPU and the model in the catalog"
        )
    worst = min((kv for _, kv in a.roofline.kv_headroom_bytes), default=None)
    tp, pp = a.resolved.inputs.tp, a.resolved.inputs.pp
    split = f"TP {tp}" + (f" x PP {pp}" if pp > 1 else "")
    return Advice(
        "raise_tensor_parallel_size",
        fix,
        f"weights need {a.roofline.weight_bytes / (tp * pp) / 1e9:.1f} GB per GPU "
        f"({a.resolved.dtype}, {split}); KV headroom "
        f"{_num(None if worst is None else worst / 1e9, '.1f')} GB",
    )


def r5_advice(h: Horizon) -> Advice:
    agg = h.agg
    peak = agg.kv_usage_peak
    evidence = (
        f"running {_num(agg.running, '.1f')} at the cap {h.cap_words}, "
        f"{_num(agg.waiting, '.1f')} waiting, {h.seen}"
    )
    if peak is not None and peak < T.R5_KV_PEAK_SAFE_BELOW:
        fix = f"Raise --max-num-seqs (KV peak {_pct(peak)} leaves room)."
        return Advice("raise_max_num_seqs", fix, evidence)
    return Advice(
        "add_replica_or_lower_max_model_len",
        f"Add a replica or lower --max-model-len: raising --max-num-seqs at KV peak "
        f"{_pct(peak)} would cause thrashing.",
        evidence,
    )


def scheduler_cap(max_num_seqs: float | None, engines: int) -> float | None:
    """How many requests the server runs at once: vLLM's --max-num-seqs holds per engine, and the
    running count read is summed over the data-parallel engines."""
    return None if max_num_seqs is None else max_num_seqs * max(1, engines)
