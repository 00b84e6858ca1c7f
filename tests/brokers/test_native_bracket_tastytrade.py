"""Native brackets on tastytrade at the wire: entry and exits are held until all three reach the adapter, then go
out as one ``POST /complex-orders`` of type OTOCO; the exits wait as ``Contingent`` (our SUBMITTED) until the entry
fills, then work; a filled target cancels the stop at the venue; one refused member refuses all three; a cancel
deletes the complex order once; a transport failure mid-submit loses and duplicates nothing."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from engine.brokers.native_bracket import BracketAssembly, bracket_of
from engine.brokers.tastytrade import BrokerServerError, TastytradeBroker
from engine.bus.events import OrderAccepted, OrderCancelled, OrderFilled, OrderRejected
from engine.model import Leg, OpenClose, Order, OrderStatus, OrderType, Right, Side, TimeInForce
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import FakeTastytrade
from tests.brokers.helpers import single, tastytrade_connection


@pytest.fixture
async def tt():
    async with FakeTastytrade() as server:
        yield server


@pytest.fixture
async def broker(tt, bus, recorder):
    b = TastytradeBroker(tastytrade_connection(tt, bus), bus)
    await b.connect()
    b.arm_live(tt.account)
    yield b
    await b.disconnect()


def bracket(tt: FakeTastytrade, group: str = "nbk-grp-1", qty: int = 2) -> tuple[Order, Order, Order]:
    """A long put bought to open (the entry, tagged ``bracket:<group>``) and its two exits selling it to close:
    a GTC profit-target limit and a GTC stop, tagged ``oco:<group>``, each for the entry's full quantity."""
    exp = tt.expirations[0]
    entry = replace(single("SPY", exp, 590, Right.PUT, Side.BUY, "1.20", qty=qty, account=tt.account),
                    tag=f"bracket:{group}")
    close = (Leg(entry.legs[0].instrument, Side.SELL, 1, OpenClose.CLOSE),)
    target = replace(single("SPY", exp, 590, Right.PUT, Side.SELL, "-2.40", qty=qty, account=tt.account),
                     legs=close, tif=TimeInForce.GTC, tag=f"oco:{group}")
    stop = replace(single("SPY", exp, 590, Right.PUT, Side.SELL, "0", qty=qty, account=tt.account), legs=close,
                   order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("-0.60"), tif=TimeInForce.GTC,
                   tag=f"oco:{group}")
    return entry, target, stop


def complex_requests(tt: FakeTastytrade, method: str = "POST") -> list[tuple[str, dict]]:
    return [(p, b) for m, p, b in tt.requests if m == method and "/complex-orders" in p]


def order_posts(tt: FakeTastytrade) -> list[dict]:
    return [b for m, p, b in tt.requests if m == "POST" and p.endswith("/orders")]


async def submit_all(broker: TastytradeBroker, *orders: Order) -> None:
    for o in orders:
        await broker.submit(o)


async def test_bracket_when_all_three_arrive_then_one_otoco_with_the_entry_as_trigger(broker, tt, recorder):
    entry, target, stop = bracket(tt)
    await broker.submit(stop)  # approvals may release the members in any order
    await broker.submit(entry)
    assert complex_requests(tt) == [] and order_posts(tt) == []  # held until the set is complete
    assert {o.client_order_id for o in await broker.open_orders()} == {stop.client_order_id, entry.client_order_id}
    await broker.submit(target)
    ((path, body),) = complex_requests(tt)
    assert path.endswith(f"/accounts/{tt.account}/complex-orders") and order_posts(tt) == []
    assert body["type"] == "OTOCO"
    trig = body["trigger-order"]
    assert (trig["order-type"], trig["price"], trig["price-effect"], trig["external-identifier"]) == (
        "Limit", "1.20", "Debit", entry.client_order_id)
    assert trig["legs"][0]["action"] == "Buy to Open" and trig["legs"][0]["quantity"] == 2
    first, second = body["orders"]  # the target first, then the stop, whatever order they arrived in
    assert (first["order-type"], first["price"], first["price-effect"], first["time-in-force"]) == (
        "Limit", "2.40", "Credit", "GTC")
    assert (second["order-type"], second["stop-trigger"], second["external-identifier"]) == (
        "Stop", "0.60", stop.client_order_id)
    assert all(o["legs"][0]["action"] == "Sell to Close" and o["legs"][0]["quantity"] == 2
               for o in (first, second))
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)
    # the exits wait at the venue (Contingent): sent, not working
    assert sorted(o.status for o in tt.orders.values()) == ["Contingent", "Contingent", "Live"]
    assert not [e for e in recorder.of(OrderAccepted) if e.order.order_id in (target.order_id, stop.order_id)]


