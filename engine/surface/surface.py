"""The fitted volatility surface: SVI slices in total variance, interpolated across expiries.

Conventions
-----------
- ``T`` years ACT/365 from the snapshot time; ``k = ln(K/F(T))``; ``w(k, T) = σ(k, T)²·T``.
- Between slices: linear in total variance at constant ``k`` (keeps calendar no-arbitrage when the
  slices are calendar-free).
- Before the first slice: flat-forward, i.e. the first slice's implied vol at the same ``k``
  (``w = w₁(k)·T/T₁``). After the last slice: the forward variance of the last interval continues
  (``w = w_n + (T − T_n)(w_n − w_{n−1})/(T_n − T_{n−1})``; one slice: constant vol).
- Forward curve: ``ln F`` linear in ``T`` between slices; before the first slice from the spot at the
  first slice's carry; after the last, at the last interval's carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from engine.surface.svi import SVIParams, svi_total_variance


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class VolSurface:
    """Arbitrage-checked SVI slices of one underlying at one instant (immutable; arrays read-only)."""

    underlying: str
    ts: datetime
    spot: float
    expiries: np.ndarray  # datetime64[s], ascending
    T: np.ndarray  # (S,) years
    forwards: np.ndarray  # (S,)
    rates: np.ndarray  # (S,) continuously compounded discount rates
    params: np.ndarray  # (S, 5) raw SVI a, b, rho, m, sigma

    def __post_init__(self) -> None:
        for name in ("expiries", "T", "forwards", "rates", "params"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.params.shape != (len(self.T), 5):
            raise ValueError(f"params must be ({len(self.T)}, 5), got {self.params.shape}")
        if len(self.T) > 1 and np.any(np.diff(self.T) <= 0):
            raise ValueError("slice times must be strictly increasing")

    @property
    def empty(self) -> bool:
        return len(self.T) == 0

    def slice_params(self, i: int) -> SVIParams:
        return SVIParams.from_array(self.params[i])

    # ---- forwards -----------------------------------------------------------------------------------
    def forward(self, T: np.ndarray | float) -> np.ndarray:
        """Forward price at ``T`` (years), per the interpolation convention in the module docstring."""
        T = np.asarray(T, dtype=float)
        if self.empty:
            return np.full(T.shape, np.nan)
        lnf = np.log(self.forwards)
        ls = np.log(self.spot)
        if len(self.T) == 1:
            carry = (lnf[0] - ls) / self.T[0]
            return np.exp(ls + carry * T)
        tt = np.concatenate([[0.0], self.T])
        ll = np.concatenate([[ls], lnf])
        out = np.interp(T, tt, ll)
        last_carry = (ll[-1] - ll[-2]) / (tt[-1] - tt[-2])
        out = np.where(T > tt[-1], ll[-1] + last_carry * (T - tt[-1]), out)
        return np.exp(out)

    # ---- total variance and vols ---------------------------------------------------------------------
    def total_variance(self, k: np.ndarray | float, T: np.ndarray | float) -> np.ndarray:
        """w(k, T); ``k`` and ``T`` broadcast. NaN for T ≤ 0 or an empty surface."""
        kk, TT = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(T, dtype=float))
        shape = kk.shape
        kk = kk.ravel()
        TT = TT.ravel()
        n = len(self.T)
        if n == 0:
            return np.full(shape, np.nan)
        P = self.params
        hi = np.clip(np.searchsorted(self.T, TT, side="left"), 0, n - 1)
        lo = np.clip(hi - 1, 0, n - 1)
        w_hi = svi_total_variance(kk, P[hi, 0], P[hi, 1], P[hi, 2], P[hi, 3], P[hi, 4])
        if n == 1:
            out = w_hi * TT / self.T[0]
        else:
            before = TT <= self.T[0]
            after = TT > self.T[-1]
            # after the last slice, extrapolate from the last interval (lo = n-2, hi = n-1)
            lo = np.where(after, n - 2, lo)
            w_lo = svi_total_variance(kk, P[lo, 0], P[lo, 1], P[lo, 2], P[lo, 3], P[lo, 4])
            t_lo, t_hi = self.T[lo], self.T[hi]
            same = t_hi == t_lo  # before the first slice lo == hi; that branch is replaced below
            frac = (TT - t_lo) / np.where(same, 1.0, t_hi - t_lo)
            out = w_lo + np.where(same, 0.0, frac) * (w_hi - w_lo)
            out = np.where(before, w_hi * TT / self.T[0], out)
        out = np.where(TT > 0, out, np.nan)
        return out.reshape(shape)

    def implied_vol_k(self, k: np.ndarray | float, T: np.ndarray | float) -> np.ndarray:
        """σ(k, T) = sqrt(w/T) at log forward-moneyness ``k``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(self.total_variance(k, T), 0.0) / np.asarray(T, dtype=float))

    def implied_vol(self, K: np.ndarray | float, T: np.ndarray | float) -> np.ndarray:
        """σ(K, T) at absolute strike ``K`` (k = ln(K/F(T)))."""
        KK, TT = np.broadcast_arrays(np.asarray(K, dtype=float), np.asarray(T, dtype=float))
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.log(KK / self.forward(TT))
        return self.implied_vol_k(k, TT)

    def grid(self, T: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Implied vols on the (len(T), len(k)) grid of expiry times × log-moneyness."""
        T = np.asarray(T, dtype=float)
        k = np.asarray(k, dtype=float)
        return self.implied_vol_k(k[None, :], T[:, None])

    def strike_grid(self, T: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Implied vols on the (len(T), len(K)) grid of expiry times × absolute strikes."""
        return self.implied_vol(np.asarray(K, dtype=float)[None, :], np.asarray(T, dtype=float)[:, None])
