"""The ticket's order types and attached exits on a real engine and the paper exchange: stop and stop-limit
orders, brackets (in price or % of max), OCO pairs and "close at X % of max profit" — refused at the field when
they cannot work, otherwise sent as the engine's own commands; the orders table shows stops and groups."""

from __future__ import annotations

from decimal import Decimal

import pytest
from PySide6.QtCore import Qt

from engine.analytics.order_exits import ExitPriceError, bracket_prices, check_profit_share, check_stop
from engine.bus.commands import SubmitBracket, SubmitOco, SubmitOrder, SubmitProfitTaker
from engine.bus.events import ChainUpdated, Event
from engine.model import GroupKind, OrderStatus, OrderType, Side
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import XYZ_CHAIN
from widgets import engine_queries as eq
from widgets.base import EventAccumulator, EventBatch
from widgets.chain_table import ChainPanel
from widgets.order_ticket import TicketPanel
from widgets.orders_view import OrdersPanel


def _desk(qtbot, engine):
    chain = ChainPanel(engine, strike_window=4)
    ticket = TicketPanel(engine)
    orders = OrdersPanel(engine)
    for w in (chain, ticket, orders):
        qtbot.addWidget(w)
    chain.resize(1300, 400)
    ticket.resize(760, 600)
    orders.resize(1400, 300)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=XYZ_CHAIN)])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    acc = EventAccumulator()
    engine.bus.subscribe(Event, acc.add)
    return chain, ticket, orders, acc


def _click(qtbot, chain, strike, key):
    qtbot.mouseClick(chain.table.viewport(), Qt.MouseButton.LeftButton, pos=chain.cell_rect(strike, key).center())


def _send(qtbot, ticket):
    with qtbot.waitSignal(ticket.submitted, timeout=5000) as sig:
        ticket.submit_button.click()
    assert sig.args[1] == "", sig.args[1]
    return sig.args[0]


def _quote(symbol: str) -> tuple[float, float]:
    r = XYZ_CHAIN.row_of(symbol)
    return float(XYZ_CHAIN.bid[r]), float(XYZ_CHAIN.ask[r])


CALL_100 = "XYZ260320C00100000"
CALL_105 = "XYZ260320C00105000"
PUT_95 = "XYZ260320P00095000"


# ---- the engine-side rules ------------------------------------------------------------------------
def test_a_stop_at_or_below_the_mark_would_fire_at_once() -> None:
    check_stop(2.10, 2.00)  # a buy stop above the mark waits
    check_stop(-0.90, -1.00)  # a sell stop: a smaller credit than the mark
    for stop, mark in ((1.90, 2.00), (2.00, 2.00), (-1.10, -1.00)):
        with pytest.raises(ExitPriceError, match="wrong side of the mark"):
            check_stop(stop, mark)


def test_bracket_prices_in_percent_and_their_limits() -> None:
    # a 2.00 debit spread, 5 wide: max profit 300, max loss 200 for one contract
    p = bracket_prices(2.0, quantity=1, multiplier=100, max_profit=300.0, max_loss=200.0, target=50, stop=50,
                       unit="pct", close_mark=-2.0)
    assert (p.take_profit, p.stop, p.profit, p.loss) == (Decimal("-3.50"), Decimal("-1.00"), 150.0, 100.0)
    with pytest.raises(ExitPriceError, match="beyond the maximum profit of \\$300") as exc:
        bracket_prices(2.0, quantity=1, multiplier=100, max_profit=300.0, max_loss=200.0, target=-5.5, stop=-1.0,
                       unit="price")
    assert exc.value.field == "target"
    with pytest.raises(ExitPriceError, match="more than the maximum loss") as exc:
        bracket_prices(2.0, quantity=1, multiplier=100, max_profit=300.0, max_loss=200.0, target=-3.0, stop=0.5,
                       unit="price")
    assert exc.value.field == "stop"
    with pytest.raises(ExitPriceError, match="unlimited: give the profit target as a price"):
        bracket_prices(2.0, quantity=1, multiplier=100, max_profit=float("inf"), max_loss=200.0, target=50,
                       stop=50, unit="pct")
    with pytest.raises(ExitPriceError, match="wrong side of the mark"):  # the market is already below the stop
        bracket_prices(2.0, quantity=1, multiplier=100, max_profit=300.0, max_loss=200.0, target=-3.0, stop=-1.5,
                       unit="price", close_mark=-1.2)
    assert check_profit_share(50) == Decimal("0.5")
    with pytest.raises(ExitPriceError, match="between 0 and 100"):
        check_profit_share(100)


