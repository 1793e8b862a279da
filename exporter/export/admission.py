"""Which connections the server holds: caps per client and in all, and who gives way.

Neither aiohttp nor asyncio limits connections, so this is ours. A client (one IP address) may hold
``per_client`` connections and the server ``total``. At either cap a new connection is not simply
refused: an *untrusted* connection is closed to make room — the one idle longest, counting a TLS
handshake in progress and a request waiting for its credential check as idle — so a client that
parks hundreds of connections, or floods passwords, cannot lock real scrapers out. A connection
is trusted once a request on it was answered with its credential accepted (or, with no
credentials configured, once it sent a whole request): it is never closed to make room for one
that has not earned that, which matters when an attacker shares the scraper's address (NAT, a
node's IP, a load balancer). Only when no untrusted connection can give way is the newcomer
refused.

>>> a = Admission(total=2, per_client=1, clock=lambda: 0.0)
>>> first = a.admit("10.0.0.1", lambda: None)
>>> second = a.admit("10.0.0.1", lambda: None)   # the same client again: its idle one gives way
>>> first.evicted, second is not None, a.count
(True, True, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Held:
    """One admitted connection. ``idle_since`` is None while it cannot be closed for room:
    during its TLS handshake (bounded by its own timeout) and while a request is answered."""

    client: str
    close: Callable[[], None]
    idle_since: float | None = None
    busy: int = 0
    evicted: bool = False
    released: bool = field(default=False, repr=False)
    since: float = 0.0  # when it was admitted
    trusted: bool = False  # a request answered with its credential accepted
    checking: bool = False  # its request waits for a credential check
    abort: Callable[[], None] | None = None  # closes the socket itself (TLS or not), at stop

    @property
    def evictable(self) -> bool:
        """May be closed to make room: untrusted, and idle, handshaking or waiting on a check."""
        if self.trusted:
            return False
        return self.checking or (self.idle_since is not None and self.busy == 0)


class Admission:
    def __init__(self, total: int, per_client: int, clock: Callable[[], float]) -> None:
        self.total, self.per_client = total, per_client
        self._clock = clock
        self._held: dict[str, list[Held]] = {}
        self.count = 0
        self.evictions = 0
        self.refusals = 0

    def admit(self, client: str, close: Callable[[], None], idle: bool = True) -> Held | None:
        """A new connection from ``client``: held (maybe after closing an idle one), or None."""
        mine = self._held.get(client, [])
        if len(mine) >= self.per_client and not self._evict(mine):
            self.refusals += 1
            return None
        if self.count >= self.total and not self._evict(
            [h for hs in self._held.values() for h in hs]
        ):
            self.refusals += 1
            return None
        now = self._clock()
        held = Held(client, close, now if idle else None, since=now)
        self._held.setdefault(client, []).append(held)
        self.count += 1
        return held

    def _evict(self, candidates: list[Held]) -> bool:
        idle = [h for h in candidates if h.evictable]
        if not idle:
            return False
        victim = min(idle, key=lambda h: h.since if h.idle_since is None else h.idle_since)
        victim.evicted = True
        self.release(victim)
        self.evictions += 1
        victim.close()
        return True

    def held(self) -> list[Held]:
        """Every connection held now."""
        return [h for hs in self._held.values() for h in hs]

    def release(self, held: Held) -> None:
        """The connection is gone (or going); idempotent."""
        if held.released:
            return
        held.released = True
        mine = self._held.get(held.client)
        if mine is not None:
            mine.remove(held)
            if not mine:
                del self._held[held.client]
        self.count -= 1

    def busy(self, held: Held) -> None:
        held.busy += 1
        held.idle_since = None

    def idle(self, held: Held) -> None:
        held.busy = max(0, held.busy - 1)
        if held.busy == 0:
            held.idle_since = self._clock()
