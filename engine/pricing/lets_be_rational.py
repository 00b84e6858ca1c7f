"""Normalised Black function and its inverse, vectorized: Jäckel's "Let's Be Rational" (2015) in numpy.

Normalised coordinates: ``x = ln(F/K)``, ``s = σ√T``, ``θ = +1`` call / ``-1`` put and the normalised price
``b = price / (DF·√(F·K))``. The inverse reaches machine accuracy in two Householder(3) steps from a rational
cubic initial guess on four branches, as in the paper. Region splits of the normalised Black function
(asymptotic expansion, small-t expansion, plain cumulative normal, scaled complementary error function) keep
full relative accuracy for prices far below 1e-12.

Algorithm and coefficients after Peter Jäckel, "Let's Be Rational", Wilmott (2015), and his reference code:
Copyright © 2013-2014 Peter Jäckel. Permission to use, copy, modify, and distribute this software is freely
granted, provided that this notice is preserved. The vectorization is ours.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.special import erfcx, ndtr, ndtri

DBL_EPSILON = sys.float_info.epsilon
DBL_MIN = sys.float_info.min
DBL_MAX = sys.float_info.max
SQRT_DBL_MAX = np.sqrt(DBL_MAX)
FOURTH_ROOT_DBL_EPSILON = DBL_EPSILON**0.25
SIXTEENTH_ROOT_DBL_EPSILON = DBL_EPSILON**0.0625

ONE_OVER_SQRT_TWO = 0.7071067811865475244008443621048490392848359376887
ONE_OVER_SQRT_TWO_PI = 0.3989422804014326779399460599343818684758586311649
SQRT_TWO_PI = 2.506628274631000502415765284811045253006986740610
TWO_PI = 6.283185307179586476925286766559005768394338798750
SQRT_PI_OVER_TWO = 1.253314137315500251207882642405522626503493370305
SQRT_THREE = 1.732050807568877293527446341505872366942805253810
SQRT_ONE_OVER_THREE = 0.577350269189625764509148780501957455647601751270
TWO_PI_OVER_SQRT_TWENTY_SEVEN = 1.209199576156145233729385505094770488189377498728
PI_OVER_SIX = 0.523598775598298873077107230546583814032861566563

_ASYMPTOTIC_THRESHOLD = -10.0
_SMALL_T_THRESHOLD = 2.0 * SIXTEENTH_ROOT_DBL_EPSILON
_RC_MIN = -(1.0 - np.sqrt(DBL_EPSILON))
_RC_MAX = 2.0 / (DBL_EPSILON * DBL_EPSILON)
_ITERATIONS = 2


# --------------------------------------------------------------------------------------------------------------
# Normalised Black function
# --------------------------------------------------------------------------------------------------------------


def normalised_intrinsic(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """max(θ·(e^{x/2} − e^{−x/2}), 0), with a series near x = 0 for full relative accuracy."""
    y = theta * x
    y2 = y * y
    small = y2 < 98.0 * FOURTH_ROOT_DBL_EPSILON
    series = y * (1 + y2 * (1.0 / 24.0 + y2 * (1.0 / 1920.0 + y2 * (1.0 / 322560.0 + y2 / 92897280.0))))
    with np.errstate(over="ignore"):
        half = np.exp(0.5 * y)
        full = half - 1.0 / half
    return np.maximum(np.where(small, series, full), 0.0)


def _asymptotic_expansion(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    e = (t / h) * (t / h)
    r = (h + t) * (h - t)
    q = (h / r) * (h / r)
    # 17th order asymptotic expansion of A(h,t) in q (Jäckel), relative accuracy ~1.6e-16 for h <= -10.
    s = (2.0+q*(-6.0E0-2.0*e+3.0*q*(1.0E1+e*(2.0E1+2.0*e)+5.0*q*(-1.4E1+e*(-7.0E1+e*(-4.2E1-2.0*e))+7.0*q*(1.8E1+e*(1.68E2+e*(2.52E2+e*(7.2E1+2.0*e)))+9.0*q*(-2.2E1+e*(-3.3E2+e*(-9.24E2+e*(-6.6E2+e*(-1.1E2-2.0*e))))+1.1E1*q*(2.6E1+e*(5.72E2+e*(2.574E3+e*(3.432E3+e*(1.43E3+e*(1.56E2+2.0*e)))))+1.3E1*q*(-3.0E1+e*(-9.1E2+e*(-6.006E3+e*(-1.287E4+e*(-1.001E4+e*(-2.73E3+e*(-2.1E2-2.0*e))))))+1.5E1*q*(3.4E1+e*(1.36E3+e*(1.2376E4+e*(3.8896E4+e*(4.862E4+e*(2.4752E4+e*(4.76E3+e*(2.72E2+2.0*e)))))))+1.7E1*q*(-3.8E1+e*(-1.938E3+e*(-2.3256E4+e*(-1.00776E5+e*(-1.84756E5+e*(-1.51164E5+e*(-5.4264E4+e*(-7.752E3+e*(-3.42E2-2.0*e))))))))+1.9E1*q*(4.2E1+e*(2.66E3+e*(4.0698E4+e*(2.3256E5+e*(5.8786E5+e*(7.05432E5+e*(4.0698E5+e*(1.08528E5+e*(1.197E4+e*(4.2E2+2.0*e)))))))))+2.1E1*q*(-4.6E1+e*(-3.542E3+e*(-6.7298E4+e*(-4.90314E5+e*(-1.63438E6+e*(-2.704156E6+e*(-2.288132E6+e*(-9.80628E5+e*(-2.01894E5+e*(-1.771E4+e*(-5.06E2-2.0*e))))))))))+2.3E1*q*(5.0E1+e*(4.6E3+e*(1.0626E5+e*(9.614E5+e*(4.08595E6+e*(8.9148E6+e*(1.04006E7+e*(6.53752E6+e*(2.16315E6+e*(3.542E5+e*(2.53E4+e*(6.0E2+2.0*e)))))))))))+2.5E1*q*(-5.4E1+e*(-5.85E3+e*(-1.6146E5+e*(-1.77606E6+e*(-9.37365E6+e*(-2.607579E7+e*(-4.01166E7+e*(-3.476772E7+e*(-1.687257E7+e*(-4.44015E6+e*(-5.9202E5+e*(-3.51E4+e*(-7.02E2-2.0*e))))))))))))+2.7E1*q*(5.8E1+e*(7.308E3+e*(2.3751E5+e*(3.12156E6+e*(2.003001E7+e*(6.919458E7+e*(1.3572783E8+e*(1.5511752E8+e*(1.0379187E8+e*(4.006002E7+e*(8.58429E6+e*(9.5004E5+e*(4.7502E4+e*(8.12E2+2.0*e)))))))))))))+2.9E1*q*(-6.2E1+e*(-8.99E3+e*(-3.39822E5+e*(-5.25915E6+e*(-4.032015E7+e*(-1.6934463E8+e*(-4.1250615E8+e*(-6.0108039E8+e*(-5.3036505E8+e*(-2.8224105E8+e*(-8.870433E7+e*(-1.577745E7+e*(-1.472562E6+e*(-6.293E4+e*(-9.3E2-2.0*e))))))))))))))+3.1E1*q*(6.6E1+e*(1.0912E4+e*(4.74672E5+e*(8.544096E6+e*(7.71342E7+e*(3.8707344E8+e*(1.14633288E9+e*(2.07431664E9+e*(2.33360622E9+e*(1.6376184E9+e*(7.0963464E8+e*(1.8512208E8+e*(2.7768312E7+e*(2.215136E6+e*(8.184E4+e*(1.056E3+2.0*e)))))))))))))))+3.3E1*(-7.0E1+e*(-1.309E4+e*(-6.49264E5+e*(-1.344904E7+e*(-1.4121492E8+e*(-8.344518E8+e*(-2.9526756E9+e*(-6.49588632E9+e*(-9.0751353E9+e*(-8.1198579E9+e*(-4.6399188E9+e*(-1.6689036E9+e*(-3.67158792E8+e*(-4.707164E7+e*(-3.24632E6+e*(-1.0472E5+e*(-1.19E3-2.0*e)))))))))))))))))*q)))))))))))))))))
    b = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * (t / r) * s
    return np.abs(np.maximum(b, 0.0))


def _small_t_expansion(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    a = 1 + h * (0.5 * SQRT_TWO_PI) * erfcx(-ONE_OVER_SQRT_TWO * h)
    w = t * t
    h2 = h * h
    expansion = 2*t*(a+w*((-1+3*a+a*h2)/6+w*((-7+15*a+h2*(-1+10*a+a*h2))/120+w*((-57+105*a+h2*(-18+105*a+h2*(-1+21*a+a*h2)))/5040+w*((-561+945*a+h2*(-285+1260*a+h2*(-33+378*a+h2*(-1+36*a+a*h2))))/362880+w*((-6555+10395*a+h2*(-4680+17325*a+h2*(-840+6930*a+h2*(-52+990*a+h2*(-1+55*a+a*h2)))))/39916800+((-89055+135135*a+h2*(-82845+270270*a+h2*(-20370+135135*a+h2*(-1926+25740*a+h2*(-75+2145*a+h2*(-1+78*a+a*h2))))))*w)/6227020800.0))))))
    b = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * expansion
    return np.abs(np.maximum(b, 0.0))


def _using_norm_cdf(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    h = x / s
    t = 0.5 * s
    b_max = np.exp(0.5 * x)
    b = ndtr(h + t) * b_max - ndtr(h - t) / b_max
    return np.abs(np.maximum(b, 0.0))


def _using_erfcx(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    b = (
        0.5
        * np.exp(-0.5 * (h * h + t * t))
        * (erfcx(-ONE_OVER_SQRT_TWO * (h + t)) - erfcx(-ONE_OVER_SQRT_TWO * (h - t)))
    )
    return np.abs(np.maximum(b, 0.0))


def normalised_black_otm(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Normalised out-of-the-money call b(x, s) for x <= 0, s >= 0 (1-D arrays of one length)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        half_s2 = 0.5 * s * s
        # region code: 1 asymptotic expansion, 2 small-t expansion, 3 cumulative normal, 4 erfcx, 0 s <= 0
        region = np.where(x + half_s2 > s * 0.85, np.int8(3), np.int8(4))
        region[0.5 * s < _SMALL_T_THRESHOLD] = 2
        region[(x < s * _ASYMPTOTIC_THRESHOLD)
               & (half_s2 + x < s * (_SMALL_T_THRESHOLD + _ASYMPTOTIC_THRESHOLD))] = 1
        region[~(s > 0)] = 0
        counts = np.bincount(region, minlength=5)
        if counts[4] == region.size:
            return _using_erfcx(x / s, 0.5 * s)
        if counts[3] == region.size:
            return _using_norm_cdf(x, s)
        if counts[2] == region.size:
            return _small_t_expansion(x / s, 0.5 * s)
        out = np.zeros_like(x)
        for code, fn in ((1, _asymptotic_expansion), (2, _small_t_expansion), (4, _using_erfcx)):
            if counts[code]:
                i = np.flatnonzero(region == code)
                xs, ss = x[i], s[i]
                out[i] = fn(xs / ss, 0.5 * ss)
        if counts[3]:
            i = np.flatnonzero(region == 3)
            out[i] = _using_norm_cdf(x[i], s[i])
    return out


def normalised_black(x: np.ndarray, s: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Normalised Black price b(x, s, θ) = intrinsic(θx) + b_otm(−|x|, s), accurate in every region."""
    return normalised_intrinsic(x, theta) + normalised_black_otm(-np.abs(x), s)


