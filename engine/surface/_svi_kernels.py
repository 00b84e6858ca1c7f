"""Compiled (numba) kernels of the surface fit and its arbitrage repair, each replacing a numpy reference that
stays in place as the fallback and the tests' yardstick:

- the SVI search's inner solve (:func:`engine.surface.svi._inner_solve_impl`): the (slices × candidates × points)
  pass ``z = sqrt(((k − m)/σ)² + 1)`` and every candidate's closed form (a, d, c);
- the SVI polish's residuals, Jacobian and objective (``svi._polish_residuals_jacobian``, ``svi._polish_ssr``);
- the repair's evaluation (:func:`engine.surface.repair._points` and the sums of ``repair._evaluate``): quote
  residuals, Durrleman's g, the floor and ceiling gaps, the objective, and the dense quote Jacobian;
- the eSSVI backbone's fit residuals and derivatives and its whole calendar pass over the slices
  (``repair.fit_essvi``, ``repair.essvi_calendar``);
- the arbitrage checks' numbers (:func:`engine.surface.arbitrage.check_slices`).

Loaded only by :func:`engine.surface.svi.warm_up` (the pricing kernels' background warm-up calls it), never at
import of :mod:`engine.surface`. Every kernel repeats the numpy reference's operations element by element in the
same order, without fast-math (no fused multiply-adds), takes numpy's choices where NaNs meet a maximum, a
minimum, a clip or an argmin, and where it owns a sum, sums as numpy does (:func:`_pairwise_sum`): so they give
the same bits. Matrix products, solves and einsum sums stay numpy's.

Why: the refit of an SPX-size chain (48 slices) is hundreds of small array operations per slice batch; their
temporaries and per-call overheads were most of its time (71.5 → ~54 ms for IVs, Greeks and the repaired fit
with all of these, the same fits).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types

_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": False}
_F2 = types.Array(types.float64, 2, "C", readonly=True)
_F1 = types.Array(types.float64, 1, "C", readonly=True)
_F3 = types.Array(types.float64, 3, "C", readonly=True)
_OUT3 = types.Array(types.float64, 3, "C")

#: the diamond's four edges: start (d, c) and direction, in units of σ (svi._inner_solve_impl's p0d, p0c, ud, uc)
_P0D = (0.0, 1.0, 0.0, -1.0)
_P0C = (0.0, 1.0, 2.0, 1.0)
_UD = (1.0, -1.0, -1.0, 1.0)
_UC = (1.0, 1.0, -1.0, -1.0)


@njit([types.void(_F2, _F2, _F2, _OUT3)], **_OPTS)
def z_pass(k, m, inv_s, z):
    """z[s, p, n] = sqrt(((k[s, n] − m[s, p])·inv_s[s, p])² + 1), as the numpy path's in-place passes."""
    S, P = m.shape
    N = k.shape[1]
    for i in range(S):
        for j in range(P):
            mm = m[i, j]
            iv = inv_s[i, j]
            for n in range(N):
                y = k[i, n] - mm
                y = y * iv
                y = y * y
                y = y + 1.0
                z[i, j, n] = math.sqrt(y)


