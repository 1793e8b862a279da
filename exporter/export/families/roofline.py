"""Roofline estimates from the catalog, and their measured counterparts."""

from __future__ import annotations

from exporter.derive.roofline_reasons import REASONS
from exporter.export.families.base import (
    ENGINE,
    ENGINE_GPU,
    ESTIMATE,
    Family,
    Rows,
    View,
    _assessed,
    _estimate,
)


def _kv_headroom(v: View) -> Rows:
    a = _assessed(v)
    if a is None:
        return []
    return [((str(g.index), g.uuid), kv) for g, kv in a.roofline.kv_headroom_bytes]


def _gmu(v: View) -> Rows:
    a = _assessed(v)
    return [] if a is None else [((a.gpu_memory_utilization_source,), a.gpu_memory_utilization)]


def _unavailable(v: View) -> Rows:
    a = _assessed(v)
    return [] if a is None else [((reason,), 1.0) for reason in a.reasons]


FAMILIES: tuple[Family[View], ...] = (
    Family("decode_stream_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Decode ceiling of one sequence (bandwidth-bound), TP-scaled.", (),
           _estimate(lambda a: a.roofline.stream_tps), needs=ENGINE),
    Family("decode_batch_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Decode ceiling at the current mean batch, TP-scaled.", (),
           _estimate(lambda a: a.roofline.batch_tps), needs=ENGINE),
    Family("decode_hardware_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Compute-bound decode maximum, TP-scaled.", (),
           _estimate(lambda a: a.roofline.hardware_tps), needs=ENGINE),
    Family("prefill_ceiling_tokens_per_second", "gauge",
           ESTIMATE + "Prompt tokens/s the GPUs could process at their compute peak.", (),
           _estimate(lambda a: a.roofline.prefill_ceiling_tps), needs=ENGINE),
    Family("efficiency_ratio", "gauge",
           ESTIMATE + "Generated tokens/s over the hardware decode ceiling: how much of what was "
           "paid for is used. Calibrated for decode-bound work; prefill-heavy traffic reads low.",
           (), _estimate(lambda a: a.roofline.efficiency), needs=ENGINE),
    Family("batch_efficiency_ratio", "gauge",
           ESTIMATE + "Generated tokens/s over the ceiling at the current batch: low efficiency "
           "with high batch efficiency means too little concurrency; low batch efficiency means "
           "overhead.", (), _estimate(lambda a: a.roofline.batch_efficiency), needs=ENGINE),
    Family("headroom_ratio", "gauge",
           ESTIMATE + "Unused fraction of the hardware decode ceiling (1 - efficiency).", (),
           _estimate(lambda a: a.roofline.headroom), needs=ENGINE),
    Family("ridge_batch_size", "gauge",
           ESTIMATE + "Concurrent sequences at which decode turns from bandwidth- to "
           "compute-bound.", (), _estimate(lambda a: a.roofline.ridge_batch_size), needs=ENGINE),
    Family("tpot_floor_seconds", "gauge",
           ESTIMATE + "Shortest possible time per output token at the current batch.", (),
           _estimate(lambda a: a.roofline.tpot_floor_seconds), needs=ENGINE),
    Family("prefill_floor_seconds", "gauge",
           ESTIMATE + "Shortest possible prefill of the mean prompt; not shown at or above the "
           "ridge.", (), _estimate(lambda a: a.roofline.prefill_floor_seconds), needs=ENGINE),
    Family("model_weight_bytes", "gauge",
           "Estimate: model weight bytes, total parameters x bytes per parameter (catalog).", (),
           _estimate(lambda a: a.roofline.weight_bytes), needs=ENGINE),
    Family("kv_headroom_bytes", "gauge",
           "Estimate per GPU: memory total x vLLM's gpu_memory_utilization - weight bytes / TP. "
           "Negative: the tensor-parallel size is too small for the model.", ("gpu", "UUID"),
           _kv_headroom, needs=ENGINE_GPU),
    Family("vllm_config_gpu_memory_utilization_ratio", "gauge",
           "vLLM's --gpu-memory-utilization setting (the share of GPU memory vLLM may use), as "
           "used for KV headroom; source=default means 1.0 assumed.", ("source",), _gmu,
           needs=ENGINE),
    Family("roofline_unavailable", "gauge",
           "1 per reason a roofline figure is absent: " + ", ".join(REASONS) + ".",
           ("reason",), _unavailable, needs=ENGINE),
    Family("mfu_flops_per_second", "gauge",
           "Achieved FLOP/s per GPU as vLLM counts them (--enable-mfu-metrics), active windows.",
           (), _estimate(lambda a: a.mfu_flops_per_second), needs=ENGINE),
    Family("mfu_memory_bytes_per_second", "gauge",
           "Bytes read + written per GPU per second as vLLM counts them (--enable-mfu-metrics).",
           (), _estimate(lambda a: a.mfu_bytes_per_second), needs=ENGINE),
    Family("mfu_flops_ratio", "gauge",
           "Estimate: vLLM's achieved FLOP/s per GPU over the catalog peak (model FLOPs "
           "utilization).", (), _estimate(lambda a: a.mfu_flops_ratio), needs=ENGINE),
    Family("mfu_bandwidth_ratio", "gauge",
           "Estimate: vLLM's achieved bytes/s per GPU over the catalog peak bandwidth.", (),
           _estimate(lambda a: a.mfu_bandwidth_ratio), needs=ENGINE),
)  # fmt: skip
