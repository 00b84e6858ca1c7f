"""The always-visible trading toolbar: risk slider, kill switch, paper/live, approval, connections, account.

Every control is built against the engine component that makes it work and only appears when that
component exists (``engine.bus.has_handler(<Command>)`` or the component attribute): the toolbar never
shows a control that does nothing. Controls render engine events (``apply_events``) and send commands
(:func:`widgets.base.send_command`); none holds trading logic.

No modal ``exec()`` anywhere: confirmations use ``QDialog.open()`` and the ``finished`` signal.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from engine.bus.commands import ResetKillSwitch, SetApprovalMode, SetRiskLevel, SwitchMode, TripKillSwitch
from engine.bus.events import (
    AccountUpdated,
    ApprovalModeChanged,
    ConnectionStateChanged,
    KillSwitchReset,
    KillSwitchTripped,
    ModeChanged,
    RiskProfileChanged,
    TradingStateChanged,
)
from engine.credentials import mask_account
from widgets import engine_queries as eq
from widgets.base import EventBatch, send_command

if TYPE_CHECKING:
    from engine.core import Engine

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"


def _has_handler(engine: Engine | None, command_type: type) -> bool:
    bus = engine.bus if engine is not None else None
    return bool(bus is not None and bus.has_handler(command_type))


def fmt_money(value: Any, signed: bool = False) -> str:
    """``$12,345`` (or ``+$1,234`` / ``−$1,234`` when signed); ``—`` for None/NaN."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    body = f"${abs(v):,.0f}"
    if signed:
        return ("+" if v > 0 else "−" if v < 0 else "") + body
    return ("−" if v < 0 else "") + body


def _state_name(value: Any) -> str:
    name = getattr(value, "value", value)
    return str(name or ACTIVE).upper()


