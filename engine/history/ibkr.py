"""Daily history from Interactive Brokers: ``reqHistoricalData`` daily bars of three kinds per underlying.

- ``TRADES``: the daily close;
- ``OPTION_IMPLIED_VOLATILITY``: IB's 30-day implied volatility of the underlying's options (a bar's close is the
  day's closing value, annualised, 0.18 = 18 %) — what the history service stores as the day's ATM IV, so IV
  rank on IBKR ranks IB's own implied vols;
- ``HISTORICAL_VOLATILITY``: IB's 30-day historical (realised) volatility, stored beside it.

Requests respect IB's pacing (:mod:`engine.history.pacing`, on the engine clock): at most 60 in 10 minutes, none
identical within 15 s, at most 6 per contract and kind within 2 s. A pacing violation reported anyway (error 162
"pacing violation", e.g. another client on the same login) holds every request for a penalty period and retries
the request once; "no data" (162 "HMDS query returned no data") is an empty kind, not an error.

The history service calls :meth:`IbkrHistorySource.daily` in its executor thread; the ``ib_async`` connection
belongs to the engine loop, so the fetch runs there (``run_coroutine_threadsafe``) and the thread waits with a
bound. Only ``*Async`` calls, each through the connection's timeout and circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.history.pacing import HistoricalPacer
from engine.history.source import DailySeries, HistorySourceError, LoopBoundSource

if TYPE_CHECKING:
    from engine.clock import Clock

log = logging.getLogger(__name__)

TRADES = "TRADES"
IMPLIED_VOL = "OPTION_IMPLIED_VOLATILITY"
HISTORICAL_VOL = "HISTORICAL_VOLATILITY"
KINDS = (TRADES, IMPLIED_VOL, HISTORICAL_VOL)
PACING_VIOLATION = 162
EXCHANGE = "SMART"


def duration_for(sessions: int) -> str:
    """IB's ``durationStr`` covering ``sessions`` trading sessions: days up to a year, whole years beyond
    (IB refuses more than 365 D)."""
    if sessions < 1:
        raise ValueError(f"sessions must be positive, got {sessions}")
    days = math.ceil(sessions * 7 / 5) + 5  # weekends, and a few holidays
    return f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"


def end_for(before: date) -> str:
    """The request's ``endDateTime``: the start of ``before`` in New York, so every bar is a session before it."""
    return f"{before:%Y%m%d} 00:00:00 US/Eastern"


def bar_day(value: Any) -> date:
    """A daily bar's session (ib_async parses ``yyyymmdd`` into a date; a datetime is cut to its date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    s = str(value).strip()[:8]
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def series_from_bars(underlying: str, bars: dict[str, dict[date, float]], before: date,
                     sessions: int) -> DailySeries | None:
    """The last ``sessions`` days strictly before ``before`` from {kind: {day: bar close}}; None without days."""
    closes, ivs, hvs = bars.get(TRADES, {}), bars.get(IMPLIED_VOL, {}), bars.get(HISTORICAL_VOL, {})
    days = sorted(d for d in set(closes) | set(ivs) if d < before)[-sessions:]
    if not days:
        return None

    def col(values: dict[date, float]) -> np.ndarray:
        return np.array([values.get(d, math.nan) for d in days], dtype=float)

    return DailySeries(underlying, tuple(days), col(closes), col(ivs), hist_vol=col(hvs))


class IbkrHistorySource(LoopBoundSource):
    """:class:`~engine.history.source.HistorySource` over a connected :class:`~engine.brokers.ibkr.IbkrConnection`.

    ``clock`` is the engine clock the pacing windows run on; the pacer lives on the connection (IB paces per
    login session), so a new source after a reconnect keeps counting."""

    name = "ibkr"

    def __init__(self, connection: Any, loop: asyncio.AbstractEventLoop, *, clock: Clock,
                 timeout_s: float = 120.0, kinds: Sequence[str] = KINDS) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown historical data kind(s) {unknown}; choose from {', '.join(KINDS)}")
        super().__init__(loop, timeout_s)
        self.conn = connection
        #: one request (IB takes seconds for a year of daily bars on a busy farm)
        self.request_timeout_s = min(30.0, timeout_s)
        self.kinds = tuple(kinds)
        if connection.history_pacer is None:
            connection.history_pacer = HistoricalPacer(clock)
        self.pacer: HistoricalPacer = connection.history_pacer

    async def fetch(self, underlyings: list[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """Every kind for every underlying, one paced request each; an underlying IB does not know is left out."""
        if not self.conn.connected:
            raise HistorySourceError("ibkr history: not connected")
        from ib_async import Stock

        out: dict[str, DailySeries] = {}
        ib = self.conn.ib
        for u in underlyings:
            contract = Stock(u, EXCHANGE, "USD")
            qualified = await self.conn.call(f"qualify {u}", lambda c=contract: ib.qualifyContractsAsync(c))
            if not qualified or qualified[0] is None:
                log.warning("ibkr history: IB has no contract for %s", u)
                continue
            contract = qualified[0]
            bars = {kind: await self._bars(contract, kind, before, sessions) for kind in self.kinds}
            series = series_from_bars(u, bars, before, sessions)
            if series is not None:
                out[u] = series
        return out

    async def _bars(self, contract: Any, kind: str, before: date, sessions: int) -> dict[date, float]:
        end, duration = end_for(before), duration_for(sessions)
        key = (contract.conId, EXCHANGE, kind)
        request = (contract.conId, end, duration, "1 day", kind)
        ib = self.conn.ib
        for attempt in (1, 2):
            await self.pacer.acquire(key, request)
            result = await self.conn.call(
                f"history {contract.symbol} {kind}",
                lambda: ib.reqHistoricalDataAsync(contract, endDateTime=end, durationStr=duration,
                                                  barSizeSetting="1 day", whatToShow=kind, useRTH=True,
                                                  formatDate=1, timeout=0),
                timeout_s=self.request_timeout_s)
            req_id = getattr(result, "reqId", None)
            # request ids are unique per request: its errors are found by id (the list is bounded, newest last)
            errors = [(code, msg) for rid, code, msg in self.conn.errors if rid == req_id]
            paced = [msg for code, msg in errors if code == PACING_VIOLATION and "pacing" in msg.lower()]
            if not paced:
                return {bar_day(b.date): float(b.close) for b in result or ()
                        if math.isfinite(float(b.close)) and float(b.close) > 0}
            self.pacer.violated()
            log.warning("ibkr history: pacing violation on %s %s (%s); holding requests, attempt %d",
                        contract.symbol, kind, paced[0], attempt)
        raise HistorySourceError(f"ibkr history: IB keeps reporting a pacing violation for {contract.symbol} "
                                 f"{kind}: {paced[0]}")


__all__ = ["IbkrHistorySource", "bar_day", "duration_for", "end_for", "series_from_bars"]
