"""Bars for the chart of the underlying: daily bars from stored history, intraday bars from live ticks.

Why engine-side: the chart panel draws; deciding what a bar is (which closes, which ticks, which
window of realized vol) is market-data logic that must work headless too.

- :func:`daily_bars` reads the stored OHLCV bars (``daily_bars``: a broker's candles, yfinance) where a
  symbol has them. Otherwise it derives candles from the history service's ``iv_history`` closes (one row
  per session: close and 30-day ATM IV): a bar opens at the previous close and its high and low are the
  larger and smaller of open and close, so the body is the close-to-close move without the intraday
  range, volume is unknown (NaN), and ``DailyHistory.derived`` says so. Alongside come the ATM IV (NaN on
  days ``iv_history`` lacks) and the rolling realized vol (``hv_window`` returns) per bar.
- :class:`BarAggregator` turns the feed's ``UnderlyingUpdated`` ticks into fixed-interval OHLC bars
  per symbol, timed by the engine clock (so the simulated market's bars carry simulated time). It keeps
  at most ``max_bars`` per symbol. Volume counts ticks (the feeds publish no traded size).
- :func:`fill_markers` lists your own fills of options on an underlying (and of the underlying itself)
  from the store: time, side (buy/sell) and whether it opened or closed.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from engine.surface.realized import close_to_close

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.store import Store

NEW_YORK = ZoneInfo("America/New_York")
_OCC = re.compile(r"^([A-Z.]{1,6})\d{6}[CP]\d{8}$")


@dataclass(frozen=True, eq=False)
class Bars:
    """OHLCV bars of one symbol, oldest first; ``t`` is each bar's start in UTC epoch seconds."""

    symbol: str
    interval_s: float
    t: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.t)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.symbol}: {n} bar times but {len(getattr(self, name))} {name} values")

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def empty(cls, symbol: str, interval_s: float) -> Bars:
        z = np.empty(0)
        return cls(symbol, interval_s, z, z, z, z, z, z)

    def moving_average(self, window: int) -> np.ndarray:
        """Simple moving average of the closes (NaN until ``window`` bars exist)."""
        if window < 1:
            raise ValueError(f"moving-average window must be positive, got {window}")
        out = np.full(len(self), np.nan)
        if len(self) >= window:
            c = np.cumsum(np.insert(self.close.astype(float), 0, 0.0))
            out[window - 1:] = (c[window:] - c[:-window]) / window
        return out


@dataclass(frozen=True, eq=False)
class DailyHistory:
    """Daily bars with the stored ATM IV and the rolling realized vol of each bar (annualised fractions)."""

    bars: Bars
    atm_iv: np.ndarray
    realized_vol: np.ndarray
    hv_window: int
    #: candles derived from closes (no OHLC stored for the symbol), not the sessions' real ranges
    derived: bool = False


def session_epoch(day: date) -> float:
    """A session's bar time: its 09:30 New York open, in UTC epoch seconds."""
    return datetime.combine(day, time(9, 30), NEW_YORK).timestamp()


def daily_bars(store: Store, symbol: str, *, until: date | None = None, limit: int | None = None,
               hv_window: int = 30) -> DailyHistory:
    """The stored daily history of ``symbol`` up to ``until`` (inclusive) as bars (see the module docstring)."""
    if hv_window < 2:
        raise ValueError(f"realized-vol window must be at least 2 returns, got {hv_window}")
    from engine.history.daily_bars import read_daily_bars
    from engine.surface.ivrank import IVHistoryRepository

    iv_days, iv, iv_close = IVHistoryRepository(store).series(symbol, until=until, limit=limit, priced_only=True)
    stored, _sources = read_daily_bars(store, symbol, until=until, limit=limit)
    derived = len(stored) == 0
    if derived:
        days, close = list(iv_days), iv_close
        open_ = np.concatenate([close[:1], close[:-1]]) if len(days) else close
        high, low, volume = np.maximum(open_, close), np.minimum(open_, close), np.full(len(days), np.nan)
        atm_iv = iv
    else:
        days, open_, high, low, close, volume = (list(stored.days), stored.open, stored.high, stored.low,
                                                 stored.close, stored.volume)
        pos = {d: i for i, d in enumerate(iv_days)}
        atm_iv = np.array([iv[pos[d]] if d in pos else np.nan for d in days], dtype=float)
    n = len(days)
    t = np.array([session_epoch(d) for d in days])
    hv = np.full(n, np.nan)
    if n > hv_window:
        hv = np.asarray(close_to_close(close, window=hv_window), dtype=float)
        hv = np.concatenate([[np.nan], hv]) if len(hv) == n - 1 else hv
    bars = Bars(symbol, 86400.0, t, open_, high, low, close, volume)
    return DailyHistory(bars=bars, atm_iv=atm_iv, realized_vol=hv, hv_window=hv_window, derived=derived)


