"""Roofline, measured counterparts and economics for one horizon aggregate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.derive import economics, roofline
from exporter.derive.horizon import Aggregate
from exporter.derive.resolve import Resolved, RooflineSettings, resolve


@dataclass(frozen=True, slots=True)
class Assessment:
    resolved: Resolved
    roofline: roofline.Roofline
    economics: economics.Economics
    price_source: str | None  # "flag", "catalog_on_demand", "catalog_spot"
    power_watts: float | None  # summed over the server's GPUs, active windows
    gpu_memory_utilization: float
    gpu_memory_utilization_source: str  # "vllm" (cache_config_info) or "default"
    mfu_flops_per_second: float | None = None  # per GPU, vLLM's analytic count
    mfu_bytes_per_second: float | None = None
    mfu_flops_ratio: float | None = None  # / catalog peak
    mfu_bandwidth_ratio: float | None = None
    reasons: tuple[str, ...] = ()


def _cost(s: RooflineSettings, res: Resolved, gpu_count: int) -> tuple[float | None, str | None]:
    """--cost-per-hour → catalog price × GPU count (estimate) → absent."""
    if s.cost_per_hour is not None:
        return s.cost_per_hour, "flag"
    if res.gpu is None or gpu_count == 0:
        return None, None
    price = res.gpu.price_spot if s.price == "spot" else res.gpu.price_on_demand
    if price is None:
        return None, None
    return price * gpu_count, "catalog_spot" if s.price == "spot" else "catalog_on_demand"


def _gmu(v: float | None) -> tuple[float, str]:
    return (v, "vllm") if v is not None and 0 < v <= 1 else (1.0, "default")


def _positive(v: float | None) -> float | None:
    # vLLM exports the MFU counters at 0 unless --enable-mfu-metrics is on: 0 means "not on".
    return v if v is not None and v > 0 else None


def assess(
    agg: Aggregate, s: RooflineSettings, roots: Mapping[str, str] | None = None
) -> Assessment:
    """``roots``: each served name's root from ``/v1/models`` (matched when the name is not)."""
    name = agg.model_name if len(agg.model_names) <= 1 else None
    res = resolve(
        s,
        model_name=name,
        model_root=(roots or {}).get(name) if name else None,
        several_models=len(agg.model_names) > 1,
        gpu_names=[g.name or "" for g in agg.gpus],
        cache_dtype=agg.serving.cache_dtype,
        engines=agg.engines,
    )
    gmu, gmu_source = _gmu(agg.serving.gpu_memory_utilization)
    memories = tuple(
        roofline.GpuMemory(g.index, g.uuid, g.mem_total_bytes)
        for g in agg.gpus
        if g.mem_total_bytes is not None and res.parallelism.consistent
    )
    roof = roofline.compute(
        res.inputs,
        batch=agg.running_active,
        actual_tps=agg.generation_tps,
        prompt_tokens_mean=agg.prompt_tokens_mean,
        gpus=memories,
        gpu_memory_utilization=gmu,
        replicas=agg.engines,
    )
    powers = [g.power_watts for g in agg.gpus]
    power = sum(p for p in powers if p is not None) if powers and None not in powers else None
    cost, price_source = _cost(s, res, len(agg.gpus))
    econ = economics.compute(
        actual_tps=agg.generation_tps,
        power_watts=power,
        cost_per_hour=cost,
        efficiency=roof.efficiency,
        energy_joules=agg.energy_joules,
        energy_tokens=agg.energy_tokens,
        observed_seconds=agg.observed_seconds,
        active_seconds=agg.active_seconds,
        observed_tokens=agg.observed_tokens,
        observed_token_seconds=agg.observed_token_seconds,
    )
    flops_s = _positive(agg.est_flops_per_second)
    bytes_s = _positive(agg.est_bytes_per_second)
    peak_f, peak_b = res.inputs.peak_flops, res.inputs.peak_bw
    return Assessment(
        resolved=res,
        roofline=roof,
        economics=econ,
        price_source=price_source,
        power_watts=power,
        gpu_memory_utilization=gmu,
        gpu_memory_utilization_source=gmu_source,
        mfu_flops_per_second=flops_s,
        mfu_bytes_per_second=bytes_s,
        mfu_flops_ratio=flops_s / peak_f if flops_s and peak_f else None,
        mfu_bandwidth_ratio=bytes_s / peak_b if bytes_s and peak_b else None,
        reasons=tuple(dict.fromkeys(res.reasons + roof.reasons)),
    )
