"""When each source is next due: vLLM fast while anything could spike, calm otherwise
(docs/sources.md).

Every vLLM ``/metrics`` poll costs vLLM's API server CPU in the process that streams tokens, so
a steady server is polled at the calm interval, and an idle one (nothing running, nothing
waiting, no token generated) at the idle interval once it has been idle for
:data:`~exporter.derive.thresholds.CADENCE_IDLE_AFTER_SECONDS`. The first poll that shows pressure
switches to the fast interval at once; the cadence goes calm again only after
:data:`~exporter.derive.thresholds.CADENCE_HOLD_SECONDS` without pressure, so it does not flap.
A signal that costs vLLM nothing — the GPUs getting busy — wakes an idle cadence: vLLM is polled
at once and calm from then on.

Pure: times are passed in (the polls' own timestamps), so replaying a recording made at the fast
interval takes the same decisions, by skipping the polls a live exporter would not have made.

>>> c = EngineCadence(fast=0.25, calm=1.0, max_num_seqs=None)
>>> c.observe(EngineSample(0.0, running=0.0, waiting=0.0, kv_usage=0.0))
>>> c.interval, c.due(0.5), c.due(1.0)
(1.0, False, True)
>>> c.observe(EngineSample(1.0, running=3.0, waiting=2.0, kv_usage=0.3))   # a queue: fast at once
>>> c.interval, c.due(1.25)
(0.25, True)
>>> c = EngineCadence(fast=0.25, calm=1.0, idle=5.0, max_num_seqs=None)
>>> for t in range(32):   # nothing runs, nothing waits, no token: idle after 30 s
...     c.observe(EngineSample(float(t), running=0.0, waiting=0.0, generation_tokens=10.0))
>>> c.interval
5.0
>>> c.wake(33.0)          # the GPUs got busy: vLLM at once, then calm
>>> c.interval, c.due(33.0)
(1.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.samples import EngineSample, GpuSample


def pressure(s: EngineSample, prev: EngineSample | None, max_num_seqs: float | None) -> str | None:
    """Why this poll could precede a spike, or None when it shows none (docs/sources.md).

    >>> pressure(EngineSample(0.0, kv_usage=0.7), None, None)
    'kv'
    >>> pressure(EngineSample(1.0, running=5.0), EngineSample(0.0, running=1.0), None)
    'change'
    >>> pressure(EngineSample(1.0, running=4.0), EngineSample(0.0, running=1.0), None) is None
    True
    """
    if s.kv_usage is not None and s.kv_usage >= T.CADENCE_KV_AT_LEAST:
        return "kv"
    if s.waiting is not None and s.waiting > 0:
        return "queue"
    if (
        max_num_seqs
        and s.running is not None
        and s.running >= T.CADENCE_RUNNING_SHARE * max_num_seqs * max(1, s.engines)
    ):
        return "running"
    if prev is None:
        return None
    if s.preemptions is not None and prev.preemptions is not None:
        if s.preemptions > prev.preemptions:
            return "preemptions"
    if s.running is not None and prev.running is not None:
        if abs(s.running - prev.running) > T.CADENCE_RUNNING_CHANGE:
            return "change"
    if s.kv_usage is not None and prev.kv_usage is not None:
        if abs(s.kv_usage - prev.kv_usage) >= T.CADENCE_KV_CHANGE:
            return "change"
    return None


def quiet(s: EngineSample, prev: EngineSample | None) -> bool:
    """Nothing runs, nothing waits, and no token was generated since the previous poll.

    >>> quiet(EngineSample(1.0, running=0.0, waiting=0.0, generation_tokens=7.0),
    ...       EngineSample(0.0, running=0.0, waiting=0.0, generation_tokens=7.0))
    True
    >>> quiet(EngineSample(1.0, running=0.0, waiting=0.0, generation_tokens=9.0),
    ...       EngineSample(0.0, running=0.0, waiting=0.0, generation_tokens=7.0))
    False
    """
    return (
        prev is not None
        and s.running == 0
        and not s.waiting
        and s.generation_tokens is not None
        and s.generation_tokens == prev.generation_tokens
    )


def _due(last_poll: float | None, at: float, gap: float) -> bool:
    """Never polled, the clock stepped back, or at least ``gap`` seconds since the last poll."""
    return last_poll is None or at < last_poll or at - last_poll >= gap


class EngineCadence:
    """The vLLM poll interval in force, from the polls seen so far."""

    def __init__(
        self, *, fast: float, calm: float, max_num_seqs: float | None, idle: float | None = None
    ) -> None:
        self.fast = fast
        self.calm = max(calm, fast)
        # A fixed cadence (calm equal to fast) stays fixed: no idle tier either.
        self.idle = self.calm if idle is None or self.calm == fast else max(idle, self.calm)
        self.max_num_seqs = max_num_seqs
        self._prev: EngineSample | None = None
        self._last_poll: float | None = None
        self._hot_until: float | None = None  # fast until then (last pressure + hold)
        self._busy_at: float | None = None  # the last poll (or wake) that showed any activity
        self.interval = self.calm

    @property
    def slowest(self) -> float:
        """The longest interval this cadence may plan."""
        return self.idle

    def observe(self, s: EngineSample) -> None:
        """A vLLM poll answered: keep or change the interval."""
        self.polled(s.observed_at)
        if pressure(s, self._prev, self.max_num_seqs) is not None:
            self._hot_until = s.observed_at + T.CADENCE_HOLD_SECONDS
        if self._busy_at is None or s.observed_at < self._busy_at or not quiet(s, self._prev):
            self._busy_at = s.observed_at
        hot = self._hot_until is not None and s.observed_at < self._hot_until
        idle = s.observed_at - self._busy_at >= T.CADENCE_IDLE_AFTER_SECONDS
        self.interval = self.fast if hot else self.idle if idle else self.calm
        self._prev = s

    def wake(self, at: float) -> None:
        """Something that costs vLLM nothing says load may have begun: an idle cadence polls
        vLLM at once and is calm from then on."""
        if self.interval > self.calm:
            self._busy_at = at
            self.interval = self.calm
            self._last_poll = None

    def polled(self, at: float) -> None:
        """A vLLM poll was made (answered or not)."""
        self._last_poll = at

    def reset(self) -> None:
        """A restart or a reload: the next poll is due at once and compares with nothing."""
        self._prev = None
        self._last_poll = None

    def due(self, at: float) -> bool:
        """Whether a poll starting at ``at`` keeps the cadence. Half a fast interval of slack:
        a poll timestamped a few ms late must not push the next one a whole interval away."""
        return _due(self._last_poll, at, self.interval - self.fast / 2)


@dataclass(slots=True)
class RefreshCadence:
    """A GPU source that refreshes slower than it can be polled (dcgm-exporter samples every
    30 s by default): polled no faster than its values change, learned from the polls, never
    faster than ``floor`` and never slower than ``ceiling``. ``fixed`` overrides the learning.

    >>> c = RefreshCadence(floor=1.0, ceiling=30.0)
    >>> for t, power in ((0.0, 300.0), (1.0, 300.0), (5.0, 310.0), (10.0, 305.0), (11.0, 305.0)):
    ...     c.observe(GpuSample(t, ()), (power,))
    >>> c.interval      # values changed at 5 s and 10 s: a 5 s refresh
    5.0
    """

    floor: float
    ceiling: float
    fixed: float | None = None
    _values: tuple[object, ...] | None = None
    _changed_at: float | None = None
    _period: float | None = None
    _last_poll: float | None = None

    @property
    def interval(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if self._period is None:
            return self.floor
        return min(self.ceiling, max(self.floor, self._period))

    def observe(self, s: GpuSample, values: tuple[object, ...]) -> None:
        """A poll answered with these readings (everything but the timestamp)."""
        self._last_poll = s.observed_at
        if self._values is None or values == self._values:
            self._values = values  # the first poll is no change: its refresh time is unknown
            return
        self._values = values
        if self._changed_at is not None and s.observed_at > self._changed_at:
            # The shortest gap between two changes seen: a refresh with unchanged values (an
            # idle GPU) makes a longer gap, never a shorter one.
            gap = s.observed_at - self._changed_at
            self._period = gap if self._period is None else min(self._period, gap)
        self._changed_at = s.observed_at

    def polled(self, at: float) -> None:
        self._last_poll = at

    def due(self, at: float, slack: float) -> bool:
        return _due(self._last_poll, at, self.interval - slack)


def gpu_busy(g: GpuSample) -> bool:
    """A GPU works: load may have begun on an idle vLLM."""
    return any(
        r.util_gpu_pct is not None and r.util_gpu_pct >= T.CADENCE_WAKE_GPU_UTIL_PCT for r in g.gpus
    )
