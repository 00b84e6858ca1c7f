"""Compiled (numba) kernels of the ALO American pricer: the exercise boundary, the early-exercise premium, and
the implied-vol iteration that prices one option at a time with them (:func:`american_iv`, which calls the
per-option European solve of :mod:`engine.pricing._jit`, imported here).

Why a second implementation: the numpy path of :mod:`engine.pricing.american` makes a dozen passes over
(options × nodes × quadrature) temporaries per fixed-point step; these loops compute the same formulas, in the
same order per element, one option at a time with no temporaries. The normal CDF is W. J. Cody's rational
erfc sharing its exponential with the normal density (scipy's ``ndtr`` plus a separate ``exp`` cost ~3× more
per point); it agrees with ``ndtr`` to a few ulps, so both paths agree to ~1e-15 (tested to 1e-14).

This module imports numba at import time. Only :func:`engine.pricing.american.warm_up` imports it (called by
:func:`engine.pricing._kernels.warm_up`, the engine's background warm-up), never the pricing package itself:
importing numba costs ~0.5 s. Compiled code is cached on disk in the folder that
:func:`engine.pricing._kernels.configure_cache_dir` chose.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.pricing import _jit  # the per-option European solve and normalised Black function

_INV_SQRT_2PI = 0.3989422804014326779399460599343818684758586311649
_QD_STEP_DONE = 1e-6  # engine.pricing.american.QD_STEP_DONE (this module does not import it: numba reads it at compile)
_SQRT1_2 = 0.7071067811865475244008443621048490392848359376885
_SQRPI = 0.56418958354775628695  # 1/√π

# W. J. Cody (1969), "Rational Chebyshev approximations for the error function", Math. Comp. 23: the
# coefficients of his CALERF (netlib specfun), accurate to ~18 digits on each interval.
_A = (3.1611237438705656, 113.864154151050156, 377.485237685302021, 3209.37758913846947, 0.185777706184603153)
_B = (23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062)
_C = (0.564188496988670089, 8.88314979438837594, 66.1191906371416295, 298.635138197400131, 881.95222124176909,
      1712.04761263407058, 2051.07837782607147, 1230.33935479799725, 2.15311535474403846e-8)
_D = (15.7449261107098347, 117.693950891312499, 537.181101862009858, 1621.38957456669019, 3290.79923573345963,
      4362.61909014324716, 3439.36767414372164, 1230.33935480374942)
_P = (0.305326634961232344, 0.360344899949804439, 0.125781726111229246, 0.0160837851487422766,
      6.58749161529837803e-4, 0.0163153871373020978)
_Q = (2.56852019228982242, 1.87295284992346047, 0.527905102951428412, 0.0605183413124413191,
      0.00233520497626869185)


@njit(cache=True, nogil=True, error_model="numpy")
def _ndtr_pdf(x: float) -> tuple[float, float]:
    """(Φ(x), e^{−x²/2}) with one exponential: Cody's erfc is e^{−y²}·R(y) with y = |x|/√2, and e^{−y²} is the
    normal density's own factor, which the boundary step needs anyway (scipy's ndtr and a separate exp cost
    ~3× more per point). Agrees with scipy's ndtr to a few ulps."""
    e = math.exp(-0.5 * x * x)
    return _ndtr_given_e(x, e), e


@njit(cache=True, nogil=True, error_model="numpy")
def _ndtr_given_e(x: float, e: float) -> float:
    """Φ(x) given e = e^{−x²/2}: :func:`_ndtr_pdf` with its exponential supplied by the caller."""
    y = abs(x) * _SQRT1_2
    if y <= 0.46875:
        z = y * y
        num = (((_A[4] * z + _A[0]) * z + _A[1]) * z + _A[2]) * z + _A[3]
        den = (((z + _B[0]) * z + _B[1]) * z + _B[2]) * z + _B[3]
        return 0.5 + 0.5 * (x * _SQRT1_2 * num / den)
    if y <= 4.0:
        num = (((((((_C[8] * y + _C[0]) * y + _C[1]) * y + _C[2]) * y + _C[3]) * y + _C[4]) * y + _C[5]) * y
               + _C[6]) * y + _C[7]
        den = (((((((y + _D[0]) * y + _D[1]) * y + _D[2]) * y + _D[3]) * y + _D[4]) * y + _D[5]) * y
               + _D[6]) * y + _D[7]
        erfc = e * num / den
    else:
        z = 1.0 / (y * y)
        num = ((((_P[5] * z + _P[0]) * z + _P[1]) * z + _P[2]) * z + _P[3]) * z + _P[4]
        den = ((((z + _Q[0]) * z + _Q[1]) * z + _Q[2]) * z + _Q[3]) * z + _Q[4]
        erfc = e * (_SQRPI - z * num / den) / y
    return 0.5 * erfc if x < 0 else 1.0 - 0.5 * erfc


