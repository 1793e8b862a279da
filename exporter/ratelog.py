"""Rate-limited logging: a flood of the same event costs one line a minute, not one per event.

A hostile client can make the server refuse connections or reject requests thousands of times a
second, and a dead endpoint fails four polls a second; each of those is worth a line once, then a
count of how many more there were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimit(logging.Filter):
    """Passes the first record of each (logger, message template) per ``every`` seconds; the
    next one that passes says how many were held back in between."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every, self._clock = every, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # key → (last passed, held)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self._every:
                self._seen[key] = (last, held + 1)
                return False
            if len(self._seen) > 1024:  # templates are few; this only bounds a misuse
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self._every:g}s)"
        return True


def rate_limited(name: str, every: float = 60.0) -> logging.Logger:
    """The named logger, with a :class:`RateLimit` filter attached once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RateLimit) for f in logger.filters):
        logger.addFilter(RateLimit(every))
    return logger
