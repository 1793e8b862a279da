"""Capacity: the step-time fit, each limit's bound and every reason to withhold, worked by hand
(docs/capacity.md)."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import pytest

from exporter import report
from exporter.derive.capacity import (
    LIMITS,
    REASONS,
    Capacity,
    Mix,
    bounds,
    closed_loop,
    dispersion,
    erlang_c,
    estimate,
    mix,
    self_check,
    steady,
    ttft_p99,
)
from exporter.derive.histogram import HistDelta
from exporter.derive.horizon import Aggregate
from exporter.derive.resolve import RooflineSettings
from exporter.derive.slo import SloTargets
from exporter.derive.step_fit import Reservoir, StepModel, StepPoint, fit, point
from exporter.derive.window import Window
from exporter.export import status_page
from exporter.export.collector import ExportSettings, metric_families
from exporter.pipeline import Pipeline
from exporter.samples import EngineSample, Histogram, Tick

SETTINGS = ExportSettings(version="t", horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=64.0)
TRUE = StepModel(base=0.010, per_sequence=0.001, per_prefill_token=0.0)  # seconds


def points(batches: list[float], wobble: float = 0.0, model: StepModel = TRUE) -> list[StepPoint]:
    """Points on ``model``; ``wobble`` is a deterministic relative disturbance (sin i)."""
    out = []
    for i, b in enumerate(batches):
        step = model.base + model.per_sequence * b
        out.append(StepPoint(b, 0.0, step * (1 + wobble * math.sin(i)), float(i)))
    return out


SPREAD = [float(b) for b in range(2, 42)]  # 40 windows, batch 2 .. 41


class TestFit:
    def test_exact_points_give_the_line_back(self) -> None:
        f = fit(points(SPREAD))
        assert f is not None and f.points == 40 and (f.batch_low, f.batch_high) == (2.0, 41.0)
        assert f.model.base == pytest.approx(0.010, rel=1e-9)
        assert f.model.per_sequence == pytest.approx(0.001, rel=1e-9)
        assert f.model.per_prefill_token == 0.0  # no prefill seen: the term is dropped
        # Ten blocks of four: each leave-out is the same line.
        assert len(f.leave_outs) == 10
        assert all(lo.per_sequence == pytest.approx(0.001, rel=1e-9) for lo in f.leave_outs)

    def test_a_few_disturbed_windows_pull_little(self) -> None:
        """Four windows at five times their step time (a pause inside them). Least squares would
        move the slope a lot; Huber weights keep it within 2%."""
        pts = points(SPREAD)
        for i in (5, 15, 25, 35):
            pts[i] = replace(pts[i], step_seconds=5 * pts[i].step_seconds)
        f = fit(pts)
        assert f is not None
        assert f.model.per_sequence == pytest.approx(0.001, rel=0.02)
        assert f.model.base == pytest.approx(0.010, rel=0.05)

    def test_the_prefill_term_is_found_when_it_varies_on_its_own(self) -> None:
        # step = 0.010 + 0.001 B + 0.0001 P, P cycling 0, 50, 100 independently of B.
        pts = [StepPoint(b, 50.0 * (i % 3), 0.010 + 0.001 * b + 0.0001 * 50.0 * (i % 3), i)
               for i, b in enumerate(SPREAD)]  # fmt: skip
        f = fit(pts)
        assert f is not None
        assert f.model.per_prefill_token == pytest.approx(0.0001, rel=1e-6)
        assert f.model.per_sequence == pytest.approx(0.001, rel=1e-6)

    def test_one_batch_cannot_give_a_slope(self) -> None:
        assert fit(points([8.0] * 20)) is None
        assert fit(points([2.0, 4.0])) is None  # fewer than three points

    def test_the_reservoir_keeps_each_operating_point(self) -> None:
        """Hours at batch 32 cannot push out the few windows seen at batch 4: 16 per quarter
        octave are kept (32 and 4 are bins 20 and 8)."""
        r = Reservoir()
        for p in points([4.0] * 5 + [32.0] * 1000):
            r.add(p)
        kept = sorted(p.batch for p in r)
        assert kept == [4.0] * 5 + [32.0] * 16 and r.bins() == 2 and r.added == 1005
        r.clear()
        assert len(r) == 0 and r.added == 0


def window(**kw: object) -> Window:
    base: dict[str, object] = dict(start=0.0, end=2.0, duration=2.0, engine_polls=9, gpu_polls=0)
    base.update(kw)
    # As a window reads a vLLM sample: its steps made what the token counters count.
    base.setdefault("d_step_generated", base.get("d_generation_tokens"))
    prompt, hits = base.get("d_prompt_tokens"), base.get("d_prefix_hits")
    if "d_step_prefilled" not in base and isinstance(prompt, float):
        base["d_step_prefilled"] = prompt - (hits if isinstance(hits, float) else 0.0)
    return Window(**base)  # type: ignore[arg-type]


TPOT = HistDelta((0.05, float("inf")), (10.0, 10.0), 0.3, 10.0)


class TestPoint:
    def test_counters_only(self) -> None:
        # 400 tokens in 20 steps: batch 20; 300 prompt tokens, 100 from the prefix cache: 10 per
        # step; TPOT mean 0.03 s.
        w = window(d_steps=20.0, d_generation_tokens=400.0, d_prompt_tokens=300.0,
                   d_prefix_hits=100.0, tpot=TPOT, tpot_mean=0.03)  # fmt: skip
        assert point(w) == StepPoint(20.0, 10.0, 0.03, 2.0)

    @pytest.mark.parametrize(
        "change",
        [dict(d_steps=None), dict(d_steps=0.0), dict(d_generation_tokens=0.0),
         dict(tpot=None), dict(tpot=HistDelta((float("inf"),), (0.0,), 0.0, 0.0)),
         dict(d_prompt_tokens=None), dict(d_generation_tokens=1e9)],
    )  # fmt: skip
    def test_no_point_without_its_counters(self, change: dict[str, object]) -> None:
        good: dict[str, object] = dict(
            d_steps=20.0, d_generation_tokens=400.0, d_prompt_tokens=300.0, tpot=TPOT,
            tpot_mean=0.03,
        )  # fmt: skip
        assert point(window(**good)) is not None
        assert point(window(**(good | change))) is None


RESOLVED = HistDelta((0.01, 0.025, 0.05, float("inf")), (0.0, 50.0, 100.0, 100.0), 3.0, 100.0)
MIX = Mix(load_rps=3.0, tokens_per_request=100.0, prefill_per_generated=0.0, ttft_p99=None,
          dispersion=1.0, steady=True, batch_now=12.0, running_per_batch=1.0,
          kv_per_batch=0.01, recent=((StepPoint(12.0, 0.0, 0.022, 0.0), 10.0),))  # fmt: skip
# TPOT p99 at 60 ms under TRUE with Poisson arrivals: step(B) + 2.326 sqrt(2/3 x 0.001^2 x B)
# = 0.060 is, with x = sqrt(B), 0.001 x^2 + 0.0018992 x - 0.050 = 0: x = 6.18495, B = 38.254,
# step 48.254 ms, 38.254 / (100 x 0.048254) = 7.9276 req/s.
TPOT_BATCH, TPOT_RPS = 38.254, 7.9276


def p99_by_hand(model: StepModel, batch: float, dispersion: float = 1.0, prefill: float = 0.0,
                ) -> float:  # fmt: skip
    """TPOT p99 as docs/capacity.md writes it: the mean step time plus 2.326 standard
    deviations of a request's mean step time, 2/3 b^2 B for the overlap and (c k)^2 B for the
    prefill interruptions, times the dispersion (never below 1)."""
    b, c = model.per_sequence, model.per_prefill_token
    var = max(1.0, dispersion) * (2 / 3 * b * b + (c * prefill) ** 2) * batch
    return model.base + (b + c * prefill) * batch + 2.326 * math.sqrt(var)


class TestBounds:
    def test_each_limit_by_hand(self) -> None:
        """step(B) = 0.010 + 0.001 B; 100 tokens a request; Poisson arrivals.
        tpot 60 ms: B = 38.254 (above), 7.9276 req/s;
        64 seqs: 64 / (100 x 0.074) = 8.6486 req/s; KV full at B = 1 / 0.01 = 100:
        100 / (100 x 0.110) = 9.0909 req/s."""
        b = bounds(TRUE, MIX, 0.060, 64.0)
        assert b["tpot"] == pytest.approx((TPOT_BATCH, TPOT_RPS), rel=1e-4)
        assert p99_by_hand(TRUE, b["tpot"][0]) == pytest.approx(0.060, rel=1e-9)
        assert b["max_num_seqs"] == pytest.approx((64.0, 64.0 / 7.4))
        assert b["kv_cache"] == pytest.approx((100.0, 100.0 / 11.0))

    def test_prefill_and_prefills_in_flight(self) -> None:
        """Half a prompt token per generated token at 0.0002 s each: slope 0.001 + 0.0001.
        1.25 running requests per decode slot: 64 seqs hold a batch of 51.2."""
        model = replace(TRUE, per_prefill_token=0.0002)
        m = replace(MIX, prefill_per_generated=0.5, running_per_batch=1.25)
        b = bounds(model, m, 0.060, 64.0)
        assert p99_by_hand(model, b["tpot"][0], prefill=0.5) == pytest.approx(0.060, rel=1e-9)
        # The prefill interruptions widen the tail: 2/3 x 1e-6 + (1e-4)^2 = 6.767e-7 per unit
        # of batch. At B = 40: 0.010 + 0.044 + 2.326 x sqrt(6.767e-7 x 40) = 0.066101 > 0.060.
        assert p99_by_hand(model, 40.0, prefill=0.5) == pytest.approx(0.066101, rel=1e-4)
        assert b["tpot"][0] < 40.0
        assert b["max_num_seqs"] == pytest.approx((51.2, 51.2 / (100 * (0.010 + 0.0011 * 51.2))))

    def test_a_target_below_the_empty_step_gives_nothing_at_any_load(self) -> None:
        b = bounds(TRUE, MIX, 0.009, 64.0)  # below the 10 ms an empty step takes
        assert b["tpot"] == (0.0, 0.0)

    def test_bursty_arrivals_widen_the_tail(self) -> None:
        """Arrivals dispersed 4x Poisson: the spread doubles. 0.001 x^2 + 0.0037984 x - 0.05 =
        0: x = 5.4225, B = 29.403; smoother than Poisson counts as Poisson."""
        b = bounds(TRUE, replace(MIX, dispersion=4.0), 0.060, 64.0)
        assert b["tpot"][0] == pytest.approx(29.403, rel=1e-4)
        assert p99_by_hand(TRUE, b["tpot"][0], 4.0) == pytest.approx(0.060, rel=1e-9)
        smooth = bounds(TRUE, replace(MIX, dispersion=0.2), 0.060, 64.0)
        assert smooth["tpot"][0] == pytest.approx(TPOT_BATCH, rel=1e-4)

    def test_erlang_c_by_hand(self) -> None:
        # M/M/1 at 0.5: an arrival waits half the time. M/M/2 offered 1 erlang: Erlang B =
        # (1/2) / (1 + 1 + 1/2) = 0.2, C = 2 x 0.2 / (2 - 1 x 0.8) = 1/3.
        assert erlang_c(1, 0.5) == pytest.approx(0.5)
        assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
        assert erlang_c(2, 2.0) == 1.0 and erlang_c(64, 70.0) == 1.0  # saturated

    def test_the_ttft_limit_by_hand(self) -> None:
        """Two slots (--max-num-seqs 2), today's TTFT p99 50 ms at batch 12 (step 22 ms).
        At batch 1: step 11 ms, so 25 ms unqueued; a request holds its slot 100 x 11 ms = 1.1 s;
        offered 1 erlang to 2 slots, an arrival waits with chance 1/3, and the wait's p99 is
        1.1 x ln((1/3) / 0.01) / (2 - 1) = 3.857 s. With that TTFT as the objective the batch
        is 1: 1 / (100 x 0.011) = 0.909 req/s."""
        m = replace(MIX, ttft_p99=0.050)
        target = 0.025 + 1.1 * math.log(100 / 3)
        b = bounds(TRUE, m, None, 2.0, ttft_target=target)
        assert b["ttft"] == pytest.approx((1.0, 1 / 1.1), rel=1e-6)
        # Bursty arrivals (dispersion 3): Kingman's (1 + 3) / 2 doubles the wait, so the same
        # objective holds at a smaller batch.
        bursty = bounds(TRUE, replace(m, dispersion=3.0), None, 2.0, ttft_target=target)
        assert bursty["ttft"][0] < 0.9
        assert ttft_p99(TRUE, replace(m, dispersion=3.0), 1.0, 2.0) == pytest.approx(
            0.025 + 2 * 1.1 * math.log(100 / 3)
        )
        # Requests all of one length (service variability 0): Kingman's (1 + 0) / 2 halves
        # the wait; the variability unknown counts as an exponential's 1, as above.
        assert ttft_p99(TRUE, replace(m, service_cv2=0.0), 1.0, 2.0) == pytest.approx(
            0.025 + 0.5 * 1.1 * math.log(100 / 3)
        )
        assert ttft_p99(TRUE, replace(m, service_cv2=None), 1.0, 2.0) == pytest.approx(target)
        # No TTFT objective or no TTFT seen: no TTFT limit.
        assert "ttft" not in bounds(TRUE, m, None, 2.0)
        assert "ttft" not in bounds(TRUE, MIX, None, 2.0, ttft_target=target)
        # A fit whose step at today's batch is not positive (base -10 ms, 1 ms a sequence, at
        # batch 5: -5 ms) has no TTFT to stretch: none, and no division by it.
        assert ttft_p99(StepModel(-0.010, 0.001, 0.0), replace(m, batch_now=5.0), 1.0, 2.0) is None
        # An objective below today's unqueued TTFT at an empty batch: nothing.
        assert bounds(TRUE, m, None, 2.0, ttft_target=0.01)["ttft"] == (0.0, 0.0)

    def test_no_objective_no_tpot_bound(self) -> None:
        assert set(bounds(TRUE, MIX, None, 64.0)) == {"max_num_seqs", "kv_cache"}
        assert set(bounds(TRUE, replace(MIX, kv_per_batch=None), None, 64.0)) == {"max_num_seqs"}


def agg(**kw: object) -> Aggregate:
    base: dict[str, object] = dict(model_names=("m",), waiting=0.0, engines=1, tpot_mean=0.022,
                                   tpot_p99=0.033, kv_usage_mean=0.12, decode_batch_per_step=12.0,
                                   running_active=12.0)  # fmt: skip
    base.update(kw)
    return Aggregate(**base)  # type: ignore[arg-type]


def answer(pts: list[StepPoint], m: Mix | None = MIX, a: Aggregate | None = None,
           **kw: Any) -> Capacity:  # fmt: skip
    settings: dict[str, object] = dict(tpot_target=0.060, max_num_seqs=64.0, since_change=False)
    settings.update(kw)
    r = Reservoir()
    for p in pts:
        r.add(p)
    return estimate(fit(list(r)), m, a or agg(), bins=r.bins(), **settings)  # type: ignore[arg-type]


class TestEstimate:
    def test_the_answer_names_its_limit(self) -> None:
        c = answer(points(SPREAD, wobble=0.01))
        assert c.withheld is None and c.limit == "tpot"
        rps, lower, upper = c.requests_per_second, c.lower, c.upper
        assert rps == pytest.approx(TPOT_RPS, rel=0.03)
        assert rps is not None and lower is not None and upper is not None
        assert lower < rps < upper
        assert lower <= TPOT_RPS <= upper  # the interval covers the truth
        assert c.headroom == pytest.approx(rps - 3.0)
        assert c.concurrency == pytest.approx(TPOT_BATCH, rel=0.03)
        assert set(c.bounds) == {"tpot", "max_num_seqs", "kv_cache"}
        assert c.model_error == pytest.approx(0.0, abs=0.03)  # 0.010 + 0.012 = the 22 ms mean
        assert (c.points, c.batch_high) == (40, 41.0)

    def test_a_loose_objective_hands_the_limit_to_the_cap(self) -> None:
        # tpot at 120 ms: 0.001 x^2 + 0.0018992 x - 0.11 = 0, B = 91.8, 9.02 req/s
        c = answer(points(SPREAD, wobble=0.01), tpot_target=0.120)
        assert c.limit == "max_num_seqs"
        assert c.requests_per_second == pytest.approx(64.0 / 7.4, rel=0.03)
        # No objective, KV 2% per unit of batch: full at 50, 50 / (100 x 0.060) = 8.33 req/s.
        c2 = answer(points(SPREAD, wobble=0.01), tpot_target=None,
                    m=replace(MIX, kv_per_batch=0.02))  # fmt: skip
        assert c2.limit == "kv_cache"
        assert c2.requests_per_second == pytest.approx(50 / 6, rel=0.03)

    def test_an_objective_already_broken_is_an_overload(self) -> None:
        """TPOT objective 60 ms on vLLM's bounds (..., 0.05, 0.075, 0.1, ...): 100 requests.
        2 certainly over it (past 75 ms): overloaded, whatever the fit says. 2 in (50, 75] may
        be under it: not called. 1 certainly over is 1%, not more: not called either."""
        bounds_ = (0.025, 0.05, 0.075, 0.1, float("inf"))

        def tpot(cum: tuple[float, ...]) -> Mix:
            return replace(MIX, tpot=HistDelta(bounds_, cum, 2.0, 100.0))

        assert answer(points(SPREAD, wobble=0.01), m=tpot((50, 98, 98, 100, 100))).withheld == (
            "overloaded"
        )
        assert answer(points(SPREAD, wobble=0.01), m=tpot((50, 98, 100, 100, 100))).withheld is None
        assert answer(points(SPREAD, wobble=0.01), m=tpot((50, 98, 99, 100, 100))).withheld is None
        # TTFT: 2 of 100 past 2.5 s against a 2 s objective.
        ttft = HistDelta((1.0, 2.5, float("inf")), (90.0, 98.0, 100.0), 50.0, 100.0)
        m = replace(MIX, ttft=ttft)
        assert answer(points(SPREAD, wobble=0.01), m=m, ttft_target=2.0).withheld == "overloaded"
        assert answer(points(SPREAD, wobble=0.01), m=m).withheld is None  # no TTFT objective

    def test_each_data_parallel_engine_steps_its_own_batch(self) -> None:
        """Two engines: every limit's batch is per engine and its rate doubles."""
        one = bounds(TRUE, MIX, 0.060, 64.0)
        two = bounds(TRUE, replace(MIX, engines=2), 0.060, 64.0)
        assert one.keys() == two.keys()
        for k, (b, r) in one.items():
            assert two[k] == pytest.approx((b, 2 * r))
        c = answer(points(SPREAD, wobble=0.01), m=replace(MIX, engines=2))
        assert c.requests_per_second == pytest.approx(2 * TPOT_RPS, rel=0.03)
        assert c.concurrency == pytest.approx(2 * TPOT_BATCH, rel=0.03)  # on each engine

    @pytest.mark.parametrize(
        ("reason", "pts", "kw"),
        [
            ("too_few_windows", points(SPREAD[:29]), {}),
            ("config_changed", points(SPREAD[:29]), dict(since_change=True)),
            ("several_models", points(SPREAD), dict(a=agg(model_names=("a", "b")))),
            ("no_load", points(SPREAD), dict(m=None)),
            ("missing_cap", points(SPREAD), dict(max_num_seqs=None)),
            ("not_steady", points(SPREAD), dict(m=replace(MIX, steady=False))),
            ("missing_kv", points(SPREAD), dict(m=replace(MIX, kv_per_batch=None))),
            ("overloaded", points(SPREAD), dict(a=agg(waiting=1.0))),
            # No queue, but the load is past the 7.93 req/s the TPOT objective allows.
            ("overloaded", points(SPREAD, wobble=0.01), dict(m=replace(MIX, load_rps=8.0))),
            ("no_batch_spread", points([10.0 + 0.1 * i for i in range(40)]), {}),
            ("non_positive_slope",
             points(SPREAD, model=StepModel(0.06, -0.001, 0.0)), dict(a=agg(tpot_mean=0.048))),
            ("model_mismatch", points(SPREAD),
             dict(m=replace(MIX, recent=((StepPoint(12.0, 0.0, 0.040, 0.0), 10.0),)))),
            ("extrapolating", points([1.0 + 0.1 * i for i in range(40)]),
             dict(a=agg(tpot_mean=0.0114), m=replace(MIX, batch_now=1.4))),
            ("interval_too_wide", points(SPREAD, wobble=0.9), {}),  # +-90% windows
        ],
    )  # fmt: skip
    def test_withheld_with_a_reason(self, reason: str, pts: list[StepPoint],
                                    kw: dict[str, Any]) -> None:  # fmt: skip
        c = answer(pts, **kw)
        assert c.withheld == reason and reason in REASONS
        assert (c.requests_per_second, c.headroom, c.concurrency, c.lower) == (None,) * 4
        assert c.bounds == {} and c.limit is None

    def test_every_reason_is_reachable(self) -> None:
        """The parametrized cases above cover the whole table."""
        covered = {p[0] for p in TestEstimate.test_withheld_with_a_reason.pytestmark[0].args[1]}
        assert covered | {"closed_loop"} == set(REASONS)  # closed_loop: the test below

    def test_the_self_check_weighs_windows_by_their_requests(self) -> None:
        """Windows at batch 4 (14 ms, 10 requests) and 20 (measured 33 ms where the fit says
        30, 30 requests): predicted 10 x 0.014 + 30 x 0.030 = 1.04 request-seconds per token
        against 0.14 + 0.99 = 1.13 measured: -7.96%."""
        recent = ((StepPoint(4.0, 0.0, 0.014, 0.0), 10.0), (StepPoint(20.0, 0.0, 0.033, 2.0), 30.0))
        assert self_check(TRUE, replace(MIX, recent=recent)) == pytest.approx(1.04 / 1.13 - 1)
        assert self_check(TRUE, replace(MIX, recent=())) is None
        c = answer(points(SPREAD, wobble=0.01), m=replace(MIX, recent=recent))
        assert c.model_error == pytest.approx(1.04 / 1.13 - 1, rel=0.05)

    def test_a_fixed_concurrency_is_answered_in_concurrency(self) -> None:
        c = answer(points(SPREAD, wobble=0.01), m=replace(MIX, closed_loop=8.0))
        assert c.withheld == "closed_loop" and c.requests_per_second is None
        assert c.headroom is None and c.limit is None and c.bounds == {}
        assert c.concurrency == pytest.approx(TPOT_BATCH, rel=0.03)  # the TPOT limit's batch
        assert c.load == 3.0
        # One peak at the cap (64) is a server held at its cap, not clients in a loop.
        held = answer(points(SPREAD, wobble=0.01), m=replace(MIX, closed_loop=64.0))
        assert held.withheld is None and held.requests_per_second is not None


