"""IV rank and IV percentile from daily ATM implied-vol history, with a minimum-history rule.

- ``rank = (current − low) / (high − low)`` with low/high over the lookback window and today's
  value, in [0, 1] (multiply by 100 for the usual display).
- ``percentile`` = share of the window's days whose IV was strictly below today's, in [0, 1].
- With fewer than ``min_history`` days in the window the result says ``insufficient_history`` and
  carries NaN for rank and percentile rather than a misleading number.

History rows live in the core ``iv_history`` table (one row per underlying and day: the
constant-maturity ATM IV, e.g. 30 calendar days, and the underlying's close).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.store import Store

OK = "ok"
INSUFFICIENT_HISTORY = "insufficient_history"
NO_CURRENT = "no_current_iv"
FLAT_HISTORY = "flat_history"


@dataclass(frozen=True, slots=True)
class IVRank:
    """IV rank/percentile of ``current`` against the last ``days`` daily values (fractions in [0, 1])."""

    current: float
    rank: float
    percentile: float
    low: float
    high: float
    days: int
    lookback: int
    min_history: int
    status: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == OK


def iv_rank(history: np.ndarray, current: float, *, lookback: int = 252, min_history: int = 60) -> IVRank:
    """Rank ``current`` (annualised vol) against daily history (oldest first; NaNs are skipped)."""
    if lookback < 1 or min_history < 1:
        raise ValueError(f"lookback and min_history must be positive, got {lookback}, {min_history}")
    h = np.asarray(history, dtype=float).ravel()
    h = h[np.isfinite(h) & (h > 0)][-lookback:]
    n = len(h)
    nan = float("nan")
    cur = float(current) if current is not None else nan
    if not (np.isfinite(cur) and cur > 0):
        return IVRank(cur, nan, nan, nan, nan, n, lookback, min_history, NO_CURRENT,
                      "no current ATM implied vol")
    if n < min_history:
        return IVRank(cur, nan, nan, float(h.min()) if n else nan, float(h.max()) if n else nan, n, lookback,
                      min_history, INSUFFICIENT_HISTORY,
                      f"insufficient history: {n} of {min_history} required days")
    low = float(min(h.min(), cur))
    high = float(max(h.max(), cur))
    pct = float(np.count_nonzero(h < cur) / n)
    if high - low <= 1e-12:
        return IVRank(cur, nan, pct, low, high, n, lookback, min_history, FLAT_HISTORY,
                      "implied vol has not moved over the window; rank undefined")
    rank = (cur - low) / (high - low)
    return IVRank(cur, float(rank), pct, low, high, n, lookback, min_history, OK,
                  f"IV rank {rank * 100:.0f} %, percentile {pct * 100:.0f} % over {n} days")


class IVHistoryRepository:
    """Read/write daily ATM IV rows in the store's ``iv_history`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, underlying: str, day: date, atm_iv: float, *, close: float | None = None,
               source: str = "surface") -> None:
        """Insert or replace the row of ``day`` (one value per underlying and day)."""
        if not (np.isfinite(atm_iv) and atm_iv > 0):
            raise ValueError(f"ATM IV must be a positive number, got {atm_iv!r}")
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(underlying, day) DO UPDATE SET atm_iv=excluded.atm_iv, close=excluded.close, "
                "source=excluded.source",
                (underlying, day.isoformat(), float(atm_iv), None if close is None else float(close), source),
            )

    def series(self, underlying: str, *, until: date | None = None, limit: int | None = None,
               priced_only: bool = False) -> tuple[list[date], np.ndarray, np.ndarray]:
        """(days, atm_iv, close) oldest first, NaN where unknown; ``until`` excludes later days; ``limit``
        keeps the newest; ``priced_only`` keeps only days with a positive close (bars need one)."""
        sql = "SELECT day, atm_iv, close FROM iv_history WHERE underlying = ?"
        if priced_only:
            sql += " AND close IS NOT NULL AND close > 0"
        params: list[object] = [underlying]
        if until is not None:
            sql += " AND day <= ?"
            params.append(until.isoformat())
        sql += " ORDER BY day DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._store.query(sql, tuple(params))[::-1]
        days = [date.fromisoformat(r["day"]) for r in rows]
        iv = np.array([np.nan if r["atm_iv"] is None else r["atm_iv"] for r in rows], dtype=float)
        close = np.array([np.nan if r["close"] is None else r["close"] for r in rows], dtype=float)
        return days, iv, close

    def rank(self, underlying: str, current: float, *, today: date, lookback: int = 252,
             min_history: int = 60) -> IVRank:
        """IV rank of ``current`` against the stored days before ``today``."""
        _, iv, _ = self.series(underlying, until=date.fromordinal(today.toordinal() - 1), limit=lookback)
        return iv_rank(iv, current, lookback=lookback, min_history=min_history)
