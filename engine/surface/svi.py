"""Raw SVI smiles in total variance and their fast batched fit (Zeliade quasi-explicit method).

Conventions
-----------
- ``k = ln(K / F_T)`` is log forward-moneyness; ``w(k) = σ_BS(k)² · T`` is total implied variance.
- Raw SVI (Gatheral 2004): ``w(k) = a + b (ρ (k − m) + sqrt((k − m)² + σ²))`` with ``b ≥ 0``,
  ``|ρ| < 1``, ``σ > 0``.
- Lee's moment bound on the wings: ``b (1 + |ρ|) ≤ 2`` (slope of ``w`` at ±∞ at most 2).
- Durrleman's butterfly condition: the risk-neutral density is non-negative iff
  ``g(k) = (1 − k w'/(2w))² − (w'²/4)(1/w + 1/4) + w''/2 ≥ 0`` (and ``w > 0``).

The fit (Zeliade Systems, "Quasi-explicit calibration of Gatheral's SVI model", 2009): for fixed
``(m, σ)`` put ``y = (k − m)/σ``; then ``w = a + d·y + c·sqrt(y² + 1)`` is linear in ``(a, d, c)``
with ``c = bσ``, ``d = ρbσ``. The inner weighted least squares is solved in closed form over the
admissible domain ``|d| ≤ c``, ``c + |d| ≤ 2σ`` (the Lee bound), ``a + sqrt(c² − d²) ≥ 0``
(non-negative minimum variance). The outer search over ``(m, σ)`` is a vectorized grid with
successive zooms around the best candidates; every slice of a surface is fitted in one batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Lee's bound on the wing slope of total variance: b (1 + |ρ|) ≤ LEE_BOUND.
LEE_BOUND = 2.0
#: smallest SVI σ as a fraction of the quoted k range (no sharper kink than that)
MIN_SIGMA_SPAN = 0.05
#: points per slice the (m, σ) search looks at before its last two zoom levels (see :func:`fit_svi_batch`)
SEARCH_POINTS = 64
FULL_LEVELS = 2


@dataclass(frozen=True, slots=True)
class SVIParams:
    """Raw SVI parameters of one slice (total variance in k = ln K/F)."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def as_array(self) -> np.ndarray:
        return np.array([self.a, self.b, self.rho, self.m, self.sigma], dtype=float)

    @classmethod
    def from_array(cls, x: np.ndarray) -> SVIParams:
        a, b, rho, m, sigma = (float(v) for v in np.asarray(x, dtype=float)[:5])
        return cls(a, b, rho, m, sigma)

    def total_variance(self, k: np.ndarray | float) -> np.ndarray:
        return svi_total_variance(k, self.a, self.b, self.rho, self.m, self.sigma)

    @property
    def min_variance(self) -> float:
        """Minimum of w(k): a + b σ sqrt(1 − ρ²)."""
        return self.a + self.b * self.sigma * float(np.sqrt(max(0.0, 1.0 - self.rho**2)))

    @property
    def lee_slope(self) -> float:
        """b (1 + |ρ|); must be ≤ 2."""
        return self.b * (1.0 + abs(self.rho))


def svi_total_variance(k: np.ndarray | float, a, b, rho, m, sigma) -> np.ndarray:
    """w(k) for raw SVI; parameters may be arrays that broadcast against ``k``."""
    x = np.asarray(k, dtype=float) - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def svi_derivatives(k: np.ndarray | float, a, b, rho, m, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w, w', w'') of raw SVI with respect to k; broadcasting like :func:`svi_total_variance`."""
    x = np.asarray(k, dtype=float) - m
    r = np.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + r)
    w1 = b * (rho + x / r)
    w2 = b * sigma * sigma / (r * r * r)
    return w, w1, w2


