"""Per-contract implied vol and Greeks of a chain block, vectorized (what the chain table shows).

IV source, in order: an explicit ``iv`` array (e.g. :func:`american_implied_vols`, which accounts for early
exercise; NaN entries fall back to BSM), the vendor's IV column, else the BSM implied vol of the quote mid
(:func:`engine.pricing.bsm.implied_vol`; a European approximation for American contracts). Greeks are
BSM Greeks at that vol (units: delta per $1, gamma per $1, vega per vol point, theta per calendar day).
Rows without a usable quote or vol get NaN — shown blank, never as zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from engine.model import OptionChain
from engine.pricing import bsm


@dataclass(frozen=True, eq=False)
class ChainMetrics:
    rows: np.ndarray  # chain row indices these values belong to
    iv: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    years: np.ndarray  # ACT/365 time to expiry


def chain_metrics(
    chain: OptionChain,
    rows: np.ndarray | None = None,
    *,
    now: datetime | None = None,
    r: float = 0.0,
    q: float = 0.0,
    iv: np.ndarray | None = None,
    bid: np.ndarray | None = None,
    ask: np.ndarray | None = None,
) -> ChainMetrics:
    """IV and Greeks for ``rows`` of ``chain`` (all rows by default) at ``now`` (default: chain time).

    ``bid``/``ask`` override the chain's quote columns (full-length arrays, e.g. after streamed quote
    updates); ``iv`` (one value per selected row) overrides the IV source.
    """
    idx = np.arange(len(chain)) if rows is None else np.asarray(rows, dtype=int)
    b = (chain.bid if bid is None else np.asarray(bid, float))[idx]
    a = (chain.ask if ask is None else np.asarray(ask, float))[idx]
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(b) & np.isfinite(a) & (b >= 0) & (a >= b) & (a > 0)
    mid = np.where(usable, 0.5 * (b + a), np.nan)
    years = chain.time_to_expiry(now)[idx]
    strike = chain.strike[idx]
    is_call = chain.is_call[idx]
    if iv is not None:
        vol = np.array(iv, dtype=float)
        if vol.shape != idx.shape:
            raise ValueError(f"iv has {vol.shape[0] if vol.ndim else 0} values for {len(idx)} rows")
        gap = ~np.isfinite(vol)  # rows the caller has no vol for: implied from the mid (BSM)
        if gap.any():
            vol[gap] = bsm.implied_vol(mid[gap], is_call[gap], chain.spot, strike[gap], years[gap], r, q)
    elif "vendor_iv" in chain.vendor:
        vol = chain.vendor["vendor_iv"][idx].astype(float)
    else:
        vol = bsm.implied_vol(mid, is_call, chain.spot, strike, years, r, q)
    g = bsm.greeks(is_call, chain.spot, strike, years, r, q, vol, outputs=("delta", "gamma", "theta", "vega"))
    return ChainMetrics(idx, np.asarray(vol, float), g.delta, g.gamma, g.theta, g.vega, years)


def model_fair_values(
    chain: OptionChain,
    rows: np.ndarray,
    surface: object,
    *,
    now: datetime | None = None,
    r: float = 0.0,
    q: float = 0.0,
) -> np.ndarray:
    """Ensemble fair value per share (:func:`engine.pricing.ensemble.fair_value`) of ``rows`` at the
    fitted surface's vol for each strike and expiry (``surface``: an ``engine.surface`` ``VolSurface``).

    American contracts get the early-exercise premium (exercise from ``chain.style``). NaN where the
    surface has no vol (outside its fitted expiries) — the edge is then unknown, not zero.
    """
    from engine.model import ExerciseStyle
    from engine.pricing import ensemble

    idx = np.asarray(rows, dtype=int)
    if len(idx) == 0:
        return np.array([])
    years = chain.time_to_expiry(now)[idx]
    strike = chain.strike[idx]
    with np.errstate(all="ignore"):
        vol = np.asarray(surface.implied_vol(strike, years), dtype=float)  # type: ignore[attr-defined]
    vol = np.where(np.isfinite(vol) & (vol > 0) & (years > 0), vol, np.nan)
    exercise = "american" if chain.style is ExerciseStyle.AMERICAN else "european"
    out = np.full(len(idx), np.nan)
    ok = np.isfinite(vol)
    if ok.any():
        res = ensemble.fair_value(chain.is_call[idx][ok], chain.spot, strike[ok], years[ok], r, q, vol[ok],
                                  exercise=exercise)
        out[ok] = res.fair
    return out


def american_implied_vols(
    chain: OptionChain,
    rows: np.ndarray,
    *,
    now: datetime | None = None,
    r: float = 0.0,
    q: float = 0.0,
    bid: np.ndarray | None = None,
    ask: np.ndarray | None = None,
) -> np.ndarray:
    """Implied vols of the quote mids of ``rows`` from American prices
    (:func:`engine.pricing.american.implied_vol`, fast scheme, ~60 µs per contract): early exercise
    accounted for. NaN where no vol exists (no quote, below intrinsic, expired)."""
    from engine.pricing import american

    idx = np.asarray(rows, dtype=int)
    if len(idx) == 0:
        return np.array([])
    b = (chain.bid if bid is None else np.asarray(bid, float))[idx]
    a = (chain.ask if ask is None else np.asarray(ask, float))[idx]
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(b) & np.isfinite(a) & (b >= 0) & (a >= b) & (a > 0)
    mid = np.where(usable, 0.5 * (b + a), np.nan)
    years = chain.time_to_expiry(now)[idx]
    with np.errstate(all="ignore"):
        vol = american.implied_vol(mid, chain.is_call[idx], chain.spot, chain.strike[idx], years, r, q,
                                   scheme="fast")
    return np.asarray(vol, dtype=float)
