"""Black-Scholes-Merton and Black-76: prices, Greeks, implied vol, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.pricing import black76, bsm
from engine.pricing.inputs import Reason

from .conftest import needs_quantlib, ql, ql_option, ql_process, ql_setup


def _random_grid(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = rng.integers(5, 3 * 365, n)
    return {
        "is_call": rng.random(n) < 0.5,
        "S": rng.uniform(20, 300, n),
        "K_rel": rng.uniform(0.6, 1.5, n),
        "days": days,
        "T": days / 365.0,
        "r": rng.uniform(-0.01, 0.08, n),
        "q": rng.uniform(0.0, 0.05, n),
        "sigma": rng.uniform(0.05, 1.2, n),
    }


@needs_quantlib
def test_price_and_greeks_match_quantlib_analytic_european_engine_within_1e_10():
    ql_setup()
    g = _random_grid(80, seed=7)
    K = g["S"] * g["K_rel"]
    ours = bsm.greeks(g["is_call"], g["S"], K, g["T"], g["r"], g["q"], g["sigma"])
    accurate = bsm.price(g["is_call"], g["S"], K, g["T"], g["r"], g["q"], g["sigma"])
    for i in range(80):
        opt = ql_option(bool(g["is_call"][i]), float(K[i]), int(g["days"][i]))
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(
            ql_process(float(g["S"][i]), float(g["r"][i]), float(g["q"][i]), float(g["sigma"][i]))))
        ref = {
            "price": opt.NPV(), "delta": opt.delta(), "gamma": opt.gamma(),
            "vega": opt.vega() / 100, "theta": opt.theta() / 365, "rho": opt.rho() / 100,
        }
        got = {
            "price": ours.price[i], "delta": ours.delta[i], "gamma": ours.gamma[i],
            "vega": ours.vega[i], "theta": ours.theta[i], "rho": ours.rho[i],
        }
        for name, value in ref.items():
            scale = max(abs(value), 1e-6 * g["S"][i])
            assert abs(got[name] - value) <= 1e-10 * scale, (name, i, got[name], value)
        assert abs(accurate[i] - ref["price"]) <= 1e-10 * max(ref["price"], 1e-6)


def test_greeks_match_central_finite_differences_of_our_own_price():
    g = _random_grid(200, seed=11)
    c, S, T, r, q, v = g["is_call"], g["S"], g["T"], g["r"], g["q"], g["sigma"]
    K = S * g["K_rel"]
    out = bsm.greeks(c, S, K, T, r, q, v)

    def p(S=S, T=T, r=r, v=v):  # type: ignore[no-untyped-def]
        return bsm.price(c, S, K, T, r, q, v)

    hS, hv, hT, hr = 1e-4 * S, 1e-5, 1e-5, 1e-6
    fd = {
        "delta": (p(S=S + hS) - p(S=S - hS)) / (2 * hS),
        "gamma": (p(S=S + hS) - 2 * p() + p(S=S - hS)) / hS**2,
        "vega": (p(v=v + hv) - p(v=v - hv)) / (2 * hv) * 0.01,
        "theta": -(p(T=T + hT) - p(T=T - hT)) / (2 * hT) / 365,
        "rho": (p(r=r + hr) - p(r=r - hr)) / (2 * hr) * 0.01,
    }

    def delta(S=S, T=T, v=v):  # type: ignore[no-untyped-def]
        return bsm.greeks(c, S, K, T, r, q, v).delta

    def vega(v=v):  # type: ignore[no-untyped-def]
        return bsm.greeks(c, S, K, T, r, q, v).vega

    fd["vanna"] = (delta(v=v + hv) - delta(v=v - hv)) / (2 * hv) * 0.01
    fd["volga"] = (vega(v=v + hv) - vega(v=v - hv)) / (2 * hv) * 0.01
    fd["charm"] = -(delta(T=T + hT) - delta(T=T - hT)) / (2 * hT) / 365
    for name, ref in fd.items():
        got = getattr(out, name)
        tol = 1e-5 * np.maximum(np.abs(ref), np.abs(got)) + 1e-7 * (1 if name != "gamma" else 1 / S)
        assert np.all(np.abs(got - ref) <= tol), (name, np.max(np.abs(got - ref) - tol))


@needs_quantlib
def test_black76_matches_quantlib_black_formula_and_round_trips():
    rng = np.random.default_rng(3)
    n = 50
    c = rng.random(n) < 0.5
    F, K = rng.uniform(50, 150, n), rng.uniform(50, 150, n)
    T, r, v = rng.uniform(0.02, 3, n), rng.uniform(0, 0.06, n), rng.uniform(0.05, 1.0, n)
    ours = black76.price(c, F, K, T, r, v)
    for i in range(n):
        ref = ql.blackFormula(ql.Option.Call if c[i] else ql.Option.Put, K[i], F[i], v[i] * np.sqrt(T[i]),
                              np.exp(-r[i] * T[i]))
        assert abs(ours[i] - ref) <= 1e-10 * max(ref, 1e-8)
    iv = black76.implied_vol(ours, c, F, K, T, r)
    otm = np.where(c, K >= F, K <= F)
    assert np.max(np.abs(iv[otm] - v[otm])) < 1e-12
    g = black76.greeks(c, F, K, T, r, v)
    h = 1e-6
    rho_fd = (black76.price(c, F, K, T, r + h, v) - black76.price(c, F, K, T, r - h, v)) / (2 * h) * 0.01
    np.testing.assert_allclose(g.rho, rho_fd, rtol=1e-6, atol=1e-9)


def test_implied_vol_round_trip_normal_grid_below_1e_12():
    T = np.array([0.02, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0])
    vol = np.linspace(0.05, 1.5, 30)
    k = np.linspace(0.5, 2.0, 31)
    TT, VV, KK = np.meshgrid(T, vol, k, indexing="ij")
    S, r, q = 100.0, 0.04, 0.015
    K = 100.0 * KK
    fwd = S * np.exp((r - q) * TT)
    for is_call in (K >= fwd, K < fwd):  # out of the money, then in the money
        price = bsm.price(is_call, S, K, TT, r, q, VV)
        iv, reason = bsm.implied_vol(price, is_call, S, K, TT, r, q, return_reason=True)
        vega = bsm.greeks(is_call, S, K, TT, r, q, VV).vega * 100
        time_value = bsm.price(~is_call, S, K, TT, r, q, VV)  # parity: the other side's value
        ok = reason == Reason.OK
        # Deep in the money the time value can vanish below the price's rounding: no vol is recoverable.
        underflow = price < np.finfo(float).tiny  # far out of the money at short expiry: float64 underflow
        assert np.all(np.isin(reason[underflow], [Reason.NONPOSITIVE_PRICE, Reason.PRICE_UNDERFLOW]))
        no_tv = ~ok & ~underflow
        assert np.all(time_value[no_tv] < 1e-14 * price[no_tv])
        assert np.all(np.isin(reason[no_tv], [Reason.AT_INTRINSIC, Reason.BELOW_INTRINSIC]))
        # In the money, the time value is a small difference of large numbers: the attainable accuracy is the
        # price's rounding error over vega. Out of the money that term is negligible and 1e-12 is the bar.
        attainable = 4 * np.finfo(float).eps * price[ok] / vega[ok]
        err = np.abs(iv[ok] - VV[ok])
        assert np.all(err < 1e-12 + attainable), np.max(err - attainable)
    otm_price = bsm.price(K >= fwd, S, K, TT, r, q, VV)
    normal = otm_price > np.finfo(float).tiny
    assert normal.mean() > 0.9
    iv = bsm.implied_vol(otm_price, K >= fwd, S, K, TT, r, q)
    assert np.max(np.abs(iv[normal] - VV[normal])) < 1e-12


def test_implied_vol_round_trip_hard_grid_below_1e_12():
    T = np.array([1 / 365, 2 / 365, 5 / 365, 0.01, 0.02, 0.05])
    vol = np.geomspace(0.01, 5.0, 60)
    z = np.linspace(-6, 6, 61)  # strikes out to ±6 standard deviations
    TT, VV, ZZ = np.meshgrid(T, vol, z, indexing="ij")
    S, r, q = 100.0, 0.05, 0.02
    fwd = S * np.exp((r - q) * TT)
    K = fwd * np.exp(-ZZ * VV * np.sqrt(TT))
    is_call = K >= fwd  # the out-of-the-money side: the liquid, well-posed quote
    price = bsm.price(is_call, S, K, TT, r, q, VV)
    keep = price >= 1e-12  # prices down to 1e-12
    assert keep.sum() > 20_000 and price[keep].min() < 1e-10
    iv, reason = bsm.implied_vol(price, is_call, S, K, TT, r, q, return_reason=True)
    assert np.all(reason[keep] == Reason.OK)
    assert np.max(np.abs(iv[keep] - VV[keep])) < 1e-12


def test_implied_vol_recovers_vol_from_prices_far_below_1e_12():
    K = np.array([130.0, 150.0, 170.0])
    price = bsm.price("c", 100.0, K, 0.01, 0.0, 0.0, 0.2)
    assert np.all(price < 1e-30) and np.all(price > 1e-300)
    np.testing.assert_allclose(bsm.implied_vol(price, "c", 100.0, K, 0.01, 0.0, 0.0), 0.2, rtol=1e-13)


def test_implied_vol_reason_codes_for_inputs_without_a_vol():
    S, K, T, r, q = 100.0, 100.0, 0.5, 0.03, 0.01
    _, upper = bsm.bounds("c", S, K, T, r, q)
    cases = [
        (5.0, "c", S, K, 0.0, Reason.NONPOSITIVE_TIME),
        (5.0, "c", S, K, -1.0, Reason.NONPOSITIVE_TIME),
        (0.0, "c", S, K, T, Reason.NONPOSITIVE_PRICE),
        (-1.0, "p", S, K, T, Reason.NONPOSITIVE_PRICE),
        (float(upper), "c", S, K, T, Reason.ABOVE_MAXIMUM),
        (float(upper) * 1.1, "c", S, K, T, Reason.ABOVE_MAXIMUM),
        (np.nan, "c", S, K, T, Reason.NAN_INPUT),
        (np.inf, "c", S, K, T, Reason.NAN_INPUT),
        (5.0, "c", np.nan, K, T, Reason.NAN_INPUT),
        (5.0, "c", -100.0, K, T, Reason.NONPOSITIVE_SPOT),
        (5.0, "c", S, 0.0, T, Reason.NONPOSITIVE_STRIKE),
    ]
    for price, right, s, k, t, expected in cases:
        iv, reason = bsm.implied_vol(price, right, s, k, t, r, q, return_reason=True)
        assert np.isnan(iv) and reason == expected, (price, right, s, k, t, int(reason))
    # deep in the money: below and exactly at intrinsic
    lo, _ = bsm.bounds("c", 100.0, 50.0, T, r, q)
    iv, reason = bsm.implied_vol(float(lo) - 0.01, "c", 100.0, 50.0, T, r, q, return_reason=True)
    assert np.isnan(iv) and reason == Reason.BELOW_INTRINSIC
    iv, reason = bsm.implied_vol(float(lo), "c", 100.0, 50.0, T, r, q, return_reason=True)
    assert np.isnan(iv) and reason in (Reason.AT_INTRINSIC, Reason.BELOW_INTRINSIC)


def test_pricing_bad_inputs_give_nan_with_reasons_not_exceptions():
    S = np.array([100.0, np.nan, -1.0, 100.0, 100.0, 100.0, np.inf])
    K = np.array([100.0, 100.0, 100.0, 0.0, 100.0, 100.0, 100.0])
    T = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.5, 0.5])
    v = np.array([0.2, 0.2, 0.2, 0.2, 0.2, -0.1, 0.2])
    p, reason = bsm.price("c", S, K, T, 0.01, 0.0, v, return_reason=True)
    assert np.isfinite(p[0]) and np.all(np.isnan(p[1:]))
    assert list(reason) == [Reason.OK, Reason.NAN_INPUT, Reason.NONPOSITIVE_SPOT, Reason.NONPOSITIVE_STRIKE,
                            Reason.NONPOSITIVE_TIME, Reason.NONPOSITIVE_VOL, Reason.NAN_INPUT]
    g, reason_g = bsm.greeks("p", S, K, T, 0.01, 0.0, v, return_reason=True)
    assert np.array_equal(reason, reason_g)
    for name in ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga", "charm"):
        arr = getattr(g, name)
        assert np.isfinite(arr[0]) and np.all(np.isnan(arr[1:])), name


def test_shape_mismatch_and_bad_right_raise_value_error_naming_the_problem():
    with pytest.raises(ValueError, match="broadcast"):
        bsm.price("c", np.ones(3) * 100, np.ones(4) * 100, 0.5, 0.0, 0.0, 0.2)
    with pytest.raises(ValueError, match="broadcast"):
        bsm.implied_vol(np.ones(2), "c", 100.0, np.ones(3) * 100, 0.5, 0.0, 0.0)
    with pytest.raises(ValueError, match="'x'"):
        bsm.price("x", 100.0, 100.0, 0.5, 0.0, 0.0, 0.2)
    with pytest.raises(ValueError, match="right"):
        bsm.greeks(np.array([1.5, 2.5]), 100.0, 100.0, 0.5, 0.0, 0.0, 0.2)


def test_right_accepts_strings_arrays_and_boolean_masks_and_scalars_give_0d():
    a = bsm.price(np.array(["c", "P", "call", "put"]), 100.0, 100.0, 0.5, 0.01, 0.0, 0.2)
    b = bsm.price(np.array([True, False, True, False]), 100.0, 100.0, 0.5, 0.01, 0.0, 0.2)
    np.testing.assert_array_equal(a, b)
    assert a[0] != a[1]
    scalar = bsm.price("c", 100.0, 100.0, 0.5, 0.01, 0.0, 0.2)
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    assert bsm.implied_vol(scalar, "c", 100.0, 100.0, 0.5, 0.01, 0.0).shape == ()


_pos = st.floats(0.05, 3.0)


@settings(max_examples=60, deadline=None)
@given(S=st.floats(10, 500), k=st.floats(0.5, 2.0), T=st.floats(0.01, 5.0), r=st.floats(-0.02, 0.1),
       q=st.floats(0.0, 0.08), v=st.floats(0.02, 2.0))
def test_property_put_call_parity_and_bounds(S, k, T, r, q, v):
    K = S * k
    c = float(bsm.price("c", S, K, T, r, q, v))
    p = float(bsm.price("p", S, K, T, r, q, v))
    assert c - p == pytest.approx(S * np.exp(-q * T) - K * np.exp(-r * T), abs=1e-10 * S)
    for right, value in (("c", c), ("p", p)):
        lower, upper = bsm.bounds(right, S, K, T, r, q)
        assert float(lower) - 1e-12 * S <= value <= float(upper) + 1e-12 * S


@settings(max_examples=60, deadline=None)
@given(S=st.floats(10, 500), k1=st.floats(0.5, 2.0), k2=st.floats(0.5, 2.0), T=st.floats(0.01, 5.0),
       v1=st.floats(0.02, 2.0), v2=st.floats(0.02, 2.0))
def test_property_monotone_in_strike_and_vol(S, k1, k2, T, v1, v2):
    klo, khi = sorted((k1 * S, k2 * S))
    vlo, vhi = sorted((v1, v2))
    r, q = 0.03, 0.01
    tol = 1e-12 * S
    assert float(bsm.price("c", S, klo, T, r, q, vlo)) >= float(bsm.price("c", S, khi, T, r, q, vlo)) - tol
    assert float(bsm.price("p", S, klo, T, r, q, vlo)) <= float(bsm.price("p", S, khi, T, r, q, vlo)) + tol
    for right in ("c", "p"):
        assert float(bsm.price(right, S, klo, T, r, q, vlo)) <= float(bsm.price(right, S, klo, T, r, q, vhi)) + tol


@settings(max_examples=80, deadline=None)
@given(S=st.floats(10, 500), k=st.floats(0.3, 3.0), T=st.floats(1 / 365, 5.0), v=st.floats(0.01, 3.0),
       call=st.booleans())
@example(S=10.0, k=0.9536203428454664, T=0.01171875, v=0.01, call=True)  # vega underflows to 0
def test_property_implied_vol_round_trip(S, k, T, v, call):
    K = S * k
    price = bsm.price(call, S, K, T, 0.02, 0.01, v)
    iv, reason = bsm.implied_vol(price, call, S, K, T, 0.02, 0.01, return_reason=True)
    vega = float(bsm.greeks(call, S, K, T, 0.02, 0.01, v).vega) * 100
    if reason == Reason.OK and vega > 0:
        assert abs(float(iv) - v) <= 1e-12 + 8 * np.finfo(float).eps * float(price) / vega
    elif reason == Reason.OK:
        # vega underflows (deep in the money, tiny vol): the vol is unidentifiable, the price must still match
        repriced = float(bsm.price(call, S, K, T, 0.02, 0.01, float(iv)))
        assert abs(repriced - float(price)) <= 8 * np.finfo(float).eps * max(float(price), 1.0)
    else:
        # only when the price carries no recoverable time value (deep in the money) or underflows
        assert reason in (Reason.AT_INTRINSIC, Reason.BELOW_INTRINSIC, Reason.NONPOSITIVE_PRICE,
                          Reason.PRICE_UNDERFLOW)
