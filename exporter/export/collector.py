"""Snapshot → metric families. Fresh families on every scrape; nothing long-lived is mutated.

A value that could not be computed is not exported at all — never 0, never NaN. vLLM-derived
series are exported only while the latest window holds vLLM data, GPU series only while it holds
GPU data, so a dead source makes its figures vanish instead of going stale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.derive.assess import Assessment
from exporter.derive.diagnosis import Diagnosis, RuleStatus
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.loop import LoopStats
from exporter.pipeline import Snapshot
from exporter.ratelog import rate_limited

NS = "vllm_profile"
log = rate_limited(__name__)


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Static facts the collector needs besides the snapshot."""

    version: str
    horizon_seconds: float
    poll_interval: float
    max_num_seqs: float | None = None
    demo: bool = False
    compute_peak: str = "tensor"
    tensor_parallel_size: int = 1
    tensor_parallel_source: str = "default"


def _exportable(name: str, value: float | None) -> bool:
    """Present and finite. Inputs are checked where they enter, so a NaN or an infinity here
    is a bug upstream: it is left out (never exported) and said once a minute."""
    if value is None:
        return False
    if math.isfinite(value):
        return True
    log.warning("not exporting %s: the computed value is %s", name, value)
    return False


def _h(text: str, settings: ExportSettings) -> str:
    return text.replace("{H}", f"{settings.horizon_seconds:g}s")


