"""The poll schedule's own health (live polling only; absent in replay)."""

from __future__ import annotations

from exporter.export.families.base import Family
from exporter.loop import LoopStats

FAMILIES: tuple[Family[LoopStats], ...] = (
    Family("poll_skipped", "counter",
           "Scheduled polls skipped because the previous poll overran its slot (never queued).",
           (), lambda st: [((), float(st.skipped))]),
    Family("poll_lateness_p99_seconds", "gauge",
           "How late polls started against their schedule, 99th percentile over the last 1024 "
           "polls.", (), lambda st: [((), st.lateness_quantile(0.99))]),
    Family("poll_lateness_max_seconds", "gauge",
           "How late the latest of the last 1024 polls started against its schedule.", (),
           lambda st: [((), st.lateness_quantile(1.0))]),
)  # fmt: skip
