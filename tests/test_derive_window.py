"""Per-window formulas (docs/design.md) on constructed polls; expected values worked by hand."""

from __future__ import annotations

import pytest

from exporter.derive.histogram import HistDelta, delta, merge_latest, quantile
from exporter.derive.window import build_window, time_weighted_mean
from tests.helpers import INF, gpu, hist, vllm

B = (0.1, 0.5, 1.0, INF)


def window(*polls, gpus=()):
    times = [p.observed_at for p in polls] + [g.observed_at for g in gpus]
    return build_window(list(polls), list(gpus), start=min(times), end=max(times))


class TestHistogramMean:
    def test_delta_mean(self) -> None:
        # Δsum = 7.0 − 1.0 = 6.0 s, Δcount = 10 − 4 = 6 → mean 1.0 s.
        w = window(
            vllm(0.0, ttft=hist(B, (1, 3, 4, 4), 1.0)),
            vllm(1.0, ttft=hist(B, (1, 3, 6, 8), 4.0)),
            vllm(2.0, ttft=hist(B, (1, 3, 7, 10), 7.0)),
        )
        assert w.ttft_mean == pytest.approx(1.0)

    def test_zero_delta_count_falls_back_to_cumulative_mean(self) -> None:
        # No new observation: the last poll's cumulative mean, 6.0 s / 4 = 1.5 s; no p99.
        h = hist(B, (1, 2, 3, 4), 6.0)
        w = window(vllm(0.0, ttft=h), vllm(2.0, ttft=h))
        assert w.ttft_mean == pytest.approx(1.5)
        assert w.ttft_p99 is None

    def test_reset_falls_back_to_cumulative_mean(self) -> None:
        # Count went 10 → 2 (vLLM restarted): Δcount < 0 → last poll's 0.8 s / 2 = 0.4 s.
        w = window(
            vllm(0.0, ttft=hist(B, (2, 4, 8, 10), 9.0)),
            vllm(2.0, ttft=hist(B, (1, 2, 2, 2), 0.8)),
        )
        assert w.ttft is None
        assert w.ttft_mean == pytest.approx(0.4)
        assert w.ttft_p99 is None

    def test_never_observed_is_absent(self) -> None:
        h = hist(B, (0, 0, 0, 0), 0.0)
        w = window(vllm(0.0, ttft=h), vllm(2.0, ttft=h))
        assert w.ttft_mean is None


class TestP99:
    def test_interpolated_inside_a_bucket(self) -> None:
        # Δ buckets: ≤0.1: 0, ≤0.5: 50, ≤1.0: 100, +Inf: 100. rank = 0.99 × 100 = 99, in
        # (0.5, 1.0] holding 50 → 0.5 + 0.5 × (99 − 50) / 50 = 0.99.
        w = window(
            vllm(0.0, ttft=hist(B, (5, 5, 5, 5), 0.1)),
            vllm(2.0, ttft=hist(B, (5, 55, 105, 105), 60.0)),
        )
        assert w.ttft_p99 == pytest.approx(0.99)

    def test_rank_in_inf_bucket_gives_last_finite_bound(self) -> None:
        # Δ: ≤1.0: 90, +Inf: 100. rank 99 > 90 → +Inf bucket → last finite bound 1.0.
        w = window(
            vllm(0.0, tpot=hist(B, (0, 0, 0, 0), 0.0)),
            vllm(2.0, tpot=hist(B, (10, 50, 90, 100), 200.0)),
        )
        assert w.tpot_p99 == pytest.approx(1.0)

    def test_first_bucket_interpolates_from_zero(self) -> None:
        # All 10 in (0, 0.1]: rank 9.9 → 0 + 0.1 × 9.9 / 10 = 0.099.
        assert quantile(0.99, B, (10, 10, 10, 10)) == pytest.approx(0.099)

    def test_bounds_changed_within_window_gives_no_delta(self) -> None:
        other = (0.2, 1.0, INF)
        w = window(
            vllm(0.0, ttft=hist(B, (1, 1, 1, 1), 0.1)),
            vllm(2.0, ttft=hist(other, (3, 3, 3), 0.3)),
        )
        assert w.ttft is None and w.ttft_p99 is None

    def test_merge_uses_latest_bounds_only(self) -> None:
        # Two windows on the new bounds (counts 2+3 in ≤0.2) and one on old bounds, dropped.
        old = delta(hist(B, (0, 0, 0, 0), 0), hist(B, (4, 4, 4, 4), 0.2))
        new_b = (0.2, 1.0, INF)
        n1 = delta(hist(new_b, (0, 0, 0), 0), hist(new_b, (2, 2, 2), 0.2))
        n2 = delta(hist(new_b, (0, 0, 0), 0), hist(new_b, (3, 4, 4), 0.9))
        assert old and n1 and n2
        m = merge_latest([old, n1, n2])
        assert m is not None
        assert m.bounds == new_b
        assert m.cumulative == (5, 6, 6)
        assert m.count == 6 and m.sum == pytest.approx(1.1)


