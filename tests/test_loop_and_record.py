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
from exporter.samples import EngineSample
from exporter.scrape.source import EnginePoll
from tests.harness import RecordedVllm
from tests.paths import FIX


class TimedSource:
    """Records when each poll started and ended; takes ``cost`` seconds per poll."""

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.starts: list[float] = []
        self.ends: list[float] = []

    def poll(self, want_models: bool = False, complete: bool = True) -> EnginePoll:
        self.starts.append(time.monotonic())
        time.sleep(self.cost)  # the source's own cost, not a wait in the test
        self.ends.append(time.monotonic())
        return EnginePoll(EngineSample(time.time(), running=1.0))

    def close(self) -> None:
        pass


def test_schedule_does_not_drift() -> None:
    # 40 polls at 50 ms, each costing 10 ms: poll k starts at start + k × 50 ms. A loop that
    # slept 50 ms after each poll would drift by 40 × 10 ms = 400 ms by the last poll.
    src = TimedSource(cost=0.01)
    loop = PollLoop(Pipeline(horizon_seconds=60, poll_interval=0.05), src, None, interval=0.05)
    t0 = time.monotonic()
    loop.run(max_ticks=40)
    # Ticks that ran late were skipped, not queued: ticks + skipped slots = slots elapsed, and
    # the 40th tick's slot is at 39 × 50 ms, whatever the scheduling jitter of a loaded machine.
    slots = loop.stats.ticks + loop.stats.skipped
    assert slots - 1 <= (src.starts[-1] - t0) / 0.05 < slots + 1
    assert loop.stats.ticks == 40 and len(src.starts) <= 40


def test_a_slow_source_is_polled_less_often_never_twice_at_once() -> None:
    # Each poll costs 120 ms at a 50 ms interval. Ticks go on every 50 ms; the source is asked
    # again only once its poll has returned, so it never sees two requests at once and never
    # a burst of catch-up requests.
    src = TimedSource(cost=0.12)
    loop = PollLoop(Pipeline(horizon_seconds=60, poll_interval=0.05), src, None, interval=0.05)
    loop.run(max_ticks=20)
    assert len(src.starts) >= 2
    for start, prev_end in zip(src.starts[1:], src.ends, strict=False):
        assert start >= prev_end  # the next poll began after the previous one ended
    assert loop.stats.polls["vllm"] == len(src.starts) < loop.stats.ticks
    assert loop.stats.busy["vllm"] > 0  # ticks that found the source still answering


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
                "--calm-poll-interval",  # a fixed cadence: both sources every tick
                "250ms",
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
    assert 3 <= len(polls) <= 13  # at most 13 ticks in 3 s at 4 Hz (never a burst)
    served = {b.decode() for _, b in vllm.bodies}
    assert all(p["body"] in served for p in polls)  # bodies exactly as received
    assert abs(len(gpus) - len(polls)) <= 1  # both every tick; the last may straddle the end
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
        (["--max-num-seqs", "-3"], "--max-num-seqs: invalid value '-3': must be from 1 to"),
        (["--gpu-source", "magic"], "--gpu-source: invalid value 'magic'"),
        (["--gpu", "first"], "--gpu: invalid value 'first'"),
        (["--horizon", "1s"], "--horizon: invalid value '1s': the horizon must be from 4s"),
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
