"""Compiled (numba) kernels for Black-Scholes-Merton Greeks and Let's-Be-Rational implied vol.

Never import this module directly: :mod:`engine.pricing._kernels` imports it in a background warm-up (or in
:func:`engine.pricing._kernels.warm_up`) after pointing numba at a writable cache directory. Importing it
*is* the compilation: every kernel is declared with its exact signatures, so numba compiles (or loads from
its on-disk cache) at import and refuses any other argument types afterwards instead of compiling on the
caller's thread.

Each kernel does one option per loop iteration, with the same operations in the same order as the numpy
reference path in :mod:`engine.pricing.bsm` and :mod:`engine.pricing.lets_be_rational`; the only fastmath
flag is FMA contraction (a multiply-add rounded once), and not in the Greeks kernels. ``ndtri`` and ``ndtr`` (region 3 of the normalised
Black function, one initial-guess branch) are scipy's own compiled functions, called through their Cython C
entry points; the other cumulative normals and the solver's ``erfcx`` are inline rational approximations
(Cephes' erf/erfc coefficients, as scipy's ndtr uses) that share or avoid exponentials. The results differ
from the numpy path only by the last-bit rounding of those functions, of the fused multiply-adds and of ``exp``/``log``
(numpy uses its own SIMD versions): ~1e-15 relative, tested to 1e-14.

Algorithm and coefficients of the implied-vol solver after Peter Jäckel, "Let's Be Rational", Wilmott (2015),
and his reference code: Copyright © 2013-2014 Peter Jäckel. Permission to use, copy, modify, and distribute
this software is freely granted, provided that this notice is preserved.
"""

from __future__ import annotations

import math
from typing import Any

import llvmlite.binding as _llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

from engine.pricing import lets_be_rational as _lbr

# scipy's special functions by C symbol: resolved by name when a kernel is linked, so a cached kernel
# needs no process-specific address baked in (a ctypes pointer would make numba refuse to cache)
for _scipy_name, _symbol in (("__pyx_fuse_1ndtr", "optiondesk_ndtr"), ("ndtri", "optiondesk_ndtri")):
    _llvm.add_symbol(_symbol, get_cython_function_address("scipy.special.cython_special", _scipy_name))
# Cython cpdef signature: (double x, int skip_dispatch); skip_dispatch is irrelevant for module functions
_ndtr_c = types.ExternalFunction("optiondesk_ndtr", types.float64(types.float64, types.intc))
_ndtri_c = types.ExternalFunction("optiondesk_ndtri", types.float64(types.float64, types.intc))

# fastmath "contract" only: LLVM may fuse a multiply and an add into one FMA (one rounding instead of two), which
# makes the long polynomials of the implied-vol solve ~25 % faster; no flag that assumes finite values or
# reorders sums (NaN checks and the operation order of the numpy reference stay valid: tests hold them to 1e-14)
_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
# the Greeks kernels are exact instead: one is compiled per output set, and LLVM would fuse differently in each,
# where a caller asking for price and delta must get bit for bit the all-outputs kernel's price and delta
_EXACT_OPTS: dict[str, Any] = {**_OPTS, "fastmath": False}

DBL_EPSILON = _lbr.DBL_EPSILON
DBL_MIN = _lbr.DBL_MIN
DBL_MAX = _lbr.DBL_MAX
SQRT_DBL_MAX = float(_lbr.SQRT_DBL_MAX)
ONE_OVER_SQRT_TWO = _lbr.ONE_OVER_SQRT_TWO
ONE_OVER_SQRT_TWO_PI = _lbr.ONE_OVER_SQRT_TWO_PI
SQRT_TWO_PI = _lbr.SQRT_TWO_PI
TWO_PI = _lbr.TWO_PI
SQRT_PI_OVER_TWO = _lbr.SQRT_PI_OVER_TWO
SQRT_THREE = _lbr.SQRT_THREE
SQRT_ONE_OVER_THREE = _lbr.SQRT_ONE_OVER_THREE
TWO_PI_OVER_SQRT_TWENTY_SEVEN = _lbr.TWO_PI_OVER_SQRT_TWENTY_SEVEN
PI_OVER_SIX = _lbr.PI_OVER_SIX
_ASYMPTOTIC_THRESHOLD = _lbr._ASYMPTOTIC_THRESHOLD
_SMALL_T_THRESHOLD = float(_lbr._SMALL_T_THRESHOLD)
_SMALL_PLUS_ASYMPTOTIC = _SMALL_T_THRESHOLD + _ASYMPTOTIC_THRESHOLD
_RC_MIN = float(_lbr._RC_MIN)
_RC_MAX = float(_lbr._RC_MAX)
_ITERATIONS = _lbr._ITERATIONS

_INV_SQRT_2PI = 0.3989422804014326779399460599343818684758586311649
_ONE_OVER_SQRT_PI = 0.5641895835477562869480794515607725858440506293290
_ONE_OVER_DAYS = 1 / 365.0

# Reason codes (engine.pricing.inputs.Reason), as plain ints for the kernels
_NAN_INPUT, _NONPOSITIVE_SPOT, _NONPOSITIVE_STRIKE, _NONPOSITIVE_TIME, _NONPOSITIVE_VOL = 1, 2, 3, 4, 5

_F = types.Array(types.float64, 1, "C", readonly=True)
_B = types.Array(types.boolean, 1, "C", readonly=True)
_I = types.int64
_SLOTS = types.Array(types.int64, 1, "C", readonly=True)
_OUT2 = types.Array(types.float64, 2, "C")
_OUT = types.Array(types.float64, 1, "C")
_REASON = types.Array(types.int8, 1, "C")


def _nb(*sigs):
    return njit(list(sigs), **_OPTS) if sigs else njit(**_OPTS)


# --------------------------------------------------------------------------------------------------------------
# Cumulative normal sharing its exponential with the density
# --------------------------------------------------------------------------------------------------------------

# Rational approximations of erf/erfc (Cephes, S. L. Moshier, as in scipy.special.ndtr)
_EP = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
       4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
       9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_EQ = (1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
       9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
       1.65666309194161350182E3, 5.57535340817727675546E2)
_ER = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
       6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
_ES = (2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
       1.70814450747565897222E1, 9.60896809063285878198E0, 3.36907645100081516050E0)
_ET = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
       7.00332514112805075473E3, 5.55923013010394962768E4)
_EU = (3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
       2.26290000613890934246E4, 4.92673942608635921086E4)


