"""Alert rules editor: the ``[notify]`` settings as two tables, secrets to the keyring, and "Send test".

Rules: one row each (enabled, name, kind, threshold, window, level, destinations). Destinations: one row
each (enabled, name, type, minimum level, and the type's other fields as JSON, e.g.
``{"host": "smtp.example.com", "port": 587, ...}``). Their secrets — SMTP password, Slack webhook URL,
Telegram bot token — go straight to the keyring through "Set secret…", never into the settings file.

Save validates the whole section with :class:`engine.notify.config.NotifyConfig` (errors in red, nothing
written until valid), writes the settings file and reconfigures the running notifier at once. "Send test"
tests the selected destination *as edited*, before it is saved.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from PySide6 import QtCore, QtWidgets

from engine.notify.config import (
    METRIC_LABEL,
    THRESHOLD_MEANING,
    USER_METRICS,
    AlertRule,
    NotifyConfig,
    UserAlertRule,
    secret_name,
)
from widgets import engine_queries as eq
from widgets.base import qt_alive, send_command

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)

KINDS = list(THRESHOLD_MEANING)
LEVELS = ["info", "warning", "error", "critical"]
TYPES = ["email", "webhook", "desktop"]
RULE_COLUMNS = ["On", "Name", "Kind", "Threshold", "Window (s)", "Level", "Destinations"]
DEST_COLUMNS = ["On", "Name", "Type", "Min level", "Fields (JSON)"]
USER_COLUMNS = ["On", "Name", "Target", "Symbol", "Metric", "Condition", "Value", "Repeat", "Level", "Destinations",
                "State"]
TARGETS = list(USER_METRICS)
METRICS = list(METRIC_LABEL)
OPERATORS = ["above", "below", "crosses"]
REPEATS = ["once", "every"]
#: which keyring entry "Set secret…" writes for a destination
SECRET_FIELD = {"email": "password", "slack": "url", "telegram": "token", "generic": "token"}


def _combo(options: list[str], current: str) -> QtWidgets.QComboBox:
    box = QtWidgets.QComboBox()
    box.addItems(options)
    box.setCurrentText(current)
    return box


def _check(on: bool) -> QtWidgets.QTableWidgetItem:
    item = QtWidgets.QTableWidgetItem()
    item.setFlags(QtCore.Qt.ItemFlag.ItemIsUserCheckable | QtCore.Qt.ItemFlag.ItemIsEnabled
                  | QtCore.Qt.ItemFlag.ItemIsSelectable)
    item.setCheckState(QtCore.Qt.CheckState.Checked if on else QtCore.Qt.CheckState.Unchecked)
    return item


def _checked(item: QtWidgets.QTableWidgetItem | None) -> bool:
    return item is not None and item.checkState() == QtCore.Qt.CheckState.Checked


def _text(table: QtWidgets.QTableWidget, row: int, col: int) -> str:
    item = table.item(row, col)
    return item.text().strip() if item is not None else ""


class AlertRulesDialog(QtWidgets.QDialog):
    saved = QtCore.Signal(str)
    #: (destination, ok, message) when a test notification finished
    tested = QtCore.Signal(str, bool, str)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Alert rules and notifications")
        self.setObjectName("alertRulesDialog")
        self.resize(920, 640)
        self.engine = engine
        self.config: NotifyConfig = eq.settings(engine).notify
        #: what the last save could not apply to the running engine (waits for the next start)
        self.at_restart: tuple[str, ...] = ()
        self.last_saved: NotifyConfig | None = None
        self._test_task: asyncio.Task[Any] | None = None
        outer = QtWidgets.QVBoxLayout(self)
        self.tabs = QtWidgets.QTabWidget()
        system_page = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(system_page)

        top = QtWidgets.QHBoxLayout()
        self.enabled = QtWidgets.QCheckBox("Notifications on")
        self.enabled.setChecked(self.config.enabled)
        top.addWidget(self.enabled)
        self.dedupe = QtWidgets.QDoubleSpinBox(minimum=0, maximum=86_400, decimals=0, suffix=" s")
        self.dedupe.setValue(self.config.dedupe_s)
        self.per_hour = QtWidgets.QSpinBox(minimum=1, maximum=3600)
        self.per_hour.setValue(self.config.max_per_hour)
        self.attempts = QtWidgets.QSpinBox(minimum=1, maximum=10)
        self.attempts.setValue(self.config.attempts)
        for label, w in (("same rule silenced for", self.dedupe), ("max per destination per hour", self.per_hour),
                         ("attempts", self.attempts)):
            top.addWidget(QtWidgets.QLabel(label))
            top.addWidget(w)
        top.addStretch(1)
        lay.addLayout(top)

        lay.addWidget(QtWidgets.QLabel("<b>Rules</b> — threshold meaning: " + "; ".join(
            f"{k}: {v}" for k, v in THRESHOLD_MEANING.items() if not v.startswith("("))))
        self.rules = QtWidgets.QTableWidget(0, len(RULE_COLUMNS))
        self.rules.setHorizontalHeaderLabels(RULE_COLUMNS)
        self.rules.horizontalHeader().setStretchLastSection(True)
        lay.addWidget(self.rules, 3)
        rb = QtWidgets.QHBoxLayout()
        self.add_rule_btn = QtWidgets.QPushButton("Add rule")
        self.add_rule_btn.clicked.connect(lambda: self.add_rule_row(AlertRule(
            name=f"rule-{self.rules.rowCount() + 1}", kind="kill_switch")))
        self.remove_rule_btn = QtWidgets.QPushButton("Remove rule")
        self.remove_rule_btn.clicked.connect(lambda: self.rules.removeRow(self.rules.currentRow()))
        rb.addWidget(self.add_rule_btn)
        rb.addWidget(self.remove_rule_btn)
        rb.addStretch(1)
        lay.addLayout(rb)

        lay.addWidget(QtWidgets.QLabel("<b>Destinations</b> — secrets (SMTP password, Slack URL, Telegram token) "
                                       "go to the keyring with <i>Set secret…</i>"))
        self.dests = QtWidgets.QTableWidget(0, len(DEST_COLUMNS))
        self.dests.setHorizontalHeaderLabels(DEST_COLUMNS)
        self.dests.horizontalHeader().setStretchLastSection(True)
        self.dests.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        lay.addWidget(self.dests, 2)
        db = QtWidgets.QHBoxLayout()
        for text, fn in (("Add e-mail", self._add_email), ("Add webhook", self._add_webhook),
                         ("Remove", lambda: self.dests.removeRow(self.dests.currentRow())),
                         ("Set secret…", self.ask_secret), ("Send test", self.send_test_selected)):
            b = QtWidgets.QPushButton(text)
            b.clicked.connect(fn)
            db.addWidget(b)
            setattr(self, {"Send test": "send_test_btn", "Set secret…": "secret_btn"}.get(text, f"_btn_{text}"), b)
        db.addStretch(1)
        lay.addLayout(db)
        self.tabs.addTab(self._build_user_page(), "My alerts")
        self.tabs.addTab(system_page, "Engine rules and destinations")
        outer.addWidget(self.tabs, 1)
        lay = outer

        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("alertRulesStatus")
        lay.addWidget(self.status)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Save
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

        for r in self.config.rules:
            self.add_rule_row(r)
        for d in self.config.destinations:
            self.add_destination_row(d.model_dump(mode="json"))
        for u in self.config.user_rules:
            self.add_user_rule_row(u)
        self.refresh_user_states()

    # ---- my alerts --------------------------------------------------------------------------------
    def _build_user_page(self) -> QtWidgets.QWidget:
        page = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(page)
        intro = QtWidgets.QLabel(
            "Your own conditions, checked by the engine on every price, surface fit, account update and clock "
            "tick. <b>Target</b>: a symbol (last price, ATM IV in %, IV rank 0–100), the positions of one "
            "underlying (Greeks) or the whole portfolio (Greeks, P&amp;L today). <b>once</b> fires a single time "
            "until you re-arm it; <b>every</b> fires at each new crossing. Alerts appear in the Alerts panel, on "
            "the desktop and at the destinations named (empty: all).")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.user_rules = QtWidgets.QTableWidget(0, len(USER_COLUMNS))
        self.user_rules.setHorizontalHeaderLabels(USER_COLUMNS)
        self.user_rules.horizontalHeader().setStretchLastSection(True)
        self.user_rules.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        for col, width in ((0, 34), (1, 120), (2, 90), (3, 70), (4, 160), (5, 80), (6, 80), (7, 70), (8, 80),
                           (9, 100)):
            self.user_rules.setColumnWidth(col, width)
        lay.addWidget(self.user_rules, 1)
        ub = QtWidgets.QHBoxLayout()
        self.add_user_btn = QtWidgets.QPushButton("Add alert")
        self.add_user_btn.clicked.connect(self._add_user_default)
        self.remove_user_btn = QtWidgets.QPushButton("Remove alert")
        self.remove_user_btn.clicked.connect(lambda: self.user_rules.removeRow(self.user_rules.currentRow()))
        self.rearm_btn = QtWidgets.QPushButton("Re-arm")
        self.rearm_btn.setToolTip("Arm the selected alert again after it fired (all fired alerts without a selection)")
        self.rearm_btn.clicked.connect(self.rearm_selected)
        for b in (self.add_user_btn, self.remove_user_btn, self.rearm_btn):
            ub.addWidget(b)
        ub.addStretch(1)
        lay.addLayout(ub)
        return page

    def _add_user_default(self) -> None:
        symbol = next(iter(eq.underlyings(self.engine)), "SPY")
        price = eq.last_price(self.engine, symbol)
        self.add_user_rule_row(UserAlertRule(name=f"alert-{self.user_rules.rowCount() + 1}", symbol=symbol,
                                             metric="last", op="crosses", value=round(price or 100.0, 2)))

    def add_user_rule_row(self, r: UserAlertRule) -> int:
        t = self.user_rules
        row = t.rowCount()
        t.insertRow(row)
        t.setItem(row, 0, _check(r.enabled))
        t.setItem(row, 1, QtWidgets.QTableWidgetItem(r.name))
        t.setCellWidget(row, 2, _combo(TARGETS, r.target))
        t.setItem(row, 3, QtWidgets.QTableWidgetItem(r.symbol))
        metric = _combo(METRICS, r.metric)
        for i, m in enumerate(METRICS):
            metric.setItemData(i, METRIC_LABEL[m], QtCore.Qt.ItemDataRole.ToolTipRole)
        t.setCellWidget(row, 4, metric)
        t.setCellWidget(row, 5, _combo(OPERATORS, r.op))
        t.setItem(row, 6, QtWidgets.QTableWidgetItem(f"{r.value:g}"))
        t.setCellWidget(row, 7, _combo(REPEATS, r.repeat))
        t.setCellWidget(row, 8, _combo(LEVELS, r.level))
        t.setItem(row, 9, QtWidgets.QTableWidgetItem(", ".join(r.destinations)))
        state = QtWidgets.QTableWidgetItem("not saved")
        state.setFlags(QtCore.Qt.ItemFlag.ItemIsEnabled | QtCore.Qt.ItemFlag.ItemIsSelectable)
        t.setItem(row, 10, state)
        return row

    def refresh_user_states(self) -> None:
        """Show, per saved alert, whether the engine holds it armed and what it last saw."""
        states = eq.user_alert_states(self.engine)
        for row in range(self.user_rules.rowCount()):
            st = states.get(_text(self.user_rules, row, 1))
            item = self.user_rules.item(row, 10)
            if item is None:
                continue
            if st is None:
                item.setText("off" if not _checked(self.user_rules.item(row, 0)) else "not saved")
                continue
            armed, fired, last = st
            seen = f", last {last:,.4g}" if last == last else ""
            item.setText(("armed" if armed else "fired — re-arm") + (f" ({fired}×{seen})" if fired else seen))

    def rearm_selected(self) -> None:
        from engine.notify.user_rules import RearmUserAlert

        row = self.user_rules.currentRow()
        name = _text(self.user_rules, row, 1) if row >= 0 else ""

        def done(names: list[str]) -> None:
            if qt_alive(self):
                self.refresh_user_states()
                self._say(f"re-armed: {', '.join(names)}" if names else "no alert was waiting to be re-armed")

        send_command(self.engine, RearmUserAlert(name=name), on_result=done,
                     on_error=lambda message: self._say(f"not re-armed: {message}", ok=False))

    def user_form_data(self) -> list[dict[str, Any]]:
        t = self.user_rules
        out = []
        for row in range(t.rowCount()):
            name = _text(t, row, 1)
            try:
                value = float(_text(t, row, 6))
            except ValueError as exc:
                raise ValueError(f"alert {name or row + 1}: the value must be a number") from exc
            out.append({"name": name, "enabled": _checked(t.item(row, 0)), "target": t.cellWidget(row, 2).currentText(),
                        "symbol": _text(t, row, 3), "metric": t.cellWidget(row, 4).currentText(),
                        "op": t.cellWidget(row, 5).currentText(), "value": value,
                        "repeat": t.cellWidget(row, 7).currentText(), "level": t.cellWidget(row, 8).currentText(),
                        "destinations": [d.strip() for d in _text(t, row, 9).split(",") if d.strip()]})
        return out

    # ---- rows -----------------------------------------------------------------------------------
    def add_rule_row(self, r: AlertRule) -> int:
        row = self.rules.rowCount()
        self.rules.insertRow(row)
        self.rules.setItem(row, 0, _check(r.enabled))
        self.rules.setItem(row, 1, QtWidgets.QTableWidgetItem(r.name))
        self.rules.setCellWidget(row, 2, _combo(KINDS, r.kind))
        self.rules.setItem(row, 3, QtWidgets.QTableWidgetItem(f"{r.threshold:g}"))
        self.rules.setItem(row, 4, QtWidgets.QTableWidgetItem(f"{r.window_s:g}"))
        self.rules.setCellWidget(row, 5, _combo(LEVELS, r.level))
        self.rules.setItem(row, 6, QtWidgets.QTableWidgetItem(", ".join(r.destinations)))
        return row

    def add_destination_row(self, data: dict[str, Any]) -> int:
        data = dict(data)
        row = self.dests.rowCount()
        self.dests.insertRow(row)
        self.dests.setItem(row, 0, _check(bool(data.pop("enabled", True))))
        self.dests.setItem(row, 1, QtWidgets.QTableWidgetItem(str(data.pop("name", ""))))
        self.dests.setCellWidget(row, 2, _combo(TYPES, str(data.pop("type", "webhook"))))
        self.dests.setCellWidget(row, 3, _combo(LEVELS, str(data.pop("min_level", "warning"))))
        self.dests.setItem(row, 4, QtWidgets.QTableWidgetItem(json.dumps(data)))
        return row

    def _add_email(self) -> None:
        self.add_destination_row({"type": "email", "name": f"email-{self.dests.rowCount() + 1}",
                                  "host": "smtp.example.com", "port": 587, "security": "starttls", "username": "",
                                  "sender": "optiondesk@example.com", "recipients": ["you@example.com"]})

    def _add_webhook(self) -> None:
        self.add_destination_row({"type": "webhook", "name": f"webhook-{self.dests.rowCount() + 1}",
                                  "format": "slack"})

    # ---- form → config ----------------------------------------------------------------------------
    def form_data(self) -> dict[str, Any]:
        """The form as the ``[notify]`` mapping; raises ValueError naming a cell that is not even parseable."""
        rules = []
        for row in range(self.rules.rowCount()):
            name = _text(self.rules, row, 1)
            try:
                threshold, window = float(_text(self.rules, row, 3) or 0), float(_text(self.rules, row, 4) or 300)
            except ValueError as exc:
                raise ValueError(f"rule {name or row + 1}: threshold and window must be numbers") from exc
            rules.append({"name": name, "enabled": _checked(self.rules.item(row, 0)),
                          "kind": self.rules.cellWidget(row, 2).currentText(), "threshold": threshold,
                          "window_s": window, "level": self.rules.cellWidget(row, 5).currentText(),
                          "destinations": [d.strip() for d in _text(self.rules, row, 6).split(",") if d.strip()]})
        dests = []
        for row in range(self.dests.rowCount()):
            name = _text(self.dests, row, 1)
            try:
                fields = json.loads(_text(self.dests, row, 4) or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(f"destination {name or row + 1}: fields are not valid JSON ({exc.msg})") from exc
            if not isinstance(fields, dict):
                raise ValueError(f"destination {name or row + 1}: fields must be a JSON object")
            dests.append({**fields, "name": name, "enabled": _checked(self.dests.item(row, 0)),
                          "type": self.dests.cellWidget(row, 2).currentText(),
                          "min_level": self.dests.cellWidget(row, 3).currentText()})
        return {"enabled": self.enabled.isChecked(), "rules": rules, "destinations": dests,
                "user_rules": self.user_form_data(),
                "dedupe_s": self.dedupe.value(), "max_per_hour": self.per_hour.value(),
                "attempts": self.attempts.value(), "backoff_s": self.config.backoff_s}

    def validate_form(self) -> NotifyConfig | None:
        try:
            cfg = NotifyConfig.model_validate(self.form_data())
        except (ValueError, ValidationError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else None
            text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors) if errors else str(exc)
            self._say(text, ok=False)
            return None
        return cfg

    def _say(self, text: str, ok: bool = True) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("" if ok else "color: #f56c6c;")

    # ---- actions --------------------------------------------------------------------------------
    def save(self) -> None:
        cfg = self.validate_form()
        if cfg is None:
            return
        if self.engine is None:  # nothing runs: the form is all there is
            self.last_saved = cfg
            self.saved.emit("")
            self.accept()
            return
        from engine.bus.commands import ApplySettings, SettingsApplied

        def applied(result: SettingsApplied) -> None:
            if not qt_alive(self):
                return
            self.last_saved = cfg
            self.at_restart = result.at_restart
            self.saved.emit(result.path or "")
            self.accept()

        # the engine saves the file, swaps its settings and reconfigures the running notifier
        send_command(self.engine, ApplySettings(settings=self.engine.settings.model_copy(update={"notify": cfg})),
                     on_error=lambda message: self._say(f"not saved: {message}", ok=False), on_result=applied)

    def selected_destination(self) -> str:
        row = self.dests.currentRow()
        return _text(self.dests, row, 1) if row >= 0 else ""

    def secret_entry(self, destination: str) -> str | None:
        """The keyring entry "Set secret…" writes for ``destination`` as the form has it (None: no secret)."""
        for row in range(self.dests.rowCount()):
            if _text(self.dests, row, 1) != destination:
                continue
            kind = self.dests.cellWidget(row, 2).currentText()
            if kind == "desktop":
                return None
            try:
                fields = json.loads(_text(self.dests, row, 4) or "{}")
            except json.JSONDecodeError:
                fields = {}
            field = SECRET_FIELD["email"] if kind == "email" else SECRET_FIELD.get(fields.get("format", "slack"))
            return secret_name(destination, field) if field else None
        return None

    def ask_secret(self) -> None:
        name = self.selected_destination()
        entry = self.secret_entry(name) if name else None
        if entry is None:
            self._say("select an e-mail or webhook destination first", ok=False)
            return
        dlg = QtWidgets.QInputDialog(self)
        dlg.setWindowTitle("Store secret")
        dlg.setLabelText(f"{entry} (stored in the OS keyring, never in the settings):")
        dlg.setTextEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        dlg.textValueSelected.connect(lambda value: self.store_secret(entry, value))
        dlg.open()

    def store_secret(self, entry: str, value: str) -> None:
        from engine.credentials import CredentialStore

        if not value.strip():
            self._say("an empty secret was not stored", ok=False)
            return
        if self.engine is None:
            self._say("no engine is running: the secret was not stored", ok=False)
            return
        if self.engine.credentials is None:
            self.engine.credentials = CredentialStore()
        where = self.engine.credentials.set(entry, value)
        note = "" if where == "keyring" else " — no keyring on this machine: kept for this session only"
        self._say(f"{entry} stored ({where}){note}")

    def send_test_selected(self) -> asyncio.Task[Any] | None:
        name = self.selected_destination()
        if not name:
            self._say("select a destination to test", ok=False)
            return None
        cfg = self.validate_form()
        if cfg is None:
            return None
        return self.send_test(cfg, name)

    def send_test(self, cfg: NotifyConfig, name: str) -> asyncio.Task[Any]:
        from engine.notify.notifier import NotifyError, send_test

        self._say(f"sending a test notification to {name}…")
        self.send_test_btn.setEnabled(False)
        engine = self.engine
        from engine.clock import WallClock

        secret: Callable[[str], str | None] = engine.secret if engine is not None else (lambda _n: None)
        now = engine.now if engine is not None else WallClock().now
        bus = engine.bus if engine is not None else None

        async def run() -> None:
            try:
                message = await send_test(cfg, name, secrets=secret, now=now, bus=bus)
            except NotifyError as exc:
                self._finish(name, False, f"test to {name} failed: {exc}")
            except Exception as exc:
                log.exception("test notification to %s", name)
                self._finish(name, False, f"test to {name} failed: {type(exc).__name__}: {exc}")
            else:
                self._finish(name, True, message)

        self._test_task = asyncio.get_event_loop().create_task(run(), name=f"notify-test:{name}")
        return self._test_task

    def _finish(self, name: str, ok: bool, message: str) -> None:
        self.send_test_btn.setEnabled(True)
        self._say(message, ok=ok)
        self.tested.emit(name, ok, message)

    def done(self, result: int) -> None:
        if self._test_task is not None and not self._test_task.done():
            self._test_task.cancel()
        super().done(result)
