"""zero_dte: same-day iron condors / credit spreads inside an entry window, out by a hard time exit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from tests.strategies.option_chains import (
    Ctx,
    bsm_chain,
    entry_denials,
    fill,
    legs_of,
    run_backtest,
    sim_year,
)

STRIKES = np.arange(480.0, 521.0, 1.0)


def at(hhmm: str) -> datetime:
    """2024-03-01 at ``hhmm`` New York time (EST: UTC − 5)."""
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime(2024, 3, 1, h + 5, m, tzinfo=UTC)


def chain_at(hhmm: str, *, expiries=None):
    """Same-day (30 % vol) and next-week expiries, 1-dollar strikes, quotes 0.04 wide, at ``hhmm`` New York."""
    return bsm_chain("2024-03-01", expiries=expiries or {0: 0.30, 7: 0.20}, strikes=STRIKES, half_spread=0.02,
                     quote_time=at(hhmm).replace(tzinfo=None).isoformat())


def test_in_the_window_sells_the_same_day_condor_at_the_natural_sized_by_its_worst_case():
    s = strategies.create("zero_dte")
    [intent] = s.on_chain(Ctx(at("10:30"), regime="neutral"), chain_at("10:30"))
    assert legs_of(intent) == [("sell", 1, "SPY240301P00495000"), ("buy", 1, "SPY240301P00490000"),
                               ("sell", 1, "SPY240301C00505000"), ("buy", 1, "SPY240301C00510000")]
    # mid credit 0.20, natural 0.12 (shorts at 0.14 bid, wings at 0.08 ask): inside the 0.10 collar → natural
    assert intent.limit_price == Decimal("-0.12")
    # worst case 5 − 0.12 = 4.88 → the 2 % budget allows 4; the theta budget (0.4 % of 100k = $400 a day)
    # allows one condor of ~$251 a day
    assert intent.quantity == 1


@pytest.mark.parametrize("hhmm", ["09:45", "14:00", "15:10"])
def test_outside_the_entry_window_then_no_trade(hhmm):
    assert list(strategies.create("zero_dte").on_chain(Ctx(at(hhmm)), chain_at(hhmm))) == []


def test_no_same_day_expiry_or_one_trade_already_today_then_no_trade():
    s = strategies.create("zero_dte")
    assert list(s.on_chain(Ctx(at("10:30")), chain_at("10:30", expiries={1: 0.3, 7: 0.2}))) == []
    ctx = Ctx(at("10:30"))
    [intent] = s.on_chain(ctx, chain_at("10:30"))
    fill(s, ctx, intent, ["0.14", "0.08", "0.14", "0.08"])
    # the trade settles today, so the base's open-trade count skips it; the strategy's own day count does not
    assert list(s.on_chain(Ctx(at("11:00")), chain_at("11:00"))) == []


def test_credit_spread_structures_trade_one_side():
    [put] = strategies.create("zero_dte", {"structure": "put_spread"}).on_chain(Ctx(at("10:30")), chain_at("10:30"))
    assert legs_of(put) == [("sell", 1, "SPY240301P00495000"), ("buy", 1, "SPY240301P00490000")]
    [call] = strategies.create("zero_dte", {"structure": "call_spread"}).on_chain(Ctx(at("10:30")), chain_at("10:30"))
    assert legs_of(call) == [("sell", 1, "SPY240301C00505000"), ("buy", 1, "SPY240301C00510000")]


def test_hard_time_exit_closes_on_the_expiry_day_at_the_natural_whatever_the_pnl():
    s = strategies.create("zero_dte", {"rules.profit_target": None})  # decay alone would take the profit first
    ctx = Ctx(at("10:30"))
    [intent] = s.on_chain(ctx, chain_at("10:30"))
    fill(s, ctx, intent, ["0.14", "0.08", "0.14", "0.08"])  # credit 0.12
    assert list(s.on_chain(Ctx(at("15:00")), chain_at("15:00"))) == []  # held: no rule fired yet
    late = chain_at("15:30")
    [close] = s.on_chain(Ctx(at("15:30")), late)
    assert close.tag.endswith(":close:time_exit")
    assert legs_of(close) == [("buy", 1, "SPY240301P00495000"), ("sell", 1, "SPY240301P00490000"),
                              ("buy", 1, "SPY240301C00505000"), ("sell", 1, "SPY240301C00510000")]
    natural = sum((1 if leg.side.value == "buy" else -1)
                  * float(late.ask[late.row_of(leg.symbol)] if leg.side.value == "buy" else late.bid[late.row_of(leg.symbol)])
                  for leg in close.legs)
    assert close.limit_price == Decimal(str(round(natural, 2)))


def test_profit_target_goes_at_the_natural_at_once():
    s = strategies.create("zero_dte")
    ctx = Ctx(at("10:30"))
    [intent] = s.on_chain(ctx, chain_at("10:30"))
    fill(s, ctx, intent, ["0.30", "0.05", "0.30", "0.05"])  # credit 0.50; the marks are worth 0.20: +0.30
    [close] = s.on_chain(Ctx(at("11:00")), chain_at("11:00"))
    assert close.tag.endswith(":close:profit_target") and close.limit_price > Decimal("0.20")  # past mid: natural


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="entry_after"):
        strategies.create("zero_dte", {"entry_after": "14:00", "entry_before": "10:00"})
    with pytest.raises(ValueError, match="dte_exit"):
        strategies.create("zero_dte", {"rules.dte_exit": 0})
    with pytest.raises(ValueError, match="structure"):
        strategies.create("zero_dte", {"structure": "strangle"})


def test_a_daily_backtest_finds_no_same_day_expiry():
    # each daily snapshot is the close: the day's expiry has just gone, so there is nothing to trade
    result = run_backtest("zero_dte", sim_year())
    assert result.status == "completed" and result.trades == [] and result.orders == []


def test_intraday_backtest_trades_every_session_with_a_daily_expiry_and_reconciles():
    from engine.backtest.sources import simulated_intraday_history

    history = simulated_intraday_history("SPY", 0.04, 7, 60)  # ten sessions from 2025-12-16, hourly
    result = run_backtest("zero_dte", history, intraday_minutes=60, years=0.04)
    assert result.status == "completed" and len(result.trades) >= 5
    entries, denied = entry_denials(result)
    assert denied == 0 and entries == len(result.trades)  # each entry filled at once, at the natural
    closes = [o for o in result.orders if ":close:" in o["tag"]]
    assert closes and all(o["status"] == "filled" for o in closes)  # every trade out before the close
    assert result.reconciliation()["difference"] == 0
