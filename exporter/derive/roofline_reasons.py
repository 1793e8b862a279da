"""Why a roofline figure is absent: each reason the exporter can give
(``vllm_profile_roofline_unavailable{reason}``), in one table with what fixes it. The code that
withholds a figure names its reason from here; HELP, the status page and the docs test read the
same table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

UNKNOWN_GPU = "unknown_gpu"
UNKNOWN_MODEL = "unknown_model"
SEVERAL_MODELS = "several_models"
NO_GPU_DATA = "no_gpu_data"
GPU_HAS_PRICE_ONLY = "gpu_has_price_only"
NO_LOAD = "no_load"
ACTUAL_ABOVE_CEILING = "actual_above_ceiling"
PARALLELISM_MISMATCH = "parallelism_mismatch"


def no_peak(compute_peak: str) -> str:
    """The catalog lacks the peak ``--compute-peak`` asks for (tensor or fp32)."""
    return f"no_{compute_peak}_peak_in_catalog"


REASONS: Mapping[str, str] = MappingProxyType({
    UNKNOWN_GPU: "the GPU is not in the catalog: add it with --catalog-file",
    UNKNOWN_MODEL: "the model is not in the catalog: map it with --catalog-file or give "
    "--model-params TOTAL[,ACTIVE]",
    SEVERAL_MODELS: "vLLM reports several model names: their sums mix models, so none is "
    "claimed",
    NO_GPU_DATA: "no GPU readings: check --gpu-source (nvml, dcgm) and the GPU source's health",
    GPU_HAS_PRICE_ONLY: "the catalog has this GPU's price but not its peaks: add them with "
    "--catalog-file",
    no_peak("tensor"): "the catalog has no tensor-core peak for this GPU: try --compute-peak "
    "fp32, or add it with --catalog-file",
    no_peak("fp32"): "the catalog has no FP32 peak for this GPU: add it with --catalog-file",
    NO_LOAD: "no request ran under load in the horizon: nothing to measure yet",
    ACTUAL_ABOVE_CEILING: "measured throughput is above the ceiling: check --model-params, "
    "--dtype and --tensor-parallel-size (speculative decoding also does this)",
    PARALLELISM_MISMATCH: "TP x PP x data-parallel engines disagrees with the GPUs the exporter "
    "sees: check --tensor-parallel-size, --pipeline-parallel-size and --gpu",
})  # fmt: skip
