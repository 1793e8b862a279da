"""The ``diagnose`` report: the same snapshot the exporter serves, formatted for a terminal or
as JSON. Formatting only — every figure comes from the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exporter import __version__
from exporter.derive.assess import Assessment
from exporter.derive.diagnosis import RuleStatus
from exporter.derive.direction import Direction
from exporter.derive.rule_advice import scheduler_cap
from exporter.human import PRICE_SOURCES
from exporter.human import dollars as _usd
from exporter.human import duration as _seconds
from exporter.human import percent as _ratio
from exporter.human import size as _bytes
from exporter.human import tokens_per_second as _tps
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
            "temperature_peak_celsius": g.temperature_peak_c,
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
        "dtype_source": res.dtype_source if res else None,
        "model_matched_on": res.model_matched_on if res else "",
        "model_root": res.model_root if res else "",
        "tensor_parallel_size": res.inputs.tp if res else None,
        "tensor_parallel_size_source": res.parallelism.tp_source if res else None,
        "pipeline_parallel_size": res.inputs.pp if res else None,
        "roofline": {
            "estimate": True,
            "efficiency_ratio": r.efficiency if r else None,
            "batch_efficiency_ratio": r.batch_efficiency if r else None,
            "headroom_ratio": r.headroom if r else None,
            "stream_ceiling_tokens_per_second": r.stream_tps if r else None,
            "batch_ceiling_tokens_per_second": r.batch_tps if r else None,
            "hardware_ceiling_tokens_per_second": r.hardware_tps if r else None,
            "prefill_ceiling_tokens_per_second": r.prefill_ceiling_tps if r else None,
            "ridge_batch_size": r.ridge_batch_size if r else None,
            "batch": a.running_active,
            "tpot_floor_seconds": r.tpot_floor_seconds if r else None,
            "prefill_floor_seconds": r.prefill_floor_seconds if r else None,
            "weight_bytes": r.weight_bytes if r else None,
            "kv_headroom_bytes": {str(g.index): v for g, v in r.kv_headroom_bytes} if r else {},
            "unavailable": list(asm.reasons) if asm else [],
        },
        "power_watts": asm.power_watts if asm else None,
        "joules_per_token": e.joules_per_token if e else None,
        "tokens_per_watt": None if not e or not e.joules_per_token else 1 / e.joules_per_token,
        "price_source": asm.price_source if asm else None,
        "cost": {
            "per_hour_dollars": e.cost_per_hour if e else None,
            "per_million_tokens_active_dollars": e.cost_per_million_tokens if e else None,
            "per_million_tokens_wall_clock_dollars": e.wall_cost_per_million_tokens if e else None,
            "recoverable_per_hour_active_dollars": e.recoverable_per_hour if e else None,
            "recoverable_per_hour_wall_clock_dollars": e.wall_recoverable_per_hour if e else None,
            "duty_cycle_ratio": e.duty_cycle if e else None,
        },
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
        "epoch_cause": snap.epoch_cause,
        "direction": direction(snap.direction) if snap.direction else None,
        "last_raw_window": raw_window(snap) if a.windows_evaluable == 0 else None,
    }


# Display thresholds: a peak is shown when it says something the mean does not.
KV_PEAK_SHOWN_AT = 0.95
KV_PEAK_ABOVE_MEAN = 0.10  # or 10 percentage points above the mean
VRAM_PEAK_SHOWN_AT = 0.90
TEMP_PEAK_SHOWN_AT = 80.0

CAUSES = {"vllm_restart": "vLLM restarted",
          "vllm_restart_same_config": "vLLM restarted (the configuration it shows unchanged)",
          "cache_config_change": "vLLM's cache_config changed",
          "reconfigured": "the exporter was reconfigured"}  # fmt: skip


def _per_hour(v: float | None) -> str:
    return "n/a" if v is None else f"{_usd(v)}/hr"


def _roofline_lines(add: Callable[[str], None], asm: Assessment, batch: float | None) -> None:
    r, e = asm.roofline, asm.economics
    est = " (est)"
    if r.hardware_tps is not None:
        at = "n/a" if batch is None else f"{batch:.1f}"
        add(f"Roofline   decode ceilings{est}: one stream {_tps(r.stream_tps)}, at batch {at} "
            f"{_tps(r.batch_tps)}, hardware {_tps(r.hardware_tps)}; ridge batch "
            f"{_num(r.ridge_batch_size, ',.0f')}")  # fmt: skip
        add(f"           efficiency {_ratio(r.efficiency)}{est}  headroom "
            f"{_ratio(r.headroom)}  batch efficiency {_ratio(r.batch_efficiency)}  "
            f"TPOT floor {_seconds(r.tpot_floor_seconds)}  prefill floor "
            f"{_seconds(r.prefill_floor_seconds)}")  # fmt: skip
    else:
        add(f"Roofline   unavailable: {', '.join(asm.reasons) or 'n/a'}")
    if r.weight_bytes is not None:
        kv = ", ".join(f"GPU {g.index} {_bytes(v)}" for g, v in r.kv_headroom_bytes)
        add(f"           weights {_bytes(r.weight_bytes)}{est}"
            + (f"; KV headroom {kv}" if kv else ""))  # fmt: skip
    tpw = None if not e.joules_per_token else 1 / e.joules_per_token
    if asm.power_watts is not None or e.joules_per_token is not None:
        jpt = _num(e.joules_per_token, ".3f", unit=" J/token")
        add(f"Energy     power {_num(asm.power_watts, '.0f', unit=' W')}  "
            f"{_num(tpw, '.2f', unit=' tok/W')}  {jpt}")  # fmt: skip
    if e.cost_per_hour is not None:
        price = PRICE_SOURCES.get(asm.price_source or "", "?")
        add(f"Money      {_per_hour(e.cost_per_hour)} ({price}); per 1M tokens "
            f"{_usd(e.cost_per_million_tokens)} while busy, {_usd(e.wall_cost_per_million_tokens)} "
            f"wall clock (duty cycle {_num(e.duty_cycle, '.0%')})")  # fmt: skip
        add(f"           recoverable {_per_hour(e.recoverable_per_hour)} while busy, "
            f"{_per_hour(e.wall_recoverable_per_hour)} wall clock{est}")  # fmt: skip


def _direction_lines(add: Callable[[str], None], x: Direction, cause: str | None) -> None:
    veto = " (latency veto)" if x.vetoed else ""
    why = CAUSES.get(cause or "", "a configuration change")
    ttft = _delta(x.ttft_p99_delta_pct, "%")
    add(f"Direction  {x.direction.upper()}{veto} since {why}, judged by {x.signal}: "
        f"efficiency/request {_delta(x.efficiency_delta_pp, ' pp')}, throughput "
        f"{_delta(x.throughput_delta_pct, '%')}, TTFT p99 {ttft}")  # fmt: skip
    b, n = x.before, x.after
    add(f"           before → after: efficiency {_num(b.efficiency, '.2%')} → "
        f"{_num(n.efficiency, '.2%')}, {_tps(b.generation_tps)} → {_tps(n.generation_tps)} "
        f"at {_num(b.running, '.1f')} → {_num(n.running, '.1f')} running")  # fmt: skip
    add(f"           TTFT p99 {_seconds(b.ttft_p99)} → {_seconds(n.ttft_p99)}, TPOT p99 "
        f"{_seconds(b.tpot_p99)} → {_seconds(n.tpot_p99)}, per 1M tokens "
        f"{_usd(b.cost_per_million_tokens)} → {_usd(n.cost_per_million_tokens)}")  # fmt: skip


def raw_window(snap: Snapshot) -> dict[str, float | None] | None:
    """The latest window's own figures, unaggregated (shown when no window is evaluable)."""
    w = snap.latest
    if w is None:
        return None
    return {
        "start": w.start, "seconds": w.end - w.start, "engine_polls": float(w.engine_polls),
        "gpu_polls": float(w.gpu_polls), "running": w.running, "waiting": w.waiting,
        "kv_usage": w.kv_usage, "generated_tokens": w.d_generation_tokens,
        "gpu_utilization_percent": w.gpu_util_pct,
    }  # fmt: skip