class BarAggregator:
    """Intraday OHLC bars per symbol from ticks (see the module docstring). Not thread-safe: loop only."""

    def __init__(self, interval_s: float = 300.0, *, max_bars: int = 2000) -> None:
        if interval_s <= 0:
            raise ValueError(f"bar interval must be positive, got {interval_s}")
        if max_bars < 1:
            raise ValueError(f"max_bars must be positive, got {max_bars}")
        self.interval_s = float(interval_s)
        self.max_bars = max_bars
        self._bars: dict[str, deque[list[float]]] = {}
        self._sub: Any = None
        self.version = 0  # bumps on every tick taken; readers redraw when it changed

    def add(self, symbol: str, price: float, at: datetime) -> None:
        """Fold one tick into ``symbol``'s current bar (a tick older than the current bar is ignored)."""
        if not (math.isfinite(price) and price > 0):
            return
        ts = at.timestamp()
        start = math.floor(ts / self.interval_s) * self.interval_s
        q = self._bars.get(symbol)
        if q is None:
            q = self._bars[symbol] = deque(maxlen=self.max_bars)
        if q and start < q[-1][0]:
            return
        if q and q[-1][0] == start:
            bar = q[-1]
            bar[2] = max(bar[2], price)
            bar[3] = min(bar[3], price)
            bar[4] = price
            bar[5] += 1
        else:
            q.append([start, price, price, price, price, 1.0])
        self.version += 1

    def bars(self, symbol: str) -> Bars:
        q = self._bars.get(symbol)
        if not q:
            return Bars.empty(symbol, self.interval_s)
        a = np.array(q, dtype=float)
        return Bars(symbol, self.interval_s, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])

    def attach(self, bus: Bus, now: Callable[[], datetime]) -> None:
        """Take every ``UnderlyingUpdated`` from ``bus``, timed by ``now`` (the engine clock)."""
        from engine.bus.events import UnderlyingUpdated

        if self._sub is not None:
            return

        def on_tick(ev: UnderlyingUpdated) -> None:
            self.add(ev.symbol, float(ev.price), now())

        self._sub = bus.subscribe(UnderlyingUpdated, on_tick, name="BarAggregator")

    def detach(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.cancel()


@dataclass(frozen=True, slots=True)
class FillMarker:
    """One of your fills on an underlying: when, the traded symbol, buy (+) or sell (−), and its kind."""

    t: float
    symbol: str
    quantity: int
    price: float
    kind: str


def fill_markers(store: Store, underlying: str) -> list[FillMarker]:
    """Your fills of ``underlying`` and of its options (OCC root = the underlying), oldest first."""
    rows = store.query("SELECT symbol, quantity, price, kind, ts FROM fills WHERE symbol = ? OR symbol LIKE ? "
                       "ORDER BY ts", (underlying, f"{underlying}%"))
    out = []
    for r in rows:
        sym = str(r["symbol"])
        m = _OCC.match(sym)
        if sym != underlying and (m is None or m.group(1) != underlying):
            continue
        try:
            t = datetime.fromisoformat(str(r["ts"]))
        except ValueError:
            continue
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        out.append(FillMarker(t=t.timestamp(), symbol=sym, quantity=int(r["quantity"]), price=float(r["price"]),
                              kind=str(r["kind"])))
    return out
