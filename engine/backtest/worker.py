"""The GUI hook: run a backtest in a worker process and report progress through a queue.

The backtest runner panel does, on the engine loop::

    manager = new_manager(); queue = manager.Queue(); cancel = manager.Event()
    pool = new_process_pool(1)          # engine.process_pools: workers die with the window
    future = loop.run_in_executor(pool, run_backtest_job, config.model_dump(mode="json"), queue, cancel)
    # poll `queue` from a timer: BacktestProgressed events; set `cancel` to stop; `await future` → BacktestResult

``run_backtest_job`` is a plain module-level function (picklable), takes a JSON-able config dict and
returns a :class:`~engine.backtest.runner.BacktestResult` (statistics, equity, drawdown, daily P&L,
Greeks, trade list, orders). It never raises for bad data: the result has ``status == "failed"`` and
``error`` says why (for a bad file, the file, row and column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.bus.messages import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestProgressed(Event):
    """A backtest advanced: ``fraction`` in [0, 1], ``eta_s`` seconds left (NaN unknown); ``stage``:
    loading | running | saving | done | cancelled | failed."""

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    run_id: str
    fraction: float
    eta_s: float = math.nan
    day: str = ""
    stage: str = "running"

    def conflation_key(self) -> object:
        return ("backtest", self.run_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestFinished(Event):
    run_id: str
    status: str  # completed | cancelled | failed
    summary: dict[str, Any]
    error: str = ""

    def describe(self) -> str:
        return f"Backtest {self.run_id} {self.status}" + (f": {self.error}" if self.error else "")


def run_backtest_job(config: dict[str, Any], queue: Any = None, cancel: Any = None, *,
                     store_path: str | None = None):
    """Load the data, run, optionally persist; put :class:`BacktestProgressed` on ``queue`` along the way."""
    import uuid

    import numpy as np

    from engine.backtest.config import BacktestConfig
    from engine.backtest.metrics import compute_metrics
    from engine.backtest.runner import Backtest, BacktestResult, CancelToken
    from engine.backtest.sources import load_history

    cfg = BacktestConfig.model_validate(config)
    if not cfg.run_id:
        cfg = cfg.model_copy(update={"run_id": uuid.uuid4().hex[:12]})
    token = CancelToken(cancel)

    def put(ev: BacktestProgressed) -> None:
        if queue is not None:
            queue.put(ev)

    put(BacktestProgressed(run_id=cfg.run_id, fraction=0.0, stage="loading"))
    try:
        history = load_history(cfg)
        result = Backtest(cfg, history).run(
            progress=lambda p: put(BacktestProgressed(run_id=cfg.run_id, fraction=p.fraction, eta_s=p.eta_s,
                                                      day=p.day)),
            cancel=token)
    except Exception as exc:
        empty = np.array([])
        result = BacktestResult(
            run_id=cfg.run_id, strategy=cfg.strategy, params=dict(cfg.params), config=cfg.model_dump(mode="json"),
            status="failed", dates=np.array([], dtype="datetime64[D]"), equity=empty, cash=empty, drawdown=empty,
            daily_pnl=empty, greeks={k: empty for k in ("delta", "gamma", "theta", "vega", "margin")},
            regime=np.array([], dtype=object), iv_rank=empty, trades=[], orders=[], metrics=compute_metrics(empty),
            fees=__import__("decimal").Decimal(0), elapsed_s=0.0, error=f"{type(exc).__name__}: {exc}")
    if store_path and result.status != "failed":
        from engine.backtest.persistence import BacktestRepository
        from engine.store import Store

        put(BacktestProgressed(run_id=cfg.run_id, fraction=1.0, stage="saving"))
        store = Store.open(store_path)
        try:
            BacktestRepository(store).save(result)
        finally:
            store.close()
    stage = {"completed": "done"}.get(result.status, result.status)
    put(BacktestProgressed(run_id=cfg.run_id, fraction=1.0 if result.status == "completed" else
                           (len(result.dates) / max(len(result.dates), 1)), stage=stage))
    return result
