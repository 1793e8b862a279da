"""Snapshot → metric families, from one table of families (as kube-state-metrics does).

Each :class:`Family` names one exported family: its name, type, HELP, label names and a function
of the snapshot giving its rows. Adding a family is adding one entry to a table; ``describe()``,
the docs check and the ``name[]`` filter all read the same tables. Fresh families are built on
every scrape from an immutable snapshot; nothing long-lived is mutated.

A value that could not be computed is not exported at all — never 0, never NaN. vLLM-derived
series are exported only while the latest window holds vLLM data, GPU series only while it holds
GPU data, so a dead source makes its figures vanish instead of going stale. The wall-clock
counters are the exporter's own and stay (they stop growing while nothing is observed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.diagnosis import FIXES, RuleStatus
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.derive.resolve import Parallelism
from exporter.derive.rules import SKIP_REASONS, scheduler_cap
from exporter.loop import LoopStats
from exporter.pipeline import Snapshot
from exporter.ratelog import rate_limited
from exporter.scrape.source import ERROR_REASONS

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
    declared: str = ""  # demo: the settings it declares rather than records, comma-separated
    compute_peak: str = "tensor"


@dataclass(frozen=True, slots=True)
class View:
    """What a family's rows are computed from: one snapshot and the settings in force."""

    snap: Snapshot
    settings: ExportSettings


S = TypeVar("S")
Row = tuple[Sequence[str], float | None]
Rows = Iterable[Row]


