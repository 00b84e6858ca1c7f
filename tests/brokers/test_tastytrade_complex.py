"""Engine one-cancels-other pairs as native tastytrade OCO complex orders, at the wire: the first member is held
until its sibling arrives, then both go out as one ``POST /complex-orders``; a refused member refuses both; a
cancel deletes the complex order once; a transport failure mid-submit loses and duplicates nothing; a sibling that
never reaches the broker releases the held member alone."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from engine.brokers.config import TastytradeConfig
from engine.brokers.tastytrade import BrokerServerError, TastytradeBroker
from engine.brokers.tastytrade_complex import OcoPairing
from engine.bus.events import OrderAccepted, OrderCancelled, OrderDenied, OrderFilled, OrderRejected
from engine.credentials import CredentialStore
from engine.model import Order, OrderStatus, OrderType, Right, Side
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
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


def exits(tt: FakeTastytrade, group: str = "grp-1", target_strike: int = 590) -> tuple[Order, Order]:
    """A short put's two exits: a GTC profit-target limit and a GTC stop, both tagged ``oco:<group>``."""
    exp = tt.expirations[0]
    target = replace(single("SPY", exp, target_strike, Right.PUT, Side.BUY, "0.50", account=tt.account),
                     tag=f"oco:{group}")
    stop = replace(single("SPY", exp, target_strike, Right.PUT, Side.BUY, "0", account=tt.account),
                   order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("3.00"), tag=f"oco:{group}")
    return target, stop


def order_posts(tt: FakeTastytrade) -> list[dict]:
    return [b for m, p, b in tt.requests if m == "POST" and p.endswith("/orders")]


def complex_requests(tt: FakeTastytrade, method: str = "POST") -> list[tuple[str, dict]]:
    return [(p, b) for m, p, b in tt.requests if m == method and "/complex-orders" in p]


async def test_oco_members_when_both_arrive_then_one_complex_order_carries_both(broker, tt, recorder):
    target, stop = exits(tt)
    await broker.submit(target)
    assert complex_requests(tt) == [] and order_posts(tt) == []  # held for its sibling
    assert [o.client_order_id for o in await broker.open_orders()] == [target.client_order_id]
    await broker.submit(stop)
    ((path, body),) = complex_requests(tt)
    assert path.endswith(f"/accounts/{tt.account}/complex-orders") and order_posts(tt) == []
    assert body["type"] == "OCO" and "trigger-order" not in body
    first, second = body["orders"]
    assert (first["order-type"], first["price"], first["price-effect"], first["external-identifier"]) == (
        "Limit", "0.50", "Debit", target.client_order_id)
    assert (second["order-type"], second["stop-trigger"], second["external-identifier"]) == (
        "Stop", "3.00", stop.client_order_id)
    assert first["time-in-force"] == "Day" and first["legs"][0]["action"] == "Buy to Open"
    for o in (target, stop):
        await recorder.wait_for(OrderAccepted, lambda e, o=o: e.order.order_id == o.order_id)
    assert len(tt.orders) == 2 and {x.complex_id for x in tt.orders.values()} == {501}


async def test_oco_member_when_filled_then_the_venue_cancels_its_sibling(broker, tt, recorder):
    target, stop = exits(tt)
    await broker.submit(target)
    await broker.submit(stop)
    accepted = await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == target.order_id)
    tt.fill(int(accepted.order.broker_order_id))
    filled = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == target.order_id)
    assert filled.order.status is OrderStatus.FILLED
    cancelled = await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == stop.order_id)
    assert cancelled.order.reason == "one-cancels-other at tastytrade"
    assert complex_requests(tt, "DELETE") == []


async def test_oco_when_one_member_is_invalid_then_both_are_rejected_and_nothing_is_placed(broker, tt, recorder):
    target, stop = exits(tt)
    bad = replace(stop, legs=(replace(stop.legs[0], instrument=replace(stop.legs[0].instrument,
                                                                         strike=Decimal(123))),))
    await broker.submit(target)
    await broker.submit(bad)
    rejected = {e.order.order_id: e.order for e in recorder.of(OrderRejected)}
    assert set(rejected) == {target.order_id, bad.order_id}
    assert all("OCO refused" in o.reason and "orders[1]" in o.reason and "Unknown option symbol" in o.reason
               for o in rejected.values())
    assert tt.orders == {} and await broker.open_orders() == []