class TestMix:
    def test_ratios_of_sums_by_hand(self) -> None:
        """2 s with 4 requests, 400 tokens, 300 prompt tokens of which 100 cached; 4 s with 6
        requests, 500 tokens, 200 prompt, none cached; 2 s idle. Load 10 / 8 s; 90 tokens a
        request; 400 uncached / 900 generated; 12 a step (400 / 33.33, 500 / 41.67) with 12
        running: one per decode slot; KV 12% for 12 running: 1% a request."""
        ws = [window(d_requests=4.0, d_generation_tokens=400.0, d_prompt_tokens=300.0,
                     d_prefix_hits=100.0, running=12.0, kv_usage=0.12, tpot=RESOLVED,
                     d_steps=400 / 12),
              window(start=2.0, end=6.0, duration=4.0, d_requests=6.0, d_generation_tokens=500.0,
                     d_prompt_tokens=200.0, running=12.0, kv_usage=0.12, d_steps=500 / 12),
              # idle: no request ran, its empty KV cache says nothing of a request's share
              window(start=6.0, end=8.0, running=0.0, kv_usage=0.0, d_requests=0.0,
                     d_generation_tokens=0.0, d_prompt_tokens=0.0)]  # fmt: skip
        m = mix(ws, agg())
        assert m is not None
        assert m.load_rps == pytest.approx(10 / 8)
        assert m.tokens_per_request == pytest.approx(90.0)
        assert m.prefill_per_generated == pytest.approx(400 / 900)
        # Arrivals (finished requests: no TTFT histogram here) 4, 6, 0 over 2, 4, 2 s: 10 / 8
        # s = 1.25/s, expected 2.5, 5, 2.5; chi^2 = (1.5^2 / 2.5 + 1 / 5 + 2.5^2 / 2.5) / 2.
        assert m.dispersion == pytest.approx((2.25 / 2.5 + 0.2 + 2.5) / 2)
        assert m.ttft_p99 == agg().ttft_p99
        assert m.batch_now == pytest.approx(12.0)
        assert m.running_per_batch == pytest.approx(1.0) and m.kv_per_batch == pytest.approx(0.01)
        assert m.engines == 1
        # Two engines, 12 running in all: each engine counts its own steps (twice as many for
        # the same tokens), 6 a step on each: one running request per slot.
        twice = [replace(w, d_steps=2 * w.d_steps) if w.d_steps else w for w in ws]
        two = mix(twice, agg(engines=2))
        assert two is not None and two.engines == 2 and two.batch_now == pytest.approx(6.0)
        assert two.running_per_batch == pytest.approx(1.0)
        # The fullest engine's 12% holds its 6 running: 2% of an engine's KV a request.
        assert two.kv_per_batch == pytest.approx(0.02)

    def test_the_batch_is_weighed_by_time_like_the_running_requests(self) -> None:
        """2 s at batch 4 (400 tokens in 100 steps) with 4 running, 2 s at batch 20 (4000 in
        200) with 20 running: one running request per slot in each. By time the batch is
        (4 + 20) / 2 = 12 and running 12: 1.0. The ratio of sums, 4400 / 300 = 14.67 a step,
        would have made it 0.82."""
        ws = [window(d_requests=4.0, d_generation_tokens=400.0, d_prompt_tokens=0.0,
                     d_steps=100.0, running=4.0),
              window(start=2.0, end=4.0, d_requests=40.0, d_generation_tokens=4000.0,
                     d_prompt_tokens=0.0, d_steps=200.0, running=20.0)]  # fmt: skip
        m = mix(ws, agg())
        assert m is not None and m.batch_now == pytest.approx(12.0)
        assert m.running_per_batch == pytest.approx(1.0)

    def test_a_closed_loop_holds_one_running_peak(self) -> None:
        """Ten active windows all peaking at 8 running, averaging 7.6 and 6.0 in turn (6.8: at
        least 80% of 8): eight clients in a loop. One window peaking at 9, or an average under
        6.4, is not."""
        loop = [window(running=7.6 if i % 2 else 6.0, running_peak=8.0, d_requests=2.0,
                       d_generation_tokens=200.0) for i in range(10)]  # fmt: skip
        assert closed_loop(loop) == 8.0
        assert closed_loop(loop[:9]) is None  # too few windows to tell
        assert closed_loop([*loop[:9], replace(loop[0], running_peak=9.0)]) is None
        low = [replace(w, running=6.3) for w in loop]
        assert closed_loop(low) is None
        ones = [replace(w, running=1.0, running_peak=1.0) for w in loop]
        assert closed_loop(ones) is None  # a single client is not told apart from light traffic
        m = mix(loop, agg())
        assert m is not None and m.closed_loop == 8.0

    def test_no_finished_request_no_mix(self) -> None:
        assert mix([window(d_requests=0.0, d_generation_tokens=40.0)], agg()) is None
        assert mix([], agg()) is None


