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
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import money, plural
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel, qt_alive, schedule
from widgets.plots import LOSS, PROFIT, SERIES, MoneyAxis, new_plot
from widgets.table_model import Column, ColumnTableModel, LiveTableView
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)
Qt = QtCore.Qt

#: the worker starts this long after the panel is first shown: the panel is visible in the default layout,
#: and the spawn and imports (~1.5 s of CPU) must not compete with the window's start-up on a 2-core machine
WORKER_WARM_DELAY_MS = 5000
#: a worker without a run for this long is stopped (it holds the last history: ~0.2 GB of arrays for 5 years)
WORKER_IDLE_S = 300.0

STAT_ROWS: list[tuple[str, str, str]] = [
    ("total_pnl", "Total P&L", "money"), ("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"),
    ("ann_vol", "Volatility (ann.)", "pct"), ("sharpe", "Sharpe", "num"), ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"), ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_days", "Max DD duration (days)", "int"), ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"), ("avg_win", "Avg win", "money"),
    ("avg_loss", "Avg loss", "money"), ("expectancy", "Expectancy / trade", "money"),
    ("exposure", "Time in market", "pct"), ("premium_capture", "Premium captured", "pct"),
    ("fees", "Fees", "money"), ("avg_days_held", "Avg days held", "num"), ("start_equity", "Start equity", "money"),
    ("end_equity", "End equity", "money"),
]


def _fmt_stat(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "money":
        return money(value)
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,d}"
    return f"{value:,.2f}"


def _simulated_rates(symbol: str) -> tuple[float, float]:
    """(rate, dividend yield) the simulated history is generated with (``engine.backtest.sources`` uses the
    simulator's default settings), so a backtest on it prices options as its market did."""
    from engine.market.config import SimulatorConfig

    sim = SimulatorConfig()
    q = next((float(u.dividend_yield) for u in sim.universe if u.symbol == symbol.upper()), 0.0)
    return float(sim.risk_free_rate), q


class BacktestWorker:
    """The panel's worker process (and the multiprocessing manager that carries its progress queue and
    cancel event), started ahead of the first run and kept between runs.

    Why: a fresh spawn worker pays the interpreter start and ~1 s of imports before the run begins, and
    a warm worker keeps the last history it loaded (``run_backtest_job(reuse_history=True)``), so a run
    from the panel costs what the CLI's does, and a second run on the same data less. Its owner (the
    panel) stops it after ``idle_s`` without a run, when the panel is destroyed and when the application
    quits. Thread-safe: :meth:`ensure_started` may run on a helper thread while the GUI thread reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._manager: Any = None
        self.starts = 0  # how many worker processes were started (tests, diagnostics)

    @property
    def started(self) -> bool:
        return self._pool is not None

    def ensure_started(self) -> None:
        """Start the worker process and begin its imports, unless it is running (blocks ~0.1-0.3 s while
        the manager process starts: call it off the GUI thread when nothing waits for it)."""
        from engine.backtest.worker import warm_worker
        from engine.process_pools import new_manager, new_process_pool

        with self._lock:
            if self._pool is not None:
                return
            manager = new_manager()
            pool = new_process_pool(1)
            pool.submit(warm_worker)  # queued before any run: the imports happen now, not on Run
            self.starts += 1
            self._manager, self._pool = manager, pool

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args, **kwargs)`` in the worker (started if needed); returns an asyncio future."""
        import functools

        self.ensure_started()
        return loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def channel(self) -> tuple[Any, Any]:
        """A fresh (progress queue, cancel event) pair for one run, shared with the worker."""
        self.ensure_started()
        return self._manager.Queue(), self._manager.Event()

    def terminate(self) -> int:
        """Kill the worker process (a run that ignores cancel); the next run starts a new one."""
        with self._lock:
            pool = self._pool
        procs = [p for p in getattr(pool, "_processes", {}).values() if p.is_alive()] if pool else []
        for p in procs:
            p.terminate()
        self.stop()
        return len(procs)

    def stop(self, wait: bool = False) -> None:
        """Stop the worker and the manager (bounded waits) on a helper thread, or here when ``wait``."""
        with self._lock:
            pool, manager = self._pool, self._manager
            self._pool = self._manager = None
        if pool is None and manager is None:
            return

        from engine.process_pools import shutdown_pool

        def stop() -> None:
            if pool is not None:
                shutdown_pool(pool, timeout_s=5.0)
            if manager is not None:
                try:
                    manager.shutdown()
                except Exception as exc:
                    log.debug("manager shutdown: %s", exc)

        if wait:
            stop()
        else:
            threading.Thread(target=stop, name="backtest-worker-shutdown", daemon=False).start()


