"""The chain panel on the live simulated market through the app's 10 Hz bridge."""

from __future__ import annotations

import pytest

from app.bridge import EventBridge
from tests.qt_fixtures import run_async, wait_for_condition
from widgets.chain_table import ChainPanel
from widgets.surface_view import SurfacePanel


@pytest.fixture()
def sim_engine(qtbot, async_cleanup, tmp_path):
    from engine.core import Engine, EngineConfig
    from tests.widgets.conftest import _settings

    eng = Engine(EngineConfig.for_directory(tmp_path, feed="simulated", seed=7, settings=_settings()))
    run_async(qtbot, eng.start(), timeout=60)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


def test_chain_streams_quotes_from_the_simulated_feed(qtbot, sim_engine, shot) -> None:
    chain = ChainPanel(sim_engine, strike_window=10)
    smile = SurfacePanel(sim_engine)
    for w in (chain, smile):
        qtbot.addWidget(w)
    chain.resize(1400, 600)
    smile.resize(1100, 520)
    bridge = EventBridge(sim_engine.bus, interval_ms=100)
    bridge.add_consumer(chain.apply_events, "chain")
    bridge.add_consumer(smile.apply_events, "smile")
    bridge.start()
    try:
        assert chain.underlying in sim_engine.feed.underlyings()
        wait_for_condition(qtbot, lambda: chain.row_count() == 21, timeout=20)
        assert chain.model.value(10, "atm")
        # the panel subscribed its window; streamed quotes then arrive as bounding-box updates
        wait_for_condition(qtbot, lambda: chain._subscribed is not None, timeout=5)
        before = chain.model.data_changed_emits
        wait_for_condition(qtbot, lambda: chain.model.data_changed_emits > before + 3, timeout=20)
        assert smile.underlying == chain.underlying  # the smile follows the chain's selection
    finally:
        bridge.stop()
    shot(chain, "chain-simulated")
