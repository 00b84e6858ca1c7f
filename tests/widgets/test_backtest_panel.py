"""Backtest runner: a real backtest in a worker process with progress, cancel, results and exports."""

from __future__ import annotations

import csv

import pytest
from PySide6 import QtCore

from widgets.backtest_runner import BacktestPanel


@pytest.fixture()
def panel(qtbot, engine):
    p = BacktestPanel(engine)
    qtbot.addWidget(p)
    p.resize(1280, 720)
    return p


def test_run_in_worker_shows_progress_and_results_and_exports(panel, qtbot, tmp_path, shot) -> None:
    panel.strategy_box.setCurrentText("iv_rank_put_spread")
    panel.seed_spin.setValue(7)
    # the GUI thread keeps serving its timers while the backtest runs in the worker process
    ticks_while_running: list[bool] = []
    timer = QtCore.QTimer(panel)
    timer.timeout.connect(lambda: ticks_while_running.append(panel.job is not None and panel.job.running))
    timer.start(20)
    panel.run_quick(0.4)
    assert not panel.is_finished()
    assert not panel.run_button.isEnabled() and panel.cancel_button.isEnabled()
    with qtbot.waitSignal(panel.run_finished, timeout=90_000) as sig:
        pass
    timer.stop()
    result = sig.args[0]
    assert result is not None and result.status == "completed", panel.status_label.text()
    assert panel.is_finished() and not panel.last_error and "iv_rank_put_spread" in panel.summary()
    assert ticks_while_running.count(True) >= 2  # the loop was never blocked for the whole run
    assert panel.progress_updates >= 1 and panel.progress.value() == 1000
    assert panel.stats_model.rowCount() > 10
    x, y = panel.equity_curve.getData()
    assert len(x) == len(result.dates) and y[0] == pytest.approx(result.equity[0])
    assert "iv_rank_put_spread" in panel.summary_label.text()
    paths = panel.export_csv(tmp_path / "export")
    with open(paths["equity"]) as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == len(result.dates) + 1
    png = panel.export_png(tmp_path / "bt.png")
    assert png.stat().st_size > 10_000
    shot(panel, "backtest")


def test_cancel_stops_the_worker_promptly(panel, qtbot) -> None:
    panel.years_spin.setValue(4.0)
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.job is not None and panel.job.running, timeout=20_000)
    # a 4-year run takes far longer than the wait's bound: finishing within it means the cancel stopped it
    with qtbot.waitSignal(panel.run_finished, timeout=20_000) as sig:
        panel.cancel_button.click()
    result = sig.args[0]
    assert result is None or result.status == "cancelled"
    assert "cancelled" in panel.progress.format()
    assert panel.run_button.isEnabled() and not panel.job.running


def test_bad_form_input_is_named(panel) -> None:
    panel.source_box.setCurrentIndex(1)
    panel.file_edit.setText("")
    panel.run_button.click()
    assert "choose a chain file" in panel.status_label.text()
    panel.source_box.setCurrentIndex(0)
    panel.use_dates.setChecked(True)
    from PySide6.QtCore import QDate

    panel.start_edit.setDate(QDate(2024, 5, 1))
    panel.end_edit.setDate(QDate(2024, 1, 1))
    panel.run_button.click()
    assert "must be before end date" in panel.status_label.text()
    assert panel.job is None


def test_strategy_parameters_come_from_the_strategy_model(panel) -> None:
    panel.strategy_box.setCurrentText("iron_condor")
    assert "short_delta" in panel._param_widgets
    panel._param_widgets["short_delta"].setValue(0.2)
    assert panel.config()["params"]["short_delta"] == pytest.approx(0.2)


def test_daily_pnl_bars_cover_the_whole_run(panel) -> None:
    """Regression: the half-width daily P&L plot must show every day, not the slice under the equity curve."""
    import numpy as np

    from engine.backtest.config import BacktestConfig
    from engine.backtest.metrics import compute_metrics
    from engine.backtest.runner import BacktestResult

    dates = np.arange(np.datetime64("2026-09-01"), np.datetime64("2026-12-10"))
    equity = 100_000 + np.cumsum(np.where(np.arange(len(dates)) % 7 == 0, 25.0, -3.0))
    daily = np.diff(equity, prepend=equity[0])
    result = BacktestResult(
        run_id="r", strategy="put_write", params={}, config=BacktestConfig().model_dump(mode="json"),
        status="completed", dates=dates, equity=equity, cash=equity, drawdown=np.minimum(0, equity / np.maximum.accumulate(equity) - 1),
        daily_pnl=daily, greeks={}, regime=np.array([], dtype=object), iv_rank=np.array([]), trades=[], orders=[],
        metrics=compute_metrics(equity), fees=__import__("decimal").Decimal(0), elapsed_s=0.1)
    panel.show_result(result)
    panel.show()
    from PySide6.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
    (x0, x1), _ = panel.daily_plot.getPlotItem().getViewBox().viewRange()
    xs = panel.daily_bars.opts["x"]
    assert x0 <= xs.min() and xs.max() <= x1


def test_form_defaults_follow_the_simulated_market(panel) -> None:
    from engine.backtest.sources import SIMULATED_END, simulated_start

    assert panel.rate_spin.value() == pytest.approx(4.0)  # the simulated market's rate and SPY dividend
    assert panel.div_spin.value() == pytest.approx(1.2)
    years = panel.years_spin.value()
    assert panel.end_edit.date().toPython() == SIMULATED_END  # not today: the history ends there
    assert panel.start_edit.date().toPython() == simulated_start(years)
    assert panel.end_edit.maximumDate().toPython() == SIMULATED_END
    cfg = panel.config()
    assert cfg["rate"] == pytest.approx(0.04) and cfg["dividend_yield"] == pytest.approx(0.012)


def test_dates_and_history_length_agree(panel) -> None:
    from datetime import date

    from engine.backtest.sources import SIMULATED_END, simulated_start

    panel.years_spin.setValue(0.3)
    assert panel.start_edit.date().toPython() == simulated_start(0.3)
    panel.use_dates.setChecked(True)
    panel.start_edit.setDate(date(2021, 1, 4))  # five years before the history's end
    assert panel.years_spin.value() >= (SIMULATED_END - date(2021, 1, 4)).days / 365.25
    cfg = panel.config()
    assert cfg["start"] == "2021-01-04" and cfg["end"] == SIMULATED_END.isoformat()
    assert simulated_start(cfg["years"]) <= date(2021, 1, 4)


def test_trade_legs_read_in_full_not_cut_to_the_underlying() -> None:
    from widgets.backtest_runner import compact_legs

    assert compact_legs("-1 SPY240621P00500000 / +1 SPY240621P00495000") == "-1 21Jun24 500P  +1 21Jun24 495P"
    assert compact_legs("+100 SPY") == "+100 SPY"  # shares (no OCC symbol) stay as they are


def test_empty_plots_show_no_tick_values_until_a_run(panel) -> None:
    for plot in (panel.equity_plot, panel.dd_plot, panel.daily_plot, panel.hist_plot):
        for name in ("left", "bottom"):
            assert plot.getPlotItem().getAxis(name).style["showValues"] is False  # no "00.250" on empty plots
