"""Stop and stop-limit orders on the paper exchange: they rest until the order's net price at the mark reaches
the stop, then work as a market (stop) or limit (stop-limit) order. Every quote is chosen by the test."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import OrderStatus, OrderType, stop_triggered

from .conftest import NOW, opt, order, xyz_chain


def stop(legs, stop_price: str, limit: str | None = None, qty: int = 1):
    kind = OrderType.STOP if limit is None else OrderType.STOP_LIMIT
    return replace(order(legs, qty=qty, price=limit, kind=kind), stop_price=Decimal(stop_price))


def test_the_trigger_rule_is_one_rule_for_both_sides():
    assert stop_triggered(Decimal("2.00"), 2.00) and not stop_triggered(Decimal("2.00"), 1.99)  # buy stop
    assert stop_triggered(Decimal("-1.00"), -1.00) and not stop_triggered(Decimal("-1.00"), -1.01)  # sell stop


def test_buy_stop_rests_until_the_mark_reaches_it_then_fills_at_the_ask(exchange, market):
    reports = exchange.submit(stop([(opt(100), "buy", 1)], "2.00"))
    assert [r.kind for r in reports] == ["accepted"]  # mid 1.55: below the stop
    # the ask goes through the stop but the mid does not: a stop watches the mark, not one side of the quote
    assert market.quotes({(100, "C"): (1.80, 2.10)}) == []
    filled = market.quotes({(100, "C"): (1.95, 2.05)})  # mid 2.00: triggered, a market order now
    assert [r.kind for r in filled] == ["filled"]
    assert filled[0].fills[0].price == Decimal("2.0500") and filled[0].fills[0].quantity == 1
    assert exchange.positions[opt(100).key].quantity == 1


def test_sell_stop_protects_a_long_when_the_price_falls(exchange, market):
    exchange.submit(order([(opt(100), "buy", 1)], price="1.60"))
    assert exchange.positions[opt(100).key].quantity == 1
    assert [r.kind for r in exchange.submit(stop([(opt(100), "sell", 1)], "-1.20"))] == ["accepted"]
    assert market.quotes({(100, "C"): (1.25, 1.35)}) == []  # mid 1.30: above 1.20
    out = market.quotes({(100, "C"): (1.15, 1.25)})  # mid 1.20: triggered
    assert out[0].kind == "filled" and out[0].fills[0].price == Decimal("1.1500")
    assert opt(100).key not in exchange.positions or exchange.positions[opt(100).key].quantity == 0


def test_stop_limit_rests_as_a_limit_after_the_trigger_even_when_the_mark_falls_back(exchange, market):
    exchange.submit(stop([(opt(100), "buy", 1)], "2.00", limit="2.02"))
    triggered = market.quotes({(100, "C"): (1.98, 2.10)})  # mid 2.04: triggered, but the ask is above 2.02
    assert triggered == []
    assert exchange.working[next(iter(exchange.working))].triggered
    out = market.quotes({(100, "C"): (1.90, 2.00)})  # mid 1.95 is back below the stop: the limit still works
    assert out[0].kind == "filled" and out[0].fills[0].price == Decimal("2.0200")


def test_a_combo_stop_limit_triggers_on_the_net_mark(exchange, market):
    base = {(100, "C"): (3.00, 3.10), (105, "C"): (1.00, 1.10)}  # spread mid 2.05 − ... = 2.00 debit
    market.quotes(base)
    legs = [(opt(100), "buy", 1), (opt(105), "sell", 1)]
    assert [r.kind for r in exchange.submit(stop(legs, "2.50", limit="2.60"))] == ["accepted"]
    assert market.quotes({**base, (100, "C"): (3.40, 3.50)}) == []  # net mid 2.40
    out = market.quotes({**base, (100, "C"): (3.50, 3.60)})  # net mid 2.50, natural 2.60
    assert out[0].kind == "filled"
    assert sum((f.price * (1 if f.quantity > 0 else -1) for f in out[0].fills), Decimal(0)) == Decimal("2.6000")


def test_a_leg_without_a_two_sided_quote_never_triggers(exchange, market):
    exchange.submit(stop([(opt(100), "buy", 1)], "2.00"))
    assert market.quotes({(100, "C"): (float("nan"), 2.50)}) == []
    assert len(exchange.working) == 1


def test_a_stop_through_the_market_at_submit_fires_at_once(exchange):
    # the risk engine denies such a stop on the order path; the venue itself treats it as triggered
    reports = exchange.submit(stop([(opt(100), "buy", 1)], "1.50"))
    assert [r.kind for r in reports] == ["accepted", "filled"]
    assert reports[-1].fills[0].price == Decimal("1.6000")


def test_bad_stops_are_rejected_with_the_reason(exchange):
    off_tick = exchange.submit(stop([(opt(100), "buy", 1)], "2.003"))
    assert off_tick[0].kind == "rejected" and "not on the 0.01 tick" in off_tick[0].order.reason
    wrong_side = exchange.submit(stop([(opt(100), "sell", 1)], "1.20"))
    assert wrong_side[0].kind == "rejected" and "must be negative" in wrong_side[0].order.reason
    missing = exchange.submit(replace(order([(opt(100), "buy", 1)], price=None, kind=OrderType.STOP)))
    assert missing[0].kind == "rejected" and "needs a finite stop price" in missing[0].order.reason


def test_a_stop_cannot_be_replaced_into_a_limit(exchange):
    placed = exchange.submit(stop([(opt(100), "buy", 1)], "2.00"))[0].order
    out = exchange.replace(placed.order_id, Decimal("1.70"))
    assert out[0].kind == "rejected" and "cannot be replaced" in out[0].order.reason
    assert exchange.working[placed.order_id].order.order_type is OrderType.STOP


def test_a_triggered_stop_limit_stays_triggered_across_a_restart(exchange, market):
    placed = exchange.submit(stop([(opt(100), "buy", 1)], "2.00", limit="2.02"))[0].order
    market.quotes({(100, "C"): (1.98, 2.10)})  # triggered, resting at 2.02
    state = exchange.state()
    orders = exchange.open_orders()
    restored = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    restored.on_chain(xyz_chain(), NOW)
    restored.restore(state, [], orders)
    assert restored.working[placed.order_id].triggered
    out = restored.on_chain(xyz_chain({(100, "C"): (1.90, 2.00)}), NOW)  # mark 1.95 < stop: works as a limit
    assert out[0].kind == "filled" and out[0].order.status is OrderStatus.FILLED
