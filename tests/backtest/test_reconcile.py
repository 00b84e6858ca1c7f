"""Outputs that reconcile: equity.csv, summary.json and the drawdown agree, from the first day."""

from __future__ import annotations

import csv
import json
from decimal import Decimal

import numpy as np
import pytest

from engine.backtest.metrics import daily_pnl, drawdown
from engine.backtest.report import export_all
from engine.backtest.runner import Backtest


def test_daily_pnl_first_row_is_against_the_starting_cash() -> None:
    assert daily_pnl(np.array([99_990.0, 100_050.0, 100_020.0]), 100_000.0).tolist() == [-10.0, 60.0, -30.0]
    assert daily_pnl(np.array([5.0, 7.0])).tolist() == [0.0, 2.0]  # no starting cash known: first row 0
    assert len(daily_pnl(np.array([]), 1.0)) == 0


def test_drawdown_is_measured_from_the_starting_cash() -> None:
    dd = drawdown(np.array([99.0, 98.0, 101.0, 100.0]), 100.0)
    assert dd.tolist() == pytest.approx([-0.01, -0.02, 0.0, 100.0 / 101.0 - 1.0])
    # without it the first day is its own peak: the loss from the money put in is invisible
    assert drawdown(np.array([99.0, 98.0]))[0] == 0.0


@pytest.fixture(scope="module")
def put_write_run(sim_history):
    from engine.backtest.config import BacktestConfig

    # checks off (said so in the summary): the collar must not keep the first day's sale from filling, the
    # point here is what the exports say about a position opened on day one
    cfg = BacktestConfig(strategy="put_write", symbol="SPY", iv_lookback=20, iv_min_history=10,
                         initial_cash=100_000.0, risk_checks=False)
    return Backtest(cfg, sim_history).run()


def test_equity_csv_daily_pnl_sums_to_the_summary_total_to_the_cent(put_write_run, tmp_path) -> None:
    r = put_write_run
    assert r.metrics.trades > 0
    paths = export_all(r, tmp_path / "out", png=False)
    with paths["equity"].open() as fh:
        rows = list(csv.DictReader(fh))
    summary = json.loads(paths["summary"].read_text())
    total = Decimal(summary["reconciliation"]["total_pnl"])
    pnl = sum((Decimal(row["daily_pnl"]) for row in rows), Decimal(0))
    assert pnl == total
    assert Decimal(rows[0]["daily_pnl"]) == Decimal(rows[0]["equity"]) - Decimal("100000.00")
    assert Decimal(rows[0]["daily_pnl"]) != 0  # the first day's fees and marks are real P&L
    assert Decimal(rows[-1]["equity"]) - Decimal("100000.00") == total
    assert summary["summary"]["total_pnl"] == pytest.approx(float(total), abs=0.005)
    dd = np.array([float(row["drawdown"]) for row in rows])
    assert dd.min() == pytest.approx(summary["summary"]["max_drawdown"], abs=1e-6)
    assert r.daily_pnl.sum() == pytest.approx(r.metrics.total_pnl, abs=1e-6)


def test_walk_forward_daily_pnl_sums_to_its_total_from_the_starting_cash(sim_history) -> None:
    from engine.backtest.config import BacktestConfig
    from engine.backtest.walkforward import walk_forward

    cfg = BacktestConfig(strategy="put_write", symbol="SPY", iv_lookback=20, iv_min_history=10,
                         initial_cash=100_000.0, risk_checks=False)
    r = walk_forward(cfg, sim_history, train_days=30, test_days=25)
    assert r.daily_pnl[0] == pytest.approx(r.equity[0] - 100_000.0) and r.daily_pnl[0] != 0
    assert r.daily_pnl.sum() == pytest.approx(r.metrics.total_pnl, abs=1e-6)
    assert r.drawdown.min() == pytest.approx(r.metrics.max_drawdown, abs=1e-12)