async def test_entry_fill_triggers_the_exits_and_a_target_fill_cancels_the_stop(broker, tt, recorder):
    entry, target, stop = bracket(tt)
    await submit_all(broker, entry, target, stop)
    acc = (await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)).order
    tt.fill(int(acc.broker_order_id))
    filled = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == entry.order_id)
    assert filled.order.status is OrderStatus.FILLED and filled.order.filled_quantity == 2
    working = {}
    for o in (target, stop):  # the venue released them: they work now
        working[o.order_id] = (await recorder.wait_for(
            OrderAccepted, lambda e, o=o: e.order.order_id == o.order_id)).order
    assert all(w.status is OrderStatus.WORKING for w in working.values())
    tt.fill(int(working[target.order_id].broker_order_id))
    done = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == target.order_id)
    assert done.order.filled_quantity == 2
    cancelled = await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == stop.order_id)
    assert cancelled.order.reason == "one-cancels-other at tastytrade"
    assert complex_requests(tt, "DELETE") == []  # the venue did it


async def test_partial_entry_fill_keeps_the_exits_contingent_until_the_entry_is_filled(broker, tt, recorder):
    """tastytrade's OTOCO triggers on the entry's fill, not on a part of it: the exits stay Contingent (SUBMITTED)
    through a partial fill and work for the full quantity once the rest fills."""
    entry, target, stop = bracket(tt)
    await submit_all(broker, entry, target, stop)
    acc = (await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == entry.order_id)).order
    tt.fill(int(acc.broker_order_id), fraction=0.5)
    part = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == entry.order_id)
    assert part.order.status is OrderStatus.PARTIALLY_FILLED and part.order.filled_quantity == 1
    assert sorted(o.status for o in tt.orders.values() if o.id != int(acc.broker_order_id)) == [
        "Contingent", "Contingent"]
    tt.fill(int(acc.broker_order_id))
    for o in (target, stop):
        ev = await recorder.wait_for(OrderAccepted, lambda e, o=o: e.order.order_id == o.order_id)
        assert ev.order.quantity == 2


async def test_bracket_when_a_child_is_invalid_then_all_three_are_rejected_and_nothing_is_placed(
        broker, tt, recorder):
    entry, target, stop = bracket(tt)
    bad = replace(stop, legs=(replace(stop.legs[0], instrument=replace(stop.legs[0].instrument,
                                                                         strike=Decimal(123))),))
    await submit_all(broker, entry, target, bad)
    rejected = {e.order.order_id: e.order for e in recorder.of(OrderRejected)}
    assert set(rejected) == {entry.order_id, target.order_id, bad.order_id}
    assert all("bracket refused" in o.reason and "orders[1]" in o.reason and "Unknown option symbol" in o.reason
               for o in rejected.values())
    assert tt.orders == {} and await broker.open_orders() == []


