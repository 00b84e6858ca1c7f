"""Metrics by hand and the vectorized signal series (realized vol, IV rank, regime)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.backtest.metrics import (
    TradeStats,
    compute_metrics,
    drawdown,
    max_drawdown_duration,
    monthly_returns,
)
from engine.backtest.signals import classify_regime, realized_vol, rolling_rank


def test_drawdown_and_its_duration_by_hand():
    eq = np.array([100.0, 110.0, 99.0, 104.5, 110.0, 121.0, 120.0])
    dd = drawdown(eq)
    assert dd.tolist() == pytest.approx([0, 0, -0.1, -0.05, 0, 0, -1 / 121])
    assert max_drawdown_duration(eq) == 2  # two days under the 110 peak
    assert max_drawdown_duration(np.array([1.0, 2.0, 3.0])) == 0


def test_metrics_when_known_series_then_hand_values():
    eq = np.array([100.0, 101.0, 99.99, 100.9899, 101.999799])  # +1 %, −1 %, +1 %, +1 %
    trades = [TradeStats(pnl=30.0, credit=60.0), TradeStats(pnl=-10.0, credit=40.0), TradeStats(pnl=20.0, credit=0.0)]
    m = compute_metrics(eq, trades, exposure_days=np.array([1, 1, 0, 0, 1], bool), fees=3.0)
    r = np.array([0.01, -0.01, 0.01, 0.01])
    assert m.total_return == pytest.approx(eq[-1] / 100 - 1)
    assert m.ann_vol == pytest.approx(r.std(ddof=1) * math.sqrt(252))
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert m.sortino == pytest.approx(r.mean() / math.sqrt((0.01**2) / 4) * math.sqrt(252))
    assert m.max_drawdown == pytest.approx(-0.01)
    assert m.trades == 3 and m.win_rate == pytest.approx(2 / 3)
    assert m.profit_factor == pytest.approx(5.0) and m.avg_win == 25.0 and m.avg_loss == -10.0
    assert m.expectancy == pytest.approx(40 / 3)
    assert m.premium_capture == pytest.approx(40 / 100)
    assert m.exposure == pytest.approx(0.6) and m.fees == 3.0
    assert m.cagr == pytest.approx((eq[-1] / 100) ** (252 / 4) - 1)
    assert m.calmar == pytest.approx(m.cagr / 0.01)


def test_metrics_when_no_trades_and_flat_then_nan_not_errors():
    m = compute_metrics(np.full(10, 1000.0))
    assert m.trades == 0 and math.isnan(m.win_rate) and math.isnan(m.sharpe) and m.max_drawdown == 0
    d = m.as_dict()
    assert d["sharpe"] is None and d["total_return"] == 0


def test_monthly_returns_from_month_end_equity():
    dates = np.array(["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-29", "2024-03-01"], dtype="datetime64[D]")
    eq = np.array([100.0, 102.0, 101.0, 105.06, 104.0])
    months, rets = monthly_returns(dates, eq)
    assert [str(m) for m in months] == ["2024-01", "2024-02", "2024-03"]
    assert rets.tolist() == pytest.approx([0.02, 0.03, 104.0 / 105.06 - 1])


def test_realized_vol_matches_numpy_on_a_window():
    rng = np.random.default_rng(3)
    s = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60)))
    hv = realized_vol(s, 20)
    assert np.isnan(hv[:20]).all()
    r = np.diff(np.log(s))
    assert hv[40] == pytest.approx(r[20:40].std(ddof=1) * math.sqrt(252))


def test_rolling_rank_with_minimum_history():
    x = np.array([0.2, 0.1, 0.3, 0.25, np.nan, 0.4, 0.4])
    rk = rolling_rank(x, lookback=3, min_history=2)
    assert np.isnan(rk[:2]).all()  # fewer than 2 prior days
    assert rk[2] == pytest.approx(1.0)  # 0.3 against 0.2, 0.1
    assert rk[3] == pytest.approx((0.25 - 0.1) / 0.2)  # against 0.2, 0.1, 0.3
    assert np.isnan(rk[4])  # no value today
    assert rk[5] == pytest.approx(1.0)  # against 0.3, 0.25 (the NaN day is skipped)
    assert rk[6] == pytest.approx(1.0)  # ties the high


def test_classify_regime_rules_in_order():
    vix = np.array([30.0, 12.0, 20.0, 20.0, 20.0, np.nan])
    rank = np.array([0.5, 0.2, 0.6, 0.3, 0.6, np.nan])
    hv_iv = np.array([1.0, 1.0, 0.95, 0.5, 0.7, np.nan])
    assert classify_regime(vix, rank, hv_iv).tolist() == ["high_vol", "low_vol", "iv_expansion", "iv_contraction",
                                                          "neutral", "neutral"]
