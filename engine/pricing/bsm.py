"""Black-Scholes-Merton for European options on a spot with continuous dividend yield, vectorized.

Conventions: ``S`` spot, ``K`` strike, ``T`` years (ACT/365), ``r`` continuously compounded rate, ``q`` continuous
dividend yield, ``sigma`` annualised volatility (0.2 = 20 %). ``right`` is 'c'/'p' (or arrays of them) or a
boolean call mask. All inputs broadcast; scalars give 0-d arrays.

Greeks units: delta per 1 unit of S, gamma per 1 unit of S, vega per 1 vol point (σ + 0.01), theta per calendar
day (value change as one day passes, usually negative), rho per 1 rate point (r + 0.01), vanna = Δdelta per
1 vol point, volga = Δvega (per vol point) per 1 vol point, charm = Δdelta per calendar day.

Invalid inputs (NaN/inf, S, K, T or sigma <= 0) give NaN; pass ``return_reason=True`` for the
:class:`~engine.pricing.inputs.Reason` codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from engine.pricing import lets_be_rational as lbr
from engine.pricing.inputs import FloatArray, Reason, broadcast_with_right, first_reason, market_reasons

_NAMES = ("S", "K", "T", "r", "q", "sigma")
_INV_SQRT_2PI = 0.3989422804014326779399460599343818684758586311649
DAYS_PER_YEAR = 365.0


@dataclass(frozen=True, eq=False)
class Greeks:
    """Price and Greeks as arrays of one shape (units in the module docstring)."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray
    vanna: FloatArray
    volga: FloatArray
    charm: FloatArray


def _reasons(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
             sigma: np.ndarray) -> np.ndarray:
    base = market_reasons(S, K, T, r, q)
    with np.errstate(invalid="ignore"):
        vol_ok = np.isfinite(sigma) & (sigma > 0)
    if np.all(vol_ok):
        return base
    reason = np.where((base == 0) & ~np.isfinite(sigma), np.int8(Reason.NAN_INPUT), base)
    return np.where((reason == 0) & ~(sigma > 0), np.int8(Reason.NONPOSITIVE_VOL), reason).astype(np.int8)


def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """European option value, accurate to full relative precision even for prices far below 1e-12.

    Computed as ``DF·√(F·K)·b(x, σ√T, θ)`` with Jäckel's region-split normalised Black function, so deep
    out-of-the-money values keep their relative accuracy (the plain formula loses it to cancellation).
    """
    is_call, (S_, K_, T_, r_, q_, sig) = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma)
    reason = _reasons(S_, K_, T_, r_, q_, sig)
    out = np.full(reason.shape, np.nan)
    ok = reason == 0
    if ok.any():
        s, k, t, rr, qq, v, c = S_[ok], K_[ok], T_[ok], r_[ok], q_[ok], sig[ok], is_call[ok]
        with np.errstate(all="ignore"):
            fwd = s * np.exp((rr - qq) * t)
            x = np.log(fwd / k)
            theta = np.where(c, 1.0, -1.0)
            b = lbr.normalised_black(x, v * np.sqrt(t), theta)
            out[ok] = np.exp(-rr * t) * np.sqrt(fwd) * np.sqrt(k) * b
    return (out, reason) if return_reason else out


