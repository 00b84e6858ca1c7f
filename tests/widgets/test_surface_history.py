"""The Smile panel's IV-rank line on a brand-new data folder once the history is backfilled: a rank, not
"insufficient history"."""

from __future__ import annotations

from engine.history import SimulatedHistorySource
from engine.history.service import backfill_store
from engine.market.config import SimulatorConfig
from tests.qt_fixtures import run_async
from tests.sim_start import SIM_START
from widgets.base import EventBatch
from widgets.surface_view import SurfacePanel


def test_smile_panel_shows_the_rank_from_backfilled_history(qtbot, engine, sim_chain) -> None:
    panel = SurfacePanel(engine)
    qtbot.addWidget(panel)
    panel.resize(1100, 560)
    panel.select_underlying("SPY")
    before = run_async(qtbot, engine.surfaces.refit(sim_chain), timeout=60)
    assert "insufficient history: 0 of 60" in before.iv_rank.message  # a new folder knows no days
    source = SimulatedHistorySource(SimulatorConfig(seed=7), anchor={"SPY": float(sim_chain.spot)})
    written, _ = backfill_store(engine.store, source, ["SPY"], SIM_START, 300, "test")
    assert written == 300
    engine.surfaces.reload_history(("SPY",))
    ev = run_async(qtbot, engine.surfaces.refit(sim_chain), timeout=60)
    panel.apply_events(EventBatch.from_events([ev]))
    qtbot.waitUntil(lambda: panel.update_event is ev, timeout=3000)
    text = panel.rank_label.text()
    assert ev.iv_rank.ok and "rank" in text and "(252d)" in text and "RV " in text, text
    assert "insufficient" not in text
