"""Lewis (2001) Fourier pricing of European options from a characteristic function, vectorized over strikes.

For ``x_T = ln(S_T / F)`` with characteristic function ``ψ(u) = E[e^{iu·x_T}]`` (so ``ψ(−i) = 1``):

    C = S·e^{-qT} − √(F·K)·e^{-rT}/π · ∫₀^∞ Re[e^{iu·ln(F/K)}·ψ(u − i/2)] / (u² + 1/4) du.

Puts by parity. Options are grouped by expiry: per expiry the characteristic function is evaluated once on a
composite Gauss-Legendre grid whose upper limit is found from the decay of ``|ψ|``, and the integral for all its
strikes is one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: (complex u array, T) -> log ψ(u); T is one expiry, or an array broadcasting against u (a scan of expiries)
LogCF = Callable[[np.ndarray, float | np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class _Group:
    """One expiry of a :class:`LewisPlan`: its options (``idx``), nodes ``u`` and the e^{iux}·weight matrices,
    which depend on the strikes only, so a new parameter set costs a CF evaluation and two matrix products."""

    t: float
    idx: np.ndarray
    u: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    scale: np.ndarray
    s_dq: np.ndarray
    k_df: np.ndarray
    is_call: np.ndarray


_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def upper_limit(log_cf: LogCF, T: float, tol: float) -> float:
    """Where the integrand's bound ``|ψ(u − i/2)|/(u² + 1/4)`` falls below ``tol`` for good (on a log grid)."""
    u = np.geomspace(0.5, 1e6, 200)
    with np.errstate(all="ignore"):
        mag = np.exp(np.real(log_cf(u - 0.5j, T))) / (u * u + 0.25)
    small = np.flatnonzero(~(mag > tol))
    if small.size == 0:
        return float(u[-1])
    # the first point from which the bound stays below tol
    above = np.flatnonzero(mag > tol)
    last_above = above[-1] if above.size else -1
    return float(u[min(last_above + 1, u.size - 1)])


def _nodes(upper: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite 16-point Gauss-Legendre nodes on [0, upper]: fine panels near 0 (the 1/(u²+1/4) factor has
    poles at ±i/2), then panels no wider than ``width``."""
    near = np.array([0.0, 0.125, 0.25, 0.5, 1.0, 2.0])
    near = near[near < upper]
    start = near[-1] if near.size else 0.0
    count = max(int(np.ceil((upper - start) / width)), 1)
    edges = np.concatenate([near, np.linspace(start, upper, count + 1)[1:]])
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    u = (mid[:, None] + half[:, None] * _GL_X[None, :]).ravel()
    w = (half[:, None] * _GL_W[None, :]).ravel()
    return u, w


class LewisPlan:
    """Quadrature grids and e^{iux} matrices for a fixed set of options, reusable across parameter sets.

    Built once from a characteristic function that sets each expiry's cut-off (times ``margin``); afterwards
    :meth:`price` costs one CF evaluation per node and a matrix-vector product per expiry. This is what makes
    calibration loops cheap: only the model parameters change between evaluations.
    """

    def __init__(self, is_call: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                 q: np.ndarray, log_cf: LogCF, *, tol: float = 1e-15, margin: float = 1.0,
                 uppers: Mapping[float, float] | None = None,
                 node_rule: Callable[[float, float], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """``uppers``: the integration cut-off per expiry, when the caller has it (else found from ``log_cf``);
        ``node_rule(upper, max |ln(F/K)|)``: the model's own quadrature nodes and weights on [0, upper]."""
        self.n = S.shape[0]
        self.groups: list[_Group] = []
        for t in np.unique(T):
            idx = np.flatnonzero(T == t)
            upper = uppers[float(t)] if uppers is not None else upper_limit(log_cf, float(t), tol) * margin
            fwd = S[idx] * np.exp((r[idx] - q[idx]) * t)
            x = np.log(fwd / K[idx])
            if node_rule is not None:
                u, w = node_rule(upper, float(np.max(np.abs(x))))
            else:  # panels at most ~1.5 oscillations of e^{iux} wide, and at most 8 wide for the CF's own shape
                width = min(8.0, 3.0 * np.pi / max(float(np.max(np.abs(x))), 1e-3))
                u, w = _nodes(upper, width)
            ux = np.outer(x, u)
            weight = w / (u * u + 0.25)
            df = np.exp(-r[idx] * t)
            s_dq = S[idx] * np.exp(-q[idx] * t)
            self.groups.append(_Group(
                t=float(t), idx=idx, u=u, cos=np.cos(ux) * weight, sin=np.sin(ux) * weight,
                scale=np.sqrt(fwd * K[idx]) * df / np.pi, s_dq=s_dq, k_df=K[idx] * df, is_call=is_call[idx],
            ))

    def price(self, log_cf: LogCF) -> np.ndarray:
        """European prices of the planned options under the model of ``log_cf``."""
        out = np.empty(self.n)
        for g in self.groups:
            psi = np.exp(log_cf(g.u - 0.5j, g.t))
            integral = g.cos @ psi.real - g.sin @ psi.imag
            call = g.s_dq - g.scale * integral
            put = call - g.s_dq + g.k_df
            out[g.idx] = np.where(g.is_call, call, put)
        return out


def lewis_price(
    is_call: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
    log_cf: LogCF, *, tol: float = 1e-15,
) -> np.ndarray:
    """European prices (1-D arrays of one length, valid inputs) from ``log ψ``; see the module docstring."""
    return LewisPlan(is_call, S, K, T, r, q, log_cf, tol=tol).price(log_cf)