async def test_oco_when_cancelled_then_one_delete_cancels_both_members(broker, tt, recorder):
    target, stop = exits(tt)
    await broker.submit(target)
    await broker.submit(stop)
    acc = {}
    for o in (target, stop):
        acc[o.order_id] = (await recorder.wait_for(OrderAccepted, lambda e, o=o: e.order.order_id == o.order_id)).order
    await broker.cancel(acc[target.order_id])
    await broker.cancel(acc[stop.order_id])  # the group manager cancels each member: one DELETE is enough
    deletes = complex_requests(tt, "DELETE")
    assert [p.rsplit("/", 1)[1] for p, _ in deletes] == ["501"]
    for o in (target, stop):
        ev = await recorder.wait_for(OrderCancelled, lambda e, o=o: e.order.order_id == o.order_id)
        assert ev.order.reason == ""  # we asked for it
    assert {x.status for x in tt.orders.values()} == {"Cancelled"}


async def test_oco_cancel_when_nothing_is_open_any_more_then_the_fill_and_the_venue_cancel_settle_it(
        broker, tt, recorder):
    target, stop = exits(tt)
    await broker.submit(target)
    await broker.submit(stop)
    acc = (await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == stop.order_id)).order
    tt.hold_pushes = True  # the streamer's news is lost: the adapter must read the state itself
    tt.fill(int((await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == target.order_id))
                .order.broker_order_id))
    await broker.cancel(acc)  # DELETE answers "nothing open": the adapter reads the complex order instead
    await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == target.order_id)
    await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == stop.order_id)


async def test_oco_when_the_connection_fails_mid_submit_after_placing_then_both_are_found_once(broker, tt, recorder):
    target, stop = exits(tt)
    tt.server_error_on_place = 502  # placed, then the answer is lost
    tt.hold_pushes = True
    await broker.submit(target)
    with pytest.raises(BrokerServerError):
        await broker.submit(stop)  # the OMS holds this one as "unknown, reconciling"
    tt.server_error_on_place = None
    tt.hold_pushes = False
    found = {o.client_order_id: o for o in await broker.open_orders()}  # what the OMS's reconciliation reads
    assert set(found) == {target.client_order_id, stop.client_order_id}
    assert {found[o.client_order_id].order_id for o in (target, stop)} == {target.order_id, stop.order_id}
    assert len(tt.orders) == 2 and len(complex_requests(tt)) == 1  # nothing sent twice


async def test_oco_when_the_connection_fails_before_placing_then_neither_is_at_the_broker(broker, tt, recorder):
    target, stop = exits(tt)
    tt.server_error_on_place = 503
    tt.server_error_after_place = False
    await broker.submit(target)
    with pytest.raises(BrokerServerError):
        await broker.submit(stop)
    tt.server_error_on_place = None
    assert await broker.open_orders() == [] and tt.orders == {}  # the reconciliation: neither reached it


async def test_held_member_when_its_sibling_is_denied_then_it_goes_out_alone(broker, tt, bus, recorder):
    target, stop = exits(tt)
    await broker.submit(target)
    denied = stop.evolve(updated_at=stop.updated_at, status=OrderStatus.DENIED, broker="tastytrade",
                         reason="max loss per trade")
    bus.publish(OrderDenied(order=denied, checks=()))
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == target.order_id)
    (body,) = order_posts(tt)
    assert body["external-identifier"] == target.client_order_id and complex_requests(tt) == []


async def test_member_when_its_sibling_ended_first_then_it_goes_out_alone(broker, tt, bus, recorder):
    target, stop = exits(tt)
    bus.publish(OrderDenied(order=target.evolve(updated_at=target.updated_at, status=OrderStatus.DENIED,
                                                broker="tastytrade"), checks=()))
    await broker.submit(stop)
    (body,) = order_posts(tt)
    assert body["external-identifier"] == stop.client_order_id
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == stop.order_id)


