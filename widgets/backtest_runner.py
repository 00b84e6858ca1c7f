"""Backtest runner: choose a strategy, its parameters, the data and the dates; run it in a worker process.

The run is :func:`engine.backtest.worker.run_backtest_job` in a one-process ``spawn`` pool (the UI thread
only polls a progress queue on a timer, so the window stays responsive); Cancel sets a shared event the
backtest loop checks every day. The worker is started shortly after the panel is first shown and kept
between runs (:class:`BacktestWorker`), so Run costs what the CLI does: no interpreter start or imports
on the clock, and a repeated run on the same data skips loading it. Results use the layout traders know: statistics table, equity curve with
drawdown, daily P&L, P&L histogram and the trade list. Export writes the engine's CSV/JSON reports
(:func:`engine.backtest.report.export_all`) and a PNG of the results.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import plural
from widgets import engine_queries as eq
from widgets.backtest_form import BacktestFormMixin
from widgets.backtest_results import BacktestResultsMixin, compact_legs
from widgets.backtest_worker import WORKER_IDLE_S, WORKER_WARM_DELAY_MS, BacktestJob, BacktestWorker
from widgets.base import EventBatch, Panel, schedule

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)
Qt = QtCore.Qt


class BacktestPanel(BacktestFormMixin, BacktestResultsMixin, Panel):
    title: ClassVar[str] = "Backtest"
    panel_id: ClassVar[str] = "backtest"

    run_finished = QtCore.Signal(object)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.job: BacktestJob | None = None
        self.result: Any = None
        self.progress_updates = 0
        self._finished = False
        self._param_widgets: dict[str, QtWidgets.QWidget] = {}
        #: parameters the form has no field for (rules, pricing, ...) from a loaded request: they go into the run
        self._extra_params: dict[str, Any] = {}
        self._last_request: object = None
        self.worker = BacktestWorker()
        self._idle_timer = QtCore.QTimer(self)
        self._idle_timer.setSingleShot(True)
        self._idle_timer.setInterval(int(WORKER_IDLE_S * 1000))
        self._idle_timer.timeout.connect(self._stop_idle_worker)
        worker = self.worker  # the connections below must not keep the panel alive
        self.destroyed.connect(lambda *_: worker.stop())
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(lambda: worker.stop())

        defaults = eq.settings(engine).backtest
        scroll = self._build_form(defaults)
        right = self._build_results()

        split = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setSizes([scroll.minimumWidth(), 900])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self._build_params(self.strategy_box.currentText(), defaults.params
                           if defaults.strategy == self.strategy_box.currentText() else {})
        self._source_changed(0 if not defaults.data else 1)
        if defaults.data:
            self.source_box.setCurrentIndex(1)
        self.links.backtest_requested.connect(self.load_strategy)

    # ---- the worker ------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self.worker.started:
            QtCore.QTimer.singleShot(WORKER_WARM_DELAY_MS, self, self._warm_worker)

    def closeEvent(self, event: Any) -> None:
        if not (self.job is not None and self.job.running):
            self.worker.stop()
        super().closeEvent(event)

    def _warm_worker(self) -> None:
        """Start the worker (off the GUI thread) while the user is still filling the form."""
        if self.worker.started or not self.isVisible() or (self.job is not None and self.job.running):
            return
        schedule(asyncio.to_thread(self.worker.ensure_started), what="start the backtest worker")
        self._idle_timer.start()

    def _stop_idle_worker(self) -> None:
        if self.job is not None and self.job.running:
            return
        self.worker.stop()

    # ---- running ---------------------------------------------------------------------------------
    def run(self) -> None:
        if self.job is not None and self.job.running:
            return
        try:
            cfg = self.config()
        except ValueError as exc:
            self._status(str(exc), error=True)
            return
        self.last_error = ""
        self._finished = False
        self._idle_timer.stop()
        self.job = BacktestJob(cfg, self, worker=self.worker)
        self.job.progressed.connect(self._on_progress)
        self.job.finished.connect(self._on_finished)
        try:
            self.job.start()
        except Exception as exc:
            self._status(f"could not start the worker: {type(exc).__name__}: {exc}", error=True)
            self.job = None
            return
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setFormat("starting worker…")
        self._status(f"Running {cfg['strategy']} on {cfg['symbol']}…", error=False)

    def run_quick(self, years: float = 0.3) -> None:
        """A short run on the simulated market with the current strategy (selftest, demos)."""
        self.source_box.setCurrentIndex(0)
        self.use_dates.setChecked(False)
        self.years_spin.setValue(years)
        self.run()

    def is_finished(self) -> bool:
        """True when the last started run has ended (completed, cancelled or failed) or could not start."""
        return self.job is None or (not self.job.running and self._finished)

    def summary(self) -> str:
        return self.summary_label.text() if self.result is not None else self.status_label.text()

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.progress.setFormat("cancelling…")

    def _on_progress(self, fraction: float, eta_s: float, day: str, stage: str) -> None:
        self.progress_updates += 1
        self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        eta = f" · {eta_s:.0f} s left" if math.isfinite(eta_s) else ""
        self.progress.setFormat(f"{stage} {100 * fraction:.0f}%" + (f" · {day}" if day else "") + eta)

    def _on_finished(self, result: Any, error: str) -> None:
        self._finished = True
        self._idle_timer.start()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if result is None:
            cancelled = error.startswith("cancelled")
            self.progress.setFormat("cancelled" if cancelled else "failed")
            self._status(error or "the backtest failed", error=not cancelled)
            self.run_finished.emit(None)
            return
        self.show_result(result)
        if result.status == "failed":
            self.progress.setFormat("failed")
            self._status(f"Backtest failed: {result.error}", error=True)
        elif result.status == "cancelled":
            self.progress.setFormat(f"cancelled after {plural(len(result.dates), 'day')}")
            self._status("Cancelled: partial results shown", error=False)
        else:
            self.progress.setValue(1000)
            wall = time.monotonic() - self.job.started_at if self.job is not None else result.elapsed_s
            self.progress.setFormat(f"done in {wall:.1f} s")
            self._status(f"Completed {plural(len(result.dates), 'day')}, {plural(len(result.trades), 'trade')}", error=False)
        self.run_finished.emit(result)

    def _status(self, text: str, *, error: bool) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #d64541; font-weight: bold" if error else "color: gray")
        if error:
            self.report_error(text)

    def apply_events(self, batch: EventBatch) -> None:
        """Runs are driven by the panel's own worker; only the list of imported chains follows the engine."""
        from engine.bus import DataCoverageChanged

        if batch.has(DataCoverageChanged):
            self._fill_imported()
            if self.source_box.currentIndex() == 2 and not self.use_dates.isChecked():
                self._imported_changed()

    # ---- state -----------------------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        return {"strategy": self.strategy_box.currentText(), "symbol": self.symbol_edit.text(),
                "years": self.years_spin.value(), "seed": self.seed_spin.value()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("strategy"), str) and self.strategy_box.findText(state["strategy"]) >= 0:
            self.strategy_box.setCurrentText(state["strategy"])
        if isinstance(state.get("symbol"), str):
            self.symbol_edit.setText(state["symbol"])
        if isinstance(state.get("years"), int | float):
            self.years_spin.setValue(float(state["years"]))
        if isinstance(state.get("seed"), int):
            self.seed_spin.setValue(state["seed"])


__all__ = ["BacktestJob", "BacktestPanel", "compact_legs"]
