"""BacktestService: RunBacktest/CancelBacktest on a real bus, the run in a worker process, events back, store."""

from __future__ import annotations

import asyncio

from engine.backtest.service import BacktestService
from engine.backtest.worker import BacktestFinished, BacktestProgressed
from engine.bus import Bus
from engine.bus.commands import CancelBacktest, RunBacktest
from engine.store import Store


async def _until(pred, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def test_run_backtest_command_then_progress_finished_result_and_stored(sim_parquet, tmp_path):
    bus = Bus()
    events = []
    bus.subscribe(BacktestProgressed, events.append)
    bus.subscribe(BacktestFinished, events.append)
    store = Store.open(tmp_path / "db.sqlite")
    service = BacktestService(bus, store, poll_s=0.02)
    service.register()
    try:
        cfg = {"data": str(sim_parquet), "symbol": "SPY", "iv_lookback": 20, "iv_min_history": 10}
        run_id = await bus.send(RunBacktest(config=cfg, run_id="panel-1"))
        assert run_id == "panel-1" and service.running == ["panel-1"]
        await _until(lambda: any(isinstance(e, BacktestFinished) for e in events))
        [done] = [e for e in events if isinstance(e, BacktestFinished)]
        assert done.status == "completed" and done.summary["run_id"] == "panel-1"
        progress = [e for e in events if isinstance(e, BacktestProgressed)]
        assert (progress and progress[-1].stage in ("done", "saving")) or progress[-1].fraction == 1.0
        result = service.result("panel-1")
        assert result is not None and len(result.equity) == 80
        rows = store.query("SELECT run_id, status FROM backtest_runs")
        assert [(r["run_id"], r["status"]) for r in rows] == [("panel-1", "completed")]
    finally:
        await service.stop()
        await bus.close()
        store.close()


async def test_cancel_backtest_command_then_finished_cancelled(sim_parquet, tmp_path):
    bus = Bus()
    finished = []
    bus.subscribe(BacktestFinished, finished.append)
    service = BacktestService(bus, None, poll_s=0.02)
    service.register()
    try:
        cfg = {"data": str(sim_parquet), "symbol": "SPY"}
        run_id = await bus.send(RunBacktest(config=cfg))
        assert await bus.send(CancelBacktest(run_id=run_id)) is True
        await _until(lambda: finished)
        # the cancel is set before the worker reaches its first day: the run stops there
        assert finished[0].status == "cancelled" and len(service.result(run_id).equity) == 0
        assert await bus.send(CancelBacktest(run_id="nope")) is False
    finally:
        await service.stop()
        await bus.close()
