"""Models panel: the registered trade-outcome models, their walk-forward metrics, and train/evaluate jobs.

The table is the registry as the engine's :class:`~engine.ml.service.MLService` reads it: per model version
its kind, underlying and training window, the purged walk-forward AUC with its block-bootstrap interval,
Brier score beside the base-rate forecast's, log loss, calibration (method and expected calibration error),
the permuted-label AUC, the verdict, and which strategies' ``ml.model`` name it. The selected model's
reliability curve (predicted vs observed win rate per bin, against the diagonal) and its one-line reading
sit below, with tabs for the model's feature importance (XGBoost total gain), today's candidate (its calibrated
P(win), each feature's ``pred_contribs`` share of the margin, and the live probabilities of the strategies
whose ``ml.model`` names it), drift (each feature's population stability index, recent sessions against the
training window) and the pricing ensemble (each model's decayed error and weight per regime, from the
ensemble tracker). Importance, candidate and drift come from one ``ExplainModel`` command computed in a worker
process (:mod:`engine.ml.insight`) when a model is selected. Train and Evaluate are bus commands (``TrainModel``/``EvaluateModel``); the job runs in the
engine's worker processes and its stage and elapsed time come back as ``MLJobProgressed`` events, so the
panel never waits on the engine.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from engine.bus.events import MLJobFinished, MLJobProgressed
from engine.ml.insight import ExplainModel, ModelInsightReady, drift_reading
from engine.ml.service import EvaluateModel, ModelRow, TrainModel
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import MUTED, SERIES, new_plot

if TYPE_CHECKING:
    from engine.core import Engine
    from engine.ml.service import MLService

Qt = QtCore.Qt
KINDS = ("xgboost", "logistic", "lstm")
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("name", "Model", 170), ("version", "Ver", 36), ("kind", "Kind", 62), ("symbol", "Symbol", 52),
    ("window", "Training window", 176), ("auc", "AUC [95 % CI]", 130), ("brier", "Brier (base)", 96),
    ("log_loss", "Log loss", 62), ("calibration", "Calibration", 110), ("perm", "Perm. AUC", 66),
    ("verdict", "Verdict", 70), ("used_by", "Used by", 140),
)
NO_EDGE = QtGui.QColor(214, 69, 65)
EDGE = QtGui.QColor(38, 166, 91)


def _num(x: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def row_texts(r: ModelRow) -> dict[str, str]:
    """What each column shows for one model (kept out of Qt so the numbers are checked as text)."""
    m = r.metrics
    ci = m.get("auc_ci") or [None, None]
    cal = r.calibration or str(m.get("calibration_method") or "")  # the map the final model kept
    return {
        "name": r.name, "version": str(r.version), "kind": r.kind, "symbol": r.symbol,
        "window": " … ".join(r.training_window) if r.training_window else "—",
        "auc": f"{_num(m.get('auc'))} [{_num(ci[0])}, {_num(ci[1])}]",
        "brier": f"{_num(m.get('brier'))} ({_num(m.get('brier_base_rate'))})",
        "log_loss": _num(m.get("log_loss")),
        "calibration": f"{cal}, ECE {_num(m.get('ece'))}" if cal else "—",
        "perm": _num(m.get("permutation_auc")),
        "verdict": str(m.get("verdict") or "—"),
        "used_by": ", ".join(r.used_by) or "—",
    }


def _small_table(headers: tuple[str, ...]) -> QtWidgets.QTableWidget:
    t = QtWidgets.QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(list(headers))
    t.verticalHeader().setVisible(False)
    t.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
    t.horizontalHeader().setStretchLastSection(True)
    t.setColumnWidth(0, 170)
    return t


def _neural_saved() -> bool:
    from engine.pricing import neural

    return neural.default_path().exists()


class ModelsPanel(Panel):
    title: ClassVar[str] = "Models"
    panel_id: ClassVar[str] = "models"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None, *,
                 service: MLService | None = None) -> None:
        super().__init__(engine, parent)
        if service is None and eq.running(engine):
            from engine.ml.service import attached_service

            service = attached_service(engine)
        self.service = service
        self.rows: list[ModelRow] = []
        self.job_id: str | None = None
        self.last_finished: MLJobFinished | None = None
        #: label permutations of a Train job (the null AUC beside the real one); fewer is faster, not fairer
        self.permutations = 10

        self.symbol_box = QtWidgets.QComboBox()
        self.symbol_box.addItems(eq.underlyings(engine) or ["SPY"])
        self.kind_box = QtWidgets.QComboBox()
        self.kind_box.addItems(KINDS)
        self.kind_box.setToolTip("xgboost: gradient-boosted trees; logistic: the baseline; lstm: a small torch "
                                 "LSTM over 20-day feature sequences")
        self.train_button = QtWidgets.QPushButton("Train")
        self.train_button.setToolTip("Purged walk-forward validation, permutation test, then register the model "
                                     "(runs in the engine's worker processes)")
        self.train_button.clicked.connect(self.train)
        self.evaluate_button = QtWidgets.QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Score the selected model on a history it never saw")
        self.evaluate_button.clicked.connect(self.evaluate)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(140)
        self.progress.setTextVisible(False)
        self.progress.setRange(0, 1)
        self.job_label = QtWidgets.QLabel("")
        top = QtWidgets.QHBoxLayout()
        for w in (QtWidgets.QLabel("Symbol"), self.symbol_box, QtWidgets.QLabel("Model"), self.kind_box,
                  self.train_button, self.evaluate_button, self.progress):
            top.addWidget(w)
        top.addWidget(self.job_label, 1)

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([h for _k, h, _w in COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for i, (_k, _h, w) in enumerate(COLUMNS):
            self.table.setColumnWidth(i, w)
        self.table.itemSelectionChanged.connect(self._show_selected)

        self.plot = new_plot(title="Reliability (walk-forward, out of sample)", x="predicted P(win)",
                             y="observed win rate")
        self.plot.setMinimumHeight(170)
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.setYRange(0, 1, padding=0.02)
        self.reading_label = QtWidgets.QLabel("No model selected.")
        self.reading_label.setWordWrap(True)
        self.reading_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.reading_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        reliability = QtWidgets.QWidget()
        bottom = QtWidgets.QHBoxLayout(reliability)
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.plot, 1)
        bottom.addWidget(self.reading_label, 1)

        self.importance_plot = new_plot(title="Feature importance", x="share of the model's total")
        self.importance_plot.setMinimumHeight(170)
        self.candidate_label = QtWidgets.QLabel("Select a model.")
        self.candidate_label.setWordWrap(True)
        self.candidate_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.contrib_table = _small_table(("Feature", "Contribution"))
        candidate = QtWidgets.QWidget()
        cl = QtWidgets.QHBoxLayout(candidate)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.candidate_label, 1)
        cl.addWidget(self.contrib_table, 1)
        self.drift_label = QtWidgets.QLabel("")
        self.drift_label.setWordWrap(True)
        self.drift_table = _small_table(("Feature", "PSI now", "PSI max in training", "Outside range", "Reading"))
        drift = QtWidgets.QWidget()
        dl = QtWidgets.QVBoxLayout(drift)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(self.drift_label)
        dl.addWidget(self.drift_table, 1)
        self.ensemble_label = QtWidgets.QLabel("")
        self.ensemble_label.setWordWrap(True)
        self.ensemble_table = _small_table(("Regime", "Model", "Error $/sh", "Weight", "Contracts"))
        ens = QtWidgets.QWidget()
        el = QtWidgets.QVBoxLayout(ens)
        el.setContentsMargins(0, 0, 0, 0)
        el.addWidget(self.ensemble_label)
        el.addWidget(self.ensemble_table, 1)
        self.tabs = QtWidgets.QTabWidget()
        for w, name in ((reliability, "Reliability"), (self.importance_plot, "Importance"),
                        (candidate, "Today's candidate"), (drift, "Drift (PSI)"), (ens, "Pricing ensemble")):
            self.tabs.addTab(w, name)
        self._ensemble_at = -math.inf

        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table, 2)
        lay.addWidget(self.tabs, 2)
        if service is None:
            self.job_label.setText("ML service not running (the engine has not started)")
        self.refresh()
        self.refresh_ensemble()

    # ---- data ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the registry (a folder scan of small JSON files) and redraw the table."""
        selected = self.selected()
        self.rows = self.service.models() if self.service is not None else []
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            texts = row_texts(r)
            for j, (key, _h, _w) in enumerate(COLUMNS):
                item = QtWidgets.QTableWidgetItem(texts[key])
                if key == "verdict":
                    item.setForeground(EDGE if texts[key] == "edge" else NO_EDGE)
                if key in ("auc", "calibration") and r.metrics.get("reading"):
                    item.setToolTip(str(r.metrics["reading"]))
                self.table.setItem(i, j, item)
        if self.rows:
            keep = next((i for i, r in enumerate(self.rows) if selected and (r.name, r.version) == selected),
                        len(self.rows) - 1)
            self.table.selectRow(keep)
        self._show_selected()
        busy = self.service is not None and self.service.running() is not None
        self.train_button.setEnabled(self.service is not None and not busy)
        self.evaluate_button.setEnabled(self.service is not None and not busy and bool(self.rows))

    def selected(self) -> tuple[str, int] | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or rows[0].row() >= len(self.rows):
            return None
        r = self.rows[rows[0].row()]
        return r.name, r.version

    def _selected_row(self) -> ModelRow | None:
        sel = self.selected()
        return next((r for r in self.rows if (r.name, r.version) == sel), None) if sel else None

    def _show_selected(self) -> None:
        r = self._selected_row()
        self.plot.clear()
        self.plot.plot([0, 1], [0, 1], pen=pg.mkPen(MUTED, style=Qt.PenStyle.DashLine))
        if r is None:
            self.reading_label.setText("No model selected." if self.rows else
                                       "No registered models: train one (or `optiondesk ml train`).")
            return
        bins = r.metrics.get("calibration") or []
        if bins:
            xs = [b["predicted"] for b in bins]
            ys = [b["observed"] for b in bins]
            self.plot.plot(xs, ys, pen=pg.mkPen(SERIES[0], width=2), symbol="o", symbolSize=7,
                           symbolBrush=SERIES[0])
        lines = [f"<b>{r.name} v{r.version}</b> — {r.kind} on {r.symbol}"]
        reading = r.metrics.get("reading")
        if reading:
            lines.append(str(reading))
        elif not bins:
            lines.append("This model was registered without a reliability curve; retrain to see one.")
        ev = self.service.last_evaluation.get(r.name) if self.service is not None else None
        if ev:
            if "auc" in ev:
                ci = ev.get("auc_ci") or [math.nan, math.nan]
                lines.append(f"Evaluated on {ev['scope']}: {ev['samples']} candidates, AUC {_num(ev['auc'])} "
                             f"[{_num(ci[0])}, {_num(ci[1])}], Brier {_num(ev.get('brier'))} — {ev.get('verdict')}")
            else:
                lines.append(f"Evaluation: {ev.get('message', '')}")
        lines.append("Used by: " + (", ".join(r.used_by) or "no strategy (set ml.model in a strategy's params)"))
        self.reading_label.setText("<br>".join(lines))
        self._show_insight()

    # ---- insight: importance, today's candidate, drift ------------------------------------------------
    def _show_insight(self) -> None:
        """Draw the selected model's insight, asking the engine for it (``ExplainModel``) when it has none."""
        r = self._selected_row()
        self.importance_plot.clear()
        self.contrib_table.setRowCount(0)
        self.drift_table.setRowCount(0)
        if r is None:
            self.candidate_label.setText("Select a model.")
            self.drift_label.setText("")
            return
        ins = self.service.insights.get(r.name) if self.service is not None else None
        if ins is None or ins.get("version") != r.version:
            self.candidate_label.setText(f"Computing {r.name}'s importance, today's candidate and drift…")
            self.drift_label.setText("")
            if self.service is not None and self.engine is not None:
                self.send(ExplainModel(name=r.name))
            return
        self._draw_importance(ins)
        self._draw_candidate(r, ins)
        self._draw_drift(ins)

    def _draw_importance(self, ins: dict[str, Any], top: int = 12) -> None:
        imp = list((ins.get("importance") or {}).items())
        total = sum(v for _k, v in imp) or 1.0
        imp = imp[:top][::-1]  # largest at the top of a horizontal bar chart
        p = self.importance_plot.getPlotItem()
        p.setTitle(f"Feature importance ({ins.get('importance_type', '')}, top {len(imp)})")
        if not imp:
            return
        shares = [v / total for _k, v in imp]
        self.importance_plot.addItem(pg.BarGraphItem(x0=0, y=list(range(len(imp))), height=0.7, width=shares,
                                                     brush=SERIES[0]))
        p.getAxis("left").setTicks([[(i, k) for i, (k, _v) in enumerate(imp)]])
        p.setXRange(0, max(shares) * 1.05, padding=0)
        p.setYRange(-0.6, len(imp) - 0.4, padding=0)

    def _draw_candidate(self, r: ModelRow, ins: dict[str, Any]) -> None:
        cand = ins.get("candidate")
        lines = []
        if cand is None:
            lines.append("No candidate: the newest day's features are not all known yet.")
        else:
            gate = cand.get("gate")
            verdict = "" if gate is None else (" → take" if cand["probability"] >= gate else " → skip")
            lines.append(f"<b>{ins['symbol']} candidate of {cand['day']}</b>: P(win) {cand['probability']:.1%}"
                         + ("" if gate is None else f" vs the model's gate {gate:.1%}") + verdict)
            lines.append(f"Contributions: {cand.get('contributions_type', '')}; + raises P(win).")
            contrib = list((cand.get("contributions") or {}).items())
            self.contrib_table.setRowCount(len(contrib))
            for i, (k, v) in enumerate(contrib):
                self.contrib_table.setItem(i, 0, QtWidgets.QTableWidgetItem(k))
                item = QtWidgets.QTableWidgetItem(f"{v:+.3f}")
                item.setForeground(EDGE if v > 0 else NO_EDGE)
                self.contrib_table.setItem(i, 1, item)
        live = self._live_probabilities(r)
        lines.append("<b>Live</b> (strategies whose ml.model names it): " + ("; ".join(live) if live else
                     "no strategy has asked this model yet today"))
        if (r.metrics or {}).get("verdict") == "no edge":
            lines.append("<span style='color:#d64541'>Validation verdict: no edge — these probabilities are not "
                         "better than the base rate out of sample.</span>")
        self.candidate_label.setText("<br>".join(lines))

    def _live_probabilities(self, r: ModelRow) -> list[str]:
        out = []
        for st in eq.strategy_statuses(self.engine):
            if st.strategy_id not in r.used_by:
                continue
            sig = st.last_signal
            if sig is not None and math.isfinite(sig.ml_probability):
                out.append(f"{st.strategy_id}: P(win) {sig.ml_probability:.1%} ({sig.action}"
                           + (f", {sig.ml_reason}" if sig.ml_reason else "") + ")")
            else:
                out.append(f"{st.strategy_id}: no entry decided yet ({st.state})")
        return out

    def _draw_drift(self, ins: dict[str, Any]) -> None:
        drift = ins.get("drift")
        if not drift:
            self.drift_label.setText("No training window recorded: no drift to measure.")
            return
        rows = sorted(((k, v) for k, v in drift["psi"].items()), key=lambda kv: -(kv[1] if kv[1] is not None
                                                                                   else -1.0))
        usual = drift.get("usual") or {}
        outside = drift.get("out_of_range") or {}
        readings = {k: drift_reading(v, usual.get(k), outside.get(k)) for k, v in rows}
        shifted = sum(1 for r in readings.values() if r == "shifted")
        overlap = drift.get("overlap_days", 0)
        self.drift_label.setText(
            f"Sessions {drift['recent_from']} … {drift['recent_to']} against the training window "
            f"{' … '.join(drift['training_window'])}: {shifted} feature(s) shifted: PSI beyond both 0.25 and the largest "
            f"of the training window's own 60-session blocks (slow features score high in any short window), "
            f"or ≥ 10 % of recent values outside the training range" + (f"; {overlap} of the recent days were in the training window" if overlap else "") + ".")
        self.drift_table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.drift_table.setItem(i, 0, QtWidgets.QTableWidgetItem(k))
            self.drift_table.setItem(i, 1, QtWidgets.QTableWidgetItem(_num(v)))
            self.drift_table.setItem(i, 2, QtWidgets.QTableWidgetItem(_num(usual.get(k))))
            self.drift_table.setItem(i, 3, QtWidgets.QTableWidgetItem(_num(outside.get(k), "{:.0%}")))
            item = QtWidgets.QTableWidgetItem(readings[k])
            if readings[k] == "shifted":
                item.setForeground(NO_EDGE)
            self.drift_table.setItem(i, 4, item)

    # ---- the pricing ensemble ---------------------------------------------------------------------------
    def refresh_ensemble(self) -> None:
        """The ensemble tracker's error and weight per regime and pricing model (engine.ml.ensemble_tracker)."""
        self._ensemble_at = time.monotonic()
        tracker = self.service.ensemble.tracker if self.service is not None and self.service.ensemble else None
        scores = tracker.table() if tracker is not None else []
        current = self.service.ensemble.regime() if tracker is not None else None
        neural = "neural" in {s.model for s in scores} or _neural_saved()
        text = ("No ensemble tracker running." if tracker is None else
                f"Weights ∝ 1/error² of each model's decayed mean absolute error against the mids "
                f"{tracker.horizon.total_seconds() / 60:.0f} min later; current regime: {current}. ")
        if not neural:
            text += " The neural surrogate is not trained: run `optiondesk train-neural` to add it."
        if tracker is not None and not scores:
            text += " No model scored yet (a sample is scored a horizon after it is priced)."
        self.ensemble_label.setText(text)
        self.ensemble_table.setRowCount(len(scores))
        for i, sc in enumerate(scores):
            cells = (sc.regime, sc.model, f"{sc.error:.4f}", f"{sc.weight:.1%}", f"{sc.observations:,}")
            for j, c in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(c)
                if sc.regime == current:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.ensemble_table.setItem(i, j, item)

    # ---- jobs --------------------------------------------------------------------------------------
    def train(self) -> None:
        cmd = TrainModel(symbol=self.symbol_box.currentText() or "SPY", model=self.kind_box.currentText(),
                         permutations=self.permutations)
        self._start(cmd, f"training {cmd.model} on {cmd.symbol}…")

    def evaluate(self) -> None:
        r = self._selected_row()
        if r is None:
            self.report_error("select a model to evaluate")
            return
        self._start(EvaluateModel(name=r.name), f"evaluating {r.name}…")

    def _start(self, cmd: Any, text: str) -> None:
        def started(job_id: Any) -> None:
            self.job_id = str(job_id)

        self._busy(True)
        self.job_label.setText(text)
        self.send(cmd, on_result=started)

    def _busy(self, busy: bool) -> None:
        self.progress.setRange(0, 0 if busy else 1)  # 0..0: Qt's indeterminate bar (a worker reports no fraction)
        self.progress.setValue(0)
        self.train_button.setEnabled(not busy and self.service is not None)
        self.evaluate_button.setEnabled(not busy and self.service is not None and bool(self.rows))

    def report_error(self, message: str) -> None:
        super().report_error(message)
        self._busy(False)
        self.job_label.setText(message)

    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.latest(MLJobProgressed).values():
            if self.job_id is None or ev.job_id == self.job_id:
                self._busy(True)
                self.job_label.setText(f"{ev.kind} {ev.name}: {ev.stage}, {ev.elapsed_s:.0f} s")
        done = batch.events(MLJobFinished)
        for ev in done:
            if self.job_id is not None and ev.job_id != self.job_id:
                continue
            self.last_finished = ev
            self.job_id = None
            self._busy(False)
            self.job_label.setText(ev.describe())
            if ev.error:
                super().report_error(ev.describe())
        if done:
            self.refresh()
        for ev in batch.events(ModelInsightReady):
            r = self._selected_row()
            if r is not None and ev.name == r.name:
                if ev.error:
                    self.candidate_label.setText(f"Insight unavailable: {ev.error}")
                else:
                    self._show_insight()
        if time.monotonic() - self._ensemble_at > 5.0:  # the tracker scores every 15 engine minutes at most
            self.refresh_ensemble()

    def panel_state(self) -> dict[str, Any]:
        return {"kind": self.kind_box.currentText(), "symbol": self.symbol_box.currentText()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        if state.get("kind") in KINDS:
            self.kind_box.setCurrentText(state["kind"])
        if state.get("symbol"):
            self.symbol_box.setCurrentText(str(state["symbol"]))
