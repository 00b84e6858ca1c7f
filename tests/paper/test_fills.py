"""Fill model of the paper exchange: touch, slippage, resting crosses, partial fills, combos, rejections."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from engine.brokers.paper_config import PaperConfig, SlippageConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import Equity, Index, OrderStatus, OrderType, TimeInForce

from .conftest import NOW, opt, order, xyz_chain


def test_marketable_limit_buy_fills_at_the_ask_not_the_limit(exchange):
    reports = exchange.submit(order([(opt(100), "buy", 1)], qty=2, price="1.80"))
    assert [r.kind for r in reports] == ["accepted", "filled"]
    fill = reports[1].fills[0]
    assert fill.price == Decimal("1.6000") and fill.quantity == 2
    assert exchange.cash == Decimal(100_000) - Decimal("320")
    assert exchange.positions[opt(100).key].quantity == 2
    assert reports[1].order.avg_fill_price == Decimal("1.6000")


def test_sell_limit_is_a_credit_and_fills_at_the_bid(exchange, market):
    working = exchange.submit(order([(opt(100), "sell", 1)], price="-1.55"))
    assert [r.kind for r in working] == ["accepted"]  # bid 1.50 < 1.55
    filled = market.quotes({(100, "C"): (1.56, 1.60)})
    assert filled[0].fills[0].price == Decimal("1.5500") and filled[0].fills[0].quantity == -1
    taker = exchange.submit(order([(opt(105), "sell", 1)], price="-1.40"))
    assert taker[-1].fills[0].price == Decimal("1.5000")  # at the bid, better than the limit
    assert taker[-1].order.avg_fill_price == Decimal("-1.5000")  # net, signed: a credit


def test_market_sell_fills_at_the_bid_and_opens_a_short(exchange):
    reports = exchange.submit(order([(opt(105, "P"), "sell", 1)], price=None, kind=OrderType.MARKET))
    assert reports[-1].fills[0].price == Decimal("6.5000")  # intrinsic 5 + 1.50
    assert exchange.positions[opt(105, "P").key].quantity == -1


def test_slippage_in_ticks_is_paid_but_never_past_the_limit():
    ex = PaperExchange(PaperConfig(fees="zero", slippage=SlippageConfig(model="ticks", value=2)),
                       calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(), NOW)
    filled = ex.submit(order([(opt(100), "buy", 1)], price="2.00"))[-1]
    assert filled.fills[0].price == Decimal("1.6200")
    capped = ex.submit(order([(opt(105), "buy", 1)], price="1.61"))[-1]
    assert capped.fills[0].price == Decimal("1.6100")
    pct = PaperExchange(PaperConfig(fees="zero", slippage=SlippageConfig(model="percent", value=0.1)),
                        calendar=market_calendar_for(NOW.date()))
    pct.on_chain(xyz_chain(), NOW)
    sold = pct.submit(order([(opt(100), "sell", 1)], price=None, kind=OrderType.MARKET))[-1]
    assert sold.fills[0].price == Decimal("1.4985")  # bid × 0.999


def test_resting_limit_fills_at_its_limit_when_the_market_crosses(exchange, market):
    reports = exchange.submit(order([(opt(100), "buy", 1)], price="1.20"))
    assert [r.kind for r in reports] == ["accepted"]
    assert market.quotes({(100, "C"): (1.25, 1.30)}) == []
    crossed = market.quotes({(100, "C"): (1.05, 1.10)})
    assert crossed[0].kind == "filled" and crossed[0].fills[0].price == Decimal("1.2000")
    assert not exchange.working


def test_partial_fills_take_the_displayed_size():
    ex = PaperExchange(PaperConfig(fees="zero", partial_fills=True), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(size=3), NOW)
    reports = ex.submit(order([(opt(100), "buy", 1)], qty=5, price="1.60"))
    assert reports[-1].kind == "partially_filled" and reports[-1].fills[0].quantity == 3
    assert reports[-1].order.status is OrderStatus.PARTIALLY_FILLED and reports[-1].order.remaining_quantity == 2
    more = ex.on_chain(xyz_chain(size=10), NOW + timedelta(seconds=1))
    assert more[0].kind == "filled" and more[0].fills[0].quantity == 2
    assert ex.positions[opt(100).key].quantity == 5


def test_combo_fills_at_net_only_when_the_legs_touch_allows_it(exchange, market):
    # call vertical 100/105: buy 100 call at the ask, sell 105 call at the bid
    quotes = {(100, "C"): (2.90, 3.00), (105, "C"): (0.80, 0.90)}
    market.quotes(quotes)
    spread = [(opt(100), "buy", 1), (opt(105), "sell", 1)]
    working = exchange.submit(order(spread, qty=3, price="2.00"))
    assert [r.kind for r in working] == ["accepted"]  # natural is 3.00 − 0.80 = 2.20 debit
    filled = market.quotes({(100, "C"): (2.80, 2.85), (105, "C"): (0.90, 0.95)})  # natural 1.95 ≤ 2.00
    assert filled[0].kind == "filled"
    legs = filled[0].fills
    net = legs[0].price - legs[1].price
    assert net == Decimal("2.0000") and legs[0].quantity == 3 and legs[1].quantity == -3
    market.quotes({(95, "P"): (0.60, 0.70), (100, "P"): (2.40, 2.50)})
    put_spread = [(opt(95, "P"), "buy", 1), (opt(100, "P"), "sell", 1)]
    assert [r.kind for r in exchange.submit(order(put_spread, price="-1.75"))] == ["accepted"]
    credit = exchange.submit(order(put_spread, price="-1.50"))
    assert credit[-1].kind == "filled"  # natural: pay 0.70, receive 2.40 = 1.70 credit ≥ 1.50


def test_rejections_name_the_problem_and_change_nothing(exchange):
    cash, positions = exchange.cash, dict(exchange.positions)
    cases = {
        "unknown contract": order([(opt(101), "buy", 1)]),
        "no market data for ABC": order([(opt(100, root="ABC"), "buy", 1)]),
        "quantity must be a positive": order([(opt(100), "buy", 1)], qty=0),
        "not on the 0.05 tick": order([(opt(95), "buy", 1)], price="6.52"),
        "do not reduce": order([(opt(100), "buy", 2), (opt(105), "sell", 2)], price="1.00"),
        "same contract appears": order([(opt(100), "buy", 1), (opt(100), "sell", 1)], price="0.00"),
        "is an index": order([(Index("SPX"), "buy", 1)], price="10.00"),
        "single-leg buy limit must be positive": order([(opt(100), "buy", 1)], price="-1.00"),
        "single-leg sell limit must be negative": order([(opt(100), "sell", 1)], price="1.50"),
        "needs a limit price": order([(opt(100), "buy", 1)], price=None),
        "insufficient buying power": order([(opt(110, "P"), "sell", 1)], qty=400, price="-10.00"),
    }
    for expected, o in cases.items():
        reports = exchange.submit(o)
        assert [r.kind for r in reports] == ["rejected"], expected
        assert expected in reports[0].order.reason, (expected, reports[0].order.reason)
        assert reports[0].order.status is OrderStatus.REJECTED
    exchange.on_chain(xyz_chain({(100, "C"): (float("nan"), float("nan"))}), NOW)
    no_quote = exchange.submit(order([(opt(100), "sell", 1)], price=None, kind=OrderType.MARKET))
    assert "market order needs a quote: no bid" in no_quote[0].order.reason
    assert exchange.cash == cash and exchange.positions == positions and not exchange.working


def test_expired_contract_is_rejected(exchange):
    late = NOW.replace(year=2027)
    reports = exchange.submit(order([(opt(100), "buy", 1)], now=late), now=late)
    assert "expired" in reports[0].order.reason


def test_cancel_and_replace(exchange, market):
    o = order([(opt(100), "buy", 1)], price="1.00")
    exchange.submit(o)
    bad = exchange.replace(o.order_id, Decimal("1.005"))
    assert bad[0].kind == "rejected" and "tick" in bad[0].order.reason and o.order_id in exchange.working
    moved = exchange.replace(o.order_id, Decimal("1.60"))
    assert [r.kind for r in moved] == ["replaced", "filled"]
    assert moved[0].previous_price == Decimal("1.00")
    o2 = order([(opt(105), "buy", 1)], price="0.50")
    exchange.submit(o2)
    cancelled = exchange.cancel(o2.order_id)
    assert cancelled[0].order.status is OrderStatus.CANCELLED and not exchange.working
    assert exchange.cancel(o2.order_id) == []


def test_day_orders_expire_at_the_close_and_gtc_orders_stay(exchange):
    day = order([(opt(100), "buy", 1)], price="1.00")
    gtc = order([(opt(105), "buy", 1)], price="1.00", tif=TimeInForce.GTC)
    exchange.submit(day)
    exchange.submit(gtc)
    assert exchange.on_time(NOW + timedelta(hours=1)) == []
    reports = exchange.on_time(NOW + timedelta(hours=6, minutes=1))  # 16:01 New York
    assert [(r.kind, r.order.order_id) for r in reports] == [("expired", day.order_id)]
    assert list(exchange.working) == [gtc.order_id]


def test_stock_orders_trade_at_the_underlying_quote(exchange):
    reports = exchange.submit(order([(Equity("XYZ"), "buy", 1)], qty=100, price="100.05"))
    assert reports[-1].fills[0].price == Decimal("100.0100")
    assert exchange.positions["XYZ"].quantity == 100


def test_row_and_single_quote_updates_match_resting_orders(exchange):
    chain = xyz_chain()
    o = order([(opt(105), "buy", 1)], price="1.00")
    exchange.submit(o)
    row = chain.row_of(opt(105).key)
    assert exchange.on_quotes("XYZ", np.array([row]), np.array([1.20]), np.array([1.25]), NOW) == []
    filled = exchange.on_quotes("XYZ", np.array([row]), np.array([0.90]), np.array([0.95]), NOW)
    assert filled[0].kind == "filled" and filled[0].fills[0].price == Decimal("1.0000")
    o2 = order([(opt(110), "buy", 1)], price="0.50")
    exchange.submit(o2)
    assert exchange.on_quote(opt(110).key, 0.40, 0.45, NOW)[0].kind == "filled"
    assert exchange.on_quote("NOPE261218C00100000", 1.0, 1.1, NOW) == []
    with pytest.raises(ValueError, match="out of range"):
        exchange.on_quotes("XYZ", np.array([999]), np.array([1.0]), np.array([1.1]), NOW)


def test_day_orders_survive_the_night_only_if_placed_after_the_close():
    from datetime import UTC, datetime

    ex = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    evening = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)  # Monday 17:00 New York, after the close
    ex.on_chain(xyz_chain(ts=evening), evening)
    day_before = order([(opt(100), "buy", 1)], price="1.00", now=NOW)  # Monday 10:00: its session has closed
    pre_market = order([(opt(105), "buy", 1)], price="1.00", now=evening)
    ex.submit(day_before, evening)
    ex.submit(pre_market, evening)
    reports = ex.on_time(datetime(2026, 11, 24, 14, 31, tzinfo=UTC))  # Tuesday's open
    assert [r.order.order_id for r in reports if r.kind == "expired"] == [day_before.order_id]
    assert list(ex.working) == [pre_market.order_id]


def test_long_option_with_no_bid_is_sold_at_the_minimum_tick_but_an_opening_sell_finds_no_buyer(exchange, market):
    # the 110 call is held long; then nobody bids for it
    exchange.submit(order([(opt(110), "buy", 1)], qty=2, price="1.60"))
    market.quotes({(110, "C"): (0.00, 0.05), (95, "C"): (0.00, 0.05)})
    closed = exchange.submit(order([(opt(110), "sell", 1)], qty=2, price="-0.01"))[-1]
    assert closed.kind == "filled" and closed.fills[0].price == Decimal("0.0100")
    assert opt(110).key not in exchange.positions or exchange.positions[opt(110).key].quantity == 0
    # selling more than is held (or opening a short) at a zero bid: nobody buys, the order rests
    rests = exchange.submit(order([(opt(95), "sell", 1)], qty=1, price="-0.01"))
    assert [r.kind for r in rests] == ["accepted"]


def test_spread_exit_with_a_no_bid_wing_fills_at_the_net_price(exchange, market):
    # short the 100 call, long the 105 call (both quoted 1.50 × 1.60 here); then nobody bids for the 105 wing
    opened = exchange.submit(order([(opt(100), "sell", 1), (opt(105), "buy", 1)], qty=3, price="0.10"))[-1]
    assert opened.kind == "filled"
    market.quotes({(100, "C"): (0.05, 0.10), (105, "C"): (0.00, 0.05)})
    close = exchange.submit(order([(opt(100), "buy", 1), (opt(105), "sell", 1)], qty=3, price="0.10"))[-1]
    assert close.kind == "filled"
    assert [f.price for f in close.fills] == [Decimal("0.1000"), Decimal("0.0100")]
    assert close.order.avg_fill_price == Decimal("0.0900")
