"""Fixtures: loopback broker servers (127.0.0.1, started here), a real bus, an event recorder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.bus import Bus
from engine.bus.messages import Event


class Recorder:
    """Collects every event published on the bus (inline subscriber: cache-first order preserved)."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[Event] = []
        bus.subscribe(Event, self.events.append, name="test-recorder")

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    async def wait_for(self, cls: type, pred: Callable[[Any], bool] = lambda e: True, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.of(cls):
                if pred(e):
                    return e
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {cls.__name__} matching within {timeout}s; saw "
                             f"{[type(e).__name__ for e in self.events][-30:]}")


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
def recorder(bus: Bus) -> Recorder:
    return Recorder(bus)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tastytrade SDK posts with ``data=`` (httpx2 deprecates it): its warning, not ours."""
    for item in items:
        if "tests/brokers" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"))
