"""Cutting ticks into windows of time. Pure: no I/O, no clock (each tick's time is given).

A window closes at the first tick at least its span after its first tick (less a slack of half
a fast interval, so that timestamps a few ms early do not add a poll: at 250 ms a window holds
9 polls); the span is the window, or the engine's poll interval in force if longer (an idle
cadence), so that a window holds two engine polls. Consecutive windows share their boundary
tick. A gap longer than two spans (or two calm intervals), or the clock stepping back, ends the
open window at the tick before it: nothing is averaged across a span that was not observed.
docs/sources.md says the same for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from exporter.derive import thresholds as T
from exporter.derive.cadence import EngineCadence
from exporter.derive.window import Window, build_window
from exporter.samples import EngineSample, GpuSample, Tick

MAX_TICKS_PER_WINDOW = 4096  # timestamps that do not advance must not grow a window forever


@dataclass(frozen=True, slots=True)
class Cut:
    """What one tick did to the windows: ``broke`` — it came after a gap or with the clock
    stepped back, which ended the open window at the tick before (``before``, when that window
    held two ticks); ``after`` — the window it closed itself."""

    broke: bool = False
    before: Window | None = None
    after: Window | None = None


class Windower:
    """The open window: the ticks since its first, and when it closes."""

    def __init__(self, window_seconds: float, slack: float, cadence: EngineCadence) -> None:
        self.window_seconds = window_seconds
        self.slack = slack
        self._cadence = cadence
        self.buf: list[tuple[float, Tick]] = []  # (tick time, tick) of the open window
        self.engine_duration = 0.0  # how long the latest engine poll took

    def span(self) -> float:
        """The open window's length: the window, or the engine interval in force if longer, so
        that a window holds two engine polls and every second it spans is observed."""
        return max(self.window_seconds, self._cadence.interval)

    @property
    def gap_seconds(self) -> float:
        """Ticks come at least every engine interval while the engine answers: a longer gap
        than two windows (or two intervals) is one."""
        return T.GAP_WINDOWS * max(self.span(), self._cadence.calm)

    def closes(self, at: float) -> bool:
        return at - self.buf[0][0] >= self.span() - self.slack

    def breaks(self, at: float) -> bool:
        """A gap, or the clock stepped back, between the open window's last tick and ``at``."""
        last = self.buf[-1][0]
        return at < last or at - last > self.gap_seconds

    def edge(self, at: float) -> bool:
        """A tick at ``at`` is expected to close (or open) a window."""
        return not self.buf or self.closes(at) or self.breaks(at)

    def whole_read(self, at: float, edge: bool) -> bool:
        """An engine poll at ``at`` must be read whole: the window's first, or one that may be
        its last (the next answer comes at least an interval, or a poll's duration if longer,
        later; twice that, for a poll that fails or comes late)."""
        return (
            edge
            or self.last_engine_sample() is None
            or self.closes(at + 2 * max(self._cadence.interval, self.engine_duration))
        )

    def last_engine_sample(self) -> EngineSample | None:
        """The open window's latest engine sample."""
        found = (t.engine for _, t in reversed(self.buf) if isinstance(t.engine, EngineSample))
        return next(found, None)

    def drop(self) -> None:
        """Forget the open window (its process is gone: a window never spans two)."""
        self.buf = []

    def add(self, at: float, tick: Tick) -> Cut:
        broke, before = False, None
        if self.buf and self.breaks(at):
            broke = True
            if len(self.buf) > 1:
                before = self._cut()
            self.buf = []
        if isinstance(tick.engine, EngineSample) and not tick.engine.complete:
            if self.last_engine_sample() is None:
                # A window's counters and histograms start at its first engine sample, which
                # must be whole: a partly read one (after a restart or a gap the plan did not
                # foresee) stays out; the plan makes the next poll whole.
                tick = replace(tick, engine=None)
                if tick.gpu is None:
                    return Cut(broke, before)
        if tick.engine_body is not None or tick.models_body is not None:
            # The raw texts are the recorder's (it wrote them from the tick): the open window
            # keeps the decoded samples only, never up to a window of 8 MiB bodies.
            tick = replace(tick, engine_body=None, models_body=None)
        self.buf.append((at, tick))
        after = None
        if len(self.buf) > 1 and (
            (self.closes(at) and self._may_end(at, tick)) or len(self.buf) >= MAX_TICKS_PER_WINDOW
        ):
            after = self._cut()
        return Cut(broke, before, after)

    def _may_end(self, at: float, tick: Tick) -> bool:
        """A window ends where its counters and histograms can end: not at a partly read engine
        sample (the plan did not foresee this tick would close the window; its next poll is
        whole), for a window more at most. A window whose engine stopped answering, or answers
        later than planned, ends on time: what its last partly read sample lacks (counter and
        histogram deltas) is absent for that window, never estimated."""
        v = tick.engine
        if v is None and self.last_engine_sample() is not None:
            # The engine not polled at this tick: the window ends at its next engine poll, so
            # that every second it spans lies between two of them (an idle cadence polls
            # seconds apart).
            return at - self.buf[0][0] >= 2 * self.span()
        if not isinstance(v, EngineSample) or v.complete:
            return True
        return at - self.buf[0][0] >= 2 * self.window_seconds

    def _cut(self) -> Window:
        """Close the open window; its last tick opens the next."""
        engine = [t.engine for _, t in self.buf if isinstance(t.engine, EngineSample)]
        gpu = [t.gpu for _, t in self.buf if isinstance(t.gpu, GpuSample)]
        window = replace(
            build_window(engine, gpu, start=self.buf[0][0], end=self.buf[-1][0]),
            engine_answered=any(isinstance(t.engine, EngineSample) for _, t in self.buf[1:]),
            gpu_answered=any(isinstance(t.gpu, GpuSample) for _, t in self.buf[1:]),
        )
        self.buf = self.buf[-1:]
        return window
