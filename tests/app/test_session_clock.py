"""The GUI on one clock: the status bar says what the simulated market (and the real one) is doing, the
Trading menu moves the simulated clock, and the orders table and event log show New York times taken
from the engine's clock. The wall clock is pinned (a Saturday night), the simulated start too."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.clock import ManualClock, format_market_time
from tests.app.conftest import fast_settings
from tests.qt_fixtures import run_async
from tests.sim_start import pinned_settings

SATURDAY_NIGHT = datetime(2026, 3, 7, 23, 51, tzinfo=UTC)  # 18:51 EST; next real open Monday 09:30 EDT
MONDAY_OPEN = datetime(2026, 3, 9, 13, 30, tzinfo=UTC)
SHOTS = Path("/tmp/optiondesk-shots")


@pytest.fixture()
def engine(qtbot, async_cleanup, engine_home):
    from engine.core import Engine, EngineConfig

    cfg = EngineConfig.for_directory(engine_home, settings=pinned_settings(fast_settings()), seed=7,
                                     clock_interval_s=0.2, wall_clock=ManualClock(SATURDAY_NIGHT))
    eng = Engine(cfg)
    run_async(qtbot, eng.start(), timeout=30)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


def _grab(widget, name: str) -> Path:
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    for _ in range(3):  # let the layout catch up with the newest text before painting
        QApplication.processEvents()
    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert img.save(str(path))
    colours = {img.pixel(x, y) for x in range(0, img.width(), 5) for y in range(0, img.height(), 5)}
    assert len(colours) > 4, f"{name} looks blank"
    return path


def _trading_action(window, text: str):
    trading = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Trading")
    return next(a for a in trading.actions() if a.text() == text)


def test_status_bar_when_real_market_closed_then_names_the_simulated_session_and_the_next_real_open(
        window, engine, qtbot):
    expected_tail = "— real market closed (opens Mon 09 Mar 2026 09:30:00 EDT)"
    qtbot.waitUntil(lambda: window.status_clock.text().endswith(expected_tail), timeout=5000)
    text = window.status_clock.text()
    assert text.startswith("simulated session Mon 02 Mar 2026 ")  # SIM_START, New York time, zone named
    assert " EST — real market closed" in text
    _grab(window.statusBar(), "status_bar")


def test_trading_menu_restart_and_jump_when_triggered_then_the_engine_moves_its_clock_and_the_bar_follows(
        window, engine, qtbot):
    restart = _trading_action(window, "Restart the simulated day")
    jump = _trading_action(window, "Jump to the next real session")
    qtbot.waitUntil(lambda: window.session_status is not None and restart.isEnabled(), timeout=5000)
    open_ = engine.feed.market.session_open
    engine.feed.set_fast(True)
    qtbot.waitUntil(lambda: engine.now().hour >= open_.hour + 1, timeout=10000)
    engine.feed.set_fast(False)

    restart.trigger()
    qtbot.waitUntil(lambda: bool(engine.store.audit.list("simulated_clock:restart_day")), timeout=5000)
    assert engine.store.audit.list("simulated_clock:restart_day")[-1]["detail"]["to"] == open_.isoformat()
    qtbot.waitUntil(lambda: window.status_clock.text().startswith("simulated session Mon 02 Mar 2026 09:3"),
                    timeout=5000)
    assert any("simulated day restarted" in m for m in window.alerts.messages())

    jump.trigger()
    qtbot.waitUntil(lambda: bool(engine.store.audit.list("simulated_clock:jump_to_real_session")), timeout=10000)
    assert engine.feed.market.session_open == MONDAY_OPEN
    qtbot.waitUntil(lambda: window.status_clock.text().startswith("simulated session Mon 09 Mar 2026 09:3"),
                    timeout=5000)
    _grab(window.statusBar(), "status_bar_after_jump")


def test_orders_table_and_event_log_when_an_order_flows_then_times_are_new_york_times_of_the_engine_clock(
        window, engine, qtbot):
    from engine.bus import SubmitOrder
    from engine.model import Leg, OrderIntent, OrderType, Side

    qtbot.waitUntil(lambda: engine.feed.last_chain("SPY") is not None, timeout=5000)
    chain = engine.feed.last_chain("SPY")
    calls = np.nonzero(chain.is_call & (chain.bid > 1.0))[0]
    row = int(calls[np.argmin(np.abs(chain.strike[calls] - chain.spot))])
    intent = OrderIntent(legs=(Leg(chain.option(row), Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                         limit_price=Decimal(f"{chain.bid[row] - 0.30:.2f}"))
    order = run_async(qtbot, engine.bus.send(SubmitOrder(intent=intent)))
    window.build_all_panels()
    orders = window.panels["orders"]
    qtbot.waitUntil(lambda: orders.model.row_of(order.order_id) >= 0, timeout=5000)
    qtbot.waitUntil(lambda: engine.oms.order(order.order_id).status.value == "working", timeout=5000)
    current = engine.oms.order(order.order_id)
    qtbot.waitUntil(lambda: orders.model.value(orders.model.row_of(order.order_id), "time")
                    == format_market_time(current.updated_at), timeout=5000)
    shown = orders.model.value(orders.model.row_of(order.order_id), "time")
    assert shown.startswith("Mon 02 Mar 2026 ") and shown.endswith(" EST")  # simulated day, not the wall's
    assert abs((current.updated_at - engine.now()).total_seconds()) < 600

    window.alerts.log("info", "test", "a line from the GUI")
    entry = window.alerts.all_entries[-1]
    assert abs((entry.ts - engine.now()).total_seconds()) < 60  # the engine's clock, not wall UTC
    model = window.alerts.model
    top = model.data(model.index(0, 0))
    assert top == format_market_time(entry.ts) and top.startswith("Mon 02 Mar 2026 ")
    qtbot.waitUntil(lambda: any("a line from the GUI" == m for m in window.alerts.messages()), timeout=2000)
    bus_entries = [e for e in window.alerts.all_entries if e.source != "test"]
    assert bus_entries and all(e.ts.date() == engine.now().date() for e in bus_entries)
    _grab(orders, "orders_panel")
    _grab(window.alerts, "event_log")


def test_orders_sort_when_updates_cross_midnight_then_by_the_instant_not_the_text(qtbot, engine):
    from engine.model import OrderStatus
    from widgets.orders_view import OrdersPanel

    panel = OrdersPanel(engine)
    qtbot.addWidget(panel)
    base = engine.oms.factory.create  # a real factory: its orders carry the engine clock's time

    def make(ts: datetime):
        from engine.model import Equity, Leg, OrderIntent, Side

        o = base(OrderIntent(legs=(Leg(Equity("SPY"), Side.BUY),), quantity=1, limit_price=Decimal("1.00")))
        return o.evolve(status=OrderStatus.WORKING, updated_at=ts)

    # as text, "Sun ..." sorts after "Mon ..."; as instants, Monday morning is the newer
    late_evening = make(datetime(2026, 3, 9, 3, 50, tzinfo=UTC))  # Sun 08 Mar 23:50 EDT
    next_morning = make(datetime(2026, 3, 9, 13, 35, tzinfo=UTC))  # Mon 09 Mar 09:35 EDT
    for o in (next_morning, late_evening):
        panel.orders[o.order_id] = o
    panel._render()
    times = [panel.model.value(r, "time") for r in range(panel.model.rowCount())]
    assert times == ["Mon 09 Mar 2026 09:35:00 EDT", "Sun 08 Mar 2026 23:50:00 EDT"]  # newest first
