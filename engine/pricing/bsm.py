"""Black-Scholes-Merton for European options on a spot with continuous dividend yield, vectorized.

Conventions: ``S`` spot, ``K`` strike, ``T`` years (ACT/365), ``r`` continuously compounded rate, ``q`` continuous
dividend yield, ``sigma`` annualised volatility (0.2 = 20 %). ``right`` is 'c'/'p' (or arrays of them) or a
boolean call mask. All inputs broadcast; scalars give 0-d arrays.

Greeks units: delta per 1 unit of S, gamma per 1 unit of S, vega per 1 vol point (σ + 0.01), theta per calendar
day (value change as one day passes, usually negative), rho per 1 rate point (r + 0.01), vanna = Δdelta per
1 vol point, volga = Δvega (per vol point) per 1 vol point, charm = Δdelta per calendar day.

Invalid inputs (NaN/inf, S, K, T or sigma <= 0) give NaN; pass ``return_reason=True`` for the
:class:`~engine.pricing.inputs.Reason` codes.

:func:`greeks`, :func:`implied_vol` and :func:`implied_vol_forward` run compiled one-pass kernels
(:mod:`engine.pricing._jit`) once :mod:`engine.pricing._kernels` has loaded them, and this module's numpy code
otherwise; the numpy code is the reference, the kernels agree with it to ~1e-15 (tested on both paths).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from engine.pricing import _kernels, _split
from engine.pricing import lets_be_rational as lbr
from engine.pricing.inputs import FloatArray, Reason, broadcast_with_right, first_reason, market_reasons

_NAMES = ("S", "K", "T", "r", "q", "sigma")
_INV_SQRT_2PI = 0.3989422804014326779399460599343818684758586311649
DAYS_PER_YEAR = 365.0


#: every output of :func:`greeks`, in the order of the :class:`Greeks` fields
OUTPUTS = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga", "charm")
#: elements per block: a block's temporaries (~40 arrays of 32 KB) stay in the CPU cache and are reused by
#: the allocator, where whole-chain temporaries (800 KB each for 100k options) go to fresh pages each call
_BLOCK = 4096


@dataclass(frozen=True, eq=False)
class Greeks:
    """Price and Greeks as arrays of one shape (units in the module docstring).

    A field is None when it was not asked for (``greeks(..., outputs=...)``)."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray
    vanna: FloatArray
    volga: FloatArray
    charm: FloatArray

    @classmethod
    def of(cls, fields: Mapping[str, FloatArray | None]) -> Greeks:
        """Greeks from the outputs computed (names of :data:`OUTPUTS`; missing or None: not asked for).

        The fields are typed as arrays, not optional ones: a caller reads only the outputs it asked for, and
        nine ``is not None`` checks at every use would say nothing the ``outputs`` argument did not."""
        values: dict[str, Any] = {name: fields.get(name) for name in OUTPUTS}
        return cls(**values)


def _reasons(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
             sigma: np.ndarray) -> np.ndarray:
    base = market_reasons(S, K, T, r, q)
    with np.errstate(invalid="ignore"):
        vol_ok = np.isfinite(sigma) & (sigma > 0)
    if np.all(vol_ok):
        return base
    reason = np.where((base == 0) & ~np.isfinite(sigma), np.int8(Reason.NAN_INPUT), base)
    return np.where((reason == 0) & ~(sigma > 0), np.int8(Reason.NONPOSITIVE_VOL), reason).astype(np.int8)


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """European option value, accurate to full relative precision even for prices far below 1e-12.

    Computed as ``DF·√(F·K)·b(x, σ√T, θ)`` with Jäckel's region-split normalised Black function, so deep
    out-of-the-money values keep their relative accuracy (the plain formula loses it to cancellation).
    """
    is_call, (S_, K_, T_, r_, q_, sig) = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma)
    reason = _reasons(S_, K_, T_, r_, q_, sig)
    out = np.full(reason.shape, np.nan)
    ok = reason == 0
    if ok.any():
        s, k, t, rr, qq, v, c = S_[ok], K_[ok], T_[ok], r_[ok], q_[ok], sig[ok], is_call[ok]
        with np.errstate(all="ignore"):
            fwd = s * np.exp((rr - qq) * t)
            x = np.log(fwd / k)
            b = _normalised_black(x, v * np.sqrt(t), c)
            out[ok] = np.exp(-rr * t) * np.sqrt(fwd) * np.sqrt(k) * b
    return (out, reason) if return_reason else out


