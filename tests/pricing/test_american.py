"""American pricing (ALO fixed-point collocation) against QuantLib's QdFpAmericanEngine, and American IV."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.pricing import american, bsm
from engine.pricing.inputs import Reason

from .conftest import needs_quantlib, ql, ql_option, ql_process, ql_setup


@pytest.fixture(scope="module")
def grid_with_quantlib_reference():
    """S = 100, K 80-120, T 0.1-2 y, vol 15-50 %, q 0-3 %, r 0-8 %, calls and puts; QdFp accurate values."""
    ql_setup()
    rng = np.random.default_rng(2024)
    n = 120
    K = rng.uniform(80, 120, n)
    days = rng.integers(37, 731, n)
    v = rng.uniform(0.15, 0.5, n)
    q = rng.uniform(0.0, 0.03, n)
    r = rng.uniform(0.0, 0.08, n)
    r[:10] = q[:10]  # r == q: no carry, a classic corner of the fixed-point equation
    c = rng.random(n) < 0.5
    ref = np.empty(n)
    for i in range(n):
        opt = ql_option(bool(c[i]), float(K[i]), int(days[i]), "american")
        opt.setPricingEngine(ql.QdFpAmericanEngine(ql_process(100.0, float(r[i]), float(q[i]), float(v[i])),
                                                   ql.QdFpAmericanEngine.accurateScheme()))
        ref[i] = opt.NPV()
    return c, K, days / 365.0, r, q, v, ref


@needs_quantlib
def test_accurate_scheme_within_1e_3_of_quantlib_qdfp_accurate(grid_with_quantlib_reference):
    c, K, T, r, q, v, ref = grid_with_quantlib_reference
    ours = american.price(c, 100.0, K, T, r, q, v, scheme="accurate")
    err = np.abs(ours - ref)
    assert err.max() <= 1e-3, err.max()
    assert np.median(err) <= 1e-5


@needs_quantlib
def test_fast_scheme_error_stays_within_its_stated_bound(grid_with_quantlib_reference):
    c, K, T, r, q, v, ref = grid_with_quantlib_reference
    err = np.abs(american.price(c, 100.0, K, T, r, q, v, scheme="fast") - ref)
    assert err.max() <= 1e-3, err.max()  # stated in the module docstring and docs/pricing.md


def test_american_at_least_european_and_intrinsic_and_calls_without_dividends_are_european():
    rng = np.random.default_rng(1)
    n = 200
    c = rng.random(n) < 0.5
    K = rng.uniform(60, 140, n)
    T = rng.uniform(0.02, 3, n)
    r = rng.uniform(0, 0.1, n)
    q = rng.uniform(0, 0.06, n)
    v = rng.uniform(0.05, 1.0, n)
    am = american.price(c, 100.0, K, T, r, q, v)
    eu = bsm.price(c, 100.0, K, T, r, q, v)
    intrinsic = np.maximum(np.where(c, 100.0 - K, K - 100.0), 0.0)
    assert np.all(am >= eu - 1e-9)
    assert np.all(am >= intrinsic - 1e-12)
    no_div_call = american.price("c", 100.0, K, T, r, 0.0, v)
    np.testing.assert_allclose(no_div_call, bsm.price("c", 100.0, K, T, r, 0.0, v), rtol=0, atol=1e-12)
    zero_rate_put = american.price("p", 100.0, K, T, 0.0, q, v)
    np.testing.assert_allclose(zero_rate_put, bsm.price("p", 100.0, K, T, 0.0, q, v), rtol=0, atol=1e-12)


def test_deep_in_the_money_put_below_boundary_is_worth_intrinsic_and_reports_its_boundary():
    res = american.evaluate("p", np.array([40.0, 100.0]), 100.0, 1.0, 0.08, 0.0, 0.2)
    assert res.price[0] == pytest.approx(60.0, abs=1e-12)
    assert res.boundary[0] > 40.0 and res.boundary[1] < 100.0
    assert res.price[1] > float(bsm.price("p", 100.0, 100.0, 1.0, 0.08, 0.0, 0.2))  # continuation + premium
    assert res.delta[0] == -1.0 and res.gamma[0] == 0.0


def test_delta_and_gamma_match_finite_differences_of_the_price():
    rng = np.random.default_rng(4)
    n = 60
    c = rng.random(n) < 0.5
    K = rng.uniform(80, 120, n)
    T = rng.uniform(0.1, 2, n)
    r = rng.uniform(0.01, 0.08, n)
    q = rng.uniform(0.0, 0.03, n)
    v = rng.uniform(0.15, 0.5, n)
    res = american.evaluate(c, 100.0, K, T, r, q, v)
    h = 0.01
    up = american.price(c, 100.0 + h, K, T, r, q, v)
    dn = american.price(c, 100.0 - h, K, T, r, q, v)
    np.testing.assert_allclose(res.delta, (up - dn) / (2 * h), atol=2e-5)
    np.testing.assert_allclose(res.gamma, (up - 2 * res.price + dn) / h**2, atol=2e-4)


def test_american_implied_vol_round_trips_a_chain():
    rng = np.random.default_rng(9)
    n = 400
    c = rng.random(n) < 0.5
    K = rng.uniform(70, 130, n)
    T = rng.uniform(0.05, 2, n)
    r = rng.uniform(0.0, 0.08, n)
    q = rng.uniform(0.0, 0.03, n)
    v = rng.uniform(0.1, 0.8, n)
    price = american.price(c, 100.0, K, T, r, q, v)
    iv, reason = american.implied_vol(price, c, 100.0, K, T, r, q, return_reason=True)
    ok = reason == Reason.OK
    # the only failures allowed: prices at intrinsic (inside the exercise region, the vol is undetermined)
    assert np.all(reason[~ok] == Reason.AT_INTRINSIC)
    assert ok.mean() > 0.95
    vega = np.abs(american.price(c, 100.0, K, T, r, q, v + 1e-4) - price) / 1e-4
    well_posed = ok & (vega > 1.0)
    assert np.max(np.abs(iv[well_posed] - v[well_posed])) < 1e-6
    assert np.median(np.abs(iv[ok] - v[ok])) < 1e-9


def test_american_implied_vol_reason_codes():
    cases = [
        (0.0, "p", 100.0, 100.0, 0.5, Reason.NONPOSITIVE_PRICE),
        (5.0, "p", 100.0, 100.0, 0.0, Reason.NONPOSITIVE_TIME),
        (9.0, "p", 90.0, 100.0, 0.5, Reason.BELOW_INTRINSIC),  # put intrinsic 10
        (10.0, "p", 90.0, 100.0, 0.5, Reason.AT_INTRINSIC),
        (100.0, "p", 90.0, 100.0, 0.5, Reason.ABOVE_MAXIMUM),  # a put is worth less than K
        (95.0, "c", 95.0, 100.0, 0.5, Reason.ABOVE_MAXIMUM),  # a call is worth less than S
        (np.nan, "c", 95.0, 100.0, 0.5, Reason.NAN_INPUT),
        (5.0, "c", 95.0, -1.0, 0.5, Reason.NONPOSITIVE_STRIKE),
    ]
    for p, right, S, K, T, expected in cases:
        iv, reason = american.implied_vol(p, right, S, K, T, 0.05, 0.01, return_reason=True)
        assert np.isnan(iv) and reason == expected, (p, right, S, K, T, int(reason))


def test_bad_inputs_give_nan_with_reasons_and_unknown_scheme_raises():
    p, reason = american.price("p", np.array([100.0, np.nan, 100.0]), 100.0, np.array([1.0, 1.0, -1.0]),
                               0.05, 0.0, 0.2, return_reason=True)
    assert np.isfinite(p[0]) and np.isnan(p[1]) and np.isnan(p[2])
    assert list(reason) == [Reason.OK, Reason.NAN_INPUT, Reason.NONPOSITIVE_TIME]
    with pytest.raises(ValueError, match="scheme"):
        american.price("p", 100.0, 100.0, 1.0, 0.05, 0.0, 0.2, scheme="exact")
    with pytest.raises(ValueError, match="broadcast"):
        american.price("p", np.ones(2) * 100, np.ones(3) * 100, 1.0, 0.05, 0.0, 0.2)


def test_call_with_dividends_above_its_boundary_is_exercised_and_boundary_is_consistent():
    res = american.evaluate("c", np.array([100.0, 250.0]), 100.0, 1.0, 0.01, 0.08, 0.2)
    b = res.boundary[0]
    assert 100.0 < b < 250.0  # exercise a call at or above the boundary
    assert res.price[1] == pytest.approx(150.0, abs=1e-12) and res.delta[1] == 1.0
    just_above = american.price("c", b * 1.001, 100.0, 1.0, 0.01, 0.08, 0.2)
    assert float(just_above) == pytest.approx(b * 1.001 - 100.0, abs=1e-6)
    assert res.price[0] > float(bsm.price("c", 100.0, 100.0, 1.0, 0.01, 0.08, 0.2))


@settings(max_examples=25, deadline=None)
@given(k1=st.floats(60, 140), k2=st.floats(60, 140), T=st.floats(0.05, 2.0), r=st.floats(0.0, 0.1),
       q=st.floats(0.0, 0.06), v=st.floats(0.08, 0.8))
@example(k1=60.0, k2=60.0, T=1.0, r=0.0, q=1e-08, v=0.5)  # a call with r·T ≈ 0: the fast scheme gave intrinsic
def test_property_american_bounds_and_monotone_in_strike(k1, k2, T, r, q, v):
    klo, khi = sorted((k1, k2))
    K = np.array([klo, khi])
    for right in ("c", "p"):
        am = american.price(right, 100.0, K, T, r, q, v, scheme="fast")
        eu = bsm.price(right, 100.0, K, T, r, q, v)
        intrinsic = np.maximum(100.0 - K, 0.0) if right == "c" else np.maximum(K - 100.0, 0.0)
        upper = 100.0 if right == "c" else K
        assert np.all(am >= eu - 1e-9) and np.all(am >= intrinsic - 1e-12) and np.all(am <= upper + 1e-12)
    calls = american.price("c", 100.0, K, T, r, q, v, scheme="fast")
    puts = american.price("p", 100.0, K, T, r, q, v, scheme="fast")
    assert calls[0] >= calls[1] - 1e-9 and puts[0] <= puts[1] + 1e-9
