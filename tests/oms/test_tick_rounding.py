"""The order factory rounds with the venue's own tick schedule, so a valid intent is never rejected as off-tick."""

from datetime import UTC, datetime
from decimal import Decimal

from engine.brokers.paper import PaperBroker
from engine.bus import Bus
from engine.clock import ManualClock
from engine.model import Leg, Option, OrderIntent, Side
from engine.oms.factory import OrderFactory

#: before the AAPL 18 Dec 2026 contracts below expire, whatever day the suite runs
_AT = ManualClock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))


def _intent(*legs: Leg, price: str) -> OrderIntent:
    return OrderIntent(legs=legs, quantity=1, limit_price=Decimal(price))


async def test_create_when_penny_pilot_class_above_three_dollars_then_rounds_to_the_nickel_passively():
    paper = PaperBroker(Bus())
    factory = OrderFactory(_AT.now)
    aapl = Option.from_occ("AAPL  261218C00230000")
    buy = factory.create(_intent(Leg(aapl, Side.BUY), price="5.23"), tick_for=paper.tick_size)
    assert buy.limit_price == Decimal("5.20")  # a buy rounds down
    sell = factory.create(_intent(Leg(aapl, Side.SELL), price="-5.23"), tick_for=paper.tick_size)
    assert sell.limit_price == Decimal("-5.25")  # a sell asks for more
    cheap = factory.create(_intent(Leg(aapl, Side.BUY), price="2.97"), tick_for=paper.tick_size)
    assert cheap.limit_price == Decimal("2.97")  # pennies below $3
    assert paper.tick_size(aapl, Decimal("5.20")) == Decimal("0.05")


async def test_create_when_combo_then_net_price_uses_the_penny_complex_increment():
    paper = PaperBroker(Bus())
    short = Option.from_occ("AAPL  261218P00220000")
    long_ = Option.from_occ("AAPL  261218P00215000")
    order = OrderFactory(_AT.now).create(_intent(Leg(short, Side.SELL), Leg(long_, Side.BUY), price="-1.234"),
                                  tick_for=paper.tick_size)
    assert order.limit_price == Decimal("-1.24")
