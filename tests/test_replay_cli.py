"""Real recordings through the unchanged pipeline: ``replay FILE --print-metrics``.

Expected figures are computed here from the raw recording with prometheus_client's reference
parser, independently of the exporter's own parser and aggregation code.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.paths import H200, RESTART, UNDERBATCH
from tests.tools import require_tool


def run_replay(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "replay", *args, "--print-metrics"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def entries(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        return [e for e in map(json.loads, f) if "source" in e]


def reference_value(body: str, name: str, reduce: str = "sum") -> float:
    """One family's value via the reference parser, summed (or max) over label sets."""
    vals = [
        s.value
        for fam in text_string_to_metric_families(body)
        for s in fam.samples
        if s.name == name
    ]
    assert vals, name
    return max(vals) if reduce == "max" else sum(vals)


@pytest.fixture(scope="module")
def underbatch_vllm_only() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(run_replay(str(UNDERBATCH), "--gpu-source", "none", "--max-num-seqs", "64"))


def test_throughput_matches_raw_counters(underbatch_vllm_only) -> None:
    polls = [e for e in entries(UNDERBATCH) if e["source"] == "vllm"]
    assert len(polls) == 120
    # 120 polls → windows of 9 polls sharing boundaries: polls 0-8, 8-16, …, 104-112 = 14 windows.
    # Every window of this steady one-client recording has a running request and moves tokens, so
    # all 14 are active and the time-weighted throughput is (gen[112] − gen[0]) / (t[112] − t[0]).
    first, last = polls[0], polls[112]
    gen0 = reference_value(first["body"], "vllm:generation_tokens_total")
    gen1 = reference_value(last["body"], "vllm:generation_tokens_total")
    req0 = reference_value(first["body"], "vllm:request_success_total")
    req1 = reference_value(last["body"], "vllm:request_success_total")
    span = last["t"] - first["t"]
    m = underbatch_vllm_only
    assert m[("vllm_profile_active_windows", ())] == 14
    assert m[("vllm_profile_generation_tokens_per_second", ())] == pytest.approx(
        (gen1 - gen0) / span, rel=1e-9
    )
    assert m[("vllm_profile_requests_per_second", ())] == pytest.approx(
        (req1 - req0) / span, rel=1e-9
    )
    # TTFT mean = Δsum / Δcount over the same span.
    s0 = reference_value(first["body"], "vllm:time_to_first_token_seconds_sum")
    s1 = reference_value(last["body"], "vllm:time_to_first_token_seconds_sum")
    c0 = reference_value(first["body"], "vllm:time_to_first_token_seconds_count")
    c1 = reference_value(last["body"], "vllm:time_to_first_token_seconds_count")
    assert m[("vllm_profile_time_to_first_token_mean_seconds", ())] == pytest.approx(
        (s1 - s0) / (c1 - c0), rel=1e-9
    )
    # Engine steps: the count of iteration_tokens_total; tokens per step, the rise of the tokens
    # over the rise of the steps across the same 14 active windows.
    n0 = reference_value(first["body"], "vllm:iteration_tokens_total_count")
    n1 = reference_value(last["body"], "vllm:iteration_tokens_total_count")
    assert n1 > n0
    assert m[("vllm_profile_engine_steps_per_second", ())] == pytest.approx(
        (n1 - n0) / span, rel=1e-9
    )
    assert m[("vllm_profile_decode_batch_per_step", ())] == pytest.approx(
        (gen1 - gen0) / (n1 - n0), rel=1e-9
    )
    # KV peak: the highest poll of the windows (polls 0..112), never below the last value.
    kv = [reference_value(p["body"], "vllm:kv_cache_usage_perc", "max") for p in polls[:113]]
    assert m[("vllm_profile_kv_cache_usage_peak_ratio", ())] == max(kv)
    # Occupancy: running mean / 64, the flag given.
    running = m[("vllm_profile_requests_running", ())]
    assert 0 < running <= 1.0
    assert m[("vllm_profile_scheduler_occupancy_ratio", ())] == pytest.approx(running / 64)
    # The wall-clock counters: every window evaluable and active, so the seconds observed and
    # active are the span of polls 0..112, the tokens the counter's rise over it; no price (no
    # GPU, no --cost-per-hour), so no dollars.
    first, last = polls[0], polls[112]
    gen0 = reference_value(first["body"], "vllm:generation_tokens_total")
    gen1 = reference_value(last["body"], "vllm:generation_tokens_total")
    span = last["t"] - first["t"]
    assert m[("vllm_profile_observed_seconds_total", ())] == pytest.approx(span, rel=1e-9)
    assert m[("vllm_profile_active_seconds_total", ())] == pytest.approx(span, rel=1e-9)
    assert m[("vllm_profile_observed_generation_tokens_total", ())] == gen1 - gen0
    assert m[("vllm_profile_duty_cycle_ratio", ())] == 1.0
    assert not any(name == "vllm_profile_observed_cost_dollars_total" for name, _ in m)
    # No GPU source: no GPU series, and no nvml health series either.
    assert not any(name.startswith("vllm_profile_gpu_") for name, _ in m)
    assert ("vllm_profile_up", (("source", "nvml"),)) not in m