# ---- the ticket on the real order path ------------------------------------------------------------
def test_a_stop_order_is_checked_against_the_mark_then_sent_and_shown_with_its_trigger(qtbot, paper, shot) -> None:
    chain, ticket, orders, acc = _desk(qtbot, paper)
    _click(qtbot, chain, 100.0, "c_ask")
    ticket.type_box.setCurrentIndex(ticket.type_box.findData(OrderType.STOP))
    assert ticket.stop_spin.isVisibleTo(ticket) and not ticket.price_spin.isVisibleTo(ticket)
    mid = ticket.prices.mid
    ticket.stop_spin.setValue(round(mid - 0.30, 2))  # a buy stop below the market would buy at once
    assert not ticket.submit_button.isEnabled()
    assert "wrong side of the mark" in ticket.message.text()
    assert "d64541" in ticket.stop_spin.styleSheet()  # the field at fault is marked
    ticket.submit()  # a click that gets through anyway is refused before anything is sent
    assert paper.oms.open_orders() == []
    ticket.stop_spin.setValue(round(mid + 0.50, 2))
    assert ticket.submit_button.isEnabled() and ticket.message.text() == ""
    assert ticket.stop_spin.styleSheet() == ""
    assert isinstance(ticket.build_command(), SubmitOrder)
    order = _send(qtbot, ticket)
    assert order.order_type is OrderType.STOP and order.stop_price == Decimal(f"{mid + 0.50:.2f}")
    assert order.limit_price is None and order.status is OrderStatus.WORKING  # waiting for its trigger
    orders.apply_events(acc.take())
    assert orders.model.value(0, "limit") == f"STP {mid + 0.50:.2f} DB"
    # flipped to a sale, the buy's positive trigger is the wrong sign: the order path's rule, said at the field
    ticket.flip_leg(0)
    assert "sell stop price must be negative" in ticket.message.text() and not ticket.submit_button.isEnabled()
    ticket.flip_leg(0)
    ticket.stop_spin.setValue(round(mid + 0.50, 2))
    assert ticket.submit_button.isEnabled()

    # a stop-limit: its limit behind its stop is refused at the limit field, then both prices in the table
    ticket.type_box.setCurrentIndex(ticket.type_box.findData(OrderType.STOP_LIMIT))
    ticket.stop_spin.setValue(round(mid + 0.50, 2))
    ticket.set_limit_price(Decimal(f"{mid + 0.40:.2f}"))
    assert "behind its stop" in ticket.message.text() and not ticket.submit_button.isEnabled()
    assert "d64541" in ticket.price_spin.styleSheet() and ticket.stop_spin.styleSheet() == ""
    shot(ticket, "ticket-stop-limit-refused")
    ticket.set_limit_price(Decimal(f"{mid + 0.60:.2f}"))
    assert ticket.submit_button.isEnabled() and ticket.price_spin.styleSheet() == ""
    order = _send(qtbot, ticket)
    assert order.order_type is OrderType.STOP_LIMIT and order.limit_price == Decimal(f"{mid + 0.60:.2f}")
    orders.apply_events(acc.take())
    row = orders.model.row_of(order.order_id)
    assert orders.model.value(row, "limit") == f"STP {mid + 0.50:.2f} DB LMT {mid + 0.60:.2f} DB"
    shot(ticket, "ticket-stop-limit")


