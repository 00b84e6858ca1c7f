"""Approval queue: orders held for a human decision, with the engine's preview and a countdown.

Source: ``OrderPendingApproval`` events (order + ``engine.oms.approval.ApprovalPreview``) and, at start,
``engine.oms.pending_approvals()``. An order leaves the queue on any later event of that order (approved,
denied, cancelled, expired, rejected, submitted). Actions send ``ApproveOrder`` / ``RejectOrder`` /
``ModifyOrderPrice``; the OMS decides and the result comes back as events.
"""

from __future__ import annotations

import html
import math
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.analytics.formatting import money
from engine.analytics.payoff import max_loss_text
from engine.bus.commands import ApproveOrder, ModifyOrderPrice, RejectOrder
from engine.bus.events import OrderEvent, OrderPendingApproval
from engine.model import Order, OrderStatus, net_price_label
from engine.risk.payoff import PayoffSummary
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.order_ticket import describe_legs_short
from widgets.table_model import NEGATIVE, Column, ColumnTableModel, LiveTableView

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt


def _money(v: float | None, unbounded: str = "unlimited") -> str:
    if v is None:
        return unbounded
    return money(v, 0, unbounded=unbounded)


def _max_loss(preview: Any, stress: float) -> str:
    """The ticket's and payoff panel's max-loss label, from the approval preview's figures."""
    if preview.max_loss is None and preview.defined_risk:
        return _money(None)
    summary = PayoffSummary(
        math.inf if preview.max_profit is None else float(preview.max_profit),
        math.inf if preview.max_loss is None else float(preview.max_loss),
        (), bool(preview.defined_risk), _num(preview.stress_loss))
    return max_loss_text(summary, stress)