@njit(cache=True, nogil=True, error_model="numpy")
def _nan_max(a: float, b: float) -> float:
    """np.maximum for scalars: NaN propagates."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _nan_min(a: float, b: float) -> float:
    """np.minimum for scalars: NaN propagates."""
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


@njit(cache=True, nogil=True, error_model="numpy")
def _qd_plus(tau: float, K: float, r: float, q: float, sigma: float, x_max: float, x0: float) -> float:
    """Li's QD+ boundary at one time, Halley steps from ``x0``: :func:`engine.pricing.american._qd_plus_boundary`
    for one element."""
    s2 = sigma * sigma
    v = sigma * math.sqrt(tau)
    dr = math.exp(-r * tau)
    dq = math.exp(-q * tau)
    omega = 2 * (r - q) / s2
    root = math.sqrt((omega - 1) ** 2 + 8 * r / (s2 * (1 - dr)))
    lam = 0.5 * (-(omega - 1) - root)
    lam_p = 2 * r / (s2 * (1 - dr) ** 2 * root)
    den = 2 * lam + omega - 1
    alpha = 2 * dr * r / (s2 * den)
    beta = alpha * (1 / (1 - dr) + lam_p / den) - lam
    a_rdr = alpha / (r * dr)
    x_min = 1e-10 * K
    x = x0
    for _ in range(4):  # as american._qd_plus_boundary (the test of both paths holds them together)
        S = _nan_max(x, x_min)
        dp = math.log(S * dq / (K * dr)) / v + 0.5 * v
        dm = dp - v
        Phi_dp, e_dp = _ndtr_pdf(-dp)
        # e^{−dm²/2} = e^{−dp²/2}·S·e^{−qτ}/(K·e^{−rτ}) (dp·v − v²/2 is that log): one exponential fewer per step,
        # unless e^{−dp²/2} underflowed or rounding pushed the product past 1
        e_dm = e_dp * (S * dq / (K * dr))
        if not (e_dp > 1e-300 and e_dm <= 1.0):
            e_dm = math.exp(-0.5 * dm * dm)
        Phi_dm = _ndtr_given_e(-dm, e_dm)
        phi_dp = _INV_SQRT_2PI * e_dp
        npv = dr * K * Phi_dm - S * dq * Phi_dp
        theta = r * K * dr * Phi_dm - q * S * dq * Phi_dp - s2 * S / (2 * v) * dq * phi_dp
        charm = -dq * (phi_dp * ((r - q) / v - dm / (2 * tau)) + q * Phi_dp)
        one_m = 1 - dq * Phi_dp
        f = one_m * S - beta * (K - S - npv) + a_rdr * theta
        fp = one_m + dq / v * phi_dp + beta * one_m + a_rdr * charm
        gamma = phi_dp * dq / (v * S)
        colour = gamma * (q + (r - q) * dp / v + (1 - dp * dm) / (2 * tau))
        fpp = dq * (phi_dp / (S * v) - phi_dp * dp / (S * v * v)) + beta * gamma + a_rdr * colour
        if fp == 0.0:
            step = math.nan
        else:
            lf = f * fpp / (fp * fp)
            den2 = 1 - 0.5 * lf
            step = f / fp / den2 if den2 != 0.0 else math.nan
        if not math.isfinite(step):
            step = 0.0
        x = _nan_max(x_min, x - step)
        if abs(step) <= _QD_STEP_DONE * K:
            break
    return _nan_min(x, x_max)


# A scheme's tables and a pricing's work arrays are packed into one 2-D array each. Why: numba reference-counts
# every array a compiled function receives or rebinds (an atomic increment and decrement each), and with the
# tables and work arrays passed one by one a pricing cost ~140 such atomics, 12-15 % of an implied-vol solve
# (measured with perf); packed, a call passes three arrays.
#
# Table rows (``pack_tables``): 0 z_nodes (n+1), 1 m_frac, 2 sqrt_m_frac, 3 g1, 4 g2 (quad each), 5 t_frac,
# 6 sqrt_t_frac, 7 h (p each), then the n·quad rows of M_a and the p rows of M_p (n+1 columns each).
_Z, _M_FRAC, _SQRT_M_FRAC, _G1, _G2, _T_FRAC, _SQRT_T_FRAC, _H_W, _M_A = 0, 1, 2, 3, 4, 5, 6, 7, 8
# Work rows (n rows per block, quad columns): the vol-dependent weights and distances of the fixed-point step,
# then the vol-free discount terms an implied-vol iteration keeps across one option's pricings
_W12A, _W12B, _W3, _V3, _INV_V3, _DRIFT3, _EQ3, _ER3 = 0, 1, 2, 3, 4, 5, 6, 7
# Node rows (n columns): τ, the new boundary, K·e^{−(r−q)τ}
_TAU, _NEW_B, _ALPHA = 0, 1, 2


def pack_tables(z_nodes: np.ndarray, m_frac: np.ndarray, sqrt_m_frac: np.ndarray, g1: np.ndarray, g2: np.ndarray,
                M_a: np.ndarray, t_frac: np.ndarray, sqrt_t_frac: np.ndarray, h: np.ndarray,
                M_p: np.ndarray) -> np.ndarray:
    """A scheme's nodes, weights and interpolation matrices in the kernels' one-array layout (rows above)."""
    n1, nq, npt = z_nodes.shape[0], m_frac.shape[0], t_frac.shape[0]
    tab = np.zeros((_M_A + M_a.shape[0] + M_p.shape[0], max(n1, nq, npt)))
    for row, values in ((_Z, z_nodes), (_M_FRAC, m_frac), (_SQRT_M_FRAC, sqrt_m_frac), (_G1, g1), (_G2, g2),
                        (_T_FRAC, t_frac), (_SQRT_T_FRAC, sqrt_t_frac), (_H_W, h)):
        tab[row, :values.shape[0]] = values
    tab[_M_A:_M_A + M_a.shape[0], :n1] = M_a
    tab[_M_A + M_a.shape[0]:, :n1] = M_p
    return tab


@njit(cache=True, nogil=True, error_model="numpy")
def _work_arrays(n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """(work, node) arrays of :func:`_boundary_one` for n nodes and nq quadrature points (one per batch)."""
    return np.empty((8 * n, nq)), np.empty((3, n))


@njit(cache=True, nogil=True, error_model="numpy")
def _boundary_one(k: float, t: float, ra: float, qa: float, s: float, tab: np.ndarray, n: int, nq: int,
                  iterations: int, Hrow: np.ndarray, work: np.ndarray, node: np.ndarray, same_option: bool) -> float:
    """One put's boundary interpolant values into ``Hrow`` (n+1,); returns its X = K·min(1, r/q).

    ``same_option``: ``work`` was last used for this very option (K, T, r, q) at another vol, so its
    vol-free discount terms are kept instead of recomputed (an implied-vol iteration prices one option
    several times): the same values, two exponentials fewer per quadrature point."""
    xm = k * ra / (qa if qa > 0 else 1.0) if qa > ra else k
    Hrow[0] = 0.0
    start = xm
    for i in range(n):
        zi = (1 + tab[_Z, i + 1]) / 2
        node[_TAU, i] = t * (zi * zi)
        b0 = _qd_plus(node[_TAU, i], k, ra, qa, s, xm, start)
        if b0 == b0:  # the next node (a longer time, a lower put boundary) starts from this one's
            start = b0
        h = math.log(_nan_min(b0, xm) / xm)
        Hrow[i + 1] = h * h
    for i in range(n):
        ti = node[_TAU, i]
        sqrt_tau = math.sqrt(ti)
        stv = sqrt_tau / s
        node[_ALPHA, i] = k * math.exp(-(ra - qa) * ti)
        for j in range(nq):
            m = ti * tab[_M_FRAC, j]
            v = s * (sqrt_tau * tab[_SQRT_M_FRAC, j])
            work[_V3 * n + i, j] = v
            work[_INV_V3 * n + i, j] = 1 / v
            work[_DRIFT3 * n + i, j] = (ra - qa) * m
            if not same_option:
                work[_EQ3 * n + i, j] = math.exp(qa * (ti - m)) * qa
                work[_ER3 * n + i, j] = math.exp(ra * (ti - m)) * ra
            eq = work[_EQ3 * n + i, j]
            work[_W12A * n + i, j] = eq * ti * tab[_G1, j]
            work[_W12B * n + i, j] = eq * stv * tab[_G2, j] * _INV_SQRT_2PI
            work[_W3 * n + i, j] = work[_ER3 * n + i, j] * stv * tab[_G2, j] * _INV_SQRT_2PI
    ln_k_over_xm = math.log(k / xm)
    for it in range(iterations):
        for i in range(n):
            ti = node[_TAU, i]
            sqrt_tau = math.sqrt(ti)
            v_tau = s * sqrt_tau
            alpha = node[_ALPHA, i]
            drift_k = (ra - qa) * ti
            st = s * s * ti
            sqrt_h = math.sqrt(_nan_max(Hrow[i + 1], 0.0))
            b = xm * math.exp(-sqrt_h)
            k12a = 0.0
            k12b = 0.0
            k3 = 0.0
            for j in range(nq):
                row = _M_A + i * nq + j
                hq = 0.0
                for c in range(n + 1):
                    hq += Hrow[c] * tab[row, c]
                ln_ratio = math.sqrt(_nan_max(hq, 0.0)) - sqrt_h
                v3 = work[_V3 * n + i, j]
                dp = (ln_ratio + work[_DRIFT3 * n + i, j]) * work[_INV_V3 * n + i, j] + 0.5 * v3
                dm = dp - v3
                n_dp, e_dp = _ndtr_pdf(dp)
                k12a += work[_W12A * n + i, j] * n_dp
                k12b += work[_W12B * n + i, j] * e_dp
                k3 += work[_W3 * n + i, j] * math.exp(-0.5 * dm * dm)
            dp_k = (-sqrt_h - ln_k_over_xm + drift_k) / v_tau + 0.5 * v_tau
            dm_k = dp_k - v_tau
            n_dpk, e_dpk = _ndtr_pdf(dp_k)
            phi_p = _INV_SQRT_2PI * e_dpk
            # e^{−dm²/2} = e^{−dp²/2}·B/(K·e^{−(r−q)τ}) (dp·v − v²/2 = ln(B/K) + (r − q)τ): one exponential fewer
            e_dmk = e_dpk * (b / alpha)
            if not (e_dpk > 1e-300 and e_dmk <= 1.0):
                e_dmk = math.exp(-0.5 * dm_k * dm_k)
            phi_m = _INV_SQRT_2PI * e_dmk
            Nv = phi_m / v_tau + k3
            Dv = phi_p / v_tau + n_dpk + (k12a + k12b)
            fv = alpha * Nv / Dv
            if it == 0:  # one Jacobi-Newton step first
                Dd = -phi_p * dp_k / (b * st) + phi_p / (b * v_tau)
                Nd = -phi_m * dm_k / (b * st)
                fd = alpha * (Nd / Dv - Dd * Nv / (Dv * Dv))
                nb = b - (fv - b) / (fd - 1)
                if nb > 0 and math.isfinite(nb):
                    fv = nb
            lo = 1e-12 * k
            if fv != fv:
                node[_NEW_B, i] = math.nan
            else:
                node[_NEW_B, i] = lo if fv < lo else (xm if fv > xm else fv)
        for i in range(n):
            h = math.log(node[_NEW_B, i] / xm)
            Hrow[i + 1] = h * h
    return xm


@njit(cache=True, nogil=True, error_model="numpy")
def put_boundary(K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray, tab: np.ndarray,
                 n: int, nq: int, iterations: int, H: np.ndarray, x_max: np.ndarray) -> None:
    """Boundary interpolant values into ``H`` (N, n+1) and ``x_max`` (N,): the numpy ``_put_boundary``.

    ``tab``: :func:`pack_tables` (the M_a rows are the (n·quad, n+1) interpolation matrix; node i's quadrature
    abscissae are its rows i·quad … )."""
    work, node = _work_arrays(n, nq)
    for a in range(K.shape[0]):
        x_max[a] = _boundary_one(K[a], T[a], r[a], q[a], sigma[a], tab, n, nq, iterations, H[a], work, node, False)


@njit(cache=True, nogil=True, error_model="numpy")
def _premium_one(s_: float, k: float, t: float, ra: float, qa: float, s: float, Hrow: np.ndarray, xm: float,
                 tab: np.ndarray, n: int, nq: int, npt: int) -> float:
    """One put's early-exercise premium over its boundary (``Hrow``, ``xm`` from :func:`_boundary_one`)."""
    n1 = n + 1
    m_p = _M_A + n * nq
    sqrt_t = math.sqrt(t)
    ln_s_xm = math.log(s_ / xm)
    total = 0.0
    for j in range(npt):
        tt = t * tab[_T_FRAC, j]
        hq = 0.0
        for c in range(n1):
            hq += Hrow[c] * tab[m_p + j, c]
        ln_s_over_b = ln_s_xm + math.sqrt(_nan_max(hq, 0.0))
        v = s * (sqrt_t * tab[_SQRT_T_FRAC, j])
        dr = math.exp(-ra * tt)
        dq = math.exp(-qa * tt)
        dp = (ln_s_over_b + (ra - qa) * tt) / v + 0.5 * v
        f = ra * k * dr * _ndtr_pdf(v - dp)[0] - qa * s_ * dq * _ndtr_pdf(-dp)[0]
        total += tab[_H_W, j] * f
    return _nan_max(t * total, 0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def put_premium(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                H: np.ndarray, x_max: np.ndarray, tab: np.ndarray, n: int, nq: int, npt: int, out: np.ndarray) -> None:
    """Early-exercise premium of each put over its boundary into ``out``: the numpy ``_put_premium``."""
    for a in range(S.shape[0]):
        out[a] = _premium_one(S[a], K[a], T[a], r[a], q[a], sigma[a], H[a], x_max[a], tab, n, nq, npt)


# --------------------------------------------------------------------------------------------------------------
# Implied vol: the whole secant iteration of american._american_iv_flat per option
# --------------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _premium_bound(S: float, K: float, T: float, r: float, q: float, sigma: float) -> float:
    """american.premium_bound for one put."""
    k_bar = K * (r / (q if q > 0 else 1.0) if q > r else 1.0)
    a = math.log(S / k_bar)
    b = r - q - 0.5 * sigma * sigma
    d_t = (a + b * T) / (sigma * math.sqrt(T))
    inner = (a > 0) and (b > 0) and (a < b * T)
    d_min = 2.0 * math.sqrt(a * b) / sigma if inner else d_t
    most = K * -math.expm1(-r * T)
    bound = most * _jit._ndtr_c(-d_min, 0)  # type: ignore[call-overload]  # scipy's ndtr (a numba external)
    return bound if (a > 0) and math.isfinite(bound) else most


@njit(cache=True, nogil=True, error_model="numpy")
def _american_put_value(Sp: float, Kp: float, T: float, rp: float, qp: float, sigma: float, euro: float,
                        tab: np.ndarray, n: int, nq: int, npt: int, iterations: int, Hrow: np.ndarray,
                        work: np.ndarray, node: np.ndarray, same_option: bool) -> float:
    """The American value of one put whose European value is ``euro`` on one scheme: the boundary, the premium
    and the exercise test of american._american_block."""
    xm = _boundary_one(Kp, T, rp, qp, sigma, tab, n, nq, iterations, Hrow, work, node, same_option)
    b_now = xm * math.exp(-math.sqrt(_nan_max(Hrow[n], 0.0)))  # z = 1: τ = T
    prem = _nan_max(_premium_one(Sp, Kp, T, rp, qp, sigma, Hrow, xm, tab, n, nq, npt), 0.0)
    if Sp <= b_now:
        return Kp - Sp
    return _nan_max(euro + prem, Kp - Sp)


@njit(cache=True, nogil=True, error_model="numpy")
def _price_vega_volga(call: bool, S: float, K: float, T: float, r: float, q: float, sigma: float, ln_sk: float,
                      dq: float, dr: float) -> tuple[float, float, float]:
    """European price, vega and volga per unit vol: the arithmetic of the compiled Greeks kernel for one
    option (``ln_sk``, ``dq``, ``dr``: numpy's ln(S/K), e^{−qT}, e^{−rT}, as that kernel takes them)."""
    sqrt_t = math.sqrt(T)
    vol_t = sigma * sqrt_t
    d1 = ln_sk
    d1 += (r - q + 0.5 * sigma * sigma) * T
    d1 /= vol_t
    d2 = d1 - vol_t
    e1 = math.exp(-0.5 * d1 * d1)
    e2 = e1 * ((S * dq) / (K * dr))
    if not (e1 > 1e-300 and e2 <= 1.0):
        e2 = math.exp(-0.5 * d2 * d2)
    sign = 1.0 if call else -1.0
    dq_n1 = dq * _jit._ndtr_e(sign * d1, e1)
    k_dr_n2 = dr * K
    k_dr_n2 *= _jit._ndtr_e(sign * d2, e2)
    dq_pdf = e1 * (dq * _INV_SQRT_2PI)
    value = S * dq_n1 - k_dr_n2
    value *= sign
    vega = (S * dq_pdf) * sqrt_t
    return value, (vega * 0.01) * 100.0, ((vega * d1 * d2 / sigma) * 1e-4) * 1e4


@njit(cache=True, nogil=True, error_model="numpy")
def american_iv(p: np.ndarray, c: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                q: np.ndarray, x_init: np.ndarray, ln_sk: np.ndarray, dq: np.ndarray, dr: np.ndarray,
                f_iv: np.ndarray, df_iv: np.ndarray, x_iv: np.ndarray, bmax_iv: np.ndarray, scale_p: np.ndarray,
                x_p: np.ndarray, intrinsic_p: np.ndarray, tables: tuple, coarse_tables: tuple, limits: tuple,
                tol: float, max_iter: int, sig: np.ndarray, converged: np.ndarray, pricings: np.ndarray) -> None:
    """american._american_iv_flat, one option at a time: the European vol σ_E of the American price and the
    premium-bound test that accepts it; else the secant iteration from ``x_init`` (where positive) or σ_E (or
    0.2) on the same g(σ) = IV_european(P − premium(σ)) − σ (a Halley step on the European price, or the full
    Let's-Be-Rational solve where that step is not small), with the same secant and stopping rules. Writes the
    vol into ``sig``, whether it converged into ``converged`` and the number of American pricings it took into
    ``pricings``.

    Why one compiled loop: the numpy iteration reprices the shrinking set of unconverged options in up to a
    dozen whole-array passes whose fixed costs (about a third of a 2,000-option solve) hold the GIL; here
    each option takes only its own pricings, and a chunk releases the GIL for all of its work.

    Every σ-independent value comes from numpy, computed as the numpy path computes it: the Greeks kernel's
    ``ln_sk``, ``dq``, ``dr``; the implied-vol solve's forward ``f_iv``, discount ``df_iv``, ``x_iv`` and
    ``bmax_iv``; the put's European value ``scale_p·(intrinsic_p + b_otm(−|x_p|, σ√T))`` as bsm.price."""
    tab, n, nq, npt, iterations = tables
    c_tab, c_n, c_nq, c_npt, c_iterations = coarse_tables
    min_rate_time, skip_below, coarse_below, has_coarse = limits
    Hrow = np.empty(n + 1)
    work, node = _work_arrays(n, nq)
    c_Hrow = np.empty(c_n + 1)
    c_work, c_node = _work_arrays(c_n, c_nq)
    for i in range(p.shape[0]):
        pricings[i] = 0
        call = c[i]
        s_, k_, t_, r_, q_ = S[i], K[i], T[i], r[i], q[i]
        Sp, Kp, rp, qp = (k_, s_, q_, r_) if call else (s_, k_, r_, q_)
        # the European vol of the American price, an upper bound; the premium bound grows with σ, so at σ_E it
        # bounds the premium at the answer too, which then lies within bound / vega of σ_E: where that is below
        # tol/10 (or the pricer itself would price it as European) σ_E is the answer
        sigma_e, _reason = _jit.implied_vol_one(True, p[i], call, s_, k_, t_, r_, q_, f_iv[i], df_iv[i], x_iv[i],
                                                bmax_iv[i])
        finite_e = math.isfinite(sigma_e)
        if finite_e:
            vega_e = _price_vega_volga(call, s_, k_, t_, r_, q_, sigma_e, ln_sk[i], dq[i], dr[i])[1]
            if (rp * t_ <= min_rate_time
                    or _premium_bound(Sp, Kp, t_, rp, qp, sigma_e) <= 0.1 * tol * vega_e):
                sig[i] = sigma_e
                converged[i] = True
                continue
        converged[i] = False
        ready = False  # a new option: the work arrays hold another's vol-free terms
        c_ready = False
        sqrt_t = math.sqrt(t_)
        x_prev = math.nan
        g_prev = math.nan
        # a start given, else σ_E; prices above every European value (deep ITM puts near intrinsic) start at 0.2
        x_cur = x_init[i] if x_init[i] > 0 else (sigma_e if finite_e else 0.2)
        out = math.nan
        for _ in range(max_iter + 1):
            xc = x_cur
            # g(xc)
            if xc > 0 and math.isfinite(xc):
                pricings[i] += 1
                b_otm, _v = _jit._black_and_vega(-abs(x_p[i]), xc * sqrt_t)
                euro = scale_p[i] * (intrinsic_p[i] + b_otm)
                # american._american_block, price only: the European value where the early-exercise premium is
                # negligible (or never earned), the coarse scheme where it is tiny
                a = euro
                if rp * t_ > min_rate_time:
                    bound = _premium_bound(Sp, Kp, t_, rp, qp, xc)
                    if bound <= skip_below * Kp:
                        pass
                    elif has_coarse and bound <= coarse_below * Kp:
                        a = _american_put_value(Sp, Kp, t_, rp, qp, xc, euro, c_tab, c_n, c_nq, c_npt, c_iterations,
                                                c_Hrow, c_work, c_node, c_ready)
                        c_ready = True
                    else:
                        a = _american_put_value(Sp, Kp, t_, rp, qp, xc, euro, tab, n, nq, npt, iterations, Hrow,
                                                work, node, ready)
                        ready = True
                e_price, vega, volga = _price_vega_volga(call, s_, k_, t_, r_, q_, xc, ln_sk[i], dq[i], dr[i])
                delta = p[i] - a
                newton = delta / vega
                corr = 0.5 * newton * volga / vega
                gc = newton / (1.0 + corr)
                if not math.isfinite(gc) or abs(corr) > 0.1 or abs(gc) > 0.02:
                    iv, _reason = _jit.implied_vol_one(True, p[i] - (a - e_price), call, s_, k_, t_, r_, q_, f_iv[i],
                                                       df_iv[i], x_iv[i], bmax_iv[i])
                    gc = iv - xc
            else:
                gc = math.nan
            ok = math.isfinite(gc)
            slope = (gc - g_prev) / (xc - x_prev)
            secant = xc - gc / slope
            plain = xc + gc
            usable = math.isfinite(secant) and secant > 0 and abs(slope) > 0.05
            done = ok and (abs(gc) <= tol or (usable and abs(secant - plain) <= tol and abs(gc * g_prev) <= 0.1 * tol))
            out = (secant if usable and done else plain) if ok else math.nan
            nxt = secant if usable else plain
            x_prev = xc
            g_prev = gc if ok else math.nan
            x_cur = nxt if ok else 0.5 * xc
            if done:
                converged[i] = True
                break
        sig[i] = out
