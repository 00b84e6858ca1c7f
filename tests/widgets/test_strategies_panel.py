"""The Strategies panel on a real engine hosting strategies on the pinned simulated market: the table follows the
host, actions go through the host's commands, parameters are validated before they are sent, refusals show the
host's reason, and "Backtest these parameters" runs them in the Backtest panel."""

from __future__ import annotations

import pytest
from PySide6 import QtWidgets

from engine.bus import PauseStrategy, StrategySignal
from engine.strategies.config import StrategyEntry
from tests.qt_fixtures import run_async
from widgets.strategies_panel import COLUMNS, StrategiesPanel

COL = {key: i for i, (key, _h, _w) in enumerate(COLUMNS)}


@pytest.fixture()
def hosted(qtbot, async_cleanup, tmp_path):
    """A started engine on the simulated market (seed 7, pinned start) hosting iv_rank_put_spread and put_write, and
    an iron condor whose settings entry has a parameter out of range (the host disables it)."""
    from engine.core import Engine, EngineConfig
    from engine.notify.config import NotifyConfig
    from tests.widgets.conftest import _settings

    entries = [StrategyEntry(name="iv_rank_put_spread", id="ivps", params={"underlying": "SPY"}),
               StrategyEntry(name="put_write", id="pw", params={"underlying": "SPY"}),
               StrategyEntry(name="iron_condor", id="bad", params={"short_delta": 3.0})]
    settings = _settings().model_copy(update={"strategies": entries, "notify": NotifyConfig(enabled=False)})
    eng = Engine(EngineConfig.for_directory(tmp_path, feed="simulated", seed=7, settings=settings))
    run_async(qtbot, eng.start(), timeout=60)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


@pytest.fixture()
def panel(qtbot, hosted):
    p = StrategiesPanel(hosted)
    qtbot.addWidget(p)
    p.resize(1300, 720)
    return p


def cell(panel: StrategiesPanel, sid: str, key: str) -> str:
    row = list(panel.statuses).index(sid)
    return panel.table.item(row, COL[key]).text()


def test_table_lists_each_strategy_with_its_state_and_pause_start_go_through_the_host(panel, hosted, qtbot,
                                                                                       shot) -> None:
    assert list(panel.statuses) == ["ivps", "pw", "bad"]
    assert cell(panel, "bad", "state") == "disabled" and "bad parameters for iron_condor" in cell(panel, "bad", "reason")
    assert cell(panel, "ivps", "name") == "iv_rank_put_spread" and cell(panel, "ivps", "state") == "running"
    assert cell(panel, "ivps", "mode") == "paper" and cell(panel, "ivps", "pnl_total") == "$0.00"
    # the put-write sells its first put on the first chain: its signal reaches the table with the engine's words
    qtbot.waitUntil(lambda: hosted.strategies.status("pw").last_signal is not None, timeout=30_000)
    qtbot.waitUntil(lambda: cell(panel, "pw", "signal").startswith("open pw-"), timeout=5_000)

    def shows_the_latest_signal() -> bool:  # a second signal can follow before the table's next refresh
        sig: StrategySignal | None = hosted.strategies.status("pw").last_signal
        return (sig is not None and cell(panel, "pw", "signal") == f"{sig.action} {sig.tag}"
                and sig.reason in cell(panel, "pw", "reason"))

    qtbot.waitUntil(shows_the_latest_signal, timeout=5_000)

    panel.select("ivps")
    assert not panel.start_button.isEnabled() and panel.pause_button.isEnabled()
    panel.pause_button.click()
    qtbot.waitUntil(lambda: cell(panel, "ivps", "state") == "paused", timeout=5_000)
    assert hosted.strategies.status("ivps").state == "paused"
    assert panel.start_button.isEnabled() and not panel.pause_button.isEnabled()
    panel.start_button.click()
    qtbot.waitUntil(lambda: cell(panel, "ivps", "state") == "running", timeout=5_000)
    assert hosted.strategies.status("ivps").state == "running"

    # the strategy's own log, newest first, stamped with the engine's (New York) time
    qtbot.waitUntil(lambda: panel.log_list.count() >= 3, timeout=5_000)
    newest = panel.log_list.item(0).text()
    assert "paused → running: started by user" in newest and (" EST " in newest or " EDT " in newest)
    assert "running → paused: paused from the Strategies panel" in panel.log_list.item(1).text()
    shot(panel, "panel_strategies")