def normalised_vega(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """∂b/∂s = φ(x/s)·e^{-s²/8}… written as (1/√(2π))·exp(−½((x/s)² + (s/2)²))."""
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        h = np.where(x == 0, 0.0, x / s)
        v = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + 0.25 * s * s))
    return np.where(s > 0, v, np.where(x == 0, ONE_OVER_SQRT_TWO_PI, 0.0))


# --------------------------------------------------------------------------------------------------------------
# Rational cubic interpolation (Delbourgo & Gregory), vectorized
# --------------------------------------------------------------------------------------------------------------


def _rc_param_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r):
    h = x_r - x_l
    num = 0.5 * h * second_r + (d_r - d_l)
    den = d_r - (y_r - y_l) / h
    r = np.where(np.abs(den) < DBL_MIN, np.where(num > 0, _RC_MAX, _RC_MIN), num / den)
    return np.where(np.abs(num) < DBL_MIN, 0.0, r)


def _rc_param_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l):
    h = x_r - x_l
    num = 0.5 * h * second_l + (d_r - d_l)
    den = (y_r - y_l) / h - d_l
    r = np.where(np.abs(den) < DBL_MIN, np.where(num > 0, _RC_MAX, _RC_MIN), num / den)
    return np.where(np.abs(num) < DBL_MIN, 0.0, r)


