"""Market regime detection: the VIX-rule classifier and a statistical (Gaussian mixture) detector.

Rule-based (docs/trading-rules.md), on VIX level, VIX rank (252-day, 0..1) and HV/IV (20-day realized vol
÷ VIX/100):
- ``low_vol``: VIX < 15 and rank < 0.30
- ``high_vol``: VIX > 25 or rank > 0.80
- ``iv_expansion``: HV/IV > 0.9 and rank > 0.50
- ``iv_contraction``: HV/IV < 0.6 and rank < 0.50
- ``neutral``: otherwise.
Rules are checked in that order (high_vol wins over the IV rules). The statistical detector fits a 3-component
Gaussian mixture to (daily return, realized vol) and names components by their mean vol: ``calm`` /
``volatile`` / ``crisis``. :func:`sizing_regime` maps either label to the risk profile's size-multiplier keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from engine.bus.messages import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class RegimeChanged(Event):
    """The market regime used for sizing changed (``source``: rules | gmm | user)."""

    severity: ClassVar[str] = "info"
    regime: str
    previous: str = ""
    source: str = "rules"

    def describe(self) -> str:
        return f"Regime {self.previous or '—'} → {self.regime} ({self.source})"


RULE_REGIMES = ("low_vol", "high_vol", "iv_expansion", "iv_contraction", "neutral")
GMM_REGIMES = ("calm", "volatile", "crisis")


@dataclass(frozen=True, slots=True)
class RegimeThresholds:
    low_vix: float = 15.0
    low_rank: float = 0.30
    high_vix: float = 25.0
    high_rank: float = 0.80
    expansion_hv_iv: float = 0.9
    expansion_rank: float = 0.50
    contraction_hv_iv: float = 0.6
    contraction_rank: float = 0.50


def classify_vix(vix: float, vix_rank: float, hv_iv: float, t: RegimeThresholds | None = None) -> str:
    """Rule-based regime of one observation. NaN inputs give ``neutral`` (no trade) rather than a guess."""
    t = t or RegimeThresholds()
    if any(not math.isfinite(x) for x in (vix, vix_rank, hv_iv)):
        return "neutral"
    if vix < t.low_vix and vix_rank < t.low_rank:
        return "low_vol"
    if vix > t.high_vix or vix_rank > t.high_rank:
        return "high_vol"
    if hv_iv > t.expansion_hv_iv and vix_rank > t.expansion_rank:
        return "iv_expansion"
    if hv_iv < t.contraction_hv_iv and vix_rank < t.contraction_rank:
        return "iv_contraction"
    return "neutral"


def vix_rank(series: np.ndarray, window: int = 252) -> np.ndarray:
    """Rank of each value within its trailing window: (x − min) / (max − min); NaN until the window fills."""
    x = np.asarray(series, float)
    out = np.full(len(x), np.nan)
    if len(x) < window:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    w = sliding_window_view(x, window)
    lo, hi = w.min(axis=1), w.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[window - 1:] = np.where(hi > lo, (x[window - 1:] - lo) / (hi - lo), 0.5)
    return out


def realized_vol(closes: np.ndarray, window: int = 20) -> np.ndarray:
    """Annualised close-to-close realized vol over a trailing window (NaN until it fills)."""
    c = np.asarray(closes, float)
    r = np.diff(np.log(c))
    out = np.full(len(c), np.nan)
    if len(r) < window:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    out[window:] = sliding_window_view(r, window).std(axis=1, ddof=1) * math.sqrt(252.0)
    return out


def classify_series(vix: np.ndarray, closes: np.ndarray, t: RegimeThresholds | None = None) -> list[str]:
    """Rule-based regime for every day of aligned VIX and underlying close series."""
    v = np.asarray(vix, float)
    rank = vix_rank(v)
    hv = realized_vol(closes)
    with np.errstate(invalid="ignore", divide="ignore"):
        hv_iv = hv / (v / 100.0)
    return [classify_vix(a, b, c, t) for a, b, c in zip(v, rank, hv_iv, strict=True)]


class GaussianMixtureRegime:
    """3-state Gaussian mixture on (daily log return, 20-day realized vol). Deterministic under ``seed``."""

    def __init__(self, n_components: int = 3, seed: int = 7, window: int = 20, n_init: int = 3) -> None:
        self.n_components = n_components
        self.n_init = n_init
        self.seed = seed
        self.window = window
        self.model: Any = None
        self.labels: dict[int, str] = {}

    def features(self, closes: np.ndarray) -> np.ndarray:
        c = np.asarray(closes, float)
        r = np.diff(np.log(c))
        rv = realized_vol(c, self.window)[1:]
        x = np.column_stack([r, rv])
        return x[np.all(np.isfinite(x), axis=1)]

    def fit(self, closes: np.ndarray) -> GaussianMixtureRegime:
        from engine.analytics.gmm import GaussianMixture

        x = self.features(closes)
        if len(x) < 10 * self.n_components:
            raise ValueError(f"need at least {10 * self.n_components} usable days to fit, got {len(x)}")
        self.model = GaussianMixture(self.n_components, seed=self.seed, n_init=self.n_init).fit(x)
        order = np.argsort(self.model.means_[:, 1])  # by mean realized vol
        names = GMM_REGIMES if self.n_components == 3 else tuple(f"state{i}" for i in range(self.n_components))
        self.labels = {int(k): names[i] for i, k in enumerate(order)}
        return self

    def predict(self, closes: np.ndarray) -> list[str]:
        if self.model is None:
            raise ValueError("fit the detector before predicting")
        x = self.features(closes)
        return [self.labels[int(k)] for k in self.model.predict(x)]

    def current(self, closes: np.ndarray) -> str:
        return self.predict(closes)[-1]


def sizing_regime(regime: str | None) -> str:
    """Map a regime label to the risk profile's size-multiplier key: low_vol / normal / high_vol."""
    if regime in ("low_vol", "calm"):
        return "low_vol"
    if regime in ("high_vol", "crisis"):
        return "high_vol"
    return "normal"