def admitted(n: float) -> HistDelta:
    """A TTFT histogram delta of ``n`` first tokens: ``n`` requests admitted."""
    return HistDelta((float("inf"),), (n,), 0.01 * n, n)


class TestArrivals:
    def test_dispersion_by_hand(self) -> None:
        # 10 and 30 first tokens in two 2 s windows: 10/s, 20 expected in each:
        # chi^2 = (100 + 100) / 20 = 10 over one degree of freedom.
        ws = [window(ttft=admitted(10)), window(start=2.0, end=4.0, ttft=admitted(30))]
        assert dispersion(ws) == pytest.approx(10.0)
        # Counts in proportion to unequal lengths: no dispersion at all.
        even = [window(end=1.0, duration=1.0, ttft=admitted(10)),
                window(start=1.0, end=3.0, ttft=admitted(20))]  # fmt: skip
        assert dispersion(even) == 0.0
        # One window, or nothing admitted: Poisson's 1 (and the answer is withheld anyway).
        assert dispersion(ws[:1]) == 1.0
        assert dispersion([window(ttft=admitted(0)), window(ttft=admitted(0))]) == 1.0

    @staticmethod
    def halves(first: float, second: float) -> list[Window]:
        """Thirty 2 s windows: the first fifteen admit ``first`` each, the rest ``second``."""
        return [window(start=2.0 * i, end=2.0 * i + 2, ttft=admitted(first if i < 15 else second))
                for i in range(30)]  # fmt: skip

    def test_steady_by_hand(self) -> None:
        """Halves of 30 s each. 4 then 8 a window: 60 and 120 admitted, rates 2 and 4/s, a 50%
        change and sqrt(60/900 + 120/900) = 0.447/s of standard error: 4.5 errors apart, not
        steady. 1 then 2 a window: also 50%, but 0.5 / (sqrt(45)/30) = 2.2 errors: chance can
        do that. 4 then 4.8: 3.8 errors apart, but a change of 17%, under 25%: steady."""
        assert not steady(self.halves(4.0, 8.0))
        assert steady(self.halves(1.0, 2.0))
        assert steady(self.halves(4.0, 4.8))
        assert steady(self.halves(8.0, 4.0)) is False  # a falling load too
        assert steady([])


