"""Bars for the chart (engine/market/bars.py): daily from stored history, intraday from ticks, fill markers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from engine.bus import Bus
from engine.bus.events import UnderlyingUpdated
from engine.clock import ManualClock
from engine.history.service import write_series
from engine.history.source import DailySeries
from engine.market.bars import BarAggregator, Bars, daily_bars, fill_markers, session_epoch
from engine.store import Store
from engine.surface.realized import close_to_close
from tests.sim_start import SIM_START


def _store_with_history(tmp_path, n: int = 60) -> tuple[Store, DailySeries]:
    days, d = [], SIM_START - timedelta(days=1)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    days.reverse()
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, n)))
    s = DailySeries(underlying="SPY", days=tuple(days), close=close, atm_iv=np.linspace(0.1, 0.2, n))
    store = Store.open(tmp_path / "od.sqlite")
    write_series(store, {"SPY": s}, "test", "2026-03-02T14:30:00+00:00")
    return store, s


def test_daily_bars_when_history_stored_then_close_to_close_candles_iv_and_rolling_hv(tmp_path) -> None:
    store, s = _store_with_history(tmp_path)
    try:
        h = daily_bars(store, "SPY", until=SIM_START, hv_window=20)
        b = h.bars
        assert len(b) == 60 and b.interval_s == 86400.0
        assert b.t[0] == session_epoch(s.days[0]) and np.all(np.diff(b.t) > 0)
        assert np.allclose(b.close, s.close) and np.allclose(b.open[1:], s.close[:-1]) and b.open[0] == s.close[0]
        assert np.all(b.high >= np.maximum(b.open, b.close)) and np.all(b.low <= np.minimum(b.open, b.close))
        assert np.all(np.isnan(b.volume))
        assert np.allclose(h.atm_iv, s.atm_iv)
        assert np.isnan(h.realized_vol[19]) and h.realized_vol[20] == pytest.approx(
            float(close_to_close(s.close[:21])))
        assert h.realized_vol[-1] == pytest.approx(float(close_to_close(s.close[-21:])))
        assert len(daily_bars(store, "SPY", until=s.days[9]).bars) == 10
        assert len(daily_bars(store, "SPY", limit=5).bars) == 5 and len(daily_bars(store, "NOPE").bars) == 0
        ma = b.moving_average(5)
        assert np.isnan(ma[3]) and ma[4] == pytest.approx(float(np.mean(s.close[:5])))
        with pytest.raises(ValueError, match="at least 2"):
            daily_bars(store, "SPY", hv_window=1)
    finally:
        store.close()


def test_aggregator_when_ticks_arrive_on_the_bus_then_ohlc_per_interval_on_the_engine_clock() -> None:
    bus = Bus()
    start = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    clock = ManualClock(start)
    agg = BarAggregator(300.0, max_bars=3)
    agg.attach(bus, clock.now)
    try:
        for minute, price in [(0, 100.0), (1, 102.0), (2, 99.0), (4, 101.0), (5, 103.0), (11, 104.0), (16, 98.0)]:
            clock._now = start + timedelta(minutes=minute)
            bus.publish(UnderlyingUpdated(symbol="SPY", price=price))
        agg.add("SPY", float("nan"), clock.now())  # a bad tick changes nothing
        b = agg.bars("SPY")
    finally:
        agg.detach()
    # 4 bars were formed, the oldest dropped (max_bars=3); the first kept is the 14:35 bar
    assert len(b) == 3 and b.t[0] == (start + timedelta(minutes=5)).timestamp()
    assert (b.open[0], b.high[0], b.low[0], b.close[0], b.volume[0]) == (103.0, 103.0, 103.0, 103.0, 1.0)
    assert list(b.close) == [103.0, 104.0, 98.0]
    bus.publish(UnderlyingUpdated(symbol="SPY", price=50.0))  # detached: ignored
    assert len(agg.bars("SPY")) == 3 and agg.bars("SPY").close[-1] == 98.0
    assert len(agg.bars("QQQ")) == 0
    with pytest.raises(ValueError, match="interval must be positive"):
        BarAggregator(0)


def test_aggregator_first_bar_keeps_high_low() -> None:
    agg = BarAggregator(60.0)
    t = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    for s, p in [(0, 10.0), (10, 12.0), (20, 9.0), (30, 11.0)]:
        agg.add("X", p, t + timedelta(seconds=s))
    agg.add("X", 50.0, t - timedelta(minutes=5))  # older than the current bar: ignored
    b = agg.bars("X")
    assert (b.open[0], b.high[0], b.low[0], b.close[0], b.volume[0]) == (10.0, 12.0, 9.0, 11.0, 4.0)


def test_fill_markers_when_options_and_other_underlyings_filled_then_only_this_ones(tmp_path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        rows = [("f1", "SPY260320C00600000", 1, "2026-03-02T15:00:00+00:00"),
                ("f2", "SPY260320C00600000", -1, "2026-03-03T15:00:00+00:00"),
                ("f3", "SPYX260320C00010000", 1, "2026-03-02T15:00:00+00:00"),  # another root
                ("f4", "SPY", 100, "2026-03-02T16:00:00+00:00"),
                ("f5", "QQQ260320P00500000", 1, "2026-03-02T15:00:00+00:00")]
        for fid, sym, qty, ts in rows:
            store.execute("INSERT INTO fills(fill_id, order_id, symbol, multiplier, quantity, price, fee, ts) "
                          "VALUES (?, 'o', ?, 100, ?, '1.25', '0', ?)", (fid, sym, qty, ts))
        marks = fill_markers(store, "SPY")
    finally:
        store.close()
    assert [(m.symbol, m.quantity) for m in marks] == [("SPY260320C00600000", 1), ("SPY", 100),
                                                      ("SPY260320C00600000", -1)]
    assert marks[0].t == datetime(2026, 3, 2, 15, tzinfo=UTC).timestamp() and marks[0].price == 1.25


def test_bars_when_lengths_differ_then_error_names_the_column() -> None:
    z = np.zeros(2)
    with pytest.raises(ValueError, match="2 bar times but 1 close"):
        Bars("SPY", 60.0, z, z, z, z, np.zeros(1), z)
    assert len(Bars.empty("SPY", 60.0).moving_average(3)) == 0
