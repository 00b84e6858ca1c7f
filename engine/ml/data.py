"""The daily inputs of the ML pipeline: one underlying's closes and ATM IV, with the VIX-like index beside it.

Why a separate container: features, labels and the data hash must all see exactly the same aligned days,
and the hash (which keys the feature cache and is stored with every model) must change when any input
value changes. The rows come from the history service's source (:class:`engine.history.HistorySource`:
the simulated market's seeded path, or a broker's history) or from the store's ``iv_history`` table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from engine.history.source import DailySeries, HistorySource

#: trading sessions per year, for --years
SESSIONS_PER_YEAR = 252


class MLDataError(ValueError):
    """The history cannot feed the ML pipeline (unknown underlying, too few days, misaligned series)."""


@dataclass(frozen=True, eq=False)
class MarketHistory:
    """Aligned daily rows, oldest first: the underlying's close and 30-day ATM IV, the VIX-like index's level
    and its own ATM IV (vol of vol). ``vix_*`` are NaN where the index has no row that day."""

    symbol: str
    days: tuple[date, ...]
    close: np.ndarray
    atm_iv: np.ndarray
    vix: np.ndarray
    vix_iv: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.days)
        for name in ("close", "atm_iv", "vix", "vix_iv"):
            if len(getattr(self, name)) != n:
                raise MLDataError(f"{self.symbol}: {name} has {len(getattr(self, name))} rows for {n} days")

    def __len__(self) -> int:
        return len(self.days)

    def data_hash(self) -> str:
        """sha256 over the symbol, the days and every value: equal inputs, equal hash (16 hex digits)."""
        h = hashlib.sha256(self.symbol.encode())
        h.update(np.array([d.toordinal() for d in self.days], dtype=np.int64).tobytes())
        for a in (self.close, self.atm_iv, self.vix, self.vix_iv):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def tail(self, n: int) -> MarketHistory:
        """The last ``n`` days."""
        return MarketHistory(self.symbol, self.days[-n:], self.close[-n:], self.atm_iv[-n:], self.vix[-n:],
                             self.vix_iv[-n:], self.source)

    def head(self, n: int) -> MarketHistory:
        """The first ``n`` days: the history as it stood at the close of day ``n - 1`` (point-in-time checks)."""
        return MarketHistory(self.symbol, self.days[:n], self.close[:n], self.atm_iv[:n], self.vix[:n],
                             self.vix_iv[:n], self.source)


def align(series: DailySeries, vix: DailySeries | None, source: str = "") -> MarketHistory:
    """Put the index's rows on the underlying's days (NaN where the index lacks a day)."""
    n = len(series.days)
    lvl = np.full(n, np.nan)
    viv = np.full(n, np.nan)
    if vix is not None:
        pos = {d: i for i, d in enumerate(vix.days)}
        for i, d in enumerate(series.days):
            j = pos.get(d)
            if j is not None:
                lvl[i] = vix.close[j]
                viv[i] = vix.atm_iv[j]
    return MarketHistory(series.underlying, series.days, np.asarray(series.close, float),
                         np.asarray(series.atm_iv, float), lvl, viv, source)


def load_history(source: HistorySource, symbol: str, before: date, years: float, *,
                 vix_symbol: str = "VIX") -> MarketHistory:
    """``years`` of sessions strictly before ``before`` from ``source`` (the history service's protocol)."""
    if years <= 0:
        raise MLDataError(f"years must be positive, got {years}")
    sessions = round(years * SESSIONS_PER_YEAR)
    wanted = [symbol] if symbol == vix_symbol else [symbol, vix_symbol]
    got = source.daily(wanted, before, sessions)
    if symbol not in got:
        raise MLDataError(f"{source.name} has no history for {symbol}")
    return align(got[symbol], got.get(vix_symbol), source.name)


def history_from_store(store: Any, symbol: str, *, until: date | None = None,
                       vix_symbol: str = "VIX") -> MarketHistory:
    """The history service's stored rows (``iv_history``: live-recorded days and backfills) of ``symbol``
    and the index, up to ``until`` inclusive: what a running engine computes today's features from."""

    def series(sym: str) -> DailySeries | None:
        sql = "SELECT day, atm_iv, close FROM iv_history WHERE underlying = ?"
        params: list[object] = [sym]
        if until is not None:
            sql += " AND day <= ?"
            params.append(until.isoformat())
        rows = store.query(sql + " ORDER BY day", tuple(params))
        if not rows:
            return None
        close = np.array([np.nan if r["close"] is None else r["close"] for r in rows], dtype=float)
        return DailySeries(sym, tuple(date.fromisoformat(r["day"]) for r in rows), close,
                           np.array([r["atm_iv"] for r in rows], dtype=float))

    own = series(symbol)
    if own is None:
        raise MLDataError(f"no stored history for {symbol}")
    if not np.isfinite(own.close).all():
        raise MLDataError(f"{symbol}: stored history has days without a close")
    return align(own, series(vix_symbol) if symbol != vix_symbol else own, "store")
