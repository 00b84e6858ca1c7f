"""iv_rank_debit: buy a debit vertical when vol is cheap (IV rank low in low_vol / iv_expansion)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from engine import strategies
from engine.strategies.iv_rank_debit import buy_confidence
from engine.strategies.structures import combo_greeks
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

NOW = close_of("2024-03-01")


def natural(chain, intent) -> float:
    a, b = (chain.row_of(leg.symbol) for leg in intent.legs)
    return float(chain.ask[a] - chain.bid[b])


def test_cheap_vol_buys_the_atm_call_and_sells_the_call_10_higher_sized_by_the_debit():
    chain = bsm_chain(expiries={45: 0.20})
    [intent] = strategies.create("iv_rank_debit").on_chain(Ctx(NOW, ivr=0.1, regime="low_vol"), chain)
    assert legs_of(intent) == [("buy", 1, "SPY240415C00500000"), ("sell", 1, "SPY240415C00510000")]
    a, b = (chain.row_of(leg.symbol) for leg in intent.legs)
    assert intent.limit_price == Decimal(str(round(float(chain.mid[a] - chain.mid[b]), 2)))
    assert intent.quantity == math.floor(2000 / (natural(chain, intent) * 100))  # 2 % of 100k ÷ the debit


def test_put_version_and_the_delta_budget_caps_a_large_account():
    chain = bsm_chain(expiries={45: 0.20})
    [put] = strategies.create("iv_rank_debit", {"right": "put"}).on_chain(Ctx(NOW, ivr=0.1, regime="iv_expansion"), chain)
    assert legs_of(put) == [("buy", 1, "SPY240415P00500000"), ("sell", 1, "SPY240415P00490000")]
    big = Ctx(NOW, ivr=0.1, regime="low_vol", nl=1_000_000)
    [intent] = strategies.create("iv_rank_debit").on_chain(big, chain)
    delta = combo_greeks(chain, intent.legs)["delta"]
    assert intent.quantity == math.floor(50 / delta) < math.floor(20_000 / (natural(chain, intent) * 100))


def test_confidence_below_three_quarters_halves_the_size_and_below_the_minimum_stops_it():
    assert buy_confidence(0.29, "low_vol", {"low_vol": 1.0}) == pytest.approx(0.71)
    chain = bsm_chain(expiries={45: 0.20})
    [half] = strategies.create("iv_rank_debit").on_chain(Ctx(NOW, ivr=0.29, regime="low_vol"), chain)
    assert half.quantity == math.floor(1000 / (natural(chain, half) * 100))
    # iv_expansion's factor 1.2 lifts the same rank to full size; a factor of 0.5 drops it below 0.6
    [full] = strategies.create("iv_rank_debit").on_chain(Ctx(NOW, ivr=0.29, regime="iv_expansion"), chain)
    assert full.quantity == math.floor(2000 / (natural(chain, full) * 100))
    s = strategies.create("iv_rank_debit", {"confidence_factors": {"low_vol": 0.5}})
    assert list(s.on_chain(Ctx(NOW, ivr=0.1, regime="low_vol"), chain)) == []


@pytest.mark.parametrize(("ivr", "regime"), [(0.35, "low_vol"), (0.1, "high_vol"), (0.1, "neutral"),
                                             (float("nan"), "low_vol")])
def test_when_vol_is_not_cheap_or_regime_not_listed_then_no_trade(ivr, regime):
    assert list(strategies.create("iv_rank_debit").on_chain(Ctx(NOW, ivr=ivr, regime=regime),
                                                             bsm_chain(expiries={45: 0.2}))) == []


def test_debit_costing_most_of_the_width_then_no_trade():
    # with 60 % vol the 500/510 call spread costs about half its width; a 40 % cap refuses it
    s = strategies.create("iv_rank_debit", {"max_debit_fraction": 0.4})
    assert list(s.on_chain(Ctx(NOW, ivr=0.1, regime="low_vol"), bsm_chain(expiries={45: 0.6}))) == []


def test_fill_sets_the_spread_limits_and_the_stop_is_half_the_debit_at_the_natural():
    chain = bsm_chain(expiries={45: 0.20})
    ctx = Ctx(NOW, ivr=0.1, regime="low_vol")
    s = strategies.create("iv_rank_debit", {"rules.dte_exit": None})
    [intent] = s.on_chain(ctx, chain)
    fill(s, ctx, intent, ["10.00", "6.00"])  # debit 4.00: max profit 6.00, max loss 4.00
    [trade] = s.active_trades()
    assert (trade.max_profit, trade.max_loss) == (pytest.approx(6.0), pytest.approx(4.0))
    rows = [chain.row_of(leg.symbol) for leg in intent.legs]
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[rows], ask[rows] = [8.00, 6.05], [8.10, 6.15]  # value 8.05 − 6.10 = 1.95: loss 2.05 ≥ 2.00
    [stop] = s.on_chain(Ctx(close_of("2024-03-05"), regime="low_vol"), chain.with_quotes(bid, ask))
    assert stop.tag.endswith(":close:stop") and stop.limit_price == Decimal("-1.85")  # the natural: 8.00 − 6.15


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="iv_rank_max"):
        strategies.create("iv_rank_debit", {"iv_rank_max": 1.5})
    with pytest.raises(ValueError, match="dte_min"):
        strategies.create("iv_rank_debit", {"dte_min": 60, "dte_max": 30})
    with pytest.raises(ValueError, match="delta_shares"):
        strategies.create("iv_rank_debit", {"greeks.delta_shares": 0})


def test_one_year_backtest_trades_without_denials_and_reconciles():
    result = run_backtest("iv_rank_debit", sim_year())
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
