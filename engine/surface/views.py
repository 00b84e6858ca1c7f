"""Drawable views of a fitted surface for the GUI: plain frozen dataclasses of numpy arrays.

- :func:`smile_view` — one expiry: the fitted curve plus bid/mid/ask IV points (used and dropped).
- :func:`surface_grid` — a (T × k) implied-vol grid for a heatmap or 3-D view.
- :func:`delta_grid` — a (T × delta) grid: vol by forward delta per expiry time.
The term structure (ATM IV, RR/BF, skew, expected moves) is ``SurfaceFit.term``; IV rank is
:class:`engine.surface.ivrank.IVRank`. Vols are fractions (0.2 = 20 %), T in years, k = ln(K/F).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
from scipy.special import ndtr

from engine.surface.fit import SurfaceFit
from engine.surface.surface import VolSurface
from engine.surface.svi import SVIParams, svi_total_variance


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


class _ReadOnly:
    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            v = getattr(self, name)
            if isinstance(v, np.ndarray):
                object.__setattr__(self, name, _ro(v))


@dataclass(frozen=True, eq=False)
class SmileView(_ReadOnly):
    """One expiry's smile.

    Curve: ``curve_strike``/``curve_k``/``curve_iv`` (empty when the expiry was not fitted).
    Points: every out-of-the-money row with a quote (``strike``, ``k``, ``iv_bid``/``iv_mid``/``iv_ask``,
    ``is_call``), ``used`` marks points in the fit and ``reason`` says why the others were dropped.
    """

    underlying: str
    expiry: np.datetime64
    T: float
    dte: float
    forward: float
    forward_method: str
    status: str
    reason: str
    params: SVIParams | None
    rmse_bp: float
    atm_iv: float
    rr25: float
    bf25: float
    curve_k: np.ndarray
    curve_strike: np.ndarray
    curve_iv: np.ndarray
    strike: np.ndarray
    k: np.ndarray
    iv_bid: np.ndarray
    iv_mid: np.ndarray
    iv_ask: np.ndarray
    is_call: np.ndarray
    used: np.ndarray
    reason_per_point: np.ndarray


@dataclass(frozen=True, eq=False)
class SurfaceGrid(_ReadOnly):
    """Implied vol on a (len(T) × len(k)) grid; ``moneyness = K/F = e^k``; ``slice_T`` marks fitted expiries."""

    underlying: str
    T: np.ndarray
    dte: np.ndarray
    k: np.ndarray
    moneyness: np.ndarray
    iv: np.ndarray
    slice_T: np.ndarray


@dataclass(frozen=True, eq=False)
class DeltaGrid(_ReadOnly):
    """Implied vol by forward delta: ``call_delta`` in (0, 1) (a put delta −d is call delta 1 − d).

    ``iv`` and ``k`` are (len(T), len(call_delta)); ``strike = F(T)·e^k``.
    """

    underlying: str
    T: np.ndarray
    call_delta: np.ndarray
    k: np.ndarray
    strike: np.ndarray
    iv: np.ndarray


def _expiry_index(fit: SurfaceFit, expiry: int | np.datetime64 | datetime | date) -> int:
    exps = fit.ivs.expiries
    if isinstance(expiry, int | np.integer):
        if not 0 <= int(expiry) < len(exps):
            raise IndexError(f"expiry index {expiry} outside 0..{len(exps) - 1}")
        return int(expiry)
    if isinstance(expiry, datetime):
        hits = np.nonzero(exps.astype("datetime64[D]") == np.datetime64(expiry.date(), "D"))[0]
    elif isinstance(expiry, date):
        hits = np.nonzero(exps.astype("datetime64[D]") == np.datetime64(expiry, "D"))[0]
    else:
        hits = np.nonzero(exps == expiry.astype("datetime64[s]"))[0]
    if len(hits) == 0:
        raise KeyError(f"expiry {expiry} is not in the chain")
    return int(hits[0])


def smile_view(fit: SurfaceFit, expiry: int | np.datetime64 | datetime | date, *, n: int = 200,
               margin: float = 0.15) -> SmileView:
    """The smile of one expiry (by index into ``fit.ivs.expiries`` or by date/instant).

    The curve spans the quoted strikes widened by ``margin`` of their log-moneyness range.
    """
    i = _expiry_index(fit, expiry)
    ivs = fit.ivs
    sl = fit.slices[i]
    rows = (ivs.expiry_index == i) & ivs.otm & np.isfinite(ivs.k)
    rows &= ~np.isin(ivs.reason, ["missing_quote", "expired", "expiry_too_close"])
    idx = np.nonzero(rows)[0]
    k_pts = ivs.k[idx]
    F = sl.forward.forward
    if sl.params is not None and len(k_pts):
        lo, hi = float(np.min(k_pts)), float(np.max(k_pts))
        pad = margin * max(hi - lo, 0.02)
        ck = np.linspace(lo - pad, hi + pad, n)
        civ = np.sqrt(np.maximum(svi_total_variance(ck, *sl.params.as_array()), 0.0) / sl.T)
    else:
        ck = np.array([])
        civ = np.array([])
    return SmileView(
        underlying=fit.underlying, expiry=ivs.expiries[i], T=sl.T, dte=sl.T * 365.0, forward=F,
        forward_method=sl.forward.method, status=sl.status, reason=sl.reason, params=sl.params,
        rmse_bp=sl.rmse_bp, atm_iv=float(fit.term.atm_iv[i]), rr25=float(fit.term.rr25[i]),
        bf25=float(fit.term.bf25[i]), curve_k=ck, curve_strike=F * np.exp(ck), curve_iv=civ,
        strike=fit.strikes[idx] if len(fit.strikes) else F * np.exp(k_pts), k=k_pts,
        iv_bid=ivs.iv_bid[idx], iv_mid=ivs.iv_mid[idx], iv_ask=ivs.iv_ask[idx], is_call=fit.is_call[idx],
        used=ivs.used[idx], reason_per_point=ivs.reason[idx].astype(str),
    )


def default_axes(surface: VolSurface, n_T: int = 50, n_k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A T axis from the first to the last fitted expiry and a k axis of ±3 ATM standard deviations
    at the longest expiry (at least ±0.25)."""
    if surface.empty:
        return np.array([]), np.array([])
    t0, t1 = float(surface.T[0]), float(surface.T[-1])
    T = np.linspace(t0, t1, n_T) if t1 > t0 else np.full(n_T, t0)
    w_atm = float(surface.total_variance(0.0, t1))
    half = max(0.25, 3.0 * np.sqrt(max(w_atm, 0.0)))
    return T, np.linspace(-half, half, n_k)


