"""Checking a credential not seen before (bcrypt, tens of ms) without letting anyone flood it.

Ours, because no server library schedules this: the check runs in one worker thread, off the
event loop; each client (IP address) has at most one check queued or running, so the queue holds
one entry per client and a flood from one client delays another client's check by one bcrypt at
most; each client may start ``burst`` checks at once and ``rate`` a second after that (excess
requests get 429 at once, costing nothing); and a check whose connection has gone is never
started, because the server cancels the waiting request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

OK, DENIED, TOO_MANY = 200, 401, 429


class Authenticator(Protocol):
    def known(self, authorization: str) -> bool | None:
        """True: accepted before; False: can never be valid (no or malformed credential);
        None: needs :meth:`verify`."""

    def verify(self, authorization: str) -> bool:
        """The slow check (bcrypt); runs in a worker thread."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class CredentialChecks:
    """Per-request verdicts for one :class:`Authenticator`; lives on the server's event loop."""

    MAX_CLIENTS = 4096  # remembered token buckets; a full bucket is forgotten first

    def __init__(
        self,
        auth: Authenticator,
        pool: ThreadPoolExecutor,
        burst: float = 5.0,
        rate: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.auth = auth
        self._pool = pool
        self._burst, self._rate, self._clock = burst, rate, clock
        self._buckets: dict[str, _Bucket] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # client → (lock, users)
        self.started = 0  # slow checks run, for tests and curiosity

    def _take(self, client: str) -> bool:
        now = self._clock()
        b = self._buckets.get(client)
        if b is None:
            if len(self._buckets) >= self.MAX_CLIENTS:
                self._forget_full(now)
            b = self._buckets[client] = _Bucket(self._burst, now)
        b.tokens = min(self._burst, b.tokens + (now - b.at) * self._rate)
        b.at = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        for client, b in list(self._buckets.items()):
            if b.tokens + (now - b.at) * self._rate >= self._burst:
                del self._buckets[client]
        if len(self._buckets) >= self.MAX_CLIENTS:  # all busy clients: forgetting one is fair
            self._buckets.clear()

    async def check(self, client: str, authorization: str) -> int:
        verdict = self.auth.known(authorization)
        if verdict is not None:
            return OK if verdict else DENIED
        if not self._take(client):
            return TOO_MANY
        lock, users = self._locks.get(client, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[client] = (lock, users + 1)
        try:
            async with lock:
                # Another request of this client may have verified the same credential meanwhile.
                verdict = self.auth.known(authorization)
                if verdict is not None:
                    return OK if verdict else DENIED
                self.started += 1
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._pool, self.auth.verify, authorization)
                return OK if ok else DENIED
        finally:
            lock, users = self._locks[client]
            if users <= 1:
                del self._locks[client]
            else:
                self._locks[client] = (lock, users - 1)
