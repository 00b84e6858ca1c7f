"""American options with continuous dividend yield: vectorized price, delta/gamma and implied vol.

Method: Andersen, Lake & Offengenden (2016), "High Performance American Option Pricing". The put exercise
boundary is written as ``B(τ) = X·exp(−√H)``, ``X = K·min(1, r/q)``, with ``H`` a Chebyshev interpolant in
``z = 2√(τ/T) − 1`` on ``n + 1`` nodes. It starts from Li's QD+ boundary (vectorized Halley steps) and is
refined by one Jacobi-Newton step and ``m − 1`` plain fixed-point steps of the φ-form integral equation (ALO's
FP-A); the price is the European value plus the early-exercise premium integrated over the boundary. Calls use
put-call symmetry ``C(S, K, r, q) = P(K, S, q, r)``.

Both integrals (the boundary equation's and the premium's) run over a time ``s ∈ [0, τ]`` with square-root
behaviour at both ends; the substitution ``s = τ·sin²θ`` makes the integrand smooth at both, so Gauss-Legendre
converges geometrically: 6 points per node and 24 for the premium do what 16 and 32 did not with ALO's
``s = τ(1 + y)²/4`` (which smooths one end only). Every quadrature abscissa sits at a fixed fraction of its
collocation time, so interpolation is one matrix for a whole chain.

Two implementations of the boundary and premium: the numpy reference (below) and numba kernels
(:mod:`engine.pricing._american_kernels`, one option at a time, no temporaries), used once :func:`warm_up` has
loaded them; they agree to ~1e-15 (tested to 1e-14).

Schemes (max abs error against QuantLib's ``QdFpAmericanEngine`` high-precision scheme, S = 100, K 70-130,
T 1 week-3 y, vol 10-80 %, q 0-5 %, r 0-10 %; ``tests/pricing/test_american_kernels.py``, ``benchmarks``):
``"accurate"`` (the default) 4.4e-5 (8e-6 on the benchmark's narrower chain), ``"fast"`` 2e-4 (about 1.7×
cheaper). QdFp's own accurate scheme is up to 1e-4 away from its high-precision one. See ``docs/pricing.md``.

Conventions as in :mod:`engine.pricing.bsm`. A put with ``r <= 0`` (a call with ``q <= 0``) is never exercised
early and gets its European value.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from engine.pricing import _split, bsm
from engine.pricing import lets_be_rational as lbr
from engine.pricing.inputs import FloatArray, Reason, broadcast_with_right, market_reasons

QD_ITER = 4
_INV_SQRT_2PI = 0.3989422804014326779399460599343818684758586311649
_NAMES = ("S", "K", "T", "r", "q", "sigma")
_CHUNK = 4096
#: elements of one (options × nodes × quadrature) array per block: ~40k (320 KB) keeps the fixed-point step's
#: temporaries in cache; whole-chain arrays (2.5 MB each for 2,000 options, accurate) made it 1.4x slower
_BLOCK_ELEMENTS = 40_960


@dataclass(frozen=True)
class Scheme:
    """Collocation nodes ``n`` (+1), fixed-point quadrature ``quad``, iterations ``m``, premium quadrature ``p``."""

    n: int
    quad: int
    m: int
    p: int


SCHEMES = {
    "fast": Scheme(n=6, quad=5, m=2, p=16),
    "accurate": Scheme(n=8, quad=6, m=3, p=24),
}
#: the scheme used instead where the premium is tiny (:data:`COARSE_PREMIUM_BELOW`)
_COARSER = {SCHEMES["accurate"]: SCHEMES["fast"]}


#: use the compiled kernels once :func:`warm_up` has loaded them (False: always the numpy reference path)
USE_COMPILED = True
_kernels: Any = None
_warm_lock = threading.Lock()


def _compiled() -> Any:
    """The loaded kernel module when the compiled path is in use: loaded by :func:`warm_up`, not switched off
    here (``USE_COMPILED``) nor process-wide (:func:`engine.pricing._kernels.numpy_only`, the shared switch)."""
    if _kernels is None or not USE_COMPILED:
        return None
    from engine.pricing import _kernels as switch

    return _kernels if switch.status()["enabled"] else None


def warm_up(cache_dir: Any = None) -> bool:
    """Load the numba kernels of :mod:`engine.pricing._american_kernels` (compiled on the first run, then read
    from numba's on-disk cache); False when numba is missing or disabled (``OPTIONDESK_NO_NUMBA``), and
    pricing keeps the numpy path.

    Why explicit: a first compile takes seconds and must never happen on the UI path, so pricing never compiles
    by itself. :func:`engine.pricing._kernels.warm_up` (the engine's background warm-up thread, scripts,
    benchmarks, the frozen build's cache step) calls this after its own kernels; it shares their cache folder.
    Importing numba costs ~0.5 s, which is why ``import engine.pricing`` does not do it."""
    global _kernels
    from engine.pricing import _kernels as switch

    with _warm_lock:
        if _kernels is not None:
            return True
        if not switch.numba_available():
            return False
        switch.configure_cache_dir(cache_dir)
        try:
            from engine.pricing import _american_kernels as kernels
        except ImportError:
            return False
        one = np.ones(1)
        for scheme in SCHEMES.values():  # every signature the pricer uses (the schemes share their types)
            H = np.empty((1, scheme.n + 1))
            x_max = np.empty(1)
            kernels.put_boundary(100 * one, one, 0.05 * one, 0.01 * one, 0.2 * one, _packed(kernels, scheme),
                                 scheme.n, scheme.quad, scheme.m, H, x_max)
            kernels.put_premium(100 * one, 100 * one, one, 0.05 * one, 0.01 * one, 0.2 * one, H, x_max,
                                _packed(kernels, scheme), scheme.n, scheme.quad, scheme.p, np.empty(1))
        tables = _scheme_tables(kernels, SCHEMES["fast"])
        f1, b1 = np.ones(1), np.ones(1, dtype=np.bool_)
        kernels.american_iv(f1, b1, *(f1,) * 16, tables, tables, (1e-5, 1e-10, 1e-4, True),
                            1e-8, 12, np.empty(1), np.empty(1, dtype=np.bool_), np.empty(1, dtype=np.int64))
        for kernel in (kernels.put_boundary, kernels.put_premium, kernels.american_iv):
            kernel.disable_compile()  # other argument types raise TypeError (numpy path), never compile
        _kernels = kernels
    return True


@lru_cache(maxsize=16)
def _packed(kernels: Any, scheme: Scheme) -> np.ndarray:
    """:func:`_tables` in the compiled kernels' one-array layout (``_american_kernels.pack_tables``)."""
    tb = _tables(scheme)
    return kernels.pack_tables(tb["z_nodes"], tb["m_frac"], tb["sqrt_m_frac"], tb["g1"], tb["g2"], tb["M_a"],
                               tb["t_frac"], tb["sqrt_t_frac"], tb["h"], tb["M_p"])


@lru_cache(maxsize=16)
def _tables(scheme: Scheme) -> dict[str, np.ndarray]:
    """Nodes, weights and interpolation matrices for a scheme (independent of the option)."""
    n = scheme.n
    k = np.arange(n + 1)
    z_nodes = -np.cos(np.pi * k / n)  # Chebyshev points of the second kind, ascending, z_0 = -1 (τ = 0)
    bary = (-1.0) ** k
    bary[0] *= 0.5
    bary[-1] *= 0.5

    def interp_matrix(z_eval: np.ndarray) -> np.ndarray:
        diff = z_eval[:, None] - z_nodes[None, :]
        exact = np.abs(diff) < 1e-15
        with np.errstate(divide="ignore", invalid="ignore"):
            w = bary[None, :] / diff
        w = w / w.sum(axis=1, keepdims=True)
        rows = exact.any(axis=1)
        w[rows] = exact[rows].astype(float)
        return w

    x_l, w_l = np.polynomial.legendre.leggauss(scheme.quad)
    x_p, w_p = np.polynomial.legendre.leggauss(scheme.p)
    zi = z_nodes[1:]  # nodes with τ > 0
    # Both integrals run over a time s ∈ [0, τ] whose integrand has square-root behaviour at both ends: in √s
    # (the density's 1/√s, d± ∝ 1/√s) and in √(τ − s) (the boundary is smooth in √ of its own time to expiry).
    # s = τ·sin²θ, θ = π(1 + y)/4 makes both ends smooth (√s = √τ·sin θ, √(τ − s) = √τ·cos θ), so
    # Gauss-Legendre converges geometrically; ALO's s = τ(1 + y)²/4 smooths only the first end.
    th_l = np.pi * (1 + x_l) / 4
    th_p = np.pi * (1 + x_p) / 4
    # φ-form (ALO "FP-A"): elapsed m = τ·sin²θ, boundary at τ − m, i.e. z = (1 + z_i)·cos θ − 1.
    za = (1 + zi)[:, None] * np.cos(th_l)[None, :] - 1
    # premium: t = T·sin²θ from now, boundary at T − t.
    zp = 2 * np.cos(th_p) - 1
    sub = {
        "m_frac": np.sin(th_l) ** 2,  # m / τ
        "sqrt_m_frac": np.sin(th_l),  # √(m / τ)
        "g1": w_l * np.sin(2 * th_l) * (np.pi / 4),  # weight × (dm/dy) / τ
        "g2": w_l * np.cos(th_l) * (np.pi / 2),  # weight × dm/(√m·dy) / √τ
        "t_frac": np.sin(th_p) ** 2,
        "sqrt_t_frac": np.sin(th_p),
        "h": w_p * np.sin(2 * th_p) * (np.pi / 4),  # weight × (dt/dx) / T
    }
    return {
        "z_nodes": z_nodes,
        "x_l": x_l,
        "w_l": w_l,
        "x_p": x_p,
        "w_p": w_p,
        **sub,
        "M_a": interp_matrix(za.ravel()),
        "M_p": interp_matrix(zp),
    }


def _x_max(K: np.ndarray, r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Boundary of a put at expiry (τ → 0+): K·min(1, r/q) for r > 0."""
    with np.errstate(all="ignore"):  # the masked-out lanes (q <= r) may overflow for subnormal q
        return np.where(q > r, K * r / np.where(q > 0, q, 1.0), K)


def _qd_plus_boundary(tau: np.ndarray, K: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                      x_max: np.ndarray, iterations: int = QD_ITER) -> np.ndarray:
    """Li's QD+ approximation of the put exercise boundary at times ``tau`` (N, n), ascending along axis 1, for
    options given as columns (N, 1).

    Solves ``(1 − e^{-qτ}Φ(−d₊))·S − β·(K − S − p_E(S)) + α·Θ_E(S)/(r·e^{-rτ}) = 0`` (the QD+ condition of
    Li (2005) as used by ALO for their starting boundary) by Halley steps, node by node: the first node from
    ``X``, each later one from the node before it, until a step is below :data:`QD_STEP_DONE`. Why: the start
    is half the cost of a fast-scheme boundary; the boundary falls smoothly with τ, so the previous node's value
    is close and on the same side of the root as ``X``. Counted on the benchmark chain: 3.1 Halley steps per
    node, against 4.0 from ``X`` with a 1e-13 stop."""
    out = np.empty(tau.shape)
    start = x_max[:, 0].copy()
    for i in range(tau.shape[1]):
        b0 = _qd_plus_node(tau[:, i:i + 1], K, r, q, sigma, x_max, start[:, None], iterations)[:, 0]
        out[:, i] = b0
        start = np.where(np.isnan(b0), start, b0)
    return out


def _qd_plus_node(tau: np.ndarray, K: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                  x_max: np.ndarray, x0: np.ndarray, iterations: int) -> np.ndarray:
    """:func:`_qd_plus_boundary` at one node (column arrays), Halley steps from ``x0``."""
    s2 = sigma * sigma
    v = sigma * np.sqrt(tau)
    dr = np.exp(-r * tau)
    dq = np.exp(-q * tau)
    omega = 2 * (r - q) / s2
    root = np.sqrt((omega - 1) ** 2 + 8 * r / (s2 * (1 - dr)))
    lam = 0.5 * (-(omega - 1) - root)
    lam_p = 2 * r / (s2 * (1 - dr) ** 2 * root)
    den = 2 * lam + omega - 1
    alpha = 2 * dr * r / (s2 * den)
    beta = alpha * (1 / (1 - dr) + lam_p / den) - lam
    a_rdr = alpha / (r * dr)
    x_min = 1e-10 * K
    x = np.broadcast_to(x0, tau.shape).copy()
    active = np.ones(tau.shape, dtype=bool)
    for _ in range(iterations):
        S = np.maximum(x, x_min)
        dp = np.log(S * dq / (K * dr)) / v + 0.5 * v
        dm = dp - v
        Phi_dp = ndtr(-dp)
        Phi_dm = ndtr(-dm)
        phi_dp = _INV_SQRT_2PI * np.exp(-0.5 * dp * dp)
        npv = dr * K * Phi_dm - S * dq * Phi_dp
        theta = r * K * dr * Phi_dm - q * S * dq * Phi_dp - s2 * S / (2 * v) * dq * phi_dp
        charm = -dq * (phi_dp * ((r - q) / v - dm / (2 * tau)) + q * Phi_dp)
        one_m = 1 - dq * Phi_dp
        f = one_m * S - beta * (K - S - npv) + a_rdr * theta
        fp = one_m + dq / v * phi_dp + beta * one_m + a_rdr * charm
        gamma = phi_dp * dq / (v * S)
        colour = gamma * (q + (r - q) * dp / v + (1 - dp * dm) / (2 * tau))
        fpp = dq * (phi_dp / (S * v) - phi_dp * dp / (S * v * v)) + beta * gamma + a_rdr * colour
        lf = f * fpp / (fp * fp)
        step = f / fp / (1 - 0.5 * lf)
        step = np.where(np.isfinite(step), step, 0.0)
        x = np.where(active, np.maximum(x_min, x - step), x)
        # an element stops after a step below QD_STEP_DONE·K (Halley converges cubically)
        active &= ~(np.abs(step) <= QD_STEP_DONE * K)
        if not active.any():
            break
    return np.minimum(x, x_max)


def _put_boundary(K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                  scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Exercise-boundary interpolant values H at the nodes, shape (N, n+1), and X (N,)."""
    kernels = _compiled()
    if kernels is not None:
        tab = _packed(kernels, scheme)
        H = np.empty((K.shape[0], scheme.n + 1))
        x_max = np.empty(K.shape[0])
        inputs = [np.array(a, dtype=float) for a in (K, T, r, q, sigma)]

        def chunk(start: int, stop: int) -> None:
            kernels.put_boundary(*(a[start:stop] for a in inputs), tab, scheme.n, scheme.quad, scheme.m,
                                 H[start:stop], x_max[start:stop])

        try:
            _split.run_chunks(chunk, K.shape[0], _SPLIT_CHUNK)
            return H, x_max
        except TypeError:  # argument types the warm-up did not compile: the reference path
            pass
    return _put_boundary_numpy(K, T, r, q, sigma, scheme)


def _put_boundary_numpy(K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                        scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """The numpy reference of :func:`_put_boundary` (also the fallback without numba)."""
    tb = _tables(scheme)
    n, nq = scheme.n, scheme.quad
    z_nodes = tb["z_nodes"]
    x_max = _x_max(K, r, q)
    r2, q2, s2, K2, xm2 = (a[:, None] for a in (r, q, sigma, K, x_max))
    tau = T[:, None] * ((1 + z_nodes[None, 1:]) / 2) ** 2  # (N, n)
    H = np.zeros((K.shape[0], n + 1))
    with np.errstate(all="ignore"):
        b0 = _qd_plus_boundary(tau, K2, r2, q2, s2, xm2)
        H[:, 1:] = np.log(np.minimum(b0, xm2) / xm2) ** 2
    sqrt_tau = np.sqrt(tau)
    v_tau = s2 * sqrt_tau
    alpha = K2 * np.exp(-(r2 - q2) * tau)
    ln_k_over_xm = np.log(K2 / xm2)
    drift_k = (r2 - q2) * tau
    t3 = tau[:, :, None]
    r3, q3, s3 = r2[:, :, None], q2[:, :, None], s2[:, :, None]
    # φ-form of the boundary equation (ALO's FP-A; QuantLib's DqFpEquation_A): from the QD+ start it converges
    # in about two steps, where the Φ-form needs about five. m = τ(1+y)²/4, boundary at τ − m.
    m = t3 * tb["m_frac"]
    v3 = s3 * (sqrt_tau[:, :, None] * tb["sqrt_m_frac"])
    inv_v3 = 1 / v3
    drift3 = (r3 - q3) * m
    stv = (sqrt_tau / s2)[:, :, None]
    eq = np.exp(q3 * (t3 - m)) * q3
    w12a = eq * t3 * tb["g1"]
    w12b = eq * stv * tb["g2"] * _INV_SQRT_2PI
    w3 = np.exp(r3 * (t3 - m)) * r3 * stv * tb["g2"] * _INV_SQRT_2PI
    M = tb["M_a"].T
    st = s2 * s2 * tau

    def step(newton: bool) -> np.ndarray:
        sqrt_h = np.sqrt(np.maximum(H[:, 1:], 0.0))
        b = xm2 * np.exp(-sqrt_h)
        sqrt_hq = np.sqrt(np.maximum(H @ M, 0.0)).reshape(-1, n, nq)
        ln_ratio = sqrt_hq - sqrt_h[:, :, None]  # ln(b(τ_i) / B(·))
        dp = (ln_ratio + drift3) * inv_v3 + 0.5 * v3
        dm = dp - v3
        # at the node: d(τ, b/K), ln(b/K) = −√H − ln(K/X)
        dp_k = (-sqrt_h - ln_k_over_xm + drift_k) / v_tau + 0.5 * v_tau
        dm_k = dp_k - v_tau
        phi_p = _INV_SQRT_2PI * np.exp(-0.5 * dp_k * dp_k)
        phi_m = _INV_SQRT_2PI * np.exp(-0.5 * dm_k * dm_k)
        k12 = np.einsum("anl,anl->an", w12a, ndtr(dp)) + np.einsum("anl,anl->an", w12b, np.exp(-0.5 * dp * dp))
        k3 = np.einsum("anl,anl->an", w3, np.exp(-0.5 * dm * dm))
        N = phi_m / v_tau + k3
        D = phi_p / v_tau + ndtr(dp_k) + k12
        Dd = -phi_p * dp_k / (b * st) + phi_p / (b * v_tau)
        Nd = -phi_m * dm_k / (b * st)
        fv = alpha * N / D
        if newton:
            fd = alpha * (Nd / D - Dd * N / (D * D))
            new = b - (fv - b) / (fd - 1)
            fv = np.where((new > 0) & np.isfinite(new), new, fv)
        return fv

    with np.errstate(all="ignore"):
        for it in range(scheme.m):
            new_b = step(newton=it == 0)
            new_b = np.clip(new_b, 1e-12 * K2, xm2)
            H[:, 1:] = np.log(new_b / xm2) ** 2
    return H, x_max


def _put_premium(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray, sigma: np.ndarray,
                 H: np.ndarray, x_max: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Early-exercise premium ∫₀^T [rK·e^{-rt}Φ(−d₋) − qS·e^{-qt}Φ(−d₊)] dt over the boundary B(T − t)."""
    kernels = _compiled()
    if kernels is not None:
        tab = _packed(kernels, scheme)
        out = np.empty(S.shape[0])
        inputs = [np.array(a, dtype=float) for a in (S, K, T, r, q, sigma, H, x_max)]

        def chunk(start: int, stop: int) -> None:
            kernels.put_premium(*(a[start:stop] for a in inputs), tab, scheme.n, scheme.quad, scheme.p,
                                out[start:stop])

        try:
            _split.run_chunks(chunk, S.shape[0], _SPLIT_CHUNK)
            return out
        except TypeError:  # argument types the warm-up did not compile: the reference path
            pass
    return _put_premium_numpy(S, K, T, r, q, sigma, H, x_max, scheme)


def _put_premium_numpy(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
                       sigma: np.ndarray, H: np.ndarray, x_max: np.ndarray, scheme: Scheme) -> np.ndarray:
    """The numpy reference of :func:`_put_premium` (also the fallback without numba)."""
    tb = _tables(scheme)
    t = T[:, None] * tb["t_frac"]  # (N, p)
    r2, q2, s2, S2, K2 = (a[:, None] for a in (r, q, sigma, S, K))
    with np.errstate(all="ignore"):
        ln_s_over_b = np.log(S2 / x_max[:, None]) + np.sqrt(np.maximum(H @ tb["M_p"].T, 0.0))
        v = s2 * (np.sqrt(T)[:, None] * tb["sqrt_t_frac"])
        dr = np.exp(-r2 * t)
        dq = np.exp(-q2 * t)
        dp = (ln_s_over_b + (r2 - q2) * t) / v + 0.5 * v
        f = r2 * K2 * dr * ndtr(v - dp) - q2 * S2 * dq * ndtr(-dp)
    return np.maximum(T * np.sum(tb["h"] * f, axis=1), 0.0)


@dataclass(frozen=True, eq=False)
class AmericanResult:
    """American value with delta and gamma (per 1 unit of S), the exercise boundary now, and reasons."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    boundary: FloatArray  # critical spot today: exercise a put at or below it, a call at or above it
    reason: np.ndarray


_MIN_RATE_TIME = 1e-5
#: options per thread before a compiled boundary or premium pass is split over threads (~1 ms of work each)
_SPLIT_CHUNK = 96
#: a QD+ Halley step below this fraction of the strike is the last: Halley converges cubically, so the next step
#: would be ~(1e-6)³ of K, far below rounding (the QD+ boundary is only the start of the fixed-point iteration)
QD_STEP_DONE = 1e-6
#: options per thread before a numpy implied-vol solve (the reference path) is split into solves per thread; the
#: compiled iteration splits by :data:`_IV_KERNEL_CHUNK`
_IV_SPLIT_CHUNK = 256
#: an early-exercise premium proven below this fraction of the strike is not computed (price-only calls)
SKIP_PREMIUM_BELOW = 1e-10
#: price-only calls compute a premium proven below this fraction of the strike with the next coarser scheme
#: (:data:`_COARSER`): a scheme's error is a small fraction of the premium, so fewer nodes suffice there. Measured
#: on 20,000 random options (K 60-140, T 1 week-3 years, σ 10-80 %, r 0-10 %, q 0-5 %): ``fast`` is within
#: 5e-6 of a 16-node, 10-iteration reference where the bound is below 1e-4·K (``accurate``: 1.5e-6; the two
#: differ by up to 7e-6 on the tests' short-dated chain), within
#: 9e-5 below 1e-3·K; ``accurate``'s own worst error on that grid is 1.7e-4 (tests/pricing/test_american_premium_skip.py)
COARSE_PREMIUM_BELOW = 1e-4


def premium_bound(S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
                  sigma: np.ndarray) -> np.ndarray:
    """An upper bound of a put's early-exercise premium (calls: pass the put-call-symmetric inputs).

    The premium is ∫₀ᵀ [rK·e^{−rt}·N(−d₂(S, B, t)) − qS·e^{−qt}·N(−d₁(S, B, t))] dt over the exercise boundary
    B, and B never exceeds K̄ = K·min(1, r/q). Dropping the negative term and replacing B by K̄ gives
    premium ≤ K(1 − e^{−rT})·N(−min_t d₂(S, K̄, t)), where d₂ = (a + bt)/(σ√t), a = ln(S/K̄), b = r − q − σ²/2
    has its minimum over (0, T] at t = a/b (value 2√(ab)/σ) when 0 < a/b < T, else at T. Out-of-the-money
    puts far from the boundary get a bound of ~0: their American work can be skipped.
    """
    with np.errstate(all="ignore"):
        k_bar = K * np.where(q > r, r / np.where(q > 0, q, 1.0), 1.0)
        a = np.log(S / k_bar)
        b = r - q - 0.5 * sigma * sigma
        d_t = (a + b * T) / (sigma * np.sqrt(T))
        inner = (a > 0) & (b > 0) & (a < b * T)
        d_min = np.where(inner, 2.0 * np.sqrt(np.where(inner, a * b, 0.0)) / sigma, d_t)
        bound = K * -np.expm1(-r * T) * ndtr(-d_min)
    return np.where((a > 0) & np.isfinite(bound), bound, K * -np.expm1(-r * T))


def _as_put(is_call: np.ndarray, S: np.ndarray, K: np.ndarray, r: np.ndarray, q: np.ndarray
            ) -> tuple[np.ndarray, ...]:
    """Put-call symmetry: C(S, K, r, q) = P(K, S, q, r)."""
    return (np.where(is_call, K, S), np.where(is_call, S, K), np.where(is_call, q, r), np.where(is_call, r, q))


def _american_block(is_call: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                   q: np.ndarray, sigma: np.ndarray, scheme: Scheme, with_greeks: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-D valid inputs → (price, delta, gamma, boundary)."""
    Sp, Kp, rp, qp = _as_put(is_call, S, K, r, q)
    n = S.shape[0]
    price = bsm.price(False, Sp, Kp, T, rp, qp, sigma)
    delta = np.full(n, np.nan)
    gamma = np.full(n, np.nan)
    boundary = np.where(is_call, np.inf, 0.0)
    # The premium is at most K·(1 − e^{−rT}) ≈ K·r·T: at r·T ≤ 1e-5 it is under 1e-5 of K and the European
    # value is used (the boundary iteration loses its footing there: r·T ~ 1e-8..1e-6 gave intrinsic).
    early = rp * T > _MIN_RATE_TIME
    coarse = np.zeros(n, dtype=bool)
    if not with_greeks:  # price only: skip options whose premium is provably negligible (boundary not computed)
        bound = premium_bound(Sp, Kp, T, rp, qp, sigma)
        negligible = early & (bound <= SKIP_PREMIUM_BELOW * Kp)
        early &= ~negligible
        boundary = np.where(negligible, np.nan, boundary)
        if scheme in _COARSER:  # and take fewer nodes where the premium itself is tiny
            coarse = early & (bound <= COARSE_PREMIUM_BELOW * Kp)
    if with_greeks:
        g = bsm.greeks(is_call, S, K, T, r, q, sigma, outputs=("delta", "gamma"))
        delta[:] = g.delta
        gamma[:] = g.gamma
    idx = np.flatnonzero(early)
    if idx.size:
        s_, k_, t_, r_, q_, v_ = Sp[idx], Kp[idx], T[idx], rp[idx], qp[idx], sigma[idx]
        b_now = np.empty(idx.size)
        prem = np.empty(idx.size)
        coarse_idx = coarse[idx]
        for part, sch in ((~coarse_idx, scheme), (coarse_idx, _COARSER.get(scheme, scheme))):
            j = np.flatnonzero(part)
            if j.size == 0:
                continue
            H, x_max = _put_boundary(k_[j], t_[j], r_[j], q_[j], v_[j], sch)
            b_now[j] = x_max * np.exp(-np.sqrt(np.maximum(H[:, -1], 0.0)))  # z = 1: τ = T
            # never below European
            prem[j] = np.maximum(_put_premium(s_[j], k_[j], t_[j], r_[j], q_[j], v_[j], H, x_max, sch), 0.0)
        euro = price[idx]
        exercise = s_ <= b_now
        val = np.where(exercise, k_ - s_, np.maximum(euro + prem, k_ - s_))
        price[idx] = val
        # A call is priced as a put with spot K and strike S; the put boundary is proportional to its strike, so
        # the call is exercised when K <= B_put, i.e. when S >= K·S/B_put: report that critical spot.
        call = is_call[idx]
        boundary[idx] = np.where(call, K[idx] * S[idx] / np.where(b_now > 0, b_now, np.nan), b_now)
        if with_greeks:  # nothing is coarse here: H and x_max are those of every option in idx, in order
            h = 1e-4 * s_
            up = _put_premium(s_ + h, k_, t_, r_, q_, v_, H, x_max, scheme)
            dn = _put_premium(s_ - h, k_, t_, r_, q_, v_, H, x_max, scheme)
            dc = np.zeros_like(s_)
            gc = np.zeros_like(s_)
            ci = np.flatnonzero(call)
            if ci.size:
                # the call's spot is the put's strike: bump it, which moves the boundary too
                sc, kc, tc, rc, qc, vc = S[idx][ci], K[idx][ci], t_[ci], r_[ci], q_[ci], v_[ci]
                hc = 1e-4 * sc
                bumped = []
                for spot in (sc + hc, sc - hc):
                    Hb, xmb = _put_boundary(spot, tc, rc, qc, vc, scheme)
                    value = bsm.price(False, kc, spot, tc, rc, qc, vc) + _put_premium(
                        kc, spot, tc, rc, qc, vc, Hb, xmb, scheme)
                    bumped.append(np.maximum(value, spot - kc))
                pu, pd = bumped
                dc[ci] = (pu - pd) / (2 * hc)
                gc[ci] = (pu - 2 * val[ci] + pd) / (hc * hc)
            g_put = bsm.greeks(False, s_, k_, t_, r_, q_, v_, outputs=("delta", "gamma"))
            dp_ = g_put.delta + (up - dn) / (2 * h)
            gp_ = g_put.gamma + (up - 2 * prem + dn) / (h * h)
            dp_ = np.where(exercise, -1.0, dp_)
            gp_ = np.where(exercise, 0.0, gp_)
            dc = np.where(exercise, 1.0, dc)
            gc = np.where(exercise, 0.0, gc)
            delta[idx] = np.where(call, dc, dp_)
            gamma[idx] = np.where(call, gc, gp_)
    return price, delta, gamma, boundary


def _american_flat(is_call: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                   q: np.ndarray, sigma: np.ndarray, scheme: Scheme, with_greeks: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_american_block` in blocks sized so that the numpy path's (options × nodes × quadrature) arrays
    stay in cache (256 options for ``accurate``, 853 for ``fast``); each option's arithmetic does not depend
    on the block.

    The compiled kernels make no such arrays (one option at a time), so there a block is up to
    :data:`_CHUNK` options: on a 2,000-option chain the ~40 numpy calls around the kernels per block
    (European values, the premium bound, the exercise test) cost ~1.5 µs per option at 256 per block."""
    chunk = _CHUNK if _compiled() is not None else min(_CHUNK, max(64, _BLOCK_ELEMENTS // (scheme.n * scheme.quad)))
    if S.shape[0] <= chunk:
        return _american_block(is_call, S, K, T, r, q, sigma, scheme, with_greeks)
    outs = [np.empty(S.shape[0]) for _ in range(4)]
    for start in range(0, S.shape[0], chunk):
        sl = slice(start, start + chunk)
        vals = _american_block(is_call[sl], S[sl], K[sl], T[sl], r[sl], q[sl], sigma[sl], scheme, with_greeks)
        for o, v in zip(outs, vals, strict=True):
            o[sl] = v
    return outs[0], outs[1], outs[2], outs[3]


def _validate(is_call: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray, q: np.ndarray,
              sigma: np.ndarray) -> np.ndarray:
    reason = market_reasons(S, K, T, r, q)
    reason = np.where((reason == 0) & ~np.isfinite(sigma), np.int8(Reason.NAN_INPUT), reason)
    return np.where((reason == 0) & ~(sigma > 0), np.int8(Reason.NONPOSITIVE_VOL), reason).astype(np.int8)


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, scheme: str = ..., return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, scheme: str = ..., return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, scheme: str = ..., return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def price(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, scheme: str = "accurate", return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """American option value (ALO fixed-point collocation); NaN with reasons for invalid inputs."""
    res = evaluate(right, S, K, T, r, q, sigma, scheme=scheme, greeks=False)
    return (res.price, res.reason) if return_reason else res.price


def evaluate(
    right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike, sigma: ArrayLike,
    *, scheme: str = "accurate", greeks: bool = True,
) -> AmericanResult:
    """American value, delta, gamma (bump-and-reprice of the premium on a fixed boundary) and boundary.

    With ``greeks=False`` (what :func:`price` and :func:`implied_vol` use), options whose early-exercise
    premium is provably below ``SKIP_PREMIUM_BELOW``·K (:func:`premium_bound`) get their European value
    without the boundary computation, and their boundary is NaN (not computed); with ``scheme="accurate"``,
    those whose premium is proven below ``COARSE_PREMIUM_BELOW``·K are computed with the ``fast`` scheme
    (within 1e-5 of the accurate value, measured). With greeks every option takes ``scheme`` itself."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    is_call, (S_, K_, T_, r_, q_, sig) = broadcast_with_right(right, _NAMES, S, K, T, r, q, sigma)
    reason = _validate(is_call, S_, K_, T_, r_, q_, sig)
    shape = reason.shape
    out = [np.full(shape, np.nan) for _ in range(4)]
    ok = reason == 0
    if ok.any():
        vals = _american_flat(is_call[ok], S_[ok], K_[ok], T_[ok], r_[ok], q_[ok], sig[ok], SCHEMES[scheme],
                              greeks)
        for o, v in zip(out, vals, strict=True):
            o[ok] = v
    return AmericanResult(price=out[0], delta=out[1], gamma=out[2], boundary=out[3], reason=reason)


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, scheme: str = ..., tol: float = ..., max_iter: int = ..., initial: ArrayLike | None = ..., return_reason: Literal[False] = False,
) -> FloatArray: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, scheme: str = ..., tol: float = ..., max_iter: int = ..., initial: ArrayLike | None = ..., return_reason: Literal[True],
) -> tuple[FloatArray, np.ndarray]: ...


@overload
def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, scheme: str = ..., tol: float = ..., max_iter: int = ..., initial: ArrayLike | None = ..., return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]: ...


def implied_vol(
    price: ArrayLike, right: Any, S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
    *, scheme: str = "accurate", tol: float = 1e-8, max_iter: int = 12, initial: ArrayLike | None = None,
    return_reason: bool = False,
) -> FloatArray | tuple[FloatArray, np.ndarray]:
    """Implied vol of American prices, vectorized (de-Americanisation with secant acceleration).

    Iterates ``σ ← IV_european(P − premium(σ))`` for the whole chain at once, where ``premium(σ)`` is the
    American minus European value at ``σ``; the map is a contraction (the premium moves little with σ) and
    secant updates on ``g(σ) = IV_european(P − premium(σ)) − σ`` make it converge in 2-4 pricings. An option
    stops when its vol is known within ``tol``: ``|g| ≤ tol``, or, once a secant slope ``s`` is known, when the
    secant root's distance from the plain step, ``|g·(1 + 1/s)|``, is below ``tol``. Options whose
    early-exercise premium is provably below ``tol/10`` vol of vega (:func:`premium_bound`) take the European
    vol without any American pricing.

    ``initial``: vols to start from (a streaming chain passes its previous solve; NaN entries start cold). A
    start within the tolerance costs one pricing. NaN with reasons: invalid inputs, price <= 0, price below
    intrinsic ``max(θ(S − K), 0)``, at/above the upper bound (``S`` call, ``K`` put), or no convergence.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    if not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    sch = SCHEMES[scheme]
    init = np.nan if initial is None else initial
    is_call, (p, S_, K_, T_, r_, q_, x_init) = broadcast_with_right(right, ("price", *_NAMES[:5], "initial"), price,
                                                                   S, K, T, r, q, init)
    reason = market_reasons(S_, K_, T_, r_, q_)
    reason = np.where((reason == 0) & ~np.isfinite(p), np.int8(Reason.NAN_INPUT), reason)
    reason = np.where((reason == 0) & ~(p > 0), np.int8(Reason.NONPOSITIVE_PRICE), reason)
    intrinsic = np.maximum(np.where(is_call, S_ - K_, K_ - S_), 0.0)
    upper = np.where(is_call, S_, K_)
    reason = np.where((reason == 0) & (p < intrinsic), np.int8(Reason.BELOW_INTRINSIC), reason)
    reason = np.where((reason == 0) & (p >= upper), np.int8(Reason.ABOVE_MAXIMUM), reason)
    reason = np.where((reason == 0) & (p <= intrinsic), np.int8(Reason.AT_INTRINSIC), reason).astype(np.int8)
    vol = np.full(reason.shape, np.nan)
    ok = reason == 0
    if ok.any():
        args = [p[ok], is_call[ok], S_[ok], K_[ok], T_[ok], r_[ok], q_[ok], x_init[ok]]
        if _compiled() is not None:  # one solve; its compiled iteration splits over threads by itself
            v, sub = _american_iv_flat(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], sch,
                                       tol, max_iter)
        else:
            v = np.empty(args[0].shape[0])
            sub = np.empty(args[0].shape[0], dtype=np.int8)

            def chunk(start: int, stop: int) -> None:
                pc, cc, sc, kc, tc, rc, qc, xc = (a[start:stop] for a in args)
                v[start:stop], sub[start:stop] = _american_iv_flat(pc, cc, sc, kc, tc, rc, qc, xc, sch, tol,
                                                                   max_iter)

            # whole numpy solves per thread: numpy releases the GIL inside its larger passes, so the threads
            # overlap there; every option's iterations are its own. One chunk per thread: a solve's numpy work
            # costs per call more than per option, so more chunks cost more
            _split.run_chunks(chunk, v.shape[0], _IV_SPLIT_CHUNK, chunks_per_thread=1)
        vol[ok] = v
        reason[ok] = sub
    return (vol, reason) if return_reason else vol


def _american_iv_flat(p: np.ndarray, c: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                      q: np.ndarray, x_init: np.ndarray, sch: Scheme, tol: float, max_iter: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    n = p.shape[0]
    reason = np.zeros(n, dtype=np.int8)

    def g_map(prem: np.ndarray, idx: np.ndarray) -> np.ndarray:
        target = p[idx] - prem
        return bsm.implied_vol(target, c[idx], S[idx], K[idx], T[idx], r[idx], q[idx])

    def g_step(sig: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """g(σ) = IV_european(P − premium(σ)) − σ. The European inversion starts at σ itself, where the
        European price is E(σ) and the target is E(σ) + δ with δ = P − A(σ) small: one Halley step
        δ/V / (1 + δ·W/(2V²)) (V, W: vega and volga per unit vol) is exact to O((δ/V)³), ~1e-9 vol on a
        first step and far below the tolerance after it, at the cost of one Greeks pass instead of a full
        Let's-Be-Rational solve. Where the step is not small (deep in the money, vega near 0) the full solve
        is used. The root, δ = 0, is the same either way."""
        a, _, _, _ = _american_flat(c[idx], S[idx], K[idx], T[idx], r[idx], q[idx], sig, sch, False)
        g = bsm.greeks(c[idx], S[idx], K[idx], T[idx], r[idx], q[idx], sig, outputs=("price", "vega", "volga"))
        vega, volga = g.vega * 100.0, g.volga * 1e4
        delta = p[idx] - a
        with np.errstate(all="ignore"):
            newton = delta / vega
            corr = 0.5 * newton * volga / vega
            step = newton / (1.0 + corr)
        exact = ~np.isfinite(step) | (np.abs(corr) > 0.1) | (np.abs(step) > 0.02)
        if exact.any():
            sub = np.flatnonzero(exact)
            step[sub] = g_map(a[sub] - g.price[sub], idx[sub]) - sig[sub]
        return step

    kernels = _compiled()
    if kernels is not None:
        sig, converged, _ = _american_iv_compiled(kernels, p, c, S, K, T, r, q, x_init, sch, tol, max_iter)
        active = ~converged
    else:
        active, sig = _american_iv_numpy(p, c, S, K, T, r, q, x_init, tol, max_iter, g_map, g_step)
    bad = active | ~np.isfinite(sig) | ~(sig > 0)
    reason[bad] = Reason.NO_CONVERGENCE
    sig = np.where(bad, np.nan, sig)
    return sig, reason


def _american_iv_numpy(p: np.ndarray, c: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray, r: np.ndarray,
                       q: np.ndarray, x_init: np.ndarray, tol: float, max_iter: int,
                       g_map: Callable[[np.ndarray, np.ndarray], np.ndarray],
                       g_step: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The solve on whole arrays (the reference path): European vols, the premium-bound test, then the secant
    iteration of the rest; returns (options still unconverged, vols)."""
    n = p.shape[0]
    all_idx = np.arange(n)
    sigma_e = g_map(np.zeros(n), all_idx)  # European vol of the American price: an upper bound
    sig = np.full(n, np.nan)
    # The premium bound grows with σ, so at the upper bound σ_E it bounds the premium at the answer too; the
    # answer then lies within bound / vega of σ_E. Where that is below tol/10 the European vol is the answer.
    euro = np.zeros(n, dtype=bool)
    finite_e = np.isfinite(sigma_e)
    if finite_e.any():
        fe = np.flatnonzero(finite_e)
        Sp, Kp, rp, qp = _as_put(c[fe], S[fe], K[fe], r[fe], q[fe])
        vega = bsm.greeks(c[fe], S[fe], K[fe], T[fe], r[fe], q[fe], sigma_e[fe], outputs="vega").vega * 100.0
        never = rp * T[fe] <= _MIN_RATE_TIME  # priced as European by the American pricer itself
        small = premium_bound(Sp, Kp, T[fe], rp, qp, sigma_e[fe]) <= 0.1 * tol * vega
        euro[fe] = never | small
        sig[euro] = sigma_e[euro]
    # Prices that exceed every European value but are valid American prices (deep ITM puts with positive r
    # quoted near intrinsic) get a start of 0.2 instead.
    warm = np.isfinite(x_init) & (x_init > 0)
    x0 = np.where(warm, x_init, np.where(finite_e, sigma_e, 0.2))
    todo = np.flatnonzero(~euro)
    active = np.zeros(n, dtype=bool)
    x_prev = np.full(n, np.nan)
    g_prev = np.full(n, np.nan)
    x_cur = x0.copy()
    active[todo] = True
    for _ in range(max_iter + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xc = x_cur[idx]
        gc = g_step(xc, idx)
        ok = np.isfinite(gc)
        xp, gp = x_prev[idx], g_prev[idx]
        with np.errstate(all="ignore"):
            slope = (gc - gp) / (xc - xp)
            secant = xc - gc / slope
        plain = xc + gc
        usable = np.isfinite(secant) & (secant > 0) & (np.abs(slope) > 0.05)
        # |g| bounds the error of the plain step (the map contracts). With a slope, the secant root's error is
        # ~ g''/(2g'³)·g·g_prev (second order): it is taken when that product and the root's distance from the
        # plain step are both below the tolerance (the first by a factor of 100 for the unknown curvature)
        done = ok & ((np.abs(gc) <= tol)
                     | (usable & (np.abs(secant - plain) <= tol) & (np.abs(gc * gp) <= 0.1 * tol)))
        sig[idx] = np.where(ok, np.where(usable & done, secant, plain), np.nan)
        # secant on g; fall back to the plain contraction step where the secant is unusable
        nxt = np.where(usable, secant, plain)
        nxt = np.where(ok, nxt, 0.5 * xc)
        x_prev[idx], g_prev[idx] = xc, np.where(ok, gc, np.nan)
        x_cur[idx] = nxt
        active[idx[done]] = False
    return active, sig


#: options per chunk of the compiled implied-vol iteration split over threads (~1 ms of work each)
_IV_KERNEL_CHUNK = 64


def _scheme_tables(kernels: Any, scheme: Scheme) -> tuple[Any, ...]:
    """A scheme as the compiled implied-vol kernel takes it: (packed tables, n, quad, p, iterations)."""
    return (_packed(kernels, scheme), scheme.n, scheme.quad, scheme.p, scheme.m)


def _american_iv_compiled(kernels: Any, p: np.ndarray, c: np.ndarray, S: np.ndarray, K: np.ndarray, T: np.ndarray,
                          r: np.ndarray, q: np.ndarray, x_init: np.ndarray, sch: Scheme, tol: float,
                          max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_american_iv_numpy` in the compiled kernel, option by option, split over threads; returns
    (vols, converged, American pricings per option).

    The σ-independent values the kernel needs are computed here by numpy exactly as the numpy path computes
    them inside :func:`bsm.greeks`, :func:`bsm.implied_vol` and :func:`bsm.price` (so both paths round them
    alike): ln(S/K) and the discount factors of the Greeks, the forward, x and e^{θx/2} of the European solve,
    and the put's European value as scale·(intrinsic + b_otm)."""
    c = np.ascontiguousarray(c, dtype=np.bool_)
    S, K, T, r, q, p = (np.ascontiguousarray(a, dtype=np.float64) for a in (S, K, T, r, q, p))
    x_init = np.where(np.isfinite(x_init) & (x_init > 0), x_init, 0.0)  # the kernel starts cold at 0
    Sp, Kp, rp, qp = _as_put(c, S, K, r, q)
    with np.errstate(all="ignore"):
        ln_sk = np.log(S / K)
        dq = np.exp(-q * T)
        dr = np.exp(-r * T)
        f_iv = S * np.exp((r - q) * T)
        df_iv = np.exp(-r * T)
        x_iv = np.log(f_iv / K)
        bmax_iv = np.exp(0.5 * np.where(c, 1.0, -1.0) * x_iv)
        fwd_p = Sp * np.exp((rp - qp) * T)
        x_p = np.log(fwd_p / Kp)
        intrinsic_p = lbr.normalised_intrinsic(x_p, np.full(x_p.shape, -1.0))
        scale_p = np.exp(-rp * T) * np.sqrt(fwd_p) * np.sqrt(Kp)
    tables = _scheme_tables(kernels, sch)
    coarse = _COARSER.get(sch)
    coarse_tables = _scheme_tables(kernels, coarse) if coarse is not None else tables
    limits = (_MIN_RATE_TIME, SKIP_PREMIUM_BELOW, COARSE_PREMIUM_BELOW, coarse is not None)
    converged = np.zeros(p.shape[0], dtype=np.bool_)
    pricings = np.zeros(p.shape[0], dtype=np.int64)
    sig = np.empty(p.shape[0])
    columns = (p, c, S, K, T, r, q, x_init, ln_sk, dq, dr, f_iv, df_iv, x_iv, bmax_iv, scale_p, x_p, intrinsic_p)

    def chunk(start: int, stop: int) -> None:
        kernels.american_iv(*(a[start:stop] for a in columns), tables, coarse_tables, limits, float(tol),
                            int(max_iter), sig[start:stop], converged[start:stop], pricings[start:stop])

    _split.run_chunks(chunk, p.shape[0], _IV_KERNEL_CHUNK)
    return sig, converged, pricings
