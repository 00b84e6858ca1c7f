"""Next earnings dates from a broker, cached so that readers (the watchlist's column) never wait on I/O.

Why a cache with a background fetch: the watchlist asks for every row on every refresh, synchronously; the broker
answers over REST in tens of milliseconds at best. So :meth:`EarningsCalendar.next` answers from the cache and,
for a symbol it has not seen (or saw more than ``max_age`` ago), queues one batched fetch on the engine loop; the
next refresh shows the date. A failed fetch is retried no sooner than ``retry_after`` (a broker outage must not
turn every refresh into a request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from engine.model.instruments import NEW_YORK

if TYPE_CHECKING:
    from engine.clock import Clock

log = logging.getLogger(__name__)

#: fetches the next earnings date of each symbol (absent or None: the broker has none)
EarningsFetch = Callable[[list[str]], Awaitable[dict[str, date | None]]]


@dataclass(frozen=True, slots=True)
class _Known:
    day: date | None
    at: datetime
    failed: bool = False


class EarningsCalendar:
    """Cached next-earnings dates of one broker feed; fetched in batches on the engine loop."""

    def __init__(self, fetch: EarningsFetch, clock: Clock, *, max_age: timedelta = timedelta(hours=12),
                 retry_after: timedelta = timedelta(minutes=5), batch: int = 50) -> None:
        self._fetch = fetch
        self.clock = clock
        self.max_age = max_age
        self.retry_after = retry_after
        self.batch = batch
        self._known: dict[str, _Known] = {}
        self._wanted: set[str] = set()
        self._inflight: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop fetches run on (the feed's, captured when it starts)."""
        self._loop = loop

    def next(self, symbol: str) -> date | None:
        """The next earnings date on or after today (engine clock, New York), from the cache; None while
        unknown — a fetch is queued then, and the date shows on a later call."""
        sym = symbol.upper()
        known = self._known.get(sym)
        if self._stale(known):
            self._want([sym])
        if known is None or known.day is None:
            return None
        return known.day if known.day >= self._today() else None

    async def refresh(self, symbols: Iterable[str]) -> None:
        """Fetch ``symbols`` now (the feed's own underlyings at start)."""
        self._wanted.update(s.upper() for s in symbols)
        await self._drain()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _stale(self, known: _Known | None) -> bool:
        if known is None:
            return True
        age = self.clock.now() - known.at
        return age >= (self.retry_after if known.failed else self.max_age)

    def _today(self) -> date:
        return self.clock.now().astimezone(NEW_YORK).date()

    def _want(self, symbols: list[str]) -> None:
        self._wanted.update(s for s in symbols if s not in self._inflight)
        loop = self._loop
        if loop is None or loop.is_closed() or (self._task is not None and not self._task.done()):
            return
        self._task = loop.create_task(self._drain(), name="earnings:fetch")

    async def _drain(self) -> None:
        while self._wanted:
            part = sorted(self._wanted)[:self.batch]
            self._wanted.difference_update(part)
            self._inflight = set(part)
            now = self.clock.now()
            try:
                found = await self._fetch(part)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is down: say so once per batch, retry later
                log.warning("earnings dates for %s: %s", ", ".join(part), exc)
                for s in part:
                    self._known[s] = _Known(self._known[s].day if s in self._known else None, now, failed=True)
                continue
            finally:
                self._inflight = set()
            self.fetches += 1
            for s in part:
                self._known[s] = _Known(found.get(s), now)


__all__ = ["EarningsCalendar", "EarningsFetch"]
