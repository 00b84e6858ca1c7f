"""BacktestService: the engine side of the GUI's backtest runner (``engine.backtests``).

Handles the ``RunBacktest`` and ``CancelBacktest`` commands. Each run executes
:func:`~engine.backtest.worker.run_backtest_job` in a worker process (a process pool by default), so the
event loop never waits on it; progress comes back through a manager queue polled every
``poll_s`` and is republished as :class:`~engine.backtest.worker.BacktestProgressed`; the end is a
:class:`~engine.backtest.worker.BacktestFinished` event. Results are kept in memory by run id
(``result(run_id)``) and, with a store, saved to ``backtest_runs``/``backtest_trades``/``backtest_equity``
(in a thread, off the loop).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from engine.backtest.worker import BacktestFinished, BacktestProgressed, run_backtest_job
from engine.bus import Bus
from engine.bus.commands import CancelBacktest, RunBacktest
from engine.bus.events import Alert

log = logging.getLogger(__name__)


class BacktestService:
    def __init__(self, bus: Bus, store: Any = None, *, executor: Executor | None = None, max_workers: int = 1,
                 poll_s: float = 0.1, keep_results: int = 20) -> None:
        self.bus = bus
        self.store = store
        self.poll_s = poll_s
        self.keep_results = keep_results
        self._executor = executor
        self._own_executor = executor is None
        self._max_workers = max_workers
        self._manager: Any = None
        self._runs: dict[str, tuple[asyncio.Task[Any], Any]] = {}
        self._results: dict[str, Any] = {}
        self._registered = False

    # ---- wiring ---------------------------------------------------------------------------------
    def register(self) -> None:
        self.bus.register(RunBacktest, self._cmd_run)
        self.bus.register(CancelBacktest, self._cmd_cancel)
        self._registered = True

    async def stop(self) -> None:
        for run_id in list(self._runs):
            self.cancel(run_id)
        tasks = [t for t, _ in self._runs.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._registered:
            self.bus.unregister(RunBacktest)
            self.bus.unregister(CancelBacktest)
            self._registered = False
        if self._own_executor and self._executor is not None:
            from engine.process_pools import terminate_pool

            executor, self._executor = self._executor, None
            await asyncio.to_thread(terminate_pool, executor)  # running jobs were cancelled above
        if self._manager is not None:
            manager, self._manager = self._manager, None
            await asyncio.to_thread(manager.shutdown)

    # ---- API ------------------------------------------------------------------------------------
    def result(self, run_id: str) -> Any:
        """The finished run's :class:`~engine.backtest.runner.BacktestResult` (None while running/unknown)."""
        return self._results.get(run_id)

    @property
    def running(self) -> list[str]:
        return list(self._runs)

    def cancel(self, run_id: str) -> bool:
        entry = self._runs.get(run_id)
        if entry is None:
            return False
        entry[1].set()
        return True

    async def run(self, config: Any, run_id: str = "") -> str:
        """Start a run; returns its id at once (the work happens in a worker process)."""
        from engine.backtest.config import BacktestConfig

        cfg = config if isinstance(config, BacktestConfig) else BacktestConfig.model_validate(config or {})
        run_id = run_id or cfg.run_id or uuid.uuid4().hex[:12]
        cfg = cfg.model_copy(update={"run_id": run_id})
        if run_id in self._runs:
            raise ValueError(f"backtest {run_id} is already running")
        manager = await asyncio.to_thread(self._ensure_manager)
        queue, cancel = manager.Queue(), manager.Event()
        task = asyncio.get_running_loop().create_task(self._drive(run_id, cfg.model_dump(mode="json"), queue, cancel),
                                                      name=f"backtest:{run_id}")
        self._runs[run_id] = (task, cancel)
        return run_id

    # ---- internals ------------------------------------------------------------------------------
    def _ensure_manager(self) -> Any:
        if self._manager is None:
            from engine.process_pools import new_manager

            self._manager = new_manager()
        if self._executor is None:
            from engine.process_pools import new_process_pool

            self._executor = new_process_pool(self._max_workers)
        return self._manager

    async def _cmd_run(self, cmd: RunBacktest) -> str:
        return await self.run(cmd.config, cmd.run_id)

    def _cmd_cancel(self, cmd: CancelBacktest) -> bool:
        return self.cancel(cmd.run_id)

    async def _drive(self, run_id: str, config: dict[str, Any], queue: Any, cancel: Any) -> None:
        loop = asyncio.get_running_loop()
        job: Callable[[], Any] = functools.partial(run_backtest_job, config, queue, cancel)
        future = loop.run_in_executor(self._executor, job)
        try:
            while not future.done():
                await asyncio.wait({future}, timeout=self.poll_s)
                await self._drain(queue)
            await self._drain(queue)
            result = future.result()
            self._results[run_id] = result
            while len(self._results) > self.keep_results:
                self._results.pop(next(iter(self._results)))
            if self.store is not None and result.status != "failed":
                from engine.backtest.persistence import BacktestRepository

                await asyncio.to_thread(BacktestRepository(self.store).save, result)
            self.bus.publish(BacktestFinished(run_id=run_id, status=result.status, summary=result.summary(),
                                              error=result.error))
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Exception as exc:  # the worker died (e.g. killed): say so, never hang the panel
            log.exception("backtest %s failed", run_id)
            self.bus.publish(BacktestFinished(run_id=run_id, status="failed", summary={},
                                              error=f"{type(exc).__name__}: {exc}"))
            self.bus.publish(Alert(level="error", source="backtest", message=f"backtest {run_id} failed: {exc}"))
        finally:
            self._runs.pop(run_id, None)

    async def _drain(self, queue: Any) -> None:
        events = await asyncio.to_thread(_take_all, queue)
        for ev in events:
            if isinstance(ev, BacktestProgressed):
                self.bus.publish(ev)


def _take_all(queue: Any) -> list[Any]:
    import queue as queue_mod

    out = []
    while True:
        try:
            out.append(queue.get_nowait())
        except (queue_mod.Empty, EOFError, OSError):
            return out
