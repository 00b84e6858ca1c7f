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

Why a panel run can cost no more than the CLI's: a fresh worker pays the interpreter start and ~1 s of
imports before it reads a byte, and reading a 5-year history (Parquet → ``ChainHistory``) is the largest
part of a run. So the panel starts its worker ahead of the first run (:func:`warm_worker` imports
everything a run needs), keeps it between runs, and passes ``reuse_history=True``: the worker keeps the
last history it loaded (one, to bound memory) and a second run on the same data skips the load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
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


#: the last history this process loaded, by :func:`history_key` (one entry: a 5-year history holds ~0.2 GB of arrays)
_HISTORY_CACHE: dict[str, Any] = {}


def warm_worker() -> int:
    """Import everything a backtest run needs, in a worker process started ahead of its first run;
    returns the worker's pid. The imports are ~1 s of a first run that a user would otherwise wait for."""
    import pyarrow.parquet  # noqa: F401

    import engine.backtest.chain_files
    import engine.backtest.data
    import engine.backtest.execution
    import engine.backtest.metrics
    import engine.backtest.runner
    import engine.backtest.signals
    import engine.backtest.sources  # noqa: F401
    from engine.strategies import registry

    registry()
    return os.getpid()


def history_key(config: Any) -> str | None:
    """Identity of the data a :class:`~engine.backtest.config.BacktestConfig` loads, or None when it cannot
    be told cheaply (a folder of files). A file's key includes its size and modification time, so an
    edited file is read again."""
    if config.source == "imported":
        return None  # the chain store can change between runs (an import, a delete): always read it again
    parts: list[Any] = [config.symbol.upper(), str(config.start), str(config.end)]
    if config.data:
        files = [Path(config.data)] + ([Path(config.bars)] if config.bars else [])
        if not all(f.is_file() for f in files):
            return None
        stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        parts += ["file", stats, config.columns]
    else:
        parts += ["simulated", config.years, config.seed, config.sim_max_strikes, config.intraday_minutes]
    return json.dumps(parts, default=str, sort_keys=True)


def _load(config: Any, reuse_history: bool) -> Any:
    from engine.backtest.sources import load_history

    key = history_key(config) if reuse_history else None
    if key is not None and key in _HISTORY_CACHE:
        return _HISTORY_CACHE[key]
    history = load_history(config)
    if key is not None:
        _HISTORY_CACHE.clear()
        _HISTORY_CACHE[key] = history
    return history


def run_backtest_job(config: dict[str, Any], queue: Any = None, cancel: Any = None, *,
                     store_path: str | None = None, reuse_history: bool = False):
    """Load the data, run, optionally persist; put :class:`BacktestProgressed` on ``queue`` along the way.

    ``reuse_history``: keep the loaded history in this process and reuse it when the next run loads the
    same data (a run never modifies its history). For long-lived workers; the CLI loads once anyway.
    """
    import uuid

    import numpy as np

    from engine.backtest.config import BacktestConfig
    from engine.backtest.metrics import compute_metrics
    from engine.backtest.runner import Backtest, BacktestResult, CancelToken

    cfg = BacktestConfig.model_validate(config)
    if not cfg.run_id:
        cfg = cfg.model_copy(update={"run_id": uuid.uuid4().hex[:12]})
    token = CancelToken(cancel)

    def put(ev: BacktestProgressed) -> None:
        if queue is not None:
            queue.put(ev)

    put(BacktestProgressed(run_id=cfg.run_id, fraction=0.0, stage="loading"))
    try:
        history = _load(cfg, reuse_history)
        result = Backtest(cfg, history).run(
            progress=lambda p: put(BacktestProgressed(run_id=cfg.run_id, fraction=p.fraction, eta_s=p.eta_s,
                                                      day=p.day)),
            cancel=token)
    except Exception as exc:  # a failing run in the worker must come back as a failed result, never a dead pool
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
