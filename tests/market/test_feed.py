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


def _window_rows(chain, expiry, low: float, high: float) -> set[int]:
    inside = (chain.strike >= low) & (chain.strike <= high) & (chain.expiry.astype("datetime64[D]")
                                                                == np.datetime64(expiry, "D"))
    return set(np.nonzero(inside)[0].tolist())


def _unlimited_quotes_feed(bus: Bus, **kw) -> SimulatedFeed:
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=MONDAY, **kw)
    feed.config.streaming.quotes_per_second = 1_000_000  # the budget is not what these tests measure
    return feed


async def test_a_newly_selected_window_is_published_whole_on_the_next_tick():
    bus = Bus()
    feed = _unlimited_quotes_feed(bus)
    batches: list[QuotesUpdated] = []
    bus.subscribe(QuotesUpdated, batches.append)
    feed.step_to(feed.market.now + timedelta(seconds=1))  # the first chain
    chain = feed.last_chain("SPY")
    expiries = await feed.expirations("SPY")
    spot = round(feed.market.spot("SPY"))
    await feed.subscribe("SPY", expiries[:1], (spot - 5.0, spot + 5.0))
    feed.step_to(feed.market.now + timedelta(milliseconds=100))  # one tick at x1: hardly a quote moves
    assert len(batches) == 1
    want = _window_rows(chain, expiries[0], spot - 5.0, spot + 5.0)
    assert len(want) >= 10 and set(batches[0].rows.tolist()) == want
    assert batches[0].bid.tolist() == feed.market.chain("SPY").bid[batches[0].rows].tolist()

    # the trader picks another expiry: that window arrives whole on the next tick too
    await feed.subscribe("SPY", expiries[2:3], (spot - 5.0, spot + 5.0))
    feed.step_to(feed.market.now + timedelta(milliseconds=100))
    assert set(batches[-1].rows.tolist()) == _window_rows(chain, expiries[2], spot - 5.0, spot + 5.0)
    published = feed.quotes_published
    feed.step_to(feed.market.now + timedelta(milliseconds=100))  # after the snapshot: changed rows only
    assert feed.quotes_published - published < len(want)
    await bus.close()


async def test_a_new_window_gets_its_quotes_even_on_a_tick_that_republishes_its_chain():
    bus = Bus()
    feed = _unlimited_quotes_feed(bus, fast=True)  # fast: every tick republishes every chain
    order: list[object] = []
    bus.subscribe(ChainUpdated, order.append)
    bus.subscribe(QuotesUpdated, order.append)
    feed.step_to(feed.market.now + timedelta(seconds=1))
    expiry = (await feed.expirations("SPY"))[1]
    await feed.subscribe("SPY", [expiry])
    order.clear()
    feed.step_to(feed.market.now + timedelta(seconds=60))
    assert [type(e) for e in order] == [ChainUpdated, QuotesUpdated]  # rows index the chain just sent
    chain, quotes = order
    assert set(quotes.rows.tolist()) == _window_rows(chain.chain, expiry, 0.0, 1e9)
    order.clear()
    feed.step_to(feed.market.now + timedelta(seconds=60))
    assert [type(e) for e in order] == [ChainUpdated]  # later chain ticks carry the quotes themselves
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
    other = SimulatedFeed(Bus(), feed.config.model_copy(update={"seed": 99, "start": MONDAY.isoformat()}), store=store)
    assert not other.resumed  # a different world starts afresh
    await bus.close()
    store.close()
