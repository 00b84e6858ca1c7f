"""Models panel: the registry with walk-forward metrics, train/evaluate as engine jobs, the reliability curve."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.bus.events import MLJobFinished, MLJobProgressed
from engine.history.simulated import SimulatedHistorySource
from engine.market.config import SimulatorConfig
from engine.ml.service import MLService, TrainModel
from engine.strategies.config import StrategyEntry
from tests.qt_fixtures import run_async, wait_for_condition
from tests.sim_start import SIM_START
from widgets.base import EventBatch
from widgets.models_panel import ModelsPanel


@pytest.fixture()
def service(qtbot, engine, tmp_path):
    def source(independent: bool = False):
        return SimulatedHistorySource(SimulatorConfig(seed=7 + int(independent))), SIM_START

    entries = [StrategyEntry(name="iv_rank_put_spread", id="gated_puts",
                             params={"ml.model": "iv_rank_put_spread-SPY", "ml.min_probability": 0.6})]
    run_async(qtbot, engine.ml.stop(), timeout=10)  # this test's service, on its own folders, answers instead
    svc = MLService(engine.bus, engine.run_cpu, models_dir=tmp_path / "models", history_source=source, seed=7,
                    strategies=lambda: entries, cache_dir=tmp_path / "cache", clock=engine.clock)
    svc.start()
    engine.ml = svc
    return svc


def test_train_and_evaluate_as_engine_jobs(qtbot, engine, service, shot) -> None:
    seen: list = []
    engine.bus.subscribe(MLJobProgressed, seen.append)
    engine.bus.subscribe(MLJobFinished, seen.append)
    panel = ModelsPanel(engine, service=service)
    qtbot.addWidget(panel)
    assert panel.table.rowCount() == 0 and "No registered models" in panel.reading_label.text()
    panel.kind_box.setCurrentText("logistic")
    panel.permutations = 2
    panel.train()
    assert panel.progress.maximum() == 0  # busy: Qt's indeterminate bar
    wait_for_condition(qtbot, lambda: any(isinstance(e, MLJobFinished) for e in seen), timeout=120)
    assert any(isinstance(e, MLJobProgressed) and e.stage == "running" for e in seen)
    # a second job while one runs is refused by the service
    panel.apply_events(EventBatch.from_events(list(seen)))
    [done] = [e for e in seen if isinstance(e, MLJobFinished)]
    assert done.error == "" and done.summary["version"] == 1 and done.summary["verdict"] in ("edge", "no edge")
    assert panel.progress.maximum() == 1 and panel.train_button.isEnabled()
    assert panel.table.rowCount() == 1
    texts = {panel.table.horizontalHeaderItem(j).text(): panel.table.item(0, j).text()
             for j in range(panel.table.columnCount())}
    assert texts["Model"] == "iv_rank_put_spread-SPY" and texts["Kind"] == "logistic"
    assert texts["Used by"] == "gated_puts"
    row = service.models()[0]
    assert texts["AUC [95 % CI]"].startswith(f"{row.metrics['auc']:.3f} [")
    assert "ECE" in texts["Calibration"] and texts["Verdict"] == row.metrics["verdict"]
    curve = [c for c in panel.plot.getPlotItem().listDataItems() if len(c.xData) > 2]
    assert curve and np.all((curve[0].yData >= 0) & (curve[0].yData <= 1))  # the reliability bins
    assert "gated_puts" in panel.reading_label.text()

    seen.clear()
    panel.evaluate()
    wait_for_condition(qtbot, lambda: any(isinstance(e, MLJobFinished) for e in seen), timeout=120)
    panel.apply_events(EventBatch.from_events(list(seen)))
    assert "Evaluated on another history" in panel.reading_label.text()
    ev = service.last_evaluation["iv_rank_put_spread-SPY"]
    assert ev["samples"] > 100 and 0 <= ev["auc"] <= 1

    path = shot(panel, "panel_models")
    shutil.copy(path, "/tmp/panel_models.png")


def test_xgboost_importance_todays_candidate_drift_and_the_pricing_ensemble(qtbot, engine, service, shot) -> None:
    from datetime import timedelta

    from engine.ml.ensemble_tracker import EnsembleTracker, EnsembleTrackerService
    from engine.ml.insight import ModelInsightReady

    seen: list = []
    engine.bus.subscribe(MLJobFinished, seen.append)
    engine.bus.subscribe(ModelInsightReady, seen.append)
    # the pricing ensemble's tracker, scored on two regimes (real tracker, fed as the engine feeds it)
    tracker = EnsembleTracker(None, horizon_s=900)
    t0 = engine.clock.now()
    members = ("bsm", "merton", "heston")
    for regime, wrong in (("neutral", "merton"), ("high_vol", "heston")):
        vals = np.tile(np.array([2.0, 2.0, 2.0]), (4, 1))
        vals[:, members.index(wrong)] += 0.5
        tracker.record("SPY", regime, t0, ["A", "B", "C", "D"], vals, members)
        tracker.score("SPY", t0 + timedelta(minutes=15), ["A", "B", "C", "D"], np.full(4, 2.01))
    service.ensemble = EnsembleTrackerService(engine.bus, tracker, run_cpu=engine.run_cpu, clock=engine.clock,
                                              regime=lambda: "neutral", rate=lambda u: (0.04, 0.0))
    panel = ModelsPanel(engine, service=service)
    qtbot.addWidget(panel)
    panel.resize(1100, 720)
    assert panel.ensemble_table.rowCount() == 6
    cells = {(panel.ensemble_table.item(i, 0).text(), panel.ensemble_table.item(i, 1).text()):
             panel.ensemble_table.item(i, 3).text() for i in range(6)}
    assert float(cells[("neutral", "merton")].rstrip("%")) < 1.0 < float(cells[("high_vol", "merton")].rstrip("%"))
    assert "current regime: neutral" in panel.ensemble_label.text()
    assert "optiondesk train-neural" in panel.ensemble_label.text()  # no surrogate saved in the test home

    panel.kind_box.setCurrentText("xgboost")
    panel.permutations = 1
    panel.train()
    wait_for_condition(qtbot, lambda: any(isinstance(e, MLJobFinished) for e in seen), timeout=150)
    panel.apply_events(EventBatch.from_events([e for e in seen if isinstance(e, MLJobFinished)]))
    assert panel.table.rowCount() == 1 and "Computing" in panel.candidate_label.text()
    wait_for_condition(qtbot, lambda: any(isinstance(e, ModelInsightReady) for e in seen), timeout=120)
    [ready] = [e for e in seen if isinstance(e, ModelInsightReady)]
    assert ready.error == "", ready.error
    panel.apply_events(EventBatch.from_events([ready]))
    ins = service.insights["iv_rank_put_spread-SPY"]
    assert ins["kind"] == "xgboost" and ins["importance_type"] == "total gain"
    bars = [i for i in panel.importance_plot.getPlotItem().items if type(i).__name__ == "BarGraphItem"]
    assert bars and len(bars[0].opts["width"]) == min(12, len(ins["importance"]))  # the top 12 features
    cand = ins["candidate"]
    assert 0.0 < cand["probability"] < 1.0 and f"P(win) {cand['probability']:.1%}" in panel.candidate_label.text()
    assert panel.contrib_table.rowCount() == len(cand["contributions"])
    top_name, top_value = next(iter(cand["contributions"].items()))
    assert panel.contrib_table.item(0, 0).text() == top_name
    assert panel.contrib_table.item(0, 1).text() == f"{top_value:+.3f}"
    assert "gated_puts: no entry decided yet" in panel.candidate_label.text() or \
        "no strategy has asked" in panel.candidate_label.text()
    psi = ins["drift"]["psi"]
    assert panel.drift_table.rowCount() == len(psi) and all(v is None or v >= 0 for v in psi.values())
    worst = max((v for v in psi.values() if v is not None), default=None)
    assert worst is None or panel.drift_table.item(0, 1).text() == f"{worst:.3f}"
    for i, name in enumerate(("importance", "candidate", "drift", "ensemble"), start=1):
        panel.tabs.setCurrentIndex(i)
        shot(panel, f"panel_models_{name}")
    panel.tabs.setCurrentIndex(0)


def test_one_job_at_a_time(qtbot, engine, service) -> None:
    from engine.ml.service import MLJobError

    first = run_async(qtbot, engine.bus.send(TrainModel(model="logistic", permutations=0, years=2)), timeout=10)
    assert first.startswith("ml-")
    with pytest.raises(MLJobError, match="still running"):
        run_async(qtbot, engine.bus.send(TrainModel(model="logistic")), timeout=10)
    wait_for_condition(qtbot, lambda: service.running() is None, timeout=120)
    assert service.jobs[first].stage in ("finished", "failed")


def test_the_app_builds_it_on_the_engines_own_service(qtbot, engine) -> None:
    from engine.ml.service import attached_service

    panel = ModelsPanel(engine)  # as the main window builds every panel: (engine, parent)
    qtbot.addWidget(panel)
    assert panel.service is attached_service(engine)
    assert panel.service.models_dir == engine.paths.models_dir
    assert engine.bus.has_handler(TrainModel) and panel.train_button.isEnabled()
    assert panel.table.rowCount() == 0
