"""Data panel and the Backtest panel's Imported data, on a real Engine whose data folder holds imported chains."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from tests.qt_fixtures import run_async


@pytest.fixture(scope="module")
def chain_frame() -> pd.DataFrame:
    """Six weeks of simulated SPY chains in the Cboe DataShop layout."""
    from engine.backtest.sources import simulated_history
    from tests.chainstore.test_import import _cboe_frame

    return _cboe_frame(simulated_history("SPY", 0.12, 11, use_cache=False))


@pytest.fixture()
def stocked(qtbot, async_cleanup, tmp_path, chain_frame):
    """A started engine (no feed) whose data folder has SPY chains imported and 20 days of SPY history
    from a file, as ``optiondesk data import`` and ``optiondesk history import`` leave them."""
    from engine.chainstore.store import ChainStore
    from engine.core import Engine, EngineConfig
    from engine.history.importer import import_files
    from tests.widgets.conftest import _settings

    vendor = tmp_path / "UnderlyingOptionsEODCalcs_SPY.csv"
    chain_frame.to_csv(vendor, index=False)
    ChainStore(tmp_path / "home" / "data" / "chains").import_file(vendor, imported_at="2026-03-02T15:00:00+00:00")
    eng = Engine(EngineConfig.for_directory(tmp_path / "home", feed="none", settings=_settings()))
    run_async(qtbot, eng.start(), timeout=30)
    days = sorted(chain_frame["quote_date"].unique())[:20]
    daily = tmp_path / "spy_daily.csv"
    pd.DataFrame({"date": days, "close": np.linspace(450, 470, len(days)),
                  "atm_iv": np.linspace(0.15, 0.2, len(days))}).to_csv(daily, index=False)
    import_files(eng.store, [daily], symbol="SPY", at="2026-03-02T15:00:00+00:00")
    run_async(qtbot, eng.data_service.refresh(), timeout=30)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


def _panel(qtbot, engine):
    from widgets.data_panel import DataPanel

    panel = DataPanel(engine)
    qtbot.addWidget(panel)
    panel.resize(1100, 640)
    return panel


def _feed(qtbot, engine, panel, done):
    """Pump bus events into the panel the way the app's bridge does (coalesced batches) until ``done()``."""
    from engine.bus.messages import Event
    from widgets.base import EventAccumulator

    acc = EventAccumulator()
    sub = engine.bus.subscribe(Event, acc.add)
    try:
        def step() -> bool:
            panel.apply_events(acc.take())
            return bool(done())

        qtbot.waitUntil(step, timeout=60_000)
    finally:
        sub.cancel()


def test_panel_when_data_is_stored_then_calendar_sources_and_ranges_show_it(qtbot, stocked, chain_frame, shot):
    panel = _panel(qtbot, stocked)
    assert panel.symbol_box.currentText() == "SPY"
    tracks = {t.label: t for t in panel.tracks()}
    assert set(tracks) == {"Daily bars", "ATM IV", "Chains SPY"}
    per_day = chain_frame.groupby("quote_date").size()
    chains = tracks["Chains SPY"]
    assert {d.isoformat(): int(v) for d, v in chains.values.items()} == per_day.to_dict()
    assert len(tracks["Daily bars"].values) == 20
    # a day with chains but no history is a coloured chain cell and a grey history cell
    late = date.fromisoformat(per_day.index[-1])
    cal = panel.calendar
    assert cal.colour_of(chains, late).alpha() > 200
    assert cal.colour_of(tracks["ATM IV"], late).alpha() < 100
    path = shot(panel, "data_panel")
    # the cell of that day is where the calendar says (hover finds it again)
    rect = cal.cell_rect(late, 2)
    assert rect is not None and cal.cell_at(rect.center()) == (late, 2)
    assert "Chains SPY: " in cal.describe(late) and "ATM IV: missing" in cal.describe(late)
    rows = panel.source_rows()
    assert ("Bars & ATM IV", "file:spy_daily.csv") == rows[0][:2]
    assert any("UnderlyingOptionsEODCalcs_SPY.csv (auto)" == r[1] for r in rows)
    assert any("EST" in r[3] or "EDT" in r[3] for r in rows)  # import time in market time
    assert panel.root_box.currentText() == "SPY"
    assert panel.from_edit.date().toPython() == date.fromisoformat(per_day.index[0])
    assert path.exists()


