"""History from the first minute: the simulated source, the store backfill, the service, the engine and the CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import date

import numpy as np
import pytest

from engine.bus import Bus
from engine.clock import ManualClock
from engine.history import HistoryBackfilled, HistoryService, SimulatedHistorySource
from engine.history.service import backfill_store, read_snapshot
from engine.market.config import SimulatorConfig
from engine.store import Store
from tests.sim_start import SIM_START, pinned_settings

BEFORE = SIM_START


def _source(seed: int = 7, anchor: dict[str, float] | None = None) -> SimulatedHistorySource:
    return SimulatedHistorySource(SimulatorConfig(seed=seed), anchor=anchor)


def test_simulated_source_when_asked_twice_then_same_path_ending_before_the_day_at_the_anchor() -> None:
    a = _source(anchor={"SPY": 600.0}).daily(["SPY", "VIX"], BEFORE, 300)
    b = _source(anchor={"SPY": 600.0}).daily(["SPY", "VIX"], BEFORE, 300)
    spy = a["SPY"]
    assert len(spy.days) == 300 and spy.days[-1] < BEFORE and spy.days[-1] == date(2026, 2, 27)
    assert all(d.weekday() < 5 for d in spy.days)
    assert spy.close[-1] == pytest.approx(600.0)
    assert np.array_equal(spy.close, b["SPY"].close) and np.array_equal(spy.atm_iv, b["SPY"].atm_iv)
    assert np.all((spy.atm_iv > 0.03) & (spy.atm_iv < 1.5)) and np.ptp(spy.atm_iv) > 0.02  # it moves
    # fewer sessions: the tail of the same path, so a CLI backfill and an engine backfill agree
    tail = _source(anchor={"SPY": 600.0}).daily(["SPY"], BEFORE, 100)["SPY"]
    assert tail.days == spy.days[-100:] and np.allclose(tail.atm_iv, spy.atm_iv[-100:])
    other_seed = _source(seed=8).daily(["SPY"], BEFORE, 300)["SPY"]
    assert not np.allclose(other_seed.atm_iv, spy.atm_iv)
    assert _source().daily(["NOPE"], BEFORE, 10) == {}
    with pytest.raises(ValueError, match="sessions must be positive"):
        _source().daily(["SPY"], BEFORE, 0)


def test_backfill_store_when_fresh_then_full_window_rank_and_recorded_days_win(tmp_path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        recorded = date(2026, 2, 26)
        store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES ('SPY', ?, 0.99, 1.0, "
                      "'surface')", (recorded.isoformat(),))
        written, series = backfill_store(store, _source(), ["SPY"], BEFORE, 300, "2026-03-02T14:30:00+00:00")
        assert written == 299 and len(series["SPY"].days) == 300  # the recorded day is kept, not overwritten
        row = store.query("SELECT atm_iv, source FROM iv_history WHERE underlying='SPY' AND day=?",
                          (recorded.isoformat(),))[0]
        assert (row["atm_iv"], row["source"]) == (0.99, "surface")
        log = store.query("SELECT * FROM history_backfills")
        assert len(log) == 1 and log[0]["rows"] == 299 and log[0]["source"] == "simulated seed=7"
        assert backfill_store(store, _source(), ["SPY"], BEFORE, 300, "x") == (0, {})  # nothing missing: no work
        snap = read_snapshot(store, "SPY")
        assert snap.iv_rank.ok and snap.iv_rank.days == 252 and snap.days == 300
        assert 0.0 <= snap.iv_rank.rank <= 1.0 and np.isfinite(snap.realized_vol)
        assert snap.last_day == date(2026, 2, 27)
    finally:
        store.close()


def test_read_snapshot_when_history_is_short_then_insufficient_not_a_number(tmp_path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        backfill_store(store, _source(), ["SPY"], BEFORE, 30, "x")
        snap = read_snapshot(store, "SPY")
        assert not snap.iv_rank.ok and snap.iv_rank.status == "insufficient_history"
        assert snap.to_dict()["iv_rank"] is None
    finally:
        store.close()


class _BrokenSource:
    name = "broken"

    def daily(self, underlyings, before, sessions):  # type: ignore[no-untyped-def]
        raise OSError("history endpoint unreachable")


async def test_service_when_source_fails_then_publishes_the_error_and_is_ready(tmp_path) -> None:
    bus = Bus()
    store = Store.open(tmp_path / "od.sqlite")
    got: list[HistoryBackfilled] = []
    bus.subscribe(HistoryBackfilled, got.append)
    svc = HistoryService(bus, store, clock=ManualClock(_ts()), underlyings=["SPY"], source=_BrokenSource())
    try:
        await svc.start()
        assert await svc.wait_ready(10.0)
        assert len(got) == 1 and got[0].rows == 0 and "history endpoint unreachable" in got[0].error
        assert "OSError" in svc.last_error
    finally:
        await svc.stop()
        await bus.close()
        store.close()


class _ThreadRecordingSource(SimulatedHistorySource):
    """The real simulated source, noting which thread computed it."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.threads: list[int] = []

    def daily(self, underlyings, before, sessions):  # type: ignore[no-untyped-def]
        self.threads.append(threading.get_ident())
        return super().daily(underlyings, before, sessions)