def _countdown(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    s = max(0, int(seconds))
    return f"{s // 60}:{s % 60:02d}"


class _ApprovalModel(ColumnTableModel):
    def cell_foreground(self, row: int, column: int) -> QtGui.QColor | None:
        if self.columns[column].key == "expires":
            left = self.value(row, "seconds_left")
            if isinstance(left, float) and left < 30:
                return NEGATIVE
        return None


class ApprovalPanel(Panel):
    title: ClassVar[str] = "Approvals"
    panel_id: ClassVar[str] = "approvals"

    #: number of orders waiting (the app may badge the dock)
    pending_changed = QtCore.Signal(int)
    #: (order_id, action, error message or "") after a command returned
    decided = QtCore.Signal(str, str, str)

    COLUMNS: ClassVar[list[Column]] = [
        Column("expires", "Expires", align="center", width=58, tooltip="Time left before the order expires"),
        Column("underlying", "Und", align="left", width=56),
        Column("legs", "Order", align="left", width=300),
        Column("qty", "Qty", "{:d}", width=40),
        Column("limit", "Limit", align="right", width=78, tooltip="Net limit price (DB = debit, CR = credit)"),
        Column("vs_mid", "vs mid", "{:+.2f}", width=58, tooltip="Limit minus mid per unit: + pays more than mid"),
        Column("max_loss", "Max loss", align="right", width=78),
        Column("max_profit", "Max profit", align="right", width=78),
        Column("bp", "BP effect", "{:+,.0f}", width=78, signed=True, tooltip="Buying power effect ($)"),
        Column("source", "Source", align="left", width=80),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.pending: dict[str, tuple[Order, Any]] = {}
        self._seen: dict[str, float] = {}  # order id -> time.monotonic() when the panel first saw it
        self.model = _ApprovalModel(self.COLUMNS, self)
        self.table = LiveTableView(self.model)
        self.table.horizontalHeader().setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_detail())

        self.empty_label = QtWidgets.QLabel("No orders waiting for approval")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: gray")

        self.detail = QtWidgets.QTextBrowser()
        self.detail.setMinimumHeight(120)
        self.detail.setOpenLinks(False)

        self.approve_button = QtWidgets.QPushButton("Approve")
        self.approve_button.setStyleSheet("QPushButton:enabled { background: #2e7d32; color: white; font-weight: bold }")
        self.approve_button.clicked.connect(self.approve_selected)
        self.reject_reason = QtWidgets.QLineEdit()
        self.reject_reason.setPlaceholderText("reason (optional)")
        self.reject_button = QtWidgets.QPushButton("Reject")
        self.reject_button.setStyleSheet("QPushButton:enabled { background: #b71c1c; color: white; font-weight: bold }")
        self.reject_button.clicked.connect(self.reject_selected)
        self.price_spin = QtWidgets.QDoubleSpinBox()
        self.price_spin.setRange(-100_000.0, 100_000.0)
        self.price_spin.setDecimals(2)
        self.price_spin.setSingleStep(0.01)
        self.price_spin.setToolTip("New net limit price: positive = debit, negative = credit")
        self.modify_button = QtWidgets.QPushButton("Modify price")
        self.modify_button.clicked.connect(self.modify_selected)
        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)

        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.approve_button)
        actions.addWidget(self.reject_button)
        actions.addWidget(self.reject_reason, 1)
        actions.addSpacing(12)
        actions.addWidget(self.price_spin)
        actions.addWidget(self.modify_button)
        split = QtWidgets.QSplitter(Qt.Orientation.Vertical)
        top = QtWidgets.QWidget()
        tl = QtWidgets.QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.table)
        tl.addWidget(self.empty_label)
        split.addWidget(top)
        split.addWidget(self.detail)
        split.setSizes([160, 200])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split, 1)
        lay.addLayout(actions)
        lay.addWidget(self.message)

        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._load_from_oms()
        self._render()

    # ---- data ------------------------------------------------------------------------------------
    def _load_from_oms(self) -> None:
        oms = self.engine.oms if self.engine is not None else None
        if oms is None:
            return
        try:
            for p in oms.pending_approvals():
                self.pending[p.order.order_id] = (p.order, p.preview)
        except Exception as exc:
            self.report_error(f"could not read pending approvals: {exc}")

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for ev in batch.events(OrderEvent):
            oid = ev.order.order_id
            if isinstance(ev, OrderPendingApproval) and ev.order.status is OrderStatus.PENDING_APPROVAL:
                prev = self.pending.get(oid)
                preview = ev.preview if ev.preview is not None else (prev[1] if prev else None)
                self.pending[oid] = (ev.order, preview)
                changed = True
            elif oid in self.pending and ev.order.status is not OrderStatus.PENDING_APPROVAL:
                del self.pending[oid]
                self._seen.pop(oid, None)
                changed = True
            elif oid in self.pending:  # same status, newer order (e.g. price modified)
                self.pending[oid] = (ev.order, self.pending[oid][1])
                changed = True
        if changed:
            self._render()

    def _seconds_left(self, order_id: str, preview: Any) -> float:
        """The approval window left, in real seconds since the panel first saw the order: the engine
        times the window on the event loop, not on the (possibly accelerated) simulated clock."""
        exp, created = getattr(preview, "expires_at", None), getattr(preview, "created_at", None)
        if exp is None or created is None:
            return math.nan
        seen = self._seen.setdefault(order_id, time.monotonic())
        return (exp - created).total_seconds() - (time.monotonic() - seen)

    def _render(self) -> None:
        items = sorted(self.pending.values(), key=lambda it: it[0].created_at)
        keys = np.array([o.order_id for o, _ in items], dtype=object)
        left = np.array([self._seconds_left(o.order_id, p) for o, p in items], dtype=float)
        self.model.update(keys, {
            "expires": np.array([_countdown(s) for s in left], dtype=object),
            "seconds_left": left,
            "underlying": np.array([o.underlying for o, _ in items], dtype=object),
            "legs": np.array([describe_legs_short(o.legs) for o, _ in items], dtype=object),
            "qty": np.array([o.quantity for o, _ in items], dtype=object),
            "limit": np.array([net_price_label(o.limit_price) for o, _ in items], dtype=object),
            "vs_mid": np.array([_num(getattr(p, "price_vs_mid", None)) for _, p in items], dtype=float),
            "max_loss": np.array([_money(getattr(p, "max_loss", math.nan)) if p is not None else "—"
                                  for _, p in items], dtype=object),
            "max_profit": np.array([_money(getattr(p, "max_profit", math.nan)) if p is not None else "—"
                                    for _, p in items], dtype=object),
            "bp": np.array([_num(getattr(p, "buying_power_effect", None)) for _, p in items], dtype=float),
            "source": np.array([o.source for o, _ in items], dtype=object),
        })
        n = len(items)
        self.table.setVisible(n > 0)
        self.empty_label.setVisible(n == 0)
        if n and not self.table.selectionModel().selectedRows():
            self.table.selectRow(0)
        self._show_detail()
        self.pending_changed.emit(n)

    def _tick(self) -> None:
        if self.pending:
            self._render()

    # ---- selection / detail ------------------------------------------------------------------------
    def selected_order_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= self.model.rowCount():
            return None
        return str(self.model.key_at(rows[0].row()))

    def select(self, order_id: str) -> None:
        row = self.model.row_of(order_id)
        if row >= 0:
            self.table.selectRow(row)

    def _show_detail(self) -> None:
        oid = self.selected_order_id()
        enabled = oid is not None
        for w in (self.approve_button, self.reject_button, self.modify_button, self.price_spin, self.reject_reason):
            w.setEnabled(enabled)
        if oid is None or oid not in self.pending:
            self.detail.setHtml("<p style='color:gray'>Select an order to see the engine's preview.</p>")
            return
        order, preview = self.pending[oid]
        if order.limit_price is not None and not self.price_spin.hasFocus():
            self.price_spin.blockSignals(True)
            self.price_spin.setValue(float(order.limit_price))
            self.price_spin.blockSignals(False)
        self.detail.setHtml(preview_html(order, preview, self._seconds_left(oid, preview),
                                         eq.stress_move(self.engine)))

    # ---- actions ----------------------------------------------------------------------------------
    def _after(self, oid: str, action: str) -> Any:
        def ok(result: Any) -> None:
            status = getattr(getattr(result, "status", None), "value", "")
            self.message.setStyleSheet("color: gray")
            self.message.setText(f"{action} {oid[:8]}" + (f": {status.replace('_', ' ')}" if status else ""))
            self.decided.emit(oid, action, "")

        return ok

    def _failed(self, oid: str, action: str) -> Any:
        def fail(message: str) -> None:
            self.message.setStyleSheet("color: #d64541; font-weight: bold")
            self.message.setText(f"{action} failed: {message}")
            self.decided.emit(oid, action, message)

        return fail

    def _send(self, command: Any, oid: str, action: str) -> None:
        from widgets.base import send_command

        send_command(self.engine, command, on_error=self._failed(oid, action), on_result=self._after(oid, action))

    def has_order(self, order_id: str) -> bool:
        return order_id in self.pending

    def approve(self, order_id: str) -> None:
        """Approve one pending order (as the Approve button does for the selected row)."""
        if order_id in self.pending:
            self._send(ApproveOrder(order_id=order_id), order_id, "Approved")

    def reject(self, order_id: str, reason: str = "rejected by approver") -> None:
        if order_id in self.pending:
            self._send(RejectOrder(order_id=order_id, reason=reason), order_id, "Rejected")

    def approve_selected(self) -> None:
        oid = self.selected_order_id()
        if oid:
            self._send(ApproveOrder(order_id=oid), oid, "Approved")

    def reject_selected(self) -> None:
        oid = self.selected_order_id()
        if oid:
            reason = self.reject_reason.text().strip() or "rejected by approver"
            self._send(RejectOrder(order_id=oid, reason=reason), oid, "Rejected")
            self.reject_reason.clear()

    def modify_selected(self) -> None:
        oid = self.selected_order_id()
        if oid:
            price = Decimal(f"{self.price_spin.value():.2f}")
            self._send(ModifyOrderPrice(order_id=oid, limit_price=price), oid, "Price modified")


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def preview_html(order: Order, preview: Any, seconds_left: float, stress: float = 0.15) -> str:
    """The preview as compact HTML (legs with quotes, price vs mid, risk, Greeks change, limit headroom)."""
    esc = html.escape
    parts = [f"<b>{order.quantity}× {esc(order.underlying)}</b> limit <b>{net_price_label(order.limit_price)}</b>"
             f" · {order.tif.value.upper()} · from {esc(order.source)} · expires in {_countdown(seconds_left)}"]
    if preview is None:
        parts.append("<p style='color:gray'>No preview from the engine.</p>")
        return "".join(parts)
    rows = []
    for leg in getattr(preview, "legs", ()):
        q = [leg.get(k) for k in ("bid", "ask", "mid")]
        cells = "".join(f"<td align=right>{v:.2f}</td>" if isinstance(v, float) else "<td align=right>—</td>"
                        for v in q)
        rows.append(f"<tr><td>{leg.get('side', '').upper()} {leg.get('ratio', 1)}</td>"
                    f"<td>{esc(str(leg.get('symbol', '')))}</td>{cells}</tr>")
    parts.append("<table cellspacing=0 cellpadding=2><tr><th></th><th align=left>Contract</th><th>Bid</th>"
                  "<th>Ask</th><th>Mid</th></tr>" + "".join(rows) + "</table>")

    def fmt(v: Any, pattern: str = "{:,.2f}") -> str:
        return pattern.format(v) if isinstance(v, int | float) and math.isfinite(v) else "—"

    be = ", ".join(f"{b:,.2f}" for b in getattr(preview, "breakevens", ())) or "none"
    parts.append(
        "<p>"
        f"Mid {fmt(preview.mid)} · natural {fmt(preview.natural)} · limit vs mid {fmt(preview.price_vs_mid, '{:+.2f}')}<br>"
        f"Max profit <span style='color:#26a65b'>{_money(preview.max_profit)}</span> · "
        f"max loss <span style='color:#d64541'>{_max_loss(preview, stress)}</span>"
        f" · breakevens {be}<br>"
        f"Buying power {fmt(preview.buying_power_effect, '{:+,.0f}')} ({preview.buying_power_source})"
        f"{' · commission ' + fmt(preview.commission) if preview.commission is not None else ''}</p>"
    )
    change = getattr(preview, "greeks_change", {}) or {}
    before = getattr(preview, "greeks_before", {}) or {}
    after = getattr(preview, "greeks_after", {}) or {}
    names = [k for k in ("delta", "beta_delta", "gamma", "theta", "vega") if k in change]
    if names:
        head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in names)
        line = lambda d: "".join(f"<td align=right>{fmt(d.get(k), '{:+,.1f}')}</td>" for k in names)  # noqa: E731
        parts.append(f"<table cellspacing=0 cellpadding=2><tr><th></th>{head}</tr>"
                     f"<tr><td>before</td>{line(before)}</tr><tr><td><b>change</b></td>{line(change)}</tr>"
                     f"<tr><td>after</td>{line(after)}</tr></table>")
    head = getattr(preview, "headroom", {}) or {}
    if head:
        items = []
        for name, h in head.items():
            room = h.get("headroom")
            colour = "#d64541" if isinstance(room, float) and room < 0 else "inherit"
            items.append(f"<span style='color:{colour}'>{esc(name)}: {fmt(h.get('value'), '{:,.0f}')} / "
                         f"{fmt(h.get('limit'), '{:,.0f}')}</span>")
        parts.append("<p>Limits: " + " · ".join(items) + "</p>")
    warn = list(getattr(preview, "broker_warnings", ())) + list(getattr(preview, "notes", ()))
    if warn:
        parts.append("<p style='color:#e65100'>" + "<br>".join(esc(w) for w in warn) + "</p>")
    return "".join(parts)
