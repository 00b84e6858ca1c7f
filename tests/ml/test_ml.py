"""ML pipeline on the simulated market's seeded history: point-in-time features, labels, purged splits,
honest metrics, the registry's feature-list check and the `optiondesk ml` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.history.simulated import SimulatedHistorySource
from engine.market.config import SimulatorConfig
from engine.ml.data import MarketHistory, MLDataError, load_history
from engine.ml.features import (
    FEATURE_NAMES,
    FEATURES,
    LeakageError,
    build_features,
    cached_features,
    point_in_time_violations,
)
from engine.ml.labels import put_spread_labels
from engine.ml.metrics import auc, block_bootstrap_auc, deflated_sharpe
from engine.ml.models import fit_calibrated
from engine.ml.registry import FeatureListMismatch, ModelRegistry, RegistryError
from engine.ml.train import TrainConfig, evaluate, make_dataset
from engine.ml.validation import overlapping_train, purged_walk_forward
from tests.sim_start import SIM_START

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(n_folds=4, n_permutations=0, n_bootstrap=200)


@pytest.fixture(scope="module")
def history() -> MarketHistory:
    return load_history(SimulatedHistorySource(SimulatorConfig(seed=7)), "SPY", SIM_START, 4)


@pytest.fixture(scope="module")
def features(history: MarketHistory) -> pd.DataFrame:
    return build_features(history)


@pytest.fixture(scope="module")
def dataset(history: MarketHistory, features: pd.DataFrame):
    return make_dataset(features, put_spread_labels(history))


def test_history_is_aligned_and_deterministic(history: MarketHistory) -> None:
    again = load_history(SimulatedHistorySource(SimulatorConfig(seed=7)), "SPY", SIM_START, 4)
    assert len(history) == 1008 and history.days[-1] < SIM_START
    assert again.data_hash() == history.data_hash()
    assert np.isfinite(history.vix).all() and (history.vix > 5).all()
    other = load_history(SimulatedHistorySource(SimulatorConfig(seed=8)), "SPY", SIM_START, 4)
    assert other.data_hash() != history.data_hash()
    with pytest.raises(MLDataError, match="no history for NOPE"):
        load_history(SimulatedHistorySource(SimulatorConfig(seed=7)), "NOPE", SIM_START, 1)


def test_history_from_the_store_matches_the_source(history: MarketHistory, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from engine.history.service import backfill_store
    from engine.ml.data import history_from_store
    from engine.store import Store

    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    store = Store.open(tmp_path / "od.sqlite")
    try:
        src = SimulatedHistorySource(SimulatorConfig(seed=7))
        backfill_store(store, src, ["SPY", "VIX"], SIM_START, len(history), "2026-03-02T14:30:00+00:00")
        stored = history_from_store(store, "SPY")
        until = history_from_store(store, "SPY", until=history.days[99])
        with pytest.raises(MLDataError, match="no stored history for QQQ"):
            history_from_store(store, "QQQ")
    finally:
        store.close()
    assert stored.days == history.days and len(until) == 100
    np.testing.assert_allclose(stored.close, history.close)
    np.testing.assert_allclose(stored.vix_iv, history.vix_iv)
    assert stored.data_hash() == replace(history, source="store").data_hash()
    from engine.cli import main

    assert main(["ml", "features", "--symbol", "SPY", "--db", str(tmp_path / "od.sqlite"), "--years", "2",
                 "--date", SIM_START.isoformat(), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["days"] == 504 and out["last_day"] == history.days[-1].isoformat() and out["source"] == "store"
    assert main(["ml", "features", "--symbol", "SPY", "--db", str(tmp_path / "absent.sqlite")]) != 0
    assert "no such database" in capsys.readouterr().err


def test_feature_list_is_documented_and_sized() -> None:
    assert 20 <= len(FEATURE_NAMES) <= 60
    doc = (ROOT / "docs" / "ml.md").read_text()
    for name in FEATURE_NAMES:
        assert f"`{name}`" in doc, f"{name} is not documented in docs/ml.md"
        assert FEATURES[name].strip()


def test_features_are_point_in_time(history: MarketHistory, features: pd.DataFrame) -> None:
    assert list(features.columns) == [*FEATURE_NAMES, "available_at"]
    late = features.iloc[300:][list(FEATURE_NAMES)]
    assert late.notna().all().all(), "every feature is warmed up after 300 sessions"
    # recomputed on the history cut after day t, day t's row is the same: nothing looked ahead
    assert point_in_time_violations(history, [299, 520, 777]) == []

    def peeking(h: MarketHistory, seed: int = 7) -> pd.DataFrame:
        f = build_features(h, seed=seed)
        f["ret_5d"] = f["ret_5d"].shift(-1)  # tomorrow's return: a look-ahead bug
        return f

    bad = point_in_time_violations(history, [400], builder=peeking)
    assert bad == [(history.days[400], "ret_5d")]


def test_iv_rank_feature_matches_the_surface_rule(history: MarketHistory, features: pd.DataFrame) -> None:
    from engine.surface.ivrank import iv_rank

    for i in (59, 60, 200, 700, len(history) - 1):
        r = iv_rank(history.atm_iv[max(0, i - 252):i], float(history.atm_iv[i]))
        np.testing.assert_allclose([features["iv_rank"].iloc[i], features["iv_pct"].iloc[i]], [r.rank, r.percentile],
                                   equal_nan=True)
    assert np.isnan(features["iv_rank"].iloc[59]) and np.isfinite(features["iv_rank"].iloc[60])


def test_feature_stamped_after_decision_is_refused(history: MarketHistory, features: pd.DataFrame) -> None:
    labels = put_spread_labels(history)
    late = features.copy()
    late.loc[late.index[500], "available_at"] = late["available_at"].iloc[500] + timedelta(days=1)
    with pytest.raises(LeakageError, match="stamped after their decision time"):
        make_dataset(late, labels)


def test_feature_cache_is_keyed_by_the_data(history: MarketHistory, tmp_path: Path) -> None:
    short = history.head(400)
    a, path, hit = cached_features(short, tmp_path)
    assert not hit and path is not None and path.exists()
    b, path2, hit2 = cached_features(short, tmp_path)
    assert hit2 and path2 == path
    pd.testing.assert_frame_equal(a[list(FEATURE_NAMES)], b[list(FEATURE_NAMES)], check_index_type=False)
    assert list(b["available_at"]) == list(a["available_at"])
    changed = replace(short, close=short.close * np.r_[np.ones(399), 1.01])
    _, path3, hit3 = cached_features(changed, tmp_path)
    assert not hit3 and path3 != path
    path.write_bytes(b"not parquet")  # a torn file is rebuilt, not trusted
    c, _, hit4 = cached_features(short, tmp_path)
    assert not hit4 and len(c) == 400


def _flat(n: int, close: np.ndarray | None = None) -> MarketHistory:
    from datetime import date

    days = tuple(date(2025, 1, 1) + timedelta(days=i) for i in range(n))
    c = np.full(n, 100.0) if close is None else close
    return MarketHistory("X", days, c, np.full(n, 0.2), np.full(n, 15.0), np.full(n, 0.8))


def test_labels_follow_the_management_rules() -> None:
    # a quiet path: the spread decays and reaches its 50 % profit target or the DTE exit with a gain
    calm = put_spread_labels(_flat(80))
    assert len(calm) > 0 and (calm.y == 1).all() and (calm.pnl > 0).all()
    assert (calm.end > calm.start).all()
    # a 15 % drop on day 10: every spread open then is stopped out that day with a loss
    close = np.r_[np.full(10, 100.0), np.full(70, 85.0)]
    crash = put_spread_labels(_flat(80, close))
    hit = crash.start < 10
    assert hit.any()
    assert (crash.end[hit] == 10).all() and (crash.reason[hit] == "stop").all() and (crash.y[hit] == 0).all()
    # unresolved candidates (exit beyond the last day) are left out
    assert crash.end.max() < 80 and crash.start.max() < 80 - 1


def test_purged_split_never_trains_on_an_overlapping_label(dataset) -> None:
    folds = purged_walk_forward(dataset.start, dataset.end, n_folds=5, embargo=5)
    assert sum(f.purged for f in folds) > 0
    for f in folds:
        assert overlapping_train(f, dataset.start, dataset.end) == 0
        assert dataset.end[f.train].max() < dataset.start[f.test[0]] - 5  # purge + embargo
        assert dataset.start[f.train].max() < dataset.start[f.test[0]]  # walk-forward: the past only
    naive = purged_walk_forward(dataset.start, dataset.end, n_folds=5, embargo=0, purge=False)
    leaks = [overlapping_train(f, dataset.start, dataset.end) for f in naive]
    assert all(x > 0 for x in leaks), "the naive split trains on labels that end inside the test window"


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="ordered by decision day"):
        purged_walk_forward(np.array([2, 1] * 50), np.array([5, 4] * 50))
    with pytest.raises(ValueError, match="end after its decision"):
        purged_walk_forward(np.arange(100), np.arange(100))
    with pytest.raises(ValueError, match="too few"):
        purged_walk_forward(np.arange(30), np.arange(30) + 3)


def test_metrics_on_known_cases() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(y, np.full(4, 0.5)) == 0.5
    rng = np.random.default_rng(1)
    yy = rng.integers(0, 2, 500)
    lo, hi = block_bootstrap_auc(yy, yy + rng.normal(0, 0.5, 500), block=10, n_boot=300)
    assert 0.5 < lo < hi < 1.0
    good = rng.normal(0.2, 1.0, 400)
    assert deflated_sharpe(good, [0.2]) > 0.95
    # the same returns look far less convincing after 100 tries with widely spread Sharpes
    assert deflated_sharpe(good, list(np.linspace(-0.3, 0.3, 100))) < deflated_sharpe(good, [0.2])


def test_shuffled_labels_give_auc_near_half(dataset) -> None:
    rng = np.random.default_rng(11)
    shuffled = replace(dataset, y=dataset.y[rng.permutation(len(dataset))])
    report = evaluate(shuffled, TrainConfig(model="logistic", **FAST))
    lo, hi = report["auc_ci"]
    assert lo < 0.5 < hi, report["auc_ci"]
    assert abs(report["auc"] - 0.5) < 0.1
    assert report["verdict"] == "no edge"


def test_evaluate_reports_honest_metrics(dataset) -> None:
    report = evaluate(dataset, TrainConfig(model="xgboost", n_folds=3, n_permutations=3, n_bootstrap=200))
    for key in ("auc", "auc_ci", "brier", "permutation_auc", "deflated_sharpe", "calibration", "folds", "pnl"):
        assert key in report
    assert 0.0 <= report["baseline"]["logistic"]["auc"] <= 1.0
    assert len(report["permutation_aucs"]) == 3
    assert abs(report["permutation_auc"] - 0.5) < 0.08
    assert all(f["train_labels_overlapping_test"] == 0 for f in report["folds"])
    assert report["verdict"] in ("edge", "no edge")
    books = report["pnl"]
    assert books["all_candidates"]["trades"] == report["test_samples"]
    assert books["iv_rank_put_spread_gated"]["trades"] <= books["iv_rank_put_spread"]["trades"]
    a, b = (fit_calibrated("xgboost", dataset.X, dataset.y, dataset.start, dataset.end, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a.predict_proba(dataset.X), b.predict_proba(dataset.X))  # same seed, same model


def test_registry_round_trip_and_feature_list_check(dataset, tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    names = list(FEATURE_NAMES)
    preds = {}
    for kind in ("logistic", "xgboost"):
        model = fit_calibrated(kind, dataset.X, dataset.y, dataset.start, dataset.end, seed=7)
        rec = reg.save(f"m-{kind}", model, {"features": names, "symbol": "SPY", "training_window": ["a", "b"]})
        assert rec.version == 1
        loaded, _rec2 = reg.load(f"m-{kind}")
        np.testing.assert_allclose(loaded.predict_proba(dataset.X[:50]), model.predict_proba(dataset.X[:50]))
        preds[kind] = loaded.predict_proba(dataset.X[:50])
        assert ((preds[kind] > 0) & (preds[kind] < 1)).all()
    x = dataset.X[7]
    for kind in ("logistic", "xgboost"):
        m, _ = reg.load(f"m-{kind}")
        contrib = m.contributions(x, names)
        assert list(contrib) == sorted(contrib, key=lambda k: -abs(contrib[k]))
        if kind == "logistic":  # additive: the shares and the intercept make up the margin
            assert sum(contrib.values()) + m._intercept == pytest.approx(float(m.score(x.reshape(1, -1))[0]))
    assert reg.save("m-logistic", model, {"features": names}).version == 2
    assert [(r.name, r.version) for r in reg.list()] == [("m-logistic", 1), ("m-logistic", 2), ("m-xgboost", 1)]
    with pytest.raises(FeatureListMismatch, match="missing \\['vix_iv'\\]"):
        reg.load("m-xgboost", features=[n for n in names if n != "vix_iv"])
    with pytest.raises(FeatureListMismatch, match="order"):
        reg.load("m-xgboost", features=names[::-1])
    with pytest.raises(RegistryError, match="no model named"):
        reg.load("absent")
    with pytest.raises(RegistryError, match="no version 9"):
        reg.load("m-xgboost", 9)
    with pytest.raises(RegistryError, match="model name"):
        reg.save("../evil", model, {"features": names})


def test_cli_train_list_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from engine.cli import main

    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    common = ["--symbol", "SPY", "--years", "3", "--seed", "7", "--date", SIM_START.isoformat()]
    assert main(["ml", "train", "--strategy", "iv_rank_put_spread", *common, "--folds", "3",
                 "--permutations", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("auc", "auc_ci", "permutation_auc", "brier", "deflated_sharpe", "folds", "verdict"):
        assert key in out
    assert all({"purged", "embargoed", "embargo_sessions"} <= set(f) for f in out["folds"])
    assert out["registered"]["name"] == "iv_rank_put_spread-SPY"
    assert main(["ml", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "iv_rank_put_spread-SPY" and listed[0]["features"] == len(FEATURE_NAMES)
    assert main(["ml", "evaluate", "--name", "iv_rank_put_spread-SPY", "--symbol", "SPY", "--years", "3",
                 "--seed", "8", "--date", SIM_START.isoformat(), "--all-days", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["samples"] > 100 and 0.0 <= ev["auc"] <= 1.0
    assert main(["ml", "predict", "--name", "iv_rank_put_spread-SPY", *common, "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert 0.0 < pred["probability"] < 1.0 and pred["day"] < SIM_START.isoformat()
    assert pred["take"] == (pred["probability"] >= pred["gate_level"])
    assert len(pred["contributions"]) == 8 and set(pred["contributions"]) <= set(FEATURE_NAMES)
    assert main(["ml", "features", *common, "--json"]) == 0
    feats = json.loads(capsys.readouterr().out)
    assert feats["cache_hit"] is True and feats["features"] == list(FEATURE_NAMES)
    qqq = ["--symbol", "QQQ", "--years", "3", "--seed", "7", "--date", SIM_START.isoformat()]
    for cmd in ("predict", "evaluate"):  # a SPY model's features mean something else on QQQ
        assert main(["ml", cmd, "--name", "iv_rank_put_spread-SPY", *qqq]) != 0
        assert "was trained on SPY, not QQQ" in capsys.readouterr().err
    assert main(["ml", "evaluate", "--name", "nope", *common]) != 0
    assert "no model named 'nope'" in capsys.readouterr().err
    assert main(["ml", "train", "--symbol", "ZZZ", "--date", SIM_START.isoformat()]) != 0
    assert "unknown underlying 'ZZZ'" in capsys.readouterr().err


def test_importing_ml_does_not_load_xgboost_or_torch() -> None:
    code = ("import sys, engine.ml.cli, engine.ml.train, engine.ml.registry, engine.ml.features; "
            "print(sorted(m for m in ('xgboost', 'torch', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_training_runs_in_a_process_pool(tmp_path: Path) -> None:
    import asyncio

    from engine.ml.jobs import TrainRequest, train_off_loop
    from engine.process_pools import new_process_pool, shutdown_pool

    req = TrainRequest(source=SimulatedHistorySource(SimulatorConfig(seed=7)), symbol="SPY", before=SIM_START,
                       years=2.5, config={"model": "logistic", "n_folds": 3, "n_permutations": 0,
                                          "n_bootstrap": 50}, models_dir=tmp_path / "models")
    pool = new_process_pool(1)
    try:
        report = asyncio.run(asyncio.wait_for(train_off_loop(req, pool), 120))
    finally:
        shutdown_pool(pool, timeout_s=10)
    assert report["registered"]["version"] == 1 and report["verdict"] in ("edge", "no edge")
    model, rec = ModelRegistry(tmp_path / "models").load("iv_rank_put_spread-SPY")
    assert rec.meta["training_window"] == report["training_window"] and model.kind == "logistic"


def test_without_xgboost_the_baseline_is_skipped_and_xgboost_refused(dataset, monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path, capsys) -> None:
    import engine.ml.models as models
    from engine.cli import main

    def missing() -> None:
        raise models.MLDependencyError("XGBoost models need the 'ml' extra: pip install 'optiondesk[ml]'")

    monkeypatch.setattr(models, "require_xgboost", missing)
    report = evaluate(dataset, TrainConfig(model="logistic", **FAST))
    assert report["baseline"] == {} and "'ml' extra" in report["baseline_skipped"]["xgboost"]
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["ml", "train", "--years", "2", "--date", SIM_START.isoformat(), "--permutations", "0"]) == 2
    assert "'ml' extra" in capsys.readouterr().err


def test_a_day_has_the_same_features_from_a_long_history_and_from_the_live_stores_sessions(
        history: MarketHistory, features: pd.DataFrame) -> None:
    """Training reads years of history, the live gate the store's 300 sessions (DEFAULT_SESSIONS): the same
    day must score alike from both (the regime mixture once depended on where the history started)."""
    from engine.history.service import DEFAULT_SESSIONS

    short = build_features(history.tail(DEFAULT_SESSIONS))
    last = features.index[-20:]
    cols = list(FEATURE_NAMES)
    long_rows = features.loc[last, cols].to_numpy()
    short_rows = short.loc[last, cols].to_numpy()
    assert np.isfinite(long_rows).all() and np.isfinite(short_rows).all()  # every feature defined live too
    # EWMA realized vol remembers its start (by 0.94^279 ≈ 3e-8 after 279 sessions) and rolling windows carry
    # rounding from where they began: everything agrees to 1e-6
    np.testing.assert_allclose(short_rows, long_rows, rtol=1e-6, atol=1e-9)
