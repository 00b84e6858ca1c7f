"""The numpy Gaussian mixture (engine.analytics.gmm) against scikit-learn's, and its bad inputs."""

import numpy as np
import pytest

from engine.analytics.gmm import GaussianMixture


def _three_clusters(seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([0.0, 0.10], [[1e-4, 0], [0, 4e-4]], 400)
    b = rng.multivariate_normal([0.0, 0.22], [[4e-4, 1e-5], [1e-5, 9e-4]], 300)
    c = rng.multivariate_normal([-0.02, 0.45], [[2e-3, -2e-4], [-2e-4, 4e-3]], 200)
    return np.vstack([a, b, c])


def test_fit_when_three_separated_clusters_then_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.mixture")
    x = _three_clusters()
    ours = GaussianMixture(3, seed=1, n_init=2).fit(x)
    ref = sk.GaussianMixture(3, covariance_type="full", random_state=1, n_init=2).fit(x)
    o, r = np.argsort(ours.means_[:, 1]), np.argsort(ref.means_[:, 1])
    np.testing.assert_allclose(ours.means_[o], ref.means_[r], atol=2e-3)
    np.testing.assert_allclose(ours.weights_[o], ref.weights_[r], atol=0.02)
    np.testing.assert_allclose(ours.covariances_[o], ref.covariances_[r], rtol=0.1, atol=1e-5)
    agree = (np.argsort(o)[ours.predict(x)] == np.argsort(r)[ref.predict(x)]).mean()
    assert agree > 0.97


def test_predict_proba_when_fitted_then_rows_are_probabilities_and_fit_is_deterministic():
    x = _three_clusters()
    p = GaussianMixture(3, seed=9).fit(x).predict_proba(x)
    assert p.shape == (len(x), 3) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    again = GaussianMixture(3, seed=9).fit(x).predict_proba(x)
    np.testing.assert_array_equal(p, again)


@pytest.mark.parametrize(("x", "message"), [
    (np.array([1.0, 2.0, 3.0]), "2-D"),
    (np.array([[1.0, np.nan], [2.0, 3.0], [0.0, 1.0]]), "NaN"),
    (np.zeros((2, 2)), "at least 3 points"),
])
def test_fit_when_input_is_bad_then_says_why(x, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(3).fit(x)


def test_predict_when_not_fitted_then_refuses():
    with pytest.raises(ValueError, match="fit the mixture"):
        GaussianMixture(2).predict(np.zeros((3, 2)))
