"""Roofline and economics formulas (docs/design.md), worked by hand; and what stays absent."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.derive import economics
from exporter.derive.roofline import ACTUAL_ABOVE_CEILING, GpuMemory, RooflineInputs, compute
from tests.helpers import H100_MEMORY

H100_SXM_TENSOR = (989.4e12, 3.35e12)  # FLOP/s, B/s per GPU (catalog)
H100_SXM_FP32 = (67e12, 3.35e12)
H200_TENSOR = (989.4e12, 4.8e12)
H100_MEM = GpuMemory(0, "GPU-h100", H100_MEMORY)  # real H100 SXM fixture
H200_MEM = GpuMemory(0, "GPU-h200", 150_754_820_096)  # real H200 fixture


def inputs(peaks, rp, wp, bpp, tp):
    return RooflineInputs(peaks[0], peaks[1], rp, wp, bpp, tp)


class TestDenseTp1:
    def test_h100_tensor_llama70b_bf16(self) -> None:
        r = compute(
            inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 1),
            batch=8.0,
            actual_tps=150.0,
            prompt_tokens_mean=500.0,
            gpus=(H100_MEM,),
            gpu_memory_utilization=0.9,
        )
        # ridge = 989.4e12 × 2 / (2 × 3.35e12) = 295.343
        assert r.ridge_batch_size == pytest.approx(295.3433, rel=1e-6)
        # stream = 3.35e12 × 1 / (70e9 × 2) = 23.9286 tok/s
        assert r.stream_tps == pytest.approx(23.92857, rel=1e-6)
        # hardware = 989.4e12 × 1 / (2 × 70e9) = 7,067.14 tok/s (= stream × ridge)
        assert r.hardware_tps == pytest.approx(7067.1429, rel=1e-6)
        # batch = min(8 × 23.9286, 7,067.14) = 191.4286
        assert r.batch_tps == pytest.approx(191.42857, rel=1e-6)
        # efficiency = 150 / 7,067.14 = 0.021225; batch efficiency = 150 / 191.43 = 0.78358
        assert r.efficiency == pytest.approx(0.0212249, rel=1e-5)
        assert r.batch_efficiency == pytest.approx(0.783582, rel=1e-5)
        assert r.headroom == pytest.approx(1 - 0.0212249, rel=1e-6)
        # tpot floor = max(140e9 / 3.35e12, 8 × 140e9 / 989.4e12) = max(0.041791, 0.001132)
        assert r.tpot_floor_seconds == pytest.approx(0.0417910, rel=1e-5)
        # prefill: ceiling 7,067.14 prompt tok/s; floor = 500 / 7,067.14 = 0.070750 s (B < ridge)
        assert r.prefill_ceiling_tps == pytest.approx(7067.1429, rel=1e-6)
        assert r.prefill_floor_seconds == pytest.approx(0.0707500, rel=1e-5)
        # weights 70e9 × 2 = 140e9 B; KV headroom = 85,520,809,984 × 0.9 − 140e9 = −63.03e9
        assert r.weight_bytes == 140e9
        ((g, kv),) = r.kv_headroom_bytes
        assert g.index == 0 and kv == pytest.approx(-63_031_271_014.4, rel=1e-9)

    def test_h100_fp32_peak_reproduces_the_seed(self) -> None:
        r = compute(inputs(H100_SXM_FP32, 70e9, 70e9, 2.0, 1), batch=8.0, actual_tps=150.0)
        # ridge = 67e12 × 2 / (2 × 3.35e12) = 20.0; hardware = 67e12 / 140e9 = 478.571 tok/s
        assert r.ridge_batch_size == pytest.approx(20.0)
        assert r.hardware_tps == pytest.approx(478.5714, rel=1e-6)
        # batch = min(191.43, 478.57) = 191.43; efficiency = 150 / 478.571 = 0.313433
        assert r.batch_tps == pytest.approx(191.42857, rel=1e-6)
        assert r.efficiency == pytest.approx(0.3134328, rel=1e-6)


class TestTensorParallel4:
    def test_ceilings_and_headroom_scale_with_tp(self) -> None:
        r = compute(
            inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 4),
            batch=64.0,
            actual_tps=2000.0,
            gpus=(H100_MEM, GpuMemory(1, "GPU-b", H100_MEMORY)),
            gpu_memory_utilization=0.9,
        )
        # stream = 3.35e12 × 4 / 140e9 = 95.714; hardware = 989.4e12 × 4 / 140e9 = 28,268.57
        assert r.stream_tps == pytest.approx(95.714286, rel=1e-6)
        assert r.hardware_tps == pytest.approx(28268.571, rel=1e-6)
        # batch = min(64 × 95.714 = 6,125.71, 28,268.57) = 6,125.71; eff = 2000 / 28,268.57
        assert r.batch_tps == pytest.approx(6125.714, rel=1e-6)
        assert r.efficiency == pytest.approx(0.0707499, rel=1e-5)
        assert r.headroom == pytest.approx(1 - 0.0707499, rel=1e-6)
        # ridge does not depend on TP: 295.343
        assert r.ridge_batch_size == pytest.approx(295.3433, rel=1e-6)
        # tpot floor = max(140e9 / (3.35e12 × 4), 64 × 140e9 / (989.4e12 × 4)) = 0.0104478 s
        assert r.tpot_floor_seconds == pytest.approx(0.01044776, rel=1e-6)
        # each GPU holds 140e9 / 4 = 35e9: 85,520,809,984 × 0.9 − 35e9 = 41,968,728,985.6 B
        assert [kv for _, kv in r.kv_headroom_bytes] == pytest.approx([41_968_728_985.6] * 2)


class TestDataParallel2:
    def test_the_servers_ceilings_are_two_engines(self) -> None:
        # Two engines of TP 1 (vLLM --data-parallel-size 2), each running 8 requests: B = 16 and
        # 300 tok/s summed over them.
        r = compute(
            inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 1),
            batch=16.0,
            actual_tps=300.0,
            prompt_tokens_mean=500.0,
            gpus=(H100_MEM, GpuMemory(1, "GPU-b", H100_MEMORY)),
            gpu_memory_utilization=0.9,
            replicas=2,
        )
        # hardware = 2 × 989.4e12 / (2 × 70e9) = 14,134.29 tok/s; one stream is one engine's:
        # 3.35e12 / 140e9 = 23.9286 tok/s; the ridge is a batch per engine: 295.343.
        assert r.hardware_tps == pytest.approx(14134.2857, rel=1e-6)
        assert r.stream_tps == pytest.approx(23.92857, rel=1e-6)
        assert r.ridge_batch_size == pytest.approx(295.3433, rel=1e-6)
        # batch = min(16 × 23.9286 = 382.857, 14,134.29); efficiency = 300 / 14,134.29 = 0.0212249
        assert r.batch_tps == pytest.approx(382.85714, rel=1e-6)
        assert r.efficiency == pytest.approx(0.0212249, rel=1e-5)
        # TPOT floor at one engine's batch of 8: max(140e9 / 3.35e12, 8 × 140e9 / 989.4e12)
        assert r.tpot_floor_seconds == pytest.approx(0.0417910, rel=1e-5)
        # A prompt is prefilled by one engine: 500 / 7,067.14 = 0.070750 s; the server's
        # prefill ceiling is both engines': 14,134.29 prompt tok/s.
        assert r.prefill_floor_seconds == pytest.approx(0.0707500, rel=1e-5)
        assert r.prefill_ceiling_tps == pytest.approx(14134.2857, rel=1e-6)
        # Each GPU holds a whole copy of the weights (TP 1): 85,520,809,984 × 0.9 − 140e9.
        assert [kv for _, kv in r.kv_headroom_bytes] == pytest.approx([-63_031_271_014.4] * 2)

    def test_above_one_engines_ceiling_is_not_above_the_servers(self) -> None:
        # 10,000 tok/s: above one engine's 7,067 (the whole roofline would be withheld), within
        # two engines' 14,134: efficiency 10,000 / 14,134.29 = 0.707500.
        one = compute(inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 1), batch=600.0,
                      actual_tps=10_000.0)  # fmt: skip
        assert ACTUAL_ABOVE_CEILING in one.reasons
        two = compute(inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 1), batch=600.0,
                      actual_tps=10_000.0, replicas=2)  # fmt: skip
        assert two.efficiency == pytest.approx(0.7075, rel=1e-5)


class TestMoeAndFp8:
    def test_moe_uses_active_for_ceilings_and_total_for_weights(self) -> None:
        # Qwen3 30B-A3B on an H200: active 3e9, total 30e9, bf16.
        r = compute(
            inputs(H200_TENSOR, 3e9, 30e9, 2.0, 1),
            batch=32.0,
            actual_tps=3000.0,
            prompt_tokens_mean=2000.0,
            gpus=(H200_MEM,),
            gpu_memory_utilization=0.92,
        )
        # ridge = 989.4e12 × 2 / (2 × 4.8e12) = 206.125
        assert r.ridge_batch_size == pytest.approx(206.125)
        # stream = 4.8e12 / (3e9 × 2) = 800; hardware = 989.4e12 / (2 × 3e9) = 164,900
        assert r.stream_tps == pytest.approx(800.0)
        assert r.hardware_tps == pytest.approx(164900.0)
        # batch = min(32 × 800, 164,900) = 25,600; efficiency = 3000 / 164,900 = 0.0181928
        assert r.batch_tps == pytest.approx(25600.0)
        assert r.efficiency == pytest.approx(0.01819284, rel=1e-6)
        # prefill ceiling = hardware = 164,900 prompt tok/s; B = 32 < ridge 206.125, so the
        # floor shows: 2000 / 164,900 = 0.0121286 s
        assert r.prefill_ceiling_tps == pytest.approx(164900.0)
        assert r.prefill_floor_seconds == pytest.approx(0.01212856, rel=1e-6)
        # weights from the total: 30e9 × 2 = 60e9; KV = 150,754,820,096 × 0.92 − 60e9
        assert r.weight_bytes == 60e9
        assert r.kv_headroom_bytes[0][1] == pytest.approx(78_694_434_488.32, rel=1e-9)

    def test_fp8_weights_compute_bound_batch(self) -> None:
        # Llama 3 70B in fp8 on an H200, batch 300 — above the ridge.
        r = compute(
            inputs(H200_TENSOR, 70e9, 70e9, 1.0, 1),
            batch=300.0,
            actual_tps=5000.0,
            prompt_tokens_mean=800.0,
        )
        # ridge = 989.4e12 × 1 / (2 × 4.8e12) = 103.0625; stream = 4.8e12 / 70e9 = 68.571
        assert r.ridge_batch_size == pytest.approx(103.0625)
        assert r.stream_tps == pytest.approx(68.571429, rel=1e-6)
        # batch = min(300 × 68.571 = 20,571, 7,067.14) = 7,067.14: compute-bound
        assert r.batch_tps == pytest.approx(7067.1429, rel=1e-6)
        # efficiency = batch efficiency = 5000 / 7,067.14 = 0.7075
        assert r.efficiency == pytest.approx(0.70750, rel=1e-5)
        assert r.batch_efficiency == pytest.approx(0.70750, rel=1e-5)
        # tpot floor = max(70e9 / 4.8e12 = 0.014583, 300 × 140e9 / 989.4e12 = 0.042450)
        assert r.tpot_floor_seconds == pytest.approx(0.0424500, rel=1e-5)
        # at or above the ridge the prefill floor is not shown
        assert r.prefill_floor_seconds is None
        assert r.weight_bytes == 70e9


class TestWithheld:
    def test_actual_above_ceiling_withholds_ceilings_and_efficiency(self) -> None:
        # fp32 peak, 70B: hardware ceiling 478.57 tok/s, but 600 tok/s measured.
        r = compute(inputs(H100_SXM_FP32, 70e9, 70e9, 2.0, 1), batch=64.0, actual_tps=600.0)
        assert ACTUAL_ABOVE_CEILING in r.reasons
        assert (r.hardware_tps, r.stream_tps, r.batch_tps) == (None, None, None)
        assert (r.efficiency, r.batch_efficiency, r.headroom) == (None, None, None)
        assert r.ridge_batch_size == pytest.approx(20.0)  # a catalog fact, still true

    def test_idle_has_no_ceilings(self) -> None:
        for batch, tps in ((0.0, 0.0), (None, None), (4.0, 0.0)):
            r = compute(inputs(H100_SXM_TENSOR, 70e9, 70e9, 2.0, 1), batch=batch, actual_tps=tps)
            assert r.hardware_tps is None and r.efficiency is None and r.tpot_floor_seconds is None
            assert "no_load" in r.reasons

    def test_unknown_model_or_gpu(self) -> None:
        no_model = compute(
            RooflineInputs(989.4e12, 3.35e12, None, None, 2.0, 1), batch=8.0, actual_tps=100.0
        )
        assert no_model.ridge_batch_size == pytest.approx(295.3433, rel=1e-6)
        assert no_model.hardware_tps is None and no_model.weight_bytes is None
        no_gpu = compute(RooflineInputs(None, None, 70e9, 70e9, 2.0, 1), batch=8.0, actual_tps=1.0)
        assert no_gpu.ridge_batch_size is None and no_gpu.efficiency is None
        assert no_gpu.weight_bytes == 140e9


class TestEconomics:
    def test_power_based(self) -> None:
        e = economics.compute(
            actual_tps=1000.0, power_watts=700.0, cost_per_hour=3.5, efficiency=0.25
        )
        # J/tok = 700 / 1000 = 0.7
        assert e.joules_per_token == pytest.approx(0.7)
        assert e.joules_source == "power"
        # $/1M = 3.5 / (1000 × 3600) × 1e6 = 0.972222; recoverable = 3.5 × (1 − 0.25) = 2.625
        assert e.cost_per_million_tokens == pytest.approx(0.9722222)
        assert e.recoverable_per_hour == pytest.approx(2.625)

    def test_energy_counter_preferred_and_catalog_cost(self) -> None:
        # 1,400 J over 2,000 tokens: 0.7 J/tok exactly, whatever the mean power says.
        # 4 × H100 SXM at $3.45 = $13.80/h; 500 tok/s → 13.8 / 1.8e6 × 1e6 = $7.6667 per 1M.
        e = economics.compute(
            actual_tps=500.0,
            power_watts=2000.0,
            cost_per_hour=13.8,
            efficiency=0.4,
            energy_joules=1400.0,
            energy_tokens=2000.0,
        )
        assert e.joules_per_token == pytest.approx(0.7)
        assert e.joules_source == "energy_counter"
        assert e.cost_per_million_tokens == pytest.approx(7.6666667)
        # recoverable = 13.8 × (1 − 0.4) = 8.28
        assert e.recoverable_per_hour == pytest.approx(8.28)
        no_eff = economics.compute(actual_tps=500.0, power_watts=2000.0, cost_per_hour=13.8,
                                   efficiency=None)  # fmt: skip
        assert no_eff.recoverable_per_hour is None  # no efficiency, no guess

    def test_nothing_to_divide(self) -> None:
        e = economics.compute(actual_tps=0.0, power_watts=300.0, cost_per_hour=2.0, efficiency=None)
        assert e.joules_per_token is None and e.cost_per_million_tokens is None
        assert e.cost_per_hour == 2.0


# Binary-exact inputs: 2e12 FLOP/s, 1e12 B/s, 1e9 parameters, 2 bytes each, TP 1 →
# hardware = 2e12 / (2 × 1e9) = 1000 tok/s, stream = 1e12 / 2e9 = 500 tok/s, ridge = 2.0.
EXACT = RooflineInputs(2e12, 1e12, 1e9, 1e9, 2.0, 1)


class TestEdges:
    def test_actual_at_the_ceiling_is_efficiency_one(self) -> None:
        at = compute(EXACT, batch=4.0, actual_tps=1000.0)
        assert (at.hardware_tps, at.efficiency, at.reasons) == (1000.0, 1.0, ())
        above = compute(EXACT, batch=4.0, actual_tps=1000.5)
        assert above.efficiency is None and above.reasons == (ACTUAL_ABOVE_CEILING,)

    def test_prefill_floor_only_below_the_ridge(self) -> None:
        # B = 1.5 < 2: prefill is compute-bound, floor = 500 prompt tokens / 1000 = 0.5 s.
        below = compute(EXACT, batch=1.5, actual_tps=100.0, prompt_tokens_mean=500.0)
        assert below.prefill_floor_seconds == 0.5
        at = compute(EXACT, batch=2.0, actual_tps=100.0, prompt_tokens_mean=500.0)
        assert at.prefill_floor_seconds is None

    def test_load_means_running_requests_and_tokens(self) -> None:
        idle = compute(EXACT, batch=0.0, actual_tps=100.0)
        assert idle.efficiency is None and idle.reasons == ("no_load",)
        slow = compute(EXACT, batch=1.0, actual_tps=0.5)  # half a token a second is load
        assert slow.efficiency == 0.0005 and slow.reasons == ()

    def test_kv_headroom_defaults_to_the_whole_memory(self) -> None:
        # gpu_memory_utilization unknown: 1.0 × 80e9 − 1e9 × 2 = 78e9.
        r = compute(EXACT, batch=1.0, actual_tps=1.0, gpus=(GpuMemory(0, "GPU-x", 80e9),))
        assert r.kv_headroom_bytes[0][1] == 78e9


class TestEconomicsEdges:
    def test_slow_and_small_figures_are_figures(self) -> None:
        # 0.5 tok/s at 0.5 W: 1 J per token; $3.60/h over 1,800 tokens an hour = $2,000 per 1M.
        e = economics.compute(actual_tps=0.5, power_watts=0.5, cost_per_hour=3.6, efficiency=None)
        assert (e.joules_per_token, e.joules_source) == (1.0, "power")
        assert e.cost_per_million_tokens == pytest.approx(2000.0)
        # 0.5 J over 2 tokens by the energy counter: 0.25 J per token.
        c = economics.compute(actual_tps=1.0, power_watts=None, cost_per_hour=None,
                              efficiency=None, energy_joules=0.5, energy_tokens=2.0)  # fmt: skip
        assert (c.joules_per_token, c.joules_source) == (0.25, "energy_counter")

    def test_an_energy_counter_without_tokens_falls_back_to_power(self) -> None:
        # 400 W at 200 tok/s: 2 J per token, whenever the counter cannot divide.
        for joules, tokens in ((None, 100.0), (50.0, 0.0), (0.0, 100.0)):
            e = economics.compute(
                actual_tps=200.0, power_watts=400.0, cost_per_hour=None, efficiency=None,
                energy_joules=joules, energy_tokens=tokens,
            )  # fmt: skip
            assert (e.joules_per_token, e.joules_source) == (2.0, "power"), (joules, tokens)

    def test_nothing_observed_no_wall_clock(self) -> None:
        e = economics.compute(actual_tps=500.0, power_watts=None, cost_per_hour=13.8,
                              efficiency=0.5)  # fmt: skip
        assert (e.duty_cycle, e.wall_cost_per_million_tokens, e.wall_recoverable_per_hour) == (
            None, None, None)  # fmt: skip
        # 10 s observed, none of them active: idle, the whole cost recoverable.
        idle = economics.compute(actual_tps=None, power_watts=None, cost_per_hour=13.8,
                                 efficiency=None, observed_seconds=10.0)  # fmt: skip
        assert (idle.duty_cycle, idle.wall_recoverable_per_hour) == (0.0, 13.8)
        # Tokens known but not the seconds they were made in: no wall-clock price per token.
        unknown = economics.compute(actual_tps=500.0, power_watts=None, cost_per_hour=13.8,
                                    efficiency=None, observed_tokens=1000.0)  # fmt: skip
        assert unknown.wall_cost_per_million_tokens is None
        # Half a second is time like any other: all of it active; 1,000 tokens made in it at
        # $3.60/h cost 3.6 x 0.5 / 3600 / 1000 x 1e6 = $0.50 per million.
        short = economics.compute(actual_tps=2000.0, power_watts=None, cost_per_hour=3.6,
                                  efficiency=None, observed_seconds=0.5, active_seconds=0.5,
                                  observed_tokens=1000.0, observed_token_seconds=0.5)  # fmt: skip
        assert short.duty_cycle == 1.0
        assert short.wall_cost_per_million_tokens == pytest.approx(0.5)

    def test_no_power_no_joules(self) -> None:
        e = economics.compute(actual_tps=10.0, power_watts=0.0, cost_per_hour=None,
                              efficiency=None)  # fmt: skip
        assert (e.joules_per_token, e.joules_source) == (None, None)


class TestWallClockEconomics:
    """docs/design.md's wall-clock basis, worked by hand."""

    def wall(self, **kw: Any) -> economics.Economics:
        args: dict[str, Any] = dict(
            actual_tps=200.0,
            power_watts=None,
            cost_per_hour=7.2,
            efficiency=0.4,
            observed_seconds=600.0,
            active_seconds=60.0,
            observed_tokens=12_000.0,
            observed_token_seconds=600.0,
        )
        return economics.compute(**{**args, **kw})  # fmt: skip

    def test_a_server_busy_a_tenth_of_the_time(self) -> None:
        e = self.wall()
        # Busy 60 s of 600 s: duty 0.1. Active basis: 7.2 / (200 × 3600) × 1e6 = $10 per 1M.
        # Wall clock: 600 s cost 7.2 × 600/3600 = $1.20 for 12,000 tokens = $100 per 1M — ten
        # times the active figure, as a tenth of the hours made all the tokens.
        assert e.duty_cycle == pytest.approx(0.1)
        assert e.cost_per_million_tokens == pytest.approx(10.0)
        assert e.wall_cost_per_million_tokens == pytest.approx(100.0)
        # Recoverable: active 7.2 × (1 − 0.4) = 4.32; wall clock 7.2 × (1 − 0.1 × 0.4) = 6.912.
        assert e.recoverable_per_hour == pytest.approx(4.32)
        assert e.wall_recoverable_per_hour == pytest.approx(6.912)

    def test_an_idle_server_costs_all_its_hours(self) -> None:
        # No active window, no token, no efficiency: the whole $7.20/h is recoverable; there is
        # no cost per token at all (nothing to divide by), on either basis.
        e = self.wall(actual_tps=None, efficiency=None, active_seconds=0.0, observed_tokens=0.0)
        assert (e.duty_cycle, e.wall_recoverable_per_hour) == (0.0, 7.2)
        assert e.wall_cost_per_million_tokens is None and e.cost_per_million_tokens is None
        assert e.recoverable_per_hour is None

    def test_busy_without_an_efficiency_is_no_guess(self) -> None:
        # Busy (duty 0.1) but no roofline (unknown model): the wall-clock recoverable cost
        # needs the efficiency and is absent; the costs per token are not.
        e = self.wall(efficiency=None)
        assert e.wall_recoverable_per_hour is None and e.recoverable_per_hour is None
        assert e.wall_cost_per_million_tokens == pytest.approx(100.0)

    def test_nothing_observed_and_no_price(self) -> None:
        e = self.wall(observed_seconds=0.0, active_seconds=0.0, observed_tokens=None,
                      observed_token_seconds=0.0)  # fmt: skip
        assert (e.duty_cycle, e.wall_cost_per_million_tokens, e.wall_recoverable_per_hour) == (
            None, None, None)  # fmt: skip
        unpriced = self.wall(cost_per_hour=None)
        assert unpriced.duty_cycle == pytest.approx(0.1)
        assert (unpriced.wall_cost_per_million_tokens, unpriced.wall_recoverable_per_hour) == (
            None, None)  # fmt: skip

    def test_tokens_count_over_their_own_seconds(self) -> None:
        # 600 s observed, but token deltas known over only 300 s of it (a counter reset in the
        # rest): 7.2 × 300/3600 = $0.60 for 6,000 tokens = $100 per 1M, not $200.
        e = self.wall(observed_tokens=6000.0, observed_token_seconds=300.0)
        assert e.wall_cost_per_million_tokens == pytest.approx(100.0)


