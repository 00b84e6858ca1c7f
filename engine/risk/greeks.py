"""Portfolio Greeks: per leg/position exposures, rolled up per underlying and in total.

Conventions (docs/architecture.md §7), all in dollars or share-equivalents of *this* holding (quantity × multiplier
applied):
- ``delta``: underlying share-equivalents; ``beta_delta``: SPY share-equivalents,
  ``delta × β × S / S_SPY``;
- ``gamma``: change of ``delta`` per $1 move of the underlying; ``beta_gamma`` the same in SPY terms,
  ``gamma × (β × S / S_SPY)²``;
- ``vega``: dollars per 1 vol point; ``theta``: dollars per calendar day;
- ``delta_dollars``: delta × S (signed); the leverage limit uses Σ over underlyings of |delta_dollars|;
- ``value``: mark-to-market value (mid × units × multiplier).
Options use Black-Scholes-Merton Greeks at the market implied vol (:class:`~engine.risk.market_view.MarketView`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from engine.model import Instrument, Option
from engine.risk.market_view import MarketView, key_of

FIELDS = ("delta", "beta_delta", "gamma", "beta_gamma", "vega", "theta", "delta_dollars", "value")


@dataclass(frozen=True, slots=True)
class Exposure:
    delta: float = 0.0
    beta_delta: float = 0.0
    gamma: float = 0.0
    beta_gamma: float = 0.0
    vega: float = 0.0
    theta: float = 0.0
    delta_dollars: float = 0.0
    value: float = 0.0

    def __add__(self, other: Exposure) -> Exposure:
        return Exposure(*(getattr(self, f) + getattr(other, f) for f in FIELDS))

    def __sub__(self, other: Exposure) -> Exposure:
        return Exposure(*(getattr(self, f) - getattr(other, f) for f in FIELDS))

    def scaled(self, k: float) -> Exposure:
        return Exposure(*(getattr(self, f) * k for f in FIELDS))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LegRisk:
    """Column arrays of per-leg exposures (one row per instrument/units pair) plus the inputs used."""

    underlying: np.ndarray  # object
    spot: np.ndarray
    mark: np.ndarray  # per unit (option price or share price), NaN when unknown
    iv: np.ndarray
    columns: dict[str, np.ndarray]
    missing: tuple[str, ...]  # symbols whose Greeks could not be computed (no quote / no IV / no spot)

    def matrix(self) -> np.ndarray:
        """Columns stacked (len(FIELDS), n) with NaN as 0 (missing legs are listed in ``missing``)."""
        return np.nan_to_num(np.vstack([self.columns[f] for f in FIELDS]), nan=0.0, posinf=0.0, neginf=0.0)

    def total(self) -> Exposure:
        return Exposure(*self.matrix().sum(axis=1).tolist())

    def by_underlying(self) -> dict[str, Exposure]:
        out: dict[str, Exposure] = {}
        mat = self.matrix()
        for u in dict.fromkeys(self.underlying.tolist()):
            m = self.underlying == u
            out[str(u)] = Exposure(*mat[:, m].sum(axis=1).tolist())
        return out


def underlying_of(inst: Instrument) -> str:
    return inst.underlying if isinstance(inst, Option) else inst.symbol


def leg_risk(instruments: Sequence[Instrument], units: Sequence[float] | np.ndarray, market: MarketView,
             now: datetime, beta_of: Callable[[str], float], benchmark: str = "SPY") -> LegRisk:
    """Exposures of holding ``units[i]`` (signed contracts/shares) of ``instruments[i]``, vectorized."""
    n = len(instruments)
    units = np.asarray(units, dtype=float)
    und = np.array([underlying_of(i) for i in instruments], dtype=object)
    spot = np.array([market.spot(u) for u in und], dtype=float) if n else np.zeros(0)
    mult = np.array([i.multiplier for i in instruments], dtype=float)
    is_opt = np.array([isinstance(i, Option) for i in instruments], dtype=bool)
    mark = np.array([market.mid(i) for i in instruments], dtype=float) if n else np.zeros(0)
    delta = np.where(is_opt, np.nan, 1.0)
    gamma = np.zeros(n)
    vega = np.zeros(n)
    theta = np.zeros(n)
    iv = np.full(n, np.nan)
    if is_opt.any():
        idx = np.nonzero(is_opt)[0]
        opts = [inst for inst in (instruments[int(i)] for i in idx) if isinstance(inst, Option)]
        vols, table = market.unit_greeks(opts, spot[idx], now)
        iv[idx] = vols
        delta[idx], gamma[idx], vega[idx], theta[idx] = table[0], table[1], table[2], table[3]
        fill = ~np.isfinite(mark[idx])
        if fill.any():
            sub = mark[idx]
            sub[fill] = table[4][fill]
            mark[idx] = sub
    bench = market.spot(benchmark)
    beta = np.array([beta_of(str(u)) for u in und], dtype=float) if n else np.zeros(0)
    scale = beta * spot / bench if math.isfinite(bench) and bench > 0 else np.full(n, np.nan)
    w = units * mult
    cols = {
        "delta": delta * w,
        "beta_delta": delta * w * scale,
        "gamma": gamma * w,
        "beta_gamma": gamma * w * scale * scale,
        "vega": vega * w,
        "theta": theta * w,
        "delta_dollars": delta * w * spot,
        "value": mark * w,
    }
    bad = ~np.isfinite(cols["delta"]) | ~np.isfinite(cols["beta_delta"])
    missing = tuple(sorted({key_of(instruments[int(i)]) for i in np.nonzero(bad)[0]}))
    return LegRisk(underlying=und, spot=spot, mark=mark, iv=iv, columns=cols, missing=missing)


def estimate_betas(returns: dict[str, np.ndarray], benchmark: str = "SPY", min_obs: int = 20) -> dict[str, float]:
    """OLS beta of each series' returns on the benchmark's (aligned by position, most recent last).

    Series shorter than ``min_obs`` (after alignment) are left out: callers fall back to 1.0 or settings.
    """
    bench = np.asarray(returns.get(benchmark, ()), dtype=float)
    out: dict[str, float] = {}
    if len(bench) < min_obs:
        return out
    for name, r in returns.items():
        r = np.asarray(r, dtype=float)
        n = min(len(r), len(bench))
        if n < min_obs:
            continue
        x, y = bench[-n:], r[-n:]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < min_obs:
            continue
        xv = x[ok] - x[ok].mean()
        var = float(xv @ xv)
        if var <= 0:
            continue
        out[name] = float(xv @ (y[ok] - y[ok].mean()) / var)
    out[benchmark] = 1.0
    return out
