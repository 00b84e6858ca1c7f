"""Share legs through the IBKR adapter against the loopback TWS (IB API socket protocol, real ib_async).

A covered call is a ``BAG`` with a stock combo leg (ratio 100, SMART) and an option leg; its executions
come back per leg as a share fill and an option fill, and the position updates as a stock and an option
position. A single hedge is a plain ``STK`` order.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.brokers.ibkr import IbkrBroker
from engine.bus.events import OrderAccepted, OrderFilled, PositionChanged
from engine.model import (
    Equity,
    Leg,
    OpenClose,
    Option,
    OrderStatus,
    Right,
    Side,
)
from tests.brokers.fakes.tws_server import STOCK_CONID, FakeTws
from tests.brokers.helpers import share_order
from tests.brokers.test_ibkr import make_conn, sent


@pytest.fixture
async def tws():
    server = FakeTws()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def broker(tws, bus, recorder):
    b = IbkrBroker(make_conn(tws, bus), bus)
    await b.connect()
    yield b
    await b.disconnect()


async def test_covered_call_bag_carries_a_stock_leg_and_fills_into_shares_and_a_short_call(broker, tws, recorder):
    broker.arm_live(tws.account)
    call = Option("SPY", tws.expirations[0], Decimal(610), Right.CALL)
    order = share_order((Leg(Equity("SPY"), Side.BUY, 100), Leg(call, Side.SELL, 1)), 2, "595.00", tws.account)
    await broker.submit(order)
    accepted = await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == order.order_id)
    (place,) = sent(tws, 3)
    assert place[4] == "BAG" and place[16] == "BUY" and float(place[17]) == 2
    assert float(place[19]) == pytest.approx(595.00)  # per share of the contract: stock − call
    assert place[35] == "2"
    stock_leg, call_leg = place[36:40], place[44:48]
    assert stock_leg == [str(STOCK_CONID), "100", "BUY", "SMART"]
    call_con = tws.find(tws.expirations[0], 610.0, "C")
    assert call_leg == [str(call_con.con_id), "1", "SELL", "SMART"]

    tws.fill(int(accepted.order.broker_order_id), prices={STOCK_CONID: 600.01, call_con.con_id: 5.01})
    done = await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED)
    fills = {f.leg_index: f for e in recorder.of(OrderFilled) for f in e.fills}
    assert fills[0].instrument == Equity("SPY") and fills[0].quantity == 200
    assert fills[0].price == Decimal("600.01")
    assert fills[1].instrument == call and fills[1].quantity == -2 and fills[1].price == Decimal("5.01")
    assert done.order.filled_quantity == 2
    assert done.order.avg_fill_price == Decimal("595")  # 600.01 − 5.01

    tws.push_position(STOCK_CONID, 200, 600.01)  # IB's avgCost of shares is per share
    tws.push_position(call_con.con_id, -2, 501.0)  # … of options per contract
    shares = await recorder.wait_for(PositionChanged, lambda e: e.position.symbol == "SPY")
    short_call = await recorder.wait_for(PositionChanged, lambda e: e.position.symbol == call.key)
    assert isinstance(shares.position.instrument, Equity) and shares.position.quantity == 200
    assert shares.position.multiplier == 1 and shares.position.avg_price == Decimal("600.0100")
    assert short_call.position.quantity == -2 and short_call.position.avg_price == Decimal("5.0100")


async def test_share_hedge_goes_out_as_a_stk_order(broker, tws, recorder):
    broker.arm_live(tws.account)
    order = share_order((Leg(Equity("SPY"), Side.SELL, 1, OpenClose.CLOSE),), 37, "-599.99", tws.account)
    await broker.submit(order)
    accepted = await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == order.order_id)
    (place,) = sent(tws, 3)
    assert place[2] == str(STOCK_CONID) and place[4] == "STK" and place[16] == "SELL"
    assert float(place[17]) == 37 and float(place[19]) == pytest.approx(599.99)
    tws.fill(int(accepted.order.broker_order_id))
    done = await recorder.wait_for(OrderFilled, lambda e: e.order.status is OrderStatus.FILLED)
    (fill,) = done.fills
    assert fill.instrument == Equity("SPY") and fill.quantity == -37 and fill.price == Decimal("599.99")
