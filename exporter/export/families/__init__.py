"""Every exported family, defined once, in tables by domain (as kube-state-metrics keeps a
store per object kind): one :class:`~exporter.export.families.base.Family` per family gives its
name, type, HELP, labels and how its rows come from a snapshot. Adding a family is adding one
entry to the table of its domain; the collector, ``describe()``, the docs test and the golden
``/metrics`` files read these tables, in this order.
"""

from __future__ import annotations

from exporter.export.families import (
    capacity,
    economics,
    exporter_info,
    gpus,
    health,
    roofline,
    rules,
    schedule,
    serving,
    slo,
)
from exporter.export.families.base import Family, View
from exporter.loop import LoopStats

POLL_FAMILIES: tuple[Family[View], ...] = health.FAMILIES
WINDOW_FAMILIES: tuple[Family[View], ...] = (
    exporter_info.FAMILIES
    + serving.FAMILIES
    + gpus.FAMILIES
    + roofline.FAMILIES
    + economics.FAMILIES
    + slo.FAMILIES
    + rules.FAMILIES
    + capacity.FAMILIES
)
SCHEDULE_FAMILIES: tuple[Family[LoopStats], ...] = schedule.FAMILIES
ALL_FAMILIES: tuple[Family[View] | Family[LoopStats], ...] = (
    POLL_FAMILIES + WINDOW_FAMILIES + SCHEDULE_FAMILIES
)
