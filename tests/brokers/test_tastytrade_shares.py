"""Share legs through the tastytrade adapter against the loopback tastytrade (real SDK on the wire, issue 16).

A covered call goes out as one order with an ``Equity`` leg (quantity in shares) and an ``Equity Option``
leg, priced per share of the contract; its fill comes back as a share position and an option position.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.brokers.tastytrade import TastytradeBroker
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
from tests.brokers.fakes.tastytrade_server import FakeTastytrade
from tests.brokers.helpers import share_order
from tests.brokers.test_tastytrade import make_conn


@pytest.fixture
async def fake():
    server = FakeTastytrade()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def broker(fake, bus, recorder):
    b = TastytradeBroker(make_conn(fake, bus), bus)
    await b.connect()
    yield b
    await b.disconnect()


def posted(fake: FakeTastytrade) -> list[dict]:
    return [b for m, p, b in fake.requests if m == "POST" and p.endswith("/orders")]


async def test_covered_call_goes_out_with_an_equity_leg_and_fills_into_shares_and_a_short_call(broker, fake,
                                                                                                 recorder):
    broker.arm_live(fake.account)
    call = Option("SPY", fake.expirations[0], Decimal(610), Right.CALL)
    order = share_order((Leg(Equity("SPY"), Side.BUY, 100), Leg(call, Side.SELL, 1)), 2, "595.00", fake.account)
    await broker.submit(order)
    (body,) = posted(fake)
    assert body["price"] == "595.00" and body["price-effect"] == "Debit"  # per share: stock − call
    stock_leg, call_leg = body["legs"]
    assert stock_leg["instrument-type"] == "Equity" and stock_leg["symbol"] == "SPY"
    assert int(stock_leg["quantity"]) == 200 and stock_leg["action"] == "Buy to Open"
    assert call_leg["instrument-type"] == "Equity Option" and call_leg["symbol"] == call.occ
    assert int(call_leg["quantity"]) == 2 and call_leg["action"] == "Sell to Open"

    accepted = await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == order.order_id)
    fake.fill(int(accepted.order.broker_order_id), prices={"SPY": "600.01", call.occ: "5.01"})
    filled = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == order.order_id)
    assert filled.order.status is OrderStatus.FILLED and filled.order.filled_quantity == 2
    assert filled.order.avg_fill_price == Decimal("595.00")  # 600.01 − 5.01, per share of the contract
    by_leg = {f.leg_index: f for f in filled.fills}
    assert by_leg[0].instrument == Equity("SPY") and by_leg[0].quantity == 200
    assert by_leg[0].price == Decimal("600.01")
    assert by_leg[1].instrument == call and by_leg[1].quantity == -2 and by_leg[1].price == Decimal("5.01")

    fake.push_position("SPY", 200, "Long", "600.01", instrument_type="Equity")
    fake.push_position(call.occ, 2, "Short", "5.01")
    shares = await recorder.wait_for(PositionChanged, lambda e: e.position.symbol == "SPY")
    short_call = await recorder.wait_for(PositionChanged, lambda e: e.position.symbol == call.key)
    assert shares.position.quantity == 200 and shares.position.multiplier == 1
    assert isinstance(shares.position.instrument, Equity) and shares.position.avg_price == Decimal("600.01")
    assert short_call.position.quantity == -2 and short_call.position.multiplier == 100
    held = {p.symbol: p.quantity for p in broker.cached_positions()}
    assert held["SPY"] == 200 and held[call.key] == -2


async def test_share_hedge_sale_goes_out_as_an_equity_credit(broker, fake, recorder):
    broker.arm_live(fake.account)
    order = share_order((Leg(Equity("SPY"), Side.SELL, 1, OpenClose.CLOSE),), 37, "-599.99", fake.account)
    await broker.submit(order)
    (body,) = posted(fake)
    assert body["price"] == "599.99" and body["price-effect"] == "Credit"
    (leg,) = body["legs"]
    assert leg["instrument-type"] == "Equity" and int(leg["quantity"]) == 37 and leg["action"] == "Sell to Close"
    accepted = await recorder.wait_for(OrderAccepted, lambda e: e.order.order_id == order.order_id)
    fake.fill(int(accepted.order.broker_order_id))
    filled = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == order.order_id)
    (fill,) = filled.fills
    assert fill.quantity == -37 and fill.price == Decimal("599.99")
    assert filled.order.avg_fill_price == Decimal("-599.99")


async def test_order_placed_elsewhere_with_shares_is_read_back_with_reduced_ratios(broker, fake):
    call = Option("SPY", fake.expirations[0], Decimal(615), Right.CALL)
    body = {"time-in-force": "Day", "order-type": "Limit", "price": "590.0", "price-effect": "Debit",
            "legs": [{"instrument-type": "Equity", "symbol": "SPY", "quantity": 300, "action": "Buy to Open"},
                     {"instrument-type": "Equity Option", "symbol": call.occ, "quantity": 3,
                      "action": "Sell to Open"}]}
    fake._place(body)
    orders = await broker.open_orders()
    (mine,) = [o for o in orders if len(o.legs) == 2]
    assert mine.quantity == 3 and [leg.ratio for leg in mine.legs] == [100, 1]
    assert isinstance(mine.legs[0].instrument, Equity) and mine.limit_price == Decimal("590.0")
