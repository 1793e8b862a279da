"""Is it still the same vLLM process? A restart, or several processes behind one URL.

A restart shows as a process start time never seen before, or (where vLLM exports no start
time) counters going backwards. A URL that reaches several processes — a load-balanced Service,
a proxy in front of replicas — shows the same signs on almost every poll, and treating each as a
restart would start a configuration epoch and re-read ``/v1/models`` four times a second while
every figure mixed two servers. A restarted process counts from zero, so several processes are:

* a start time seen in the last ``hold`` seconds coming back;
* without start times, a counter that went backwards climbing back above where it was before
  within ``REBOUND`` seconds (a new process would have to out-generate the old one's whole
  life in seconds), or counters going backwards more than ``MAX_RESETS`` times in ``hold``.

While that lasts, and until only one process has answered for ``hold`` seconds, every poll is
judged ``several`` (the caller refuses it); the one process left afterwards starts a new epoch,
like a restart.

>>> ident = TargetIdentity(hold=60.0)
>>> [ident.observe(t, start, tokens) for t, start, tokens in
...  [(0, 100.0, 5.0), (1, 100.0, 9.0), (2, 200.0, 1.0), (3, 100.0, 12.0), (4, 200.0, 2.0)]]
['same', 'same', 'restart', 'several', 'several']
"""

from __future__ import annotations

from collections import deque
from typing import Literal

Verdict = Literal["same", "restart", "several"]
MAX_RESETS = 3
REBOUND = 10.0


class TargetIdentity:
    def __init__(self, hold: float = 60.0) -> None:
        self.hold = hold
        self._current: float | None = None  # the followed process's start time
        self._seen: dict[float, float] = {}  # start time → last poll that showed it
        self._resets: deque[float] = deque()  # times counters went backwards
        self._last_tokens: float | None = None
        self._before_reset: tuple[float, float] | None = None  # (tokens, time) at the last reset
        self.several = False

    def observe(self, t: float, start_time: float | None, tokens: float | None) -> Verdict:
        """Judge one successful poll at time ``t``."""
        verdict: Verdict = "same"
        if start_time is not None:
            if self._current is None:
                self._current = start_time
            elif start_time != self._current:
                if self.several:
                    pass
                elif t - self._seen.get(start_time, -1e18) <= self.hold:
                    self.several = True
                else:
                    self._current, verdict = start_time, "restart"
            self._seen[start_time] = t
            for old, at in list(self._seen.items()):
                if t - at > self.hold:
                    del self._seen[old]
        if tokens is not None:
            last = self._last_tokens
            if last is not None and tokens < last:
                self._resets.append(t)
                verdict = "restart"  # counters from zero: a new process, whatever its start time
                self._before_reset = (last, t) if start_time is None else None
            elif (
                self._before_reset is not None
                and tokens > self._before_reset[0]
                and t - self._before_reset[1] <= REBOUND
            ):
                self.several = True
            self._last_tokens = tokens
        while self._resets and t - self._resets[0] > self.hold:
            self._resets.popleft()
        if len(self._resets) > MAX_RESETS:
            self.several = True
        if self.several:
            others = [s for s in self._seen if s != start_time]
            if others or self._resets:
                return "several"
            self.several = False
            self._current = start_time
            return "restart"
        return verdict
