"""Energy and money per token (SPEC §8), over the horizon's active windows.

>>> e = compute(actual_tps=1000.0, power_watts=700.0, cost_per_hour=3.5, efficiency=0.25)
>>> e.tokens_per_joule, e.joules_per_token                    # 1000/700, 700/1000
(1.4285714285714286, 0.7)
>>> round(e.cost_per_million_tokens, 4), e.recoverable_per_hour  # 3.5/3.6e6 × 1e6, 3.5 × 0.75
(0.9722, 2.625)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Economics:
    tokens_per_joule: float | None = None
    joules_per_token: float | None = None
    joules_source: str | None = None  # "energy_counter" or "power"
    cost_per_hour: float | None = None
    cost_per_million_tokens: float | None = None
    recoverable_per_hour: float | None = None


def compute(
    *,
    actual_tps: float | None,
    power_watts: float | None,
    cost_per_hour: float | None,
    efficiency: float | None,
    energy_joules: float | None = None,
    energy_tokens: float | None = None,
) -> Economics:
    """``power_watts`` is summed over the server's GPUs; ``cost_per_hour`` is per server.

    Where the GPUs' energy counters cover the same windows, joules per token is
    ``energy_joules / energy_tokens`` (exact) instead of mean power / throughput.
    """
    tps = actual_tps if actual_tps is not None and actual_tps > 0 else None
    jpt = tpj = None
    source = None
    if energy_joules is not None and energy_tokens and energy_joules > 0:
        jpt, tpj, source = (
            energy_joules / energy_tokens,
            energy_tokens / energy_joules,
            "energy_counter",
        )
    elif tps is not None and power_watts is not None and power_watts > 0:
        jpt, tpj, source = power_watts / tps, tps / power_watts, "power"
    per_million = None
    if cost_per_hour is not None and tps is not None:
        per_million = cost_per_hour / (tps * 3600.0) * 1e6
    recoverable = None
    if cost_per_hour is not None and efficiency is not None:
        recoverable = cost_per_hour * (1.0 - efficiency)
    return Economics(tpj, jpt, source, cost_per_hour, per_million, recoverable)
