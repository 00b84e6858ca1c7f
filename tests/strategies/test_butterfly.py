"""butterfly: classic and broken-wing butterflies, sized by their worst case at expiry."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from engine import strategies
from engine.strategies.structures import payoff_limits
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
CTX = Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=100_000)


def natural_and_mid(chain, intent) -> tuple[float, float]:
    nat = mid = 0.0
    for leg in intent.legs:
        r = chain.row_of(leg.symbol)
        nat += leg.signed_ratio * float(chain.ask[r] if leg.signed_ratio > 0 else chain.bid[r])
        mid += leg.signed_ratio * float(chain.mid[r])
    return nat, mid


def test_call_butterfly_centred_at_the_money_sized_by_its_debit():
    chain = bsm_chain(expiries={30: 0.20})
    s = strategies.create("butterfly")
    [intent] = s.on_chain(CTX, chain)
    assert legs_of(intent) == [("buy", 1, "SPY240331C00490000"), ("sell", 2, "SPY240331C00500000"),
                               ("buy", 1, "SPY240331C00510000")]
    natural, mid = natural_and_mid(chain, intent)
    assert intent.limit_price == Decimal(str(round(mid, 2)))  # the walk starts at mid
    # worst case = the natural debit; half of the 2 % budget: floor(1000 / (natural × 100))
    assert intent.quantity == math.floor(1000 / (natural * 100))


def test_broken_wing_put_butterfly_for_a_credit_sized_by_the_wider_wing():
    chain = bsm_chain(expiries={30: 0.20})
    s = strategies.create("butterfly", {"right": "put", "lower_width": 15, "upper_width": 5})
    [intent] = s.on_chain(CTX, chain)
    assert legs_of(intent) == [("buy", 1, "SPY240331P00485000"), ("sell", 2, "SPY240331P00500000"),
                               ("buy", 1, "SPY240331P00505000")]
    natural, _ = natural_and_mid(chain, intent)
    assert natural < 0 and intent.limit_price < 0  # opened for a credit
    # below 485 the put fly is worth 485 + 505 − 2 × 500 = −10: worst case 10 − credit
    assert payoff_limits(intent.legs, natural) == pytest.approx((5 - natural, 10 + natural))
    assert intent.quantity == math.floor(1000 / ((10 + natural) * 100))


def test_fill_sets_max_profit_and_loss_from_the_expiry_payoff():
    chain = bsm_chain(expiries={30: 0.20})
    s = strategies.create("butterfly", {"lower_width": 5, "upper_width": 15})
    [intent] = s.on_chain(CTX, chain)
    fill(s, CTX, intent, ["7.00", "4.50", "0.80"])  # 7.00 − 9.00 + 0.80 = −1.20: a credit
    [trade] = s.active_trades()
    # call BWB 495/500/515: worth +5 at the body and 2 × 500 − 495 − 515 = −10 above 515
    assert trade.entry_net == pytest.approx(-1.20)
    assert trade.max_profit == pytest.approx(5 + 1.20) and trade.max_loss == pytest.approx(10 - 1.20)


@pytest.mark.parametrize(("ivr", "regime", "params"), [
    (0.2, "iv_contraction", {}), (0.5, "neutral", {}), (0.5, "iv_contraction", {"lower_width": 7}),
    (0.5, "iv_contraction", {"dte_min": 40, "dte_max": 60}),
])
def test_when_rank_regime_strikes_or_expiry_do_not_fit_then_no_trade(ivr, regime, params):
    s = strategies.create("butterfly", params)
    assert list(s.on_chain(Ctx(NOW, ivr=ivr, regime=regime), bsm_chain(expiries={30: 0.2}))) == []


def test_profit_target_is_a_quarter_of_the_max_profit():
    chain = bsm_chain(expiries={30: 0.20})
    s = strategies.create("butterfly", {"rules.dte_exit": None})
    [intent] = s.on_chain(CTX, chain)
    fill(s, CTX, intent, ["12.00", "6.00", "2.00"])  # debit 2.00; max profit 8.00; target +2.00
    rows = [chain.row_of(leg.symbol) for leg in intent.legs]
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[rows], ask[rows] = [12.95, 6.00, 2.00], [13.05, 6.10, 2.10]  # mid value 13 − 12.10 + 2.05 = 2.95
    assert list(s.on_chain(Ctx(close_of("2024-03-04")), chain.with_quotes(bid, ask))) == []
    bid[rows], ask[rows] = [13.95, 6.00, 2.00], [14.05, 6.10, 2.10]  # 14 − 12.10 + 2.05 = 3.95: +1.95
    assert list(s.on_chain(Ctx(close_of("2024-03-04")), chain.with_quotes(bid, ask))) == []
    bid[rows], ask[rows] = [14.05, 6.00, 2.00], [14.15, 6.10, 2.10]  # 4.05: +2.05 ≥ 2.00
    [close] = s.on_chain(Ctx(close_of("2024-03-04")), chain.with_quotes(bid, ask))
    assert close.tag.endswith(":close:profit_target") and [leg.ratio for leg in close.legs] == [1, 2, 1]


def test_changing_one_rule_keeps_the_butterflys_other_rules():
    rules = strategies.create("butterfly", {"rules.dte_exit": 3}).params.rules
    assert (rules.dte_exit, rules.profit_target, rules.stop_multiple) == (3, 0.25, None)


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="lower_width"):
        strategies.create("butterfly", {"lower_width": 0})
    with pytest.raises(ValueError, match="right"):
        strategies.create("butterfly", {"right": "straddle"})
    with pytest.raises(ValueError, match="unknown regimes"):
        strategies.create("butterfly", {"regimes": ["calm"]})


def test_one_year_backtest_trades_without_denials_and_reconciles():
    result = run_backtest("butterfly", sim_year())
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
