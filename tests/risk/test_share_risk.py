"""Shares in the risk engine: delta, buying power (Reg-T), position size and max loss of hedges (issue 16).

Real RiskEngine on the kit's quoted SPY market ($100,000 account, Moderate profile: 2 % max loss per trade,
delta limit 100 SPY shares).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from risk_kit import Desk, make_order

from engine.model import Equity, Leg, OpenClose, OrderIntent, Position, Side
from engine.oms.factory import OrderFactory, OrderValidationError

SPY = Equity("SPY")


def failed(decision) -> dict:
    return {r.name: r for r in decision.failed}


def quoted_desk(net_liq: float = 100_000.0) -> Desk:
    desk = Desk(net_liq=net_liq)
    desk.market.update_quote("SPY", 599.99, 600.01)
    return desk


def test_share_order_counts_one_delta_per_share_and_half_its_value_in_buying_power():
    desk = quoted_desk()
    d = desk.risk.check(make_order([(SPY, Side.BUY, 1)], 20, "600.01"), consume=False)
    assert d.order_exposure.delta == pytest.approx(20)
    assert d.order_exposure.gamma == 0.0 and d.order_exposure.vega == 0.0
    # Reg-T initial: pay 20 × 600.01, get half the shares' value (marked at 600.00) back as buying power
    assert d.buying_power_required == pytest.approx(20 * 600.01 - 0.5 * 20 * 600.0)
    assert d.passed


def test_short_sale_needs_half_again_its_value():
    desk = quoted_desk()
    d = desk.risk.check(make_order([(SPY, Side.SELL, 1)], 20, "-599.99"), consume=False)
    assert d.order_exposure.delta == pytest.approx(-20)
    assert d.buying_power_required == pytest.approx(-20 * 599.99 + 1.5 * 20 * 600.0)


def test_naked_share_purchase_is_judged_by_its_stress_loss():
    desk = quoted_desk()
    r = failed(desk.risk.check(make_order([(SPY, Side.BUY, 1)], 100, "600.01"), consume=False))
    assert r["max_loss_per_trade"].value == pytest.approx(0.15 * 100 * 600 + 1.0, abs=0.5)  # 15 % down + the spread
    assert r["max_loss_per_trade"].limit == pytest.approx(2_000)


def test_delta_hedge_of_a_long_straddle_adds_no_loss_and_passes():
    desk = quoted_desk(net_liq=1_000_000)
    desk.hold(desk.c600, 2, f"{desk.mid(desk.c600):.2f}")
    desk.hold(desk.p600, 2, f"{desk.mid(desk.p600):.2f}")
    desk.market.update_spot("SPY", 610.0)  # the straddle now carries long delta
    desk.market.update_quote("SPY", 609.99, 610.01)
    d = desk.risk.check(make_order([(SPY, Side.SELL, 1)], 40, "-609.99"), consume=False)
    assert d.passed, d.failed
    loss = next(r for r in d.results if r.name == "max_loss_per_trade")
    assert loss.value == pytest.approx(0.0, abs=1.0)  # alone the 40 shares would risk 0.15 × 24,400
    assert abs(d.projected.delta) < abs(d.current.delta)


def test_share_position_counts_toward_position_size():
    desk = quoted_desk(net_liq=30_000)
    desk.portfolio.apply_position(Position(SPY, 60, Decimal(600)))
    r = failed(desk.risk.check(make_order([(SPY, Side.BUY, 1)], 30, "600.01"), consume=False))
    # 90 shares × 600 × 15 % stress = 8,100 $ at risk in SPY > 25 % of 30,000
    assert r["position_size"].value == pytest.approx(8_101, abs=2)
    assert r["position_size"].limit == pytest.approx(7_500)


def test_selling_held_shares_is_reducing_and_skips_the_exposure_limits():
    desk = quoted_desk(net_liq=30_000)
    desk.portfolio.apply_position(Position(SPY, 300, Decimal(600)))  # far beyond every limit already
    d = desk.risk.check(make_order([(SPY, Side.SELL, 1)], 100, "-599.99"), consume=False)
    assert d.reducing and d.passed, d.failed


def test_covered_call_is_priced_per_share_for_the_collar():
    desk = quoted_desk(net_liq=1_000_000)
    mid = 600.0 - desk.mid(desk.c610)
    order = make_order([(SPY, Side.BUY, 100), (desk.c610, Side.SELL, 1)], 1, f"{mid:.2f}")
    d = desk.risk.check(order, consume=False)
    collar = next(r for r in d.results if r.name == "price_collar")
    assert collar.passed and abs(collar.value) < 0.01
    assert 0 < d.order_exposure.delta < 100  # 100 shares less the short call's delta
    # covered: the call needs no margin; the shares half their value, the premium comes in
    assert d.buying_power_required == pytest.approx(
        100 * 600.01 - 0.5 * 100 * 600.0 - 100 * desk.market.bid_ask(desk.c610)[0], abs=1.0)


NOW_FACTORY = OrderFactory(now=lambda: __import__("risk_kit").NOW)


def test_factory_accepts_covered_call_collar_and_hedged_straddle():
    d = Desk()
    for legs in (
        (Leg(SPY, Side.BUY, 100), Leg(d.c610, Side.SELL, 1)),
        (Leg(SPY, Side.BUY, 100), Leg(d.p590, Side.BUY, 1), Leg(d.c610, Side.SELL, 1)),
        (Leg(d.c600, Side.BUY, 1), Leg(d.p600, Side.BUY, 1), Leg(SPY, Side.SELL, 37)),
        (Leg(SPY, Side.SELL, 100, OpenClose.CLOSE), Leg(d.c610, Side.BUY, 1, OpenClose.CLOSE)),
        # a delta-hedged long straddle closed in one order: the shares bought back cover nothing
        (Leg(d.c600, Side.SELL, 1, OpenClose.CLOSE), Leg(d.p600, Side.SELL, 1, OpenClose.CLOSE),
         Leg(SPY, Side.BUY, 37, OpenClose.CLOSE)),
    ):
        order = NOW_FACTORY.create(OrderIntent(legs=legs, quantity=2, limit_price=Decimal("590.004")))
        assert order.limit_price == Decimal("590.00")  # combos on the $0.01 tick, rounded to the passive side


@pytest.mark.parametrize("shares", [50, 99, 150])
def test_factory_refuses_a_covered_call_without_100_shares_per_contract(shares):
    d = Desk()
    legs = (Leg(SPY, Side.BUY, shares), Leg(d.c610, Side.SELL, 1))
    with pytest.raises(OrderValidationError) as err:
        NOW_FACTORY.create(OrderIntent(legs=legs, quantity=1, limit_price=Decimal("590")))
    assert err.value.code == "covered_shares_mismatch"
    assert f"{shares} shares of SPY" in str(err.value) and "exactly 100" in str(err.value)


def test_factory_refuses_a_covered_put_with_too_few_short_shares():
    d = Desk()
    legs = (Leg(SPY, Side.SELL, 101), Leg(d.p590, Side.SELL, 2))
    with pytest.raises(OrderValidationError) as err:
        NOW_FACTORY.create(OrderIntent(legs=legs, quantity=1, limit_price=Decimal("-605")))
    assert err.value.code == "covered_shares_mismatch" and "exactly 200" in str(err.value)


def test_factory_rounds_a_stock_price_to_the_cent_toward_the_passive_side():
    order = NOW_FACTORY.create(OrderIntent(legs=(Leg(SPY, Side.BUY, 1),), quantity=10,
                                           limit_price=Decimal("600.019")))
    assert order.limit_price == Decimal("600.01")
    sell = NOW_FACTORY.create(OrderIntent(legs=(Leg(SPY, Side.SELL, 1),), quantity=10,
                                          limit_price=Decimal("-599.991")))
    assert sell.limit_price == Decimal("-600.00")  # a credit rounds to receive more