def _ts():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


async def test_service_backfill_runs_off_the_loop_and_publishes_when_ready(tmp_path) -> None:
    bus = Bus()
    store = Store.open(tmp_path / "od.sqlite")
    got: list[HistoryBackfilled] = []
    bus.subscribe(HistoryBackfilled, got.append)
    # 2,000 sessions of three names take ~0.2 s of computing: none of it may happen on the loop
    source = _ThreadRecordingSource(SimulatorConfig(seed=7), anchor={"SPY": 600.0})
    svc = HistoryService(bus, store, clock=ManualClock(_ts()), underlyings=["SPY", "QQQ", "VIX"],
                         source=source, sessions=2000)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = loop.create_task(ticker())
    try:
        await svc.start()
        assert await svc.wait_ready(60.0)
    finally:
        tick.cancel()
        await asyncio.gather(tick, return_exceptions=True)
    try:
        assert len(got) == 1 and got[0].rows == 3 * 2000 and got[0].last_day == date(2026, 2, 27)
        assert source.threads and threading.get_ident() not in source.threads  # computed off the loop
        assert gaps  # the loop kept turning while the source computed (how smoothly: a benchmark's job)
        snap = svc.snapshot("SPY")
        assert snap.iv_rank.ok and snap.close == pytest.approx(600.0)
        # a restart finds nothing missing and does no work
        svc2 = HistoryService(bus, store, clock=ManualClock(_ts()), underlyings=["SPY"], source=_BrokenSource(),
                              sessions=2000)
        assert await svc2.backfill() == 0
    finally:
        await svc.stop()
        await bus.close()
        store.close()


async def test_engine_when_started_on_a_new_folder_then_iv_rank_and_history_work_at_once(tmp_path) -> None:
    from engine.core import Engine, EngineConfig
    from engine.settings import Settings
    from engine.surface.config import SurfaceConfig
    from engine.surface.service import SurfaceUpdated

    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        assert await engine.history.wait_ready(30.0)
        ranked: list[SurfaceUpdated] = []
        engine.bus.subscribe(SurfaceUpdated, lambda e: ranked.append(e) if e.underlying == "SPY" and e.iv_rank.ok
                             else None)
        await engine.surfaces.refit(engine.feed.market.chain("SPY"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        while not ranked and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert ranked, "no SurfaceUpdated with an IV rank within 30 s"
        assert ranked[0].iv_rank.days == 252 and np.isfinite(ranked[0].realized_vol)
        n_vix = engine.store.query("SELECT COUNT(*) AS n FROM iv_history WHERE underlying='VIX'")[0]["n"]
        assert n_vix >= 252
        assert engine.risk_service.calibrate_from_history() >= 250  # historical VaR has a year of returns
        assert engine.risk_service.update_regime() in {"low_vol", "neutral", "high_vol", "iv_expansion",
                                                       "iv_contraction"}


def test_ivrank_cli_when_data_folder_is_new_then_prints_a_rank_with_a_full_year(tmp_path, capsys) -> None:
    from engine.cli import main

    db = tmp_path / "od.sqlite"
    assert main(["ivrank", "SPY", "--json", "--db", str(db), "--seed", "7", "--date", BEFORE.isoformat()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["window_days"] >= 252 and 0.0 <= out["iv_rank"] <= 1.0
    assert out["backfilled_rows"] == 300 and out["last_day"] == "2026-02-27"
    assert main(["ivrank", "SPY", "--db", str(db), "--seed", "7", "--date", BEFORE.isoformat()]) == 0
    text = capsys.readouterr().out
    assert "IV rank" in text and "over 252 days" in text
    assert main(["ivrank", "NOPE", "--db", str(db), "--date", BEFORE.isoformat()]) != 0
    assert "no stored history for NOPE" in capsys.readouterr().err
    assert main(["ivrank", "SPY", "--db", str(db), "--date", "05/01/2026"]) != 0
    assert "is not a date" in capsys.readouterr().err
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM iv_history").fetchone()[0] == 300