@dataclass(frozen=True, slots=True)
class Family(Generic[S]):
    """One exported family. ``name`` is without the namespace (and, for a counter, without
    ``_total``); ``help`` may say ``{H}`` for the horizon; ``rows`` gives (label values, value)
    pairs, and a None value is left out (the family too when no row is left)."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]
    rows: Callable[[S], Rows]

    @property
    def exposed_name(self) -> str:
        return f"{NS}_{self.name}" + ("_total" if self.type == "counter" else "")


def _exportable(name: str, value: float | None) -> bool:
    """Present and finite. Inputs are checked where they enter, so a NaN or an infinity here
    is a bug upstream: it is left out (never exported) and said once a minute."""
    if value is None:
        return False
    if math.isfinite(value):
        return True
    log.warning("not exporting %s: the computed value is %s", name, value)
    return False


def render(table: Sequence[Family[S]], source: S, horizon_seconds: float) -> list[Metric]:
    """The families of ``table`` for one scrape."""
    out: list[Metric] = []
    horizon = f"{horizon_seconds:g}s"
    for f in table:
        rows = [(lv, v) for lv, v in f.rows(source) if _exportable(f.name, v)]
        if not rows:
            continue
        cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
        m = cls(f"{NS}_{f.name}", f.help.replace("{H}", horizon), labels=list(f.labels))
        for lv, v in rows:
            assert v is not None
            m.add_metric(list(lv), v)
        out.append(m)
    return out


# --- row builders: each says when its figures are fresh enough to export --------------------

Get = Callable[[View], float | None]


def _one(get: Get) -> Callable[[View], Rows]:
    return lambda v: [((), get(v))]


def _serving(get: Callable[[Aggregate], float | None]) -> Callable[[View], Rows]:
    """vLLM-derived: only while the latest window holds vLLM data."""
    return lambda v: [((), get(v.snap.agg))] if v.snap.agg.vllm_fresh else []


def _assessed(v: View) -> Assessment | None:
    return v.snap.assessment if v.snap.agg.vllm_fresh else None


def _estimate(get: Callable[[Assessment], float | None]) -> Callable[[View], Rows]:
    """Roofline and economics: only while vLLM is fresh and an assessment exists."""

    def rows(v: View) -> Rows:
        a = _assessed(v)
        return [] if a is None else [((), get(a))]

    return rows


def _priced(get: Callable[[Assessment], float | None]) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        a = _assessed(v)
        return [] if a is None or a.price_source is None else [((a.price_source,), get(a))]

    return rows


def _per_gpu(get: Callable[[GpuAggregate], float | None]) -> Callable[[View], Rows]:
    """GPU series: only while the latest window holds GPU data."""

    def rows(v: View) -> Rows:
        agg = v.snap.agg
        return [((str(g.index), g.uuid), get(g)) for g in agg.gpus] if agg.gpu_fresh else []

    return rows


def _rules(get: Callable[[RuleStatus], float | None], evaluated_only: bool = False
           ) -> Callable[[View], Rows]:  # fmt: skip
    def rows(v: View) -> Rows:
        d = v.snap.diagnosis
        if d is None or not v.snap.agg.vllm_fresh:
            return []
        return [
            ((s.rule, s.name, s.variant), get(s))
            for s in d.rules
            if not evaluated_only or (s.latest is not None and s.latest.skipped is None)
        ]

    return rows


# --- the families that change with every poll: the sources' health ---------------------------


def _health(get: Callable[[View, str], float | None]) -> Callable[[View], Rows]:
    return lambda v: [((s,), get(v, s)) for s in v.snap.health]


def _errors(v: View) -> Rows:
    for source, h in v.snap.health.items():
        reasons = dict.fromkeys(ERROR_REASONS.get(source, ()), 0)
        reasons.update(h.errors)
        for reason, n in sorted(reasons.items()):
            yield (source, reason), float(n)


POLL_FAMILIES: tuple[Family[View], ...] = (
    Family("up", "gauge", "1 if the source answered its last poll, else 0.", ("source",),
           _health(lambda v, s: 1.0 if v.snap.health[s].up else 0.0)),
    Family("last_poll_timestamp_seconds", "gauge",
           "Unix time of the source's last successful poll.", ("source",),
           _health(lambda v, s: v.snap.health[s].last_success)),
    Family("poll_duration_seconds", "gauge", "How long the source's last poll took.",
           ("source",), _health(lambda v, s: v.snap.health[s].last_duration)),
    Family("poll_interval_seconds", "gauge",
           "Seconds that passed between polls of the source: the mean of the last 8 gaps, as "
           "they happened (a target slower than the schedule is polled less often).",
           ("source",), _health(lambda v, s: v.snap.health[s].measured_interval)),
    Family("poll_schedule_seconds", "gauge",
           "The cadence planned: seconds between polls of the source (vLLM: --poll-interval "
           "while anything could spike, --calm-poll-interval otherwise; dcgm: as often as it "
           "refreshes).", ("source",), _health(lambda v, s: v.snap.health[s].interval)),
    Family("polls", "counter",
           "Polls made of the source, answered or failed: the load the exporter puts on it.",
           ("source",), _health(lambda v, s: float(v.snap.health[s].polls))),
    Family("poll_errors", "counter",
           "Failed polls by source and reason (timeout, connection, http_status, malformed, ...); "
           "every known reason is exported from the first poll, at 0 until it happens.",
           ("source", "reason"), _errors),
)  # fmt: skip


# --- the families derived from windows: they change when a window closes (~2 s) -------------

ESTIMATE = (
    "Estimate from the catalog (peak FLOP/s and bandwidth of the GPU, parameter count of the "
    "model), over the active windows of the last {H}. "
)
ACTIVE = (
    f"active windows (running requests and load: KV above {T.ACTIVE_KV_PCT:g}% or GPU "
    f"utilization above {T.ACTIVE_GPU_UTIL_PCT:g}%)"
)


def _info(v: View) -> Rows:
    a, settings = v.snap.agg, v.settings
    res = v.snap.assessment.resolved if v.snap.assessment else None
    return [(
        (settings.version, a.model_name or ",".join(a.model_names),
         a.gpus[0].name if a.gpus and a.gpus[0].name else "",
         res.gpu.name if res and res.gpu else "", res.model_catalog if res else "",
         res.model_root if res else "", res.model_matched_on if res else "",
         res.dtype if res else "", res.dtype_source if res else "",
         *_parallelism(res.parallelism if res else None), v.snap.config_id,
         settings.compute_peak, "demo" if settings.demo else "live", settings.declared),
        1.0,
    )]  # fmt: skip


def _parallelism(p: Parallelism | None) -> tuple[str, ...]:
    """TP, PP and their sources: empty until a window resolves them (TP may come from the GPUs
    seen)."""
    if p is None:
        return ("",) * 4
    return str(p.tp), p.tp_source, str(p.pp), p.pp_source


def _kv_headroom(v: View) -> Rows:
    a = _assessed(v)
    if a is None or not v.snap.agg.gpu_fresh:
        return []
    return [((str(g.index), g.uuid), kv) for g, kv in a.roofline.kv_headroom_bytes]


def _gmu(v: View) -> Rows:
    a = _assessed(v)
    return [] if a is None else [((a.gpu_memory_utilization_source,), a.gpu_memory_utilization)]


def _unavailable(v: View) -> Rows:
    a = _assessed(v)
    return [] if a is None else [((reason,), 1.0) for reason in a.reasons]


def _skipped(v: View) -> Rows:
    d = v.snap.diagnosis
    if d is None or not v.snap.agg.vllm_fresh:
        return []
    return [
        ((s.rule, s.name, s.latest.skipped), 1.0)
        for s in d.rules
        if s.latest is not None and s.latest.skipped is not None
    ]


def _issues(v: View) -> Rows:
    d = v.snap.diagnosis
    if d is None or not v.snap.agg.vllm_fresh:
        return []
    return [((g.group, g.primary.rule, g.primary.name, g.primary.fix_code), 1.0) for g in d.groups]


def _direction(v: View) -> Rows:
    d = v.snap.direction
    if d is None:
        return []
    return [((x,), 1.0 if d.direction == x else 0.0) for x in ("better", "worse", "plateau")]


def _delta(get: Callable[[View], float | None]) -> Callable[[View], Rows]:
    """A direction figure in percent (or pp) as a ratio."""

    def rows(v: View) -> Rows:
        x = get(v)
        return [((), None if x is None else x / 100.0)]

    return rows


def _dollars(v: View) -> Rows:
    dollars = dict(v.snap.ledger.dollars)
    a = v.snap.assessment
    if a is not None and a.price_source is not None:
        dollars.setdefault(a.price_source, 0.0)  # a known price starts its series at 0
    return [((source,), x) for source, x in sorted(dollars.items())]


def _slo_target(kind: str) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        slo = v.snap.slo
        return [] if slo is None else [((), dict(slo.targets.items()).get(kind))]

    return rows


def _slo_attainment(kind: str) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        slo = v.snap.slo
        return [] if slo is None or not v.snap.agg.vllm_fresh else [((), slo.attainment.get(kind))]

    return rows


def _slo_count(kind: str, good: bool) -> Callable[[View], Rows]:
    """From 0 once the objective is set, so the first bad request is an increase."""

    def rows(v: View) -> Rows:
        slo = v.snap.slo
        if slo is None or kind not in dict(slo.targets.items()):
            return []
        counts = v.snap.ledger.slo.get(kind, (0.0, 0.0))
        return [((), counts[0] if good else counts[1])]

    return rows


def _goodput(v: View) -> Rows:
    slo = v.snap.slo
    return [] if slo is None or not v.snap.agg.vllm_fresh else [((), slo.goodput_tps)]


def _occupancy(v: View) -> float | None:
    running = v.snap.agg.running
    cap = scheduler_cap(v.settings.max_num_seqs, v.snap.agg.engines)
    return None if running is None or not cap else running / cap


SIGNIFICANT = (
    f"1 when the rule passed the persistence gate over the last {{H}}: fired in >= "
    f"{T.PERSIST_MIN_WINDOWS} windows and >= {T.PERSIST_MIN_SHARE:.0%} of evaluable windows "
    f"(R2: any window with preemptions, or KV >= {T.R2_KV_CRITICAL_AT_LEAST:.0%} in "
    f"{T.R2_CRITICAL_WINDOWS} windows; R4: whenever it holds)."
)

WINDOW_FAMILIES: tuple[Family[View], ...] = (
    # Exporter and horizon
    Family("info", "gauge",
           "Exporter and target facts; value always 1. gpu_catalog and model_catalog name the "
           "catalog entries matched (empty: no match, no roofline); model_matched_on says which "
           "name matched: served_name, root (what a --served-model-name alias serves, from "
           "/v1/models) or flag (--model-params). tensor_parallel_size_source: flag, env, gpus "
           "(the GPUs seen / (PP x DP engines)) or default. config_id: the serving "
           "configuration's identity (models, vLLM's cache settings, DP engines, the settings "
           "declared here, --config-revision), the same wherever it runs. mode=demo: a bundled "
           "recording, with "
           "the settings named in declared given by the demo, not recorded.",
           ("version", "model", "gpu_name", "gpu_catalog", "model_catalog", "model_root",
            "model_matched_on", "dtype",
            "dtype_source", "tensor_parallel_size", "tensor_parallel_size_source",
            "pipeline_parallel_size", "pipeline_parallel_size_source", "config_id",
            "compute_peak", "mode", "declared"), _info),
    Family("horizon_seconds", "gauge", "Length of the aggregation horizon.", (),
           _one(lambda v: v.settings.horizon_seconds)),
    Family("windows", "gauge", "Windows (~2 s each) in the last {H}.", (),
           _one(lambda v: float(v.snap.agg.windows_total))),
    Family("evaluable_windows", "gauge",
           "Windows of the last {H} in which vLLM answered (rules are evaluated on these).", (),
           _one(lambda v: float(v.snap.agg.windows_evaluable))),
    Family("active_windows", "gauge", "Windows of the last {H} under load: " + ACTIVE + ".", (),
           _one(lambda v: float(v.snap.agg.windows_active))),
    Family("last_window_timestamp_seconds", "gauge", "Unix time the latest window closed.", (),
           _one(lambda v: v.snap.agg.horizon_end)),
    Family("horizon_start_timestamp_seconds", "gauge",
           "Unix time the oldest window of the horizon opened: aggregates cover from here to "
           "vllm_profile_last_window_timestamp_seconds.", (),
           _one(lambda v: v.snap.agg.horizon_start)),
    Family("vllm_max_model_len", "gauge",
           "max_model_len reported by vLLM's /v1/models (read at start and after a restart).", (),
           _one(lambda v: None if v.snap.max_model_len is None else float(v.snap.max_model_len))),
    # Serving, from vLLM's /metrics
    Family("generation_tokens_per_second", "gauge",
           "Generated tokens per second, time-weighted over the " + ACTIVE + " of the last {H}. "
           "From vllm:generation_tokens_total.", (), _serving(lambda a: a.generation_tps)),
    Family("prompt_tokens_per_second", "gauge",
           "Prompt tokens per second (cached included), over the active windows of the last {H}. "
           "From vllm:prompt_tokens_total.", (), _serving(lambda a: a.prompt_tps)),
    Family("requests_per_second", "gauge",
           "Finished requests per second, over the active windows of the last {H}. "
           "From vllm:request_success_total (all finished_reason).", (),
           _serving(lambda a: a.requests_per_second)),
    Family("finished_requests_ratio", "gauge",
           "Share of the requests finished in the evaluable windows of the last {H}, by vLLM's "
           "finished_reason (stop, length, abort, error, repetition). From "
           "vllm:request_success_total; vLLM 0.13 and later do not count client aborts.",
           ("finished_reason",),
           lambda v: sorted(((r,), x) for r, x in v.snap.agg.finished_ratio_by_reason.items())
           if v.snap.agg.vllm_fresh else []),
    Family("preemptions_per_second", "gauge",
           "Preemptions per second, over the active windows of the last {H}. "
           "From vllm:num_preemptions_total.", (), _serving(lambda a: a.preemptions_per_second)),
    Family("requests_running", "gauge",
           "Running requests, time-weighted mean over the evaluable windows of the last {H} "
           "(sampled every poll, so short bursts count). From vllm:num_requests_running.", (),
           _serving(lambda a: a.running)),
    Family("requests_waiting", "gauge",
           "Waiting requests, time-weighted mean over the evaluable windows of the last {H}. "
           "From vllm:num_requests_waiting.", (), _serving(lambda a: a.waiting)),
    Family("scheduler_occupancy_ratio", "gauge",
           "Running requests / (--max-num-seqs x data-parallel engines), over the evaluable "
           "windows of the last {H}.", (),
           lambda v: [((), _occupancy(v))] if v.snap.agg.vllm_fresh else []),
    Family("data_parallel_engines", "gauge",
           "vLLM data-parallel engines (the engine label's values on vllm:num_requests_running) "
           "in the latest evaluable window: the ceilings and the --max-num-seqs cap count each.",
           (), lambda v: ([((), float(v.snap.agg.engines))]
                          if v.snap.agg.vllm_fresh and v.snap.agg.engines > 0 else [])),
    Family("kv_cache_usage_mean_ratio", "gauge",
           "KV cache usage 0-1, time-weighted mean over the evaluable windows of the last {H}. "
           "From vllm:kv_cache_usage_perc (max over engines).", (),
           _serving(lambda a: a.kv_usage_mean)),
    Family("kv_cache_usage_peak_ratio", "gauge",
           "KV cache usage 0-1, the highest poll over the evaluable windows of the last {H} "
           "(catches spikes a 15 s scrape misses).", (), _serving(lambda a: a.kv_usage_peak)),
    Family("prefix_cache_hit_ratio", "gauge",
           "Prefix cache hits / queries (tokens) over the evaluable windows of the last {H}. "
           "From vllm:prefix_cache_hits_total and vllm:prefix_cache_queries_total.", (),
           _serving(lambda a: a.prefix_hit_ratio)),
    Family("time_to_first_token_mean_seconds", "gauge",
           "Time to first token, mean (sum delta / count delta) over the active windows of the "
           "last {H}. From vllm:time_to_first_token_seconds.", (),
           _serving(lambda a: a.ttft_mean)),
    Family("time_to_first_token_p99_seconds", "gauge",
           "Time to first token, 99th percentile over the active windows of the last {H}, "
           "interpolated from merged per-window bucket deltas (never an average of p99s).", (),
           _serving(lambda a: a.ttft_p99)),
    Family("time_per_output_token_mean_seconds", "gauge",
           "Time per output token, mean over the active windows of the last {H}. From "
           "vllm:request_time_per_output_token_seconds, else vllm:inter_token_latency_seconds.",
           (), _serving(lambda a: a.tpot_mean)),
    Family("time_per_output_token_p99_seconds", "gauge",
           "Time per output token, 99th percentile over the active windows of the last {H} (as "
           "for TTFT).", (), _serving(lambda a: a.tpot_p99)),
    Family("prefill_time_mean_seconds", "gauge",
           "Request prefill time, mean over the active windows of the last {H}. "
           "From vllm:request_prefill_time_seconds.", (), _serving(lambda a: a.prefill_time_mean)),
    Family("queue_time_mean_seconds", "gauge",
           "Request queue time, mean over the active windows of the last {H}. "
           "From vllm:request_queue_time_seconds.", (), _serving(lambda a: a.queue_time_mean)),
    Family("prompt_tokens_mean", "gauge",
           "Mean prompt length (tokens) of requests finished in the evaluable windows of the last "
           "{H}. From vllm:request_prompt_tokens.", (), _serving(lambda a: a.prompt_tokens_mean)),
    # GPUs
    Family("gpu_utilization_ratio", "gauge",
           "GPU utilization 0-1 (NVML utilization.gpu), mean over the active windows of the last "
           "{H}.", ("gpu", "UUID"), _per_gpu(lambda g: g.util_ratio)),
    Family("gpu_memory_controller_busy_ratio", "gauge",
           "Share of time 0-1 the GPU's memory controller was reading or writing (NVML "
           "utilization.memory), mean over the active windows of the last {H}. Not memory "
           "capacity: see gpu_memory_used_bytes.", ("gpu", "UUID"),
           _per_gpu(lambda g: g.mem_util_ratio)),
    Family("gpu_power_watts", "gauge",
           "GPU power draw, mean over the active windows of the last {H} (NVML power usage).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.power_watts)),
    Family("gpu_power_limit_watts", "gauge", "Enforced GPU power limit (NVML, read once at start).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.power_limit_watts)),
    Family("gpu_memory_used_bytes", "gauge", "GPU memory used at the latest poll.",
           ("gpu", "UUID"), _per_gpu(lambda g: g.mem_used_bytes)),
    Family("gpu_memory_used_peak_bytes", "gauge",
           "GPU memory used, the highest poll over the last {H} (never below the latest).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.mem_used_peak_bytes)),
    Family("gpu_memory_total_bytes", "gauge", "GPU memory total (NVML).", ("gpu", "UUID"),
           _per_gpu(lambda g: g.mem_total_bytes)),
    Family("gpu_temperature_celsius", "gauge", "GPU temperature at the latest poll.",
           ("gpu", "UUID"), _per_gpu(lambda g: g.temperature_c)),
    Family("gpu_temperature_peak_celsius", "gauge",
           "GPU temperature, the highest poll over the last {H} (never below the latest).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.temperature_peak_c)),
    Family("gpu_sm_clock_hertz", "gauge", "SM clock at the latest poll (NVML).", ("gpu", "UUID"),
           _per_gpu(lambda g: g.sm_clock_hz)),
    Family("gpu_dram_bandwidth_utilization_ratio", "gauge",
           "Measured DRAM bandwidth utilization 0-1 (NVML GPM, Hopper and newer), mean over the "
           "active windows of the last {H}. Absent where GPM is unsupported.", ("gpu", "UUID"),
           _per_gpu(lambda g: g.dram_bw_util_ratio)),
    # Roofline (estimates)
    Family("decode_stream_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Decode ceiling of one sequence (bandwidth-bound), TP-scaled.", (),
           _estimate(lambda a: a.roofline.stream_tps)),
    Family("decode_batch_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Decode ceiling at the current mean batch, TP-scaled.", (),
           _estimate(lambda a: a.roofline.batch_tps)),
    Family("decode_hardware_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Compute-bound decode maximum, TP-scaled.", (),
           _estimate(lambda a: a.roofline.hardware_tps)),
    Family("prefill_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Prompt tokens/s the GPUs could process at their compute peak.", (),
           _estimate(lambda a: a.roofline.prefill_ceiling_tps)),
    Family("efficiency_ratio", "gauge",
           ESTIMATE + "Generated tokens/s over the hardware decode ceiling: how much of what was "
           "paid for is used. Calibrated for decode-bound work; prefill-heavy traffic reads low.",
           (), _estimate(lambda a: a.roofline.efficiency)),
    Family("batch_efficiency_ratio", "gauge",
           ESTIMATE + "Generated tokens/s over the ceiling at the current batch: low efficiency "
           "with high batch efficiency means too little concurrency; low batch efficiency means "
           "overhead.", (), _estimate(lambda a: a.roofline.batch_efficiency)),
    Family("headroom_ratio", "gauge",
           ESTIMATE + "Unused fraction of the hardware decode ceiling (1 - efficiency).", (),
           _estimate(lambda a: a.roofline.headroom)),
    Family("ridge_batch_size", "gauge",
           ESTIMATE + "Concurrent sequences at which decode turns from bandwidth- to "
           "compute-bound.", (), _estimate(lambda a: a.roofline.ridge_batch_size)),
    Family("tpot_floor_seconds", "gauge",
           ESTIMATE + "Shortest possible time per output token at the current batch.", (),
           _estimate(lambda a: a.roofline.tpot_floor_seconds)),
    Family("prefill_floor_seconds", "gauge",
           ESTIMATE + "Shortest possible prefill of the mean prompt; not shown at or above the "
           "ridge.", (), _estimate(lambda a: a.roofline.prefill_floor_seconds)),
    Family("model_weight_bytes", "gauge",
           "Estimate: model weight bytes, total parameters x bytes per parameter (catalog).", (),
           _estimate(lambda a: a.roofline.weight_bytes)),
    Family("kv_headroom_bytes", "gauge",
           "Estimate per GPU: memory total x vLLM's gpu_memory_utilization - weight bytes / TP. "
           "Negative: the tensor-parallel size is too small for the model.", ("gpu", "UUID"),
           _kv_headroom),
    Family("vllm_config_gpu_memory_utilization_ratio", "gauge",
           "vLLM's --gpu-memory-utilization setting (the share of GPU memory vLLM may use), as "
           "used for KV headroom; source=default means 1.0 assumed.", ("source",), _gmu),
    Family("roofline_unavailable", "gauge",
           "1 per reason a roofline figure is absent: unknown_gpu, unknown_model, "
           "several_models, no_gpu_data, gpu_has_price_only, no_tensor_peak_in_catalog, "
           "no_fp32_peak_in_catalog, no_load, actual_above_ceiling, parallelism_mismatch.",
           ("reason",), _unavailable),
    Family("mfu_flops_per_second", "gauge",
           "Achieved FLOP/s per GPU as vLLM counts them (--enable-mfu-metrics), active windows.",
           (), _estimate(lambda a: a.mfu_flops_per_second)),
    Family("mfu_memory_bytes_per_second", "gauge",
           "Bytes read + written per GPU per second as vLLM counts them (--enable-mfu-metrics).",
           (), _estimate(lambda a: a.mfu_bytes_per_second)),
    Family("mfu_flops_ratio", "gauge",
           "Estimate: vLLM's achieved FLOP/s per GPU over the catalog peak (model FLOPs "
           "utilization).", (), _estimate(lambda a: a.mfu_flops_ratio)),
    Family("mfu_bandwidth_ratio", "gauge",
           "Estimate: vLLM's achieved bytes/s per GPU over the catalog peak bandwidth.", (),
           _estimate(lambda a: a.mfu_bandwidth_ratio)),
    # Energy and money: the active basis (busy time) and the wall-clock basis
    Family("gpu_power_total_watts", "gauge",
           "Power of all the server's GPUs, mean over the active windows of the last {H}.", (),
           _estimate(lambda a: a.power_watts)),
    Family("active_energy_per_token_joules", "gauge",
           "GPU energy per generated token over the active windows of the last {H}; from the "
           "GPUs' energy counters where they exist, else mean power / throughput.", (),
           _estimate(lambda a: a.economics.joules_per_token)),
    Family("cost_per_hour_dollars", "gauge",
           "Server cost per hour: --cost-per-hour (price_source=flag), or catalog price x GPUs.",
           ("price_source",), _priced(lambda a: a.economics.cost_per_hour)),
    Family("active_cost_per_million_tokens_dollars", "gauge",
           "Dollars per million generated tokens while serving: the cost per hour over the "
           "throughput of the active windows of the last {H} (the marginal cost of a token).",
           ("price_source",), _priced(lambda a: a.economics.cost_per_million_tokens)),
    Family("active_recoverable_cost_per_hour_dollars", "gauge",
           "Estimate: cost per hour x (1 - efficiency) while serving: what the unused ceiling "
           "costs during busy time.", ("price_source",),
           _priced(lambda a: a.economics.recoverable_per_hour)),
    Family("duty_cycle_ratio", "gauge",
           "Share of the observed time of the last {H} spent under load (active seconds / "
           "seconds in which vLLM answered).", (), _estimate(lambda a: a.economics.duty_cycle)),
    Family("wall_clock_cost_per_million_tokens_dollars", "gauge",
           "Dollars per million generated tokens counting every observed second, busy or idle, "
           "of the last {H}: what the tokens really cost.", ("price_source",),
           _priced(lambda a: a.economics.wall_cost_per_million_tokens)),
    Family("wall_clock_recoverable_cost_per_hour_dollars", "gauge",
           "Estimate: cost per hour x (1 - duty cycle x efficiency) over the last {H}: idle "
           "capacity counts as recoverable, and a fully idle server's whole cost is.",
           ("price_source",), _priced(lambda a: a.economics.wall_recoverable_per_hour)),
    Family("observed_seconds", "counter",
           "Seconds in which vLLM answered (evaluable windows) since the exporter started; "
           "survives vLLM restarts.", (), _one(lambda v: v.snap.ledger.observed_seconds)),
    Family("active_seconds", "counter",
           "Of those, seconds under load (active windows): increase(active) / increase(observed) "
           "is the duty cycle over any range.", (),
           _one(lambda v: v.snap.ledger.active_seconds)),
    Family("observed_generation_tokens", "counter",
           "Tokens generated in the observed seconds since the exporter started (summed over "
           "vLLM restarts).", (), _one(lambda v: v.snap.ledger.generation_tokens)),
    Family("observed_cost_dollars", "counter",
           "Cost accrued over the observed seconds (cost per hour x seconds / 3600): "
           "increase(this) / increase(observed_generation_tokens) is the wall-clock cost of a "
           "token over any range.", ("price_source",), _dollars),
    Family("observed_gpu_energy_joules", "counter",
           "Energy of all the server's GPUs over the observed seconds (energy counters where "
           "they exist, else mean power x time).", (),
           _one(lambda v: v.snap.ledger.energy_joules)),
    Family("observed_finished_requests", "counter",
           "Requests vLLM finished in the observed seconds since the exporter started, by how "
           "they ended (vLLM's finished_reason: stop, length, abort, error); summed over vLLM "
           "restarts: a service's error ratio is the sum over its pods.", ("finished_reason",),
           lambda v: sorted(((r,), n) for r, n in v.snap.ledger.finished.items())),
    # Latency objectives (--slo-ttft, --slo-tpot)
    Family("slo_ttft_target_seconds", "gauge", "The TTFT objective (--slo-ttft).", (),
           _slo_target("ttft")),
    Family("slo_tpot_target_seconds", "gauge", "The TPOT objective (--slo-tpot).", (),
           _slo_target("tpot")),
    Family("slo_ttft_attainment_ratio", "gauge",
           "Share of the requests finished in the evaluable windows of the last {H} whose time "
           "to first token met the objective (counted from vLLM's histogram buckets: exact at a "
           "bucket bound, else interpolated inside one bucket).", (),
           _slo_attainment("ttft")),
    Family("slo_tpot_attainment_ratio", "gauge",
           "Share of the requests (tokens, where vLLM only has inter-token latency) of the "
           "evaluable windows of the last {H} whose time per output token met the objective.",
           (), _slo_attainment("tpot")),
    Family("goodput_tokens_per_second", "gauge",
           "Generated tokens/s of requests meeting every objective set, approximated from above "
           "(tokens/s x the lowest attainment: the histograms do not say which requests missed "
           "both), over the last {H}.", (), _goodput),
    Family("slo_ttft_requests", "counter",
           "Requests finished in the observed seconds since the exporter started, with a TTFT "
           "objective set: the denominator of burn-rate alerts.", (), _slo_count("ttft", False)),
    Family("slo_ttft_good_requests", "counter",
           "Of those, the requests whose time to first token met the objective.", (),
           _slo_count("ttft", True)),
    Family("slo_tpot_requests", "counter",
           "Requests (tokens, where vLLM only has inter-token latency) finished in the observed "
           "seconds with a TPOT objective set.", (), _slo_count("tpot", False)),
    Family("slo_tpot_good_requests", "counter",
           "Of those, the ones whose time per output token met the objective.", (),
           _slo_count("tpot", True)),
    # Rules, issues and direction
    Family("rule_firing", "gauge",
           "1 if the rule fired in the latest evaluable window (~2 s), else 0.",
           ("rule", "name", "variant"),
           _rules(lambda s: 1.0 if s.latest and s.latest.fired else 0.0, evaluated_only=True)),
    Family("rule_fired_windows", "gauge",
           "Evaluable windows of the last {H} in which the rule fired (R4: 1 while it holds).",
           ("rule", "name", "variant"), _rules(lambda s: float(s.fired_windows))),
    Family("rule_score_ratio", "gauge",
           "Fraction of the evaluable windows of the last {H} in which the rule fired (R4: 1).",
           ("rule", "name", "variant"), _rules(lambda s: s.score)),
    Family("rule_significant", "gauge", SIGNIFICANT, ("rule", "name", "variant"),
           _rules(lambda s: 1.0 if s.significant else 0.0)),
    Family("rule_skipped", "gauge",
           "1 while the rule cannot be evaluated in the latest evaluable window; reason: "
           + ", ".join(SKIP_REASONS) + ".", ("rule", "name", "reason"), _skipped),
    Family("issue_info", "gauge",
           "1 per significant issue group (memory, scheduling, cache_reuse): its primary rule "
           "and the fix as a code (" + ", ".join(FIXES) + "). The numbers behind it: "
           "vllm_profile_rule_score_ratio and the series it cites.",
           ("group", "rule", "name", "fix"), _issues),
    Family("config_epoch", "gauge",
           "Configuration epochs seen: +1 on each vLLM restart, cache_config_info change or "
           "exporter reconfiguration.", (), _one(lambda v: float(v.snap.epoch))),
    Family("config_epoch_info", "gauge",
           "1 for what started the current configuration epoch: vllm_restart (into another "
           "configuration), vllm_restart_same_config (a restart that kept its configuration: "
           "not a configuration change), cache_config_change or reconfigured; absent before "
           "the first.", ("cause",),
           lambda v: [((v.snap.epoch_cause,), 1.0)] if v.snap.epoch_cause else []),
    Family("direction", "gauge",
           "One-hot verdict of the last before/after comparison (a full horizon on each side of "
           "the latest configuration change): better, worse or plateau.", ("direction",),
           _direction),
    Family("efficiency_delta_ratio", "gauge",
           "Change of efficiency per running request (after - before) at the last comparison; "
           "0.02 = +2 percentage points.", (),
           _delta(lambda v: v.snap.direction.efficiency_delta_pp if v.snap.direction else None)),
    Family("throughput_delta_ratio", "gauge",
           "Relative change of generated tokens/s at the last comparison (0.1 = +10%).", (),
           _delta(lambda v: v.snap.direction.throughput_delta_pct if v.snap.direction else None)),
    Family("ttft_p99_delta_ratio", "gauge",
           f"Relative change of TTFT p99 at the last comparison (0.2 = +20%; above "
           f"+{T.LATENCY_VETO_TTFT_P99_PCT:g}% it vetoes better).", (),
           _delta(lambda v: v.snap.direction.ttft_p99_delta_pct if v.snap.direction else None)),
)  # fmt: skip


# --- the poll schedule's own health (live polling only) --------------------------------------

SCHEDULE_FAMILIES: tuple[Family[LoopStats], ...] = (
    Family("poll_skipped", "counter",
           "Scheduled polls skipped because the previous poll overran its slot (never queued).",
           (), lambda st: [((), float(st.skipped))]),
    Family("poll_lateness_p99_seconds", "gauge",
           "How late polls started against their schedule, 99th percentile over the last 1024 "
           "polls.", (), lambda st: [((), st.lateness_quantile(0.99))]),
    Family("poll_lateness_max_seconds", "gauge",
           "How late the latest of the last 1024 polls started against its schedule.", (),
           lambda st: [((), st.lateness_quantile(1.0))]),
)  # fmt: skip

ALL_FAMILIES: tuple[Family[View] | Family[LoopStats], ...] = (
    POLL_FAMILIES + WINDOW_FAMILIES + SCHEDULE_FAMILIES
)


def metric_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """All snapshot families for one scrape, from one immutable snapshot."""
    return poll_families(snap, settings) + window_families(snap, settings)


def poll_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families that change with every poll: the sources' health."""
    return render(POLL_FAMILIES, View(snap, settings), settings.horizon_seconds)