class BacktestJob(QtCore.QObject):
    """One backtest in a worker process. Emits ``progressed(fraction, eta_s, day, stage)`` and ``finished``.

    Must be started on a running asyncio (qasync) loop. ``cancel()`` is cooperative; the result then has
    ``status == "cancelled"``. Runs on the given :class:`BacktestWorker` (kept warm by its owner), or on
    one of its own that it stops when the run ends.
    """

    progressed = QtCore.Signal(float, float, str, str)
    finished = QtCore.Signal(object, str)  # BacktestResult or None, error message

    def __init__(self, config: dict[str, Any], parent: QtCore.QObject | None = None,
                 worker: BacktestWorker | None = None) -> None:
        super().__init__(parent)
        self.config = config
        self.result: Any = None
        self.error = ""
        self.started_at = math.nan
        self.cancel_requested = False
        self._owns_worker = worker is None
        self._worker = worker if worker is not None else BacktestWorker()
        self._queue: Any = None
        self._cancel: Any = None
        self._future: asyncio.Future[Any] | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    def start(self) -> None:
        from engine.backtest.worker import run_backtest_job

        loop = asyncio.get_event_loop()
        self.started_at = time.monotonic()
        self._queue, self._cancel = self._worker.channel()
        self._future = self._worker.submit(loop, run_backtest_job, self.config, self._queue, self._cancel,
                                           reuse_history=True)
        self._future.add_done_callback(self._done)
        self._timer.start()

    def cancel(self, grace_s: float = 2.0) -> None:
        """Ask the loop to stop; if the worker has not returned after ``grace_s`` (e.g. still generating the
        simulated history, which has no cancel points), terminate the worker process."""
        if not self.running:
            return
        self.cancel_requested = True
        if self._cancel is not None:
            try:
                self._cancel.set()
            except Exception as exc:  # the manager died with the worker
                log.warning("could not signal cancel: %s", exc)
        QtCore.QTimer.singleShot(int(grace_s * 1000), self._terminate_if_running)

    def _terminate_if_running(self) -> None:
        if not self.running:
            return
        n = self._worker.terminate()
        log.info("backtest worker terminated after cancel (%d process(es))", n)

    def _poll(self) -> None:
        q = self._queue
        if q is None:
            return
        latest = None
        try:
            while not q.empty():
                latest = q.get_nowait()
        except Exception:  # queue closed while shutting down
            return
        if latest is not None:
            self.progressed.emit(float(latest.fraction), float(latest.eta_s), latest.day, latest.stage)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        # retrieve the outcome first: when the window closes mid-run the worker is terminated
        # (BrokenProcessPool) and this job may already be deleted; an exception nobody retrieved is
        # logged as "Task exception was never retrieved" at shutdown
        exc = None if fut.cancelled() else fut.exception()
        if not qt_alive(self):
            self._worker.stop()
            return
        self._poll()
        self._timer.stop()
        if fut.cancelled():
            self.error = "cancelled"
        elif exc is not None:
            self.error = ("cancelled: worker stopped" if self.cancel_requested
                          else f"worker failed: {type(exc).__name__}: {exc}")
            self._worker.stop()  # a broken pool cannot run again: the next run starts a new worker
        else:
            self.result = fut.result()
            self.error = getattr(self.result, "error", "") or ""
        self._queue = self._cancel = None
        if self._owns_worker:
            self._worker.stop()
        self.finished.emit(self.result, self.error)