def test_a_bracket_in_percent_of_max_places_its_exits_once_the_entry_fills(qtbot, paper, shot) -> None:
    chain, ticket, orders, acc = _desk(qtbot, paper)
    _click(qtbot, chain, 100.0, "c_ask")
    _click(qtbot, chain, 105.0, "c_bid")  # a call debit spread: max profit and loss both defined
    ticket.natural_button.click()  # marketable: fills on the paper exchange at once
    ticket.attach_box.setCurrentIndex(ticket.attach_box.findData("bracket"))
    assert ticket.bracket_unit.currentData() == "pct" and ticket.target_spin.isVisibleTo(ticket)
    ticket.target_spin.setValue(60)
    ticket.bracket_stop_spin.setValue(40)
    entry = float(ticket.limit_price())
    s = ticket.summary
    want = bracket_prices(entry, quantity=1, multiplier=100, max_profit=s.max_profit, max_loss=s.max_loss,
                          target=60, stop=40, unit="pct")
    cmd = ticket.build_command()
    assert isinstance(cmd, SubmitBracket) and (cmd.take_profit, cmd.stop) == (want.take_profit, want.stop)
    assert cmd.native is None and ticket.bracket_native.isVisibleTo(ticket)  # held by the engine unless asked
    ticket.bracket_native.setChecked(True)
    assert ticket.build_command().native is True  # at the broker (the paper broker keeps engine-held exits)
    assert "+ bracket" in ticket.submit_button.text()
    shot(ticket, "ticket-bracket")
    group = _send(qtbot, ticket)
    assert group.kind is GroupKind.BRACKET
    assert paper.oms.order(group.entry_order_id).status is OrderStatus.FILLED
    target_id, stop_id = group.member_order_ids
    target, stop = paper.oms.order(target_id), paper.oms.order(stop_id)
    assert (target.order_type, target.limit_price) == (OrderType.LIMIT, want.take_profit)
    assert (stop.order_type, stop.stop_price) == (OrderType.STOP, want.stop)
    assert {target.status, stop.status} == {OrderStatus.WORKING}
    assert "Bracket" in ticket.message.text() and group.group_id in ticket.message.text()

    orders.apply_events(acc.take())
    short = group.group_id.removeprefix("grp-")[:6]
    assert orders.model.value(orders.model.row_of(target_id), "group") == f"Bracket {short} · target"
    assert orders.model.value(orders.model.row_of(stop_id), "group") == f"Bracket {short} · stop"
    assert orders.model.value(orders.model.row_of(stop_id), "limit") == f"STP {-want.stop:.2f} CR"
    orders.tabs.setCurrentIndex(1)  # filled: the entry
    assert orders.model.value(orders.model.row_of(group.entry_order_id), "group") == f"Bracket {short} · entry"
    orders.tabs.setCurrentIndex(0)
    shot(orders, "orders-bracket")

    # once the group has ended the engine forgets it (it lives on in the store); a table that never saw it
    # working (after a restart) still names the exits as a bracket's, not as an OCO pair's
    from engine.bus.commands import CancelOrderGroup

    run_async(qtbot, paper.bus.send(CancelOrderGroup(group_id=group.group_id)))
    wait_for_condition(qtbot, lambda: paper.oms.order(stop_id).status is OrderStatus.CANCELLED)
    assert eq.order_group(paper, stop_id) is None
    fresh = OrdersPanel(paper)
    qtbot.addWidget(fresh)
    fresh.tabs.setCurrentIndex(2)  # cancelled
    assert fresh.model.value(fresh.model.row_of(stop_id), "group") == f"Bracket {short} · stop"
    assert fresh.model.value(fresh.model.row_of(target_id), "group") == f"Bracket {short} · target"
    fresh.resize(1400, 200)
    fresh.table.scrollTo(fresh.model.index(0, fresh.model.columnCount() - 1))  # the Group column in view
    shot(fresh, "orders-bracket-ended")


