"""Backtest results in the store: ``backtest_runs``, ``backtest_trades``, ``backtest_equity`` (one transaction per run)."""

from __future__ import annotations

import json
import math
from datetime import UTC
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.backtest.runner import BacktestResult
    from engine.store import Store


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


class BacktestRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, result: BacktestResult, *, sweep_id: str | None = None) -> None:
        """Write (or overwrite) one run with its trades and daily equity rows."""
        now = self.store.now().astimezone(UTC).isoformat()  # the store's clock: the engine's
        seed = result.config.get("seed")
        metrics = result.metrics.as_dict()
        g = result.greeks
        equity_rows = [
            (result.run_id, str(d), float(result.equity[i]), float(result.cash[i]), float(result.daily_pnl[i]),
             float(result.drawdown[i]), _num(g["delta"][i]), _num(g["gamma"][i]), _num(g["theta"][i]),
             _num(g["vega"][i]), str(result.regime[i]), _num(g["margin"][i]) if "margin" in g else None)
            for i, d in enumerate(result.dates)
        ]
        trade_rows = [
            (result.run_id, t.trade_no, t.opened_at.isoformat(), t.closed_at.isoformat() if t.closed_at else None,
             t.underlying, json.dumps(t.as_row()), f"{t.net_pnl:.2f}", f"{t.fees:.2f}")
            for t in result.trades
        ]
        with self.store.transaction() as conn:
            for table in ("backtest_trades", "backtest_equity"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (result.run_id,))
            conn.execute(
                "INSERT OR REPLACE INTO backtest_runs(run_id, created_at, strategy, params, config, status, metrics,"
                " seed, finished_at, elapsed_s, error, sweep_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (result.run_id, now, result.strategy, json.dumps(result.params, default=str),
                 json.dumps(result.config, default=str), result.status, json.dumps(metrics, default=str), seed, now,
                 result.elapsed_s, result.error, sweep_id),
            )
            conn.executemany(
                "INSERT INTO backtest_trades(run_id, trade_no, opened_at, closed_at, symbol, detail, pnl, fees)"
                " VALUES (?,?,?,?,?,?,?,?)", trade_rows)
            conn.executemany(
                "INSERT INTO backtest_equity(run_id, ts, equity, cash, daily_pnl, drawdown, delta, gamma, theta, vega,"
                " regime, margin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", equity_rows)

    def runs(self, *, sweep_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM backtest_runs"
        args: tuple[Any, ...] = ()
        if sweep_id is not None:
            sql += " WHERE sweep_id = ?"
            args = (sweep_id,)
        rows = self.store.query(sql + " ORDER BY created_at", args)
        return [{**dict(r), "params": json.loads(r["params"]), "config": json.loads(r["config"]),
                 "metrics": json.loads(r["metrics"])} for r in rows]

    def trades(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT detail FROM backtest_trades WHERE run_id = ? ORDER BY trade_no", (run_id,))
        return [json.loads(r["detail"]) for r in rows]

    def equity(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM backtest_equity WHERE run_id = ? ORDER BY ts", (run_id,))
        return [dict(r) for r in rows]

    def delete(self, run_id: str) -> None:
        with self.store.transaction() as conn:
            for table in ("backtest_trades", "backtest_equity", "backtest_runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
