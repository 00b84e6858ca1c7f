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
from dataclasses import dataclass, replace

import numpy as np

from engine.surface.repair import (
    RepairProblem,
    essvi_calendar,
    essvi_raw,
    fit_essvi,
    is_clean,
    isotonic,
    quote_error,
    repair_batch,
    take_rows,
)
from engine.surface.slice_refit import TOLERANCE, SliceRefit, slice_clean
from engine.surface.svi import LEE_BOUND, compiled_kernels, durrleman_g, svi_total_variance

log = logging.getLogger(__name__)

#: checks reach at least this far beyond the quoted k range on each side
WING_EXTENSION = 0.25
#: a batched repair moving a slice further than this from its quotes (RMSE, bp of vol) is not applied: the
#: slice-by-slice refit gets it (such a repair is the sign of a crossing the batch resolved on the wrong side)
BATCH_COST_BP = 25.0
#: a slice left on the eSSVI backbone is refitted when its own fit is better by more than this (in
#: units of 1 % RMS error in total variance, ≈ 1 bp of vol at 20 % vol)
REFINE_MIN_GAIN = 0.1
#: penalty level(s) and LM iterations of that refit (it starts from a clean point: one level suffices)
REFINE_LEVELS = (1e5,)
REFINE_ITERATIONS = 10
#: ... and also from its own fit when the backbone is further than this from the quotes (≈ 10 bp of vol)
SECOND_START_GAIN = 1.0
#: at most this many quotes per slice judge the eSSVI backbone's calendar candidates
CALENDAR_QUOTES = 64
#: a previous surface's slice losing more fit than this (units as REFINE_MIN_GAIN) is a candidate only beside the
#: eSSVI backbone, never instead of building it
PREVIOUS_MAX_LOSS = 1.0
#: the even/odd rounds of that refit: two sweeps when a slice starts from the backbone (a neighbour's move can make
#: room for a slice's own fit), the first sweep only when every one starts from a previous surface's slice
REFINE_SWEEPS = (0, 1, 0, 1)
#: LM iterations of the second sweep (its slices start from the first sweep's results, near their optimum)
SECOND_SWEEP_ITERATIONS = 6


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
    ok = np.isfinite(kr).all(1)
    if not ok.any():
        return [np.array([]) for _ in kr]
    # the predecessor of each finite row is the previous finite row; all rows' grids in one array pass
    rows = kr[ok]
    prev = np.vstack([rows[:1], rows[:-1]])
    lo = np.minimum(rows[:, 0], prev[:, 0])
    hi = np.maximum(rows[:, 1], prev[:, 1])
    ext = np.maximum(0.5 * (hi - lo) + 0.02, WING_EXTENSION)

    def linspace(a: np.ndarray, b: np.ndarray, num: int) -> np.ndarray:
        """np.linspace per row, computed as numpy does (start + i·step, exact end point)."""
        out = np.arange(num)[None, :] * ((b - a) / (num - 1))[:, None] + a[:, None]
        out[:, -1] = b
        return out

    wide = linspace(lo - ext, hi + ext, n)
    inner = linspace(rows[:, 0], rows[:, 1], 101)
    dense = np.sort(np.concatenate([wide, inner], axis=1), axis=1)
    grids: list[np.ndarray] = []
    j = 0
    for good in ok:
        if good:
            grids.append(dense[j])
            j += 1
        else:
            grids.append(np.array([]))
    return grids


