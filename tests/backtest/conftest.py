"""Backtest test fixtures; helpers live in tests/backtest/histories.py."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from engine.backtest.config import BacktestConfig  # noqa: E402
from tests.backtest.histories import HOLD  # noqa: E402


@pytest.fixture
def exact_config() -> BacktestConfig:
    """No fees, no slippage, risk checks on: P&L is pure price arithmetic."""
    return BacktestConfig(strategy="iv_rank_put_spread", params=dict(HOLD), fee_preset="zero", slippage_model="none",
                          slippage=0.0, initial_cash=100_000.0)


@pytest.fixture(scope="session")
def sim_history():
    """80 sessions of the simulated SPY market (seed 3): the real generator, small enough for the suite."""
    from datetime import date

    from engine.market.simulated.history import generate_daily_history

    return generate_daily_history("SPY", days=80, seed=3, start=date(2025, 1, 2))


@pytest.fixture(scope="session")
def sim_parquet(sim_history, tmp_path_factory):
    from engine.backtest.chain_files import write_history

    return write_history(sim_history, tmp_path_factory.mktemp("sim") / "spy.parquet")


@pytest.fixture
def sim_config() -> BacktestConfig:
    """Short lookbacks so an 80-day history trades; tastytrade fees and 0.1 % slippage."""
    return BacktestConfig(strategy="iv_rank_put_spread", symbol="SPY", iv_lookback=20, iv_min_history=10,
                          params={"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50, "rules.dte_exit": 7})