class TestCounterRates:
    def test_rate_from_first_and_last_poll(self) -> None:
        # 1,000 → 1,500 tokens over 2.0 s = 250 tok/s; 10 → 14 requests = 2 req/s.
        w = window(
            vllm(10.0, generation_tokens=1000.0, requests_finished=10.0),
            vllm(11.0, generation_tokens=1200.0, requests_finished=12.0),
            vllm(12.0, generation_tokens=1500.0, requests_finished=14.0),
        )
        assert w.duration == pytest.approx(2.0)
        assert w.generation_tps == pytest.approx(250.0)
        assert w.requests_per_second == pytest.approx(2.0)

    def test_reset_gives_absent_never_negative(self) -> None:
        # 8,512 → 37: vLLM restarted. Also a dip-and-recover (100 → 5 → 300) is a reset.
        w = window(vllm(0.0, generation_tokens=8512.0), vllm(2.0, generation_tokens=37.0))
        assert w.generation_tps is None
        w2 = window(
            vllm(0.0, generation_tokens=100.0),
            vllm(1.0, generation_tokens=5.0),
            vllm(2.0, generation_tokens=300.0),
        )
        assert w2.generation_tps is None

    def test_zero_delta_is_a_valid_zero(self) -> None:
        w = window(vllm(0.0, preemptions=3.0), vllm(2.0, preemptions=3.0))
        assert w.preemptions_per_second == 0.0

    def test_zero_duration_is_absent(self) -> None:
        w = window(vllm(5.0, generation_tokens=1.0))
        assert w.duration is None
        assert w.generation_tps is None

    def test_prefix_hit_rate(self) -> None:
        # Δhits 30 / Δqueries 40 = 0.75.
        w = window(
            vllm(0.0, prefix_hits=100.0, prefix_queries=200.0),
            vllm(2.0, prefix_hits=130.0, prefix_queries=240.0),
        )
        assert w.prefix_hit_ratio == pytest.approx(0.75)

    def test_prefix_hit_rate_absent_without_queries(self) -> None:
        w = window(
            vllm(0.0, prefix_hits=100.0, prefix_queries=200.0),
            vllm(2.0, prefix_hits=100.0, prefix_queries=200.0),
        )
        assert w.prefix_hit_ratio is None


class TestGaugesAndGpu:
    def test_time_weighted_running_and_kv_peak(self) -> None:
        # running 0 at t=0, 4 at t=1, 4 at t=3: trapezoids (0+4)/2×1 + (4+4)/2×2 = 2 + 8 = 10
        # over 3 s → 3.333…; KV peak is the max poll 0.9, not the mean.
        w = window(
            vllm(0.0, running=0.0, kv_usage=0.2),
            vllm(1.0, running=4.0, kv_usage=0.9),
            vllm(3.0, running=4.0, kv_usage=0.5),
        )
        assert w.running == pytest.approx(10 / 3)
        assert w.kv_peak == pytest.approx(0.9)
        assert w.kv_last == pytest.approx(0.5)

    def test_single_point_mean(self) -> None:
        assert time_weighted_mean([(4.0, 7.0)]) == 7.0
        assert time_weighted_mean([]) is None

    def test_gpu_means_last_and_peaks(self) -> None:
        # util mean (90+70+80)/3 = 80; a poll without power is skipped: (300+500)/2 = 400 W;
        # memory: last 5 GB, peak 7 GB; energy 1,000,000 → 1,004,000 mJ = 4 J.
        w = window(
            vllm(0.0),
            vllm(2.0),
            gpus=[
                gpu(
                    0.0,
                    dict(
                        util_gpu_pct=90.0,
                        power_watts=300.0,
                        mem_used_bytes=6e9,
                        temperature_c=50.0,
                        energy_mj=1_000_000.0,
                    ),
                ),
                gpu(1.0, dict(util_gpu_pct=70.0, mem_used_bytes=7e9, temperature_c=60.0)),
                gpu(
                    2.0,
                    dict(
                        util_gpu_pct=80.0,
                        power_watts=500.0,
                        mem_used_bytes=5e9,
                        temperature_c=55.0,
                        energy_mj=1_004_000.0,
                    ),
                ),
            ],
        )
        (g,) = w.gpus
        assert g.util_pct == pytest.approx(80.0)
        assert g.power_watts == pytest.approx(400.0)
        assert g.mem_used_bytes == 5e9 and g.mem_used_peak_bytes == 7e9
        assert g.temperature_c == 55.0 and g.temperature_peak_c == 60.0
        assert g.energy_joules == pytest.approx(4.0)


