"""The real-SGLang scenarios (tests/realsglang), replayed: each recording is what ``record`` polled
from a real SGLang 0.5.23 server on CPU during one scenario, cut to the families the SGLang
parser reads. The diagnosis of each is checked against what the scenario was built to be, and
the figures against SGLang's own counters in the same bodies, read with prometheus_client."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.paths import SGLANG

SCENARIOS = SGLANG / "scenarios"
CAP = "8"  # the server's --max-running-requests


def recording(name: str) -> Path:
    return SCENARIOS / f"sglang0523-cpu-{name}.jsonl.gz"


def diagnosis(name: str, horizon: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "replay", str(recording(name)), "--diagnose", "--json",
         "--max-num-seqs", CAP, "--gpu-source", "none",
         "--horizon", horizon],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(r.stdout))


def figure(d: dict, name: str) -> float | None:
    found = [x["value"] for x in d["metrics"].get(name, [])]
    assert len(found) <= 1, (name, found)
    return found[0] if found else None


def significant(d: dict) -> set[str]:
    return {r["rule"] for r in d["rules"] if r["significant"]}


def bodies(name: str) -> list[tuple[float, str]]:
    with gzip.open(recording(name), "rt") as f:
        return [(e["t"], e["body"]) for e in map(json.loads, f)
                if e.get("source") == "sglang" and "body" in e]  # fmt: skip


def own(body: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())  # fmt: skip


def test_every_scenario_has_its_recording() -> None:
    names = sorted(p.name for p in SCENARIOS.glob("*.jsonl.gz"))
    scenarios = ("idle", "under-batching", "prefix-reuse", "saturation", "kv-pressure", "restart")
    assert names == sorted(f"sglang0523-cpu-{n}.jsonl.gz" for n in scenarios)


def test_idle() -> None:
    d = diagnosis("idle", "10s")
    assert significant(d) == set()
    assert figure(d, "vllm_profile_generation_tokens_per_second") is None
    assert figure(d, "vllm_profile_requests_running") == 0


def test_under_batching() -> None:
    """One client: one token per decode pass, and R1 (under-batching) with nothing else."""
    d = diagnosis("under-batching", "20s")
    assert figure(d, "vllm_profile_decode_batch_per_step") == pytest.approx(1.0, abs=0.01)
    assert "R1" in significant(d)
    assert "R5" not in significant(d)


def test_prefix_reuse() -> None:
    """The exporter's hit ratio over the last horizon is SGLang's cached over prompt tokens
    between the bodies that bound it."""
    d = diagnosis("prefix-reuse", "20s")
    hit = figure(d, "vllm_profile_prefix_cache_hit_ratio")
    start = figure(d, "vllm_profile_horizon_start_timestamp_seconds")
    end = figure(d, "vllm_profile_last_window_timestamp_seconds")
    assert hit is not None and start is not None and end is not None
    polls = bodies("prefix-reuse")
    first = next(b for t, b in polls if t >= start)
    last = [b for t, b in polls if t <= end][-1]
    cached = own(last, "sglang:cached_tokens_total") - own(first, "sglang:cached_tokens_total")
    prompt = own(last, "sglang:prompt_tokens_total") - own(first, "sglang:prompt_tokens_total")
    assert hit == pytest.approx(cached / prompt, abs=0.02)
    assert hit > 0.6 and "R3" not in significant(d)


def test_saturation() -> None:
    d = diagnosis("saturation", "20s")
    assert "R5" in significant(d)
    assert d["issues"][0]["primary"]["rule"] == "R5"


def test_kv_pressure() -> None:
    """Retractions (SGLang's preemptions) in the recording: R2's main variant, first."""
    polls = bodies("kv-pressure")
    assert own(polls[-1][1], "sglang:num_retracted_requests_total") > 0
    d = diagnosis("kv-pressure", "20s")
    assert ("R2", "main") in {(r["rule"], r["variant"]) for r in d["rules"] if r["significant"]}


def test_restart() -> None:
    """SGLang writes no process start time: the restart is its counters falling, one epoch."""
    polls = bodies("restart")
    tokens = [own(b, "sglang:generation_tokens_total") for _, b in polls]
    falls = sum(1 for a, b in zip(tokens, tokens[1:], strict=False) if b < a)
    assert falls == 1
    d = diagnosis("restart", "10s")
    assert figure(d, "vllm_profile_config_epoch") == 1