def _normalised_black(x: np.ndarray, s: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    """Jäckel's normalised Black function b(x, s, θ) = intrinsic(θx) + b(−|x|, s). The out-of-the-money part
    is compiled in one pass when the kernels are loaded, else numpy's region split (the reference; prices agree
    within 1e-14 of S, and within 1e-12 relative far out of the money, where the two erfcx implementations
    differ in their last bits). The intrinsic part is always numpy's: the implied-vol solve subtracts numpy's
    intrinsic from a deep in-the-money price, and the two must round alike."""
    theta = np.where(is_call, 1.0, -1.0)
    compiled = _kernels.kernels()
    if compiled is None:
        return lbr.normalised_black(x, s, theta)
    otm = np.empty(x.size)
    compiled.normalised_black_otm(*_flat(x), *_flat(s), otm)
    return lbr.normalised_intrinsic(x, theta) + otm.reshape(x.shape)


def select_outputs(outputs: Iterable[str] | None) -> frozenset[str]:
    """The set of :data:`OUTPUTS` named by ``outputs`` (None: all; one name may be a plain string);
    ``ValueError`` naming anything unknown, so a typo does not silently skip a Greek."""
    if outputs is None:
        return frozenset(OUTPUTS)
    wanted = frozenset([outputs] if isinstance(outputs, str) else outputs)
    unknown = sorted(wanted - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown Greeks output(s) {unknown}; choose from {list(OUTPUTS)}")
    if not wanted:
        raise ValueError(f"no Greeks output asked for; choose from {list(OUTPUTS)}")
    return wanted


def _scalar(a: np.ndarray) -> float | np.ndarray:
    """A broadcast scalar (all strides 0: a rate or yield given as a number) as a Python float, so each
    use is one array operand fewer; the per-element arithmetic is the same."""
    return float(a.flat[0]) if a.size and not any(a.strides) else a


def _greeks_block(want: frozenset[str], c: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray,
                  r: Any, q: Any, sig: np.ndarray, out: dict[str, np.ndarray], sl: slice) -> None:
    """Closed-form outputs ``want`` for one block (1-D inputs, ``r``/``q`` arrays or floats) into ``out[name][sl]``.

    Each intermediate is computed only when a wanted output needs it."""
    sqrt_t = np.sqrt(T)
    vol_t = sig * sqrt_t
    d1 = np.log(S / K)
    d1 += (r - q + 0.5 * sig * sig) * T
    d1 /= vol_t
    need_d2 = want & {"price", "theta", "rho", "vanna", "volga", "charm"}
    d2: Any = d1 - vol_t if need_d2 else None
    dq = np.exp(-q * T) if not isinstance(q, float) or q != 0.0 else 1.0
    sign = c * 2.0 - 1.0  # +1 call, -1 put
    need_n1 = want & {"price", "delta", "theta", "charm"}
    need_n2 = want & {"price", "theta", "rho"}
    need_pdf = want & {"gamma", "vega", "theta", "vanna", "volga", "charm"}
    # None where no wanted output needs the intermediate
    dq_n1: Any = dq * ndtr(sign * d1) if need_n1 else None  # e^{-qT}·N(±d1)
    if need_n2:
        k_dr_n2 = np.exp(-r * T)
        k_dr_n2 *= K
        k_dr_n2 *= ndtr(sign * d2)  # K·e^{-rT}·N(±d2)
    if need_pdf:
        dq_pdf = np.exp(-0.5 * d1 * d1)
        dq_pdf *= dq * _INV_SQRT_2PI
    s_dq_n1: Any = S * dq_n1 if want & {"price", "theta"} else None
    if "price" in want:
        value = s_dq_n1 - k_dr_n2
        value *= sign
        out["price"][sl] = value
    if "delta" in want:
        np.multiply(sign, dq_n1, out=out["delta"][sl])
    if "gamma" in want:
        np.divide(dq_pdf, S * vol_t, out=out["gamma"][sl])
    if want & {"vega", "theta", "volga"}:
        s_dq_pdf = S * dq_pdf
        vega = s_dq_pdf * sqrt_t  # per unit vol
        if "vega" in want:
            np.multiply(vega, 0.01, out=out["vega"][sl])
    if "theta" in want:
        theta = q * s_dq_n1
        theta -= r * k_dr_n2
        theta *= sign
        theta -= s_dq_pdf * sig / (2 * sqrt_t)
        np.multiply(theta, 1 / DAYS_PER_YEAR, out=out["theta"][sl])
    if "rho" in want:
        np.multiply(sign * k_dr_n2, T * 0.01, out=out["rho"][sl])
    if "vanna" in want:
        vanna = dq_pdf * d2 / sig
        np.multiply(vanna, -0.01, out=out["vanna"][sl])
    if "volga" in want:
        volga = vega * d1 * d2 / sig
        np.multiply(volga, 1e-4, out=out["volga"][sl])
    if "charm" in want:
        charm = (sign * q * dq_n1 - dq_pdf * (2 * (r - q) * T - d2 * vol_t) / (2 * T * vol_t))
        np.multiply(charm, 1 / DAYS_PER_YEAR, out=out["charm"][sl])


@overload
def greeks(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: Literal[False] = False,
) -> Greeks: ...


@overload
def greeks(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: Literal[True],
) -> tuple[Greeks, np.ndarray]: ...


@overload
def greeks(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: bool = False,
) -> Greeks | tuple[Greeks, np.ndarray]: ...


def greeks(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = None, return_reason: bool = False,
) -> Greeks | tuple[Greeks, np.ndarray]:
    """Price and first/second-order Greeks in one vectorized pass (closed forms; units in module docstring).

    ``outputs`` names the fields to compute (any of :data:`OUTPUTS`; default all nine): a chain that shows
    price and delta does not pay for vanna, volga and charm. Fields not asked for are None; an unknown
    name is a ``ValueError``. ``price`` here is the closed form ``S·e^{-qT}·N(d1) − K·e^{-rT}·N(d2)``
    (absolute accuracy ~1e-15·S); use :func:`price` when tiny out-of-the-money values need full relative
    accuracy.
    """
    want = select_outputs(outputs)
    is_call, (S_, K_, T_, r_, q_, sig) = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma)
    compiled = _kernels.kernels()
    if compiled is not None:
        fused = _greeks_compiled(compiled, want, is_call, S_, K_, T_, r_, q_, sig)
        return fused if return_reason else fused[0]
    reason = _reasons(S_, K_, T_, r_, q_, sig)
    shape = reason.shape
    bad = reason != 0
    if bad.any():
        S_, K_, T_, sig = (np.where(bad, np.nan, a) for a in (S_, K_, T_, sig))
    n = reason.size
    out = {name: np.empty(n) for name in OUTPUTS if name in want}
    flat = [np.ravel(a) for a in (is_call, S_, K_, T_, sig)]
    rr, qq = _scalar(r_), _scalar(q_)
    rr, qq = (np.ravel(a) if isinstance(a, np.ndarray) else a for a in (rr, qq))
    with np.errstate(all="ignore"):
        for i in range(0, n, _BLOCK):
            sl = slice(i, i + _BLOCK)
            c, s_, k_, t_, v_ = (a[sl] for a in flat)
            _greeks_block(want, c, s_, k_, t_, rr if isinstance(rr, float) else rr[sl],
                          qq if isinstance(qq, float) else qq[sl], v_, out, sl)
    g = Greeks.of({name: a.reshape(shape) for name, a in out.items()})
    return (g, reason) if return_reason else g


def _flat(a: np.ndarray, dtype: Any = np.float64) -> tuple[np.ndarray, int]:
    """A kernel argument: (1-D contiguous values, step). A broadcast scalar (all strides 0: a rate given as a
    number, one spot for a chain) is passed as one value with step 0 instead of being copied n times."""
    if a.size and not any(a.strides):
        return np.ascontiguousarray(a.reshape(-1)[:1], dtype=dtype), 0
    return np.ascontiguousarray(a.reshape(-1), dtype=dtype), 1


#: options per thread's chunk of a compiled Greeks batch (~50-100 ns each): below this a thread's start
#: (~50 µs) is not worth it
_GREEKS_SPLIT_CHUNK = 16_384


def _greeks_compiled(compiled: Any, want: frozenset[str], is_call: np.ndarray, S: np.ndarray, K: np.ndarray,
                     T: np.ndarray, r: np.ndarray, q: np.ndarray, sig: np.ndarray) -> tuple[Greeks, np.ndarray]:
    """:func:`greeks` through the compiled kernel: wanted outputs only, in SIMD loops over blocks (after three
    numpy passes for ln(S/K) and the discount factors, which numpy's SIMD log/exp do fastest), a large batch
    split over threads (each chunk's numpy passes and kernel call release the GIL).

    The kernel takes one contiguous value per option (a broadcast scalar such as the rate is expanded: a
    copy costs less than the strided reads that would keep the kernel's loops from vectorising). Outputs
    not wanted are written to one scratch row, which only the all-outputs kernel serving another set uses."""
    shape = S.shape
    n = S.size
    names = [name for name in OUTPUTS if name in want]
    slot = np.array([names.index(name) if name in want else len(names) for name in OUTPUTS], dtype=np.int64)
    kernel = compiled.greeks_kernel(want)
    needs_scratch = len(names) < len(OUTPUTS) and kernel is compiled.greeks
    out = np.empty((len(names) + (1 if needs_scratch else 0), n))
    if not needs_scratch:
        slot = np.minimum(slot, max(len(names) - 1, 0))  # unwanted outputs are never written by this kernel
    reason = np.empty(n, dtype=np.int8)
    S_, K_, T_, r_, q_, sig_ = (np.ascontiguousarray(np.broadcast_to(a, shape).reshape(-1), dtype=np.float64)
                                for a in (S, K, T, r, q, sig))
    calls = np.ascontiguousarray(np.broadcast_to(is_call, shape).reshape(-1), dtype=np.bool_)
    ln_sk, dq, dr = np.empty(n), np.empty(n), np.empty(n)

    def chunk(start: int, stop: int) -> None:
        part = slice(start, stop)
        with np.errstate(all="ignore"):  # invalid rows are caught in the kernel
            np.log(np.divide(S_[part], K_[part], out=ln_sk[part]), out=ln_sk[part])
            np.exp(np.multiply(np.negative(q_[part], out=dq[part]), T_[part], out=dq[part]), out=dq[part])
            np.exp(np.multiply(np.negative(r_[part], out=dr[part]), T_[part], out=dr[part]), out=dr[part])
        kernel(calls, S_, K_, T_, r_, q_, sig_, ln_sk, dq, dr, slot, out, reason, start, stop)

    _split.run_chunks(chunk, n, _GREEKS_SPLIT_CHUNK)
    g = Greeks.of({name: out[slot[j]].reshape(shape) for j, name in enumerate(OUTPUTS) if name in want})
    return g, reason.reshape(shape)


def bounds(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """No-arbitrage bounds of a European value: (max(θ(S·e^{-qT} − K·e^{-rT}), 0), S·e^{-qT} or K·e^{-rT})."""
    is_call, (S_, K_, T_, r_, q_) = broadcast_with_right(right, _NAMES[:5], S, K, T, r, q)
    with np.errstate(all="ignore"):
        s_dq = S_ * np.exp(-q_ * T_)
        k_dr = K_ * np.exp(-r_ * T_)
    lower = np.maximum(np.where(is_call, s_dq - k_dr, k_dr - s_dq), 0.0)
    upper = np.where(is_call, s_dq, k_dr)
    return lower, upper


#: options per block of the implied-vol solver: its long polynomial expansions make one temporary per
#: operation, which a block keeps in the CPU cache (1.5-1.8x on the one-day book, measured)
_IV_BLOCK = 8192
#: options per thread before the compiled solve is split over threads (~2 ms of work each)
_IV_SPLIT_CHUNK = 4096


def implied_vol_forward(
    price: np.ndarray, is_call: np.ndarray, F: np.ndarray, K: np.ndarray, T: np.ndarray, df: np.ndarray
) -> tuple[FloatArray, np.ndarray]:
    """Implied Black vol from discounted prices on forwards (already broadcast, same shape); returns (vol, reason).

    Shared by :func:`implied_vol` and :mod:`engine.pricing.black76`. Inputs must be float arrays. Solved by the
    compiled kernel when loaded, else in numpy blocks of :data:`_IV_BLOCK` options (every option's arithmetic
    is the same as in one pass).
    """
    compiled = _kernels.kernels()
    if compiled is not None:
        unused = np.zeros(())
        return _implied_vol_compiled(compiled, False, price, is_call, F, K, T, unused, unused, F, df)
    n = price.size
    if n <= _IV_BLOCK:
        return _implied_vol_forward(price, is_call, F, K, T, df)
    flat = [np.ravel(a) for a in (price, is_call, F, K, T, df)]
    vol = np.empty(n)
    reason = np.empty(n, dtype=np.int8)
    for i in range(0, n, _IV_BLOCK):
        sl = slice(i, i + _IV_BLOCK)
        vol[sl], reason[sl] = _implied_vol_forward(*(a[sl] for a in flat))
    return vol.reshape(price.shape), reason.reshape(price.shape)


def _implied_vol_compiled(
    compiled: Any, spot_inputs: bool, p: np.ndarray, is_call: np.ndarray, S: np.ndarray, K: np.ndarray,
    T: np.ndarray, r: np.ndarray, q: np.ndarray, F: np.ndarray | None, df: np.ndarray | None,
) -> tuple[FloatArray, np.ndarray]:
    """Implied vols through the compiled kernel: checks, reasons and the whole solve per option in one pass.

    ``F`` and ``df`` None (the spot inputs of :func:`implied_vol`): computed per chunk as ``S·e^{(r−q)T}`` and
    ``e^{−rT}``. ``F``, ``df``, ``x = ln(F/K)`` and ``exp(θx/2)`` are numpy's, computed exactly as :func:`price` and the
    numpy solver compute them, so a deep in-the-money time value (a difference of large numbers) is rounded
    the same way on both paths and only the solve's last bits can differ. A large batch is split over threads
    (:mod:`engine.pricing._split`); every option's arithmetic is the same in any chunk."""
    vol = np.empty(p.size)
    reason = np.empty(p.size, dtype=np.int8)
    if (F is None) != (df is None):
        raise ValueError("give both the forward and the discount factor, or neither")
    (s_, s_step), (k, k_step), (c, c_step) = _flat(S), _flat(K), _flat(is_call, np.bool_)
    (t, t_step), (rr, r_step), (qq, q_step) = _flat(T), _flat(r), _flat(q)
    given = None if F is None or df is None else (_flat(F), _flat(df))
    f_step = (s_step or r_step or q_step or t_step) if given is None else given[0][1]
    d_step = (r_step or t_step) if given is None else given[1][1]
    x_step = f_step or k_step
    b_step = x_step or c_step
    inputs = [_flat(p), (c, c_step), (s_, s_step), (k, k_step), (t, t_step), (rr, r_step), (qq, q_step)]

    def part(a: np.ndarray, step: int, start: int, stop: int) -> np.ndarray:
        return a[start:stop] if step else a

    def chunk(start: int, stop: int) -> None:
        # the forward, x and b_max per chunk: numpy's log/exp release the GIL, so they run on the chunk's thread.
        # In place in one buffer (a fresh array per operation cost as much as the exponentials); each element's
        # operations are those of price(): S·exp((r − q)·T), exp(−r·T), log(F/K), exp(0.5·θ·x) with θ = ±1
        m = stop - start
        buf = np.empty((4, m))
        with np.errstate(all="ignore"):
            if given is None:
                r_c, t_c = part(rr, r_step, start, stop), part(t, t_step, start, stop)
                f = buf[0, :m if f_step else 1]
                np.subtract(r_c, part(qq, q_step, start, stop), out=f)
                np.multiply(f, t_c, out=f)
                np.exp(f, out=f)
                np.multiply(part(s_, s_step, start, stop), f, out=f)
                d = buf[1, :m if d_step else 1]
                np.negative(r_c, out=d)
                np.multiply(d, t_c, out=d)
                np.exp(d, out=d)
            else:
                f, d = part(*given[0], start, stop), part(*given[1], start, stop)
            x = buf[2, :m if x_step else 1]
            np.divide(f, part(k, k_step, start, stop), out=x)
            np.log(x, out=x)
            b_max = buf[3, :m if b_step else 1]  # one value per option unless x and θ are both one value
            np.subtract(part(c, c_step, start, stop), 0.5, out=b_max)  # θ/2 = call − ½ (a masked negate is 10× slower)
            np.multiply(b_max, x, out=b_max)  # (0.5·θ)·x, as price() rounds it
            np.exp(b_max, out=b_max)
        compiled.implied_vol(spot_inputs, *(v for a, step in inputs for v in (part(a, step, start, stop), step)),
                             _contiguous(f, f_step), f_step, _contiguous(d, d_step), d_step, x, x_step, b_max, b_step,
                             vol[start:stop], reason[start:stop])

    _split.run_chunks(chunk, p.size, _IV_SPLIT_CHUNK)
    return vol.reshape(p.shape), reason.reshape(p.shape)


def _contiguous(a: np.ndarray, step: int) -> np.ndarray:
    """A kernel argument computed in a chunk: one value (step 0) or one per option, float64 and contiguous."""
    return np.ascontiguousarray(a.reshape(-1)[:1] if not step else a.reshape(-1), dtype=np.float64)


def _implied_vol_forward(
    price: np.ndarray, is_call: np.ndarray, F: np.ndarray, K: np.ndarray, T: np.ndarray, df: np.ndarray
) -> tuple[FloatArray, np.ndarray]:
    finite = np.isfinite(price) & np.isfinite(F) & np.isfinite(K) & np.isfinite(T) & np.isfinite(df)
    with np.errstate(invalid="ignore"):
        valid = finite & (F > 0) & (K > 0) & (T > 0) & (df > 0) & (price >= lbr.DBL_MIN)
    vol: np.ndarray = np.full(price.shape, np.nan)
    reason: np.ndarray
    ok: np.ndarray | slice
    if np.all(valid):  # common case: no per-check arrays, no gathers
        reason = np.zeros(price.shape, dtype=np.int8)
        ok = slice(None)
        p, f, k, t, d, c = (np.ravel(a) for a in (price, F, K, T, df, is_call))
        vol = vol.reshape(-1)
        reason = reason.reshape(-1)
    else:
        reason = first_reason(
            price.shape,
            [
                (~finite, Reason.NAN_INPUT),
                (~(F > 0), Reason.NONPOSITIVE_SPOT),
                (~(K > 0), Reason.NONPOSITIVE_STRIKE),
                (~(T > 0), Reason.NONPOSITIVE_TIME),
                (~(df > 0), Reason.NAN_INPUT),
                (~(price > 0), Reason.NONPOSITIVE_PRICE),
                (price < lbr.DBL_MIN, Reason.PRICE_UNDERFLOW),
            ],
        )
        valid_rows = reason == 0
        if not valid_rows.any():
            return vol, reason
        ok = valid_rows
        p, f, k, t, d, c = price[ok], F[ok], K[ok], T[ok], df[ok], is_call[ok]
    with np.errstate(all="ignore"):
        sqrt_fk = np.sqrt(f) * np.sqrt(k)
        beta = (p / d) / sqrt_fk
        x = np.log(f / k)
        theta = np.where(c, 1.0, -1.0)
        intrinsic = lbr.normalised_intrinsic(x, theta)
        b_max = np.exp(0.5 * theta * x)
        undiscounted = p / d
        upper = np.where(c, f, k)
        lower = np.maximum(np.where(c, f - k, k - f), 0.0)
        time_value = beta - intrinsic
    sub = np.zeros(p.shape, dtype=np.int8)
    sub = np.where(undiscounted < lower, np.int8(Reason.BELOW_INTRINSIC), sub)
    sub = np.where((sub == 0) & ((beta >= b_max) | (undiscounted >= upper)), np.int8(Reason.ABOVE_MAXIMUM), sub)
    # A time value within rounding of the price carries no information about the vol.
    no_time_value = (time_value <= 0) | ((lower > 0) & (undiscounted - lower <= 4 * lbr.DBL_EPSILON * undiscounted))
    sub = np.where((sub == 0) & no_time_value, np.int8(Reason.AT_INTRINSIC), sub)
    sub = np.where((sub == 0) & (time_value < lbr.DBL_MIN), np.int8(Reason.PRICE_UNDERFLOW), sub)
    good = sub == 0
    s_out = np.full(p.shape, np.nan)
    if good.any():
        x_otm = -np.abs(x[good])
        s_out[good] = lbr.implied_normalised_vol_otm(time_value[good], x_otm)
    with np.errstate(all="ignore"):
        v = s_out / np.sqrt(t)
    bad_result = good & ~(np.isfinite(v) & (v > 0))
    sub = np.where(bad_result, np.int8(Reason.NO_CONVERGENCE), sub)
    v = np.where(sub == 0, v, np.nan)
    vol[ok] = v
    reason[ok] = sub
    return vol.reshape(price.shape), reason.reshape(price.shape)


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """Implied BSM volatility of European prices at machine accuracy (Jäckel's "Let's Be Rational").

    NaN where no vol exists, with reason codes (:class:`~engine.pricing.inputs.Reason`): non-finite input,
    S/K/T <= 0, price <= 0, price below the lower bound ``max(θ(S·e^{-qT} − K·e^{-rT}), 0)``, price equal to it
    (no time value), or at/above the upper bound (``S·e^{-qT}`` call, ``K·e^{-rT}`` put).
    """
    is_call, (p, S_, K_, T_, r_, q_) = broadcast_with_right(right, ("price", *_NAMES[:5]), price, S, K, T, r, q)
    compiled = _kernels.kernels()
    if compiled is not None:  # market checks, forward checks and solve fused per option
        vol, reason = _implied_vol_compiled(compiled, True, p, is_call, S_, K_, T_, r_, q_, None, None)
        return (vol, reason) if return_reason else vol
    with np.errstate(all="ignore"):
        fwd = S_ * np.exp((r_ - q_) * T_)
        df = np.exp(-r_ * T_)
    base = market_reasons(S_, K_, T_, r_, q_)
    vol, reason = implied_vol_forward(p, is_call, fwd, K_, T_, df)
    reason = np.where(base != 0, base, reason).astype(np.int8)
    vol = np.where(reason == 0, vol, np.nan)
    return (vol, reason) if return_reason else vol
