"""Chain analytics per expiry from the fitted slices and the quotes.

Conventions
-----------
- ATM means at the forward (k = 0): ``atm_iv = sqrt(w(0)/T)``.
- Deltas are forward (undiscounted) Black deltas on the fitted smile: call ``N(d1)``, put
  ``N(d1) − 1`` with ``d1 = −k/√w + √w/2``. The 25-delta call is where ``N(d1) = 0.25``; the 25-delta
  put where ``N(d1) − 1 = −0.25``.
- Risk reversal ``rr25 = σ(25Δ call) − σ(25Δ put)`` (negative for the usual equity put skew);
  butterfly ``bf25 = (σ(25Δ call) + σ(25Δ put))/2 − σ_ATM``. Vols as fractions (0.01 = 1 vol point).
- ``skew_slope = dσ/dk`` at k = 0 (vol per unit of log-moneyness).
- Expected move (price units, to expiry): ``em_straddle`` is the ATM straddle (interpolated to the
  forward, undiscounted), the market's risk-neutral expected absolute move; ``em_iv = F·σ_ATM·√T``
  is the one-standard-deviation move implied by ATM IV. ``em_straddle ≈ 0.8·em_iv`` when the
  distribution is near lognormal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from engine.model.chain import OptionChain
from engine.surface.quotes import expiry_strike_columns
from engine.surface.svi import svi_derivatives


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class TermStructure:
    """Per-expiry analytics (arrays aligned with ``expiries``; NaN where an expiry was not fitted)."""

    expiries: np.ndarray  # datetime64[s]
    T: np.ndarray
    dte: np.ndarray  # calendar days to expiry (fractional)
    forward: np.ndarray
    atm_iv: np.ndarray
    rr25: np.ndarray
    bf25: np.ndarray
    iv25_call: np.ndarray
    iv25_put: np.ndarray
    skew_slope: np.ndarray
    em_straddle: np.ndarray
    em_iv: np.ndarray
    fitted: np.ndarray  # bool

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _ro(getattr(self, name)))


def delta_strikes(params: np.ndarray, deltas: np.ndarray, n: int = 801) -> np.ndarray:
    """Log-moneyness k where the forward call delta N(d1) equals each target, per slice.

    ``params`` (S, 5), ``deltas`` (D,) call deltas in (0, 1); returns (S, D), NaN where not bracketed.
    A put delta −x is the call delta 1 − x.
    """
    p = np.asarray(params, dtype=float)
    S = len(p)
    deltas = np.asarray(deltas, dtype=float)
    out = np.full((S, len(deltas)), np.nan)
    if S == 0:
        return out
    a, b, rho, m, sig = (p[:, i : i + 1] for i in range(5))
    w0, _, _ = svi_derivatives(0.0, a, b, rho, m, sig)
    half = 8.0 * np.sqrt(np.maximum(w0, 1e-10))
    kg = np.linspace(-1.0, 1.0, n)[None, :] * half
    w, _, _ = svi_derivatives(kg, a, b, rho, m, sig)
    with np.errstate(invalid="ignore", divide="ignore"):
        sw = np.sqrt(np.maximum(w, 1e-300))
        dc = ndtr(-kg / sw + 0.5 * sw)  # decreasing in k on an arbitrage-free slice
    # first grid index where the delta falls below the target, then linear interpolation
    for j, target in enumerate(deltas):
        below = dc < target
        idx = np.argmax(below, axis=1)
        has = below.any(axis=1) & (idx > 0)
        i1 = np.where(has, idx, 1)
        i0 = i1 - 1
        rows = np.arange(S)
        d0, d1 = dc[rows, i0], dc[rows, i1]
        k0, k1 = kg[rows, i0], kg[rows, i1]
        with np.errstate(invalid="ignore", divide="ignore"):
            kk = k0 + (target - d0) * (k1 - k0) / (d1 - d0)
        out[:, j] = np.where(has, kk, np.nan)
    return out


def _straddles_at_forward(chain: OptionChain, expiry_index: np.ndarray, forwards: np.ndarray,
                          discounts: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per expiry, the undiscounted straddle mid (call + put at one strike) interpolated linearly in K to the
    forward; NaN without strikes bracketing it, a forward or time left. All expiries in one pass."""
    n = len(forwards)
    cols = expiry_strike_columns(expiry_index, n, chain.strike.astype(float), chain.is_call,
                                 np.ones(len(chain), dtype=bool), chain.mid, np.zeros(len(chain)))
    ks, st = cols[0], cols[1] + cols[2]
    if ks.shape[1] == 0:
        return np.full(n, np.nan)
    ok = np.isfinite(st)
    F = np.asarray(forwards, dtype=float)[:, None]
    pos = np.arange(ks.shape[1])[None, :]
    with np.errstate(invalid="ignore"):
        lo = np.where(ok & (ks <= F), pos, -1).max(1)
        hi = np.where(ok & (ks >= F), pos, ks.shape[1]).min(1)
    found = (lo >= 0) & (hi < ks.shape[1])
    rows = np.arange(n)
    lo_c, hi_c = np.where(found, lo, 0), np.where(found, hi, 0)
    k0, k1, s0, s1 = ks[rows, lo_c], ks[rows, hi_c], st[rows, lo_c], st[rows, hi_c]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where(k1 > k0, s0 + (F[:, 0] - k0) * (s1 - s0) / (k1 - k0), s0)
        good = found & np.isfinite(F[:, 0]) & (np.asarray(T) > 0) & (np.asarray(discounts) > 0)
        return np.where(good, val / np.asarray(discounts, dtype=float), np.nan)