def surface_grid(source: SurfaceFit | VolSurface, *, T: np.ndarray | None = None, k: np.ndarray | None = None,
                 n_T: int = 50, n_k: int = 100) -> SurfaceGrid:
    """Implied-vol grid over (T × k); axes default to :func:`default_axes`."""
    surface = source.surface if isinstance(source, SurfaceFit) else source
    dT, dk = default_axes(surface, n_T, n_k)
    T = dT if T is None else np.asarray(T, dtype=float)
    k = dk if k is None else np.asarray(k, dtype=float)
    iv = surface.grid(T, k) if len(T) and len(k) else np.zeros((len(T), len(k)))
    return SurfaceGrid(surface.underlying, T, T * 365.0, k, np.exp(k), iv, surface.T)


def delta_grid(source: SurfaceFit | VolSurface, *, T: np.ndarray | None = None,
               call_delta: np.ndarray | None = None, n_T: int = 50, n_grid: int = 801) -> DeltaGrid:
    """Implied vol by forward call delta (default 0.05…0.95) over expiry times (default as the k grid)."""
    surface = source.surface if isinstance(source, SurfaceFit) else source
    T = default_axes(surface, n_T, 2)[0] if T is None else np.asarray(T, dtype=float)
    cd = np.linspace(0.05, 0.95, 19) if call_delta is None else np.asarray(call_delta, dtype=float)
    nT, nD = len(T), len(cd)
    k_out = np.full((nT, nD), np.nan)
    if surface.empty or nT == 0:
        return DeltaGrid(surface.underlying, T, cd, k_out, k_out.copy(), k_out.copy())
    w_atm = surface.total_variance(np.zeros(nT), T)
    half = 8.0 * np.sqrt(np.maximum(w_atm, 1e-10))[:, None]
    kg = np.linspace(-1.0, 1.0, n_grid)[None, :] * half
    w = surface.total_variance(kg, T[:, None])
    sw = np.sqrt(np.maximum(w, 1e-300))
    dc = ndtr(-kg / sw + 0.5 * sw)  # decreasing in k where the slice is arbitrage-free
    rows = np.arange(nT)
    for j, target in enumerate(cd):
        below = dc < target
        idx = np.argmax(below, axis=1)
        has = below.any(axis=1) & (idx > 0)
        i1 = np.where(has, idx, 1)
        d0, d1 = dc[rows, i1 - 1], dc[rows, i1]
        k0, k1 = kg[rows, i1 - 1], kg[rows, i1]
        with np.errstate(invalid="ignore", divide="ignore"):
            k_out[:, j] = np.where(has, k0 + (target - d0) * (k1 - k0) / (d1 - d0), np.nan)
    iv = surface.implied_vol_k(k_out, T[:, None])
    strike = surface.forward(T)[:, None] * np.exp(k_out)
    return DeltaGrid(surface.underlying, T, cd, k_out, strike, iv)
