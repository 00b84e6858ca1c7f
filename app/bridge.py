"""The bus → GUI bridge (docs/architecture.md §3).

The bridge subscribes to every event on the engine bus with a plain (inline) handler that only appends
to an :class:`~widgets.base.EventAccumulator` — O(1), no Qt calls, so the publisher never waits on the
GUI. A ``QTimer`` at ~10 Hz takes the accumulated :class:`~widgets.base.EventBatch` (conflated
latest-per-key for quotes/chains/account/clock, ordered list for everything else) and hands the same
batch to every registered consumer (panels, toolbar controls, status bar). Quotes never trigger a
repaint one by one.

A consumer that raises is isolated: the error is logged, counted and reported through
``consumer_failed``; other consumers still get the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore

from engine.bus.messages import Event
from widgets.base import EventAccumulator, EventBatch

log = logging.getLogger(__name__)

Consumer = Callable[[EventBatch], None]


class EventBridge(QtCore.QObject):
    """Coalesce bus events and deliver them to GUI consumers on a timer.

    ``interval_ms`` defaults to 100 (10 Hz). ``stats()`` reports events in, flushes and the slowest
    flush in milliseconds (the GUI benchmark reads it).
    """

    consumer_failed = QtCore.Signal(str, str)  # consumer name, error

    def __init__(self, bus: Any, interval_ms: int = 100, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        if interval_ms <= 0:
            raise ValueError(f"bridge interval must be positive, got {interval_ms} ms")
        self._bus = bus
        self._acc = EventAccumulator()
        self._consumers: list[tuple[str, Consumer]] = []
        self._subscription: Any = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)
        self.events_in = 0
        self.flushes = 0
        self.failures = 0
        self.last_flush_ms = 0.0
        self.max_flush_ms = 0.0
        #: slowest delivery per consumer, ms (which panel makes a flush slow)
        self.consumer_max_ms: dict[str, float] = {}

    # ---- wiring -------------------------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer, name: str | None = None) -> None:
        """Register a callable that receives every batch (a panel's ``apply_events``)."""
        self._consumers.append((name or getattr(consumer, "__qualname__", repr(consumer)), consumer))

    def remove_consumer(self, consumer: Consumer) -> None:
        self._consumers = [(n, c) for n, c in self._consumers if c != consumer]

    @property
    def running(self) -> bool:
        return self._subscription is not None

    @property
    def interval_ms(self) -> int:
        return self._timer.interval()

    def start(self) -> None:
        """Subscribe to the bus and start the refresh timer (idempotent)."""
        if self._subscription is None:
            self._subscription = self._bus.subscribe(Event, self._on_event, name="gui-bridge")
        if not self._timer.isActive():
            self._timer.start()

    def stop(self) -> None:
        """Unsubscribe and stop the timer; pending events are dropped (the window is closing)."""
        self._timer.stop()
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._acc.take()

    # ---- hot path -----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        # Called inline by Bus.publish on the loop thread: append only.
        self.events_in += 1
        self._acc.add(event)

    @property
    def pending(self) -> int:
        return len(self._acc)

    def flush(self) -> EventBatch:
        """Deliver what accumulated since the last flush (the timer calls this; tests may too)."""
        batch = self._acc.take()
        if not batch:
            return batch
        t0 = time.perf_counter()
        for name, consumer in list(self._consumers):
            c0 = time.perf_counter()
            try:
                consumer(batch)
            except Exception as exc:
                self.failures += 1
                log.exception("GUI consumer %s failed on %r", name, batch)
                self.consumer_failed.emit(name, f"{type(exc).__name__}: {exc}")
            ms = (time.perf_counter() - c0) * 1000.0
            if ms > self.consumer_max_ms.get(name, 0.0):
                self.consumer_max_ms[name] = ms
        self.flushes += 1
        self.last_flush_ms = (time.perf_counter() - t0) * 1000.0
        self.max_flush_ms = max(self.max_flush_ms, self.last_flush_ms)
        return batch

    def stats(self) -> dict[str, float | int]:
        return {
            "events_in": self.events_in,
            "flushes": self.flushes,
            "failures": self.failures,
            "last_flush_ms": round(self.last_flush_ms, 3),
            "max_flush_ms": round(self.max_flush_ms, 3),
            "consumers": len(self._consumers),
            "consumer_max_ms": {k: round(v, 2) for k, v in sorted(self.consumer_max_ms.items(), key=lambda kv: -kv[1])},
        }
