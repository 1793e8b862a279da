"""Latency objectives: how many requests met ``--slo-ttft`` and ``--slo-tpot``, and goodput.

vLLM exports latencies only as histograms, so a request's latency is known to its bucket. The
requests at most a target are counted exactly at a bucket bound and interpolated linearly inside
the bucket holding the target otherwise (:func:`~exporter.derive.histogram.count_at_most`): the
error is at most the requests of that one bucket, and none when the target is one of vLLM's
bounds (choose targets on bounds for exact counts). Requests beyond the last finite bound count
as missing any finite target.

TPOT is per request where vLLM exports ``request_time_per_output_token_seconds``; where it
exports only ``inter_token_latency_seconds`` the counts are of tokens, not requests.

Goodput, the tokens/s of requests meeting both objectives, cannot be read from two separate
histograms (they do not say which requests missed both). It is approximated from above:
generated tokens/s × the lower of the two attainments (exact when the requests missing one
objective include all those missing the other, and weighing requests as if they generated
equally many tokens).

>>> t = SloTargets(ttft=1.0)
>>> from exporter.derive.histogram import HistDelta
>>> w = Window(0.0, 2.0, 2.0, 9, 0, ttft=HistDelta((0.5, 1.0, float("inf")), (6.0, 9.0, 10.0),
...            4.0, 10.0))
>>> window_counts(w, t)
{'ttft': SloCount(good=9.0, total=10.0)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.derive.histogram import HistDelta, count_at_most
from exporter.derive.window import Window

KINDS = ("ttft", "tpot")


@dataclass(frozen=True, slots=True)
class SloTargets:
    """The objectives, seconds; None: not set."""

    ttft: float | None = None
    tpot: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, t) for k, t in (("ttft", self.ttft), ("tpot", self.tpot)) if t is not None]


@dataclass(frozen=True, slots=True)
class SloCount:
    good: float  # requests (or tokens, see above) at most the target
    total: float


@dataclass(frozen=True, slots=True)
class SloSummary:
    """The objectives over the horizon's evaluable windows."""

    targets: SloTargets
    attainment: Mapping[str, float]  # kind → good / total, where requests finished
    goodput_tps: float | None = None  # upper bound, see the module's docstring


def _hist(w: Window, kind: str) -> HistDelta | None:
    return w.ttft if kind == "ttft" else w.tpot


def window_counts(w: Window, targets: SloTargets) -> dict[str, SloCount]:
    """Per objective set: the window's requests and those meeting it (none: no histogram)."""
    out = {}
    for kind, target in targets.items():
        h = _hist(w, kind)
        if h is not None:
            total = h.cumulative[-1] if h.cumulative else 0.0
            out[kind] = SloCount(min(count_at_most(target, h.bounds, h.cumulative), total), total)
    return out


def summarize(
    windows: Sequence[Window], targets: SloTargets, generation_tps: float | None
) -> SloSummary | None:
    """Attainment over ``windows`` (the evaluable ones); goodput from the active throughput."""
    if not targets.items():
        return None
    good: dict[str, float] = {}
    total: dict[str, float] = {}
    for w in windows:
        for kind, c in window_counts(w, targets).items():
            good[kind] = good.get(kind, 0.0) + c.good
            total[kind] = total.get(kind, 0.0) + c.total
    attainment = {k: good[k] / total[k] for k in total if total[k] > 0}
    goodput = None
    if generation_tps is not None and attainment and len(attainment) == len(targets.items()):
        goodput = generation_tps * min(attainment.values())
    return SloSummary(targets, attainment, goodput)
