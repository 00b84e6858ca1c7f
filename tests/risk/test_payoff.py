import math

import numpy as np
import pytest

from engine.risk.payoff import CALL, PUT, STOCK, summarize


def test_put_credit_spread_when_summarized_then_defined_risk_width_minus_credit():
    s = summarize(np.array([PUT, PUT]), np.array([590.0, 580.0]), np.array([-1.0, 1.0]), np.array([100.0, 100.0]),
                  cost=-200.0, spot=600.0, stress=0.15)
    assert s.defined_risk
    assert s.max_loss == pytest.approx(800.0)
    assert s.max_profit == pytest.approx(200.0)
    assert s.breakevens == (588.0,)


def test_long_call_when_summarized_then_loss_is_premium_and_profit_unbounded():
    s = summarize(np.array([CALL]), np.array([610.0]), np.array([2.0]), np.array([100.0]), cost=700.0, spot=600.0,
                  stress=0.15)
    assert s.defined_risk and s.max_loss == pytest.approx(700.0) and math.isinf(s.max_profit)
    assert s.breakevens == (613.5,)


def test_naked_short_call_when_summarized_then_undefined_and_stress_loss_used():
    s = summarize(np.array([CALL]), np.array([610.0]), np.array([-1.0]), np.array([100.0]), cost=-500.0,
                  spot=600.0, stress=0.15)
    assert not s.defined_risk and math.isinf(s.max_loss)
    assert s.stress_loss == pytest.approx((690.0 - 610.0) * 100 - 500.0)
    assert s.risk == s.stress_loss


def test_naked_short_put_when_summarized_then_undefined_with_stress_loss_below_full_loss():
    s = summarize(np.array([PUT]), np.array([590.0]), np.array([-1.0]), np.array([100.0]), cost=-800.0,
                  spot=600.0, stress=0.15)
    assert not s.defined_risk
    assert s.max_loss == pytest.approx(590 * 100 - 800)
    assert s.stress_loss == pytest.approx((590 - 510) * 100 - 800)


def test_iron_condor_when_summarized_then_two_breakevens_and_max_loss_of_wider_side():
    kinds = np.array([PUT, PUT, CALL, CALL])
    strikes = np.array([580.0, 590.0, 610.0, 625.0])
    units = np.array([1.0, -1.0, -1.0, 1.0])
    s = summarize(kinds, strikes, units, np.full(4, 100.0), cost=-300.0, spot=600.0, stress=0.15)
    assert s.defined_risk
    assert s.max_loss == pytest.approx(1500 - 300)
    assert s.breakevens == (587.0, 613.0)


def test_covered_call_when_summarized_then_stock_loss_counts():
    s = summarize(np.array([STOCK, CALL]), np.array([0.0, 620.0]), np.array([100.0, -1.0]), np.array([1.0, 100.0]),
                  cost=60_000.0 - 300.0, spot=600.0, stress=0.10)
    assert not s.defined_risk  # falls with the stock
    assert s.max_profit == pytest.approx(62_000 - 59_700)
    assert s.stress_loss == pytest.approx(59_700 - 54_000)


def test_small_and_vector_paths_when_same_legs_then_same_summary():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from engine.risk import payoff

    leg = st.tuples(st.sampled_from((STOCK, CALL, PUT)), st.sampled_from((560.0, 580.0, 600.0, 620.0, 640.0)),
                    st.integers(-3, 3).filter(bool))

    @settings(max_examples=150, deadline=None)
    @given(legs=st.lists(leg, min_size=1, max_size=4), cost=st.floats(-3000, 3000), spot=st.floats(450, 750))
    def same(legs, cost, spot):
        kind = np.array([k for k, _, _ in legs])
        strike = np.array([s for _, s, _ in legs])
        units = np.array([float(u) for _, _, u in legs])
        mult = np.where(kind == STOCK, 1.0, 100.0)
        small = summarize(kind, strike, units, mult, cost, spot, 0.15)
        old, payoff.SMALL = payoff.SMALL, 0
        try:
            big = summarize(kind, strike, units, mult, cost, spot, 0.15)
        finally:
            payoff.SMALL = old
        for a, b in ((small.max_loss, big.max_loss), (small.max_profit, big.max_profit),
                     (small.stress_loss, big.stress_loss)):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-6)
        assert small.defined_risk == big.defined_risk
        assert small.breakevens == pytest.approx(big.breakevens, abs=1e-6)

    same()
