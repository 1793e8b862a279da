"""Latency objectives: counts from histogram buckets against known samples, attainment and
goodput by hand, and the counters over a real recording against its raw buckets."""

from __future__ import annotations

import bisect
import gzip
import json
import math
import random

import pytest

from exporter.derive.histogram import HistDelta, count_at_most
from exporter.derive.ledger import Ledger, accrue
from exporter.derive.slo import SloCount, SloTargets, summarize, window_counts
from exporter.derive.window import Window
from tests.helpers import cli_in_process
from tests.paths import UNDERBATCH
from tests.test_replay_cli import reference_value, samples

# vLLM's TTFT bucket bounds (0.32), as in the recordings.
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, math.inf)  # fmt: skip


def bucketed(values: list[float]) -> tuple[float, ...]:
    """Cumulative bucket counts of ``values``, as a Prometheus histogram holds them."""
    ordered = sorted(values)
    return tuple(float(bisect.bisect_right(ordered, b)) for b in TTFT_BOUNDS)


class TestCountAtMost:
    def test_against_known_samples_and_the_error_bound(self) -> None:
        rng = random.Random(7)
        values = [rng.lognormvariate(-2.5, 1.2) for _ in range(5000)]
        cum = bucketed(values)
        for target in (0.001, 0.02, 0.1, 0.5, 1.0, 2560.0, 0.0005, 0.03, 0.07, 0.3, 0.9, 3.0):
            true = sum(v <= target for v in values)
            got = count_at_most(target, TTFT_BOUNDS, cum)
            if target in TTFT_BOUNDS:
                assert got == true, target  # on a bound: exact
            else:
                # Inside a bucket: off by at most that bucket's observations.
                i = bisect.bisect_left(TTFT_BOUNDS, target)
                width = cum[i] - (cum[i - 1] if i else 0.0)
                assert abs(got - true) <= width, target

    def test_edges(self) -> None:
        cum = (2.0, 5.0, 9.0)
        bounds = (1.0, 2.0, math.inf)
        assert count_at_most(0.5, bounds, cum) == 1.0  # the first bucket starts at 0: 2 × 0.5
        assert count_at_most(0.0, bounds, cum) == 0.0
        assert count_at_most(1e9, bounds, cum) == 5.0  # the +Inf bucket never meets a target
        assert count_at_most(1.0, (0.0, 1.0, math.inf), (3.0, 5.0, 6.0)) == 5.0
        assert count_at_most(0.0, (0.0, 1.0, math.inf), (3.0, 5.0, 6.0)) == 3.0  # le="0" is 0s


def window(ttft: HistDelta | None = None, tpot: HistDelta | None = None) -> Window:
    return Window(0.0, 2.0, 2.0, 9, 0, running=1.0, d_generation_tokens=40.0, ttft=ttft,
                  tpot=tpot)  # fmt: skip


H = HistDelta((0.1, 0.5, math.inf), (6.0, 9.0, 10.0), 2.0, 10.0)


class TestAttainmentAndGoodput:
    def test_by_hand(self) -> None:
        # TTFT target 0.5 s (a bound): 9 of 10. TPOT target 0.3 s: 6 + 3 × (0.2 / 0.4) = 7.5 of
        # 10. Two windows of each: attainments 0.9 and 0.75; goodput 200 tok/s × 0.75 = 150.
        t = SloTargets(ttft=0.5, tpot=0.3)
        assert window_counts(window(H, H), t) == {"ttft": SloCount(9.0, 10.0),
                                                  "tpot": SloCount(7.5, 10.0)}  # fmt: skip
        s = summarize([window(H, H), window(H, H)], t, 200.0)
        assert s is not None
        assert s.attainment == {"ttft": 0.9, "tpot": 0.75} and s.goodput_tps == 150.0

    def test_nothing_made_up(self) -> None:
        assert summarize([window(H)], SloTargets(), 100.0) is None  # no objective
        # No TPOT histogram: its attainment is unknown, so goodput (both objectives) is too.
        s = summarize([window(H)], SloTargets(ttft=0.5, tpot=0.3), 100.0)
        assert s is not None and s.attainment == {"ttft": 0.9} and s.goodput_tps is None
        # No finished request: no attainment (0 of 0 is not 0%).
        empty = HistDelta(H.bounds, (0.0, 0.0, 0.0), 0.0, 0.0)
        s = summarize([window(empty)], SloTargets(ttft=0.5), 100.0)
        assert s is not None and s.attainment == {} and s.goodput_tps is None
        # One request is enough to say: it met the objective (1 of 1).
        one = HistDelta(H.bounds, (1.0, 1.0, 1.0), 0.05, 1.0)
        s = summarize([window(one)], SloTargets(ttft=0.5), 100.0)
        assert s is not None and s.attainment == {"ttft": 1.0} and s.goodput_tps == 100.0

    def test_the_ledger_counts_from_the_first_window(self) -> None:
        t = SloTargets(ttft=0.5)
        led = Ledger()
        for _ in range(3):
            led = accrue(led, window(H), evaluable=True, active=True, cost_per_hour=None,
                         price_source=None, slo=window_counts(window(H), t))  # fmt: skip
        assert dict(led.slo) == {"ttft": (27.0, 30.0)}


def test_counters_over_a_real_recording_match_its_buckets() -> None:
    # 0.01 s is one of vLLM's bounds: the count is exact. Every recorded poll replayed (a fixed
    # cadence) and every window evaluable: polls 0..112 are the closed windows' span.
    m = samples(replay(str(UNDERBATCH), "--gpu-source", "none", "--calm-poll-interval",
                           "250ms", "--slo-ttft", "10ms", "--slo-tpot", "5ms"))  # fmt: skip
    with gzip.open(UNDERBATCH, "rt") as f:
        polls = [e for e in map(json.loads, f) if e.get("source") == "vllm"]
    first, last = polls[0]["body"], polls[112]["body"]

    def rise(name: str) -> float:
        return reference_value(last, name) - reference_value(first, name)

    def bucket(family: str, le: str) -> float:
        def at(body: str) -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line.startswith(family + "_bucket{") and f'le="{le}"' in line
            )

        return at(last) - at(first)

    total = rise("vllm:time_to_first_token_seconds_count")
    good = bucket("vllm:time_to_first_token_seconds", "0.01")
    assert total > 0 and 0 < good < total  # the target splits this recording's requests
    assert m[("vllm_profile_slo_ttft_requests_total", ())] == total
    assert m[("vllm_profile_slo_ttft_good_requests_total", ())] == good
    assert m[("vllm_profile_slo_ttft_attainment_ratio", ())] == pytest.approx(good / total)
    assert m[("vllm_profile_slo_ttft_target_seconds", ())] == 0.01
    tpot_total = rise("vllm:request_time_per_output_token_seconds_count")
    assert m[("vllm_profile_slo_tpot_requests_total", ())] == tpot_total
    tps = m[("vllm_profile_generation_tokens_per_second", ())]
    attain = min(good / total, m[("vllm_profile_slo_tpot_attainment_ratio", ())])
    assert m[("vllm_profile_goodput_tokens_per_second", ())] == pytest.approx(tps * attain)


def replay(*args: str) -> str:
    """``replay ARGS --print-metrics``, in this process."""
    return cli_in_process("replay", *args, "--print-metrics")
