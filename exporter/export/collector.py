"""Snapshot → metric families for one scrape, from the tables in :mod:`exporter.export.families`.

Fresh families are built on every scrape from an immutable snapshot; nothing long-lived is
mutated. The health families change with every poll, the window-derived ones when a window
closes, so each can be rendered at its own pace (see :class:`SnapshotCollector`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.export.families import (
    ALL_FAMILIES,
    POLL_FAMILIES,
    SCHEDULE_FAMILIES,
    WINDOW_FAMILIES,
)
from exporter.export.families.base import NS, ExportSettings, Family, View, fresh, render
from exporter.loop import LoopStats
from exporter.pipeline import Snapshot

__all__ = [
    "ALL_FAMILIES",
    "ExportSettings",
    "ScheduleCollector",
    "SnapshotCollector",
    "metric_families",
    "schedule_families",
    "window_key",
]


def metric_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """All snapshot families for one scrape, from one immutable snapshot."""
    return poll_families(snap, settings) + window_families(snap, settings)


def poll_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families that change with every poll: the sources' health."""
    view = View(snap, settings)
    return render(POLL_FAMILIES, view, settings.horizon_seconds, fresh(view))


# The snapshot's fields only the health part reads; it is rendered at every poll.
PER_POLL_FIELDS = frozenset({"health", "ticks"})


def window_key(snap: Snapshot) -> tuple[object, ...]:
    """Everything :func:`window_families` may read from a snapshot: every field of the record
    but :data:`PER_POLL_FIELDS`, so a field added to :class:`Snapshot` is part of the key
    without anyone listing it (a field missed here would serve a stale body). The pipeline
    replaces these objects only when a window closes or the configuration changes, so an equal
    key means the same output."""
    return tuple(getattr(snap, f.name) for f in fields(snap) if f.name not in PER_POLL_FIELDS)


def window_families(snap: Snapshot, settings: ExportSettings) -> list[Metric]:
    """The families derived from windows: they change when a window closes (~2 s)."""
    view = View(snap, settings)
    return render(WINDOW_FAMILIES, view, settings.horizon_seconds, fresh(view))


def schedule_families(stats: LoopStats) -> list[Metric]:
    """The poll schedule's own health (live polling only; absent in replay)."""
    return render(SCHEDULE_FAMILIES, stats, 0.0)


def _described(table: Iterable[Family[View] | Family[LoopStats]]) -> Iterator[Metric]:
    for f in table:
        cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
        yield cls(f"{NS}_{f.name}", f.help, labels=list(f.labels))


class SnapshotCollector(Collector):
    """Reads whatever snapshot the loop published last; O(series), no locks, no I/O.

    ``part`` selects the families: all of them, only the sources' health (changes every poll),
    or only the window-derived ones — so each can be rendered at its own pace."""

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot],
        settings: ExportSettings | Callable[[], ExportSettings],
        loop_stats: Callable[[], LoopStats] | None = None,
        part: Literal["all", "poll", "window"] = "all",
    ) -> None:
        self._get = get_snapshot
        self._settings = settings if callable(settings) else (lambda: settings)
        self._loop_stats = loop_stats
        self._part = part

    def collect(self) -> Iterator[Metric]:
        snap = self._get()
        settings = self._settings()
        if self._part != "window":
            yield from poll_families(snap, settings)
        if self._part != "poll":
            yield from window_families(snap, settings)
        if self._loop_stats is not None and self._part == "all":
            yield from schedule_families(self._loop_stats())

    def describe(self) -> Iterator[Metric]:
        tables: list[Family[View] | Family[LoopStats]] = []
        if self._part != "window":
            tables += POLL_FAMILIES
        if self._part != "poll":
            tables += WINDOW_FAMILIES
        if self._loop_stats is not None and self._part == "all":
            tables += SCHEDULE_FAMILIES
        return _described(tables)


class ScheduleCollector(Collector):
    """The poll schedule's families alone (see :func:`schedule_families`)."""

    def __init__(self, loop_stats: Callable[[], LoopStats]) -> None:
        self._loop_stats = loop_stats

    def collect(self) -> Iterator[Metric]:
        yield from schedule_families(self._loop_stats())

    def describe(self) -> Iterator[Metric]:
        return _described(SCHEDULE_FAMILIES)