def test_a_bracket_target_beyond_max_profit_is_refused_before_anything_is_sent(qtbot, paper) -> None:
    chain, ticket, _orders, _acc = _desk(qtbot, paper)
    _click(qtbot, chain, 100.0, "c_ask")
    _click(qtbot, chain, 105.0, "c_bid")
    ticket.attach_box.setCurrentIndex(ticket.attach_box.findData("bracket"))
    ticket.bracket_unit.setCurrentIndex(ticket.bracket_unit.findData("price"))
    entry = float(ticket.limit_price())
    ticket.target_spin.setValue(-(entry + 5.50))  # more than the 5-wide spread can ever pay
    ticket.bracket_stop_spin.setValue(round(-entry / 2, 2))
    assert not ticket.submit_button.isEnabled()
    assert "beyond the maximum profit" in ticket.message.text()
    assert "d64541" in ticket.target_spin.styleSheet()
    ticket.submit()
    assert paper.oms.open_orders() == [] and paper.oms.recent_orders() == []
    ticket.target_spin.setValue(round(-(entry + 1.0), 2))
    assert ticket.submit_button.isEnabled() and ticket.target_spin.styleSheet() == ""


def test_an_oco_pair_works_both_orders_and_a_closing_order_cannot_carry_a_bracket(qtbot, paper) -> None:
    chain, ticket, orders, acc = _desk(qtbot, paper)
    _click(qtbot, chain, 100.0, "c_ask")
    bid, ask = _quote(CALL_100)
    ticket.set_limit_price(Decimal(f"{bid - 0.20:.2f}"))  # rests below the bid
    ticket.attach_box.setCurrentIndex(ticket.attach_box.findData("oco"))
    assert ticket.oco_type_box.currentData() == OrderType.STOP
    ticket.oco_price_spin.setValue(round(bid - 0.10, 2))  # a stop below the mark: refused at the field
    assert "OCO stop" in ticket.message.text() and "d64541" in ticket.oco_price_spin.styleSheet()
    ticket.oco_price_spin.setValue(round(ask + 0.40, 2))  # a buy stop above the market
    cmd = ticket.build_command()
    assert isinstance(cmd, SubmitOco) and cmd.second.stop_price == Decimal(f"{ask + 0.40:.2f}")
    group = _send(qtbot, ticket)
    assert group.kind is GroupKind.OCO
    members = [paper.oms.order(i) for i in group.member_order_ids]
    assert [m.order_type for m in members] == [OrderType.LIMIT, OrderType.STOP]
    assert all(m.status is OrderStatus.WORKING for m in members)
    orders.apply_events(acc.take())
    short = group.group_id.removeprefix("grp-")[:6]
    assert {orders.model.value(orders.model.row_of(m.order_id), "group") for m in members} == {
        f"OCO {short} · 1 of 2", f"OCO {short} · 2 of 2"}

    # a position's closing order (legs to close) cannot be the entry of a bracket
    from engine.model import Leg, OpenClose

    ticket.set_legs([Leg(leg.instrument, Side.SELL, 1, OpenClose.CLOSE) for leg in ticket.legs])
    ticket.attach_box.setCurrentIndex(ticket.attach_box.findData("bracket"))
    assert "needs an entry that opens a position" in ticket.message.text()
    assert not ticket.submit_button.isEnabled()


def test_close_at_half_of_max_profit_places_the_closing_limit_after_the_fill(qtbot, paper) -> None:
    chain, ticket, _orders, _acc = _desk(qtbot, paper)
    _click(qtbot, chain, 95.0, "p_bid")  # sell a put for a credit
    ticket.natural_button.click()
    ticket.attach_box.setCurrentIndex(ticket.attach_box.findData("profit"))
    ticket.profit_pct_spin.setValue(50)
    cmd = ticket.build_command()
    assert isinstance(cmd, SubmitProfitTaker) and cmd.profit_pct == Decimal("0.5")
    group = _send(qtbot, ticket)
    assert group.kind is GroupKind.PROFIT_TAKER
    entry = paper.oms.order(group.entry_order_id)
    assert entry.status is OrderStatus.FILLED

    def placed():
        g = paper.order_path.groups.group(group.group_id)
        return g is not None and len(g.member_order_ids) == 1

    wait_for_condition(qtbot, placed)
    close = paper.oms.order(paper.order_path.groups.group(group.group_id).member_order_ids[0])
    assert close.legs[0].side is Side.BUY and close.status is OrderStatus.WORKING
    assert close.limit_price == pytest.approx(-entry.avg_fill_price * Decimal("0.5"), abs=Decimal("0.01"))
