"""Daily OHLCV bars per symbol, stored with where they came from (``daily_bars``, migration 61).

Why a table beside ``iv_history``: that one holds what IV rank needs (a close and an ATM IV per day), and a
symbol without listed options, or a source without implied vols (yfinance), has no row there. The chart draws
real candles and volume from here; where a symbol has no stored bars it falls back to candles derived from
``iv_history``'s closes (:func:`engine.market.bars.daily_bars`).

The precedence rule is ``iv_history``'s: a real source (a broker, yfinance, an import) replaces the simulated
market's days; a day recorded from a real source is replaced only by another real source's newer fetch
(vendors correct bars after the fact) — never by the simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from engine.history.service import is_simulated
from engine.store.database import Store


class DailyBarsError(ValueError):
    """Bars that cannot be stored: misaligned columns, days out of order, or prices that are not prices."""


@dataclass(frozen=True, eq=False)
class DailyBarSeries:
    """One symbol's daily bars, oldest first. ``volume`` is NaN where the source gives none."""

    symbol: str
    days: tuple[date, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.days)
        for name in ("open", "high", "low", "close", "volume"):
            if len(getattr(self, name)) != n:
                raise DailyBarsError(f"{self.symbol}: {n} days but {len(getattr(self, name))} {name} values")
        if any(b <= a for a, b in zip(self.days, self.days[1:], strict=False)):
            raise DailyBarsError(f"{self.symbol}: days must be strictly increasing")

    def __len__(self) -> int:
        return len(self.days)

    def valid(self) -> np.ndarray:
        """Rows that are bars: finite positive prices with low <= open, close <= high."""
        o, h, lo, c = (np.asarray(a, dtype=float) for a in (self.open, self.high, self.low, self.close))
        with np.errstate(invalid="ignore"):
            return (np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & (lo > 0)
                    & (lo <= np.minimum(o, c)) & (np.maximum(o, c) <= h))


def write_daily_bars(store: Store, series: DailyBarSeries, source: str) -> tuple[int, int]:
    """Store the valid bars of ``series`` (see the module docstring for precedence); returns (written,
    dropped as not bars). An empty or all-invalid series writes nothing."""
    if not source:
        raise DailyBarsError("a bar's source must be named")
    ok = series.valid()
    rows = [(series.symbol, d.isoformat(), float(o), float(h), float(lo), float(c),
             None if not math.isfinite(v) else float(v), source)
            for d, o, h, lo, c, v, good in zip(series.days, series.open.tolist(), series.high.tolist(),
                                               series.low.tolist(), series.close.tolist(),
                                               np.asarray(series.volume, dtype=float).tolist(), ok.tolist(),
                                               strict=True) if good]
    conflict = "DO NOTHING" if is_simulated(source) else (
        "DO UPDATE SET open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
        "volume = excluded.volume, source = excluded.source")
    with store.transaction() as conn:
        before = conn.total_changes
        conn.executemany("INSERT INTO daily_bars(symbol, day, open, high, low, close, volume, source) "
                         f"VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(symbol, day) {conflict}", rows)
        written = conn.total_changes - before
    return written, len(series) - len(rows)


def read_daily_bars(store: Store, symbol: str, *, until: date | None = None,
                    limit: int | None = None) -> tuple[DailyBarSeries, tuple[str, ...]]:
    """The stored bars of ``symbol`` up to ``until`` (inclusive), the last ``limit`` of them, oldest first,
    with the distinct sources they came from."""
    sql = "SELECT day, open, high, low, close, volume, source FROM daily_bars WHERE symbol = ?"
    args: list[object] = [symbol]
    if until is not None:
        sql += " AND day <= ?"
        args.append(until.isoformat())
    sql += " ORDER BY day DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    rows = store.query(sql, tuple(args))[::-1]

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if r[name] is None else r[name] for r in rows], dtype=float)

    series = DailyBarSeries(symbol, tuple(date.fromisoformat(r["day"]) for r in rows), col("open"), col("high"),
                            col("low"), col("close"), col("volume"))
    return series, tuple(sorted({str(r["source"]) for r in rows}))


def stored_symbols(store: Store) -> dict[str, tuple[str, str, int]]:
    """Each symbol with stored bars: (first day, last day, bars)."""
    rows = store.query("SELECT symbol, MIN(day) AS a, MAX(day) AS b, COUNT(*) AS n FROM daily_bars "
                       "GROUP BY symbol ORDER BY symbol")
    return {str(r["symbol"]): (str(r["a"]), str(r["b"]), int(r["n"])) for r in rows}