class TestHistogramEdges:
    """``delta`` and ``quantile`` at the edges where Prometheus' semantics decide."""

    def test_an_unchanged_histogram_is_a_zero_delta_not_a_reset(self) -> None:
        h = hist(B, (1, 2, 3, 4), 6.0)
        assert delta(h, h) == HistDelta(B, (0, 0, 0, 0), 0.0, 0)

    def test_observations_of_zero_seconds_are_data(self) -> None:
        # Two new observations that took 0 s: Δcount 2, Δsum 0.0 — a delta, not a reset.
        d = delta(hist(B, (1, 1, 1, 1), 0.5), hist(B, (3, 3, 3, 3), 0.5))
        assert d == HistDelta(B, (2, 2, 2, 2), 0.0, 2)

    @pytest.mark.parametrize("moved", [1.0, 2.0])
    def test_a_sum_that_moves_without_an_observation_is_refused(self, moved: float) -> None:
        assert delta(hist(B, (1, 2, 3, 4), 6.0), hist(B, (1, 2, 3, 4), 6.0 + moved)) is None

    def test_bounds_need_an_inf_bucket_and_one_other(self) -> None:
        assert quantile(0.5, (1.0, 2.0), (1, 2)) is None  # no +Inf bucket
        assert quantile(0.5, (INF,), (4,)) is None  # no finite bound to interpolate to
        # Two buckets are enough: rank 5 of 10 in (0, 1] → 0 + 1 × 5/10 = 0.5.
        assert quantile(0.5, (1.0, INF), (10, 10)) == pytest.approx(0.5)

    def test_one_observation_is_enough_and_none_is_nothing(self) -> None:
        # rank 0.99 of 1 in (0, 1] → 0.99.
        assert quantile(0.99, (1.0, INF), (1, 1)) == pytest.approx(0.99)
        assert quantile(0.99, (1.0, INF), (0, 0)) is None

    def test_a_rank_equal_to_a_bucket_count_stays_in_that_bucket(self) -> None:
        # rank 0.5 × 10 = 5 = the count at le=1: the answer is 1.0, not the next bucket's
        # bound 2.0 (the (1, 2] bucket is empty, so searching for "> rank" would skip to +Inf).
        assert quantile(0.5, (1.0, 2.0, INF), (5, 5, 10)) == pytest.approx(1.0)

    def test_a_first_bucket_at_or_below_zero_returns_its_bound(self) -> None:
        # bounds (−1, 1, +Inf), 5 observations ≤ −1, 5 in (−1, 1].
        b = (-1.0, 1.0, INF)
        assert quantile(0.2, b, (5, 10, 10)) == -1.0  # rank 2 in the first bucket
        # rank 7 in (−1, 1] holding 5, 2 past its start: −1 + 2 × 2/5 = −0.2.
        assert quantile(0.7, b, (5, 10, 10)) == pytest.approx(-0.2)


