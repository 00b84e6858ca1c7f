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
