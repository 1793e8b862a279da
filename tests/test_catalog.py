"""The bundled catalogs, token matching, and the strict loader's messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.app import load_catalog
from exporter.catalog.match import best_match, tokens
from exporter.catalog.schema import CatalogError, parse_catalog
from exporter.config import load_config

HERE = Path(__file__).parent
CATALOG = load_catalog(load_config({}, {}, {}))

# The catalog's published figures, after the corrections noted in gpus.yaml (B200 FP32, H100 PCIe
# FP32, RTX PRO 6000 bandwidth, GB10 FP32): (fp32 TFLOPs, bandwidth GB/s, on-demand $/h, spot $/h).
GPU_ROWS = {
    "H100 PCIe": (51.0, 2000, 2.20, 0.90),
    "H100 SXM": (67.0, 3350, 3.45, 1.85),
    "H200": (67.0, 4800, 3.50, 2.00),
    "A100 80GB": (19.5, 2039, 1.50, 0.60),
    "A100 40GB": (19.5, 1555, 1.50, 0.60),
    "A10G": (None, None, 1.00, 0.40),
    "L40S": (91.6, 864, 1.80, 0.80),
    "RTX 4090": (82.6, 1008, None, None),
    "RTX Pro 6000 Blackwell": (125.0, 1792, None, None),
    "B200": (80.0, 8000, 6.00, 3.50),
    "GB200": (None, None, 8.50, 4.00),
    "GB10 (DGX Spark)": (31.0, 273, None, None),
}


@pytest.mark.parametrize(("name", "row"), GPU_ROWS.items())
def test_every_gpu_row(name: str, row: tuple) -> None:
    g = CATALOG.gpus[name]
    assert (g.fp32_tflops, g.mem_bw_gbps, g.price_on_demand, g.price_spot) == row
    # Every figure carries a source.
    for key in ("fp32_tflops", "mem_bw_gbps", "bf16_tflops"):
        if getattr(g, key) is not None:
            assert g.sources.get(key), (name, key)
    if g.price_on_demand is not None:
        assert g.sources.get("prices"), name


def test_tensor_peaks_are_dense_and_sourced() -> None:
    # Dense = half the with-sparsity datasheet figure (H100 SXM 1,979 / 2), or the datasheet's own
    # dense figure where it prints one (L40S 362.05).
    assert CATALOG.gpus["H100 SXM"].bf16_tflops == pytest.approx(1979 / 2, abs=0.2)
    assert CATALOG.gpus["L40S"].bf16_tflops == 362.05
    assert CATALOG.gpus["B200"].bf16_tflops == 4500 / 2
    assert CATALOG.gpus["A10G"].bf16_tflops is None  # price only


MODEL_ROWS = {
    "Llama 4 Maverick": (400, 17), "Llama 4 Scout": (109, 17), "Llama 3 405B": (405, None),
    "Llama 3 70B": (70, None), "Llama 3 8B": (8, None), "Nemotron 70B": (70, None),
    "Nemotron 8B": (8, None), "Qwen3 235B": (235, 22), "Qwen3 72B": (72, None),
    "Qwen3 32B": (32, None), "Qwen3 14B": (14, None), "Qwen3 7B": (7, None),
    "Qwen3 30B": (30, 3), "Qwen2.5 72B": (72, None), "Qwen2.5 32B": (32, None),
    "Qwen2.5 14B": (14, None), "Qwen2.5 7B": (7, None), "DeepSeek 671B": (671, 37),
    "DeepSeek 70B": (70, None), "DeepSeek 7B": (7, None), "Mistral Large 675B": (675, 52),
    "Mistral Large 123B": (123, None), "Mixtral 8x22B": (141, 39), "Mixtral 8x7B": (47, 13),
    "Mistral 7B": (7, None), "Gemma 27B": (27, None), "Gemma 9B": (9, None),
    "Kimi K2": (1000, 32), "GLM 744B": (744, 56), "GLM 32B": (32, None),
    "Phi 4 32B": (32, None), "Phi 4 14B": (14, None),
}  # fmt: skip


@pytest.mark.parametrize(("name", "row"), MODEL_ROWS.items())
def test_every_model_row(name: str, row: tuple) -> None:
    m = CATALOG.models[name]
    assert (m.params_b, m.active_params_b) == row
    assert m.moe == (row[1] is not None)
    assert m.source


@pytest.mark.parametrize(
    ("nvml_name", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("A100", None),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX Pro 6000 Blackwell"),
        ("NVIDIA RTX 6000 Ada Generation", None),
        ("NVIDIA B200", "B200"),
        ("NVIDIA GB200", "GB200"),
        ("NVIDIA GB10", "GB10 (DGX Spark)"),
    ],
)
def test_nvml_names(nvml_name: str, entry: str | None) -> None:
    m = best_match(nvml_name, CATALOG.gpus)
    assert (m.name if m else None) == entry


@pytest.mark.parametrize(
    ("model_name", "entry"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", "Llama 3 70B"),
        ("meta-llama/Llama-3.3-70B-Instruct", "Llama 3 70B"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", "Llama 3 8B"),
        ("meta-llama/Llama-3.1-405B-Instruct-FP8", "Llama 3 405B"),
        ("llama3-70b", "Llama 3 70B"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "Llama 4 Scout"),
        ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "Llama 4 Maverick"),
        ("Qwen/Qwen3-30B-A3B", "Qwen3 30B"),
        ("Qwen/Qwen3-235B-A22B", "Qwen3 235B"),
        ("Qwen/Qwen3-32B", "Qwen3 32B"),
        ("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5 72B"),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", "Qwen2.5 7B"),
        ("Qwen/Qwen2.5-14B-Instruct", "Qwen2.5 14B"),
        ("deepseek-ai/DeepSeek-R1", "DeepSeek 671B"),
        ("deepseek-ai/DeepSeek-V3-0324", "DeepSeek 671B"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "DeepSeek 70B"),  # dense 70B, not 671B
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "DeepSeek 7B"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral 8x7B"),
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", "Mixtral 8x22B"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral 7B"),
        ("mistralai/Mistral-Large-Instruct-2411", "Mistral Large 123B"),
        ("google/gemma-2-27b-it", "Gemma 27B"),
        ("google/gemma-2-9b-it", "Gemma 9B"),
        ("moonshotai/Kimi-K2-Instruct", "Kimi K2"),
        ("microsoft/phi-4", "Phi 4 14B"),
        ("THUDM/GLM-4-32B-0414", "GLM 32B"),
        ("nvidia/Nemotron-8B-Base", "Nemotron 8B"),
        # Must match nothing: not in the catalog, or too vague to tell.
        ("meta-llama/Llama-2-70b-chat-hf", None),
        ("Qwen/Qwen2.5-0.5B-Instruct", None),
        ("Qwen/Qwen3-8B", None),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", None),
        ("microsoft/Phi-4-mini-instruct", None),
        ("tiny-llama", None),
        ("openai/gpt-oss-120b", None),
        ("llama", None),
    ],
)
def test_model_names(model_name: str, entry: str | None) -> None:
    m = best_match(model_name, CATALOG.models)
    assert (m.name if m else None) == entry


def test_tokenizer_keeps_size_tokens_and_ties_match_nothing() -> None:
    assert {"8x7b", "a3b", "qwen3", "30b"} <= tokens("Qwen3-30B-A3B Mixtral-8x7B")
    tie = parse_catalog(
        'models:\n  A:\n    match: ["foo 7b"]\n    params_b: 7\n'
        '  B:\n    match: ["foo bar"]\n    params_b: 8\n',
        "tie.yaml",
    )
    assert best_match("foo-bar-7b", tie.models) is None  # two entries, two tokens each
    assert best_match("foo-7b", tie.models).name == "A"  # type: ignore[union-attr]


def test_catalog_file_overrides_and_adds(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "gpus:\n  H200:\n    match: ['h200']\n    fp32_tflops: 60\n    mem_bw_gbps: 4000\n"
        "models:\n  Tiny Llama:\n    match: ['tiny llama']\n    params_b: 0.0008\n"
    )
    cat = load_catalog(load_config({"catalog_file": str(extra)}, {}, {}))
    assert cat.gpus["H200"].mem_bw_gbps == 4000  # overridden
    assert cat.gpus["B200"].mem_bw_gbps == 8000  # untouched
    assert best_match("tiny-llama", cat.models).name == "Tiny Llama"  # type: ignore[union-attr]


INVALID = {
    "invalid-unknown-key.yaml": "gpus.Foo.fp32_tflop: unknown key",
    "invalid-wrong-type.yaml": "gpus.Foo.mem_bw_gbps: must be a number, got 'fast'",
    "invalid-negative.yaml": "gpus.Foo.bf16_tflops: must be > 0, got -5",
    "invalid-zero.yaml": "models.Bar 7B.params_b: must be > 0, got 0",
    "invalid-missing-match.yaml": "gpus.Foo.match: missing",
    "invalid-empty-match.yaml": "models.Bar 7B.match: must be a non-empty list of token patterns",
    "invalid-only-excluded-tokens.yaml": (
        "models.Bar 7B.match[0]: needs at least one token that must be present"
    ),
    "invalid-missing-params.yaml": "models.Bar 7B.params_b: missing",
    "invalid-bad-dtype.yaml": (
        "models.Bar 7B.dtype: must be one of fp4, int4, fp8, int8, bf16, fp16, fp32, got 'fp6'"
    ),
    "invalid-boolean-number.yaml": "gpus.Foo.price_spot: must be a number, got True",
    "invalid-top-level-key.yaml": "top level.accelerators: unknown key",
    "invalid-entry-not-mapping.yaml": "gpus.Foo: must be a mapping, got int",
}


@pytest.mark.parametrize(("file", "message"), INVALID.items())
def test_invalid_catalog_messages(file: str, message: str) -> None:
    with pytest.raises(CatalogError) as e:
        parse_catalog((HERE / "catalog" / file).read_text(), file)
    assert str(e.value) == f"{file}: {message}"


def test_invalid_yaml_names_the_file() -> None:
    file = "invalid-yaml-syntax.yaml"
    with pytest.raises(CatalogError, match=f"^{file}: not valid YAML"):
        parse_catalog((HERE / "catalog" / file).read_text(), file)


def test_invalid_catalog_file_exits_non_zero() -> None:
    path = HERE / "catalog" / "invalid-negative.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--catalog-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"vllm-profile-exporter: {path}: gpus.Foo.bf16_tflops: must be > 0, got -5"
    )
