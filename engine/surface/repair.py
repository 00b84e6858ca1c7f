"""Building blocks of the fast arbitrage repair (driven by :func:`engine.surface.arbitrage.enforce_no_arbitrage`).

Why not SLSQP alone: a general solver with finite-difference constraint Jacobians costs tens of ms per
slice (hundreds of constraint evaluations in Python), and an SPX-size chain has a dozen violating
slices, several seconds in all. The pieces here work on all slices at once, as numpy over
(slices × points):

- **eSSVI backbone** (:func:`fit_essvi`, :func:`essvi_calendar`, :func:`essvi_raw`): per slice
  w(k) = θ/2 (1 + ρφk + √((φk + ρ)² + 1 − ρ²)), φ = ψ/θ, with θ the slice's ATM total variance made
  non-decreasing (:func:`isotonic`), (ρ, ψ) fitted inside Gatheral & Jacquier's butterfly bounds and
  then held against the previous slice (wing slopes, then a search along a segment, verified on the
  grid). Free of static arbitrage by construction, and each slice is a raw-SVI slice, so the surface
  stays one type.
- **Penalty Levenberg–Marquardt** (:func:`repair_batch`): a slice is refitted to its own quotes with
  hinge penalties √μ·min(0, g(k_j) − margin) on Durrleman's g and √μ·min(0, w − floor) and
  √μ·min(0, ceiling − w) for the calendar on its check grid, with exact derivatives of g and w with
  respect to the five raw-SVI parameters (:func:`svi_g_jacobian`), only at the points that violate.
  Box constraints (b ≥ 0, |ρ| < 1, σ > 0, Lee's b(1 + |ρ|) ≤ 2) are kept by projection; every
  accepted iterate is checked, and the clean one closest to the quotes is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.surface.svi import LEE_BOUND, compiled_kernels

#: g is driven to at least this (the checks accept g ≥ −1e-9): a small positive cushion
G_MARGIN = 1e-5
#: default μ levels of the penalty, and LM iterations per level
MU_LEVELS = (1e2, 1e4, 1e6, 1e8, 1e10)
ITERATIONS_PER_LEVEL = 10
#: an LM run stops when a step improves the penalised objective by less than this fraction
STOP_REL = 1e-6
#: |ρ| stays below this (σ = √(1 − ρ²)/φ of an eSSVI slice must not vanish)
RHO_MAX = 0.999


def svi_g_jacobian(k: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Durrleman's g and total variance w with their derivatives with respect to (a, b, ρ, m, σ).

    ``k`` is (V, G), ``params`` (V, 5). Returns g (V, G), dg (V, G, 5), w (V, G), dw (V, G, 5).
    Where w ≤ 0, g is −inf (as in :func:`engine.surface.svi.durrleman_g`) and its derivative 0.
    """
    a, b, rho, m, s = (params[:, i : i + 1] for i in range(5))
    x = k - m
    r = np.sqrt(x * x + s * s)
    ir = 1.0 / r
    ir3 = ir * ir * ir
    xr = x * ir
    s2 = s * s
    w = a + b * (rho * x + r)
    w1 = b * (rho + xr)
    w2 = b * s2 * ir3
    one = np.ones_like(x)
    zero = np.zeros_like(x)
    dw = np.stack([one, rho * x + r, b * x, -w1, b * s * ir], axis=-1)
    dw1 = np.stack([zero, rho + xr, b * one, -b * s2 * ir3, -b * x * s * ir3], axis=-1)
    ir5 = ir3 * ir * ir
    dw2 = np.stack([zero, s2 * ir3, zero, 3.0 * b * s2 * x * ir5, b * s * (2.0 * r * r - 3.0 * s2) * ir5], axis=-1)
    pos = w > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iw = np.where(pos, 1.0 / w, 0.0)
        A = 1.0 - 0.5 * k * w1 * iw
        g = A * A - 0.25 * w1 * w1 * (iw + 0.25) + 0.5 * w2
        dA = (-0.5 * k * iw)[..., None] * (dw1 - (w1 * iw)[..., None] * dw)
        dg = (2.0 * A)[..., None] * dA - (0.5 * w1 * (iw + 0.25))[..., None] * dw1 \
            + (0.25 * w1 * w1 * iw * iw)[..., None] * dw + 0.5 * dw2
    g = np.where(pos, g, -np.inf)
    dg = np.where(pos[..., None], dg, 0.0)
    return g, dg, w, dw


