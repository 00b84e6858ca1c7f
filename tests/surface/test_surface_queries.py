"""VolSurface interpolation conventions, grids, analytics (ATM, RR/BF, skew, expected move) and GUI views."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.special import ndtr

from engine.surface.analytics import delta_strikes
from engine.surface.fit import fit_chain
from engine.surface.surface import VolSurface
from engine.surface.svi import svi_total_variance
from engine.surface.views import delta_grid, smile_view, surface_grid
from tests.surface.synthetic import (
    build_chain,
    equity_like_params,
    expiry_dates,
    flat_price_fn,
    log_strikes,
    svi_price_fn,
)

TS = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
P1 = np.array(equity_like_params(0.25))
P2 = np.array(equity_like_params(1.0))


def _surface(params=(P1, P2), T=(0.25, 1.0), forwards=(101.0, 104.0)) -> VolSurface:
    return VolSurface("SPY", TS, 100.0, np.array(["2026-06-01", "2027-03-02"], dtype="datetime64[s]")[: len(T)],
                      np.array(T), np.array(forwards), np.full(len(T), 0.04), np.vstack(params))


def test_at_a_slice_time_the_surface_is_that_slice() -> None:
    s = _surface()
    k = np.linspace(-0.5, 0.5, 11)
    np.testing.assert_allclose(s.total_variance(k, 0.25), svi_total_variance(k, *P1))
    np.testing.assert_allclose(s.total_variance(k, 1.0), svi_total_variance(k, *P2))


def test_between_slices_total_variance_is_linear_in_time_at_constant_k() -> None:
    s = _surface()
    k = np.linspace(-0.5, 0.5, 11)
    w1, w2 = svi_total_variance(k, *P1), svi_total_variance(k, *P2)
    T = 0.25 + 0.3 * 0.75
    np.testing.assert_allclose(s.total_variance(k, T), w1 + 0.3 * (w2 - w1))


def test_before_the_first_slice_vol_is_flat_and_after_the_last_forward_variance_continues() -> None:
    s = _surface()
    k = np.array([-0.2, 0.0, 0.2])
    np.testing.assert_allclose(s.implied_vol_k(k, 0.05), s.implied_vol_k(k, 0.25))
    w1, w2 = svi_total_variance(k, *P1), svi_total_variance(k, *P2)
    np.testing.assert_allclose(s.total_variance(k, 1.5), w2 + 0.5 * (w2 - w1) / 0.75)
    assert np.all(np.isnan(s.total_variance(k, 0.0)))


def test_forward_interpolates_log_linearly_and_strike_queries_use_it() -> None:
    s = _surface()
    F = s.forward(np.array([0.0, 0.25, 0.625, 1.0]))
    assert F[0] == pytest.approx(100.0)
    assert F[2] == pytest.approx(np.exp(0.5 * (np.log(101.0) + np.log(104.0))))
    assert s.implied_vol(104.0, 1.0) == pytest.approx(float(np.sqrt(svi_total_variance(0.0, *P2))))


def test_grid_matches_pointwise_queries_and_has_the_requested_shape() -> None:
    s = _surface()
    T = np.linspace(0.1, 1.2, 50)
    k = np.linspace(-0.6, 0.4, 100)
    g = s.grid(T, k)
    assert g.shape == (50, 100)
    assert g[17, 42] == pytest.approx(float(s.implied_vol_k(k[42], T[17])))
    # calendar-free slices stay calendar-free under the interpolation
    w = g**2 * T[:, None]
    assert np.all(np.diff(w, axis=0) >= -1e-12)


def test_surface_arrays_are_read_only() -> None:
    s = _surface()
    with pytest.raises(ValueError):
        s.params[0, 0] = 1.0


def test_flat_vol_chain_has_zero_rr_bf_skew_and_textbook_expected_moves() -> None:
    S0, r, q, vol = 100.0, 0.03, 0.0, 0.25
    chain = build_chain(spot=S0, expiries=expiry_dates([30, 91]),
                        strikes=log_strikes(-2.0, 2.0, 41, spot=S0, vol=vol, r=r, q=q),
                        price=flat_price_fn(vol, spot=S0, r=r, q=q),
                        half_spread=lambda p: np.maximum(1e-4, 0.001 * p))
    fit = fit_chain(chain, rate=r)
    term = fit.term
    np.testing.assert_allclose(term.atm_iv, vol, atol=2e-5)
    np.testing.assert_allclose(term.rr25, 0.0, atol=1e-4)
    np.testing.assert_allclose(term.bf25, 0.0, atol=1e-4)
    np.testing.assert_allclose(term.skew_slope, 0.0, atol=1e-3)
    np.testing.assert_allclose(term.em_iv, term.forward * vol * np.sqrt(term.T), rtol=1e-4)
    # ATM-forward straddle / DF = F·(2N(σ√T/2) − 1)·2 ≈ 0.8·F·σ√T
    sd = vol * np.sqrt(term.T)
    np.testing.assert_allclose(term.em_straddle, term.forward * 2 * (2 * ndtr(sd / 2) - 1), rtol=2e-3)


def test_put_skew_gives_negative_risk_reversal_and_slope() -> None:
    S0, r, q = 100.0, 0.03, 0.01
    chain = build_chain(spot=S0, expiries=expiry_dates([30, 91]),
                        strikes=log_strikes(-2.5, 2.0, 41, spot=S0, vol=0.3, r=r, q=q),
                        price=svi_price_fn(equity_like_params, spot=S0, r=r, q=q))
    fit = fit_chain(chain, rate=r)
    assert np.all(fit.term.rr25 < -0.01)
    assert np.all(fit.term.skew_slope < 0)
    assert np.all(fit.term.bf25 > 0)


def test_25_delta_strikes_have_25_delta_on_the_fitted_smile() -> None:
    p = np.vstack([P1, P2])
    kd = delta_strikes(p, np.array([0.25, 0.75]))
    for i in range(2):
        for j, target in enumerate((0.25, 0.75)):
            w = svi_total_variance(kd[i, j], *p[i])
            d1 = -kd[i, j] / np.sqrt(w) + 0.5 * np.sqrt(w)
            assert ndtr(d1) == pytest.approx(target, abs=1e-4)


def test_views_for_the_gui_have_consistent_shapes_and_reasons() -> None:
    S0, r, q = 100.0, 0.03, 0.01
    chain = build_chain(spot=S0, expiries=expiry_dates([7, 30, 91]),
                        strikes=log_strikes(-2.5, 2.0, 30, spot=S0, vol=0.3, r=r, q=q),
                        price=svi_price_fn(equity_like_params, spot=S0, r=r, q=q))
    fit = fit_chain(chain, rate=r)
    sm = smile_view(fit, 1, n=150)
    assert sm.curve_iv.shape == (150,) and sm.curve_strike.shape == (150,)
    assert len(sm.strike) == len(sm.iv_bid) == len(sm.iv_ask) == len(sm.used) == len(sm.reason_per_point)
    assert np.all(sm.iv_bid[sm.used] <= sm.iv_mid[sm.used]) and np.all(sm.iv_mid[sm.used] <= sm.iv_ask[sm.used])
    assert sm.status == "fitted" and sm.rmse_bp < 1
    assert sm.curve_strike[0] < sm.strike.min() and sm.curve_strike[-1] > sm.strike.max()
    by_date = smile_view(fit, chain.expiry_dates()[1])
    assert by_date.expiry == sm.expiry
    with pytest.raises(KeyError):
        smile_view(fit, datetime(2030, 1, 1, tzinfo=UTC).date())

    grid = surface_grid(fit, n_T=50, n_k=100)
    assert grid.iv.shape == (50, 100) and np.isfinite(grid.iv).all()
    assert grid.T[0] == pytest.approx(fit.surface.T[0]) and grid.T[-1] == pytest.approx(fit.surface.T[-1])

    dg = delta_grid(fit, n_T=10)
    assert dg.iv.shape == (10, 19)
    # puts (low call delta... high strikes are low call delta): strike decreases with call delta
    assert np.all(np.diff(dg.strike, axis=1) < 0)


def test_views_of_an_unfitted_expiry_and_an_empty_surface_are_drawable() -> None:
    from engine.model.chain import OptionChain

    empty = fit_chain(OptionChain.build("SPY", 100.0, TS, []), rate=0.03)
    grid = surface_grid(empty)
    assert grid.iv.shape == (0, 0)
    assert delta_grid(empty).iv.shape[1] == 19


def test_smile_of_a_skipped_expiry_has_no_curve_but_keeps_its_points_and_reason() -> None:
    S0, r, q = 100.0, 0.03, 0.01
    chain = build_chain(spot=S0, expiries=expiry_dates([7, 30]),
                        strikes=log_strikes(-2.5, 2.0, 30, spot=S0, vol=0.3, r=r, q=q),
                        price=svi_price_fn(equity_like_params, spot=S0, r=r, q=q))
    first = np.nonzero(chain.expiry == chain.expiries()[0])[0]
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[first[6:]] = 0.0  # zero bids leave three strikes' worth of quotes on the first expiry
    fit = fit_chain(chain.with_quotes(bid, ask), rate=r)
    sm = smile_view(fit, 0)
    assert sm.status == "skipped" and "insufficient valid strikes" in sm.reason
    assert sm.curve_iv.size == 0 and sm.params is None and np.isnan(sm.atm_iv)
    assert set(sm.reason_per_point) <= {"zero_bid", "insufficient_strikes"}
    assert smile_view(fit, 1).status == "fitted"
