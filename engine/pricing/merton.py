"""Merton (1976) jump-diffusion: European prices as a Poisson mixture of Black prices, vectorized.

Dynamics under the pricing measure: ``dS/S = (r − q − λk)dt + σdW + (J − 1)dN``, ``ln J ~ N(μ_j, σ_j²)``,
``k = e^{μ_j + σ_j²/2} − 1``, ``N`` Poisson with intensity ``λ`` per year. Conditional on ``n`` jumps the
terminal spot is log-normal with forward ``F_n = S·e^{(r−q−λk)T + n(μ_j + σ_j²/2)}`` and variance
``σ²T + nσ_j²``, so ``V = e^{-rT} Σ_n P(N_T = n)·Black(F_n, K, σ_n)``.

The series is truncated per option after ``λT + 10√(λT) + 10`` terms (the Poisson tail beyond is far below
1e-12 of the price); with ``λ = 0`` the price is exactly BSM.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

from engine.pricing import bsm
from engine.pricing.fourier import lewis_price
from engine.pricing.inputs import FloatArray, Reason, broadcast_with_right, market_reasons

_NAMES = ("S", "K", "T", "r", "q", "sigma", "lam", "mu_j", "sigma_j")


def n_terms(lam_t: np.ndarray) -> np.ndarray:
    """Series length per option: ⌈λT + 10√(λT) + 10⌉."""
    return np.ceil(lam_t + 10.0 * np.sqrt(lam_t) + 10.0).astype(np.int64)


def _reasons(S, K, T, r, q, sigma, lam, mu_j, sigma_j):
    reason = market_reasons(S, K, T, r, q)
    finite = np.isfinite(sigma) & np.isfinite(lam) & np.isfinite(mu_j) & np.isfinite(sigma_j)
    reason = np.where((reason == 0) & ~finite, np.int8(Reason.NAN_INPUT), reason)
    reason = np.where((reason == 0) & ~(sigma > 0), np.int8(Reason.NONPOSITIVE_VOL), reason)
    bad = ~(lam >= 0) | ~(sigma_j >= 0)
    return np.where((reason == 0) & bad, np.int8(Reason.BAD_PARAMETER), reason).astype(np.int8)


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    lam: ArrayLike, mu_j: ArrayLike, sigma_j: ArrayLike,
    *, return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    lam: ArrayLike, mu_j: ArrayLike, sigma_j: ArrayLike,
    *, return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    lam: ArrayLike, mu_j: ArrayLike, sigma_j: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    lam: ArrayLike, mu_j: ArrayLike, sigma_j: ArrayLike, *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """European value under Merton's jump diffusion (λ jumps per year, log-jump mean μ_j and stdev σ_j)."""
    is_call, arrs = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma, lam, mu_j, sigma_j)
    reason = _reasons(*arrs)
    out = np.full(reason.shape, np.nan)
    ok = reason == 0
    if ok.any():
        c = is_call[ok]
        s, k, t, rr, qq, v, la, mj, sj = (a[ok] for a in arrs)
        lam_t = la * t
        nmax = int(n_terms(lam_t).max())
        n = np.arange(nmax + 1)[None, :]
        with np.errstate(all="ignore"):
            kappa = np.expm1(mj + 0.5 * sj * sj)
            log_w = -lam_t[:, None] + n * np.log(np.where(lam_t > 0, lam_t, 1.0))[:, None] - gammaln(n + 1)
            w = np.where(lam_t[:, None] > 0, np.exp(log_w), (n == 0).astype(float))
            w = np.where(n <= n_terms(lam_t)[:, None], w, 0.0)
            fwd_n = s[:, None] * np.exp((rr - qq - la * kappa)[:, None] * t[:, None]
                                        + n * (mj + 0.5 * sj * sj)[:, None])
            sig_n = np.sqrt(v[:, None] ** 2 + n * (sj * sj)[:, None] / t[:, None])
            # Black on the conditional forward, discounted at r (a BSM with q = r and spot F_n)
            terms = bsm.price(c[:, None], fwd_n, k[:, None], t[:, None], rr[:, None], rr[:, None], sig_n)
        out[ok] = np.sum(np.where(w > 0, w * terms, 0.0), axis=1)
    return (out, reason) if return_reason else out


def log_cf(sigma: float, lam: float, mu_j: float, sigma_j: float) -> Any:
    """log ψ(u, T) of ``ln(S_T/F)`` under Merton's model (for :func:`engine.pricing.fourier.lewis_price`)."""
    kappa = np.expm1(mu_j + 0.5 * sigma_j**2)

    def f(u: np.ndarray, T: float) -> np.ndarray:
        jump = np.exp(1j * u * mu_j - 0.5 * sigma_j**2 * u * u) - 1.0
        return T * (-0.5 * sigma**2 * u * u - 1j * u * (0.5 * sigma**2 + lam * kappa) + lam * jump)

    return f


def price_fourier(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    sigma: float, lam: float, mu_j: float, sigma_j: float,
) -> FloatArray:
    """Same model priced by the Lewis integral (an independent check of the series; scalar model params)."""
    is_call, (S_, K_, T_, r_, q_) = broadcast_with_right(right, _NAMES[:5], S, K, T, r, q)
    flat = lewis_price(is_call.ravel(), S_.ravel(), K_.ravel(), T_.ravel(), r_.ravel(), q_.ravel(),
                       log_cf(sigma, lam, mu_j, sigma_j))
    return flat.reshape(S_.shape)