class _Families:
    """Collects families, skipping absent values so no family ever carries a guess."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self.out: list[Metric] = []

    def gauge(self, name: str, doc: str, value: float | None) -> None:
        if _exportable(name, value):
            assert value is not None
            g = GaugeMetricFamily(f"{NS}_{name}", _h(doc, self.settings))
            g.add_metric([], value)
            self.out.append(g)

    def labelled(
        self, name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float | None]]
    ) -> None:
        present = [(lv, v) for lv, v in rows if _exportable(name, v)]
        if present:
            g = GaugeMetricFamily(f"{NS}_{name}", _h(doc, self.settings), labels=labels)
            for lv, v in present:
                assert v is not None
                g.add_metric(lv, v)
            self.out.append(g)


def _health(f: _Families, snap: Snapshot) -> None:
    health = snap.health
    f.labelled(
        "up",
        "1 if the source answered its last poll, else 0.",
        ["source"],
        [([s], 1.0 if h.up else 0.0) for s, h in health.items()],
    )
    f.labelled(
        "last_poll_timestamp_seconds",
        "Unix time of the source's last successful poll.",
        ["source"],
        [([s], h.last_success) for s, h in health.items()],
    )
    f.labelled(
        "poll_duration_seconds",
        "How long the source's last poll took.",
        ["source"],
        [([s], h.last_duration) for s, h in health.items()],
    )
    f.labelled(
        "poll_interval_seconds",
        "The cadence in force: seconds between polls of the source (vLLM: --poll-interval "
        "while anything could spike, --calm-poll-interval otherwise; dcgm: as often as it "
        "refreshes).",
        ["source"],
        [([s], h.interval) for s, h in health.items()],
    )
    polls = CounterMetricFamily(
        f"{NS}_polls",
        "Polls made of the source, answered or failed: the load the exporter puts on it.",
        labels=["source"],
    )
    for s, h in health.items():
        polls.add_metric([s], h.polls)
    f.out.append(polls)
    errors = CounterMetricFamily(
        f"{NS}_poll_errors",
        "Failed polls by source and reason (timeout, connection, http_status, malformed, …).",
        labels=["source", "reason"],
    )
    for s, h in health.items():
        for reason, n in sorted(h.errors.items()):
            errors.add_metric([s, reason], n)
    f.out.append(errors)


def _vllm(f: _Families, a: Aggregate) -> None:
    f.gauge(
        "generation_tokens_per_second",
        "Generated tokens per second, time-weighted over the active windows of the last {H} "
        "(windows with running requests and load). From vllm:generation_tokens_total.",
        a.generation_tps,
    )
    f.gauge(
        "prompt_tokens_per_second",
        "Prompt tokens per second (cached included), over the active windows of the last {H}. "
        "From vllm:prompt_tokens_total.",
        a.prompt_tps,
    )
    f.gauge(
        "requests_per_second",
        "Finished requests per second, over the active windows of the last {H}. "
        "From vllm:request_success_total (all finished_reason).",
        a.requests_per_second,
    )
    f.gauge(
        "preemptions_per_second",
        "Preemptions per second, over the active windows of the last {H}. "
        "From vllm:num_preemptions_total.",
        a.preemptions_per_second,
    )
    f.gauge(
        "requests_running",
        "Running requests, time-weighted mean over the evaluable windows of the last {H} "
        "(sampled every poll, so short bursts count). From vllm:num_requests_running.",
        a.running,
    )
    f.gauge(
        "requests_waiting",
        "Waiting requests, time-weighted mean over the evaluable windows of the last {H}. "
        "From vllm:num_requests_waiting.",
        a.waiting,
    )
    mns = f.settings.max_num_seqs
    f.gauge(
        "scheduler_occupancy_ratio",
        "Running requests / --max-num-seqs, over the evaluable windows of the last {H}.",
        None if a.running is None or not mns else a.running / mns,
    )
    f.labelled(
        "kv_cache_usage_ratio",
        "KV cache usage 0-1 over the evaluable windows of the last {H}: stat=mean is "
        "time-weighted, stat=peak the highest poll (catches spikes a 15 s scrape misses). "
        "From vllm:kv_cache_usage_perc (max over engines).",
        ["stat"],
        [(["mean"], a.kv_usage_mean), (["peak"], a.kv_usage_peak)],
    )
    f.gauge(
        "prefix_cache_hit_ratio",
        "Prefix cache hits / queries (tokens) over the evaluable windows of the last {H}. "
        "From vllm:prefix_cache_hits_total and vllm:prefix_cache_queries_total.",
        a.prefix_hit_ratio,
    )
    f.labelled(
        "time_to_first_token_seconds",
        "Time to first token over the active windows of the last {H}: stat=mean is Δsum/Δcount, "
        "stat=p99 is interpolated from merged per-window bucket deltas (never an average of "
        "p99s). From vllm:time_to_first_token_seconds.",
        ["stat"],
        [(["mean"], a.ttft_mean), (["p99"], a.ttft_p99)],
    )
    f.labelled(
        "time_per_output_token_seconds",
        "Time per output token over the active windows of the last {H} (mean, p99 as for TTFT). "
        "From vllm:request_time_per_output_token_seconds, else vllm:inter_token_latency_seconds.",
        ["stat"],
        [(["mean"], a.tpot_mean), (["p99"], a.tpot_p99)],
    )
    f.labelled(
        "prefill_time_seconds",
        "Request prefill time, mean over the active windows of the last {H}. "
        "From vllm:request_prefill_time_seconds.",
        ["stat"],
        [(["mean"], a.prefill_time_mean)],
    )
    f.labelled(
        "queue_time_seconds",
        "Request queue time, mean over the active windows of the last {H}. "
        "From vllm:request_queue_time_seconds.",
        ["stat"],
        [(["mean"], a.queue_time_mean)],
    )
    f.gauge(
        "prompt_tokens_mean",
        "Mean prompt length (tokens) of requests finished in the evaluable windows of the last "
        "{H}. From vllm:request_prompt_tokens.",
        a.prompt_tokens_mean,
    )
    for name, doc, value in (
        ("generation_tokens", "Generated tokens since vLLM started", a.generation_tokens_total),
        ("requests", "Finished requests since vLLM started", a.requests_total),
    ):
        if value is not None:
            c = CounterMetricFamily(f"{NS}_{name}", doc + " (vLLM's counter at the last poll).")
            c.add_metric([], value)
            f.out.append(c)


def _gpu(f: _Families, gpus: tuple[GpuAggregate, ...]) -> None:
    labels = ["gpu", "UUID"]

    def rows(get: Callable[[GpuAggregate], float | None]) -> list[tuple[list[str], float | None]]:
        return [([str(g.index), g.uuid], get(g)) for g in gpus]

    def stat_rows(
        cur: Callable[[GpuAggregate], float | None], peak: Callable[[GpuAggregate], float | None]
    ) -> list[tuple[list[str], float | None]]:
        out: list[tuple[list[str], float | None]] = []
        for g in gpus:
            out.append(([str(g.index), g.uuid, "current"], cur(g)))
            out.append(([str(g.index), g.uuid, "peak"], peak(g)))
        return out

    f.labelled(
        "gpu_utilization_ratio",
        "GPU utilization 0-1 (NVML utilization.gpu), mean over the active windows of the last {H}.",
        labels,
        rows(lambda g: g.util_ratio),
    )
    f.labelled(
        "gpu_memory_utilization_ratio",
        "GPU memory-controller utilization 0-1 (NVML utilization.memory), mean over the active "
        "windows of the last {H}.",
        labels,
        rows(lambda g: g.mem_util_ratio),
    )
    f.labelled(
        "gpu_power_watts",
        "GPU power draw, mean over the active windows of the last {H} (NVML power usage).",
        labels,
        rows(lambda g: g.power_watts),
    )
    f.labelled(
        "gpu_power_limit_watts",
        "Enforced GPU power limit (NVML, read once at start).",
        labels,
        rows(lambda g: g.power_limit_watts),
    )
    f.labelled(
        "gpu_memory_used_bytes",
        "GPU memory used: stat=current at the latest poll, stat=peak the highest poll over the "
        "last {H}.",
        labels + ["stat"],
        stat_rows(lambda g: g.mem_used_bytes, lambda g: g.mem_used_peak_bytes),
    )
    f.labelled(
        "gpu_memory_total_bytes",
        "GPU memory total (NVML).",
        labels,
        rows(lambda g: g.mem_total_bytes),
    )
    f.labelled(
        "gpu_temperature_celsius",
        "GPU temperature: stat=current at the latest poll, stat=peak over the last {H}.",
        labels + ["stat"],
        stat_rows(lambda g: g.temperature_c, lambda g: g.temperature_peak_c),
    )
    f.labelled(
        "gpu_sm_clock_hertz",
        "SM clock at the latest poll (NVML).",
        labels,
        rows(lambda g: g.sm_clock_hz),
    )
    f.labelled(
        "gpu_dram_bandwidth_utilization_ratio",
        "Measured DRAM bandwidth utilization 0-1 (NVML GPM, Hopper and newer), mean over the "
        "active windows of the last {H}. Absent where GPM is unsupported.",
        labels,
        rows(lambda g: g.dram_bw_util_ratio),
    )


EST = "true"
PRELUDE = (
    "Catalog-derived estimate (peak FLOP/s and bandwidth of the GPU, parameter count of the "
    "model), over the active windows of the last {H}. "
)


def _roofline(f: _Families, a: Assessment, gpu_fresh: bool) -> None:
    r, e = a.roofline, a.economics
    f.labelled(
        "decode_ceiling_tokens_per_second",
        PRELUDE + "Decode ceilings, TP-scaled: scope=stream one sequence (bandwidth-bound), "
        "scope=batch at the current mean batch, scope=hardware the compute-bound maximum.",
        ["scope", "estimate"],
        [
            (["stream", EST], r.stream_tps),
            (["batch", EST], r.batch_tps),
            (["hardware", EST], r.hardware_tps),
        ],
    )
    f.labelled(
        "prefill_ceiling_tokens_per_second",
        PRELUDE + "Prompt tokens/s the GPUs could process at their compute peak.",
        ["estimate"],
        [([EST], r.prefill_ceiling_tps)],
    )
    f.labelled(
        "efficiency_ratio",
        PRELUDE + "Generated tokens/s over the hardware decode ceiling: how much of what was paid "
        "for is used. Calibrated for decode-bound work; prefill-heavy traffic reads low.",
        ["estimate"],
        [([EST], r.efficiency)],
    )
    f.labelled(
        "batch_efficiency_ratio",
        PRELUDE + "Generated tokens/s over the ceiling at the current batch: low efficiency with "
        "high batch efficiency means too little concurrency; low batch efficiency means overhead.",
        ["estimate"],
        [([EST], r.batch_efficiency)],
    )
    f.labelled(
        "headroom_ratio",
        PRELUDE + "Unused fraction of the hardware decode ceiling (1 - efficiency).",
        ["estimate"],
        [([EST], r.headroom)],
    )
    f.labelled(
        "ridge_batch_size",
        PRELUDE + "Concurrent sequences at which decode turns from bandwidth- to compute-bound.",
        ["estimate"],
        [([EST], r.ridge_batch_size)],
    )
    f.labelled(
        "tpot_floor_seconds",
        PRELUDE + "Shortest possible time per output token at the current batch.",
        ["estimate"],
        [([EST], r.tpot_floor_seconds)],
    )
    f.labelled(
        "prefill_floor_seconds",
        PRELUDE + "Shortest possible prefill of the mean prompt; not shown at or above the ridge.",
        ["estimate"],
        [([EST], r.prefill_floor_seconds)],
    )
    f.labelled(
        "model_weight_bytes",
        "Model weight bytes: total parameters x bytes per parameter (catalog estimate).",
        ["estimate"],
        [([EST], r.weight_bytes)],
    )
    if gpu_fresh:
        f.labelled(
            "kv_headroom_bytes",
            "Per GPU: memory total x vLLM's gpu_memory_utilization - weight bytes / TP. Negative: "
            "the tensor-parallel size is too small for the model (estimate).",
            ["gpu", "UUID", "estimate"],
            [([str(g.index), g.uuid, EST], v) for g, v in r.kv_headroom_bytes],
        )
    f.labelled(
        "vllm_gpu_memory_utilization_ratio",
        "vLLM's --gpu-memory-utilization used for KV headroom; source=default means 1.0 assumed.",
        ["source"],
        [([a.gpu_memory_utilization_source], a.gpu_memory_utilization)],
    )
    f.labelled(
        "roofline_unavailable",
        "1 per reason a roofline figure is absent: unknown_gpu, unknown_model, no_gpu_data, "
        "gpu_has_price_only, no_tensor_peak_in_catalog, no_load, actual_above_ceiling.",
        ["reason"],
        [([reason], 1.0) for reason in a.reasons],
    )
    f.gauge(
        "gpu_power_total_watts",
        "Power of all the server's GPUs, mean over the active windows of the last {H}.",
        a.power_watts,
    )
    f.gauge(
        "tokens_per_joule",
        "Generated tokens per joule (tok/s per W) over the active windows of the last {H}; from "
        "the GPUs' energy counters where they exist, else mean power.",
        e.tokens_per_joule,
    )
    f.gauge(
        "joules_per_token",
        "Joules per generated token (inverse of tokens_per_joule).",
        e.joules_per_token,
    )
    if a.price_source is not None:
        ps = [a.price_source]
        f.labelled(
            "cost_per_hour_dollars",
            "Server cost per hour: --cost-per-hour (price_source=flag), or catalog price x GPUs.",
            ["price_source"],
            [(ps, e.cost_per_hour)],
        )
        f.labelled(
            "cost_per_million_tokens_dollars",
            "Dollars per million generated tokens at the throughput of the last {H}.",
            ["price_source"],
            [(ps, e.cost_per_million_tokens)],
        )
        f.labelled(
            "recoverable_cost_per_hour_dollars",
            "Cost per hour x (1 - efficiency): what the unused ceiling costs (estimate).",
            ["price_source", "estimate"],
            [(ps + [EST], e.recoverable_per_hour)],
        )
    f.gauge(
        "mfu_flops_per_second",
        "Achieved FLOP/s per GPU as vLLM counts them (--enable-mfu-metrics), active windows.",
        a.mfu_flops_per_second,
    )
    f.gauge(
        "mfu_memory_bytes_per_second",
        "Bytes read + written per GPU per second as vLLM counts them (--enable-mfu-metrics).",
        a.mfu_bytes_per_second,
    )
    f.labelled(
        "mfu_flops_ratio",
        "vLLM's achieved FLOP/s per GPU over the catalog peak (model FLOPs utilization).",
        ["estimate"],
        [([EST], a.mfu_flops_ratio)],
    )
    f.labelled(
        "mfu_bandwidth_ratio",
        "vLLM's achieved bytes/s per GPU over the catalog peak bandwidth.",
        ["estimate"],
        [([EST], a.mfu_bandwidth_ratio)],
    )


def _rules(f: _Families, d: Diagnosis) -> None:
    labels = ["rule", "name", "variant"]

    def key(s: RuleStatus) -> list[str]:
        return [s.rule, s.name, s.variant]

    evaluated = [s for s in d.rules if s.latest is not None and s.latest.skipped is None]
    f.labelled(
        "rule_firing",
        "1 if the rule fired in the latest evaluable window (~2 s), else 0.",
        labels,
        [(key(s), 1.0 if s.latest and s.latest.fired else 0.0) for s in evaluated],
    )
    f.labelled(
        "rule_fired_windows",
        "Evaluable windows of the last {H} in which the rule fired (R4: 1 while it holds).",
        labels,
        [(key(s), float(s.fired_windows)) for s in d.rules],
    )
    f.labelled(
        "rule_score_ratio",
        "Fraction of the evaluable windows of the last {H} in which the rule fired (R4: 1).",
        labels,
        [(key(s), s.score) for s in d.rules],
    )
    f.labelled(
        "rule_significant",
        "1 when the rule passed the persistence gate over the last {H}: fired in >= 3 windows "
        "and >= 25% of evaluable windows (R2: any preemption window, or KV >= 95% twice; R4: "
        "whenever it holds).",
        labels,
        [(key(s), 1.0 if s.significant else 0.0) for s in d.rules],
    )
    f.labelled(
        "rule_skipped",
        "1 when the rule could not be evaluated in the latest evaluable window, with the reason.",
        ["rule", "name", "reason"],
        [
            ([s.rule, s.name, s.latest.skipped], 1.0)
            for s in d.rules
            if s.latest is not None and s.latest.skipped is not None
        ],
    )
    f.labelled(
        "issue_info",
        "1 per significant issue group (memory, scheduling, cache_reuse): its primary rule and "
        "the fix. Numbers behind it: vllm_profile_rule_score_ratio and the series it cites.",
        ["group", "rule", "name", "fix"],
        [([g.group, g.primary.rule, g.primary.name, g.primary.fix], 1.0) for g in d.groups],
    )


def _direction(f: _Families, snap: Snapshot) -> None:
    f.gauge(
        "config_epoch",
        "Configuration epochs seen: +1 on each vLLM restart, cache_config_info change or "
        "exporter reconfiguration.",
        float(snap.epoch),
    )
    d = snap.direction
    if d is None:
        return
    f.labelled(
        "direction",
        "One-hot verdict of the last before/after comparison (a full horizon on each side of "
        "the latest configuration change): better, worse or plateau.",
        ["direction"],
        [([v], 1.0 if d.direction == v else 0.0) for v in ("better", "worse", "plateau")],
    )
    f.gauge(
        "efficiency_delta_ratio",
        "Change of efficiency per running request (after − before) at the last comparison; "
        "0.02 = +2 percentage points.",
        None if d.efficiency_delta_pp is None else d.efficiency_delta_pp / 100.0,
    )
    f.gauge(
        "throughput_delta_ratio",
        "Relative change of generated tokens/s at the last comparison (0.1 = +10%).",
        None if d.throughput_delta_pct is None else d.throughput_delta_pct / 100.0,
    )
    f.gauge(
        "ttft_p99_delta_ratio",
        "Relative change of TTFT p99 at the last comparison (0.2 = +20%, the latency veto).",
        None if d.ttft_p99_delta_pct is None else d.ttft_p99_delta_pct / 100.0,
    )


def metric_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """All families for one scrape, from one immutable snapshot."""
    return poll_families(snap, settings) + window_families(snap, settings)


def poll_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families that change with every poll: the sources' health."""
    f = _Families(settings)
    _health(f, snap)
    return f.out