async def test_held_member_when_cancelled_then_it_ends_without_a_broker_call(broker, tt, recorder):
    target, _ = exits(tt)
    await broker.submit(target)
    before = len(tt.requests)
    await broker.cancel(target)
    ev = await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == target.order_id)
    assert "held for its OCO sibling" in ev.order.reason
    assert len(tt.requests) == before and await broker.open_orders() == []


async def test_complex_dry_run_and_oto_shapes_are_validated_by_the_fake(broker, tt):
    """The fake refuses malformed complex orders as the API does (the adapter never sends these)."""
    status, payload = tt.complex.route("POST", f"/accounts/{tt.account}/complex-orders", {"type": "OCO", "orders": []})
    assert status == 422 and "OCO takes 2 orders" in payload["error"]["message"]
    status, payload = tt.complex.route("POST", f"/accounts/{tt.account}/complex-orders/dry-run",
                                       {"type": "OTOCO", "orders": [{"legs": [1]}, {"legs": [1]}]})
    assert status == 422 and "needs trigger-order" in payload["error"]["message"]


def test_pairing_holds_pairs_and_releases():
    from tests.brokers.helpers import single as mk

    exp = FakeTastytrade().expirations[0]
    a = replace(mk("SPY", exp, 590, Right.PUT, Side.BUY, "0.5"), tag="oco:g")
    b = replace(mk("SPY", exp, 590, Right.PUT, Side.BUY, "0.6"), tag="oco:g")
    p = OcoPairing()
    assert p.offer(replace(a, tag="")).action == "alone"
    assert p.offer(a).action == "hold" and p.offer(a).action == "hold"  # a resend is the same member
    paired = p.offer(b)
    assert paired.action == "pair" and paired.sibling is a and p.held() == []
    assert p.offer(a).action == "hold" and p.ended(b) is a and p.held() == []
    assert p.ended(a) is None and p.offer(b).action == "alone"  # a ended first: b goes alone
    assert p.offer(a).action == "hold" and p.release(a) and not p.release(a)


# ---- through the one order path ---------------------------------------------------------------------------
async def test_engine_oco_group_when_live_on_tastytrade_then_goes_out_as_one_native_oco(tmp_path):
    """SubmitOco → OrderManager → risk → approval → router → adapter: one complex order at the broker, and the
    group's members carry the broker's ids; cancelling the group deletes the complex order once."""
    from engine.brokers.config import BrokersConfig
    from engine.bus import SwitchMode
    from engine.bus.commands import CancelOrderGroup, SetApprovalMode, SubmitOco
    from engine.core import Engine, EngineConfig
    from engine.model import Leg, OpenClose, Option, OrderIntent, TimeInForce
    from engine.settings import Settings
    from tests.sim_start import pinned_settings

    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
        creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        async with Engine(cfg) as engine:
            await engine.connect_broker("tastytrade", credentials=creds)
            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=fake.account))
            await engine.bus.send(SetApprovalMode(enabled=False))
            assert engine.feed is not None
            await engine.feed.subscribe("SPY", fake.expirations[:1], (580.0, 620.0))
            put = Option("SPY", fake.expirations[0], Decimal(590), Right.PUT)
            await wait_until(lambda: engine.market.mid(put) > 0 and engine.market.spot("SPY") > 0,
                             what="broker quotes in the risk engine's market view")
            low = OrderIntent(legs=(Leg(put, Side.BUY, 1, OpenClose.OPEN),), quantity=1,
                              limit_price=Decimal("0.05"), tif=TimeInForce.GTC)
            stop = replace(low, order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("25.00"))
            group = await engine.bus.send(SubmitOco(first=low, second=stop))
            assert engine.oms is not None
            members = [engine.oms.order(i) for i in group.member_order_ids]
            assert len(members) == 2 and all(m is not None and m.status in (
                OrderStatus.SUBMITTED, OrderStatus.WORKING) for m in members), members
            ((_, body),) = complex_requests(fake)
            assert body["type"] == "OCO" and order_posts(fake) == []
            assert [o["external-identifier"] for o in body["orders"]] == [m.client_order_id for m in members]
            await wait_until(lambda: all(engine.oms.order(i).status is OrderStatus.WORKING
                                         for i in group.member_order_ids), what="both members working")
            await engine.bus.send(CancelOrderGroup(group_id=group.group_id))
            await wait_until(lambda: all(engine.oms.order(i) is None or engine.oms.order(i).status
                                         is OrderStatus.CANCELLED for i in group.member_order_ids),
                             what="both members cancelled")
            assert len(complex_requests(fake, "DELETE")) == 1
            await engine.bus.send(SwitchMode(mode="paper"))