@_nb()
def _erf_small(x):
    """erf(x) for |x| <= 1."""
    z = x * x
    num = (((_ET[0] * z + _ET[1]) * z + _ET[2]) * z + _ET[3]) * z + _ET[4]
    den = ((((z + _EU[0]) * z + _EU[1]) * z + _EU[2]) * z + _EU[3]) * z + _EU[4]
    return x * num / den


@_nb()
def _ndtr_e(a, e):
    """N(a) given e = exp(-a²/2): the density's exponential is reused, so N and φ cost one exp together.
    Same rational approximations as scipy's ndtr, so the two agree to a few units in the last place."""
    x = a * ONE_OVER_SQRT_TWO
    z = abs(x)
    if z < ONE_OVER_SQRT_TWO:
        return 0.5 + 0.5 * _erf_small(x)
    if z < 1.0:
        y = 0.5 * (1.0 - _erf_small(z))
    elif z < 8.0:
        p = (((((((_EP[0] * z + _EP[1]) * z + _EP[2]) * z + _EP[3]) * z + _EP[4]) * z + _EP[5]) * z + _EP[6])
             * z + _EP[7]) * z + _EP[8]
        q = (((((((z + _EQ[0]) * z + _EQ[1]) * z + _EQ[2]) * z + _EQ[3]) * z + _EQ[4]) * z + _EQ[5]) * z
             + _EQ[6]) * z + _EQ[7]
        y = 0.5 * (e * p / q)
    elif e == 0.0:  # underflow (and z = inf, where p/q would be inf/inf)
        y = 0.0
    else:
        p = ((((_ER[0] * z + _ER[1]) * z + _ER[2]) * z + _ER[3]) * z + _ER[4]) * z + _ER[5]
        q = (((((z + _ES[0]) * z + _ES[1]) * z + _ES[2]) * z + _ES[3]) * z + _ES[4]) * z + _ES[5]
        y = 0.5 * (e * p / q)
    return 1.0 - y if x > 0 else y


@njit(inline="always", **_EXACT_OPTS)  # inlined into the caller's loop, which LLVM can then vectorise
def _ndtr_select(a, e):
    """:func:`_ndtr_e` without branches, bit for bit: every region's rational function is evaluated (on its
    argument clamped into the region) and the result selected.

    Why: on a chain the regions alternate from one option to the next, and the mispredicted branches of
    :func:`_ndtr_e` cost more than the two extra rational functions (16 ns against 6 ns per call measured on
    random moneyness); the Greeks kernel calls it twice per option."""
    x = a * ONE_OVER_SQRT_TWO
    z = abs(x)
    zs = min(z, 1.0)
    w = zs * zs
    num = (((_ET[0] * w + _ET[1]) * w + _ET[2]) * w + _ET[3]) * w + _ET[4]
    den = ((((w + _EU[0]) * w + _EU[1]) * w + _EU[2]) * w + _EU[3]) * w + _EU[4]
    zm = min(max(z, 1.0), 8.0)
    p = (((((((_EP[0] * zm + _EP[1]) * zm + _EP[2]) * zm + _EP[3]) * zm + _EP[4]) * zm + _EP[5]) * zm + _EP[6])
         * zm + _EP[7]) * zm + _EP[8]
    q = (((((((zm + _EQ[0]) * zm + _EQ[1]) * zm + _EQ[2]) * zm + _EQ[3]) * zm + _EQ[4]) * zm + _EQ[5]) * zm
         + _EQ[6]) * zm + _EQ[7]
    zl = max(z, 8.0)
    p2 = ((((_ER[0] * zl + _ER[1]) * zl + _ER[2]) * zl + _ER[3]) * zl + _ER[4]) * zl + _ER[5]
    q2 = (((((zl + _ES[0]) * zl + _ES[1]) * zl + _ES[2]) * zl + _ES[3]) * zl + _ES[4]) * zl + _ES[5]
    y_low = 0.5 * (1.0 - zs * num / den)
    y_mid = 0.5 * (e * p / q)
    y_tail = 0.5 * (e * p2 / q2) if e != 0.0 else 0.0
    y = y_low if z < 1.0 else (y_mid if z < 8.0 else y_tail)
    centre = 0.5 + 0.5 * (x * num / den)  # |x| < 1/√2: 0.5 + erf(x)/2 (w = x² there)
    outer = 1.0 - y if x > 0 else y
    return centre if z < ONE_OVER_SQRT_TWO else outer


@_nb()
def _erfc_rational(z):
    """erfc(z)·exp(z²) for z >= 1: the rational part of Cephes' erfc (no exponential needed)."""
    if z < 8.0:
        p = (((((((_EP[0] * z + _EP[1]) * z + _EP[2]) * z + _EP[3]) * z + _EP[4]) * z + _EP[5]) * z + _EP[6])
             * z + _EP[7]) * z + _EP[8]
        q = (((((((z + _EQ[0]) * z + _EQ[1]) * z + _EQ[2]) * z + _EQ[3]) * z + _EQ[4]) * z + _EQ[5]) * z
             + _EQ[6]) * z + _EQ[7]
        return p / q
    if z > 1e8:  # erfcx(z) = 1/(z√π)·(1 − 1/(2z²) + …): the correction is below rounding
        return _ONE_OVER_SQRT_PI / z
    p = ((((_ER[0] * z + _ER[1]) * z + _ER[2]) * z + _ER[3]) * z + _ER[4]) * z + _ER[5]
    q = (((((z + _ES[0]) * z + _ES[1]) * z + _ES[2]) * z + _ES[3]) * z + _ES[4]) * z + _ES[5]
    return p / q


@_nb()
def _erfcx(x):
    """Scaled complementary error function exp(x²)·erfc(x), inline (scipy's costs a call and a jump table).
    Agrees with scipy.special.erfcx to a few units in the last place for x >= -1; below, 2·exp(x²) dominates
    and both carry its x²·ε rounding."""
    if abs(x) < 1.0:
        return math.exp(x * x) * (1.0 - _erf_small(x))
    if x > 0:
        return _erfc_rational(x)
    if x < -26.7:
        return math.inf
    return 2.0 * math.exp(x * x) - _erfc_rational(-x)


@_nb(types.void(_F, _OUT))
def erfcx(a, out):
    """erfcx elementwise through :func:`_erfcx` (to test it against scipy)."""
    for i in range(a.size):
        out[i] = _erfcx(a[i])


@_nb(types.void(_F, _OUT))
def ndtr(a, out):
    """N(a) elementwise through :func:`_ndtr_e` (to test it against scipy)."""
    for i in range(a.size):
        out[i] = _ndtr_e(a[i], math.exp(-0.5 * a[i] * a[i]))


