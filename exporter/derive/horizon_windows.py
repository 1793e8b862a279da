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

    def __init__(self, horizon_seconds: float, slack: float) -> None:
        self.horizon_seconds = horizon_seconds
        self.slack = slack
        self._windows: deque[HorizonWindow] = deque()
        self._aged_out_epoch: int | None = None  # the epoch of the last window that aged out

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
            (aged := newest_end - w[0].window.start > self.horizon_seconds + self.slack)
            or w[0].window.start > newest_end
        ):
            gone = w.popleft()
            if aged:
                self._aged_out_epoch = gone.epoch

    def clear(self) -> None:
        self._windows.clear()
        self._aged_out_epoch = None

    def full(self, epoch: int) -> bool:
        """A full horizon of ``epoch``: every window in it is evaluable and of that epoch, and
        they span the horizon (less the slack), or the epoch's own windows have begun to age out.

        Counted in time, not in windows: a starved loop or the idle cadence makes windows longer
        than ``--window``, and a horizon of them then holds fewer than horizon / window."""
        w = self._windows
        if not w or not all(h.epoch == epoch and h.gate.evaluable for h in w):
            return False
        spans = w[-1].window.end - w[0].window.start >= self.horizon_seconds - self.slack
        return spans or self._aged_out_epoch == epoch

    def evaluable(self) -> int:
        return sum(h.gate.evaluable for h in self._windows)
