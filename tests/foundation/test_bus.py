import asyncio
from datetime import UTC, datetime

import pytest

from engine.bus import (
    Alert,
    Bus,
    CancelAllOrders,
    Event,
    NoHandlerError,
    QuoteUpdated,
    SetRiskLevel,
    SubscriberFailed,
)
from engine.model import Quote

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def q(sym: str, bid: float) -> QuoteUpdated:
    return QuoteUpdated(quote=Quote(sym, bid, bid + 0.1, NOW))


async def test_publish_when_subscriber_raises_then_others_still_receive_and_failure_is_published():
    bus = Bus()
    seen, failures, async_seen = [], [], []

    def bad(e):
        raise RuntimeError("boom")

    async def slow_ok(e):
        async_seen.append(e)

    bus.subscribe(Alert, bad, name="bad")
    bus.subscribe(Alert, seen.append, name="good")
    bus.subscribe(Alert, slow_ok, name="async-good")
    bus.subscribe(SubscriberFailed, failures.append, name="watcher")
    for i in range(3):
        bus.publish(Alert(message=str(i)))
    await bus.idle()
    assert [e.message for e in seen] == ["0", "1", "2"]
    assert [e.message for e in async_seen] == ["0", "1", "2"]
    assert len(failures) == 3 and failures[0].subscriber == "bad" and "boom" in failures[0].error
    await bus.close()


async def test_async_subscriber_when_it_raises_then_its_task_survives_and_keeps_receiving():
    bus = Bus()
    got, failures = [], []

    async def flaky(e):
        if e.message == "1":
            raise ValueError("bad one")
        got.append(e.message)

    bus.subscribe(Alert, flaky, name="flaky")
    bus.subscribe(SubscriberFailed, failures.append)
    for i in range(3):
        bus.publish(Alert(message=str(i)))
    await bus.idle()
    assert got == ["0", "2"]
    assert failures[0].subscriber == "flaky"
    await bus.close()


async def test_slow_subscriber_when_quotes_stream_then_gets_latest_per_symbol_not_a_backlog():
    bus = Bus()
    received = []
    gate = asyncio.Event()

    async def slow(e):
        await gate.wait()
        received.append((e.quote.symbol, e.quote.bid))

    bus.subscribe(QuoteUpdated, slow)
    bus.publish(q("A", 0.0))
    await asyncio.sleep(0.01)  # the subscriber is now blocked inside the first event
    for i in range(1, 1001):
        bus.publish(q("A", float(i)))
        bus.publish(q("B", float(i)))
    sub = bus._subs[0]
    assert sub.backlog == 2  # conflated: one pending per symbol, not 2,000
    gate.set()
    await bus.idle()
    assert received == [("A", 0.0), ("A", 1000.0), ("B", 1000.0)]
    await bus.close()


async def test_non_conflated_events_are_delivered_in_order_without_loss():
    bus = Bus()
    got = []

    async def h(e):
        got.append(int(e.message))

    bus.subscribe(Alert, h)
    for i in range(5000):
        bus.publish(Alert(message=str(i)))
    await bus.idle()
    assert got == list(range(5000))
    await bus.close()


async def test_subscription_matches_subclasses_and_wildcard():
    bus = Bus()
    everything, alerts = [], []
    bus.subscribe(Event, everything.append)
    bus.subscribe(Alert, alerts.append)
    bus.publish(Alert(message="x"))
    bus.publish(q("A", 1.0))
    assert len(everything) == 2 and len(alerts) == 1
    await bus.close()


async def test_commands_go_to_exactly_one_handler():
    bus = Bus()
    with pytest.raises(NoHandlerError):
        await bus.send(SetRiskLevel(level=10))

    async def handler(cmd):
        return cmd.level * 2

    bus.register(SetRiskLevel, handler)
    with pytest.raises(ValueError, match="already registered"):
        bus.register(SetRiskLevel, handler)
    assert await bus.send(SetRiskLevel(level=21)) == 42

    def failing(cmd):
        raise PermissionError("not now")

    bus.register(CancelAllOrders, failing)
    with pytest.raises(PermissionError):
        await bus.send(CancelAllOrders())
    await bus.close()


async def test_unsubscribe_and_close_stop_delivery():
    bus = Bus()
    got = []
    sub = bus.subscribe(Alert, got.append)
    bus.publish(Alert(message="a"))
    sub.cancel()
    bus.publish(Alert(message="b"))
    await bus.close()
    bus.publish(Alert(message="c"))
    assert [e.message for e in got] == ["a"]


async def test_a_publish_from_another_thread_is_delivered_on_the_loop_in_order(caplog):
    import threading

    bus = Bus()
    got: list[tuple[str, int]] = []
    bus.subscribe(Alert, lambda e: got.append((e.message, threading.get_ident())), name="recorder")

    def worker() -> None:
        for i in range(3):
            bus.publish(Alert(message=f"from worker {i}"))

    t = threading.Thread(target=worker, name="backfill-thread")
    with caplog.at_level("WARNING", logger="engine.bus.bus"):
        t.start()
        t.join(10)
        assert got == []  # not delivered on the worker's thread
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(got) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
    assert [m for m, _ in got] == ["from worker 0", "from worker 1", "from worker 2"]
    assert {ident for _, ident in got} == {threading.get_ident()}  # the loop's thread
    warned = [r for r in caplog.records if "published from thread backfill-thread" in r.getMessage()]
    assert len(warned) == 1 and "Alert" in warned[0].getMessage()  # once per event type
    bus.publish(Alert(message="on the loop"))
    assert got[-1][0] == "on the loop"  # the loop's own publishes stay synchronous
