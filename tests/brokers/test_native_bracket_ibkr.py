"""Native brackets on IBKR at the wire (loopback TWS, real ib_async): entry and exits are held until all three reach
the adapter, then go out as a parent with ``transmit=False`` and two children with ``parentId`` = the parent's order
id, one OCA group, ``transmit=True`` on the last only; the children wait PreSubmitted (our SUBMITTED) until the
parent fills, then work; a filled target cancels the stop at TWS; cancelling the parent cancels its children."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig
from engine.brokers.ibkr import IbkrBroker, IbkrConnection
from engine.bus.events import OrderAccepted, OrderCancelled, OrderFilled, OrderRejected
from engine.model import Leg, OpenClose, Order, OrderStatus, OrderType, Right, Side, TimeInForce
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.helpers import single

FAST_RECONNECT = ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1)


@pytest.fixture
async def tws():
    server = FakeTws()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def broker(tws, bus, recorder):
    config = IbkrConfig(port=tws.port, call_timeout_s=3.0, connect_timeout_s=3.0)
    b = IbkrBroker(IbkrConnection(config, bus=bus, reconnect=FAST_RECONNECT,
                                  breaker=CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3)), bus)
    await b.connect()
    b.arm_live(tws.account)
    yield b
    await b.disconnect()


def bracket(tws: FakeTws, group: str = "nbk-grp-1", qty: int = 2) -> tuple[Order, Order, Order]:
    exp = tws.expirations[0]
    entry = replace(single("SPY", exp, 590, Right.PUT, Side.BUY, "1.20", qty=qty, account=tws.account),
                    tag=f"bracket:{group}")
    close = (Leg(entry.legs[0].instrument, Side.SELL, 1, OpenClose.CLOSE),)
    target = replace(single("SPY", exp, 590, Right.PUT, Side.SELL, "-2.40", qty=qty, account=tws.account),
                     legs=close, tif=TimeInForce.GTC, tag=f"oco:{group}")
    stop = replace(single("SPY", exp, 590, Right.PUT, Side.SELL, "0", qty=qty, account=tws.account), legs=close,
                   order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("-0.60"), tif=TimeInForce.GTC,
                   tag=f"oco:{group}")
    return entry, target, stop


def places(tws: FakeTws) -> list[list[str]]:
    return [f for f in tws.requests if f and f[0] == "3" and f[-30] != "1"]  # placeOrder, not whatIf


async def test_bracket_goes_out_as_parent_and_children_transmitted_by_the_last(broker, tws, recorder):
    entry, target, stop = bracket(tws)
    await broker.submit(stop)
    await broker.submit(entry)
    assert places(tws) == []  # held until the set is complete
    assert {o.client_order_id for o in await broker.open_orders()} == {entry.client_order_id, stop.client_order_id}
    await broker.submit(target)
    await wait_until(lambda: len(places(tws)) == 3, what="three placeOrder messages")
    p, c1, c2 = places(tws)
    assert [f[26] for f in (p, c1, c2)] == [entry.client_order_id, target.client_order_id, stop.client_order_id]
    assert [f[27] for f in (p, c1, c2)] == ["0", "0", "1"]  # transmit only on the last
    assert c1[28] == c2[28] == p[1] and p[28] == "0"  # parentId = the parent's order id
    assert c1[22] == c2[22] == "nbk-grp-1" and c1[47] == c2[47] == "1"  # one OCA group, type 1
    assert (c1[18], c2[18]) == ("LMT", "STP") and c1[16] == c2[16] == "SELL" and float(c1[17]) == 2.0
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)
    assert {o.status for o in tws.orders.values() if o.parent_id} == {"PreSubmitted"}
    assert not [e for e in recorder.of(OrderAccepted) if e.order.order_id in (target.order_id, stop.order_id)]


async def test_parent_fill_releases_the_children_and_a_target_fill_cancels_the_stop(broker, tws, recorder):
    entry, target, stop = bracket(tws)
    for o in (entry, target, stop):
        await broker.submit(o)
    acc = (await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)).order
    tws.fill(int(acc.broker_order_id))
    await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == entry.order_id and
                            e.order.status is OrderStatus.FILLED)
    working = {}
    for o in (target, stop):
        working[o.order_id] = (await recorder.wait_for(
            OrderAccepted, lambda e, o=o: e.order.order_id == o.order_id)).order
    tws.fill(int(working[target.order_id].broker_order_id))
    await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == target.order_id)
    await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == stop.order_id)
    assert not [f for f in tws.requests if f and f[0] == "4"]  # TWS did it, no cancel from us


async def test_cancelling_the_parent_cancels_the_children_at_tws(broker, tws, recorder):
    entry, target, stop = bracket(tws)
    for o in (entry, target, stop):
        await broker.submit(o)
    acc = (await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)).order
    await broker.cancel(acc)
    for o in (entry, target, stop):
        await recorder.wait_for(OrderCancelled, lambda e, o=o: e.order.order_id == o.order_id)
    assert {o.status for o in tws.orders.values()} == {"Cancelled"}


async def test_a_child_tws_cannot_price_rejects_the_whole_bracket_before_anything_is_sent(broker, tws, recorder):
    entry, target, stop = bracket(tws)
    bad = replace(stop, legs=(replace(stop.legs[0], instrument=replace(stop.legs[0].instrument,
                                                                         strike=Decimal(123))),))
    for o in (entry, target, bad):
        await broker.submit(o)
    rejected = {e.order.order_id: e.order for e in recorder.of(OrderRejected)}
    assert set(rejected) == {entry.order_id, target.order_id, bad.order_id}
    assert all("bracket refused" in o.reason for o in rejected.values())
    assert places(tws) == [] and tws.orders == {}


async def test_held_member_cancel_and_disarm_send_nothing(broker, tws, recorder):
    entry, target, _ = bracket(tws)
    await broker.submit(entry)
    await broker.submit(target)
    await broker.cancel(target)
    ev = await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == target.order_id)
    assert "held for the rest of its bracket" in ev.order.reason
    broker.disarm()
    gone = await recorder.wait_for(OrderRejected, lambda e: e.order.order_id == entry.order_id)
    assert "not sent" in gone.order.reason and await broker.open_orders() == [] and places(tws) == []


async def test_bracket_when_the_connection_drops_mid_submit_then_reconciliation_finds_each_member_once(
        broker, tws, recorder):
    """The three placeOrder messages reach TWS but every answer is lost with the connection: after the reconnect
    the open orders (reqOpenOrders, by order id and orderRef) are our three, once each; nothing is sent again."""
    entry, target, stop = bracket(tws)
    tws.lose_order_answers = True
    for o in (entry, target, stop):
        await broker.submit(o)
    await wait_until(lambda: len(places(tws)) == 3 and len(tws.orders) == 3, what="three orders at TWS")
    await tws.close_all()
    tws.lose_order_answers = False
    await wait_until(lambda: tws.connections == 2 and broker.conn.connected, timeout=10, what="reconnected")
    found = {o.client_order_id: o for o in await broker.open_orders()}
    assert set(found) == {o.client_order_id for o in (entry, target, stop)}
    assert {found[o.client_order_id].order_id for o in (entry, target, stop)} == {
        entry.order_id, target.order_id, stop.order_id}
    assert {o.status for o in tws.orders.values()} == {"Submitted", "PreSubmitted"}
    assert len(places(tws)) == 3 and len(tws.orders) == 3  # nothing placed twice


async def test_bracket_when_the_connection_is_down_at_the_last_member_then_none_reaches_tws(broker, tws, recorder):
    from engine.brokers.base import BrokerError

    entry, target, stop = bracket(tws)
    await broker.submit(entry)
    await broker.submit(target)
    tws.silent = True  # the socket is up but TWS no longer answers: the adapter is cut off before the last one
    await tws.close_all()
    await wait_until(lambda: not broker.conn.connected, what="disconnected")
    with pytest.raises(BrokerError):
        await broker.submit(stop)  # the OMS holds it as unknown and reconciles
    assert places(tws) == [] and tws.orders == {}
    # the two held members are still ours (not lost), and a cancel takes them back without a broker call
    assert {o.client_order_id for o in await _held(broker)} == {entry.client_order_id, target.client_order_id}
    for o in (entry, target):
        await broker.cancel(o)
        await recorder.wait_for(OrderCancelled, lambda e, o=o: e.order.order_id == o.order_id)
    assert places(tws) == [] and tws.orders == {}


async def _held(broker: IbkrBroker) -> list[Order]:
    return broker._brackets.held()
