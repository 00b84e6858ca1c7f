"""Events/s through the bus with 10 subscribers (target ≥ 200k events/s)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from engine.bus import Alert, Bus, Event, QuoteUpdated
from engine.model import Quote

N = 200_000
SUBSCRIBERS = 10
TARGET = 200_000


async def _sync_subscribers() -> float:
    bus = Bus()
    counter = [0]

    def handler(e: Event) -> None:
        counter[0] += 1

    for _ in range(SUBSCRIBERS):
        bus.subscribe(Event, handler)
    ev = Alert(message="x")
    t = time.perf_counter()
    for _ in range(N):
        bus.publish(ev)
    dt = time.perf_counter() - t
    assert counter[0] == N * SUBSCRIBERS
    await bus.close()
    return N / dt


async def _async_subscribers(conflated: bool) -> float:
    bus = Bus()
    counter = [0]

    async def handler(e: Event) -> None:
        counter[0] += 1

    for _ in range(SUBSCRIBERS):
        bus.subscribe(Event, handler)
    now = datetime.now(UTC)
    events = ([QuoteUpdated(quote=Quote(f"S{i % 500}", 1.0, 1.1, now)) for i in range(N)] if conflated
              else [Alert(message="x")] * N)
    t = time.perf_counter()
    for i, ev in enumerate(events):
        bus.publish(ev)
        if i % 5000 == 4999:
            await asyncio.sleep(0)  # let subscribers drain as a real loop would
    await bus.idle(timeout=120)
    dt = time.perf_counter() - t
    await bus.close()
    return N / dt


def run() -> dict:
    sync_rate = asyncio.run(_sync_subscribers())
    async_rate = asyncio.run(_async_subscribers(conflated=False))
    quote_rate = asyncio.run(_async_subscribers(conflated=True))
    return {
        "subscribers": SUBSCRIBERS,
        "events": N,
        "sync_handlers_events_per_s": round(sync_rate),
        "async_handlers_events_per_s": round(async_rate),
        "async_handlers_conflated_quotes_events_per_s": round(quote_rate),
        "target_events_per_s": TARGET,
        "target_met_sync": sync_rate >= TARGET,
        "target_met_async": async_rate >= TARGET,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
