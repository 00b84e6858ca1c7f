"""The toolbar's kill switch: trip to HALTED at once, kill and flatten, and the confirmed reset.

Tripping never asks (the shortcut only ever trips, so pressing it twice cannot reset); flattening and the
reset ask first in non-modal dialogs (``open()`` and ``finished``), and the engine persists and audits all
three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from app.toolbar_support import has_handler
from engine.bus.commands import ResetKillSwitch, TripKillSwitch
from engine.bus.events import KillSwitchReset, KillSwitchTripped, TradingStateChanged
from widgets import engine_queries as eq
from widgets.base import EventBatch, send_command

if TYPE_CHECKING:
    from engine.core import Engine

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"


def _state_name(value: Any) -> str:
    name = getattr(value, "value", value)
    return str(name or ACTIVE).upper()


class KillSwitchControl(QtWidgets.QWidget):
    """The big red button. ACTIVE/REDUCING → click (or Ctrl+Shift+K) trips to HALTED at once.

    HALTED → click asks for confirmation (non-modal ``open()``) and then sends ``ResetKillSwitch``.
    The shortcut only ever trips, so pressing it twice can never reset. The auto-trip reason is shown
    under the button and in its tooltip.
    """

    SHORTCUT = "Ctrl+Shift+K"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("killSwitch")
        self.state = ACTIVE
        self.reason = ""
        self.last_error = ""
        self.confirm_dialog: QtWidgets.QMessageBox | None = None
        self.flatten_dialog: QtWidgets.QMessageBox | None = None

        self.button = QtWidgets.QPushButton()
        self.button.setObjectName("killSwitchButton")
        self.button.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)
        self.button.setMinimumSize(150, 46)
        self.button.clicked.connect(self.on_click)
        self.reason_label = QtWidgets.QLabel("")
        self.reason_label.setObjectName("killSwitchReason")
        self.reason_label.setMaximumWidth(260)
        lay = QtWidgets.QVBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        self.flatten_button = QtWidgets.QPushButton("Kill and flatten…")
        self.flatten_button.setObjectName("killFlattenButton")
        self.flatten_button.setFlat(True)
        self.flatten_button.setToolTip("Halt trading, cancel every order and close every position (asks first)")
        self.flatten_button.clicked.connect(self.ask_kill_and_flatten)
        lay.addWidget(self.button)
        lay.addWidget(self.flatten_button)
        lay.addWidget(self.reason_label)
        self.setLayout(lay)

        status = eq.trading_status(engine)
        if status is not None:
            self.state = _state_name(status.state)
            self.reason = status.reason if self.state != ACTIVE else ""
        self._render()

    @staticmethod
    def available(engine: Engine | None) -> bool:
        return has_handler(engine, TripKillSwitch) and has_handler(engine, ResetKillSwitch)

    def on_click(self) -> None:
        if self.state == HALTED:
            self.ask_reset()
        else:
            self.trip("manual: toolbar kill switch")

    def trip(self, reason: str = "manual: Ctrl+Shift+K") -> None:
        if self.state == HALTED:
            return
        send_command(self.engine, TripKillSwitch(reason=reason, by="user"), on_error=self._on_error)

    def ask_kill_and_flatten(self) -> None:
        """Kill and flatten asks first (it sends closing orders for every position), in its own dialog."""
        if self.flatten_dialog is not None and self.flatten_dialog.isVisible():
            return
        box = QtWidgets.QMessageBox(self.window())
        box.setObjectName("killFlattenDialog")
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Kill and flatten?")
        box.setText("<b>Halt trading and close every position?</b>")
        box.setInformativeText(
            "Trading goes to HALTED, every open order is cancelled, then every position is closed with marketable "
            "limit orders (through the touch). Spreads close as one combo order.")
        go = box.addButton("Kill and flatten", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Cancel", QtWidgets.QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.NoButton)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.flatten_dialog = box

        def done(_result: int) -> None:
            if box.clickedButton() is go:
                self.confirm_kill_and_flatten()
            self.flatten_dialog = None

        box.finished.connect(done)
        box.open()

    def confirm_kill_and_flatten(self) -> None:
        send_command(self.engine, TripKillSwitch(reason="manual: kill and flatten", by="user", flatten=True),
                     on_error=self._on_error)

    def ask_reset(self) -> None:
        if self.confirm_dialog is not None and self.confirm_dialog.isVisible():
            return
        box = QtWidgets.QMessageBox(self.window())
        box.setObjectName("killSwitchResetDialog")
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Reset kill switch?")
        box.setText("<b>Resume trading?</b>")
        why = f"It was tripped: {self.reason}." if self.reason else "It was tripped."
        box.setInformativeText(
            f"{why}\n\nResetting returns the trading state to ACTIVE: new orders will be accepted again."
        )
        reset = box.addButton("Reset to ACTIVE", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep HALTED", QtWidgets.QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.NoButton)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.confirm_dialog = box

        def done(_result: int) -> None:
            if box.clickedButton() is reset:
                self.confirm_reset()
            self.confirm_dialog = None

        box.finished.connect(done)
        box.open()

    def confirm_reset(self) -> None:
        send_command(self.engine, ResetKillSwitch(by="user", confirmed=True), on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.last_error = message
        self.reason_label.setText(f"⚠ {message}")

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for ev in batch.events(TradingStateChanged):
            self.state = _state_name(ev.state)
            # the state change comes before the trip's own event (which names who tripped it, after the
            # cancels): name the tripper from the engine's status now, and never erase it with the bare reason
            if ev.reason:
                by = self._tripped_by() if self.state == HALTED else ""
                reason = f"{ev.reason} (by {by})" if by and by != "user" else ev.reason
                if not self.reason.startswith(reason):
                    self.reason = reason
            changed = True
        for ev in batch.events(KillSwitchTripped):
            self.state = HALTED
            self.reason = f"{ev.reason} (by {ev.by})" if ev.by and ev.by != "user" else ev.reason
            changed = True
        for _ev in batch.events(KillSwitchReset):
            self.state = ACTIVE
            self.reason = ""
            changed = True
        if changed:
            self._render()

    def _tripped_by(self) -> str:
        status = eq.trading_status(self.engine)
        return status.by if status is not None else ""

    def _render(self) -> None:
        self.button.setProperty("tradingState", self.state)
        if self.state == HALTED:
            self.button.setText("TRADING HALTED\nclick to reset…")
            self.button.setToolTip(f"Trading HALTED: {self.reason or 'kill switch tripped'}. Click to reset (asks first).")
        elif self.state == REDUCING:
            self.button.setText("■ HALT TRADING\nnow: reducing only")
            self.button.setToolTip(f"Only exposure-reducing orders pass. {self.reason} — click or {self.SHORTCUT} to HALT.")
        else:
            # the button names its action; the second line the state — "KILL SWITCH ACTIVE" read as tripped
            self.button.setText("■ HALT TRADING\nnow: trading normally")
            self.button.setToolTip(f"Trading ACTIVE. Click or press {self.SHORTCUT} to halt all trading at once.")
        self.reason_label.setText(self.reason if self.state != ACTIVE else "")
        self.reason_label.setVisible(self.state != ACTIVE)
        self.button.style().unpolish(self.button)
        self.button.style().polish(self.button)
