"""Watchlist rows computed by the engine (engine/watchlist.py): stored history, the feed's price, the rank."""

from __future__ import annotations

import math
from datetime import date, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from engine.bus import Bus
from engine.clock import ManualClock
from engine.history.service import write_series
from engine.history.source import DailySeries
from engine.market.simulated.feed import SimulatedFeed
from engine.store import Store
from engine.surface.realized import close_to_close
from engine.watchlist import (
    HV_DAYS,
    WatchlistData,
    WatchlistError,
    expected_move,
    next_monthly,
    normalize_symbol,
)
from tests.sim_start import SIM_START


def _series(n: int = 100) -> DailySeries:
    days = []
    d = SIM_START - timedelta(days=1)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    days.reverse()
    rng = np.random.default_rng(3)
    close = 500.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    iv = np.linspace(0.10, 0.30, n)
    iv[-1] = 0.20  # the latest stored day sits mid-window
    return DailySeries(underlying="SPY", days=tuple(days), close=close, atm_iv=iv)


@pytest.fixture()
def setup(tmp_path):
    store = Store.open(tmp_path / "od.sqlite")
    series = _series()
    write_series(store, {"SPY": series}, "test", "2026-03-02T14:30:00+00:00")
    feed = SimulatedFeed.quickstart(Bus(), symbols=("SPY",), seed=7, start=SIM_START)
    clock = ManualClock(feed.now())
    engine = SimpleNamespace(store=store, feed=feed, clock=clock, surfaces=None,
                             history=SimpleNamespace(lookback=252, min_history=60))
    yield engine, series
    store.close()


def test_row_when_history_stored_then_change_hv_rank_and_expected_move_from_it(setup) -> None:
    engine, series = setup
    data = WatchlistData(engine)
    row = data.row("SPY")
    spot = engine.feed.last_price("SPY")
    assert row.last == pytest.approx(spot)
    assert row.change == pytest.approx(spot - series.close[-1])
    assert row.change_pct == pytest.approx((spot / series.close[-1] - 1) * 100)
    assert row.iv == pytest.approx(0.20)  # no surface fit yet: the latest stored ATM IV
    assert row.hv30 == pytest.approx(float(close_to_close(series.close[-(HV_DAYS + 1):])))
    assert row.iv_minus_hv == pytest.approx(0.20 - row.hv30)
    # 0.20 against the 99 days before it (0.10 … ~0.30 linearly): rank and percentile near the middle
    assert row.iv_rank == pytest.approx(0.5, abs=0.02) and row.iv_percentile == pytest.approx(0.5, abs=0.02)
    assert row.expiry == date(2026, 3, 20)  # third Friday after the pinned Monday start
    assert row.expected_move == pytest.approx(spot * 0.20 * math.sqrt(18 / 365))
    assert row.earnings is None and row.note == ""


def test_row_when_symbol_unknown_then_empty_values_and_a_reason(setup) -> None:
    engine, _ = setup
    row = WatchlistData(engine).row("ZZZ")
    assert math.isnan(row.last) and math.isnan(row.iv) and math.isnan(row.iv_rank)
    assert row.note == "no price from the running feed"


def test_stored_history_when_backfilled_then_invalidate_rereads_it(setup) -> None:
    engine, series = setup
    data = WatchlistData(engine)
    assert data.row("SPY").iv == pytest.approx(0.20)
    engine.store.execute("UPDATE iv_history SET atm_iv = 0.35 WHERE underlying = 'SPY' AND day = ?",
                         (series.days[-1].isoformat(),))
    assert data.row("SPY").iv == pytest.approx(0.20)  # cached for the day
    data.invalidate(("SPY",))
    assert data.row("SPY").iv == pytest.approx(0.35)
    assert data.row("SPY").iv_rank == pytest.approx(1.0)


def test_next_monthly_and_expected_move_edges() -> None:
    assert next_monthly(date(2026, 3, 20)) == date(2026, 3, 20)
    assert next_monthly(date(2026, 3, 21)) == date(2026, 4, 17)
    assert next_monthly(date(2026, 12, 19)) == date(2027, 1, 15)
    assert expected_move(100.0, 0.2, 365) == pytest.approx(20.0)
    assert math.isnan(expected_move(float("nan"), 0.2, 10))


@pytest.mark.parametrize("bad", ["", "1ABC", "SP Y", "TOOLONGSYMBOL1"])
def test_normalize_symbol_when_bad_then_error_names_it(bad: str) -> None:
    with pytest.raises(WatchlistError, match="is not a symbol"):
        normalize_symbol(bad)
    assert normalize_symbol(" brk.b ") == "BRK.B"
