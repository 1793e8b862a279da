"""Recordings replay in recorded time, whatever the cadence that reads them.

A recording made at the calm cadence holds one vLLM entry for every four GPU entries; replay
must pair entries by time, not by position. ``serve --vllm-replay`` must play a recording at its
recorded pace even when vLLM is polled once a second, or every rate would read four times low.
"""

from __future__ import annotations

import json
from pathlib import Path

from exporter.samples import EngineSample, GpuSample, PollError
from exporter.scrape.replay import ReplayEngineSource, ReplayGpuSource, replay_ticks


def body(tokens: float) -> str:
    return f"vllm:num_requests_running 1\nvllm:generation_tokens_total {tokens}\n"


def gpu_entry(t: float, util: float) -> dict[str, object]:
    return {"t": t, "source": "nvml", "gpus": [{"index": 0, "uuid": "GPU-a", "util_gpu": util}]}


def write(path: Path, entries: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def calm_recording(path: Path) -> Path:
    """4 s as the calm cadence records it: GPU every 250 ms, vLLM every second (its entry a few
    ms after the GPU's, as the two polls of a tick complete)."""
    entries: list[dict[str, object]] = []
    for i in range(16):
        t = 100.0 + i * 0.25
        entries.append(gpu_entry(t, float(i)))
        if i % 4 == 0:
            entries.append({"t": t + 0.004, "source": "vllm", "body": body(1000.0 + 100 * i)})
    return write(path, entries)


def test_entries_pair_by_time_not_by_position(tmp_path: Path) -> None:
    ticks = list(replay_ticks(calm_recording(tmp_path / "calm.jsonl")))
    # The vLLM stream ends the replay after its last entry (t = 103.004): 13 ticks, the GPU
    # readings 0 … 12 each in their own tick, vLLM in ticks 0, 4, 8, 12 with the GPU reading
    # of the same tick.
    assert len(ticks) == 13
    assert [t.gpu.gpus[0].util_gpu_pct for t in ticks if isinstance(t.gpu, GpuSample)] == [
        float(i) for i in range(13)
    ]
    with_vllm = [i for i, t in enumerate(ticks) if isinstance(t.engine, EngineSample)]
    assert with_vllm == [0, 4, 8, 12]
    assert [ticks[i].engine.generation_tokens for i in with_vllm] == [
        1000.0,
        1400.0,
        1800.0,
        2200.0,
    ]


def test_a_shorter_gpu_recording_ends_with_an_error(tmp_path: Path) -> None:
    v = write(tmp_path / "v.jsonl", [{"t": 50.0 + i, "source": "vllm", "body": body(i)}
                                     for i in range(4)])  # fmt: skip
    g = write(tmp_path / "g.jsonl", [gpu_entry(7.0 + i, 1.0) for i in range(2)])
    ticks = list(replay_ticks(v, g))
    # The GPU recording is shifted onto the vLLM one (7 s → 50 s): readings at 50 and 51 s.
    assert [(t.gpu.observed_at if t.gpu else None) for t in ticks] == [50.0, 51.0, 52.0, 53.0]
    assert [isinstance(t.gpu, PollError) for t in ticks] == [False, False, True, True]


def test_serve_replay_plays_at_the_recorded_pace(tmp_path: Path) -> None:
    # vLLM entries every 250 ms (tokens +100 each); polled once a second from live time 0, the
    # source returns the entries at 0, 1, 2 s: tokens 1000, 1400, 1800 — 400 tokens a second as
    # recorded, stamped with the live clock.
    entries = [{"t": 500.0 + i * 0.25, "source": "vllm", "body": body(1000.0 + 100 * i)}
               for i in range(12)]  # fmt: skip
    path = write(tmp_path / "v.jsonl", entries)
    now = [0.0]
    src = ReplayEngineSource(path, lambda: now[0])
    seen = []
    for t in (0.0, 1.0, 2.0, 2.1, 2.76):
        now[0] = t
        r = src.poll().result
        assert isinstance(r, EngineSample) and r.observed_at == t
        seen.append(r.generation_tokens)
    # A poll sooner than the next entry repeats the entry; 2.76 s is nearest the 2.75 s entry.
    assert seen == [1000.0, 1400.0, 1800.0, 1800.0, 2100.0]
    now[0] = 3.5  # past the last entry (2.75 s) by more than a step
    ended = src.poll().result
    assert isinstance(ended, PollError) and ended.reason == "recording_ended"


def test_a_looping_replay_continues_in_time(tmp_path: Path) -> None:
    # GPU entries at 0, 0.25, 0.5, 0.75 s (util 0 … 3); looping, the fifth step (1.0 s) is the
    # first entry again, and 1.5 s the third.
    path = write(tmp_path / "g.jsonl", [gpu_entry(10.0 + i * 0.25, float(i)) for i in range(4)])
    now = [0.0]
    src = ReplayGpuSource(path, lambda: now[0], loop=True)
    utils = []
    for t in (0.0, 0.75, 1.0, 1.5, 2.0):
        now[0] = t
        s = src.poll(False)
        assert isinstance(s, GpuSample)
        utils.append(s.gpus[0].util_gpu_pct)
    assert utils == [0.0, 3.0, 0.0, 2.0, 0.0]


def test_recordings_joined_end_to_end_play_on_without_a_pause(tmp_path: Path) -> None:
    # Two recordings joined: 0, 0.25, 0.5 s at t = 1000 s, then 0, 0.25 s at t = 10 s (the
    # clock "steps back"), then a part an hour later. The timeline continues one 250 ms step
    # over each seam: entries at 0, 0.25, 0.5 | 0.75, 1.0 | 1.25 s.
    times = [1000.0, 1000.25, 1000.5, 10.0, 10.25, 3610.25]
    path = write(tmp_path / "g.jsonl", [gpu_entry(t, float(i)) for i, t in enumerate(times)])
    now = [0.0]
    src = ReplayGpuSource(path, lambda: now[0])
    utils = []
    for i in range(6):
        now[0] = i * 0.25
        s = src.poll(False)
        assert isinstance(s, GpuSample)
        utils.append(s.gpus[0].util_gpu_pct)
    assert utils == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
