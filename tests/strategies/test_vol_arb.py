"""vol_arb: a vertical against the option whose mid is off the ensemble's fair value by more than costs + band."""

from __future__ import annotations

import numpy as np
import pytest

from engine import strategies
from engine.strategies.base import market_date
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


def shifted(chain, symbol: str, by: float):
    """``chain`` with one option's bid and ask moved by ``by`` dollars (a mispriced quote)."""
    r = chain.row_of(symbol)
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[r] += by
    ask[r] += by
    return chain.with_quotes(bid, ask)


def test_fair_quotes_on_a_smooth_smile_then_no_trade():
    assert list(strategies.create("vol_arb").on_chain(Ctx(NOW), bsm_chain(expiries={35: 0.20}))) == []


def test_a_rich_call_is_sold_against_the_call_five_higher():
    chain = shifted(bsm_chain(expiries={35: 0.20}), "SPY240405C00520000", 0.40)
    s = strategies.create("vol_arb")
    [intent] = s.on_chain(Ctx(NOW), chain)
    assert legs_of(intent) == [("sell", 1, "SPY240405C00520000"), ("buy", 1, "SPY240405C00525000")]
    a, b = chain.row_of("SPY240405C00520000"), chain.row_of("SPY240405C00525000")
    assert float(intent.limit_price) == pytest.approx(-(chain.mid[a] - chain.mid[b]), abs=0.006)  # at the mid
    [trade] = s.active_trades()
    assert trade.info["edge"] > trade.info["band"] + s.params.min_edge
    assert 0.3 < trade.info["edge"] < 0.45  # most of the 0.40 the quote was moved by


def test_a_cheap_put_is_bought_against_the_put_five_lower():
    chain = shifted(bsm_chain(expiries={35: 0.20}), "SPY240405P00480000", -0.40)
    [intent] = strategies.create("vol_arb").on_chain(Ctx(NOW), chain)
    assert legs_of(intent) == [("buy", 1, "SPY240405P00480000"), ("sell", 1, "SPY240405P00475000")]


def test_a_mispricing_inside_the_spread_plus_band_is_not_traded():
    chain = shifted(bsm_chain(expiries={35: 0.20}), "SPY240405C00520000", 0.06)
    assert list(strategies.create("vol_arb").on_chain(Ctx(NOW), chain)) == []


def test_only_the_prefiltered_candidates_are_priced_by_the_ensemble():
    base = bsm_chain(expiries={35: 0.20, 63: 0.22})
    chain = shifted(shifted(base, "SPY240405C00520000", 0.40), "SPY240405P00480000", -0.30)
    s = strategies.create("vol_arb", {"max_candidates": 2})
    cand, wings = s.candidates(chain, market_date(NOW))
    assert 1 <= len(cand) <= 2 and chain.row_of("SPY240405C00520000") in cand
    val = s.value_rows(chain, np.concatenate([cand, wings]))
    priced = np.nonzero(np.isfinite(val.fair))[0]
    assert set(priced) <= set(cand) | set(wings)
    assert np.isfinite(val.dispersion[priced]).all() and (val.dispersion[priced] > 0).all()  # two models differ


def test_exit_when_the_edge_has_closed_and_not_before():
    rich = shifted(bsm_chain(expiries={35: 0.20}), "SPY240405C00520000", 0.40)
    s = strategies.create("vol_arb")
    ctx = Ctx(NOW)
    [intent] = s.on_chain(ctx, rich)
    fill(s, ctx, intent, ["4.00", "2.50"])
    later = Ctx(close_of("2024-03-04"))
    assert [i for i in s.on_chain(later, rich) if ":close:" in i.tag] == []  # still mispriced: hold
    [close] = s.on_chain(later, bsm_chain(expiries={35: 0.20}))  # the quote is back on the smile
    assert close.tag.endswith(":close:edge_closed")
    assert legs_of(close) == [("buy", 1, "SPY240405C00520000"), ("sell", 1, "SPY240405C00525000")]


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="trade_delta"):
        strategies.create("vol_arb", {"trade_delta": (0.6, 0.2)})
    with pytest.raises(ValueError, match="dte_min"):
        strategies.create("vol_arb", {"dte_min": 90, "dte_max": 30})
    with pytest.raises(ValueError, match="lam"):
        strategies.create("vol_arb", {"jumps.lam": -1})


def test_one_year_backtest_trades_without_denials_and_reconciles():
    result = run_backtest("vol_arb", sim_year())
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert any(":close:edge_closed" in o["tag"] and o["status"] == "filled" for o in result.orders)
    assert result.reconciliation()["difference"] == 0