async def test_bracket_cancel_of_every_member_deletes_the_complex_order_once(broker, tt, recorder):
    entry, target, stop = bracket(tt)
    await submit_all(broker, entry, target, stop)
    await wait_until(lambda: all(o.broker_order_id for o in broker._orders.values()) and len(broker._orders) == 3,
                     what="all three known by broker id")
    for o in (entry, target, stop):  # the group manager cancels each member: one DELETE is enough
        await broker.cancel(o)
    assert [p.rsplit("/", 1)[1] for p, _ in complex_requests(tt, "DELETE")] == ["501"]
    for o in (entry, target, stop):
        ev = await recorder.wait_for(OrderCancelled, lambda e, o=o: e.order.order_id == o.order_id)
        assert ev.order.reason == ""  # we asked for it
    assert {x.status for x in tt.orders.values()} == {"Cancelled"}


async def test_bracket_member_when_cancelled_while_held_then_it_ends_without_a_broker_call(broker, tt, recorder):
    entry, target, _ = bracket(tt)
    await submit_all(broker, entry, target)
    before = len(tt.requests)
    await broker.cancel(target)
    ev = await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == target.order_id)
    assert "held for the rest of its bracket" in ev.order.reason
    assert len(tt.requests) == before
    assert [o.client_order_id for o in await broker.open_orders()] == [entry.client_order_id]
    broker.disarm()  # leaving live mode: what is still held ends unsent
    gone = await recorder.wait_for(OrderRejected, lambda e: e.order.order_id == entry.order_id)
    assert "not sent" in gone.order.reason and await broker.open_orders() == [] and tt.orders == {}


async def test_bracket_when_the_answer_is_lost_mid_submit_then_all_three_are_found_once(broker, tt, recorder):
    entry, target, stop = bracket(tt)
    tt.server_error_on_place = 502  # placed, then the answer is lost
    tt.hold_pushes = True
    await submit_all(broker, entry, target)
    with pytest.raises(BrokerServerError):
        await broker.submit(stop)  # the OMS holds this one as "unknown, reconciling"
    tt.server_error_on_place = None
    tt.hold_pushes = False
    found = {o.client_order_id: o for o in await broker.open_orders()}  # what the OMS's reconciliation reads
    assert set(found) == {o.client_order_id for o in (entry, target, stop)}
    assert {found[o.client_order_id].order_id for o in (entry, target, stop)} == {
        entry.order_id, target.order_id, stop.order_id}
    assert len(tt.orders) == 3 and len(complex_requests(tt)) == 1 and order_posts(tt) == []  # nothing sent twice


async def test_bracket_when_the_connection_fails_before_placing_then_none_is_at_the_broker(broker, tt):
    entry, target, stop = bracket(tt)
    tt.server_error_on_place = 503
    tt.server_error_after_place = False
    await submit_all(broker, entry, target)
    with pytest.raises(BrokerServerError):
        await broker.submit(stop)
    tt.server_error_on_place = None
    assert await broker.open_orders() == [] and tt.orders == {}  # the reconciliation: none reached it


async def test_ordinary_oco_members_are_not_taken_for_bracket_exits(broker, tt):
    _, target, stop = bracket(tt, group="grp-plain")
    assert bracket_of(target) is None
    await submit_all(broker, target, stop)
    ((_, body),) = complex_requests(tt)
    assert body["type"] == "OCO"


def test_assembly_holds_until_complete_and_releases():
    tt = FakeTastytrade()
    entry, target, stop = bracket(tt, group="nbk-g")
    a = BracketAssembly()
    assert bracket_of(entry) == ("nbk-g", "entry") and bracket_of(stop) == ("nbk-g", "exit")
    assert a.offer(target) is None and a.offer(target) is None  # a resend is the same member
    assert a.offer(entry) is None and a.is_held(entry.client_order_id)
    done = a.offer(stop)
    assert done is not None and done.entry is entry and done.exits == [target, stop] and a.held() == []
    assert a.offer(entry) is None and a.release(entry) and not a.release(entry) and a.held() == []
    with pytest.raises(ValueError, match="not a native bracket member"):
        a.offer(replace(entry, tag=""))
    a.offer(target)
    a.offer(stop)
    with pytest.raises(ValueError, match="a third"):
        a.offer(replace(stop, client_order_id="other"))
