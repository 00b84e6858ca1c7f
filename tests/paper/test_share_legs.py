"""Share legs on the paper exchange: single stock orders and mixed option + share combos (issue 16).

The market is hand made (tests/paper/conftest.py): XYZ at 99.99 / 100.01, the 105 call at 1.50 / 1.60. A mixed
order's net price is quoted per share of a contract (``engine.model.price_multiplier``): buying 100 shares and
selling one call is a 98.41 debit at the touch (100.01 − 1.60 … − 1.50 on the call's bid).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import Equity, Leg, OpenClose, Side, leg_weights, net_price

from .conftest import NOW, opt, order, xyz_chain

XYZ = Equity("XYZ")


def covered_call(qty: int = 1, price: str | None = "98.60"):
    return order([Leg(XYZ, Side.BUY, 100), Leg(opt(105, "C"), Side.SELL, 1)], qty=qty, price=price)


def test_net_price_weights_put_shares_per_contract_share():
    legs = (Leg(XYZ, Side.BUY, 100), Leg(opt(105, "C"), Side.SELL, 1))
    assert leg_weights(legs) == (D(1), D(-1))
    assert net_price(legs, (D("500"), D("5"))) == D("495")
    assert leg_weights((Leg(XYZ, Side.SELL, 37),)) == (D(-37),)
    hedge = (Leg(opt(100, "C"), Side.BUY, 1), Leg(opt(100, "P"), Side.BUY, 1), Leg(XYZ, Side.SELL, 50))
    assert leg_weights(hedge) == (D(1), D(1), D("-0.5"))


def test_single_stock_buy_fills_at_the_ask_and_books_a_share_position(exchange):
    reports = exchange.submit(order([Leg(XYZ, Side.BUY, 1)], qty=30, price="100.05"))
    filled = reports[-1]
    assert filled.kind == "filled"
    (fill,) = filled.fills
    assert fill.instrument == XYZ and fill.quantity == 30 and fill.price == D("100.0100")
    pos = exchange.positions["XYZ"]
    assert pos.quantity == 30 and pos.avg_price == D("100.0100")
    assert exchange.cash == D(100_000) - D("3000.30")


def test_single_stock_sell_limit_above_the_bid_rests_then_fills_when_the_market_crosses(exchange):
    exchange.submit(order([Leg(XYZ, Side.BUY, 1)], qty=10, price="100.01"))
    reports = exchange.submit(order([Leg(XYZ, Side.SELL, 1, OpenClose.CLOSE)], qty=10, price="-100.50"))
    assert [r.kind for r in reports] == ["accepted"]
    later = exchange.on_underlying("XYZ", 100.6, NOW, 100.55, 100.65)
    assert [r.kind for r in later] == ["filled"]
    assert later[0].fills[0].price == D("100.5000") and "XYZ" not in exchange.positions


def test_covered_call_fills_at_the_net_with_shares_at_the_touch(exchange):
    reports = exchange.submit(covered_call(qty=2))
    filled = reports[-1]
    assert filled.kind == "filled" and filled.order.filled_quantity == 2
    stock, call = sorted(filled.fills, key=lambda f: f.leg_index)
    assert stock.instrument == XYZ and stock.quantity == 200 and stock.price == D("100.0100")
    assert call.quantity == -2 and call.price == D("1.5000")
    assert filled.order.avg_fill_price == D("98.5100")  # 100.01 − 1.50: per share, not 100 × 100.01 − 1.50
    assert exchange.positions["XYZ"].quantity == 200
    assert exchange.positions[opt(105, "C").key].quantity == -2
    assert exchange.cash == D(100_000) - D("19702.00")  # 200 × 100.01 − 2 × 150


def test_resting_covered_call_fills_at_its_limit_and_only_the_option_absorbs_the_difference(exchange):
    reports = exchange.submit(covered_call(price="98.30"))  # below the 98.51 natural: rests
    assert [r.kind for r in reports] == ["accepted"]
    # the new chain's spot (100.00, no spread) is the shares' touch: natural now 100.00 − 1.80 = 98.20
    later = exchange.on_chain(xyz_chain({(105, "C"): (1.80, 1.90)}), NOW)
    (filled,) = [r for r in later if r.kind == "filled"]
    stock, call = sorted(filled.fills, key=lambda f: f.leg_index)
    assert stock.price == D("100.0000")  # the shares at the touch
    assert call.price == D("1.7000")  # the option takes the net: 100.00 − 98.30
    assert filled.order.avg_fill_price == D("98.3000")


def test_long_stock_uses_half_its_value_in_buying_power_and_a_quarter_in_maintenance(exchange):
    before = exchange.buying_power()
    exchange.submit(order([Leg(XYZ, Side.BUY, 1)], qty=100, price="100.01"))
    value = 100 * 100.0  # marked at the last price
    assert exchange.buying_power() == pytest.approx(before - 100 * 100.01 + 0.5 * value)
    assert float(exchange.account().maintenance_requirement) == pytest.approx(0.25 * value)


def test_short_stock_needs_another_half_and_thirty_percent_maintenance(exchange):
    before = exchange.buying_power()
    exchange.submit(order([Leg(XYZ, Side.SELL, 1)], qty=100, price="-99.99"))
    value = 100 * 100.0
    assert exchange.buying_power() == pytest.approx(before + 100 * 99.99 - 1.5 * value)
    assert float(exchange.account().maintenance_requirement) == pytest.approx(0.30 * value)


def test_covered_call_needs_no_option_margin(exchange):
    exchange.submit(covered_call())
    assert exchange.requirement() == 0.0


def test_stock_order_beyond_buying_power_is_rejected_and_changes_nothing():
    ex = PaperExchange(PaperConfig(fees="zero", starting_cash=10_000), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(), NOW)
    ex.on_underlying("XYZ", 100.0, NOW, 99.99, 100.01)
    reports = ex.submit(order([Leg(XYZ, Side.BUY, 1)], qty=250, price="100.01"))  # $25,002: needs $12,501
    assert reports[-1].kind == "rejected" and "insufficient buying power" in reports[-1].order.reason
    assert not ex.positions and ex.cash == D(10_000)


def test_cash_account_refuses_a_short_sale_of_shares():
    ex = PaperExchange(PaperConfig(fees="zero", account_type="cash"), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(), NOW)
    ex.on_underlying("XYZ", 100.0, NOW, 99.99, 100.01)
    reports = ex.submit(order([Leg(XYZ, Side.SELL, 1)], qty=10, price="-99.99"))
    assert reports[-1].kind == "rejected" and "short" in reports[-1].order.reason


def test_stock_price_off_the_cent_tick_is_rejected(exchange):
    reports = exchange.submit(order([Leg(XYZ, Side.BUY, 1)], qty=1, price="100.005"))
    assert reports[-1].kind == "rejected" and "tick" in reports[-1].order.reason
