"""calendar: sell the rich front month, buy the back month at the same strike; doubles on two strikes."""

from __future__ import annotations

import math
from decimal import Decimal

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

NOW = close_of("2024-03-01")
CTX = Ctx(NOW, ivr=0.5, regime="iv_contraction", nl=100_000)
INVERTED = {30: 0.25, 60: 0.20}  # the front 5 vol points over the back


def net(chain, intent, *, natural: bool) -> float:
    total = 0.0
    for leg in intent.legs:
        r = chain.row_of(leg.symbol)
        px = (chain.ask[r] if leg.signed_ratio > 0 else chain.bid[r]) if natural else chain.mid[r]
        total += leg.signed_ratio * float(px)
    return total


def test_inverted_term_structure_buys_the_atm_calendar_sized_by_its_debit():
    chain = bsm_chain(expiries=INVERTED)
    s = strategies.create("calendar")
    [intent] = s.on_chain(CTX, chain)
    assert legs_of(intent) == [("sell", 1, "SPY240331C00500000"), ("buy", 1, "SPY240430C00500000")]
    assert intent.limit_price == Decimal(str(round(net(chain, intent, natural=False), 2)))  # mid, a debit > 0
    assert intent.quantity == math.floor(2000 / (net(chain, intent, natural=True) * 100))


def test_normal_term_structure_below_the_threshold_then_no_trade():
    assert list(strategies.create("calendar").on_chain(CTX, bsm_chain(expiries={30: 0.18, 60: 0.20}))) == []
    # a threshold below zero accepts a mild contango
    [intent] = strategies.create("calendar", {"min_front_premium": -0.03}).on_chain(
        CTX, bsm_chain(expiries={30: 0.18, 60: 0.20}))
    assert intent.tag.endswith(":open")


def test_one_expiry_only_or_neutral_regime_then_no_trade():
    assert list(strategies.create("calendar").on_chain(CTX, bsm_chain(expiries={30: 0.25}))) == []
    neutral = Ctx(NOW, ivr=0.5, regime="neutral")
    assert list(strategies.create("calendar").on_chain(neutral, bsm_chain(expiries=INVERTED))) == []


def test_double_calendar_puts_a_put_calendar_below_and_a_call_calendar_above():
    s = strategies.create("calendar", {"double": True, "double_offset": 10})
    [intent] = s.on_chain(CTX, bsm_chain(expiries=INVERTED))
    assert legs_of(intent) == [("sell", 1, "SPY240331P00490000"), ("buy", 1, "SPY240430P00490000"),
                               ("sell", 1, "SPY240331C00510000"), ("buy", 1, "SPY240430C00510000")]


def test_open_calendar_closes_when_the_front_premium_is_gone_and_at_a_quarter_of_the_debit():
    chain = bsm_chain(expiries=INVERTED)
    s = strategies.create("calendar", {"rules.profit_target": None})
    [intent] = s.on_chain(CTX, chain)
    fill(s, CTX, intent, ["5.70", "7.70"])  # debit 2.00
    [trade] = s.active_trades()
    assert trade.entry_net == pytest.approx(2.0) and trade.max_loss == pytest.approx(2.0)
    later = close_of("2024-03-04")
    # the same quotes three days on: the front still 5 points over the back, above the −2 point exit
    assert list(s.on_chain(Ctx(later, regime="iv_contraction"), chain)) == []
    # the term structure normalised: the front 4 points under the back
    flat = bsm_chain("2024-03-04", expiries={27: 0.16, 57: 0.20})
    [close] = s.on_chain(Ctx(later, regime="iv_contraction"), flat)
    assert close.tag.endswith(":close:term_structure")
    assert legs_of(close) == [("buy", 1, "SPY240331C00500000"), ("sell", 1, "SPY240430C00500000")]
    # profit target: +25 % of the 2.00 debit, with the term-structure exit off
    s = strategies.create("calendar", {"exit_front_premium": None})
    [intent] = s.on_chain(CTX, chain)
    fill(s, CTX, intent, ["5.70", "7.70"])
    rows = [flat.row_of(leg.symbol) for leg in intent.legs]
    bid, ask = flat.bid.copy(), flat.ask.copy()
    bid[rows], ask[rows] = [4.00, 6.45], [4.10, 6.55]  # value 6.50 − 4.05 = 2.45: +0.45 < 0.50
    assert list(s.on_chain(Ctx(later), flat.with_quotes(bid, ask))) == []
    bid[rows], ask[rows] = [4.00, 6.50], [4.10, 6.60]  # 6.55 − 4.05 = 2.50: +0.50
    [close] = s.on_chain(Ctx(later), flat.with_quotes(bid, ask))
    assert close.tag.endswith(":close:profit_target")


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="back_gap"):
        strategies.create("calendar", {"back_gap": 7, "back_gap_min": 14})
    with pytest.raises(ValueError, match="front_dte_min"):
        strategies.create("calendar", {"front_dte_min": 50, "front_dte_max": 40})
    with pytest.raises(ValueError, match="double_offset"):
        strategies.create("calendar", {"double_offset": -5})


def test_simulated_chains_list_several_expiries_and_a_year_backtest_trades_and_reconciles():
    history = sim_year()
    assert len(set(history.chain(100).expiry.tolist())) >= 4  # weeklies and monthlies: a front and a back
    result = run_backtest("calendar", history)
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
