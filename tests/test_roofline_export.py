"""What the exporter serves for roofline and economics: present when computable, absent
(never 0, never a guess) when an input is missing — and the dtype/TP resolution chains."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive.assess import assess
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.derive.resolve import RooflineSettings, resolve_dtype
from exporter.engines.vllm.serving import serving_config
from exporter.export.collector import ExportSettings, metric_families
from exporter.pipeline import Snapshot
from exporter.scrape.openai_models import parse_models
from tests.helpers import H100_MEMORY, H100_NAME, H200_NAME

CATALOG = load_catalog(load_config({}, {}, {}))
LLAMA70 = "meta-llama/Llama-3.1-70B-Instruct"

ROOFLINE = {
    "vllm_profile_decode_stream_ceiling_tokens_per_second",
    "vllm_profile_decode_batch_ceiling_tokens_per_second",
    "vllm_profile_decode_hardware_ceiling_tokens_per_second",
    "vllm_profile_efficiency_ratio",
    "vllm_profile_batch_efficiency_ratio",
    "vllm_profile_headroom_ratio",
    "vllm_profile_tpot_floor_seconds",
}


def aggregate(
    gpu_names: tuple[str, ...] = (H100_NAME,),
    model: str | None = LLAMA70,
    tps: float | None = 150.0,
    running: float | None = 8.0,
    power: float | None = 600.0,
) -> Aggregate:
    gpus = tuple(
        GpuAggregate(index=i, uuid=f"GPU-{i}", name=n, power_watts=power,
                     mem_total_bytes=H100_MEMORY)
        for i, n in enumerate(gpu_names)
    )  # fmt: skip
    return Aggregate(
        windows_total=30,
        windows_evaluable=30,
        windows_active=30 if tps else 0,
        engine_fresh=True,
        gpu_fresh=bool(gpus),
        model_name=model,
        serving=serving_config({"gpu_memory_utilization": "0.9"}),
        generation_tps=tps,
        running=running,
        running_active=running,
        prompt_tokens_mean=500.0,
        gpus=gpus,
    )


def exported(
    a: Aggregate, **settings: object
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    s = RooflineSettings(catalog=CATALOG, **settings)  # type: ignore[arg-type]
    snap = Snapshot(agg=a, assessment=assess(a, s))
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in metric_families(snap, ExportSettings("t", 60.0, 0.25)):
        for smp in fam.samples:
            out.setdefault(smp.name, {})[tuple(sorted(smp.labels.items()))] = smp.value
    return out


def reasons(m: dict) -> set[str]:
    return {dict(k)["reason"] for k in m.get("vllm_profile_roofline_unavailable", {})}


def test_everything_known() -> None:
    m = exported(aggregate())
    assert ROOFLINE <= set(m)
    hw = m["vllm_profile_decode_hardware_ceiling_tokens_per_second"][()]
    assert hw == pytest.approx(989.4e12 / (2 * 70e9))  # 7,067.14 tok/s
    # One H100 SXM on demand: $3.45/h; recoverable = 3.45 × (1 − 150 / 7,067.14).
    assert m["vllm_profile_cost_per_hour_dollars"] == {
        (("price_source", "catalog_on_demand"),): 3.45
    }
    rec = m["vllm_profile_active_recoverable_cost_per_hour_dollars"]
    assert rec[(("price_source", "catalog_on_demand"),)] == pytest.approx(
        3.45 * (1 - 150 / (989.4e12 / 140e9))
    )
    # KV headroom per GPU: 85,520,809,984 × 0.9 − 140e9 (negative: TP 1 is too small).
    kv = m["vllm_profile_kv_headroom_bytes"]
    assert kv[(("UUID", "GPU-0"), ("gpu", "0"))] == pytest.approx(H100_MEMORY * 0.9 - 140e9)
    assert reasons(m) == set()
    info = next(iter(m["vllm_profile_info"]))
    assert dict(info)["gpu_catalog"] == "H100 SXM" and dict(info)["model_catalog"] == "Llama 3 70B"


def test_unknown_gpu() -> None:
    m = exported(aggregate(gpu_names=("NVIDIA H100 NVL",)))
    assert not ROOFLINE & set(m)
    assert "vllm_profile_ridge_batch_size" not in m
    assert "vllm_profile_cost_per_hour_dollars" not in m  # no catalog price to use
    assert (
        "vllm_profile_active_energy_per_token_joules" in m
    )  # power and tokens are measured, not catalog
    assert "vllm_profile_model_weight_bytes" in m  # the model is still known
    assert reasons(m) == {"unknown_gpu"}


def test_unknown_model() -> None:
    m = exported(aggregate(model="tiny-llama"))
    assert not ROOFLINE & set(m)
    assert "vllm_profile_model_weight_bytes" not in m
    assert "vllm_profile_kv_headroom_bytes" not in m
    assert "vllm_profile_ridge_batch_size" in m  # a GPU fact
    assert "vllm_profile_active_cost_per_million_tokens_dollars" in m
    assert "vllm_profile_active_recoverable_cost_per_hour_dollars" not in m  # needs efficiency
    assert reasons(m) == {"unknown_model"}


def test_model_params_flag_maps_an_unknown_name() -> None:
    m = exported(aggregate(model="tiny-llama"), model_params=(70e9, None))
    assert ROOFLINE <= set(m)
    assert dict(next(iter(m["vllm_profile_info"])))["model_catalog"] == "flag"


def test_a10g_has_price_only() -> None:
    m = exported(aggregate(gpu_names=("NVIDIA A10G", "NVIDIA A10G")))
    assert not ROOFLINE & set(m) and "vllm_profile_ridge_batch_size" not in m
    # 2 × $1.00 on demand; spot when asked.
    assert m["vllm_profile_cost_per_hour_dollars"] == {
        (("price_source", "catalog_on_demand"),): 2.0
    }
    spot = exported(aggregate(gpu_names=("NVIDIA A10G", "NVIDIA A10G")), price="spot")
    assert spot["vllm_profile_cost_per_hour_dollars"] == {(("price_source", "catalog_spot"),): 0.8}
    assert reasons(m) == {"gpu_has_price_only"}


def test_no_nvml() -> None:
    m = exported(aggregate(gpu_names=()))
    assert not ROOFLINE & set(m)
    for name in (
        "active_energy_per_token_joules",
        "cost_per_hour_dollars",
        "gpu_power_total_watts",
    ):
        assert f"vllm_profile_{name}" not in m
    assert reasons(m) == {"no_gpu_data"}
    # A user-given price still yields $/1M tokens, labelled as theirs.
    m = exported(aggregate(gpu_names=()), cost_per_hour=10.0)
    assert m["vllm_profile_cost_per_hour_dollars"] == {(("price_source", "flag"),): 10.0}
    per_m = m["vllm_profile_active_cost_per_million_tokens_dollars"][(("price_source", "flag"),)]
    assert per_m == pytest.approx(10.0 / (150.0 * 3600) * 1e6)


def test_no_price() -> None:
    m = exported(aggregate(gpu_names=("NVIDIA GeForce RTX 4090",)))
    assert ROOFLINE <= set(m)
    assert "vllm_profile_cost_per_hour_dollars" not in m
    assert "vllm_profile_active_recoverable_cost_per_hour_dollars" not in m


def test_zero_running_requests() -> None:
    m = exported(aggregate(tps=None, running=0.0))
    assert not ROOFLINE & set(m)
    assert "vllm_profile_active_cost_per_million_tokens_dollars" not in m
    assert "vllm_profile_ridge_batch_size" in m
    assert reasons(m) == {"no_load"}


def test_actual_above_ceiling() -> None:
    # fp32 peak: 67e12 / 140e9 = 478.6 tok/s ceiling, 600 measured.
    m = exported(aggregate(tps=600.0, running=64.0), compute_peak="fp32")
    assert not ROOFLINE - {"vllm_profile_tpot_floor_seconds"} & set(m)
    assert "vllm_profile_active_recoverable_cost_per_hour_dollars" not in m
    assert reasons(m) == {"actual_above_ceiling"}


def test_gb10_tensor_peak_missing_but_fp32_works() -> None:
    m = exported(aggregate(gpu_names=("NVIDIA GB10",)))
    assert reasons(m) == {"no_tensor_peak_in_catalog"}
    assert "vllm_profile_efficiency_ratio" in exported(
        aggregate(gpu_names=("NVIDIA GB10",), tps=50.0), compute_peak="fp32"
    )


def test_mixed_gpus_match_nothing() -> None:
    m = exported(aggregate(gpu_names=(H100_NAME, H200_NAME)))
    assert reasons(m) == {"unknown_gpu"}


class TestChains:
    def test_dtype_chain(self) -> None:
        s = RooflineSettings(catalog=CATALOG)
        r1 = CATALOG.models["DeepSeek 671B"]
        assert resolve_dtype(
            RooflineSettings(dtype_flag="fp16", dtype_env="fp8"), "x", {}, None
        ) == (
            "fp16",
            "flag",
        )
        assert resolve_dtype(RooflineSettings(dtype_env="fp8"), "x-AWQ", None, None) == (
            "fp8",
            "env",
        )
        assert resolve_dtype(s, "Qwen/Qwen2.5-7B-Instruct-AWQ", None, None) == (
            "int4",
            "model_name",
        )
        assert resolve_dtype(s, "m", "fp8_e4m3", None) == (
            "fp8",
            "engine_cache_dtype",
        )
        assert resolve_dtype(s, "deepseek-ai/DeepSeek-R1", "auto", r1) == (
            "fp8",
            "catalog",
        )
        assert resolve_dtype(s, "m", "auto", None) == ("bf16", "default")

    def test_tp_chain(self) -> None:
        assert load_config({"tensor_parallel_size": "2"}, {"TENSOR_PARALLEL_SIZE": "4"}, {}).tp == 2
        cfg = load_config({}, {"TENSOR_PARALLEL_SIZE": "4", "VLLM_TENSOR_PARALLEL_SIZE": "8"}, {})
        assert (cfg.tp, cfg.tp_source) == (4, "env")
        assert load_config({}, {"VLLM_TENSOR_PARALLEL_SIZE": "8"}, {}).tp == 8
        # Nothing declared: derived from the GPUs seen once a window has them.
        assert (load_config({}, {}, {}).tp, load_config({}, {}, {}).tp_source) == (None, "")
        assert load_config({}, {"VLLM_DTYPE": "bfloat16"}, {}).dtype_env == "bf16"


class TestServedNameAliases:
    """``--served-model-name chat`` hides the model; /v1/models' ``root`` names it."""

    def test_an_alias_matches_on_its_root(self) -> None:
        a = aggregate(model="chat")
        assert reasons(exported(a)) == {"unknown_model"}
        res = assess(a, RooflineSettings(catalog=CATALOG), {"chat": LLAMA70}).resolved
        assert (res.model_catalog, res.model_matched_on, res.model_root) == (
            "Llama 3 70B", "root", LLAMA70)  # fmt: skip
        # The served name wins when it matches by itself; the root is only a fallback.
        own = assess(aggregate(model="qwen3-32b"), RooflineSettings(catalog=CATALOG),
                     {"qwen3-32b": LLAMA70}).resolved  # fmt: skip
        assert (own.model_catalog, own.model_matched_on) == ("Qwen3 32B", "served_name")
        # --model-params beats both.
        flag = assess(a, RooflineSettings(catalog=CATALOG, model_params=(7e9, None)),
                      {"chat": LLAMA70}).resolved  # fmt: skip
        assert (flag.model_catalog, flag.model_matched_on) == ("flag", "flag")

    def test_the_root_is_only_the_served_names_own(self) -> None:
        # Another name's root, or a root when the body names several models, proves nothing.
        s = RooflineSettings(catalog=CATALOG)
        assert assess(aggregate(model="chat"), s, {"other": LLAMA70}).resolved.model_catalog == ""
        several = replace(aggregate(model=None), model_names=("chat", "code"))
        res = assess(several, s, {"chat": LLAMA70, "code": LLAMA70}).resolved
        assert (res.model_catalog, res.reasons) == ("", ("several_models",))

    def test_a_quantized_root_gives_the_dtype(self) -> None:
        root = "RedHatAI/Meta-Llama-3.1-70B-Instruct-FP8"
        res = assess(aggregate(model="chat"), RooflineSettings(catalog=CATALOG), {"chat": root})
        assert (res.resolved.dtype, res.resolved.dtype_source) == ("fp8", "model_name")
        assert res.roofline.weight_bytes == 70e9  # one byte per parameter

    def test_info_says_what_matched(self) -> None:
        a = aggregate(model="chat")
        snap = Snapshot(agg=a, assessment=assess(a, RooflineSettings(catalog=CATALOG),
                                                 {"chat": LLAMA70}))  # fmt: skip
        (info,) = [f for f in metric_families(snap, ExportSettings("t", 60.0, 0.25))
                   if f.name == "vllm_profile_info"]  # fmt: skip
        labels = info.samples[0].labels
        assert (labels["model"], labels["model_catalog"], labels["model_root"],
                labels["model_matched_on"]) == ("chat", "Llama 3 70B", LLAMA70, "root")  # fmt: skip


def test_models_roots_are_read_defensively() -> None:
    body = json.dumps({"data": [
        {"id": "chat", "root": "meta-llama/Llama-3.1-8B", "max_model_len": 8192},
        {"id": "lora-a", "root": "/adapters/a", "parent": "chat"},
        {"id": "odd", "root": 42}, {"id": "none", "root": None}, {"id": "empty", "root": ""},
        {"id": "long", "root": "x" * 5000},
    ]})  # fmt: skip
    info = parse_models(body, 1.0)
    assert info is not None and info.max_model_len == 8192
    roots = dict(info.roots)
    assert roots["chat"] == "meta-llama/Llama-3.1-8B" and roots["lora-a"] == "/adapters/a"
    assert "odd" not in roots and "none" not in roots and "empty" not in roots
    assert len(roots["long"]) == 512  # cut: it only feeds matching and a label