class TestThroughThePipeline:
    """Synthetic counters from a known engine: step(B) = 10 ms + 1 ms x B, 100 tokens a
    request, 200 uncached prompt tokens a request, KV 1% per running request. Batch 5, 10, 20
    and 40 for 20 s each, then 20 for 70 s (the last 60 s horizon all at 20). Running requests
    move around the batch as open-loop arrivals make them."""

    PHASES = ((0.0, 5.0), (20.0, 10.0), (40.0, 20.0), (60.0, 40.0), (80.0, 20.0))
    END = 150.0
    BOUNDS = (0.025, 0.05, 0.1, float("inf"))  # TPOT buckets: 15 and 20 ms, 30 ms, 50 ms

    def sample(self, t: float, loop: bool = False) -> EngineSample:
        """The counters at ``t``, integrated phase by phase: steps/s = 1 / step(B), tokens/s =
        B / step(B), requests/s = tokens/s / 100, each request's TPOT = step(B)."""
        gen = steps = req = tpot_sum = batch = 0.0
        cumulative = [0.0] * len(self.BOUNDS)
        ends = [start for start, _ in self.PHASES[1:]] + [self.END]
        for (start, b), stop in zip(self.PHASES, ends, strict=True):
            span = max(0.0, min(t, stop) - start)
            step = TRUE.base + TRUE.per_sequence * b
            steps += span / step
            gen += span * b / step
            req += span * b / step / 100.0
            tpot_sum += span * b / step / 100.0 * step
            for k, bound in enumerate(self.BOUNDS):  # each request's TPOT, in its bucket
                cumulative[k] += span * b / step / 100.0 if step <= bound else 0.0
            batch = b if start <= t else batch
        # Open-loop arrivals: running moves around the batch, its peak differs from window to
        # window (amplitude 1, 2, 3 by window), its mean over each window is the batch exactly.
        i = round(t / 0.25)
        running = batch + (0 if loop else (1 + (i // 8) % 3) * (0, 1, 0, -1)[i % 4])
        tpot = Histogram(self.BOUNDS, tuple(cumulative), tpot_sum, req)
        return EngineSample(
            t, model_name="m", model_names=("m",), running=running, waiting=0.0,
            kv_usage=0.01 * batch, generation_tokens=gen, prompt_tokens=2.0 * gen,
            requests_finished=req, steps=steps,
            tpot=tpot, process_start_time=1.0,
        )  # fmt: skip

    def fed(self, loop: bool = False) -> Pipeline:
        p = Pipeline(horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=64.0)
        for i in range(int(self.END / 0.25) + 1):
            p.add_tick(Tick(engine=self.sample(i * 0.25, loop), gpu=None))
        return p

    def test_twenty_clients_in_a_loop(self) -> None:
        """The same engine, its last horizon held at 20 running by 20 clients in a loop: no
        arrival rate to scale, so the answer is the 64 running the cap allows."""
        c = self.fed(loop=True).snapshot.capacity
        assert c.withheld == "closed_loop" and c.requests_per_second is None
        assert c.concurrency == pytest.approx(64.0, rel=1e-6)

    def test_the_report_and_the_page_say_it(self) -> None:
        snap = self.fed().snapshot
        text = report.render(snap, 64.0)
        line = next(x for x in text.splitlines() if x.startswith("Capacity"))
        # The synthetic points lie on the line: every block leave-out agrees, the interval is 0.
        assert line.startswith(
            "Capacity   8.65 req/s (90%: 8.65-8.65) before running requests reach "
            "--max-num-seqs (R5's fix); takes +1.98 req/s more"
        )
        assert "64 running at capacity (fit on 46 windows, batch up to 40.0)" in line
        ctx = status_page.PageContext("t", "x")
        page = status_page.render(snap, SETTINGS, ctx, 200.0).decode()
        section = page[page.index("<h2>Capacity</h2>") :].split("</section>")[0]
        assert "--max-num-seqs (R5&#x27;s fix)" in section
        shown = re.search(r'data-metric="vllm_profile_capacity_requests_per_second" '
                          r'data-value="([^"]+)"', section)  # fmt: skip
        assert shown is not None and float(shown.group(1)) == pytest.approx(64 / 7.4)
        withheld = replace(snap, capacity=Capacity("overloaded"))
        text = report.render(withheld, 64.0)
        assert "Capacity   not estimated: requests wait for the scheduler" in text
        page = status_page.render(withheld, SETTINGS, ctx, 200.0).decode()
        assert "Not estimated: requests wait for the scheduler" in page
        assert "<code>overloaded</code>" in page

    def test_an_answer_by_hand(self) -> None:
        """No objective: the cap binds. 64 seqs: step 74 ms, 64 / (100 x 0.074) = 8.6486 req/s;
        KV full at 100: 100 / (100 x 0.110) = 9.0909 req/s. Load at batch 20: 20 / (100 x 0.030)
        = 6.6667 req/s, headroom 1.9820. The fit stands on 10 windows at 5, 10 and 40 each and
        the latest 16 of the 45 at 20."""
        p = Pipeline(horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=64.0)
        for i in range(int(self.END / 0.25) + 1):
            p.add_tick(Tick(engine=self.sample(i * 0.25), gpu=None))
        c = p.snapshot.capacity
        assert c.withheld is None, c
        assert c.limit == "max_num_seqs"
        assert c.requests_per_second == pytest.approx(64 / 7.4, rel=1e-6)
        assert c.bounds["kv_cache"] == pytest.approx(100 / 11, rel=1e-6)
        assert c.headroom == pytest.approx(64 / 7.4 - 20 / 3.0, rel=1e-6)
        assert c.concurrency == pytest.approx(64.0, rel=1e-6)
        assert c.points == 10 + 10 + 16 + 10 and c.batch_high == pytest.approx(40.0)
        families = {m.name: m for m in metric_families(p.snapshot, SETTINGS)}
        rps = families["vllm_profile_capacity_requests_per_second"].samples[0].value
        assert rps == pytest.approx(64 / 7.4, rel=1e-6)
        limit = {
            s.labels["limit"]: s.value for s in families["vllm_profile_capacity_limit"].samples
        }
        assert limit == {"max_num_seqs": 1.0, "kv_cache": 0.0}
        assert "vllm_profile_capacity_unavailable" not in families

    def objective(self, bounds: tuple[float, ...]) -> Capacity:
        self.BOUNDS = bounds
        p = Pipeline(horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=64.0,
                     roofline=RooflineSettings(slo=SloTargets(tpot=0.08)))  # fmt: skip
        for i in range(int(self.END / 0.25) + 1):
            p.add_tick(Tick(engine=self.sample(i * 0.25), gpu=None))
        return p.snapshot.capacity

    def test_an_objective_that_binds(self) -> None:
        """--slo-tpot 80 ms. The counters arrive evenly (dispersion under 1: counted as
        Poisson). 0.001 x^2 + 0.0018992 x - 0.070 = 0: x = 7.4707, B = 55.81, step 65.81 ms,
        55.81 / (100 x 0.06581) = 8.481 req/s, below the cap's 8.6486."""
        c = self.objective(self.BOUNDS)
        assert c.withheld is None and c.limit == "tpot"
        assert c.requests_per_second == pytest.approx(8.481, rel=1e-3)
        assert c.concurrency == pytest.approx(55.81, rel=1e-3)
        assert p99_by_hand(TRUE, c.concurrency or 0.0) == pytest.approx(0.080, rel=1e-9)
        assert c.dispersion is not None and c.dispersion < 1.0

    def test_the_buckets_do_not_matter(self) -> None:
        # vLLM's coarse first bucket (all TPOTs under 100 ms in one bucket): the p99 comes from
        # the batch's spread, not from the buckets, so the answer is the same.
        fine = self.objective(self.BOUNDS)
        coarse = self.objective((0.1, float("inf")))
        assert coarse.requests_per_second == pytest.approx(fine.requests_per_second, rel=1e-9)

    def test_a_restart_starts_the_fit_again(self) -> None:
        p = Pipeline(horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=64.0)
        for i in range(int(self.END / 0.25) + 1):
            p.add_tick(Tick(engine=self.sample(i * 0.25), gpu=None))
        assert p.snapshot.capacity.withheld is None
        t = self.END + 0.25
        p.add_tick(Tick(engine=replace(self.sample(self.END), observed_at=t,
                                       process_start_time=2.0), gpu=None))  # fmt: skip
        for i in range(1, 20):
            s = self.sample(self.END)
            p.add_tick(Tick(engine=replace(s, observed_at=t + i * 0.25, process_start_time=2.0),
                            gpu=None))  # fmt: skip
        c = p.snapshot.capacity
        assert p.snapshot.epoch == 1 and c.withheld == "config_changed" and c.points == 0
        families = {m.name: m for m in metric_families(p.snapshot, SETTINGS)}
        reason = families["vllm_profile_capacity_unavailable"].samples[0].labels["reason"]
        assert reason == "config_changed"
        assert "vllm_profile_capacity_requests_per_second" not in families


@pytest.mark.parametrize("limit", LIMITS)
def test_every_limit_is_told_in_words(limit: str) -> None:
    """The report and the status page name each limit in words, not by its label value."""
    answered = Capacity(None, 5.0, 4.0, 6.0, limit, {limit: 5.0}, headroom=1.0, concurrency=10.0,
                        load=4.0, points=40, batch_high=20.0)  # fmt: skip
    snap = replace(Pipeline(horizon_seconds=60.0, poll_interval=0.25).snapshot, capacity=answered)
    line = next(x for x in report.render(snap, 64.0).splitlines() if x.startswith("Capacity"))
    assert f"before {limit}" not in line and "5.00 req/s" in line
    assert limit in status_page.LIMIT_WORDS