@njit([types.void(_F3, _F1, _F1, _F1, _F1, _F1, _F2, _F2, _F2, _OUT3)], **_OPTS)
def closed_form(mom, k1, k2, w1, kw, ww, m, s, inv_s, out):
    """(objective, a, d, c) of every candidate (m, σ) into out[0..3]: the numpy path's stationary point, the
    four edges of the diamond, the best of them and the minimum-variance floor, operation for operation."""
    S, P = m.shape
    tol = 1e-12
    inf = np.inf
    for i in range(S):
        k1_ = k1[i]
        k2_ = k2[i]
        w1_ = w1[i]
        kw_ = kw[i]
        ww_ = ww[i]
        for j in range(P):
            m_ = m[i, j]
            s_ = s[i, j]
            iv = inv_s[i, j]
            zbar = mom[i, j, 0]
            kz = mom[i, j, 1]
            zw = mom[i, j, 2]
            ybar = (k1_ - m_) * iv
            y2 = (k2_ - 2.0 * m_ * k1_ + m_ * m_) * iv * iv
            syy = y2 - ybar * ybar
            szz = (y2 + 1.0) - zbar * zbar
            syz = (kz - m_ * zbar) * iv - ybar * zbar
            syw = (kw_ - m_ * w1_) * iv - ybar * w1_
            szw = zw - zbar * w1_
            sww = ww_ - w1_ * w1_
            # 1) the unconstrained stationary point, kept if inside the diamond
            det = syy * szz - syz * syz
            d0 = (syw * szz - szw * syz) / det
            c0 = (szw * syy - syw * syz) / det
            ok = (abs(det) > 1e-300) and (c0 >= abs(d0) - tol) and (c0 + abs(d0) <= 2.0 * s_ + tol)
            f0 = inf
            if ok:
                f0 = sww - 2.0 * (d0 * syw + c0 * szw) + d0 * d0 * syy + 2.0 * d0 * c0 * syz + c0 * c0 * szz
            # 2) the four edges, minimiser clipped to each; the first smallest (NaN first, as np.argmin)
            best_e = -1
            fe_best = 0.0
            de_best = 0.0
            ce_best = 0.0
            for e in range(4):
                p0d = _P0D[e] * s_
                p0c = _P0C[e] * s_
                ud = _UD[e] * s_
                uc = _UC[e] * s_
                quq = ud * ud * syy + 2.0 * ud * uc * syz + uc * uc * szz
                lin = (ud * syw + uc * szw) - (ud * (syy * p0d + syz * p0c) + uc * (syz * p0d + szz * p0c))
                t = lin / quq if quq > 1e-300 else 0.0
                if t < 0.0:
                    t = 0.0
                if t > 1.0:
                    t = 1.0
                de = p0d + t * ud
                ce = p0c + t * uc
                fe = sww - 2.0 * (de * syw + ce * szw) + de * de * syy + 2.0 * de * ce * syz + ce * ce * szz
                if best_e < 0 or (fe != fe and fe_best == fe_best) or fe < fe_best:
                    best_e = e
                    fe_best = fe
                    de_best = de
                    ce_best = ce
            take = fe_best < f0
            best_f = fe_best if take else f0
            best_d = de_best if take else d0
            best_c = ce_best if take else c0
            a = w1_ - best_d * ybar - best_c * zbar
            # non-negative minimum variance: a ≥ −sqrt(c² − d²)
            v = best_c * best_c - best_d * best_d
            if v < 0.0:
                v = 0.0
            floor = -math.sqrt(v)
            if a != a or floor != floor:
                a_adj = math.nan
            else:
                a_adj = a if a >= floor else floor
            gap = a_adj - a
            out[0, i, j] = best_f + gap * gap
            out[1, i, j] = a_adj
            out[2, i, j] = best_d
            out[3, i, j] = best_c


_B2 = types.Array(types.boolean, 2, "C", readonly=True)
_OUT2 = types.Array(types.float64, 2, "C")
_OUTB = types.Array(types.boolean, 1, "C")
_OUTF = types.Array(types.float64, 1, "C")


@njit(**_OPTS)
def _block_sum(a, lo, n):
    """numpy's sum of a block of at most 128 elements: straight below 8, else eight accumulators, combined as a
    tree, and the tail added one by one."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(**_OPTS)
def _pairwise_sum(a, lo, n):
    """numpy's sum of a[lo:lo + n] (a contiguous row), bit for bit: its pairwise summation (``pairwise_sum`` in
    numpy's loops), which ``x.sum(1)`` runs on every row of a C-contiguous (V, n) array: blocks of up to 128
    elements (:func:`_block_sum`), and above that the two halves, the first cut to a multiple of 8, each summed
    the same way and then added. numpy recurses; numba cannot cache a recursive function, so the recursion runs
    on an explicit stack of (start, length, phase) frames and a stack of partial sums. Tested against numpy for
    every length to 700 and a few long ones."""
    if n <= 128:
        return _block_sum(a, lo, n)
    depth = 64  # halving from 2⁶³ elements: never reached
    starts = np.empty(depth, dtype=np.int64)
    lengths = np.empty(depth, dtype=np.int64)
    phases = np.empty(depth, dtype=np.int64)
    partial = np.empty(depth)
    top, nv = 0, 0
    starts[0], lengths[0], phases[0] = lo, n, 0
    while top >= 0:
        start, length = starts[top], lengths[top]
        if length <= 128:
            partial[nv] = _block_sum(a, start, length)
            nv += 1
            top -= 1
            continue
        half = length // 2
        half -= half % 8
        phase = phases[top]
        phases[top] = phase + 1
        if phase == 0:  # the first half
            top += 1
            starts[top], lengths[top], phases[top] = start, half, 0
        elif phase == 1:  # then the second
            top += 1
            starts[top], lengths[top], phases[top] = start + half, length - half, 0
        else:  # both done: first + second
            nv -= 1
            partial[nv - 1] = partial[nv - 1] + partial[nv]
            top -= 1
    return partial[0]


@njit([types.void(_F2, _OUTF)], **_OPTS)
def row_sums(x, out):
    """out[v] = x[v].sum() by :func:`_pairwise_sum`: how the tests compare that sum with numpy's ``x.sum(1)``."""
    for v in range(x.shape[0]):
        out[v] = _pairwise_sum(x[v], 0, x.shape[1])


