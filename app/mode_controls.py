"""The toolbar's paper/live toggle and manual-approval switch: where orders go and whether a human approves them.

Both only send ``SwitchMode`` / ``SetApprovalMode`` and render the engine's answer; the engine re-checks the
live preconditions and forces approval on in live mode, so the controls never decide either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from app.toolbar_support import has_handler
from engine.bus.commands import SetApprovalMode, SwitchMode
from engine.bus.events import ApprovalModeChanged, ModeChanged
from widgets import engine_queries as eq
from widgets.base import EventBatch, send_command

if TYPE_CHECKING:
    from engine.core import Engine


class ModeControl(QtWidgets.QWidget):
    """One-click Paper/Live toggle.

    Going live: the preconditions (stored credentials, a connected live-capable broker with an account,
    no working orders) are checked first and a refusal is shown with its reason; otherwise a non-modal
    confirmation names broker and account, and only its confirmation sends ``SwitchMode`` carrying the
    account id. Going back to paper needs no confirmation. The engine re-checks everything.
    """

    mode_changed = QtCore.Signal(str)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("modeToggle")
        self.mode = eq.mode(engine)
        self.account_label = ""
        self.last_refusal = ""
        self.confirm_dialog: QtWidgets.QDialog | None = None

        self.button = QtWidgets.QPushButton()
        self.button.setObjectName("modeButton")
        self.button.setMinimumSize(96, 46)
        self.button.setCursor(QtCore.Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self.toggle)
        self.note = QtWidgets.QLabel("")
        self.note.setObjectName("modeNote")
        self.note.setWordWrap(False)
        lay = QtWidgets.QVBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        lay.addWidget(self.button)
        lay.addWidget(self.note)
        self.setLayout(lay)
        self._render()

    @staticmethod
    def available(engine: Engine | None) -> bool:
        return has_handler(engine, SwitchMode)

    def toggle(self) -> None:
        if self.mode == "live":
            send_command(self.engine, SwitchMode(mode="paper", broker="paper"), on_error=self._refused)
            return
        from app.live_mode import live_switch_check

        check = live_switch_check(self.engine)
        if not check.ok:
            self._refused(check.reason)
            return
        from app.dialogs.live_confirm import LiveConfirmDialog

        dlg = LiveConfirmDialog(check.broker, check.account_id, check.account_label, check.server, self.window())
        self.confirm_dialog = dlg

        def done(result: int) -> None:
            if result == QtWidgets.QDialog.DialogCode.Accepted:
                send_command(
                    self.engine,
                    SwitchMode(mode="live", broker=check.broker, confirmed_account_id=check.account_id),
                    on_error=self._refused,
                )
            self.confirm_dialog = None

        dlg.finished.connect(done)
        dlg.open()

    def _refused(self, reason: str) -> None:
        self.last_refusal = reason
        self.note.setText(f"⚠ {reason}")
        self.note.setToolTip(reason)
        QtWidgets.QToolTip.showText(self.button.mapToGlobal(QtCore.QPoint(0, self.button.height())), f"Live refused: {reason}", self.button)

    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.events(ModeChanged):
            self.mode = ev.mode.lower()
            self.account_label = f"{ev.broker} {ev.account_id}".strip() if self.mode == "live" else ""
            self.last_refusal = ""
            self.note.setToolTip("")
            self._render()
            self.mode_changed.emit(self.mode)

    def _render(self) -> None:
        live = self.mode == "live"
        self.button.setProperty("mode", "live" if live else "paper")
        self.button.setText("● LIVE" if live else "PAPER")
        self.button.setToolTip("Live trading — click to return to paper." if live else "Paper trading — click to go live (asks first).")
        if live:
            self.note.setText(self.account_label)
        elif not self.last_refusal:
            self.note.setText("")
        self.button.style().unpolish(self.button)
        self.button.style().polish(self.button)


# ---- approval ---------------------------------------------------------------------------------------
class ApprovalControl(QtWidgets.QWidget):
    """Manual approval on/off (the engine forces it on when going live)."""

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("approvalToggle")
        self.enabled = eq.approval_required(engine)
        self.last_error = ""
        self.box = QtWidgets.QCheckBox("Manual approval")
        self.box.setObjectName("approvalCheck")
        self.box.setToolTip("When on, every order waits in the Approval queue until you approve it.")
        self.box.setChecked(self.enabled)
        self.box.toggled.connect(self._on_toggled)
        lay = QtWidgets.QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.box)
        self.setLayout(lay)

    @staticmethod
    def available(engine: Engine | None) -> bool:
        return has_handler(engine, SetApprovalMode)

    def _show(self, enabled: bool) -> None:
        self.enabled = enabled
        self.box.blockSignals(True)
        self.box.setChecked(enabled)
        self.box.blockSignals(False)

    def _on_toggled(self, checked: bool) -> None:
        send_command(self.engine, SetApprovalMode(enabled=checked), on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.last_error = message
        self._show(self.enabled)
        self.box.setToolTip(f"⚠ {message}")

    def apply_events(self, batch: EventBatch) -> None:
        for ev in batch.events(ApprovalModeChanged):
            self._show(bool(ev.enabled))
        if batch.events(ModeChanged):  # each mode has its own setting (forced on in live)
            self._show(eq.approval_required(self.engine))
