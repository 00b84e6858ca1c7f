"""Models panel, issue 17: the live probability line with a real reading.

A real engine trains a model through its own ML service (registered in its own models folder), hosts a
strategy whose ``ml.model`` names it, and scores that strategy's entry on the history in its own store; the
panel then shows the strategy's P(win) exactly as the host's signal carries it.

Deterministic by choice of strategy, not by stand-ins: the put-write sells the ATM put of the next monthly
expiry whenever it holds none, so on the pinned simulated start's SPY chain its entry condition always holds,
and ``ml.min_probability = 0`` lets every finite reading through the gate. The entry skipped while the
features are being computed is what the filter does live (``when_unavailable = skip``).
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from engine.bus.commands import StartStrategy
from engine.bus.events import ChainUpdated, MLJobFinished
from engine.history.service import DEFAULT_SESSIONS, backfill_store
from engine.history.simulated import SimulatedHistorySource
from engine.ml.data import history_from_store
from engine.ml.insight import ModelInsightReady
from engine.ml.service import TrainModel
from engine.ml.signal import MLScorer
from engine.strategies.base import market_date
from engine.strategies.config import StrategyEntry
from tests.qt_fixtures import run_async, wait_for_condition
from tests.sim_start import SIM_START
from widgets.base import EventBatch
from widgets.models_panel import ModelsPanel

MODEL = "short-put-SPY"
STRATEGY = "gated_put_write"


@pytest.fixture()
def engine_strategies():
    """The ``engine`` fixture's settings hold one stopped put-write on SPY gated by :data:`MODEL`."""
    return [StrategyEntry(name="put_write", id=STRATEGY, enabled=False,
                          params={"underlying": "SPY", "ml.model": MODEL, "ml.min_probability": 0.0})]


def _signal(engine):
    [status] = [s for s in engine.strategies.statuses() if s.strategy_id == STRATEGY]
    return status.last_signal


def test_live_line_shows_the_hosts_probability_for_the_gated_strategy(qtbot, engine, sim_chain, shot) -> None:
    seen: list = []
    engine.bus.subscribe(MLJobFinished, seen.append)
    engine.bus.subscribe(ModelInsightReady, seen.append)
    # the daily rows the history service would have backfilled from the simulated market's past
    source = SimulatedHistorySource(engine.settings.simulator.model_copy(update={"seed": engine.settings.general.seed}))
    written, _series = backfill_store(engine.store, source, ["SPY", "VIX"], SIM_START, DEFAULT_SESSIONS,
                                      engine.clock.now().isoformat())
    assert written > 0

    run_async(qtbot, engine.bus.send(TrainModel(model="logistic", permutations=0, name=MODEL)), timeout=10)
    wait_for_condition(qtbot, lambda: any(isinstance(e, MLJobFinished) for e in seen), timeout=180)
    [trained] = [e for e in seen if isinstance(e, MLJobFinished)]
    assert trained.error == "", trained.error
    assert (engine.paths.models_dir / MODEL).is_dir()  # the engine's own folder, not the user's

    run_async(qtbot, engine.bus.send(StartStrategy(strategy_id=STRATEGY)), timeout=10)
    assert _signal(engine) is None

    def entered() -> bool:
        engine.bus.publish(ChainUpdated(chain=sim_chain))  # the next snapshot: the host evaluates the entry again
        sig = _signal(engine)
        return sig is not None and math.isfinite(sig.ml_probability)

    wait_for_condition(qtbot, entered, timeout=60)
    sig = _signal(engine)
    assert sig.action == "open" and 0.0 < sig.ml_probability < 1.0
    assert sig.ml_reason.startswith(f"ML filter: P(win) {sig.ml_probability:.0%} ≥ 0%")
    # the host read the engine's registry and store: the same model on the same rows gives the same number
    now = engine.clock.now()
    scorer = MLScorer(engine.paths.models_dir, horizon_days=0)
    scorer.build("SPY", now, history_from_store(engine.store, "SPY", until=market_date(now) - timedelta(days=1)))
    assert scorer.reading("SPY", MODEL, now).probability == pytest.approx(sig.ml_probability, abs=1e-12)

    panel = ModelsPanel(engine)
    qtbot.addWidget(panel)
    panel.resize(1100, 720)
    assert panel.table.rowCount() == 1 and STRATEGY in panel.reading_label.text()  # "Used by"
    wait_for_condition(qtbot, lambda: any(isinstance(e, ModelInsightReady) for e in seen), timeout=120)
    [ready] = [e for e in seen if isinstance(e, ModelInsightReady)]
    assert ready.error == "", ready.error
    panel.apply_events(EventBatch.from_events([ready]))
    expected = f"{STRATEGY}: P(win) {sig.ml_probability:.1%} (open, {sig.ml_reason})"
    text = panel.candidate_label.text()
    assert expected in text, text
    assert "no entry decided yet" not in text and "no strategy has asked" not in text
    panel.tabs.setCurrentIndex(2)  # the candidate tab, where the live line is
    shot(panel, "panel_models_live_probability")
