"""Static-arbitrage checks on fitted SVI slices and their repair by constrained refit.

- Butterfly: Durrleman's g(k) ≥ 0 on a dense k grid (and w > 0), plus Lee's wing bound
  b (1 + |ρ|) ≤ 2.
- Calendar: total variance non-decreasing in T at every k = ln K/F_T (checked between adjacent
  slices on a dense grid).

A violating slice is refitted to its own quotes (same weights) under those constraints with SLSQP,
starting from the fitted parameters and, if that fails, from a flat arbitrage-free smile. Slices are
repaired from the shortest expiry outwards, so each slice is constrained against an already clean
predecessor. Every action is recorded as a human-readable line in :class:`ArbitrageReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from engine.surface.svi import LEE_BOUND, durrleman_g, svi_total_variance

log = logging.getLogger(__name__)

#: g(k) and calendar differences below −TOLERANCE count as violations.
TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class SliceCheck:
    """Arbitrage diagnostics of one slice (against its predecessor for the calendar part)."""

    min_g: float
    butterfly_points: int  # grid points with g < 0
    lee_ok: bool
    calendar_points: int  # grid points where w is below the previous slice's w
    worst_calendar: float  # most negative w_i − w_{i−1} (0 when none)

    @property
    def ok(self) -> bool:
        return self.butterfly_points == 0 and self.lee_ok and self.calendar_points == 0


@dataclass(frozen=True, slots=True)
class ArbitrageReport:
    """Per-slice checks after repair, what was found before repair, and the repair actions taken."""

    checks: tuple[SliceCheck, ...] = ()
    found: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()
    k_grid: tuple[float, float, int] = (0.0, 0.0, 0)

    @property
    def arbitrage_free(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def butterfly_points(self) -> int:
        return sum(c.butterfly_points for c in self.checks)

    @property
    def calendar_points(self) -> int:
        return sum(c.calendar_points for c in self.checks)


def check_grid(k_ranges: np.ndarray, n: int = 401) -> np.ndarray:
    """The common dense k grid for checks: ±max(1, 1.25·max|k_data|) plus each slice's data range.

    ``k_ranges`` is (S, 2) of (k_min, k_max) per slice.
    """
    kr = np.asarray(k_ranges, dtype=float).reshape(-1, 2)
    finite = kr[np.isfinite(kr).all(axis=1)]
    half = max(1.0, 1.25 * float(np.max(np.abs(finite))) if len(finite) else 1.0)
    parts = [np.linspace(-half, half, n)]
    for lo, hi in finite:
        parts.append(np.linspace(lo, hi, 101))
    return np.unique(np.concatenate(parts))


def check_slices(params: np.ndarray, k_grid: np.ndarray) -> list[SliceCheck]:
    """Check (S, 5) SVI parameters ordered by expiry; NaN rows are skipped for the calendar test."""
    p = np.asarray(params, dtype=float)
    out: list[SliceCheck] = []
    prev_w: np.ndarray | None = None
    for row in p:
        if not np.isfinite(row).all():
            out.append(SliceCheck(float("nan"), 0, False, 0, 0.0))
            continue
        g = durrleman_g(k_grid, *row)
        w = svi_total_variance(k_grid, *row)
        cal_pts, worst = 0, 0.0
        if prev_w is not None:
            diff = w - prev_w
            cal_pts = int(np.count_nonzero(diff < -TOLERANCE))
            worst = float(min(0.0, diff.min()))
        out.append(
            SliceCheck(
                min_g=float(np.min(g)),
                butterfly_points=int(np.count_nonzero(g < -TOLERANCE)),
                lee_ok=bool(row[1] >= 0 and row[1] * (1 + abs(row[2])) <= LEE_BOUND + 1e-12 and abs(row[2]) < 1),
                calendar_points=cal_pts,
                worst_calendar=worst,
            )
        )
        prev_w = w
    return out


def _constrained_refit(
    k: np.ndarray,
    w: np.ndarray,
    om: np.ndarray,
    start: np.ndarray,
    k_grid: np.ndarray,
    floor_w: np.ndarray | None,
    floor_params: np.ndarray | None = None,
    margin: float = 1e-7,
    max_iter: int = 400,
) -> np.ndarray | None:
    """SLSQP refit of one slice with g ≥ margin, Lee, w_min ≥ 0 and (optionally) w ≥ floor_w on the grid."""
    scale = max(float(np.sum(om * w * w)), 1e-18) * 1e-6
    wscale = max(float(np.mean(np.abs(w))), 1e-8)

    def obj(x: np.ndarray) -> float:
        return float(np.sum(om * (svi_total_variance(k, *x) - w) ** 2) / scale)

    # SLSQP sees a thinned grid (its cost grows with the constraint count); the result is then checked
    # on the full grid and rejected if it is not clean there
    kc = k_grid[:: max(1, len(k_grid) // 150)]
    fc = None if floor_w is None else floor_w[:: max(1, len(k_grid) // 150)]
    g_con = {"type": "ineq", "fun": lambda x: np.maximum(durrleman_g(kc, *x), -1e3) - margin}
    # Lee's bound as two smooth inequalities b(1 ± ρ) ≤ 2, and a non-negative minimum variance
    shape_con = {
        "type": "ineq",
        "fun": lambda x: np.array([
            LEE_BOUND - x[1] * (1 + x[2]),
            LEE_BOUND - x[1] * (1 - x[2]),
            x[0] + x[1] * x[4] * np.sqrt(max(1 - x[2] ** 2, 0.0)),
        ]),
    }
    extra = []
    if floor_w is not None:
        extra.append({"type": "ineq", "fun": lambda x: (svi_total_variance(kc, *x) - fc) / wscale - 1e-6})
    bounds = [(None, None), (0.0, LEE_BOUND), (-0.999, 0.999), (None, None), (1e-4, 10.0)]
    flat_level = float(np.sum(om * w) / max(np.sum(om), 1e-300))
    if floor_w is not None:
        flat_level = max(flat_level, float(np.max(floor_w)) + 1e-6)
    flat = np.array([flat_level - 0.001, 0.01, 0.0, 0.0, 0.1])
    start = np.array(start, dtype=float)
    start[1] = min(max(start[1], 0.0), LEE_BOUND / (1 + abs(start[2])))
    start[2] = float(np.clip(start[2], -0.99, 0.99))
    start[4] = float(np.clip(start[4], 1e-4, 10.0))
    # SLSQP is sensitive to the constraint set and the start; try a few and keep the best clean result
    attempts = [(start, [g_con, shape_con, *extra]), (start, [g_con, *extra])]
    if floor_params is not None:
        # the previous (clean) slice lifted to the level of these quotes is calendar-feasible
        lifted = np.array(floor_params, dtype=float)
        lifted[0] += max(0.0, float(np.average(w - svi_total_variance(k, *floor_params), weights=om))) + 1e-6
        attempts.insert(1, (lifted, [g_con, shape_con, *extra]))
    attempts.append((flat, [g_con, shape_con, *extra]))
    best: np.ndarray | None = None
    best_f = np.inf

    def penalised_start(x0: np.ndarray) -> np.ndarray:
        """Quadratic-penalty minimisation (L-BFGS-B) to reach the feasible region from an infeasible start."""
        all_cons = [g_con, shape_con, *extra]

        def viol(x: np.ndarray) -> float:
            return float(sum(np.sum(np.minimum(c["fun"](x), 0.0) ** 2) for c in all_cons))

        x = np.array(x0, dtype=float)
        for mu in (1e2, 1e4, 1e6, 1e8):
            res = minimize(lambda z, mu=mu: obj(z) + mu * viol(z), x, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": 200})
            x = res.x
        return x

    attempts.insert(len(attempts) - 1, (penalised_start, [g_con, shape_con, *extra]))
    for first, cons in attempts:
        x0 = first(start) if callable(first) else first
        try:
            res = minimize(obj, x0, method="SLSQP", bounds=bounds, constraints=cons,
                           options={"maxiter": max_iter, "ftol": 1e-10})
            if not _slice_clean(res.x, k_grid, floor_w) and np.isfinite(res.x).all():
                # cutting plane: add the full-grid points where the result dips and refit from it
                gk = durrleman_g(k_grid, *res.x)
                bad = gk < margin
                if floor_w is not None:
                    bad |= svi_total_variance(k_grid, *res.x) - floor_w < 1e-6 * wscale
                kc = np.union1d(kc, k_grid[bad])
                fc = None if floor_w is None else np.interp(kc, k_grid, floor_w)
                res = minimize(obj, res.x, method="SLSQP", bounds=bounds, constraints=cons,
                               options={"maxiter": max_iter, "ftol": 1e-10})
        except (ValueError, FloatingPointError) as exc:
            log.debug("SLSQP refit failed: %s", exc)
            continue
        cands = [res.x, x0]  # the start itself counts: the lifted previous slice is a safe last resort
        if floor_w is not None and np.isfinite(res.x).all():
            # a tiny parallel lift closes a marginal calendar violation without touching the shape
            gap = float(np.max(floor_w - svi_total_variance(k_grid, *res.x)))
            if 0.0 < gap < 1e-3 * wscale:
                nudged = np.array(res.x, dtype=float)
                nudged[0] += gap + 1e-9 * wscale
                cands.insert(0, nudged)
        for cand in cands:
            if _slice_clean(cand, k_grid, floor_w):
                fx = obj(cand)
                if fx < best_f:
                    best, best_f = np.array(cand, dtype=float), fx
        if res.success and best is not None and best_f <= obj(res.x) + 1e-12:
            break  # a converged clean solution: good enough, stop paying for more attempts
    return best


def _slice_clean(x: np.ndarray, k_grid: np.ndarray, floor_w: np.ndarray | None) -> bool:
    if not np.isfinite(x).all():
        return False
    if x[1] < 0 or abs(x[2]) >= 1 or x[4] <= 0 or x[1] * (1 + abs(x[2])) > LEE_BOUND + 1e-9:
        return False
    if np.min(durrleman_g(k_grid, *x)) < -TOLERANCE:
        return False
    return not (floor_w is not None and np.min(svi_total_variance(k_grid, *x) - floor_w) < -TOLERANCE)


def _fit_error(x: np.ndarray, k: np.ndarray, w: np.ndarray, T: float | None) -> float:
    """Unweighted RMS error of a slice: in bp of vol when T is known, else in total variance."""
    model = svi_total_variance(k, *x)
    if T is None:
        return float(np.sqrt(np.mean((model - w) ** 2)))
    iv_model = np.sqrt(np.maximum(model, 0.0) / T)
    iv = np.sqrt(np.maximum(w, 0.0) / T)
    return float(np.sqrt(np.mean((iv_model - iv) ** 2)) * 1e4)


def enforce_no_arbitrage(
    params: np.ndarray,
    k: np.ndarray,
    w: np.ndarray,
    weights: np.ndarray,
    labels: list[str] | None = None,
    *,
    T: np.ndarray | None = None,
    repair: bool = True,
) -> tuple[np.ndarray, ArbitrageReport]:
    """Check every slice and repair violators by constrained refit; returns (new params, report).

    ``params`` (S, 5) ordered by expiry; ``k``, ``w``, ``weights`` (S, N) are the quotes each slice
    was fitted to (weight 0 = padding). ``labels`` name the slices in the report (e.g. expiry dates);
    with ``T`` (years per slice) the report states fit errors in basis points of vol.
    """
    p = np.array(params, dtype=float, copy=True)
    S = len(p)
    labels = labels or [f"slice {i}" for i in range(S)]
    ranges = np.full((S, 2), np.nan)
    for i in range(S):
        used = weights[i] > 0
        if used.any():
            ranges[i] = (k[i][used].min(), k[i][used].max())
    grid = check_grid(ranges)
    before = check_slices(p, grid)
    found: list[str] = []
    for i, c in enumerate(before):
        if not np.isfinite(p[i]).all():
            continue
        if c.butterfly_points:
            found.append(f"{labels[i]}: butterfly arbitrage, g(k) < 0 at {c.butterfly_points} grid points "
                         f"(min g = {c.min_g:.3g})")
        if not c.lee_ok:
            found.append(f"{labels[i]}: Lee wing bound violated")
        if c.calendar_points:
            found.append(f"{labels[i]}: calendar arbitrage, total variance below the previous expiry at "
                         f"{c.calendar_points} grid points (worst {c.worst_calendar:.3g})")
    repairs: list[str] = []
    unresolved: list[str] = []
    if repair and found:
        prev: np.ndarray | None = None
        for i in range(S):
            if not np.isfinite(p[i]).all():
                continue
            floor = svi_total_variance(grid, *prev) if prev is not None else None
            if not _slice_clean(p[i], grid, floor):
                used = weights[i] > 0
                new = _constrained_refit(k[i][used], w[i][used], weights[i][used], p[i], grid, floor, prev)
                if new is None:
                    unresolved.append(f"{labels[i]}: constrained refit did not remove the arbitrage")
                else:
                    ti = None if T is None else float(T[i])
                    unit = "in total variance" if ti is None else "bp of vol"
                    e_old = _fit_error(p[i], k[i][used], w[i][used], ti)
                    e_new = _fit_error(new, k[i][used], w[i][used], ti)
                    repairs.append(f"{labels[i]}: refitted under no-arbitrage constraints "
                                   f"(RMSE to mid {e_old:.3g} -> {e_new:.3g} {unit})")
                    p[i] = new
            prev = p[i]
    after = check_slices(p, grid)
    return p, ArbitrageReport(
        checks=tuple(after),
        found=tuple(found),
        repairs=tuple(repairs),
        unresolved=tuple(unresolved),
        k_grid=(float(grid[0]), float(grid[-1]), len(grid)),
    )

