"""Each source's health as the pipeline tracks it: up or not, polls made, failures by reason,
the last success and the cadence that did happen, from the polls' own timestamps. Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.samples import EngineSample, GpuSample, PollError


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A source's health at one instant, as ``/metrics`` and the status page show it."""

    up: bool
    last_success: float | None
    last_duration: float | None
    errors: Mapping[str, int]
    last_error: str | None = None
    polls: int = 0  # polls made (answered or failed): the load the exporter puts on the target
    interval: float | None = None  # the cadence in force: the seconds planned between polls
    # The seconds that did pass between polls, the mean of the last few (a slow target is polled
    # less often than planned); None until two polls
    measured_interval: float | None = None


MEASURED_POLLS = 9  # the measured interval: the mean of the last 8 gaps between polls


@dataclass(slots=True)
class HealthTracker:
    """One source's health while polls come in; :meth:`freeze` gives the published record."""

    polled: bool = False
    up: bool = False
    last_success: float | None = None
    last_duration: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    polls: int = 0
    times: deque[float] = field(default_factory=lambda: deque(maxlen=MEASURED_POLLS))

    def freeze(self, interval: float | None) -> SourceHealth:
        t = self.times
        measured = (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 and t[-1] > t[0] else None
        return SourceHealth(
            self.up,
            self.last_success,
            self.last_duration,
            MappingProxyType(dict(self.errors)),
            self.last_error,
            self.polls,
            interval,
            measured,
        )

    def record(
        self, result: EngineSample | GpuSample | PollError | None, duration: float | None
    ) -> None:
        """A poll's result, answered or failed; None: the source was not polled at this tick."""
        if result is None:
            return
        self.polled = True
        self.polls += 1
        self.last_duration = duration
        at = result.observed_at
        if self.times and at < self.times[-1]:
            self.times.clear()  # the clock stepped back: the gaps before are not this clock's
        self.times.append(at)
        if isinstance(result, PollError):
            self.up = False
            self.errors[result.reason] = self.errors.get(result.reason, 0) + 1
            self.last_error = result.detail or result.reason
        else:
            self.up = True
            self.last_success = result.observed_at
