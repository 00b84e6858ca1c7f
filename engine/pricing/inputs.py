"""Input handling shared by the pricers: broadcasting, option right parsing, validity reason codes."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class Reason(IntEnum):
    """Why a pricing or implied-vol result is NaN (``OK`` when it is a number)."""

    OK = 0
    NAN_INPUT = 1  # an input is NaN or infinite
    NONPOSITIVE_SPOT = 2  # S (or F) <= 0
    NONPOSITIVE_STRIKE = 3  # K <= 0
    NONPOSITIVE_TIME = 4  # T <= 0: expired, no vol exists
    NONPOSITIVE_VOL = 5  # sigma <= 0 (or a model parameter outside its valid range)
    NONPOSITIVE_PRICE = 6  # option price <= 0
    BELOW_INTRINSIC = 7  # price below the no-arbitrage lower bound
    AT_INTRINSIC = 8  # price equals the lower bound: no time value, the vol is undetermined
    ABOVE_MAXIMUM = 9  # price at or above the no-arbitrage upper bound (S·e^{-qT} call, K·e^{-rT} put)
    NO_CONVERGENCE = 10  # the root finder did not reach the target accuracy
    OUTSIDE_DOMAIN = 11  # a surrogate model was asked outside its training domain
    BAD_PARAMETER = 12  # a model parameter is invalid (e.g. negative jump intensity)
    PRICE_UNDERFLOW = 13  # price (or its time value) below float64's normal range (~2.2e-308): no accurate vol


_CALL_WORDS = {"c": True, "call": True, "p": False, "put": False}


def parse_right(right: Any) -> NDArray[np.bool_]:
    """Return a boolean call mask (``True`` = call) from 'c'/'p' strings, arrays of them, or booleans.

    Raises ``ValueError`` naming the offending value for anything else.
    """
    arr = np.asarray(right)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "US":
        flat = arr.ravel()
        uniq = np.unique(flat)
        lookup = {}
        for u in uniq:
            key = (u.decode() if isinstance(u, bytes) else str(u)).strip().lower()
            if key not in _CALL_WORDS:
                raise ValueError(f"right must be 'c'/'p' (or 'call'/'put') or a boolean call mask, got {u!r}")
            lookup[u] = _CALL_WORDS[key]
        if len(uniq) == 1:
            return np.full(arr.shape, lookup[uniq[0]], dtype=bool)
        out = np.empty(flat.shape, dtype=bool)
        for u, v in lookup.items():
            out[flat == u] = v
        return out.reshape(arr.shape)
    if arr.dtype == object:
        return parse_right(np.asarray([str(v) for v in arr.ravel()]).reshape(arr.shape))
    raise ValueError(f"right must be 'c'/'p' strings or a boolean call mask, got dtype {arr.dtype}")


def broadcast(names: tuple[str, ...], *values: ArrayLike) -> tuple[np.ndarray, ...]:
    """Broadcast numeric inputs to one shape as float64 arrays; ``ValueError`` naming shapes on mismatch."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    try:
        out = np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"input shapes cannot be broadcast together: {shapes}") from None
    return tuple(out)


def broadcast_with_right(
    right: Any, names: tuple[str, ...], *values: ArrayLike
) -> tuple[NDArray[np.bool_], tuple[np.ndarray, ...]]:
    """Parse ``right`` and broadcast it with the numeric inputs (all returned at one common shape)."""
    is_call = parse_right(right)
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    try:
        shape = np.broadcast_shapes(is_call.shape, *(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(("right", *names), (is_call, *arrays), strict=True))
        raise ValueError(f"input shapes cannot be broadcast together: {shapes}") from None
    return np.broadcast_to(is_call, shape), tuple(np.broadcast_to(a, shape) for a in arrays)


def first_reason(shape: tuple[int, ...], checks: list[tuple[np.ndarray, Reason]]) -> NDArray[np.int8]:
    """Reason array: the first failing check (in list order) wins; ``Reason.OK`` where all pass."""
    reason = np.zeros(shape, dtype=np.int8)
    for bad, code in reversed(checks):
        reason = np.where(bad, np.int8(code), reason)
    return reason


def market_reasons(
    S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray
) -> NDArray[np.int8]:
    """Reason codes for the market inputs common to all models (before model parameters)."""
    shape = np.broadcast_shapes(S.shape, K.shape, T.shape, r.shape, q.shape)
    with np.errstate(invalid="ignore"):
        positive = (S > 0) & (K > 0) & (T > 0)
    finite = np.isfinite(S) & np.isfinite(K) & np.isfinite(T) & np.isfinite(r) & np.isfinite(q)
    if np.all(positive & finite):  # the common case: one pass, no per-check arrays
        return np.zeros(shape, dtype=np.int8)
    return first_reason(
        shape,
        [
            (~finite, Reason.NAN_INPUT),
            (~(S > 0), Reason.NONPOSITIVE_SPOT),
            (~(K > 0), Reason.NONPOSITIVE_STRIKE),
            (~(T > 0), Reason.NONPOSITIVE_TIME),
        ],
    )
