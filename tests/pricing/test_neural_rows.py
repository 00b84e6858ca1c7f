"""Neural Heston surrogate, issue 22: a smile per network row, its pricing path, its files and its home."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pricing import bsm, neural
from engine.pricing.heston import HestonParams
from engine.pricing.inputs import Reason

HP = HestonParams(v0=0.04, kappa=2.0, theta=0.05, xi=0.5, rho=-0.6)


def test_default_path_follows_optiondesk_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path))
    assert neural.default_path() == tmp_path / "data" / "models" / neural.MODEL_FILE


def test_plain_black_equals_bsm_inside_the_domain():
    rng = np.random.default_rng(2)
    n = 2000
    c = rng.random(n) < 0.5
    T = rng.uniform(0.1, 2.0, n)
    r, q = rng.uniform(0, 0.08, n), rng.uniform(0, 0.04, n)
    S = np.full(n, 100.0)
    K = S * np.exp((r - q) * T + rng.uniform(-0.3, 0.2, n))
    v = rng.uniform(0.05, 0.8, n)
    np.testing.assert_allclose(neural._black(c, S, K, T, r, q, v), bsm.price(c, S, K, T, r, q, v), rtol=1e-12,
                               atol=1e-12)


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def small():
    pricer, report = neural.train(40, epochs=8, hidden=16, layers=2, seed=5, nodes=12, expiries=4)
    return pricer, report


def test_interpolation_reproduces_polynomials_below_the_node_count(small):
    pricer, _ = small
    k = np.linspace(*pricer.domain.k, 101)
    rows = np.tile(0.2 + 0.3 * pricer._k_nodes + 2.0 * pricer._k_nodes ** 5, (k.size, 1))
    np.testing.assert_allclose(pricer._interpolate(k, rows), 0.2 + 0.3 * k + 2.0 * k ** 5, rtol=0, atol=1e-13)
    # on a node exactly: that node's value
    assert pricer._interpolate(pricer._k_nodes[3:4], rows[:1])[0] == rows[0, 3]


def test_a_chain_costs_one_network_row_per_expiry(small, monkeypatch):
    pricer, _ = small
    rows_seen: list[int] = []
    real = pricer.smile

    def counting(T, params):  # type: ignore[no-untyped-def]
        rows_seen.append(len(T))
        return real(T, params)

    monkeypatch.setattr(pricer, "smile", counting)
    D, k = np.meshgrid(np.linspace(0.2, 1.5, 7), np.linspace(-0.25, 0.15, 30), indexing="ij")
    prices, reason = pricer.price(k >= 0, 100.0, 100.0 * np.exp(k), D, 0.0, 0.0, HP)
    assert rows_seen == [7]
    assert np.all(reason == Reason.OK) and np.all(prices > 0)
    # the price path and the feature path agree
    feats = np.column_stack([k.ravel(), D.ravel(), np.tile(HP.as_array(), (k.size, 1))])
    vols, _ = pricer.implied_vol_features(feats)
    back = bsm.implied_vol(prices.ravel(), (k >= 0).ravel(), 100.0, 100.0 * np.exp(k.ravel()), D.ravel(), 0.0, 0.0)
    np.testing.assert_allclose(back, vols, rtol=0, atol=1e-10)
    # the chain's plan is reused: priced again with other parameters, no new plan and no new smile grouping
    assert len(pricer._plans) == 1
    pricer.price(k >= 0, 100.0, 100.0 * np.exp(k), D, 0.0, 0.0, HestonParams(0.05, 1.0, 0.04, 0.4, -0.5))
    assert len(pricer._plans) == 1 and rows_seen == [7, 7]
    pricer.price(k >= 0, 101.0, 100.0 * np.exp(k), D, 0.0, 0.0, HP)  # another spot: another plan
    assert len(pricer._plans) == 2


def test_a_plan_is_served_only_for_the_same_inputs_values_and_shapes(small):
    """The plan cache is keyed by the inputs' bytes, dtypes and shapes: strikes changed in place after a call,
    or the same values in another shape, get a plan of their own and the prices of what was given now."""
    pricer, _ = small
    D, k = np.meshgrid(np.linspace(0.2, 1.5, 4), np.linspace(-0.2, 0.1, 10), indexing="ij")
    K = 100.0 * np.exp(k)
    before = len(pricer._plans)  # the fixture's pricer is shared by this module's tests
    first, _ = pricer.price("c", 100.0, K, D, 0.0, 0.0, HP)
    K *= 1.01  # the caller's array, mutated in place
    moved, _ = pricer.price("c", 100.0, K, D, 0.0, 0.0, HP)
    assert len(pricer._plans) == before + 2 and np.all(moved < first)  # calls on higher strikes: cheaper
    np.testing.assert_array_equal(moved, pricer.price(np.full(K.shape, "c", dtype=object), 100.0, K, D, 0.0, 0.0,
                                                      HP)[0])
    flat, _ = pricer.price("c", 100.0, K.ravel(), D.ravel(), 0.0, 0.0, HP)
    assert flat.shape == (K.size,) and len(pricer._plans) == before + 4  # "c", the rights as objects, flat
    np.testing.assert_array_equal(flat, moved.ravel())


def test_smile_equals_the_generic_forward_pass(small):
    pricer, _ = small
    T = np.array([0.15, 0.7, 1.9])
    rows = np.column_stack([T, np.tile(HP.as_array(), (3, 1))])
    np.testing.assert_allclose(pricer.smile(T, HP), pricer.forward(rows), rtol=1e-13, atol=1e-15)
    with torch.no_grad():  # and the torch network on scaled, standardised inputs
        ref = pricer.net(torch.as_tensor(pricer._scale(rows), dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(pricer.smile(T, HP), ref * pricer.y_scale + pricer.y_mean, rtol=0, atol=1e-5)


def test_nan_parameters_and_market_reasons_come_through(small):
    pricer, _ = small
    p, reason = pricer.price("c", 100.0, np.array([100.0, 100.0]), np.array([0.5, 0.0]), 0.0, 0.0,
                             HestonParams(np.nan, 2.0, 0.05, 0.5, -0.6))
    assert np.all(np.isnan(p)) and list(reason) == [Reason.NAN_INPUT, Reason.NONPOSITIVE_TIME]


def test_training_is_reproducible_for_a_seed():
    a, ra = neural.train(20, epochs=3, hidden=8, layers=1, seed=9, nodes=8, expiries=3)
    b, rb = neural.train(20, epochs=3, hidden=8, layers=1, seed=9, nodes=8, expiries=3)
    x, _ = neural.generate(2, seed=1)
    np.testing.assert_array_equal(a.implied_vol_features(x)[0], b.implied_vol_features(x)[0])
    assert ra.median_bp == rb.median_bp


def test_bad_training_sizes_and_old_files_are_refused(tmp_path, small):
    with pytest.raises(ValueError, match="n_param_sets"):
        neural.train(1)
    with pytest.raises(ValueError, match="nodes"):
        neural.train(10, nodes=2)
    pricer, _ = small
    path = pricer.save(tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    blob["format"] = 1
    torch.save(blob, path)
    with pytest.raises(ValueError, match="retrain"):
        neural.load(path)


def test_save_and_load_round_trip_keeps_the_output_scaling(small, tmp_path):
    pricer, _ = small
    again = neural.load(pricer.save(tmp_path / "s.pt"))
    assert again.nodes == pricer.nodes
    np.testing.assert_array_equal(again.smile([0.3, 1.2], HP), pricer.smile([0.3, 1.2], HP))
