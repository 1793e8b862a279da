"""The exporter and its horizon: what runs, against what, over how many windows."""

from __future__ import annotations

from exporter.derive.resolve import Parallelism
from exporter.export.families.base import (
    ACTIVE,
    Family,
    Rows,
    View,
    _one,
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
         settings.compute_peak, "demo" if settings.demo else "live", settings.declared,
         settings.engine),
        1.0,
    )]  # fmt: skip


def _parallelism(p: Parallelism | None) -> tuple[str, ...]:
    """TP, PP and their sources: empty until a window resolves them (TP may come from the GPUs
    seen)."""
    if p is None:
        return ("",) * 4
    return str(p.tp), p.tp_source, str(p.pp), p.pp_source


FAMILIES: tuple[Family[View], ...] = (
    Family("info", "gauge",
           "Exporter and target facts; value always 1. gpu_catalog and model_catalog name the "
           "catalog entries matched (empty: no match, no roofline); model_matched_on says which "
           "name matched: served_name, root (what a --served-model-name alias serves, from "
           "/v1/models) or flag (--model-params). tensor_parallel_size_source: flag, env, gpus "
           "(the GPUs seen / (PP x DP engines)) or default. config_id: the serving "
           "configuration's identity (models, vLLM's cache settings, DP engines, the settings "
           "declared here, --config-revision), the same wherever it runs. mode=demo: a bundled "
           "recording, with the settings named in declared given by the demo, not recorded. "
           "engine: the inference engine profiled (vllm, sglang).",
           ("version", "model", "gpu_name", "gpu_catalog", "model_catalog", "model_root",
            "model_matched_on", "dtype",
            "dtype_source", "tensor_parallel_size", "tensor_parallel_size_source",
            "pipeline_parallel_size", "pipeline_parallel_size_source", "config_id",
            "compute_peak", "mode", "declared", "engine"), _info),
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
)  # fmt: skip