class TestFloorsAcrossStagesAndEngines:
    """1 PFLOP/s and 2 TB/s a GPU, 1e9 parameters of 2 bytes, TP 1 x PP 2: the ridge is
    1e15 x 2 / (2 x 2e12) = 500 requests; an engine's ceiling 1e15 x 2 / 2e9 = 1e6 tokens/s."""

    INP = RooflineInputs(1e15, 2e12, 1e9, 1e9, 2.0, 1, pp=2)

    def test_the_tpot_floor_at_one_engines_batch(self) -> None:
        # Two engines, 2,400 running: 1,200 each. Weights: 2e9 / 2e12 = 1 ms a token; compute:
        # 1,200 x 2e9 / (1e15 x 1 x 2) = 1.2 ms. The floor is the larger.
        r = compute(self.INP, batch=2400.0, actual_tps=1e5, replicas=2)
        assert r.tpot_floor_seconds == pytest.approx(1.2e-3)
        assert r.hardware_tps == pytest.approx(2e6)

    def test_a_prompt_crosses_the_stages_in_turn(self) -> None:
        # Below the ridge, a 1,000-token prompt runs at one stage's share of the engine:
        # 1e6 / 2 = 5e5 tokens/s, so 2 ms.
        r = compute(self.INP, batch=200.0, actual_tps=1e4, prompt_tokens_mean=1000.0)
        assert r.prefill_floor_seconds == pytest.approx(2e-3)
