"""The ticket's price-walk controls on a real engine: a resting limit is walked toward natural by the engine's
walker on the engine clock (each step a replace through the order path), the status line follows it, and a walk
that could never move is refused at the field."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from PySide6.QtCore import Qt

from engine.bus.commands import CancelOrder, StartPriceWalk
from engine.bus.events import ChainUpdated, ClockTicked, Event
from engine.model import OrderStatus
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import XYZ_CHAIN
from widgets.base import EventAccumulator, EventBatch
from widgets.chain_table import ChainPanel
from widgets.order_ticket import TicketPanel
from widgets.orders_view import OrdersPanel


def _tick(engine, seconds: float) -> None:
    """Move the engine's (manual) clock and announce it, as the engine's clock loop does every second."""
    now = engine.clock.advance(timedelta(seconds=seconds))
    engine.bus.publish(ClockTicked(now=now, market_open=True))


def test_the_ticket_walks_its_order_toward_natural_and_reports_each_step(qtbot, paper, shot) -> None:
    chain = ChainPanel(paper, strike_window=4)
    ticket = TicketPanel(paper)
    orders = OrdersPanel(paper)
    for w in (chain, ticket, orders):
        qtbot.addWidget(w)
    chain.resize(1300, 400)
    ticket.resize(760, 620)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=XYZ_CHAIN)])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    acc = EventAccumulator()
    paper.bus.subscribe(Event, acc.add)

    qtbot.mouseClick(chain.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=chain.cell_rect(100.0, "c_ask").center())
    row = XYZ_CHAIN.row_of("XYZ260320C00100000")
    bid, ask = float(XYZ_CHAIN.bid[row]), float(XYZ_CHAIN.ask[row])
    ticket.set_limit_price(Decimal(f"{bid:.2f}"))  # rests at the bid
    ticket.walk_check.setChecked(True)
    assert ticket.walk_limit_spin.isVisibleTo(ticket)
    assert ticket.walk_limit_spin.value() == round(ask, 2)  # "up to" starts at natural
    ticket.walk_limit_spin.setValue(round(bid - 0.05, 2))  # behind the limit: it could never move
    assert not ticket.submit_button.isEnabled() and "behind the limit" in ticket.message.text()
    assert "d64541" in ticket.walk_limit_spin.styleSheet()
    cap = Decimal(f"{bid + 0.03:.2f}")
    ticket.walk_limit_spin.setValue(float(cap))
    ticket.walk_step_spin.setValue(0.02)
    ticket.walk_interval_spin.setValue(5.0)
    assert ticket.submit_button.isEnabled() and ticket.submit_button.text().endswith("walking")
    cmd = ticket.walk_command("x")
    assert isinstance(cmd, StartPriceWalk) and (cmd.step, cmd.limit, cmd.interval_s) == (Decimal("0.02"), cap, 5.0)
    shot(ticket, "ticket-walk")

    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    order = sig.args[0]
    assert order.status is OrderStatus.WORKING
    wait_for_condition(qtbot, lambda: paper.order_path.walker.walk(order.order_id) is not None)
    start = order.limit_price

    _tick(paper, 5)
    walker = paper.order_path.walker
    wait_for_condition(qtbot, lambda: walker.walk(order.order_id).steps == 1)  # replaced, then announced
    assert paper.oms.order(order.order_id).limit_price == start + Decimal("0.02")
    batch = acc.take()
    ticket.apply_events(batch)
    orders.apply_events(batch)
    assert "Walking" in ticket.message.text() and "1 step" in ticket.message.text()
    row = orders.model.row_of(order.order_id)
    assert orders.model.value(row, "group") == f"walk ≤ {cap:.2f} DB"
    assert orders.model.value(row, "limit") == f"{start + Decimal('0.02'):.2f} DB"
    _tick(paper, 2)  # inside the interval: no step
    _tick(paper, 4)
    wait_for_condition(qtbot, lambda: paper.oms.order(order.order_id).limit_price == cap)  # capped, not +0.04
    _tick(paper, 5)
    assert paper.oms.order(order.order_id).limit_price == cap

    run_async(qtbot, paper.bus.send(CancelOrder(order_id=order.order_id)))
    wait_for_condition(qtbot, lambda: paper.order_path.walker.walk(order.order_id) is None)
    batch = acc.take()
    ticket.apply_events(batch)
    orders.apply_events(batch)
    assert "ended" in ticket.message.text() and "cancelled" in ticket.message.text()
    orders.tabs.setCurrentIndex(2)
    assert orders.model.value(orders.model.row_of(order.order_id), "group") == ""  # no longer walking


def test_only_a_limit_order_can_be_walked(qtbot, paper) -> None:
    ticket = TicketPanel(paper)
    qtbot.addWidget(ticket)
    ticket.apply_events(EventBatch.from_events([ChainUpdated(chain=XYZ_CHAIN)]))
    ticket.add_leg(XYZ_CHAIN.option(XYZ_CHAIN.row_of("XYZ260320C00100000")), "buy")
    ticket.walk_check.setChecked(True)
    ticket.type_box.setCurrentIndex(ticket.type_box.findText("Market"))
    assert "only a limit order can be walked" in ticket.message.text() and not ticket.submit_button.isEnabled()