def _tag(s: RuleStatus) -> str:
    return f"{s.rule}/{s.variant}" if s.variant else s.rule


def render(snap: Snapshot, max_num_seqs: float | None, verbose: bool = False) -> str:
    """The terminal report."""
    a, asm, d = snap.agg, snap.assessment, snap.diagnosis
    res = asm.resolved if asm else None
    lines: list[str] = []
    add = lines.append
    add(f"vllm-profile-exporter {__version__} — diagnosis")
    gpu_names = sorted({g.name or "?" for g in a.gpus})
    gpu = f"{', '.join(gpu_names)} x{len(a.gpus)}" if a.gpus else "no GPU data"
    if res and res.gpu:
        gpu += f" (catalog: {res.gpu.name})"
    model = a.model_name or ", ".join(a.model_names) or "unknown"
    if res and res.model_catalog:
        if res.model_matched_on == "flag":
            model += " (parameters from --model-params)"
        else:
            root = (
                f", matched on its root {res.model_root}" if res.model_matched_on == "root" else ""
            )
            model += f" (catalog: {res.model_catalog}{root})"
    if res:
        par = res.parallelism
        where = (
            f"from the {par.gpus} GPU{'s' if par.gpus != 1 else ''} seen"
            if par.tp_source == "gpus"
            else par.tp_source
        )
        model += (
            f"; weights {res.dtype} from {res.dtype_source}, TP {par.tp} ({where})"
            + (f" x PP {par.pp}" if par.pp > 1 else "")
            + ("" if par.consistent else f" disagrees with the {par.gpus} GPUs seen")
        )
    add(f"Model      {model}")
    add(f"GPU        {gpu}")
    for g in a.gpus:
        vram = ""
        if g.mem_used_peak_bytes and g.mem_total_bytes:
            if g.mem_used_peak_bytes / g.mem_total_bytes >= VRAM_PEAK_SHOWN_AT:
                vram = f" (peak {g.mem_used_peak_bytes * 1e-9:.1f} GB)"
        temp = ""
        if g.temperature_c is not None:
            temp = f"  {g.temperature_c:.0f} °C"
            if g.temperature_peak_c is not None and g.temperature_peak_c >= TEMP_PEAK_SHOWN_AT:
                temp += f" (peak {g.temperature_peak_c:.0f} °C)"
        add(
            f"           GPU {g.index}: VRAM {_num(g.mem_used_bytes, '.1f', 1e-9)}"
            f" / {_num(g.mem_total_bytes, '.1f', 1e-9)} GB{vram}"
            f"  util {_num(g.util_ratio, '.0%')}{temp}"
        )
    span = (
        0.0 if a.horizon_start is None or a.horizon_end is None else a.horizon_end - a.horizon_start
    )
    add(
        f"Span       {_utc(a.horizon_start)} → {_utc(a.horizon_end)} UTC ({span:.0f} s; "
        f"{a.windows_total} windows, {a.windows_evaluable} evaluable, {a.windows_active} active)"
    )
    add("")
    if asm is not None:
        _roofline_lines(add, asm, a.running_active)
    cap = scheduler_cap(max_num_seqs, a.engines)
    occ = "" if not cap or a.running is None else f" (occupancy {a.running / cap:.0%})"
    engines = f" x {a.engines} engines" if a.engines > 1 and max_num_seqs else ""
    add(
        f"Requests   running {_num(a.running, '.1f')}  waiting {_num(a.waiting, '.1f')}  "
        f"max {'n/a' if not max_num_seqs else f'{max_num_seqs:g}'}{engines}{occ}"
    )
    add(
        f"Latency    TTFT {_num(a.ttft_mean, '.1f', 1e3, ' ms')} "
        f"(p99 {_num(a.ttft_p99, '.1f', 1e3, ' ms')})  "
        f"TPOT {_num(a.tpot_mean, '.1f', 1e3, ' ms')} (p99 {_num(a.tpot_p99, '.1f', 1e3, ' ms')})"
    )
    kv_peak = ""
    if a.kv_usage_peak is not None and (
        a.kv_usage_peak >= KV_PEAK_SHOWN_AT
        or (a.kv_usage_mean is not None and a.kv_usage_peak > a.kv_usage_mean + KV_PEAK_ABOVE_MEAN)
    ):
        kv_peak = f" peak {a.kv_usage_peak:.1%}"
    add(
        f"Cache      KV avg {_num(a.kv_usage_mean, '.1%')}{kv_peak}  "
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
        _direction_lines(add, snap.direction, snap.epoch_cause)
    add("")
    raw = raw_window(snap) if a.windows_evaluable == 0 else None
    if raw is not None:
        # docs/design.md#the-horizon: with no evaluable window, the last raw window, as is.
        shown = ", ".join(f"{k} {v:g}" for k, v in raw.items() if v is not None and k != "start")
        add(f"No evaluable window. The last window, as is: {shown or 'no data'}")
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
    if d is not None:
        # Every rule that is not an issue, by name; -v adds why.
        quiet = [s for s in d.rules if not s.significant]
        if quiet:
            add("")
            add("Other rules:")
        for s in quiet:
            tag = _tag(s)
            if s.latest is not None and s.latest.skipped is not None:
                state = "skipped"
            elif s.fired_windows:
                state = f"not significant ({s.fired_windows} of {s.evaluable_windows} windows)"
            else:
                state = "not triggered"
            line = state
            if verbose:
                why = "not evaluated" if s.latest is None else s.latest.why
                # "not triggered (the numbers)" already says its state
                line = why if why.startswith(state) else f"{state}: {why}"
            add(f"    {s.name} ({tag}): {line}")
    return "\n".join(lines) + "\n"