def test_real_vllm_with_real_h200_readings() -> None:
    m = samples(run_replay(str(UNDERBATCH), "--gpu-replay", str(H200)))
    gpus = [e for e in entries(H200) if e["source"] == "nvml"]
    labels = (("UUID", "GPU-d0e06647-f61c-fdd0-eb79-64ccf331d293"), ("gpu", "0"))
    # The GPU stream is aligned by index with the vLLM stream: the last window ends at poll 112.
    last = gpus[112]["gpus"][0]
    assert m[("vllm_profile_gpu_memory_used_bytes", labels)] == float(last["mem_used_bytes"])
    assert m[("vllm_profile_gpu_memory_total_bytes", labels)] == 150754820096
    assert m[("vllm_profile_gpu_power_limit_watts", labels)] == 700.0
    assert m[("vllm_profile_gpu_sm_clock_hertz", labels)] == last["sm_clock_mhz"] * 1e6
    temps = [g["gpus"][0]["temperature_c"] for g in gpus[:113]]
    assert m[("vllm_profile_gpu_temperature_peak_celsius", labels)] == max(temps)
    # The H200 was idle for its first 4 s (utilization 0, below the 20% arm): those windows are
    # evaluable but not active, so fewer windows are active than with vLLM alone.
    assert m[("vllm_profile_evaluable_windows", ())] == 14
    assert m[("vllm_profile_active_windows", ())] < 14
    util = m[("vllm_profile_gpu_utilization_ratio", labels)]
    assert 0.2 < util <= 1.0
    assert 0 < m[("vllm_profile_gpu_dram_bandwidth_utilization_ratio", labels)] < 1
    info = [k for k in m if k[0] == "vllm_profile_info"]
    assert dict(info[0][1])["gpu_name"] == "NVIDIA H200"
    assert dict(info[0][1])["model"] == "tiny-llama"


def test_restart_recording_never_goes_negative() -> None:
    # A fixed cadence: every recorded poll is replayed, so every recorded error counts.
    text = run_replay(str(RESTART), "--gpu-source", "none", "--calm-poll-interval", "250ms")
    m = samples(text)
    errors = [e for e in entries(RESTART) if e["source"] == "vllm" and "error" in e]
    assert errors, "the recording has an outage"
    reason = errors[0]["error"]
    assert m[("vllm_profile_poll_errors_total", (("reason", reason), ("source", "vllm")))] == len(
        errors
    )
    assert m[("vllm_profile_up", (("source", "vllm"),))] == 1.0  # it came back
    # The families a counter reset could turn negative are there after the restart, and none
    # is negative (an empty loop would prove nothing).
    checked = {name for (name, _), v in m.items()
               if name.endswith(("_per_second", "_ratio", "_seconds")) and v >= 0}  # fmt: skip
    negative = [(name, v) for (name, _), v in m.items()
                if name.endswith(("_per_second", "_ratio", "_seconds")) and v < 0]  # fmt: skip
    assert negative == []
    assert {"vllm_profile_generation_tokens_per_second", "vllm_profile_requests_per_second",
            "vllm_profile_time_to_first_token_mean_seconds",
            "vllm_profile_kv_cache_usage_mean_ratio"} <= checked  # fmt: skip
    # The exporter's token counter survives the restart: it holds the first process's tokens
    # as well as the second's, so it exceeds what the new process has counted since it began.
    polls = [e for e in entries(RESTART) if e["source"] == "vllm" and "body" in e]
    gen = [reference_value(p["body"], "vllm:generation_tokens_total") for p in polls]
    cut = next(i for i in range(1, len(gen)) if gen[i] < gen[i - 1])  # the counter restarted
    first, second = gen[cut - 1] - gen[0], gen[-1] - gen[cut]
    assert first > 0 and second > 0
    # At most both processes' rises (windows that vLLM did not answer add nothing), and more
    # than the second's alone.
    observed = m[("vllm_profile_observed_generation_tokens_total", ())]
    assert second < observed <= first + second
    # Only windows after the outage hold data: the outage's windows are not evaluable.
    total = m[("vllm_profile_windows", ())]
    assert m[("vllm_profile_evaluable_windows", ())] < total


def test_replay_is_deterministic() -> None:
    a = run_replay(str(UNDERBATCH), "--gpu-replay", str(H200))
    b = run_replay(str(UNDERBATCH), "--gpu-replay", str(H200))
    assert a == b


def test_output_passes_promtool() -> None:
    promtool = require_tool("promtool")
    text = run_replay(str(UNDERBATCH), "--gpu-replay", str(H200), "--max-num-seqs", "64")
    r = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_recording_exits_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "source": "vllm", "body": "x\\n"}\nnot json\n')
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "replay", str(bad), "--print-metrics"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert f"{bad}:2: not JSON" in r.stderr


