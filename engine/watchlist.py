"""Watchlist rows: the numbers a trader scans by, per symbol, computed by the engine for the watchlist panel.

Why here and not in the widget: IV rank, realized vol and the expected move are trading analytics; the
panel only shows the :class:`WatchRow` values this module returns (widgets hold no analytics).

Where each column comes from:

- ``last``: the running feed's last price (the simulated market, or the connected broker's feed);
- ``change``: ``last`` minus the latest stored close before today (the history service's ``iv_history``);
- ``iv``: the surface service's latest 30-day constant-maturity ATM IV, else the latest stored ATM IV;
- ``iv_rank`` / ``iv_percentile``: that IV ranked against the stored window (:meth:`HistoryService.snapshot`);
- ``expected_move``: ``last · iv · √(days/365)`` to the next monthly expiry (the third Friday);
- ``hv30``: annualised close-to-close realized vol of the last 30 stored daily returns;
- ``earnings``: the feed's ``next_earnings(symbol)`` where the feed knows it (the simulated market has none);
- ``volume``: option contracts traded today in the feed's last chain of the symbol.

The stored-history part (previous close, closes for HV) is read once per symbol and day and cached;
:meth:`WatchlistData.invalidate` drops it when a backfill lands (``HistoryBackfilled``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from engine.surface.ivrank import iv_rank
from engine.surface.realized import close_to_close

NEW_YORK = ZoneInfo("America/New_York")
#: daily returns behind the watchlist's historical volatility
HV_DAYS = 30
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-/^]{0,11}$")

#: (key, header, tooltip) of every column the watchlist offers, in default order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("symbol", "Symbol", "underlying symbol"),
    ("last", "Last", "last price from the running feed"),
    ("change", "Chg", "last minus the previous stored close"),
    ("change_pct", "Chg %", "change in per cent of the previous close"),
    ("iv", "IV", "30-day ATM implied vol (surface fit, else the latest stored)"),
    ("iv_rank", "IV rank", "where the IV sits between the stored window's low and high"),
    ("iv_percentile", "IV pct", "share of stored days with a lower IV"),
    ("expected_move", "Exp move", "one-sigma move to the next monthly expiry: last·IV·√(days/365)"),
    ("hv30", "HV 30", "30-day close-to-close realized vol from stored closes"),
    ("iv_minus_hv", "IV − HV", "IV minus 30-day realized vol, in vol points"),
    ("earnings", "Earnings", "next earnings date, where the feed knows it"),
    ("volume", "Volume", "option contracts traded today in the feed's chain"),
)
COLUMN_KEYS: tuple[str, ...] = tuple(c[0] for c in COLUMNS)


class WatchlistError(ValueError):
    """A symbol or list name the watchlist cannot take (the message says which and why)."""


def normalize_symbol(text: str) -> str:
    """Upper-case ``text`` and check it looks like a ticker; raise :class:`WatchlistError` naming it if not."""
    sym = str(text).strip().upper()
    if not _SYMBOL.match(sym):
        raise WatchlistError(f"{text!r} is not a symbol (letters, digits and . - / ^, at most 12, starting "
                             "with a letter)")
    return sym


def next_monthly(today: date) -> date:
    """The next standard monthly expiry on or after ``today``: the month's third Friday."""
    def third_friday(y: int, m: int) -> date:
        first = date(y, m, 1)
        return first + timedelta(days=(4 - first.weekday()) % 7 + 14)

    d = third_friday(today.year, today.month)
    if d >= today:
        return d
    y, m = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return third_friday(y, m)


def expected_move(spot: float, iv: float, days: float) -> float:
    """One-standard-deviation move of ``spot`` over ``days`` calendar days at annual vol ``iv``."""
    if not (math.isfinite(spot) and math.isfinite(iv)) or days < 0:
        return float("nan")
    return float(spot * iv * math.sqrt(max(days, 0.0) / 365.0))


@dataclass(frozen=True, slots=True)
class WatchRow:
    """One symbol's watchlist values (NaN / None where unknown); ``note`` says why a row is empty."""

    symbol: str
    last: float = math.nan
    change: float = math.nan
    change_pct: float = math.nan
    iv: float = math.nan
    iv_rank: float = math.nan
    iv_percentile: float = math.nan
    expected_move: float = math.nan
    expiry: date | None = None
    hv30: float = math.nan
    iv_minus_hv: float = math.nan
    earnings: date | None = None
    volume: float = math.nan
    note: str = ""

    def value(self, key: str) -> Any:
        """The raw value of column ``key`` (what the panel sorts on)."""
        return getattr(self, key)


@dataclass(frozen=True, slots=True)
class _Stored:
    prev_close: float
    last_iv: float
    ivs: np.ndarray  # stored ATM IVs before today, oldest first
    hv30: float


