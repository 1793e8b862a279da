"""The sources' health: the families that change with every poll."""

from __future__ import annotations

from collections.abc import Callable

from exporter.engines import error_reasons
from exporter.export.families.base import Family, Rows, View


def _health(get: Callable[[View, str], float | None]) -> Callable[[View], Rows]:
    return lambda v: [((s,), get(v, s)) for s in v.snap.health]


def _errors(v: View) -> Rows:
    known = error_reasons()
    for source, h in v.snap.health.items():
        reasons = dict.fromkeys(known.get(source, ()), 0)
        reasons.update(h.errors)
        for reason, n in sorted(reasons.items()):
            yield (source, reason), float(n)


FAMILIES: tuple[Family[View], ...] = (
    Family("up", "gauge", "1 if the source answered its last poll, else 0.", ("source",),
           _health(lambda v, s: 1.0 if v.snap.health[s].up else 0.0)),
    Family("last_poll_timestamp_seconds", "gauge",
           "Unix time of the source's last successful poll.", ("source",),
           _health(lambda v, s: v.snap.health[s].last_success)),
    Family("poll_duration_seconds", "gauge", "How long the source's last poll took.",
           ("source",), _health(lambda v, s: v.snap.health[s].last_duration)),
    Family("poll_interval_seconds", "gauge",
           "Seconds that passed between polls of the source: the mean of the last 8 gaps, as "
           "they happened (a target slower than the schedule is polled less often).",
           ("source",), _health(lambda v, s: v.snap.health[s].measured_interval)),
    Family("poll_schedule_seconds", "gauge",
           "The cadence planned: seconds between polls of the source (vLLM: --poll-interval "
           "while anything could spike, --idle-poll-interval after 30 s idle, "
           "--calm-poll-interval otherwise; dcgm: as often as it refreshes).", ("source",),
           _health(lambda v, s: v.snap.health[s].interval)),
    Family("polls", "counter",
           "Polls made of the source, answered or failed: the load the exporter puts on it.",
           ("source",), _health(lambda v, s: float(v.snap.health[s].polls))),
    Family("poll_errors", "counter",
           "Failed polls by source and reason (timeout, connection, http_status, malformed, ...); "
           "every known reason is exported from the first poll, at 0 until it happens.",
           ("source", "reason"), _errors),
)  # fmt: skip
