"""Histogram deltas and quantiles with Prometheus ``histogram_quantile`` semantics.

A window's histogram is the per-bucket difference between its last and first poll; windows are
merged by adding those vectors when their bounds match. p99s are never averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.samples import Histogram


@dataclass(frozen=True, slots=True)
class HistDelta:
    """Observations made between two polls: cumulative per-bucket counts, sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float


def delta(first: Histogram, last: Histogram) -> HistDelta | None:
    """``last − first``; None when the bounds changed or any series went backwards (a reset).

    >>> h = lambda s, c: Histogram((1.0, math.inf), (c, c), s, c)
    >>> delta(h(5.0, 2), h(9.0, 3)).sum, delta(h(600.0, 2), h(8.0, 3))
    (4.0, None)
    """
    if first.bounds != last.bounds:
        return None
    cum = tuple(b - a for a, b in zip(first.cumulative, last.cumulative, strict=True))
    d_count = last.count - first.count
    d_sum = last.sum - first.sum
    if d_count < 0 or d_sum < 0 or any(c < 0 for c in cum):
        return None  # a reset: a series went backwards (the sum too: observations are ≥ 0)
    if d_count == 0 and d_sum != 0:
        return None  # the sum moved without an observation: not one process's histogram
    return HistDelta(last.bounds, cum, d_sum, d_count)


def quantile(q: float, bounds: tuple[float, ...], cumulative: tuple[float, ...]) -> float | None:
    """Linear interpolation inside the bucket holding rank ``q × total``.

    As Prometheus does: the first bucket starts at 0 (when its bound is positive), and a rank
    that falls in the +Inf bucket returns the last finite bound. No observations → None.

    >>> quantile(0.5, (1.0, 2.0, math.inf), (0.0, 10.0, 10.0))   # rank 5 in (1, 2]: 1 + 1×5/10
    1.5
    >>> quantile(0.99, (1.0, 2.0, math.inf), (0.0, 0.0, 4.0))    # all above 2 → last finite bound
    2.0
    """
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return None
    total = cumulative[-1]
    if not total > 0:
        return None
    rank = q * total
    b = next((i for i, c in enumerate(cumulative[:-1]) if c >= rank), len(bounds) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0
    count = cumulative[b]
    if b > 0:
        start = bounds[b - 1]
        count -= cumulative[b - 1]
        rank -= cumulative[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def merge_latest(deltas: Iterable[HistDelta]) -> HistDelta | None:
    """Sum the deltas that share the bounds of the last one (bounds change on reconfiguration)."""
    items = list(deltas)
    if not items:
        return None
    bounds = items[-1].bounds
    same = [d for d in items if d.bounds == bounds]
    cum = [0.0] * len(bounds)
    for d in same:
        for i, c in enumerate(d.cumulative):
            cum[i] += c
    return HistDelta(bounds, tuple(cum), sum(d.sum for d in same), sum(d.count for d in same))


def count_at_most(limit: float, bounds: tuple[float, ...], cumulative: tuple[float, ...]) -> float:
    """Observations at most ``limit``: exact at a bucket bound, else interpolated linearly inside
    the bucket holding ``limit`` (the first bucket starting at 0, as ``histogram_quantile``
    assumes). Observations in the +Inf bucket count as above any finite limit.

    The error is at most the observations of that one bucket: none when ``limit`` is a bound,
    and never more than the bucket's count however the observations spread inside it.

    >>> count_at_most(1.5, (1.0, 2.0, math.inf), (4.0, 14.0, 15.0))   # 4 + 10 × 0.5 / 1
    9.0
    >>> count_at_most(2.0, (1.0, 2.0, math.inf), (4.0, 14.0, 15.0)), \\
    ...     count_at_most(9.0, (1.0, 2.0, math.inf), (4.0, 14.0, 15.0))
    (14.0, 14.0)
    """
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if bound == math.inf:
            return prev_count
        if limit <= bound:
            if bound <= prev_bound:  # a first bound at or below 0 has no width to split
                return count if limit >= bound else prev_count
            share = max(0.0, limit - prev_bound) / (bound - prev_bound)
            return prev_count + (count - prev_count) * share
        prev_bound, prev_count = bound, count
    return prev_count


def squared_cv(h: HistDelta) -> float | None:
    """The squared coefficient of variation (variance ÷ mean²) of the observations: the mean
    exact (sum ÷ count), the second moment from the buckets with each bucket's observations
    spread evenly over it (the first from 0). None without observations, with any in the +Inf
    bucket (their spread is unknown), or with a mean of 0.

    Coarse buckets blur it: observations bunched at a bucket's top read less spread than they
    are, bunched at its bottom more (all at 110 in (100, 200] read 0.93, all at 190 read 0).

    >>> round(squared_cv(HistDelta((10.0, 20.0, math.inf), (5.0, 10.0, 10.0), 100.0, 10.0)), 6)
    0.333333
    """
    if h.count <= 0 or h.sum <= 0 or len(h.bounds) < 2 or h.bounds[-1] != math.inf:
        return None
    if h.cumulative[-1] - h.cumulative[-2] > 0:
        return None
    second, low, below = 0.0, 0.0, 0.0
    for bound, cum in zip(h.bounds[:-1], h.cumulative[:-1], strict=True):
        n = cum - below
        second += n * (low * low + low * bound + bound * bound) / 3.0
        low, below = bound, cum
    mean = h.sum / h.count
    return max(0.0, second / h.count / (mean * mean) - 1.0)


def share_above(h: HistDelta, limit: float) -> float | None:
    """The share of the observations certainly above ``limit``: those in buckets that start at
    or above it (a bucket that holds ``limit`` may hold them on either side). None without
    observations.

    >>> share_above(HistDelta((0.01, 0.025, math.inf), (90.0, 98.0, 100.0), 1.0, 100.0), 0.008)
    0.1
    """
    if h.count <= 0:
        return None
    j = next((i for i, b in enumerate(h.bounds) if b >= limit), len(h.bounds) - 1)
    if math.isinf(h.bounds[j]):
        return 0.0  # only the +Inf bucket starts past ``limit``'s bucket: nothing is certain
    return (h.count - h.cumulative[j]) / h.count