def test_panel_when_a_file_is_imported_then_progress_finish_and_the_new_root_appear(qtbot, stocked, tmp_path):
    panel = _panel(qtbot, stocked)
    stocked.data_service.chunk_rows = 1
    text = (" [QUOTE_DATE], [UNDERLYING_LAST], [EXPIRE_DATE], [C_BID], [C_ASK], [C_IV], [STRIKE], [P_BID], [P_ASK],"
            " [P_IV]\n" + "".join(f" 2022-01-{d:02d}, 477.7, 2022-02-18, 8.0, 8.2, 0.16, {k}, 6.9, 7.0, 0.17\n"
                                 for d in (3, 4, 5) for k in (470, 475, 480)))
    src = tmp_path / "qqq_eod_202201.txt"
    src.write_text(text)
    panel.import_files([src], "optionsdx", "qqq")
    qtbot.waitUntil(lambda: panel.job_id is not None, timeout=10_000)
    assert not panel.import_button.isEnabled() and panel.cancel_button.isEnabled()
    _feed(qtbot, stocked, panel, lambda: panel.last_finished is not None)
    assert not panel.last_finished.error
    assert panel.symbol_box.currentText() == "QQQ" and panel.import_button.isEnabled()
    assert [t.label for t in panel.tracks()] == ["Chains QQQ"]
    assert {d.day: int(v) for d, v in panel.tracks()[0].values.items()} == {3: 6, 4: 6, 5: 6}
    assert "18 stored" in panel.import_status.text()
    again = _panel(qtbot, stocked)  # the saved layout brings the symbol back
    again.restore_panel_state({"symbol": "SPY"})
    assert again.symbol_box.currentText() == "SPY"
    again.restore_panel_state(panel.panel_state())
    assert again.symbol_box.currentText() == "QQQ"
    # a bad file: the error is shown next to the import, nothing changes
    bad = tmp_path / "odd.csv"
    bad.write_text("a,b\n1,2\n")
    panel.last_finished = None
    panel.import_files([bad])
    _feed(qtbot, stocked, panel, lambda: panel.last_finished is not None)
    assert "unrecognised layout" in panel.import_status.text() and panel.progress.format() == "failed"


def test_panel_when_delete_is_confirmed_then_the_range_goes(qtbot, stocked, chain_frame):
    from PySide6 import QtCore, QtWidgets

    panel = _panel(qtbot, stocked)
    days = sorted(chain_frame["quote_date"].unique())
    panel.from_edit.setDate(QtCore.QDate.fromString(days[10], "yyyy-MM-dd"))
    panel.request_delete()
    box = panel.confirm_box
    assert box is not None and "SPY" in box.text() and box.isVisible()
    assert stocked.data_service.coverage().root("SPY").days == len(days)  # nothing before the answer
    box.button(QtWidgets.QMessageBox.StandardButton.Cancel).click()
    assert stocked.data_service.coverage().root("SPY").days == len(days)
    panel.request_delete()
    panel.confirm_box.button(QtWidgets.QMessageBox.StandardButton.Yes).click()
    # the coverage event and the command's result arrive separately (either first): wait for both
    _feed(qtbot, stocked, panel,
          lambda: len(panel.tracks()[-1].values) == 10 and "Deleted" in panel.import_status.text())
    assert sorted(d.isoformat() for d in panel.tracks()[-1].values) == days[:10]
    assert "Deleted" in panel.import_status.text()


def test_backtest_panel_when_chains_are_imported_then_lists_them_and_runs_on_those_days(qtbot, stocked, chain_frame,
                                                                                         shot):
    from widgets.backtest_runner import BacktestPanel

    panel = BacktestPanel(stocked)
    qtbot.addWidget(panel)
    days = sorted(chain_frame["quote_date"].unique())
    roots = [panel.imported_box.itemData(i) for i in range(panel.imported_box.count())]
    assert roots == ["SPY"]
    assert days[0] in panel.imported_box.itemText(0) and days[-1] in panel.imported_box.itemText(0)
    panel.choose_imported("SPY")
    cfg = panel.config()
    assert cfg["source"] == "imported" and cfg["symbol"] == "SPY"
    assert (cfg["start"], cfg["end"]) == (days[0], days[-1])
    panel.start_edit.setDate(panel.start_edit.date().addDays(7))
    start = panel.start_edit.date().toPython().isoformat()
    panel.params()  # the strategy's own parameters stay as they are
    with qtbot.waitSignal(panel.run_finished, timeout=120_000) as sig:
        panel.run()
    result = sig.args[0]
    assert result is not None and result.status == "completed", panel.status_label.text()
    got = [str(d)[:10] for d in result.dates]
    assert got == [d for d in days if d >= start]
    panel.resize(1400, 800)
    shot(panel, "backtest_imported")
    # back to the simulated market: today's behaviour
    panel.source_box.setCurrentIndex(0)
    cfg = panel.config()
    assert cfg["source"] != "imported" and cfg["data"] is None and cfg["symbol"] == "SPY"
