"""Stop and stop-limit orders on the wire: tastytrade (``order-type`` Stop / Stop Limit + ``stop-trigger``) and
IBKR (``STP`` / ``STP LMT`` + ``auxPrice``), against the loopback servers with the real SDKs, both ways — what
goes out, and what an order found at the broker after a restart maps back to."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.ibkr import IbkrBroker, IbkrConnection
from engine.brokers.tastytrade import TastytradeBroker, TastytradeConnection
from engine.bus.events import OrderAccepted, OrderCancelled, OrderFilled, OrderRejected
from engine.credentials import CredentialStore
from engine.model import Order, OrderType, Right, Side
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.helpers import put_spread, single

FAST_RECONNECT = ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1)
BREAKER = CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3)


class MemoryKeyring:
    priority = 1

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, name: str) -> str | None:
        return self.data.get((service, name))

    def set_password(self, service: str, name: str, value: str) -> None:
        self.data[(service, name)] = value

    def delete_password(self, service: str, name: str) -> None:
        self.data.pop((service, name), None)


def stopped(order: Order, stop: str, limit: str | None = None) -> Order:
    """``order`` as a stop (no limit) or a stop-limit at ``limit``."""
    kind = OrderType.STOP if limit is None else OrderType.STOP_LIMIT
    return replace(order, order_type=kind, stop_price=Decimal(stop),
                   limit_price=None if limit is None else Decimal(limit))


# ---- tastytrade --------------------------------------------------------------------------------------
@pytest.fixture
async def tt():
    server = FakeTastytrade()
    await server.start()
    yield server
    await server.stop()


def tt_conn(fake: FakeTastytrade, bus) -> TastytradeConnection:
    store = CredentialStore(backend=MemoryKeyring(), env={})
    store.set_tastytrade(PROVIDER_SECRET, REFRESH_TOKEN)
    return TastytradeConnection(TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                 call_timeout_s=3.0),
                                credentials=store, bus=bus, reconnect=FAST_RECONNECT, breaker=BREAKER, env={})


@pytest.fixture
async def tt_broker(tt, bus, recorder):
    b = TastytradeBroker(tt_conn(tt, bus), bus)
    await b.connect()
    b.arm_live(tt.account)
    yield b
    await b.disconnect()


def posted(fake: FakeTastytrade) -> list[dict]:
    return [b for m, p, b in fake.requests if m == "POST" and p.endswith("/orders")]


async def test_tastytrade_single_leg_stop_goes_out_as_stop_with_an_unsigned_trigger(tt_broker, tt, recorder):
    order = stopped(single("SPY", tt.expirations[0], 600, Right.CALL, Side.BUY, "1.00", account=tt.account), "2.50")
    await tt_broker.submit(order)
    (body,) = posted(tt)
    assert body["order-type"] == "Stop" and body["stop-trigger"] == "2.50"
    assert "price" not in body and "price-effect" not in body
    accepted = await recorder.wait_for(OrderAccepted)
    assert accepted.order.order_id == order.order_id and accepted.order.stop_price == Decimal("2.50")


async def test_tastytrade_stop_limits_carry_price_effect_and_trigger(tt_broker, tt, recorder):
    sell = stopped(single("SPY", tt.expirations[0], 600, Right.PUT, Side.SELL, "-1.00", account=tt.account),
                   "-1.20", limit="-1.15")
    spread = stopped(put_spread("SPY", tt.expirations[0], 590, 585, "1.00", account=tt.account), "2.00",
                     limit="2.10")
    await tt_broker.submit(sell)
    await tt_broker.submit(spread)
    single_body, spread_body = posted(tt)
    assert (single_body["order-type"], single_body["price"], single_body["price-effect"],
            single_body["stop-trigger"]) == ("Stop Limit", "1.15", "Credit", "1.20")
    assert (spread_body["order-type"], spread_body["price"], spread_body["price-effect"],
            spread_body["stop-trigger"]) == ("Stop Limit", "2.10", "Debit", "2.00")
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == spread.order_id)


async def test_tastytrade_multi_leg_plain_stop_is_rejected_before_sending(tt_broker, tt, recorder):
    order = stopped(put_spread("SPY", tt.expirations[0], 590, 585, "1.00", account=tt.account), "2.00")
    await tt_broker.submit(order)
    rej = await recorder.wait_for(OrderRejected)
    assert rej.order.order_id == order.order_id and "stop-limit" in rej.order.reason
    assert posted(tt) == []


async def test_tastytrade_stops_found_after_a_restart_map_back_signed(tt, bus, recorder):
    first = TastytradeBroker(tt_conn(tt, bus), bus)
    await first.connect()
    first.arm_live(tt.account)
    sell = stopped(single("SPY", tt.expirations[0], 600, Right.PUT, Side.SELL, "-1.00", account=tt.account),
                   "-1.20", limit="-1.15")
    buy = stopped(single("SPY", tt.expirations[0], 610, Right.CALL, Side.BUY, "1.00", account=tt.account), "2.50")
    await first.submit(sell)
    await first.submit(buy)
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == buy.order_id)
    await first.disconnect()
    restarted = TastytradeBroker(tt_conn(tt, bus), bus)
    await restarted.connect()
    try:
        remote = {o.client_order_id: o for o in await restarted.open_orders()}
        s, b = remote[sell.client_order_id], remote[buy.client_order_id]
        assert (s.order_type, s.stop_price, s.limit_price) == (OrderType.STOP_LIMIT, Decimal("-1.20"),
                                                               Decimal("-1.15"))
        assert (b.order_type, b.stop_price, b.limit_price) == (OrderType.STOP, Decimal("2.50"), None)
    finally:
        await restarted.disconnect()


# ---- IBKR --------------------------------------------------------------------------------------------
@pytest.fixture
async def tws():
    server = FakeTws()
    await server.start()
    yield server
    await server.stop()


def ib_conn(tws: FakeTws, bus) -> IbkrConnection:
    return IbkrConnection(IbkrConfig(port=tws.port, call_timeout_s=3.0, connect_timeout_s=3.0), bus=bus,
                          reconnect=FAST_RECONNECT, breaker=BREAKER)


@pytest.fixture
async def ib_broker(tws, bus, recorder):
    b = IbkrBroker(ib_conn(tws, bus), bus)
    await b.connect()
    b.arm_live(tws.account)
    yield b
    await b.disconnect()


def placed(tws: FakeTws) -> list[list[str]]:
    return [f for f in tws.requests if f and f[0] == "3"]


async def test_ibkr_stops_go_out_as_stp_and_stp_lmt_with_aux_price(ib_broker, tws, recorder):
    buy = stopped(single("SPY", tws.expirations[0], 600, Right.CALL, Side.BUY, "1.00", account=tws.account), "2.50")
    sell = stopped(single("SPY", tws.expirations[0], 600, Right.PUT, Side.SELL, "-1.00", account=tws.account),
                   "-1.20", limit="-1.15")
    spread = stopped(put_spread("SPY", tws.expirations[0], 590, 585, "1.00", account=tws.account), "2.00",
                     limit="2.10")
    for order in (buy, sell, spread):
        await ib_broker.submit(order)
        await recorder.wait_for(OrderAccepted, lambda e, o=order: e.order.order_id == o.order_id)
    p_buy, p_sell, p_spread = placed(tws)
    assert (p_buy[16], p_buy[18], float(p_buy[20])) == ("BUY", "STP", pytest.approx(2.50))
    assert (p_sell[16], p_sell[18], float(p_sell[19]), float(p_sell[20])) == \
        ("SELL", "STP LMT", pytest.approx(1.15), pytest.approx(1.20))
    # a BAG keeps our signed net for the limit and the trigger alike
    assert (p_spread[4], p_spread[18], float(p_spread[19]), float(p_spread[20])) == \
        ("BAG", "STP LMT", pytest.approx(2.10), pytest.approx(2.00))


async def test_ibkr_stops_found_after_a_restart_map_back_signed(tws, bus, recorder):
    first = IbkrBroker(ib_conn(tws, bus), bus)
    await first.connect()
    first.arm_live(tws.account)
    sell = stopped(single("SPY", tws.expirations[0], 600, Right.PUT, Side.SELL, "-1.00", account=tws.account),
                   "-1.20", limit="-1.15")
    buy = stopped(single("SPY", tws.expirations[0], 600, Right.CALL, Side.BUY, "1.00", account=tws.account), "2.50")
    for order in (sell, buy):
        await first.submit(order)
        await recorder.wait_for(OrderAccepted, lambda e, o=order: e.order.order_id == o.order_id)
    await first.disconnect()
    restarted = IbkrBroker(ib_conn(tws, bus), bus)
    await restarted.connect()
    try:
        remote = {o.client_order_id: o for o in await restarted.open_orders()}
        s, b = remote[sell.client_order_id], remote[buy.client_order_id]
        assert (s.order_type, s.stop_price, s.limit_price) == (OrderType.STOP_LIMIT, Decimal("-1.2"),
                                                               Decimal("-1.15"))
        assert (b.order_type, b.stop_price, b.limit_price) == (OrderType.STOP, Decimal("2.5"), None)
    finally:
        await restarted.disconnect()


#: field positions in IB's placeOrder at server version 176 for a single-leg contract (ib_async.client)
OCA_GROUP, OCA_TYPE = 22, 47


async def test_ibkr_one_cancels_other_members_go_out_in_one_oca_group(ib_broker, tws, recorder):
    exp = tws.expirations[0]
    target = replace(single("SPY", exp, 600, Right.PUT, Side.SELL, "-3.00", account=tws.account), tag="oco:grp-7")
    stop = replace(stopped(single("SPY", exp, 600, Right.PUT, Side.SELL, "-1.00", account=tws.account), "-1.00"),
                   tag="oco:grp-7")
    plain = single("SPY", exp, 600, Right.CALL, Side.BUY, "1.00", account=tws.account)
    for order in (target, stop, plain):
        await ib_broker.submit(order)
        await recorder.wait_for(OrderAccepted, lambda e, o=order: e.order.order_id == o.order_id)
    p_target, p_stop, p_plain = placed(tws)
    assert (p_target[OCA_GROUP], p_target[OCA_TYPE]) == ("grp-7", "1")
    assert (p_stop[OCA_GROUP], p_stop[OCA_TYPE], p_stop[18]) == ("grp-7", "1", "STP")
    assert (p_plain[OCA_GROUP], p_plain[OCA_TYPE]) == ("", "0")


async def _oca_pair(ib_broker, tws, recorder, group: str = "grp-9") -> tuple[Order, Order]:
    exp = tws.expirations[0]
    target = replace(single("SPY", exp, 600, Right.PUT, Side.BUY, "1.00", account=tws.account), tag=f"oco:{group}")
    stop = replace(stopped(single("SPY", exp, 600, Right.PUT, Side.BUY, "3.00", account=tws.account), "3.00"),
                   tag=f"oco:{group}")
    for order in (target, stop):
        await ib_broker.submit(order)
        await recorder.wait_for(OrderAccepted, lambda e, o=order: e.order.order_id == o.order_id)
    return target, stop


async def test_ibkr_oca_member_when_filled_then_tws_cancels_its_sibling(ib_broker, tws, recorder):
    target, stop = await _oca_pair(ib_broker, tws, recorder)
    fake_target = next(o for o in tws.orders.values() if o.order_ref == target.client_order_id)
    tws.fill(fake_target.order_id)
    await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == target.order_id)
    await recorder.wait_for(OrderCancelled, lambda e: e.order.order_id == stop.order_id)
    assert [r for r in tws.requests if r and r[0] == "4"] == []  # the venue's doing: no cancel was sent by us
    assert [o.status for o in tws.orders.values()] == ["Filled", "Cancelled"]


async def test_ibkr_oca_member_when_rejected_then_its_sibling_keeps_working(ib_broker, tws, recorder):
    exp = tws.expirations[0]
    target = replace(single("SPY", exp, 600, Right.PUT, Side.BUY, "1.00", account=tws.account), tag="oco:grp-3")
    await ib_broker.submit(target)
    await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == target.order_id)
    tws.reject_orders_with = "insufficient equity"
    stop = replace(stopped(single("SPY", exp, 600, Right.PUT, Side.BUY, "3.00", account=tws.account), "3.00"),
                   tag="oco:grp-3")
    await ib_broker.submit(stop)
    rejected = await recorder.wait_for(OrderRejected, lambda e: e.order.order_id == stop.order_id)
    assert "insufficient equity" in rejected.order.reason
    assert [o.status for o in tws.orders.values()] == ["Submitted"]  # the target works on alone
    assert not recorder.of(OrderCancelled)


async def test_ibkr_oca_group_when_cancelled_then_both_members_end_at_tws(ib_broker, tws, recorder):
    target, stop = await _oca_pair(ib_broker, tws, recorder, group="grp-4")
    for order in (target, stop):
        working = (await recorder.wait_for(OrderAccepted, lambda e, o=order: e.order.order_id == o.order_id)).order
        await ib_broker.cancel(working)
    for order in (target, stop):
        ev = await recorder.wait_for(OrderCancelled, lambda e, o=order: e.order.order_id == o.order_id)
        assert ev.order.reason == ""  # we asked for it
    assert {o.status for o in tws.orders.values()} == {"Cancelled"}
