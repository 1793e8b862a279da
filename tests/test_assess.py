"""One horizon's assessment (derive/assess.py): the inputs it reads from vLLM and the MFU
counters, each at its edges."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive.assess import assess
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.derive.resolve import RooflineSettings, resolve
from exporter.derive.roofline import RooflineInputs
from exporter.engines.vllm.serving import serving_config
from exporter.samples import ServingConfig
from tests.helpers import H100_NAME

SETTINGS = RooflineSettings(catalog=load_catalog(load_config({}, {}, {})))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (1.0, "default")),  # vLLM did not say: the whole memory
        ("0.9", (0.9, "vllm")),
        ("1", (1.0, "vllm")),  # the whole memory, as vLLM says
        ("1.5", (1.0, "default")),  # impossible: not believed
        ("0", (1.0, "default")),
        ("-0.2", (1.0, "default")),
        ("most", (1.0, "default")),
        ("", (1.0, "default")),
    ],
)
def test_gpu_memory_utilization_from_vllm(value: str | None, expected: tuple[float, str]) -> None:
    cc = {} if value is None else {"gpu_memory_utilization": value}
    a = assess(Aggregate(serving=serving_config(cc)), SETTINGS)
    assert (a.gpu_memory_utilization, a.gpu_memory_utilization_source) == expected


def test_mfu_counters_at_zero_mean_they_are_off() -> None:
    # vLLM exports its estimated-FLOPs counters at 0 unless --enable-mfu-metrics is on: a rate
    # of 0 is "off", not a measured zero; half a FLOP a second is still a measurement.
    off = assess(Aggregate(est_flops_per_second=0.0, est_bytes_per_second=0.0), SETTINGS)
    assert (off.mfu_flops_per_second, off.mfu_bytes_per_second) == (None, None)
    tiny = assess(Aggregate(est_flops_per_second=0.5, est_bytes_per_second=0.25), SETTINGS)
    assert (tiny.mfu_flops_per_second, tiny.mfu_bytes_per_second) == (0.5, 0.25)


def test_several_models_are_named_as_the_reason() -> None:
    a = assess(Aggregate(model_names=("a", "b")), SETTINGS)
    assert "several_models" in a.reasons and "unknown_model" not in a.reasons
    one = assess(Aggregate(model_name="tiny", model_names=("tiny",)), SETTINGS)
    assert "unknown_model" in one.reasons and "several_models" not in one.reasons


def test_resolved_inputs_are_the_catalog_figures_exactly() -> None:
    # H100 SXM: 989.4 TFLOP/s dense BF16, 3,350 GB/s. DeepSeek V3: 671B total, 37B active,
    # published in FP8 (1 byte a parameter, from the catalog's dtype).
    res = resolve(SETTINGS, model_name="deepseek-ai/DeepSeek-V3",
                  gpu_names=[H100_NAME])  # fmt: skip
    assert res.inputs == RooflineInputs(989.4e12, 3350e9, 37e9, 671e9, 1.0, 1)
    assert res.model is not None and res.model.name == res.model_catalog == "DeepSeek 671B"
    assert (res.dtype, res.dtype_source) == ("fp8", "catalog")
    unknown = resolve(SETTINGS, model_name="tiny", gpu_names=["NVIDIA A10G"])
    assert unknown.model is None and unknown.model_catalog == ""
    assert unknown.inputs.roofline_params is None and unknown.inputs.peak_flops is None
    assert unknown.reasons == ("unknown_model", "gpu_has_price_only")


def test_the_energy_counter_and_mfu_reach_the_assessment() -> None:
    # H100 SXM, Llama 3.1 8B: energy 2,000 J over 400 tokens = 5 J a token, from the counter;
    # vLLM's MFU counters at 98.94e12 FLOP/s and 335e9 B/s are 10% of each peak.
    name = "meta-llama/Llama-3.1-8B-Instruct"
    agg = Aggregate(
        model_name=name, model_names=(name,),
        gpus=(GpuAggregate(0, "GPU-0", H100_NAME, power_watts=500.0),),
        generation_tps=100.0, running_active=4.0, energy_joules=2000.0, energy_tokens=400.0,
        est_flops_per_second=98.94e12, est_bytes_per_second=335e9,
    )  # fmt: skip
    a = assess(agg, SETTINGS)
    assert (a.economics.joules_per_token, a.economics.joules_source) == (5.0, "energy_counter")
    assert a.mfu_flops_ratio == pytest.approx(0.1) and a.mfu_bandwidth_ratio == pytest.approx(0.1)


def test_several_names_are_not_matched_by_the_newest_one() -> None:
    agg = Aggregate(model_name="meta-llama/Llama-3.1-8B-Instruct", model_names=("a", "b"))
    assert assess(agg, SETTINGS).resolved.model is None


def test_an_unknown_gpu_has_no_peaks_and_a_quantized_name_its_dtype() -> None:
    res = resolve(SETTINGS, model_name="Qwen/Qwen2.5-7B-Instruct-FP8",
                  gpu_names=["Mystery Accelerator 9000"])  # fmt: skip
    assert res.inputs.peak_flops is None and res.inputs.peak_bw is None
    assert (res.dtype, res.dtype_source) == ("fp8", "model_name")
    assert res.reasons == ("unknown_gpu",)


def test_vllms_kv_cache_dtype_names_the_weights_when_nothing_else_does() -> None:
    # Llama 3.1 8B served with --kv-cache-dtype fp8, no quantization in its name, no flag: the
    # cache dtype comes before the catalog's default, and is said to.
    agg = Aggregate(model_name="meta-llama/Llama-3.1-8B-Instruct",
                    serving=serving_config({"cache_dtype": "fp8"}))  # fmt: skip
    res = assess(agg, SETTINGS).resolved
    assert (res.dtype, res.dtype_source) == ("fp8", "engine_cache_dtype")


def test_a_root_that_matches_nothing_matches_nothing() -> None:
    res = resolve(SETTINGS, model_name="chat", model_root="/models/no-such-model", gpu_names=[])
    assert res.model is None and res.model_matched_on == ""


def test_a_quantized_served_name_keeps_its_dtype_beside_a_root() -> None:
    res = resolve(SETTINGS, model_name="Qwen/Qwen2.5-7B-Instruct-FP8", model_root="/models/q7",
                  gpu_names=[])  # fmt: skip
    assert (res.dtype, res.dtype_source) == ("fp8", "model_name")


def test_a_split_the_gpus_contradict_has_no_peaks() -> None:
    # TP 4 declared, one H100 seen: no ceiling at all, rather than ceilings scaled wrong.
    res = resolve(replace(SETTINGS, tp=4), model_name="meta-llama/Llama-3.1-8B-Instruct",
                  gpu_names=[H100_NAME])  # fmt: skip
    assert "parallelism_mismatch" in res.reasons
    assert (res.inputs.peak_flops, res.inputs.peak_bw) == (None, None)


def test_a_zero_memory_share_from_any_engine_is_not_believed() -> None:
    # vLLM's parser already drops a 0; another engine's might not: assess keeps its own guard.
    a = assess(Aggregate(serving=ServingConfig(gpu_memory_utilization=0.0)), SETTINGS)
    assert (a.gpu_memory_utilization, a.gpu_memory_utilization_source) == (1.0, "default")