def greeks(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> Greeks | tuple[Greeks, np.ndarray]:
    """Price and first/second-order Greeks in one vectorized pass (closed forms; units in module docstring).

    ``price`` here is the closed form ``S·e^{-qT}·N(d1) − K·e^{-rT}·N(d2)`` (absolute accuracy ~1e-15·S);
    use :func:`price` when tiny out-of-the-money values need full relative accuracy.
    """
    is_call, (S_, K_, T_, r_, q_, sig) = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma)
    reason = _reasons(S_, K_, T_, r_, q_, sig)
    bad = reason != 0
    if bad.any():
        S_, K_, T_, sig = (np.where(bad, np.nan, a) for a in (S_, K_, T_, sig))
    with np.errstate(all="ignore"):
        # fused: few temporaries and in-place updates (this is the hot path of chain and portfolio Greeks)
        sqrt_t = np.sqrt(T_)
        vol_t = sig * sqrt_t
        d1 = np.log(S_ / K_)
        d1 += (r_ - q_ + 0.5 * sig * sig) * T_
        d1 /= vol_t
        d2 = d1 - vol_t
        dq = np.exp(-q_ * T_)
        dr = np.exp(-r_ * T_)
        sign = np.where(is_call, 1.0, -1.0)
        n1 = ndtr(sign * d1)  # N(d1) for calls, N(-d1) for puts
        n2 = ndtr(sign * d2)
        dq_pdf = np.exp(-0.5 * d1 * d1)
        dq_pdf *= dq * _INV_SQRT_2PI
        dq_n1 = dq * n1
        k_dr_n2 = K_ * dr
        k_dr_n2 *= n2
        s_dq_n1 = S_ * dq_n1
        value = s_dq_n1 - k_dr_n2
        value *= sign
        delta = sign * dq_n1
        gamma = dq_pdf / (S_ * vol_t)
        s_dq_pdf = S_ * dq_pdf
        vega = s_dq_pdf * sqrt_t  # per unit vol until scaled below
        theta = (sign * (q_ * s_dq_n1 - r_ * k_dr_n2) - s_dq_pdf * sig / (2 * sqrt_t)) * (1 / DAYS_PER_YEAR)
        rho = sign * k_dr_n2 * (T_ * 0.01)
        vanna = dq_pdf * d2 / sig
        vanna *= -0.01
        volga = vega * d1 * d2 / sig
        volga *= 1e-4
        charm = (sign * q_ * dq_n1 - dq_pdf * (2 * (r_ - q_) * T_ - d2 * vol_t) / (2 * T_ * vol_t)) * (
            1 / DAYS_PER_YEAR)
        vega *= 0.01
    g = Greeks(*(np.asarray(a) for a in (value, delta, gamma, vega, theta, rho, vanna, volga, charm)))
    return (g, reason) if return_reason else g


