"""What one exporter costs a Prometheus: its series, measured in the fullest shape (a catalog
model on 8 known GPUs with a roofline, latency objectives set, rules and issues firing) and held
to a budget (docs/operations.md#fleet says what it means for a fleet)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Exporter, wait_for
from tests.paths import FIX
from tests.test_dashboards import concatenated

pytestmark = pytest.mark.e2e
GPUS = 8
# The budget: series a scrape returns (process_* included). Per GPU, 12 families of one series
# each; the rest does not grow with the GPUs (134 measured). Raising it is a decision: say why
# in the change, and in docs/operations.md#fleet.
BUDGET_PER_GPU = 12
BUDGET_REST = 160


def eight_gpus(tmp: Path) -> Path:
    """The real H200 readings as 8 GPUs, for as long as the vLLM recordings last."""
    with gzip.open(FIX / "nvml" / "h200-probe.jsonl.gz", "rt") as f:
        rows = [e for e in map(json.loads, f) if e.get("source") == "nvml"]
    out_path = tmp / "gpus8.jsonl.gz"
    with gzip.open(out_path, "wt") as out:
        for i in range(4 * 240):
            g = rows[i % len(rows)]["gpus"][0]
            gpus = [{**g, "index": k, "uuid": f"GPU-{k:04d}"} for k in range(GPUS)]
            out.write(json.dumps({"t": i * 0.25, "source": "nvml", "gpus": gpus}) + "\n")
    return out_path


def test_series_per_exporter_within_budget(tmp_path: Path) -> None:
    vllm, _ = concatenated(tmp_path)
    exporter = Exporter(
        "--vllm-replay", str(vllm), "--gpu-replay", str(eight_gpus(tmp_path)),
        "--max-num-seqs", "8", "--tensor-parallel-size", str(GPUS), "--horizon", "8s",
        "--slo-ttft", "1s", "--slo-tpot", "10ms",
    )  # fmt: skip
    try:
        # The fullest shape: a roofline, issues and a direction after the configuration change.
        def full() -> str | None:
            body = exporter.metrics()
            wanted = ("vllm_profile_efficiency_ratio", "vllm_profile_issue_info",
                      "vllm_profile_direction{")  # fmt: skip
            return body if all(w in body for w in wanted) else None

        body = wait_for(full, 150, "a roofline, an issue and a direction")
    finally:
        exporter.stop()
    series = [s for f in text_string_to_metric_families(body) for s in f.samples]
    per_family = Counter(s.name for s in series)
    # Per-GPU families carry the GPU's index and UUID; one series per GPU each.
    gpu_families = {s.name for s in series if "gpu" in s.labels and "UUID" in s.labels}
    odd = {n: per_family[n] for n in gpu_families if per_family[n] != GPUS}
    assert not odd, odd
    budget = BUDGET_REST + BUDGET_PER_GPU * GPUS
    print(f"\nseries per exporter with {GPUS} GPUs: {len(series)} (budget {budget}); "
          f"{len(gpu_families)} per-GPU families")  # fmt: skip
    assert len(gpu_families) <= BUDGET_PER_GPU
    assert len(series) <= budget, sorted(per_family.items(), key=lambda kv: -kv[1])[:15]
