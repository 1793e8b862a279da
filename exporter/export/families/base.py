"""What every family table is made of: :class:`Family`, the view it reads, and the row builders.

A value that could not be computed is not exported at all — never 0, never NaN. Each family says
which sources its figures need fresh (``needs``): engine-derived series are exported only while
the latest window holds the engine's data, GPU series only while it holds GPU data, so a dead
source makes its figures vanish instead of going stale. :func:`render` applies that gate, once,
for every family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.diagnosis import RuleStatus
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.pipeline import Snapshot
from exporter.ratelog import rate_limited

NS = "vllm_profile"
log = rate_limited(__name__)


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Static facts the collector needs besides the snapshot."""

    version: str
    horizon_seconds: float
    poll_interval: float
    max_num_seqs: float | None = None
    demo: bool = False
    declared: str = ""  # demo: the settings it declares rather than records, comma-separated
    compute_peak: str = "tensor"
    engine: str = "vllm"  # the engine's kind (exporter/engines/)


@dataclass(frozen=True, slots=True)
class View:
    """What a family's rows are computed from: one snapshot and the settings in force."""

    snap: Snapshot
    settings: ExportSettings


S = TypeVar("S")
Row = tuple[Sequence[str], float | None]
Rows = Iterable[Row]
Source = Literal["engine", "gpu"]
ENGINE: tuple[Source, ...] = ("engine",)  # fresh while the latest window holds engine data
GPU: tuple[Source, ...] = ("gpu",)  # ... GPU data
ENGINE_GPU: tuple[Source, ...] = ("engine", "gpu")


@dataclass(frozen=True, slots=True)
class Family(Generic[S]):
    """One exported family. ``name`` is without the namespace (and, for a counter, without
    ``_total``); ``help`` may say ``{H}`` for the horizon; ``rows`` gives (label values, value)
    pairs, and a None value is left out (the family too when no row is left). ``needs``: the
    sources whose data must be fresh for it to be exported at all."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]
    rows: Callable[[S], Rows]
    needs: tuple[Source, ...] = ()

    @property
    def exposed_name(self) -> str:
        return f"{NS}_{self.name}" + ("_total" if self.type == "counter" else "")


def _exportable(name: str, value: float | None) -> bool:
    """Present and finite. Inputs are checked where they enter, so a NaN or an infinity here
    is a bug upstream: it is left out (never exported) and said once a minute."""
    if value is None:
        return False
    if math.isfinite(value):
        return True
    log.warning("not exporting %s: the computed value is %s", name, value)
    return False


def fresh(v: View) -> frozenset[Source]:
    """The sources whose data the latest window holds."""
    a = v.snap.agg
    found: list[Source] = []
    if a.engine_fresh:
        found.append("engine")
    if a.gpu_fresh:
        found.append("gpu")
    return frozenset(found)


def render(
    table: Sequence[Family[S]],
    source: S,
    horizon_seconds: float,
    fresh_sources: frozenset[Source] = frozenset(),
) -> list[Metric]:
    """The families of ``table`` for one scrape: those whose needed sources are all in
    ``fresh_sources``."""
    out: list[Metric] = []
    horizon = f"{horizon_seconds:g}s"
    for f in table:
        if not fresh_sources.issuperset(f.needs):
            continue
        rows = [(lv, v) for lv, v in f.rows(source) if _exportable(f.name, v)]
        if not rows:
            continue
        cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
        m = cls(f"{NS}_{f.name}", f.help.replace("{H}", horizon), labels=list(f.labels))
        for lv, v in rows:
            assert v is not None
            m.add_metric(list(lv), v)
        out.append(m)
    return out


# --- row builders ------------------------------------------------------------------------------

Get = Callable[[View], float | None]


def _one(get: Get) -> Callable[[View], Rows]:
    return lambda v: [((), get(v))]


def _serving(get: Callable[[Aggregate], float | None]) -> Callable[[View], Rows]:
    """A figure of the horizon's aggregate."""
    return lambda v: [((), get(v.snap.agg))]


def _assessed(v: View) -> Assessment | None:
    return v.snap.assessment


def _estimate(get: Callable[[Assessment], float | None]) -> Callable[[View], Rows]:
    """Roofline and economics: only once an assessment exists."""

    def rows(v: View) -> Rows:
        a = _assessed(v)
        return [] if a is None else [((), get(a))]

    return rows


def _priced(get: Callable[[Assessment], float | None]) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        a = _assessed(v)
        return [] if a is None or a.price_source is None else [((a.price_source,), get(a))]

    return rows


def _per_gpu(get: Callable[[GpuAggregate], float | None]) -> Callable[[View], Rows]:
    """One series per GPU."""

    def rows(v: View) -> Rows:
        return [((str(g.index), g.uuid), get(g)) for g in v.snap.agg.gpus]

    return rows


def _rules(get: Callable[[RuleStatus], float | None], evaluated_only: bool = False
           ) -> Callable[[View], Rows]:  # fmt: skip
    def rows(v: View) -> Rows:
        d = v.snap.diagnosis
        if d is None:
            return []
        return [
            ((s.rule, s.name, s.variant), get(s))
            for s in d.rules
            if not evaluated_only or (s.latest is not None and s.latest.skipped is None)
        ]

    return rows


ESTIMATE = (
    "Estimate from the catalog (peak FLOP/s and bandwidth of the GPU, parameter count of the "
    "model), over the active windows of the last {H}. "
)
ACTIVE = (
    f"active windows (running requests and load: KV above {T.ACTIVE_KV_PCT:g}% or GPU "
    f"utilization above {T.ACTIVE_GPU_UTIL_PCT:g}%)"
)
