"""The horizon's windows: every closed window of the last ``--horizon`` seconds, with its gate,
its rule results and its epoch. Pure: no I/O, no clock (window times are given)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from exporter.derive.gate import Gate
from exporter.derive.rules import RuleKey, RuleResult
from exporter.derive.window import Window


@dataclass(frozen=True, slots=True)
class HorizonWindow:
    """One closed window as the horizon keeps it."""

    window: Window
    gate: Gate
    rules: Mapping[RuleKey, RuleResult]  # empty for non-evaluable windows
    epoch: int


class HorizonWindows:
    """The windows of the horizon, oldest first."""

    def __init__(self, horizon_seconds: float, window_seconds: float, slack: float) -> None:
        self.horizon_seconds = horizon_seconds
        self.slack = slack
        # A full horizon: horizon / window length, e.g. 60 s / 2 s = 30 windows.
        self.full_windows = max(1, round(horizon_seconds / window_seconds))
        self._windows: deque[HorizonWindow] = deque()

    def __iter__(self) -> Iterator[HorizonWindow]:
        return iter(self._windows)

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def latest(self) -> HorizonWindow | None:
        return self._windows[-1] if self._windows else None

    def end(self) -> float:
        return self._windows[-1].window.end if self._windows else float("-inf")

    def add(self, hw: HorizonWindow) -> None:
        self._windows.append(hw)
        self.evict(hw.window.end)

    def evict(self, newest_end: float) -> None:
        """Old windows leave the horizon; so do windows "from the future" after the wall clock
        stepped back, which would otherwise never age out."""
        w = self._windows
        while w and (
            newest_end - w[0].window.start > self.horizon_seconds + self.slack
            or w[0].window.start > newest_end
        ):
            w.popleft()

    def clear(self) -> None:
        self._windows.clear()

    def evaluable(self) -> int:
        return sum(h.gate.evaluable for h in self._windows)

    def all_of(self, epoch: int) -> bool:
        return all(h.epoch == epoch for h in self._windows)