# --------------------------------------------------------------------------------------------------------------
# Black-Scholes-Merton price and Greeks
# --------------------------------------------------------------------------------------------------------------


_GREEKS_SIG = types.void(_B, _F, _F, _F, _F, _F, _F, _F, _F, _F, _SLOTS, _OUT2, _REASON, _I, _I)
#: options per block of the Greeks kernels: a block's inputs and nine buffers (~80 KB) stay in the L2 cache
_GREEKS_BLOCK = 512
#: bsm.OUTPUTS order
_OUTPUT_NAMES = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga", "charm")


def _greeks_kernel(wanted: frozenset[str]):
    """A Greeks kernel specialised for the outputs ``wanted``: the flags are compile-time constants, so the
    loops hold only the arithmetic those outputs need (no per-option tests of what was asked for).

    The kernel writes ``out[slot[j], i]`` = output j (bsm.OUTPUTS order) of option i for every j and every i in
    ``[start, stop)`` (a thread's chunk); the caller points the slots of outputs it does not want at a scratch
    row (the all-outputs kernel also serves sets that have no kernel of their own), and ``reason[i]``. Every
    input is a contiguous array of one value per option. ``ln(S/K)``, ``e^{-qT}`` and ``e^{-rT}`` come from
    numpy, whose SIMD ``log``/``exp`` cost a fraction of a scalar call and are the very values the numpy path
    uses.

    Why blocks and one loop per quantity instead of one loop per option: LLVM vectorises a loop (4-8 options
    per AVX instruction) only when it reads contiguous arrays, branches nowhere and calls nothing, and numba
    has no SIMD ``exp`` without Intel's SVML. So per block of :data:`_GREEKS_BLOCK` options the reasons (selects
    in the numpy path's order) and ``d1``/``d2`` come from SIMD loops, the one exponential per option from a
    scalar loop of nothing else, the two cumulative normals (branch-free, inlined) and the density from a SIMD
    loop, and then each output from a SIMD loop of its own. One loop writing all nine outputs was not
    vectorised at all: it touches so many arrays that LLVM gives up on the run-time checks that they do not
    overlap (the all-outputs kernel ran at half the speed of the five-Greeks one, measured). As one scalar loop
    per option, its ~15 divisions, two rational cumulative normals and input checks made the compiled path no
    faster than numpy's. Each option's arithmetic is the same as in that loop, in the same order."""
    w_p, w_de, w_ga, w_ve, w_th, w_rh, w_va, w_vo, w_ch = (name in wanted for name in _OUTPUT_NAMES)
    need_n1 = w_p or w_de or w_th or w_ch
    need_n2 = w_p or w_th or w_rh
    need_pdf = w_ga or w_ve or w_th or w_va or w_vo or w_ch
    block = _GREEKS_BLOCK

    def greeks(c, S, K, T, r, q, sig, ln_sk, DQ, DR, slot, out, reason, start, stop):
        buf = np.empty((9, block))
        sqrt_b, vol_b, d1_b, d2_b, e1_b, e2_b = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]
        n1_b, n2_b, pdf_b = buf[6], buf[7], buf[8]
        o_p, o_de, o_ga, o_ve, o_th = out[slot[0]], out[slot[1]], out[slot[2]], out[slot[3]], out[slot[4]]
        o_rh, o_va, o_vo, o_ch = out[slot[5]], out[slot[6]], out[slot[7]], out[slot[8]]
        nan = np.nan
        for b0 in range(start, stop, block):
            end = min(b0 + block, stop)
            m = end - b0
            cb, sb, kb, tb, rb, qb, vb = c[b0:end], S[b0:end], K[b0:end], T[b0:end], r[b0:end], q[b0:end], \
                sig[b0:end]
            dqb, drb, rsn = DQ[b0:end], DR[b0:end], reason[b0:end]
            lnb = ln_sk[b0:end]
            for j in range(m):  # SIMD: reasons, the first failed check in bsm's order (selects, no branches)
                s_ = sb[j]
                k_ = kb[j]
                t_ = tb[j]
                v_ = vb[j]
                code = 0 if v_ > 0 else _NONPOSITIVE_VOL
                code = code if math.isfinite(v_) else _NAN_INPUT
                code = code if t_ > 0 else _NONPOSITIVE_TIME
                code = code if k_ > 0 else _NONPOSITIVE_STRIKE
                code = code if s_ > 0 else _NONPOSITIVE_SPOT
                finite = (math.isfinite(s_) and math.isfinite(k_) and math.isfinite(t_) and math.isfinite(rb[j])
                          and math.isfinite(qb[j]))
                rsn[j] = code if finite else _NAN_INPUT
            for j in range(m):  # SIMD: d1, d2
                t_ = tb[j]
                v_ = vb[j]
                sqrt_t = math.sqrt(t_)
                vol_t = v_ * sqrt_t
                d1 = lnb[j]
                d1 += (rb[j] - qb[j] + 0.5 * v_ * v_) * t_
                d1 /= vol_t
                sqrt_b[j] = sqrt_t
                vol_b[j] = vol_t
                d1_b[j] = d1
                d2_b[j] = d1 - vol_t
            for j in range(m):  # scalar: the one exponential per option, φ(d1)·√(2π)
                e1_b[j] = math.exp(-0.5 * d1_b[j] * d1_b[j])
            if need_n2:
                for j in range(m):  # SIMD: exp(-d2²/2) = exp(-d1²/2)·F/K, F/K = S·e^{-qT}/(K·e^{-rT})
                    e2_b[j] = e1_b[j] * ((sb[j] * dqb[j]) / (kb[j] * drb[j]))
                for j in range(m):  # e1 underflowed or rounding pushed e2 past 1: the exponential itself
                    if not (e1_b[j] > 1e-300 and e2_b[j] <= 1.0):
                        e2_b[j] = math.exp(-0.5 * d2_b[j] * d2_b[j])
            for j in range(m):  # SIMD: e^{-qT}·N(θd1), K·e^{-rT}·N(θd2), e^{-qT}·φ(d1)
                sign = 1.0 if cb[j] else -1.0
                if need_n1:
                    n1_b[j] = dqb[j] * _ndtr_select(sign * d1_b[j], e1_b[j])
                if need_n2:
                    k_dr_n2 = drb[j] * kb[j]
                    k_dr_n2 *= _ndtr_select(sign * d2_b[j], e2_b[j])
                    n2_b[j] = k_dr_n2
                if need_pdf:
                    pdf_b[j] = e1_b[j] * (dqb[j] * _INV_SQRT_2PI)
            # SIMD, one loop per output: the quantities above combined, NaN where the inputs were invalid
            if w_p:
                op = o_p[b0:end]
                for j in range(m):
                    sign = 1.0 if cb[j] else -1.0
                    value = sb[j] * n1_b[j] - n2_b[j]
                    value *= sign
                    op[j] = value if rsn[j] == 0 else nan
            if w_de:
                ode = o_de[b0:end]
                for j in range(m):
                    sign = 1.0 if cb[j] else -1.0
                    ode[j] = sign * n1_b[j] if rsn[j] == 0 else nan
            if w_ga:
                oga = o_ga[b0:end]
                for j in range(m):
                    oga[j] = pdf_b[j] / (sb[j] * vol_b[j]) if rsn[j] == 0 else nan
            if w_ve:
                ove = o_ve[b0:end]
                for j in range(m):
                    vega = sb[j] * pdf_b[j] * sqrt_b[j]
                    ove[j] = vega * 0.01 if rsn[j] == 0 else nan
            if w_th:
                oth = o_th[b0:end]
                for j in range(m):
                    sign = 1.0 if cb[j] else -1.0
                    s_ = sb[j]
                    theta = qb[j] * (s_ * n1_b[j])
                    theta -= rb[j] * n2_b[j]
                    theta *= sign
                    theta -= s_ * pdf_b[j] * vb[j] / (2 * sqrt_b[j])
                    oth[j] = theta * _ONE_OVER_DAYS if rsn[j] == 0 else nan
            if w_rh:
                orh = o_rh[b0:end]
                for j in range(m):
                    sign = 1.0 if cb[j] else -1.0
                    orh[j] = (sign * n2_b[j]) * (tb[j] * 0.01) if rsn[j] == 0 else nan
            if w_va:
                ova = o_va[b0:end]
                for j in range(m):
                    ova[j] = (pdf_b[j] * d2_b[j] / vb[j]) * -0.01 if rsn[j] == 0 else nan
            if w_vo:
                ovo = o_vo[b0:end]
                for j in range(m):
                    vega = sb[j] * pdf_b[j] * sqrt_b[j]
                    ovo[j] = (vega * d1_b[j] * d2_b[j] / vb[j]) * 1e-4 if rsn[j] == 0 else nan
            if w_ch:
                och = o_ch[b0:end]
                for j in range(m):
                    sign = 1.0 if cb[j] else -1.0
                    t_ = tb[j]
                    q_ = qb[j]
                    vol_t = vol_b[j]
                    charm = (sign * q_ * n1_b[j]
                             - pdf_b[j] * (2 * (rb[j] - q_) * t_ - d2_b[j] * vol_t) / (2 * t_ * vol_t))
                    och[j] = charm * _ONE_OVER_DAYS if rsn[j] == 0 else nan

    return njit([_GREEKS_SIG], **_EXACT_OPTS)(greeks)


