"""Per-contract implied vol and Greeks of a chain block, vectorized (what the chain table shows).

IV source, in order: an explicit ``iv`` array (e.g. :func:`american_implied_vols`, which accounts for early
exercise; NaN entries fall back to BSM), the vendor's IV column, else the BSM implied vol of the quote mid
(:func:`engine.pricing.bsm.implied_vol`; a European approximation for American contracts). Greeks are
BSM Greeks at that vol (units: delta per $1, gamma per $1, vega per vol point, theta per calendar day).
Rows without a usable quote or vol get NaN — shown blank, never as zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from engine.model import OptionChain
from engine.pricing import bsm

if TYPE_CHECKING:
    from engine.surface.surface import VolSurface


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
    surface: VolSurface,
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
        vol = np.asarray(surface.implied_vol(strike, years), dtype=float)
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


#: Merton's jump prior (intensity per year, mean and stdev of the log jump): an equity-index-like crash risk;
#: its diffusion vol is lowered so the total variance matches the block's ATM surface vol, so Merton differs
#: from BSM by the *shape* jumps give the smile, not by more variance
MERTON_JUMPS = (0.3, -0.06, 0.08)
#: Heston's calibration budget per block (function evaluations): bounded, since it reruns with the quotes
HESTON_MAX_NFEV = 60


def ensemble_fair_values(
    chain: OptionChain,
    rows: np.ndarray,
    surface: VolSurface,
    *,
    now: datetime | None = None,
    r: float = 0.0,
    q: float = 0.0,
    weights: dict[str, float] | None = None,
) -> np.ndarray:
    """The pricing ensemble (:func:`engine.pricing.ensemble.fair_value`) over ``rows``: columns ``fair``
    (weighted mean per share), ``band`` (the members' dispersion: how much the models disagree), then each
    member's value (:data:`ENSEMBLE_MEMBERS` order; NaN for a member that could not price).

    Members: BSM at the fitted surface's vol; Merton with :data:`MERTON_JUMPS` at the block's ATM total
    variance; Heston calibrated on the block's own mids (bounded: :data:`HESTON_MAX_NFEV`). A member that
    cannot be had (too few quotes to calibrate) drops out and the band narrows to the ones left. The neural
    Heston surrogate joins beside Heston (same calibrated parameters) when a trained one is saved
    (``optiondesk train-neural``; :func:`neural_pricer`). American contracts get the early-exercise premium.

    ``weights``: per-member weights (the ensemble tracker's, :class:`engine.ml.ensemble_tracker.EnsembleTracker`,
    for the current regime); both the fair value and the band (a weighted dispersion) use them, so a member
    that keeps missing the later mids moves the fair value less and widens the band less. None: equal weights.
    CPU work for a worker process (chain table: ``Engine.run_cpu``).
    """
    from engine.model import ExerciseStyle
    from engine.pricing import ensemble, heston

    idx = np.asarray(rows, dtype=int)
    out = np.full((len(idx), 2 + len(ENSEMBLE_MEMBERS)), np.nan)
    if len(idx) == 0:
        return out
    years = chain.time_to_expiry(now)[idx]
    strike = chain.strike[idx]
    is_call = chain.is_call[idx]
    with np.errstate(all="ignore"):
        vol = np.asarray(surface.implied_vol(strike, years), dtype=float)
    vol = np.where(np.isfinite(vol) & (vol > 0) & (years > 0), vol, np.nan)
    ok = np.isfinite(vol)
    if not ok.any():
        return out
    exercise = "american" if chain.style is ExerciseStyle.AMERICAN else "european"
    spot = float(chain.spot)
    atm = float(vol[ok][np.argmin(np.abs(np.log(strike[ok] / spot)))])
    lam, mu_j, sig_j = MERTON_JUMPS
    diffusion = float(np.sqrt(max(atm * atm - lam * (mu_j * mu_j + sig_j * sig_j), (0.3 * atm) ** 2)))
    merton_params = ensemble.MertonParams(lam, mu_j, sig_j, sigma=diffusion)
    heston_params = None
    bid, ask = chain.bid[idx], chain.ask[idx]
    with np.errstate(all="ignore"):
        quoted = ok & np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    if quoted.sum() >= 8:
        # Heston on European-equivalent prices: the mids less the BSM early-exercise premium at the surface vol
        mids = 0.5 * (bid[quoted] + ask[quoted])
        if exercise == "american":
            from engine.pricing import american

            v = vol[quoted]
            prem = american.price(is_call[quoted], spot, strike[quoted], years[quoted], r, q, v) - bsm.price(
                is_call[quoted], spot, strike[quoted], years[quoted], r, q, v)
            mids = mids - np.where(np.isfinite(prem), prem, 0.0)
        try:
            cal = heston.calibrate(is_call[quoted], strike[quoted], years[quoted], mids, spot, r, q,
                                   max_nfev=HESTON_MAX_NFEV)
            heston_params = cal.params
        except ValueError:
            heston_params = None
    res = ensemble.fair_value(is_call[ok], spot, strike[ok], years[ok], r, q, vol[ok], merton_params=merton_params,
                              heston_params=heston_params, exercise=exercise, weights=weights,
                              neural_pricer=neural_pricer() if heston_params is not None else None)
    out[ok, 0] = res.fair
    out[ok, 1] = res.dispersion
    for j, name in enumerate(ENSEMBLE_MEMBERS):
        if name in res.models:
            out[ok, 2 + j] = res.models[name]
    return out


ENSEMBLE_MEMBERS = ("bsm", "merton", "heston", "neural")

_NEURAL: dict[str, object] = {}


def neural_pricer() -> object | None:
    """The trained neural surrogate at :func:`engine.pricing.neural.default_path` (None when none is saved,
    torch is missing or the file is of an old format); loaded once per process and file version, so a worker
    pays torch's import only when a surrogate exists."""
    from engine.pricing import neural

    path = neural.default_path()
    try:
        stamp = f"{path}:{path.stat().st_mtime_ns}"
    except OSError:
        return None
    if stamp not in _NEURAL:
        _NEURAL.clear()
        try:
            _NEURAL[stamp] = neural.load(path) if neural.available() else None
        except (ValueError, RuntimeError, OSError, KeyError):
            _NEURAL[stamp] = None
    return _NEURAL[stamp]


def visible_edge(fair: np.ndarray, band: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """Ensemble fair value minus mid where it is worth showing: only where |edge| exceeds the models'
    disagreement band plus half the bid/ask (what crossing to the far side costs); NaN (blank) elsewhere. A
    smaller number is the models' noise or the spread, not an edge."""
    fair, band = np.asarray(fair, float), np.asarray(band, float)
    bid, ask = np.asarray(bid, float), np.asarray(ask, float)
    with np.errstate(invalid="ignore"):
        quoted = np.isfinite(bid) & np.isfinite(ask) & (ask >= bid) & (bid >= 0)
        mid = np.where(quoted, 0.5 * (bid + ask), np.nan)
        e = fair - mid
        threshold = np.where(np.isfinite(band), band, 0.0) + 0.5 * (ask - bid)
        return np.where(quoted & np.isfinite(e) & (np.abs(e) > threshold), e, np.nan)


@dataclass(frozen=True, eq=False)
class ChainColumns:
    """The chain table's optional columns for some rows (per share; NaN where unknown, shown blank).

    ``prob_itm``: the risk-neutral probability of expiring in the money, N(d2) for a call and N(−d2) for a put at
    the row's implied vol (``prob_otm`` is its complement); ``extrinsic``: mid less intrinsic value; ``theo``: the
    BSM value at the fitted surface's vol for the strike (the smooth smile, not the row's own quote), NaN without a
    surface; ``pct_otm``: how far out of the money in % of spot (negative: in the money)."""

    prob_itm: np.ndarray
    prob_otm: np.ndarray
    extrinsic: np.ndarray
    theo: np.ndarray
    pct_otm: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray


def chain_columns(chain: OptionChain, metrics: ChainMetrics, *, r: float = 0.0, q: float = 0.0,
                  bid: np.ndarray | None = None, ask: np.ndarray | None = None,
                  surface: VolSurface | None = None) -> ChainColumns:
    """The optional columns for the rows of ``metrics`` (from :func:`chain_metrics` on the same chain), as arrays
    over the whole block at once: the chain shows hundreds of rows refreshed twice a second."""
    from scipy.special import ndtr

    idx = metrics.rows
    b = (chain.bid if bid is None else np.asarray(bid, float))[idx]
    a = (chain.ask if ask is None else np.asarray(ask, float))[idx]
    strike, is_call, years = chain.strike[idx], chain.is_call[idx], metrics.years
    spot = float(chain.spot)
    with np.errstate(all="ignore"):
        usable = np.isfinite(b) & np.isfinite(a) & (b >= 0) & (a >= b) & (a > 0)
        mid = np.where(usable, 0.5 * (b + a), np.nan)
        vol = metrics.iv
        ok = np.isfinite(vol) & (vol > 0) & (years > 0) & (strike > 0)
        sd = np.where(ok, vol * np.sqrt(np.where(ok, years, 1.0)), np.nan)
        d2 = (np.log(spot / strike) + (r - q - 0.5 * vol * vol) * years) / sd
        p_call = np.where(ok, ndtr(d2), np.nan)
        expired = years <= 0  # at expiry the probability is the fact
        p_call = np.where(expired, (spot > strike).astype(float), p_call)
        prob_itm = np.where(is_call, p_call, 1.0 - p_call)
        intrinsic = np.where(is_call, np.maximum(spot - strike, 0.0), np.maximum(strike - spot, 0.0))
        extrinsic = mid - intrinsic
        pct_otm = np.where(is_call, strike - spot, spot - strike) / spot * 100.0
    theo = np.full(len(idx), np.nan)
    if surface is not None and len(idx):
        with np.errstate(all="ignore"):
            sv = np.asarray(surface.implied_vol(strike, years), dtype=float)
        good = np.isfinite(sv) & (sv > 0) & (years > 0)
        if good.any():
            theo[good] = bsm.price(is_call[good], spot, strike[good], years[good], r, q, sv[good])
    return ChainColumns(prob_itm, 1.0 - prob_itm, extrinsic, theo, pct_otm,
                        chain.bid_size[idx].astype(float), chain.ask_size[idx].astype(float))


def expected_moves(chain: OptionChain, *, bid: np.ndarray | None = None,
                   ask: np.ndarray | None = None) -> dict[np.datetime64, float]:
    """Per expiry, the market's expected move: the at-the-money straddle's mid (the strike nearest spot with both
    a call and a put quoted), what the options price as the ± move to expiry. NaN when that straddle has no
    two-sided quotes. One pass over the chain's arrays; the loop is over expiries only."""
    b = chain.bid if bid is None else np.asarray(bid, float)
    a = chain.ask if ask is None else np.asarray(ask, float)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(b) & np.isfinite(a) & (b >= 0) & (a >= b) & (a > 0)
    mid = np.where(usable, 0.5 * (b + a), np.nan)
    out: dict[np.datetime64, float] = {}
    if len(chain) == 0:
        return out
    spot = float(chain.spot)
    for e in np.unique(chain.expiry):
        rows = np.flatnonzero(chain.expiry == e)
        calls, puts = rows[chain.is_call[rows]], rows[~chain.is_call[rows]]
        both, ci, pi = np.intersect1d(chain.strike[calls], chain.strike[puts], return_indices=True)
        if len(both) == 0:
            out[e] = math.nan
            continue
        k = int(np.argmin(np.abs(both - spot)))
        out[e] = float(mid[calls[ci[k]]] + mid[puts[pi[k]]])
    return out