def _rc_min_param(d_l, d_r, s, prefer_shape: bool):
    monotonic = (d_l * s >= 0) & (d_r * s >= 0)
    convex = (d_l <= s) & (s <= d_r)
    concave = (d_l >= s) & (s >= d_r)
    r1 = np.full_like(s, -DBL_MAX)
    s_zero = np.abs(s) < DBL_MIN
    r1 = np.where(monotonic & ~s_zero, (d_r + d_l) / np.where(s_zero, 1.0, s), r1)
    if prefer_shape:
        r1 = np.where(monotonic & s_zero, _RC_MAX, r1)
    s_m_dl = s - d_l
    dr_m_s = d_r - s
    degenerate = (np.abs(s_m_dl) < DBL_MIN) | (np.abs(dr_m_s) < DBL_MIN)
    cc = convex | concave
    with np.errstate(divide="ignore", invalid="ignore"):
        r2_val = np.maximum(np.abs((d_r - d_l) / dr_m_s), np.abs((d_r - d_l) / s_m_dl))
    r2 = np.full_like(s, -DBL_MAX)
    r2 = np.where(cc & ~degenerate, r2_val, r2)
    if prefer_shape:
        r2 = np.where(cc & degenerate, _RC_MAX, r2)
        r2 = np.where(~cc & monotonic, _RC_MAX, r2)
    result = np.maximum(_RC_MIN, np.maximum(r1, r2))
    return np.where(~monotonic & ~convex & ~concave, _RC_MIN, result)


