"""Positions as strategies on a real engine: a paper fill grouped and named, flat view, roll as ONE order."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from engine.bus.commands import SubmitOrder
from engine.bus.events import ChainUpdated
from engine.model import Leg, OpenClose, OrderIntent, OrderStatus, Side
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import XYZ_CHAIN, XYZ_FRONT, priced_chain, xyz_put
from widgets.base import EventBatch
from widgets.order_ticket import TicketPanel
from widgets.positions_view import PositionsPanel

CHAIN, FRONT, _put = XYZ_CHAIN, XYZ_FRONT, xyz_put




def _open_credit_spread(qtbot, eng) -> None:
    """Sell the 95/90 put vertical twice through the one order path and wait for the paper fill."""
    short, sb, _ = _put(95.0)
    long_, _, la = _put(90.0)
    credit = Decimal(str(round(sb - la - 0.05, 2)))
    order = run_async(qtbot, eng.bus.send(SubmitOrder(intent=OrderIntent(
        legs=(Leg(short, Side.SELL), Leg(long_, Side.BUY)), quantity=2, limit_price=-credit))))
    wait_for_condition(qtbot, lambda: eng.oms.order(order.order_id).status is OrderStatus.FILLED, timeout=10)
    wait_for_condition(qtbot, lambda: len(eng.portfolio.positions) == 2, timeout=10)


def _panel(qtbot, eng) -> PositionsPanel:
    panel = PositionsPanel(eng)
    qtbot.addWidget(panel)
    panel.resize(1200, 260)
    panel.apply_events(EventBatch.from_events([ChainUpdated(chain=CHAIN)]))
    panel.refresh(force=True)
    return panel


def test_a_paper_spread_is_one_named_group_with_its_figures(qtbot, paper, shot) -> None:
    _open_credit_spread(qtbot, paper)
    panel = _panel(qtbot, paper)
    m = panel.model
    groups = [k for k in m.keys() if str(k).startswith("group:")]
    assert len(groups) == 1
    g = m.row_of(groups[0])
    assert m.value(g, "name") == "XYZ 95/90 put vertical (credit)"
    assert m.value(g, "dte") == 18
    legs = [m.row_of(p.symbol) for p in paper.portfolio.positions.values()]
    assert m.value(g, "pnl") == pytest.approx(sum(m.value(r, "pnl") for r in legs))
    assert m.value(g, "theta") == pytest.approx(sum(m.value(r, "theta") for r in legs))
    max_profit = panel.groups[0].max_profit
    assert max_profit > 0 and m.value(g, "max_pct") == pytest.approx(m.value(g, "pnl") / max_profit)
    shot(panel, "positions_grouped")
    panel.grouped_check.setChecked(False)  # flat: only the positions
    assert sorted(m.keys()) == sorted(p.symbol for p in paper.portfolio.positions.values())


def test_roll_is_one_order_that_closes_the_old_and_opens_the_new_and_fills(qtbot, paper) -> None:
    _open_credit_spread(qtbot, paper)
    panel = _panel(qtbot, paper)
    ticket = TicketPanel(paper)
    qtbot.addWidget(ticket)
    panel.select_keys(next(k for k in panel.model.keys() if str(k).startswith("group:")))
    panel.roll_dte_spin.setValue(45)  # 17 Apr is 46 days out
    panel.roll_button.click()
    got = sorted((leg.open_close.value, str(leg.instrument.expiry), float(leg.instrument.strike), leg.side.value)
                 for leg in ticket.legs)
    assert got == [("close", "2026-03-20", 90.0, "sell"), ("close", "2026-03-20", 95.0, "buy"),
                   ("open", "2026-04-17", 90.0, "buy"), ("open", "2026-04-17", 95.0, "sell")]
    assert ticket.qty_spin.value() == 2

    def priced() -> bool:  # the ticket follows XYZ: the window's refresh brings its quotes
        ticket.apply_events(EventBatch.from_events([ChainUpdated(chain=CHAIN)]))
        return ticket.prices is not None and ticket.prices.complete

    qtbot.waitUntil(priced, timeout=5000)
    assert ticket.prices.mid == pytest.approx(ticket.prices.natural, abs=0.5)  # the roll's net price is shown
    ticket.set_price_from("natural")  # marketable, and inside the risk engine's collar around mid
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    order = sig.args[0]
    assert len(order.legs) == 4 and order.quantity == 2  # ONE order: close and open together
    wait_for_condition(qtbot, lambda: paper.oms.order(order.order_id).status in (
        OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.DENIED), timeout=10)
    assert paper.oms.order(order.order_id).status is OrderStatus.FILLED, paper.oms.order(order.order_id).reason
    held = {p.symbol: p.quantity for p in paper.portfolio.positions.values() if p.quantity}
    opened = {leg.symbol: 2 * leg.side.sign for leg in order.legs if leg.open_close is OpenClose.OPEN}
    assert held == opened and len(opened) == 2


def test_roll_without_a_selection_or_a_later_expiry_says_why(qtbot, paper) -> None:
    _open_credit_spread(qtbot, paper)
    panel = _panel(qtbot, paper)
    panel.roll_button.click()
    assert "Select a strategy group" in panel.last_error
    panel.select_keys(next(k for k in panel.model.keys() if str(k).startswith("group:")))
    panel.roll_shift_spin.setValue(-30.0)  # 65/60 puts are not listed
    panel.roll_button.click()
    assert panel.last_error in ("no 65 put listed at 2026-04-17", "no 60 put listed at 2026-04-17")


def test_zero_dte_position_shows_theta_to_expiry_and_per_hour(qtbot, paper) -> None:
    from datetime import date

    from engine.bus.events import PositionChanged
    from engine.model import Position

    zero = priced_chain(expiries=(date(2026, 3, 2), date(2026, 3, 20)))  # expires today at 16:00 New York
    paper.bus.publish(ChainUpdated(chain=zero))
    i = int(np.flatnonzero((zero.expiry == zero.expiries()[0]) & (zero.strike == 100.0) & ~zero.is_call)[0])
    pos = Position(zero.option(i), -1, Decimal(str(zero.bid[i])))
    ev = PositionChanged(position=pos)
    paper.bus.publish(ev)
    panel = PositionsPanel(paper)
    qtbot.addWidget(panel)
    panel.apply_events(EventBatch.from_events([ev, ChainUpdated(chain=zero)]))
    wait_for_condition(qtbot, lambda: (panel.refresh(force=True), panel.model.row_of(pos.symbol) >= 0)[1], timeout=5)
    m = panel.model
    r = m.row_of(pos.symbol)
    text = m.value(r, "theta_exp")
    mark = m.value(r, "mark")
    assert text == f"+${100 * mark:,.0f} (+${100 * mark / 6:,.0f}/h)"  # at the money: all of it decays in 6 h
    assert np.isnan(m.value(r, "theta"))  # per day would overstate it
    assert f"0DTE Θ to exp +${100 * mark:,.0f}" in panel.summary.text()
    assert m.value(m.row_of(next(k for k in m.keys() if str(k).startswith("group:"))), "theta_exp") == text


def test_adjust_closes_a_leg_and_opens_another_in_one_order(qtbot, paper) -> None:
    _open_credit_spread(qtbot, paper)
    panel = _panel(qtbot, paper)
    ticket = TicketPanel(paper)
    qtbot.addWidget(ticket)
    short = next(p for p in paper.portfolio.positions.values() if p.quantity < 0)
    panel.select_keys(short.symbol)  # adjust the short leg: buy it back, sell the 100 put instead
    panel.close_button.click()
    i = int(np.flatnonzero((CHAIN.expiry == FRONT) & (CHAIN.strike == 100.0) & ~CHAIN.is_call)[0])
    ticket.add_leg(CHAIN.option(i), Side.SELL, 1)  # a chain click adds the opening leg (× quantity 2)
    intent = ticket.build_intent()
    assert intent.quantity == 2
    assert [(leg.symbol, leg.side, leg.ratio, leg.open_close) for leg in intent.legs] == [
        (short.symbol, Side.BUY, 1, OpenClose.CLOSE), (CHAIN.option(i).key, Side.SELL, 1, OpenClose.OPEN)]