@njit(inline="always", **_OPTS)
def _bound_hinge(gap, has, margin, tol):
    """One point's floor or ceiling penalty, as the numpy path's ``where(has, minimum(gap − margin, 0), 0)`` (a
    NaN gap stays NaN), and whether the bound is broken by more than ``tol``."""
    if not has:
        return 0.0, False
    h = gap - margin
    if h > 0.0:
        h = 0.0
    return h, gap < -tol


@njit([types.void(_F2, _F2, _F2, _F2, _F2, _B2, _F2, _B2, _F2, _F2, _B2, _F1, _F1, _F1, types.float64,
                  types.float64, _OUT2, _OUT2, _OUT2, _OUT2, _OUT2, _OUT2, _OUTB, _OUTB, _OUTF, _OUTF)], **_OPTS)
def repair_points(th, kq, wq, sq, kb, mb, floor, has_f, kc, ceil, has_c, cal, iwl, mu, g_margin, tol,
                  xq_out, rr_out, rq_out, hb_out, hf_out, hc_out, bad_w, clean, fq_out, f_out):
    """The pointwise part of :func:`engine.surface.repair._evaluate` for V slices of parameters ``th`` (V, 5):
    the quote residuals (and their x = k − m, √(x² + σ²)), Durrleman's g and w on the check grid, w at the
    ceiling points, the three penalty residuals (butterfly, floor, ceiling; the butterfly's non-finite ones
    zeroed) and per slice whether w failed on the grid and whether every check passes within ``tol``; then
    the objective's sums: the quote part ``fq`` and the penalised objective ``f`` (μ per slice; inf where w
    failed or f is not finite). Every element is the numpy path's operations in its order, and every sum
    numpy's pairwise summation, so the same bits."""
    V = th.shape[0]
    N = kq.shape[1]
    G = kb.shape[1]
    Gc = kc.shape[1]
    inf = np.inf
    scratch = np.empty(max(N, G, Gc))
    for v in range(V):
        a = th[v, 0]
        b = th[v, 1]
        rho = th[v, 2]
        m = th[v, 3]
        s = th[v, 4]
        for n in range(N):
            xq = kq[v, n] - m
            rr = math.sqrt(xq * xq + s * s)
            xq_out[v, n] = xq
            rr_out[v, n] = rr
            rq_out[v, n] = sq[v, n] * (a + b * (rho * xq + rr) - wq[v, n])
        bad = False
        dirty = False
        for j in range(G):
            k = kb[v, j]
            x = k - m
            r = math.sqrt(x * x + s * s)
            w = a + b * (rho * x + r)
            w1 = b * (rho + x / r)
            w2 = b * s * s / (r * r * r)
            A = 1.0 - 0.5 * k * w1 / w
            g = A * A - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
            if not w > 0:
                g = -inf
            hb = 0.0
            if mb[v, j]:
                hb = g - g_margin
                if hb > 0.0:
                    hb = 0.0
                if not math.isfinite(g):
                    bad = True
                if g < -tol:
                    dirty = True
            hb_out[v, j] = hb if math.isfinite(hb) else 0.0
            hf, below = _bound_hinge(w - floor[v, j], has_f[v, j], cal[v], tol)
            dirty |= below
            hf_out[v, j] = hf * iwl[v]
        for j in range(Gc):
            x = kc[v, j] - m
            wc = a + b * (rho * x + math.sqrt(x * x + s * s))
            hc, below = _bound_hinge(ceil[v, j] - wc, has_c[v, j], cal[v], tol)
            dirty |= below
            hc_out[v, j] = hc * iwl[v]
        bad_w[v] = bad
        clean[v] = not bad and not dirty
        for n in range(N):
            scratch[n] = rq_out[v, n] * rq_out[v, n]
        fq = _pairwise_sum(scratch, 0, N)
        for j in range(G):
            scratch[j] = hb_out[v, j] * hb_out[v, j]
        sb = _pairwise_sum(scratch, 0, G)
        for j in range(G):
            scratch[j] = hf_out[v, j] * hf_out[v, j]
        sf = _pairwise_sum(scratch, 0, G)
        for j in range(Gc):
            scratch[j] = hc_out[v, j] * hc_out[v, j]
        f = fq + mu[v] * ((sb + sf) + _pairwise_sum(scratch, 0, Gc))
        fq_out[v] = fq
        f_out[v] = inf if bad or not math.isfinite(f) else f


