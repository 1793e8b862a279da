"""The adaptive cadence (docs/sources.md): vLLM fast while anything could spike, calm otherwise.

Expected poll counts are worked by hand from the rule: a poll is due once the interval in force
has passed since the last one, less half a fast interval (125 ms at 250 ms).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive import thresholds as T
from exporter.derive.cadence import EngineCadence, RefreshCadence, pressure
from exporter.derive.direction import Summary
from exporter.derive.resolve import RooflineSettings
from exporter.derive.slo import SloTargets
from exporter.loop import PollLoop
from exporter.pipeline import MAX_TICKS_PER_WINDOW, Pipeline, Snapshot
from exporter.samples import (
    EngineSample,
    GpuReading,
    GpuSample,
    Histogram,
    ModelsInfo,
    PollError,
    Tick,
)
from exporter.scrape.source import EnginePoll
from tests.helpers import H100_MEMORY, H100_NAME, INF, gpu, vllm


def s(t: float = 0.0, **kw: Any) -> EngineSample:
    return EngineSample(t, **kw)


class TestPressure:
    @pytest.mark.parametrize(
        ("sample", "prev", "mns", "why"),
        [
            (s(kv_usage=0.70), None, None, "kv"),
            (s(kv_usage=0.69), None, None, None),
            (s(waiting=1.0), None, None, "queue"),
            (s(waiting=0.0), None, None, None),
            (s(running=9.0), None, 10.0, "running"),  # 90% of --max-num-seqs 10
            (s(running=8.0), None, 10.0, None),
            (s(running=9.0), None, None, None),  # no cap known: no occupancy signal
            (s(1.0, preemptions=4.0), s(preemptions=3.0), None, "preemptions"),
            (s(1.0, preemptions=3.0), s(preemptions=3.0), None, None),
            (s(1.0, running=5.0), s(running=1.0), None, "change"),  # +4 > 3
            (s(1.0, running=1.0), s(running=5.0), None, "change"),  # −4
            (s(1.0, running=4.0), s(running=1.0), None, None),  # +3: not more than 3
            (s(1.0, kv_usage=0.3125), s(kv_usage=0.25), None, "change"),  # +6.25 pp ≥ 5
            (s(1.0, kv_usage=0.28125), s(kv_usage=0.25), None, None),  # +3.125 pp
            (s(1.0, running=3.0, kv_usage=0.2), s(running=None, kv_usage=None), None, None),
            (s(1.0, kv_usage=0.05), s(kv_usage=0.0), None, "change"),  # exactly 5 points
            (s(1.0, preemptions=4.0), s(), None, None),  # nothing to compare with
        ],
    )
    def test_signals(self, sample: EngineSample, prev: EngineSample | None, mns: float | None,
                     why: str | None) -> None:  # fmt: skip
        assert pressure(sample, prev, mns) == why


class TestVllmCadence:
    def test_calm_until_pressure_then_fast_at_once(self) -> None:
        c = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=None)
        assert c.due(0.0)  # never polled: due
        c.observe(s(0.0, running=0.0, waiting=0.0))
        assert c.interval == 1.0
        # Due 1.0 − 0.125 = 0.875 s after the last poll.
        assert not c.due(0.8) and c.due(0.875)
        c.observe(s(1.0, running=1.0, waiting=2.0))
        assert c.interval == 0.25 and c.due(1.25) and not c.due(1.1)

    def test_stays_fast_for_the_hold_then_calms(self) -> None:
        # Pressure at 10 s: fast until 10 + 10 = 20 s; a calm poll at 19.75 s keeps it fast,
        # one at 20.0 s calms it.
        assert T.CADENCE_HOLD_SECONDS == 10.0
        c = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=None)
        c.observe(s(10.0, waiting=3.0))
        c.observe(s(19.75, waiting=0.0))
        assert c.interval == 0.25
        c.observe(s(20.0, waiting=0.0))
        assert c.interval == 1.0

    def test_equal_intervals_are_a_fixed_cadence(self) -> None:
        c = EngineCadence(fast=0.5, calm=0.5, max_num_seqs=None)
        c.observe(s(0.0))
        assert c.interval == 0.5
        slower_fast = EngineCadence(fast=2.0, calm=1.0, max_num_seqs=None)  # calm never below
        assert slower_fast.calm == 2.0

    def test_reset_and_a_clock_stepping_back_make_it_due(self) -> None:
        c = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=None)
        c.observe(s(100.0))
        assert not c.due(100.5) and c.due(50.0)  # the clock stepped back
        c.reset()
        assert c.due(100.5)


class TestRefreshCadence:
    def test_learns_the_refresh_from_changes(self) -> None:
        c = RefreshCadence(floor=1.0, ceiling=30.0)
        assert c.interval == 1.0 and c.due(0.0, 0.125)
        # Values change at 4, 14 and 24 s (the first poll's values are no change): every 10 s.
        for t, v in ((0.0, 1), (1.0, 1), (4.0, 2), (5.0, 2), (14.0, 3), (24.0, 4)):
            c.observe(GpuSample(t, ()), (v,))
        assert c.interval == 10.0
        assert not c.due(33.0, 0.125) and c.due(34.0, 0.125)

    def test_bounded_and_fixed(self) -> None:
        slow = RefreshCadence(floor=1.0, ceiling=30.0)
        for t, v in ((0.0, 1), (10.0, 2), (70.0, 3)):
            slow.observe(GpuSample(t, ()), (v,))
        assert slow.interval == 30.0  # a 60 s gap between changes: capped at 30 s
        fast = RefreshCadence(floor=1.0, ceiling=30.0)
        for t, v in ((0.0, 1), (0.25, 2), (0.5, 3)):
            fast.observe(GpuSample(t, ()), (v,))
        assert fast.interval == 1.0  # never faster than the floor
        assert RefreshCadence(floor=1.0, ceiling=30.0, fixed=5.0).interval == 5.0


def calm_then_busy(p: Pipeline) -> None:
    """120 recorded ticks 250 ms apart, as a recording made at the fast cadence: vLLM idle except
    a queue at 10.0 and 10.25 s; the GPU answers every tick."""
    for i in range(120):
        t = i * 0.25
        waiting = 1.0 if t in (10.0, 10.25) else 0.0
        p.offer(Tick(engine=vllm(t, running=1.0, waiting=waiting, kv_usage=0.1),
                     gpu=gpu(t, dict(util_gpu_pct=50.0))))  # fmt: skip


def test_replay_takes_the_cadence_decisions() -> None:
    # vLLM polls: 0, 1, …, 9 s at the calm interval (10); the poll at 10.0 s shows a queue, so
    # every tick is polled from then on (10.25 s shows one too: fast until 20.25 s), 10.0 to
    # 20.25 s every 250 ms (42); calm again from 20.25 s: 21.25, …, 29.25 s (9). 61 in all.
    # The GPU is polled every tick (120).
    p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
    calm_then_busy(p)
    vllm_h, gpu_h = p.snapshot.health["vllm"], p.snapshot.health["nvml"]
    assert (vllm_h.polls, vllm_h.interval) == (61, 1.0)
    assert (gpu_h.polls, gpu_h.interval) == (120, 0.25)
    again = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
    calm_then_busy(again)
    assert again.windows == p.windows  # deterministic


def test_windows_hold_fewer_vllm_polls_at_the_calm_cadence() -> None:
    # Calm: a 2 s window [0, 2.0] holds vLLM polls at 0, 1 and 2 s; the GPU's 9.
    p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
    calm_then_busy(p)
    w, gate = p.windows[0]
    assert (w.start, w.end, w.engine_polls, w.gpu_polls, w.duration) == (0.0, 2.0, 3, 9, 2.0)
    assert gate.evaluable


class FakeVllm:
    def __init__(self, clock: Any, waiting: float) -> None:
        self.clock, self.waiting, self.polls = clock, waiting, 0

    def poll(self, want_models: bool, complete: bool = True) -> EnginePoll:
        self.polls += 1
        return EnginePoll(EngineSample(self.clock(), running=1.0, waiting=self.waiting))

    def close(self) -> None:
        pass


class FakeGpu:
    def __init__(self, clock: Any) -> None:
        self.clock, self.polls = clock, 0

    def poll(self, edge: bool) -> GpuSample:
        self.polls += 1
        return GpuSample(self.clock(), (GpuReading(0, "GPU-0", util_gpu_pct=10.0),))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("waiting", "engine_polls"), [(0.0, 3), (2.0, 9)])
def test_the_live_loop_polls_what_the_plan_says(waiting: float, engine_polls: int) -> None:
    # 9 ticks on a wall clock 250 ms apart (0 … 2.0 s). Calm: vLLM at 0, 1 and 2 s; with a
    # queue: every tick. The GPU every tick either way.
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    v, g = FakeVllm(clock, waiting), FakeGpu(clock)
    loop = PollLoop(Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0),
                    v, g, interval=0.25, clock=clock)  # fmt: skip
    try:
        for i in range(9):
            now[0] = i * 0.25
            loop.tick()
    finally:
        loop.stop()
    assert (v.polls, g.polls) == (engine_polls, 9)
    assert loop.stats.polls == {"vllm": engine_polls, "gpu": 9}
    health = loop.pipeline.snapshot.health
    assert health["vllm"].polls == engine_polls
    assert health["vllm"].interval == (1.0 if waiting == 0 else 0.25)


def test_a_slow_gpu_source_is_polled_at_its_refresh_and_stays_fresh_between() -> None:
    # dcgm-exporter polled every 5 s (fixed): offered a GPU reading every 250 ms, the pipeline
    # takes one at 0, 5, 10 s (the others are dropped as not due). Windows in between have no
    # GPU data, yet the GPU figures stay: the last reading is at most 5 s + one 2 s window old.
    every_5s = RefreshCadence(1.0, 30.0, fixed=5.0)
    p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=0.25,
                 gpu_source_name="dcgm", gpu_cadence=every_5s)  # fmt: skip
    seen = []
    for i in range(60):  # 0 … 14.75 s
        t = i * 0.25
        p.offer(Tick(engine=vllm(t, running=1.0), gpu=gpu(t, dict(util_gpu_pct=40.0 + t))))
        seen.append(bool(p.snapshot.agg.gpus))
    assert p.snapshot.health["dcgm"].polls == 3  # 0, 5 and 10 s
    assert p.snapshot.health["dcgm"].interval == 5.0
    assert all(seen[8:])  # from the first window's close at 2 s on, GPU figures never blink
    # The source dies at 15 s. The 10 s reading is the boundary poll of the window [10, 12]:
    # figures last while the newest window ends within 5 s + 2 s of 12 s, through the window
    # [16, 18], and are gone with the window [18, 20].
    for i in range(60, 81):  # 15 … 20 s
        t = i * 0.25
        p.offer(Tick(engine=vllm(t, running=1.0), gpu=PollError(t, "connection")))
        if t == 18.0:
            assert p.snapshot.agg.horizon_end == 18.0 and p.snapshot.agg.gpus
    assert p.snapshot.agg.horizon_end == 20.0 and not p.snapshot.agg.gpus


class TestPlan:
    def test_edges_are_where_windows_will_close(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        assert p.plan(0.0).edge  # nothing open: the first tick opens a window
        p.add_tick(Tick(engine=vllm(0.0), gpu=None))
        # Closes at ≥ 2.0 − 0.125 s after its first tick.
        assert not p.plan(1.75).edge and p.plan(1.875).edge
        assert p.plan(-1.0).edge  # the clock stepped back: the next tick opens a window

    def test_models_are_asked_at_start_and_after_a_restart(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        assert p.plan(0.0).models
        p.set_models(None)
        p.add_tick(
            Tick(engine=vllm(0.0, generation_tokens=500.0, process_start_time=1.0), gpu=None)
        )
        assert not p.plan(0.25).models
        p.add_tick(Tick(engine=vllm(0.25, generation_tokens=3.0, process_start_time=9.0), gpu=None))
        plan = p.plan(0.5)
        assert plan.models and plan.engine  # a restart: due at once, whatever the cadence

    def test_a_reload_changes_the_occupancy_signal(self) -> None:
        # running 9: no pressure without a cap; with --max-num-seqs 10 from a reload, 90%.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
        p.add_tick(Tick(engine=vllm(0.0, running=9.0, waiting=0.0), gpu=None))
        assert p.plan(0.25).engine_interval == 1.0
        p.reconfigure(p._roofline, 10.0)  # noqa: SLF001 - the settings in force
        p.add_tick(Tick(engine=vllm(1.0, running=9.0, waiting=0.0), gpu=None))
        assert p.plan(1.25).engine_interval == 0.25


class TestCadenceDetails:
    def test_changes_and_the_cap_reach_the_cadence(self) -> None:
        c = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=10.0)
        c.observe(s(0.0, running=1.0))
        assert c.interval == 1.0
        c.observe(s(1.0, running=5.0))  # +4 since the last poll: a sudden change
        assert c.interval == 0.25
        capped = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=10.0)
        capped.observe(s(0.0, running=9.0))  # 90% of the cap
        assert capped.interval == 0.25

    def test_the_same_instant_is_not_due_again(self) -> None:
        c = EngineCadence(fast=0.25, calm=0.25, max_num_seqs=None)
        c.observe(s(5.0))
        assert not c.due(5.0)
        r = RefreshCadence(floor=5.0, ceiling=30.0)
        r.polled(5.0)
        assert not r.due(5.0, 0.125) and not r.due(9.8, 0.125) and r.due(9.875, 0.125)

    def test_the_shortest_gap_between_changes_wins(self) -> None:
        c = RefreshCadence(floor=1.0, ceiling=30.0)
        for t, v in ((0.0, 1), (4.0, 2), (14.0, 3), (34.0, 4), (34.0, 5)):
            c.observe(GpuSample(t, ()), (v,))
        # Gaps between changes: 10 s, 20 s, and 0 s (two readings stamped alike: no gap).
        assert c.interval == 10.0


class TestPipelineDetails:
    def test_settings_are_checked(self) -> None:
        for bad in ({"poll_interval": 0.0}, {"poll_interval": 0.25, "window_seconds": 0.0}):
            with pytest.raises(
                ValueError, match="the poll interval and the window must be positive"
            ):
                Pipeline(horizon_seconds=60, **bad)  # type: ignore[arg-type]

    def test_before_any_window(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        assert p.snapshot == Snapshot()
        for i in range(3):
            p.add_tick(Tick(engine=vllm(i * 0.25), gpu=None))
        snap = p.snapshot
        assert snap.ticks == 3 and snap.latest is None
        assert (snap.assessment, snap.diagnosis, snap.max_model_len, snap.direction, snap.slo) == (
            None, None, None, None, None)  # fmt: skip
        assert snap.capacity.withheld == "too_few_windows"

    def test_plan_intervals(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
        assert (p.plan(0.0).engine_interval, p.plan(0.0).gpu_interval) == (1.0, 0.25)
        d = Pipeline(horizon_seconds=60, poll_interval=0.25, gpu_source_name="dcgm",
                     gpu_cadence=RefreshCadence(1.0, 30.0, fixed=5.0))  # fmt: skip
        assert d.plan(0.0).gpu_interval == 5.0

    def test_a_clock_step_before_any_window_closes(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        p.add_tick(Tick(engine=vllm(100.0), gpu=None))
        p.add_tick(Tick(engine=vllm(50.0), gpu=None))  # back 50 s, the horizon still empty
        assert p.windows == []
        for i in range(1, 9):
            p.add_tick(Tick(engine=vllm(50.0 + i * 0.25), gpu=None))
        assert [(w.start, w.end) for w, _ in p.windows] == [(50.0, 52.0)]

    def test_a_window_exactly_a_horizon_and_its_slack_old_stays(self) -> None:
        # 10 s horizon, slack 0.125 s. Windows [0,2] … [6,8], then [8, 10.125] (no tick at 10 s):
        # 10.125 − 0 = 10.125 is not more than 10 + 0.125, so [0, 2] stays: 5 windows.
        p = Pipeline(horizon_seconds=10, poll_interval=0.25)
        times = [i * 0.25 for i in range(40)] + [10.125]
        for t in times:
            p.add_tick(Tick(engine=vllm(t), gpu=None))
        assert [w.start for w, _ in p.windows] == [0.0, 2.0, 4.0, 6.0, 8.0]
        p.add_tick(Tick(engine=vllm(10.375), gpu=None))
        p.add_tick(Tick(engine=vllm(12.25), gpu=None))  # closes [10.125, 12.25]
        # Now [0, 2] and [2, 4] started 12.25 and 10.25 s before the newest end: both leave.
        assert [w.start for w, _ in p.windows] == [4.0, 6.0, 8.0, 10.125]

    def test_vllm_answered_on_the_tick_after_the_boundary(self) -> None:
        # The boundary tick answered (it belongs to the window before too), the next one too,
        # then vLLM failed: the window still counts as answered.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(9):
            t = i * 0.25
            v = vllm(t) if i < 2 else PollError(t, "timeout")
            p.add_tick(Tick(engine=v, gpu=None))
        ((w, gate),) = p.windows
        assert w.engine_answered and w.engine_polls == 2
        assert p.horizon[0].rules != {}  # evaluable: 2 polls, 0.25 s
        for i in range(9, 17):
            p.add_tick(Tick(engine=PollError(i * 0.25, "timeout"), gpu=None))
        second = p.horizon[1]
        assert not second.window.engine_answered and not second.gate.evaluable
        assert second.rules == {}  # a window that is not evaluable is not judged

    def test_gpu_figures_need_gpu_data_in_the_latest_window(self) -> None:
        # NVML polled every tick: the GPU answered until 1.75 s; the window [2.0, 2.5] cut short
        # by a gap has no GPU data, so the GPU figures are gone, however recent the last reading.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(11):
            t = i * 0.25
            g = gpu(t, dict(util_gpu_pct=50.0)) if t < 2.0 else PollError(t, "no_gpu_answered")
            p.add_tick(Tick(engine=vllm(t, running=1.0, kv_usage=0.5), gpu=g))
        p.add_tick(Tick(engine=vllm(8.0, running=1.0), gpu=PollError(8.0, "no_gpu_answered")))
        assert [(w.start, w.end) for w, _ in p.windows] == [(0.0, 2.0), (2.0, 2.5)]
        assert p.snapshot.agg.gpus == ()

    def test_a_second_change_before_a_full_horizon_has_no_baseline(self) -> None:
        # Restart at 1 s and again at 2 s: the middle epoch never had a full horizon, so the
        # last one has nothing to compare with.
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25)
        for i, (start, tok) in enumerate([(1.0, 100.0), (1.0, 200.0), (5.0, 1.0), (9.0, 1.0)]):
            p.add_tick(Tick(engine=vllm(i * 0.25, generation_tokens=tok, process_start_time=start),
                            gpu=None))  # fmt: skip
        for i in range(4, 40):
            p.add_tick(Tick(engine=vllm(i * 0.25, generation_tokens=10.0 * i,
                                        process_start_time=9.0), gpu=None))  # fmt: skip
        assert p.snapshot.epoch == 2 and p.snapshot.direction is None

    def test_the_identity_hold_is_at_least_a_minute(self) -> None:
        # Horizon 10 s, hold 60 s: process A at 0 s, B from 1 s, A again at 60 s is several;
        # A again 60.5 s after it was last seen is a restart back to A.
        for back, errors in ((60.0, {"several_servers": 1}), (60.5, {})):
            p = Pipeline(horizon_seconds=10, poll_interval=0.25)
            p.add_tick(Tick(engine=vllm(0.0, process_start_time=1.0), gpu=None))
            p.add_tick(Tick(engine=vllm(1.0, process_start_time=2.0), gpu=None))
            outcome = p.add_tick(Tick(engine=vllm(back, process_start_time=1.0), gpu=None))
            assert p.snapshot.health["vllm"].errors == errors
            # The loop learns the refusal from what add_tick returns, not from the snapshot.
            assert (outcome.refused is not None) == bool(errors)
            assert outcome.refused is None or "more than one vLLM process" in outcome.refused


class TestPipelineAssessment:
    """The pipeline hands its assessment and settings to diagnose and direction."""

    SETTINGS = RooflineSettings(catalog=load_catalog(load_config({}, {}, {})))

    def feed(self, p: Pipeline, t0: float, n: int, start: float, model: str, tps: float) -> float:
        for i in range(n):
            t = t0 + i * 0.25
            p.add_tick(Tick(
                engine=vllm(t, model_name=model, model_names=(model,), running=4.0, waiting=0.0,
                          kv_usage=0.5, generation_tokens=tps * (t - t0), process_start_time=start),
                gpu=gpu(t, dict(name=H100_NAME, util_gpu_pct=80.0,
                                mem_total_bytes=H100_MEMORY)),
            ))  # fmt: skip
        return t0 + n * 0.25

    def test_oom_risk_and_the_cap_reach_the_diagnosis(self) -> None:
        # Llama 3.1 70B in bf16 on one H100: 140 GB of weights, R4 holds; R5's evidence names
        # the --max-num-seqs given to the pipeline.
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25, roofline=self.SETTINGS,
                     max_num_seqs=8.0)  # fmt: skip
        self.feed(p, 0.0, 17, 1.0, "meta-llama/Llama-3.1-70B-Instruct", 100.0)
        d = p.snapshot.diagnosis
        assert d is not None
        r4 = next(x for x in d.rules if x.rule == "R4")
        r5 = next(x for x in d.rules if x.rule == "R5")
        assert r4.significant
        assert "--max-num-seqs 8," in r5.evidence

    def test_a_matched_model_compares_by_efficiency(self) -> None:
        # Llama 3.1 8B on an H100: the catalog gives a ceiling, 989.4e12 / (2 × 8e9) = 61,837.5
        # tok/s, so the direction after a restart compares efficiency per running request:
        # 100 → 200 tok/s at 4 running is 100 × (200 − 100) / 61,837.5 / 4 = +0.0404 pp, a
        # plateau (not above +2 pp) although throughput doubled.
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25, roofline=self.SETTINGS)
        model = "meta-llama/Llama-3.1-8B-Instruct"
        t = self.feed(p, 0.0, 17, 1.0, model, 100.0)
        self.feed(p, t, 40, 2.0, model, 200.0)
        d = p.snapshot.direction
        assert d is not None and (d.signal, d.direction) == ("efficiency", "plateau")
        assert d.efficiency_delta_pp == pytest.approx(100 * 100 / 61_837.5 / 4, rel=1e-3)


class TestPipelineBookkeeping:
    def test_failed_polls_keep_the_cadence_and_the_health(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
        p.add_tick(Tick(engine=PollError(0.0, "timeout"), gpu=PollError(0.0, "unavailable"),
                        engine_duration=1.5, gpu_duration=0.002))  # fmt: skip
        h = p.snapshot.health
        assert h["vllm"].up is False and h["vllm"].last_duration == 1.5
        assert h["nvml"].up is False and h["nvml"].last_duration == 0.002
        # A failed poll is a poll: the next is due a calm interval later, not at every tick.
        assert not p.plan(0.25).engine and p.plan(1.0).engine

    def test_a_dropped_vllm_poll_takes_its_models_with_it(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0)
        p.offer(Tick(engine=vllm(0.0), gpu=None))
        p.offer(Tick(engine=vllm(0.25), gpu=None, models=ModelsInfo(0.25, 4096)))  # not due
        assert p.snapshot.max_model_len is None

    def test_dcgm_refresh_is_learned_through_the_pipeline(self) -> None:
        # Readings change every 5 s; polled at the 1 s floor until the refresh is known.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, gpu_source_name="dcgm",
                     gpu_cadence=RefreshCadence(floor=1.0, ceiling=30.0))  # fmt: skip
        for i in range(80):  # 0 … 19.75 s
            t = i * 0.25
            power = 300.0 + (t // 5)
            p.offer(Tick(engine=vllm(t), gpu=gpu(t, dict(power_watts=power))))
        assert p.plan(20.0).gpu_interval == 5.0
        failed = Pipeline(horizon_seconds=60, poll_interval=0.25, gpu_source_name="dcgm",
                          gpu_cadence=RefreshCadence(floor=1.0, ceiling=30.0))  # fmt: skip
        failed.add_tick(Tick(engine=vllm(0.0), gpu=PollError(0.0, "connection")))
        assert not failed.plan(0.5).gpu and failed.plan(1.0).gpu

    def test_a_gap_after_one_or_two_ticks(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for t in (0.0, 10.0, 10.25, 20.0):  # one tick, a gap, two ticks, a gap
            p.add_tick(Tick(engine=vllm(t), gpu=None))
        assert [(w.start, w.end, w.engine_polls) for w, _ in p.windows] == [(10.0, 10.25, 2)]

    def test_a_slow_fixed_cadence_still_pairs_ticks(self) -> None:
        # --poll-interval 10s: every tick is past the 2 s window, so each window spans two ticks.
        p = Pipeline(horizon_seconds=600, poll_interval=10.0)
        for t in (0.0, 10.0, 20.0):
            p.add_tick(Tick(engine=vllm(t), gpu=None))
        assert [(w.start, w.end) for w, _ in p.windows] == [(0.0, 10.0), (10.0, 20.0)]

    def test_a_stuck_clock_closes_a_window_at_the_bound(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for _ in range(MAX_TICKS_PER_WINDOW - 1):
            p.add_tick(Tick(engine=vllm(7.0), gpu=None))
        assert p.windows == []
        p.add_tick(Tick(engine=vllm(7.0), gpu=None))
        assert len(p.windows) == 1

    def test_one_short_active_window_has_gpu_figures(self) -> None:
        # A single active window of 0.5 s (cut by a gap): its GPU utilization is the figure.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for t in (0.0, 0.25, 0.5, 6.0):
            p.add_tick(Tick(engine=vllm(t, running=2.0, kv_usage=0.5),
                            gpu=gpu(t, dict(util_gpu_pct=40.0))))  # fmt: skip
        assert p.windows[0][1].active
        (g,) = p.snapshot.agg.gpus
        assert g.util_ratio == pytest.approx(0.4)


class TestPipelineLeftovers:
    def test_the_cap_given_at_start_reaches_the_cadence(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, calm_poll_interval=1.0,
                     max_num_seqs=10.0)  # fmt: skip
        p.add_tick(Tick(engine=vllm(0.0, running=9.0, waiting=0.0), gpu=None))
        assert p.plan(0.25).engine_interval == 0.25

    def test_bad_settings_say_exactly_what(self) -> None:
        with pytest.raises(ValueError) as e:
            Pipeline(horizon_seconds=60, poll_interval=0.0)
        assert str(e.value) == "the poll interval and the window must be positive"

    def test_the_snapshot_carries_the_latest_window_and_gate(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(17):
            p.add_tick(Tick(engine=vllm(i * 0.25, running=1.0), gpu=None))
        (_, _), (w2, g2) = p.windows
        assert p.snapshot.latest == w2 and p.snapshot.latest_gate == g2
        assert w2.start == 2.0

    def test_a_change_before_the_first_full_horizon_has_no_baseline(self) -> None:
        # vLLM restarts after 1 s, before epoch 0 had a full 4 s horizon: nothing to compare.
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25)
        p.add_tick(Tick(engine=vllm(0.0, generation_tokens=50.0, process_start_time=1.0), gpu=None))
        for i in range(1, 40):
            p.add_tick(Tick(engine=vllm(i * 0.25, generation_tokens=10.0 * i,
                                        process_start_time=2.0), gpu=None))  # fmt: skip
        assert p.snapshot.epoch == 1 and p.snapshot.direction is None

    def test_a_starved_loop_still_compares_full_horizons(self) -> None:
        """Ticks every 0.75 s instead of 0.25 s: windows close at the first tick >= 1.875 s after
        their start, so they last 2.25 s and a 10 s horizon never holds 10 / 2 = 5 of them. The
        first process generates 100 tokens/s until 30 s, the second (from 30 s) 50 tokens/s: a
        throughput drop of 50%, past the -10% threshold: worse."""
        p = Pipeline(horizon_seconds=10.0, poll_interval=0.25)
        for i in range(41):  # 0 .. 30 s
            t = i * 0.75
            p.add_tick(Tick(engine=vllm(t, generation_tokens=100.0 * t, process_start_time=1.0),
                            gpu=None))  # fmt: skip
        assert {e - s for s, e in ((w.start, w.end) for w, _ in p.windows)} == {2.25}
        assert len(p.windows) == 4 and p.snapshot.epoch == 0
        for i in range(41, 81):  # the second process, 30.75 .. 60 s
            t = i * 0.75
            p.add_tick(Tick(engine=vllm(t, generation_tokens=50.0 * (t - 30.0),
                                        process_start_time=31.0), gpu=None))  # fmt: skip
        d = p.snapshot.direction
        assert p.snapshot.epoch == 1 and d is not None
        assert d.direction == "worse" and d.throughput_delta_pct == pytest.approx(-50.0)


# --- the idle tier: an idle vLLM polled every 5 s, woken by a busy GPU --------------------------


def idle_vllm(t: float) -> EngineSample:
    """Nothing running, nothing waiting, the token counter frozen."""
    return vllm(t, running=0.0, waiting=0.0, kv_usage=0.0, generation_tokens=100.0)


def idle_for(p: Pipeline, seconds: float, gpu_util: float | None = None) -> None:
    """A tick every 250 ms from 0 to ``seconds`` (inclusive), offered as a replay is."""
    for i in range(int(seconds / 0.25) + 1):
        t = i * 0.25
        g = None if gpu_util is None else gpu(t, dict(util_gpu_pct=gpu_util))
        p.offer(Tick(engine=idle_vllm(t), gpu=g))


def idle_pipeline(idle: float = 5.0, **kw: Any) -> Pipeline:
    return Pipeline(horizon_seconds=600, poll_interval=0.25, calm_poll_interval=1.0,
                    idle_poll_interval=idle, **kw)  # fmt: skip


def test_an_idle_server_is_polled_every_idle_interval_and_every_second_is_observed() -> None:
    # Calm polls at 0, 1, …, 30 s (31): at 30 s nothing has happened for 30 s, so the next is due
    # 5 s later (less 125 ms of slack): 35, 40, …, 120 s (18). 49 polls, not 121.
    p = idle_pipeline(gpu_source_name=None)
    idle_for(p, 120.0)
    h = p.snapshot.health["vllm"]
    assert (h.polls, h.interval) == (49, 5.0)
    # Windows hold two vLLM polls: 2 s ones [0, 2] … [26, 28] while calm (14); the one open
    # when the cadence went idle ends at its next poll, [28, 35]; then [35, 40] … [115, 120]
    # (17). Every second from 0 to 120 lies in an evaluable window.
    spans = [(w.start, w.end) for w, _ in p.windows]
    assert len(spans) == 32 and spans[13] == (26.0, 28.0) and spans[14] == (28.0, 35.0)
    assert spans[15] == (35.0, 40.0) and spans[-1] == (115.0, 120.0)
    assert all(gate.evaluable for _, gate in p.windows)
    assert p.snapshot.ledger.observed_seconds == 120.0
    # The same server at a fixed 250 ms: the same seconds observed, at ten times the polls.
    fixed = Pipeline(horizon_seconds=600, poll_interval=0.25, calm_poll_interval=0.25,
                     idle_poll_interval=5.0, gpu_source_name=None)  # fmt: skip
    idle_for(fixed, 120.0)
    assert fixed.snapshot.health["vllm"].polls == 481
    assert fixed.snapshot.ledger.observed_seconds == 120.0


def test_a_busy_gpu_wakes_an_idle_cadence_at_once() -> None:
    # Idle polls at 0 … 30 s, then 35 and 40 s; at 42 s a GPU gets busy: vLLM is polled at the
    # next tick, 42.25 s, and the window open since 40 s ends there (two vLLM polls in it).
    p = idle_pipeline()
    idle_for(p, 41.75, gpu_util=0.0)
    assert p.cadence.interval == 5.0 and not p.plan(42.0).engine
    p.offer(Tick(engine=idle_vllm(42.0), gpu=gpu(42.0, dict(util_gpu_pct=90.0))))
    assert p.cadence.interval == 1.0 and p.plan(42.25).engine
    busy = vllm(42.25, running=2.0, waiting=0.0, kv_usage=0.2, generation_tokens=140.0)
    p.offer(Tick(engine=busy, gpu=gpu(42.25, dict(util_gpu_pct=90.0))))
    w, gate = p.windows[-1]
    assert (w.start, w.end, w.engine_polls) == (40.0, 42.25, 2) and gate.evaluable


def test_a_gpu_busy_with_something_else_keeps_the_cadence_calm() -> None:
    # vLLM idle, but the GPU works (another tenant, a warm-up): never idle, polled every second.
    p = idle_pipeline()
    idle_for(p, 60.0, gpu_util=50.0)
    assert p.snapshot.health["vllm"].polls == 61 and p.cadence.interval == 1.0


@pytest.mark.parametrize(
    ("calm", "idle", "tier"),
    [(1.0, 1.0, 1.0), (0.25, 5.0, 0.25), (1.0, 0.5, 1.0), (2.0, 10.0, 10.0)],
)
def test_the_idle_tier_is_off_with_a_fixed_cadence_or_no_longer_interval(
    calm: float, idle: float, tier: float
) -> None:
    # The idle interval is never below the calm one, and a fixed cadence (calm = fast) stays
    # fixed: an idle stretch is then polled at the calm interval.
    c = EngineCadence(fast=0.25, calm=calm, idle=idle, max_num_seqs=None)
    for t in range(40):
        c.observe(idle_vllm(float(t)))
    assert c.interval == tier


def test_a_token_or_a_request_ends_the_idle_tier() -> None:
    c = EngineCadence(fast=0.25, calm=1.0, idle=5.0, max_num_seqs=None)
    for t in range(31):
        c.observe(idle_vllm(float(t)))
    assert c.interval == 5.0
    c.observe(vllm(35.0, running=0.0, waiting=0.0, generation_tokens=101.0))  # a short request
    assert c.interval == 1.0
    for t in range(36, 66):
        c.observe(vllm(float(t), running=0.0, waiting=0.0, generation_tokens=101.0))
    assert c.interval == 5.0  # 30 s quiet again
    c.observe(vllm(70.0, running=1.0, waiting=0.0, generation_tokens=101.0))
    assert c.interval == 1.0


def test_a_gpu_at_exactly_the_wake_threshold_wakes_it() -> None:
    # 20% is busy enough (the activity gate's own threshold); 19.9% is not.
    for util, wakes in ((20.0, True), (19.9, False)):
        p = idle_pipeline()
        idle_for(p, 41.75, gpu_util=0.0)
        p.offer(Tick(engine=idle_vllm(42.0), gpu=gpu(42.0, dict(util_gpu_pct=util))))
        assert (p.cadence.interval == 1.0) is wakes, util


def test_quiet_is_counted_from_the_wake() -> None:
    """Woken at 100 s, then only quiet polls: the cadence is idle again 30 s after the wake, at
    130 s, not 30 s after the first poll that followed it (100.5 s)."""
    c = EngineCadence(fast=0.25, calm=1.0, idle=5.0, max_num_seqs=None)
    for i in range(31):
        c.observe(idle_vllm(float(i)))
    assert c.interval == 5.0
    c.wake(100.0)
    assert c.interval == 1.0
    quiet: list[float] = [100.5, 101.0, *map(float, range(102, 130))]
    for t in quiet:
        c.observe(idle_vllm(t))
    assert c.interval == 1.0
    c.observe(idle_vllm(130.0))
    assert c.interval == 5.0


class TestPipelineFacts:
    def test_what_the_exporter_was_told_is_declared(self) -> None:
        r = RooflineSettings(tp=2, pp=1, dtype_env="fp8", model_params=(8e9, 1e9))
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, roofline=r, max_num_seqs=64.0,
                     revision="r7")  # fmt: skip
        assert p.declared() == {"max_num_seqs": "64", "tp": "2", "pp": "1", "dtype": "fp8",
                                "model_params": "8e+09,1e+09", "revision": "r7"}  # fmt: skip
        flag = Pipeline(horizon_seconds=60, poll_interval=0.25,
                        roofline=replace(r, dtype_flag="bf16", model_params=None))  # fmt: skip
        assert flag.declared() == {"tp": "2", "pp": "1", "dtype": "bf16"}  # the flag wins

    def test_a_restart_names_its_cause(self) -> None:
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25)
        for i in range(12):
            start = 1.0 if i < 6 else 2.0
            p.add_tick(Tick(engine=vllm(i * 0.25, generation_tokens=10.0 * i,
                                        process_start_time=start), gpu=None))  # fmt: skip
        assert (p.snapshot.epoch, p.snapshot.epoch_cause) == (1, "engine_restart")

    def test_an_epoch_with_nothing_evaluable_is_no_baseline(self) -> None:
        # A whole recording: the first process never said how many requests ran (nothing
        # evaluable), the second did: there is nothing to compare the second with.
        p = Pipeline(horizon_seconds=600.0, poll_interval=0.25, whole_epochs=True)
        for i in range(48):  # then 10 s of the second: four evaluable windows
            first = i < 8
            s = vllm(i * 0.25, running=None if first else 1.0, generation_tokens=10.0 * i,
                     process_start_time=1.0 if first else 2.0)  # fmt: skip
            p.add_tick(Tick(engine=s, gpu=None))
        assert p.snapshot.epoch == 1 and p.snapshot.direction is None
        assert p.snapshot.agg.windows_evaluable >= 3  # enough to compare, had there been a before

    def test_the_models_roots_reach_the_catalog(self) -> None:
        # vLLM serves "chat" from meta-llama/Llama-3.1-8B (what /v1/models says): the catalog
        # matches the root.
        catalog = load_catalog(load_config({}, {}, {}))
        p = Pipeline(horizon_seconds=60, poll_interval=0.25,
                     roofline=RooflineSettings(catalog=catalog))  # fmt: skip
        models = ModelsInfo(0.0, 4096, ("chat",), (("chat", "meta-llama/Llama-3.1-8B"),))
        for i in range(9):
            p.add_tick(Tick(engine=vllm(i * 0.25, model_name="chat", model_names=("chat",)),
                            gpu=None, models=models if i == 0 else None))  # fmt: skip
        a = p.snapshot.assessment
        assert a is not None and a.resolved.model_matched_on == "root"
        assert a.resolved.model_root == "meta-llama/Llama-3.1-8B"

    def test_a_window_without_a_running_count_adds_nothing_to_the_objectives(self) -> None:
        # vLLM's latency histograms moved, but the window is not evaluable (no running count):
        # its requests are not counted, as its seconds are not.
        h0 = Histogram((0.5, INF), (0.0, 0.0), 0.0, 0.0)
        h1 = Histogram((0.5, INF), (4.0, 5.0), 2.0, 5.0)
        p = Pipeline(horizon_seconds=60, poll_interval=0.25,
                     roofline=RooflineSettings(slo=SloTargets(ttft=0.5)))  # fmt: skip
        for i in range(9):
            p.add_tick(Tick(engine=vllm(i * 0.25, running=None, ttft=h1 if i else h0), gpu=None))
        assert len(p.windows) == 1 and not p.windows[0][1].evaluable
        assert dict(p.snapshot.ledger.slo) == {}

    def test_a_run_is_compared_with_an_earlier_one(self) -> None:
        # diagnose --loop: the horizon now (100 tokens/s, 1 running, no roofline) against a
        # summary kept from the last run (250 tokens/s): throughput -60%, worse.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(17):
            p.add_tick(Tick(engine=vllm(i * 0.25, generation_tokens=25.0 * i), gpu=None))
        assert p.summary().generation_tps == pytest.approx(100.0)
        d = p.compared_with(Summary(generation_tps=250.0, running=1.0))
        assert (d.direction, d.signal) == ("worse", "throughput")
        assert d.throughput_delta_pct == pytest.approx(-60.0)

    def test_a_reload_is_an_epoch_of_its_own_identity(self) -> None:
        # SIGHUP with another --max-num-seqs: a new epoch, caused by the reload, and a new
        # configuration identity (the declared settings are part of it).
        p = Pipeline(horizon_seconds=60, poll_interval=0.25, max_num_seqs=8.0)
        for i in range(9):
            p.add_tick(Tick(engine=vllm(i * 0.25, model_name="m", model_names=("m",)), gpu=None))
        before = p.snapshot.config_id
        assert before and p.snapshot.epoch == 0
        p.reconfigure(RooflineSettings(), 16.0)
        for i in range(9, 18):
            p.add_tick(Tick(engine=vllm(i * 0.25, model_name="m", model_names=("m",)), gpu=None))
        assert (p.snapshot.epoch, p.snapshot.epoch_cause) == (1, "reconfigured")
        assert p.snapshot.config_id not in ("", before)

    def test_nothing_declared_nothing_named(self) -> None:
        # No setting given: nothing declared but PP (1 unless told); before any engine data, no
        # identity; a half-second window is a valid setting.
        p = Pipeline(horizon_seconds=1.0, poll_interval=0.25, window_seconds=0.5)
        assert p.declared() == {"pp": "1"}
        p.add_tick(Tick(engine=PollError(0.0, "connection_refused"), gpu=None))
        assert p.snapshot.config_id == ""


def test_running_near_the_cap_counts_every_engine() -> None:
    # --max-num-seqs 8 per engine, two engines: 14.4 running (90% of 16) is near the cap, 10 not.
    assert pressure(EngineSample(1.0, running=14.4, engines=2), None, 8.0) == "running"
    assert pressure(EngineSample(1.0, running=10.0, engines=2), None, 8.0) is None
    assert pressure(EngineSample(1.0, running=7.2, engines=1), None, 8.0) == "running"