def _convex_rc_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r, prefer_shape):
    r = _rc_param_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r)
    return np.maximum(r, _rc_min_param(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


def _convex_rc_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l, prefer_shape):
    r = _rc_param_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l)
    return np.maximum(r, _rc_min_param(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


def _rc_interp(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    h = x_r - x_l
    t = (x - x_l) / h
    omt = 1 - t
    t2 = t * t
    omt2 = omt * omt
    cubic = (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2 + y_l * omt2 * omt) / (
        1 + (r - 3) * t * omt
    )
    linear = y_r * t + y_l * (1 - t)
    out = np.where(r >= _RC_MAX, linear, cubic)
    return np.where(np.abs(h) <= 0, 0.5 * (y_l + y_r), out)


# --------------------------------------------------------------------------------------------------------------
# Inverse
# --------------------------------------------------------------------------------------------------------------


def _f_lower_map(x, s):
    ax = np.abs(x)
    z = SQRT_ONE_OVER_THREE * ax / s
    y = z * z
    s2 = s * s
    Phi = ndtr(-z)
    phi = ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * y)
    growth = np.exp(y + 0.125 * s2)  # its square is fpp's exp(2y + s²/4): one exponential for both
    fpp = (
        PI_OVER_SIX * y / (s2 * s) * Phi
        * (8 * SQRT_THREE * s * ax + (3 * s2 * (s2 - 8) - 8 * x * x) * Phi / phi)
        * (growth * growth)
    )
    Phi2 = Phi * Phi
    fp = TWO_PI * y * Phi2 * growth
    f = TWO_PI_OVER_SQRT_TWENTY_SEVEN * ax * (Phi2 * Phi)
    return f, fp, fpp


def _inverse_f_lower_map(x, f):
    arg = np.cbrt(f / (TWO_PI_OVER_SQRT_TWENTY_SEVEN * np.abs(x)))
    return np.where(f <= 0, 0.0, np.abs(x / (SQRT_THREE * ndtri(arg))))


def _f_upper_map(x, s):
    f = ndtr(-0.5 * s)
    w = (x / s) ** 2
    fp = -0.5 * np.exp(0.5 * w)
    fpp = SQRT_PI_OVER_TWO * np.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


def _householder_factor(newton, halley, hh3):
    return (1 + 0.5 * halley * newton) / (1 + newton * (halley + hh3 * newton / 6))


_PLAIN, _LOWER, _UPPER = 0, 1, 2


def implied_normalised_vol_otm(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """s = σ√T such that b_otm(x, s) = beta, for x <= 0 and 0 < beta < e^{x/2} (1-D arrays, pre-validated)."""
    with np.errstate(all="ignore"):
        return _implied_normalised_vol_otm(beta, x)


def _implied_normalised_vol_otm(beta: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = beta.shape[0]
    b_max = np.exp(0.5 * x)
    s_c = np.sqrt(np.abs(2 * x))
    # the erfcx region at s_c (x + s_c²/2 = 0 rules out the asymptotic and cumulative-normal ones), where
    # h + t = 0 and h² + t² = −x: b = ½·e^{x/2}·(1 − erfcx(s_c/√2)) and b' = e^{x/2}/√(2π); the small-t
    # expansion below its threshold
    b_c = np.abs(np.maximum(0.5 * b_max * (1.0 - erfcx(ONE_OVER_SQRT_TWO * s_c)), 0.0))
    v_c = ONE_OVER_SQRT_TWO_PI * b_max
    small = np.flatnonzero(~(0.5 * s_c >= _SMALL_T_THRESHOLD))
    if small.size:
        b_c[small] = normalised_black_otm(x[small], s_c[small])
        v_c[small] = normalised_vega(x[small], s_c[small])

    s = np.empty(n)
    s_left = np.full(n, DBL_MIN)
    s_right = np.full(n, DBL_MAX)
    objective = np.full(n, _PLAIN, dtype=np.int8)

    low = beta < b_c
    if low.any():
        i = np.flatnonzero(low)
        xi, bi, sci, bci, vci = x[i], beta[i], s_c[i], b_c[i], v_c[i]
        s_l = sci - bci / vci
        b_l = normalised_black_otm(xi, s_l)
        lowest = bi < b_l
        # lowest segment: transformed lower map + objective 1/ln(b)
        j = np.flatnonzero(lowest)
        if j.size:
            xj, bj, slj, blj = xi[j], bi[j], s_l[j], b_l[j]
            f_l, fp_l, fpp_l = _f_lower_map(xj, slj)
            zero, one = np.zeros_like(xj), np.ones_like(xj)
            r_ll = _convex_rc_right(zero, blj, zero, f_l, one, fp_l, fpp_l, True)
            f = _rc_interp(bj, zero, blj, zero, f_l, one, fp_l, r_ll)
            t = bj / blj
            f = np.where(f > 0, f, (f_l * t + blj * (1 - t)) * t)
            idx = i[j]
            s[idx] = _inverse_f_lower_map(xj, f)
            s_right[idx] = slj
            objective[idx] = _LOWER
        k = np.flatnonzero(~lowest)
        if k.size:
            xk, bk = xi[k], bi[k]
            slk, blk, sck, bck, vck = s_l[k], b_l[k], sci[k], bci[k], vci[k]
            v_l = normalised_vega(xk, slk)
            r_lm = _convex_rc_right(blk, bck, slk, sck, 1 / v_l, 1 / vck, np.zeros_like(xk), False)
            idx = i[k]
            s[idx] = _rc_interp(bk, blk, bck, slk, sck, 1 / v_l, 1 / vck, r_lm)
            s_left[idx] = slk
            s_right[idx] = sck
    high = ~low
    if high.any():
        i = np.flatnonzero(high)
        xi, bi, sci, bci, vci, bmi = x[i], beta[i], s_c[i], b_c[i], v_c[i], b_max[i]
        s_h = np.where(vci > DBL_MIN, sci + (bmi - bci) / vci, sci)
        b_h = normalised_black_otm(xi, s_h)
        mid = bi <= b_h
        k = np.flatnonzero(mid)
        if k.size:
            xk, bk, shk, bhk, sck, bck, vck = xi[k], bi[k], s_h[k], b_h[k], sci[k], bci[k], vci[k]
            v_h = normalised_vega(xk, shk)
            r_hm = _convex_rc_left(bck, bhk, sck, shk, 1 / vck, 1 / v_h, np.zeros_like(xk), False)
            idx = i[k]
            s[idx] = _rc_interp(bk, bck, bhk, sck, shk, 1 / vck, 1 / v_h, r_hm)
            s_left[idx] = sck
            s_right[idx] = shk
        j = np.flatnonzero(~mid)
        if j.size:
            xj, bj, shj, bhj, bmj = xi[j], bi[j], s_h[j], b_h[j], bmi[j]
            f_u, fp_u, fpp_u = _f_upper_map(xj, shj)
            finite = (fpp_u > -SQRT_DBL_MAX) & (fpp_u < SQRT_DBL_MAX)
            zero = np.zeros_like(xj)
            r_hh = _convex_rc_left(bhj, bmj, f_u, zero, fp_u, np.full_like(xj, -0.5), fpp_u, True)
            f = np.where(finite, _rc_interp(bj, bhj, bmj, f_u, zero, fp_u, np.full_like(xj, -0.5), r_hh), -DBL_MAX)
            hh = bmj - bhj
            t = (bj - bhj) / hh
            f = np.where(f > 0, f, (f_u * (1 - t) + 0.5 * hh * t) * (1 - t))
            idx = i[j]
            s[idx] = -2.0 * ndtri(f)
            s_left[idx] = shj
            objective[idx] = np.where(bj > 0.5 * bmj, _UPPER, _PLAIN)

    active = np.ones(n, dtype=bool)
    for it in range(_ITERATIONS):
        if it > 0:
            outside = active & ~((s > s_left) & (s < s_right))
            s = np.where(outside, 0.5 * (s_left + s_right), s)
        b = normalised_black_otm(x, s)
        bp = normalised_vega(x, s)
        s_right = np.where((b > beta) & (s < s_right), s, s_right)
        s_left = np.where((b < beta) & (s > s_left), s, s_left)
        h = x / s
        b_halley = h * h / s - s / 4
        b_hh3 = b_halley * b_halley - 3 * (h / s) ** 2 - 0.25
        bisect = 0.5 * (s_left + s_right) - s

        # plain objective g = b - beta
        newton = (beta - b) / bp
        ds = newton * _householder_factor(newton, b_halley, b_hh3)

        li = np.flatnonzero(objective == _LOWER)
        if li.size:
            bl, bpl, betal = b[li], bp[li], beta[li]
            bh, bh3 = b_halley[li], b_hh3[li]
            ln_b = np.log(bl)
            ln_beta = np.log(betal)
            bpob = bpl / bl
            nl = (ln_beta - ln_b) * ln_b / ln_beta / bpob
            hl = bh - bpob * (1 + 2 / ln_b)
            h3 = bh3 + 2 * bpob * bpob * (1 + 3 / ln_b * (1 + 1 / ln_b)) - 3 * bh * bpob * (1 + 2 / ln_b)
            ds_l = nl * _householder_factor(nl, hl, h3)
            ds[li] = np.where((bl <= 0) | (bpl <= 0), bisect[li], ds_l)
        ui = np.flatnonzero(objective == _UPPER)
        if ui.size:
            bu, bpu, bmu = b[ui], bp[ui], b_max[ui]
            bh, bh3 = b_halley[ui], b_hh3[ui]
            bmb = bmu - bu
            g = np.log((bmu - beta[ui]) / bmb)
            gp = bpu / bmb
            nu = -g / gp
            hu = bh + gp
            h3u = bh3 + gp * (2 * gp + 3 * bh)
            ds_u = nu * _householder_factor(nu, hu, h3u)
            ds[ui] = np.where((bu >= bmu) | (bpu <= DBL_MIN), bisect[ui], ds_u)
        ds = np.where(active, np.maximum(-0.5 * s, ds), 0.0)
        s = s + ds
        active &= np.abs(ds) > DBL_EPSILON * s
        if not active.any():
            break
    return s
