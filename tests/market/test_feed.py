"""SimulatedFeed on a real bus and loop: events, cache first, quote batches, lifecycle."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
import pytest

from engine.bus import Bus
from engine.bus.events import (
    ChainUpdated,
    ClockTicked,
    ConnectionStateChanged,
    QuotesUpdated,
    UnderlyingUpdated,
)
from engine.market.feed import FeedError
from engine.market.simulated import SimulatedFeed

from .conftest import MONDAY


async def _until(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_fast_feed_streams_chains_underlyings_and_clock_with_cache_first():
    bus = Bus()
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY", "QQQ"), start=MONDAY, fast=True)
    seen: dict[type, list] = {ChainUpdated: [], UnderlyingUpdated: [], ClockTicked: [], ConnectionStateChanged: []}
    cache_ok: list[bool] = []

    def on(ev):
        seen[type(ev)].append(ev)
        if isinstance(ev, ChainUpdated):
            cache_ok.append(feed.last_chain(ev.chain.underlying) is ev.chain)

    for t in seen:
        bus.subscribe(t, on)
    await feed.start()
    start = feed.market.now
    await _until(lambda: feed.market.now - start > timedelta(hours=1))
    await feed.stop()
    assert not feed.connected
    assert {e.chain.underlying for e in seen[ChainUpdated]} == {"SPY", "QQQ"}
    assert all(cache_ok)
    assert {e.symbol for e in seen[UnderlyingUpdated]} == {"SPY", "QQQ"}
    times = [e.now for e in seen[ClockTicked]]
    assert times == sorted(times) and times[-1] > times[0]
    assert [e.state for e in seen[ConnectionStateChanged]] == ["connected", "disconnected"]
    await bus.close()


async def test_quote_batches_index_the_published_chain_and_respect_the_window():
    bus = Bus()
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=MONDAY)
    await feed.subscribe("SPY", strike_window=(590.0, 610.0))
    batches: list[QuotesUpdated] = []
    matches: list[bool] = []

    def on_quotes(ev: QuotesUpdated) -> None:
        batches.append(ev)
        current = feed.market.chain("SPY")  # the quotes published are the market's quotes right now
        matches.append(bool(np.array_equal(current.bid[ev.rows], ev.bid) and np.array_equal(current.ask[ev.rows], ev.ask)))

    bus.subscribe(QuotesUpdated, on_quotes)
    feed.step_to(feed.market.now + timedelta(seconds=1))  # publishes the first chains
    chain = feed.last_chain("SPY")
    for _ in range(20):
        feed.step_to(feed.market.now + timedelta(seconds=2))
    assert batches
    for b in batches:
        assert np.all((chain.strike[b.rows] >= 590) & (chain.strike[b.rows] <= 610))
        assert len(b.rows) == len(b.bid) == len(b.ask)
    assert all(matches)
    assert feed.quotes_published == sum(len(b.rows) for b in batches)
    await bus.close()


async def test_requests_for_unknown_symbols_fail_clearly():
    bus = Bus()
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=MONDAY)
    with pytest.raises(FeedError, match="not in the simulated universe"):
        await feed.chain("TSLA")
    with pytest.raises(FeedError, match="strike window"):
        await feed.subscribe("SPY", strike_window=(610.0, 590.0))
    with pytest.raises(ValueError, match="speed"):
        feed.set_speed(20_000)
    exps = await feed.expirations("SPY")
    only = await feed.chain("SPY", exps[:1])
    assert set(only.expiry_dates()) == {exps[0]}
    assert feed.last_price("SPY") == pytest.approx(feed.market.spot("SPY"))
    assert feed.last_price("TSLA") is None
    await bus.close()


async def test_closed_market_jumps_to_the_next_open():
    bus = Bus()
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=MONDAY)
    m = feed.market
    feed.step_to(m.session_close)
    assert not m.is_open
    feed.step_to(m.now + timedelta(seconds=1))
    assert m.is_open and m.session > MONDAY
    await bus.close()


async def test_restart_resumes_the_simulated_market_where_it_stopped(tmp_path):
    from engine.store import Store

    store = Store.open(tmp_path / "sim.sqlite")
    bus = Bus()
    from engine.market.config import SimulatorConfig

    feed = SimulatedFeed(bus, SimulatorConfig(seed=7).restricted_to(["SPY"]), start=MONDAY, store=store)
    await feed.start()
    feed.step_to(feed.market.now + timedelta(hours=2))
    await feed.stop()  # saves
    saved_now, saved_spot = feed.market.now, feed.market.spot("SPY")
    saved_chain = feed.market.chain("SPY")
    feed.step_to(feed.market.now + timedelta(minutes=10))
    expected = feed.market.chain("SPY")  # what the uninterrupted market shows 10 minutes later

    again = SimulatedFeed(Bus(), feed.config, store=store)
    assert again.resumed and again.market.now == saved_now
    assert again.market.spot("SPY") == pytest.approx(saved_spot, rel=1e-12)
    assert set(again.market.chain("SPY").symbol) == set(saved_chain.symbol)
    again.step_to(again.market.now + timedelta(minutes=10))
    np.testing.assert_allclose(again.market.chain("SPY").spot, expected.spot, rtol=1e-12)
    other = SimulatedFeed(Bus(), feed.config.model_copy(update={"seed": 99}), store=store)
    assert not other.resumed  # a different world starts afresh
    await bus.close()
    store.close()
