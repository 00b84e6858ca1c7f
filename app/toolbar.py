"""The always-visible trading toolbar: risk slider, kill switch, paper/live, approval, connections, account.

Every control is built against the engine component that makes it work and only appears when that
component exists (``engine.bus.has_handler(<Command>)`` or the component attribute): the toolbar never
shows a control that does nothing. Controls render engine events (``apply_events``) and send commands
(:func:`widgets.base.send_command`); none holds trading logic.

No modal ``exec()`` anywhere: confirmations use ``QDialog.open()`` and the ``finished`` signal.

This module assembles the toolbar and holds the two read-only controls (connections, account); the controls
that act have modules of their own: :mod:`app.kill_switch_control`, :mod:`app.mode_controls` (paper/live and
approval) and :mod:`app.risk_slider`, with what they share in :mod:`app.toolbar_support`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from app.kill_switch_control import KillSwitchControl
from app.mode_controls import ApprovalControl, ModeControl
from app.risk_slider import RiskSliderControl
from app.toolbar_support import fmt_money, in_use
from engine.bus.events import AccountUpdated, ConnectionStateChanged
from engine.credentials import mask_account
from widgets import engine_queries as eq
from widgets.base import EventBatch

if TYPE_CHECKING:
    from engine.core import Engine


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
