"""Fair value from several models, their dispersion, and the edge of a market price against them.

Members (each optional except BSM):

- ``bsm``: Black-Scholes-Merton at the option's surface vol (the desk's own smile, e.g. from the SVI fit);
- ``merton``: Merton jump diffusion with given jump parameters (σ = the surface vol unless given);
- ``heston``: Heston with calibrated parameters;
- ``neural``: the torch Heston surrogate (:mod:`engine.pricing.neural`), when one is loaded; it answers NaN
  outside its training domain and then simply drops out of the ensemble for that option.

For American exercise (equity and ETF options) every European member gets the early-exercise premium of BSM at
the surface vol added (``american − european``, ALO), and the BSM member is the American price itself.

``fair`` is the weighted mean of the members that returned a number, ``dispersion`` their (population) standard
deviation, ``low``/``high`` their range. ``edge`` compares a market price with ``fair``: positive means the market
is cheap (a buyer's edge). Dollars are per share and per contract (× multiplier); vol points are
``IV(fair) − IV(market)`` × 100.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from engine.pricing import american, bsm, heston, merton
from engine.pricing.heston import HestonParams
from engine.pricing.inputs import FloatArray, broadcast_with_right


@dataclass(frozen=True)
class MertonParams:
    """Jump intensity per year, mean and stdev of the log jump; ``sigma`` None = use the surface vol."""

    lam: float
    mu_j: float
    sigma_j: float
    sigma: float | None = None


@dataclass(frozen=True, eq=False)
class EnsembleResult:
    """Per-model values and their combination, arrays of the input shape."""

    models: dict[str, FloatArray]
    fair: FloatArray
    dispersion: FloatArray
    low: FloatArray
    high: FloatArray
    n_models: np.ndarray
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Edge:
    """Edge of buying at the market price against the fair value (negative: the market is rich)."""

    per_share: FloatArray
    per_contract: FloatArray
    vol_points: FloatArray
    in_dispersion_units: FloatArray  # per_share / dispersion: how many model-disagreements wide the edge is


def fair_value(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, surface_vol: ArrayLike,
    *, merton_params: MertonParams | None = None, heston_params: HestonParams | None = None,
    neural_pricer: Any = None, exercise: str = "european", weights: dict[str, float] | None = None,
) -> EnsembleResult:
    """Price every option under each available model and combine (see the module docstring)."""
    if exercise not in ("european", "american"):
        raise ValueError(f"exercise must be 'european' or 'american', got {exercise!r}")
    is_call, (S_, K_, T_, r_, q_, vol) = broadcast_with_right(right, ("S", "K", "T", "r", "q", "surface_vol"),
                                                                S, K, T, r, q, surface_vol)
    models: dict[str, np.ndarray] = {}
    euro_bsm = bsm.price(is_call, S_, K_, T_, r_, q_, vol)
    premium = np.zeros(is_call.shape)
    if exercise == "american":
        am = american.price(is_call, S_, K_, T_, r_, q_, vol)
        premium = np.where(np.isfinite(am), am - euro_bsm, 0.0)
        models["bsm"] = am
    else:
        models["bsm"] = euro_bsm
    if merton_params is not None:
        m_sigma = vol if merton_params.sigma is None else merton_params.sigma
        models["merton"] = merton.price(is_call, S_, K_, T_, r_, q_, m_sigma, merton_params.lam,
                                        merton_params.mu_j, merton_params.sigma_j) + premium
    if heston_params is not None:
        models["heston"] = heston.price(is_call, S_, K_, T_, r_, q_, *heston_params.as_array()) + premium
        if neural_pricer is not None:
            nn, _ = neural_pricer.price(is_call, S_, K_, T_, r_, q_, heston_params)
            models["neural"] = nn + premium
    w = {name: (weights or {}).get(name, 1.0) for name in models}
    stack = np.stack([np.asarray(models[name], dtype=float) for name in models])
    finite = np.isfinite(stack)
    wvec = np.array([w[name] for name in models]).reshape((-1,) + (1,) * (stack.ndim - 1))
    wts = np.where(finite, wvec, 0.0)
    vals = np.where(finite, stack, 0.0)
    total = wts.sum(axis=0)
    with np.errstate(all="ignore"):
        fair = np.where(total > 0, (wts * vals).sum(axis=0) / total, np.nan)
        var = np.where(total > 0, (wts * (vals - fair) ** 2).sum(axis=0) / total, np.nan)
    low = np.where(finite.any(axis=0), np.min(np.where(finite, stack, np.inf), axis=0), np.nan)
    high = np.where(finite.any(axis=0), np.max(np.where(finite, stack, -np.inf), axis=0), np.nan)
    return EnsembleResult(models=models, fair=fair, dispersion=np.sqrt(var), low=low, high=high,
                          n_models=finite.sum(axis=0), weights=w)


def edge(
    result: EnsembleResult, market_price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike,
    r: ArrayLike, q: ArrayLike, *, multiplier: float = 100.0, exercise: str = "european",
) -> Edge:
    """Edge of buying at ``market_price`` against ``result.fair``: dollars and vol points (+ = market cheap)."""
    is_call, (p, S_, K_, T_, r_, q_) = broadcast_with_right(right, ("market_price", "S", "K", "T", "r", "q"),
                                                              market_price, S, K, T, r, q)
    per_share = result.fair - p
    inverse = american.implied_vol if exercise == "american" else bsm.implied_vol
    iv_fair = inverse(result.fair, is_call, S_, K_, T_, r_, q_)
    iv_mkt = inverse(p, is_call, S_, K_, T_, r_, q_)
    with np.errstate(all="ignore"):
        in_disp = np.where(result.dispersion > 0, per_share / result.dispersion, np.nan)
    return Edge(per_share=per_share, per_contract=per_share * multiplier, vol_points=(iv_fair - iv_mkt) * 100.0,
                in_dispersion_units=in_disp)
