"""Strategies panel: the strategies the engine hosts, what each is doing, and the controls to run them.

The table lists every ``[[strategies]]`` entry as the host reports it (``StrategyHost.statuses()`` through
``widgets.engine_queries``): state, account mode, the last signal with its confidence and reason, open trades,
working orders and P&L. It refreshes when a strategy event or one of its orders' reports arrives in a batch,
and once a second for P&L at mid — a read of the host's books, never a wait on the loop.

Every action is a bus command the host may refuse (``StrategyCommandError``); the refusal is shown in the
panel as the host worded it. Parameters are edited in a form generated from the strategy's own pydantic
model (nested ``rules.*`` and ``pricing.*`` included) and validated by that model before anything is sent,
so a typo is marked beside its field instead of coming back as a refusal. "Backtest these parameters" hands
the edited set to the Backtest panel over the desk links. Going live asks for the account id to be typed,
as the engine's own paper → live switch does; the host checks it against the connected live brokers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import money, plural
from engine.bus.commands import PauseStrategy, SetStrategyMode, SetStrategyParams, StartStrategy, StopStrategy
from engine.bus.events import OrderEvent, StrategyDisabled, StrategySignal, StrategyStateChanged
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel, send_command
from widgets.live_strategy_dialog import LiveStrategyDialog
from widgets.params_form import ERROR_STYLE, OK_STYLE, ParamsForm
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.core import Engine
    from engine.strategies.host import StrategyStatus

Qt = QtCore.Qt

#: the host's words for a refusal start with the exception's class name in send_command's message
_REFUSAL_PREFIXES = ("StrategyCommandError: ", "ValueError: ")
REFRESH_MS = 1000

STATE_COLOURS = {
    "running": QtGui.QColor(38, 166, 91),
    "paused": QtGui.QColor(230, 150, 30),
    "stopped": QtGui.QColor(128, 128, 128),
    "disabled": QtGui.QColor(214, 69, 65),
}
PROFIT = QtGui.QColor(38, 166, 91)
LOSS = QtGui.QColor(214, 69, 65)
LIVE_BG = QtGui.QColor(200, 30, 30)

#: (key, header, width)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("name", "Strategy", 140), ("id", "Id", 110), ("state", "State", 72), ("mode", "Mode", 56),
    ("signal", "Last signal", 124), ("confidence", "Conf.", 48), ("reason", "Reason", 200),
    ("open_trades", "Open trades", 100), ("working", "Working", 72), ("pnl_today", "P&L today", 92),
    ("pnl_total", "P&L total", 92),
)
_COL = {key: i for i, (key, _h, _w) in enumerate(COLUMNS)}


def refusal_text(message: str) -> str:
    """The host's reason without the exception class ``send_command`` puts in front of it."""
    for prefix in _REFUSAL_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


