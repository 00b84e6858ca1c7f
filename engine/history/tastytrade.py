"""Daily history from tastytrade: the underlying's daily candles over DXLink.

A ``Candle`` subscription with a period suffix (``SPY{=1d,tho=true}``: daily, regular hours) and a
``fromTime`` makes DXLink send the candles since then as a snapshot — newest first, the first flagged
``SNAPSHOT_BEGIN``, the last ``SNAPSHOT_END`` (or ``SNAPSHOT_SNIP`` when it cut the range short) — and
then keeps the current candle updated. Each candle carries the close and ``impVolatility``, the
underlying's 30-day implied volatility, which is what the history service stores as ATM IV (its own
30-day constant-maturity ATM IV on the simulated market).

The history service calls :meth:`TastytradeHistorySource.daily` in its executor thread; the tastytrade
session belongs to the engine loop, so the fetch runs there (``run_coroutine_threadsafe``) on its own
DXLink connection, closed when the snapshot is in, and the thread waits with a bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from engine.history.source import DailySeries, HistorySourceError, LoopBoundSource

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")


def candle_day(ms: int) -> date:
    """The session of a daily candle. DXLink stamps daily candles at midnight UTC of the session; a stamp
    with a time of day is read in New York time."""
    t = datetime.fromtimestamp(ms / 1000.0, UTC)
    if t.hour == 0 and t.minute == 0 and t.second == 0:
        return t.date()
    return t.astimezone(NEW_YORK).date()


def series_from_candles(underlying: str, candles: dict[int, tuple[float, float]], before: date,
                        sessions: int) -> DailySeries:
    """The last ``sessions`` days strictly before ``before`` from {candle time ms: (close, implied vol)}."""
    by_day: dict[date, tuple[float, float]] = {}
    for ms in sorted(candles):
        close, iv = candles[ms]
        d = candle_day(ms)
        if d < before and math.isfinite(close) and close > 0:
            by_day[d] = (close, iv)
    days = sorted(by_day)[-sessions:]
    return DailySeries(underlying, tuple(days), np.array([by_day[d][0] for d in days], dtype=float),
                       np.array([by_day[d][1] for d in days], dtype=float))


class TastytradeHistorySource(LoopBoundSource):
    """:class:`~engine.history.source.HistorySource` over a connected tastytrade session."""

    name = "tastytrade"

    def __init__(self, connection: Any, loop: asyncio.AbstractEventLoop, *, timeout_s: float = 30.0,
                 quiet_s: float = 2.0) -> None:
        super().__init__(loop, timeout_s)
        self.conn = connection
        #: with candles in and nothing new for this long, a snapshot without an end flag counts as complete
        self.quiet_s = quiet_s

    async def fetch(self, underlyings: list[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """Subscribe to daily candles since ~1.5 calendar days per session before ``before``; collect the
        snapshot of every underlying (or stop at the timeout with what arrived, logged)."""
        from tastytrade import DXLinkStreamer
        from tastytrade.dxfeed import Candle

        if self.conn.session is None:
            raise HistorySourceError("tastytrade history: not connected")
        start = datetime.combine(before - timedelta(days=int(sessions * 1.5) + 10), datetime.min.time(), UTC)
        got: dict[str, dict[int, tuple[float, float]]] = {u: {} for u in underlyings}
        done: set[str] = set()
        loop = asyncio.get_running_loop()
        last_new = loop.time()
        async with DXLinkStreamer(self.conn.session) as streamer:
            await streamer.subscribe_candle(underlyings, "1d", start_time=start)
            deadline = loop.time() + self.timeout_s
            while len(done) < len(underlyings):
                now = loop.time()
                if now >= deadline:
                    log.warning("tastytrade history: snapshot incomplete after %.0f s for %s", self.timeout_s,
                                ", ".join(sorted(set(underlyings) - done)))
                    break
                if any(got.values()) and now - last_new >= self.quiet_s:
                    break  # a snapshot that never flagged its end
                try:
                    candle = await asyncio.wait_for(streamer.get_event(Candle),
                                                    min(self.quiet_s, max(deadline - now, 0.01)))
                except TimeoutError:
                    continue
                symbol = candle.event_symbol.split("{", 1)[0]
                if symbol not in got:
                    continue
                last_new = loop.time()
                if candle.remove:
                    got[symbol].pop(candle.time, None)
                else:
                    iv = float(candle.imp_volatility) if candle.imp_volatility is not None else math.nan
                    got[symbol][candle.time] = (float(candle.close), iv if iv > 0 else math.nan)
                if candle.snapshot_end or candle.snapshot_snip:
                    done.add(symbol)
        return {u: series_from_candles(u, got[u], before, sessions) for u in underlyings if got[u]}


__all__ = ["HistorySourceError", "TastytradeHistorySource", "candle_day", "series_from_candles"]