def renamed_recording(tmp: Path, served_name: str) -> Path:
    """The real recording, with only the model_name label changed to a name the catalog knows."""
    out = tmp / "renamed.jsonl.gz"
    with gzip.open(UNDERBATCH, "rt") as src, gzip.open(out, "wt") as dst:
        for line in src:
            e = json.loads(line)
            if "body" in e:
                e["body"] = e["body"].replace(
                    'model_name="tiny-llama"', f'model_name="{served_name}"'
                )
            dst.write(json.dumps(e) + "\n")
    return out


def test_roofline_on_real_h200_readings(tmp_path: Path) -> None:
    rec = renamed_recording(tmp_path, "meta-llama/Llama-3.1-8B-Instruct")
    m = samples(run_replay(str(rec), "--gpu-replay", str(H200)))
    info = dict(next(k for k in m if k[0] == "vllm_profile_info")[1])
    assert (info["gpu_catalog"], info["model_catalog"]) == ("H200", "Llama 3 8B")
    assert (info["dtype"], info["dtype_source"]) == ("bf16", "default")  # cache_dtype is auto
    tps = m[("vllm_profile_generation_tokens_per_second", ())]
    # H200, tensor peak: hardware = 989.4e12 / (2 × 8e9) = 61,837.5 tok/s;
    # stream = 4.8e12 / (8e9 × 2) = 300 tok/s; ridge = 989.4e12 × 2 / (2 × 4.8e12) = 206.125.
    assert m[("vllm_profile_decode_hardware_ceiling_tokens_per_second", ())] == (
        pytest.approx(61837.5)
    )
    assert m[("vllm_profile_decode_stream_ceiling_tokens_per_second", ())] == (pytest.approx(300.0))
    assert m[("vllm_profile_ridge_batch_size", ())] == pytest.approx(206.125)
    assert m[("vllm_profile_efficiency_ratio", ())] == pytest.approx(tps / 61837.5)
    assert m[("vllm_profile_model_weight_bytes", ())] == 16e9
    # vLLM said gpu_memory_utilization 0.92: 150,754,820,096 × 0.92 − 16e9.
    labels = (
        ("UUID", "GPU-d0e06647-f61c-fdd0-eb79-64ccf331d293"),
        ("gpu", "0"),
    )
    assert m[("vllm_profile_kv_headroom_bytes", labels)] == pytest.approx(
        150_754_820_096 * 0.92 - 16e9
    )
    # One H200 on demand: $3.50/h; $/1M = 3.5 / (tps × 3600) × 1e6.
    cat = (("price_source", "catalog_on_demand"),)
    assert m[("vllm_profile_cost_per_hour_dollars", cat)] == 3.5
    assert m[("vllm_profile_active_cost_per_million_tokens_dollars", cat)] == pytest.approx(
        3.5 / (tps * 3600) * 1e6
    )
    # Joules per token come from the energy counter; mean power / throughput is an independent
    # path to the same quantity and must agree within 10%.
    jpt = m[("vllm_profile_active_energy_per_token_joules", ())]
    power = m[("vllm_profile_gpu_power_total_watts", ())]
    assert jpt == pytest.approx(power / tps, rel=0.10)


def test_throughput_above_the_ceiling_is_withheld() -> None:
    # A 1-trillion-parameter claim with the fp32 peak: ceiling 67e12 / 2e12 = 33.5 tok/s, far
    # below what this server produced. The ceiling and efficiency are withheld, with the reason.
    m = samples(
        run_replay(
            str(UNDERBATCH), "--gpu-replay", str(H200), "--model-params", "1e12",
            "--compute-peak", "fp32",
        )
    )  # fmt: skip
    names = {n for n, _ in m}
    assert "vllm_profile_efficiency_ratio" not in names
    assert "vllm_profile_decode_ceiling_tokens_per_second" not in names
    assert m[("vllm_profile_roofline_unavailable", (("reason", "actual_above_ceiling"),))] == 1


def test_every_error_reason_exists_from_the_first_poll(underbatch_vllm_only) -> None:
    # A clean recording: no poll failed, yet every reason a vLLM poll can fail with is a series
    # at 0, so the first failure is an increase Prometheus can see.
    m = underbatch_vllm_only
    errors = {dict(k)["reason"]: v for (name, k) in m if name == "vllm_profile_poll_errors_total"
              for v in [m[(name, k)]] if dict(k)["source"] == "vllm"}  # fmt: skip
    expected = {"timeout", "internal", "connection", "http_status", "redirect", "tls",
                "bad_content_type", "body_too_large", "malformed", "non_finite", "truncated",
                "negative", "duplicate_series", "bad_histogram", "no_vllm_metrics",
                "several_servers", "line_too_long", "label_too_long",
                "too_many_series"}  # fmt: skip
    assert errors == dict.fromkeys(expected, 0.0)
