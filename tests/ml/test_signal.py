"""The ML filter stage: a strategy gates and sizes its entries by a registered model's probability, on
point-in-time features, live (LiveContext) and in backtests (BacktestContext)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from engine import strategies
from engine.backtest.data import build_history
from engine.backtest.runner import BacktestContext
from engine.clock import ManualClock
from engine.history.simulated import SimulatedHistorySource
from engine.market.config import SimulatorConfig
from engine.ml.data import MarketHistory, load_history
from engine.ml.features import FEATURE_NAMES, build_features
from engine.ml.labels import put_spread_labels
from engine.ml.models import fit_calibrated
from engine.ml.registry import ModelRegistry
from engine.ml.signal import LiveMLSignals, MLScorer
from engine.ml.train import make_dataset
from engine.model.instruments import NEW_YORK
from engine.strategies.base import MLFilter, MLReading, SizingLimits, ml_decision
from engine.strategies.live import LiveContext
from tests.sim_start import SIM_START

MODEL = "gate-SPY"


@pytest.fixture(scope="module")
def history() -> MarketHistory:
    return load_history(SimulatedHistorySource(SimulatorConfig(seed=7)), "SPY", SIM_START, 3)


@pytest.fixture(scope="module")
def models_dir(history: MarketHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    frame = build_features(history)
    ds = make_dataset(frame, put_spread_labels(history))
    model = fit_calibrated("logistic", ds.X, ds.y, ds.start, ds.end)
    ModelRegistry(root).save(MODEL, model, {"features": list(FEATURE_NAMES), "symbol": "SPY",
                                            "positive_rate": float(ds.y.mean()),
                                            "metrics": {"verdict": "no edge"}})
    return root


def _at(day, hour: int = 15) -> datetime:
    return datetime.combine(day, time(hour, 0), tzinfo=NEW_YORK)


def spy_chain(day: str, spot: float = 500.0):
    """Puts and calls 480..520 step 5 on one expiry 35 days out (the IV-rank put spread's candidate)."""
    strikes = np.arange(480.0, 521.0, 5.0)
    n = len(strikes)
    exp = np.datetime64(day) + np.timedelta64(35, "D")
    pdelta = np.clip(-0.5 + (spot - strikes) * 0.025, -0.99, -0.02)
    put_mid = np.maximum(0.2, (strikes - 470.0) * 0.12)
    mid = np.r_[put_mid[::-1], put_mid]
    h = build_history("SPY", np.full(2 * n, np.datetime64(day)), np.full(2 * n, exp), np.r_[strikes, strikes],
                      np.r_[np.ones(n, bool), np.zeros(n, bool)], mid - 0.05, mid + 0.05,
                      spot_by_row=np.full(2 * n, spot), delta=np.r_[1 + pdelta, pdelta])
    return h.chain(0)


def test_decision_rules() -> None:
    r = MLReading(0.7, gate=0.6, model="m", reason="r")
    assert ml_decision(MLFilter(model="m"), r, 10) == (10, "ML filter: P(win) 70% ≥ 60% (r)")
    assert ml_decision(MLFilter(model="m", min_probability=0.75), r, 10)[0] == 0
    # sized: half at the gate, full at certainty, never above the strategy's own size
    assert ml_decision(MLFilter(model="m", min_probability=0.6, size_by_probability=True), r, 10)[0] == 6
    assert ml_decision(MLFilter(model="m", min_probability=0.7, size_by_probability=True), r, 10)[0] == 5
    assert ml_decision(MLFilter(model="m", min_probability=0.7, size_by_probability=True), r, 1)[0] == 1
    unknown = MLReading(math.nan, model="m", reason="features not ready")
    assert ml_decision(MLFilter(model="m"), unknown, 3) == (0, "ML filter: no probability (features not ready)")
    assert ml_decision(MLFilter(model="m", when_unavailable="allow"), unknown, 3)[0] == 3


def test_feature_row_used_on_day_t_holds_nothing_from_t_or_later(history: MarketHistory, models_dir: Path) -> None:
    k = len(history) - 40
    t = history.days[k]
    scorer = MLScorer(models_dir, horizon_days=400)
    scorer.build("SPY", _at(t), history)  # the full history: days after t are in it
    i, day = scorer.feature_row("SPY", _at(t))
    assert (i, day) == (k - 1, history.days[k - 1])  # during session t: the row of t − 1's close
    assert scorer.feature_row("SPY", _at(t, 17))[0] == k  # after t's close, t's own row
    past_only = build_features(history.head(k)).iloc[-1][list(FEATURE_NAMES)].to_numpy(float)
    np.testing.assert_allclose(scorer._frames["SPY"].matrix[i], past_only, rtol=1e-9, equal_nan=True)
    # rewrite everything from day t on: the reading at t cannot change
    bent = replace(history, close=np.r_[history.close[:k], history.close[k:] * 1.4],
                   atm_iv=np.r_[history.atm_iv[:k], history.atm_iv[k:] + 0.25])
    other = MLScorer(models_dir, horizon_days=400)
    other.build("SPY", _at(t), bent)
    a, b = scorer.reading("SPY", MODEL, _at(t)), other.reading("SPY", MODEL, _at(t))
    assert math.isfinite(a.probability) and a.probability == b.probability
    assert a.feature_day == history.days[k - 1].isoformat() and 0 < a.gate < 1 and a.version == 1
    after = other.feature_row("SPY", _at(t, 17))[0]  # after t's close, t's own (rewritten) row is the one read
    assert not np.allclose(other._frames["SPY"].matrix[after], scorer._frames["SPY"].matrix[after], equal_nan=True)


def test_reading_refuses_what_it_cannot_know(history: MarketHistory, models_dir: Path) -> None:
    scorer = MLScorer(models_dir)
    t = history.days[-1]
    assert "not computed" in scorer.reading("SPY", MODEL, _at(t)).reason
    scorer.build("SPY", _at(t), history)
    assert "not computed" in scorer.reading("SPY", MODEL, _at(t + timedelta(days=1))).reason  # live: one day
    assert "no model named" in scorer.reading("SPY", "absent", _at(t)).reason
    scorer.build("QQQ", _at(t), history)
    assert "trained on SPY, not QQQ" in scorer.reading("QQQ", MODEL, _at(t)).reason
    late = MLScorer(models_dir, horizon_days=30)
    late.build("SPY", _at(t), history)
    assert "stale" in late.reading("SPY", MODEL, _at(t + timedelta(days=20))).reason
    early = MLScorer(models_dir, horizon_days=30)
    early.build("SPY", _at(history.days[30]), history)
    assert "warming up" in early.reading("SPY", MODEL, _at(history.days[30])).reason


def _probability(history: MarketHistory, models_dir: Path, day) -> float:
    s = MLScorer(models_dir)
    s.build("SPY", _at(day), history)
    return s.reading("SPY", MODEL, _at(day)).probability


def test_strategy_gates_and_sizes_by_the_probability_live(history: MarketHistory, models_dir: Path) -> None:
    day = history.days[-1] + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    p = _probability(history, models_dir, day)
    scorer = MLScorer(models_dir)
    scorer.build("SPY", _at(day), history)
    clock = ManualClock(_at(day))
    ctx = LiveContext(clock, net_liquidation=lambda: 1_000_000.0, iv_rank=lambda u: 0.9, regime=lambda u: "low_vol",
                      sizing=lambda: SizingLimits(risk_per_trade=0.02),
                      ml_probability=lambda u, m: scorer.reading(u, m, clock.now()))
    chain = spy_chain(day.isoformat())
    plain = strategies.create("iv_rank_put_spread", {"max_contracts": 8}).on_chain(ctx, chain)
    assert len(plain) == 1 and plain[0].quantity == 8
    below = strategies.create("iv_rank_put_spread", {"max_contracts": 8, "ml.model": MODEL,
                                                     "ml.min_probability": min(1.0, p + 0.01)})
    assert below.on_chain(ctx, chain) == [] and below.trades == {}
    assert below.ml_last["taken"] is False and "<" in below.ml_last["reason"]
    above = strategies.create("iv_rank_put_spread", {"max_contracts": 8, "ml.model": MODEL,
                                                     "ml.min_probability": max(0.0, p - 0.01),
                                                     "ml.size_by_probability": True})
    [intent] = above.on_chain(ctx, chain)
    assert 4 <= intent.quantity < 8  # just above its gate: about half the strategy's size
    [trade] = above.trades.values()
    assert trade.quantity == intent.quantity and trade.info["ml_probability"] == pytest.approx(p)
    no_scorer = LiveContext(clock, net_liquidation=lambda: 1e6, iv_rank=lambda u: 0.9, regime=lambda u: "low_vol",
                            sizing=lambda: SizingLimits())
    assert strategies.create("iv_rank_put_spread", {"ml.model": MODEL}).on_chain(no_scorer, chain) == []


def test_backtest_context_scores_point_in_time(history: MarketHistory, models_dir: Path) -> None:
    k = len(history) - 60
    t = history.days[k]
    asked: list = []

    def rows(u: str, before):
        asked.append(before)
        return history

    ctx = BacktestContext(SizingLimits())
    ctx._ml = MLScorer(models_dir, horizon_days=365, history=rows)
    ctx._now = _at(t)
    r = ctx.ml_probability("SPY", MODEL)
    assert r.feature_day == history.days[k - 1].isoformat()
    assert r.probability == pytest.approx(_probability(history.head(k), models_dir, t))
    ctx._now = _at(history.days[k + 5])
    assert ctx.ml_probability("SPY", MODEL).feature_day == history.days[k + 4].isoformat()
    assert len(asked) == 1  # one frame serves the whole horizon


def test_live_signals_build_off_the_loop_from_the_store(history: MarketHistory, models_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.history.service import backfill_store
    from engine.store import Store

    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    store = Store.open(tmp_path / "od.sqlite")
    try:
        backfill_store(store, SimulatedHistorySource(SimulatorConfig(seed=7)), ["SPY", "VIX"], SIM_START,
                       len(history), "2026-03-02T14:30:00+00:00")
        clock = ManualClock(_at(SIM_START))
        live = LiveMLSignals(store, clock, models_dir=models_dir)

        async def run() -> tuple[MLReading, MLReading]:
            first = live("SPY", MODEL)
            await live.wait()
            return first, live("SPY", MODEL)

        first, second = asyncio.run(run())
    finally:
        store.close()
    assert math.isnan(first.probability) and "being computed" in first.reason
    assert second.probability == pytest.approx(_probability(history, models_dir, SIM_START))
    assert second.feature_day == history.days[-1].isoformat()