def window_key(snap: Snapshot) -> tuple[object, ...]:
    """Everything :func:`window_families` reads from a snapshot. The pipeline replaces these
    objects only when a window closes or the configuration changes, so an equal key means
    the same output."""
    return (snap.agg, snap.latest, snap.latest_gate, snap.assessment, snap.diagnosis,
            snap.direction, snap.epoch, snap.max_model_len)  # fmt: skip


def window_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families derived from windows: they change when a window closes (~2 s)."""
    f = _Families(settings)
    a = snap.agg
    info = GaugeMetricFamily(
        f"{NS}_info",
        "Exporter and target facts; value always 1. gpu_catalog and model_catalog name the "
        "catalog entries matched (empty: no match, no roofline).",
        labels=[
            "version", "model", "gpu_name", "gpu_catalog", "model_catalog", "dtype",
            "dtype_source", "tensor_parallel_size", "tensor_parallel_size_source",
            "compute_peak", "mode",
        ],
    )  # fmt: skip
    gpu_name = a.gpus[0].name if a.gpus and a.gpus[0].name else ""
    res = snap.assessment.resolved if snap.assessment else None
    info.add_metric(
        [
            settings.version,
            a.model_name or ",".join(a.model_names),
            gpu_name,
            res.gpu.name if res and res.gpu else "",
            res.model_catalog if res else "",
            res.dtype if res else "",
            res.dtype_source if res else "",
            str(settings.tensor_parallel_size),
            settings.tensor_parallel_source,
            settings.compute_peak,
            "demo" if settings.demo else "live",
        ],
        1.0,
    )
    f.out.append(info)
    f.gauge("horizon_seconds", "Length of the aggregation horizon.", settings.horizon_seconds)
    f.labelled(
        "windows",
        "Windows (~2 s each) in the last {H}: total, evaluable (vLLM answered), "
        "active (under load).",
        ["kind"],
        [
            (["total"], float(a.windows_total)),
            (["evaluable"], float(a.windows_evaluable)),
            (["active"], float(a.windows_active)),
        ],
    )
    f.gauge("last_window_timestamp_seconds", "Unix time the latest window closed.", a.horizon_end)
    f.gauge(
        "horizon_start_timestamp_seconds",
        "Unix time the oldest window of the horizon opened: aggregates cover from here to "
        "vllm_profile_last_window_timestamp_seconds.",
        a.horizon_start,
    )
    f.gauge(
        "vllm_max_model_len",
        "max_model_len reported by vLLM's /v1/models (read at start and after a restart).",
        None if snap.max_model_len is None else float(snap.max_model_len),
    )
    if a.vllm_fresh:
        _vllm(f, a)
        if snap.assessment is not None:
            _roofline(f, snap.assessment, a.gpu_fresh)
        if snap.diagnosis is not None:
            _rules(f, snap.diagnosis)
    _direction(f, snap)
    if a.gpu_fresh:
        _gpu(f, a.gpus)
    return f.out


def schedule_families(stats: LoopStats) -> list[Metric]:
    """The poll schedule's own health (live polling only; absent in replay)."""
    skipped = CounterMetricFamily(
        f"{NS}_poll_skipped",
        "Scheduled polls skipped because the previous poll overran its slot (never queued).",
    )
    skipped.add_metric([], stats.skipped)
    late = GaugeMetricFamily(
        f"{NS}_poll_lateness_seconds",
        "How late polls started against their schedule, over the last 1024 polls.",
        labels=["stat"],
    )
    for stat, q in (("p99", 0.99), ("max", 1.0)):
        v = stats.lateness_quantile(q)
        if v is not None:
            late.add_metric([stat], v)
    return [skipped, late]


