"""The pipeline's parts, each on its own: the windower (ticks into windows of time), the
horizon's windows, and the configuration epochs with their direction. The whole pipeline's
behaviour over real recordings is in test_time_windows.py, test_cadence.py and the goldens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.derive import thresholds as T
from exporter.derive.cadence import EngineCadence
from exporter.derive.direction import Summary
from exporter.derive.epochs import Epochs
from exporter.derive.gate import classify
from exporter.derive.horizon import aggregate
from exporter.derive.horizon_windows import HorizonWindow, HorizonWindows
from exporter.derive.source_health import HealthTracker
from exporter.derive.window import Window, build_window
from exporter.derive.windower import MAX_TICKS_PER_WINDOW, Cut, Windower
from exporter.samples import EngineSample, ServingConfig, Tick
from tests.helpers import gpu, vllm


def windower(interval: float = 0.25) -> Windower:
    # A fixed cadence: the engine interval is the fast one. Slack: half an interval.
    return Windower(2.0, interval / 2, EngineCadence(fast=interval, calm=interval,
                                                     max_num_seqs=None))  # fmt: skip


def at(t: float, complete: bool = True, **kw: float) -> Tick:
    return Tick(engine=replace(vllm(t, running=1.0, **kw), complete=complete), gpu=None)


class TestWindower:
    def test_a_window_closes_at_its_ninth_tick_and_shares_its_boundary(self) -> None:
        w = windower()
        cuts = [w.add(i * 0.25, at(i * 0.25)) for i in range(9)]
        assert all(c.after is None for c in cuts[:8])
        done = cuts[8].after
        assert done is not None and (done.start, done.end, done.engine_polls) == (0.0, 2.0, 9)
        assert [t for t, _ in w.buf] == [2.0]  # the boundary tick opens the next window

    def test_a_gap_ends_the_window_at_the_tick_before(self) -> None:
        w = windower()
        for i in range(5):
            w.add(i * 0.25, at(i * 0.25))
        assert w.gap_seconds == 2 * T.GAP_WINDOWS  # two windows of 2 s
        cut = w.add(5.1, at(5.1))  # 4.1 s after the last tick: more than two windows
        assert cut.broke and cut.before is not None and cut.after is None
        assert (cut.before.start, cut.before.end) == (0.0, 1.0)
        assert [t for t, _ in w.buf] == [5.1]
        # The clock stepping back breaks it too; a lone tick makes no window.
        cut = w.add(4.0, at(4.0))
        assert cut.broke and cut.before is None and [t for t, _ in w.buf] == [4.0]

    def test_a_window_never_starts_at_a_partly_read_poll(self) -> None:
        w = windower()
        assert w.add(0.0, at(0.0, complete=False)) == Cut() and w.buf == []
        with_gpu = Tick(engine=replace(vllm(0.25), complete=False), gpu=gpu(0.25))
        w.add(0.25, with_gpu)  # the GPU reading stays, the partial engine sample does not
        assert w.buf[0][1].engine is None and w.buf[0][1].gpu is not None
        w.add(0.5, at(0.5, complete=False))
        assert len(w.buf) == 1 and w.last_engine_sample() is None
        w.add(0.75, at(0.75))  # a whole read starts it; partial ones may follow
        w.add(1.0, at(1.0, complete=False))
        assert [t for t, _ in w.buf] == [0.25, 0.75, 1.0]

    def test_which_polls_must_be_read_whole(self) -> None:
        w = windower()
        assert w.whole_read(0.0, w.edge(0.0))  # the window's first
        w.add(0.0, at(0.0))
        assert not w.edge(0.25) and not w.whole_read(0.25, False)  # inside the window
        # 1.5 + 2 x 0.25 reaches the close at 2.0 - 0.125: this poll may be the last.
        assert w.whole_read(1.5, w.edge(1.5))
        w.engine_duration = 0.5  # slow polls: two durations ahead instead
        assert w.whole_read(1.0, w.edge(1.0)) and not w.whole_read(0.75, w.edge(0.75))

    def test_the_open_window_keeps_no_body_and_a_bounded_count(self) -> None:
        w = windower()
        w.add(0.0, replace(at(0.0), engine_body="x" * 1000, models_body="{}"))
        assert w.buf[0][1].engine_body is None and w.buf[0][1].models_body is None
        w.drop()
        for _ in range(MAX_TICKS_PER_WINDOW - 1):  # timestamps that do not advance
            assert w.add(1.0, at(1.0)).after is None
        assert w.add(1.0, at(1.0)).after is not None and len(w.buf) == 1

    def test_an_idle_cadence_spans_its_interval(self) -> None:
        w = windower(interval=5.0)
        assert w.span() == 5.0 and w.gap_seconds == 10.0
        w.add(0.0, at(0.0))
        assert w.add(2.0, at(2.0)).after is None  # a 2 s window would have closed here
        assert w.add(5.0, at(5.0)).after is not None

    def test_a_window_waits_for_its_engine_poll_two_spans_at_most(self) -> None:
        # The engine answered at the window's start, then the GPUs alone tick: the window ends
        # at the next engine poll, or after two spans (4 s) if none comes.
        w = windower()
        for i in range(7):
            w.add(i * 0.25, at(i * 0.25))
        ticks = [1.75 + 0.25 * i for i in range(10)]  # 1.75 .. 4.0
        cuts = [w.add(t, Tick(engine=None, gpu=gpu(t))) for t in ticks]
        assert all(c.after is None for c in cuts[:-1])
        done = cuts[-1].after
        assert done is not None and (done.start, done.end) == (0.0, 4.0)

    def test_a_window_does_not_end_at_a_partly_read_poll_for_a_window_more(self) -> None:
        w = windower()
        w.add(100.0, at(100.0))  # whole: it starts the window
        ticks = [100.0 + 0.25 * i for i in range(1, 17)]  # partial reads up to 104.0
        cuts = [w.add(t, at(t, complete=False)) for t in ticks]
        assert all(c.after is None for c in cuts[:-1])  # not at 102.0, where a whole read would
        done = cuts[-1].after
        assert done is not None and (done.start, done.end) == (100.0, 104.0)

    def test_a_partly_read_poll_after_a_gap_still_closes_the_window_before(self) -> None:
        w = windower()
        for i in range(5):
            w.add(i * 0.25, at(i * 0.25))
        cut = w.add(6.0, at(6.0, complete=False))  # a gap, then a poll that cannot open one
        assert cut.broke and cut.before is not None and cut.before.end == 1.0
        assert w.buf == []

    def test_each_raw_text_is_dropped_alone(self) -> None:
        w = windower()
        w.add(0.0, replace(at(0.0), engine_body="x"))
        w.add(0.25, replace(at(0.25), models_body="{}"))
        plain = at(0.5)
        w.add(0.5, plain)
        assert all(t.engine_body is None and t.models_body is None for _, t in w.buf)
        assert w.buf[-1][1] is plain  # nothing to drop: the tick as it came

    def test_a_window_holds_two_ticks_at_least(self) -> None:
        # Even a window shorter than the slack closes at its second tick, not its first.
        w = Windower(0.1, 0.125, EngineCadence(fast=0.05, calm=0.05, max_num_seqs=None))
        assert w.add(0.0, at(0.0)).after is None
        assert w.add(0.05, at(0.05)).after is not None


def served(block: str, models: tuple[str, ...] = ("m",)) -> EngineSample:
    config = ServingConfig(settings={"block_size": block}, kv_capacity_tokens=1000.0)
    return EngineSample(1.0, model_names=models, serving=config, engines=1)


class TestEpochs:
    def test_restart_and_configuration_changes(self) -> None:
        e = Epochs()
        assert (e.epoch, e.cause, e.direction) == (0, None, None)  # nothing started it yet
        assert e.change(served("16"), restarted=False) is None
        e.settle(served("16"))
        assert e.change(served("16"), restarted=False) is None
        assert e.change(served("32"), restarted=False) == "cache_config_change"
        assert e.change(EngineSample(2.0), restarted=False) is None  # states nothing
        # A restart into the same configuration is a restart, not a change; into another, not.
        assert e.change(served("16"), restarted=True) == "engine_restart"
        e.begin("engine_restart")
        e.settle(served("16"))
        assert (e.epoch, e.cause) == (1, "engine_restart_same_config")
        assert e.change(served("16"), restarted=True) == "engine_restart"
        e.begin("engine_restart")
        e.settle(served("64"))
        assert (e.epoch, e.cause) == (2, "engine_restart")

    def test_the_direction_compares_full_horizons_once(self) -> None:
        e = Epochs()
        before, after = Summary(generation_tps=100.0), Summary(generation_tps=50.0)
        e.track(False, 29, lambda: before)
        e.begin("reconfigured")
        assert e.direction is None  # no full horizon before the change: no baseline
        e.track(True, 30, lambda: before)
        e.begin("reconfigured")
        e.track(False, 30, lambda: after)  # e.g. the horizon still holds the last epoch
        assert e.direction is None
        e.track(True, 30, lambda: after)
        d = e.direction
        assert d is not None and d.direction == "worse" and d.throughput_delta_pct == -50.0
        e.track(True, 30, lambda: before)  # later horizons do not change the verdict
        assert e.direction is d

    def test_whole_epochs_compare_with_the_whole_epoch_before(self) -> None:
        e = Epochs(whole_epochs=True)
        e.begin("engine_restart", Summary(generation_tps=100.0))
        e.track(False, T.PERSIST_MIN_WINDOWS - 1, lambda: Summary(generation_tps=200.0))
        assert e.direction is None
        e.track(False, T.PERSIST_MIN_WINDOWS, lambda: Summary(generation_tps=200.0))
        assert e.direction is not None and e.direction.direction == "better"


class TestHorizonWindows:
    def hw(
        self, start: float, epoch: int = 0, length: float = 2.0, data: bool = True
    ) -> HorizonWindow:
        polls = [vllm(start), vllm(start + length)] if data else []
        w = build_window(polls, [], start=start, end=start + length)
        return HorizonWindow(w, classify(w), {}, epoch)

    def test_old_windows_and_windows_from_the_future_leave(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        for start in (0.0, 2.0, 4.0, 6.0, 8.0):
            h.add(self.hw(start))
        assert len(h) == 5 and h.end() == 10.0
        h.add(self.hw(10.0, epoch=1))  # 12 - 0 > 10 + 0.125: the first leaves
        assert [x.window.start for x in h] == [2.0, 4.0, 6.0, 8.0, 10.0]
        h.evict(1.0)  # the clock stepped back before the horizon: its windows are "future"
        assert len(h) == 0 and h.end() == float("-inf")

    def test_full_once_the_windows_span_the_horizon(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        assert not h.full(0)
        for start in (0.0, 2.0, 4.0, 6.0):
            h.add(self.hw(start))
        assert not h.full(0)  # 8 s of 10
        h.add(self.hw(8.0))
        assert h.full(0) and not h.full(1)  # 10 s >= 10 - 0.125

    def test_spanning_exactly_the_horizon_less_the_slack_is_full(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.625)
        for i in range(5):
            h.add(self.hw(1.875 * i, length=1.875))
        assert h.full(0)  # 5 x 1.875 = 9.375 = 10 - 0.625 (exact in binary)
        h.clear()
        for i in range(4):
            h.add(self.hw(1.875 * i, length=1.875))
        assert not h.full(0)

    def test_longer_windows_fill_it_by_ageing_out(self) -> None:
        """Windows of 2.25 s (a starved loop): the horizon keeps those that start within 10.125 s
        of the newest end, never five, and at most 9 s of them; it is full once the epoch's first
        window aged out."""
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        for i in range(4):
            h.add(self.hw(2.25 * i, length=2.25))
        assert len(h) == 4 and not h.full(0)  # 0 .. 9 s
        h.add(self.hw(9.0, length=2.25))  # ends at 11.25: the window at 0 s leaves
        assert [x.window.start for x in h] == [2.25, 4.5, 6.75, 9.0]
        assert h.full(0)

    def test_an_epoch_fills_its_own_horizon(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        for i in range(6):
            h.add(self.hw(2.0 * i))
        assert h.full(0)
        for i in range(6, 10):
            h.add(self.hw(2.0 * i, epoch=1))
            assert not h.full(0) and not h.full(1)  # both epochs in the horizon
        h.add(self.hw(20.0, epoch=1))  # [12, 22]: epoch 0 has left, epoch 1 spans 10 s
        assert h.full(1) and not h.full(0)
        h.clear()
        assert not h.full(1) and len(h) == 0

    def test_a_window_without_engine_data_keeps_it_from_being_full(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        for i in range(5):
            h.add(self.hw(2.0 * i, data=i != 2))
        assert not h.full(0)  # the window at 4 s is not evaluable
        for i in range(5, 8):
            h.add(self.hw(2.0 * i))
        assert [x.window.start for x in h] == [6.0, 8.0, 10.0, 12.0, 14.0]
        assert h.full(0)

    def test_windows_from_the_future_do_not_count_as_aged(self) -> None:
        h = HorizonWindows(horizon_seconds=10.0, slack=0.125)
        for i in range(4):
            h.add(self.hw(2.25 * i, length=2.25))
        h.evict(-1.0)  # the clock stepped back before the horizon: all are "future"
        assert len(h) == 0
        for i in range(4):
            h.add(self.hw(-1.0 + 2.25 * i, length=2.25))
        assert len(h) == 4 and not h.full(0)  # 9 s, and none of them aged out

    @pytest.mark.parametrize("n", [0, 3])
    def test_counts(self, n: int) -> None:
        h = HorizonWindows(horizon_seconds=60.0, slack=0.125)
        for i in range(n):
            h.add(self.hw(2.0 * i))
        assert len(h) == n and (h.latest is None) == (n == 0)


def test_tokens_per_step_is_a_ratio_of_sums() -> None:
    """The mean decode batch over the horizon: 700 tokens in 200 steps is 3.5 per step, not the
    mean of the windows' own 8 and 2."""

    def active(start: float, tokens: float, steps: float) -> Window:
        # As from vLLM: the steps made what its token counter counts.
        return Window(start=start, end=start + 2.0, duration=2.0, engine_polls=9,
                      gpu_polls=0, running=4.0, kv_usage=0.5, d_generation_tokens=tokens,
                      d_step_generated=tokens, d_steps=steps)  # fmt: skip

    windows = [active(0.0, 400.0, 50.0), active(2.0, 300.0, 150.0)]
    gated = [(w, classify(w)) for w in windows]
    assert all(g.active for _, g in gated)
    agg = aggregate(gated)
    assert agg.decode_batch_per_step == 700.0 / 200.0
    assert agg.engine_steps_per_second == (25.0 * 2 + 75.0 * 2) / 4  # 200 steps in 4 s
    # A window whose steps are unknown (a counter reset) counts for neither sum.
    reset = replace(active(4.0, 900.0, 0.0), d_steps=None)
    assert aggregate([*gated, (reset, classify(reset))]).decode_batch_per_step == 3.5
    # One step in the whole horizon is enough: its 6 tokens are a batch of 6; none is nothing.
    one = active(0.0, 6.0, 1.0)
    assert aggregate([(one, classify(one))]).decode_batch_per_step == 6.0
    none = active(0.0, 0.0, 0.0)
    assert aggregate([(none, classify(none))]).decode_batch_per_step is None


