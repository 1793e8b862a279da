"""How long an engine step takes at a given batch: a robust fit over a long memory of windows.

Each active window gives one point from counters alone (docs/capacity.md): the mean decode batch
(generated tokens per engine step), the uncached prompt tokens per step, and the window's mean
time per output token, which is the step time its requests saw. The fit is

    step seconds = a + b × batch + c × prefill tokens per step

by iteratively reweighted least squares with Huber weights, then Tukey's bisquare at that fit's
scale, so a window disturbed by something else (a pause, a burst of long prompts) pulls on it
little, and one far off not at all. Points are kept in bins of a quarter
octave of batch, each holding its latest :data:`PER_BIN`, so hours at one operating point cannot
push out the few windows seen at another; the whole memory is dropped at a configuration change.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from exporter.derive.window import Window

PER_BIN = 16  # points kept per quarter octave of batch
BATCH_RANGE = (0.25, 4096.0)  # batches outside are not kept (a body's lie cannot add bins)
HUBER_K = 1.345  # residuals beyond k robust standard deviations are weighed down
BISQUARE_C = 4.685  # ... and beyond c, in the bisquare pass that follows, not counted
ITERATIONS = 6


@dataclass(frozen=True, slots=True)
class StepPoint:
    """One active window as the step-time fit sees it."""

    batch: float  # generated tokens per engine step: the mean decode batch
    prefill: float  # uncached prompt tokens per engine step
    step_seconds: float  # the window's mean time per output token
    at: float  # the window's end


def point(w: Window) -> StepPoint | None:
    """The window's point; None when a counter it needs is missing, reset or did not move."""
    steps, gen, uncached = w.d_steps, w.d_step_generated, w.d_step_prefilled
    tpot = w.tpot
    if steps is None or gen is None or uncached is None or tpot is None or steps <= 0 or gen <= 0:
        return None
    if tpot.count <= 0 or w.tpot_mean is None or w.tpot_mean <= 0:
        return None
    batch = gen / steps
    if not BATCH_RANGE[0] <= batch <= BATCH_RANGE[1]:
        return None
    return StepPoint(batch, max(0.0, uncached) / steps, w.tpot_mean, w.end)


class Reservoir:
    """The fit's memory: the latest :data:`PER_BIN` points of each quarter octave of batch."""

    def __init__(self) -> None:
        self._bins: dict[int, deque[StepPoint]] = {}
        self.added = 0  # points added since the last clear

    def add(self, p: StepPoint) -> None:
        key = math.floor(4 * math.log2(p.batch) + 1e-9)  # 16.0 read as 15.999... is still 16
        self._bins.setdefault(key, deque(maxlen=PER_BIN)).append(p)
        self.added += 1

    def clear(self) -> None:
        self._bins.clear()
        self.added = 0

    def __iter__(self) -> Iterator[StepPoint]:
        return (p for b in self._bins.values() for p in b)

    def __len__(self) -> int:
        return sum(len(b) for b in self._bins.values())

    def bins(self) -> int:
        return len(self._bins)


@dataclass(frozen=True, slots=True)
class StepModel:
    """``step seconds = base + per_sequence × batch + per_prefill_token × prefill``."""

    base: float
    per_sequence: float
    per_prefill_token: float

    def step_seconds(self, batch: float, prefill_per_generated: float) -> float:
        """At ``batch``, with uncached prompt tokens arriving at ``prefill_per_generated`` per
        generated token (so ``batch × prefill_per_generated`` per step)."""
        return self.base + self.slope(prefill_per_generated) * batch

    def at(self, p: StepPoint) -> float:
        """The fitted step time at a point's own batch and prefill."""
        return self.base + self.per_sequence * p.batch + self.per_prefill_token * p.prefill

    def slope(self, prefill_per_generated: float) -> float:
        return self.per_sequence + self.per_prefill_token * prefill_per_generated


@dataclass(frozen=True, slots=True)
class StepFit:
    """The fit over all points, and the same fit leaving out each block of points in turn (time
    ordered, contiguous: windows next to each other are alike) for a block jackknife."""

    model: StepModel
    points: int
    batch_low: float
    batch_high: float
    leave_outs: tuple[StepModel, ...]


Normal = tuple[list[list[float]], list[float]]  # (XᵀWX, XᵀWy)


def _normal(points: Sequence[StepPoint], weights: Sequence[float], cols: int) -> Normal:
    m = [[0.0] * cols for _ in range(cols)]
    v = [0.0] * cols
    for p, w in zip(points, weights, strict=True):
        x = (1.0, p.batch, p.prefill)[:cols]
        for i in range(cols):
            wx = w * x[i]
            v[i] += wx * p.step_seconds
            for j in range(cols):
                m[i][j] += wx * x[j]
    return m, v


