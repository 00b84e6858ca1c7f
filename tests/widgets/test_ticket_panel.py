"""Order ticket: chain clicks build legs, templates, live prices/figures, submit, kill switch blocks it."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.bus.events import ChainUpdated, QuotesUpdated, TradingStateChanged
from engine.model import Side
from tests.qt_fixtures import run_async
from tests.widgets.conftest import priced_chain
from widgets.base import EventBatch
from widgets.chain_table import ChainPanel
from widgets.order_ticket import TicketPanel


def _panels(qtbot, engine):
    chain = ChainPanel(engine, strike_window=4)
    ticket = TicketPanel(engine)
    for w in (chain, ticket):
        qtbot.addWidget(w)
    chain.resize(1300, 400)
    ticket.resize(620, 520)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=priced_chain())])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    return chain, ticket


@pytest.fixture()
def panels(qtbot, engine):
    return _panels(qtbot, engine)


def _click(qtbot, chain, strike, key):
    qtbot.mouseClick(chain.table.viewport(), Qt.MouseButton.LeftButton, pos=chain.cell_rect(strike, key).center())


def test_chain_clicks_build_a_vertical_with_live_figures(panels, qtbot, shot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "c_ask")
    _click(qtbot, chain, 105.0, "c_bid")
    assert [(leg.side, leg.symbol) for leg in ticket.legs] == [
        (Side.BUY, "XYZ260320C00100000"), (Side.SELL, "XYZ260320C00105000")]
    c = priced_chain()
    r1, r2 = c.row_of("XYZ260320C00100000"), c.row_of("XYZ260320C00105000")
    assert ticket.prices.natural == pytest.approx(c.ask[r1] - c.bid[r2])
    # the limit defaults to the mid on the tick grid; debit spread: risk = premium, reward = width − premium
    assert ticket.limit_price() == Decimal(str(round(c.mid[r1] - c.mid[r2], 2)))
    debit = float(ticket.limit_price())
    assert ticket.summary.max_loss == pytest.approx(debit * 100)
    assert ticket.summary.max_profit == pytest.approx((5 - debit) * 100)
    assert ticket.summary.breakevens == pytest.approx((100 + debit,))
    assert 0 < ticket.pop < 1
    assert 0 < ticket.greeks["delta"] < 100  # long call spread: positive delta, less than 1 share per contract
    assert ticket.figure_labels["breakevens"].text() == f"{100 + debit:,.2f}"
    assert "debit" in ticket.submit_button.text()
    shot(ticket, "ticket")


def test_same_contract_again_adds_ratio_and_opposite_side_nets_off(panels, qtbot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "p_ask")
    _click(qtbot, chain, 100.0, "p_ask")
    assert [(leg.side, leg.ratio) for leg in ticket.legs] == [(Side.BUY, 2)]
    _click(qtbot, chain, 100.0, "p_bid")
    _click(qtbot, chain, 100.0, "p_bid")
    assert ticket.legs == []


def test_template_builds_iron_condor_on_selected_expiry_as_credit(panels) -> None:
    _chain, ticket = panels
    ticket.template_box.setCurrentIndex(ticket.template_box.findText("Iron condor"))
    assert ticket.delta_spin.isVisibleTo(ticket) and not ticket.width_spin.isVisibleTo(ticket)
    assert ticket.delta_spin.value() == pytest.approx(0.16)  # by delta, one standard deviation out
    ticket.wing_dollars_spin.setValue(5)
    ticket.build_button.click()
    strikes = [(leg.side, float(leg.instrument.strike)) for leg in ticket.legs]
    assert strikes == [(Side.BUY, 90.0), (Side.SELL, 95.0), (Side.SELL, 105.0), (Side.BUY, 110.0)], strikes
    assert ticket.summary.max_loss < 500 and ticket.pop > 0.5
    assert ticket.limit_price() < 0 and ticket.price_kind.text() == "credit"
    assert ticket.summary.defined_risk and ticket.summary.max_loss > 0
    assert len(ticket.summary.breakevens) == 2


def test_template_outside_strikes_shows_the_reason(panels) -> None:
    _chain, ticket = panels
    ticket.template_box.setCurrentIndex(ticket.template_box.findText("Strangle"))
    ticket.width_spin.setValue(9)
    ticket.build_button.click()
    assert "outside the listed strikes" in ticket.message.text() and ticket.legs == []


def test_natural_button_and_streamed_quotes_update_prices(panels, qtbot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "c_ask")
    ticket.natural_button.click()
    c = priced_chain()
    row = c.row_of("XYZ260320C00100000")
    assert float(ticket.limit_price()) == pytest.approx(c.ask[row])
    ticket.STREAM_REFRESH_S = 0.0  # every streamed batch refreshes
    ticket.apply_events(EventBatch.from_events([
        QuotesUpdated(underlying="XYZ", rows=np.array([row]), bid=np.array([3.0]), ask=np.array([3.4]))]))
    assert ticket.prices.mid == pytest.approx(3.2)
    assert float(ticket.limit_price()) == pytest.approx(c.ask[row])  # a price the user chose is kept
    ticket.STREAM_REFRESH_S = 60.0  # a burst of quotes inside the refresh interval is held back ...
    ticket.apply_events(EventBatch.from_events([
        QuotesUpdated(underlying="XYZ", rows=np.array([row]), bid=np.array([3.2]), ask=np.array([3.6]))]))
    assert ticket.prices.mid == pytest.approx(3.2)
    ticket.recompute()  # ... until the next refresh, which uses the newest quotes
    assert ticket.prices.mid == pytest.approx(3.4)


def test_submit_goes_down_the_real_order_path(qtbot, desk) -> None:
    chain, ticket = _panels(qtbot, desk)
    _click(qtbot, chain, 95.0, "p_bid")
    _click(qtbot, chain, 90.0, "p_ask")  # a put credit spread: defined risk
    ticket.qty_spin.setValue(3)
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    order = sig.args[0]
    assert order.quantity == 3 and order.legs[0].side is Side.SELL and order.limit_price < 0
    assert order.source == "gui" and desk.oms.order(order.order_id) is not None
    assert "pending approval" in ticket.message.text()


def test_denied_order_shows_the_risk_engine_reason(qtbot, desk) -> None:
    chain, ticket = _panels(qtbot, desk)
    _click(qtbot, chain, 100.0, "c_bid")  # a naked short call: undefined risk
    ticket.qty_spin.setValue(500)
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    order = sig.args[0]
    assert order.status.value == "denied"
    assert "denied" in ticket.message.text() and order.reason in ticket.message.text()


def test_kill_switch_blocks_the_ticket(panels, qtbot, shot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "c_ask")
    ticket.apply_events(EventBatch.from_events([
        TradingStateChanged(state="HALTED", previous="ACTIVE", reason="daily loss limit")]))
    assert not ticket.submit_button.isEnabled()
    assert "HALTED" in ticket.state_banner.text() and "daily loss limit" in ticket.state_banner.text()
    shot(ticket, "ticket-halted")
    ticket.submit()
    assert "halted" in ticket.message.text()
    ticket.apply_events(EventBatch.from_events([TradingStateChanged(state="ACTIVE", previous="HALTED")]))
    assert ticket.submit_button.isEnabled() and ticket.state_banner.isHidden()
    assert ticket.message.text() == ""  # the old refusal is gone once trading is active again


def test_ticket_status_line_follows_the_approvers_reject(qtbot, desk) -> None:
    from engine.bus.commands import RejectOrder
    from engine.bus.events import OrderRejected

    chain, ticket = _panels(qtbot, desk)
    _click(qtbot, chain, 95.0, "p_bid")
    _click(qtbot, chain, 90.0, "p_ask")
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    order = sig.args[0]
    assert "pending approval" in ticket.message.text()
    rejected = run_async(qtbot, desk.bus.send(RejectOrder(order_id=order.order_id, reason="too wide", by="me")))
    assert rejected.status.value == "rejected"
    ticket.apply_events(EventBatch.from_events([OrderRejected(order=rejected)]))
    text = ticket.message.text()
    assert "rejected" in text and "too wide" in text and "pending" not in text


def test_clear_empties_the_legs_and_the_old_limit(panels, qtbot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "c_ask")
    ticket.set_limit_price(Decimal("2.35"))
    ticket.clear_button.click()
    assert ticket.legs == [] and ticket.limit_price() == Decimal("0")
    assert ticket.submit_button.text() == "Submit order"


def test_naked_put_max_loss_says_to_zero_and_at_the_stress_move(panels, qtbot) -> None:
    chain, ticket = panels
    _click(qtbot, chain, 100.0, "p_bid")  # sell one 100 put
    credit = -float(ticket.limit_price())
    s = ticket.summary
    assert not s.defined_risk
    assert s.max_loss == pytest.approx((100.0 - credit) * 100)  # the underlying goes to zero
    assert 0 < s.stress_loss < s.max_loss
    text = ticket.figure_labels["max_loss"].text()
    assert text == f"${s.max_loss:,.0f} to zero (${s.stress_loss:,.0f} at a 15% move)"
