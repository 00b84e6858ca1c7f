"""Compiled (numba) kernels of the SVI fit's inner solve (:func:`engine.surface.svi._inner_solve_impl`).

Loaded only by :func:`engine.surface.svi.warm_up` (the pricing kernels' background warm-up calls it), never at
import of :mod:`engine.surface`. Both kernels repeat the numpy reference's operations element by element in the
same order, without fast-math (no fused multiply-adds), so they give the same bits: the (slices × candidates ×
points) pass ``z = sqrt(((k − m)/σ)² + 1)`` in one loop instead of five array passes and their temporaries, and
the closed-form (a, d, c) of each candidate in one loop instead of ~80 small array operations. The moments in
between stay numpy's batched matrix product, so they are rounded as on the numpy path.

Why: the (m, σ) search calls the inner solve 16 times per fit; on the SPX-size chain (48 slices) its numpy
passes and per-call overheads were ~18 of the refit's ~86 ms.
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
