"""Daily OHLCV bars (engine/history/daily_bars.py), yfinance's frame turned into bars (engine/history/yahoo.py,
no network: a frame in ``Ticker.history(auto_adjust=False)``'s layout), and the chart's daily bars preferring
stored OHLCV over candles derived from closes."""

from __future__ import annotations

import io
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.history.daily_bars import (
    DailyBarSeries,
    DailyBarsError,
    read_daily_bars,
    stored_symbols,
    write_daily_bars,
)
from engine.history.service import write_series
from engine.history.source import DailySeries
from engine.history.yahoo import YahooUnavailable, bars_from_frame, fetch_daily
from engine.market.bars import daily_bars, session_epoch
from engine.store import Store

# Ticker("SPY").history(start="2026-02-23", end="2026-02-28", auto_adjust=False, actions=False) layout:
# a New York-dated index named Date, Open/High/Low/Close/Adj Close/Volume; Feb 26 arrives twice (Yahoo's
# live row beside the close) and Feb 27 without prices.
FRAME_CSV = """Date,Open,High,Low,Close,Adj Close,Volume
2026-02-23 00:00:00-05:00,598.10,601.25,596.40,600.02,597.81,61234500
2026-02-24 00:00:00-05:00,600.50,603.90,599.75,603.10,600.88,55421800
2026-02-25 00:00:00-05:00,602.80,604.00,597.20,598.45,596.25,70112300
2026-02-26 00:00:00-05:00,598.00,599.10,595.00,596.00,593.80,30000000
2026-02-26 00:00:00-05:00,598.00,600.40,594.10,599.80,597.59,66891200
2026-02-27 00:00:00-05:00,,,,,,
"""


def _frame() -> pd.DataFrame:
    frame = pd.read_csv(io.StringIO(FRAME_CSV), index_col="Date")
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York")
    return frame


def _bars(symbol: str, days: list[date], close: list[float]) -> DailyBarSeries:
    c = np.array(close, dtype=float)
    return DailyBarSeries(symbol, tuple(days), c - 0.5, c + 1.0, c - 1.0, c, np.full(len(c), 1e6))


def test_a_yfinance_frame_becomes_bars_keeping_the_last_row_of_a_repeated_session() -> None:
    bars = bars_from_frame(_frame(), "SPY")
    assert bars.days == (date(2026, 2, 23), date(2026, 2, 24), date(2026, 2, 25), date(2026, 2, 26),
                         date(2026, 2, 27))
    assert bars.close[3] == 599.80 and bars.high[3] == 600.40 and bars.volume[3] == 66891200  # the later row
    assert bars.close[0] == 600.02  # unadjusted, not Adj Close
    assert bars.valid().tolist() == [True, True, True, True, False]  # no prices on Feb 27
    with pytest.raises(DailyBarsError, match="lacks High, Low"):
        bars_from_frame(_frame().drop(columns=["High", "Low"]), "SPY")
    assert len(bars_from_frame(_frame().iloc[:0], "SPY")) == 0


def test_fetch_names_the_symbol_when_yfinance_fails_and_says_which_extra_is_missing() -> None:
    class Broken:
        def history(self, **_kw: object) -> object:
            raise ConnectionError("HTTP 429 Too Many Requests")

    with pytest.raises(YahooUnavailable, match="QQQ: yfinance failed: ConnectionError: HTTP 429"):
        fetch_daily(["QQQ"], date(2026, 1, 1), date(2026, 2, 1), ticker=lambda _s: Broken())
    with pytest.raises(ValueError, match="before start"):
        fetch_daily(["QQQ"], date(2026, 2, 1), date(2026, 1, 1), ticker=lambda _s: Broken())
    try:
        import yfinance  # noqa: F401
    except ImportError:
        with pytest.raises(YahooUnavailable, match=r"optiondesk\[yfinance\]"):
            fetch_daily(["QQQ"], date(2026, 1, 1), date(2026, 2, 1))


def test_store_keeps_valid_bars_and_a_real_source_supersedes_the_simulation(tmp_path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        days = [date(2026, 2, 23) + timedelta(days=i) for i in range(3)]
        sim = _bars("SPY", days, [590.0, 591.0, 592.0])
        assert write_daily_bars(store, sim, "simulated seed=7") == (3, 0)
        written, dropped = write_daily_bars(store, bars_from_frame(_frame(), "SPY"), "yfinance")
        assert (written, dropped) == (4, 1)  # Feb 27 had no prices
        got, sources = read_daily_bars(store, "SPY")
        assert got.days[0] == date(2026, 2, 23) and got.close[0] == 600.02  # the real bar replaced the simulated
        assert sources == ("yfinance",) and len(got) == 4
        # the simulation never overwrites a real day; a real source's newer fetch does
        assert write_daily_bars(store, sim, "simulated seed=7") == (0, 0)
        assert write_daily_bars(store, _bars("SPY", days[:1], [601.0]), "tastytrade candles")[0] == 1
        got, sources = read_daily_bars(store, "SPY", until=date(2026, 2, 24), limit=1)
        assert got.days == (date(2026, 2, 24),) and got.close[0] == 603.10
        assert stored_symbols(store) == {"SPY": ("2026-02-23", "2026-02-26", 4)}
        with pytest.raises(DailyBarsError, match="source must be named"):
            write_daily_bars(store, sim, "")
        with pytest.raises(DailyBarsError, match="strictly increasing"):
            _bars("SPY", [days[1], days[0]], [1.0, 2.0])
    finally:
        store.close()


def test_the_chart_draws_stored_ohlcv_and_falls_back_to_candles_from_closes(tmp_path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        days = [date(2026, 2, 23), date(2026, 2, 24), date(2026, 2, 25)]
        iv = DailySeries("SPY", (days[0], days[2]), np.array([600.0, 598.0]), np.array([0.18, 0.2]))
        write_series(store, {"SPY": iv}, "test", "2026-03-01T00:00:00+00:00")
        derived = daily_bars(store, "SPY", hv_window=2)
        assert derived.derived and len(derived.bars) == 2 and np.isnan(derived.bars.volume).all()
        write_daily_bars(store, bars_from_frame(_frame(), "SPY"), "yfinance")
        h = daily_bars(store, "SPY", until=date(2026, 2, 25), hv_window=2)
        assert not h.derived and len(h.bars) == 3
        assert h.bars.high.tolist() == [601.25, 603.90, 604.00] and h.bars.volume[1] == 55421800
        assert h.bars.t[0] == session_epoch(days[0])
        # the ATM IV joins by day: Feb 24 has none stored
        assert h.atm_iv[0] == 0.18 and np.isnan(h.atm_iv[1]) and h.atm_iv[2] == 0.2
    finally:
        store.close()
