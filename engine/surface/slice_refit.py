"""One slice's constrained refit: the last resort of the arbitrage repair (:mod:`engine.surface.arbitrage`).

Why its own module: the refit tries five strategies in turn, cheapest first, and each needs the slice's
scales, objective and "is this clean" test; as methods of one :class:`SliceRefit` each strategy has a name
and its own small body instead of one function of nested closures.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine.surface.svi import LEE_BOUND, durrleman_g, fit_svi, svi_total_variance

log = logging.getLogger("engine.surface.arbitrage")

#: a g or calendar dip below −TOLERANCE is an arbitrage (numerical noise above it is not)
TOLERANCE = 1e-9


def slice_clean(x: np.ndarray, k_grid: np.ndarray, floor_w: np.ndarray | None) -> bool:
    """Valid SVI parameters, Lee's bound, g ≥ −TOLERANCE on the grid and (with a floor) w ≥ floor_w."""
    if not np.isfinite(x).all():
        return False
    if x[1] < 0 or abs(x[2]) >= 1 or x[4] <= 0 or x[1] * (1 + abs(x[2])) > LEE_BOUND + 1e-9:
        return False
    if np.min(durrleman_g(k_grid, *x)) < -TOLERANCE:
        return False
    return not (floor_w is not None and np.min(svi_total_variance(k_grid, *x) - floor_w) < -TOLERANCE)