def test_a_refused_command_shows_the_host_reason_not_a_traceback(panel, hosted, qtbot) -> None:
    panel.select("ivps")
    run_async(qtbot, hosted.bus.send(PauseStrategy(strategy_id="ivps")))
    panel.refresh()
    panel.pause_selected()  # the button is off for a paused strategy; the host still has the last word
    qtbot.waitUntil(lambda: "is paused, not running" in panel.message.text(), timeout=5_000)
    assert panel.message.text() == "strategy ivps is paused, not running"
    assert panel.last_error == panel.message.text()
    panel.stop_button.click()  # no working orders: nothing to ask
    qtbot.waitUntil(lambda: cell(panel, "ivps", "state") == "stopped", timeout=5_000)
    assert hosted.strategies.status("ivps").state == "stopped" and panel.stop_box is None


def test_a_bad_parameter_is_marked_at_its_field_and_nothing_is_sent(panel, hosted, qtbot) -> None:
    panel.select("ivps")
    before = hosted.strategies.status("ivps").params
    short = panel.form.fields["short_delta"].editor
    short.setText("3")
    short.textEdited.emit("3")
    error = panel.form.fields["short_delta"].error
    assert error.isVisibleTo(panel) and "less than 1" in error.text()
    stop = panel.form.fields["rules.stop_multiple"].editor
    stop.setText("-1")
    panel.apply_button.click()
    assert "greater than 0" in panel.form.fields["rules.stop_multiple"].error.text()
    assert panel.message.text() == "Not sent: 2 parameters to fix"
    qtbot.wait(200)  # a command, had one been sent, would have been handled by now
    assert hosted.strategies.status("ivps").params == before
    assert not [a for a in hosted.store.audit.list() if a["action"] == "strategy_params"]


def test_a_valid_edit_with_nested_rules_reaches_the_strategy(panel, hosted, qtbot) -> None:
    panel.select("ivps")
    panel.form.fields["short_delta"].editor.setText("0.2")
    panel.form.fields["rules.dte_exit"].editor.setText("none")
    panel.form.fields["pricing.step"].editor.setText("0.25")
    panel.apply_button.click()
    qtbot.waitUntil(lambda: "parameters applied" in panel.message.text(), timeout=5_000)
    params = hosted.strategies.hosted["ivps"].strategy.params
    assert params.short_delta == 0.2 and params.rules.dte_exit is None and params.pricing.step == 0.25
    assert panel.form.fields["rules.dte_exit"].editor.text() == "none"  # the form shows what the host runs
    assert panel.form.fields["rules.stop_multiple"].editor.text() == "2.0"  # untouched fields kept


def test_live_without_the_right_account_is_refused_with_the_reason(panel, hosted, qtbot) -> None:
    panel.select("ivps")
    panel.live_button.click()
    dialog = panel.live_dialog
    assert dialog is not None and dialog.isVisible()
    assert "No live broker is connected" in dialog.findChild(QtWidgets.QLabel).text()
    assert not dialog.confirm_button.isEnabled()  # nothing typed, nothing to confirm
    dialog.account_edit.setText("5WT12345")
    dialog.confirm_button.click()
    qtbot.waitUntil(lambda: "no live broker is connected" in panel.message.text(), timeout=5_000)
    assert hosted.strategies.status("ivps").mode == "paper" and cell(panel, "ivps", "mode") == "paper"
    refused = hosted.store.audit.list("strategy_mode_refused")
    assert [r["detail"]["strategy_id"] for r in refused] == ["ivps"]


def test_backtest_these_parameters_runs_them_in_the_backtest_panel(panel, hosted, qtbot) -> None:
    from widgets.backtest_runner import BacktestPanel

    bt = BacktestPanel(hosted)
    qtbot.addWidget(bt)
    bt.years_spin.setValue(0.3)
    panel.select("ivps")
    panel.form.fields["rules.dte_exit"].editor.setText("10")
    panel.form.fields["width"].editor.setText("10")
    with qtbot.waitSignal(bt.run_finished, timeout=120_000) as finished:
        panel.backtest_button.click()
        assert bt.job is not None and bt.strategy_box.currentText() == "iv_rank_put_spread"
        sent = bt.job.config["params"]
        assert sent["rules"]["dte_exit"] == 10 and sent["width"] == 10.0 and sent["underlying"] == "SPY"
    result = finished.args[0]
    assert result is not None and result.status == "completed", (bt.status_label.text(), bt.job.error,
                                                                  getattr(result, "error", None))
    assert result.config["params"]["rules"]["dte_exit"] == 10
