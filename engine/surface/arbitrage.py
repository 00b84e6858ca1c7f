"""Static-arbitrage checks on fitted SVI slices and their repair by constrained refit.

- Butterfly: Durrleman's g(k) ≥ 0 on a dense k grid (and w > 0), plus Lee's wing bound
  b (1 + |ρ|) ≤ 2 (which also keeps g > 0 in the far wings, where g → 1/4 − b²(1 ± ρ)²/16).
- Calendar: total variance non-decreasing in T at every k = ln K/F_T (checked between adjacent
  slices).
- Grids (:func:`check_grids`): slice i is checked on 401+ points spanning its own and its
  predecessor's quoted k range, widened on each side by max(half that width + 0.02, 0.25). Beyond
  that the smile is an extrapolation; the Lee bound governs its asymptotics.

A violating slice is refitted to its own quotes (same weights) under those constraints (see
:func:`_constrained_refit` for the strategy). Slices are repaired from the shortest expiry outwards,
so each slice is constrained against an already clean predecessor. Every finding and action is a
human-readable line in :class:`ArbitrageReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engine.surface.svi import LEE_BOUND, durrleman_g, fit_svi, svi_total_variance

log = logging.getLogger(__name__)

#: g(k) and calendar differences below −TOLERANCE count as violations.
TOLERANCE = 1e-9
#: checks reach at least this far beyond the quoted k range on each side
WING_EXTENSION = 0.25


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
    k_grid: tuple[float, float, int] = (0.0, 0.0, 0)  # widest checked k range and total grid points

    @property
    def arbitrage_free(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def butterfly_points(self) -> int:
        return sum(c.butterfly_points for c in self.checks)

    @property
    def calendar_points(self) -> int:
        return sum(c.calendar_points for c in self.checks)


def check_grids(k_ranges: np.ndarray, n: int = 401) -> list[np.ndarray]:
    """Dense k grids for the checks, one per slice.

    Slice i is checked on the union of its own and its predecessor's quoted k ranges, widened on
    each side by max(half that union's width + 0.02, WING_EXTENSION) (so extrapolated wings near the
    quotes are covered), with ``n`` points. ``k_ranges`` is (S, 2) of (k_min, k_max); NaN rows get empty grids.
    """
    kr = np.asarray(k_ranges, dtype=float).reshape(-1, 2)
    grids: list[np.ndarray] = []
    prev: np.ndarray | None = None
    for row in kr:
        if not np.isfinite(row).all():
            grids.append(np.array([]))
            continue
        lo, hi = float(row[0]), float(row[1])
        if prev is not None:
            lo, hi = min(lo, float(prev[0])), max(hi, float(prev[1]))
        ext = max(0.5 * (hi - lo) + 0.02, WING_EXTENSION)
        grids.append(np.sort(np.concatenate([np.linspace(lo - ext, hi + ext, n), np.linspace(row[0], row[1], 101)])))
        prev = row
    return grids


def check_slices(params: np.ndarray, grids: list[np.ndarray]) -> list[SliceCheck]:
    """Check (S, 5) SVI parameters ordered by expiry on their grids (see :func:`check_grids`).

    The calendar test compares each slice with the previous finite one on the later slice's grid.
    """
    p = np.asarray(params, dtype=float)
    out: list[SliceCheck] = []
    prev: np.ndarray | None = None
    for row, grid in zip(p, grids, strict=True):
        if not np.isfinite(row).all() or len(grid) == 0:
            out.append(SliceCheck(float("nan"), 0, False, 0, 0.0))
            continue
        g = durrleman_g(grid, *row)
        cal_pts, worst = 0, 0.0
        if prev is not None:
            diff = svi_total_variance(grid, *row) - svi_total_variance(grid, *prev)
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
        prev = row
    return out


def _constrained_refit(
    k: np.ndarray,
    w: np.ndarray,
    om: np.ndarray,
    start: np.ndarray,
    k_grid: np.ndarray,
    floor_w: np.ndarray | None,
    floor_params: np.ndarray | None = None,
    margin: float = 1e-4,
    max_iter: int = 150,
) -> np.ndarray | None:
    """Refit one slice with g ≥ margin, Lee, w_min ≥ 0 and (optionally) w ≥ floor_w on the grid.

    Strategy, cheapest first, stopping at the first clean result: (1) a parallel lift of the fitted
    slice when only a small calendar gap is wrong; (2) SLSQP from the fit on scaled parameters with
    cutting planes (grid points where the result still dips are added and the solve repeated);
    (3) for calendar violations, the fast unconstrained fit to the quotes raised onto the previous
    slice (plus grid points of that slice where the fit dips), polished by SLSQP; (4) the previous
    slice lifted to these quotes; (5) a flat smile. Returns None if nothing clean was found.
    """
    wl = max(float(np.average(w, weights=om)), 1e-10)
    ks = max(float(np.ptp(k)) if len(k) else 0.0, 0.01)
    sc = np.array([wl, wl / ks, 1.0, ks, ks])  # natural sizes of a, b, rho, m, sigma
    wscale = wl
    ssr_scale = max(float(np.sum(om)) * (1e-2 * wl) ** 2, 1e-300)

    def theta(x: np.ndarray) -> np.ndarray:
        return x * sc

    def obj(x: np.ndarray) -> float:
        return float(np.sum(om * (svi_total_variance(k, *theta(x)) - w) ** 2) / ssr_scale)

    def clean(th: np.ndarray) -> bool:
        return _slice_clean(th, k_grid, floor_w)

    start = np.array(start, dtype=float)
    best: np.ndarray | None = None
    best_f = np.inf

    def consider(th: np.ndarray) -> bool:
        nonlocal best, best_f
        if not np.isfinite(th).all():
            return False
        if not clean(th) and floor_w is not None:
            # a solver result that misses the calendar floor by a hair: close the gap by a parallel lift
            gap = float(np.max(floor_w - svi_total_variance(k_grid, *th)))
            if 0.0 < gap < 1e-2 * wscale:
                th = np.array(th, dtype=float)
                th[0] += gap + 1e-9 * wscale
        if not clean(th):
            return False
        f = obj(th / sc)
        if f < best_f:
            best, best_f = np.array(th, dtype=float), f
        return True

    # (1) small calendar gap only: lift in parallel
    if floor_w is not None and np.isfinite(start).all():
        gap = float(np.max(floor_w - svi_total_variance(k_grid, *start)))
        if 0.0 < gap < 1e-2 * wscale:
            lifted = start.copy()
            lifted[0] += gap + 1e-9 * wscale
            if consider(lifted):
                return best

    # SLSQP sees a thinned grid (its cost grows with the constraint count); results are checked on
    # the full grid, and points where they still dip are added as cutting planes
    step = max(1, len(k_grid) // 60)
    pts = {"k": k_grid[::step], "f": None if floor_w is None else floor_w[::step]}

    def g_fun(x: np.ndarray) -> np.ndarray:
        return np.maximum(durrleman_g(pts["k"], *theta(x)), -1e3) - margin

    def shape_fun(x: np.ndarray) -> np.ndarray:
        a, b, rho, _m, sig = theta(x)
        return np.array([LEE_BOUND - b * (1 + rho), LEE_BOUND - b * (1 - rho),
                         (a + b * sig * np.sqrt(max(1 - rho**2, 0.0))) / wscale])

    cons = [{"type": "ineq", "fun": g_fun}, {"type": "ineq", "fun": shape_fun}]
    if floor_w is not None:
        cons.append({"type": "ineq",
                     "fun": lambda x: (svi_total_variance(pts["k"], *theta(x)) - pts["f"]) / wscale - 1e-6})
    bounds = [(None, None), (0.0, LEE_BOUND / sc[1]), (-0.999, 0.999), (None, None), (1e-4 / ks, 10.0 / ks)]

    def solve(x0: np.ndarray) -> np.ndarray:
        from scipy.optimize import minimize  # only this repair path needs it: 0.4 s of import at start

        x = np.array(x0, dtype=float)
        for _ in range(3):
            try:
                res = minimize(obj, x, method="SLSQP", bounds=bounds, constraints=cons,
                               options={"maxiter": max_iter, "ftol": 1e-12})
            except (ValueError, FloatingPointError) as exc:
                log.debug("SLSQP refit failed: %s", exc)
                return x
            x = res.x
            th = theta(x)
            if not np.isfinite(th).all() or clean(th):
                break
            bad = durrleman_g(k_grid, *th) < margin
            if floor_w is not None:
                bad |= svi_total_variance(k_grid, *th) - floor_w < 1e-6 * wscale
            pts["k"] = np.union1d(pts["k"], k_grid[bad])
            if floor_w is not None:
                pts["f"] = np.interp(pts["k"], k_grid, floor_w)
        return x

    def floor_fit() -> np.ndarray | None:
        """Fast fit to quotes raised onto the previous slice (+ε), adding grid points where the fit
        still dips below it; uses the unconstrained quasi-explicit fitter, a few rounds."""
        if floor_w is None:
            return None
        eps = 1e-4 * wscale
        target = np.maximum(w, np.interp(k, k_grid, floor_w) + eps)
        ek: list[np.ndarray] = []
        ew: list[np.ndarray] = []
        extra_weight = float(np.median(om)) if len(om) else 1.0
        th = None
        for it in range(6):
            kk = np.concatenate([k, *ek])
            ww = np.concatenate([target, *ew])
            oo = np.concatenate([om, np.full(len(kk) - len(k), extra_weight)])
            params, _ = fit_svi(kk, ww, oo)
            th = params.as_array()
            if not np.isfinite(th).all() or clean(th):
                break
            gap = svi_total_variance(k_grid, *th) - floor_w
            bad = np.nonzero(gap < eps)[0]
            if len(bad) == 0:
                break
            pick = bad[np.linspace(0, len(bad) - 1, min(len(bad), 25)).astype(int)]
            ek.append(k_grid[pick])
            ew.append(floor_w[pick] + eps * 2.0 ** (it + 1))
        return th

    x_start = start / sc
    x_start[2] = float(np.clip(x_start[2], -0.99, 0.99))
    x_start[1] = min(max(x_start[1], 0.0), bounds[1][1])
    x_start[4] = float(np.clip(x_start[4], *bounds[4]))
    # (2) SLSQP from the fit
    x = solve(x_start)
    if consider(theta(x)):
        return best
    # (3) calendar: fit to the quotes raised onto the previous slice, then polish with SLSQP
    th = floor_fit()
    if th is not None and np.isfinite(th).all():
        if consider(th):
            return best
        if consider(theta(solve(th / sc))):
            return best
    # (4) the previous slice lifted to these quotes
    if floor_params is not None:
        lifted = np.array(floor_params, dtype=float)
        lifted[0] += max(0.0, float(np.average(w - svi_total_variance(k, *floor_params), weights=om))) + 1e-6
        if not consider(lifted):
            consider(theta(solve(lifted / sc)))
    # (5) a flat smile at the quotes' (or the floor's) level
    level = wl if floor_w is None else max(wl, float(np.max(floor_w)) + 1e-6)
    flat = np.array([level - 0.01 * 0.1 * level, 0.01 * level, 0.0, 0.0, 0.1])
    consider(flat)
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
    max_cost_bp: float = 200.0,
) -> tuple[np.ndarray, ArbitrageReport]:
    """Check every slice and repair violators by constrained refit; returns (new params, report).

    ``params`` (S, 5) ordered by expiry; ``k``, ``w``, ``weights`` (S, N) are the quotes each slice
    was fitted to (weight 0 = padding). ``labels`` name the slices in the report (e.g. expiry dates);
    with ``T`` (years per slice) the report states fit errors in basis points of vol, and a repair that
    would raise a slice's RMSE to its quotes by more than ``max_cost_bp`` is not applied (the slice
    stays as fitted and the report lists it as unresolved: such quotes are more likely bad data than
    a real arbitrage, and one absurd slice must not drag every later expiry with it).
    """
    p = np.array(params, dtype=float, copy=True)
    S = len(p)
    labels = labels or [f"slice {i}" for i in range(S)]
    ranges = np.full((S, 2), np.nan)
    for i in range(S):
        used = weights[i] > 0
        if used.any():
            ranges[i] = (k[i][used].min(), k[i][used].max())
    grids = check_grids(ranges)
    before = check_slices(p, grids)
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
            grid = grids[i]
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
                    if ti is not None and e_new > e_old + max_cost_bp:
                        unresolved.append(f"{labels[i]}: left as fitted; the arbitrage-free refit would move it "
                                          f"{e_new - e_old:.0f} bp of vol away from its quotes (limit "
                                          f"{max_cost_bp:g} bp)")
                    else:
                        repairs.append(f"{labels[i]}: refitted under no-arbitrage constraints "
                                       f"(RMSE to mid {e_old:.3g} -> {e_new:.3g} {unit})")
                        p[i] = new
            prev = p[i]
    after = check_slices(p, grids)
    nonempty = [g for g in grids if len(g)]
    lo = float(min(g[0] for g in nonempty)) if nonempty else 0.0
    hi = float(max(g[-1] for g in nonempty)) if nonempty else 0.0
    return p, ArbitrageReport(
        checks=tuple(after),
        found=tuple(found),
        repairs=tuple(repairs),
        unresolved=tuple(unresolved),
        k_grid=(lo, hi, sum(len(g) for g in grids)),
    )

