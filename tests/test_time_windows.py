"""Windows made of time (docs/sources.md) and the adaptive cadence, over the real recordings.

At regular 250 ms polls a time window is the 9-poll window it always was: the reference below
rebuilds those windows by counting polls, independently of the pipeline, and every figure must
match. Over irregular polls (a scraper starved of CPU) windows stay ~2 s of timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest

from exporter.derive.gate import classify
from exporter.derive.rules import R5
from exporter.derive.window import Window, build_window
from exporter.pipeline import Pipeline
from exporter.recording import read_entries
from exporter.samples import EngineSample, GpuSample, PollError, ServingConfig, Tick
from exporter.scrape.replay import engine_result, replay_ticks
from tests.helpers import tick, vllm
from tests.paths import H200, RECORDINGS, SATURATION


def fixed(**kw: object) -> Pipeline:
    """A pipeline at a fixed 250 ms cadence that keeps every window."""
    return Pipeline(horizon_seconds=1e6, poll_interval=0.25, calm_poll_interval=0.25, **kw)


def tick_time(t: Tick) -> float | None:
    times = [r.observed_at for r in (t.engine, t.gpu) if r is not None]
    return max(times) if times else None


def counted_windows(ticks: list[Tick]) -> list[Window]:
    """The reference: windows of 9 ticks sharing their boundary tick, restarted when vLLM's
    process start time changes (a window never spans two processes)."""
    out: list[Window] = []
    buf: list[Tick] = []
    start_time: float | None = None
    for t in ticks:
        if isinstance(t.engine, EngineSample) and t.engine.process_start_time is not None:
            if start_time is not None and t.engine.process_start_time != start_time:
                buf = []
            start_time = t.engine.process_start_time
        if tick_time(t) is None:
            continue
        buf.append(t)
        if len(buf) == 9:
            w = build_window(
                [x.engine for x in buf if isinstance(x.engine, EngineSample)],
                [x.gpu for x in buf if isinstance(x.gpu, GpuSample)],
                start=tick_time(buf[0]),  # type: ignore[arg-type]
                end=tick_time(buf[-1]),  # type: ignore[arg-type]
            )
            out.append(replace(
                w,
                engine_answered=any(isinstance(x.engine, EngineSample) for x in buf[1:]),
                gpu_answered=any(isinstance(x.gpu, GpuSample) for x in buf[1:]),
            ))  # fmt: skip
            buf = buf[-1:]
    return out


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.name)
def test_regular_polls_give_the_nine_poll_windows(recording: Path) -> None:
    ticks = list(replay_ticks(recording, H200))
    p = fixed()
    for t in ticks:
        p.offer(t)
    expected = counted_windows(ticks)
    assert len(expected) >= 9
    assert p.windows == [(w, classify(w)) for w in expected]


def thinned(recording: Path, gaps: tuple[float, ...]) -> Iterator[Tick]:
    """The recording as a starved scraper would have polled it: the next poll only once the
    next gap (cycling through ``gaps``) has passed."""
    kept: float | None = None
    i = 0
    for t in replay_ticks(recording):
        at = tick_time(t)
        assert at is not None
        if kept is None or at - kept >= gaps[i % len(gaps)]:
            if kept is not None:
                i += 1
            kept = at
            yield t


def test_polls_two_to_three_seconds_apart_make_windows_of_one_gap() -> None:
    # Every gap (2.0, 2.5 or 3.0 s, or up to one recorded 250 ms poll more) already spans a
    # window: each window is two polls, one gap long, never the 9 polls a count would stretch
    # over ~20 s.
    ticks = list(thinned(SATURATION, (2.0, 2.5, 3.0)))
    p = fixed(max_num_seqs=4.0)
    for t in ticks:
        p.offer(t)
    times = [tick_time(t) for t in ticks]
    assert [(w.start, w.end, w.engine_polls) for w, _ in p.windows] == [
        (a, b, 2) for a, b in zip(times, times[1:], strict=False)
    ]
    assert all(1.99 < w.duration < 3.26 for w, _ in p.windows)  # type: ignore[operator]


def test_a_starved_scraper_still_sees_saturation() -> None:
    # The saturated server sits at its cap of 4 with a queue in every busy second: polled every
    # 2-3 s, R5 must still fire in most windows and be significant, as at 250 ms.
    def r5(ticks: Iterator[Tick]) -> tuple[int, int, bool]:
        p = fixed(max_num_seqs=4.0)
        for t in ticks:
            p.offer(t)
        fired = sum(1 for h in p.horizon if h.rules and h.rules[R5].fired)
        evaluable = sum(1 for h in p.horizon if h.gate.evaluable)
        assert p.snapshot.diagnosis is not None
        status = next(s for s in p.snapshot.diagnosis.rules if s.rule == "R5")
        return fired, evaluable, status.significant

    full = r5(replay_ticks(SATURATION))
    starved = r5(thinned(SATURATION, (2.0, 2.5, 3.0)))
    assert full[2] and starved[2]
    assert starved[0] / starved[1] >= 0.5, starved


def test_a_gap_longer_than_two_windows_ends_the_window() -> None:
    # Polls every 0.25 s from 0 to 1.0 s, then nothing until 6.0 s (a 5 s gap > 4 s), then
    # every 0.25 s again. The window open at the gap ends at 1.0 s; the next starts at 6.0 s.
    p = Pipeline(horizon_seconds=60, poll_interval=0.25)
    for t in (0.0, 0.25, 0.5, 0.75, 1.0, 6.0, 6.25, 6.5, 6.75, 7.0, 7.25, 7.5, 7.75, 8.0):
        p.add_tick(tick(vllm(t, running=2.0, generation_tokens=100.0 * t)))
    assert [(w.start, w.end, w.engine_polls) for w, _ in p.windows] == [
        (0.0, 1.0, 5), (6.0, 8.0, 9)]  # fmt: skip
    # A gap of exactly 4 s is not more than two windows: it is averaged as one span.
    q = Pipeline(horizon_seconds=60, poll_interval=0.25)
    for t in (0.0, 1.0, 5.0):
        q.add_tick(tick(vllm(t)))
    assert [(w.start, w.end) for w, _ in q.windows] == [(0.0, 5.0)]


def test_timestamps_that_never_advance_cannot_grow_a_window_forever() -> None:
    p = Pipeline(horizon_seconds=60, poll_interval=0.25)
    for _ in range(5000):
        p.add_tick(tick(vllm(10.0)))
    assert len(p.windower.buf) < 4096  # the bound is the point
    assert p.windows  # closed at the bound (zero duration: no figures, not evaluable)
    assert not p.windows[0][1].evaluable


def test_failed_polls_are_part_of_the_window_of_time() -> None:
    # vLLM fails from 1.0 s to 2.0 s; the failed ticks still carry time, so the window still
    # closes at 2.0 s, holding the 5 answered polls.
    p = Pipeline(horizon_seconds=60, poll_interval=0.25)
    for i in range(9):
        t = i * 0.25
        v: EngineSample | PollError = vllm(t) if t < 1.0 or t > 2.0 else PollError(t, "timeout")
        p.add_tick(Tick(engine=v, gpu=None))
    ((w, _),) = p.windows
    assert (w.start, w.end, w.engine_polls, w.engine_answered) == (0.0, 2.0, 4, True)


def parsed_as_the_loop_would(recording: Path, p: Pipeline) -> Iterator[Tick]:
    """The recording's ticks, each vLLM body decoded as the live loop has it decoded: whole only
    where the pipeline's plan asks (a window's first and last vLLM polls), else the per-poll
    figures alone. ``p`` is the pipeline the ticks are offered to, one at a time."""
    entries = (e for e in read_entries(recording) if e["source"] == "vllm")
    for t in replay_ticks(recording, H200):
        if t.engine is None:
            yield t
            continue
        entry = next(entries)
        times = [r.observed_at for r in (t.engine, t.gpu) if r is not None]
        if "body" in entry and not p.plan(min(times)).engine_complete:
            t = replace(t, engine=engine_result(entry, t.engine.observed_at, complete=False))
        yield t


def failed_polls(recording: Path) -> int:
    return sum(isinstance(t.engine, PollError) for t in replay_ticks(recording, H200))


@pytest.mark.parametrize("calm", [0.25, 1.0], ids=["fixed-250ms", "adaptive"])
@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.name)
def test_partly_read_polls_change_no_figure(recording: Path, calm: float) -> None:
    # Reading only the per-poll figures between window edges leaves every window, every verdict
    # and the horizon as reading every body whole does. Where vLLM stops answering inside a
    # window (the restart recording), that window's counter and histogram deltas may end at a
    # partly read poll: they are then absent, never different.
    whole = Pipeline(horizon_seconds=1e6, poll_interval=0.25, calm_poll_interval=calm,
                     max_num_seqs=8)  # fmt: skip
    for t in replay_ticks(recording, H200):
        whole.offer(t)
    partly = Pipeline(horizon_seconds=1e6, poll_interval=0.25, calm_poll_interval=calm,
                      max_num_seqs=8)  # fmt: skip
    light = 0
    for t in parsed_as_the_loop_would(recording, partly):
        light += isinstance(t.engine, EngineSample) and not t.engine.complete
        partly.offer(t)
    if calm == 0.25:
        assert light > len(partly.windows)  # most polls were read partly
    assert [(w.start, w.end) for w, _ in partly.windows] == [
        (w.start, w.end) for w, _ in whole.windows
    ]
    changed = 0
    for (p, _), (w, _) in zip(partly.windows, whole.windows, strict=True):
        if p == w:
            continue
        changed += 1
        for f in fields(Window):
            mine, theirs = getattr(p, f.name), getattr(w, f.name)
            # Absent: None, an empty mapping, a configuration not stated.
            assert mine == theirs or mine in (None, {}, ServingConfig()), (f.name, mine, theirs)
    if failed_polls(recording) == 0:
        assert changed == 0
        assert [h.rules for h in partly.horizon] == [h.rules for h in whole.horizon]
        assert partly.snapshot.agg == whole.snapshot.agg
        assert partly.snapshot.slo == whole.snapshot.slo
    else:
        assert changed <= 2  # the window vLLM went down in, at most one per outage edge


def test_the_plan_asks_for_whole_reads_at_a_windows_edges() -> None:
    p = fixed()  # 250 ms; a window closes at the first tick >= 1.875 s after its first
    assert p.plan(0.0).engine_complete  # nothing open: the window's first poll
    p.add_tick(tick(vllm(0.0, generation_tokens=0.0)))
    # Mid-window: the next answer (>= 2 × 250 ms later) still falls inside the window.
    assert [p.plan(t).engine_complete for t in (0.25, 1.25)] == [False, False]
    # From 1.375 s on, a poll may be the window's last: whole.
    assert [p.plan(t).engine_complete for t in (1.375, 1.75, 2.0)] == [True, True, True]


def test_a_window_does_not_end_at_a_partly_read_poll() -> None:
    # The plan foresaw no edge at 1.5 s, but the poll completed late (1.9 s) and would close
    # the window: it closes at the next poll, read whole, and the window's deltas are whole.
    p = fixed()
    p.add_tick(tick(vllm(0.0, generation_tokens=0.0, prompt_tokens=0.0)))
    for t in (0.25, 0.5, 0.75, 1.0, 1.25, 1.9):
        p.add_tick(tick(replace(vllm(t, generation_tokens=t * 100), complete=False)))
    assert p.windows == []
    p.add_tick(tick(vllm(2.15, generation_tokens=215.0, prompt_tokens=43.0)))
    ((w, _),) = p.windows
    assert (w.start, w.end, w.duration) == (0.0, 2.15, 2.15)
    assert (w.d_generation_tokens, w.d_prompt_tokens) == (215.0, 43.0)


def test_a_partly_read_poll_never_starts_a_window() -> None:
    # A restart seen on a partly read poll: the new process's window starts at its next poll,
    # read whole, so its counters' deltas start at a whole sample.
    p = fixed()
    for t in (0.0, 0.25):
        p.add_tick(tick(vllm(t, process_start_time=1.0, generation_tokens=500.0 + t)))
    p.add_tick(tick(replace(vllm(0.5, process_start_time=2.0, generation_tokens=5.0),
                            complete=False)))  # fmt: skip
    for t in (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75):
        p.add_tick(tick(vllm(t, process_start_time=2.0, generation_tokens=10.0 + t * 4,
                             prompt_tokens=t)))  # fmt: skip
    ((w, _),) = p.windows
    assert w.start == 0.75 and w.d_generation_tokens == pytest.approx(8.0)


def test_the_open_window_keeps_no_raw_body() -> None:
    # Ticks carry the raw texts for the recorder; the pipeline buffers the samples alone.
    p = Pipeline(horizon_seconds=60, poll_interval=0.25)
    big = "x" * 1_000_000
    for i in range(4):  # fewer than a window: all of them still in the open window
        p.add_tick(Tick(engine=vllm(i * 0.25, running=1.0), gpu=None, engine_body=big,
                        models_body=big))  # fmt: skip
    assert len(p.windower.buf) == 4
    assert all(t.engine_body is None and t.models_body is None for _, t in p.windower.buf)
