"""Approval queue on the real order path: pending orders with the engine's preview, approve / reject / modify."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.analytics.templates import Template, build_template
from engine.bus.commands import SubmitOrder
from engine.bus.events import Event
from engine.model import OrderIntent, OrderStatus
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import priced_chain
from widgets.approvals import ApprovalPanel
from widgets.base import EventAccumulator


@pytest.fixture()
def queue(qtbot, desk):
    acc = EventAccumulator()
    desk.bus.subscribe(Event, acc.add)
    panel = ApprovalPanel(desk)
    qtbot.addWidget(panel)
    panel.resize(900, 420)
    return panel, acc


def _submit(qtbot, engine, template=Template.VERTICAL, price="1.70", **kw):
    legs = build_template(template, priced_chain(), priced_chain().expiries()[0], **kw)
    intent = OrderIntent(legs=legs, quantity=2, limit_price=Decimal(price))
    return run_async(qtbot, engine.bus.send(SubmitOrder(intent=intent)))


def _pump(qtbot, panel, acc, predicate):
    def check():
        panel.apply_events(acc.take())
        return predicate()

    wait_for_condition(qtbot, check)


def test_pending_order_shows_preview_and_countdown(queue, qtbot, desk, shot) -> None:
    panel, acc = queue
    order = _submit(qtbot, desk)
    assert order.status is OrderStatus.PENDING_APPROVAL
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 1)
    m = panel.model
    assert m.key_at(0) == order.order_id
    assert m.value(0, "limit") == "1.70 DB" and m.value(0, "qty") == 2
    assert m.value(0, "max_loss") == "$340"  # 1.70 debit × 2 × 100
    assert m.value(0, "expires").startswith("1:2") or m.value(0, "expires").startswith("1:3")
    html = panel.detail.toHtml()
    assert "breakevens" in html and "XYZ260320C00100000" in html and "delta" in html
    assert panel.approve_button.isEnabled()
    shot(panel, "approvals")


def test_reject_removes_it_and_records_the_reason(queue, qtbot, desk) -> None:
    panel, acc = queue
    order = _submit(qtbot, desk)
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 1)
    panel.reject_reason.setText("too wide")
    panel.reject_button.click()
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 0)
    final = desk.oms.order(order.order_id)
    assert final.status in (OrderStatus.REJECTED, OrderStatus.DENIED) and "too wide" in final.reason
    assert panel.empty_label.isVisibleTo(panel)


def test_approve_sends_it_down_the_path(queue, qtbot, desk) -> None:
    panel, acc = queue
    order = _submit(qtbot, desk)
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 1)
    with qtbot.waitSignal(panel.decided, timeout=5000) as sig:
        panel.approve_button.click()
    assert sig.args[0] == order.order_id
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 0)
    # approved, then the router had no broker to send it to: the order left the approval state
    assert desk.oms.order(order.order_id).status is not OrderStatus.PENDING_APPROVAL


def test_modify_price_updates_the_pending_order(queue, qtbot, desk) -> None:
    panel, acc = queue
    order = _submit(qtbot, desk)
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 1)
    panel.price_spin.setValue(1.65)
    panel.modify_button.click()
    _pump(qtbot, panel, acc, lambda: panel.model.rowCount() == 1 and panel.model.value(0, "limit") == "1.65 DB")
    assert desk.oms.order(order.order_id).limit_price == Decimal("1.65")


def test_queue_loads_pending_orders_already_in_the_oms(qtbot, desk) -> None:
    order = _submit(qtbot, desk)
    panel = ApprovalPanel(desk)
    qtbot.addWidget(panel)
    assert panel.model.rowCount() == 1 and panel.model.key_at(0) == order.order_id


def test_programmatic_api_used_by_the_selftest(qtbot, desk) -> None:
    from engine.model import Side
    from widgets.order_ticket import TicketPanel

    ticket = TicketPanel(desk)
    panel = ApprovalPanel(desk)
    for w in (ticket, panel):
        qtbot.addWidget(w)
    acc = EventAccumulator()
    desk.bus.subscribe(Event, acc.add)
    chain = priced_chain()
    ticket.clear_legs()
    ticket.add_leg(chain.option(chain.row_of("XYZ260320C00100000")), Side.BUY, 1)
    ticket.set_quantity(1)
    ticket.set_limit_price(Decimal("2.40"))
    assert ticket.limit_price() == Decimal("2.40")
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit()
    order = sig.args[0]
    _pump(qtbot, panel, acc, lambda: panel.has_order(order.order_id))
    panel.approve(order.order_id)
    _pump(qtbot, panel, acc, lambda: not panel.has_order(order.order_id))
    final = desk.oms.order(order.order_id)
    assert final.status in (OrderStatus.FILLED, OrderStatus.WORKING, OrderStatus.SUBMITTED)