class SliceRefit:
    """Refit one slice with g ≥ margin, Lee, w_min ≥ 0 and (optionally) w ≥ floor_w on the grid.

    Strategy, cheapest first, stopping at the first clean result (:meth:`run`): (1) a parallel lift of the
    fitted slice when only a small calendar gap is wrong; (2) SLSQP from the fit on scaled parameters with
    cutting planes (grid points where the result still dips are added and the solve repeated); (3) for
    calendar violations, the fast unconstrained fit to the quotes raised onto the previous slice (plus grid
    points of that slice where the fit dips), polished by SLSQP; (4) the previous slice lifted to these
    quotes; (5) a flat smile. The best clean candidate by the weighted fit error wins; None if none is clean.
    """

    def __init__(self, k: np.ndarray, w: np.ndarray, om: np.ndarray, k_grid: np.ndarray,
                 floor_w: np.ndarray | None, *, margin: float = 1e-4, max_iter: int = 150) -> None:
        self.k, self.w, self.om, self.k_grid, self.floor_w = k, w, om, k_grid, floor_w
        self.margin, self.max_iter = margin, max_iter
        self.wl = max(float(np.average(w, weights=om)), 1e-10)
        self.ks = max(float(np.ptp(k)) if len(k) else 0.0, 0.01)
        self.sc = np.array([self.wl, self.wl / self.ks, 1.0, self.ks, self.ks])  # sizes of a, b, rho, m, sigma
        self.wscale = self.wl
        self.ssr_scale = max(float(np.sum(om)) * (1e-2 * self.wl) ** 2, 1e-300)
        self.best: np.ndarray | None = None
        self.best_f = np.inf
        # SLSQP sees a thinned grid (its cost grows with the constraint count); results are checked on the
        # full grid, and points where they still dip are added as cutting planes
        step = max(1, len(k_grid) // 60)
        self.pts: dict[str, np.ndarray] = {"k": k_grid[::step]}  # "f": the floor at those points
        if floor_w is not None:
            self.pts["f"] = floor_w[::step]
        self.bounds: list[tuple[float | None, float | None]] = [
            (None, None), (0.0, LEE_BOUND / self.sc[1]), (-0.999, 0.999), (None, None),
            (1e-4 / self.ks, 10.0 / self.ks)]

    # ---- the slice's objective and tests ----------------------------------------------------------------
    def theta(self, x: np.ndarray) -> np.ndarray:
        return x * self.sc

    def obj(self, x: np.ndarray) -> float:
        return float(np.sum(self.om * (svi_total_variance(self.k, *self.theta(x)) - self.w) ** 2) / self.ssr_scale)

    def clean(self, th: np.ndarray) -> bool:
        return slice_clean(th, self.k_grid, self.floor_w)

    def _floor_gap(self, th: np.ndarray) -> float:
        assert self.floor_w is not None
        return float(np.max(self.floor_w - svi_total_variance(self.k_grid, *th)))

    def consider(self, th: np.ndarray) -> bool:
        """Keep ``th`` if it is clean (after closing a hair's-width calendar gap) and fits best so far."""
        if not np.isfinite(th).all():
            return False
        if not self.clean(th) and self.floor_w is not None:
            gap = self._floor_gap(th)
            if 0.0 < gap < 1e-2 * self.wscale:  # a solver result missing the floor by a hair: lift it
                th = np.array(th, dtype=float)
                th[0] += gap + 1e-9 * self.wscale
        if not self.clean(th):
            return False
        f = self.obj(th / self.sc)
        if f < self.best_f:
            self.best, self.best_f = np.array(th, dtype=float), f
        return True

    # ---- SLSQP with cutting planes -----------------------------------------------------------------------
    def _constraints(self) -> list[dict[str, Any]]:
        pts, theta, margin, wscale = self.pts, self.theta, self.margin, self.wscale

        def g_fun(x: np.ndarray) -> np.ndarray:
            return np.maximum(durrleman_g(pts["k"], *theta(x)), -1e3) - margin

        def shape_fun(x: np.ndarray) -> np.ndarray:
            a, b, rho, _m, sig = theta(x)
            return np.array([LEE_BOUND - b * (1 + rho), LEE_BOUND - b * (1 - rho),
                             (a + b * sig * np.sqrt(max(1 - rho**2, 0.0))) / wscale])

        cons: list[dict[str, Any]] = [{"type": "ineq", "fun": g_fun}, {"type": "ineq", "fun": shape_fun}]
        if self.floor_w is not None:
            cons.append({"type": "ineq",
                         "fun": lambda x: (svi_total_variance(pts["k"], *theta(x)) - pts["f"]) / wscale - 1e-6})
        return cons

    def _add_cutting_planes(self, th: np.ndarray) -> None:
        bad = durrleman_g(self.k_grid, *th) < self.margin
        if self.floor_w is not None:
            bad |= svi_total_variance(self.k_grid, *th) - self.floor_w < 1e-6 * self.wscale
        self.pts["k"] = np.union1d(self.pts["k"], self.k_grid[bad])
        if self.floor_w is not None:
            self.pts["f"] = np.interp(self.pts["k"], self.k_grid, self.floor_w)

    def solve(self, x0: np.ndarray) -> np.ndarray:
        """SLSQP from ``x0`` (scaled parameters), up to three rounds of cutting planes."""
        from scipy.optimize import minimize  # only this repair path needs it: 0.4 s of import at start

        cons = self._constraints()
        x = np.array(x0, dtype=float)
        for _ in range(3):
            try:
                res = minimize(self.obj, x, method="SLSQP", bounds=self.bounds, constraints=cons,
                               options={"maxiter": self.max_iter, "ftol": 1e-12})
            except (ValueError, FloatingPointError) as exc:
                log.debug("SLSQP refit failed: %s", exc)
                return x
            x = res.x
            th = self.theta(x)
            if not np.isfinite(th).all() or self.clean(th):
                break
            self._add_cutting_planes(th)
        return x

    # ---- the strategies, cheapest first ------------------------------------------------------------------
    def lift_small_gap(self, start: np.ndarray) -> bool:
        """(1) Only a small calendar gap is wrong: lift the fitted slice in parallel."""
        if self.floor_w is None or not np.isfinite(start).all():
            return False
        gap = self._floor_gap(start)
        if not 0.0 < gap < 1e-2 * self.wscale:
            return False
        lifted = start.copy()
        lifted[0] += gap + 1e-9 * self.wscale
        return self.consider(lifted)

    def scaled_start(self, start: np.ndarray) -> np.ndarray:
        x = start / self.sc
        x[2] = float(np.clip(x[2], -0.99, 0.99))
        hi_b = self.bounds[1][1]
        x[1] = min(max(x[1], 0.0), hi_b if hi_b is not None else np.inf)
        lo_s, hi_s = self.bounds[4]
        x[4] = float(np.clip(x[4], lo_s, hi_s))
        return x

    def floor_fit(self) -> np.ndarray | None:
        """(3) Fast fit to quotes raised onto the previous slice (+ε), adding grid points where the fit still
        dips below it; the unconstrained quasi-explicit fitter, a few rounds."""
        floor_w = self.floor_w
        if floor_w is None:
            return None
        eps = 1e-4 * self.wscale
        target = np.maximum(self.w, np.interp(self.k, self.k_grid, floor_w) + eps)
        ek: list[np.ndarray] = []
        ew: list[np.ndarray] = []
        extra_weight = float(np.median(self.om)) if len(self.om) else 1.0
        th = None
        for it in range(6):
            kk = np.concatenate([self.k, *ek])
            ww = np.concatenate([target, *ew])
            oo = np.concatenate([self.om, np.full(len(kk) - len(self.k), extra_weight)])
            params, _ = fit_svi(kk, ww, oo)
            th = params.as_array()
            if not np.isfinite(th).all() or self.clean(th):
                break
            bad = np.nonzero(svi_total_variance(self.k_grid, *th) - floor_w < eps)[0]
            if len(bad) == 0:
                break
            pick = bad[np.linspace(0, len(bad) - 1, min(len(bad), 25)).astype(int)]
            ek.append(self.k_grid[pick])
            ew.append(floor_w[pick] + eps * 2.0 ** (it + 1))
        return th

    def lift_previous(self, floor_params: np.ndarray) -> None:
        """(4) The previous slice lifted to these quotes (polished by SLSQP if not clean as lifted)."""
        lifted = np.array(floor_params, dtype=float)
        lifted[0] += max(0.0, float(np.average(self.w - svi_total_variance(self.k, *floor_params),
                                               weights=self.om))) + 1e-6
        if not self.consider(lifted):
            self.consider(self.theta(self.solve(lifted / self.sc)))

    def flat(self) -> None:
        """(5) A flat smile at the quotes' (or the floor's) level."""
        level = self.wl if self.floor_w is None else max(self.wl, float(np.max(self.floor_w)) + 1e-6)
        self.consider(np.array([level - 0.01 * 0.1 * level, 0.01 * level, 0.0, 0.0, 0.1]))

    def run(self, start: np.ndarray, floor_params: np.ndarray | None) -> np.ndarray | None:
        start = np.array(start, dtype=float)
        if self.lift_small_gap(start):
            return self.best
        if self.consider(self.theta(self.solve(self.scaled_start(start)))):  # (2) SLSQP from the fit
            return self.best
        th = self.floor_fit()
        if th is not None and np.isfinite(th).all():
            if self.consider(th) or self.consider(self.theta(self.solve(th / self.sc))):
                return self.best
        if floor_params is not None:
            self.lift_previous(floor_params)
        self.flat()
        return self.best
