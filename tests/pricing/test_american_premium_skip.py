"""American work is skipped where the early-exercise premium is provably negligible, and nothing else changes."""

import numpy as np

from engine.pricing import american, bsm


def _chain(n: int = 1500, seed: int = 3):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.5, np.full(n, 100.0), rng.uniform(50, 150, n), rng.uniform(1 / 365, 1.5, n),
            rng.uniform(0.0, 0.08, n), rng.uniform(0.0, 0.04, n), rng.uniform(0.1, 0.6, n))


def test_bound_is_above_every_premium_and_positive():
    c, S, K, T, r, q, v = _chain()
    premium = american.evaluate(c, S, K, T, r, q, v).price - bsm.price(c, S, K, T, r, q, v)
    Sp, Kp, rp, qp = american._as_put(c, S, K, r, q)
    bound = american.premium_bound(Sp, Kp, T, rp, qp, v)
    assert np.all(bound >= 0)
    assert np.all(premium <= bound + 1e-8)  # the numerical premium's own error is far below 1e-8 here
    big = premium > 1e-4
    assert big.sum() > 100 and np.all(bound[big] >= premium[big])


def test_price_skips_negligible_premiums_without_changing_any_price(monkeypatch):
    monkeypatch.setattr(american, "COARSE_PREMIUM_BELOW", 0.0)  # the skip alone (the coarse rule: below)
    c, S, K, T, r, q, v = _chain()
    reference = american.evaluate(c, S, K, T, r, q, v).price  # greeks on: never skips
    seen = []
    real = american._put_boundary

    def counting(K_, *a, **kw):
        seen.append(K_.shape[0])
        return real(K_, *a, **kw)

    monkeypatch.setattr(american, "_put_boundary", counting)
    fast = american.price(c, S, K, T, r, q, v)
    solved = sum(seen)
    assert solved < 0.85 * len(c)  # >15 % of this chain needs no boundary at all
    np.testing.assert_allclose(fast, reference, rtol=0, atol=american.SKIP_PREMIUM_BELOW * 150 * 2)
    res = american.evaluate(c, S, K, T, r, q, v, greeks=False)
    assert np.isnan(res.boundary).sum() == len(c) - solved - np.sum(np.where(c, q, r) * T <= 1e-5)


def test_deep_in_the_money_and_near_boundary_options_are_never_skipped():
    S = np.array([60.0, 95.0, 100.0])
    Sp, Kp, rp, qp = american._as_put(np.zeros(3, bool), S, np.full(3, 100.0), np.full(3, 0.05), np.zeros(3))
    bound = american.premium_bound(Sp, Kp, np.full(3, 1.0), rp, qp, np.full(3, 0.2))
    assert np.all(bound > american.SKIP_PREMIUM_BELOW * 100.0)
    assert bound[0] == 100.0 * -np.expm1(-0.05)  # spot below K·min(1, r/q): no better bound than K(1 − e^{−rT})


def test_blocked_chain_equals_small_batches_and_one_block(monkeypatch):
    c, S, K, T, r, q, v = _chain(1100, seed=6)
    whole = {}
    for scheme in ("accurate", "fast"):
        whole[scheme] = american.price(c, S, K, T, r, q, v, scheme=scheme)
        parts = np.concatenate([american.price(c[i:i + 50], S[i:i + 50], K[i:i + 50], T[i:i + 50], r[i:i + 50],
                                               q[i:i + 50], v[i:i + 50], scheme=scheme) for i in range(0, 1100, 50)])
        np.testing.assert_allclose(whole[scheme], parts, rtol=0, atol=1e-12)
    monkeypatch.setattr(american, "_BLOCK_ELEMENTS", 10**9)  # the whole chain in one block, as before
    for scheme in ("accurate", "fast"):
        np.testing.assert_allclose(american.price(c, S, K, T, r, q, v, scheme=scheme), whole[scheme], rtol=0,
                                   atol=1e-12)


def test_tiny_premiums_take_the_coarser_scheme_and_stay_within_its_measured_error(monkeypatch):
    """Price-only calls compute a premium proven below COARSE_PREMIUM_BELOW·K with the ``fast`` scheme: exactly the
    ``fast`` value there, the ``accurate`` value elsewhere, and within 1e-5 of ``accurate`` everywhere."""
    c, S, K, T, r, q, v = _chain(1500, seed=9)
    Sp, Kp, rp, qp = american._as_put(c, S, K, r, q)
    bound = american.premium_bound(Sp, Kp, T, rp, qp, v)
    coarse = (bound <= american.COARSE_PREMIUM_BELOW * Kp) & (bound > american.SKIP_PREMIUM_BELOW * Kp) & (rp * T > 1e-5)
    assert coarse.sum() > 50
    schemes = []
    real = american._put_boundary

    def recording(K_, T_, r_, q_, v_, scheme):
        schemes.append((scheme, K_.shape[0]))
        return real(K_, T_, r_, q_, v_, scheme)

    monkeypatch.setattr(american, "_put_boundary", recording)
    mixed = american.price(c, S, K, T, r, q, v)
    assert sum(count for scheme, count in schemes if scheme == american.SCHEMES["fast"]) == coarse.sum()
    monkeypatch.setattr(american, "COARSE_PREMIUM_BELOW", 0.0)
    accurate = american.price(c, S, K, T, r, q, v)
    fast = american.price(c, S, K, T, r, q, v, scheme="fast")
    np.testing.assert_array_equal(mixed[coarse], fast[coarse])
    np.testing.assert_array_equal(mixed[~coarse], accurate[~coarse])
    assert 0 < np.max(np.abs(mixed - accurate)) <= 1e-5  # measured 7.1e-6 on this chain
    # implied vols are solved on the same prices, so the round trip holds with the rule on, where it did without
    iv_without = american.implied_vol(accurate, c, S, K, T, r, q)
    monkeypatch.setattr(american, "COARSE_PREMIUM_BELOW", 1e-4)
    iv = american.implied_vol(mixed, c, S, K, T, r, q)
    ok = np.isfinite(iv)
    np.testing.assert_array_equal(ok, np.isfinite(iv_without))
    determined = ok & (np.abs(iv_without - v) <= 1e-7)  # deep in the money a price says little about the vol
    assert determined.sum() > 1300 and np.max(np.abs(iv[determined] - v[determined])) <= 1e-7