def _solve(m: list[list[float]], v: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when (nearly) singular."""
    n = len(v)
    a = [row[:] + [v[i]] for i, row in enumerate(m)]
    scale = max(abs(x) for row in m for x in row) or 1.0
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) <= 1e-12 * scale:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(col + 1, n):
            f = a[r][col] / a[col][col]
            for k in range(col, n + 1):
                a[r][k] -= f * a[col][k]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][k] * out[k] for k in range(r + 1, n))) / a[r][r]
    return out


def _model(coef: Sequence[float]) -> StepModel:
    return StepModel(coef[0], coef[1], coef[2] if len(coef) > 2 else 0.0)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _huber(points: Sequence[StepPoint], cols: int) -> tuple[list[float], list[float]] | None:
    """(coefficients, final weights) of the Huber fit; None when the points cannot fix them."""
    weights = [1.0] * len(points)
    coef: list[float] | None = None
    for _ in range(ITERATIONS):
        coef = _solve(*_normal(points, weights, cols))
        if coef is None:
            return None
        model = _model(coef)
        res = [p.step_seconds - model.at(p) for p in points]
        spread = 1.4826 * _median([abs(r) for r in res])
        if spread <= 0:
            break  # the points lie on the fit: nothing to weigh down
        k = HUBER_K * spread
        weights = [1.0 if abs(r) <= k else k / abs(r) for r in res]
    assert coef is not None  # ITERATIONS >= 1
    return coef, weights


def _bisquare(
    points: Sequence[StepPoint], cols: int, coef: list[float]
) -> tuple[list[float], list[float]] | None:
    """From the Huber fit, Tukey's bisquare at the Huber residuals' scale (held fixed): a
    window beyond :data:`BISQUARE_C` robust standard deviations gets no weight at all. Huber
    only weighs such windows down, and a stalled engine's windows (a pause: the step time
    doubles while the queue lifts the batch to the cap) sit where the slope is decided. None
    when too few windows keep a weight to fix the coefficients."""
    model = _model(coef)
    spread = 1.4826 * _median([abs(p.step_seconds - model.at(p)) for p in points])
    if spread <= 0:
        return None
    c = BISQUARE_C * spread
    weights: list[float] = []
    for _ in range(ITERATIONS):
        res = [p.step_seconds - model.at(p) for p in points]
        weights = [(1 - (r / c) ** 2) ** 2 if abs(r) < c else 0.0 for r in res]
        got = _solve(*_normal(points, weights, cols))
        if got is None:
            return None
        coef, model = got, _model(got)
    return coef, weights


def fit(points: Sequence[StepPoint], blocks: int = 10) -> StepFit | None:
    """The step-time fit and its block leave-outs; None with fewer than 3 points or when even
    ``a + b × batch`` is undetermined (a single batch). The prefill term is dropped when the
    prefill per step does not vary independently of the batch."""
    if len(points) < 3:
        return None
    ordered = sorted(points, key=lambda p: p.at)
    for cols in (3, 2):
        got = _huber(ordered, cols)
        if got is not None:
            break
    else:
        return None
    coef, weights = _bisquare(ordered, cols, got[0]) or got
    size = math.ceil(len(ordered) / blocks)
    parts = [range(i, min(i + size, len(ordered))) for i in range(0, len(ordered), size)]
    full = _normal(ordered, weights, cols)
    leave_outs = []
    for part in parts if len(parts) > 1 else ():
        m, v = _normal([ordered[i] for i in part], [weights[i] for i in part], cols)
        rest = _solve([[full[0][i][j] - m[i][j] for j in range(cols)] for i in range(cols)],
                      [full[1][i] - v[i] for i in range(cols)])  # fmt: skip
        if rest is not None:
            leave_outs.append(_model(rest))
    batches = [p.batch for p in ordered]
    return StepFit(_model(coef), len(ordered), min(batches), max(batches), tuple(leave_outs))


REFIT_EVERY = 5  # new points between fits: the fit moves slowly, and costs O(points)


class StepMemory:
    """The reservoir of the current configuration epoch and its fit, refitted every
    :data:`REFIT_EVERY` points (every 10 s of active windows)."""

    def __init__(self) -> None:
        self.reservoir = Reservoir()
        self._fit: StepFit | None = None
        self._fitted_at = 0

    def add(self, w: Window) -> None:
        """An active window closed."""
        if (p := point(w)) is not None:
            self.reservoir.add(p)

    def clear(self) -> None:
        """A configuration change: what was learnt describes another server."""
        self.reservoir.clear()
        self._fit, self._fitted_at = None, 0

    def fit(self) -> StepFit | None:
        added = self.reservoir.added
        if added != self._fitted_at and (added - self._fitted_at >= REFIT_EVERY
                                         or self._fit is None):  # fmt: skip
            self._fit, self._fitted_at = fit(list(self.reservoir)), added
        return self._fit
