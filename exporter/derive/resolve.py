"""Resolving roofline inputs: catalog matches and the dtype / tensor-parallel chains
(docs/design.md).

Pure: the flags and environment values arrive already read, in :class:`RooflineSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.catalog.match import best_match, tokens
from exporter.catalog.schema import Catalog, GpuSpec, ModelSpec
from exporter.derive import roofline_reasons as R
from exporter.derive.roofline import RooflineInputs
from exporter.derive.slo import SloTargets

BYTES_PER_PARAM = {
    "fp4": 0.5, "int4": 0.5, "fp8": 1.0, "int8": 1.0, "bf16": 2.0, "fp16": 2.0, "fp32": 4.0,
}  # fmt: skip
_ALIASES = {
    "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
    "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp8_inc": "fp8",
}  # fmt: skip
# Tokens of a served model name that say how its weights are quantized.
_NAME_DTYPES = {
    "fp8": "fp8", "int8": "int8", "w8a8": "int8", "awq": "int4", "gptq": "int4", "int4": "int4",
    "w4a16": "int4", "nvfp4": "fp4", "mxfp4": "fp4", "fp4": "fp4",
}  # fmt: skip


def normalize_dtype(value: str) -> str | None:
    """``bfloat16`` → ``bf16``; None for anything that is not a weight format (e.g. ``auto``).

    >>> normalize_dtype("bfloat16"), normalize_dtype("FP8_E4M3"), normalize_dtype("auto")
    ('bf16', 'fp8', None)
    """
    v = value.strip().lower()
    v = _ALIASES.get(v, v)
    return v if v in BYTES_PER_PARAM else None


@dataclass(frozen=True, slots=True)
class RooflineSettings:
    catalog: Catalog = field(default_factory=Catalog)
    compute_peak: str = "tensor"  # or "fp32"
    dtype_flag: str | None = None
    dtype_env: str | None = None  # DTYPE, else VLLM_DTYPE, as the CLI read them
    tp: int | None = None  # declared (flag or environment); None: derived from the GPUs seen
    tp_source: str = ""  # "flag", "env"; "" when not declared
    pp: int = 1
    pp_source: str = "default"  # "flag", "env", "default"
    model_params: tuple[float, float | None] | None = None  # --model-params TOTAL[,ACTIVE]
    cost_per_hour: float | None = None
    price: str = "on-demand"  # or "spot"
    slo: SloTargets = field(default_factory=SloTargets)  # --slo-ttft, --slo-tpot


@dataclass(frozen=True, slots=True)
class Parallelism:
    """How the server's GPUs are split: ``tp`` GPUs per pipeline stage, ``pp`` stages per engine,
    ``dp`` data-parallel engines. ``tp_source`` is "flag" or "env" (declared), "gpus" (the GPUs
    seen divided by PP x DP) or "default" (no GPU seen, nothing declared: 1). ``consistent`` is
    False when TP x PP x DP disagrees with the GPUs seen: then no figure that depends on the split
    is trusted."""

    tp: int
    tp_source: str
    pp: int
    pp_source: str
    dp: int
    gpus: int
    consistent: bool = True


def resolve_parallelism(s: RooflineSettings, gpus: int, engines: int) -> Parallelism:
    """TP from what is declared, else from the evidence: every GPU the exporter sees serves this
    vLLM (NVML inside its pod, or dcgm-exporter's series attributed to the pod), DP engines come
    from vLLM's own ``engine`` label and PP from its declaration (vLLM exports neither TP nor PP).

    >>> resolve_parallelism(RooflineSettings(), gpus=8, engines=2)
    Parallelism(tp=4, tp_source='gpus', pp=1, pp_source='default', dp=2, gpus=8, consistent=True)
    >>> resolve_parallelism(RooflineSettings(tp=2), gpus=4, engines=1).consistent
    False
    """
    dp = max(1, engines)
    if s.tp is not None:
        return Parallelism(s.tp, s.tp_source, s.pp, s.pp_source, dp, gpus,
                           gpus == 0 or s.tp * s.pp * dp == gpus)  # fmt: skip
    if gpus == 0:
        return Parallelism(1, "default", s.pp, s.pp_source, dp, 0)
    if gpus % (s.pp * dp):
        return Parallelism(1, "gpus", s.pp, s.pp_source, dp, gpus, consistent=False)
    return Parallelism(gpus // (s.pp * dp), "gpus", s.pp, s.pp_source, dp, gpus)


@dataclass(frozen=True, slots=True)
class Resolved:
    gpu: GpuSpec | None
    model: ModelSpec | None
    model_catalog: str  # entry name, "flag" for --model-params, "" when unknown
    dtype: str
    dtype_source: str
    inputs: RooflineInputs
    reasons: tuple[str, ...] = ()
    # What matched the catalog: "served_name" (vLLM's model_name), "root" (the path or id an
    # alias serves, from /v1/models), "flag" (--model-params), "" (nothing)
    model_matched_on: str = ""
    model_root: str = ""  # the root of the served name, when /v1/models gave one
    parallelism: Parallelism = Parallelism(1, "default", 1, "default", 1, 0)


def resolve_gpu(catalog: Catalog, names: list[str]) -> GpuSpec | None:
    """The catalog entry for the server's GPUs; None when unknown or when they differ."""
    distinct = {n for n in names if n}
    if len(distinct) != 1:
        return None
    return best_match(distinct.pop(), catalog.gpus)


def resolve_dtype(
    s: RooflineSettings,
    model_name: str | None,
    cache_dtype: str | None,
    model: ModelSpec | None,
) -> tuple[str, str]:
    """Weight format and where it came from: flag → env → the served model name's quantization
    suffix → vLLM's ``cache_dtype`` (unless ``auto``) → catalog default → bf16."""
    if s.dtype_flag and (d := normalize_dtype(s.dtype_flag)):
        return d, "flag"
    if s.dtype_env and (d := normalize_dtype(s.dtype_env)):
        return d, "env"
    if model_name:
        for t in sorted(tokens(model_name)):
            if t in _NAME_DTYPES:
                return _NAME_DTYPES[t], "model_name"
    if cache_dtype and (d := normalize_dtype(cache_dtype)):
        return d, "engine_cache_dtype"
    if model is not None and model.dtype:
        return model.dtype, "catalog"
    return "bf16", "default"


def resolve(
    s: RooflineSettings,
    *,
    model_name: str | None,
    gpu_names: list[str],
    cache_dtype: str | None = None,
    several_models: bool = False,
    model_root: str | None = None,
    engines: int = 1,
) -> Resolved:
    """The roofline's inputs. The model is matched on vLLM's served name, else on the root it
    serves (``--served-model-name chat`` for ``meta-llama/Llama-3.1-8B`` still finds Llama 3 8B)."""
    reasons: list[str] = []
    gpu = resolve_gpu(s.catalog, gpu_names)
    if not gpu_names:
        reasons.append(R.NO_GPU_DATA)
    elif gpu is None:
        reasons.append(R.UNKNOWN_GPU)
    model = best_match(model_name, s.catalog.models) if model_name else None
    matched_on = "served_name" if model else ""
    if model is None and model_name and model_root:
        model = best_match(model_root, s.catalog.models)
        matched_on = "root" if model else ""
    rp: float | None
    wp: float | None
    if s.model_params is not None:
        total, active = s.model_params
        rp, wp, model_catalog = active or total, total, "flag"
        matched_on = "flag"
    elif model is not None:
        total_p = model.params_b * 1e9
        active_p = None if model.active_params_b is None else model.active_params_b * 1e9
        rp, wp, model_catalog = active_p or total_p, total_p, model.name
    else:
        rp = wp = None
        model_catalog = ""
        reasons.append(R.SEVERAL_MODELS if several_models else R.UNKNOWN_MODEL)
    names = " ".join(n for n in (model_name, model_root if model_name else None) if n)
    dtype, dtype_source = resolve_dtype(s, names or None, cache_dtype, model)
    flops: float | None = None
    bw: float | None = None
    if gpu is not None:
        tflops = gpu.bf16_tflops if s.compute_peak == "tensor" else gpu.fp32_tflops
        flops = None if tflops is None else tflops * 1e12
        bw = None if gpu.mem_bw_gbps is None else gpu.mem_bw_gbps * 1e9
        if flops is None or bw is None:
            reasons.append(R.no_peak(s.compute_peak) if bw else R.GPU_HAS_PRICE_ONLY)
    par = resolve_parallelism(s, len(gpu_names), engines)
    if not par.consistent:
        # A split that contradicts the GPUs seen would scale every ceiling wrong: none at all.
        reasons.append(R.PARALLELISM_MISMATCH)
        flops = bw = None
    inputs = RooflineInputs(flops, bw, rp, wp, BYTES_PER_PARAM[dtype], par.tp, par.pp)
    return Resolved(gpu, model, model_catalog, dtype, dtype_source, inputs, tuple(reasons),
                    matched_on, model_root or "", par)  # fmt: skip
