"""The margin of an order that fills later is computed on the fill's market, not the submit's (issue 14, 11).

The exchange caches the requirement it projected while validating an order and reused it once the order
filled in full — also when the order rested and filled after the market had moved, storing the submit-time
margin under the new market version ($10,775 cached vs $14,025 actual in the issue).
"""

from __future__ import annotations

import pytest

from engine.brokers.margin import OptionHolding, option_requirement

from .conftest import opt, order


def test_resting_order_when_it_fills_after_the_market_moved_then_requirement_is_recomputed(exchange, market):
    put = opt(100, "P")
    reports = exchange.submit(order([(put, "sell", 1)], qty=2, price="-2.00"))  # bid 1.50: rests
    assert [r.kind for r in reports] == ["accepted"]
    fills = [r for r in market.quotes(spot=97.0) if r.kind == "filled"]  # the put's bid is now 4.50
    assert fills and fills[0].order.filled_quantity == 2
    mark = (4.50 + 4.60) / 2
    expected = option_requirement([OptionHolding(100.0, False, -2, 100, mark)], 97.0, 0, index=False)
    assert exchange.requirement() == pytest.approx(expected)
    assert float(exchange.account().maintenance_requirement) == pytest.approx(expected, abs=0.01)


def test_marketable_order_when_it_fills_at_once_then_requirement_matches_a_fresh_computation(exchange):
    put = opt(95, "P")
    reports = exchange.submit(order([(put, "sell", 1)], qty=3, price="-1.50"))
    assert reports[-1].kind == "filled"
    expected = option_requirement([OptionHolding(95.0, False, -3, 100, 1.55)], 100.0, 0, index=False)
    assert exchange.requirement() == pytest.approx(expected)


def test_replace_when_quantity_raised_beyond_buying_power_then_change_rejected(exchange):
    put = opt(100, "P")
    first = exchange.submit(order([(put, "sell", 1)], qty=1, price="-3.00"))[-1].order
    assert first.status.value == "working"
    out = exchange.replace(first.order_id, first.limit_price, quantity=500)
    assert [r.kind for r in out] == ["rejected"] and "buying power" in out[0].order.reason
    assert exchange.working[first.order_id].order.quantity == 1  # the order itself is untouched
