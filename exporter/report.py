"""The ``diagnose`` report: the same snapshot the exporter serves, formatted for a terminal or
as JSON. Formatting only — every figure comes from the engine."""

from __future__ import annotations

import time
from typing import Any

from exporter import __version__
from exporter.derive.diagnosis import RuleStatus
from exporter.derive.direction import Direction
from exporter.pipeline import Snapshot

GROUP_TITLES = {"memory": "memory", "scheduling": "scheduling / concurrency",
                "cache_reuse": "cache reuse"}  # fmt: skip


def _num(v: float | None, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if v is None else f"{v * scale:{fmt}}{unit}"


def _utc(t: float | None) -> str:
    return "?" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _delta(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:+.1f}{unit}"


def to_dict(snap: Snapshot, max_num_seqs: float | None) -> dict[str, Any]:
    """Everything the report shows, as plain data (the ``--json`` output)."""
    a = snap.agg
    asm, d = snap.assessment, snap.diagnosis
    r = asm.roofline if asm else None
    e = asm.economics if asm else None
    res = asm.resolved if asm else None
    gpus = [
        {
            "index": g.index, "uuid": g.uuid, "name": g.name,
            "memory_used_bytes": g.mem_used_bytes, "memory_peak_bytes": g.mem_used_peak_bytes,
            "memory_total_bytes": g.mem_total_bytes, "utilization_ratio": g.util_ratio,
            "power_watts": g.power_watts, "temperature_celsius": g.temperature_c,
        }
        for g in a.gpus
    ]  # fmt: skip

    def rule(s: RuleStatus) -> dict[str, Any]:
        return {
            "rule": s.rule, "variant": s.variant, "name": s.name,
            "fired_windows": s.fired_windows, "evaluable_windows": s.evaluable_windows,
            "score": s.score, "significant": s.significant,
            "latest": None if s.latest is None else {
                "fired": s.latest.fired, "why": s.latest.why, "skipped": s.latest.skipped},
            "fix": s.fix, "evidence": s.evidence,
        }  # fmt: skip

    def direction(x: Direction) -> dict[str, Any]:
        return {
            "direction": x.direction, "signal": x.signal, "vetoed": x.vetoed,
            "efficiency_delta_pp": x.efficiency_delta_pp,
            "throughput_delta_pct": x.throughput_delta_pct,
            "ttft_p99_delta_pct": x.ttft_p99_delta_pct,
            "before": {k: getattr(x.before, k) for k in x.before.__slots__},
            "after": {k: getattr(x.after, k) for k in x.after.__slots__},
        }  # fmt: skip

    return {
        "version": __version__,
        "model": a.model_name or ",".join(a.model_names) or None,
        "model_catalog": res.model_catalog if res else "",
        "gpu_catalog": res.gpu.name if res and res.gpu else "",
        "dtype": res.dtype if res else None,
        "span": {"start": a.horizon_start, "end": a.horizon_end},
        "windows": {
            "total": a.windows_total,
            "evaluable": a.windows_evaluable,
            "active": a.windows_active,
        },  # fmt: skip
        "gpus": gpus,
        "efficiency_ratio": r.efficiency if r else None,
        "batch_efficiency_ratio": r.batch_efficiency if r else None,
        "hardware_ceiling_tokens_per_second": r.hardware_tps if r else None,
        "roofline_unavailable": list(asm.reasons) if asm else [],
        "power_watts": asm.power_watts if asm else None,
        "joules_per_token": e.joules_per_token if e else None,
        "cost_per_hour_dollars": e.cost_per_hour if e else None,
        "cost_per_million_tokens_dollars": e.cost_per_million_tokens if e else None,
        "price_source": asm.price_source if asm else None,
        "requests": {"running": a.running, "waiting": a.waiting, "max_num_seqs": max_num_seqs},
        "latency_seconds": {
            "ttft_mean": a.ttft_mean,
            "ttft_p99": a.ttft_p99,
            "tpot_mean": a.tpot_mean,
            "tpot_p99": a.tpot_p99,
        },  # fmt: skip
        "cache": {
            "kv_mean": a.kv_usage_mean,
            "kv_peak": a.kv_usage_peak,
            "prefix_hit_ratio": a.prefix_hit_ratio,
        },  # fmt: skip
        "throughput": {
            "generation_tokens_per_second": a.generation_tps,
            "prompt_tokens_per_second": a.prompt_tps,
        },  # fmt: skip
        "traffic": {
            "requests_per_second": a.requests_per_second,
            "requests_total": a.requests_total,
            "generation_tokens_total": a.generation_tokens_total,
            "preemptions_per_second": a.preemptions_per_second,
        },
        "issues": [
            {
                "group": g.group,
                "primary": rule(g.primary),
                "supporting": [rule(s) for s in g.supporting],
            }
            for g in (d.groups if d else ())
        ],  # fmt: skip
        "rules": [rule(s) for s in (d.rules if d else ())],
        "config_epoch": snap.epoch,
        "direction": direction(snap.direction) if snap.direction else None,
    }


def _tag(s: RuleStatus) -> str:
    return f"{s.rule}/{s.variant}" if s.variant else s.rule


def render(snap: Snapshot, max_num_seqs: float | None, verbose: bool = False) -> str:
    """The terminal report."""
    a, asm, d = snap.agg, snap.assessment, snap.diagnosis
    res = asm.resolved if asm else None
    est = " (est)"
    lines: list[str] = []
    add = lines.append
    add(f"vllm-profile-exporter {__version__} — diagnosis")
    gpu_names = sorted({g.name or "?" for g in a.gpus})
    gpu = f"{', '.join(gpu_names)} x{len(a.gpus)}" if a.gpus else "no GPU data"
    if res and res.gpu:
        gpu += f" (catalog: {res.gpu.name})"
    model = a.model_name or ", ".join(a.model_names) or "unknown"
    if res and res.model_catalog:
        model += f" (catalog: {res.model_catalog}, {res.dtype})"
    add(f"Model      {model}")
    add(f"GPU        {gpu}")
    span = (
        0.0 if a.horizon_start is None or a.horizon_end is None else a.horizon_end - a.horizon_start
    )
    add(
        f"Span       {_utc(a.horizon_start)} → {_utc(a.horizon_end)} UTC ({span:.0f} s; "
        f"{a.windows_total} windows, {a.windows_evaluable} evaluable, {a.windows_active} active)"
    )
    add("")
    if asm is not None:
        r, e = asm.roofline, asm.economics
        eff = "n/a" if r.efficiency is None else f"{r.efficiency:.1%}{est}"
        cost = (
            "n/a"
            if e.cost_per_million_tokens is None
            else f"${e.cost_per_million_tokens:.2f}/1M tokens"
            + ("" if asm.price_source == "flag" else est)
        )
        add(
            f"GPU        efficiency {eff}  power {_num(asm.power_watts, '.0f', unit=' W')}  "
            f"{_num(e.joules_per_token, '.3f', unit=' J/token')}  {cost}"
        )
        if asm.reasons and r.efficiency is None:
            add(f"           roofline unavailable: {', '.join(asm.reasons)}")
    for g in a.gpus:
        add(
            f"           GPU {g.index}: VRAM {_num(g.mem_used_bytes, '.1f', 1e-9)}"
            f" / {_num(g.mem_total_bytes, '.1f', 1e-9)} GB"
            f" (peak {_num(g.mem_used_peak_bytes, '.1f', 1e-9)} GB)"
        )
    occ = (
        ""
        if not max_num_seqs or a.running is None
        else f" (occupancy {a.running / max_num_seqs:.0%})"
    )
    add(
        f"Requests   running {_num(a.running, '.1f')}  waiting {_num(a.waiting, '.1f')}  "
        f"max {'n/a' if not max_num_seqs else f'{max_num_seqs:g}'}{occ}"
    )
    add(
        f"Latency    TTFT {_num(a.ttft_mean, '.1f', 1e3, ' ms')} "
        f"(p99 {_num(a.ttft_p99, '.1f', 1e3, ' ms')})  "
        f"TPOT {_num(a.tpot_mean, '.1f', 1e3, ' ms')} (p99 {_num(a.tpot_p99, '.1f', 1e3, ' ms')})"
    )
    add(
        f"Cache      KV avg {_num(a.kv_usage_mean, '.1%')} peak {_num(a.kv_usage_peak, '.1%')}  "
        f"prefix hit rate {_num(a.prefix_hit_ratio, '.1%')}"
    )
    add(
        f"Throughput {_num(a.generation_tps, '.1f', unit=' tok/s')} generated, "
        f"{_num(a.prompt_tps, '.1f', unit=' tok/s')} prompt"
    )
    add(
        f"Traffic    {_num(a.requests_per_second, '.2f', unit=' req/s')}  "
        f"{_num(a.requests_total, ',.0f')} requests, "
        f"{_num(a.generation_tokens_total, ',.0f')} tokens total  "
        f"{_num(a.preemptions_per_second, '.2f', unit=' preemptions/s')}"
    )
    if snap.direction is not None:
        x = snap.direction
        veto = " (latency veto)" if x.vetoed else ""
        add(
            f"Direction  {x.direction.upper()}{veto} since the last configuration change: "
            f"efficiency/request {_delta(x.efficiency_delta_pp, ' pp')}, "
            f"throughput {_delta(x.throughput_delta_pct, '%')}, "
            f"TTFT p99 {_delta(x.ttft_p99_delta_pct, '%')}"
        )
    add("")
    groups = d.groups if d else ()
    if not groups:
        add("No persistent bottleneck found.")
    for group in groups:
        p = group.primary
        add(f"[!] {p.name} ({_tag(p)}, {GROUP_TITLES[group.group]}) — "
            f"seen in {p.score:.0%} of windows")  # fmt: skip
        add(f"    Cause: {p.evidence}")
        add(f"    Fix:   {p.fix}")
        for s in group.supporting:
            add(f"    Also:  {s.name} ({_tag(s)}): {s.evidence}")
    if verbose and d is not None:
        add("")
        add("Rules not significant:")
        for s in d.rules:
            if s.significant:
                continue
            tag = _tag(s)
            why = "not evaluated" if s.latest is None else s.latest.why
            add(f"  {tag:<11} {s.name}: {why} ({s.fired_windows} of {s.evaluable_windows} windows)")
    return "\n".join(lines) + "\n"