class TestWindowRecord:
    """Every field of a window from its polls (docs/design.md), at the place they are built."""

    def test_fields_from_first_last_and_between(self) -> None:
        h0 = hist(B, (0, 0, 0, 0), 0.0)
        h1 = hist(B, (0, 4, 8, 8), 2.0)  # 8 observations summing 2.0 s: mean 0.25 s
        polls = [
            vllm(0.0, model_name="m", model_names=("m",), process_start_time=None, running=2.0,
                 est_flops=1e12, est_read_bytes=1e9, est_write_bytes=2e9, tpot=h0,
                 prefill_time=h0, queue_time=h0),
            vllm(1.0, model_name=None, process_start_time=7.0, running=6.0, est_flops=3e12,
                 est_read_bytes=2e9,
                 est_write_bytes=3e9, tpot=h1, prefill_time=h1, queue_time=h1),
        ]  # fmt: skip
        w = build_window(polls, [gpu(0.5, {}), gpu(0.9, {})], start=0.0, end=1.0)
        assert (w.engine_polls, w.gpu_polls, w.gpu_observed_at) == (2, 2, 0.9)
        assert (w.model_name, w.model_names, w.process_start_time) == ("m", ("m",), 7.0)
        assert w.running_last == 6.0
        # Δ flops 2e12; Δ(read + write) = 5e9 − 3e9 = 2e9.
        assert (w.d_est_flops, w.d_est_bytes) == (2e12, 2e9)
        assert w.tpot_mean == w.prefill_time_mean == w.queue_time_mean == pytest.approx(0.25)

    def test_bytes_need_both_directions(self) -> None:
        polls = [vllm(0.0, est_read_bytes=1e9), vllm(1.0, est_read_bytes=2e9)]
        assert build_window(polls, [], start=0.0, end=1.0).d_est_bytes is None

    def test_a_window_without_vllm(self) -> None:
        w = build_window([], [gpu(3.0, {}), gpu(4.5, {})], start=2.5, end=4.5)
        assert (w.start, w.end, w.duration, w.engine_polls, w.gpu_polls, w.gpu_observed_at) == (
            2.5, 4.5, None, 0, 2, 4.5)  # fmt: skip

    def test_one_poll_has_no_histogram_delta(self) -> None:
        w = build_window([vllm(0.0, ttft=hist(B, (1, 2, 3, 4), 6.0))], [], start=0.0, end=0.0)
        assert w.ttft is None and w.ttft_mean == pytest.approx(1.5)

    def test_rates_of_short_windows_and_none_without_duration(self) -> None:
        w = window(vllm(0.0, generation_tokens=10.0), vllm(0.5, generation_tokens=60.0))
        assert w.generation_tps == pytest.approx(100.0)  # 50 tokens in 0.5 s
        flat = build_window([vllm(1.0, generation_tokens=1.0), vllm(1.0, generation_tokens=2.0)],
                            [], start=1.0, end=1.0)  # fmt: skip
        assert flat.duration == 0.0 and flat.generation_tps is None

    def test_a_gpu_gone_by_the_last_poll(self) -> None:
        w = build_window([], [gpu(0.0, {}, {}), gpu(1.0, {})], start=0.0, end=1.0)
        assert [(g.index, g.in_last_poll) for g in w.gpus] == [(0, True), (1, False)]


class TestTimeWeightedMean:
    def test_edges(self) -> None:
        assert time_weighted_mean([(3.0, 2.0)]) == 2.0  # one point: its value
        assert time_weighted_mean([(1.0, 2.0), (1.0, 4.0)]) == 3.0  # no span: the plain mean
        # Half a second is a span: (0.25 × 0 + 0.25 × 0.5) / 0.5 = 0.25, not the plain mean 1/3.
        assert time_weighted_mean([(0.0, 0.0), (0.25, 0.0), (0.5, 1.0)]) == 0.25
        assert time_weighted_mean([]) is None

    def test_no_model_names_is_an_empty_tuple(self) -> None:
        w = build_window([vllm(0.0), vllm(1.0)], [], start=0.0, end=1.0)
        assert w.model_names == ()


class TestWhatTheStepsMade:
    def test_from_the_token_counters_where_they_count_as_made(self) -> None:
        # vLLM: 400 tokens generated, 300 prompt tokens of which 100 from the prefix cache.
        w = window(
            vllm(0.0, generation_tokens=1000.0, prompt_tokens=500.0, prefix_hits=50.0, steps=10.0),
            vllm(2.0, generation_tokens=1400.0, prompt_tokens=800.0, prefix_hits=150.0, steps=30.0),
        )
        assert (w.d_steps, w.d_step_generated, w.d_step_prefilled) == (20.0, 400.0, 200.0)

    def test_from_the_engines_own_where_its_counters_count_at_a_requests_end(self) -> None:
        # SGLang: no request ended (its token counters stand still) while the passes made 60
        # tokens and computed 40 prompt tokens.
        w = window(
            vllm(
                0.0,
                generation_tokens=1000.0,
                prompt_tokens=500.0,
                steps=10.0,
                step_generated=700.0,
                step_prefilled=300.0,
            ),  # fmt: skip
            vllm(
                2.0,
                generation_tokens=1000.0,
                prompt_tokens=500.0,
                steps=40.0,
                step_generated=760.0,
                step_prefilled=340.0,
            ),  # fmt: skip
        )
        assert w.d_generation_tokens == 0.0
        assert (w.d_steps, w.d_step_generated, w.d_step_prefilled) == (30.0, 60.0, 40.0)