async def test_preview_of_the_second_member_when_its_sibling_is_held_then_dry_runs_the_pair(broker, tt):
    target, stop = exits(tt)
    alone = await broker.preview(stop)  # no sibling held yet: the order's own dry-run
    assert "complex" not in alone.raw and not complex_requests(tt)
    await broker.submit(target)
    pair = await broker.preview(stop)
    ((path, body),) = complex_requests(tt)
    assert path.endswith("/complex-orders/dry-run") and body["type"] == "OCO"
    assert [o["external-identifier"] for o in body["orders"]] == [target.client_order_id, stop.client_order_id]
    assert pair.source == "broker" and pair.raw["complex"] == f"OCO with {target.client_order_id}"
    assert pair.buying_power_effect is not None and pair.commission is not None and not pair.errors
    assert tt.orders == {}  # a dry-run places nothing


async def test_held_member_when_the_adapter_is_disarmed_then_it_ends_unsent(broker, tt, recorder):
    target, _ = exits(tt)
    await broker.submit(target)
    broker.disarm()  # leaving live mode, or the kill switch
    rejected = await recorder.wait_for(OrderRejected, lambda e: e.order.order_id == target.order_id)
    assert "not sent" in rejected.order.reason
    assert await broker.open_orders() == [] and complex_requests(tt) == [] and order_posts(tt) == []


async def test_engine_oco_group_when_the_answer_is_lost_mid_submit_then_reconciled_once(tmp_path):
    """The complex order is placed but its answer lost (HTTP 502): the OMS holds the second member as unknown and
    reconciles; both members are found at the broker by client order id and work — none lost, none sent twice."""
    from engine.brokers.config import BrokersConfig
    from engine.bus import SwitchMode
    from engine.bus.commands import SetApprovalMode, SubmitOco
    from engine.core import Engine, EngineConfig
    from engine.model import Leg, OpenClose, Option, OrderIntent, TimeInForce
    from engine.settings import Settings
    from tests.sim_start import pinned_settings

    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
        creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        async with Engine(cfg) as engine:
            await engine.connect_broker("tastytrade", credentials=creds)
            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=fake.account))
            await engine.bus.send(SetApprovalMode(enabled=False))
            put = Option("SPY", fake.expirations[0], Decimal(590), Right.PUT)
            await engine.feed.subscribe("SPY", fake.expirations[:1], (580.0, 620.0))
            await wait_until(lambda: engine.market.mid(put) > 0 and engine.market.spot("SPY") > 0,
                             what="broker quotes in the risk engine's market view")
            low = OrderIntent(legs=(Leg(put, Side.BUY, 1, OpenClose.OPEN),), quantity=1,
                              limit_price=Decimal("0.05"), tif=TimeInForce.GTC)
            stop = replace(low, order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("25.00"))
            fake.server_error_on_place = 502  # placed at the broker, the answer lost
            fake.hold_pushes = True  # and the streamer's news with it
            group = await engine.bus.send(SubmitOco(first=low, second=stop))
            fake.server_error_on_place = None
            fake.hold_pushes = False
            await wait_until(lambda: all(engine.oms.order(i) is not None and engine.oms.order(i).status
                                         is OrderStatus.WORKING for i in group.member_order_ids),
                             timeout=15, what="both members found working by reconciliation")
            members = [engine.oms.order(i) for i in group.member_order_ids]
            assert {m.broker_order_id for m in members} == {str(o) for o in fake.orders}
            assert len(fake.orders) == 2 and len(complex_requests(fake)) == 1 and order_posts(fake) == []
