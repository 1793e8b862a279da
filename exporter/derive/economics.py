"""Energy and money per token (docs/design.md#energy-and-money), on two bases.

*Active* figures are computed over the horizon's active windows: the marginal cost of
a token while serving. *Wall-clock* figures count every observed second, busy or idle, because a
GPU is paid for by the hour: a server busy 10% of the time has an active $/1M ten times below what
its tokens really cost.

>>> e = compute(actual_tps=1000.0, power_watts=700.0, cost_per_hour=3.5, efficiency=0.25)
>>> e.joules_per_token                                        # 700 W / 1000 tok/s
0.7
>>> round(e.cost_per_million_tokens, 4), e.recoverable_per_hour  # 3.5/3.6e6 × 1e6, 3.5 × 0.75
(0.9722, 2.625)

Busy 30 s of 120 s observed, 3,000 tokens in those 120 s: duty 0.25; the 120 s cost
3.6 $/h × 120/3600 h = 0.12 $, so 40 $ per 1M tokens; 3.6 × (1 − 0.25 × 0.5) = 3.15 $/h
recoverable.

>>> w = compute(actual_tps=100.0, power_watts=None, cost_per_hour=3.6, efficiency=0.5,
...             observed_seconds=120.0, active_seconds=30.0, observed_tokens=3000.0,
...             observed_token_seconds=120.0)
>>> w.duty_cycle, round(w.wall_cost_per_million_tokens, 6), w.wall_recoverable_per_hour
(0.25, 40.0, 3.15)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Economics:
    """Per-server economics of one horizon; None where an input is missing."""

    joules_per_token: float | None = None  # active windows
    joules_source: str | None = None  # "energy_counter" or "power"
    cost_per_hour: float | None = None
    cost_per_million_tokens: float | None = None  # active basis
    recoverable_per_hour: float | None = None  # active basis: cost × (1 − efficiency)
    duty_cycle: float | None = None  # active seconds / observed seconds
    wall_cost_per_million_tokens: float | None = None
    wall_recoverable_per_hour: float | None = None  # cost × (1 − duty × efficiency)


def compute(
    *,
    actual_tps: float | None,
    power_watts: float | None,
    cost_per_hour: float | None,
    efficiency: float | None,
    energy_joules: float | None = None,
    energy_tokens: float | None = None,
    observed_seconds: float = 0.0,
    active_seconds: float = 0.0,
    observed_tokens: float | None = None,
    observed_token_seconds: float = 0.0,
) -> Economics:
    """``power_watts`` is summed over the server's GPUs; ``cost_per_hour`` is per server.

    Where the GPUs' energy counters cover the same windows, joules per token is
    ``energy_joules / energy_tokens`` (exact) instead of mean power / throughput.
    """
    tps = actual_tps if actual_tps is not None and actual_tps > 0 else None
    jpt = source = None
    if energy_joules is not None and energy_tokens and energy_joules > 0:
        jpt, source = energy_joules / energy_tokens, "energy_counter"
    elif tps is not None and power_watts is not None and power_watts > 0:
        jpt, source = power_watts / tps, "power"
    per_million = recoverable = wall_per_million = wall_recoverable = None
    if cost_per_hour is not None and tps is not None:
        per_million = cost_per_hour / (tps * 3600.0) * 1e6
    if cost_per_hour is not None and efficiency is not None:
        recoverable = cost_per_hour * (1.0 - efficiency)
    duty = active_seconds / observed_seconds if observed_seconds > 0 else None
    if cost_per_hour is not None and observed_tokens and observed_token_seconds > 0:
        wall_per_million = cost_per_hour * observed_token_seconds / 3600.0 / observed_tokens * 1e6
    if cost_per_hour is not None and duty is not None:
        if duty == 0:
            wall_recoverable = cost_per_hour  # idle: no efficiency, but the whole cost
        elif efficiency is not None:
            wall_recoverable = cost_per_hour * (1.0 - duty * efficiency)
    return Economics(jpt, source, cost_per_hour, per_million, recoverable, duty,
                     wall_per_million, wall_recoverable)  # fmt: skip
