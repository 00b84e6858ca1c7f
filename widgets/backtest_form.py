"""The Backtest panel's form: strategy and its parameters, data source (simulated, a chain file, imported
chains), dates, rates, cash, risk level and fees, validated into a ``BacktestConfig``.

A mixin of :class:`widgets.backtest_runner.BacktestPanel` (it reports through the panel's ``_status`` and
starts runs with its ``run``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import plural
from widgets import engine_queries as eq

Qt = QtCore.Qt


def _simulated_rates(symbol: str) -> tuple[float, float]:
    """(rate, dividend yield) the simulated history is generated with (``engine.backtest.sources`` uses the
    simulator's default settings), so a backtest on it prices options as its market did."""
    from engine.market.config import SimulatorConfig

    sim = SimulatorConfig()
    q = next((float(u.dividend_yield) for u in sim.universe if u.symbol == symbol.upper()), 0.0)
    return float(sim.risk_free_rate), q


class BacktestFormMixin:
    """Builds the form and turns it into a run's configuration."""

    def _build_form(self, defaults: Any) -> QtWidgets.QScrollArea:
        """The form's widgets, in a scroll area as wide as the form."""
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
        return scroll

    # ---- form helpers ----------------------------------------------------------------------------
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
