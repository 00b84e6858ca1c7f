"""Ensemble fair value / edge, and the neural Heston surrogate (skipped without torch)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pricing import american, bsm, ensemble, heston, neural
from engine.pricing.heston import HestonParams
from engine.pricing.inputs import Reason

HP = HestonParams(v0=0.04, kappa=2.0, theta=0.05, xi=0.5, rho=-0.6)


def test_bsm_only_ensemble_is_bsm_with_zero_dispersion_and_edge_in_dollars_and_vol_points():
    K = np.array([90.0, 100.0, 110.0])
    res = ensemble.fair_value("c", 100.0, K, 0.5, 0.02, 0.0, 0.25)
    np.testing.assert_allclose(res.fair, bsm.price("c", 100.0, K, 0.5, 0.02, 0.0, 0.25), rtol=1e-14)
    assert np.all(res.dispersion == 0) and np.all(res.n_models == 1)
    market = bsm.price("c", 100.0, K, 0.5, 0.02, 0.0, 0.24)  # the market prices one vol point cheaper
    e = ensemble.edge(res, market, "c", 100.0, K, 0.5, 0.02, 0.0, multiplier=100)
    np.testing.assert_allclose(e.vol_points, 1.0, atol=1e-9)
    assert np.all(e.per_share > 0)
    np.testing.assert_allclose(e.per_contract, 100 * e.per_share)


def test_ensemble_combines_models_with_dispersion_range_and_weights():
    K = np.linspace(80, 120, 9)
    mp = ensemble.MertonParams(lam=0.5, mu_j=-0.1, sigma_j=0.15)
    res = ensemble.fair_value("p", 100.0, K, 0.5, 0.02, 0.01, 0.22, merton_params=mp, heston_params=HP)
    assert set(res.models) == {"bsm", "merton", "heston"}
    stack = np.stack(list(res.models.values()))
    np.testing.assert_allclose(res.fair, stack.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(res.dispersion, stack.std(axis=0), rtol=1e-12)
    assert np.all(res.low <= res.fair) and np.all(res.fair <= res.high)
    heavy = ensemble.fair_value("p", 100.0, K, 0.5, 0.02, 0.01, 0.22, merton_params=mp, heston_params=HP,
                                weights={"heston": 8.0, "bsm": 1.0, "merton": 1.0})
    assert np.all(np.abs(heavy.fair - res.models["heston"]) < np.abs(res.fair - res.models["heston"]) + 1e-12)


def test_american_ensemble_adds_the_early_exercise_premium_to_european_members():
    K = np.array([100.0, 110.0])
    eu = ensemble.fair_value("p", 100.0, K, 1.0, 0.06, 0.0, 0.2, heston_params=HP)
    am = ensemble.fair_value("p", 100.0, K, 1.0, 0.06, 0.0, 0.2, heston_params=HP, exercise="american")
    premium = american.price("p", 100.0, K, 1.0, 0.06, 0.0, 0.2) - bsm.price("p", 100.0, K, 1.0, 0.06, 0.0, 0.2)
    assert np.all(premium > 0)
    np.testing.assert_allclose(am.models["heston"] - eu.models["heston"], premium, rtol=1e-12)
    e = ensemble.edge(am, am.fair - 0.05, "p", 100.0, K, 1.0, 0.06, 0.0, exercise="american")
    assert np.all(np.isfinite(e.vol_points)) and np.all(e.vol_points > 0)


def test_ensemble_drops_members_that_return_nan_and_rejects_unknown_exercise():
    mp = ensemble.MertonParams(lam=-1.0, mu_j=0.0, sigma_j=0.1)  # invalid intensity: Merton answers NaN
    res = ensemble.fair_value("c", 100.0, 100.0, 0.5, 0.0, 0.0, 0.2, merton_params=mp)
    assert np.isnan(res.models["merton"]) and res.n_models == 1
    assert float(res.fair) == pytest.approx(float(bsm.price("c", 100.0, 100.0, 0.5, 0.0, 0.0, 0.2)))
    with pytest.raises(ValueError, match="exercise"):
        ensemble.fair_value("c", 100.0, 100.0, 0.5, 0.0, 0.0, 0.2, exercise="bermudan")


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_surrogate():
    pricer, report = neural.train(120, epochs=25, hidden=32, layers=2, seed=3, threads=1)
    return pricer, report


def test_tiny_training_learns_far_better_than_a_constant_and_reports_bp_errors(tiny_surrogate):
    pricer, report = tiny_surrogate
    x, y = neural.generate(20, seed=99)
    pred, reason = pricer.implied_vol_features(x)
    assert np.all(reason == Reason.OK)
    constant_bp = np.median(np.abs(y - np.median(y))) * 1e4
    model_bp = np.median(np.abs(pred - y)) * 1e4
    assert model_bp < 0.5 * constant_bp
    assert report.n_test > 0 and 0 < report.median_bp <= report.p99_bp <= report.max_bp


def test_surrogate_refuses_outside_its_domain_with_nan_and_reason(tiny_surrogate):
    pricer, _ = tiny_surrogate
    K = np.array([100.0, 100.0, 200.0, 100.0])
    T = np.array([0.5, 5.0, 0.5, -1.0])  # T=5 outside, K=200 outside in moneyness, T<0 invalid
    p, reason = pricer.price("c", 100.0, K, T, 0.0, 0.0, HP)
    assert np.isfinite(p[0]) and np.all(np.isnan(p[1:]))
    assert list(reason) == [Reason.OK, Reason.OUTSIDE_DOMAIN, Reason.OUTSIDE_DOMAIN, Reason.NONPOSITIVE_TIME]
    wild = HestonParams(v0=0.04, kappa=2.0, theta=0.05, xi=3.0, rho=-0.6)
    _, reason = pricer.price("c", 100.0, 100.0, 0.5, 0.0, 0.0, wild)
    assert reason == Reason.OUTSIDE_DOMAIN


def test_save_and_load_round_trip_gives_identical_predictions(tiny_surrogate, tmp_path):
    pricer, _ = tiny_surrogate
    path = pricer.save(tmp_path / "m.pt")
    again = neural.load(path)
    x, _ = neural.generate(3, seed=5)
    np.testing.assert_array_equal(pricer.implied_vol_features(x)[0], again.implied_vol_features(x)[0])
    assert again.domain == pricer.domain
    with pytest.raises(FileNotFoundError, match="train"):
        neural.load(tmp_path / "missing.pt")


def test_default_path_is_under_the_user_data_dir():
    path = neural.default_path()
    assert path.name == "heston_surrogate.pt" and path.parent.name == "models"
    assert "optiondesk" in str(path)


def test_neural_member_joins_the_ensemble_close_to_heston(tiny_surrogate):
    pricer, _ = tiny_surrogate
    K = np.array([95.0, 100.0, 105.0])
    res = ensemble.fair_value("c", 100.0, K, 0.5, 0.0, 0.0, 0.2, heston_params=HP, neural_pricer=pricer)
    assert set(res.models) == {"bsm", "heston", "neural"}
    vega = bsm.greeks("c", 100.0, K, 0.5, 0.0, 0.0, 0.2).vega * 100
    # within a few vol points of the model it imitates, even after a few seconds of training
    assert np.all(np.abs(res.models["neural"] - res.models["heston"]) / vega < 0.05)
    assert heston.price("c", 100.0, K, 0.5, 0.0, 0.0, *HP.as_array()).shape == (3,)
