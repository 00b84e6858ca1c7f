"""The main window's status bar (mode, trading state, market clock, connections, regime, event rate), the
live banner and title, and the simulated clock's commands.

A mixin of :class:`app.main_window.MainWindow`: the bridge delivers each coalesced batch to
:meth:`StatusBarMixin._apply_status`, which renders only what the engine reported."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from PySide6 import QtCore, QtWidgets

from app.toolbar import KillSwitchControl, ModeControl
from engine.bus.commands import JumpToNextRealSession, RestartSimulatedDay
from engine.bus.events import (
    ClockTicked,
    ConnectionStateChanged,
    ModeChanged,
    OrderPendingApproval,
    RiskProfileChanged,
    SessionStatus,
    TradingStateChanged,
)
from widgets.base import EventBatch, qt_alive, send_command
from widgets.time_format import format_market_time


class StatusBarMixin:
    """The status bar's labels, the banner and title, and Trading ▸ simulated clock actions."""

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        sb.setObjectName("statusBar")
        self.status_mode = QtWidgets.QLabel()
        self.status_mode.setObjectName("statusMode")
        self.status_state = QtWidgets.QLabel()
        self.status_state.setObjectName("statusState")
        self.status_clock = QtWidgets.QLabel("clock —")
        self.status_clock.setObjectName("statusClock")
        self.status_conn = QtWidgets.QLabel("no connections")
        self.status_conn.setObjectName("statusConnection")
        self.status_rate = QtWidgets.QLabel("")
        self.status_rate.setObjectName("statusRate")
        from app.status_regime import RegimeStatusLabel

        self.status_regime = RegimeStatusLabel(self.engine)  # VIX rules beside the live mixture (docs/ml.md)
        for w in (self.status_mode, self.status_state, self.status_clock, self.status_conn, self.status_regime):
            sb.addWidget(w)
        sb.addPermanentWidget(self.status_rate)
        self._events_seen = 0
        self._rate_timer = QtCore.QElapsedTimer()
        self._rate_timer.start()

    # ---- events ----------------------------------------------------------------------------------
    def _apply_status(self, batch: EventBatch) -> None:
        self._events_seen += len(batch)
        changed = False
        for ev in batch.events(ModeChanged):
            self.mode = ev.mode.lower()
            changed = True
        for ev in batch.events(TradingStateChanged):
            self.trading_state = str(ev.state).upper()
            changed = True
        ks = self.trading_toolbar.controls.get("kill_switch")
        if isinstance(ks, KillSwitchControl) and ks.state != self.trading_state:
            self.trading_state = ks.state
            changed = True
        if batch.events(ConnectionStateChanged):
            conn = self.trading_toolbar.controls.get("connection")
            self.connection_text = conn.summary() if conn is not None else ""  # type: ignore[attr-defined]
            changed = True
        levels = batch.events(RiskProfileChanged)
        dlg = self.settings_dialog
        if levels and dlg is not None and qt_alive(dlg) and dlg.isVisible():
            dlg.show_risk_level(levels[-1].level)  # the slider moved while the form is open
        if batch.events(OrderPendingApproval) and "approvals" in self.docks:
            self.docks["approvals"].show()
            self.docks["approvals"].raise_()  # an order waiting for a human must be seen
            self._approvals_raised = True
        for status in batch.latest(SessionStatus).values():
            self.session_status = status
            self._render_clock(status.now, status.market_open)
        for ev in batch.latest(ClockTicked).values():  # the simulated feed ticks faster than the engine's status
            self._render_clock(ev.now, ev.market_open)
        if changed:
            self._render_status()
            self._render_mode()
        if self._rate_timer.elapsed() >= 1000:
            rate = self.bridge.events_in / max(self._rate_timer.elapsed() / 1000.0, 1e-3)
            self.status_rate.setText(f"{rate:,.0f} ev/s · flush {self.bridge.last_flush_ms:.1f} ms")
            self.bridge.events_in = 0
            self._rate_timer.restart()

    def _render_clock(self, now: datetime, market_open: bool) -> None:
        """The market time in New York time and what the market is doing; on the simulated market, also
        whether the real market is open (a simulated session often runs while the real one is shut)."""
        status = self.session_status
        if status is None:
            self.status_clock.setText(f"market {'open' if market_open else 'closed'} · {format_market_time(now)}")
            return
        self.status_clock.setText(replace(status, now=now, market_open=market_open).describe())
        self.restart_day_action.setEnabled(status.simulated)
        self.jump_session_action.setEnabled(status.simulated)

    # ---- the simulated clock ---------------------------------------------------------------------
    def restart_simulated_day(self) -> None:
        """Trading ▸ Restart the simulated day: the engine moves its simulated clock (and audits it)."""
        self._move_simulated_clock(RestartSimulatedDay(by="user"), "restart the simulated day")

    def jump_to_real_session(self) -> None:
        """Trading ▸ Jump to the next real session."""
        self._move_simulated_clock(JumpToNextRealSession(by="user"), "jump to the next real session")

    def _move_simulated_clock(self, command: Any, what: str) -> None:
        def failed(message: str) -> None:
            self.alerts.log("error", "simulated market", f"could not {what}: {message}")

        # success shows itself: the engine publishes SimulatedClockMoved (event log) and a new SessionStatus
        send_command(self.engine, command, on_error=failed)

    # ---- mode and state --------------------------------------------------------------------------
    def _render_status(self) -> None:
        self.status_mode.setText(f"mode = {self.mode.upper()}")
        self.status_mode.setProperty("mode", self.mode)
        self.status_state.setText(f"trading {self.trading_state}")
        self.status_state.setProperty("tradingState", self.trading_state)
        self.status_conn.setText(self.connection_text or "no connections")
        for w in (self.status_mode, self.status_state):
            w.style().unpolish(w)
            w.style().polish(w)

    def _render_mode(self) -> None:
        live = self.mode == "live"
        mode_ctl = self.trading_toolbar.controls.get("mode")
        account = mode_ctl.account_label if isinstance(mode_ctl, ModeControl) else ""
        self.setWindowTitle(f"● LIVE — {account} — Optiondesk" if live else "Optiondesk — PAPER")
        self.banner.setText(f"LIVE TRADING — {account} — real orders are sent to the broker" if live else "")
        self.banner_bar.setVisible(live)
        self.setProperty("mode", self.mode)
        self._render_status()
