"""Broker symbol search (tastytrade ``GET /symbols/search/{prefix}``, IBKR ``reqMatchingSymbols``) and earnings dates
(tastytrade market metrics) at the wire, and the ``SearchSymbols`` command on the engine's current feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from engine.bus import SearchSymbols
from engine.clock import ManualClock
from engine.market.earnings import EarningsCalendar
from engine.market.ibkr import IbkrFeed
from engine.market.symbols import SymbolMatch, SymbolSearchError, check_search, match_own, rank_matches
from engine.market.tastytrade import TastytradeFeed
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.test_ibkr import make_conn as ib_conn
from tests.brokers.test_tastytrade import make_conn as tt_conn


@pytest.fixture
async def tt():
    async with FakeTastytrade(today=date(2026, 3, 2)) as server:
        yield server


@pytest.fixture
async def tws():
    async with FakeTws(today=date(2026, 3, 2)) as server:
        yield server


async def test_tastytrade_search_when_typed_then_broker_matches_best_first(tt, bus):
    conn = tt_conn(tt, bus)
    await conn.connect()
    try:
        feed = TastytradeFeed(conn, bus)
        found = await feed.search_symbols("sp")
        assert [m.symbol for m in found] == ["SPOT", "SPXL", "SPY"]
        assert found[-1].description == "SPDR S&P 500 ETF TRUST"
        assert [m.symbol for m in await feed.search_symbols("brk/", limit=5)] == ["BRK/B"]
        assert await feed.search_symbols("ZZZZ") == []
        with pytest.raises(SymbolSearchError, match="at least one character"):
            await feed.search_symbols("  ")
    finally:
        await conn.disconnect()
    assert ("GET", "/symbols/search/SP", None) in tt.requests


async def test_tastytrade_earnings_when_asked_then_fetched_once_in_a_batch_and_cached(tt, bus):
    tt.symbols.earnings = {"SPY": date(2026, 4, 20), "AAPL": date(2026, 2, 1)}
    conn = tt_conn(tt, bus)
    await conn.connect()
    clock = ManualClock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    try:
        feed = TastytradeFeed(conn, bus)
        feed.earnings = EarningsCalendar(feed._fetch_earnings, clock)
        feed.earnings.bind(asyncio.get_running_loop())
        assert feed.next_earnings("SPY") is None  # unknown: queued, answered later without waiting
        feed.next_earnings("AAPL")
        feed.next_earnings("QQQ")
        await wait_until(lambda: feed.next_earnings("SPY") is not None, what="earnings fetched")
        assert feed.next_earnings("SPY") == date(2026, 4, 20)
        assert feed.next_earnings("AAPL") is None  # reported already: not a next date
        assert feed.next_earnings("QQQ") is None  # the broker has none
        assert tt.symbols.metrics_requests == [["AAPL", "QQQ", "SPY"]]
        clock.advance(timedelta(hours=13))  # stale: asked again, once
        feed.next_earnings("SPY")
        await wait_until(lambda: len(tt.symbols.metrics_requests) == 2, what="refresh")
    finally:
        await feed.earnings.close()
        await conn.disconnect()


async def test_earnings_calendar_when_the_broker_fails_then_retries_later_not_on_every_read():
    clock = ManualClock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    calls: list[list[str]] = []

    async def failing(symbols: list[str]) -> dict[str, date | None]:
        calls.append(symbols)
        raise ConnectionError("broker down")

    cal = EarningsCalendar(failing, clock)
    cal.bind(asyncio.get_running_loop())
    assert cal.next("SPY") is None
    await wait_until(lambda: len(calls) == 1, what="first fetch")
    for _ in range(5):
        assert cal.next("SPY") is None
    clock.advance(timedelta(minutes=6))
    cal.next("SPY")
    await wait_until(lambda: len(calls) == 2, what="retry after the pause")
    await cal.close()


async def test_ibkr_search_when_typed_then_stocks_and_indexes_with_option_flags(tws, bus):
    conn = ib_conn(tws, bus)
    await conn.connect()
    try:
        feed = IbkrFeed(conn, bus)
        found = await feed.search_symbols("SP")
    finally:
        await conn.disconnect()
    assert [(m.symbol, m.kind) for m in found] == [("SPOT", "equity"), ("SPX", "index"), ("SPXL", "equity"),
                                                   ("SPY", "equity")]
    spy = found[-1]
    assert spy.optionable is True and spy.exchange == "ARCA" and spy.description == "SPDR S&P 500 ETF TRUST"
    assert tws.symbols.patterns == ["SP"]


def test_search_input_is_checked_and_results_ranked():
    assert check_search(" spy ", 5) == ("SPY", 5)
    for bad, msg in (("", "at least one"), ("SP Y;DROP", "not a symbol prefix"), (7, "is text")):
        with pytest.raises(SymbolSearchError, match=msg):
            check_search(bad, 5)
    for limit in (0, 51, True, 2.5):
        with pytest.raises(SymbolSearchError, match="result limit"):
            check_search("SPY", limit)
    assert [m.symbol for m in match_own(["QQQ", "SPY", "SP", "IWM"], "sp", 10)] == ["SP", "SPY"]
    ranked = rank_matches([SymbolMatch("XSPY", "matches on description"), SymbolMatch("SPY"), SymbolMatch("SPY"),
                           SymbolMatch("SPXL"), SymbolMatch("SP")], "SP", 3)
    assert [m.symbol for m in ranked] == ["SP", "SPXL", "SPY"]


async def test_engine_search_command_when_simulated_then_lists_its_own_and_rejects_bad_input(tmp_path):
    from engine.core import Engine, EngineConfig
    from engine.settings import Settings
    from tests.sim_start import pinned_settings

    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings()))
    async with Engine(cfg) as engine:
        found = await engine.bus.send(SearchSymbols(prefix="s"))
        assert found and all(m.symbol.startswith("S") for m in found)
        assert {m.symbol for m in found} <= set(engine.feed.underlyings())
        with pytest.raises(SymbolSearchError):
            await engine.bus.send(SearchSymbols(prefix="", limit=5))


async def test_engine_search_command_when_tastytrade_connected_then_asks_the_broker(tmp_path, tt):
    from engine.brokers.config import BrokersConfig, TastytradeConfig
    from engine.core import Engine, EngineConfig
    from engine.settings import Settings
    from tests.brokers.test_engine_connect import _credentials
    from tests.sim_start import pinned_settings

    tt.symbols.earnings = {"SPY": date(2099, 1, 15)}
    brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=tt.api_url, streamer_url=tt.streamer_url,
                                                        call_timeout_s=3))
    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
    async with Engine(cfg) as engine:
        await engine.connect_broker("tastytrade", credentials=_credentials())
        found = await engine.bus.send(SearchSymbols(prefix="AM"))
        assert [m.symbol for m in found] == ["AMZN"] and found[0].description == "AMAZON.COM INC"
        from engine.watchlist import WatchlistData

        data = WatchlistData(engine)
        await wait_until(lambda: data.row("SPY").earnings == date(2099, 1, 15), what="earnings in the watchlist row")
        await engine.disconnect_broker("tastytrade")
