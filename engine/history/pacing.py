"""Interactive Brokers' pacing rules for historical data, kept on the engine clock.

IB answers a request that breaks its pacing with error 162 ("Historical data request pacing violation") and,
repeated, disconnects the client. The rules (TWS API, "Historical Data Limitations"), for bars of 30 s and up
they are soft but still enforced on a busy account:

- no more than 60 requests in any 10-minute window;
- no identical request (same contract, end, duration, bar size, what to show) within 15 seconds;
- no more than 6 requests for the same contract, exchange and tick type within 2 seconds.

:class:`HistoricalPacer` says how long a request must wait so that none of the three is broken, and records it
when it goes out. Its windows are read from the engine clock (a test drives a manual clock; nothing here reads
the wall clock); a reported violation blocks every request for a penalty period.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.clock import Clock

#: IB's limits (seconds and counts)
WINDOW_S = 600.0
WINDOW_MAX = 60
IDENTICAL_S = 15.0
SAME_KEY_S = 2.0
SAME_KEY_MAX = 6
#: after a reported pacing violation nothing is sent for this long (IB does not say how long it holds a grudge)
VIOLATION_PENALTY_S = 60.0


class HistoricalPacer:
    """Spaces historical-data requests so that IB's three pacing rules hold; one per TWS connection."""

    def __init__(self, clock: Clock, *, window_s: float = WINDOW_S, window_max: int = WINDOW_MAX,
                 identical_s: float = IDENTICAL_S, same_key_s: float = SAME_KEY_S,
                 same_key_max: int = SAME_KEY_MAX, penalty_s: float = VIOLATION_PENALTY_S) -> None:
        if window_max < 1 or same_key_max < 1:
            raise ValueError("pacing limits must allow at least one request")
        self.clock = clock
        self.window = timedelta(seconds=window_s)
        self.window_max = window_max
        self.identical = timedelta(seconds=identical_s)
        self.same_key = timedelta(seconds=same_key_s)
        self.same_key_max = same_key_max
        self.penalty = timedelta(seconds=penalty_s)
        self._sent: deque[datetime] = deque()
        self._by_key: dict[Hashable, deque[datetime]] = {}
        self._by_request: dict[Hashable, datetime] = {}
        self._blocked_until: datetime | None = None
        self.requests = 0
        self.waits = 0

    def delay(self, key: Hashable, request: Hashable) -> float:
        """Seconds until a request may go out (0: now). ``key``: (contract, exchange, what to show); ``request``:
        everything that makes two requests identical."""
        now = self.clock.now()
        self._forget(now)
        ready = now
        if self._blocked_until is not None and self._blocked_until > ready:
            ready = self._blocked_until
        if len(self._sent) >= self.window_max:
            ready = max(ready, self._sent[len(self._sent) - self.window_max] + self.window)
        same = self._by_key.get(key)
        if same is not None and len(same) >= self.same_key_max:
            ready = max(ready, same[len(same) - self.same_key_max] + self.same_key)
        last = self._by_request.get(request)
        if last is not None:
            ready = max(ready, last + self.identical)
        return max((ready - now).total_seconds(), 0.0)

    def record(self, key: Hashable, request: Hashable) -> None:
        """The request goes out now."""
        now = self.clock.now()
        self._sent.append(now)
        self._by_key.setdefault(key, deque()).append(now)
        self._by_request[request] = now
        self.requests += 1

    def violated(self) -> None:
        """IB reported a pacing violation anyway (another client on the same login): hold everything."""
        self._blocked_until = self.clock.now() + self.penalty

    async def acquire(self, key: Hashable, request: Hashable, *,
                      sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> float:
        """Wait until the request is allowed, record it, and return the seconds waited (engine clock)."""
        waited = 0.0
        while (d := self.delay(key, request)) > 0:
            self.waits += 1
            waited += d
            await sleep(d)
        self.record(key, request)
        return waited

    def _forget(self, now: datetime) -> None:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        for key in [k for k, q in self._by_key.items() if not q or now - q[-1] >= self.same_key]:
            del self._by_key[key]
        for q in self._by_key.values():
            while q and now - q[0] >= self.same_key:
                q.popleft()
        for req in [r for r, t in self._by_request.items() if now - t >= self.identical]:
            del self._by_request[req]


__all__ = ["HistoricalPacer"]