@njit([types.void(_F2, _F2, _F2, _F2, _F2, _OUT3)], **_OPTS)
def quote_jacobian(xq, rr, sq, th, sc, out):
    """The repair's dense quote Jacobian (V, N, 5) in scaled parameters, as :func:`engine.surface.repair._evaluate`
    builds it with numpy: ``sq · (1, ρx + r, b·x, −b·(ρ + x/r), b·σ/r) · sc``, each product in its order."""
    V, N = xq.shape
    for v in range(V):
        b = th[v, 1]
        rho = th[v, 2]
        s = th[v, 4]
        nb = -b
        bs = b * s
        c0, c1, c2, c3, c4 = sc[v, 0], sc[v, 1], sc[v, 2], sc[v, 3], sc[v, 4]
        for n in range(N):
            x = xq[v, n]
            r = rr[v, n]
            q = sq[v, n]
            out[v, n, 0] = (q * 1.0) * c0
            out[v, n, 1] = (q * (rho * x + r)) * c1
            out[v, n, 2] = (q * (b * x)) * c2
            out[v, n, 3] = (q * (nb * (rho + x / r))) * c3
            out[v, n, 4] = (q * (bs / r)) * c4


@njit(inline="always", **_OPTS)
def _svi_row(params, i):
    """Row i of (S, 5) raw-SVI parameters as (a, b, ρ, m, σ)."""
    return params[i, 0], params[i, 1], params[i, 2], params[i, 3], params[i, 4]


@njit([types.void(_F2, _F2, _F2, _F2, _OUTF)], **_OPTS)
def svi_ssr(k, w, om, params, out):
    """out[s] = Σ_n ω·(w_SVI(k) − w)² of (S, 5) raw-SVI ``params`` on (S, N) quotes: the SVI polish's objective
    (:func:`engine.surface.svi._polish`), each term as ``svi_total_variance`` and numpy's square give it and the
    sum numpy's pairwise one, so the same bits."""
    S, N = k.shape
    scratch = np.empty(N)
    for i in range(S):
        a, b, rho, m, sig = _svi_row(params, i)
        ss = sig * sig
        for n in range(N):
            x = k[i, n] - m
            d = (a + b * (rho * x + math.sqrt(x * x + ss))) - w[i, n]
            scratch[n] = om[i, n] * (d * d)
        out[i] = _pairwise_sum(scratch, 0, N)


@njit([types.void(_F2, _F2, _F2, _F2, _OUT2, _OUT3)], **_OPTS)
def svi_residuals_jacobian(k, w, sq, params, res_out, jac_out):
    """The SVI polish's weighted residuals √ω·(w_SVI − w) and their Jacobian in (a, b, ρ, m, σ), (S, N) and
    (S, N, 5), as :func:`engine.surface.svi._polish` builds them with numpy (each column, then times √ω)."""
    S, N = k.shape
    for i in range(S):
        a, b, rho, m, sig = _svi_row(params, i)
        ss = sig * sig
        nb = -b
        bsig = b * sig
        for n in range(N):
            x = k[i, n] - m
            r = math.sqrt(x * x + ss)
            q = sq[i, n]
            res_out[i, n] = q * ((a + b * (rho * x + r)) - w[i, n])
            jac_out[i, n, 0] = 1.0 * q
            jac_out[i, n, 1] = (rho * x + r) * q
            jac_out[i, n, 2] = (b * x) * q
            jac_out[i, n, 3] = (nb * (rho + x / r)) * q
            jac_out[i, n, 4] = (bsig / r) * q


# ---- the eSSVI backbone's calendar pass (engine.surface.repair.essvi_calendar) -------------------------------
# numpy's elementwise semantics, NaN included: maximum/minimum return a NaN operand, clip is
# min(max(x, lo), hi) with a NaN x kept, argmin takes the first NaN or else the first smallest.


@njit(inline="always", **_OPTS)
def _maximum(a, b):
    return a if (a >= b or a != a) else b


@njit(inline="always", **_OPTS)
def _minimum(a, b):
    return a if (a <= b or a != a) else b