def term_structure(
    chain: OptionChain,
    expiries: np.ndarray,
    T: np.ndarray,
    forwards: np.ndarray,
    discounts: np.ndarray,
    params: np.ndarray,
    expiry_index: np.ndarray,
) -> TermStructure:
    """Analytics for every chain expiry; ``params`` rows are NaN for expiries that were not fitted."""
    p = np.asarray(params, dtype=float).reshape(-1, 5)
    T = np.asarray(T, dtype=float)
    fitted = np.isfinite(p).all(axis=1)
    n = len(T)
    atm = np.full(n, np.nan)
    slope = np.full(n, np.nan)
    iv_c = np.full(n, np.nan)
    iv_p = np.full(n, np.nan)
    if fitted.any():
        pf = p[fitted]
        Tf = T[fitted]
        a, b, rho, m, sig = (pf[:, i] for i in range(5))
        w0, w1, _ = svi_derivatives(0.0, a, b, rho, m, sig)
        with np.errstate(invalid="ignore", divide="ignore"):
            atm[fitted] = np.sqrt(np.maximum(w0, 0.0) / Tf)
            slope[fitted] = w1 / (2.0 * np.sqrt(np.maximum(w0, 1e-300) * Tf))
        kd = delta_strikes(pf, np.array([0.25, 0.75]))
        wc, _, _ = svi_derivatives(kd[:, 0], a, b, rho, m, sig)
        wp, _, _ = svi_derivatives(kd[:, 1], a, b, rho, m, sig)
        with np.errstate(invalid="ignore", divide="ignore"):
            iv_c[fitted] = np.sqrt(np.maximum(wc, 0.0) / Tf)
            iv_p[fitted] = np.sqrt(np.maximum(wp, 0.0) / Tf)
    em_straddle = _straddles_at_forward(chain, expiry_index, forwards, discounts, T) if n else np.full(0, np.nan)
    with np.errstate(invalid="ignore"):
        em_iv = forwards * atm * np.sqrt(np.maximum(T, 0.0))
    return TermStructure(
        expiries=expiries, T=T, dte=T * 365.0, forward=np.asarray(forwards, float), atm_iv=atm,
        rr25=iv_c - iv_p, bf25=0.5 * (iv_c + iv_p) - atm, iv25_call=iv_c, iv25_put=iv_p, skew_slope=slope,
        em_straddle=em_straddle, em_iv=em_iv, fitted=fitted,
    )
