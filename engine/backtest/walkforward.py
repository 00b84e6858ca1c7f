"""Walk-forward testing: fit on a training window, test on the following window, stitch the tests together.

Windows are counted in trading days. ``mode="rolling"`` keeps the training window at ``train_days``;
``"expanding"`` grows it from the first day. Each test window is a fresh backtest of a freshly fitted
strategy that starts flat with the previous window's ending equity; positions still open at a window's
end are valued at their mark (their open P&L is in that window's equity). Signals (IV rank, regime) are
computed once over the whole history so a test window's first day already has its lookback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.backtest.config import BacktestConfig
from engine.backtest.data import ChainHistory
from engine.backtest.ledger import TradeRecord
from engine.backtest.metrics import Metrics, TradeStats, compute_metrics, daily_pnl, drawdown
from engine.backtest.signals import SignalSeries, compute_signals
from engine.strategies.base import market_date


@dataclass(frozen=True)
class Window:
    train: tuple[int, int]  # day index [start, stop)
    test: tuple[int, int]


def windows(n_days: int, train_days: int, test_days: int, step_days: int | None = None,
            mode: str = "rolling") -> list[Window]:
    """Train/test windows over ``n_days``; ValueError when not even one fits."""
    if mode not in ("rolling", "expanding"):
        raise ValueError(f"walk-forward mode must be 'rolling' or 'expanding', got {mode!r}")
    if train_days <= 0 or test_days <= 0:
        raise ValueError("train_days and test_days must be positive")
    step = step_days or test_days
    out = []
    start = train_days
    while start + 1 <= n_days:
        stop = min(start + test_days, n_days)
        tr0 = 0 if mode == "expanding" else start - train_days
        out.append(Window((tr0, start), (start, stop)))
        start += step
        if stop == n_days:
            break
    if not out:
        raise ValueError(f"{n_days} days cannot hold a {train_days}-day training window and a test window")
    return out


def _slice_signals(s: SignalSeries, a: int, b: int) -> SignalSeries:
    return SignalSeries(atm_iv=s.atm_iv[a:b], hv=s.hv[a:b], iv_rank=s.iv_rank[a:b], regime=s.regime[a:b])


def _choose(config: BacktestConfig, history: ChainHistory, signals: SignalSeries, w: Window,
            grid: dict[str, list[Any]], metric: str) -> tuple[dict[str, Any], float]:
    """In-sample optimisation: the grid combination with the best ``metric`` on the training window."""
    from engine.backtest.runner import Backtest
    from engine.backtest.sweep import expand_grid

    train = history.slice_days(*w.train)
    best: tuple[dict[str, Any], float] = ({}, -math.inf)
    for combo in expand_grid(grid):
        cfg = config.with_params(**combo)
        res = Backtest(cfg, train, signals=_slice_signals(signals, *w.train)).run()
        value = getattr(res.metrics, metric)
        value = value if value is not None and math.isfinite(value) else -math.inf
        if value > best[1] or not best[0]:
            best = (combo, value)
    return best


def walk_forward(config: BacktestConfig, history: ChainHistory, *, train_days: int = 504, test_days: int = 63,
                 step_days: int | None = None, mode: str = "rolling", fit_grid: dict[str, list[Any]] | None = None,
                 fit_metric: str = "sharpe", progress: Callable[[float], None] | None = None, cancel: Any = None):
    """Run the walk-forward; returns a stitched :class:`~engine.backtest.runner.BacktestResult`.

    Each window's strategy is created fresh and ``fit()`` on the training slice. With ``fit_grid``
    (parameter → candidate values) the training window also picks, by ``fit_metric`` (a
    :class:`~engine.backtest.metrics.Metrics` field, higher is better), the combination the test window
    then trades — walk-forward optimisation, never tuned on the test window.
    ``result.info["windows"]`` lists each window's dates, chosen parameters and out-of-sample return.
    """
    if fit_grid and fit_metric not in Metrics.__dataclass_fields__:
        raise ValueError(f"fit_metric {fit_metric!r} is not a metric (e.g. sharpe, sortino, calmar, total_return)")
    from engine import strategies
    from engine.backtest.runner import Backtest, BacktestResult

    signals = compute_signals(history, lookback=config.iv_lookback, min_history=config.iv_min_history,
                              rate=config.rate, dividend_yield=config.dividend_yield)
    wins = windows(history.n_days, train_days, test_days, step_days, mode)
    equity_parts, parts = [], []
    cash_level = config.initial_cash
    info_windows = []
    status = "completed"
    for w_i, w in enumerate(wins):
        if cancel is not None and cancel.cancelled:
            status = "cancelled"
            break
        chosen: dict[str, Any] = {}
        in_sample = math.nan
        if fit_grid:
            chosen, in_sample = _choose(config, history, signals, w, fit_grid, fit_metric)
        params = {"underlying": history.underlying, **config.params, **chosen}
        strat = strategies.create(config.strategy, params)
        strat.fit(history.slice_days(*w.train))
        cfg = config.with_params(**chosen).model_copy(update={"initial_cash": cash_level,
                                                              "run_id": f"{config.run_id or 'wf'}-{w_i + 1}"})
        test_hist = history.slice_days(*w.test)
        res = Backtest(cfg, test_hist, strat, signals=_slice_signals(signals, *w.test)).run(cancel=cancel)
        parts.append(res)
        if len(res.equity):
            equity_parts.append(res.equity)
            cash_level = float(res.equity[-1])
        info_windows.append({"train": [str(history.dates[w.train[0]]), str(history.dates[w.train[1] - 1])],
                             "test": [str(history.dates[w.test[0]]), str(history.dates[w.test[1] - 1])],
                             "params": chosen, f"in_sample_{fit_metric}": in_sample if math.isfinite(in_sample) else None,
                             "return": float(res.equity[-1] / cfg.initial_cash - 1) if len(res.equity) else None})
        if res.status != "completed":
            status = res.status
            break
        if progress is not None:
            progress((w_i + 1) / len(wins))
    if not parts:
        raise ValueError("walk-forward produced no windows")
    eq = np.concatenate(equity_parts) if equity_parts else np.array([])
    trades: list[TradeRecord] = []
    for p in parts:
        for t in p.trades:
            trades.append(replace(t, trade_no=len(trades) + 1))
    stats = [TradeStats(pnl=float(t.net_pnl), credit=float(t.credit), regime=t.regime,
                        days_held=(market_date(t.closed_at) - market_date(t.opened_at)).days)
             for t in trades if t.closed_at is not None]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    fees = sum((p.fees for p in parts), parts[0].fees * 0)
    exposure = np.concatenate([np.abs(p.greeks["delta"]) + np.abs(p.greeks["vega"]) > 0 for p in parts])
    regimes = cat("regime")
    metrics = compute_metrics(eq, stats, exposure_days=exposure, fees=float(fees), regimes=regimes,
                              initial=config.initial_cash)
    return BacktestResult(
        run_id=config.run_id or "walk-forward", strategy=parts[0].strategy, params=parts[0].params,
        config={**config.model_dump(mode="json"), "walk_forward": {"train_days": train_days, "test_days": test_days,
                                                                   "step_days": step_days or test_days,
                                                                   "mode": mode, "fit_grid": fit_grid or {},
                                                                   "fit_metric": fit_metric}},
        status=status, dates=cat("dates"), equity=eq, cash=cat("cash"), drawdown=drawdown(eq, config.initial_cash),
        daily_pnl=daily_pnl(eq, config.initial_cash),
        greeks={k: np.concatenate([p.greeks[k] for p in parts]) for k in parts[0].greeks},
        regime=regimes, iv_rank=cat("iv_rank"), trades=trades, orders=[o for p in parts for o in p.orders],
        metrics=metrics, fees=fees, elapsed_s=sum(p.elapsed_s for p in parts),
        info={"underlying": history.underlying, "windows": info_windows, "source": history.source},
    )


__all__ = ["Window", "walk_forward", "windows"]