class SnapshotCollector(Collector):
    """Reads whatever snapshot the loop published last; O(series), no locks, no I/O.

    ``part`` selects the families: all of them, only the sources' health (changes every poll),
    or only the window-derived ones — so each can be rendered at its own pace."""

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot],
        settings: ExportSettings | Callable[[], ExportSettings],
        loop_stats: Callable[[], LoopStats] | None = None,
        part: Literal["all", "poll", "window"] = "all",
    ) -> None:
        self._get = get_snapshot
        self._settings = settings if callable(settings) else (lambda: settings)
        self._loop_stats = loop_stats
        self._part = part

    def collect(self) -> Iterator[Metric]:
        snap = self._get()
        settings = self._settings()
        if self._part != "window":
            yield from poll_families(snap, settings)
        if self._part != "poll":
            yield from window_families(snap, settings)
        if self._loop_stats is not None and self._part == "all":
            yield from schedule_families(self._loop_stats())


class ScheduleCollector(Collector):
    """The poll schedule's families alone (see :func:`schedule_families`)."""

    def __init__(self, loop_stats: Callable[[], LoopStats]) -> None:
        self._loop_stats = loop_stats

    def collect(self) -> Iterator[Metric]:
        yield from schedule_families(self._loop_stats())

    def describe(self) -> Iterator[Metric]:
        return iter(())
