"""EventBatch conflation, send_command error routing and the declarative table's single dataChanged."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from engine.bus import Bus
from engine.bus.commands import ApproveOrder, CancelOrder
from engine.bus.events import (
    Alert,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    UnderlyingUpdated,
)
from engine.model import Equity, Leg, Order, OrderStatus, OrderType, Side, TimeInForce
from tests.qt_fixtures import run_async, wait_for_condition
from widgets.base import EventAccumulator, EventBatch, Panel, send_command
from widgets.table_model import Column, ColumnTableModel, LiveTableView


def _order(oid: str, status: OrderStatus = OrderStatus.WORKING) -> Order:
    now = datetime(2026, 1, 5, 15, tzinfo=UTC)
    return Order(
        order_id=oid, client_order_id="c" + oid, legs=(Leg(Equity("SPY"), Side.BUY),), quantity=1,
        order_type=OrderType.LIMIT, limit_price=Decimal("1.00"), tif=TimeInForce.DAY, status=status,
        created_at=now, updated_at=now,
    )


def test_batch_keeps_latest_conflated_event_per_key_and_every_ordered_event() -> None:
    events = [
        UnderlyingUpdated(symbol="SPY", price=600.0),
        OrderFilled(order=_order("1", OrderStatus.FILLED)),
        UnderlyingUpdated(symbol="QQQ", price=500.0),
        UnderlyingUpdated(symbol="SPY", price=601.5),
        OrderCancelled(order=_order("2", OrderStatus.CANCELLED)),
        Alert(message="hello"),
    ]
    batch = EventBatch.from_events(events)

    latest = batch.latest(UnderlyingUpdated)
    assert set(latest) == {"SPY", "QQQ"}
    assert latest["SPY"].price == 601.5
    assert [type(e) for e in batch.events(OrderEvent)] == [OrderFilled, OrderCancelled]
    assert batch.events(OrderFilled)[0].order.order_id == "1"
    assert batch.has(OrderEvent) and batch.has(UnderlyingUpdated) and batch.has(Alert)
    assert len(batch) == 5


def test_accumulator_take_resets_and_empty_batch_is_falsey() -> None:
    acc = EventAccumulator()
    acc.add(UnderlyingUpdated(symbol="SPY", price=1.0))
    assert len(acc) == 1
    first = acc.take()
    assert first and len(acc) == 0
    assert not acc.take()
    assert not EventBatch().has(UnderlyingUpdated)


def test_send_command_reports_missing_handler_to_callback(qtbot, async_cleanup) -> None:
    class _Engine:
        bus = Bus()

    errors: list[str] = []
    task = send_command(_Engine(), ApproveOrder(order_id="x"), on_error=errors.append)
    assert task is not None
    wait_for_condition(qtbot, lambda: bool(errors))
    assert "NoHandlerError" in errors[0] and "ApproveOrder" in errors[0]


def test_send_command_passes_handler_result(qtbot, async_cleanup) -> None:
    bus = Bus()

    async def handler(cmd: CancelOrder) -> str:
        return f"cancelled {cmd.order_id}"

    bus.register(CancelOrder, handler)

    class _Engine:
        pass

    eng = _Engine()
    eng.bus = bus
    results: list[str] = []
    run_async(qtbot, _wrap(send_command(eng, CancelOrder(order_id="42"), on_result=results.append)))
    assert results == ["cancelled 42"]


async def _wrap(fut):
    return await fut


def test_send_command_without_bus_fails_cleanly() -> None:
    errors: list[str] = []
    assert send_command(object(), CancelOrder(order_id="1"), on_error=errors.append) is None
    assert "no bus" in errors[0]


def test_panel_reports_errors_via_status_signal(qtbot, async_cleanup) -> None:
    class _Engine:
        bus = Bus()

    panel = Panel(_Engine())
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.status, timeout=3000) as sig:
        panel.send(ApproveOrder(order_id="nope"))
    assert "ApproveOrder" in sig.args[0]
    assert panel.last_error == sig.args[0]


COLUMNS = [Column("name", "Name", align="left"), Column("px", "Price", "{:.2f}"), Column("pnl", "P&L", "{:+,.0f}", signed=True)]


def test_table_update_emits_one_bounding_box_data_changed(qtbot) -> None:
    model = ColumnTableModel(COLUMNS)
    keys = np.array(["a", "b", "c", "d"], dtype=object)
    model.update(keys, {"name": keys, "px": np.array([1.0, 2.0, np.nan, 4.0]), "pnl": np.array([5.0, -3.0, 0.0, 1.0])})
    assert model.resets == 1 and model.rowCount() == 4
    seen: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(lambda tl, br, *_: seen.append((tl.row(), tl.column(), br.row(), br.column())))

    # NaN stays NaN (unchanged); rows 1 and 3 change in different columns
    model.update(keys, {"name": keys, "px": np.array([1.0, 2.5, np.nan, 4.0]), "pnl": np.array([5.0, -3.0, 0.0, 7.0])})
    assert seen == [(1, 1, 3, 2)]
    # identical data: no signal at all
    model.update(keys, {"name": keys, "px": np.array([1.0, 2.5, np.nan, 4.0]), "pnl": np.array([5.0, -3.0, 0.0, 7.0])})
    assert len(seen) == 1 and model.resets == 1
    # different keys: reset
    model.update(keys[:2], {"name": keys[:2], "px": np.array([1.0, 2.0]), "pnl": np.array([0.0, 0.0])})
    assert model.resets == 2 and model.rowCount() == 2


def test_table_formats_lazily_and_colours_signed_columns(qtbot) -> None:
    model = ColumnTableModel(COLUMNS)
    model.update(["a", "b"], {"name": ["a", "b"], "px": np.array([1.234, math.nan]), "pnl": np.array([1200.0, -5.0])})
    view = LiveTableView(model)
    qtbot.addWidget(view)
    assert model.data(model.index(0, 1)) == "1.23"
    assert model.data(model.index(1, 1)) == ""
    assert model.data(model.index(0, 2)) == "+1,200"
    from PySide6.QtCore import Qt

    from widgets.table_model import NEGATIVE, POSITIVE

    assert model.data(model.index(0, 2), Qt.ItemDataRole.ForegroundRole) == POSITIVE
    assert model.data(model.index(1, 2), Qt.ItemDataRole.ForegroundRole) == NEGATIVE
    assert view.columnWidth(0) == COLUMNS[0].width


def test_table_rejects_ragged_columns(qtbot) -> None:
    model = ColumnTableModel(COLUMNS)
    with pytest.raises(ValueError, match="'px' has 1 rows, expected 2"):
        model.update(["a", "b"], {"name": ["a", "b"], "px": [1.0], "pnl": [1.0, 2.0]})
