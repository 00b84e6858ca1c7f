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
from engine.core import Engine, EngineConfig
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


def _engine_on(bus: Bus, tmp_path) -> Engine:
    """A real, unstarted Engine whose bus is ``bus``: the command plumbing without composing components."""
    eng = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
    eng.bus = bus
    return eng


def test_send_command_reports_missing_handler_to_callback(qtbot, async_cleanup, tmp_path) -> None:
    errors: list[str] = []
    task = send_command(_engine_on(Bus(), tmp_path), ApproveOrder(order_id="x"), on_error=errors.append)
    assert task is not None
    wait_for_condition(qtbot, lambda: bool(errors))
    assert "NoHandlerError" in errors[0] and "ApproveOrder" in errors[0]


def test_send_command_passes_handler_result(qtbot, async_cleanup, tmp_path) -> None:
    bus = Bus()

    async def handler(cmd: CancelOrder) -> str:
        return f"cancelled {cmd.order_id}"

    bus.register(CancelOrder, handler)

    results: list[str] = []
    run_async(qtbot, _wrap(send_command(_engine_on(bus, tmp_path), CancelOrder(order_id="42"), on_result=results.append)))
    assert results == ["cancelled 42"]


async def _wrap(fut):
    return await fut


def test_send_command_without_bus_fails_cleanly(tmp_path) -> None:
    errors: list[str] = []
    unstarted = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
    assert send_command(unstarted, CancelOrder(order_id="1"), on_error=errors.append) is None
    assert send_command(None, CancelOrder(order_id="1"), on_error=errors.append) is None
    assert "no bus" in errors[0] and "no engine" in errors[1]


def test_panel_reports_errors_via_status_signal(qtbot, async_cleanup, tmp_path) -> None:
    panel = Panel(_engine_on(Bus(), tmp_path))
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


def _painted_view(qtbot, model: ColumnTableModel, height: int) -> LiveTableView:
    """The model in a shown view, once painted by the direct painter."""
    view = LiveTableView(model)
    qtbot.addWidget(view)
    view.resize(420, height)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.direct_paints > 0)
    return view


def test_view_paints_cells_itself_and_after_an_update_only_the_changed_cell(qtbot) -> None:
    model = ColumnTableModel(COLUMNS)
    n = 60
    keys = np.array([f"k{i}" for i in range(n)], dtype=object)
    px = np.arange(n, dtype=float)
    model.update(keys, {"name": keys, "px": px, "pnl": np.zeros(n)})
    view = _painted_view(qtbot, model, 300)
    visible_rows = view.rowAt(view.viewport().height() - 1) - view.rowAt(0) + 1
    assert view.last_painted_cells >= 3 * (visible_rows - 1)  # the first paint draws the whole block

    before = view.direct_paints
    changed = px.copy()
    changed[2] = 99.5
    model.update(keys, {"name": keys, "px": changed, "pnl": np.zeros(n)})
    qtbot.waitUntil(lambda: view.direct_paints > before)
    assert view.last_painted_cells == 1  # one value moved: one cell repainted, not the block
    assert model.display_text(2, "px") == "99.50"  # the cached text followed the value

    # a change below the visible rows repaints nothing: the next paint, caused by a visible change made
    # after it, draws that one cell only, and it is the only paint since
    before = view.direct_paints
    changed = changed.copy()
    changed[n - 1] = -1.0
    model.update(keys, {"name": keys, "px": changed, "pnl": np.zeros(n)})
    changed = changed.copy()
    changed[3] = 77.25
    model.update(keys, {"name": keys, "px": changed, "pnl": np.zeros(n)})
    qtbot.waitUntil(lambda: view.direct_paints > before)
    assert view.direct_paints == before + 1 and view.last_painted_cells == 1


def test_view_draws_the_model_text_where_the_cells_are(qtbot) -> None:
    from PySide6.QtGui import QColor, QImage

    model = ColumnTableModel(COLUMNS)
    model.update(["a", "b"], {"name": ["alpha", ""], "px": np.array([123.45, math.nan]), "pnl": np.array([1.0, -1.0])})
    view = _painted_view(qtbot, model, 200)
    img = view.viewport().grab().toImage().convertToFormat(QImage.Format.Format_RGB32)

    def distinct(row: int, col: int) -> int:
        r = view.visualRect(model.index(row, col))
        return len({img.pixel(x, y) for x in range(r.left(), r.right()) for y in range(r.top(), r.bottom())})

    assert distinct(0, 0) > 3 and distinct(0, 1) > 3  # "alpha", "123.45" drawn
    assert distinct(1, 0) <= 2 and distinct(1, 1) <= 2  # empty text and NaN: background only
    # the signed column is drawn in the P&L colours
    r = view.visualRect(model.index(0, 2))
    colours = {QColor(img.pixel(x, y)).name() for x in range(r.left(), r.right()) for y in range(r.top(), r.bottom())}
    assert any(QColor(c).green() > QColor(c).red() + 40 for c in colours)


def test_signed_column_leaves_a_rounded_zero_uncoloured(qtbot) -> None:
    from PySide6.QtCore import Qt

    from widgets.table_model import NEGATIVE, POSITIVE

    model = ColumnTableModel([Column("edge", "Edge", "{:+.2f}", signed=True)])
    model.update(["a", "b", "c"], {"edge": np.array([0.003, -0.004, 0.02])})
    fg = [model.data(model.index(r, 0), Qt.ItemDataRole.ForegroundRole) for r in range(3)]
    assert [model.data(model.index(r, 0)) for r in range(3)] == ["0.00", "0.00", "+0.02"]
    assert fg == [None, None, POSITIVE] and NEGATIVE not in fg
