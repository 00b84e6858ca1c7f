"""Orders panel: working / filled / cancelled orders with cancel, replace and cancel-all.

Source: ``engine.oms.recent_orders()`` at start, then every ``OrderEvent`` (upsert by order id; the newest
state wins). Actions send ``CancelOrder`` / ``ReplaceOrder`` / ``CancelAllOrders``; results come back as
events. Cancel-all asks for a second click instead of a modal dialog.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from engine.bus.commands import CancelAllOrders, CancelOrder, ReplaceOrder
from engine.bus.events import OrderEvent
from engine.model import Order, OrderStatus, net_price_label
from widgets.base import EventBatch, Panel
from widgets.order_ticket import describe_leg, describe_legs_short
from widgets.table_model import Column, ColumnTableModel, LiveTableView
from widgets.time_format import format_market_time, time_sort_key

if TYPE_CHECKING:
    from engine.core import Engine

Qt = QtCore.Qt

FILTERS: dict[str, tuple[OrderStatus, ...] | None] = {
    "Working": (OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.WORKING,
                OrderStatus.PARTIALLY_FILLED),
    "Filled": (OrderStatus.FILLED,),
    "Cancelled / rejected": (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED, OrderStatus.DENIED),
    "All": None,
}

STATUS_COLORS = {
    "filled": QtGui.QColor(38, 166, 91),
    "working": QtGui.QColor(78, 154, 230),
    "partially_filled": QtGui.QColor(78, 154, 230),
    "submitted": QtGui.QColor(78, 154, 230),
    "pending_approval": QtGui.QColor(230, 160, 40),
    "approved": QtGui.QColor(230, 160, 40),
    "rejected": QtGui.QColor(214, 69, 65),
    "denied": QtGui.QColor(214, 69, 65),
    "cancelled": QtGui.QColor(138, 138, 138),
    "expired": QtGui.QColor(138, 138, 138),
}


class _OrdersModel(ColumnTableModel):
    def cell_tooltip(self, row: int, column: int) -> str | None:
        if self.columns[column].key == "legs":
            return str(self.value(row, "legs_long"))
        return None

    def cell_foreground(self, row: int, column: int) -> QtGui.QColor | None:
        if self.columns[column].key == "status":
            return STATUS_COLORS.get(str(self.value(row, "status_key")))
        return None


class OrdersPanel(Panel):
    title: ClassVar[str] = "Orders"
    panel_id: ClassVar[str] = "orders"

    #: (order_id, action, error or "")
    acted = QtCore.Signal(str, str, str)

    COLUMNS: ClassVar[list[Column]] = [
        Column("time", "Time", align="left", width=214,
               tooltip="Last update, New York time (the engine's clock: simulated time on the simulated market)"),
        Column("id", "Order", align="left", width=86),
        Column("underlying", "Und", align="left", width=52),
        Column("legs", "Legs", align="left", width=300),
        Column("qty", "Qty", "{:d}", width=40),
        Column("filled", "Filled", "{:d}", width=48),
        Column("limit", "Limit", align="right", width=76),
        Column("avg", "Avg fill", align="right", width=70),
        Column("status", "Status", align="left", width=124),
        Column("source", "Source", align="left", width=80),
        Column("reason", "Reason", align="left", width=240),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.orders: dict[str, Order] = {}
        self.filter = "Working"
        self.tabs = QtWidgets.QTabBar()
        self.tabs.setExpanding(False)
        self.tabs.setDrawBase(False)
        for name in FILTERS:
            self.tabs.addTab(name)
        self.tabs.currentChanged.connect(self._on_tab)
        self.model = _OrdersModel(self.COLUMNS, self)
        self.table = LiveTableView(self.model)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_select())

        self.cancel_button = QtWidgets.QPushButton("Cancel order")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.price_spin = QtWidgets.QDoubleSpinBox()
        self.price_spin.setRange(-100_000.0, 100_000.0)
        self.price_spin.setDecimals(2)
        self.price_spin.setSingleStep(0.01)
        self.price_spin.setToolTip("New net limit: positive = debit, negative = credit")
        self.replace_button = QtWidgets.QPushButton("Replace price")
        self.replace_button.clicked.connect(self.replace_selected)
        self.cancel_all_button = QtWidgets.QPushButton("Cancel all")
        self.cancel_all_button.clicked.connect(self.cancel_all)
        self._confirm_timer = QtCore.QTimer(self)
        self._confirm_timer.setSingleShot(True)
        self._confirm_timer.timeout.connect(self._reset_cancel_all)
        self.message = QtWidgets.QLabel("")

        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.cancel_button)
        actions.addSpacing(10)
        actions.addWidget(self.price_spin)
        actions.addWidget(self.replace_button)
        actions.addStretch(1)
        actions.addWidget(self.message)
        actions.addWidget(self.cancel_all_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.tabs)
        lay.addWidget(self.table, 1)
        lay.addLayout(actions)

        oms = self.engine.oms if self.engine is not None else None
        if oms is not None:
            try:
                for o in oms.recent_orders(500):
                    self.orders[o.order_id] = o
                for o in oms.open_orders():
                    self.orders[o.order_id] = o
            except Exception as exc:
                self.report_error(f"could not load orders: {exc}")
        self._render()

    # ---- data ------------------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        events = batch.events(OrderEvent)
        if not events:
            return
        for ev in events:  # publication order: the last event of an order is its current state
            self.orders[ev.order.order_id] = ev.order
        self._render()

    def _on_tab(self, index: int) -> None:
        self.filter = list(FILTERS)[index]
        self._render()

    def visible_orders(self) -> list[Order]:
        wanted = FILTERS[self.filter]
        items = [o for o in self.orders.values() if wanted is None or o.status in wanted]
        # newest activity first, by the instant itself (the text of a time does not sort across days)
        return sorted(items, key=lambda o: (time_sort_key(o.updated_at), time_sort_key(o.created_at)), reverse=True)

    def _render(self) -> None:
        items = self.visible_orders()
        for i, name in enumerate(FILTERS):
            wanted = FILTERS[name]
            n = sum(1 for o in self.orders.values() if wanted is None or o.status in wanted)
            self.tabs.setTabText(i, f"{name} ({n})")
        self.model.update(np.array([o.order_id for o in items], dtype=object), {
            "time": np.array([format_market_time(o.updated_at) for o in items], dtype=object),
            "id": np.array([o.order_id.removeprefix("ord-")[:10] for o in items], dtype=object),
            "underlying": np.array([o.underlying for o in items], dtype=object),
            "legs": np.array([describe_legs_short(o.legs) for o in items], dtype=object),
            "legs_long": np.array([" / ".join(f"{leg.side.value.upper()} {leg.ratio} {describe_leg(leg)}"
                                              for leg in o.legs) for o in items], dtype=object),
            "qty": np.array([o.quantity for o in items], dtype=object),
            "filled": np.array([o.filled_quantity for o in items], dtype=object),
            "limit": np.array([net_price_label(o.limit_price) for o in items], dtype=object),
            "avg": np.array([net_price_label(o.avg_fill_price) if o.avg_fill_price is not None else ""
                             for o in items], dtype=object),
            "status": np.array([o.status.value.replace("_", " ") for o in items], dtype=object),
            "status_key": np.array([o.status.value for o in items], dtype=object),
            "source": np.array([o.source for o in items], dtype=object),
            "reason": np.array([o.reason for o in items], dtype=object),
        })
        self._on_select()

    # ---- actions ----------------------------------------------------------------------------------
    def selected_order(self) -> Order | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= self.model.rowCount():
            return None
        return self.orders.get(str(self.model.key_at(rows[0].row())))

    def select(self, order_id: str) -> None:
        row = self.model.row_of(order_id)
        if row >= 0:
            self.table.selectRow(row)

    def _on_select(self) -> None:
        o = self.selected_order()
        live = o is not None and not o.status.is_terminal
        self.cancel_button.setEnabled(live)
        can_replace = o is not None and o.status.is_working
        self.replace_button.setEnabled(can_replace)
        self.price_spin.setEnabled(can_replace)
        if can_replace and o is not None and o.limit_price is not None and not self.price_spin.hasFocus():
            self.price_spin.setValue(float(o.limit_price))
        self.cancel_all_button.setEnabled(any(not x.status.is_terminal for x in self.orders.values()))

    def _send(self, command: Any, oid: str, action: str) -> None:
        from widgets.base import send_command

        def ok(result: Any) -> None:
            self.message.setStyleSheet("color: gray")
            self.message.setText(f"{action}: {oid[:14]}")
            self.acted.emit(oid, action, "")

        def fail(message: str) -> None:
            self.message.setStyleSheet("color: #d64541; font-weight: bold")
            self.message.setText(f"{action} failed: {message}")
            self.acted.emit(oid, action, message)

        send_command(self.engine, command, on_error=fail, on_result=ok)

    def cancel_selected(self) -> None:
        o = self.selected_order()
        if o is not None:
            self._send(CancelOrder(order_id=o.order_id), o.order_id, "Cancel")

    def replace_selected(self) -> None:
        o = self.selected_order()
        if o is None:
            return
        price = Decimal(f"{self.price_spin.value():.2f}")
        if not math.isfinite(float(price)):
            return
        self._send(ReplaceOrder(order_id=o.order_id, limit_price=price), o.order_id, "Replace")

    def cancel_all(self) -> None:
        """First click arms (3 s), second click sends ``CancelAllOrders``."""
        if not self._confirm_timer.isActive():
            n = sum(1 for x in self.orders.values() if not x.status.is_terminal)
            self.cancel_all_button.setText(f"Click again to cancel {n}")
            self.cancel_all_button.setStyleSheet("background: #b71c1c; color: white; font-weight: bold")
            self._confirm_timer.start(3000)
            return
        self._confirm_timer.stop()
        self._reset_cancel_all()
        self._send(CancelAllOrders(reason="cancel all from the orders panel"), "all", "Cancel all")

    def _reset_cancel_all(self) -> None:
        self.cancel_all_button.setText("Cancel all")
        self.cancel_all_button.setStyleSheet("")

    def panel_state(self) -> dict[str, Any]:
        return {"filter": self.tabs.currentIndex()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        i = state.get("filter")
        if isinstance(i, int) and 0 <= i < self.tabs.count():
            self.tabs.setCurrentIndex(i)
