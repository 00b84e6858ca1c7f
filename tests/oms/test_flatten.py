from decimal import Decimal

from risk_kit import opt

from engine.model import Equity, OrderType, Position, Side
from engine.oms.flatten import closing_intent, flatten_groups
from engine.risk.market_view import MarketView


def _market():
    m = MarketView()
    m.update_quote(opt(610, "C").key, 7.14, 7.20)
    m.update_quote(opt(590, "P").key, 2.41, 2.47)
    m.update_quote(opt(580, "P").key, 1.30, 1.34)
    return m


def test_flatten_groups_when_spread_and_stock_then_one_combo_and_one_single():
    spread = [Position(opt(590, "P"), -4, Decimal(3)), Position(opt(580, "P"), 2, Decimal(2))]
    stock = Position(Equity("SPY"), 100, Decimal(600))
    groups = flatten_groups([*spread, stock, Position(opt(600, "C", underlying="QQQ"), 0, Decimal(1))])
    assert [len(g) for g in groups] == [1, 2]


def test_closing_intent_when_spread_then_inverse_combo_with_reduced_ratios_at_natural_plus_ticks():
    spread = [Position(opt(590, "P"), -4, Decimal(3)), Position(opt(580, "P"), 2, Decimal(2))]
    intent = closing_intent(spread, _market(), 2, "test")
    assert intent.quantity == 2
    assert [(leg.side, leg.ratio) for leg in intent.legs] == [(Side.BUY, 2), (Side.SELL, 1)]
    assert intent.limit_price == Decimal("2") * Decimal("2.47") - Decimal("1.30") + Decimal("0.02")
    assert intent.source == "kill_switch"


def test_closing_intent_when_single_option_then_rounded_aggressively_to_a_tick_every_class_accepts():
    sell = closing_intent([Position(opt(610, "C"), 3, Decimal(5))], _market(), 2, "t")
    assert sell.limit_price == Decimal("-7.10")  # -7.14 + 0.02 → toward the aggressive side on $0.10
    buy = closing_intent([Position(opt(590, "P"), -1, Decimal(3))], _market(), 2, "t")
    assert buy.limit_price == Decimal("2.50")  # 2.47 + 0.02 → $0.05 grid below $3


def test_closing_intent_when_no_quote_then_market_order():
    intent = closing_intent([Position(opt(700, "C"), 1, Decimal(1))], _market(), 2, "t")
    assert intent.order_type is OrderType.MARKET and intent.limit_price is None
