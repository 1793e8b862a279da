"""The ``diagnose`` report: the same snapshot the exporter serves, formatted for a terminal or
as JSON (whose figures are the very series of ``/metrics``). Formatting only — every figure
comes from the engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from exporter import __version__
from exporter.derive.assess import Assessment
from exporter.derive.capacity import REASONS as CAPACITY_REASONS
from exporter.derive.diagnosis import RuleStatus
from exporter.derive.direction import Direction
from exporter.derive.rule_advice import scheduler_cap
from exporter.export.collector import ExportSettings, metric_families
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


def metrics_json(snap: Snapshot, settings: ExportSettings) -> dict[str, list[dict[str, Any]]]:
    """Every series ``/metrics`` would serve for this snapshot (the sources' health and every
    figure), keyed by the name a query uses: the same families, labels and values, made by the
    same table."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family in metric_families(snap, settings):
        for s in family.samples:
            out.setdefault(s.name, []).append({"labels": dict(s.labels), "value": s.value})
    return out


def to_dict(snap: Snapshot, settings: ExportSettings) -> dict[str, Any]:
    """The ``--json`` output. Every figure is under ``metrics``, by the series name ``/metrics``
    exports it under; beside them, what is not a figure: the issues and rules with their fix,
    evidence and latest result in words, the direction's two sides, and the latest window's own
    figures while no window is evaluable."""
    d = snap.diagnosis

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
            "before": {k: getattr(x.before, k) for k in x.before.__slots__},
            "after": {k: getattr(x.after, k) for k in x.after.__slots__},
        }  # fmt: skip

    return {
        "version": __version__,
        "metrics": metrics_json(snap, settings),
        "issues": [
            {
                "group": g.group,
                "primary": rule(g.primary),
                "supporting": [rule(s) for s in g.supporting],
            }
            for g in (d.groups if d else ())
        ],  # fmt: skip
        "rules": [rule(s) for s in (d.rules if d else ())],
        "direction": direction(snap.direction) if snap.direction else None,
        "last_raw_window": raw_window(snap) if snap.agg.windows_evaluable == 0 else None,
    }


# Display thresholds: a peak is shown when it says something the mean does not.
KV_PEAK_SHOWN_AT = 0.95
KV_PEAK_ABOVE_MEAN = 0.10  # or 10 percentage points above the mean
VRAM_PEAK_SHOWN_AT = 0.90
TEMP_PEAK_SHOWN_AT = 80.0

CAUSES = {"engine_restart": "vLLM restarted",
          "engine_restart_same_config": "vLLM restarted (the configuration it shows unchanged)",
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


def _capacity_line(snap: Snapshot) -> str:
    """Capacity in one line (docs/capacity.md), or why it is not estimated."""
    c = snap.capacity
    if c.withheld is not None or c.requests_per_second is None:
        return f"Capacity   not estimated: {CAPACITY_REASONS.get(c.withheld or '', 'no answer')}"
    tpot = snap.slo.targets.tpot if snap.slo else None
    ttft = snap.slo.targets.ttft if snap.slo else None
    limit = {
        "tpot": f"TPOT p99 crosses {_num(tpot, '.0f', 1e3, ' ms')}",
        "ttft": f"TTFT p99 crosses {_num(ttft, '.0f', 1e3, ' ms')} waiting for a slot (R5's fix)",
        "max_num_seqs": "running requests reach --max-num-seqs (R5's fix)",
        "kv_cache": "the KV cache is full (R2's fix)",
    }.get(c.limit or "", c.limit or "?")
    more = "" if c.headroom is None else f"; takes {c.headroom:+.2f} req/s more than now"
    return (
        f"Capacity   {c.requests_per_second:.2f} req/s (90%: {_num(c.lower, '.2f')}-"
        f"{_num(c.upper, '.2f')}) before {limit}{more}; "
        f"{_num(c.concurrency, '.0f')} running at capacity (fit on {c.points} windows, "
        f"batch up to {_num(c.batch_high, '.1f')})"
    )


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


def render(
    snap: Snapshot, max_num_seqs: float | None, verbose: bool = False, engine: str = "vllm"
) -> str:
    """The terminal report; ``engine``: the engine's kind (exporter/engines/)."""
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
    add(f"Engine     {engine}")
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
    add(_capacity_line(snap))
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
