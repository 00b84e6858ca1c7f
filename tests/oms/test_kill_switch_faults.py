"""The kill switch wins under faults (issue 14) on the real order path: a full disk, orders the store does not
know, a stored flatten intent after a crash, a broker outage and a submit whose outcome is unknown.

Real paper broker, real SQLite, real bus; the live cases talk to the loopback tastytrade server."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from decimal import Decimal

import pytest
from oms_harness import Harness, wait_for
from risk_kit import opt

from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.tastytrade import TastytradeBroker, TastytradeConnection
from engine.bus.events import Alert
from engine.credentials import CredentialStore
from engine.model import Leg, OrderIntent, OrderStatus, OrderType, Side
from engine.oms.config import OmsConfig
from engine.risk.kill_switch import KV_STATE, read_status, trip_in_store
from engine.risk.state import TradingState
from engine.store import Store
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade


def resting(desk: Harness, i: int) -> OrderIntent:
    """A buy limit well below the bid (it rests); calls and puts alternate so the delta limit is never hit."""
    inst = opt(610, "C") if i % 2 == 0 else opt(590, "P")
    return OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                       limit_price=Decimal(f"{desk.mid(inst) - 1.0 - 0.05 * i:.2f}"))


async def working(desk: Harness, n: int) -> list:
    orders = [await desk.oms.submit(resting(desk, i)) for i in range(n)]
    await wait_for(lambda: all(desk.oms.order(o.order_id).status is OrderStatus.WORKING for o in orders))
    return orders


# ---- finding 1: disk full ------------------------------------------------------------------------------------
async def test_trip_when_disk_full_then_cancels_first_holds_halted_alerts_and_persists_once_space_is_back():
    from tests.small_disk import small_disk

    with small_disk() as disk:
        desk = await Harness(disk.path / "db.sqlite").start()
        try:
            await working(desk, 6)
            assert len(desk.paper.exchange.open_orders()) == 6
            other = Store.open(desk.path)  # a second reader, as `optiondesk risk` would be
            disk.fill()
            cancelled = await desk.kill_switch.trip("disk full drill", by="alice")
            assert desk.paper.exchange.open_orders() == [] and cancelled == 6
            assert desk.kill_switch.state is TradingState.HALTED
            assert any(a.level == "critical" and "could not be saved" in a.message for a in desk.of(Alert))
            probe = desk.oms.factory.create(resting(desk, 8), broker="paper", account_id="PAPER",
                                            tick_for=desk.paper.tick_size)
            decision = desk.risk.check(probe, consume=False)
            assert not decision.passed and "trading_state" in [c.name for c in decision.failed]
            try:
                assert read_status(other).state is TradingState.ACTIVE  # not on disk yet
                disk.free()
                await wait_for(lambda: read_status(other).state is TradingState.HALTED, timeout=5)
                assert read_status(other).reason == "disk full drill"
            finally:
                other.close()
        finally:
            await desk.stop()


# ---- finding 2: orders the store does not know ---------------------------------------------------------------
async def _foreign_order(desk: Harness):
    """An order placed at the paper exchange by "another app": the store has no record of it."""
    intent = resting(desk, 7)
    order = desk.oms.factory.create(intent, broker="paper", account_id=desk.paper.account_id,
                                    tick_for=desk.paper.tick_size)
    before = len(desk.paper.exchange.open_orders())
    await desk.paper.submit(order.evolve(status=OrderStatus.SUBMITTED, updated_at=order.updated_at))
    assert desk.store.orders.get(order.order_id) is None
    assert len(desk.paper.exchange.open_orders()) == before + 1
    return order


async def test_trip_when_broker_has_an_order_the_store_does_not_know_then_it_is_cancelled(desk):
    await working(desk, 2)
    await _foreign_order(desk)
    await desk.kill_switch.trip("sweep everything")
    assert desk.paper.exchange.open_orders() == []


async def test_reconciliation_when_unknown_open_order_then_halted_and_it_is_cancelled(desk):
    await _foreign_order(desk)
    rep = await desk.oms.reconcile("paper")
    assert rep.unknown_broker_orders and desk.kill_switch.state is TradingState.HALTED
    await wait_for(lambda: desk.paper.exchange.open_orders() == [])


# ---- finding 5: a stored flatten intent survives a crash ------------------------------------------------------
async def test_stored_flatten_intent_when_engine_restarts_then_positions_are_flattened(tmp_path):
    path = tmp_path / "db.sqlite"
    h = await Harness(path).start()
    for inst in (opt(610, "C"), opt(590, "P"), opt(620, "C")):
        ask = h.market.bid_ask(inst)[1]
        order = await h.oms.submit(OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=1,
                                               limit_price=Decimal(f"{ask:.2f}")))
        await wait_for(lambda o=order: h.oms.order(o.order_id).status is OrderStatus.FILLED)
    assert len(h.paper.exchange.positions) == 3
    await h.stop()
    s = Store.open(path)  # what a crash mid-trip leaves (or `optiondesk kill --flatten` with the app closed)
    trip_in_store(s, "flatten drill", by="cli", flatten=True)
    s.close()
    h2 = await Harness(path).start()
    try:
        await wait_for(lambda: not h2.paper.exchange.positions, timeout=5)
        flat = [o for o in h2.oms.recent_orders() if o.source == "kill_switch"]
        assert len(flat) >= 1 and h2.kill_switch.state is TradingState.HALTED
        rec = json.loads(h2.store.query("SELECT value FROM kv WHERE key=?", (KV_STATE,))[0][0])
        await wait_for(lambda: not json.loads(h2.store.query("SELECT value FROM kv WHERE key=?", (KV_STATE,))[0][0])
                       ["flatten"])
        assert rec["state"] == "HALTED"
    finally:
        await h2.stop()


# ---- finding 4: broker outage in live mode (loopback tastytrade) ----------------------------------------------
@pytest.fixture
async def live(tmp_path):
    fake = await FakeTastytrade(today=date(2026, 1, 20)).start()  # first expiry = the kit's EXPIRY
    desk = await Harness(tmp_path / "db.sqlite", oms_config=OmsConfig(approval_in_live=False,
                                                                      broker_call_timeout_s=5)).start()
    creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                               "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
    conn = TastytradeConnection(TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                 call_timeout_s=0.3),
                                credentials=creds, bus=desk.bus, env={},
                                reconnect=ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1),
                                breaker=CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3))
    tt = TastytradeBroker(conn, desk.bus)
    await tt.connect()
    desk.router.add_broker(tt)
    desk.router.switch("live", "tastytrade", fake.account)
    yield desk, fake, tt
    await desk.stop()
    await tt.disconnect()
    await fake.stop()


async def test_kill_switch_cancel_during_outage_when_server_answers_again_then_cancel_is_retried(live):
    desk, fake, _tt = live
    order = await desk.oms.submit(desk.put_spread())
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.WORKING)
    placed = next(iter(fake.orders.values()))
    fake.silent = True  # outage: requests hang, the client times out
    await desk.kill_switch.trip("outage drill")
    assert placed.status == "Live"
    fake.silent = False
    await wait_for(lambda: placed.status == "Cancelled", timeout=8)
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.CANCELLED, timeout=5)


async def test_http_500_after_the_order_was_placed_then_not_rejected_but_settled_by_client_order_id(live):
    desk, fake, _tt = live
    fake.server_error_on_place = 500
    fake.hold_pushes = True  # nothing streamed: only reconciliation can tell
    order = await desk.oms.submit(desk.put_spread())
    assert order.status is not OrderStatus.REJECTED
    placed = next(iter(fake.orders.values()))
    assert placed.status == "Live"
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.WORKING, timeout=5)
    assert desk.oms.order(order.order_id).broker_order_id == str(placed.id)
    steps = [e["detail"].get("step") for e in desk.oms.order_events(order.order_id)]
    assert "outcome_unknown" in steps


async def test_http_500_before_the_order_was_placed_then_held_unknown_not_rejected(live):
    desk, fake, _tt = live
    fake.server_error_on_place = 503
    fake.server_error_after_place = False
    order = await desk.oms.submit(desk.put_spread())
    assert not fake.orders
    cur = desk.oms.order(order.order_id)
    assert cur.status is OrderStatus.SUBMITTED and "unknown" in cur.reason
    await desk.oms.reconcile("tastytrade")
    assert desk.oms.order(order.order_id).status is OrderStatus.SUBMITTED


# ---- HTTP 429 during a trip (chaos: broker/cancel-429-during-trip, broker/foreign-order-listing-500) ----------
async def test_kill_switch_cancel_answered_429_then_retried_after_the_retry_after_the_server_asked(live):
    desk, fake, _tt = live
    orders = [await desk.oms.submit(desk.put_spread(client_order_id=f"rl-{i}")) for i in range(2)]
    await wait_for(lambda: all(desk.oms.order(o.order_id).status is OrderStatus.WORKING for o in orders))
    for placed in fake.orders.values():
        fake.rate_limit[f"DELETE /orders/{placed.id}"] = 1
    fake.retry_after = "1"  # longer than the OMS's first backoff step (0.25 s)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await desk.kill_switch.trip("rate limited drill")
    assert all(p.status == "Live" for p in fake.orders.values())  # the first cancels were not processed
    await wait_for(lambda: all(p.status == "Cancelled" for p in fake.orders.values()), timeout=8)
    assert loop.time() - t0 >= 0.9  # not before the server said
    await wait_for(lambda: all(desk.oms.order(o.order_id).status is OrderStatus.CANCELLED for o in orders))


async def test_kill_switch_sweep_when_listing_open_orders_fails_then_retried_and_foreign_order_cancelled(live):
    desk, fake, _tt = live
    order = await desk.oms.submit(desk.put_spread())
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.WORKING)
    body = dict(next(iter(fake.orders.values())).body)
    body["external-identifier"] = "another-app-1"
    fake._place(body)  # placed by another app: the store has no record of it
    foreign = next(p for p in fake.orders.values() if p.body.get("external-identifier") == "another-app-1")
    fake.rate_limit["GET /orders/live"] = 2  # the trip's listing and its first retry fail
    await desk.kill_switch.trip("sweep drill")
    assert foreign.status == "Live"
    await wait_for(lambda: foreign.status == "Cancelled", timeout=8)
    assert all(p.status == "Cancelled" for p in fake.orders.values())
    assert fake.rate_limit["GET /orders/live"] == 0