# ---- risk slider ------------------------------------------------------------------------------------
class RiskSliderControl(QtWidgets.QWidget):
    """Slider 0–100 with Low / Moderate / High marks and a live readout of the resulting limits.

    Moving the slider sends ``SetRiskLevel`` (debounced 150 ms); the readout shows what the engine
    answers with (``RiskProfileChanged``), in dollars once the account's net liquidation is known.
    """

    DEBOUNCE_MS = 150

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("riskSlider")
        self.profile: Any = None
        self.net_liq: float | None = None
        self.last_error = ""

        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setObjectName("riskSliderBar")
        self.slider.setRange(0, 100)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(10)
        self.slider.setTickPosition(QtWidgets.QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(50)
        self.slider.setMinimumWidth(200)
        self.slider.setToolTip("Risk level 0–100: Low (0), Moderate (50), High (100). Limits interpolate between presets.")
        self.value_label = QtWidgets.QLabel("50")
        self.value_label.setObjectName("riskValue")
        self.value_label.setMinimumWidth(28)
        marks = QtWidgets.QHBoxLayout()
        marks.setContentsMargins(0, 0, 0, 0)
        for i, text in enumerate(("Low", "Moderate", "High")):
            lab = QtWidgets.QLabel(text)
            lab.setObjectName("riskMark")
            lab.setAlignment(
                (QtCore.Qt.AlignmentFlag.AlignLeft, QtCore.Qt.AlignmentFlag.AlignHCenter, QtCore.Qt.AlignmentFlag.AlignRight)[i]
            )
            marks.addWidget(lab, 1)
        self.readout = QtWidgets.QLabel("")
        self.readout.setObjectName("riskReadout")

        col = QtWidgets.QVBoxLayout()
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        top = QtWidgets.QHBoxLayout()
        title = QtWidgets.QLabel("RISK")
        title.setObjectName("toolbarCaption")
        top.addWidget(title)
        top.addWidget(self.slider, 1)
        top.addWidget(self.value_label)
        col.addLayout(top)
        marks_row = QtWidgets.QHBoxLayout()
        marks_row.setContentsMargins(34, 0, 34, 0)
        marks_row.addLayout(marks)
        col.addLayout(marks_row)
        col.addWidget(self.readout)
        self.setLayout(col)

        self._debounce = QtCore.QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(self.DEBOUNCE_MS)
        self._debounce.timeout.connect(self._send_level)
        self.slider.valueChanged.connect(self._on_value)

        self.slider.blockSignals(True)
        self.slider.setValue(round(eq.risk_level(engine)))
        self.slider.blockSignals(False)
        self.value_label.setText(str(self.slider.value()))
        self.profile = engine.risk.profile if engine is not None and engine.risk is not None else None
        acct = eq.account(engine)
        self.net_liq = float(acct.net_liquidation) if acct is not None else None
        self._render()

    @staticmethod
    def available(engine: Engine | None) -> bool:
        return _has_handler(engine, SetRiskLevel)

    def set_level(self, level: int) -> None:
        """Move the slider (as a user would); the command follows after the debounce."""
        self.slider.setValue(int(level))

    def _on_value(self, value: int) -> None:
        self.value_label.setText(str(value))
        self._debounce.start()

    def _send_level(self) -> None:
        send_command(self.engine, SetRiskLevel(level=float(self.slider.value())), on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.last_error = message
        self.readout.setText(f"⚠ {message}")

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for ev in batch.events(RiskProfileChanged):
            self.profile = ev.profile
            if not self.slider.isSliderDown() and not self._debounce.isActive():
                self.slider.blockSignals(True)
                self.slider.setValue(round(float(ev.level)))
                self.slider.blockSignals(False)
                self.value_label.setText(str(self.slider.value()))
            changed = True
        for ev in batch.latest(AccountUpdated).values():
            if not in_use(self.engine, ev.account):
                continue
            nl = float(ev.account.net_liquidation)
            if nl != self.net_liq:
                self.net_liq = nl
                changed = True
        if changed:
            self._render()

    def readout_text(self) -> str:
        p = self.profile
        if p is None:
            return "limits: waiting for the risk engine"
        if self.net_liq and hasattr(p, "limits_in_dollars"):
            d = p.limits_in_dollars(self.net_liq)
            return (
                f"Max loss/trade {fmt_money(d['max_loss_per_trade'])} · Daily loss {fmt_money(d['max_daily_loss'])}"
                f" · Δ ≤ {p.max_delta:,.0f} · Vega ≤ {fmt_money(d['max_vega'])} · Pos ≤ {p.max_positions}"
            )
        return (
            f"Max loss/trade {p.risk_per_trade_pct:.1%} · Daily loss {p.max_daily_loss_pct:.1%}"
            f" · Δ ≤ {p.max_delta:,.0f} · Vega ≤ {p.max_vega_pct:.2%} NL · Pos ≤ {p.max_positions}"
        )

    def _render(self) -> None:
        self.readout.setText(self.readout_text())
        p = self.profile
        if p is not None:
            self.readout.setToolTip(
                "\n".join(
                    f"{k}: {v}" for k, v in (p.to_dict().items() if hasattr(p, "to_dict") else []) if k != "regime_multipliers"
                )
            )


# ---- kill switch ------------------------------------------------------------------------------------
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
        return _has_handler(engine, TripKillSwitch) and _has_handler(engine, ResetKillSwitch)

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


# ---- paper / live -----------------------------------------------------------------------------------
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
        return _has_handler(engine, SwitchMode)

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
        return _has_handler(engine, SetApprovalMode)

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


# ---- connections ------------------------------------------------------------------------------------
_STATE_COLOURS = {"connected": "#2ecc71", "connecting": "#f1c40f", "disconnected": "#95a5a6", "failed": "#e74c3c"}


class ConnectionControl(QtWidgets.QWidget):
    """Feed and broker connection states with round-trip latency, from ``ConnectionStateChanged``."""

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("connectionStatus")
        self.states: dict[str, tuple[str, float | None, str]] = {}
        feed = eq.feed_state(engine)
        if feed is not None:
            name, connected = feed
            self.states[f"feed:{name}"] = ("connected" if connected else "disconnected", None, "")
        self.label = QtWidgets.QLabel()
        self.label.setObjectName("connectionLabel")
        self.label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        lay = QtWidgets.QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        self.setLayout(lay)
        self._render()

    def apply_events(self, batch: EventBatch) -> None:
        evs = batch.events(ConnectionStateChanged)
        for ev in evs:
            self.states[ev.component] = (ev.state, ev.latency_ms, ev.detail)
        if evs:
            self._render()

    def summary(self) -> str:
        return " | ".join(
            f"{comp} {state}" + (f" {lat:.0f} ms" if lat is not None else "") for comp, (state, lat, _d) in self.states.items()
        )

    def _render(self) -> None:
        if not self.states:
            self.label.setText("<span style='color:#95a5a6'>● no connections</span>")
            return
        parts = []
        tips = []
        for comp, (state, lat, detail) in self.states.items():
            colour = _STATE_COLOURS.get(state, "#95a5a6")
            latency = f" {lat:.0f} ms" if lat is not None else ""
            parts.append(f"<span style='color:{colour}'>●</span> {comp.split(':', 1)[-1]}{latency}")
            tips.append(f"{comp}: {state}{latency}" + (f" — {detail}" if detail else ""))
        self.label.setText("&nbsp;&nbsp;".join(parts))
        self.setToolTip("\n".join(tips))


# ---- account ----------------------------------------------------------------------------------------
class AccountSummaryControl(QtWidgets.QWidget):
    """Net liquidation, buying power and day P&L of the account in use (from ``AccountUpdated``)."""

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("accountSummary")
        self.account: Any = None
        self.fields: dict[str, QtWidgets.QLabel] = {}
        lay = QtWidgets.QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(14)
        for key, caption in (("net_liq", "NET LIQ"), ("bp", "BUYING POWER"), ("day_pnl", "DAY P&L")):
            box = QtWidgets.QVBoxLayout()
            box.setSpacing(0)
            cap = QtWidgets.QLabel(caption)
            cap.setObjectName("toolbarCaption")
            val = QtWidgets.QLabel("—")
            val.setObjectName("accountValue")
            box.addWidget(cap)
            box.addWidget(val)
            lay.addLayout(box)
            self.fields[key] = val
        self.setLayout(lay)
        # The risk engine's portfolio keeps the active account's latest snapshot.
        snap = eq.account(engine)
        if snap is not None:
            self.set_account(snap)

    def set_account(self, acct: Any) -> None:
        self.account = acct
        self.fields["net_liq"].setText(fmt_money(acct.net_liquidation))
        self.fields["bp"].setText(fmt_money(acct.buying_power))
        day = acct.day_pnl if isinstance(acct.day_pnl, Decimal | int | float) else Decimal(0)
        lab = self.fields["day_pnl"]
        lab.setText(fmt_money(day, signed=True))
        lab.setProperty("sign", "pos" if day > 0 else "neg" if day < 0 else "zero")
        lab.style().unpolish(lab)
        lab.style().polish(lab)
        self.setToolTip(f"Account {mask_account(acct.account_id)} ({acct.broker})")

    def apply_events(self, batch: EventBatch) -> None:
        # Only the account orders go to: in PAPER that is the paper account, even while a connected
        # broker streams its own balances.
        mine = [ev.account for ev in batch.latest(AccountUpdated).values() if in_use(self.engine, ev.account)]
        if mine:
            self.set_account(mine[-1])


def in_use(engine: Engine | None, account: Any) -> bool:
    """Is ``account`` the one the mode router sends orders to (the paper account in PAPER mode)?"""
    active = eq.active_broker(engine)
    return active is None or getattr(account, "broker", active) == active


def _separator() -> QtWidgets.QFrame:
    line = QtWidgets.QFrame()
    line.setFrameShape(QtWidgets.QFrame.Shape.VLine)
    line.setObjectName("toolbarSeparator")
    return line


class TradingToolbar(QtWidgets.QToolBar):
    """The fixed toolbar. ``controls`` maps a name to each control that is present."""

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Trading", parent)
        self.setObjectName("tradingToolbar")
        self.setMovable(False)
        self.setFloatable(False)
        self.toggleViewAction().setEnabled(False)  # always visible
        self.engine = engine
        self.controls: dict[str, QtWidgets.QWidget] = {}
        self.control_actions: dict[str, QtGui.QAction] = {}
        self.kill_switch_action = QtGui.QAction("Trip kill switch", self)
        self.kill_switch_action.setObjectName("killSwitchAction")
        self.kill_flatten_action = QtGui.QAction("Kill and flatten…", self)
        self.kill_flatten_action.setObjectName("killFlattenAction")

        order: list[tuple[str, type[QtWidgets.QWidget]]] = [
            ("kill_switch", KillSwitchControl),
            ("mode", ModeControl),
            ("approval", ApprovalControl),
            ("risk", RiskSliderControl),
        ]
        for name, cls in order:
            if cls.available(engine):  # type: ignore[attr-defined]
                self._add(name, cls(engine, self))
        spacer = QtWidgets.QWidget()
        spacer.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Preferred)
        self.addWidget(spacer)
        self._add("account", AccountSummaryControl(engine, self))
        self._add("connection", ConnectionControl(engine, self))
        self._update_account_visibility()

        ks = self.controls.get("kill_switch")
        if isinstance(ks, KillSwitchControl):
            self.kill_switch_action.setShortcut(QtGui.QKeySequence(KillSwitchControl.SHORTCUT))
            self.kill_switch_action.setShortcutContext(QtCore.Qt.ShortcutContext.ApplicationShortcut)
            self.kill_switch_action.triggered.connect(lambda: ks.trip("manual: Ctrl+Shift+K"))
            self.kill_flatten_action.triggered.connect(ks.ask_kill_and_flatten)
            ks.button.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.ActionsContextMenu)
            ks.button.addAction(self.kill_flatten_action)  # right-click the kill switch; also in the Trading menu
        else:
            self.kill_switch_action.setEnabled(False)
            self.kill_flatten_action.setEnabled(False)

    def _add(self, name: str, widget: QtWidgets.QWidget) -> None:
        if self.controls and name != "connection":
            self.addWidget(_separator())
        self.control_actions[name] = self.addWidget(widget)
        self.controls[name] = widget

    def _update_account_visibility(self) -> None:
        # The account summary appears with the first account snapshot: never a row of dashes.
        account = self.controls["account"]
        self.control_actions["account"].setVisible(getattr(account, "account", None) is not None)

    def apply_events(self, batch: EventBatch) -> None:
        for control in self.controls.values():
            apply = getattr(control, "apply_events", None)
            if apply is not None:
                apply(batch)
        if not self.control_actions["account"].isVisible():
            self._update_account_visibility()
