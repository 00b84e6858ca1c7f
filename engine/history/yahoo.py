"""Daily bars of any symbol from Yahoo Finance through ``yfinance`` (the optional ``yfinance`` extra).

Why optional: it is an unofficial API (no account, no guarantee, rate limits), useful for a symbol no broker
is connected for — an ETF a trader watches, ten years of an index for the chart. It gives OHLCV but no implied
vol, so its bars go to ``daily_bars`` (the chart's candles and volume), never to ``iv_history`` (IV rank).

Prices are unadjusted (``auto_adjust=False``): option strikes and the chart's fill markers are in the prices
that traded, not in dividend-adjusted ones. ``yfinance`` is imported only when a fetch runs; without it the
fetch says which extra to install.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from engine.history.daily_bars import DailyBarSeries, DailyBarsError

#: ``daily_bars.source`` of rows fetched here
SOURCE = "yfinance"
INSTALL_HINT = "pip install 'optiondesk[yfinance]'"


class YahooUnavailable(RuntimeError):
    """yfinance is not installed, or Yahoo did not answer with bars."""


def bars_from_frame(frame: Any, symbol: str) -> DailyBarSeries:
    """``Ticker.history()``'s frame (index: the session, columns Open/High/Low/Close/Volume) as bars.

    A frame without those columns is refused with their names; rows with a missing price stay in the series
    (``write_daily_bars`` drops what is not a bar and counts it)."""
    if frame is None or len(frame) == 0:
        return DailyBarSeries(symbol, (), *(np.empty(0) for _ in range(5)))
    missing = [c for c in ("Open", "High", "Low", "Close") if c not in frame.columns]
    if missing:
        raise DailyBarsError(f"{symbol}: the yfinance frame lacks {', '.join(missing)} "
                             f"(columns: {', '.join(map(str, frame.columns))})")
    days: list[date] = []
    for ts in frame.index:
        day = ts.date() if hasattr(ts, "date") else date.fromisoformat(str(ts)[:10])
        days.append(day)
    keep = np.ones(len(days), dtype=bool)
    for i in range(1, len(days)):  # a repeated session (Yahoo's live row beside the close): keep the last
        if days[i] == days[i - 1]:
            keep[i - 1] = False
    order = [i for i in range(len(days)) if keep[i]]

    def col(name: str) -> np.ndarray:
        if name not in frame.columns:
            return np.full(len(order), np.nan)
        return np.asarray(frame[name].to_numpy(dtype=float, na_value=np.nan), dtype=float)[order]

    return DailyBarSeries(symbol, tuple(days[i] for i in order), col("Open"), col("High"), col("Low"),
                          col("Close"), col("Volume"))


def _default_ticker(symbol: str) -> Any:
    try:
        import yfinance
    except ImportError as exc:
        raise YahooUnavailable(f"yfinance is not installed: {INSTALL_HINT}") from exc
    return yfinance.Ticker(symbol)


def fetch_daily(symbols: Sequence[str], start: date, end: date, *,
                ticker: Callable[[str], Any] = _default_ticker) -> dict[str, DailyBarSeries]:
    """Sessions in [start, end] per symbol. Network or parsing trouble raises :class:`YahooUnavailable`
    naming the symbol; a symbol Yahoo does not know gives an empty series."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    out: dict[str, DailyBarSeries] = {}
    for sym in symbols:
        try:
            frame = ticker(sym).history(start=start.isoformat(), end=(end + timedelta(days=1)).isoformat(),
                                        interval="1d", auto_adjust=False, actions=False)
        except YahooUnavailable:
            raise
        except Exception as exc:  # yfinance raises requests/curl/JSON/pandas errors alike: name the symbol
            raise YahooUnavailable(f"{sym}: yfinance failed: {type(exc).__name__}: {exc}") from exc
        out[sym] = bars_from_frame(frame, sym)
    return out


def register(sub: Any) -> None:
    """``optiondesk data bars``: fetch daily bars into the app's database, or list what is stored."""
    p = sub.add_parser("bars", help="daily OHLCV bars for the chart: fetch from yfinance, or list what is stored")
    p.add_argument("symbols", nargs="*", help="symbols to fetch (none: list the stored bars)")
    p.add_argument("--years", type=float, default=10.0, help="how far back to fetch (default 10)")
    p.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_bars)


def _cmd_bars(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError, dumps_json
    from engine.clock import WallClock
    from engine.history.daily_bars import stored_symbols, write_daily_bars
    from engine.model.instruments import NEW_YORK
    from engine.paths import AppPaths
    from engine.store.database import Store

    if args.years <= 0:
        raise CliError(f"--years must be positive, got {args.years}")
    store = Store.open(args.db or AppPaths.default().ensure().database)
    try:
        if not args.symbols:
            rows = {s: {"first_day": a, "last_day": b, "bars": n} for s, (a, b, n) in stored_symbols(store).items()}
            if args.json:
                print(dumps_json(rows, indent=2))
            elif not rows:
                print("no stored daily bars (optiondesk data bars SYMBOL…)")
            for s, r in rows.items():
                print(f"{s:<8} {r['first_day']} to {r['last_day']}  {r['bars']:>6} bars")
            return 0
        today = WallClock().now().astimezone(NEW_YORK).date()
        start = today - timedelta(days=round(args.years * 365.25))
        try:
            got = fetch_daily([s.upper() for s in args.symbols], start, today)
        except YahooUnavailable as exc:
            raise CliError(str(exc)) from exc
        report: dict[str, dict[str, Any]] = {}
        for sym, series in got.items():
            written, dropped = write_daily_bars(store, series, SOURCE)
            report[sym] = {"bars": len(series), "written": written, "dropped": dropped,
                           "first_day": series.days[0].isoformat() if series.days else None,
                           "last_day": series.days[-1].isoformat() if series.days else None}
        if args.json:
            print(dumps_json(report, indent=2))
        for sym, r in report.items():
            if not args.json:
                print(f"{sym:<8} {r['bars']:>6} bars ({r['first_day']} to {r['last_day']}), "
                      f"{r['written']} written, {r['dropped']} dropped")
        return 0
    finally:
        store.close()
