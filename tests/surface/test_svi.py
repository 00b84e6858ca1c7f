"""Raw SVI: parameter recovery of the quasi-explicit fit, Lee bound, and Durrleman's g against a numerical density."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pricing import bsm
from engine.surface.svi import (
    LEE_BOUND,
    SVIParams,
    durrleman_g,
    fit_svi,
    fit_svi_batch,
    svi_derivatives,
    svi_total_variance,
)

# (a, b, rho, m, sigma) covering short/long maturities, steep and mild skew, an upward smile
KNOWN = np.array([
    [0.0005, 0.05, -0.70, 0.010, 0.030],
    [0.0100, 0.10, -0.40, 0.050, 0.150],
    [0.0400, 0.20, -0.20, 0.000, 0.300],
    [0.0200, 0.15, 0.30, -0.050, 0.100],
    [-0.0100, 0.12, -0.80, 0.100, 0.250],
])


def _k_for(p: np.ndarray, n: int = 60) -> np.ndarray:
    w_atm = svi_total_variance(0.0, *p)
    sd = float(np.sqrt(w_atm))
    return np.linspace(-3.0 * sd, 2.5 * sd, n)


def test_fit_recovers_known_parameters_from_noise_free_total_variance() -> None:
    k = np.vstack([_k_for(p) for p in KNOWN])
    w = np.vstack([svi_total_variance(k[i], *KNOWN[i]) for i in range(len(KNOWN))])
    res = fit_svi_batch(k, w)
    np.testing.assert_allclose(res.params, KNOWN, atol=1e-6)
    assert np.all(res.wrmse < 1e-9)


def test_fit_recovers_parameters_from_noisy_vols_within_the_noise() -> None:
    rng = np.random.default_rng(7)
    T = 0.5
    for p in KNOWN[1:4]:
        k = _k_for(p, 80)
        iv = np.sqrt(svi_total_variance(k, *p) / T)
        noisy = iv + rng.normal(0.0, 0.0010, size=k.shape)  # 10 bp of vol noise
        params, _ = fit_svi(k, noisy**2 * T)
        fitted_iv = np.sqrt(params.total_variance(k) / T)
        rmse_vs_truth = float(np.sqrt(np.mean((fitted_iv - iv) ** 2)))
        assert rmse_vs_truth < 0.0006  # the fit averages the noise out (well under 10 bp)
        assert params.rho == pytest.approx(p[2], abs=0.08)
        assert params.b == pytest.approx(p[1], rel=0.15)


def test_fit_ignores_padding_with_zero_weight_and_handles_ragged_batches() -> None:
    p = KNOWN[1]
    k = _k_for(p, 40)
    w = svi_total_variance(k, *p)
    k_pad = np.concatenate([k, np.full(20, 5.0)])
    w_pad = np.concatenate([w, np.full(20, 9.0)])  # garbage that must not matter
    om = np.concatenate([np.ones(40), np.zeros(20)])
    res = fit_svi_batch(k_pad[None], w_pad[None], om[None])
    np.testing.assert_allclose(res.params[0], p, atol=1e-6)


def test_a_slice_without_weights_gets_nan_parameters() -> None:
    k = np.linspace(-0.2, 0.2, 10)
    res = fit_svi_batch(np.vstack([k, k]), np.vstack([0.01 + k**2, 0.02 + k**2]),
                        np.vstack([np.ones(10), np.zeros(10)]))
    assert np.isfinite(res.params[0]).all()
    assert np.isnan(res.params[1]).all()


def test_fit_respects_lee_bound_even_when_data_wings_are_too_steep() -> None:
    k = np.linspace(-1.0, 1.0, 41)
    w = 0.02 + 3.0 * np.abs(k)  # wing slope 3 > 2: not attainable by an arbitrage-free smile
    params, _ = fit_svi(k, w)
    assert params.lee_slope <= LEE_BOUND + 1e-9
    assert params.min_variance >= -1e-12


def test_durrleman_g_is_the_density_found_by_differentiating_call_prices_twice() -> None:
    # Vogt's arbitrageable slice has a region of negative density; g must agree in sign and value.
    p = SVIParams(-0.0410, 0.1331, 0.3060, 0.3586, 0.4153)
    T, F = 1.0, 100.0
    k = np.linspace(-1.0, 1.2, 221)
    h = 1e-3
    K = F * np.exp(k)
    vol = lambda kk: np.sqrt(p.total_variance(kk) / T)  # noqa: E731

    def call(KK: np.ndarray) -> np.ndarray:
        return bsm.price("c", F, KK, T, 0.0, 0.0, vol(np.log(KK / F)))

    dK = K * h
    density_fd = (call(K + dK) - 2 * call(K) + call(K - dK)) / dK**2
    w, _, _ = svi_derivatives(k, *p.as_array())
    d2 = -k / np.sqrt(w) - np.sqrt(w) / 2
    density_g = durrleman_g(k, *p.as_array()) / (K * np.sqrt(2 * np.pi * w)) * np.exp(-0.5 * d2 * d2)
    np.testing.assert_allclose(density_fd, density_g, atol=2e-6)
    assert density_g.min() < 0  # the example really is arbitrageable


def test_g_is_minus_infinity_where_total_variance_is_not_positive() -> None:
    g = durrleman_g(np.array([0.0]), -0.5, 0.1, 0.0, 0.0, 0.1)
    assert g[0] == -np.inf


def test_mismatched_shapes_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="share one shape"):
        fit_svi_batch(np.zeros((2, 5)), np.zeros((2, 4)))