@dataclass(frozen=True, slots=True)
class RepairProblem:
    """The slices of one batched repair (V slices, padded arrays; weight 0 / mask False = padding).

    ``kq, wq, om`` (V, N): the quotes each slice was fitted to. ``kb`` (V, G): the check grid (mask ``mb``),
    ``floor`` (V, G) the calendar floor on it (mask ``has_f``), ``kc, ceil`` (V, Gc) the ceiling
    points (mask ``has_c``). ``start`` (V, 5) the warm start (the unconstrained fit).
    """

    kq: np.ndarray
    wq: np.ndarray
    om: np.ndarray
    kb: np.ndarray
    mb: np.ndarray
    floor: np.ndarray
    has_f: np.ndarray
    kc: np.ndarray
    ceil: np.ndarray
    has_c: np.ndarray
    start: np.ndarray


def _scales(p: RepairProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Natural parameter sizes (so one LM damping fits all five) and residual units per slice."""
    tot = np.maximum(p.om.sum(1), 1e-300)
    wl = np.maximum((p.om * p.wq).sum(1) / tot, 1e-10)
    live = (p.om > 0) & ~np.isnan(p.kq)
    # the quoted k span (nanmax − nanmin over the live points) without nanmax's copies: a slice with no live
    # point gets −inf − inf, which the floor turns into 0.01 as it does nanmax's NaN
    with np.errstate(all="ignore"):
        ks = np.nan_to_num(np.where(live, p.kq, -np.inf).max(1) - np.where(live, p.kq, np.inf).min(1), nan=0.01)
    ks = np.maximum(ks, 0.01)
    sc = np.column_stack([wl, wl / ks, np.ones_like(wl), ks, ks])
    sq = np.sqrt(p.om / (tot * (1e-2 * wl) ** 2)[:, None])  # unit objective ≈ 1 % RMS error in w
    # calendar margin: a hair above the checks' absolute tolerance, in units of w
    cal_margin = np.maximum(1e-7 * wl, 5e-9)
    return sc, sq, wl, cal_margin


def _project(x: np.ndarray, sc: np.ndarray) -> np.ndarray:
    """Back into the box: b ≥ 0, |ρ| ≤ RHO_MAX, σ ≥ 1e-4·k-span, Lee's bound on b."""
    th = x * sc
    rho = np.clip(th[:, 2], -RHO_MAX, RHO_MAX)
    b = np.clip(th[:, 1], 0.0, LEE_BOUND / (1.0 + np.abs(rho)) * (1 - 1e-12))
    s = np.maximum(th[:, 4], 1e-4 * sc[:, 4])
    th = np.column_stack([th[:, 0], b, rho, th[:, 3], s])
    return th / sc


def _svi_w(k: np.ndarray, th: np.ndarray) -> np.ndarray:
    """w(k) for (V, G) points and (V, 5) parameters."""
    a, b, rho, m, s = (th[:, i : i + 1] for i in range(5))
    x = k - m
    return a + b * (rho * x + np.sqrt(x * x + s * s))


def _svi_dw(k: np.ndarray, th: np.ndarray) -> np.ndarray:
    """dw/d(a, b, ρ, m, σ), (V, G, 5), for (V, G) points and (V, 5) parameters."""
    _, b, rho, m, s = (th[:, i : i + 1] for i in range(5))
    x = k - m
    r = np.sqrt(x * x + s * s)
    return np.stack([np.ones_like(x), rho * x + r, b * x, -b * (rho + x / r), b * s / r], axis=-1)


def _svi_g(k: np.ndarray, th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g and w without derivatives (the cheap evaluation used to accept or reject a step)."""
    a, b, rho, m, s = (th[:, i : i + 1] for i in range(5))
    x = k - m
    r = np.sqrt(x * x + s * s)
    w = a + b * (rho * x + r)
    w1 = b * (rho + x / r)
    w2 = b * s * s / (r * r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        A = 1.0 - 0.5 * k * w1 / w
        g = A * A - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0, g, -np.inf), w


@dataclass(frozen=True, slots=True)
class _Eval:
    """One evaluation of the penalised objective for a batch of slices."""

    f: np.ndarray  # (V,) objective (inf where w ≤ 0 on the grid)
    fq: np.ndarray  # (V,) the quote part alone (the fit the caller cares about)
    clean: np.ndarray  # (V,) the checks pass at this point (tolerance 1e-9)
    jtj: np.ndarray | None = None  # (V, 5, 5) Gauss–Newton matrix in scaled parameters
    jtr: np.ndarray | None = None  # (V, 5) half the gradient

    def derivatives(self) -> tuple[np.ndarray, np.ndarray]:
        """(JᵀJ, Jᵀr) of an evaluation made with ``jac=True``."""
        if self.jtj is None or self.jtr is None:
            raise ValueError("this evaluation was made without derivatives")
        return self.jtj, self.jtr


def _evaluate(x: np.ndarray, p: RepairProblem, sc: np.ndarray, sq: np.ndarray, wl: np.ndarray, cal: np.ndarray,
              mu: np.ndarray, jac: bool, tol: float = 1e-9) -> _Eval:
    """The penalised objective at scaled parameters ``x``; with ``jac`` also JᵀJ and Jᵀr.

    Only violated constraint points have non-zero Jacobian rows, so derivatives are computed for
    those points alone (a handful) and for the quotes; the full grids only need g and w.
    """
    th = x * sc
    V = len(th)
    b, rho, s = th[:, 1:2], th[:, 2:3], th[:, 4:5]  # the Jacobian's
    iwl = 1.0 / wl
    kernels = compiled_kernels()
    if kernels is not None:
        xq, rr, rq, hb, hf, hc, bad_w, clean, fq, f = _points_compiled(kernels, th, p, sq, cal, iwl, mu, tol)
    else:
        xq, rr, rq, hb, hf, hc, bad_w, clean = _points(th, p, sq, cal, iwl, tol)
        fq = (rq * rq).sum(1)
        f = fq + mu * ((hb * hb).sum(1) + (hf * hf).sum(1) + (hc * hc).sum(1))
        f = np.where(bad_w | ~np.isfinite(f), np.inf, f)
    if not jac:
        return _Eval(f, fq, clean)
    # quotes: dense (V, N, 5)
    if kernels is not None:
        Jq = np.empty((*xq.shape, 5))
        kernels.quote_jacobian(xq, rr, np.ascontiguousarray(sq, dtype=np.float64), np.ascontiguousarray(th),
                               np.ascontiguousarray(sc, dtype=np.float64), Jq)
    else:
        Jq = (sq[..., None] * np.stack([np.ones_like(xq), rho * xq + rr, b * xq, -b * (rho + xq / rr), b * s / rr],
                                       axis=-1)) * sc[:, None, :]
    Jqt = np.swapaxes(Jq, 1, 2)
    jtj = np.matmul(Jqt, Jq)
    jtr = np.matmul(Jqt, rq[:, :, None])[:, :, 0]
    smu = np.sqrt(mu)
    rows, res, owner = [], [], []
    vb, gb = np.nonzero(hb < 0)
    if len(vb):
        _, dg, _, _ = svi_g_jacobian(p.kb[vb, gb][:, None], th[vb])
        rows.append(dg[:, 0, :] * (smu[vb][:, None] * sc[vb]))
        res.append(smu[vb] * hb[vb, gb])
        owner.append(vb)
    vf, gf = np.nonzero(hf < 0)
    if len(vf):
        dw = _svi_dw(p.kb[vf, gf][:, None], th[vf])
        rows.append(dw[:, 0, :] * ((smu[vf] * iwl[vf])[:, None] * sc[vf]))
        res.append(smu[vf] * hf[vf, gf])
        owner.append(vf)
    vc, gc = np.nonzero(hc < 0)
    if len(vc):
        dw = _svi_dw(p.kc[vc, gc][:, None], th[vc])
        rows.append(-dw[:, 0, :] * ((smu[vc] * iwl[vc])[:, None] * sc[vc]))
        res.append(smu[vc] * hc[vc, gc])
        owner.append(vc)
    if rows:
        Jr = np.concatenate(rows)
        r = np.concatenate(res)
        own = np.concatenate(owner)
        onehot = (own[None, :] == np.arange(V)[:, None]).astype(float)  # (V, A)
        jtj = jtj + (onehot @ (Jr[:, :, None] * Jr[:, None, :]).reshape(len(r), 25)).reshape(V, 5, 5)
        jtr = jtr + onehot @ (Jr * r[:, None])
    return _Eval(f, fq, clean, jtj, jtr)


def _points(th: np.ndarray, p: RepairProblem, sq: np.ndarray, cal: np.ndarray, iwl: np.ndarray,
            tol: float) -> tuple[np.ndarray, ...]:
    """The pointwise part of :func:`_evaluate` (numpy reference): x = k − m and √(x² + σ²) at the quotes, the
    weighted quote residuals, the butterfly, floor and ceiling penalty residuals (the butterfly's non-finite ones
    zeroed), and per slice whether w failed on the grid and whether every check passes within ``tol``."""
    a, b, rho, m, s = (th[:, i : i + 1] for i in range(5))
    xq = p.kq - m
    rr = np.sqrt(xq * xq + s * s)
    rq = sq * (a + b * (rho * xq + rr) - p.wq)
    g, wb = _svi_g(p.kb, th)
    wc = _svi_w(p.kc, th)
    with np.errstate(invalid="ignore"):
        gap_f = wb - p.floor
        gap_c = p.ceil - wc
        hb = np.where(p.mb, np.minimum(g - G_MARGIN, 0.0), 0.0)
        hf = np.where(p.has_f, np.minimum(gap_f - cal[:, None], 0.0), 0.0) * iwl[:, None]
        hc = np.where(p.has_c, np.minimum(gap_c - cal[:, None], 0.0), 0.0) * iwl[:, None]
        bad_w = (p.mb & ~np.isfinite(g)).any(1)
        clean = (~bad_w & ~(p.mb & (g < -tol)).any(1) & ~(p.has_f & (gap_f < -tol)).any(1)
                 & ~(p.has_c & (gap_c < -tol)).any(1))
    hb = np.where(np.isfinite(hb), hb, 0.0)
    return xq, rr, rq, hb, hf, hc, bad_w, clean


def _points_compiled(kernels: Any, th: np.ndarray, p: RepairProblem, sq: np.ndarray, cal: np.ndarray,
                     iwl: np.ndarray, mu: np.ndarray, tol: float) -> tuple[np.ndarray, ...]:
    """:func:`_points` in one compiled pass (``_svi_kernels.repair_points``: the numpy path's operations in its
    order, so the same bits), and the sums :func:`_evaluate` makes of them on the numpy path (the quote part
    and the penalised objective, by numpy's own pairwise summation: the same bits too)."""
    def c(a: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    V, N = p.kq.shape
    G, Gc = p.kb.shape[1], p.kc.shape[1]
    xq, rr, rq = np.empty((V, N)), np.empty((V, N)), np.empty((V, N))
    hb, hf, hc = np.empty((V, G)), np.empty((V, G)), np.empty((V, Gc))
    bad_w, clean = np.empty(V, dtype=np.bool_), np.empty(V, dtype=np.bool_)
    fq, f = np.empty(V), np.empty(V)
    kernels.repair_points(c(th), c(p.kq), c(p.wq), c(sq), c(p.kb), c(p.mb, np.bool_), c(p.floor), c(p.has_f, np.bool_),
                          c(p.kc), c(p.ceil), c(p.has_c, np.bool_), c(cal), c(iwl), c(mu), G_MARGIN, tol,
                          xq, rr, rq, hb, hf, hc, bad_w, clean, fq, f)
    return xq, rr, rq, hb, hf, hc, bad_w, clean, fq, f


def quote_error(p: RepairProblem, params: np.ndarray) -> np.ndarray:
    """The quote part of the repair objective at ``params`` (V, 5)."""
    sc, sq, wl, cal = _scales(p)
    return _evaluate(np.nan_to_num(params) / sc, p, sc, sq, wl, cal, np.ones(len(params)), jac=False).fq


def is_clean(p: RepairProblem, params: np.ndarray) -> np.ndarray:
    """Per slice: ``params`` (V, 5) pass the checks of ``p`` (butterfly, floor, ceiling; tolerance 1e-9)."""
    sc, sq, wl, cal = _scales(p)
    ok = np.isfinite(params).all(1) & (params[:, 1] >= 0) & (np.abs(params[:, 2]) < 1) & (params[:, 4] > 0)
    ok &= params[:, 1] * (1 + np.abs(params[:, 2])) <= LEE_BOUND + 1e-9
    e = _evaluate(np.nan_to_num(params) / sc, p, sc, sq, wl, cal, np.ones(len(params)), jac=False)
    return ok & e.clean


def repair_batch(p: RepairProblem, optimal_start: np.ndarray | None = None, levels: tuple[float, ...] = MU_LEVELS,
                 iterations: int = ITERATIONS_PER_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Refit every slice of ``p`` under its constraints; returns (params (V, 5), clean (V,) bool).

    Per μ level, LM steps run until the objective stops improving; the clean iterate (the start
    included) with the best quote fit is kept. A slice whose last iterate of a level is clean is
    settled (a higher μ would only pull it further from the quotes), and so is a slice whose start
    is clean and marked in ``optimal_start`` (its unconstrained fit: nothing can fit better). A slice
    for which no clean point was seen keeps its last iterate and ``clean`` False.
    """
    V = len(p.start)
    sc, sq, wl, cal = _scales(p)
    x = _project(np.nan_to_num(p.start, nan=0.0) / sc, sc)
    e0 = _evaluate(x, p, sc, sq, wl, cal, np.full(V, levels[0]), jac=False)
    best = np.where(e0.clean[:, None], x * sc, np.nan)
    best_fq = np.where(e0.clean, e0.fq, np.inf)
    settled = e0.clean & (optimal_start if optimal_start is not None else False)
    eye = np.eye(5)
    for level in levels:
        idx = np.nonzero(~settled)[0]
        if len(idx) == 0:
            break
        sub = take_rows(p, idx)
        xs, scs, sqs, wls, cals = x[idx], sc[idx], sq[idx], wl[idx], cal[idx]
        mu = np.full(len(idx), level)
        lam = np.full(len(idx), 1e-3)
        bq = best_fq[idx].copy()
        bx = best[idx] / scs
        cur = _evaluate(xs, sub, scs, sqs, wls, cals, mu, jac=True)
        jtj, jtr = cur.derivatives()
        cur_clean = cur.clean
        live = np.ones(len(idx), dtype=bool)
        for _ in range(iterations):
            if not live.any():
                break
            diag = np.einsum("vjj->vj", jtj)
            A = jtj + (lam[:, None] * (diag + 1e-12))[:, :, None] * eye
            step = np.linalg.solve(A, -jtr[:, :, None])[:, :, 0]
            cand = _project(xs + step, scs)
            # the candidate's derivatives come with it (violating points only: cheap), so an accepted step
            # needs no second evaluation
            ec = _evaluate(cand, sub, scs, sqs, wls, cals, mu, jac=True)
            good = live & np.isfinite(ec.f) & (ec.f < cur.f)
            rel = np.where(good, (cur.f - ec.f) / np.maximum(cur.f, 1e-300), 0.0)
            xs = np.where(good[:, None], cand, xs)
            cur_clean = np.where(good, ec.clean, cur_clean)
            better = good & ec.clean & (ec.fq < bq)
            bq = np.where(better, ec.fq, bq)
            bx[better] = cand[better]
            lam = np.where(good, np.maximum(lam * 0.2, 1e-10), lam * 10.0)
            live &= ~((good & (rel < STOP_REL)) | (lam > 1e6))
            ec_jtj, ec_jtr = ec.derivatives()
            jtj = np.where(good[:, None, None], ec_jtj, jtj)
            jtr = np.where(good[:, None], ec_jtr, jtr)
            cur = _Eval(np.where(good, ec.f, cur.f), np.where(good, ec.fq, cur.fq), cur_clean)
        x[idx] = xs
        improved = bq < best_fq[idx]
        best[idx[improved]] = bx[improved] * scs[improved]
        best_fq[idx] = np.minimum(best_fq[idx], bq)
        settled[idx] = cur_clean & np.isfinite(best_fq[idx])
    found = np.isfinite(best_fq)
    best[~found] = (x * sc)[~found]
    return best, found


def isotonic(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators): ATM variances in expiry order."""
    y = np.asarray(y, dtype=float)
    wts = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    vals: list[float] = []
    ws: list[float] = []
    counts: list[int] = []
    for v, wt in zip(y, wts, strict=True):
        vals.append(float(v))
        ws.append(float(wt))
        counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = ws[-2] + ws[-1]
            vals[-2] = (vals[-2] * ws[-2] + vals[-1] * ws[-1]) / wsum
            ws[-2] = wsum
            counts[-2] += counts[-1]
            vals.pop()
            ws.pop()
            counts.pop()
    return np.repeat(vals, counts)


def essvi_raw(theta: np.ndarray, rho: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Raw-SVI parameters (S, 5) of eSSVI slices w(k) = θ/2 (1 + ρφk + sqrt((φk + ρ)² + 1 − ρ²)), φ = ψ/θ."""
    th = np.maximum(np.asarray(theta, dtype=float), 1e-12)
    rho = np.asarray(rho, dtype=float)
    phi = np.asarray(psi, dtype=float) / th
    return np.column_stack([0.5 * th * (1.0 - rho * rho), 0.5 * th * phi, rho, -rho / phi,
                            np.sqrt(1.0 - rho * rho) / phi])


#: safety factor on the butterfly bounds of an eSSVI slice (the bound itself is where g touches 0)
_PSI_SAFETY = 1.0 - 1e-6


def _psi_max(theta: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Largest ψ keeping an eSSVI slice butterfly-free (Gatheral & Jacquier 2014, Theorem 4.2):
    ψ (1 + |ρ|) < 4 and ψ² (1 + |ρ|) ≤ 4θ."""
    one = 1.0 + np.abs(rho)
    return _PSI_SAFETY * np.minimum(4.0 / one, np.sqrt(4.0 * np.maximum(theta, 0.0) / one))


def fit_essvi(theta: np.ndarray, k: np.ndarray, w: np.ndarray, om: np.ndarray, rho0: np.ndarray,
              psi0: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice (ρ, ψ) of eSSVI slices through the ATM variances ``theta``, each butterfly-free, fitted
    to the (S, N) quotes by a batched Levenberg–Marquardt with analytic derivatives (no calendar
    coupling yet: :func:`essvi_calendar` adds it)."""
    th = np.maximum(theta, 1e-12)[:, None]
    tot = np.maximum(om.sum(1, keepdims=True), 1e-300)
    wl = np.maximum((om * w).sum(1, keepdims=True) / tot, 1e-10)
    sq = np.sqrt(om / tot) / wl

    def box(rho: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rho = np.clip(rho, -RHO_MAX, RHO_MAX)
        return rho, np.clip(psi, 1e-10, _psi_max(th[:, 0], rho))

    kernels = compiled_kernels()
    if kernels is not None:  # the same residuals and derivatives compiled (engine/surface/_svi_kernels.py)
        c = np.ascontiguousarray
        k, w, sq = (c(x, dtype=np.float64) for x in (k, w, sq))
        th_flat = c(th[:, 0])

    def model(rho: np.ndarray, psi: np.ndarray, jac: bool):
        if kernels is not None:
            res_c, J_c = np.empty(k.shape), np.empty((*k.shape, 2) if jac else (0, 0, 2))
            kernels.essvi_model(th_flat, c(rho, dtype=np.float64), c(psi, dtype=np.float64), k, w, sq, jac, res_c,
                                J_c)
            return res_c, (J_c if jac else None)
        z = (psi / th[:, 0])[:, None] * k
        rr = rho[:, None]
        R = np.sqrt((z + rr) ** 2 + 1.0 - rr * rr)
        res = sq * (0.5 * th * (1.0 + rr * z + R) - w)
        if not jac:
            return res, None
        d_rho = 0.5 * th * (z + z / R)
        d_psi = 0.5 * (rr * k + (z + rr) * k / R)
        return res, np.stack([sq * d_rho, sq * d_psi], axis=-1)

    rho, psi = box(np.nan_to_num(rho0, nan=0.0), np.nan_to_num(psi0, nan=1e-3))
    r, J = model(rho, psi, True)
    f = np.einsum("sn,sn->s", r, r)
    lam = np.full(len(rho), 1e-3)
    live = np.ones(len(rho), dtype=bool)
    eye = np.eye(2)
    for _ in range(iterations):
        if not live.any():
            break
        Jt = np.swapaxes(J, 1, 2)
        jtj = np.matmul(Jt, J)  # batched BLAS: einsum's generic loop is several times slower here
        jtr = np.matmul(Jt, r[:, :, None])[:, :, 0]
        A = jtj + (lam[:, None] * (np.einsum("sjj->sj", jtj) + 1e-30))[:, :, None] * eye
        step = np.linalg.solve(A, -jtr[:, :, None])[:, :, 0]
        rc, pc = box(rho + step[:, 0], psi + step[:, 1])
        res_c, _ = model(rc, pc, False)
        fc = np.einsum("sn,sn->s", res_c, res_c)
        good = live & np.isfinite(fc) & (fc < f)
        rel = np.where(good, (f - fc) / np.maximum(f, 1e-300), 0.0)
        rho, psi, f = np.where(good, rc, rho), np.where(good, pc, psi), np.where(good, fc, f)
        lam = np.where(good, np.maximum(lam * 0.2, 1e-10), lam * 10.0)
        live &= ~((good & (rel < 1e-8)) | (lam > 1e8))
        r, J = model(rho, psi, True)
    return rho, psi


def essvi_calendar(theta: np.ndarray, rho: np.ndarray, psi: np.ndarray, grids: np.ndarray | None = None,
                   quotes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Make fitted eSSVI slices (θ non-decreasing) free of calendar arbitrage, in expiry order.

    First the wings: slice i's asymptotic slopes ψ(1 ± ρ)/2 must not fall below slice i−1's, i.e.
    ψ_i − ψ_{i−1} ≥ |ρ_i ψ_i − ρ_{i−1} ψ_{i−1}|. For a given ρ_i that is a lower bound on ψ_i; if it
    exceeds the butterfly bound, ρ_i has to move toward ρ_{i−1}. Along that path (65 points, ψ_i held
    inside its bounds) the point that fits the slice's ``quotes`` (k, w, weights as (S, N)) best is
    taken; without quotes, the smallest admissible move. Equal slopes with a lower intercept can still cross, so with ``grids`` ((S, G)
    check points) each pair is then verified, and a crossing slice is moved along the segment toward
    (ρ_{i−1}, ψ_{i−1}) to its first clean point (nested grids): that end point is always admissible,
    because at fixed (ρ, ψ) w grows with θ (∂w/∂θ = (1 + (ρψk + θ)/√((ψk)² + 2ρθψk + θ²))/2 ≥ 0) and θ_i ≥ θ_{i−1}.
    """
    rho = np.array(rho, dtype=float)
    psi = np.array(psi, dtype=float)
    t = np.linspace(0.0, 1.0, 65)
    kernels = compiled_kernels()
    if kernels is not None:  # the same loop compiled (engine/surface/_svi_kernels.py): the same bits
        c = np.ascontiguousarray
        th = c(theta, dtype=np.float64)
        g = c(grids, dtype=np.float64) if grids is not None else np.zeros((len(rho), 0))
        kq, wq, om = ((c(q, dtype=np.float64) for q in quotes) if quotes is not None
                      else (np.zeros((len(rho), 0)) for _ in range(3)))
        kernels.essvi_calendar(th, rho, psi, t, grids is not None, g, quotes is not None, kq, wq, om, _PSI_SAFETY,
                               _BLEND_ROUNDS, _BLEND_POINTS)
        return rho, psi

    def w_of(i: int, r: float, ps: float, k: np.ndarray) -> np.ndarray:
        return _essvi_w(float(theta[i]), r, ps, k)

    for i in range(1, len(rho)):
        rp, pp = rho[i - 1], psi[i - 1]
        up = rp * pp
        cand = rho[i] + t * (rp - rho[i])
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = np.maximum((pp - up) / (1.0 - cand), (pp + up) / (1.0 + cand))
        lo = np.maximum(lo, pp)
        hi = _psi_max(np.full_like(cand, theta[i]), cand)
        ok = np.nonzero(lo <= hi)[0]
        if len(ok) == 0:
            ok = np.array([len(t) - 1])
        ps = np.clip(psi[i], lo[ok], np.maximum(hi[ok], lo[ok]))
        if quotes is None:
            j = 0
        else:
            kq, wq, om = (q[i] for q in quotes)
            model = _essvi_w_many(float(theta[i]), cand[ok][:, None], ps[:, None], kq[None, :])
            j = int(np.argmin((om * (model - wq) ** 2).sum(1)))
        rho[i], psi[i] = cand[ok[j]], float(ps[j])
        if grids is not None:
            rho[i], psi[i] = _essvi_blend(float(theta[i]), (rho[i], psi[i]), (rp, pp),
                                          grids[i], w_of(i - 1, rp, pp, grids[i]))
    return rho, psi


def _essvi_w(theta: float, rho: float, psi: float, k: np.ndarray) -> np.ndarray:
    """w(k) of one eSSVI slice."""
    return _essvi_w_many(theta, rho, psi, k)


def _essvi_w_many(theta: float, rho, psi, k: np.ndarray) -> np.ndarray:
    """w(k) of eSSVI slices with one θ; ρ, ψ and k broadcast."""
    u = psi * k
    return 0.5 * (theta + rho * u + np.sqrt(u * u + 2.0 * rho * theta * u + theta * theta))


def _essvi_blend(theta: float, start: tuple[float, float], prev: tuple[float, float], k: np.ndarray,
                 floor: np.ndarray) -> tuple[float, float]:
    """The point nearest ``start`` on the segment to ``prev`` (in (ρ, ψ), ψ kept under the butterfly
    bound) whose slice stays on or above ``floor`` at ``k``; ``prev`` itself always does."""

    def at(sv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = (1.0 - sv) * start[0] + sv * prev[0]
        ps = (1.0 - sv) * start[1] + sv * prev[1]
        return r, np.minimum(ps, _psi_max(np.full_like(r, theta), r))

    def clean(sv: np.ndarray) -> np.ndarray:
        r, ps = at(sv)
        return (_essvi_w_many(theta, r[:, None], ps[:, None], k[None, :]) - floor).min(1) >= 0.0

    if clean(np.zeros(1))[0]:
        return start
    # the first clean point along the segment, found on nested grids (4 rounds of 32 points resolve
    # 1e-6 of the segment, as 20 halvings would, in 4 array passes instead of 20 scalar ones)
    lo, hi = 0.0, 1.0
    for _ in range(_BLEND_ROUNDS):
        sv = np.linspace(lo, hi, _BLEND_POINTS + 1)[1:]
        ok = np.nonzero(clean(sv))[0]
        if len(ok) == 0:
            break
        j = int(ok[0])
        lo, hi = (float(sv[j - 1]) if j else lo), float(sv[j])
    r, ps = at(np.array([hi]))
    return (float(r[0]), float(ps[0])) if clean(np.array([hi]))[0] else prev


#: the segment search of :func:`_essvi_blend`: rounds of nested grids and points per round (32⁴ ≈ 1e6 steps)
_BLEND_ROUNDS = 4
_BLEND_POINTS = 32


def take_rows(p: RepairProblem, idx: np.ndarray) -> RepairProblem:
    return RepairProblem(*(getattr(p, f)[idx] for f in RepairProblem.__slots__))
