"""The bus → GUI bridge coalesces at ~10 Hz and isolates consumers; the alerts log shows what matters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.bus import Bus
from engine.bus.events import (
    Alert,
    ConnectionStateChanged,
    KillSwitchTripped,
    OrderDenied,
    QuoteUpdated,
    UnderlyingUpdated,
)
from engine.model import Quote
from tests.qt_fixtures import run_async


def _quote(symbol: str, bid: float) -> Quote:
    return Quote(symbol=symbol, bid=bid, ask=bid + 0.1, ts=datetime.now(UTC))


@pytest.fixture()
def bus(qtbot, async_cleanup):
    b = Bus()
    yield b
    run_async(qtbot, b.close())


def test_bridge_conflates_quotes_to_latest_per_symbol_and_keeps_other_events_in_order(bus, qtbot):
    from app.bridge import EventBridge

    bridge = EventBridge(bus, interval_ms=100)
    batches = []
    bridge.add_consumer(batches.append, "collector")
    bridge.start()
    for i in range(1000):
        bus.publish(QuoteUpdated(quote=_quote(f"SYM{i % 10}", 1.0 + i)))
    bus.publish(Alert(level="warning", message="first"))
    bus.publish(Alert(level="error", message="second"))
    qtbot.waitUntil(lambda: bool(batches), timeout=2000)
    bridge.stop()
    batch = batches[0]
    latest = batch.latest(QuoteUpdated)
    assert len(latest) == 10
    assert latest["SYM9"].quote.bid == pytest.approx(1.0 + 999)
    assert [a.message for a in batch.events(Alert)] == ["first", "second"]
    assert bridge.events_in == 1002
    assert len(batches) == 1  # one flush, not one repaint per quote


def test_bridge_delivers_on_its_timer_and_not_per_event(bus, qtbot):
    from app.bridge import EventBridge

    bridge = EventBridge(bus, interval_ms=100)
    calls = []
    bridge.add_consumer(calls.append)
    bridge.start()
    for i in range(200):
        bus.publish(UnderlyingUpdated(symbol="SPY", price=500 + i))
    assert calls == []  # nothing is delivered synchronously from publish
    qtbot.waitUntil(lambda: bool(calls), timeout=1000)
    assert calls[0].latest(UnderlyingUpdated)["SPY"].price == 699
    bridge.stop()


def test_a_failing_consumer_is_isolated_and_reported(bus, qtbot):
    from app.bridge import EventBridge

    bridge = EventBridge(bus, interval_ms=50)
    good = []
    failures = []

    def broken(_batch):
        raise RuntimeError("render exploded")

    bridge.add_consumer(broken, "broken panel")
    bridge.add_consumer(good.append, "good panel")
    bridge.consumer_failed.connect(lambda name, err: failures.append((name, err)))
    bridge.start()
    bus.publish(Alert(message="x"))
    qtbot.waitUntil(lambda: bool(good and failures), timeout=2000)
    assert failures[0] == ("broken panel", "RuntimeError: render exploded")
    assert bridge.failures == 1
    bridge.stop()
    witness = EventBridge(bus, interval_ms=50)  # a running bridge: once it delivers, a live one would have
    seen = []
    witness.add_consumer(seen.append, "witness")
    witness.start()
    bus.publish(Alert(message="after stop"))
    qtbot.waitUntil(lambda: bool(seen), timeout=2000)
    witness.stop()
    assert len(good) == 1  # unsubscribed


def test_bridge_rejects_a_non_positive_interval(bus):
    from app.bridge import EventBridge

    with pytest.raises(ValueError, match="interval"):
        EventBridge(bus, interval_ms=0)


def test_alerts_panel_logs_denials_with_reasons_trips_and_connections_newest_first(qtbot):
    from app.alerts import AlertsPanel
    from engine.model import Equity, Leg, Order, OrderStatus, OrderType, Side, TimeInForce
    from widgets.base import EventBatch

    panel = AlertsPanel(engine=None)
    qtbot.addWidget(panel)
    notified = []
    panel.notify.connect(lambda lvl, title, msg: notified.append((lvl, msg)))
    now = datetime.now(UTC)
    order = Order("o1", "c1", (Leg(Equity("SPY"), Side.BUY),), 1, OrderType.LIMIT, None, TimeInForce.DAY,
                  OrderStatus.DENIED, now, now, reason="max loss per trade")

    class Check:
        name = "max_loss"
        message = "max loss $2,600 > limit $2,000"

    batch = EventBatch.from_events([
        QuoteUpdated(quote=_quote("SPY", 1.0)),  # debug: not logged
        OrderDenied(order=order, checks=(Check(),)),
        ConnectionStateChanged(component="feed:simulated", state="connected", latency_ms=3.0),
        KillSwitchTripped(reason="daily loss limit hit", by="risk"),
    ])
    panel.apply_events(batch)
    msgs = panel.messages()
    assert len(msgs) == 3
    assert "max loss $2,600 > limit $2,000" in msgs[0]
    assert "feed:simulated: connected" in msgs[1]
    assert "KILL SWITCH TRIPPED by risk: daily loss limit hit" in msgs[2]
    assert panel.model.rows[0].level == "critical"  # newest on top
    assert [e.source for e in panel.all_entries] == ["orders", "feed:simulated", "kill switch"]
    assert notified == [("critical", msgs[2])]
    panel.level_box.setCurrentIndex(2)  # errors only
    assert panel.model.rowCount() == 1