def check_slices(params: np.ndarray, grids: list[np.ndarray]) -> list[SliceCheck]:
    """Check (S, 5) SVI parameters ordered by expiry on their grids (see :func:`check_grids`).

    The calendar test compares each slice with the previous finite one on the later slice's grid.
    """
    p = np.asarray(params, dtype=float)
    if len(p) != len(grids):
        raise ValueError(f"{len(p)} slices but {len(grids)} grids")
    valid = [i for i in range(len(p)) if np.isfinite(p[i]).all() and len(grids[i])]
    out = [SliceCheck(float("nan"), 0, False, 0, 0.0) for _ in range(len(p))]
    if not valid:
        return out
    # all slices at once on a padded (S, G) grid (padding repeats a grid's last point: no new extremes)
    G = max(len(grids[i]) for i in valid)
    if all(len(grids[i]) == G for i in valid):  # the usual case (check_grids): no padding needed
        kg = np.vstack([grids[i] for i in valid])
    else:
        kg = np.vstack([np.pad(grids[i], (0, G - len(grids[i])), mode="edge") for i in valid])
    P = p[valid]
    kernels = compiled_kernels()
    if kernels is not None:  # the same numbers in one compiled pass (engine/surface/_svi_kernels.py)
        L = len(valid)
        min_g, worst = np.empty(L), np.empty(L)
        bfly, cal = np.empty(L, dtype=np.int64), np.empty(L, dtype=np.int64)
        kernels.slice_checks(np.ascontiguousarray(P), np.ascontiguousarray(kg, dtype=np.float64), TOLERANCE, min_g,
                             bfly, cal, worst)
    else:
        cols = [P[:, c : c + 1] for c in range(5)]
        g = durrleman_g(kg, *cols)
        w_self = svi_total_variance(kg, *cols)
        min_g = g.min(1)
        bfly = np.count_nonzero(g < -TOLERANCE, axis=1)
        if len(valid) > 1:
            prev_cols = [P[:-1, c : c + 1] for c in range(5)]
            diff = w_self[1:] - svi_total_variance(kg[1:], *prev_cols)
            cal = np.concatenate([[0], np.count_nonzero(diff < -TOLERANCE, axis=1)])
            worst = np.concatenate([[0.0], np.minimum(diff.min(1), 0.0)])
        else:
            cal, worst = np.zeros(1, dtype=int), np.zeros(1)
    lee = (P[:, 1] >= 0) & (P[:, 1] * (1 + np.abs(P[:, 2])) <= LEE_BOUND + 1e-12) & (np.abs(P[:, 2]) < 1)
    for j, i in enumerate(valid):
        out[i] = SliceCheck(min_g=float(min_g[j]), butterfly_points=int(bfly[j]), lee_ok=bool(lee[j]),
                            calendar_points=int(cal[j]), worst_calendar=float(worst[j]))
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
    """Refit one slice under the no-arbitrage constraints (:class:`engine.surface.slice_refit.SliceRefit`
    has the strategy); None if nothing clean was found."""
    return SliceRefit(k, w, om, k_grid, floor_w, margin=margin, max_iter=max_iter).run(start, floor_params)


def _fit_error(x: np.ndarray, k: np.ndarray, w: np.ndarray, T: float | None) -> float:
    """Unweighted RMS error of a slice: in bp of vol when T is known, else in total variance."""
    model = svi_total_variance(k, *x)
    if T is None:
        return float(np.sqrt(np.mean((model - w) ** 2)))
    iv_model = np.sqrt(np.maximum(model, 0.0) / T)
    iv = np.sqrt(np.maximum(w, 0.0) / T)
    return float(np.sqrt(np.mean((iv_model - iv) ** 2)) * 1e4)


