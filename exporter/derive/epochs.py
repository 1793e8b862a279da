"""Configuration epochs and the direction since the last change. Pure: no I/O, no clock.

An epoch is a span of one configuration: it ends when the engine restarts, when the
configuration it states changes, or when the exporter's own is reloaded. At each change, the
ending epoch's last full horizon becomes the baseline, and the new epoch's first full horizon
is compared with it once: better, worse or unchanged (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.derive import thresholds as T
from exporter.derive.direction import Direction, Summary, compare
from exporter.samples import EngineSample, ServingConfig

# What a process looked like: (its stated settings, its models, its engines).
Seen = tuple[dict[str, str], tuple[str, ...], int]


class Epochs:
    """The current epoch, what started it, and the direction against the previous one.

    ``whole_epochs`` (replay of a whole recording): the direction compares the current epoch, from
    its first window, with the whole previous epoch."""

    def __init__(self, whole_epochs: bool = False) -> None:
        self.whole_epochs = whole_epochs
        self.epoch = 0
        # "engine_restart" (into another configuration, or before it is known),
        # "engine_restart_same_config", "cache_config_change", "reconfigured"
        self.cause: str | None = None
        self.direction: Direction | None = None
        self._full: Summary | None = None  # the current epoch's last full horizon
        self._baseline: Summary | None = None  # the previous epoch's last full horizon
        self._last_serving: ServingConfig | None = None
        self._last_seen: Seen | None = None
        self._restart_from: Seen | None = None

    def change(self, s: EngineSample, restarted: bool) -> str | None:
        """Why ``s`` starts a new epoch (the engine restarted, or states another
        configuration); None when it does not."""
        if restarted:
            self._restart_from = self._last_seen
            return "engine_restart"
        if s.serving.stated and self._last_serving not in (None, s.serving):
            return "cache_config_change"
        return None

    def settle(self, s: EngineSample) -> None:
        """After any new epoch ``s`` started: the first whole read after a restart says whether
        it kept its configuration (a crash restart is a restart, not a configuration change)."""
        if not s.serving.stated:
            return
        self._last_serving = s.serving
        seen = (dict(s.serving.settings), s.model_names, s.engines)
        if self._restart_from is not None:
            if seen == self._restart_from:
                self.cause = "engine_restart_same_config"
            self._restart_from = None
        self._last_seen = seen

    def begin(self, cause: str, finished: Summary | None = None) -> None:
        """A new epoch. ``finished``: with whole epochs, the epoch that ended, whole (None when
        it held no evaluable window): the baseline."""
        self.epoch += 1
        self.cause = cause
        self.direction = None
        if self.whole_epochs:
            if finished is not None:
                self._baseline = finished
            return
        self._baseline, self._full = self._full, None

    def track(self, full: bool, evaluable: int, now: Callable[[], Summary]) -> None:
        """After the horizon changed: ``full`` it is a full horizon of this epoch, ``evaluable``
        of its windows are evaluable; ``now`` summarizes it."""
        if self.whole_epochs:
            if self._baseline is not None and evaluable >= T.PERSIST_MIN_WINDOWS:
                self.direction = compare(self._baseline, now())
            return
        if not full:
            return
        self._full = now()
        if self._baseline is not None and self.direction is None:
            self.direction = compare(self._baseline, self._full)