# ---- the panel --------------------------------------------------------------------------------------------------
class StrategiesPanel(Panel):
    title: ClassVar[str] = "Strategies"
    panel_id: ClassVar[str] = "strategies"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.statuses: dict[str, StrategyStatus] = {}
        self.selected_id = ""
        self._form_for = ""  # the strategy the parameter form was built for
        self._log_key: tuple[int, str] = (-1, "")
        self.stop_box: QtWidgets.QMessageBox | None = None
        self.live_dialog: LiveStrategyDialog | None = None

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("strategies_table")
        self.table.setHorizontalHeaderLabels([h for _k, h, _w in COLUMNS])
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        for i, (_k, _h, width) in enumerate(COLUMNS):
            self.table.setColumnWidth(i, width)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(_COL["reason"], QtWidgets.QHeaderView.ResizeMode.Stretch)  # others: fixed
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.start_button = QtWidgets.QPushButton("▶ Start")
        self.pause_button = QtWidgets.QPushButton("❚❚ Pause")
        self.stop_button = QtWidgets.QPushButton("■ Stop…")
        self.live_button = QtWidgets.QPushButton("Trade live…")
        self.backtest_button = QtWidgets.QPushButton("Backtest these parameters")
        for b, name in ((self.start_button, "start"), (self.pause_button, "pause"), (self.stop_button, "stop"),
                        (self.live_button, "live"), (self.backtest_button, "backtest")):
            b.setObjectName(f"strategy_{name}")
        self.start_button.clicked.connect(self.start_selected)
        self.pause_button.clicked.connect(self.pause_selected)
        self.stop_button.clicked.connect(self.ask_stop)
        self.live_button.clicked.connect(self.toggle_live)
        self.backtest_button.clicked.connect(self.backtest_selected)
        self.message = QtWidgets.QLabel("")
        self.message.setObjectName("strategy_message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        actions = QtWidgets.QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button, self.live_button):
            actions.addWidget(b)
        actions.addStretch(1)
        actions.addWidget(self.backtest_button)

        # parameters (left) and the strategy's event log (right)
        self.form = ParamsForm()
        self.form.changed.connect(self._on_form_changed)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        self.apply_button = QtWidgets.QPushButton("Apply parameters")
        self.apply_button.setObjectName("strategy_apply")
        self.apply_button.clicked.connect(self.apply_params)
        self.reset_button = QtWidgets.QPushButton("Reset")
        self.reset_button.setToolTip("Back to the parameters the strategy runs with")
        self.reset_button.clicked.connect(lambda: self._load_form(force=True))
        params_box = self.params_box = QtWidgets.QGroupBox("Parameters")
        pl = QtWidgets.QVBoxLayout(params_box)
        pl.addWidget(scroll, 1)
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.reset_button)
        row.addWidget(self.apply_button)
        pl.addLayout(row)

        self.log_list = QtWidgets.QListWidget()
        self.log_list.setObjectName("strategy_log")
        self.log_list.setWordWrap(True)
        self.log_list.setUniformItemSizes(False)
        log_box = QtWidgets.QGroupBox("Event log (newest first)")
        QtWidgets.QVBoxLayout(log_box).addWidget(self.log_list)

        lower = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(params_box)
        lower.addWidget(log_box)
        lower.setStretchFactor(0, 2)
        lower.setStretchFactor(1, 3)

        top = QtWidgets.QWidget()
        tl = QtWidgets.QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.table, 1)
        tl.addLayout(actions)
        tl.addWidget(self.message)
        split = QtWidgets.QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(lower)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)
        root = QtWidgets.QVBoxLayout(self)
        root.setContentsMargins(4, 4, 4, 4)
        self.empty_label = QtWidgets.QLabel(
            "No strategies configured: add [[strategies]] tables to settings.toml (docs/strategies.md).")
        self.empty_label.setStyleSheet(OK_STYLE)
        root.addWidget(self.empty_label)
        root.addWidget(split, 1)

        # the themes give disabled buttons no colour of their own: Start must not look clickable while running
        self.setStyleSheet("QPushButton:disabled { color: #7a808a; }")

        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()
        self._load_form(force=True)  # also without strategies: the form says why it is empty

    # ---- reading the host ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read every strategy's status (cheap, synchronous) and repaint the rows, the buttons and the log."""
        statuses = eq.strategy_statuses(self.engine)
        ids = [s.strategy_id for s in statuses]
        rebuild = ids != list(self.statuses)
        self.statuses = {s.strategy_id: s for s in statuses}
        self.empty_label.setVisible(not statuses)
        if rebuild:
            self.table.blockSignals(True)
            self.table.setRowCount(len(statuses))
            for r in range(len(statuses)):
                for c in range(len(COLUMNS)):
                    if self.table.item(r, c) is None:
                        self.table.setItem(r, c, QtWidgets.QTableWidgetItem(""))
            self.table.blockSignals(False)
        for r, st in enumerate(statuses):
            self._paint_row(r, st)
        if rebuild:
            keep = self.selected_id if self.selected_id in self.statuses else (ids[0] if ids else "")
            self.select(keep)
        self._update_buttons()
        self._refresh_log()

    def _paint_row(self, row: int, st: StrategyStatus) -> None:
        sig = st.last_signal
        conf = sig.confidence if sig is not None else math.nan
        values = {
            "name": st.name, "id": st.strategy_id, "state": st.state, "mode": "LIVE" if st.mode == "live" else "paper",
            "signal": "—" if sig is None else f"{sig.action} {sig.tag}".strip(),
            "confidence": "" if not math.isfinite(conf) else f"{conf:.0%}",
            "reason": " ".join(self._reason(st).split()),  # one line: a pydantic message spans several
            "open_trades": str(st.open_trades), "working": str(st.working_orders),
            "pnl_today": money(st.pnl_today, signed=True), "pnl_total": money(st.pnl_total, signed=True),
        }
        for key, text in values.items():
            item = self.table.item(row, _COL[key])
            if item is None:
                continue
            if item.text() != text:
                item.setText(text)
            if key in ("open_trades", "working", "pnl_today", "pnl_total", "confidence"):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.table.item(row, _COL["id"]).setData(Qt.ItemDataRole.UserRole, st.strategy_id)
        state = self.table.item(row, _COL["state"])
        state.setForeground(STATE_COLOURS.get(st.state, STATE_COLOURS["stopped"]))
        bold = state.font()
        bold.setBold(True)
        state.setFont(bold)
        state.setToolTip(st.reason)
        mode = self.table.item(row, _COL["mode"])
        if st.mode == "live":
            mode.setBackground(LIVE_BG)
            mode.setForeground(QtGui.QColor("white"))
            mode.setFont(bold)
            mode.setToolTip("Trades on a live, real-money account")
        else:
            mode.setData(Qt.ItemDataRole.BackgroundRole, None)
            mode.setData(Qt.ItemDataRole.ForegroundRole, None)
            mode.setToolTip("Trades on the paper account")
        self.table.item(row, _COL["reason"]).setToolTip(self._reason(st))
        for key, v in (("pnl_today", st.pnl_today), ("pnl_total", st.pnl_total)):
            item = self.table.item(row, _COL[key])
            if math.isfinite(v) and round(v, 2) != 0:
                item.setForeground(PROFIT if v > 0 else LOSS)
            else:
                item.setData(Qt.ItemDataRole.ForegroundRole, None)

    @staticmethod
    def _reason(st: StrategyStatus) -> str:
        """The last signal's reason; for a strategy that is not running, why it is not (disabled: the error)."""
        sig = st.last_signal
        if st.state != "running" and st.reason:
            return st.reason
        return sig.reason if sig is not None else ""

    def _refresh_log(self) -> None:
        entries = eq.strategy_log(self.engine, self.selected_id) if self.selected_id else []
        key = (len(entries), entries[-1][1] if entries else "")
        if key == self._log_key and self.log_list.property("strategy") == self.selected_id:
            return
        self._log_key = key
        self.log_list.setProperty("strategy", self.selected_id)
        self.log_list.clear()
        for ts, text in reversed(entries):
            self.log_list.addItem(f"{format_market_time(ts)}  {text}")

    def current(self) -> StrategyStatus | None:
        return self.statuses.get(self.selected_id)

    def select(self, strategy_id: str) -> None:
        """Select a strategy's row (the parameter form and the log follow)."""
        ids = list(self.statuses)
        if strategy_id in ids:
            self.table.selectRow(ids.index(strategy_id))
        self.selected_id = strategy_id
        self._load_form()
        self._update_buttons()
        self._refresh_log()

    def _selection_changed(self) -> None:
        rows = {i.row() for i in self.table.selectedIndexes()}
        ids = list(self.statuses)
        if len(rows) == 1 and (r := rows.pop()) < len(ids) and ids[r] != self.selected_id:
            self.select(ids[r])

    def _update_buttons(self) -> None:
        st = self.current()
        usable = st is not None and eq.strategy_params_model(st.name) is not None
        state = st.state if st is not None else ""
        self.start_button.setEnabled(usable and state != "running")
        self.pause_button.setEnabled(usable and state == "running")
        self.stop_button.setEnabled(usable and state in ("running", "paused"))
        self.live_button.setEnabled(usable)
        self.live_button.setText("Back to paper" if st is not None and st.mode == "live" else "Trade live…")
        self.backtest_button.setEnabled(usable)
        self.apply_button.setEnabled(usable)
        self.reset_button.setEnabled(usable)

    def _load_form(self, force: bool = False) -> None:
        """Fill the form with the selected strategy's parameters (not on every refresh: edits would be lost)."""
        st = self.current()
        sid = st.strategy_id if st is not None else ""
        if sid == self._form_for and not force:
            return
        self._form_for = sid
        self.params_box.setTitle(f"Parameters of {sid} ({st.name})" if st is not None else "Parameters")
        if st is None:
            self.form.load(None, {}, "Select a strategy in the table." if self.statuses else "No strategy to edit.")
            return
        model = eq.strategy_params_model(st.name)
        if model is None:
            self.form.load(None, {}, f"{st.strategy_id} cannot be edited here: {st.reason or 'unknown strategy'}")
            return
        self.form.load(model, dict(st.params))

    # ---- actions -----------------------------------------------------------------------------------
    def _say(self, text: str, *, error: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(ERROR_STYLE if error else OK_STYLE)
        if error:
            self.report_error(text)

    def _command(self, command: Any, done: str) -> None:
        def ok(result: Any) -> None:
            self._say(done.format(result=result), error=False)
            self.refresh()

        def refused(message: str) -> None:
            self._say(refusal_text(message), error=True)
            self.refresh()

        send_command(self.engine, command, on_error=refused, on_result=ok)

    def start_selected(self) -> None:
        st = self.current()
        if st is not None:
            self._command(StartStrategy(strategy_id=st.strategy_id), f"{st.strategy_id}: {{result}}")

    def pause_selected(self) -> None:
        st = self.current()
        if st is not None:
            self._command(PauseStrategy(strategy_id=st.strategy_id, reason="paused from the Strategies panel"),
                          f"{st.strategy_id}: {{result}}")

    def stop_selected(self, cancel_orders: bool = True) -> None:
        st = self.current()
        if st is not None:
            self._command(StopStrategy(strategy_id=st.strategy_id, cancel_orders=cancel_orders),
                          f"{st.strategy_id}: {{result}}" + ("" if cancel_orders else " (its orders keep working)"))

    def ask_stop(self) -> None:
        """Stop; with working orders, ask first whether they are cancelled or left working."""
        st = self.current()
        if st is None:
            return
        if st.working_orders == 0:
            self.stop_selected(cancel_orders=True)
            return
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("strategy_stop_box")
        box.setIcon(QtWidgets.QMessageBox.Icon.Question)
        box.setWindowTitle(f"Stop {st.strategy_id}")
        box.setText(f"{st.strategy_id} has {plural(st.working_orders, 'working order')}. Cancel them?")
        box.setInformativeText("Open trades stay in its books and in the account until it runs again.")
        cancel_all = box.addButton("Stop and cancel orders", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        keep = box.addButton("Stop, keep orders working", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)

        def answered(_result: int) -> None:
            clicked = box.clickedButton()
            if clicked is cancel_all:
                self.stop_selected(cancel_orders=True)
            elif clicked is keep:
                self.stop_selected(cancel_orders=False)

        box.finished.connect(answered)
        self.stop_box = box
        box.open()

    def toggle_live(self) -> None:
        """Back to paper at once; to live only through the confirmation naming the account."""
        st = self.current()
        if st is None:
            return
        if st.mode == "live":
            self._command(SetStrategyMode(strategy_id=st.strategy_id, mode="paper"),
                          f"{st.strategy_id} trades on the paper account")
            return
        dialog = LiveStrategyDialog(st.strategy_id, eq.strategy_live_accounts(self.engine), self)
        sid = st.strategy_id

        def answered(result: int) -> None:
            if result == QtWidgets.QDialog.DialogCode.Accepted:
                self._command(SetStrategyMode(strategy_id=sid, mode="live", confirm_account=dialog.account()),
                              f"{sid} trades live on account {dialog.account()}")

        dialog.finished.connect(answered)
        self.live_dialog = dialog
        dialog.open()

    def _on_form_changed(self) -> None:
        _params, errors = self.form.validate()
        self.form.show_errors(errors)

    def _validated(self) -> dict[str, Any] | None:
        params, errors = self.form.validate()
        self.form.show_errors(errors)
        if params is None:
            self._say(f"Not sent: {plural(len(errors), 'parameter')} to fix", error=True)
        return params

    def apply_params(self) -> None:
        """Send the edited parameters, only once the strategy's model accepts them."""
        st = self.current()
        if st is None:
            return
        params = self._validated()
        if params is None:
            return
        sid = st.strategy_id

        def ok(result: Any) -> None:
            self._say(f"{sid}: parameters applied (until restart; settings.toml keeps the saved ones)", error=False)
            self.refresh()
            self._load_form(force=True)

        def refused(message: str) -> None:
            self._say(refusal_text(message), error=True)

        send_command(self.engine, SetStrategyParams(strategy_id=sid, params=params), on_error=refused, on_result=ok)

    def backtest_selected(self) -> None:
        """The edited parameters (validated) to the Backtest panel, which runs them."""
        st = self.current()
        if st is None:
            return
        params = self._validated()
        if params is None:
            return
        self.links.backtest_requested.emit({"strategy": st.name, "params": params})
        self._say(f"Backtesting {st.name} with these parameters in the Backtest panel", error=False)

    # ---- engine events --------------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        """A strategy event or a report of one of its orders repaints at once; quiet batches wait for the timer."""
        if batch.has(StrategyStateChanged) or batch.has(StrategySignal) or batch.has(StrategyDisabled) or any(
                e.order.strategy_id for e in batch.events(OrderEvent)):
            self.refresh()

    def panel_state(self) -> dict[str, Any]:
        return {"selected": self.selected_id}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        sid = state.get("selected")
        if isinstance(sid, str) and sid in self.statuses:
            self.select(sid)
