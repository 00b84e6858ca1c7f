"""Daily history from IBKR's ``reqHistoricalData`` (TRADES, OPTION_IMPLIED_VOLATILITY, HISTORICAL_VOLATILITY)
against the loopback TWS, IB's pacing rules on the engine clock, and IV rank on a connected IBKR."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest

from engine.clock import ManualClock
from engine.history.ibkr import IbkrHistorySource, duration_for, end_for, series_from_bars
from engine.history.pacing import HistoricalPacer
from engine.history.source import HistorySourceError
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.test_ibkr import make_conn

TODAY = date(2026, 3, 2)


def _sessions(end: date, n: int) -> list[date]:
    out, d = [], end
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d -= timedelta(days=1)
    return out[::-1]


def _serve(tws: FakeTws, symbol: str = "SPY", n: int = 320) -> list[date]:
    days = _sessions(TODAY - timedelta(days=1), n)
    tws.history.bars[(symbol, "TRADES")] = [(d, 500.0 + i * 0.5) for i, d in enumerate(days)]
    tws.history.bars[(symbol, "OPTION_IMPLIED_VOLATILITY")] = [(d, 0.15 + 0.0001 * i) for i, d in enumerate(days)]
    tws.history.bars[(symbol, "HISTORICAL_VOLATILITY")] = [(d, 0.12) for d in days[-30:]]
    return days


@pytest.fixture
async def tws():
    async with FakeTws(today=TODAY) as server:
        yield server


def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))


async def test_daily_history_when_fetched_then_closes_implied_and_historical_vol_by_session(tws, bus):
    days = _serve(tws)
    conn = make_conn(tws, bus)
    await conn.connect()
    try:
        source = IbkrHistorySource(conn, asyncio.get_running_loop(), clock=clock(), timeout_s=10)
        before = date(2026, 2, 20)
        series = await asyncio.to_thread(source.daily, ["SPY", "QQQ"], before, 252)
    finally:
        await conn.disconnect()
    assert set(series) == {"SPY"}  # QQQ: no contract at IB (error 200), left out
    spy = series["SPY"]
    assert len(spy.days) == 252 and spy.days[-1] == date(2026, 2, 19) and all(d < before for d in spy.days)
    i = days.index(spy.days[-1])
    assert spy.close[-1] == pytest.approx(500.0 + i * 0.5) and spy.atm_iv[-1] == pytest.approx(0.15 + 0.0001 * i)
    assert spy.hist_vol is not None and spy.hist_vol[-1] == pytest.approx(0.12)
    reqs = tws.history.requests
    assert [r.what for r in reqs] == ["TRADES", "OPTION_IMPLIED_VOLATILITY", "HISTORICAL_VOLATILITY"]
    assert all((r.bar_size, r.duration, r.end, r.use_rth, r.symbol) == (
        "1 day", "358 D", "20260220 00:00:00 US/Eastern", True, "SPY") for r in reqs)
    assert tws.history.violations == 0


async def test_daily_when_ib_reports_a_pacing_violation_then_holds_and_retries_once(tws, bus):
    _serve(tws)
    conn = make_conn(tws, bus)
    await conn.connect()
    slept: list[float] = []
    engine_clock = clock()

    async def sleep(seconds: float) -> None:  # the engine clock moves as the pacer waits
        slept.append(seconds)
        engine_clock.advance(timedelta(seconds=seconds))

    try:
        source = IbkrHistorySource(conn, asyncio.get_running_loop(), clock=engine_clock, kinds=("TRADES",))
        real_acquire = source.pacer.acquire
        source.pacer.acquire = lambda key, request: real_acquire(key, request, sleep=sleep)  # type: ignore[method-assign]
        tws.history.force_violations = 1
        series = await source.fetch(["SPY"], TODAY, 20)
        assert len(series["SPY"].days) == 20
        assert [r.answered for r in tws.history.requests] == ["pacing", "bars"]
        assert slept and sum(slept) >= 60  # held for the penalty before the retry
        tws.history.force_violations = 5
        with pytest.raises(HistorySourceError, match="pacing violation"):
            await source.fetch(["SPY"], TODAY, 20)
    finally:
        await conn.disconnect()


async def test_daily_when_not_connected_or_on_the_loop_then_says_so(tws, bus):
    conn = make_conn(tws, bus)
    source = IbkrHistorySource(conn, asyncio.get_running_loop(), clock=clock(), timeout_s=2)
    with pytest.raises(HistorySourceError, match="executor thread"):
        source.daily(["SPY"], TODAY, 10)
    with pytest.raises(HistorySourceError, match="not connected"):
        await asyncio.to_thread(source.daily, ["SPY"], TODAY, 10)
    with pytest.raises(ValueError, match="unknown historical data kind"):
        IbkrHistorySource(conn, asyncio.get_running_loop(), clock=clock(), kinds=("MIDPOINTS",))


def test_pacer_when_limits_are_reached_then_waits_on_the_engine_clock():
    c = clock()
    p = HistoricalPacer(c)
    key = (756733, "SMART", "TRADES")
    for i in range(6):  # six for one contract and kind within 2 s are fine ...
        assert p.delay(key, ("req", i)) == 0
        p.record(key, ("req", i))
    assert p.delay(key, ("req", 6)) == pytest.approx(2.0)  # ... the seventh waits for the window
    assert p.delay((1, "SMART", "TRADES"), ("other", 0)) == 0  # another contract does not
    assert p.delay(key, ("req", 0)) == pytest.approx(15.0)  # identical: 15 s
    c.advance(timedelta(seconds=2))
    assert p.delay(key, ("req", 6)) == 0
    c.advance(timedelta(seconds=13))
    assert p.delay(key, ("req", 0)) == 0
    for i in range(54):  # 60 in the window: the 61st waits until the first leaves it
        k = (i, "SMART", "TRADES")
        p.record(k, ("x", i))
    assert p.delay((99, "SMART", "TRADES"), ("y",)) == pytest.approx(600.0 - 15.0)
    p.violated()
    assert p.delay((98, "SMART", "TRADES"), ("z",)) == pytest.approx(600.0 - 15.0)
    c.advance(timedelta(seconds=600))
    assert p.delay((99, "SMART", "TRADES"), ("y",)) == 0


async def test_pacer_acquire_when_a_backfill_bursts_then_no_rule_is_broken():
    c = clock()
    p = HistoricalPacer(c)
    sent: list[datetime] = []

    async def sleep(seconds: float) -> None:
        c.advance(timedelta(seconds=seconds))

    for i in range(130):
        await p.acquire((i % 3, "SMART", "TRADES"), ("r", i), sleep=sleep)
        sent.append(c.now())
    for i in range(len(sent) - 60):
        assert sent[i + 60] - sent[i] >= timedelta(minutes=10)
    assert p.requests == 130 and p.waits > 0


def test_durations_and_ends_are_ib_strings():
    assert duration_for(1) == "7 D" and duration_for(252) == "358 D" and duration_for(300) == "2 Y"
    assert end_for(date(2026, 3, 2)) == "20260302 00:00:00 US/Eastern"
    with pytest.raises(ValueError):
        duration_for(0)
    s = series_from_bars("SPY", {"TRADES": {date(2026, 2, 27): 600.0}, "OPTION_IMPLIED_VOLATILITY": {}},
                         date(2026, 3, 2), 10)
    assert s is not None and s.days == (date(2026, 2, 27),) and str(s.atm_iv[0]) == "nan"
    assert series_from_bars("SPY", {}, date(2026, 3, 2), 10) is None


async def test_engine_when_ibkr_connected_then_iv_rank_ranks_the_brokers_history_and_updates_incrementally(
        tmp_path, tws):
    """Connecting IBKR with its data backfills from ``reqHistoricalData``; IB's days replace the simulated
    market's, so IV rank ranks IB's implied vols; a reconnect the same day asks for nothing again."""
    from zoneinfo import ZoneInfo

    from engine.brokers.config import BrokersConfig, IbkrConfig
    from engine.core import Engine, EngineConfig
    from engine.history import HistoryBackfilled
    from engine.history.service import read_snapshot
    from engine.settings import Settings
    from tests.brokers.conftest import wait_until
    from tests.sim_start import pinned_settings

    days = _serve(tws)
    wall = ManualClock(datetime(2026, 3, 2, 11, 0, tzinfo=ZoneInfo("America/New_York")))
    brokers = BrokersConfig(ibkr=IbkrConfig(host="127.0.0.1", port=tws.port, client_id=5, call_timeout_s=3,
                                            connect_timeout_s=5))
    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)), wall_clock=wall)
    async with Engine(cfg) as engine:
        assert await engine.history.wait_ready(60)
        seen: list[HistoryBackfilled] = []
        engine.bus.subscribe(HistoryBackfilled, seen.append)
        await engine.connect_broker("ibkr")
        await wait_until(lambda: any(e.source == "ibkr" for e in seen), timeout=30, what="broker backfill")
        ev = next(e for e in seen if e.source == "ibkr")
        assert ev.rows >= 252 and not ev.error, ev
        rows = engine.store.query("SELECT day, atm_iv, hist_vol, source FROM iv_history WHERE underlying = 'SPY' "
                                  "AND day < '2026-03-02' ORDER BY day DESC LIMIT 252")
        assert {r["source"] for r in rows} == {"ibkr"}
        ivs = {d.isoformat(): 0.15 + 0.0001 * i for i, d in enumerate(days)}
        assert all(r["atm_iv"] == pytest.approx(ivs[r["day"]]) for r in rows)
        assert rows[0]["hist_vol"] == pytest.approx(0.12)
        # ranked up to IB's last session (today's row, if any, is the live surface's own recording)
        snap = read_snapshot(engine.store, "SPY", until=date.fromisoformat(rows[0]["day"]))
        assert snap.atm_iv == pytest.approx(ivs[rows[0]["day"]]) and snap.hist_vol == pytest.approx(0.12)
        assert snap.iv_rank.rank == pytest.approx(1.0)  # the fake's implied vol only rises: the last is the top
        first = len(tws.history.requests)
        assert tws.history.violations == 0
        await asyncio.wait_for(engine.disconnect_broker("ibkr"), 15)
        seen.clear()
        await engine.connect_broker("ibkr")
        assert await engine.history.wait_ready(30)
        assert len(tws.history.requests) == first  # up to date: incremental means nothing to ask
        await asyncio.wait_for(engine.disconnect_broker("ibkr"), 15)