class WatchlistData:
    """Computes :class:`WatchRow` values from an engine's feed, surface service and history store.

    ``engine`` is duck-typed (``feed``, ``surfaces``, ``history``, ``store``, ``clock``): any component may
    be missing, and the row then says so instead of failing.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, date], _Stored] = {}

    def invalidate(self, underlyings: tuple[str, ...] | None = None) -> None:
        """Forget cached stored history (all of it, or of ``underlyings``) after new rows were written."""
        if underlyings is None:
            self._cache.clear()
            return
        for key in [k for k in self._cache if k[0] in underlyings]:
            del self._cache[key]

    def today(self) -> date:
        """Market day in New York, from the engine clock (the simulated market's clock in simulation)."""
        feed = getattr(self.engine, "feed", None)
        now = None
        if feed is not None:
            try:
                now = feed.now()
            except Exception:  # the watchlist reads whatever feed is current (a broker's may be down): unknown, not a crash
                now = None
        if now is None:
            now = self.engine.clock.now()
        return now.astimezone(NEW_YORK).date()

    def available(self) -> list[str]:
        """Symbols the running feed can stream (the simulated market's own, or the broker feed's)."""
        feed = getattr(self.engine, "feed", None)
        if feed is None:
            return []
        try:
            return list(feed.underlyings())
        except Exception:  # the watchlist reads whatever feed is current (a broker's may be down): unknown, not a crash
            return []

    def lookup(self, text: str) -> list[str]:
        """The feed's own symbols starting with ``text``. A connected broker's symbol search is I/O: the panel
        sends the ``SearchSymbols`` command as the user types (engine/market/symbols.py)."""
        prefix = str(text).strip().upper()
        return [s for s in self.available() if s.startswith(prefix)]

    def _stored(self, symbol: str, today: date) -> _Stored:
        key = (symbol, today)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        store = getattr(self.engine, "store", None)
        rows = [] if store is None else store.query(
            "SELECT atm_iv, close FROM iv_history WHERE underlying = ? AND day < ? ORDER BY day DESC LIMIT ?",
            (symbol, today.isoformat(), 400))[::-1]
        ivs = np.array([r["atm_iv"] for r in rows], dtype=float)
        closes = np.array([np.nan if r["close"] is None else r["close"] for r in rows], dtype=float)
        closes = closes[np.isfinite(closes) & (closes > 0)]
        hv = float(close_to_close(closes[-(HV_DAYS + 1):])) if len(closes) > HV_DAYS else math.nan
        out = _Stored(prev_close=float(closes[-1]) if len(closes) else math.nan,
                      last_iv=float(ivs[-1]) if len(ivs) else math.nan, ivs=ivs, hv30=hv)
        self._cache[key] = out
        return out

    def _live_iv(self, symbol: str) -> float:
        surfaces = getattr(self.engine, "surfaces", None)
        latest = getattr(surfaces, "latest", None)
        if callable(latest):
            ev = latest(symbol)
            if ev is not None and math.isfinite(ev.atm_iv) and ev.atm_iv > 0:
                return float(ev.atm_iv)
        return math.nan

    def _window(self) -> tuple[int, int]:
        hist = getattr(self.engine, "history", None)
        return int(getattr(hist, "lookback", 252)), int(getattr(hist, "min_history", 60))

    def row(self, symbol: str) -> WatchRow:
        """The current values of one symbol (see the module docstring for each column's source)."""
        today = self.today()
        feed = getattr(self.engine, "feed", None)
        last = math.nan
        volume = math.nan
        earnings = None
        if feed is not None:
            try:
                p = feed.last_price(symbol)
                last = float(p) if p is not None else math.nan
            except Exception:  # the watchlist reads whatever feed is current (a broker's may be down): unknown, not a crash
                last = math.nan
            try:
                chain = feed.last_chain(symbol)
            except Exception:  # the watchlist reads whatever feed is current (a broker's may be down): unknown, not a crash
                chain = None
            if chain is not None and len(chain):
                volume = float(np.nansum(chain.volume))
            nxt = getattr(feed, "next_earnings", None)
            if callable(nxt):
                try:
                    earnings = nxt(symbol)
                except Exception:  # an earnings lookup may fail any way (broker down): the row shows none
                    earnings = None
        stored = self._stored(symbol, today)
        live_iv = self._live_iv(symbol)
        iv = live_iv if math.isfinite(live_iv) else stored.last_iv
        lookback, min_history = self._window()
        # ranked against the stored days before today (a stored IV, used as today's, is not in its own window)
        window = stored.ivs if math.isfinite(live_iv) else stored.ivs[:-1]
        rank = iv_rank(window, iv, lookback=lookback, min_history=min_history) if math.isfinite(iv) else None
        change = last - stored.prev_close
        expiry = next_monthly(today)
        note = ""
        if not math.isfinite(last):
            note = "no price from the running feed"
        elif not len(stored.ivs):
            note = "no stored history"
        elif rank is not None and not rank.ok:
            note = rank.message
        return WatchRow(
            symbol=symbol, last=last, change=change,
            change_pct=change / stored.prev_close * 100.0 if stored.prev_close > 0 else math.nan,
            iv=iv,
            iv_rank=float(rank.rank) if rank is not None else math.nan,
            iv_percentile=float(rank.percentile) if rank is not None else math.nan,
            expected_move=expected_move(last, iv, (expiry - today).days), expiry=expiry,
            hv30=stored.hv30, iv_minus_hv=iv - stored.hv30, earnings=earnings, volume=volume, note=note,
        )

    def rows(self, symbols: list[str] | tuple[str, ...]) -> list[WatchRow]:
        """:meth:`row` for each symbol, in order."""
        return [self.row(s) for s in symbols]