def bounds(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """No-arbitrage bounds of a European value: (max(θ(S·e^{-qT} − K·e^{-rT}), 0), S·e^{-qT} or K·e^{-rT})."""
    is_call, (S_, K_, T_, r_, q_) = broadcast_with_right(right, _NAMES[:5], S, K, T, r, q)
    with np.errstate(all="ignore"):
        s_dq = S_ * np.exp(-q_ * T_)
        k_dr = K_ * np.exp(-r_ * T_)
    lower = np.maximum(np.where(is_call, s_dq - k_dr, k_dr - s_dq), 0.0)
    upper = np.where(is_call, s_dq, k_dr)
    return lower, upper


def implied_vol_forward(
    price: np.ndarray, is_call: np.ndarray, F: np.ndarray, K: np.ndarray, T: np.ndarray, df: np.ndarray
) -> tuple[FloatArray, np.ndarray]:
    """Implied Black vol from discounted prices on forwards (already broadcast, same shape); returns (vol, reason).

    Shared by :func:`implied_vol` and :mod:`engine.pricing.black76`. Inputs must be float arrays.
    """
    finite = np.isfinite(price) & np.isfinite(F) & np.isfinite(K) & np.isfinite(T) & np.isfinite(df)
    with np.errstate(invalid="ignore"):
        valid = finite & (F > 0) & (K > 0) & (T > 0) & (df > 0) & (price >= lbr.DBL_MIN)
    vol = np.full(price.shape, np.nan)
    if np.all(valid):  # common case: no per-check arrays, no gathers
        reason = np.zeros(price.shape, dtype=np.int8)
        ok: np.ndarray | slice = slice(None)
        p, f, k, t, d, c = (np.ravel(a) for a in (price, F, K, T, df, is_call))
        vol = vol.reshape(-1)
        reason = reason.reshape(-1)
    else:
        reason = first_reason(
            price.shape,
            [
                (~finite, Reason.NAN_INPUT),
                (~(F > 0), Reason.NONPOSITIVE_SPOT),
                (~(K > 0), Reason.NONPOSITIVE_STRIKE),
                (~(T > 0), Reason.NONPOSITIVE_TIME),
                (~(df > 0), Reason.NAN_INPUT),
                (~(price > 0), Reason.NONPOSITIVE_PRICE),
                (price < lbr.DBL_MIN, Reason.PRICE_UNDERFLOW),
            ],
        )
        ok = reason == 0
        if not ok.any():
            return vol, reason
        p, f, k, t, d, c = price[ok], F[ok], K[ok], T[ok], df[ok], is_call[ok]
    with np.errstate(all="ignore"):
        sqrt_fk = np.sqrt(f) * np.sqrt(k)
        beta = (p / d) / sqrt_fk
        x = np.log(f / k)
        theta = np.where(c, 1.0, -1.0)
        intrinsic = lbr.normalised_intrinsic(x, theta)
        b_max = np.exp(0.5 * theta * x)
        undiscounted = p / d
        upper = np.where(c, f, k)
        lower = np.maximum(np.where(c, f - k, k - f), 0.0)
        time_value = beta - intrinsic
    sub = np.zeros(p.shape, dtype=np.int8)
    sub = np.where(undiscounted < lower, np.int8(Reason.BELOW_INTRINSIC), sub)
    sub = np.where((sub == 0) & ((beta >= b_max) | (undiscounted >= upper)), np.int8(Reason.ABOVE_MAXIMUM), sub)
    # A time value within rounding of the price carries no information about the vol.
    no_time_value = (time_value <= 0) | ((lower > 0) & (undiscounted - lower <= 4 * lbr.DBL_EPSILON * undiscounted))
    sub = np.where((sub == 0) & no_time_value, np.int8(Reason.AT_INTRINSIC), sub)
    sub = np.where((sub == 0) & (time_value < lbr.DBL_MIN), np.int8(Reason.PRICE_UNDERFLOW), sub)
    good = sub == 0
    s_out = np.full(p.shape, np.nan)
    if good.any():
        x_otm = -np.abs(x[good])
        s_out[good] = lbr.implied_normalised_vol_otm(time_value[good], x_otm)
    with np.errstate(all="ignore"):
        v = s_out / np.sqrt(t)
    bad_result = good & ~(np.isfinite(v) & (v > 0))
    sub = np.where(bad_result, np.int8(Reason.NO_CONVERGENCE), sub)
    v = np.where(sub == 0, v, np.nan)
    vol[ok] = v
    reason[ok] = sub
    return vol.reshape(price.shape), reason.reshape(price.shape)


def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """Implied BSM volatility of European prices at machine accuracy (Jäckel's "Let's Be Rational").

    NaN where no vol exists, with reason codes (:class:`~engine.pricing.inputs.Reason`): non-finite input,
    S/K/T <= 0, price <= 0, price below the lower bound ``max(θ(S·e^{-qT} − K·e^{-rT}), 0)``, price equal to it
    (no time value), or at/above the upper bound (``S·e^{-qT}`` call, ``K·e^{-rT}`` put).
    """
    is_call, (p, S_, K_, T_, r_, q_) = broadcast_with_right(right, ("price", *_NAMES[:5]), price, S, K, T, r, q)
    with np.errstate(all="ignore"):
        fwd = S_ * np.exp((r_ - q_) * T_)
        df = np.exp(-r_ * T_)
    base = market_reasons(S_, K_, T_, r_, q_)
    vol, reason = implied_vol_forward(p, is_call, fwd, K_, T_, df)
    reason = np.where(base != 0, base, reason).astype(np.int8)
    vol = np.where(reason == 0, vol, np.nan)
    return (vol, reason) if return_reason else vol
