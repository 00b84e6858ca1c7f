"""Black-76: European options on a forward/future ``F``, discounted at ``r``, vectorized.

Value = e^{-rT}·(θF·N(θd1) − θK·N(θd2)), d1 = (ln(F/K) + σ²T/2)/(σ√T). Same units as :mod:`engine.pricing.bsm`:
delta and gamma per 1 unit of F, vega per vol point, theta per calendar day (F held fixed), rho per rate point
(discounting only), vanna/volga per vol point, charm per calendar day.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from engine.pricing import bsm
from engine.pricing.inputs import FloatArray, broadcast_with_right

_NAMES = ("F", "K", "T", "r", "sigma")


@overload
def price(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def price(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def price(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def price(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """Discounted Black-76 value (full relative accuracy for tiny values)."""
    return bsm.price(right, F, K, T, r, r, sigma, return_reason=return_reason)


@overload
def greeks(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: Literal[False] = False,
) -> bsm.Greeks: ...


@overload
def greeks(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: Literal[True],
) -> tuple[bsm.Greeks, np.ndarray]: ...


@overload
def greeks(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = ..., return_reason: bool = False,
) -> bsm.Greeks | tuple[bsm.Greeks, np.ndarray]: ...


def greeks(
    right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
    *, outputs: Iterable[str] | None = None, return_reason: bool = False,
) -> bsm.Greeks | tuple[bsm.Greeks, np.ndarray]:
    """Black-76 value and Greeks with respect to the forward (a BSM with q = r; rho is discounting only).

    ``outputs`` selects the fields as in :func:`engine.pricing.bsm.greeks` (the rest are None)."""
    is_call, (F_, K_, T_, r_, sig) = broadcast_with_right(right, _NAMES, F, K, T, r, sigma)
    want = bsm.select_outputs(outputs)
    inner = (want - {"rho"}) | ({"price"} if "rho" in want else set())  # rho here is −T·price
    g, reason = bsm.greeks(is_call, F_, K_, T_, r_, r_, sig, outputs=inner, return_reason=True)
    # BSM with q = r moves both r and q in its rho; on a forward only the discount factor depends on r.
    rho = -T_ * g.price * 0.01 if "rho" in want else None
    fields = {name: getattr(g, name) for name in want}
    fields["rho"] = rho
    out = bsm.Greeks.of(fields)
    return (out, reason) if return_reason else out


@overload
def implied_vol(
    price: ArrayLike, right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
    *, return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
    *, return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def implied_vol(
    price: ArrayLike, right: Any, F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
    *, return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """Implied Black-76 vol at machine accuracy; NaN with reason codes where no vol exists (as BSM)."""
    is_call, (p, F_, K_, T_, r_) = broadcast_with_right(right, ("price", *_NAMES[:4]), price, F, K, T, r)
    with np.errstate(all="ignore"):
        df = np.exp(-r_ * T_)
    vol, reason = bsm.implied_vol_forward(p, is_call, F_, K_, T_, df)
    return (vol, reason) if return_reason else vol