def _batched_repair(p: np.ndarray, k: np.ndarray, w: np.ndarray, weights: np.ndarray,
                    grids: list[np.ndarray], checks: list[SliceCheck],
                    previous: np.ndarray | None = None) -> np.ndarray:
    """Arbitrage-free parameters for every slice, batched (see :mod:`engine.surface.repair`); the caller
    decides which proposals to apply. Rows that cannot be handled here come back unchanged.

    1. Candidates per slice: its own SVI fit, the slice of the previous repaired surface (``previous``,
       (S, 5), NaN rows where there is none: a streaming chain's last refit, arbitrage-free and close
       to the new quotes), and an eSSVI backbone: a surface through the slices' ATM total variances
       (made non-decreasing), each slice's (ρ, ψ) fitted inside the butterfly bounds and then held to
       the calendar condition against the slice before it, free of static arbitrage by construction.
       The backbone is built only when the other candidates admit no clean assignment (always on a
       first fit; a previous slice losing more than ``PREVIOUS_MAX_LOSS`` does not count then, so a
       market that jumped gets a fresh backbone), so a streaming refit usually skips it.
    2. Each slice takes one candidate: the assignment that loses the least fit (a candidate costs its
       extra error to the quotes over the own fit) among those where every slice is butterfly-free
       and every consecutive pair is calendar-free, by dynamic programming over the chain
       (all-backbone is always such an assignment).
    3. Slices not on their own fit and losing more than ``REFINE_MIN_GAIN`` are refitted to their
       quotes between their neighbours (floor and ceiling): even positions, then odd ones, so the
       neighbours stand still while a slice moves; twice from the backbone, once from a previous
       slice (already near its optimum). The start is the chosen candidate (a clean point); where it is
       far from the quotes also the slice's own fit. A slice whose own fit became admissible between
       its new neighbours takes it. The best clean iterate wins.
    """
    out = p.copy()
    live = [i for i in range(len(p)) if np.isfinite(p[i]).all() and len(grids[i])]
    L = len(live)
    if L == 0:
        return out
    G = len(grids[live[0]])
    if any(len(grids[i]) != G for i in live):  # check_grids always gives equal lengths; stay safe
        return out
    kl, wlq, oml = k[live], w[live], np.where(weights[live] > 0, weights[live], 0.0)
    fitted = p[live].copy()
    kg = np.vstack([grids[i] for i in live])  # (L, G)

    def score(params: np.ndarray) -> np.ndarray:
        """RMS weighted error to the quotes in units of 1 % of the slice's variance level (≈ 10 bp of vol
        at 20 % vol: the repair's own objective); NaN rows score inf."""
        tot = np.maximum(oml.sum(1), 1e-300)
        wl = np.maximum((oml * wlq).sum(1) / tot, 1e-10)
        model = svi_total_variance(kl, *(params[:, c : c + 1] for c in range(5)))
        with np.errstate(invalid="ignore"):
            sc = np.sqrt((oml * (model - wlq) ** 2).sum(1) / tot) / (1e-2 * wl)
        return np.where(np.isfinite(sc), sc, np.inf)

    own_score = score(fitted)
    # candidate states: 0 = own fit, then the previous repaired slices, then the backbone
    states: list[np.ndarray] = [fitted]
    costs: list[np.ndarray] = [np.where([checks[i].butterfly_points == 0 and checks[i].lee_ok for i in live],
                                        0.0, np.inf)]
    from_backbone: list[bool] = [False]
    prev_cost: np.ndarray | None = None
    if previous is not None and np.isfinite(previous[live]).all(1).any():
        prev = previous[live]
        pc = check_slices(np.where(np.isfinite(prev).all(1)[:, None], prev, np.nan), list(kg))
        ok = np.array([c.butterfly_points == 0 and c.lee_ok for c in pc])
        prev_cost = np.where(ok, np.maximum(score(prev) - own_score, 0.0), np.inf)
        states.append(prev)
        # without the backbone, a previous slice far from the new quotes (the market jumped) is no candidate
        costs.append(np.where(prev_cost <= PREVIOUS_MAX_LOSS, prev_cost, np.inf))
        from_backbone.append(False)
    state = _cheapest_assignment(states, costs, kg) if len(states) > 1 else None
    if state is None:
        if prev_cost is not None:
            costs[1] = prev_cost
        theta_raw = svi_total_variance(0.0, *fitted.T)  # w(0) of every slice
        theta = isotonic(np.maximum(theta_raw, 1e-10))
        rho, psi = fit_essvi(theta, kl, wlq, oml, fitted[:, 2], 2.0 * fitted[:, 1])
        # the wing step picks among 65 (ρ, ψ) candidates per slice by their fit: every few quotes suffice
        thin = slice(None, None, max(1, -(-kl.shape[1] // CALENDAR_QUOTES)))
        backbone = essvi_raw(theta, *essvi_calendar(theta, rho, psi, kg, (kl[:, thin], wlq[:, thin], oml[:, thin])))
        base_checks = check_slices(backbone, list(kg))
        if not all(c.ok for c in base_checks):
            log.warning("eSSVI backbone failed its own checks; falling back to slice-by-slice repair")
            return out
        states.append(backbone)
        costs.append(np.maximum(score(backbone) - own_score, 0.0))
        from_backbone.append(True)
        state = _cheapest_assignment(states, costs, kg)
        if state is None:  # cannot happen (all-backbone is clean); stay safe
            return out
    own = state == 0
    chosen = np.stack([states[s][j] for j, s in enumerate(state)])
    gain = np.choose(state, costs)
    sweeps = REFINE_SWEEPS if any(from_backbone[s] for s in state[~own]) else REFINE_SWEEPS[:2]

    for round_, parity in enumerate(sweeps):
        idx = [j for j in range(L) if not own[j] and j % 2 == parity]
        if not idx:
            continue
        V = len(idx)
        # floors (the slice before, on this slice's grid) and ceilings (the slice after, on its grid): all rows in
        # one array pass each (the same values as one row at a time)
        ja = np.asarray(idx)
        floor = np.zeros((V, G))
        has_f = np.zeros((V, G), dtype=bool)
        kc = kg[ja].copy()
        ceil = np.zeros((V, G))
        has_c = np.zeros((V, G), dtype=bool)
        rf = np.nonzero(ja > 0)[0]
        if len(rf):
            below = chosen[ja[rf] - 1]
            floor[rf] = svi_total_variance(kg[ja[rf]], *(below[:, c : c + 1] for c in range(5)))
            has_f[rf] = True
        rc = np.nonzero(ja + 1 < L)[0]
        if len(rc):
            above = chosen[ja[rc] + 1]
            kc[rc] = kg[ja[rc] + 1]
            ceil[rc] = svi_total_variance(kc[rc], *(above[:, c : c + 1] for c in range(5)))
            has_c[rc] = True
        prob = RepairProblem(kq=kl[idx], wq=wlq[idx], om=oml[idx], kb=kg[idx], mb=np.ones((V, G), dtype=bool),
                             floor=floor, has_f=has_f, kc=kc, ceil=ceil, has_c=has_c, start=chosen[idx])
        fits = is_clean(prob, fitted[idx])
        for r, j in enumerate(idx):
            if fits[r]:
                chosen[j] = fitted[j]
                own[j] = True
        rows = [r for r, j in enumerate(idx) if not fits[r] and gain[j] > REFINE_MIN_GAIN]
        if not rows:
            continue
        own_new: dict[int, float] = {}  # row -> quote error of the result taken so far
        # slices whose candidate is far from their quotes also start from their own (arbitrageable) fit,
        # where the penalty path can find a better clean point than the one uphill from the candidate
        far = [r for r in rows if gain[idx[r]] > SECOND_START_GAIN]
        sub = take_rows(prob, np.array(rows + far))
        sub = replace(sub, start=np.vstack([sub.start[: len(rows)], fitted[[idx[r] for r in far]]]))
        new, clean = repair_batch(sub, levels=REFINE_LEVELS,
                                  iterations=REFINE_ITERATIONS if round_ < 2 else SECOND_SWEEP_ITERATIONS)
        fq = quote_error(sub, new)
        for n, r in enumerate(rows + far):
            if clean[n] and (r not in own_new or fq[n] < own_new[r]):
                chosen[idx[r]] = new[n]
                own_new[r] = fq[n]
    out[live] = chosen
    return out


def _cheapest_assignment(states: list[np.ndarray], costs: list[np.ndarray], kg: np.ndarray) -> np.ndarray | None:
    """Per slice, the index of the candidate state to take: the least total cost among assignments in which
    every consecutive pair is calendar-free on the later slice's grid (dynamic programming over the
    chain); None when every assignment has infinite cost. ``states`` are (L, 5) parameter arrays (NaN
    rows: not available), ``costs`` (L,) per state (inf: not allowed), ``kg`` (L, G) the check grids."""
    n, L = len(states), len(kg)
    cost = np.vstack(costs)
    # compat[a, b, j]: slice j−1 in state a and slice j in state b pass the calendar check on grid j
    compat = np.ones((n, n, L), dtype=bool)
    if L > 1:
        cur = [svi_total_variance(kg[1:], *(s[1:, c : c + 1] for c in range(5))) for s in states]
        with np.errstate(invalid="ignore"):
            for a_ in range(n):
                w_prev = svi_total_variance(kg[1:], *(states[a_][:-1, c : c + 1] for c in range(5)))
                for b_ in range(n):
                    compat[a_, b_, 1:] = (cur[b_] - w_prev).min(1) >= -TOLERANCE
    acc = cost[:, 0].copy()
    back = np.zeros((n, L), dtype=int)
    for j in range(1, L):
        via = np.where(compat[:, :, j], acc[:, None], np.inf)  # (from, to)
        back[:, j] = np.argmin(via, axis=0)
        acc = via[back[:, j], np.arange(n)] + cost[:, j]
    if not np.isfinite(acc).any():
        return None
    state = np.empty(L, dtype=int)
    state[-1] = int(np.argmin(acc))
    for j in range(L - 1, 0, -1):
        state[j - 1] = back[state[j], j]
    return state


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
    previous: np.ndarray | None = None,
) -> tuple[np.ndarray, ArbitrageReport]:
    """Check every slice and repair violators by constrained refit; returns (new params, report).

    ``params`` (S, 5) ordered by expiry; ``k``, ``w``, ``weights`` (S, N) are the quotes each slice
    was fitted to (weight 0 = padding). ``labels`` name the slices in the report (e.g. expiry dates);
    with ``T`` (years per slice) the report states fit errors in basis points of vol, and a repair that
    would raise a slice's RMSE to its quotes by more than ``max_cost_bp`` is not applied (the slice
    stays as fitted and the report lists it as unresolved: such quotes are more likely bad data than
    a real arbitrage, and one absurd slice must not drag every later expiry with it). ``previous``
    (S, 5): the repaired slices of the last refit of this chain (NaN rows where none), candidates the
    repair takes where they are clean and close to the quotes (a streaming refit's warm start).
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
        fitted = p.copy()

        def cost(i: int, new: np.ndarray, limit_bp: float = max_cost_bp) -> tuple[bool, str]:
            """Whether a repair stays within ``limit_bp`` of the slice's own fit, and its report line."""
            used = weights[i] > 0
            ti = None if T is None else float(T[i])
            unit = "in total variance" if ti is None else "bp of vol"
            e_old = _fit_error(fitted[i], k[i][used], w[i][used], ti)
            e_new = _fit_error(new, k[i][used], w[i][used], ti)
            if ti is not None and e_new > e_old + limit_bp:
                return False, (f"{labels[i]}: left as fitted; the arbitrage-free refit would move it "
                               f"{e_new - e_old:.0f} bp of vol away from its quotes (limit {max_cost_bp:g} bp)")
            return True, f"{labels[i]}: refitted under no-arbitrage constraints (RMSE to mid {e_old:.3g} -> " \
                         f"{e_new:.3g} {unit})"

        try:
            last = None if previous is None else np.asarray(previous, dtype=float).reshape(S, 5)
            proposed = _batched_repair(p, k, w, weights, grids, before, last)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:  # degenerate data: slow path
            log.warning("batched arbitrage repair failed (%s); repairing slice by slice", exc)
            proposed = p.copy()
        lines: dict[int, str] = {}
        for i in range(S):
            if np.isfinite(proposed[i]).all() and not np.array_equal(proposed[i], p[i]):
                # a costly proposal goes to the slice-by-slice refit below, which can move the cost to
                # the later slice of a crossing pair instead
                ok, line = cost(i, proposed[i], min(max_cost_bp, BATCH_COST_BP))
                if ok:
                    p[i] = proposed[i]
                    lines[i] = line
        # whatever is still not clean (a proposal over the cost limit, a slice the batch could not
        # handle): the general constrained refit, slice by slice against the predecessor. The batched
        # check (stricter on Lee's bound than slice_clean) first: usually every slice passes it, and
        # the loop's 48 one-slice checks are skipped
        batch_checks = check_slices(p, grids)
        fine = all(c.ok and p[i, 4] > 0 for i, c in enumerate(batch_checks) if np.isfinite(p[i]).all())
        prev: np.ndarray | None = None
        for i in range(S):
            if fine or not np.isfinite(p[i]).all():
                continue
            grid = grids[i]
            floor = svi_total_variance(grid, *prev) if prev is not None else None
            if not slice_clean(p[i], grid, floor):
                used = weights[i] > 0
                new = _constrained_refit(k[i][used], w[i][used], weights[i][used], p[i], grid, floor, prev)
                if new is None:
                    unresolved.append(f"{labels[i]}: constrained refit did not remove the arbitrage")
                else:
                    ok, line = cost(i, new)
                    if ok:
                        p[i] = new
                        lines[i] = line
                    else:
                        lines.pop(i, None)
                        p[i] = fitted[i]
                        unresolved.append(line)
            prev = p[i]
        repairs = [lines[i] for i in sorted(lines)]
        after = batch_checks if fine else check_slices(p, grids)
    else:
        after = before
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

