"""Reading an unfitted model is a clear error, not an AttributeError on None: saving a logistic model or an
LSTM before ``fit``, or ordering a mixture's components before it is fitted."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analytics.gmm import GaussianMixture
from engine.ml.lstm import LSTMNet
from engine.ml.models import Classifier


def test_saving_an_unfitted_logistic_model_says_so() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        Classifier("logistic").to_state()


def test_saving_an_unfitted_lstm_says_so() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        LSTMNet().to_state()


def test_a_fitted_logistic_model_round_trips() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(float)
    model = Classifier("logistic").fit(x, y)
    again = Classifier.from_state(model.to_state())
    np.testing.assert_allclose(again.score(x), model.score(x))


def test_mixture_components_need_a_fit() -> None:
    gm = GaussianMixture(2, seed=1)
    with pytest.raises(ValueError, match="fit the mixture"):
        gm.fitted()
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0.0, 0.1, size=(50, 2)), rng.normal(5.0, 0.1, size=(50, 2))])
    weights, means, covariances = gm.fit(x).fitted()
    assert weights is gm.weights_ and means is gm.means_ and covariances is gm.covariances_
    assert sorted(np.round(means[:, 0]).tolist()) == [0.0, 5.0]
