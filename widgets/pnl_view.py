"""P&L panel: intraday equity (net liquidation) and day P&L of the active account.

Source: ``AccountUpdated`` snapshots from the broker (paper or live), stamped with the engine's market time
(the simulated clock when the simulated market runs). Day P&L is the broker's ``day_pnl``; realised and
unrealised P&L are shown as reported. The curves start from the stored history of earlier sessions (the
engine writes it, ``engine.reports.history``); the panel itself stores nothing.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import money
from engine.bus.events import AccountUpdated
from engine.credentials import mask_account
from engine.model import AccountSnapshot
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import LOSS, MUTED, PROFIT, SERIES, MoneyAxis, time_plot

if TYPE_CHECKING:
    from engine.core import Engine


class PnLPanel(Panel):
    title: ClassVar[str] = "P&L"
    panel_id: ClassVar[str] = "pnl"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None, *, history_points: int = 50_000) -> None:
        super().__init__(engine, parent)
        self.account: AccountSnapshot | None = None
        self.t: deque[float] = deque(maxlen=history_points)
        self.equity: deque[float] = deque(maxlen=history_points)
        self.day_pnl: deque[float] = deque(maxlen=history_points)

        self.labels: dict[str, QtWidgets.QLabel] = {}
        head = QtWidgets.QHBoxLayout()
        for key, caption in (("net_liq", "Net liquidation"), ("day_pnl", "Day P&L"), ("unrealized", "Unrealised"),
                             ("realized", "Realised"), ("buying_power", "Buying power"), ("account", "Account")):
            box = QtWidgets.QVBoxLayout()
            cap = QtWidgets.QLabel(caption)
            cap.setStyleSheet("color: gray")
            val = QtWidgets.QLabel("—")
            f = val.font()
            f.setPointSizeF(f.pointSizeF() * (1.4 if key in ("net_liq", "day_pnl") else 1.1))
            f.setBold(True)
            val.setFont(f)
            box.addWidget(cap)
            box.addWidget(val)
            head.addLayout(box)
            head.addSpacing(10)
            self.labels[key] = val
        head.addStretch(1)

        self.equity_plot = time_plot(title="Equity (net liquidation)", axis_items={"left": MoneyAxis("left")})
        self.equity_curve = self.equity_plot.plot([], [], pen=pg.mkPen(SERIES[0], width=2))
        self.start_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(MUTED, style=QtCore.Qt.PenStyle.DashLine))
        self.equity_plot.addItem(self.start_line)
        self.start_line.hide()
        self.pnl_plot = time_plot(title="Day P&L", axis_items={"left": MoneyAxis("left")})
        self.pnl_plot.setXLink(self.equity_plot)
        self.pnl_plot.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen(MUTED)))
        self.pnl_up = self.pnl_plot.plot([], [], pen=None, fillLevel=0, brush=pg.mkBrush(38, 166, 91, 70))
        self.pnl_down = self.pnl_plot.plot([], [], pen=None, fillLevel=0, brush=pg.mkBrush(214, 69, 65, 70))
        self.pnl_line = self.pnl_plot.plot([], [], pen=pg.mkPen(SERIES[0], width=2))
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.equity_plot)
        split.addWidget(self.pnl_plot)
        split.setSizes([260, 160])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(head)
        lay.addWidget(split, 1)

        self.load_history(history_points)
        snap = eq.account(self.engine)
        if snap is not None:
            self.add_snapshot(snap)

    def load_history(self, limit: int) -> int:
        """Start from the stored equity and day-P&L history (earlier sessions); returns the points loaded."""
        from engine.reports.history import history_for_panels

        rows = [r for r in history_for_panels(self.engine, limit) if math.isfinite(r.net_liquidation)]
        for r in rows:
            self.t.append(r.ts.timestamp())
            self.equity.append(r.net_liquidation)
            self.day_pnl.append(r.day_pnl if math.isfinite(r.day_pnl) else 0.0)
        return len(rows)

    def apply_events(self, batch: EventBatch) -> None:
        accounts = batch.latest(AccountUpdated)
        if not accounts:
            return
        for ev in accounts.values():
            self.add_snapshot(ev.account)

    def add_snapshot(self, account: AccountSnapshot) -> None:
        if self.account is not None and account.account_id != self.account.account_id:
            self.t.clear()
            self.equity.clear()
            self.day_pnl.clear()  # another account (mode switch): a new curve
        self.account = account
        t = eq.now(self.engine).timestamp()
        nl, dp = float(account.net_liquidation), float(account.day_pnl)
        if self.t and t <= self.t[-1]:
            self.equity[-1], self.day_pnl[-1] = nl, dp  # same instant: keep the newest
        else:
            self.t.append(t)
            self.equity.append(nl)
            self.day_pnl.append(dp)
        self._render()

    def _render(self) -> None:
        a = self.account
        if a is None:
            return
        lab = self.labels
        lab["net_liq"].setText(money(a.net_liquidation))
        dp = float(a.day_pnl)
        lab["day_pnl"].setText(money(dp, signed=True))
        lab["day_pnl"].setStyleSheet(f"color: {PROFIT if dp >= 0 else LOSS}")
        lab["unrealized"].setText(money(a.unrealized_pnl, signed=True))
        lab["realized"].setText(money(a.realized_pnl, signed=True))
        lab["buying_power"].setText(money(a.buying_power))
        lab["account"].setText(f"{mask_account(a.account_id)} ({'LIVE' if a.is_live else a.broker})")
        t = np.fromiter(self.t, float)
        eq_ = np.fromiter(self.equity, float)
        pnl = np.fromiter(self.day_pnl, float)
        self.equity_curve.setData(t, eq_)
        start = float(a.net_liquidation) - dp
        if math.isfinite(start):
            self.start_line.setPos(start)
            self.start_line.show()
        self.pnl_up.setData(t, np.where(pnl >= 0, pnl, 0.0))
        self.pnl_down.setData(t, np.where(pnl < 0, pnl, 0.0))
        self.pnl_line.setData(t, pnl)
