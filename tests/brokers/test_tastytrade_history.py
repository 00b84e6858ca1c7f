"""Daily history from tastytrade's DXLink daily candles, against the loopback tastytrade (real SDK)."""

from __future__ import annotations

import asyncio
import math
from datetime import date, timedelta

import pytest

from engine.history.tastytrade import HistorySourceError, TastytradeHistorySource, candle_day
from tests.brokers.fakes.tastytrade_server import FakeTastytrade
from tests.brokers.test_tastytrade import make_conn


def _sessions(end: date, n: int) -> list[date]:
    out, d = [], end
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d -= timedelta(days=1)
    return out[::-1]


@pytest.fixture
async def fake():
    server = FakeTastytrade(today=date(2026, 3, 2))
    days = _sessions(date(2026, 2, 27), 320)
    server.candles["SPY"] = [(d, 500.0 + i * 0.5, 0.15 + 0.0001 * i) for i, d in enumerate(days)]
    server.candles["QQQ"] = [(d, 400.0 + i, None if i % 10 == 0 else 0.2) for i, d in enumerate(days)]
    await server.start()
    yield server
    await server.stop()


async def test_daily_candles_when_fetched_then_closes_and_implied_vol_by_session(fake, bus):
    conn = make_conn(fake, bus)
    await conn.connect()
    try:
        source = TastytradeHistorySource(conn, asyncio.get_running_loop(), timeout_s=10)
        before = date(2026, 2, 20)
        # the history service calls daily() from its executor thread
        series = await asyncio.to_thread(source.daily, ["SPY", "QQQ", "IWM"], before, 252)
    finally:
        await conn.disconnect()
    assert set(series) == {"SPY", "QQQ"}  # IWM: no candles, no series
    spy = series["SPY"]
    assert len(spy.days) == 252 and spy.days[-1] == date(2026, 2, 19) and all(d < before for d in spy.days)
    i = [d for d, _, _ in fake.candles["SPY"]].index(spy.days[-1])
    assert spy.close[-1] == pytest.approx(500.0 + i * 0.5) and spy.atm_iv[-1] == pytest.approx(0.15 + 0.0001 * i)
    assert sum(math.isnan(v) for v in series["QQQ"].atm_iv) > 0  # candles without an implied vol stay NaN
    candle_log = [syms for kind, syms in fake.subscribe_log if kind == "Candle"]
    assert candle_log and all(s.endswith("{=1d,tho=true}") for s in candle_log[0])


async def test_snapshot_without_end_flag_still_completes(fake, bus):
    fake.candle_snapshot_flags = False
    conn = make_conn(fake, bus)
    await conn.connect()
    try:
        source = TastytradeHistorySource(conn, asyncio.get_running_loop(), timeout_s=10, quiet_s=0.5)
        series = await asyncio.to_thread(source.daily, ["SPY"], date(2026, 2, 20), 100)
    finally:
        await conn.disconnect()
    assert len(series["SPY"].days) == 100


async def test_daily_when_not_connected_or_on_the_loop_then_says_so(fake, bus):
    conn = make_conn(fake, bus)
    source = TastytradeHistorySource(conn, asyncio.get_running_loop(), timeout_s=2)
    with pytest.raises(HistorySourceError, match="executor thread"):
        source.daily(["SPY"], date(2026, 2, 20), 10)
    with pytest.raises(HistorySourceError, match="not connected"):
        await asyncio.to_thread(source.daily, ["SPY"], date(2026, 2, 20), 10)


def test_candle_day_reads_midnight_utc_as_the_session_and_times_in_new_york():
    assert candle_day(1772150400000) == date(2026, 2, 27)  # 2026-02-27T00:00Z
    assert candle_day(1772139600000) == date(2026, 2, 26)  # 2026-02-26T21:00Z = 16:00 New York


async def test_engine_when_tastytrade_connected_then_iv_rank_ranks_the_brokers_history(tmp_path, fake):
    """Connecting tastytrade with live data backfills from its candles; the broker's days replace the simulated
    market's backfilled ones, so IV rank ranks real implied vols."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from engine.brokers.config import BrokersConfig, TastytradeConfig
    from engine.clock import ManualClock
    from engine.core import Engine, EngineConfig
    from engine.history import HistoryBackfilled
    from engine.history.service import read_snapshot
    from engine.settings import Settings
    from tests.brokers.conftest import wait_until
    from tests.brokers.test_engine_connect import _credentials
    from tests.sim_start import pinned_settings

    wall = ManualClock(datetime(2026, 3, 2, 11, 0, tzinfo=ZoneInfo("America/New_York")))
    brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                        call_timeout_s=3))
    cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)), wall_clock=wall)
    async with Engine(cfg) as engine:
        assert await engine.history.wait_ready(60)
        seen: list[HistoryBackfilled] = []
        engine.bus.subscribe(HistoryBackfilled, seen.append)
        await engine.connect_broker("tastytrade", credentials=_credentials())
        await wait_until(lambda: any(e.source == "tastytrade" for e in seen), timeout=30, what="broker backfill")
        ev = next(e for e in seen if e.source == "tastytrade")
        assert ev.rows >= 252 and not ev.error
        rows = engine.store.query("SELECT day, atm_iv, source FROM iv_history WHERE underlying = 'SPY' "
                                  "AND day < '2026-03-02' ORDER BY day DESC LIMIT 252")
        assert {r["source"] for r in rows} == {"tastytrade"}
        ivs = {d.isoformat(): iv for d, _, iv in fake.candles["SPY"]}
        assert all(r["atm_iv"] == pytest.approx(ivs[r["day"]]) for r in rows)
        # today's row is the live surface's own (recorded from the broker's chain as the day trades): rank the
        # broker's last session against the broker's window before it
        snap = read_snapshot(engine.store, "SPY", until=date.fromisoformat(rows[0]["day"]))
        assert snap.days >= 252 and snap.atm_iv == pytest.approx(ivs[rows[0]["day"]])
        assert snap.iv_rank.rank == pytest.approx(1.0)  # the fake's implied vol only rises: the last is the top
        await engine.disconnect_broker("tastytrade")
        assert engine.history.source.name.startswith("simulated")