def window_key(snap: Snapshot) -> tuple[object, ...]:
    """Everything :func:`window_families` reads from a snapshot. The pipeline replaces these
    objects only when a window closes or the configuration changes, so an equal key means
    the same output."""
    return (snap.agg, snap.latest, snap.latest_gate, snap.assessment, snap.diagnosis,
            snap.direction, snap.epoch, snap.max_model_len, snap.ledger, snap.slo,
            snap.epoch_cause, snap.config_id)  # fmt: skip


def window_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families derived from windows: they change when a window closes (~2 s)."""
    return render(WINDOW_FAMILIES, View(snap, settings), settings.horizon_seconds)


def schedule_families(stats: LoopStats) -> list[Metric]:
    """The poll schedule's own health (live polling only; absent in replay)."""
    return render(SCHEDULE_FAMILIES, stats, 0.0)


def _described(table: Iterable[Family[View] | Family[LoopStats]]) -> Iterator[Metric]:
    for f in table:
        cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
        yield cls(f"{NS}_{f.name}", f.help, labels=list(f.labels))


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

    def describe(self) -> Iterator[Metric]:
        tables: list[Family[View] | Family[LoopStats]] = []
        if self._part != "window":
            tables += POLL_FAMILIES
        if self._part != "poll":
            tables += WINDOW_FAMILIES
        if self._loop_stats is not None and self._part == "all":
            tables += SCHEDULE_FAMILIES
        return _described(tables)


class ScheduleCollector(Collector):
    """The poll schedule's families alone (see :func:`schedule_families`)."""

    def __init__(self, loop_stats: Callable[[], LoopStats]) -> None:
        self._loop_stats = loop_stats

    def collect(self) -> Iterator[Metric]:
        yield from schedule_families(self._loop_stats())

    def describe(self) -> Iterator[Metric]:
        return _described(SCHEDULE_FAMILIES)
