"""Heston plans (quadrature nodes and e^{iux} matrices) are reused per option set and cut-off, never at a loss."""

import numpy as np

from engine.pricing import heston
from engine.pricing.fourier import LewisPlan, upper_limit

PARAMS = (0.04, 1.5, 0.05, 0.6, -0.7)


def _chain():
    D, K = np.meshgrid(np.array([7, 30, 91, 365]), np.linspace(70, 130, 25), indexing="ij")
    return K >= 100.0, K, D / 365.0


def test_a_chain_priced_again_reuses_its_plan_and_gets_the_same_prices(monkeypatch):
    c, K, T = _chain()
    heston._plans.clear()
    built = []
    real_init = LewisPlan.__init__

    def counting(self, *a, **kw):
        built.append(1)
        real_init(self, *a, **kw)

    monkeypatch.setattr(LewisPlan, "__init__", counting)
    first = heston.price(c, 100.0, K, T, 0.03, 0.01, *PARAMS)
    again = heston.price(c, 100.0, K, T, 0.03, 0.01, *PARAMS)
    assert len(built) == 1
    np.testing.assert_array_equal(first, again)
    nearby = (0.0401, 1.5, 0.05, 0.6, -0.7)  # a streaming update: the same cut-off buckets, the same plan

    def buckets(p):
        return [heston._bucket(u) for u in heston._uppers(*p, np.unique(T))]

    assert buckets(nearby) == buckets(PARAMS)
    moved = heston.price(c, 100.0, K, T, 0.03, 0.01, *nearby)
    assert len(built) == 1 and np.all(np.isfinite(moved)) and np.max(np.abs(moved - first)) > 0
    heston.price(c, 100.0, K * 1.01, T, 0.03, 0.01, *PARAMS)  # other strikes: another plan
    assert len(built) == 2 and len(heston._plans) == 2


def test_cached_plan_is_as_accurate_as_a_fresh_exact_plan():
    c, K, T = _chain()
    rng = np.random.default_rng(8)
    heston._plans.clear()
    for _ in range(6):
        p = (rng.uniform(0.01, 0.1), rng.uniform(0.5, 4), rng.uniform(0.01, 0.1), rng.uniform(0.2, 1.0),
             rng.uniform(-0.9, 0.0))
        cf = heston.log_cf(*p)
        S, r, q = (np.full(K.size, v) for v in (100.0, 0.03, 0.01))
        exact = LewisPlan(c.ravel(), S, K.ravel(), T.ravel(), r, q, cf, tol=1e-13).price(cf)
        np.testing.assert_allclose(heston.price(c, 100.0, K, T, 0.03, 0.01, *p).ravel(), exact, rtol=0, atol=2e-9)


def test_cut_off_buckets_never_shorten_the_range_and_the_cache_is_bounded():
    for upper in (0.3, 1.0, 7.9, 100.0, 1234.5, 9e5):
        b = heston._bucket(upper)
        assert upper <= b <= max(upper, 1.0) * 2 ** 0.25 + 1e-9
    cf = heston.log_cf(*PARAMS)
    assert heston._bucket(upper_limit(cf, 0.1, 1e-11)) >= upper_limit(cf, 0.1, 1e-11)
    heston._plans.clear()
    for i in range(heston.PLAN_CACHE_SIZE + 3):
        heston.price("c", 100.0, np.array([90.0, 100.0 + i]), 0.5, 0.03, 0.0, *PARAMS)
    assert len(heston._plans) == heston.PLAN_CACHE_SIZE
