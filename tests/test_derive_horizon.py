"""The gate, horizon aggregation and the pipeline's windowing (docs/design.md), by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.derive.gate import Gate, classify
from exporter.derive.horizon import aggregate
from exporter.derive.window import build_window
from exporter.engines.vllm.serving import serving_config
from exporter.pipeline import Pipeline
from exporter.samples import PollError, Tick
from tests.helpers import INF, gpu, hist, tick, vllm

B = (0.1, 1.0, INF)


def win(t0: float, *, dur: float = 2.0, gpus=(), **pairs):
    """A two-poll window; each keyword is a (first, last) pair of EngineSample field values."""
    first = {k: v[0] for k, v in pairs.items()}
    last = {k: v[1] for k, v in pairs.items()}
    polls = [vllm(t0, **first), vllm(t0 + dur, **last)]
    return build_window(polls, list(gpus), start=t0, end=t0 + dur)


class TestGate:
    def test_missing_running_is_not_evaluable(self) -> None:
        w = win(0.0, running=(None, None))
        assert not classify(w).evaluable

    def test_zero_running_is_evaluable_but_idle(self) -> None:
        g = classify(win(0.0, running=(0.0, 0.0)))
        assert g.evaluable and not g.active

    def test_kv_arm(self) -> None:
        # running 2, KV 35% > 30%: active even with no token movement.
        w = win(0.0, running=(2.0, 2.0), kv_usage=(0.35, 0.35), generation_tokens=(5.0, 5.0))
        assert classify(w).active
        # KV 30% exactly is not above 30%, and no tokens moved: idle.
        w = win(0.0, running=(2.0, 2.0), kv_usage=(0.30, 0.30), generation_tokens=(5.0, 5.0))
        assert not classify(w).active

    def test_gpu_arm(self) -> None:
        busy = [gpu(0.0, dict(util_gpu_pct=25.0)), gpu(2.0, dict(util_gpu_pct=25.0))]
        idle = [gpu(0.0, dict(util_gpu_pct=20.0)), gpu(2.0, dict(util_gpu_pct=20.0))]
        kv_low = dict(running=(1.0, 1.0), kv_usage=(0.01, 0.01), generation_tokens=(0.0, 50.0))
        assert classify(win(0.0, gpus=busy, **kv_low)).active
        # GPU data present and at 20% (not above): tokens moving does not replace it.
        assert not classify(win(0.0, gpus=idle, **kv_low)).active

    def test_without_gpu_tokens_moved_stand_in(self) -> None:
        moved = win(0.0, running=(1.0, 1.0), kv_usage=(0.01, 0.01), prompt_tokens=(10.0, 40.0))
        still = win(0.0, running=(1.0, 1.0), kv_usage=(0.01, 0.01), prompt_tokens=(10.0, 10.0))
        assert classify(moved).active
        assert not classify(still).active

    def test_no_arm_at_all_running_decides(self) -> None:
        assert classify(win(0.0, running=(1.0, 1.0))).active


class TestAggregate:
    def test_idle_windows_excluded_from_active_means_but_in_kv_average(self) -> None:
        # Window A: active, 2 s, 400 tokens → 200 tok/s, KV 0.5.
        # Window B: idle (running 0), 2 s, 0 tokens, KV 0.1.
        # Window C: active, 4 s, 400 tokens → 100 tok/s, KV 0.2.
        # Throughput over active windows, time-weighted: (200×2 + 100×4) / 6 = 133.33 tok/s
        # (not (200+0+100)/3 = 100 with B). KV over evaluable windows: (0.5×2 + 0.1×2 + 0.2×4)/8
        # = 2.0/8 = 0.25.
        a = win(0.0, running=(2.0, 2.0), kv_usage=(0.5, 0.5), generation_tokens=(0.0, 400.0))
        b = win(2.0, running=(0.0, 0.0), kv_usage=(0.1, 0.1), generation_tokens=(400.0, 400.0))
        c = win(
            4.0, dur=4.0, running=(2.0, 2.0), kv_usage=(0.2, 0.2), generation_tokens=(400.0, 800.0)
        )
        agg = aggregate([(w, classify(w)) for w in (a, b, c)])
        assert (agg.windows_total, agg.windows_evaluable, agg.windows_active) == (3, 3, 2)
        assert agg.generation_tps == pytest.approx((200 * 2 + 100 * 4) / 6)
        assert agg.kv_usage_mean == pytest.approx(0.25)
        # The spread the status page draws: the active windows' own rates, 100 and 200 tok/s
        # (the idle window's 0 is not among them).
        assert agg.generation_tps_range == (100.0, 200.0)
        # Wall-clock basis: every evaluable second (2 + 2 + 4) observed, 6 of them active, 800
        # tokens over those 8 s.
        assert (agg.observed_seconds, agg.active_seconds) == (8.0, 6.0)
        assert (agg.observed_tokens, agg.observed_token_seconds) == (800.0, 8.0)

    def test_histogram_means_weighted_by_observations(self) -> None:
        # A: 1 observation of 3.0 s; C: 3 observations totalling 3.0 s. ΣΔsum/ΣΔcount = 6/4 =
        # 1.5 s (an average of window means would be (3.0 + 1.0)/2 = 2.0).
        a = win(0.0, running=(1.0, 1.0), ttft=(hist(B, (0, 0, 0), 0), hist(B, (0, 0, 1), 3.0)))
        c = win(2.0, running=(1.0, 1.0), ttft=(hist(B, (0, 0, 1), 3.0), hist(B, (0, 3, 4), 6.0)))
        agg = aggregate([(w, classify(w)) for w in (a, c)])
        assert agg.ttft_mean == pytest.approx(1.5)
        # p99 from the merged deltas: (0, 3, 4) − … = A (0,0,1) + C (0,3,3) = (0, 3, 4).
        # rank 0.99 × 4 = 3.96 > 3 → +Inf bucket → last finite bound 1.0.
        assert agg.ttft_p99 == pytest.approx(1.0)

    def test_peak_never_below_current(self) -> None:
        # Per-window KV peaks 0.4 and 0.6; the last evaluable value 0.6; an older 0.9 spike in a
        # window now outside the list does not count. Peak = max(0.4, 0.6, 0.6) = 0.6 ≥ current.
        a = win(0.0, running=(1.0, 1.0), kv_usage=(0.4, 0.3))
        b = win(2.0, running=(1.0, 1.0), kv_usage=(0.3, 0.6))
        agg = aggregate([(w, classify(w)) for w in (a, b)])
        assert agg.kv_usage_peak == pytest.approx(0.6)

    def test_gpu_peak_includes_current(self) -> None:
        g = [gpu(0.0, dict(temperature_c=60.0)), gpu(2.0, dict(temperature_c=71.0))]
        w = win(0.0, running=(1.0, 1.0), gpus=g)
        agg = aggregate([(w, classify(w))])
        assert agg.gpus[0].temperature_c == 71.0
        assert agg.gpus[0].temperature_peak_c == 71.0

    def test_gpu_peaks_count_the_current_reading_when_vllm_is_silent(self) -> None:
        # Two evaluable windows whose GPU peaked at 60 °C and 10 GB; then vLLM stops answering
        # and the latest window (not evaluable, so not among the windows peaks come from) reads
        # 75 °C and 12 GB now. A peak below the current value would be a lie: 75 and 12.
        cool = [gpu(0.0, dict(temperature_c=55.0, mem_used_bytes=9e9)),
                gpu(2.0, dict(temperature_c=60.0, mem_used_bytes=10e9))]  # fmt: skip
        a = win(0.0, running=(1.0, 1.0), gpus=cool)
        b = win(2.0, running=(1.0, 1.0), gpus=[gpu(t, dict(temperature_c=58.0, mem_used_bytes=9e9))
                                               for t in (2.0, 4.0)])  # fmt: skip
        hot = [gpu(4.0, dict(temperature_c=70.0, mem_used_bytes=11e9)),
               gpu(6.0, dict(temperature_c=75.0, mem_used_bytes=12e9))]  # fmt: skip
        silent = build_window([], hot, start=4.0, end=6.0)
        assert not classify(silent).evaluable
        agg = aggregate([(w, classify(w)) for w in (a, b, silent)])
        (g,) = agg.gpus
        assert (g.temperature_c, g.temperature_peak_c) == (75.0, 75.0)
        assert (g.mem_used_bytes, g.mem_used_peak_bytes) == (12e9, 12e9)
        # With vLLM answering, peaks come from the evaluable windows: 60 °C beats 58 °C now.
        agg = aggregate([(w, classify(w)) for w in (a, b)])
        assert (agg.gpus[0].temperature_c, agg.gpus[0].temperature_peak_c) == (58.0, 60.0)

    def test_a_gpu_first_seen_while_vllm_is_silent_has_its_own_figures(self) -> None:
        # GPU 1 appears in the latest window only, one vLLM did not answer in: its peaks are its
        # current readings (52 °C, 3 GB), nothing borrowed from GPU 0.
        a = win(0.0, running=(1.0, 1.0), gpus=[gpu(t, dict(temperature_c=60.0)) for t in (0, 2)])
        both = [gpu(t, dict(temperature_c=61.0), dict(temperature_c=c, mem_used_bytes=3e9))
                for t, c in ((2.0, 50.0), (4.0, 52.0))]  # fmt: skip
        silent = build_window([], both, start=2.0, end=4.0)
        agg = aggregate([(w, classify(w)) for w in (a, silent)])
        g0, g1 = agg.gpus
        assert (g0.temperature_c, g0.temperature_peak_c) == (61.0, 61.0)
        assert (g1.temperature_c, g1.temperature_peak_c) == (52.0, 52.0)
        assert (g1.mem_used_bytes, g1.mem_used_peak_bytes) == (3e9, 3e9)

    def test_short_windows_count_their_seconds(self) -> None:
        # Two evaluable windows of 0.5 s (--window 500ms): 1 s observed, 1 s active.
        ws = [win(t, dur=0.5, running=(1.0, 1.0), generation_tokens=(10.0 * t, 10.0 * t + 5))
              for t in (0.0, 0.5)]  # fmt: skip
        agg = aggregate([(w, classify(w)) for w in ws])
        assert (agg.observed_seconds, agg.active_seconds) == (1.0, 1.0)
        assert (agg.observed_tokens, agg.observed_token_seconds) == (10.0, 1.0)

    def test_a_window_without_a_token_delta_adds_no_token_seconds(self) -> None:
        # The token counter reset in the second window: its 2 s count as observed, not as the
        # time the known tokens were made in.
        a = win(0.0, running=(1.0, 1.0), generation_tokens=(0.0, 30.0))
        b = win(2.0, running=(1.0, 1.0), generation_tokens=(30.0, 4.0))
        agg = aggregate([(w, classify(w)) for w in (a, b)])
        assert agg.observed_seconds == 4.0
        assert (agg.observed_tokens, agg.observed_token_seconds) == (30.0, 2.0)
        only_reset = aggregate([(b, classify(b))])
        assert (only_reset.observed_tokens, only_reset.observed_token_seconds) == (None, 0.0)

    def test_prefix_ratio_over_evaluable_sums(self) -> None:
        # (10 + 0 + 50) hits / (20 + 0 + 100) queries = 60/120 = 0.5; the idle middle window
        # contributes nothing to either sum.
        ws = [
            win(0.0, running=(1.0, 1.0), prefix_hits=(0.0, 10.0), prefix_queries=(0.0, 20.0)),
            win(2.0, running=(0.0, 0.0), prefix_hits=(10.0, 10.0), prefix_queries=(20.0, 20.0)),
            win(4.0, running=(1.0, 1.0), prefix_hits=(10.0, 60.0), prefix_queries=(20.0, 120.0)),
        ]
        assert aggregate([(w, classify(w)) for w in ws]).prefix_hit_ratio == pytest.approx(0.5)

    def test_cumulative_totals_from_last_window_and_empty_horizon(self) -> None:
        ws = [
            win(0.0, running=(1.0, 0.0), generation_tokens=(10.0, 90.0),
                requests_finished=(1.0, 3.0)),
            win(2.0, running=(0.0, 0.0), generation_tokens=(90.0, 90.0),
                requests_finished=(3.0, 4.0)),
        ]  # fmt: skip
        agg = aggregate([(w, classify(w)) for w in ws])
        assert (agg.generation_tokens_total, agg.requests_total) == (90.0, 4.0)
        assert aggregate([]).generation_tps is None


class TestPipelineWindows:
    def test_windows_share_their_boundary_poll(self) -> None:
        # 17 ticks at 0.25 s make two windows of 9 polls: [0, 2.0] and [2.0, 4.0]. Tokens grow
        # 100 per tick, so each window moves 800 tokens in 2.0 s = 400 tok/s.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(17):
            p.add_tick(tick(vllm(i * 0.25, running=1.0, generation_tokens=100.0 * i)))
        (w1, _), (w2, _) = p.windows
        assert (w1.start, w1.end, w1.engine_polls) == (0.0, 2.0, 9)
        assert (w2.start, w2.end, w2.engine_polls) == (2.0, 4.0, 9)
        assert w1.generation_tps == pytest.approx(400.0)
        assert p.snapshot.agg.generation_tps == pytest.approx(400.0)

    def test_horizon_drops_old_windows(self) -> None:
        # 10 s horizon at 2 s windows keeps 5 windows.
        p = Pipeline(horizon_seconds=10, poll_interval=0.25)
        for i in range(8 * 12 + 1):
            p.add_tick(tick(vllm(i * 0.25)))
        assert len(p.windows) == 5
        assert p.snapshot.agg.windows_total == 5

    def test_restart_asks_for_models_again(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        p.set_models(None)
        p.add_tick(tick(vllm(0.0, generation_tokens=500.0, process_start_time=100.0)))
        assert not p.models_wanted
        p.add_tick(tick(vllm(0.25, generation_tokens=3.0, process_start_time=200.0)))
        assert p.models_wanted

    def test_wall_clock_stepping_back_drops_future_windows(self) -> None:
        # 3 windows around t = 1000 s, then the clock steps back to t = 10 s: the old windows
        # now lie "in the future" and must leave the horizon instead of lingering forever.
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)
        for i in range(25):
            p.add_tick(tick(vllm(1000.0 + i * 0.25)))
        assert [w.start for w, _ in p.windows] == [1000.0, 1002.0, 1004.0]
        # The step ends the window open at it (the boundary poll at 1006 s alone: no window) and
        # every window now in the future leaves at once. Windows start afresh at 10 s.
        p.add_tick(tick(vllm(10.0)))
        assert p.windows == [] and p.snapshot.agg.windows_total == 0
        for i in range(1, 17):
            p.add_tick(tick(vllm(10.0 + i * 0.25)))
        assert [(w.start, w.end, w.duration) for w, _ in p.windows] == [
            (10.0, 12.0, 2.0),
            (12.0, 14.0, 2.0),
        ]


class TestFreshness:
    """ "Figures vanish within one window" (docs/metrics.md), pinned to the poll."""

    def test_derived_figures_vanish_after_one_window_of_failed_polls(self) -> None:
        p = Pipeline(horizon_seconds=60, poll_interval=0.25)

        def good(i: int) -> None:
            p.add_tick(tick(vllm(i * 0.25, running=2.0, kv_usage=0.5,
                                 generation_tokens=100.0 * i)))  # fmt: skip

        for i in range(17):  # two windows: [0, 2] and [2, 4], closed at ticks 8 and 16
            good(i)
        assert p.snapshot.agg.engine_fresh
        assert p.snapshot.agg.generation_tps == pytest.approx(400.0)
        for i in range(17, 24):  # 7 failed polls: the open window [4, ...] has not closed
            p.add_tick(Tick(engine=PollError(i * 0.25, "connection"), gpu=None))
            assert p.snapshot.agg.engine_fresh
        # The 8th failed poll closes [4, 6]: only its shared boundary poll (tick 16) answered,
        # which belongs to the window before. vLLM is not fresh: its figures are gone.
        p.add_tick(Tick(engine=PollError(24 * 0.25, "connection"), gpu=None))
        assert not p.snapshot.agg.engine_fresh


class TestGpuAggregates:
    """Per-GPU figures over the horizon, at the place they are decided (horizon.py)."""

    @staticmethod
    def span(t0: float, t1: float, util: float, *, running: float = 2.0, temp: float = 60.0,
             energy: tuple[float, float] | None = None, **extra: float):  # fmt: skip
        """A window from t0 to t1 whose one GPU reads the same at both polls (energy: the mJ
        counter at each edge)."""
        e0, e1 = energy if energy else (None, None)
        reading = dict(util_gpu_pct=util, util_mem_pct=util / 2, power_watts=util * 4,
                       temperature_c=temp, dram_bw_util_pct=util / 4, **extra)  # fmt: skip
        w = build_window(
            [vllm(t0, running=running, kv_usage=0.5), vllm(t1, running=running, kv_usage=0.5)],
            [gpu(t0, dict(reading, energy_mj=e0)), gpu(t1, dict(reading, energy_mj=e1))],
            start=t0,
            end=t1,
        )
        return w, classify(w)

    def test_time_weighted_over_active_windows_of_any_length(self) -> None:
        # Active windows of 2.0 s at 50%, 3.0 s at 80% and 0.5 s at 20% (a window cut short by
        # a gap). Utilization: (50×2 + 80×3 + 20×0.5) / 5.5 = 350 / 5.5 = 63.63…% → 0.6363…
        ws = [self.span(0.0, 2.0, 50.0), self.span(2.0, 5.0, 80.0), self.span(5.0, 5.5, 20.0)]
        assert all(g.active for _, g in ws)
        (g,) = aggregate(ws).gpus
        assert g.util_ratio == pytest.approx(350.0 / 5.5 / 100.0)
        assert g.mem_util_ratio == pytest.approx(175.0 / 5.5 / 100.0)  # half of each
        assert g.power_watts == pytest.approx(1400.0 / 5.5)  # 4 W per %
        assert g.dram_bw_util_ratio == pytest.approx(87.5 / 5.5 / 100.0)  # a quarter of each

    def test_an_idle_window_does_not_weigh_in(self) -> None:
        # The 3 s window has no running request: not active, its 80% does not count.
        ws = [self.span(0.0, 2.0, 50.0), self.span(2.0, 5.0, 80.0, running=0.0)]
        (g,) = aggregate(ws).gpus
        assert g.util_ratio == pytest.approx(0.5)

    def test_energy_sums_active_windows_with_a_counter(self) -> None:
        # Window 1: 1,000,000 → 1,800,000 mJ over 2 s = 800 J; window 2: 1,800,000 → 3,000,000
        # mJ over 3 s = 1,200 J; window 3 has no counter. Σ 2,000 J over 5 s.
        ws = [
            self.span(0.0, 2.0, 50.0, energy=(1.0e6, 1.8e6)),
            self.span(2.0, 5.0, 80.0, energy=(1.8e6, 3.0e6)),
            self.span(5.0, 7.0, 60.0),
        ]
        (g,) = aggregate(ws).gpus
        assert (g.energy_joules, g.energy_seconds) == (pytest.approx(2000.0), pytest.approx(5.0))
        (none,) = aggregate([self.span(0.0, 2.0, 50.0)]).gpus
        assert (none.energy_joules, none.energy_seconds) == (None, None)

    def test_peaks_come_from_evaluable_windows_only(self) -> None:
        # An old window without vLLM (not evaluable) read 95 °C; the evaluable ones 70 and 65:
        # the peak is 70, the current 65. Without any evaluable window, every window counts.
        hot_gpu = [gpu(0.0, dict(temperature_c=95.0)), gpu(2.0, dict(temperature_c=95.0))]
        hot = build_window([], hot_gpu, start=0.0, end=2.0)
        ws = [(hot, classify(hot)), self.span(2.0, 4.0, 50.0, temp=70.0),
              self.span(4.0, 6.0, 50.0, temp=65.0)]  # fmt: skip
        assert not ws[0][1].evaluable
        (g,) = aggregate(ws).gpus
        assert (g.temperature_peak_c, g.temperature_c) == (70.0, 65.0)
        (only,) = aggregate([(hot, classify(hot))]).gpus
        assert only.temperature_peak_c == 95.0

    def test_no_gpu_data_anywhere_is_no_gpu(self) -> None:
        w = build_window([vllm(0.0), vllm(2.0)], [], start=0.0, end=2.0)
        assert aggregate([(w, classify(w))]).gpus == ()


class TestAggregateFigures:
    """Every horizon figure from its windows, worked by hand (docs/design.md#the-horizon)."""

    @staticmethod
    def busy(t0: float, dur: float, *, gen: float, energy_mj: tuple[float | None, ...] = (),
             **pairs):  # fmt: skip
        """An active window (running 4, KV 50%) moving ``gen`` tokens; one GPU per entry of
        ``energy_mj`` (its counter's delta in mJ, None: not read)."""
        gpus = []
        for k, e in enumerate(energy_mj):
            first = dict(util_gpu_pct=60.0, energy_mj=None if e is None else 1e6)
            last = dict(util_gpu_pct=60.0, energy_mj=None if e is None else 1e6 + e)
            gpus.append((k, first, last))
        g0 = gpu(t0, *[f for _, f, _ in gpus]) if gpus else None
        g1 = gpu(t0 + dur, *[last for _, _, last in gpus]) if gpus else None
        w = win(t0, dur=dur, gpus=[x for x in (g0, g1) if x], running=(4.0, 4.0),
                kv_usage=(0.5, 0.5), generation_tokens=(1000.0, 1000.0 + gen), **pairs)  # fmt: skip
        return w, classify(w)

    def test_rates_weigh_each_window_by_its_duration(self) -> None:
        # 400 tokens in 2 s (200/s) and 50 in 0.5 s (100/s): (200 × 2 + 100 × 0.5) / 2.5 = 180.
        agg = aggregate([self.busy(0.0, 2.0, gen=400.0), self.busy(2.0, 0.5, gen=50.0)])
        assert agg.generation_tps == pytest.approx(180.0)
        # One active window of half a second is enough: 50 tokens in 0.5 s.
        assert aggregate([self.busy(2.0, 0.5, gen=50.0)]).generation_tps == pytest.approx(100.0)

    def test_mfu_counter_rates(self) -> None:
        # vLLM's estimated FLOPs 0 → 4e12 over 2 s = 2e12/s; bytes read 1e9 + written 1e9 = 1e9/s.
        w = self.busy(0.0, 2.0, gen=10.0, est_flops=(0.0, 4e12), est_read_bytes=(0.0, 1e9),
                      est_write_bytes=(0.0, 1e9))  # fmt: skip
        agg = aggregate([w])
        assert agg.est_flops_per_second == pytest.approx(2e12)
        assert agg.est_bytes_per_second == pytest.approx(1e9)

    def test_energy_needs_every_gpu_and_the_tokens(self) -> None:
        # Window 1: two GPUs, 1,000,000 + 500,000 mJ = 1,500 J, 300 tokens. Window 2: one of its
        # GPUs has no energy reading: left out whole. Window 3: 200 J but no token counter.
        w1 = self.busy(0.0, 2.0, gen=300.0, energy_mj=(1e6, 5e5))
        w2 = self.busy(2.0, 2.0, gen=100.0, energy_mj=(1e6, None))
        w3, _ = self.busy(4.0, 2.0, gen=100.0, energy_mj=(2e5,))
        w3 = replace(w3, d_generation_tokens=None)
        agg = aggregate([w1, w2, (w3, classify(w3))])
        assert (agg.energy_joules, agg.energy_tokens) == (pytest.approx(1500.0), 300.0)
        # Two windows that count: Σ 1,500 + 300 J over Σ 300 + 1 tokens.
        w4 = self.busy(6.0, 2.0, gen=1.0, energy_mj=(3e5,))
        both = aggregate([w1, w4])
        assert (both.energy_joules, both.energy_tokens) == (pytest.approx(1800.0), 301.0)
        one_token = aggregate([w4])
        assert (one_token.energy_joules, one_token.energy_tokens) == (pytest.approx(300.0), 1.0)
        # No tokens generated at all: no energy per token.
        idle = aggregate([self.busy(0.0, 2.0, gen=0.0, energy_mj=(1e6,))])
        assert (idle.energy_joules, idle.energy_tokens) == (None, None)

    def test_tpot_and_model_come_from_their_windows(self) -> None:
        # TPOT: 10 observations summing 0.5 s → mean 0.05 s; p99 in (0.1, 1.0]: rank 9.9 of 10
        # with 0 below 0.1 → 0.1 + 0.9 × 9.9/10 = 0.991.
        h0, h1 = hist(B, (0, 0, 0), 0.0), hist(B, (0, 10, 10), 0.5)
        w = self.busy(0.0, 2.0, gen=10.0, tpot=(h0, h1), model_name=("m", "m"),
                      model_names=(("m",), ("m",)))  # fmt: skip
        agg = aggregate([w])
        assert agg.model_names == ("m",)
        assert agg.tpot_mean == pytest.approx(0.05)
        assert agg.tpot_p99 == pytest.approx(0.991)
        assert agg.model_name == "m"

    def test_an_idle_window_on_new_bounds_does_not_hide_the_p99(self) -> None:
        # Busy window on bounds (0.1, 1, +Inf): p99 0.991 as above. Then an idle window whose
        # histogram has new bounds but no observation: the p99 stays that of the busy window.
        h0, h1 = hist(B, (0, 0, 0), 0.0), hist(B, (0, 10, 10), 0.5)
        other = (0.2, 2.0, INF)
        idle_h = hist(other, (0, 0, 0), 0.0)
        busy = self.busy(0.0, 2.0, gen=10.0, ttft=(h0, h1))
        idle = self.busy(2.0, 2.0, gen=10.0, ttft=(idle_h, idle_h))
        assert aggregate([busy, idle]).ttft_p99 == pytest.approx(0.991)

    def test_prefix_ratio_of_one_query(self) -> None:
        # One query token, one hit: 1/1. A window with queries but no hit counter is left out.
        w1 = self.busy(0.0, 2.0, gen=10.0, prefix_hits=(5.0, 6.0), prefix_queries=(9.0, 10.0))
        w2 = self.busy(2.0, 2.0, gen=10.0, prefix_queries=(10.0, 50.0))
        assert aggregate([w1, w2]).prefix_hit_ratio == 1.0

    def test_freshness_and_the_last_evaluable_window(self) -> None:
        busy = self.busy(0.0, 2.0, gen=10.0, energy_mj=(1e6,))
        # vLLM failed through the last window: its one poll is the shared boundary poll, and its
        # configuration is unstated; the figures come from the last evaluable window.
        cc = {"block_size": "16"}
        good = replace(busy[0], serving=serving_config(cc))
        dead = replace(build_window([], [], start=2.0, end=4.0), engine_answered=False,
                       gpu_answered=False)  # fmt: skip
        agg = aggregate([(good, classify(good)), (dead, classify(dead))])
        assert not agg.engine_fresh and not agg.gpu_fresh and agg.gpus == ()
        assert agg.serving == serving_config(cc)
        # One vLLM poll in the last window is fresh vLLM data; no GPU reading in it is no GPU.
        one_poll = build_window([vllm(4.0)], [], start=4.0, end=6.0)
        latest = aggregate([(good, classify(good)), (one_poll, classify(one_poll))])
        assert latest.engine_fresh and not latest.gpu_fresh and latest.gpus == ()


class TestGpuHold:
    def test_a_slow_gpu_source_stays_fresh_for_its_hold(self) -> None:
        # GPU data in [0, 2]; the window [2, 2.5] (cut short) has none. Within a hold of 0.5 s
        # the figures stay; without a hold they go; with no GPU data anywhere there is nothing.
        readings = [gpu(0.0, dict(util_gpu_pct=50.0)), gpu(2.0, dict(util_gpu_pct=50.0))]
        with_gpu = win(0.0, gpus=readings, running=(1.0, 1.0), kv_usage=(0.5, 0.5))
        without = win(2.0, dur=0.5, running=(1.0, 1.0), kv_usage=(0.5, 0.5))
        ws = [(with_gpu, classify(with_gpu)), (without, classify(without))]
        assert aggregate(ws, gpu_hold=0.5).gpus and aggregate(ws, gpu_hold=0.5).gpu_fresh
        assert not aggregate(ws).gpus and not aggregate(ws, gpu_hold=0.25).gpus
        assert aggregate([(without, classify(without))], gpu_hold=5.0).gpus == ()

    def test_a_window_without_vllm_polls_is_not_fresh_vllm(self) -> None:
        w = build_window([], [gpu(0.0, {}), gpu(2.0, {})], start=0.0, end=2.0)
        assert w.engine_answered and not aggregate([(w, classify(w))]).engine_fresh


class TestGateEdges:
    def test_short_windows_count_and_empty_ones_do_not(self) -> None:
        half = win(0.0, dur=0.5, running=(2.0, 2.0), kv_usage=(0.5, 0.5))
        assert classify(half) == Gate(True, True)
        flat = build_window([vllm(1.0, running=2.0), vllm(1.0, running=2.0)], [], start=1.0,
                            end=1.0)  # fmt: skip
        assert classify(flat) == Gate(False, False)  # no duration: not evaluable

    def test_without_a_duration_nothing_is_active(self) -> None:
        one = build_window([vllm(0.0, running=3.0, kv_usage=0.9)], [], start=0.0, end=2.0)
        g = classify(one)
        assert g.evaluable is False and g.active is False

    def test_one_token_is_movement(self) -> None:
        # No KV and no GPU reading: the tokens arm stands in. One generated token is activity.
        w = win(0.0, running=(1.0, 1.0), generation_tokens=(10.0, 11.0))
        assert classify(w) == Gate(True, True)
        still = win(0.0, running=(1.0, 1.0), generation_tokens=(10.0, 10.0))
        assert classify(still) == Gate(True, False)


def test_finished_reason_shares_over_the_evaluable_windows() -> None:
    """Two evaluable windows: 6 stop + 2 error, then 3 stop + 1 length (an error counter that
    goes down in between is a reset: that window's error delta is unknown and left out). An
    idle window where nothing finished adds nothing; shares are of what finished."""
    r = (1.0, 1.0)
    w1 = win(0.0, running=r, finished_by_reason=({"stop": 10.0, "error": 1.0},
                                                 {"stop": 16.0, "error": 3.0}))  # fmt: skip
    before = {"stop": 16.0, "error": 3.0, "length": 0.0}
    after = {"stop": 19.0, "error": 0.0, "length": 1.0}
    w2 = win(2.0, running=r, finished_by_reason=(before, after))
    w3 = win(4.0, running=(0.0, 0.0), finished_by_reason=({"stop": 19.0}, {"stop": 19.0}))
    agg = aggregate([(w, classify(w)) for w in (w1, w2, w3)])
    # stop 6 + 3 + 0, error 2, length 1: of 12 finished.
    assert agg.finished_ratio_by_reason == pytest.approx(
        {"stop": 9 / 12, "error": 2 / 12, "length": 1 / 12}
    )
    nothing = win(0.0, running=(0.0, 0.0), finished_by_reason=({"stop": 5.0}, {"stop": 5.0}))
    assert aggregate([(nothing, classify(nothing))]).finished_ratio_by_reason == {}
    one = win(0.0, running=r, finished_by_reason=({"stop": 5.0}, {"stop": 6.0}))
    assert aggregate([(one, classify(one))]).finished_ratio_by_reason == {"stop": 1.0}
