"""Orders and positions panels on the real order path and risk engine."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.analytics.templates import Template, build_template
from engine.bus.commands import SubmitOrder
from engine.bus.events import Event, PositionChanged
from engine.model import OrderIntent, OrderStatus, Position, Side
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import NOW, priced_chain
from widgets.base import EventAccumulator, EventBatch
from widgets.order_ticket import TicketPanel
from widgets.orders_view import OrdersPanel
from widgets.positions_view import PositionsPanel

FRONT = priced_chain().expiries()[0]


def _submit(qtbot, engine, price="1.70"):
    legs = build_template(Template.VERTICAL, priced_chain(), FRONT)
    return run_async(qtbot, engine.bus.send(SubmitOrder(intent=OrderIntent(legs=legs, quantity=1,
                                                                           limit_price=Decimal(price)))))


def test_orders_panel_lists_and_cancels_a_working_order(qtbot, desk, shot) -> None:
    acc = EventAccumulator()
    desk.bus.subscribe(Event, acc.add)
    panel = OrdersPanel(desk)
    qtbot.addWidget(panel)
    panel.resize(1000, 300)
    order = _submit(qtbot, desk)
    panel.apply_events(acc.take())
    assert panel.model.rowCount() == 1 and panel.model.key_at(0) == order.order_id
    assert panel.model.value(0, "status") == "pending approval" and panel.model.value(0, "limit") == "1.70 DB"
    assert panel.tabs.tabText(0) == "Working (1)"
    shot(panel, "orders")
    panel.select(order.order_id)
    assert panel.cancel_button.isEnabled()
    panel.cancel_button.click()

    def cancelled():
        panel.apply_events(acc.take())
        return desk.oms.order(order.order_id).status is OrderStatus.CANCELLED and panel.model.rowCount() == 0

    wait_for_condition(qtbot, cancelled)
    panel.tabs.setCurrentIndex(2)
    assert panel.model.value(0, "status") == "cancelled" and panel.tabs.tabText(2) == "Cancelled / rejected (1)"


def test_cancel_all_needs_a_second_click(qtbot, desk) -> None:
    acc = EventAccumulator()
    desk.bus.subscribe(Event, acc.add)
    panel = OrdersPanel(desk)
    qtbot.addWidget(panel)
    a = _submit(qtbot, desk, "1.70")
    b = _submit(qtbot, desk, "1.60")
    panel.apply_events(acc.take())
    panel.cancel_all_button.click()
    assert "Click again" in panel.cancel_all_button.text()
    assert desk.oms.order(a.order_id).status is OrderStatus.PENDING_APPROVAL
    panel.cancel_all_button.click()
    wait_for_condition(qtbot, lambda: all(desk.oms.order(o.order_id).status is OrderStatus.CANCELLED for o in (a, b)))


def _positions(chain):
    call = chain.option(chain.row_of("XYZ260320C00100000"))
    put = chain.option(chain.row_of("XYZ260320P00095000"))
    return [Position(call, 2, Decimal("2.00"), opened_at=NOW, strategy_id="momentum"),
            Position(put, -3, Decimal("0.80"), opened_at=NOW)]


def test_positions_grouped_with_pnl_and_greeks_from_the_risk_engine(qtbot, desk, shot) -> None:
    chain = priced_chain()
    panel = PositionsPanel(desk)
    qtbot.addWidget(panel)
    panel.resize(1000, 260)
    events = [PositionChanged(position=p) for p in _positions(chain)]
    for ev in events:
        desk.bus.publish(ev)  # the risk engine's portfolio follows the bus
    panel.apply_events(EventBatch.from_events(events))
    m = panel.model
    keys = list(m.keys())
    assert keys == ["group:XYZ::XYZ260320P00095000", "XYZ260320P00095000", "group:XYZ:momentum",
                    "XYZ260320C00100000"]
    r = m.row_of("XYZ260320C00100000")
    mid = chain.mid[chain.row_of("XYZ260320C00100000")]
    assert m.value(r, "mark") == pytest.approx(mid)
    assert m.value(r, "pnl") == pytest.approx(2 * (mid - 2.00) * 100)
    assert 80 < m.value(r, "delta") < 130  # 2 calls × ~0.53 × 100
    assert m.value(r, "dte") == 18
    put_row = m.row_of("XYZ260320P00095000")
    assert m.value(put_row, "qty") == -3 and m.value(put_row, "theta") > 0  # short options earn theta
    assert m.value(m.row_of("group:XYZ:momentum"), "pnl") == pytest.approx(m.value(r, "pnl"))
    assert "2 positions" in panel.summary.text()
    shot(panel, "positions")


def test_close_on_ticket_builds_closing_legs(qtbot, desk) -> None:
    chain = priced_chain()
    panel = PositionsPanel(desk)
    ticket = TicketPanel(desk)
    for w in (panel, ticket):
        qtbot.addWidget(w)
    events = [PositionChanged(position=p) for p in _positions(chain)]
    for ev in events:
        desk.bus.publish(ev)
    panel.apply_events(EventBatch.from_events(events))
    panel.select_keys("XYZ260320C00100000", "XYZ260320P00095000")
    panel.close_button.click()
    assert sorted((leg.symbol, leg.side, leg.ratio) for leg in ticket.legs) == [
        ("XYZ260320C00100000", Side.SELL, 2), ("XYZ260320P00095000", Side.BUY, 3)]
    assert ticket.qty_spin.value() == 1


def test_position_closed_to_zero_disappears(qtbot, desk) -> None:
    chain = priced_chain()
    panel = PositionsPanel(desk)
    qtbot.addWidget(panel)
    pos = _positions(chain)
    events = [PositionChanged(position=p) for p in pos]
    for ev in events:
        desk.bus.publish(ev)
    panel.apply_events(EventBatch.from_events(events))
    flat = PositionChanged(position=Position(pos[1].instrument, 0, Decimal(0)))
    desk.bus.publish(flat)
    panel.apply_events(EventBatch.from_events([flat]))
    assert list(panel.model.keys()) == ["group:XYZ:momentum", "XYZ260320C00100000"]
