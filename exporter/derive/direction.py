"""Direction after a configuration change: better, worse or plateau (docs/rules.md).

Efficiency is divided by the mean number of running requests before comparing, which cancels a
change in traffic: what remains is hardware utilization per request. Throughput is the fallback
when efficiency is unavailable on either side; a TTFT p99 regression over 20% vetoes "better" on
the efficiency path only.

>>> before = Summary(efficiency=0.20, running=10.0, generation_tps=1000.0, ttft_p99=0.5)
>>> after = Summary(efficiency=0.30, running=10.0, generation_tps=1500.0, ttft_p99=0.55)
>>> d = compare(before, after)       # 100 × (0.30/10 − 0.20/10) = +1.0 pp: not > +2.0
>>> d.direction, round(d.efficiency_delta_pp, 3)
('plateau', 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.horizon import Aggregate


@dataclass(frozen=True, slots=True)
class Summary:
    """What one side of a comparison looked like (one full horizon)."""

    efficiency: float | None = None  # ratio 0-1
    running: float | None = None  # time-weighted mean over active windows
    generation_tps: float | None = None
    ttft_p99: float | None = None
    tpot_p99: float | None = None
    cost_per_million_tokens: float | None = None

    @property
    def efficiency_pp_per_request(self) -> float | None:
        if self.efficiency is None or not self.running:
            return None
        return 100.0 * self.efficiency / self.running


@dataclass(frozen=True, slots=True)
class Direction:
    direction: str  # "better", "worse", "plateau"
    signal: str  # "efficiency", "throughput", or "none" (nothing to compare)
    before: Summary
    after: Summary
    efficiency_delta_pp: float | None = None
    throughput_delta_pct: float | None = None
    ttft_p99_delta_pct: float | None = None
    vetoed: bool = False


def summarize(agg: Aggregate, assessment: Assessment | None) -> Summary:
    """One side of a comparison, from a horizon aggregate and its roofline assessment."""
    return Summary(
        efficiency=assessment.roofline.efficiency if assessment else None,
        running=agg.running_active,
        generation_tps=agg.generation_tps,
        ttft_p99=agg.ttft_p99,
        tpot_p99=agg.tpot_p99,
        cost_per_million_tokens=assessment.economics.cost_per_million_tokens
        if assessment
        else None,
    )


def _pct_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before <= 0:
        return None
    return 100.0 * (after - before) / before


def compare(before: Summary, after: Summary) -> Direction:
    eff_b, eff_a = before.efficiency_pp_per_request, after.efficiency_pp_per_request
    tps_delta = _pct_change(before.generation_tps, after.generation_tps)
    ttft_delta = _pct_change(before.ttft_p99, after.ttft_p99)
    if eff_b is not None and eff_a is not None:
        delta = eff_a - eff_b
        if delta > T.BETTER_EFFICIENCY_PP:
            vetoed = ttft_delta is not None and ttft_delta > T.LATENCY_VETO_TTFT_P99_PCT
            verdict = "plateau" if vetoed else "better"
        else:
            vetoed = False
            verdict = "worse" if delta < T.WORSE_EFFICIENCY_PP else "plateau"
        return Direction(verdict, "efficiency", before, after, delta, tps_delta, ttft_delta, vetoed)
    if tps_delta is None:
        return Direction("plateau", "none", before, after, None, None, ttft_delta)
    if tps_delta > T.BETTER_THROUGHPUT_PCT:
        verdict = "better"
    elif tps_delta < T.WORSE_THROUGHPUT_PCT:
        verdict = "worse"
    else:
        verdict = "plateau"
    return Direction(verdict, "throughput", before, after, None, tps_delta, ttft_delta)
