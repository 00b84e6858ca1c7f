"""The Backtest panel's worker: started ahead of the first run, reused between runs, stopped by its owner."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtWidgets

import widgets.backtest_runner as runner
from widgets.backtest_runner import BacktestPanel


@pytest.fixture()
def panel(qtbot, engine, monkeypatch):
    monkeypatch.setattr(runner, "WORKER_WARM_DELAY_MS", 50)
    p = BacktestPanel(engine)
    qtbot.addWidget(p)
    p.resize(1000, 640)
    yield p
    p.worker.stop(wait=True)


def _run(panel, qtbot, years: float = 0.3):
    with qtbot.waitSignal(panel.run_finished, timeout=90_000) as sig:
        panel.run_quick(years)
    result = sig.args[0]
    assert result is not None and result.status == "completed", panel.status_label.text()
    return result


def test_showing_the_panel_starts_the_worker_before_any_run(panel, qtbot):
    assert not panel.worker.started
    panel.show()
    qtbot.waitUntil(lambda: panel.worker.started, timeout=10_000)
    assert panel.worker.starts == 1 and panel.job is None


def test_runs_reuse_one_worker_and_give_the_same_result(panel, qtbot):
    first = _run(panel, qtbot)
    assert panel.worker.started  # kept after the run
    second = _run(panel, qtbot)
    assert panel.worker.starts == 1
    np.testing.assert_array_equal(first.equity, second.equity)
    assert [o["tag"] for o in first.orders] == [o["tag"] for o in second.orders]


def test_idle_worker_is_stopped_and_a_later_run_starts_a_new_one(panel, qtbot):
    panel._idle_timer.setInterval(100)
    _run(panel, qtbot)
    qtbot.waitUntil(lambda: not panel.worker.started, timeout=10_000)
    _run(panel, qtbot)
    assert panel.worker.starts == 2


def test_cancelled_run_that_had_to_be_terminated_leaves_a_usable_panel(panel, qtbot):
    panel.years_spin.setValue(4.0)
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.worker.started, timeout=10_000)
    with qtbot.waitSignal(panel.run_finished, timeout=20_000):
        panel.job.cancel(grace_s=0.0)  # no grace: the worker process is killed
    assert not panel.worker.started
    _run(panel, qtbot)
    assert panel.worker.starts == 2


def test_destroying_the_panel_stops_its_worker(qtbot, engine):
    p = BacktestPanel(engine)
    p.worker.ensure_started()
    worker = p.worker
    p.deleteLater()
    qtbot.waitUntil(lambda: not worker.started, timeout=5_000)
    QtWidgets.QApplication.processEvents()