@njit(inline="always", **_OPTS)
def _clip(x, lo, hi):
    m = x if x != x else (x if x > lo else lo)
    return m if m != m else (m if m < hi else hi)


@njit(inline="always", **_OPTS)
def _psi_max(theta, rho, safety):
    one = 1.0 + abs(rho)
    return safety * _minimum(4.0 / one, math.sqrt(4.0 * _maximum(theta, 0.0) / one))


@njit(inline="always", **_OPTS)
def _essvi_w(theta, rho, psi, k):
    u = psi * k
    return 0.5 * ((theta + rho * u) + math.sqrt((u * u + ((2.0 * rho) * theta) * u) + theta * theta))


@njit(**_OPTS)
def _blend_clean(theta, s0, s1, p0, p1, sv, k, floor, safety):
    """The blend's point at ``sv`` on the segment (ρ, ψ) = start → prev, and whether its slice stays on or
    above ``floor`` on ``k`` (numpy: the row's minimum ≥ 0, which a NaN fails)."""
    r = (1.0 - sv) * s0 + sv * p0
    ps = (1.0 - sv) * s1 + sv * p1
    ps = _minimum(ps, _psi_max(theta, r, safety))
    ok = True
    for g in range(k.shape[0]):
        if not _essvi_w(theta, r, ps, k[g]) - floor[g] >= 0.0:
            ok = False
            break
    return r, ps, ok


@njit(**_OPTS)
def _blend(theta, s0, s1, p0, p1, k, floor, rounds, points, safety, sv):
    """engine.surface.repair._essvi_blend: the first clean point along the segment on nested grids."""
    _, _, ok = _blend_clean(theta, s0, s1, p0, p1, 0.0, k, floor, safety)
    if ok:
        return s0, s1
    lo, hi = 0.0, 1.0
    num = points + 1
    div = float(num - 1)
    for _ in range(rounds):
        # np.linspace(lo, hi, num)[1:]: i·step + lo (i/div·delta + lo when the step is 0), the end point exact
        delta = hi - lo
        step = delta / div
        for i in range(1, num):
            y = float(i) * step if step != 0 else (float(i) / div) * delta
            sv[i - 1] = y + lo
        sv[num - 2] = hi
        j = -1
        for i in range(points):
            _, _, ok = _blend_clean(theta, s0, s1, p0, p1, sv[i], k, floor, safety)
            if ok:
                j = i
                break
        if j < 0:
            break
        lo, hi = (sv[j - 1] if j else lo), sv[j]
    r, ps, ok = _blend_clean(theta, s0, s1, p0, p1, hi, k, floor, safety)
    return (r, ps) if ok else (p0, p1)


@njit([types.void(_F1, _OUTF, _OUTF, _F1, types.boolean, _F2, types.boolean, _F2, _F2, _F2, types.float64,
                  types.int64, types.int64)], **_OPTS)
def essvi_calendar(theta, rho, psi, t, use_grids, grids, use_quotes, kq, wq, om, safety, rounds, points):
    """engine.surface.repair.essvi_calendar in one compiled pass over the slices (``rho``, ``psi`` updated in
    place): per slice the 65-point path toward the previous slice's ρ, its ψ bounds, the best fit to the
    (thinned) quotes and the blend onto the previous slice on the check grid; every element the numpy
    path's operations, every sum numpy's pairwise one, every choice numpy's, so the same bits."""
    S = rho.shape[0]
    T = t.shape[0]
    Nt = kq.shape[1]
    G = grids.shape[1]
    cand = np.empty(T)
    lo_ok = np.empty(T)
    hi_ok = np.empty(T)
    ps = np.empty(T)
    scratch = np.empty(max(Nt, 1))
    floor = np.empty(G)
    sv = np.empty(max(points, 1))
    for i in range(1, S):
        rp, pp = rho[i - 1], psi[i - 1]
        up = rp * pp
        ri = rho[i]
        th = theta[i]
        n_ok = 0
        c = 0.0
        lo = 0.0
        hi = 0.0
        for j in range(T):
            c = ri + t[j] * (rp - ri)
            lo = _maximum(_maximum((pp - up) / (1.0 - c), (pp + up) / (1.0 + c)), pp)
            hi = _psi_max(th, c, safety)
            if lo <= hi:
                cand[n_ok], lo_ok[n_ok], hi_ok[n_ok] = c, lo, hi
                n_ok += 1
        if n_ok == 0:  # the last point of the path (ρ of the previous slice)
            cand[0], lo_ok[0], hi_ok[0] = c, lo, hi
            n_ok = 1
        for q in range(n_ok):
            ps[q] = _clip(psi[i], lo_ok[q], _maximum(hi_ok[q], lo_ok[q]))
        sel = 0
        if use_quotes:
            best = 0.0
            for q in range(n_ok):
                for n in range(Nt):
                    d = _essvi_w(th, cand[q], ps[q], kq[i, n]) - wq[i, n]
                    scratch[n] = om[i, n] * (d * d)
                v = _pairwise_sum(scratch, 0, Nt)
                if q == 0:
                    best = v
                    if v != v:
                        break
                elif not v >= best:
                    best, sel = v, q
                    if v != v:
                        break
        rho[i], psi[i] = cand[sel], ps[sel]
        if use_grids:
            thp = theta[i - 1]
            for g in range(G):
                floor[g] = _essvi_w(thp, rp, pp, grids[i, g])
            rho[i], psi[i] = _blend(th, rho[i], psi[i], rp, pp, grids[i], floor, rounds, points, safety, sv)


