"""Every fixture a test reads, named once (tests/fixtures/README.md says where each came from)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
VLLM = FIX / "vllm"  # real vLLM recordings and bodies
NVML = FIX / "nvml"  # real GPU probes
DCGM = FIX / "dcgm"  # real dcgm-exporter bodies
SGLANG = FIX / "sglang"  # real SGLang bodies

# vLLM 0.32 on CPU under the loads the rules are about (tests/fixtures/README.md).
UNDERBATCH = VLLM / "vllm032-cpu-b-underbatch.jsonl.gz"
SATURATION = VLLM / "vllm032-cpu-c-saturation.jsonl.gz"
KV_PRESSURE = VLLM / "vllm032-cpu-d-kvpressure.jsonl.gz"
PREFIX_SHARED = VLLM / "vllm032-cpu-e1-prefix-shared.jsonl.gz"
PREFIX_UNIQUE = VLLM / "vllm032-cpu-e2-prefix-unique.jsonl.gz"
PREFIX_DISABLED = VLLM / "vllm032-cpu-e3-prefix-disabled.jsonl.gz"
RESTART = VLLM / "vllm032-cpu-f-restart.jsonl.gz"
RECORDINGS = sorted(VLLM.glob("*.jsonl.gz"))

# GPU probes: one real GPU each, read by NVML.
H100 = NVML / "h100-sxm-probe.jsonl.gz"
H200 = NVML / "h200-probe.jsonl.gz"
