"""fit_chain end to end: forwards from parity, IVs and drop reasons, and every kind of bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model.chain import OptionChain
from engine.model.instruments import ExerciseStyle
from engine.surface.config import SurfaceConfig
from engine.surface.fit import fit_chain
from engine.surface.forward import CARRY_FALLBACK, PARITY_FIXED_DISCOUNT, PARITY_REGRESSION, estimate_forward
from engine.surface.quotes import ZeroCurve
from engine.surface.svi import svi_total_variance
from tests.surface.synthetic import (
    NOW,
    build_chain,
    equity_like_params,
    expiry_dates,
    flat_price_fn,
    log_strikes,
    svi_price_fn,
)

SPOT, R, Q = 100.0, 0.045, 0.015


@pytest.fixture(scope="module")
def svi_chain() -> OptionChain:
    return build_chain(spot=SPOT, expiries=expiry_dates([9, 30, 65, 120, 240]),
                       strikes=log_strikes(-2.5, 2.0, 40, spot=SPOT, vol=0.3, r=R, q=Q),
                       price=svi_price_fn(equity_like_params, spot=SPOT, r=R, q=Q))


# ---- forwards -------------------------------------------------------------------------------------------
def test_forward_and_carry_are_recovered_from_parity_on_a_european_chain(svi_chain: OptionChain) -> None:
    fit = fit_chain(svi_chain, rate=R, dividend_yield=0.0)  # the chain knows q = 1.5 %; we do not
    for s in fit.slices:
        assert s.forward.method == PARITY_REGRESSION
        assert s.forward.forward == pytest.approx(SPOT * np.exp((R - Q) * s.T), rel=1e-6)
        assert s.forward.implied_yield == pytest.approx(Q, abs=2e-4)
        assert s.forward.rate == pytest.approx(R, abs=2e-4)
        assert s.forward.pairs >= 3


def test_forward_regression_shrugs_off_an_absurd_pair() -> None:
    T, F, D = 0.25, 101.0, np.exp(-0.04 * 0.25)
    K = np.arange(90.0, 111.0, 2.5)
    rng = np.random.default_rng(3)
    put = np.maximum(K - F, 0) * D + 2.0 + rng.normal(0, 0.002, K.size)
    call = put + D * (F - K)
    call[4] += 3.0  # one broken quote near the money
    spread = np.full(K.size, 0.05)
    est = estimate_forward(K, call, put, spread, spread, spot=100.0, T=T, rate=0.04, dividend_yield=0.0)
    assert est.forward == pytest.approx(F, abs=0.02)
    assert est.pairs >= 5


def test_forward_falls_back_to_carry_with_a_flag_when_pairs_are_missing() -> None:
    K = np.array([95.0, 100.0, 105.0])
    call = np.array([6.0, np.nan, np.nan])
    put = np.array([np.nan, np.nan, 5.0])
    s = np.full(3, 0.1)
    est = estimate_forward(K, call, put, s, s, spot=100.0, T=0.5, rate=0.05, dividend_yield=0.02)
    assert est.fallback and est.method == CARRY_FALLBACK
    assert est.forward == pytest.approx(100.0 * np.exp(0.03 * 0.5))
    assert "pairs" in est.note


def test_american_chain_fixes_the_discount_and_recovers_the_flat_vol() -> None:
    vol = 0.30
    chain = build_chain(spot=SPOT, expiries=expiry_dates([30, 90]), style=ExerciseStyle.AMERICAN,
                        strikes=log_strikes(-2.0, 2.0, 25, spot=SPOT, vol=vol, r=R, q=Q),
                        price=flat_price_fn(vol, spot=SPOT, r=R, q=Q, american=True),
                        half_spread=lambda p: np.maximum(0.002, 0.005 * p))
    fit = fit_chain(chain, rate=R, dividend_yield=Q)
    assert fit.ivs.american and not fit.notes
    for s in fit.slices:
        assert s.forward.method == PARITY_FIXED_DISCOUNT
        # early exercise biases parity slightly; the American IVs must still land on the flat vol
        assert s.forward.forward == pytest.approx(SPOT * np.exp((R - Q) * s.T), rel=2e-3)
    used = fit.ivs.used
    assert np.nanmax(np.abs(fit.ivs.iv_mid[used] - vol)) < 0.003
    assert np.nanmax(np.abs(fit.term.atm_iv - vol)) < 0.003


# ---- IVs and fit quality ---------------------------------------------------------------------------
def test_otm_points_are_used_and_itm_rows_say_why_not(svi_chain: OptionChain) -> None:
    fit = fit_chain(svi_chain, rate=R)
    ivs = fit.ivs
    assert np.all(ivs.otm[ivs.used])
    itm = ~ivs.otm
    assert set(ivs.reason[itm]) <= {"in_the_money"}
    assert np.all(ivs.reason[ivs.used] == "")


def test_svi_generated_chain_is_fitted_to_a_fraction_of_a_basis_point(svi_chain: OptionChain) -> None:
    fit = fit_chain(svi_chain, rate=R)
    assert fit.ok and fit.reasons == ()
    assert len(fit.fitted_slices()) == 5
    for s in fit.slices:
        assert s.rmse_bp < 0.5
        true = svi_total_variance(0.0, *equity_like_params(s.T))
        assert s.params is not None
        assert s.params.total_variance(0.0) == pytest.approx(true, rel=1e-4)
    assert fit.arbitrage.arbitrage_free and fit.arbitrage.found == ()


def test_a_zero_curve_is_accepted_and_gives_the_same_forwards(svi_chain: OptionChain) -> None:
    flat = fit_chain(svi_chain, rate=R)
    curved = fit_chain(svi_chain, rate=ZeroCurve((0.01, 1.0), (R, R)))
    np.testing.assert_allclose([s.forward.forward for s in flat.slices],
                               [s.forward.forward for s in curved.slices], rtol=1e-12)


# ---- bad input ----------------------------------------------------------------------------------------
def test_empty_chain_gives_an_empty_surface_with_a_reason() -> None:
    chain = OptionChain.build("SPX", SPOT, NOW, [])
    fit = fit_chain(chain, rate=R)
    assert not fit.ok
    assert fit.slices == ()
    assert any("empty chain" in r for r in fit.reasons)
    assert np.isnan(fit.surface.implied_vol(100.0, 0.5))


def test_an_expiry_with_fewer_than_five_valid_strikes_is_skipped_with_its_reason(svi_chain: OptionChain) -> None:
    first = svi_chain.expiry == svi_chain.expiries()[0]
    bid = svi_chain.bid.copy()
    ask = svi_chain.ask.copy()
    rows = np.nonzero(first)[0]
    kill = rows[4:]  # leave 4 strikes' worth of quotes on the first expiry
    bid[kill] = np.nan
    ask[kill] = np.nan
    fit = fit_chain(svi_chain.with_quotes(bid, ask), rate=R)
    assert fit.slices[0].status == "skipped"
    assert "insufficient valid strikes" in fit.slices[0].reason
    assert all(s.status == "fitted" for s in fit.slices[1:])
    assert any("1 of 5 expiries not fitted" in r for r in fit.reasons)
    assert set(fit.ivs.reason[kill]) == {"missing_quote"}
    assert np.isnan(fit.term.atm_iv[0]) and np.isfinite(fit.term.atm_iv[1:]).all()


def test_all_zero_bids_fit_nothing_and_say_zero_bid(svi_chain: OptionChain) -> None:
    fit = fit_chain(svi_chain.with_quotes(np.zeros(len(svi_chain)), svi_chain.ask), rate=R)
    assert not fit.ok
    assert all(s.status == "skipped" for s in fit.slices)
    assert any("zero_bid" in r for r in fit.reasons)
    assert set(fit.ivs.reason) == {"zero_bid"}


def test_nan_crossed_wide_and_stale_quotes_are_dropped_with_their_reasons(svi_chain: OptionChain) -> None:
    bid, ask = svi_chain.bid.copy(), svi_chain.ask.copy()
    otm = fit_chain(svi_chain, rate=R).ivs.used
    idx = np.nonzero(otm)[0]
    nan_row, crossed_row, wide_row, stale_row = idx[10], idx[11], idx[12], idx[13]
    bid[nan_row] = np.nan
    bid[crossed_row], ask[crossed_row] = ask[crossed_row] + 0.1, bid[crossed_row]
    ask[wide_row] = bid[wide_row] * 10 + 1.0
    age = np.zeros(len(svi_chain))
    age[stale_row] = 3600.0
    fit = fit_chain(svi_chain.with_quotes(bid, ask), rate=R, quote_age=age)
    r = fit.ivs.reason
    assert (r[nan_row], r[crossed_row], r[wide_row], r[stale_row]) == ("missing_quote", "crossed", "wide_spread",
                                                                       "stale")
    assert fit.ok and all(s.status == "fitted" for s in fit.slices)


def test_a_price_above_the_no_arbitrage_bound_keeps_the_pricing_reason(svi_chain: OptionChain) -> None:
    bid, ask = svi_chain.bid.copy(), svi_chain.ask.copy()
    ivs = fit_chain(svi_chain, rate=R).ivs
    row = int(np.nonzero(ivs.used & svi_chain.is_call)[0][5])
    bid[row], ask[row] = 150.0, 151.0  # an OTM call on a 100 stock quoted above the stock price
    fit = fit_chain(svi_chain.with_quotes(bid, ask), rate=R)
    assert fit.ivs.reason[row] == "no_iv:above_maximum"
    assert fit.ok and all(s.rmse_bp < 0.5 for s in fit.slices)


def test_an_absurd_but_tight_quote_is_dropped_as_an_outlier(svi_chain: OptionChain) -> None:
    bid, ask = svi_chain.bid.copy(), svi_chain.ask.copy()
    ivs = fit_chain(svi_chain, rate=R).ivs
    row = int(np.nonzero(ivs.used & (ivs.expiry_index == 2))[0][15])
    mid = 0.5 * (bid[row] + ask[row])
    bid[row], ask[row] = 1.6 * mid, 1.62 * mid  # tight market, far too rich
    fit = fit_chain(svi_chain.with_quotes(bid, ask), rate=R)
    assert fit.ivs.reason[row] == "outlier" and not fit.ivs.used[row]
    assert any("outlier" in n for n in fit.notes)
    assert fit.slices[2].rmse_bp < 0.5


def test_a_near_zero_price_does_not_take_over_the_fit(svi_chain: OptionChain) -> None:
    bid, ask = svi_chain.bid.copy(), svi_chain.ask.copy()
    row = int(np.nonzero(fit_chain(svi_chain, rate=R).ivs.used)[0][0])
    bid[row], ask[row] = 1e-9, 2e-9  # deep OTM put quoted at (almost) nothing
    with np.errstate(all="raise"):
        fit = fit_chain(svi_chain.with_quotes(bid, ask), rate=R, config=SurfaceConfig(max_spread_fraction=5.0))
    assert fit.ivs.reason[row] in ("outlier", "")
    assert fit.ok
    assert np.median([s.rmse_bp for s in fit.slices]) < 1.0


def test_single_expiry_is_fitted_and_queries_scale_in_time() -> None:
    chain = build_chain(spot=SPOT, expiries=expiry_dates([45]),
                        strikes=log_strikes(-2.0, 2.0, 30, spot=SPOT, vol=0.3, r=R, q=Q),
                        price=svi_price_fn(equity_like_params, spot=SPOT, r=R, q=Q))
    fit = fit_chain(chain, rate=R)
    assert len(fit.fitted_slices()) == 1
    assert any("single fitted expiry" in n for n in fit.notes)
    T0 = fit.slices[0].T
    v0 = fit.surface.implied_vol_k(0.05, T0)
    assert fit.surface.implied_vol_k(0.05, 2 * T0) == pytest.approx(v0)
    assert fit.surface.implied_vol_k(0.05, 0.5 * T0) == pytest.approx(v0)


def test_nan_spot_and_expired_expiries_do_not_raise(svi_chain: OptionChain) -> None:
    from dataclasses import replace

    broken = replace(svi_chain, spot=float("nan"))
    fit = fit_chain(broken, rate=R)
    assert any("not usable" in r for r in fit.reasons)
    later = fit_chain(svi_chain, rate=R, now=NOW.replace(year=NOW.year + 2))
    assert not later.ok
    assert set(later.ivs.reason) == {"expired"}


def test_iv_exercise_setting_overrides_the_chain_style() -> None:
    # a source that labels options American but prices them European (like a simple simulator)
    vol = 0.25
    chain = build_chain(spot=SPOT, expiries=expiry_dates([60]), style=ExerciseStyle.AMERICAN,
                        strikes=log_strikes(-2.0, 2.0, 25, spot=SPOT, vol=vol, r=R, q=Q),
                        price=flat_price_fn(vol, spot=SPOT, r=R, q=Q, american=False),
                        half_spread=lambda p: np.maximum(0.002, 0.005 * p))
    as_european = fit_chain(chain, rate=R, dividend_yield=Q, config=SurfaceConfig(iv_exercise="european"))
    assert not as_european.ivs.american
    assert np.nanmax(np.abs(as_european.ivs.iv_mid[as_european.ivs.used] - vol)) < 1e-3
    as_american = fit_chain(chain, rate=R, dividend_yield=Q)
    assert as_american.ivs.american
    puts = as_american.ivs.used & ~chain.is_call
    # inverting European put prices as American attributes part of the price to early exercise
    assert np.all(as_american.ivs.iv_mid[puts] < vol - 1e-4)


def test_known_svi_parameters_are_recovered_from_noisy_quotes(svi_chain: OptionChain) -> None:
    rng = np.random.default_rng(42)
    mid = 0.5 * (svi_chain.bid + svi_chain.ask)
    half = 0.5 * (svi_chain.ask - svi_chain.bid)
    noisy_mid = mid * (1.0 + rng.normal(0.0, 0.003, len(mid)))  # 0.3 % price noise, inside typical spreads
    fit = fit_chain(svi_chain.with_quotes(np.maximum(noisy_mid - half, 0.0), noisy_mid + half), rate=R)
    for s in fit.slices[1:]:  # the 9-day slice's wings are too thin in vega to pin every parameter
        true = np.array(equity_like_params(s.T))
        p = s.params.as_array()
        assert p[2] == pytest.approx(true[2], abs=0.1)  # rho
        assert p[1] == pytest.approx(true[1], rel=0.15)  # b
        k = np.linspace(-0.1, 0.1, 11)
        iv_true = np.sqrt(svi_total_variance(k, *true) / s.T)
        iv_fit = np.sqrt(s.params.total_variance(k) / s.T)
        assert np.max(np.abs(iv_fit - iv_true)) < 0.003  # within 30 bp of vol near the money


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbage_quotes_never_raise(svi_chain: OptionChain, data) -> None:
    n = len(svi_chain)
    junk = st.one_of(st.just(np.nan), st.just(np.inf), st.just(-1.0), st.just(0.0),
                     st.floats(min_value=0.0, max_value=500.0, allow_nan=False))
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=n, unique=True))
    bid, ask = svi_chain.bid.copy(), svi_chain.ask.copy()
    for i in idx:
        bid[i] = data.draw(junk)
        ask[i] = data.draw(junk)
    spot = data.draw(st.one_of(st.just(100.0), st.just(np.nan), st.just(0.0), st.floats(1.0, 1000.0)))
    chain = svi_chain.with_quotes(bid, ask, spot=spot)
    fit = fit_chain(chain, rate=R)
    assert len(fit.ivs.reason) == n
    assert np.all((fit.ivs.reason == "") == fit.ivs.used)
    for s in fit.slices:
        assert s.status in ("fitted", "skipped")
        assert (s.params is None) == (s.status == "skipped")
    if fit.ok:
        assert np.isfinite(fit.surface.params).all()


def test_batched_forwards_equal_the_one_expiry_estimate() -> None:
    from engine.surface.forward import estimate_forward, estimate_forwards

    rng = np.random.default_rng(5)
    E, M = 10, 30
    K = np.full((E, M), np.nan)
    C, P, SC, SP = (np.full((E, M), np.nan) for _ in range(4))
    T = np.linspace(0.01, 2.0, E)
    for i in range(E):
        m = [30, 25, 12, 2, 5, 30, 20, 3, 30, 14][i]  # some rows too short for the regression: the scalar path
        k = np.sort(rng.uniform(80, 120, m))
        D, F = np.exp(-0.04 * T[i]), 100.0 * np.exp(0.02 * T[i])
        put = np.maximum(k - F, 0) * D + 2.0 + rng.uniform(0, 1, m)
        call = put + D * (F - k) + rng.normal(0, 0.01, m)
        if i == 5:
            call[3] += 4.0  # one absurd pair
        if i == 8:
            call = put + 0.5 * (F - k)  # a slope no plausible rate explains: fixed discount
        if i == 9:
            call = put + 0.2 * (k - F) + rng.normal(0, 0.01, m)  # C − P rising in K: no discount factor at all
        K[i, :m], C[i, :m], P[i, :m] = k, call, put
        SC[i, :m] = SP[i, :m] = 0.05
    kw = dict(spot=100.0, max_pairs=12, min_pairs=2, max_rate_deviation=0.03)
    batch = estimate_forwards(K, C, P, SC, SP, T=T, rate=np.full(E, 0.04), dividend_yield=np.full(E, 0.0), **kw)
    assert {f.method for f in batch} >= {PARITY_REGRESSION, PARITY_FIXED_DISCOUNT}
    assert "too far from curve rate" in batch[8].note and "non-positive discount" in batch[9].note
    for i, f in enumerate(batch):
        one = estimate_forward(K[i], C[i], P[i], SC[i], SP[i], T=float(T[i]), rate=0.04, dividend_yield=0.0, **kw)
        assert (f.method, f.pairs, f.note) == (one.method, one.pairs, one.note)
        for a, b in ((f.forward, one.forward), (f.discount, one.discount), (f.rate, one.rate),
                     (f.implied_yield, one.implied_yield), (f.residual, one.residual)):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12) or (np.isnan(a) and np.isnan(b))


def test_row_medians_are_numpys_nanmedian_bit_for_bit() -> None:
    """The forwards' and the smile weights' medians (engine.surface.forward.row_medians) replace
    np.nanmedian: odd and even counts, rows with one and with no valid entry, ties, negative values."""
    from engine.surface.forward import row_medians

    rng = np.random.default_rng(11)
    for cols in (1, 2, 7, 12, 208):
        x = rng.standard_normal((40, cols)) * rng.uniform(1e-6, 1e3, (40, 1))
        x[::5] = np.round(x[::5], 1)  # ties
        valid = rng.uniform(size=x.shape) < 0.7
        valid[0] = False
        valid[1] = False
        valid[1, -1] = True
        valid[2] = True
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmedian warns of the all-NaN row
            expected = np.nanmedian(np.where(valid, x, np.nan), axis=1)
        got = row_medians(x, valid)
        assert np.array_equal(got, expected, equal_nan=True), cols
        assert np.isnan(got[0]) and got[1] == x[1, -1]
    assert np.isnan(row_medians(np.empty((3, 0)), np.empty((3, 0), dtype=bool))).all()  # no columns at all
