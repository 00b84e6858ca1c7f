"""Expiry payoff of a set of legs on one underlying: max profit, max loss, breakevens, defined risk.

All legs are valued at intrinsic value as if they expired together (for calendars this treats the far leg at
intrinsic — a conservative floor for long far legs). Money in dollars: quantities are *signed units*
(contracts × ratio × side) and each leg carries its multiplier. ``cost`` is the net premium paid in dollars
(positive = debit paid, negative = credit received).

A position is **defined risk** when its payoff does not fall as the underlying goes to 0 or to infinity
(flat or rising at both ends). Otherwise its loss is a **stress loss**: the worst payoff for the underlying
anywhere within ±``stress`` of spot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: leg kinds
STOCK, CALL, PUT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PayoffSummary:
    max_profit: float  # dollars; inf when unbounded
    max_loss: float  # dollars, positive = a loss; inf when unbounded
    breakevens: tuple[float, ...]
    defined_risk: bool
    stress_loss: float  # worst loss within ±stress of spot (dollars, ≥ 0)

    @property
    def risk(self) -> float:
        """The loss the risk engine uses: max loss when defined, stress loss otherwise."""
        return self.max_loss if self.defined_risk else self.stress_loss


def payoff_at(spots: np.ndarray, kind: np.ndarray, strike: np.ndarray, units: np.ndarray,
              multiplier: np.ndarray) -> np.ndarray:
    """Expiry value in dollars of the legs at each spot (shape ``(len(spots),)``); excludes the premium."""
    s = np.asarray(spots, float)[:, None]
    k = strike[None, :]
    intrinsic = np.where(kind == CALL, np.maximum(s - k, 0.0), np.where(kind == PUT, np.maximum(k - s, 0.0), s))
    return (intrinsic * (units * multiplier)[None, :]).sum(axis=1)


def summarize(kind: np.ndarray, strike: np.ndarray, units: np.ndarray, multiplier: np.ndarray, cost: float,
              spot: float, stress: float, *, breakevens: bool = True) -> PayoffSummary:
    """Payoff summary of the legs; ``strike`` is ignored for stock legs. Arrays share one length.

    ``breakevens=False`` skips the breakeven search (the risk engine's hot path does not need it).
    """
    if len(kind) <= SMALL:
        return _summarize_small([int(k) for k in kind], [float(k) for k in strike], [float(u) for u in units],
                                [float(m) for m in multiplier], float(cost), float(spot), float(stress), breakevens)
    kind = np.asarray(kind, int)
    strike = np.asarray(strike, float)
    units = np.asarray(units, float)
    multiplier = np.asarray(multiplier, float)
    w = units * multiplier
    slope_inf = float(w[(kind == CALL) | (kind == STOCK)].sum())
    slope_zero = float(w[kind == STOCK].sum() - w[kind == PUT].sum())  # d payoff / dS below every strike
    opt_strikes = strike[kind != STOCK]
    top = float(max(opt_strikes.max() if len(opt_strikes) else 0.0, spot if math.isfinite(spot) else 0.0, 1.0))
    grid = np.unique(np.concatenate([[0.0], opt_strikes, [2.0 * top]]))
    has_spot = math.isfinite(spot) and spot > 0
    if has_spot:  # one revaluation for the grid and the stress probes
        lo_s, hi_s = spot * (1.0 - stress), spot * (1.0 + stress)
        probe = np.array([lo_s, spot, hi_s])
        values = payoff_at(np.concatenate([grid, probe]), kind, strike, units, multiplier) - cost
        pnl, probe_pnl = values[:len(grid)], values[len(grid):]
    else:
        pnl = payoff_at(grid, kind, strike, units, multiplier) - cost
    lo, hi = float(pnl.min()), float(pnl.max())
    max_loss = math.inf if slope_inf < 0 else max(0.0, -lo)
    max_profit = math.inf if slope_inf > 0 else hi
    zeros = _zeros(grid, pnl, slope_inf) if breakevens else ()
    defined = slope_inf >= 0 and slope_zero <= 0
    stress_loss = max_loss
    if has_spot:
        inside = (grid > lo_s) & (grid < hi_s)
        worst = float(probe_pnl.min())
        if inside.any():
            worst = min(worst, float(pnl[inside].min()))
        stress_loss = max(0.0, -worst)
    return PayoffSummary(float(max_profit), float(max_loss), zeros, bool(defined), float(stress_loss))


SMALL = 4  # up to this many legs the plain-Python path is faster than numpy's per-call overhead


def _summarize_small(kind: list[int], strike: list[float], units: list[float], mult: list[float], cost: float,
                     spot: float, stress: float, breakevens: bool) -> PayoffSummary:
    """Same result as the numpy path, in plain Python (an order's 1–4 legs: ~10× faster)."""
    if not kind:
        return PayoffSummary(0.0, 0.0, (), True, 0.0)
    w = [u * m for u, m in zip(units, mult, strict=True)]
    slope_inf = sum(wi for k, wi in zip(kind, w, strict=True) if k in (CALL, STOCK))
    slope_zero = sum(wi for k, wi in zip(kind, w, strict=True) if k == STOCK) - sum(
        wi for k, wi in zip(kind, w, strict=True) if k == PUT)
    opt_strikes = [k for k, kd in zip(strike, kind, strict=True) if kd != STOCK]
    top = max(max(opt_strikes) if opt_strikes else 0.0, spot if math.isfinite(spot) else 0.0, 1.0)
    grid = sorted({0.0, *opt_strikes, 2.0 * top})

    def value(s: float) -> float:
        v = 0.0
        for kd, k, wi in zip(kind, strike, w, strict=True):
            v += wi * ((s - k if s > k else 0.0) if kd == CALL else (k - s if k > s else 0.0) if kd == PUT else s)
        return v - cost

    pnl = [value(g) for g in grid]
    lo, hi = min(pnl), max(pnl)
    max_loss = math.inf if slope_inf < 0 else max(0.0, -lo)
    max_profit = math.inf if slope_inf > 0 else hi
    zeros = _zeros(np.asarray(grid), np.asarray(pnl), slope_inf) if breakevens else ()
    stress_loss = max_loss
    if math.isfinite(spot) and spot > 0:
        lo_s, hi_s = spot * (1.0 - stress), spot * (1.0 + stress)
        worst = min(value(lo_s), value(spot), value(hi_s), *(p for g, p in zip(grid, pnl, strict=True)
                                                           if lo_s < g < hi_s))
        stress_loss = max(0.0, -worst)
    return PayoffSummary(float(max_profit), float(max_loss), zeros, slope_inf >= 0 and slope_zero <= 0,
                         float(stress_loss))


def _zeros(grid: np.ndarray, pnl: np.ndarray, slope_inf: float) -> tuple[float, ...]:
    out: list[float] = []
    for i in range(len(grid) - 1):
        a, b = pnl[i], pnl[i + 1]
        if a == 0.0:
            out.append(float(grid[i]))
        elif a * b < 0:
            out.append(float(grid[i] + (grid[i + 1] - grid[i]) * a / (a - b)))
    last = pnl[-1]
    if last == 0.0:
        out.append(float(grid[-1]))
    elif slope_inf != 0 and last * slope_inf < 0:
        out.append(float(grid[-1] - last / slope_inf))
    return tuple(round(x, 6) for x in sorted(set(out)) if x > 0)
