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
from engine.bus.events import OrderEvent, PriceWalkUpdated
from engine.model import GroupKind, Order, OrderGroup, OrderStatus, OrderType, net_price_label, oco_group_of
from widgets import engine_queries as eq
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


def order_price_label(o: Order) -> str:
    """``1.70 DB`` for a limit, ``MKT`` for a market order, ``STP 1.25 DB`` for a stop and ``STP 1.25 DB LMT 1.20 DB``
    for a stop-limit: a stop order showed "MKT" before, hiding the price it waits for."""
    if o.order_type is OrderType.STOP:
        return f"STP {net_price_label(o.stop_price)}"
    if o.order_type is OrderType.STOP_LIMIT:
        return f"STP {net_price_label(o.stop_price)} LMT {net_price_label(o.limit_price)}"
    return net_price_label(o.limit_price)


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
        Column("limit", "Price", align="right", width=150,
               tooltip="Limit (DB debit / CR credit), MKT for a market order, STP the trigger of a stop"),
        Column("avg", "Avg fill", align="right", width=70),
        Column("status", "Status", align="left", width=124),
        Column("group", "Group", align="left", width=180,
               tooltip="The bracket, OCO pair or profit taker the order belongs to, and its part in it; "
                       "\"walk ≤ x\" while the engine walks its price toward natural, never past x"),
        Column("source", "Source", align="left", width=80),
        Column("reason", "Reason", align="left", width=240),
    ]

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.orders: dict[str, Order] = {}
        self._groups: dict[str, str] = {}  # order id → group label, kept after the group has ended
        self._walking: dict[str, Decimal] = {}  # order id → the cap of its price walk, while it walks
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
        walks = batch.events(PriceWalkUpdated)
        for w in walks:
            if w.state == "walking":
                self._walking[w.order_id] = w.limit
            else:
                self._walking.pop(w.order_id, None)
        events = batch.events(OrderEvent)
        if not events:
            if walks:
                self._render()
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
            "limit": np.array([order_price_label(o) for o in items], dtype=object),
            "group": np.array([self._group_label(o) for o in items], dtype=object),
            "avg": np.array([net_price_label(o.avg_fill_price) if o.avg_fill_price is not None else ""
                             for o in items], dtype=object),
            "status": np.array([o.status.value.replace("_", " ") for o in items], dtype=object),
            "status_key": np.array([o.status.value for o in items], dtype=object),
            "source": np.array([o.source for o in items], dtype=object),
            "reason": np.array([o.reason for o in items], dtype=object),
        })
        self._on_select()

    def _group_label(self, o: Order) -> str:
        """``Bracket 3f2a91 · stop``: the group's kind, its id and the order's part; remembered, because the
        engine forgets a group once it has ended and the order still belongs to it in the history tabs."""
        g = eq.order_group(self.engine, o.order_id)
        if g is not None:
            self._groups[o.order_id] = _group_label(g, o)
        elif o.order_id not in self._groups:
            gid = oco_group_of(o.tag) or (o.tag.removeprefix("profit:") if o.tag.startswith("profit:") else None)
            if gid:
                # an ended group (after a restart, say) is in the store: a bracket's exits carry the same
                # oco: tag as an OCO pair's members, so only the stored group tells which it was
                stored = eq.stored_order_group(self.engine, gid)
                if stored is not None:
                    self._groups[o.order_id] = _group_label(stored, o)
                else:
                    kind = "OCO" if o.tag.startswith("oco:") else "Profit taker"
                    self._groups[o.order_id] = f"{kind} {gid.removeprefix('grp-')[:6]}"
        label = self._groups.get(o.order_id, "")
        cap = self._walking.get(o.order_id)
        if cap is not None:  # the engine is walking its price toward natural
            label = f"{label} · walk ≤ {net_price_label(cap)}" if label else f"walk ≤ {net_price_label(cap)}"
        return label

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
        can_replace = o is not None and o.status.is_working and o.order_type is OrderType.LIMIT  # the engine's rule
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


_GROUP_KIND_NAMES = {GroupKind.BRACKET: "Bracket", GroupKind.OCO: "OCO", GroupKind.PROFIT_TAKER: "Profit taker"}


def _group_label(g: OrderGroup, o: Order) -> str:
    """``Bracket 3f2a91 · stop``: the group's kind, its id and the order's part in it."""
    if o.order_id == g.entry_order_id:
        part = "entry"
    elif g.kind is GroupKind.OCO:
        part = f"{g.member_order_ids.index(o.order_id) + 1} of 2" if o.order_id in g.member_order_ids else ""
    else:
        part = "stop" if o.order_type.is_stop else "target"
    label = f"{_GROUP_KIND_NAMES.get(g.kind, g.kind.value)} {g.group_id.removeprefix('grp-')[:6]}"
    return f"{label} · {part}" if part else label
