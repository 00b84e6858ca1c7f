"""Heston, issue 22: fewer, better quadrature nodes at the same accuracy against QuantLib's analytic engine."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from engine.pricing import heston

from .conftest import TODAY, ql, ql_setup

SETS = [
    (0.04, 1.5, 0.05, 0.6, -0.7),
    (0.01, 0.5, 0.01, 0.1, -0.9),  # low variance, low vol of vol: the slowest-decaying characteristic function
    (0.16, 5.0, 0.16, 1.0, 0.0),
    (0.02, 1.0, 0.04, 0.9, -0.95),  # Feller badly violated, strong correlation
]
DAYS = np.array([7, 30, 91, 365, 1095])


def _chain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    D, K = np.meshgrid(DAYS, np.linspace(70, 130, 25), indexing="ij")
    return K >= 100.0, K, D


def _quantlib(params: tuple[float, ...], c: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
    ql_setup()
    dc = ql.Actual365Fixed()
    proc = ql.HestonProcess(ql.YieldTermStructureHandle(ql.FlatForward(TODAY, 0.03, dc, ql.Continuous)),
                            ql.YieldTermStructureHandle(ql.FlatForward(TODAY, 0.01, dc, ql.Continuous)),
                            ql.QuoteHandle(ql.SimpleQuote(100.0)), *params)
    model = ql.HestonModel(proc)
    engines = [ql.AnalyticHestonEngine(model, 1e-14, 1_000_000), ql.AnalyticHestonEngine(model, 1e-12, 10_000_000)]
    out = np.empty(K.size)
    for i, (k, d, call) in enumerate(zip(K.ravel(), D.ravel(), c.ravel(), strict=True)):
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, float(k)),
                               ql.EuropeanExercise(TODAY + int(d)))
        for engine in engines:  # the 1e-14 adaptive integration gives up on a few hard cases: then 1e-12
            opt.setPricingEngine(engine)
            try:
                out[i] = opt.NPV()
                break
            except RuntimeError:
                continue
    return out.reshape(K.shape)


@pytest.mark.parametrize("params", SETS)
def test_chain_within_1e_7_of_quantlib_analytic(params):
    if ql is None:
        pytest.skip("QuantLib not installed")
    c, K, D = _chain()
    heston._plans.clear()
    ours = heston.price(c, 100.0, K, D / 365.0, 0.03, 0.01, *params)
    err = np.abs(ours - _quantlib(params, c, K, D))
    assert err.max() <= 1e-7, err.max()


def test_a_thousand_option_chain_needs_few_nodes():
    D, K = np.meshgrid(np.array([7, 14, 30, 60, 91, 182, 273, 365, 730, 1095]), np.linspace(70, 130, 100),
                       indexing="ij")
    heston._plans.clear()
    heston.price(K >= 100.0, 100.0, K, D / 365.0, 0.03, 0.01, *SETS[0])
    (plan,) = heston._plans.values()
    nodes = sum(len(g.u) for g in plan.groups)
    assert nodes <= 2_500, nodes  # 8-wide panels with a fine start needed ~5,000 for the same accuracy


@pytest.mark.parametrize("params", SETS)
def test_cut_off_is_where_the_integrand_bound_stays_below_the_tolerance(params):
    T = np.array([1 / 365, 7 / 365, 0.25, 1.0, 5.0])
    uppers = heston._uppers(*params, T)
    cf = heston.log_cf(*params)
    for t, upper in zip(T, uppers, strict=True):
        u = np.geomspace(upper, max(upper * 100, 1e4), 4000)
        with np.errstate(all="ignore"):
            bound = np.exp(np.real(cf(u - 0.5j, t))) / (u * u + 0.25)
        assert np.all(~(bound > heston._TOL)), (t, upper)
        # and the scan does not overshoot by more than its refinement step (~2 %)
        below = np.geomspace(upper / 1.1, upper / 1.03, 50)
        assert np.any(np.exp(np.real(cf(below - 0.5j, t))) / (below * below + 0.25) > heston._TOL) or upper <= 0.6


@pytest.mark.parametrize(("x", "a"), [(0.0, 1e-3), (0.36, 1e-4), (1.2, 1e-2), (-0.8, 3e-5)])
def test_panels_integrate_an_oscillating_damped_integrand_to_1e_12(x, a):
    def f(u):  # the Lewis integrand's shape: poles at ±i/2, e^{iux}, a Gaussian-like CF decay
        return np.cos(u * x) * np.exp(-a * u * u) / (u * u + 0.25)

    upper = float(np.sqrt(30.0 / a))
    u, w = heston._nodes(upper, abs(x))
    exact, _ = quad(lambda u: np.exp(-a * u * u) / (u * u + 0.25), 0.0, upper, weight="cos", wvar=x, limit=2000,
                    epsabs=1e-13, epsrel=1e-13)  # QUADPACK's QAWO: the cosine handled exactly
    assert abs(np.sum(w * f(u)) - exact) <= 1e-12
    assert u.size <= 16 * (4 + np.ceil(upper * max(abs(x), 1e-3) / (4 * np.pi)) + np.log2(upper) + 4)