#: output sets with a kernel of their own (what the engine's callers ask for), compiled at import;
#: any other set runs the all-outputs kernel, which writes only the rows asked for
GREEKS_SETS = (
    frozenset(_OUTPUT_NAMES),
    frozenset(("price", "delta")),
    frozenset(("price", "delta", "gamma", "vega", "theta", "rho")),
    frozenset(("price", "delta", "gamma", "vega", "theta")),
    frozenset(("delta", "gamma", "vega", "theta")),
    frozenset(("delta", "gamma")),
    frozenset(("vega",)),
)
_GREEKS_KERNELS = {wanted: _greeks_kernel(wanted) for wanted in GREEKS_SETS}
greeks = _GREEKS_KERNELS[GREEKS_SETS[0]]


def greeks_kernel(wanted: frozenset[str]):
    """The compiled kernel for ``wanted`` (its own, or the all-outputs one)."""
    return _GREEKS_KERNELS.get(wanted, greeks)


# --------------------------------------------------------------------------------------------------------------
# Normalised Black function (scalar ports of lets_be_rational, same operation order)
# --------------------------------------------------------------------------------------------------------------


@_nb()
def _nan_max(a, b):
    """np.maximum: NaN if either is NaN."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


@_nb()
def _clip_abs(b):
    """np.abs(np.maximum(b, 0.0))."""
    if b != b:
        return b
    return abs(b) if b > 0.0 else 0.0


@_nb()
def _asymptotic_expansion(h, t, ex):
    e = (t / h) * (t / h)
    r = (h + t) * (h - t)
    q = (h / r) * (h / r)
    s = (2.0+q*(-6.0E0-2.0*e+3.0*q*(1.0E1+e*(2.0E1+2.0*e)+5.0*q*(-1.4E1+e*(-7.0E1+e*(-4.2E1-2.0*e))+7.0*q*(1.8E1+e*(1.68E2+e*(2.52E2+e*(7.2E1+2.0*e)))+9.0*q*(-2.2E1+e*(-3.3E2+e*(-9.24E2+e*(-6.6E2+e*(-1.1E2-2.0*e))))+1.1E1*q*(2.6E1+e*(5.72E2+e*(2.574E3+e*(3.432E3+e*(1.43E3+e*(1.56E2+2.0*e)))))+1.3E1*q*(-3.0E1+e*(-9.1E2+e*(-6.006E3+e*(-1.287E4+e*(-1.001E4+e*(-2.73E3+e*(-2.1E2-2.0*e))))))+1.5E1*q*(3.4E1+e*(1.36E3+e*(1.2376E4+e*(3.8896E4+e*(4.862E4+e*(2.4752E4+e*(4.76E3+e*(2.72E2+2.0*e)))))))+1.7E1*q*(-3.8E1+e*(-1.938E3+e*(-2.3256E4+e*(-1.00776E5+e*(-1.84756E5+e*(-1.51164E5+e*(-5.4264E4+e*(-7.752E3+e*(-3.42E2-2.0*e))))))))+1.9E1*q*(4.2E1+e*(2.66E3+e*(4.0698E4+e*(2.3256E5+e*(5.8786E5+e*(7.05432E5+e*(4.0698E5+e*(1.08528E5+e*(1.197E4+e*(4.2E2+2.0*e)))))))))+2.1E1*q*(-4.6E1+e*(-3.542E3+e*(-6.7298E4+e*(-4.90314E5+e*(-1.63438E6+e*(-2.704156E6+e*(-2.288132E6+e*(-9.80628E5+e*(-2.01894E5+e*(-1.771E4+e*(-5.06E2-2.0*e))))))))))+2.3E1*q*(5.0E1+e*(4.6E3+e*(1.0626E5+e*(9.614E5+e*(4.08595E6+e*(8.9148E6+e*(1.04006E7+e*(6.53752E6+e*(2.16315E6+e*(3.542E5+e*(2.53E4+e*(6.0E2+2.0*e)))))))))))+2.5E1*q*(-5.4E1+e*(-5.85E3+e*(-1.6146E5+e*(-1.77606E6+e*(-9.37365E6+e*(-2.607579E7+e*(-4.01166E7+e*(-3.476772E7+e*(-1.687257E7+e*(-4.44015E6+e*(-5.9202E5+e*(-3.51E4+e*(-7.02E2-2.0*e))))))))))))+2.7E1*q*(5.8E1+e*(7.308E3+e*(2.3751E5+e*(3.12156E6+e*(2.003001E7+e*(6.919458E7+e*(1.3572783E8+e*(1.5511752E8+e*(1.0379187E8+e*(4.006002E7+e*(8.58429E6+e*(9.5004E5+e*(4.7502E4+e*(8.12E2+2.0*e)))))))))))))+2.9E1*q*(-6.2E1+e*(-8.99E3+e*(-3.39822E5+e*(-5.25915E6+e*(-4.032015E7+e*(-1.6934463E8+e*(-4.1250615E8+e*(-6.0108039E8+e*(-5.3036505E8+e*(-2.8224105E8+e*(-8.870433E7+e*(-1.577745E7+e*(-1.472562E6+e*(-6.293E4+e*(-9.3E2-2.0*e))))))))))))))+3.1E1*q*(6.6E1+e*(1.0912E4+e*(4.74672E5+e*(8.544096E6+e*(7.71342E7+e*(3.8707344E8+e*(1.14633288E9+e*(2.07431664E9+e*(2.33360622E9+e*(1.6376184E9+e*(7.0963464E8+e*(1.8512208E8+e*(2.7768312E7+e*(2.215136E6+e*(8.184E4+e*(1.056E3+2.0*e)))))))))))))))+3.3E1*(-7.0E1+e*(-1.309E4+e*(-6.49264E5+e*(-1.344904E7+e*(-1.4121492E8+e*(-8.344518E8+e*(-2.9526756E9+e*(-6.49588632E9+e*(-9.0751353E9+e*(-8.1198579E9+e*(-4.6399188E9+e*(-1.6689036E9+e*(-3.67158792E8+e*(-4.707164E7+e*(-3.24632E6+e*(-1.0472E5+e*(-1.19E3-2.0*e)))))))))))))))))*q)))))))))))))))))
    b = ONE_OVER_SQRT_TWO_PI * ex * (t / r) * s
    return _clip_abs(b)


# the small-t expansion's denominators as reciprocals: a multiplication instead of six divisions per call
_R6, _R120, _R5040, _R362880 = 1 / 6, 1 / 120, 1 / 5040, 1 / 362880
_R39916800, _R6227020800 = 1 / 39916800, 1 / 6227020800.0


@_nb()
def _small_t_expansion(h, t, ex):
    a = 1 + h * (0.5 * SQRT_TWO_PI) * _erfcx(-ONE_OVER_SQRT_TWO * h)
    w = t * t
    h2 = h * h
    expansion = 2*t*(a+w*((-1+3*a+a*h2)*_R6+w*((-7+15*a+h2*(-1+10*a+a*h2))*_R120+w*((-57+105*a+h2*(-18+105*a+h2*(-1+21*a+a*h2)))*_R5040+w*((-561+945*a+h2*(-285+1260*a+h2*(-33+378*a+h2*(-1+36*a+a*h2))))*_R362880+w*((-6555+10395*a+h2*(-4680+17325*a+h2*(-840+6930*a+h2*(-52+990*a+h2*(-1+55*a+a*h2)))))*_R39916800+((-89055+135135*a+h2*(-82845+270270*a+h2*(-20370+135135*a+h2*(-1926+25740*a+h2*(-75+2145*a+h2*(-1+78*a+a*h2))))))*w)*_R6227020800))))))
    b = ONE_OVER_SQRT_TWO_PI * ex * expansion
    return _clip_abs(b)


@_nb()
def _using_norm_cdf(x, s):
    h = x / s
    t = 0.5 * s
    b_max = math.exp(0.5 * x)
    b = _ndtr_c(h + t, 0) * b_max - _ndtr_c(h - t, 0) / b_max
    return _clip_abs(b)


@_nb()
def _using_erfcx(h, t, ex):
    b = (0.5 * ex
         * (_erfcx(-ONE_OVER_SQRT_TWO * (h + t)) - _erfcx(-ONE_OVER_SQRT_TWO * (h - t))))
    return _clip_abs(b)


@_nb()
def _black_and_vega(x, s):
    """(b(x, s), ∂b/∂s) for x <= 0: the region split of lets_be_rational.normalised_black_otm and the
    normalised vega, sharing their exponential.

    Why: exp(−(h² + t²)/2) with h = x/s, t = s/2 is the vega's own exp(−(h² + s²/4)/2) (t² = s²/4 exactly) and
    a factor of b in three of the four regions; the solver needs both at every one of its ~4 evaluations, so
    one exponential instead of two, with bit for bit the same values."""
    if not s > 0:
        return 0.0, (ONE_OVER_SQRT_TWO_PI if x == 0 else 0.0)
    h = 0.0 if x == 0 else x / s
    t = 0.5 * s
    e = math.exp(-0.5 * (h * h + 0.25 * s * s))
    vega = ONE_OVER_SQRT_TWO_PI * e
    half_s2 = 0.5 * s * s
    if x < s * _ASYMPTOTIC_THRESHOLD and half_s2 + x < s * _SMALL_PLUS_ASYMPTOTIC:
        return _asymptotic_expansion(x / s, t, e), vega
    if t < _SMALL_T_THRESHOLD:
        return _small_t_expansion(x / s, t, e), vega
    if x + half_s2 > s * 0.85:
        return _using_norm_cdf(x, s), vega
    return _using_erfcx(x / s, t, e), vega


# --------------------------------------------------------------------------------------------------------------
# Rational cubic interpolation (Delbourgo & Gregory)
# --------------------------------------------------------------------------------------------------------------


@_nb()
def _rc_param_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r):
    h = x_r - x_l
    num = 0.5 * h * second_r + (d_r - d_l)
    den = d_r - (y_r - y_l) / h
    if abs(num) < DBL_MIN:
        return 0.0
    if abs(den) < DBL_MIN:
        return _RC_MAX if num > 0 else _RC_MIN
    return num / den


@_nb()
def _rc_param_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l):
    h = x_r - x_l
    num = 0.5 * h * second_l + (d_r - d_l)
    den = (y_r - y_l) / h - d_l
    if abs(num) < DBL_MIN:
        return 0.0
    if abs(den) < DBL_MIN:
        return _RC_MAX if num > 0 else _RC_MIN
    return num / den


@_nb()
def _rc_min_param(d_l, d_r, s, prefer_shape):
    monotonic = (d_l * s >= 0) and (d_r * s >= 0)
    convex = (d_l <= s) and (s <= d_r)
    concave = (d_l >= s) and (s >= d_r)
    if not monotonic and not convex and not concave:
        return _RC_MIN
    r1 = -DBL_MAX
    s_zero = abs(s) < DBL_MIN
    if monotonic and not s_zero:
        r1 = (d_r + d_l) / s
    if prefer_shape and monotonic and s_zero:
        r1 = _RC_MAX
    s_m_dl = s - d_l
    dr_m_s = d_r - s
    degenerate = (abs(s_m_dl) < DBL_MIN) or (abs(dr_m_s) < DBL_MIN)
    cc = convex or concave
    r2 = -DBL_MAX
    if cc and not degenerate:
        r2 = _nan_max(abs((d_r - d_l) / dr_m_s), abs((d_r - d_l) / s_m_dl))
    if prefer_shape:
        if cc and degenerate:
            r2 = _RC_MAX
        if not cc and monotonic:
            r2 = _RC_MAX
    return _nan_max(_RC_MIN, _nan_max(r1, r2))


@_nb()
def _convex_rc_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r, prefer_shape):
    r = _rc_param_right(x_l, x_r, y_l, y_r, d_l, d_r, second_r)
    return _nan_max(r, _rc_min_param(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


@_nb()
def _convex_rc_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l, prefer_shape):
    r = _rc_param_left(x_l, x_r, y_l, y_r, d_l, d_r, second_l)
    return _nan_max(r, _rc_min_param(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


@_nb()
def _rc_interp(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    h = x_r - x_l
    if abs(h) <= 0:
        return 0.5 * (y_l + y_r)
    t = (x - x_l) / h
    if r >= _RC_MAX:
        return y_r * t + y_l * (1 - t)
    omt = 1 - t
    t2 = t * t
    omt2 = omt * omt
    return (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2
            + y_l * omt2 * omt) / (1 + (r - 3) * t * omt)


# --------------------------------------------------------------------------------------------------------------
# Inverse
# --------------------------------------------------------------------------------------------------------------


@_nb()
def _householder_factor(newton, halley, hh3):
    return (1 + 0.5 * halley * newton) / (1 + newton * (halley + hh3 * newton / 6))


_PLAIN, _LOWER, _UPPER = 0, 1, 2


@_nb()
def _otm_bracket(beta, x):
    """The first half of :func:`_otm_guess`: b_max = e^{x/2}, the central point (s_c, b_c, b'_c) and the
    evaluated point on beta's side of it, (s_l, b_l, b'_l) below or (s_h, b_h, b'_h) above."""
    b_max = math.exp(0.5 * x)
    s_c = math.sqrt(abs(2 * x))
    if 0.5 * s_c >= _SMALL_T_THRESHOLD:
        # the erfcx region of _black_and_vega at s_c (never the asymptotic or cumulative-normal one, as
        # x + s_c²/2 = 0), where h + t = 0 and h² + t² = −x: b = ½·e^{x/2}·(1 − erfcx(s_c/√2)) and
        # b' = e^{x/2}/√(2π), from the exponential already taken (_black_and_vega would take two or three more)
        b_c = _clip_abs(0.5 * b_max * (1.0 - _erfcx(ONE_OVER_SQRT_TWO * s_c)))
        v_c = ONE_OVER_SQRT_TWO_PI * b_max
    else:
        b_c, v_c = _black_and_vega(x, s_c)
    if beta < b_c:
        s_o = s_c - b_c / v_c
    else:
        s_o = s_c + (b_max - b_c) / v_c if v_c > DBL_MIN else s_c
    b_o, v_o = _black_and_vega(x, s_o)
    return b_max, s_c, b_c, v_c, s_o, b_o, v_o


@_nb()
def _otm_guess_from(beta, x, b_max, s_c, b_c, v_c, s_o, b_o, v_o):
    """The second half of :func:`_otm_guess`, from :func:`_otm_bracket`'s values."""
    s_left = DBL_MIN
    s_right = DBL_MAX
    objective = _PLAIN
    if beta < b_c:
        s_l, b_l, v_l = s_o, b_o, v_o
        if beta < b_l:
            # lowest segment: transformed lower map + objective 1/ln(b)
            ax = abs(x)
            z = SQRT_ONE_OVER_THREE * ax / s_l
            y = z * z
            s2 = s_l * s_l
            e_y = math.exp(-0.5 * y)  # shared by Φ(-z) and φ(z)
            Phi = _ndtr_e(-z, e_y)
            phi = ONE_OVER_SQRT_TWO_PI * e_y
            growth = math.exp(y + 0.125 * s2)  # its square is exp(2y + s²/4): one exponential for both
            fpp_l = (PI_OVER_SIX * y / (s2 * s_l) * Phi
                     * (8 * SQRT_THREE * s_l * ax + (3 * s2 * (s2 - 8) - 8 * x * x) * Phi / phi)
                     * (growth * growth))
            Phi2 = Phi * Phi
            fp_l = TWO_PI * y * Phi2 * growth
            f_l = TWO_PI_OVER_SQRT_TWENTY_SEVEN * ax * (Phi2 * Phi)
            r_ll = _convex_rc_right(0.0, b_l, 0.0, f_l, 1.0, fp_l, fpp_l, True)
            f = _rc_interp(beta, 0.0, b_l, 0.0, f_l, 1.0, fp_l, r_ll)
            if not f > 0:
                t = beta / b_l
                f = (f_l * t + b_l * (1 - t)) * t
            if f <= 0:
                s = 0.0
            else:
                arg = np.cbrt(f / (TWO_PI_OVER_SQRT_TWENTY_SEVEN * abs(x)))
                s = abs(x / (SQRT_THREE * _ndtri_c(arg, 0)))
            s_right = s_l
            objective = _LOWER
        else:
            r_lm = _convex_rc_right(b_l, b_c, s_l, s_c, 1 / v_l, 1 / v_c, 0.0, False)
            s = _rc_interp(beta, b_l, b_c, s_l, s_c, 1 / v_l, 1 / v_c, r_lm)
            s_left = s_l
            s_right = s_c
    else:
        s_h, b_h, v_h = s_o, b_o, v_o
        if beta <= b_h:
            r_hm = _convex_rc_left(b_c, b_h, s_c, s_h, 1 / v_c, 1 / v_h, 0.0, False)
            s = _rc_interp(beta, b_c, b_h, s_c, s_h, 1 / v_c, 1 / v_h, r_hm)
            s_left = s_c
            s_right = s_h
        else:
            f_u = _ndtr_c(-0.5 * s_h, 0)
            w = (x / s_h) * (x / s_h)
            fp_u = -0.5 * math.exp(0.5 * w)
            fpp_u = SQRT_PI_OVER_TWO * math.exp(w + 0.125 * s_h * s_h) * w / s_h
            if (fpp_u > -SQRT_DBL_MAX) and (fpp_u < SQRT_DBL_MAX):
                r_hh = _convex_rc_left(b_h, b_max, f_u, 0.0, fp_u, -0.5, fpp_u, True)
                f = _rc_interp(beta, b_h, b_max, f_u, 0.0, fp_u, -0.5, r_hh)
            else:
                f = -DBL_MAX
            if not f > 0:
                hh = b_max - b_h
                t = (beta - b_h) / hh
                f = (f_u * (1 - t) + 0.5 * hh * t) * (1 - t)
            s = -2.0 * _ndtri_c(f, 0)
            s_left = s_h
            objective = _UPPER if beta > 0.5 * b_max else _PLAIN

    ln_beta = math.log(beta) if objective == _LOWER else 0.0
    return s, s_left, s_right, objective, ln_beta, b_max


@_nb()
def _otm_guess(beta, x):
    """The initial guess of :func:`_implied_normalised_vol_otm` (lets_be_rational's rational-cubic guesses on
    four segments): (s, s_left, s_right, objective, ln_beta, b_max) for the iteration's first step."""
    b_max, s_c, b_c, v_c, s_o, b_o, v_o = _otm_bracket(beta, x)
    return _otm_guess_from(beta, x, b_max, s_c, b_c, v_c, s_o, b_o, v_o)


@_nb()
def _otm_step(beta, x, s, s_left, s_right, objective, ln_beta, b_max, first):
    """One Householder step of :func:`_implied_normalised_vol_otm` (third order, on the objective the guess
    chose), kept inside the bracket: (s, s_left, s_right, converged)."""
    if not first and not ((s > s_left) and (s < s_right)):
        s = 0.5 * (s_left + s_right)
    b, bp = _black_and_vega(x, s)
    if (b > beta) and (s < s_right):
        s_right = s
    if (b < beta) and (s > s_left):
        s_left = s
    h = x / s
    b_halley = h * h / s - s / 4
    h_s = h / s
    b_hh3 = b_halley * b_halley - 3 * (h_s * h_s) - 0.25
    if objective == _LOWER:
        if (b <= 0) or (bp <= 0):
            ds = 0.5 * (s_left + s_right) - s
        else:
            ln_b = math.log(b)
            bpob = bp / b
            nl = (ln_beta - ln_b) * ln_b / ln_beta / bpob
            hl = b_halley - bpob * (1 + 2 / ln_b)
            h3 = (b_hh3 + 2 * bpob * bpob * (1 + 3 / ln_b * (1 + 1 / ln_b))
                  - 3 * b_halley * bpob * (1 + 2 / ln_b))
            ds = nl * _householder_factor(nl, hl, h3)
    elif objective == _UPPER:
        if (b >= b_max) or (bp <= DBL_MIN):
            ds = 0.5 * (s_left + s_right) - s
        else:
            bmb = b_max - b
            g = math.log((b_max - beta) / bmb)
            gp = bp / bmb
            nu = -g / gp
            hu = b_halley + gp
            h3u = b_hh3 + gp * (2 * gp + 3 * b_halley)
            ds = nu * _householder_factor(nu, hu, h3u)
    else:
        newton = (beta - b) / bp
        ds = newton * _householder_factor(newton, b_halley, b_hh3)
    ds = _nan_max(-0.5 * s, ds)
    s = s + ds
    return s, s_left, s_right, not abs(ds) > DBL_EPSILON * s


@_nb()
def _implied_normalised_vol_otm(beta, x):
    """s = σ√T with b_otm(x, s) = beta, for x <= 0 and 0 < beta < e^{x/2}: one option of
    lets_be_rational.implied_normalised_vol_otm (the guess, then up to two steps)."""
    s, s_left, s_right, objective, ln_beta, b_max = _otm_guess(beta, x)
    for it in range(_ITERATIONS):
        s, s_left, s_right, converged = _otm_step(beta, x, s, s_left, s_right, objective, ln_beta, b_max, it == 0)
        if converged:
            break
    return s


_INTRINSIC_SERIES_LIMIT = 98.0 * _lbr.FOURTH_ROOT_DBL_EPSILON
#: options per phase of the batch implied-vol kernel: their solve states stay in the L1 cache
_IV_PHASE_BLOCK = 64
_FOUR_EPS = 4 * DBL_EPSILON
_NONPOSITIVE_PRICE, _BELOW_INTRINSIC, _AT_INTRINSIC, _ABOVE_MAXIMUM, _NO_CONVERGENCE = 6, 7, 8, 9, 10
_PRICE_UNDERFLOW = 13


@_nb()
def _nonpositive_reason(spot, k, t):
    """The first of spot, strike, time that is not positive, as its reason code (0: none)."""
    if not spot > 0:
        return _NONPOSITIVE_SPOT
    if not k > 0:
        return _NONPOSITIVE_STRIKE
    if not t > 0:
        return _NONPOSITIVE_TIME
    return 0


@_nb()
def _time_value(spot_inputs, p, call, s_, k, t, r, q, f, d, xi, bm):
    """(reason, normalised time value) of one option: the checks and reason codes of :func:`implied_vol_one`;
    reason 0: the vol solves b_otm(−|xi|, s) = time value, s = σ√t."""
    if spot_inputs:
        if not (math.isfinite(s_) and math.isfinite(k) and math.isfinite(t) and math.isfinite(r)
                and math.isfinite(q)):
            return _NAN_INPUT, 0.0
        code = _nonpositive_reason(s_, k, t)  # bsm's market reasons first, in its order
        if code:
            return code, 0.0
    if not (math.isfinite(p) and math.isfinite(f) and math.isfinite(k) and math.isfinite(t) and math.isfinite(d)):
        return _NAN_INPUT, 0.0
    code = _nonpositive_reason(f, k, t)
    if code:
        return code, 0.0
    if not d > 0:
        return _NAN_INPUT, 0.0
    if not p > 0:
        return _NONPOSITIVE_PRICE, 0.0
    if p < DBL_MIN:
        return _PRICE_UNDERFLOW, 0.0
    beta = (p / d) / (math.sqrt(f) * math.sqrt(k))
    y = xi if call else -xi
    y2 = y * y
    if y2 < _INTRINSIC_SERIES_LIMIT:
        intrinsic = y * (1 + y2 * (1.0 / 24.0 + y2 * (1.0 / 1920.0 + y2 * (1.0 / 322560.0 + y2 / 92897280.0))))
    else:
        intrinsic = bm - 1.0 / bm  # bm = exp(θx/2) = exp(y/2)
    intrinsic = _nan_max(intrinsic, 0.0)
    undiscounted = p / d
    upper = f if call else k
    lower = _nan_max(f - k if call else k - f, 0.0)
    time_value = beta - intrinsic
    if undiscounted < lower:
        return _BELOW_INTRINSIC, 0.0
    if (beta >= bm) or (undiscounted >= upper):
        return _ABOVE_MAXIMUM, 0.0
    if (time_value <= 0) or ((lower > 0) and (undiscounted - lower <= _FOUR_EPS * undiscounted)):
        return _AT_INTRINSIC, 0.0  # a time value within rounding of the price says nothing of the vol
    if time_value < DBL_MIN:
        return _PRICE_UNDERFLOW, 0.0
    return 0, time_value


@_nb()
def _vol_of(s, t):
    """(vol, reason) from the solved s = σ√t."""
    v = s / math.sqrt(t)
    if math.isfinite(v) and v > 0:
        return v, 0
    return np.nan, _NO_CONVERGENCE


@_nb()
def implied_vol_one(spot_inputs, p, call, s_, k, t, r, q, f, d, xi, bm):
    """(vol, reason) of one option: the checks, reason codes, normalised time value and solve of
    :func:`implied_vol` (called per option by the American implied-vol kernel)."""
    code, time_value = _time_value(spot_inputs, p, call, s_, k, t, r, q, f, d, xi, bm)
    if code:
        return np.nan, code
    return _vol_of(_implied_normalised_vol_otm(time_value, -abs(xi)), t)


@_nb(types.void(types.boolean, _F, _I, _B, _I, _F, _I, _F, _I, _F, _I, _F, _I, _F, _I, _F, _I, _F, _I, _F, _I,
                _F, _I, _OUT, _REASON))
def implied_vol(spot_inputs, price, p_step, c, c_step, S, S_step, K, K_step, T, T_step, r, r_step, q, q_step,
                F, F_step, df, df_step, x, x_step, b_max, b_step, vol, reason):
    """bsm.implied_vol / implied_vol_forward after numpy has computed the forward ``F``, the discount factor
    ``df``, ``x = ln(F/K)`` and ``b_max = exp(θx/2)``: checks, reason codes, normalised time value and the
    solve of each option. Those four arrays come from numpy so that the time value, a
    difference of large numbers deep in the money, is rounded exactly as ``bsm.price`` rounds it.

    ``spot_inputs``: check S, K, T, r, q first (bsm.implied_vol's market reasons); else the inputs are on
    forwards (S is F, r and q are unused).

    Why in phases over blocks of :data:`_IV_PHASE_BLOCK` options (checks, the guesses' two halves, first steps,
    second steps)
    rather than option after option: one option's solve is a chain of dependent operations (guess, evaluation,
    step, evaluation, step) that keeps the CPU waiting on each result, while the same phase of the next option
    is independent of it and can run in those waits (a quarter faster on the normal book, measured). Each
    option's operations and their order are those of :func:`implied_vol_one`, so the results are the same
    bits."""
    n = reason.size
    block = _IV_PHASE_BLOCK
    at = np.empty(block, dtype=np.int64)  # the block's options to solve: index, then their solve's state
    beta, xo, s = np.empty(block), np.empty(block), np.empty(block)
    s_left, s_right, ln_beta, b_hi = np.empty(block), np.empty(block), np.empty(block), np.empty(block)
    s_c, b_c, v_c, s_o, b_o, v_o = (np.empty(block), np.empty(block), np.empty(block), np.empty(block),
                                    np.empty(block), np.empty(block))
    objective = np.empty(block, dtype=np.int64)
    done = np.empty(block, dtype=np.bool_)
    for b0 in range(0, n, block):
        m = 0
        for i in range(b0, min(b0 + block, n)):
            code, time_value = _time_value(spot_inputs, price[i * p_step], c[i * c_step], S[i * S_step],
                                           K[i * K_step], T[i * T_step], r[i * r_step], q[i * q_step],
                                           F[i * F_step], df[i * df_step], x[i * x_step], b_max[i * b_step])
            if code:
                vol[i] = np.nan
                reason[i] = code
            else:
                at[m] = i
                beta[m] = time_value
                xo[m] = -abs(x[i * x_step])
                m += 1
        for j in range(m):
            b_hi[j], s_c[j], b_c[j], v_c[j], s_o[j], b_o[j], v_o[j] = _otm_bracket(beta[j], xo[j])
        for j in range(m):
            s[j], s_left[j], s_right[j], objective[j], ln_beta[j], _ = _otm_guess_from(
                beta[j], xo[j], b_hi[j], s_c[j], b_c[j], v_c[j], s_o[j], b_o[j], v_o[j])
            done[j] = False
        for it in range(_ITERATIONS):
            for j in range(m):
                if not done[j]:
                    s[j], s_left[j], s_right[j], done[j] = _otm_step(beta[j], xo[j], s[j], s_left[j], s_right[j],
                                                                     objective[j], ln_beta[j], b_hi[j], it == 0)
        for j in range(m):
            i = at[j]
            vol[i], reason[i] = _vol_of(s[j], T[i * T_step])


@_nb(types.void(_F, _I, _F, _I, _OUT))
def normalised_black_otm(x, x_step, s, s_step, out):
    """lets_be_rational.normalised_black_otm per option, b(−|x|, s), by the same region split in one pass
    instead of numpy's ~30 (bsm.price calls it on every American pricing and every chain refresh). The
    intrinsic part stays numpy's, so a deep in-the-money price rounds exactly as the implied-vol solve's time
    value expects. ``*_step`` 0: one value for every option."""
    for i in range(out.size):
        b_otm, _ = _black_and_vega(-abs(x[i * x_step]), s[i * s_step])
        out[i] = b_otm
