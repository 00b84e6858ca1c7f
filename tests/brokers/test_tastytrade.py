"""tastytrade adapter against the loopback tastytrade (REST + DXLink + account streamer), real SDK."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pytest

from engine.brokers.base import BrokerError
from engine.brokers.circuit_breaker import BreakerState, CircuitBreakerStateChanged, CircuitOpenError
from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.resilience import (
    MAX_RETRY_AFTER_S,
    BrokerNotArmed,
    BrokerRateLimited,
    retry_after_seconds,
)
from engine.brokers.tastytrade import (
    BrokerAuthError,
    TastytradeBroker,
    TastytradeConnection,
    from_tt_price,
    position_from_tt,
    to_tt_price,
)
from engine.bus.events import (
    AccountUpdated,
    ChainUpdated,
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
    QuotesUpdated,
)
from engine.credentials import CredentialStore
from engine.market.tastytrade import TastytradeFeed
from engine.model import OrderStatus, Right, Side
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.helpers import put_spread, single

FAST_RECONNECT = ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1)


class MemoryKeyring:
    """A keyring backend living in memory (the real keyring API, no OS service)."""

    priority = 1

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, name: str) -> str | None:
        return self.data.get((service, name))

    def set_password(self, service: str, name: str, value: str) -> None:
        self.data[(service, name)] = value

    def delete_password(self, service: str, name: str) -> None:
        self.data.pop((service, name), None)


def creds(secret: str = PROVIDER_SECRET, token: str = REFRESH_TOKEN) -> CredentialStore:
    store = CredentialStore(backend=MemoryKeyring(), env={})
    store.set_tastytrade(secret, token)
    return store


@pytest.fixture
async def fake():
    server = FakeTastytrade()
    await server.start()
    yield server
    await server.stop()


def make_conn(fake: FakeTastytrade, bus, store: CredentialStore | None = None, **cfg) -> TastytradeConnection:
    config = TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url, call_timeout_s=cfg.pop(
        "call_timeout_s", 3.0), **cfg)
    return TastytradeConnection(config, credentials=store or creds(), bus=bus, reconnect=FAST_RECONNECT,
                                breaker=CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3), env={})


@pytest.fixture
async def broker(fake, bus, recorder):
    conn = make_conn(fake, bus)
    b = TastytradeBroker(conn, bus)
    await b.connect()
    yield b
    await b.disconnect()


# ---- conventions -------------------------------------------------------------------------------------
def test_price_sign_is_negated_at_the_boundary():
    # ours: +debit / -credit ; tastytrade: +credit / -debit
    assert to_tt_price(Decimal("-1.25")) == Decimal("1.25")  # a credit we receive
    assert to_tt_price(Decimal("0.80")) == Decimal("-0.80")  # a debit we pay
    assert from_tt_price(Decimal("1.25")) == Decimal("-1.25")
    assert from_tt_price(None) is None


def test_position_mapping_signs_quantity_and_keeps_multiplier():
    p = position_from_tt("SPY   261218P00590000", Decimal(2), "Short", Decimal("3.15"), Decimal(100), "SPY")
    assert p.quantity == -2 and p.multiplier == 100 and p.avg_price == Decimal("3.15")
    assert p.symbol == "SPY261218P00590000"
    s = position_from_tt("SPY", Decimal(10), "Long", Decimal("601.5"), Decimal(1))
    assert s.quantity == 10 and s.multiplier == 1


# ---- connect, account, positions --------------------------------------------------------------------
async def test_connect_lists_account_balances_positions(broker, fake, recorder):
    assert broker.connected and broker.account_id == fake.account
    snap = await broker.account()
    assert snap.net_liquidation == Decimal("24370.5") and snap.buying_power == Decimal("18000.0")
    assert snap.is_live and snap.broker == "tastytrade"
    positions = await broker.positions()
    assert len(positions) == 1 and positions[0].quantity == -2 and positions[0].multiplier == 100
    # reconciliation on connect published them
    assert recorder.of(PositionChanged) and recorder.of(AccountUpdated)
    ok = [e for e in recorder.of(ConnectionStateChanged) if e.state == "connected"]
    assert ok and ok[0].latency_ms is not None and ok[0].latency_ms >= 0
    assert fake.account not in ok[0].detail  # only the last 4 digits
    # the streamed position update becomes a PositionChanged
    fake.push_position("SPY   261218P00590000", 3, "Short", "3.10")
    ev = await recorder.wait_for(PositionChanged, lambda e: e.position.quantity == -3)
    assert ev.position.avg_price == Decimal("3.10")


# ---- orders ------------------------------------------------------------------------------------------
async def test_submit_refuses_unless_armed_for_the_connected_account(broker, fake):
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    with pytest.raises(BrokerNotArmed):
        await broker.submit(order)
    with pytest.raises(BrokerNotArmed):
        broker.arm_live("5WT99999")
    assert not [r for r in fake.requests if r[1].endswith("/orders")]
    broker.arm_live(fake.account)
    broker.disarm()
    with pytest.raises(BrokerNotArmed):
        await broker.submit(order)
    assert not [r for r in fake.requests if r[0] == "POST" and r[1].endswith("/orders")]


async def test_credit_spread_submit_sends_credit_and_fills_stream_back(broker, fake, recorder):
    broker.arm_live(fake.account)
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await broker.submit(order)
    body = next(b for m, p, b in fake.requests if m == "POST" and p.endswith("/orders"))
    # our -1.10 (credit) goes out as tastytrade price 1.10 with effect Credit; explicit live order (not dry-run)
    assert body["price"] == "1.10" and body["price-effect"] == "Credit"
    assert [leg["action"] for leg in body["legs"]] == ["Sell to Open", "Buy to Open"]
    assert body["external-identifier"] == order.client_order_id
    accepted = await recorder.wait_for(OrderAccepted)
    assert accepted.order.order_id == order.order_id and accepted.order.status is OrderStatus.WORKING
    oid = int(accepted.order.broker_order_id)
    fake.fill(oid)
    filled = await recorder.wait_for(OrderFilled)
    assert filled.order.status is OrderStatus.FILLED and filled.order.filled_quantity == 1
    assert {f.quantity for f in filled.fills} == {-1, 1}
    # net fill price back in our convention: sold at 2.10, bought at 1.00 → 1.10 credit = -1.10
    assert filled.order.avg_fill_price == Decimal("-1.10")
    assert all(f.order_id == order.order_id for f in filled.fills)


async def test_debit_single_leg_goes_out_as_debit(broker, fake):
    broker.arm_live(fake.account)
    await broker.submit(single("SPY", fake.expirations[0], 600, Right.CALL, Side.BUY, "2.50", account=fake.account))
    body = next(b for m, p, b in fake.requests if m == "POST" and p.endswith("/orders"))
    assert body["price"] == "2.50" and body["price-effect"] == "Debit"


async def test_preview_is_a_dry_run_and_reports_buying_power_and_fees(broker, fake):
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10")
    preview = await broker.preview(order)  # allowed without arming: nothing is placed
    assert preview.source == "broker"
    assert preview.buying_power_effect == Decimal("-500") and preview.commission == Decimal("2.24")  # a cost, positive
    assert preview.warnings and "next valid session" in preview.warnings[0]
    posts = [p for m, p, b in fake.requests if m == "POST" and p.startswith("/accounts")]
    assert posts == [f"/accounts/{fake.account}/orders/dry-run"]


async def test_error_body_becomes_order_rejected_with_broker_message(broker, fake, recorder):
    broker.arm_live(fake.account)
    fake.reject_orders_with = "Insufficient buying power for this order"
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await broker.submit(order)
    ev = await recorder.wait_for(OrderRejected)
    assert "Insufficient buying power" in ev.order.reason and ev.order.status is OrderStatus.REJECTED
    assert broker.conn.breaker.state is BreakerState.CLOSED  # a rejection is an answer, not a failure


async def test_streamed_rejection_and_unknown_symbol(broker, fake, recorder):
    broker.arm_live(fake.account)
    fake.order_status_reject = "Exchange rejected: price outside limits"
    await broker.submit(put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account))
    ev = await recorder.wait_for(OrderRejected)
    assert "price outside limits" in ev.order.reason
    fake.order_status_reject = None
    await broker.submit(put_spread("SPY", fake.expirations[0], 591, 586, "-1.10", account=fake.account))
    ev2 = await recorder.wait_for(OrderRejected, lambda e: "Unknown option symbol" in e.order.reason)
    assert ev2.order.reason.startswith("invalid_symbol")


async def test_replace_and_cancel(broker, fake, recorder):
    broker.arm_live(fake.account)
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await broker.submit(order)
    acc = await recorder.wait_for(OrderAccepted)
    await broker.replace(acc.order, Decimal("-1.05"))
    rep = await recorder.wait_for(OrderReplaced)
    assert rep.order.limit_price == Decimal("-1.05") and rep.previous_price == Decimal("-1.10")
    put = next(b for m, p, b in fake.requests if m == "PUT")
    assert put["price"] == "1.05" and put["price-effect"] == "Credit"
    assert rep.order.broker_order_id != acc.order.broker_order_id
    await asyncio.sleep(0)  # the old order's Cancelled push must not look like a user cancel
    await broker.cancel(rep.order)
    cancelled = await recorder.wait_for(OrderCancelled)
    assert cancelled.order.broker_order_id == rep.order.broker_order_id
    assert len(recorder.of(OrderCancelled)) == 1
    assert [o.order_id for o in await broker.open_orders()] == []


async def test_cancel_is_allowed_when_disarmed(broker, fake, recorder):
    broker.arm_live(fake.account)
    await broker.submit(put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account))
    acc = await recorder.wait_for(OrderAccepted)
    broker.disarm()
    await broker.cancel(acc.order)
    await recorder.wait_for(OrderCancelled)


# ---- HTTP 429: not processed (a cancel is retried by the OMS, a submit is a clean refusal) ------------------
async def test_cancel_answered_429_then_rate_limited_with_retry_after_and_breaker_stays_closed(broker, fake, recorder):
    broker.arm_live(fake.account)
    await broker.submit(put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account))
    acc = await recorder.wait_for(OrderAccepted)
    fake.rate_limit["DELETE /orders/" + acc.order.broker_order_id] = 3  # more than the breaker's threshold (2)
    fake.retry_after = "2"
    for _ in range(3):
        with pytest.raises(BrokerRateLimited, match="429") as err:
            await broker.cancel(acc.order)
        assert err.value.retry_after_s == 2.0
    assert broker.conn.breaker.state is BreakerState.CLOSED  # a throttling server is up: no REDUCING, no trip
    assert fake.orders[int(acc.order.broker_order_id)].status == "Live"  # nothing was done
    await broker.cancel(acc.order)  # the next try goes through
    await recorder.wait_for(OrderCancelled)


async def test_submit_answered_429_then_rejected_as_not_placed(broker, fake, recorder):
    broker.arm_live(fake.account)
    fake.rate_limit["POST /orders"] = 1
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await broker.submit(order)
    ev = await recorder.wait_for(OrderRejected)
    assert ev.order.status is OrderStatus.REJECTED and "429" in ev.order.reason and "nothing was placed" in \
        ev.order.reason
    assert not fake.orders and broker.conn.breaker.state is BreakerState.CLOSED
    await broker.submit(order.evolve(client_order_id="second", updated_at=order.updated_at))
    await recorder.wait_for(OrderAccepted)
    assert len(fake.orders) == 1


@pytest.mark.parametrize(("value", "date", "expected"), [
    ("3", None, 3.0),
    (" 0 ", None, 0.0),
    ("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 30.0),  # an HTTP date, against Date
    ("Wed, 21 Oct 2026 07:27:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 0.0),  # already past
    ("Wed, 21 Oct 2026 07:28:30 GMT", None, None),  # a date without the server's Date: no clock to measure by
    ("86400", None, MAX_RETRY_AFTER_S),
    ("soon", "Wed, 21 Oct 2026 07:28:00 GMT", None),
    ("-5", None, None),
    ("", None, None),
    (None, None, None),
])
def test_retry_after_header_when_parsed_then_seconds_or_none(value, date, expected):
    assert retry_after_seconds(value, date) == expected


# ---- market data -------------------------------------------------------------------------------------
async def test_feed_chain_and_visible_window_quotes_with_vendor_greeks(fake, bus, recorder):
    conn = make_conn(fake, bus)
    feed = TastytradeFeed(conn, bus, underlyings=["SPY"])
    await feed.start()
    try:
        exps = await feed.expirations("SPY")
        assert exps == fake.expirations
        chain = await feed.chain("SPY")
        assert len(chain) == len(fake.expirations) * len(fake.strikes) * 2 and chain.multiplier == 100
        await feed.subscribe("SPY", [exps[0]], (590.0, 610.0))
        window = feed.subscribed_symbols()
        assert len(window) == 5 * 2 and all(s.startswith(".SPY") for s in window)
        await wait_until(lambda: fake.subscribed("Quote") >= window, what="server-side subscription")
        await recorder.wait_for(QuotesUpdated)
        await wait_until(lambda: np.isfinite(feed.last_chain("SPY").vendor["vendor_delta"]).sum() == 10,
                         what="vendor greeks")
        await wait_until(lambda: (feed.last_chain("SPY").open_interest == 4321).sum() == 10, what="summaries")
        await wait_until(lambda: (feed.last_chain("SPY").volume == 1234).sum() == 10, what="trades")
        snap = feed.last_chain("SPY")
        live = np.isfinite(snap.bid)
        assert live.sum() == 10 and (snap.ask[live] > snap.bid[live]).all()
        assert np.isfinite(snap.last[live]).all() and fake.subscribed("Summary") == window
        assert feed.last_price("SPY") == pytest.approx(600.0)
        assert snap.spot == pytest.approx(600.0)
        # scrolling: the new window replaces the old one on the server
        await feed.subscribe("SPY", [exps[1]], (600.0, 600.0))
        await wait_until(lambda: len(fake.subscribed("Quote") - {"SPY"}) == 2, what="window moved")
        assert recorder.of(ChainUpdated)
        with pytest.raises(Exception, match="no option chain"):
            await feed.chain("NOPE")
    finally:
        await feed.stop()


# ---- faults ------------------------------------------------------------------------------------------
async def test_server_closes_mid_stream_then_feed_and_broker_reconnect_and_resubscribe(fake, bus, recorder):
    conn = make_conn(fake, bus)
    broker = TastytradeBroker(conn, bus)
    feed = TastytradeFeed(conn, bus, underlyings=["SPY"])
    await broker.connect()
    await feed.start()
    try:
        await feed.subscribe("SPY", [fake.expirations[0]], (595.0, 605.0))
        window = feed.subscribed_symbols()
        await wait_until(lambda: fake.subscribed("Quote") >= window, what="first subscription")
        await fake.close_streams()
        await wait_until(lambda: feed.connects >= 2 and broker.stream_connects >= 2, timeout=10, what="reconnect")
        await wait_until(lambda: fake.subscribed("Quote") >= window | {"SPY"}, what="resubscribed")
        before = feed.quotes_received
        await wait_until(lambda: feed.quotes_received > before + 5, what="quotes after reconnect")
        # order updates still flow on the new account-stream connection
        broker.arm_live(fake.account)
        await broker.submit(put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account))
        await recorder.wait_for(OrderAccepted)
        states = [e.state for e in recorder.of(ConnectionStateChanged) if e.component == "feed:tastytrade"]
        assert "disconnected" in states and states[-1] == "connected"
    finally:
        await feed.stop()
        await broker.disconnect()


async def test_malformed_frames_are_logged_and_survived(fake, bus, recorder, caplog):
    conn = make_conn(fake, bus)
    broker = TastytradeBroker(conn, bus)
    feed = TastytradeFeed(conn, bus, underlyings=["SPY"])
    await broker.connect()
    await feed.start()
    try:
        await feed.subscribe("SPY", [fake.expirations[0]], (595.0, 605.0))
        await wait_until(lambda: feed.quotes_received > 0, what="quotes")
        with caplog.at_level("WARNING"):
            await fake.send_malformed()
            await wait_until(lambda: feed.connects >= 2 and broker.stream_connects >= 2, timeout=10,
                             what="recovery after malformed frames")
        assert any("reconnecting" in r.getMessage() for r in caplog.records)
        before = feed.quotes_received
        await wait_until(lambda: feed.quotes_received > before, what="quotes after malformed frame")
    finally:
        await feed.stop()
        await broker.disconnect()


async def test_silent_server_times_out_and_opens_the_breaker(broker, fake, bus, recorder):
    fake.silent = True
    for _ in range(2):
        with pytest.raises(BrokerError, match="timed out"):
            await asyncio.wait_for(broker.conn.call("positions", lambda: broker.conn.account.get_positions(
                broker.conn.session), timeout_s=0.2), 5)
    ev = await recorder.wait_for(CircuitBreakerStateChanged, lambda e: e.state == "open")
    assert ev.breaker == "broker:tastytrade" and ev.opened
    with pytest.raises(CircuitOpenError):
        await broker.positions()
    fake.silent = False
    await wait_until(lambda: broker.conn.breaker.state is BreakerState.HALF_OPEN, what="breaker half-open")
    assert len(await broker.positions()) == 1
    assert broker.conn.breaker.state is BreakerState.CLOSED


async def test_token_refresh_failure_gives_clear_state_and_no_crash(fake, bus, recorder):
    fake.fail_token_refresh = True
    conn = make_conn(fake, bus)
    broker = TastytradeBroker(conn, bus)
    with pytest.raises(BrokerAuthError, match="invalid_grant"):
        await broker.connect()
    failed = await recorder.wait_for(ConnectionStateChanged, lambda e: e.state == "failed")
    assert "authentication failed" in failed.detail and not broker.connected
    fake.fail_token_refresh = False
    await broker.connect()
    assert broker.connected
    await broker.disconnect()


async def test_wrong_refresh_token_is_refused(fake, bus):
    conn = make_conn(fake, bus, store=creds(token="not-the-token"))
    with pytest.raises(Exception, match="invalid_grant"):
        await conn.connect()
    assert not conn.connected


async def test_token_refresh_failure_mid_session_is_a_clear_failed_state(broker, fake, recorder):
    fake.fail_token_refresh = True
    fake.access_token = ""  # the server revoked the session
    broker.conn.session.session_expiration = 0  # the SDK refreshes lazily before the next request
    with pytest.raises(BrokerAuthError, match="authentication failed"):
        await broker.positions()
    failed = await recorder.wait_for(ConnectionStateChanged, lambda e: e.state == "failed")
    assert "re-enter the refresh token" in failed.detail
    assert broker.conn.breaker.state is BreakerState.CLOSED  # not a transport failure
    fake.fail_token_refresh = False
    assert len(await broker.positions()) == 1  # a working token again: calls recover


async def test_fill_while_the_stream_was_down_is_reconciled_on_reconnect(broker, fake, recorder):
    broker.arm_live(fake.account)
    await broker.submit(put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account))
    acc = await recorder.wait_for(OrderAccepted)
    fake.hold_pushes = True  # the fill happens, its push is lost
    fake.fill(int(acc.order.broker_order_id))
    await fake.close_streams()
    fake.hold_pushes = False
    filled = await recorder.wait_for(OrderFilled, timeout=10)
    assert filled.order.order_id == acc.order.order_id and filled.order.status is OrderStatus.FILLED
    assert ("GET", f"/accounts/{fake.account}/orders/{acc.order.broker_order_id}") in [
        (m, p) for m, p, _ in fake.requests]


async def test_after_a_restart_open_orders_carry_our_client_order_id(fake, bus, recorder):
    first = TastytradeBroker(make_conn(fake, bus), bus)
    await first.connect()
    first.arm_live(fake.account)
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await first.submit(order)
    acc = await recorder.wait_for(OrderAccepted)
    await first.disconnect()
    restarted = TastytradeBroker(make_conn(fake, bus), bus)
    await restarted.connect()
    try:
        (remote,) = await restarted.open_orders()
        assert remote.client_order_id == order.client_order_id
        assert remote.broker_order_id == acc.order.broker_order_id and remote.limit_price == Decimal("-1.10")
        assert [(leg.symbol, leg.side) for leg in remote.legs] == [(leg.symbol, leg.side) for leg in order.legs]
        fake.fill(int(remote.broker_order_id))
        filled = await recorder.wait_for(OrderFilled)
        assert filled.order.client_order_id == order.client_order_id
        assert {f.client_order_id for f in await restarted.fills()} == {order.client_order_id}
    finally:
        await restarted.disconnect()


async def test_account_selection_lists_accounts_and_refuses_unknown(broker, fake):
    assert broker.available_accounts() == [fake.account]
    broker.arm_live(fake.account)
    await broker.select_account(fake.account)  # same account: nothing changes
    assert broker.armed
    with pytest.raises(BrokerError, match=r"\*\*\*\*9999 is not on this login"):
        await broker.select_account("5WT99999")


async def test_streamed_update_that_overtakes_the_rest_response_still_maps_to_our_order(broker, fake, recorder):
    broker.arm_live(fake.account)
    fake.order_response_delay = 0.3
    order = put_spread("SPY", fake.expirations[0], 590, 585, "-1.10", account=fake.account)
    await broker.submit(order)
    accepted = await recorder.wait_for(OrderAccepted)
    assert accepted.order.order_id == order.order_id and accepted.order.client_order_id == order.client_order_id
    assert len(recorder.of(OrderAccepted)) == 1
    (tracked,) = await broker.open_orders()
    assert tracked.order_id == order.order_id and tracked.status is OrderStatus.WORKING


async def test_account_streamer_sends_authenticated_heartbeats(fake, bus):
    broker = TastytradeBroker(make_conn(fake, bus, account_heartbeat_s=0.05), bus)
    await broker.connect()
    try:
        await wait_until(lambda: broker.heartbeats >= 3, what="acknowledged heartbeats")
        assert fake.streamer_actions[0] == "connect" and fake.streamer_actions.count("heartbeat") >= 3
    finally:
        await broker.disconnect()