_OUTI = types.Array(types.int64, 1, "C")


@njit(inline="always", **_OPTS)
def _nan_min_step(low, v, i):
    """One step of numpy's ``min`` over a row (i the position): the first value, then the smaller, a NaN for good."""
    if i == 0 or (low == low and (v < low or v != v)):
        return v
    return low


@njit([types.void(_F2, _F2, types.float64, _OUTF, _OUTI, _OUTI, _OUTF)], **_OPTS)
def slice_checks(params, kg, tol, min_g, butterfly, calendar, worst):
    """engine.surface.arbitrage.check_slices' numbers for (L, 5) slices on their (L, G) grids: the smallest
    Durrleman g (−inf where w ≤ 0; a NaN propagates, as numpy's min does), the points with g < −tol, and
    against the previous slice on this slice's grid the points where w falls more than tol below it and
    the most negative difference (0 when none). Each g and w is the numpy path's operations in its order."""
    L, G = kg.shape
    inf = np.inf
    for j in range(L):
        a, b, rho, m, s = _svi_row(params, j)
        ss = s * s
        bss = b * s * s
        lowest = 0.0
        count = 0
        for i in range(G):
            k = kg[j, i]
            x = k - m
            r = math.sqrt(x * x + ss)
            w = a + b * (rho * x + r)
            w1 = b * (rho + x / r)
            w2 = bss / (r * r * r)
            A = 1.0 - k * w1 / (2.0 * w)
            g = A * A - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
            if not w > 0:
                g = -inf
            lowest = _nan_min_step(lowest, g, i)
            count += g < -tol
        min_g[j] = lowest
        butterfly[j] = count
        if j == 0:
            calendar[j] = 0
            worst[j] = 0.0
            continue
        pa, pb, prho, pm, ps = _svi_row(params, j - 1)
        pss = ps * ps
        low = 0.0
        count = 0
        for i in range(G):
            k = kg[j, i]
            x = k - m
            w = a + b * (rho * x + math.sqrt(x * x + ss))
            xp = k - pm
            d = w - (pa + pb * (prho * xp + math.sqrt(xp * xp + pss)))
            low = _nan_min_step(low, d, i)
            count += d < -tol
        calendar[j] = count
        worst[j] = _minimum(low, 0.0)


@njit([types.void(_F1, _F1, _F1, _F2, _F2, _F2, types.boolean, _OUT2, _OUT3)], **_OPTS)
def essvi_model(theta, rho, psi, k, w, sq, jac, res_out, jac_out):
    """The eSSVI backbone fit's weighted residuals (S, N) and, with ``jac``, their derivatives in (ρ, ψ)
    (S, N, 2), as engine.surface.repair.fit_essvi's ``model`` computes them with numpy, operation for operation
    (``theta`` already floored)."""
    S, N = k.shape
    for i in range(S):
        th = theta[i]
        zf = psi[i] / th
        r = rho[i]
        rr2 = r * r
        half = 0.5 * th
        for n in range(N):
            kn = k[i, n]
            z = zf * kn
            zr = z + r
            R = math.sqrt((zr * zr + 1.0) - rr2)
            q = sq[i, n]
            res_out[i, n] = q * (half * ((1.0 + r * z) + R) - w[i, n])
            if jac:
                jac_out[i, n, 0] = q * (half * (z + z / R))
                jac_out[i, n, 1] = q * (0.5 * (r * kn + (zr * kn) / R))
