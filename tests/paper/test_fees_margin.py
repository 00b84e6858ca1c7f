"""Fee presets against hand-computed examples, and Reg-T style buying power."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.brokers.fees import OrderFeeTracker, fee_schedule
from engine.brokers.margin import OptionHolding, defined_risk, naked_requirement, option_requirement
from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import Equity

from .conftest import NOW, opt, order, xyz_chain

D = Decimal


def test_tastytrade_open_commission_is_capped_per_leg_and_closing_is_free():
    tt = fee_schedule("tastytrade")
    tracker = OrderFeeTracker()
    # open 12 contracts: $12 capped at $10
    assert tracker.charge(tt, [(0, opt(100), 12, D("1.50"), 12)]) == {0: D("10.00")}
    assert tt.pass_through(opt(100), 12, D("1.50"), False) == D("1.20") + D("0.36")  # clearing + ORF/OCC
    closing = OrderFeeTracker().charge(tt, [(0, opt(100), 5, D("2.00"), 0)])
    assert closing == {0: D("0.00")}
    # the cap holds across partial fills of one order: 6 + 6 contracts → $6 then $4
    t2 = OrderFeeTracker()
    assert t2.charge(tt, [(0, opt(100), 6, D("1"), 6)])[0] == D("6.00")
    assert t2.charge(tt, [(0, opt(100), 6, D("1"), 6)])[0] == D("4.00")


def test_ibkr_fixed_tiers_and_order_minimum():
    ib = fee_schedule("ibkr_fixed")
    assert OrderFeeTracker().charge(ib, [(0, opt(100), 1, D("0.04"), 1)]) == {0: D("1.00")}  # $0.25 → $1 minimum
    assert OrderFeeTracker().charge(ib, [(0, opt(100), 3, D("1.50"), 3)]) == {0: D("1.95")}
    assert OrderFeeTracker().charge(ib, [(0, opt(100), 3, D("0.07"), 0)]) == {0: D("1.50")}
    stock = OrderFeeTracker().charge(ib, [(0, Equity("XYZ"), 1000, D("100"), 1000)])
    assert stock == {0: D("5.000")}
    # a sale pays SEC fee and FINRA TAF on top
    assert ib.pass_through(opt(100), 10, D("2.00"), True) == D("0.30") + D("0.0279") + D("0.0000278") * 2000


def test_fees_land_in_the_fill_and_the_cash():
    ex = PaperExchange(PaperConfig(fees="tastytrade"), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(), NOW)
    fill = ex.submit(order([(opt(100), "buy", 1)], qty=2, price="1.60"))[-1].fills[0]
    assert fill.fee == D("2.26")  # $2 commission + $0.20 clearing + $0.06 ORF/OCC
    assert ex.cash == D(100_000) - D(320) - D("2.26")
    with pytest.raises(ValueError, match="unknown fee preset"):
        fee_schedule("robinhood")


def test_defined_risk_spreads_hold_their_max_loss():
    vertical = [OptionHolding(100, False, -1, 100, 2.5), OptionHolding(95, False, 1, 100, 1.0)]
    assert option_requirement(vertical, 102.0, 0, index=False) == pytest.approx(500.0)
    condor = [*vertical, OptionHolding(110, True, -1, 100, 1.0), OptionHolding(115, True, 1, 100, 0.4)]
    assert option_requirement(condor, 102.0, 0, index=False) == pytest.approx(500.0)  # one side can lose
    wide = [OptionHolding(100, False, -1, 100, 2.0), OptionHolding(10, False, 1, 100, 0.01)]
    assert option_requirement(wide, 100.0, 0, index=False) == pytest.approx((2.0 + 20.0) * 100)  # naked < width
    long_only = [OptionHolding(100, True, 3, 100, 2.0)]
    assert option_requirement(long_only, 102.0, 0, index=False) == 0.0
    assert defined_risk([OptionHolding(100, True, -1, 100, 1.0)], covered_shares=100) == 0.0  # covered call


def test_naked_shorts_use_the_reg_t_formula():
    # put: 20 % × 100 − 5 OTM = 15 vs 10 % × 95 = 9.5 → (1.20 + 15) × 100
    assert naked_requirement(95, False, 100.0, 1.20, 100, 0.20, 0.10) == pytest.approx(1620.0)
    # far OTM call: 20 % × 100 − 30 < 10 % × 100 → (0.05 + 10) × 100
    assert naked_requirement(130, True, 100.0, 0.05, 100, 0.20, 0.10) == pytest.approx(1005.0)
    naked_index = option_requirement([OptionHolding(5900, False, -1, 100, 10.0)], 6000.0, 0, index=True)
    assert naked_index == pytest.approx((10.0 + 0.15 * 6000 - 100) * 100)
    covered = option_requirement([OptionHolding(105, True, -1, 100, 1.0)], 100.0, 100, index=False)
    assert covered == 0.0


def test_buying_power_falls_by_max_loss_minus_credit():
    ex = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain({(95, "P"): (0.60, 0.70), (100, "P"): (2.40, 2.50)}), NOW)
    ex.on_underlying("XYZ", 100.0, NOW)
    before = ex.buying_power()
    preview = ex.preview(order([(opt(95, "P"), "buy", 1), (opt(100, "P"), "sell", 1)], price="-1.70"))
    assert preview.buying_power_effect == D("-330.00")  # width 500 − credit 170
    assert preview.margin_change == D("500.00") and not preview.errors
    ex.submit(order([(opt(95, "P"), "buy", 1), (opt(100, "P"), "sell", 1)], price="-1.70"))
    assert ex.buying_power() == pytest.approx(before - 330.0)
    snap = ex.account()
    assert snap.maintenance_requirement == D("500.0") and snap.cash == D("100170.00")
    bad = ex.preview(order([(opt(101), "buy", 1)]))
    assert bad.errors and "unknown contract" in bad.errors[0]