class TestHealthTracker:
    def test_the_interval_measured_is_the_mean_gap_between_polls(self) -> None:
        h = HealthTracker()
        assert h.freeze(0.25).measured_interval is None  # no poll
        h.record(vllm(10.0), 0.01)
        assert h.freeze(0.25).measured_interval is None  # one poll: no gap yet
        h.record(vllm(10.5), 0.01)
        assert h.freeze(0.25).measured_interval == 0.5  # two polls: their gap
        h.record(vllm(10.5), 0.01)  # stamped alike (a coarse clock): a gap of 0
        h.record(vllm(11.75), 0.01)
        assert h.freeze(0.25).measured_interval == pytest.approx(1.75 / 3)

    def test_two_polls_stamped_alike_measure_nothing(self) -> None:
        h = HealthTracker()
        h.record(vllm(3.0), 0.01)
        h.record(vllm(3.0), 0.01)
        assert h.freeze(0.25).measured_interval is None
        h.record(vllm(4.0), 0.01)  # then a gap: 1 s over the three polls' two gaps
        assert h.freeze(0.25).measured_interval == 0.5

    def test_a_clock_that_steps_back_starts_the_measure_again(self) -> None:
        h = HealthTracker()
        for t in (100.0, 101.0, 102.0):
            h.record(vllm(t), 0.01)
        h.record(vllm(50.0), 0.01)  # stepped back: the gaps before are another clock's
        assert h.freeze(1.0).measured_interval is None
        h.record(vllm(50.25), 0.01)
        assert h.freeze(1.0).measured_interval == 0.25
