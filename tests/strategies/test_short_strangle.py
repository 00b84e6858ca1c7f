"""short_strangle: delta-picked short put + call, sized against the risk engine's stress loss, managed by rules."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.model import OrderStatus
from engine.strategies.base import SizingLimits
from engine.strategies.short_strangle import strangle_stress_loss
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


def nearest_delta_strike(chain, target: float, call: bool) -> float:
    rows = np.nonzero(chain.is_call == call)[0]
    d = np.abs(chain.vendor["vendor_delta"][rows])
    return float(chain.strike[rows][np.argmin(np.abs(d - target))])


def test_large_account_sells_the_16_delta_put_and_call_at_mid():
    chain = bsm_chain(expiries={45: 0.20})
    s = strategies.create("short_strangle")
    [intent] = s.on_chain(Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=10_000_000), chain)
    put_k, call_k = nearest_delta_strike(chain, 0.16, False), nearest_delta_strike(chain, 0.16, True)
    assert legs_of(intent) == [("sell", 1, f"SPY240415P00{int(put_k)}000"), ("sell", 1, f"SPY240415C00{int(call_k)}000")]
    rows = [chain.row_of(leg.symbol) for leg in intent.legs]
    assert intent.limit_price == -Decimal(str(round(float(chain.mid[rows].sum()), 2)))  # the mid, a credit
    # the stress budget (90 % of 2 % of 10M) allows ~50; the gamma budget (25 shares per $) binds first
    assert intent.quantity == 19
    gamma = abs(combo_greeks(chain, intent.legs)["gamma"])
    assert gamma * 19 <= 25.0 < gamma * 20


def test_small_account_moves_the_strikes_out_until_the_stress_loss_fits_the_budget():
    chain = bsm_chain(expiries={45: 0.20})
    s = strategies.create("short_strangle")
    [intent] = s.on_chain(Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=100_000), chain)
    put, call = (float(leg.instrument.strike) for leg in intent.legs)
    assert put < nearest_delta_strike(chain, 0.16, False) and call > nearest_delta_strike(chain, 0.16, True)
    credit = float(chain.bid[chain.row_of(intent.legs[0].symbol)] + chain.bid[chain.row_of(intent.legs[1].symbol)])
    loss = strangle_stress_loss(put, call, credit, 500.0, 0.15)
    assert intent.quantity == 1 and loss * 100 <= 0.9 * 0.02 * 100_000  # 90 % of the 2 % budget
    # one listed strike less far out on the side that loses more would not have fitted
    assert strangle_stress_loss(put + 5, call, credit, 500.0, 0.15) * 100 > 0.9 * 0.02 * 100_000


def test_when_nothing_fits_down_to_the_minimum_delta_then_no_trade():
    chain = bsm_chain(expiries={45: 0.20})
    s = strategies.create("short_strangle", {"min_delta": 0.10})
    assert list(s.on_chain(Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=100_000), chain)) == []
    # a wider stress move than the profile's 15 % makes the same account too small even at 3 delta
    s = strategies.create("short_strangle")
    wide = Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=30_000, sizing=SizingLimits(stress_move=0.30))
    assert list(s.on_chain(wide, chain)) == []


@pytest.mark.parametrize(("ivr", "regime"), [(0.2, "iv_contraction"), (0.5, "neutral"), (0.5, "iv_expansion"),
                                             (float("nan"), "high_vol")])
def test_when_iv_rank_low_or_regime_not_listed_then_no_trade(ivr, regime):
    s = strategies.create("short_strangle")
    assert list(s.on_chain(Ctx(NOW, ivr=ivr, regime=regime, nl=10_000_000), bsm_chain(expiries={45: 0.2}))) == []


def test_high_vol_regime_trades_a_quarter_of_the_size():
    chain = bsm_chain(expiries={45: 0.20})
    [full] = strategies.create("short_strangle").on_chain(Ctx(NOW, ivr=0.9, regime="iv_contraction", nl=10_000_000), chain)
    [quarter] = strategies.create("short_strangle").on_chain(Ctx(NOW, ivr=0.9, regime="high_vol", nl=10_000_000), chain)
    assert quarter.quantity == 4 and full.quantity == 19  # a quarter of the gamma budget: 6.25 ÷ 1.29 → 4


def test_stress_loss_is_the_worse_side_net_of_the_credit():
    assert strangle_stress_loss(450, 560, 3.0, 500, 0.15) == pytest.approx(max(450 - 425, 575 - 560) - 3.0)
    assert strangle_stress_loss(400, 600, 3.0, 500, 0.15) == pytest.approx(-3.0)  # beyond both probes


def test_profit_target_then_buys_both_back_and_stop_goes_at_the_natural():
    chain = bsm_chain(expiries={45: 0.20})
    s = strategies.create("short_strangle", {"rules.dte_exit": None})
    ctx = Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=100_000)
    [intent] = s.on_chain(ctx, chain)
    fill(s, ctx, intent, ["0.80", "0.60"])  # credit 1.40
    [trade] = s.active_trades()
    assert trade.entry_net == pytest.approx(-1.40) and trade.max_profit == pytest.approx(1.40)
    # the options lose value: both at 0.30 / 0.40 → mid value −0.35 each ... P&L 0.70 = 50 %
    rows = [chain.row_of(leg.symbol) for leg in intent.legs]
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[rows], ask[rows] = 0.30, 0.40
    later = close_of("2024-03-08")
    [close] = s.on_chain(Ctx(later, ivr=0.5, regime="iv_contraction"), chain.with_quotes(bid, ask))
    assert close.tag.endswith(":close:profit_target") and close.limit_price == Decimal("0.70")
    assert [leg.side.value for leg in close.legs] == ["buy", "buy"]
    # a fresh trade that goes wrong: loss ≥ 2 × credit → stop at the natural (the asks)
    s = strategies.create("short_strangle", {"rules.dte_exit": None})
    [intent] = s.on_chain(ctx, chain)
    fill(s, ctx, intent, ["0.80", "0.60"])
    bid[rows], ask[rows] = [2.50, 0.10], [2.60, 0.20]  # value 2.70 at mid: loss 1.30, the stop is at 2.80
    assert list(s.on_chain(Ctx(later), chain.with_quotes(bid, ask))) == []  # 1.30 < 2 × 1.40
    bid[rows], ask[rows] = [3.50, 0.10], [3.60, 0.20]  # loss 2.30 at mid … still < 2.80
    assert list(s.on_chain(Ctx(later), chain.with_quotes(bid, ask))) == []
    bid[rows], ask[rows] = [4.10, 0.10], [4.20, 0.20]  # mid value 4.30: loss 2.90 ≥ 2.80
    [stop] = s.on_chain(Ctx(later), chain.with_quotes(bid, ask))
    assert stop.tag.endswith(":close:stop") and stop.limit_price == Decimal("4.40")  # the asks: 4.20 + 0.20


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="min_delta"):
        strategies.create("short_strangle", {"min_delta": 0.2, "short_delta": 0.16})
    with pytest.raises(ValueError, match="unknown regimes"):
        strategies.create("short_strangle", {"regimes": ["sunny"]})
    with pytest.raises(ValueError, match="dte_min"):
        strategies.create("short_strangle", {"dte_min": 60, "dte_max": 30})


def test_one_year_backtest_trades_without_denials_and_reconciles():
    # a 2 % stress budget carries a SPY strangle from about $300k up: a $500k account
    result = run_backtest("short_strangle", sim_year(), initial_cash=500_000)
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
    assert all(o["status"] != OrderStatus.DENIED.value for o in result.orders)