def durrleman_g(k: np.ndarray | float, a, b, rho, m, sigma) -> np.ndarray:
    """Durrleman's g(k); negative values mean butterfly arbitrage (negative density).

    Where ``w ≤ 0`` the result is ``-inf`` (a non-positive total variance is itself an arbitrage).
    """
    kk = np.asarray(k, dtype=float)
    w, w1, w2 = svi_derivatives(kk, a, b, rho, m, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (1.0 - kk * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    return np.where(w > 0, g, -np.inf)


# ---- the inner problem: closed-form constrained LS in (d, c) with a eliminated ----------------------


def _prepare(k: np.ndarray, w: np.ndarray, om: np.ndarray) -> tuple[np.ndarray, ...]:
    """Candidate-independent weighted moments of one batch (weights sum to 1 per row)."""
    col = lambda x: x.sum(-1)[:, None]  # noqa: E731
    return (k, col(om * k), col(om * k * k), col(om * w), col(om * k * w), col(om * w * w),
            np.stack([om, om * k, om * w], axis=-1))


def _thinned(k: np.ndarray, w: np.ndarray, om: np.ndarray, n: int) -> tuple[np.ndarray, ...] | None:
    """:func:`_prepare` of at most ``n`` points per row, evenly spread over each row's weighted points
    (weights renormalised); None when no row has more than ``n`` points (nothing to gain)."""
    live = om > 0
    counts = live.sum(1)
    if counts.max(initial=0) <= n:
        return None
    rank = np.cumsum(live, axis=1) - 1
    bucket = np.where(live, (rank * n) // np.maximum(counts, 1)[:, None], -1)
    prev = np.concatenate([np.full((len(k), 1), -1), bucket[:, :-1]], axis=1)
    pick = live & (bucket != prev)  # the first point of each of the n buckets (every point when fewer)
    order = np.argsort(~pick, axis=1, kind="stable")[:, :n]
    kept = np.take_along_axis(pick, order, 1)
    kt = np.take_along_axis(k, order, 1)
    wt = np.take_along_axis(w, order, 1)
    ot = np.where(kept, np.take_along_axis(om, order, 1), 0.0)
    tot = ot.sum(1)
    ot = ot / np.where(tot > 0, tot, 1.0)[:, None]
    return _prepare(kt, wt, ot)


def _inner_solve(pre: tuple[np.ndarray, ...], m: np.ndarray, s: np.ndarray):
    """Best (a, d, c) and weighted SSR for candidate (m, σ).

    ``pre`` from :func:`_prepare` on (S, N) arrays (padding has weight 0); m, s are (S, P).
    Returns arrays (S, P): objective, a, d, c. Through the compiled kernels once loaded (:func:`warm_up`), which
    give the numpy path's bits.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        compiled = compiled_kernels()
        if compiled is not None:
            return _inner_solve_compiled(compiled, pre, m, s)
        return _inner_solve_impl(pre, m, s)


def _inner_solve_compiled(kernels: Any, pre: tuple[np.ndarray, ...], m: np.ndarray, s: np.ndarray):
    """:func:`_inner_solve_impl` with its (S, P, N) pass and its closed form in compiled loops
    (:mod:`engine.surface._svi_kernels`); ``1/σ`` and the moments' matrix product stay numpy's."""
    k, k1, k2, w1, kw, ww, vec = pre
    m = np.ascontiguousarray(m, dtype=np.float64)
    s = np.ascontiguousarray(s, dtype=np.float64)
    inv_s = 1.0 / s
    z = np.empty((*m.shape, k.shape[1]))
    kernels.z_pass(np.ascontiguousarray(k, dtype=np.float64), m, inv_s, z)
    mom = np.ascontiguousarray(np.matmul(z, vec))  # (S, P, 3): Σωz, Σωkz, Σωwz
    out = np.empty((4, *m.shape))
    kernels.closed_form(mom, *(np.ascontiguousarray(x.reshape(-1), dtype=np.float64) for x in (k1, k2, w1, kw, ww)),
                        m, s, inv_s, out)
    return out[0], out[1], out[2], out[3]


_svi_kernels: Any = None
_warm_lock = threading.Lock()


def compiled_kernels() -> Any:
    """The loaded kernels when the compiled path is in use: loaded by :func:`warm_up` and not switched off
    process-wide (:func:`engine.pricing._kernels.numpy_only`, the pricing kernels' switch)."""
    if _svi_kernels is None:
        return None
    from engine.pricing import _kernels as switch

    return _svi_kernels if switch.kernels() is not None else None


def warm_up(cache_dir: Any = None) -> bool:
    """Load the numba kernels of :mod:`engine.surface._svi_kernels` (the SVI inner solve's and the arbitrage
    repair's; compiled on a first run, then read from numba's on-disk cache); False when numba is missing or
    disabled, and the fit and the repair keep the numpy path.
    :func:`engine.pricing._kernels.warm_up` (the engine's background warm-up, scripts, benchmarks, the build's
    cache step) calls it after the pricing kernels, in their cache folder: a compile never happens on a
    caller's thread, and importing this module imports no numba."""
    global _svi_kernels
    from engine.pricing import _kernels as switch

    with _warm_lock:
        if _svi_kernels is not None:
            return True
        if not switch.numba_available():
            return False
        switch.configure_cache_dir(cache_dir)
        from engine.surface import _svi_kernels as kernels

        one, one1 = np.ones((1, 1)), np.ones(1)
        yes = np.ones((1, 1), dtype=np.bool_)
        kernels.z_pass(one, one, one, np.empty((1, 1, 1)))
        kernels.closed_form(np.ones((1, 1, 3)), *(one1,) * 5, one, one, one, np.empty((4, 1, 1)))
        out, flag, out1 = np.empty((1, 1)), np.empty(1, dtype=np.bool_), np.empty(1)
        kernels.repair_points(np.ones((1, 5)), one, one, one, one, yes, one, yes, one, one, yes, one1, one1, one1,
                              1e-5, 1e-9, out, out, out, out, out, out, flag, flag, out1, out1)
        kernels.quote_jacobian(one, one, one, np.ones((1, 5)), np.ones((1, 5)), np.empty((1, 1, 5)))
        kernels.row_sums(one, out1)
        kernels.svi_ssr(one, one, one, np.ones((1, 5)), out1)
        kernels.svi_residuals_jacobian(one, one, one, np.ones((1, 5)), np.empty((1, 1)), np.empty((1, 1, 5)))
        one3 = np.ones(3)
        kernels.essvi_calendar(one3, np.zeros(3), np.full(3, 0.5), np.linspace(0.0, 1.0, 5), True, np.ones((3, 2)),
                               True, np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), 1.0, 1, 4)
        counts = np.empty(1, dtype=np.int64)
        kernels.slice_checks(np.ones((1, 5)), one, 1e-9, out1, counts, counts, out1)
        kernels.essvi_model(one1, one1, one1, one, one, one, True, np.empty((1, 1)), np.empty((1, 1, 2)))
        for kernel in (kernels.z_pass, kernels.closed_form, kernels.repair_points, kernels.quote_jacobian,
                       kernels.row_sums, kernels.svi_ssr, kernels.svi_residuals_jacobian, kernels.essvi_calendar,
                       kernels.slice_checks, kernels.essvi_model):
            kernel.disable_compile()  # other argument types raise TypeError, never compile
        _svi_kernels = kernels
    return True


def _inner_solve_impl(pre: tuple[np.ndarray, ...], m: np.ndarray, s: np.ndarray):
    # Moments of k and w are closed form in (m, σ); only z = sqrt(y² + 1) needs the (S, P, N) pass.
    k, k1, k2, w1, kw, ww, vec = pre
    inv_s = 1.0 / s
    z = np.subtract(k[:, None, :], m[:, :, None])  # (S, P, N), then in place: z = sqrt(y² + 1)
    z *= inv_s[:, :, None]
    np.multiply(z, z, out=z)
    z += 1.0
    np.sqrt(z, out=z)
    mom = np.matmul(z, vec)  # (S, P, 3): Σωz, Σωkz, Σωwz
    zbar, kz, zw = mom[..., 0], mom[..., 1], mom[..., 2]
    ybar = (k1 - m) * inv_s
    y2 = (k2 - 2.0 * m * k1 + m * m) * inv_s * inv_s
    syy = y2 - ybar * ybar
    szz = (y2 + 1.0) - zbar * zbar
    syz = (kz - m * zbar) * inv_s - ybar * zbar
    syw = (kw - m * w1) * inv_s - ybar * w1
    szw = zw - zbar * w1
    sww = ww - w1 * w1
    tol = 1e-12

    # 1) unconstrained stationary point, kept if inside the diamond |d| ≤ c ≤ 2σ − |d|
    det = syy * szz - syz * syz
    d0 = (syw * szz - szw * syz) / det
    c0 = (szw * syy - syw * syz) / det
    ok = (np.abs(det) > 1e-300) & (c0 >= np.abs(d0) - tol) & (c0 + np.abs(d0) <= 2.0 * s + tol)
    f0 = np.where(ok, sww - 2.0 * (d0 * syw + c0 * szw) + d0 * d0 * syy + 2.0 * d0 * c0 * syz + c0 * c0 * szz,
                  np.inf)

    # 2) the four edges of the diamond at once (vertices (0,0), (σ,σ), (0,2σ), (−σ,σ)), minimiser clipped
    #    to each edge; edge e runs from P0_e to P0_e + U_e with U = σ·(±1, ±1)
    p0d = np.stack([0.0 * s, s, 0.0 * s, -s])
    p0c = np.stack([0.0 * s, s, 2.0 * s, s])
    ud = np.array([1.0, -1.0, -1.0, 1.0])[:, None, None] * s
    uc = np.array([1.0, 1.0, -1.0, -1.0])[:, None, None] * s
    quq = ud * ud * syy + 2.0 * ud * uc * syz + uc * uc * szz
    lin = (ud * syw + uc * szw) - (ud * (syy * p0d + syz * p0c) + uc * (syz * p0d + szz * p0c))
    t = np.clip(np.where(quq > 1e-300, lin / quq, 0.0), 0.0, 1.0)
    de = p0d + t * ud
    ce = p0c + t * uc
    fe = sww - 2.0 * (de * syw + ce * szw) + de * de * syy + 2.0 * de * ce * syz + ce * ce * szz
    e = np.argmin(fe, axis=0)[None]
    fe_best = np.take_along_axis(fe, e, 0)[0]
    take = fe_best < f0
    best_f = np.where(take, fe_best, f0)
    best_d = np.where(take, np.take_along_axis(de, e, 0)[0], d0)
    best_c = np.where(take, np.take_along_axis(ce, e, 0)[0], c0)

    a = w1 - best_d * ybar - best_c * zbar
    # non-negative minimum variance: a ≥ −sqrt(c² − d²); the SSR grows by (Δa)² (weights sum to 1)
    floor = -np.sqrt(np.maximum(best_c * best_c - best_d * best_d, 0.0))
    a_adj = np.maximum(a, floor)
    best_f = best_f + (a_adj - a) ** 2
    return best_f, a_adj, best_d, best_c


@dataclass(frozen=True, slots=True)
class SVIBatchFit:
    """Result of :func:`fit_svi_batch`: one row per slice."""

    params: np.ndarray  # (S, 5) columns a, b, rho, m, sigma
    wrmse: np.ndarray  # (S,) weighted RMS residual in total variance


def _sigma_floor(m: np.ndarray, kmin: np.ndarray, kmax: np.ndarray, s_min: np.ndarray) -> np.ndarray:
    """Smallest admissible σ at vertex ``m``: s_min, and at least the distance from m to the quotes.

    A vertex outside the quoted range must have its curvature reach into the quotes; otherwise the
    quotes see a straight line and the kink (and the wing beyond it) is pure, unidentified
    extrapolation that breeds butterfly and calendar arbitrage.
    """
    dist = np.maximum(np.maximum(kmin - m, m - kmax), 0.0)
    return np.maximum(s_min, dist)


def _admissible(p: np.ndarray, m_lo: np.ndarray, m_hi: np.ndarray, s_min: np.ndarray, kmin: np.ndarray,
                kmax: np.ndarray) -> np.ndarray:
    """Rows of (S, 5) parameters inside the fit's domain (b ≥ 0, |ρ| < 1, σ above its floor, m in range,
    Lee, w_min ≥ 0)."""
    a, b, rho, m, sig = p.T
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(p).all(axis=1)
            & (m >= m_lo)
            & (m <= m_hi)
            & (sig >= _sigma_floor(m, kmin, kmax, s_min) * (1 - 1e-12))
            & (b >= 0)
            & (np.abs(rho) < 1.0)
            & (sig > 1e-8)
            & (b * (1.0 + np.abs(rho)) <= LEE_BOUND + 1e-12)
            & (a + b * sig * np.sqrt(np.maximum(1.0 - rho * rho, 0.0)) >= -1e-12)
        )


def _polish_ssr(k: np.ndarray, w: np.ndarray, om: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The polish's objective per slice, Σ ω·(w_SVI − w)², on numpy (the compiled ``svi_ssr`` gives its bits)."""
    wf = svi_total_variance(k, *(p[:, i : i + 1] for i in range(5)))
    return (om * (wf - w) ** 2).sum(-1)


def _polish_residuals_jacobian(k: np.ndarray, w: np.ndarray, sq: np.ndarray,
                               p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polish's residuals √ω·(w_SVI − w) (S, N) and their Jacobian in the five parameters (S, N, 5), on numpy
    (the compiled ``svi_residuals_jacobian`` gives its bits)."""
    a, b, rho, m, sig = (p[:, i : i + 1] for i in range(5))
    x = k - m
    r = np.sqrt(x * x + sig * sig)
    res = sq * (a + b * (rho * x + r) - w)
    jac = np.stack([np.ones_like(x), rho * x + r, b * x, -b * (rho + x / r), b * sig / r], axis=-1)
    jac *= sq[:, :, None]
    return res, jac


def _polish(k, w, om, params, f, iterations: int, m_lo, m_hi, s_min, kmin, kmax):
    """Levenberg-Marquardt steps on all five parameters, batched over slices.

    A step is kept only when it lowers the weighted SSR and stays admissible, so a constrained
    optimum found by the grid search is never traded for an inadmissible one.
    """
    if iterations <= 0:
        return params, f
    p = params.copy()
    lam = np.full(len(p), 1e-3)
    sq = np.sqrt(om)
    kernels = compiled_kernels()  # the residuals, Jacobian and objective in compiled loops: the same bits
    if kernels is not None:
        k, w, om, sq = (np.ascontiguousarray(x, dtype=np.float64) for x in (k, w, om, sq))

    def ssr(pp):
        if kernels is not None:
            out = np.empty(len(pp))
            kernels.svi_ssr(k, w, om, np.ascontiguousarray(pp, dtype=np.float64), out)
            return out
        return _polish_ssr(k, w, om, pp)

    f = ssr(p)
    for _ in range(iterations):
        if kernels is not None:
            res, jac = np.empty(k.shape), np.empty((*k.shape, 5))
            kernels.svi_residuals_jacobian(k, w, sq, np.ascontiguousarray(p, dtype=np.float64), res, jac)
        else:
            res, jac = _polish_residuals_jacobian(k, w, sq, p)
        jac_t = np.swapaxes(jac, 1, 2)
        jtj = np.matmul(jac_t, jac)  # batched BLAS: einsum's generic loop is several times slower here
        jtr = np.matmul(jac_t, res[:, :, None])[:, :, 0]
        diag = np.einsum("sjj->sj", jtj)
        A = jtj + lam[:, None, None] * np.einsum("sj,jl->sjl", diag + 1e-18, np.eye(5))
        try:
            step = np.linalg.solve(A, -jtr[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        cand = p + step
        fc = ssr(cand)
        good = _admissible(cand, m_lo, m_hi, s_min, kmin, kmax) & np.isfinite(fc) & (fc < f)
        p = np.where(good[:, None], cand, p)
        f = np.where(good, fc, f)
        lam = np.where(good, lam * 0.3, lam * 10.0)
    return p, f


def fit_svi_batch(
    k: np.ndarray,
    w: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    coarse_m: int = 17,
    coarse_s: int = 13,
    zoom_levels: int = 7,
    starts: int = 3,
    polish_iterations: int = 12,
    start: np.ndarray | None = None,
    search_points: int = SEARCH_POINTS,
) -> SVIBatchFit:
    """Fit raw SVI to several slices at once.

    ``k``, ``w``, ``weights`` are (S, N) arrays; pad short slices with weight 0 (and any finite k, w).
    Weights need not be normalised. A slice whose weights are all zero gets NaN parameters.

    ``start`` (S, 5), the previous fit of the same slices (a streaming chain), replaces the coarse
    (m, σ) grid search: one start at the previous (m, σ), four zoom levels from a quarter of the
    coarse step, then the polish. Rows of ``start`` that are not finite fall back to the grid search
    for the whole batch. The caller judges whether a warm result is good enough (see ``fit_chain``).

    ``search_points``: the coarse grid and all zoom levels but the last two see at most this many
    points per slice, evenly spread over its quotes (0: all). Why: on a dense chain (200 points a
    slice) the search's (slices × candidates × points) passes were most of the fit's time, and
    choosing among (m, σ) candidates needs the smile's shape, not every strike; the last zoom levels
    and the polish run on every point, so the optimum is the full data's.
    """
    k = np.atleast_2d(np.asarray(k, dtype=float))
    w = np.atleast_2d(np.asarray(w, dtype=float))
    om = np.ones_like(k) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float)).copy()
    if k.shape != w.shape or om.shape != k.shape:
        raise ValueError(f"k, w and weights must share one shape, got {k.shape}, {w.shape}, {om.shape}")
    bad = ~(np.isfinite(k) & np.isfinite(w) & np.isfinite(om)) | (om < 0)
    om[bad] = 0.0
    k = np.where(bad, 0.0, k)
    w = np.where(bad, 0.0, w)
    total = om.sum(-1)
    empty = total <= 0
    om = om / np.where(empty, 1.0, total)[:, None]
    if np.any(empty):
        om[empty] = 1.0 / k.shape[1]
    S = k.shape[0]
    pre = _prepare(k, w, om)
    pre_search = _thinned(k, w, om, search_points) if search_points else None

    big = np.where(om > 0, k, np.nan)
    with np.errstate(all="ignore"):
        kmin = np.nanmin(np.where(empty[:, None], 0.0, big), axis=1)
        kmax = np.nanmax(np.where(empty[:, None], 0.0, big), axis=1)
    span = np.maximum(kmax - kmin, 1e-3)

    # Domain (regularisation against degenerate fits that put a sharp kink just outside the quotes and
    # extrapolate absurd wings): m within the quoted range widened by one span, σ ≥ MIN_SIGMA_SPAN·span.
    m_lo = kmin - span
    m_hi = kmax + span
    s_min = MIN_SIGMA_SPAN * span
    ls = np.linspace(0.0, np.log(40.0 / MIN_SIGMA_SPAN), coarse_s)  # σ from s_min to 40·span
    warm = start is not None and np.isfinite(np.asarray(start, dtype=float)[~empty]).all()
    if warm:
        st = np.asarray(start, dtype=float)
        starts, zoom_levels, shrink = 1, 4, 0.25
        cm = np.clip(np.nan_to_num(st[:, 3:4]), m_lo[:, None], m_hi[:, None])
        cls_ = np.log(np.maximum(np.nan_to_num(st[:, 4:5], nan=1.0),
                                 _sigma_floor(cm, kmin[:, None], kmax[:, None], s_min[:, None])))
    else:
        shrink = 1.0
        gm = np.linspace(0.0, 1.0, coarse_m)
        m_grid = m_lo[:, None] + (m_hi - m_lo)[:, None] * gm[None, :]
        s_grid = np.exp(ls)[None, :] * s_min[:, None]
        M = np.repeat(m_grid, coarse_s, axis=1)
        Sg = np.tile(s_grid, (1, coarse_m))
        f, *_ = _inner_solve(pre_search or pre, M, Sg)
        f = np.where(Sg >= _sigma_floor(M, kmin[:, None], kmax[:, None], s_min[:, None]), f, np.inf)
        order = np.argsort(f, axis=1)[:, :starts]
        cm = np.take_along_axis(M, order, 1)  # (S, starts)
        cls_ = np.log(np.take_along_axis(Sg, order, 1))
    # Per start, a 3 × 3 stencil of ±1 step around the current point in (m, ln σ) plus the Newton point
    # of the quadratic through the stencil (trust region of 4 steps). Move to the best; shrink the
    # step only when the centre stays best, so a start can travel along the curved, nearly flat
    # (m, σ) valley instead of freezing on it.
    step_m = np.repeat((shrink * (m_hi - m_lo) / (coarse_m - 1))[:, None], starts, axis=1)
    step_ls = np.full((S, starts), shrink * (ls[1] - ls[0]))
    off = np.array([-1.0, 0.0, 1.0])
    om_, os_ = np.meshgrid(off, off, indexing="ij")
    om_ = om_.ravel()[None, None, :]  # index 3·i + j ↔ (m offset i−1, σ offset j−1); centre = 4
    os_ = os_.ravel()[None, None, :]
    log_s_lo = np.log(s_min)[:, None]
    for level in range(zoom_levels):
        lp = pre if level >= zoom_levels - FULL_LEVELS or pre_search is None else pre_search
        Mz = np.clip(cm[:, :, None] + step_m[:, :, None] * om_, m_lo[:, None, None], m_hi[:, None, None])
        Lz = np.clip(cls_[:, :, None] + step_ls[:, :, None] * os_, log_s_lo[:, :, None], np.log(10.0))
        Lz = np.maximum(Lz, np.log(_sigma_floor(Mz, kmin[:, None, None], kmax[:, None, None], s_min[:, None, None])))
        fz, *_ = _inner_solve(lp, Mz.reshape(S, -1), np.exp(Lz.reshape(S, -1)))
        fz = fz.reshape(S, starts, 9)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            gm_ = 0.5 * (fz[..., 7] - fz[..., 1])
            gs_ = 0.5 * (fz[..., 5] - fz[..., 3])
            hmm = fz[..., 7] - 2 * fz[..., 4] + fz[..., 1]
            hss = fz[..., 5] - 2 * fz[..., 4] + fz[..., 3]
            hms = 0.25 * (fz[..., 8] - fz[..., 6] - fz[..., 2] + fz[..., 0])
            det = hmm * hss - hms * hms
            um = -(hss * gm_ - hms * gs_) / det
            us = -(hmm * gs_ - hms * gm_) / det
            pd = (hmm > 0) & (det > 0) & np.isfinite(um) & np.isfinite(us)
            scale = np.minimum(1.0, 4.0 / np.maximum(np.hypot(um, us), 1e-300))
        um = np.where(pd, um * scale, 0.0)
        us = np.where(pd, us * scale, 0.0)
        Mn = np.clip(cm + step_m * um, m_lo[:, None], m_hi[:, None])
        Ln = np.clip(cls_ + step_ls * us, log_s_lo, np.log(10.0))
        Ln = np.maximum(Ln, np.log(_sigma_floor(Mn, kmin[:, None], kmax[:, None], s_min[:, None])))
        fn, *_ = _inner_solve(lp, Mn, np.exp(Ln))
        j = np.argmin(fz, axis=2)
        fbest = np.take_along_axis(fz, j[:, :, None], 2)[:, :, 0]
        newton = fn < fbest
        cm_s = np.take_along_axis(Mz, j[:, :, None], 2)[:, :, 0]
        cl_s = np.take_along_axis(Lz, j[:, :, None], 2)[:, :, 0]
        cm = np.where(newton, Mn, cm_s)
        cls_ = np.where(newton, Ln, cl_s)
        factor = np.where(newton | (j != 4), 1.0, 0.5)
        step_m = step_m * factor
        step_ls = step_ls * factor

    fb, a, d, c = _inner_solve(pre, cm, np.exp(cls_))
    j = np.argmin(fb, axis=1)[:, None]
    pick = lambda arr: np.take_along_axis(arr, j, 1)[:, 0]  # noqa: E731
    a, d, c, mm, ss, fb = pick(a), pick(d), pick(c), pick(cm), np.exp(pick(cls_)), pick(fb)
    b = c / ss
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(c > 0, d / c, 0.0)
    rho = np.clip(rho, -0.999999, 0.999999)
    params = np.column_stack([a, b, rho, mm, ss])
    params, fb = _polish(k, w, om, params, fb, polish_iterations, m_lo, m_hi, s_min, kmin, kmax)
    params[empty] = np.nan
    wrmse = np.sqrt(np.maximum(fb, 0.0))
    wrmse[empty] = np.nan
    return SVIBatchFit(params=params, wrmse=wrmse)


def fit_svi(k: np.ndarray, w: np.ndarray, weights: np.ndarray | None = None) -> tuple[SVIParams, float]:
    """Fit one raw-SVI slice; returns the parameters and the weighted RMS residual in total variance."""
    k = np.asarray(k, dtype=float)
    res = fit_svi_batch(k[None, :], np.asarray(w, dtype=float)[None, :],
                        None if weights is None else np.asarray(weights, dtype=float)[None, :])
    return SVIParams.from_array(res.params[0]), float(res.wrmse[0])
