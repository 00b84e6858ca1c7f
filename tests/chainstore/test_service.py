"""The Data panel's engine side: ImportChains / CancelImport / DeleteChains on a real Engine, and coverage."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
import pytest

from engine.backtest.sources import simulated_history
from engine.bus import (
    CancelImport,
    ChainImportFinished,
    ChainImportProgress,
    ChainsDeleted,
    DeleteChains,
    ImportChains,
    RefreshDataCoverage,
)
from engine.chainstore.store import ChainStore
from engine.core import Engine, EngineConfig
from engine.settings import Settings
from engine.surface.config import SurfaceConfig
from tests.chainstore.test_import import _cboe_frame
from tests.sim_start import pinned_settings


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Six weeks of simulated SPY chains in the Cboe DataShop layout (two calendar months)."""
    return _cboe_frame(simulated_history("SPY", 0.12, 11, use_cache=False))


@pytest.fixture(scope="module")
def cboe_file(frame, tmp_path_factory):
    path = tmp_path_factory.mktemp("vendor") / "UnderlyingOptionsEODCalcs_SPY.csv"
    frame.to_csv(path, index=False)
    return path


def _settings() -> Settings:
    return pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))


async def _until(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    def __init__(self, engine: Engine) -> None:
        self.progress: list[ChainImportProgress] = []
        self.finished: list[ChainImportFinished] = []
        self.deleted: list[ChainsDeleted] = []
        engine.bus.subscribe(ChainImportProgress, self.progress.append)
        engine.bus.subscribe(ChainImportFinished, self.finished.append)
        engine.bus.subscribe(ChainsDeleted, self.deleted.append)


async def test_import_command_when_a_vendor_file_is_sent_then_progress_finish_and_coverage(tmp_path, frame,
                                                                                          cboe_file) -> None:
    async with Engine(EngineConfig.for_directory(tmp_path, feed="none", settings=_settings())) as engine:
        seen = Recorder(engine)
        engine.data_service.chunk_rows = 5_000  # several chunks: several progress events
        job = await engine.bus.send(ImportChains(paths=(str(cboe_file),)))
        await _until(lambda: seen.finished, "ChainImportFinished")
        done = seen.finished[0]
        assert done.job_id == job and not done.error and not done.cancelled
        assert done.report["rows_read"] == len(frame)
        assert done.report["rows_written"] == len(frame) - sum(done.report["dropped"].values()) > 0
        assert len(seen.progress) >= 3 and all(p.job_id == job for p in seen.progress)
        assert seen.progress[-1].fraction == pytest.approx(1.0)
        # the snapshot was swapped in before the event: the same answer as the store on disk
        cov = engine.data_service.coverage()
        spy = cov.root("SPY")
        assert spy is not None and spy.underlying == "SPY"
        expected = frame.groupby("quote_date").size()
        assert spy.days == len(expected) and spy.first_day == date.fromisoformat(expected.index[0])
        assert spy.rows == done.report["rows_written"] == sum(spy.rows_per_day.values())
        assert spy.imports[0].file == str(cboe_file) and spy.imports[0].rows_written == spy.rows
        assert set(cov.sessions) >= set(spy.rows_per_day)  # every imported day is a session of the calendar
        assert engine.data_service.importing is None
        audit = engine.store.query("SELECT action FROM audit WHERE action = 'chains:import'")
        assert len(audit) == 1


async def test_import_when_the_file_is_bad_then_finished_carries_the_error_and_nothing_is_stored(tmp_path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    async with Engine(EngineConfig.for_directory(tmp_path / "home", feed="none", settings=_settings())) as engine:
        seen = Recorder(engine)
        await engine.bus.send(ImportChains(paths=(str(odd),)))
        await _until(lambda: seen.finished, "ChainImportFinished")
        assert "unrecognised layout" in seen.finished[0].error
        assert seen.finished[0].severity == "error"
        assert engine.data_service.coverage().roots == ()
        with pytest.raises(ValueError, match="no files"):
            await engine.bus.send(ImportChains(paths=()))


async def test_cancel_when_mid_import_then_completed_months_stay_and_the_open_month_is_not_written(
        tmp_path, frame) -> None:
    """The file arrives through a pipe, so the import cannot run ahead of the test: the first month and
    part of the second are readable, then Cancel, then the rest."""
    months = frame["quote_date"].str.slice(0, 7)
    first, second = sorted(months.unique())[:2]
    in_first = int((months == first).sum())
    part_a = frame.iloc[: in_first + (len(frame) - in_first) // 2]
    part_b = frame.iloc[len(part_a):]
    pipe = tmp_path / "spy_pipe.csv"
    os.mkfifo(pipe)
    go = threading.Event()

    def write() -> None:
        try:
            with open(pipe, "w", newline="") as fh:  # blocks until the import opens the pipe
                part_a.to_csv(fh, index=False)
                fh.flush()
                go.wait(60)
                part_b.to_csv(fh, index=False, header=False)
        except BrokenPipeError:  # the cancelled import closed the file while part A was still in the pipe
            pass

    writer = threading.Thread(target=write, name="test-pipe-writer")
    writer.start()
    try:
        async with Engine(EngineConfig.for_directory(tmp_path / "home", feed="none", settings=_settings())) as engine:
            seen = Recorder(engine)
            engine.data_service.chunk_rows = 2_000
            job = await engine.bus.send(ImportChains(paths=(str(pipe),), fmt="cboe"))
            rows_read = lambda: max((int(p.text.split(": ")[1].split(" ")[0].replace(",", ""))  # noqa: E731
                                     for p in seen.progress), default=0)
            # a chunk starting in the second month has been read: the first month is complete and flushed
            await _until(lambda: rows_read() >= in_first + 4_000, "the second month to be reached")
            with pytest.raises(RuntimeError, match="already running"):
                await engine.bus.send(ImportChains(paths=(str(pipe),)))
            assert await engine.bus.send(CancelImport(job_id=job)) is True
            go.set()
            await _until(lambda: seen.finished, "ChainImportFinished")
            done = seen.finished[0]
            assert done.cancelled and not done.error
            spy = engine.data_service.coverage().root("SPY")
            assert spy is not None
            assert {d.strftime("%Y-%m") for d in spy.rows_per_day} == {first}
            per_day = frame[months == first].groupby("quote_date").size()
            assert {d.isoformat(): n for d, n in spy.rows_per_day.items()} == per_day.to_dict()
            folder = engine.paths.data_dir / "chains" / "SPY"
            assert sorted(p.name for p in folder.iterdir()) == [f"{first}.npz", "manifest.json"]
            assert second not in {p.stem for p in folder.iterdir()}
            assert await engine.bus.send(CancelImport(job_id=job)) is False
    finally:
        go.set()
        writer.join(10)
    assert not writer.is_alive()


async def test_delete_when_a_range_is_sent_then_those_days_go_and_coverage_follows(tmp_path, cboe_file) -> None:
    ChainStore(tmp_path / "home" / "data" / "chains").import_file(cboe_file)
    async with Engine(EngineConfig.for_directory(tmp_path / "home", feed="none", settings=_settings())) as engine:
        seen = Recorder(engine)
        await _until(lambda: engine.data_service.coverage().root("SPY") is not None, "the start-up scan")
        before = engine.data_service.coverage().root("SPY")
        days = sorted(before.rows_per_day)
        start, end = days[5], days[9]
        removed = await engine.bus.send(DeleteChains(root="spy", start=start, end=end))
        assert removed == sum(before.rows_per_day[d] for d in days[5:10])
        after = engine.data_service.coverage().root("SPY")
        assert sorted(after.rows_per_day) == days[:5] + days[10:]
        assert seen.deleted[0].rows == removed and seen.deleted[0].root == "SPY"
        with pytest.raises(ValueError, match="no imported chains for QQQ"):
            await engine.bus.send(DeleteChains(root="QQQ"))
        assert await engine.bus.send(DeleteChains(root="SPY")) == after.rows
        assert engine.data_service.coverage().roots == ()
        assert len(engine.store.query("SELECT 1 FROM audit WHERE action = 'chains:delete'")) == 2


async def test_history_coverage_when_the_simulated_history_is_backfilled_then_days_and_sources(tmp_path) -> None:
    async with Engine(EngineConfig.for_directory(tmp_path, settings=_settings())) as engine:
        assert await engine.history.wait_ready(60.0)
        cov = await engine.bus.send(RefreshDataCoverage())
        assert cov is engine.data_service.coverage()
        spy = cov.history_of("SPY")
        assert spy is not None
        stored = engine.store.query("SELECT day, close, source FROM iv_history WHERE underlying = 'SPY'")
        assert len(spy.iv_days) == len(stored) >= 250
        assert len(spy.bar_days) == sum(r["close"] is not None for r in stored)
        assert [s.source for s in spy.sources] == sorted({r["source"] for r in stored})
        assert sum(s.days for s in spy.sources) == len(stored)
        assert "SPY" in cov.symbols() and cov.roots == ()
        assert set(spy.iv_days) <= set(cov.sessions)
        assert np.all(np.diff(np.array(cov.sessions, dtype="datetime64[D]")).astype(int) > 0)
