"""The watchlist's "add symbol" field with a broker connected: completions from the broker's symbol search
(``SearchSymbols`` on the loopback tastytrade), and the next-earnings column from its market metrics."""

from __future__ import annotations

from datetime import date

import pytest
from PySide6 import QtCore

from engine.watchlist import COLUMN_KEYS
from tests.qt_fixtures import run_async, wait_for_condition
from widgets import engine_queries
from widgets.watchlist import WatchlistPanel

Qt = QtCore.Qt


@pytest.fixture()
def tt_engine(qtbot, async_cleanup, tmp_path):
    from engine.brokers.config import BrokersConfig, TastytradeConfig
    from engine.core import Engine, EngineConfig
    from engine.credentials import CredentialStore
    from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
    from tests.widgets.conftest import _settings

    fake = FakeTastytrade()
    fake.symbols.earnings = {"SPY": date(2099, 1, 15)}
    run_async(qtbot, fake.start())
    brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                        call_timeout_s=3))
    eng = Engine(EngineConfig.for_directory(tmp_path, feed="simulated", seed=7,
                                            settings=_settings().model_copy(update={"brokers": brokers})))
    run_async(qtbot, eng.start(), timeout=60)
    creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                               "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
    assert not engine_queries.broker_symbol_search(eng)  # the simulated market lists its own
    run_async(qtbot, eng.connect_broker("tastytrade", credentials=creds), timeout=30)
    yield eng, fake
    run_async(qtbot, eng.disconnect_broker("tastytrade"), timeout=30)
    run_async(qtbot, eng.stop(), timeout=30)
    run_async(qtbot, fake.stop())


def test_add_symbol_when_broker_connected_then_completes_from_its_search_and_shows_earnings(qtbot, tt_engine,
                                                                                           shot) -> None:
    eng, fake = tt_engine
    assert engine_queries.broker_symbol_search(eng)
    panel = WatchlistPanel(eng)
    qtbot.addWidget(panel)
    panel.resize(1100, 320)
    panel.show()
    panel.entry.setFocus()
    qtbot.keyClicks(panel.entry, "am")
    wait_for_condition(qtbot, lambda: "AMZN" in panel._completer_model.stringList(), timeout=10)
    assert ("GET", "/symbols/search/AM", None) in fake.requests
    assert panel.add_symbol("AMZN") and "AMZN" in panel.symbols
    col = COLUMN_KEYS.index("earnings")
    panel.lists[panel.current] = ["SPY", "AMZN"]

    def spy_earnings() -> str:
        panel.refresh(force=True)
        row = next(i for i, r in enumerate(panel.model.rows) if r.symbol == "SPY")
        return str(panel.model.data(panel.model.index(row, col)))

    wait_for_condition(qtbot, lambda: spy_earnings() == "2099-01-15", timeout=10)
    shot(panel, "panel_watchlist_broker_search")
