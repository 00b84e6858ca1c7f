"""bsm.greeks(outputs=...): a caller pays only for what it asks, and gets exactly the full computation's numbers."""

import numpy as np
import pytest

from engine.pricing import bsm
from engine.pricing.inputs import Reason


def _book(n: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.5, rng.uniform(50, 150, n), rng.uniform(20, 300, n), rng.uniform(1e-3, 5, n),
            rng.uniform(-0.01, 0.08, n), rng.uniform(0.0, 0.04, n), rng.uniform(0.02, 2.5, n))


@pytest.mark.parametrize("outputs", [("price", "delta"), ("vega",), ("gamma", "theta", "charm"),
                                     ("rho", "vanna", "volga"), "delta"])
def test_selected_outputs_equal_the_full_computation_and_the_rest_is_none(outputs):
    c, S, K, T, r, q, v = _book(10_001)  # several blocks and a partial one
    full = bsm.greeks(c, S, K, T, r, q, v)
    part = bsm.greeks(c, S, K, T, r, q, v, outputs=outputs)
    wanted = {outputs} if isinstance(outputs, str) else set(outputs)
    for name in bsm.OUTPUTS:
        if name in wanted:
            np.testing.assert_array_equal(getattr(part, name), getattr(full, name), err_msg=name)
        else:
            assert getattr(part, name) is None, name


def test_scalar_rate_and_yield_give_the_same_numbers_as_arrays():
    c, S, K, T, _, _, v = _book(9_000)
    a = bsm.greeks(c, S, K, T, 0.03, 0.015, v)
    b = bsm.greeks(c, S, K, T, np.full(9_000, 0.03), np.full(9_000, 0.015), v)
    z = bsm.greeks(c, S, K, T, 0.03, 0.0, v)
    zb = bsm.greeks(c, S, K, T, 0.03, np.zeros(9_000), v)
    for name in bsm.OUTPUTS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        np.testing.assert_array_equal(getattr(z, name), getattr(zb, name), err_msg=name)


def test_blocked_evaluation_matches_one_option_at_a_time():
    c, S, K, T, r, q, v = _book(5_000, seed=9)
    g = bsm.greeks(c, S, K, T, r, q, v)
    for i in (0, 4095, 4096, 4999):
        one = bsm.greeks(c[i], S[i], K[i], T[i], r[i], q[i], v[i])
        for name in bsm.OUTPUTS:
            assert getattr(one, name).shape == ()
            assert getattr(one, name) == getattr(g, name)[i], (name, i)


def test_shapes_and_invalid_inputs_keep_their_reasons():
    g, reason = bsm.greeks("c", np.full((3, 4), 100.0), [[90.0], [100.0], [-1.0]], 0.5, 0.03, 0.0,
                           0.2, outputs=("price", "delta"), return_reason=True)
    assert g.price.shape == g.delta.shape == reason.shape == (3, 4)
    assert np.all(reason[2] == Reason.NONPOSITIVE_STRIKE) and np.all(np.isnan(g.price[2]))
    assert np.all(reason[:2] == 0) and np.all(np.isfinite(g.delta[:2]))


def test_unknown_or_empty_outputs_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown Greeks output\(s\) \['speed'\]"):
        bsm.greeks("c", 100.0, 100.0, 0.5, 0.03, 0.0, 0.2, outputs=("price", "speed"))
    with pytest.raises(ValueError, match="no Greeks output"):
        bsm.greeks("c", 100.0, 100.0, 0.5, 0.03, 0.0, 0.2, outputs=())


@pytest.mark.parametrize("outputs", [("rho",), ("price", "rho"), ("delta", "vega"), ("price",)])
def test_black76_selected_outputs_equal_the_full_computation(outputs):
    from engine.pricing import black76

    c, F, K, T, r, _, v = _book(3_000, seed=11)
    full = black76.greeks(c, F, K, T, r, v)
    part = black76.greeks(c, F, K, T, r, v, outputs=outputs)
    for name in bsm.OUTPUTS:
        if name in outputs:
            np.testing.assert_array_equal(getattr(part, name), getattr(full, name), err_msg=name)
        else:
            assert getattr(part, name) is None, name


def test_implied_vol_in_blocks_equals_small_batches_with_reasons_and_shape():
    rng = np.random.default_rng(21)
    n = 3 * bsm._IV_BLOCK + 17
    c = rng.random(n) < 0.5
    S = np.full(n, 100.0)
    v = rng.uniform(0.05, 1.5, n)
    T = np.where(rng.random(n) < 0.5, 1 / 365, rng.uniform(0.02, 3, n))  # one-day and normal options
    K = 100.0 * np.exp(rng.uniform(-4, 4, n) * v * np.sqrt(T))
    p = bsm.price(c, S, K, T, 0.03, 0.01, v)
    nan_at, neg_at = np.arange(0, n, 101), np.arange(7, n, 211)
    neg_at = neg_at[neg_at % 101 != 0]
    p[nan_at] = np.nan
    p[neg_at] = -1.0
    vol, reason = bsm.implied_vol(p, c, S, K, T, 0.03, 0.01, return_reason=True)
    for i in range(0, n, 1000):  # batches below the block size take the one-pass path
        sl = slice(i, i + 1000)
        v_small, r_small = bsm.implied_vol(p[sl], c[sl], S[sl], K[sl], T[sl], 0.03, 0.01, return_reason=True)
        np.testing.assert_array_equal(vol[sl], v_small)
        np.testing.assert_array_equal(reason[sl], r_small)
    assert np.all(reason[nan_at] == Reason.NAN_INPUT) and np.all(reason[neg_at] == Reason.NONPOSITIVE_PRICE)
    ok = reason == 0
    assert ok.mean() > 0.9 and np.max(np.abs(vol[ok] - v[ok])[(K[ok] > 100) == c[ok]]) < 1e-12
    grid, grid_reason = bsm.implied_vol(p.reshape(-1, 1)[: 2 * bsm._IV_BLOCK].reshape(-1, 2), "c", 100.0,
                                        100.0, 0.5, 0.03, 0.01, return_reason=True)
    assert grid.shape == grid_reason.shape == (bsm._IV_BLOCK, 2)
