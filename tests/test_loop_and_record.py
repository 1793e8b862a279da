"""The live loop's schedule, and `record` → `replay` round trips."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.loop import PollLoop
from exporter.pipeline import Pipeline
from exporter.samples import ModelsInfo, PollError, VllmSample
from tests.harness import RecordedVllm

FIX = Path(__file__).parent / "fixtures"


class TimedSource:
    """Records when each poll started; takes ``cost`` seconds per poll."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.starts: list[float] = []

    def poll(self) -> VllmSample | PollError:
        self.starts.append(time.monotonic())
        time.sleep(self.cost)
        return VllmSample(time.time(), running=1.0)

    def models(self) -> ModelsInfo | None:
        return None


def test_schedule_does_not_drift() -> None:
    # 40 polls at 50 ms, each costing 10 ms: poll k starts at start + k × 50 ms. A loop that
    # slept 50 ms after each poll would drift by 40 × 10 ms = 400 ms.
    src = TimedSource(cost=0.01)
    loop = PollLoop(Pipeline(horizon_seconds=60, poll_interval=0.05), src, None, interval=0.05)
    loop.run(max_ticks=40)
    t0 = src.starts[0]
    offsets = [s - t0 - k * 0.05 for k, s in enumerate(src.starts)]
    assert max(offsets) < 0.04, offsets  # scheduling jitter only, no accumulation
    assert loop.stats.skipped == 0


def test_a_slow_poll_skips_slots_instead_of_queueing() -> None:
    # Each poll costs 120 ms at a 50 ms interval: slots 1 and 2 are skipped each time, and the
    # next poll starts on the next slot boundary, never immediately after the slow one.
    src = TimedSource(cost=0.12)
    loop = PollLoop(Pipeline(horizon_seconds=60, poll_interval=0.05), src, None, interval=0.05)
    loop.run(max_ticks=6)
    t0 = src.starts[0]
    gaps = [b - a for a, b in zip(src.starts, src.starts[1:], strict=False)]
    assert all(g >= 0.145 for g in gaps), gaps  # 3 slots, never a burst
    slots = [(s - t0) / 0.05 for s in src.starts]
    assert all(abs(x - round(x)) < 0.5 for x in slots)
    assert loop.stats.skipped >= 2 * 5


def test_record_then_replay(tmp_path: Path) -> None:
    vllm = RecordedVllm(FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz")
    vllm.start()
    out = tmp_path / "rec.jsonl.gz"
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "record",
                "--output",
                str(out),
                "--duration",
                "3s",
                "--vllm-url",
                vllm.url,
                "--gpu-replay",
                str(FIX / "nvml" / "h200-probe.jsonl.gz"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        vllm.stop()
    assert r.returncode == 0, r.stderr
    with gzip.open(out, "rt") as f:
        lines = [json.loads(x) for x in f]
    assert lines[0]["recording"] == 1 and lines[0]["config"]["vllm_url"] == vllm.url
    polls = [e for e in lines if e.get("source") == "vllm"]
    gpus = [e for e in lines if e.get("source") == "nvml"]
    models = [e for e in lines if e.get("source") == "vllm_models"]
    assert 10 <= len(polls) <= 14  # ~12 polls in 3 s at 4 Hz
    served = {b.decode() for _, b in vllm.bodies}
    assert all(p["body"] in served for p in polls)  # bodies exactly as received
    assert len(gpus) == len(polls)
    assert gpus[0]["gpus"][0]["power_limit_mw"] == 700000
    assert json.loads(models[0]["body"])["data"][0]["max_model_len"] == 1024
    rep = subprocess.run(
        [sys.executable, "-m", "exporter", "replay", str(out), "--print-metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "vllm_profile_vllm_max_model_len 1024.0" in rep.stdout
    assert 'vllm_profile_gpu_memory_total_bytes{UUID="GPU-d0e06647' in rep.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--poll-interval", "fast"], "--poll-interval: invalid value 'fast'"),
        (["--max-num-seqs", "-3"], "--max-num-seqs: invalid value '-3': must be > 0"),
        (["--gpu-source", "magic"], "--gpu-source: invalid value 'magic'"),
        (["--gpu", "first"], "--gpu: invalid value 'first'"),
        (["--horizon", "1s"], "--horizon: 1.0s is shorter than two windows"),
    ],
)
def test_invalid_configuration_exits_with_one_clear_line(args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
