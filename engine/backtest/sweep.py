"""Parameter sweeps on any :class:`concurrent.futures.Executor`.

A grid ``{"width": [5, 10], "rules.stop_multiple": [2, 3]}`` expands to every combination (row-major, in
the order given). Each combination is one deterministic backtest (same data seed, same config), so the
same grid gives the same rows on a local process pool, a thread pool or a Dask cluster
(``distributed.Client(address).get_executor()``). Workers load the data themselves (a file path or the
simulated history for the seed, cached per worker process) unless a small ``history`` is passed along.

Rows are returned in grid order whatever order the runs finish in; ``progress(done, total)`` is called
as they finish and ``cancel`` (a :class:`~engine.backtest.runner.CancelToken`) stops submitting and
cancels what has not started.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, as_completed
from functools import lru_cache
from typing import Any

from engine.backtest.config import BacktestConfig

SUMMARY_KEYS = ("total_return", "cagr", "ann_vol", "sharpe", "sortino", "calmar", "max_drawdown",
                "max_drawdown_days", "trades", "win_rate", "profit_factor", "expectancy", "exposure",
                "premium_capture", "fees", "end_equity")


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["width=5,10", "short_delta=0.2,0.25"]`` → ``{"width": ["5", "10"], ...}`` (values validated later)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"grid entry {item!r} must look like key=a,b,c")
        key, values = (s.strip() for s in item.split("=", 1))
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not key or not vals:
            raise ValueError(f"grid entry {item!r} needs a key and at least one value")
        grid[key] = vals
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


@lru_cache(maxsize=4)
def _cached_history(data: str | None, symbol: str, years: float, seed: int, columns: tuple[tuple[str, str], ...],
                    bars: str | None, max_strikes: int | None):
    from engine.backtest.sources import load_history

    cfg = BacktestConfig(data=data, symbol=symbol, years=years, seed=seed, columns=dict(columns), bars=bars,
                         sim_max_strikes=max_strikes)
    return load_history(cfg)


def run_one(config: dict[str, Any], params: dict[str, Any], history: Any = None) -> dict[str, Any]:
    """One sweep cell (runs in a worker): backtest ``config`` with ``params`` overlaid; returns a flat row."""
    from engine.backtest.runner import Backtest
    from engine.backtest.sources import restrict

    cfg = BacktestConfig.model_validate(config).with_params(**params)
    if history is None:
        history = _cached_history(cfg.data, cfg.symbol, cfg.years, cfg.seed, tuple(sorted(cfg.columns.items())),
                                  cfg.bars, cfg.sim_max_strikes)
    history = restrict(history, cfg.start, cfg.end)
    result = Backtest(cfg, history).run()
    summary = result.metrics.as_dict()
    row: dict[str, Any] = {**{f"param.{k}": v for k, v in params.items()}, "status": result.status}
    for k in SUMMARY_KEYS:
        v = summary.get(k)
        row[k] = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
    row["error"] = result.error
    row["run_id"] = result.run_id
    return row


def run_sweep(
    config: BacktestConfig,
    grid: Mapping[str, Sequence[Any]],
    executor: Executor | None = None,
    *,
    history: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    max_workers: int | None = None,
) -> list[dict[str, Any]]:
    """Run every grid combination; rows in grid order (cancelled cells have ``status == "cancelled"``)."""
    combos = expand_grid(grid)
    base = config.model_dump(mode="json")
    base["run_id"] = ""
    own = executor is None
    if executor is None:
        from engine.process_pools import new_process_pool

        executor = new_process_pool(max_workers)
    rows: list[dict[str, Any] | None] = [None] * len(combos)
    futures: dict[Future, int] = {}
    try:
        for i, params in enumerate(combos):
            if cancel is not None and cancel.cancelled:
                break
            futures[executor.submit(run_one, base, params, history)] = i
        done = 0
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                rows[i] = fut.result()
            except Exception as exc:  # a failing cell is a row with its error, not a failed sweep
                rows[i] = {**{f"param.{k}": v for k, v in combos[i].items()}, "status": "failed",
                           "error": f"{type(exc).__name__}: {exc}"}
            done += 1
            if progress is not None:
                progress(done, len(combos))
            if cancel is not None and cancel.cancelled:
                for f in futures:
                    f.cancel()
                break
    finally:
        if own:
            from engine.process_pools import shutdown_pool

            shutdown_pool(executor, timeout_s=10.0)
    return [r if r is not None else {**{f"param.{k}": v for k, v in combos[i].items()}, "status": "cancelled"}
            for i, r in enumerate(rows)]


def dask_executor(address: str, timeout: float = 10.0):
    """(client, executor) for a Dask scheduler at ``address`` (``tcp://host:port``); close the client after.

    Raises (``OSError``/``TimeoutError``) when the scheduler cannot be reached within ``timeout`` seconds.
    """
    from distributed import Client

    client = Client(address, timeout=timeout)
    return client, client.get_executor()


def new_sweep_id() -> str:
    return "sweep-" + uuid.uuid4().hex[:10]


def write_sweep_csv(rows: Sequence[dict[str, Any]], path) -> None:
    import csv
    from pathlib import Path

    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with Path(path).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