class BacktestPanel(Panel):
    title: ClassVar[str] = "Backtest"
    panel_id: ClassVar[str] = "backtest"

    run_finished = QtCore.Signal(object)

    TRADE_COLUMNS: ClassVar[list[Column]] = [
        Column("no", "#", "{:d}", width=36),
        Column("opened", "Opened", align="left", width=214),
        Column("closed", "Closed", align="left", width=214),
        Column("legs", "Legs", align="left", width=300),
        Column("qty", "Qty", "{:d}", width=40),
        Column("entry", "Entry", align="right", width=64),
        Column("exit", "Exit", align="right", width=64),
        Column("pnl", "Net P&L", "{:+,.2f}", width=84, signed=True),
        Column("reason", "Exit reason", align="left", width=110),
        Column("regime", "Regime", align="left", width=90),
    ]

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

        # ---- form
        defaults = eq.settings(engine).backtest
        self.strategy_box = QtWidgets.QComboBox()
        for name in self._strategy_names():
            self.strategy_box.addItem(name)
        if self.strategy_box.findText(defaults.strategy) >= 0:
            self.strategy_box.setCurrentText(defaults.strategy)
        self.strategy_box.currentTextChanged.connect(self._build_params)
        self.symbol_edit = QtWidgets.QLineEdit(defaults.symbol)
        self.source_box = QtWidgets.QComboBox()
        self.source_box.addItems(["Simulated market", "Chain file (CSV / Parquet)", "Imported chains"])
        self.source_box.currentIndexChanged.connect(self._source_changed)
        # the chain store's roots (optiondesk data import, the Data panel), each with its date range
        self.imported_box = QtWidgets.QComboBox()
        self.imported_box.currentIndexChanged.connect(lambda _i: self._imported_changed())
        self.years_spin = QtWidgets.QDoubleSpinBox()
        self.years_spin.setRange(0.1, 30.0)
        self.years_spin.setSingleStep(0.5)
        self.years_spin.setValue(defaults.years)
        self.years_spin.setSuffix(" years")
        self.seed_spin = QtWidgets.QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(defaults.seed)
        self.file_edit = QtWidgets.QLineEdit(defaults.data or "")
        self.file_edit.setPlaceholderText("path to a chain file or folder")
        self.browse_button = QtWidgets.QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.use_dates = QtWidgets.QCheckBox("Restrict dates")
        self.start_edit = QtWidgets.QDateEdit()
        self.end_edit = QtWidgets.QDateEdit()
        for w in (self.start_edit, self.end_edit):
            w.setCalendarPopup(True)
            w.setDisplayFormat("yyyy-MM-dd")
            w.setEnabled(False)
        self.use_dates.toggled.connect(lambda on: (self.start_edit.setEnabled(on), self.end_edit.setEnabled(on)))
        # simulated data: the dates stay inside the generated history, and the history covers the dates
        self.years_spin.valueChanged.connect(self._years_changed)
        self.start_edit.dateChanged.connect(self._start_changed)
        self._years_changed(self.years_spin.value())
        # rates as the simulated market prices its options (explicit inputs, never a hidden 0)
        r_sim, q_sim = _simulated_rates(defaults.symbol)
        self.rate_spin = QtWidgets.QDoubleSpinBox()
        self.rate_spin.setRange(-5.0, 25.0)
        self.rate_spin.setDecimals(2)
        self.rate_spin.setSingleStep(0.25)
        self.rate_spin.setSuffix(" %")
        self.rate_spin.setValue(100 * (defaults.rate or r_sim))
        self.rate_spin.setToolTip("Risk-free rate (continuous, annual) for IVs, Greeks and the risk checks")
        self.div_spin = QtWidgets.QDoubleSpinBox()
        self.div_spin.setRange(0.0, 25.0)
        self.div_spin.setDecimals(2)
        self.div_spin.setSingleStep(0.1)
        self.div_spin.setSuffix(" %")
        self.div_spin.setValue(100 * (defaults.dividend_yield or q_sim))
        self.div_spin.setToolTip("Dividend yield of the underlying (continuous, annual)")
        self.cash_spin = QtWidgets.QDoubleSpinBox()
        self.cash_spin.setRange(1_000.0, 100_000_000.0)
        self.cash_spin.setDecimals(0)
        self.cash_spin.setSingleStep(10_000.0)
        self.cash_spin.setPrefix("$ ")
        self.cash_spin.setGroupSeparatorShown(True)
        self.cash_spin.setValue(defaults.initial_cash)
        self.risk_spin = QtWidgets.QSpinBox()
        self.risk_spin.setRange(0, 100)
        self.risk_spin.setValue(int(defaults.risk_level))
        self.fee_box = QtWidgets.QComboBox()
        self.fee_box.addItems(["tastytrade", "ibkr_fixed", "flat_065", "zero"])
        self.fee_box.setCurrentText(defaults.fee_preset)

        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Strategy", self.strategy_box)
        form.addRow("Underlying", self.symbol_edit)
        form.addRow("Data", self.source_box)
        form.addRow("History", self.years_spin)
        form.addRow("Seed", self.seed_spin)
        file_row = QtWidgets.QHBoxLayout()
        file_row.addWidget(self.file_edit, 1)
        file_row.addWidget(self.browse_button)
        form.addRow("File", file_row)
        form.addRow("Imported", self.imported_box)
        form.addRow(self.use_dates)
        dates = QtWidgets.QHBoxLayout()
        dates.addWidget(self.start_edit)
        dates.addWidget(QtWidgets.QLabel("to"))
        dates.addWidget(self.end_edit)
        form.addRow("Dates", dates)
        form.addRow("Rate", self.rate_spin)
        form.addRow("Dividend yield", self.div_spin)
        form.addRow("Initial cash", self.cash_spin)
        form.addRow("Risk level", self.risk_spin)
        form.addRow("Fees", self.fee_box)
        self.params_box = QtWidgets.QGroupBox("Strategy parameters")
        self.params_form = QtWidgets.QFormLayout(self.params_box)
        self.run_button = QtWidgets.QPushButton("Run backtest")
        self.run_button.setMinimumHeight(28)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.status_label = QtWidgets.QLabel("")
        self.status_label.setWordWrap(True)
        self.export_csv_button = QtWidgets.QPushButton("Export CSV…")
        self.export_png_button = QtWidgets.QPushButton("Export PNG…")
        self.export_csv_button.clicked.connect(lambda: self._choose_dir(self.export_csv))
        self.export_png_button.clicked.connect(lambda: self._choose_file(self.export_png))
        for b in (self.export_csv_button, self.export_png_button):
            b.setEnabled(False)

        left = QtWidgets.QWidget()
        ll = QtWidgets.QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addLayout(form)
        ll.addWidget(self.params_box)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        self.cancel_button.setMinimumWidth(self.cancel_button.sizeHint().width())  # not "Cance"
        buttons.addWidget(self.cancel_button)
        ll.addLayout(buttons)
        ll.addWidget(self.progress)
        ll.addWidget(self.status_label)
        exports = QtWidgets.QHBoxLayout()
        exports.addWidget(self.export_csv_button)
        exports.addWidget(self.export_png_button)
        ll.addLayout(exports)
        ll.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        # the form's own width: a narrower scroll cut "Browse…" and the end date behind a scrollbar
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(left.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 6)

        # ---- results
        self.stats_model = ColumnTableModel([Column("name", "Statistic", align="left", width=190),
                                             Column("value", "Value", align="right", width=110)], self)
        self.stats_table = LiveTableView(self.stats_model)
        self.stats_table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.stats_table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.stats_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.stats_table.setMinimumWidth(310)  # "Max DD duration (days)" and "$100,000.00" in full
        self.equity_plot = new_plot(title="Equity", y="$", axis_items={"bottom": pg.DateAxisItem(),
                                                                       "left": MoneyAxis("left")})
        self.equity_curve = self.equity_plot.plot([], [], pen=pg.mkPen(SERIES[0], width=2))
        self.dd_plot = new_plot(title="Drawdown", y="%", axis_items={"bottom": pg.DateAxisItem()})
        self.dd_curve = self.dd_plot.plot([], [], pen=pg.mkPen(LOSS, width=1), fillLevel=0,
                                          brush=pg.mkBrush(214, 69, 65, 80))
        self.dd_plot.getPlotItem().getAxis("left").setWidth(64)  # same plot area as the equity curve above
        self.dd_plot.setXLink(self.equity_plot)
        self.daily_plot = new_plot(title="Daily P&L", y="$", axis_items={"bottom": pg.DateAxisItem(),
                                                                         "left": MoneyAxis("left")})
        # not x-linked: pyqtgraph links views by screen position, and this plot is half as wide
        self.daily_bars: pg.BarGraphItem | None = None
        self.hist_plot = new_plot(title="Daily P&L distribution", x="$ per day", y="days")
        self.hist_bars: pg.BarGraphItem | None = None
        self._show_axis_values(False)  # empty plots: no "0.250" ticks until a run has data
        self.trade_model = ColumnTableModel(self.TRADE_COLUMNS, self)
        self.trade_table = LiveTableView(self.trade_model)
        self.trade_table.horizontalHeader().setSectionResizeMode(3, QtWidgets.QHeaderView.ResizeMode.Stretch)

        charts = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(charts)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.equity_plot, 0, 0, 1, 2)
        grid.addWidget(self.dd_plot, 1, 0, 1, 2)
        grid.addWidget(self.daily_plot, 2, 0)
        grid.addWidget(self.hist_plot, 2, 1)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 1)
        grid.setRowStretch(2, 2)
        overview = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        overview.addWidget(self.stats_table)
        overview.addWidget(charts)
        overview.setSizes([320, 780])
        self.results_tabs = QtWidgets.QTabWidget()
        self.results_tabs.addTab(overview, "Overview")
        self.results_tabs.addTab(self.trade_table, "Trades")
        self.summary_label = QtWidgets.QLabel("No results yet: choose a strategy and press Run.")
        self.summary_label.setStyleSheet("font-weight: bold")
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.summary_label)
        rl.addWidget(self.results_tabs, 1)
        self.results_widget = right

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

    # ---- form helpers ------------------------------------------------------------------------------
    @staticmethod
    def _strategy_names() -> list[str]:
        from engine.strategies import registry

        return sorted(registry())

    def _years_changed(self, years: float) -> None:
        """The date range follows the simulated history: it ends at its last session."""
        from engine.backtest.sources import SIMULATED_END, simulated_start

        if self.source_box.currentIndex() != 0:
            return
        first = QtCore.QDate(simulated_start(years))
        last = QtCore.QDate(SIMULATED_END)
        for w in (self.start_edit, self.end_edit):
            w.blockSignals(True)
            w.setDateRange(QtCore.QDate(simulated_start(30.0)), last)
        if not self.use_dates.isChecked() or self.start_edit.date() < first:
            self.start_edit.setDate(first)
        if not self.use_dates.isChecked() or self.end_edit.date() > last:
            self.end_edit.setDate(last)
        for w in (self.start_edit, self.end_edit):
            w.blockSignals(False)

    def _start_changed(self, start: QtCore.QDate) -> None:
        """A start before the simulated history's first day lengthens the history to cover it (a
        "0.30 years" history beside dates five years apart ran on 0.3 years)."""
        from engine.backtest.sources import SIMULATED_END

        if self.source_box.currentIndex() != 0:
            return
        needed = (SIMULATED_END - start.toPython()).days / 365.25
        if needed > self.years_spin.value() + 1e-9:
            self.years_spin.blockSignals(True)
            self.years_spin.setValue(min(30.0, math.ceil(needed * 10) / 10))
            self.years_spin.blockSignals(False)

    def _source_changed(self, index: int) -> None:
        sim = index == 0
        if sim:
            self._years_changed(self.years_spin.value())
        else:  # a chain file has its own dates
            for w in (self.start_edit, self.end_edit):
                w.setDateRange(QtCore.QDate(1990, 1, 1), QtCore.QDate(2100, 12, 31))
        self.years_spin.setEnabled(sim)
        self.seed_spin.setEnabled(sim)
        self.file_edit.setEnabled(index == 1)
        self.browse_button.setEnabled(index == 1)
        self._fill_imported()
        self.imported_box.setEnabled(index == 2 and self.imported_box.count() > 0)
        if index == 2:
            self._imported_changed()

    def _fill_imported(self) -> None:
        """List the imported roots with their ranges (kept current as imports and deletes land)."""
        chosen = self.imported_box.currentData()
        self.imported_box.blockSignals(True)
        self.imported_box.clear()
        for r in eq.imported_roots(self.engine):
            self.imported_box.addItem(f"{r.root} · {r.first_day} to {r.last_day} ({plural(r.days, 'day')})", r.root)
        if chosen is not None and self.imported_box.findData(chosen) >= 0:
            self.imported_box.setCurrentIndex(self.imported_box.findData(chosen))
        self.imported_box.blockSignals(False)
        self.imported_box.setEnabled(self.source_box.currentIndex() == 2 and self.imported_box.count() > 0)

    def choose_imported(self, root: str) -> None:
        """Run on the imported chains of ``root``: its symbol, and its whole date range to start with."""
        self._fill_imported()
        i = self.imported_box.findData(root.upper())
        if i < 0:
            self._status(f"no imported chains for {root.upper()}", error=True)
            return
        self.imported_box.setCurrentIndex(i)
        self.source_box.setCurrentIndex(2)
        self._imported_changed()

    def _imported_changed(self) -> None:
        """The chosen root sets the underlying and the dates (defaulting to its whole range)."""
        if self.source_box.currentIndex() != 2:
            return
        r = next((r for r in eq.imported_roots(self.engine) if r.root == self.imported_box.currentData()), None)
        if r is None or r.first_day is None or r.last_day is None:
            return
        self.symbol_edit.setText(r.root)
        lo, hi = QtCore.QDate(r.first_day), QtCore.QDate(r.last_day)
        for w in (self.start_edit, self.end_edit):
            w.blockSignals(True)
            w.setDateRange(lo, hi)
        self.start_edit.setDate(lo)
        self.end_edit.setDate(hi)
        for w in (self.start_edit, self.end_edit):
            w.blockSignals(False)
        self.use_dates.setChecked(True)

    def _build_params(self, name: str, values: dict[str, Any] | None = None) -> None:
        """A field per simple (number / text / flag) parameter of the strategy's pydantic model."""
        from engine.strategies import registry

        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self._param_widgets = {}
        self._extra_params = {}
        cls = registry().get(name)
        if cls is None:
            return
        values = values or {}
        for field_name, info in cls.Params.model_fields.items():
            if field_name == "underlying":
                continue
            default = values.get(field_name, info.default)
            ann = info.annotation
            w: QtWidgets.QWidget
            if ann is bool:
                w = QtWidgets.QCheckBox()
                w.setChecked(bool(default))
            elif ann is int:
                w = QtWidgets.QSpinBox()
                w.setRange(-1_000_000, 1_000_000)
                w.setValue(int(default))
            elif ann is float:
                w = QtWidgets.QDoubleSpinBox()
                w.setRange(-1e9, 1e9)
                w.setDecimals(4)
                w.setSingleStep(0.01 if abs(float(default)) < 10 else 1.0)
                w.setValue(float(default))
            else:
                continue  # structured parameters keep their defaults (settings file / CLI)
            w.setToolTip(info.description or field_name)
            w.setMinimumHeight(w.sizeHint().height())
            self._param_widgets[field_name] = w
            self.params_form.addRow(field_name.replace("_", " "), w)
        self.params_box.setMinimumHeight(self.params_box.sizeHint().height())

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, w in self._param_widgets.items():
            if isinstance(w, QtWidgets.QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, QtWidgets.QSpinBox | QtWidgets.QDoubleSpinBox):
                out[name] = w.value()
        return out

    def config(self) -> dict[str, Any]:
        """The ``BacktestConfig`` of the form, validated (``ValueError`` names the bad field)."""
        from pydantic import ValidationError

        from engine.backtest.config import BacktestConfig

        data: dict[str, Any] = {
            "strategy": self.strategy_box.currentText(),
            "params": {**self._extra_params, **self.params(), "underlying": self.symbol_edit.text().strip().upper()},
            "symbol": self.symbol_edit.text().strip().upper(),
            "initial_cash": self.cash_spin.value(),
            "risk_level": float(self.risk_spin.value()),
            "fee_preset": self.fee_box.currentText(),
            "rate": round(self.rate_spin.value() / 100.0, 6),
            "dividend_yield": round(self.div_spin.value() / 100.0, 6),
        }
        if self.source_box.currentIndex() == 0:
            data.update(years=self.years_spin.value(), seed=self.seed_spin.value())
        elif self.source_box.currentIndex() == 2:
            root = self.imported_box.currentData()
            if not root:
                raise ValueError("no imported chains: import vendor files in the Data panel first")
            # the worker process opens the engine's own chain store, wherever its data folder is
            data.update(source="imported", symbol=root, data=eq.chains_dir(self.engine))
        else:
            path = self.file_edit.text().strip()
            if not path:
                raise ValueError("choose a chain file or folder for the backtest data")
            data["data"] = path
        if self.use_dates.isChecked():
            start = self.start_edit.date().toPython()
            end = self.end_edit.date().toPython()
            if start >= end:
                raise ValueError(f"start date {start} must be before end date {end}")
            data.update(start=start, end=end)
        try:
            return BacktestConfig.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}") from None

    def load_strategy(self, request: Any) -> None:
        """Run ``dict(strategy=name, params=dict)`` (the Strategies panel's "Backtest these parameters"): the form
        shows the strategy, its underlying and simple parameters; the structured ones it has no field for
        (management rules, pricing walk, ...) go into the run unchanged, so the run uses exactly the edited set."""
        if request is self._last_request:  # the window may hand over a request the panel was built too late for
            return
        self._last_request = request
        name = str(request.get("strategy", "")) if isinstance(request, dict) else ""
        if self.strategy_box.findText(name) < 0:
            self._status(f"no strategy {name!r} to backtest", error=True)
            return
        if self.job is not None and self.job.running:
            self._status("a backtest is running: cancel it before starting another", error=True)
            return
        params = dict(request.get("params") or {})
        self.strategy_box.setCurrentText(name)
        self._build_params(name, params)
        self._extra_params = {k: v for k, v in params.items() if k not in self._param_widgets and k != "underlying"}
        if params.get("underlying"):
            self.symbol_edit.setText(str(params["underlying"]))
        if request.get("run", True):
            self.run()

    def _browse(self) -> None:
        dlg = QtWidgets.QFileDialog(self, "Chain data", self.file_edit.text() or str(Path.home()))
        dlg.setFileMode(QtWidgets.QFileDialog.FileMode.ExistingFile)
        dlg.setNameFilter("Chains (*.csv *.parquet *.pq);;All files (*)")
        dlg.fileSelected.connect(self.file_edit.setText)
        dlg.open()

    def _choose_dir(self, then: Any) -> None:
        dlg = QtWidgets.QFileDialog(self, "Export folder", str(Path.home()))
        dlg.setFileMode(QtWidgets.QFileDialog.FileMode.Directory)
        dlg.fileSelected.connect(lambda p: then(Path(p)))
        dlg.open()

    def _choose_file(self, then: Any) -> None:
        dlg = QtWidgets.QFileDialog(self, "Export PNG", str(Path.home() / "backtest.png"))
        dlg.setAcceptMode(QtWidgets.QFileDialog.AcceptMode.AcceptSave)
        dlg.setNameFilter("PNG image (*.png)")
        dlg.setDefaultSuffix("png")
        dlg.fileSelected.connect(lambda p: then(Path(p)))
        dlg.open()

    # ---- the worker ---------------------------------------------------------------------------------
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

    # ---- running ------------------------------------------------------------------------------------
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

    # ---- results ------------------------------------------------------------------------------------
    def _show_axis_values(self, on: bool) -> None:
        for plot in (self.equity_plot, self.dd_plot, self.daily_plot, self.hist_plot):
            for name in ("left", "bottom"):
                plot.getPlotItem().getAxis(name).setStyle(showValues=on)

    def show_result(self, result: Any) -> None:
        self.result = result
        self._show_axis_values(True)
        m = result.metrics.as_dict()
        names = [label for key, label, _ in STAT_ROWS if key in m]
        values = [_fmt_stat(m[key], kind) for key, _, kind in STAT_ROWS if key in m]
        self.stats_model.update(np.array(names, dtype=object),
                                {"name": np.array(names, dtype=object), "value": np.array(values, dtype=object)})
        x = _epoch(result.dates)
        equity = np.asarray(result.equity, float)
        dd = 100.0 * np.asarray(result.drawdown, float)
        daily = np.asarray(result.daily_pnl, float)
        self.equity_curve.setData(x, equity)
        self.dd_curve.setData(x, dd)
        # a run without trades has flat series: autorange then zooms into nothing and the axes read
        # "0.250" or lose their labels; give flat series a readable range instead
        _readable_y_range(self.equity_plot, equity, pad=max(1.0, 0.01 * float(np.nanmax(np.abs(equity)))
                                                        if np.isfinite(equity).any() else 1.0))
        _readable_y_range(self.dd_plot, dd, pad=1.0)
        _readable_y_range(self.daily_plot, daily, pad=10.0)
        for plot, attr in ((self.daily_plot, "daily_bars"), (self.hist_plot, "hist_bars")):
            old = getattr(self, attr)
            if old is not None:
                plot.removeItem(old)
        if len(x):
            width = 0.8 * 86400
            brushes = [pg.mkBrush(PROFIT if v >= 0 else LOSS) for v in daily]
            self.daily_bars = pg.BarGraphItem(x=x, height=daily, width=width, brushes=brushes, pen=None)
            self.daily_plot.addItem(self.daily_bars)
            nonzero = daily[np.isfinite(daily)]
            if len(nonzero):
                counts, edges = np.histogram(nonzero, bins=min(40, max(5, len(nonzero) // 5)))
                centers = 0.5 * (edges[:-1] + edges[1:])
                hb = [pg.mkBrush(PROFIT if c >= 0 else LOSS) for c in centers]
                self.hist_bars = pg.BarGraphItem(x=centers, height=counts, width=np.diff(edges) * 0.9, brushes=hb,
                                                 pen=None)
                self.hist_plot.addItem(self.hist_bars)
        trades = list(result.trades)
        self.trade_model.update(np.array([t.trade_no for t in trades], dtype=object), {
            "no": np.array([t.trade_no for t in trades], dtype=object),
            "opened": np.array([format_market_time(t.opened_at) for t in trades], dtype=object),
            "closed": np.array([format_market_time(t.closed_at) if t.closed_at else "open" for t in trades],
                               dtype=object),
            "legs": np.array([compact_legs(t.legs) for t in trades], dtype=object),
            "qty": np.array([t.quantity for t in trades], dtype=object),
            "entry": np.array([_price(t.entry_price) for t in trades], dtype=object),
            "exit": np.array([_price(t.exit_price) for t in trades], dtype=object),
            "pnl": np.array([float(t.net_pnl) for t in trades], dtype=float),
            "reason": np.array([t.exit_reason for t in trades], dtype=object),
            "regime": np.array([t.regime for t in trades], dtype=object),
        })
        self.results_tabs.setTabText(1, f"Trades ({len(trades)})")
        pnl = m.get("total_pnl")
        ret = m.get("total_return")
        self.summary_label.setText(
            f"{result.strategy} · {result.config.get('symbol', '')} · {plural(len(result.dates), 'day')} · "
            f"P&L {_fmt_stat(pnl, 'money')} ({_fmt_stat(ret, 'pct')}) · max DD {_fmt_stat(m.get('max_drawdown'), 'pct')}"
            f" · Sharpe {_fmt_stat(m.get('sharpe'), 'num')} · {result.status}"
        )
        for b in (self.export_csv_button, self.export_png_button):
            b.setEnabled(True)

    def export_csv(self, folder: Path) -> dict[str, Path]:
        """Trades, equity, orders (CSV) and the summary (JSON) of the shown result, via engine.backtest.report."""
        if self.result is None:
            raise ValueError("no backtest result to export")
        from engine.backtest.report import export_all

        paths = export_all(self.result, folder, png=False)
        self._status(f"Exported {', '.join(p.name for p in paths.values())} to {folder}", error=False)
        return paths

    def export_png(self, path: Path) -> Path:
        """The results area as a PNG."""
        if self.result is None:
            raise ValueError("no backtest result to export")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.results_widget.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        self._status(f"Saved {path}", error=False)
        return path

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


def compact_legs(text: str) -> str:
    """"-1 SPY240621P00500000 / +1 SPY240621P00495000" as "-1 21Jun24 500P  +1 21Jun24 495P".

    The ledger's OCC symbols filled the Legs column and were cut to "-1 SP…"; the underlying is the run's
    and already in the summary line. Text that is not OCC legs is shown as it is.
    """
    from engine.model import Option

    parts = []
    for token in text.split(" / "):
        ratio, _, symbol = token.strip().partition(" ")
        try:
            o = Option.from_occ(symbol)
        except ValueError:
            return text
        parts.append(f"{ratio} {o.expiry:%d%b%y} {o.strike:g}{'C' if o.is_call else 'P'}")
    return "  ".join(parts)


def _readable_y_range(plot: pg.PlotWidget, values: np.ndarray, pad: float) -> None:
    """Autorange, unless the series is flat (or empty): then centre it in ±``pad``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    item = plot.getPlotItem()
    if len(v) and float(v.max() - v.min()) > 1e-9 * max(1.0, float(np.abs(v).max())):
        item.enableAutoRange(axis="y")
        return
    centre = float(v[0]) if len(v) else 0.0
    item.setYRange(centre - pad, centre + pad, padding=0.05)


def _epoch(dates: np.ndarray) -> np.ndarray:
    d = np.asarray(dates).astype("datetime64[D]")
    return d.astype("datetime64[s]").astype(np.int64).astype(float) + 16 * 3600.0


def _price(p: Any) -> str:
    if p is None:
        return ""
    v = float(p)
    return f"{abs(v):.2f} {'CR' if v < 0 else 'DB'}"


__all__ = ["BacktestJob", "BacktestPanel"]
