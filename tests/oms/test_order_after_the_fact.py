"""What reaches the OMS after the fact: late fills, refused replaces (issue 14, finding 11).

- a fill after a cancel used to revive the order as PARTIALLY_FILLED among the open orders, with no
  reservation: it blocked ``SwitchMode`` forever and every cancel-all retried it;
- a replace the broker refused left the reservation of the refused terms in place (quantity 1 working,
  2 reserved); the paper broker reported the refusal only as an alert.
"""

from decimal import Decimal

import pytest
from oms_harness import Harness, wait_for
from risk_kit import NOW

from engine.brokers.paper_config import PaperConfig
from engine.bus.commands import ReplaceOrder, SwitchMode
from engine.bus.events import Alert, OrderFilled, OrderReplaceRejected
from engine.model import Equity, Fill, Leg, OrderIntent, OrderStatus, Side
from engine.oms.manager import OrderCommandError


async def test_fill_when_it_arrives_after_the_cancel_then_order_stays_terminal_and_fill_is_recorded(desk):
    order = await desk.oms.submit(desk.resting_call(qty=2, strike=630, below_mid=0.5))
    assert order.status is OrderStatus.WORKING
    cancelled = await desk.oms.cancel(order.order_id)
    assert cancelled.status is OrderStatus.CANCELLED
    # the exchange executed the order before it saw the cancel: the broker's book has the fill ...
    leg = cancelled.legs[0]
    fill = Fill(fill_id="late-1", order_id=order.order_id, instrument=leg.instrument, quantity=1,
                price=cancelled.limit_price, ts=NOW, client_order_id=order.client_order_id)
    desk.paper.exchange._apply(fill)
    n_reports = len(desk.oms.last_reconciliation)
    # ... and its report reaches us after the cancel confirmation
    desk.bus.publish(OrderFilled(order=cancelled.evolve(updated_at=NOW, status=OrderStatus.PARTIALLY_FILLED,
                                                        filled_quantity=1,
                                                        avg_fill_price=cancelled.limit_price), fills=(fill,)))
    after = desk.oms.order(order.order_id)
    assert after.status is OrderStatus.CANCELLED and after.filled_quantity == 1
    assert desk.oms.open_orders() == [] and not desk.risk.has_reservation(order.order_id)
    assert [f.fill_id for f in desk.store.fills.list(order.order_id)] == ["late-1"]
    steps = [e["detail"]["step"] for e in desk.store.orders.events(order.order_id)]
    assert steps[-1] == "late_fill"
    assert any("after it was cancelled" in a.message for a in desk.of(Alert))
    assert await desk.oms.cancel_all("sweep") == 0  # nothing to retry
    await wait_for(lambda: len(desk.oms.last_reconciliation) > n_reports)  # reconciled with the broker
    assert not desk.oms.last_reconciliation[-1].mismatch
    assert await desk.bus.send(SwitchMode(mode="paper", broker="paper")) == "paper"  # not blocked


@pytest.fixture
async def cash_desk(tmp_path):
    h = await Harness(tmp_path / "cash.sqlite", paper_config=PaperConfig(fees="zero", account_type="cash")).start()
    yield h
    await h.stop()


async def test_replace_when_broker_refuses_then_original_reservation_restored_and_rejection_published(cash_desk):
    desk = cash_desk
    spy = Equity("SPY")
    bought = await desk.oms.submit(OrderIntent(legs=(Leg(spy, Side.BUY),), quantity=1, limit_price=Decimal("600.00")))
    assert bought.status is OrderStatus.FILLED
    await wait_for(lambda: desk.portfolio.quantity("SPY") == 1)
    sell = await desk.oms.submit(OrderIntent(legs=(Leg(spy, Side.SELL),), quantity=1,
                                             limit_price=Decimal("-605.00")))
    assert sell.status is OrderStatus.WORKING
    assert desk.risk.working_exposure.delta == pytest.approx(-1.0)
    # a cash account cannot sell two shares holding one: the paper broker refuses the change, not the order
    with pytest.raises(OrderCommandError, match="replace rejected"):
        await desk.bus.send(ReplaceOrder(order_id=sell.order_id, limit_price=Decimal("-605.00"), quantity=2))
    ev = desk.of(OrderReplaceRejected)[-1]
    assert ev.order.order_id == sell.order_id and "short" in ev.order.reason
    assert ev.order.status is OrderStatus.WORKING and ev.order.quantity == 1
    cur = desk.oms.order(sell.order_id)
    assert cur.status is OrderStatus.WORKING and cur.quantity == 1
    assert desk.risk.working_exposure.delta == pytest.approx(-1.0)  # the reservation of the refused 2 is gone
    steps = [e["detail"]["step"] for e in desk.store.orders.events(sell.order_id)]
    assert steps[-2:] == ["replace_requested", "replace_rejected"]


async def test_replace_when_accepted_then_reservation_follows_the_new_terms(desk):
    order = await desk.oms.submit(desk.resting_call(strike=630, below_mid=0.5))
    assert order.status is OrderStatus.WORKING
    per = desk.risk.working_exposure.delta
    new = await desk.bus.send(ReplaceOrder(order_id=order.order_id, limit_price=order.limit_price, quantity=2))
    assert new.quantity == 2 and new.status is OrderStatus.WORKING
    assert desk.risk.working_exposure.delta == pytest.approx(2 * per)
