"""Isotonic beside Platt (chosen on held-out calibration data), the reliability numbers, and the LSTM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.history.simulated import SimulatedHistorySource
from engine.market.config import SimulatorConfig
from engine.ml.data import load_history
from engine.ml.features import FEATURE_NAMES, build_features
from engine.ml.labels import put_spread_labels
from engine.ml.lstm import SEQ_LEN, sequences
from engine.ml.metrics import reliability
from engine.ml.models import Classifier, Isotonic, Platt, choose_calibration, fit_calibrated, log_loss
from engine.ml.registry import ModelRegistry
from engine.ml.train import TrainConfig, evaluate, make_dataset
from tests.sim_start import SIM_START


def _draw(p_true: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(size=len(p_true)) < p_true).astype(float)


def test_isotonic_matches_sklearn_and_is_monotone() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=800), 2)  # ties on purpose
    y = _draw(1 / (1 + np.exp(-2 * s)), 4)
    iso = Isotonic().fit(s, y)
    ref = IsotonicRegression(out_of_bounds="clip", y_min=1e-3, y_max=1 - 1e-3).fit(s, y)
    grid = np.unique(s)
    np.testing.assert_allclose(iso(grid), ref.predict(grid), atol=1e-9)
    out = iso(np.linspace(-4, 4, 200))
    assert np.all(np.diff(out) >= -1e-12)
    restored = Isotonic(list(iso.x), list(iso.y))
    np.testing.assert_array_equal(restored(grid), iso(grid))


def test_a_step_shaped_miscalibration_chooses_isotonic() -> None:
    """True P(win) jumps from 0.2 to 0.8 at score 0: no sigmoid of the score fits that; a step does."""
    s = np.random.default_rng(5).uniform(-3, 3, 1500)
    y = _draw(np.where(s < 0, 0.2, 0.8), 6)
    method, scores = choose_calibration(s, y)
    assert method == "isotonic"
    assert scores["isotonic"]["log_loss"] < scores["platt"]["log_loss"]
    fresh = np.random.default_rng(7).uniform(-3, 3, 4000)
    y2 = _draw(np.where(fresh < 0, 0.2, 0.8), 8)
    iso, platt = Isotonic().fit(s, y), Platt().fit(s, y)
    assert reliability(y2, iso(fresh))["ece"] < reliability(y2, platt(fresh))["ece"]


def test_an_overconfident_logit_chooses_platt() -> None:
    """Scores that are 3 × the true logit: a sigmoid rescaling is exactly right and isotonic only adds noise."""
    rng = np.random.default_rng(9)
    logit = rng.normal(0, 1.2, 600)
    y = _draw(1 / (1 + np.exp(-logit)), 10)
    method, scores = choose_calibration(3 * logit, y)
    assert method == "platt", scores
    p = Platt().fit(3 * logit, y)
    assert p.a == pytest.approx(1 / 3, rel=0.3)
    raw = 1 / (1 + np.exp(-3 * logit))
    assert reliability(y, p(3 * logit))["ece"] < reliability(y, raw)["ece"]


def test_too_small_a_slice_keeps_platt() -> None:
    assert choose_calibration(np.arange(12.0), np.array([0, 1] * 6)) == ("platt", {})


def test_reliability_numbers_on_a_known_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], float)
    p = np.array([0.1] * 5 + [0.9] * 5)
    r = reliability(y, p, bins=2)
    assert [b["observed"] for b in r["bins"]] == [pytest.approx(0.4), pytest.approx(1.0)]
    assert r["ece"] == pytest.approx((0.3 * 5 + 0.1 * 5) / 10)
    assert r["max_gap"] == pytest.approx(0.3)
    assert log_loss(np.array([1.0]), np.array([0.5])) == pytest.approx(np.log(2))


# ---- on the pipeline's own data ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frame_and_dataset():
    h = load_history(SimulatedHistorySource(SimulatorConfig(seed=7)), "SPY", SIM_START, 4)
    frame = build_features(h)
    return frame, make_dataset(frame, put_spread_labels(h))


def test_calibration_choice_is_recorded_and_saved(frame_and_dataset, tmp_path: Path) -> None:
    _, ds = frame_and_dataset
    report = evaluate(ds, TrainConfig(model="logistic", n_folds=3, n_permutations=0, n_bootstrap=100))
    assert all(f["calibration"] in ("platt", "isotonic") for f in report["folds"])
    rel = report["reliability"]
    assert sum(b["n"] for b in rel["bins"]) == report["test_samples"]
    assert 0 <= rel["ece"] <= rel["max_gap"] <= 1
    assert report["log_loss"] > 0 and report["log_loss_base_rate"] > 0
    for method in ("platt", "isotonic"):
        m = fit_calibrated("logistic", ds.X, ds.y, ds.start, ds.end, calibration=method)
        assert m.calibration == method
        back = Classifier.from_state(m.to_state())
        np.testing.assert_allclose(back.predict_proba(ds.X[:40]), m.predict_proba(ds.X[:40]))


def test_sequences_end_on_the_decision_day(frame_and_dataset) -> None:
    frame, ds = frame_and_dataset
    F = frame[list(FEATURE_NAMES)].to_numpy(float)
    seq = sequences(F, ds.start[:5], SEQ_LEN)
    assert seq.shape == (5, SEQ_LEN, len(FEATURE_NAMES))
    for k, s in enumerate(ds.start[:5]):
        np.testing.assert_array_equal(seq[k, -1], F[s])  # the last step is the decision day, nothing later
        np.testing.assert_array_equal(seq[k, 0], F[s - SEQ_LEN + 1])
    # changing every day after a decision cannot change its sequence
    t = int(ds.start[100])
    G = F.copy()
    G[t + 1:] += 123.0
    np.testing.assert_array_equal(sequences(G, np.array([t]))[0], sequences(F, np.array([t]))[0])


def test_lstm_is_seeded_bounded_saved_and_honestly_evaluated(frame_and_dataset, tmp_path: Path) -> None:
    _frame, ds = frame_and_dataset
    X = ds.inputs("lstm")
    a = fit_calibrated("lstm", X, ds.y, ds.start, ds.end, seed=7)
    b = fit_calibrated("lstm", X, ds.y, ds.start, ds.end, seed=7)
    np.testing.assert_allclose(a.predict_proba(X[:60]), b.predict_proba(X[:60]))  # same seed, same model
    assert 1 <= a.params["best_epoch"] <= a.params["epochs"] <= a.params["max_epochs"]
    reg = ModelRegistry(tmp_path / "models")
    reg.save("seq", a, {"features": list(FEATURE_NAMES), "symbol": "SPY"})
    loaded, rec = reg.load("seq")
    assert rec.meta["kind"] == "lstm"
    np.testing.assert_allclose(loaded.predict_proba(X[:60]), a.predict_proba(X[:60]), atol=1e-6)
    contrib = loaded.contributions(X[10], list(FEATURE_NAMES))
    assert len(contrib) == len(FEATURE_NAMES) and any(v != 0 for v in contrib.values())
    report = evaluate(ds, TrainConfig(model="lstm", n_folds=3, n_permutations=0, n_bootstrap=100))
    assert report["model"] == "lstm"
    assert set(report["baseline"]) == {"logistic", "xgboost"}
    assert all(f["train_labels_overlapping_test"] == 0 for f in report["folds"])
    assert report["verdict"] in ("edge", "no edge")
    lo, _hi = report["auc_ci"]
    assert report["verdict"] == "no edge" or lo > 0.5


def test_cli_trains_an_lstm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import json

    from engine.cli import main

    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["ml", "train", "--model", "lstm", "--symbol", "SPY", "--years", "4", "--seed", "7", "--date",
               SIM_START.isoformat(), "--folds", "3", "--permutations", "1", "--models-dir",
               str(tmp_path / "models"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "lstm" and out["registered"]["name"] == "iv_rank_put_spread-SPY"
    assert len(out["permutation_aucs"]) == 1
    meta = json.loads((tmp_path / "models" / "iv_rank_put_spread-SPY" / "v1" / "meta.json").read_text())
    assert meta["sequence_length"] == SEQ_LEN and meta["kind"] == "lstm"
    assert meta["metrics"]["verdict"] == out["verdict"]
    assert isinstance(pd.Series(meta["metrics"]["calibration"]).iloc[0], dict)


def test_without_torch_the_lstm_is_refused_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys) -> None:
    import engine.ml.lstm as lstm
    from engine.cli import main
    from engine.ml.models import MLDependencyError

    def missing() -> None:
        raise MLDependencyError("LSTM models need the 'ml' extra: pip install 'optiondesk[ml]'")

    monkeypatch.setattr(lstm, "require_torch", missing)
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["ml", "train", "--model", "lstm", "--years", "2", "--date", SIM_START.isoformat(),
                 "--permutations", "0"]) == 2
    assert "LSTM models need the 'ml' extra" in capsys.readouterr().err
