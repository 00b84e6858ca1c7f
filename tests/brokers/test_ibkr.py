"""IBKR adapter against the loopback TWS (IB API socket protocol, server version 176), real ib_async."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import numpy as np
import pytest

from engine.brokers.base import BrokerError
from engine.brokers.circuit_breaker import BreakerState, CircuitBreakerStateChanged, CircuitOpenError
from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig
from engine.brokers.ibkr import IbkrBroker, IbkrConnection, ib_order_terms, position_from_ib
from engine.brokers.resilience import BrokerNotArmed
from engine.bus.events import (
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
    QuotesUpdated,
)
from engine.market.ibkr import IbkrFeed
from engine.model import OrderStatus, Right, Side
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.helpers import put_spread, single

FAST_RECONNECT = ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1)


@pytest.fixture
async def tws():
    server = FakeTws()
    await server.start()
    yield server
    await server.stop()


def make_conn(tws: FakeTws, bus, **cfg) -> IbkrConnection:
    config = IbkrConfig(port=tws.port, call_timeout_s=cfg.pop("call_timeout_s", 3.0),
                        connect_timeout_s=cfg.pop("connect_timeout_s", 3.0), **cfg)
    return IbkrConnection(config, bus=bus, reconnect=FAST_RECONNECT,
                          breaker=CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3))


@pytest.fixture
async def broker(tws, bus, recorder):
    b = IbkrBroker(make_conn(tws, bus), bus)
    await b.connect()
    yield b
    await b.disconnect()


def sent(tws: FakeTws, msg_id: int) -> list[list[str]]:
    return [f for f in tws.requests if f and f[0] == str(msg_id)]


# ---- conventions -------------------------------------------------------------------------------------
def test_order_terms_keep_our_sign_for_combos_and_abs_for_single_legs(tws):
    exp = tws.expirations[0]
    assert ib_order_terms(put_spread("SPY", exp, 590, 585, "-1.10")) == ("BUY", 1.0, -1.10)
    assert ib_order_terms(single("SPY", exp, 600, Right.PUT, Side.SELL, "-1.10", qty=2)) == ("SELL", 2.0, 1.10)
    assert ib_order_terms(single("SPY", exp, 600, Right.CALL, Side.BUY, "2.50")) == ("BUY", 1.0, 2.50)
    with pytest.raises(ValueError, match="contradicts"):
        ib_order_terms(single("SPY", exp, 600, Right.CALL, Side.BUY, "-2.50"))


def test_position_avg_cost_is_divided_by_the_multiplier():
    from ib_async import Option as IbOption

    c = IbOption("SPY", "20261218", 590.0, "P", "SMART", multiplier="100", localSymbol="SPY   261218P00590000",
                 tradingClass="SPY")
    c.secType = "OPT"
    p = position_from_ib(c, -2.0, 315.0)
    assert p.quantity == -2 and p.avg_price == Decimal("3.15") and p.multiplier == 100
    assert p.symbol == "SPY261218P00590000"


# ---- connect, account, positions --------------------------------------------------------------------
async def test_connect_syncs_and_maps_account_and_positions(broker, tws, recorder):
    assert broker.connected and broker.account_id == tws.account and broker.conn.is_paper
    # ib_async's startup sync requests were all answered by the fake TWS
    for msg_id in (71, 61, 5, 99, 6, 76, 7):
        assert sent(tws, msg_id), f"request {msg_id} not sent"
    snap = await broker.account()
    assert snap.net_liquidation == Decimal("101234.56") and snap.buying_power == Decimal("400000.00")
    assert snap.maintenance_requirement == Decimal("1500.00") and snap.is_live
    (pos,) = await broker.positions()
    assert pos.quantity == -2 and pos.avg_price == Decimal("3.15") and pos.multiplier == 100
    assert recorder.of(PositionChanged)
    ok = await recorder.wait_for(ConnectionStateChanged, lambda e: e.state == "connected")
    assert ok.latency_ms is not None and tws.account not in ok.detail and ok.detail.endswith("(paper)")


# ---- market data -------------------------------------------------------------------------------------
async def test_chain_window_qualifies_drops_missing_and_streams_greeks(tws, bus, recorder):
    conn = make_conn(tws, bus, max_market_data_lines=12)
    feed = IbkrFeed(conn, bus, underlyings=["SPY"])
    await feed.start()
    try:
        exps = await feed.expirations("SPY")
        assert exps == tws.expirations
        chain = await feed.chain("SPY")
        assert len(chain) == 3 * 9 * 2  # every expiration × strike × right from sec-def params
        await feed.subscribe("SPY", [exps[2]], (590.0, 610.0))
        # the far expiry lists only every other strike: 595/605 were qualified, unknown, and dropped
        assert len(feed.last_chain("SPY")) == 3 * 9 * 2 - 4
        assert len(feed.subscribed_symbols()) == 3 * 2
        await feed.subscribe("SPY", [exps[0]], (580.0, 620.0))  # 18 contracts, budget 12 incl. the stock
        window = feed.subscribed_symbols()
        assert len(window) == 11 and feed.lines_in_use == 12
        await wait_until(lambda: tws.lines_in_use == 12, what="server-side lines")
        strikes = {float(s[-8:]) / 1000 for s in window}
        assert strikes == {595.0, 600.0, 605.0, 590.0, 610.0, 585.0} or max(strikes) - min(strikes) <= 30
        await recorder.wait_for(QuotesUpdated)
        await wait_until(lambda: np.isfinite(feed.last_chain("SPY").vendor["vendor_delta"]).sum() >= 11,
                         what="model greeks")
        snap = feed.last_chain("SPY")
        live = np.isfinite(snap.bid)
        assert live.sum() == 11 and (snap.ask[live] > snap.bid[live]).all()
        assert np.isfinite(snap.vendor["vendor_vega"][live]).all()  # model greeks; -2 on bid greeks ignored
        await wait_until(lambda: (feed.last_chain("SPY").open_interest == 4321).sum() == 11, what="open interest")
        snap = feed.last_chain("SPY")
        assert (snap.volume[live] == 1234).all() and np.isfinite(snap.last[live]).all()
        assert feed.last_price("SPY") == pytest.approx(600.0)
        # scrolling away cancels the lines
        await feed.unsubscribe("SPY")
        await wait_until(lambda: tws.lines_in_use == 1, what="lines cancelled")
    finally:
        await feed.stop()
        await conn.disconnect()


# ---- orders ------------------------------------------------------------------------------------------
async def test_submit_refuses_unless_armed(broker, tws):
    order = put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account)
    with pytest.raises(BrokerNotArmed):
        await broker.submit(order)
    with pytest.raises(BrokerNotArmed):
        broker.arm_live("U7654321")
    assert not sent(tws, 3)


async def test_bag_combo_is_placed_accepted_and_filled(broker, tws, recorder):
    broker.arm_live(tws.account)
    order = put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account)
    await broker.submit(order)
    accepted = await recorder.wait_for(OrderAccepted)
    (place,) = sent(tws, 3)
    assert place[4] == "BAG" and place[16] == "BUY" and float(place[19]) == pytest.approx(-1.10)
    assert place[26] == order.client_order_id and place[35] == "2"  # orderRef, two combo legs
    assert [place[38], place[46]] == ["SELL", "BUY"]
    tws.fill(int(accepted.order.broker_order_id))
    done = await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED)
    fills = [f for e in recorder.of(OrderFilled) for f in e.fills]
    assert sorted(f.quantity for f in fills) == [-1, 1]
    assert done.order.avg_fill_price == Decimal("-1.1") and done.order.filled_quantity == 1
    await wait_until(lambda: broker._trade_of(done.order).isDone(), what="trade done")
    with pytest.raises(BrokerError, match="nothing to replace"):
        await broker.replace(done.order, Decimal("-1.00"))


async def test_single_leg_credit_goes_out_as_sell_at_positive_price(broker, tws, recorder):
    broker.arm_live(tws.account)
    await broker.submit(single("SPY", tws.expirations[0], 600, Right.PUT, Side.SELL, "-1.10", account=tws.account))
    await recorder.wait_for(OrderAccepted)
    (place,) = sent(tws, 3)
    assert place[4] == "OPT" and place[16] == "SELL" and float(place[19]) == pytest.approx(1.10)
    bad = single("SPY", tws.expirations[0], 600, Right.CALL, Side.BUY, "-2.00", account=tws.account)
    await broker.submit(bad)
    rej = await recorder.wait_for(OrderRejected)
    assert "contradicts" in rej.order.reason and len(sent(tws, 3)) == 1


async def test_what_if_preview_places_nothing(broker, tws):
    preview = await broker.preview(put_spread("SPY", tws.expirations[0], 590, 585, "-1.10"))
    assert preview.source == "broker" and preview.margin_change == Decimal("500.0")
    assert preview.buying_power_effect == Decimal("-500.0") and preview.commission == Decimal("1.3")
    assert not tws.orders


async def test_broker_rejection_becomes_order_rejected_with_message(broker, tws, recorder):
    broker.arm_live(tws.account)
    tws.reject_orders_with = "YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION"
    await broker.submit(put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account))
    rej = await recorder.wait_for(OrderRejected)
    assert rej.order.reason.startswith("201:") and "NOT ACCEPTED" in rej.order.reason
    assert not recorder.of(OrderCancelled)


async def test_replace_then_cancel(broker, tws, recorder):
    broker.arm_live(tws.account)
    await broker.submit(put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account))
    acc = await recorder.wait_for(OrderAccepted)
    await broker.replace(acc.order, Decimal("-1.00"))
    rep = await recorder.wait_for(OrderReplaced)
    assert rep.order.limit_price == Decimal("-1.00")
    await wait_until(lambda: len(sent(tws, 3)) == 2, what="modify sent")
    first, second = sent(tws, 3)
    assert first[1] == second[1] and float(second[19]) == pytest.approx(-1.0)  # same order id, new price
    broker.disarm()  # cancels pass even when disarmed
    await broker.cancel(rep.order)
    cancelled = await recorder.wait_for(OrderCancelled)
    assert cancelled.order.status is OrderStatus.CANCELLED and not recorder.of(OrderRejected)


# ---- faults ------------------------------------------------------------------------------------------
async def test_server_drops_connection_then_reconnect_resubscribes(tws, bus, recorder):
    conn = make_conn(tws, bus)
    broker = IbkrBroker(conn, bus)
    feed = IbkrFeed(conn, bus)
    await broker.connect()
    await feed.start()
    try:
        await feed.subscribe("SPY", [tws.expirations[0]], (595.0, 605.0))
        await wait_until(lambda: tws.lines_in_use == 7, what="lines requested")
        await tws.close_all()
        await wait_until(lambda: tws.connections == 2 and conn.connected, timeout=10, what="reconnected")
        await wait_until(lambda: tws.lines_in_use == 7, what="lines re-requested")
        assert feed.resubscribes == 1
        before = feed.ticks_received
        await wait_until(lambda: feed.ticks_received > before + 7, what="ticks after reconnect")
        states = [e.state for e in recorder.of(ConnectionStateChanged) if e.component == "broker:ibkr"]
        assert "disconnected" in states and states[-1] == "connected"
        # reconciliation ran again: positions re-requested on the new connection
        assert len(sent(tws, 61)) == 2
    finally:
        await feed.stop()
        await broker.disconnect()


async def test_connected_only_once_the_connect_has_synced_also_on_a_reconnect(broker, tws, bus):
    """ib_async's isConnected() is true from the handshake on, before the startup sync fills its open orders and
    positions: ``connected`` (and every query behind it) waits for the whole connect, so a query in between is
    refused instead of reporting working orders as gone."""
    conn = broker.conn
    assert conn.connected
    tws.hold_current_time = asyncio.Event()  # the reconnect stalls at its last step
    await tws.close_all()
    await wait_until(lambda: tws.connections == 2 and conn.ib.isConnected(), timeout=10, what="handshake again")
    await wait_until(lambda: len(sent(tws, 49)) == 2, what="the reconnect's current-time request")
    assert not conn.connected
    with pytest.raises(BrokerError, match="not connected"):
        await broker.open_orders()
    tws.hold_current_time.set()
    await wait_until(lambda: conn.connected, timeout=10, what="synced")
    assert await broker.open_orders() == []


async def test_silent_server_connect_times_out_with_clear_state(tws, bus, recorder):
    tws.silent = True
    conn = make_conn(tws, bus, connect_timeout_s=0.5)
    with pytest.raises((BrokerError, TimeoutError)):
        await conn.connect()
    failed = await recorder.wait_for(ConnectionStateChanged, lambda e: e.state == "failed")
    assert "connect" in failed.detail and not conn.connected


async def test_silent_after_connect_calls_time_out_and_open_the_breaker(broker, tws, recorder):
    tws.silent = True
    order = put_spread("SPY", tws.expirations[0], 590, 585, "-1.10")
    for _ in range(2):
        with pytest.raises(BrokerError, match="timed out"):
            await broker.conn.call("whatIf", lambda: broker.conn.ib.reqCurrentTimeAsync(), timeout_s=0.2)
    await recorder.wait_for(CircuitBreakerStateChanged, lambda e: e.state == "open")
    with pytest.raises(CircuitOpenError):
        await broker.preview(order)
    broker.arm_live(tws.account)
    with pytest.raises(CircuitOpenError):
        await broker.submit(order.evolve(account_id=tws.account, updated_at=order.updated_at))
    tws.silent = False
    await wait_until(lambda: broker.conn.breaker.state is BreakerState.HALF_OPEN, what="breaker half-open")
    assert await broker.conn.call("time", lambda: broker.conn.ib.reqCurrentTimeAsync())


async def test_malformed_frames_are_logged_and_survived(tws, bus, caplog):
    conn = make_conn(tws, bus)
    feed = IbkrFeed(conn, bus)
    await feed.start()
    try:
        await feed.subscribe("SPY", [tws.expirations[0]], (600.0, 600.0))
        with caplog.at_level("ERROR", logger="ib_async"):
            tws.send_malformed()
            await wait_until(lambda: any("Error handling fields" in r.getMessage() for r in caplog.records),
                             what="decoder error logged")
        before = feed.ticks_received
        await wait_until(lambda: feed.ticks_received > before, what="ticks after malformed frames")
        assert conn.connected and tws.connections == 1
    finally:
        await feed.stop()
        await conn.disconnect()


async def test_tif_preset_warning_10349_is_not_a_cancel(broker, tws, recorder):
    broker.arm_live(tws.account)
    tws.tif_preset_warning = True
    await broker.submit(put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account))
    acc = await recorder.wait_for(OrderAccepted)
    await wait_until(lambda: any(code == 10349 for _, code, _ in broker.conn.errors), what="warning seen")
    tws.fill(int(acc.order.broker_order_id))
    await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED)
    assert not recorder.of(OrderCancelled) and not recorder.of(OrderRejected)


async def test_unknown_account_is_refused_without_a_reconnect_loop(tws, bus):
    conn = make_conn(tws, bus, account="U0000001")
    with pytest.raises(BrokerError, match=r"\*\*\*\*0001 is not managed"):
        await conn.connect()
    assert not conn.connected and not conn.reconnector.running


async def test_fill_while_disconnected_is_reconciled_from_the_startup_executions(broker, tws, recorder):
    broker.arm_live(tws.account)
    await broker.submit(put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account))
    acc = await recorder.wait_for(OrderAccepted)
    await tws.close_all()
    tws.fill(int(acc.order.broker_order_id))  # nobody connected: only the execution records remain
    done = await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED, timeout=10)
    assert done.order.order_id == acc.order.order_id and done.order.avg_fill_price == Decimal("-1.1")
    assert len([f for e in recorder.of(OrderFilled) for f in e.fills]) == 2


async def test_after_a_restart_open_orders_and_fills_carry_our_client_order_id(tws, bus, recorder):
    first = IbkrBroker(make_conn(tws, bus), bus)
    await first.connect()
    first.arm_live(tws.account)
    order = put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account)
    await first.submit(order)
    acc = await recorder.wait_for(OrderAccepted)
    await first.disconnect()  # the app stops; the order keeps working at IBKR
    restarted = IbkrBroker(make_conn(tws, bus), bus)
    await restarted.connect()
    try:
        (remote,) = await restarted.open_orders()
        assert remote.client_order_id == order.client_order_id
        assert remote.broker_order_id == acc.order.broker_order_id
        assert [leg.symbol for leg in remote.legs] == [leg.symbol for leg in order.legs]
        assert [leg.side for leg in remote.legs] == [Side.SELL, Side.BUY] and remote.limit_price == Decimal("-1.1")
        tws.fill(int(remote.broker_order_id))
        await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED)
        fills = await restarted.fills()
        assert len(fills) == 2 and {f.client_order_id for f in fills} == {order.client_order_id}
    finally:
        await restarted.disconnect()


async def test_1101_data_lost_resubscribes_on_the_same_socket(tws, bus, recorder):
    conn = make_conn(tws, bus)
    feed = IbkrFeed(conn, bus)
    await feed.start()
    try:
        await feed.subscribe("SPY", [tws.expirations[0]], (600.0, 600.0))
        await wait_until(lambda: tws.lines_in_use == 3, what="lines")
        requested = len(sent(tws, 1))
        tws.send_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
        lost = await recorder.wait_for(ConnectionStateChanged, lambda e: e.state == "disconnected")
        assert "1100" in lost.detail
        tws.send_error(1101, "Connectivity between IB and TWS has been restored- data lost.")
        await wait_until(lambda: feed.resubscribes == 1 and len(sent(tws, 1)) == requested + 3, what="resubscribed")
        await wait_until(lambda: tws.lines_in_use == 3, what="old lines cancelled, new ones live")
        assert tws.connections == 1 and conn.connected
    finally:
        await feed.stop()
        await conn.disconnect()


async def test_ibkr_account_selection(broker, tws):
    assert broker.available_accounts() == [tws.account]
    with pytest.raises(BrokerError, match="not managed"):
        await broker.select_account("U0000002")
    await broker.select_account(tws.account)
    assert broker.account_id == tws.account
