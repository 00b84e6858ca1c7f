"""regime_router: entries only from the children allowed in the current regime; exits and order updates always
reach the child that owns them."""

from __future__ import annotations

import pytest

from engine import strategies
from engine.model import OrderStatus
from tests.strategies.option_chains import (
    Ctx,
    bsm_chain,
    close_of,
    entry_denials,
    fill,
    fills_of,
    order_of,
    run_backtest,
    sim_year,
)

NOW = close_of("2024-03-01")
CHAIN = bsm_chain(expiries={30: 0.25, 60: 0.20})  # butterflies and (inverted) calendars both have a trade here
CHILDREN = [{"name": "butterfly", "regimes": ["iv_contraction", "high_vol"]},
            {"name": "calendar", "regimes": ["high_vol"]}]


def router(**extra):
    return strategies.create("regime_router", {"children": CHILDREN, **extra})


def test_only_children_allowed_in_the_regime_open_trades_under_the_routers_id():
    r = router()
    [intent] = r.on_chain(Ctx(NOW, ivr=0.5, regime="iv_contraction"), CHAIN)
    assert intent.strategy_id == "regime_router" and intent.source == "strategy:regime_router"
    assert intent.tag == "regime_router.butterfly-00001:open"
    assert list(router().on_chain(Ctx(NOW, ivr=0.5, regime="neutral"), CHAIN)) == []


def test_one_new_trade_per_snapshot_in_child_order_unless_more_are_allowed():
    ctx = Ctx(NOW, ivr=0.5, regime="high_vol")
    assert [i.tag for i in router().on_chain(ctx, CHAIN)] == ["regime_router.butterfly-00001:open"]
    both = router(max_entries_per_chain=2).on_chain(ctx, CHAIN)
    assert [i.tag for i in both] == ["regime_router.butterfly-00001:open", "regime_router.calendar-00001:open"]


def test_fills_reach_the_owner_and_its_exits_go_on_in_a_regime_that_forbids_entries():
    r = router(max_entries_per_chain=2)
    ctx = Ctx(NOW, ivr=0.5, regime="high_vol")
    fly, cal = r.on_chain(ctx, CHAIN)
    fill(r, ctx, fly, ["12.00", "6.00", "2.00"])  # debit 2.00 → the butterfly child holds it
    butterfly, calendar = r.children
    assert [t.state for t in butterfly.active_trades()] == ["open"]
    assert [t.state for t in calendar.active_trades()] == ["opening"]  # its order is still working
    # the regime turns neutral (no child may open) and the butterfly reaches its profit target
    rows = [CHAIN.row_of(leg.symbol) for leg in fly.legs]
    bid, ask = CHAIN.bid.copy(), CHAIN.ask.copy()
    bid[rows], ask[rows] = [14.05, 6.00, 2.00], [14.15, 6.10, 2.10]  # +2.05 ≥ 25 % of the max profit 8.00
    later = Ctx(close_of("2024-03-04"), ivr=0.5, regime="neutral")
    [close] = r.on_chain(later, CHAIN.with_quotes(bid, ask))
    assert close.tag == "regime_router.butterfly-00001:close:profit_target"
    assert close.strategy_id == "regime_router"
    # the calendar's entry expires unfilled at the close: its next attempt is an entry, not allowed now
    expired = order_of(cal, OrderStatus.EXPIRED, filled=False, now=later.now())
    assert list(r.on_order(later, expired)) == [] and calendar.active_trades() == []
    # the close fills: the butterfly's trade is closed
    done = order_of(close, now=later.now())
    r.on_order(later, done, fills_of(done, ["14.05", "6.10", "2.00"], later.now()))
    assert butterfly.active_trades() == []


def test_an_update_for_an_order_no_child_owns_is_ignored():
    r = router()
    [intent] = r.on_chain(Ctx(NOW, ivr=0.5, regime="iv_contraction"), CHAIN)
    stranger = order_of(intent).evolve(tag="someone-else-00001:open", updated_at=NOW)
    assert list(r.on_order(Ctx(NOW), stranger)) == []
    assert [t.state for t in r.children[0].active_trades()] == ["opening"]


def test_state_restores_every_childs_books_and_routes_by_tag_after_a_restart():
    r = router()
    ctx = Ctx(NOW, ivr=0.5, regime="iv_contraction")
    [intent] = r.on_chain(ctx, CHAIN)
    fill(r, ctx, intent, ["12.00", "6.00", "2.00"])
    again = router()
    again.restore(r.state())
    [trade] = again.children[0].active_trades()
    assert trade.state == "open" and trade.entry_net == pytest.approx(2.0)
    fresh = router()  # no saved owners: the child id in the tag still finds the owner
    fresh.restore({"children": r.state()["children"]})
    assert fresh._child_of("regime_router.butterfly-00001:close:stop") == 0


def test_bad_children_are_errors_that_name_them():
    with pytest.raises(ValueError, match="unknown child strategy 'nope'"):
        strategies.create("regime_router", {"children": [{"name": "nope", "regimes": ["low_vol"]}]})
    with pytest.raises(ValueError, match="unknown regimes"):
        strategies.create("regime_router", {"children": [{"name": "butterfly", "regimes": ["stormy"]}]})
    with pytest.raises(ValueError, match="regime_router"):
        strategies.create("regime_router", {"children": [{"name": "regime_router", "regimes": ["low_vol"]}]})
    with pytest.raises(ValueError, match="at least one child"):
        strategies.create("regime_router", {"children": []})
    with pytest.raises(ValueError, match="widht"):
        strategies.create("regime_router", {"children": [{"name": "butterfly", "params": {"widht": 5},
                                                          "regimes": ["low_vol"]}]})


def test_one_year_backtest_of_the_default_book_trades_and_reconciles():
    result = run_backtest("regime_router", sim_year())
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    assert result.reconciliation()["difference"] == 0
    children = {o["tag"].split("-")[0] for o in result.orders}
    assert len(children) >= 2  # more than one child traded
