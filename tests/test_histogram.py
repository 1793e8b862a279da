"""The spread of observations read from a histogram's buckets (capacity's service variability),
worked by hand."""

from __future__ import annotations

import math

import pytest

from exporter.derive.histogram import HistDelta, squared_cv

INF = math.inf
# vLLM's request_generation_tokens bounds (1-2-5 steps)
BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, INF)


def hist(counts: dict[float, float], total: float) -> HistDelta:
    """Observations per bucket (by upper bound) and their exact sum."""
    cum, run = [], 0.0
    for b in BOUNDS:
        run += counts.get(b, 0.0)
        cum.append(run)
    return HistDelta(BOUNDS, tuple(cum), total, run)


def test_one_length_reads_no_spread() -> None:
    # 10 requests of 384 tokens, all in (200, 500]: E[X^2] read as (200^2 + 200 x 500 +
    # 500^2) / 3 = 130,000 < 384^2 = 147,456: no spread (0, never negative).
    assert squared_cv(hist({500.0: 10}, 3840.0)) == 0.0


def test_two_lengths_by_hand() -> None:
    # 5 requests of 40 tokens and 5 of 400: mean 220. Read: 5 x (20^2 + 20 x 50 + 50^2) / 3
    # + 5 x 130,000 = 5 x 1,300 + 650,000 = 656,500; / 10 = 65,650; / 220^2 - 1 = 0.35640.
    # (Exactly they are 0.6694: the buckets blur the spread.)
    assert squared_cv(hist({50.0: 5, 500.0: 5}, 2200.0)) == pytest.approx(0.356405, rel=1e-5)


def test_unknown_spread_is_none() -> None:
    assert squared_cv(hist({INF: 1, 500.0: 9}, 5000.0)) is None  # one above the last bound
    assert squared_cv(hist({}, 0.0)) is None  # nothing observed
