"""momentum_debit: debit verticals in the direction of a fast/slow moving average of the closes it records."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from engine import strategies
from tests.strategies.option_chains import (
    Ctx,
    bsm_chain,
    close_of,
    entry_denials,
    fill,
    legs_of,
    run_backtest,
    sim_year,
)

START = close_of("2024-03-01")
FAST = {"fast": 3, "slow": 6}
STRIKES = np.arange(450.0, 551.0, 5.0)


EXPIRY = START + timedelta(days=50)  # 2024-04-20, listed on every day fed


def feed(strategy, spots, *, regime="low_vol", start=START):
    """One chain per day at each spot (one expiry, 2024-04-20); returns the intents of the last day."""
    out = []
    for i, spot in enumerate(spots):
        now = start + timedelta(days=i)
        chain = bsm_chain(now.date().isoformat(), spot=spot, expiries={(EXPIRY - now).days: 0.2}, strikes=STRIKES)
        out = list(strategy.on_chain(Ctx(now, regime=regime), chain))
    return out


def test_no_trade_until_the_slow_window_is_full_then_a_call_spread_in_an_up_trend():
    s = strategies.create("momentum_debit", FAST)
    assert feed(s, [490, 492, 494, 496, 498]) == []  # five closes: the slow average needs six
    [intent] = feed(s, [500], start=START + timedelta(days=5))
    # fast (496 + 498 + 500) / 3 = 498 > slow 495 × 1.005: up; long the 500 call, short the 510 call
    assert legs_of(intent) == [("buy", 1, "SPY240420C00500000"), ("sell", 1, "SPY240420C00510000")]
    assert s.trend() == 1


def test_down_trend_buys_a_put_spread_and_a_flat_market_nothing():
    s = strategies.create("momentum_debit", FAST)
    [intent] = feed(s, [510, 508, 506, 504, 502, 500])
    assert legs_of(intent) == [("buy", 1, "SPY240420P00500000"), ("sell", 1, "SPY240420P00490000")]
    flat = strategies.create("momentum_debit", FAST)
    assert feed(flat, [500, 501, 500, 501, 500, 501]) == [] and flat.trend() == 0


def test_a_later_snapshot_of_the_same_day_replaces_its_close():
    s = strategies.create("momentum_debit", FAST)
    s.record(START.date(), 500.0)
    s.record(START.date(), 505.0)
    assert list(s.closes.values()) == [505.0]
    for i in range(10):
        s.record(START.date() + timedelta(days=i + 1), 500.0 + i)
    assert len(s.closes) == 6  # only the slow window is kept
    s.record(START.date() + timedelta(days=20), float("nan"))
    assert len(s.closes) == 6 and list(s.closes.values())[-1] == 509.0


def test_trend_turning_against_an_open_call_spread_closes_it():
    s = strategies.create("momentum_debit", {**FAST, "rules.profit_target": None, "rules.stop_multiple": None})
    [intent] = feed(s, [490, 492, 494, 496, 498, 500])
    ctx = Ctx(START + timedelta(days=5))
    fill(s, ctx, intent, ["10.00", "6.00"])
    assert s.active_trades()[0].state == "open"
    # the fall starts: the fast average (500 + 497 + 494) / 3 = 497 is still above the slow 496.5
    out = feed(s, [497, 494], start=START + timedelta(days=6))
    assert out == [] and s.trend() == 0
    # one more: fast 493 under slow 495.5 → the trend turned against the calls
    [close] = feed(s, [488], start=START + timedelta(days=8))
    assert close.tag.endswith(":close:trend_reversal")
    assert legs_of(close) == [("sell", 1, "SPY240420C00500000"), ("buy", 1, "SPY240420C00510000")]


def test_state_keeps_the_closes_across_a_restart():
    s = strategies.create("momentum_debit", FAST)
    feed(s, [490, 492, 494, 496, 498])
    again = strategies.create("momentum_debit", FAST)
    again.restore(s.state())
    assert again.closes == s.closes
    [intent] = feed(again, [500], start=START + timedelta(days=5))
    assert intent.tag.endswith(":open")


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="fast"):
        strategies.create("momentum_debit", {"fast": 30, "slow": 10})
    with pytest.raises(ValueError, match="min_gap"):
        strategies.create("momentum_debit", {"min_gap": -0.1})


def test_one_year_backtest_trades_without_denials_and_reconciles():
    result = run_backtest("momentum_debit", sim_year())
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
