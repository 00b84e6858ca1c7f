"""The pricing ensemble tracker: each model's error against later mids, per regime, decayed into weights
that persist and that the ensemble's fair value and band use."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from engine.analytics.chain_metrics import ENSEMBLE_MEMBERS, ensemble_fair_values
from engine.ml.ensemble_tracker import EnsembleTracker, sample_rows
from engine.model import ExerciseStyle
from engine.store.database import Store
from engine.surface.fit import fit_chain
from tests.analytics.conftest import NOW, priced_chain

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
MEMBERS = ("bsm", "merton", "heston")


def _feed(tracker: EnsembleTracker, regime: str, rounds: int, wrong: str | None, rng: np.random.Generator,
          start: datetime) -> datetime:
    """``rounds`` samples of 30 contracts in ``regime``: every member within a cent of the later mid except
    ``wrong``, which prices 40 cents too high every time."""
    keys = [f"XYZ{i:03d}" for i in range(30)]
    ts = start
    for _ in range(rounds):
        later = rng.uniform(1.0, 8.0, 30)
        vals = later[:, None] + rng.normal(0.0, 0.01, (30, len(MEMBERS)))
        if wrong is not None:
            vals[:, MEMBERS.index(wrong)] += 0.40
        tracker.record("XYZ", regime, ts, keys, vals, MEMBERS)
        ts += tracker.horizon
        assert tracker.score("XYZ", ts - timedelta(seconds=1), keys, later) == {}  # not due yet
        batch = tracker.score("XYZ", ts, keys, later)
        assert set(batch) == set(MEMBERS)
    return ts


def test_a_consistently_wrong_model_loses_weight_in_its_regime_only_and_the_weights_survive_a_restart(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    store = Store.open(tmp_path / "desk.sqlite")
    tracker = EnsembleTracker(store, decay=0.2, horizon_s=900)
    ts = _feed(tracker, "high_vol", 12, "merton", rng, T0)
    _feed(tracker, "neutral", 12, None, rng, ts)
    crisis = tracker.weights("high_vol", MEMBERS)
    calm = tracker.weights("neutral", MEMBERS)
    assert sum(crisis.values()) == pytest.approx(1.0) and sum(calm.values()) == pytest.approx(1.0)
    assert crisis["merton"] < 0.01 < min(crisis["bsm"], crisis["heston"])
    assert calm["merton"] == pytest.approx(1 / 3, abs=0.15)  # the same model, scored well in another regime
    assert tracker.weights("low_vol", MEMBERS) == pytest.approx({m: 1 / 3 for m in MEMBERS})  # never scored
    store.close()

    reopened = Store.open(tmp_path / "desk.sqlite")
    again = EnsembleTracker(reopened)
    assert again.weights("high_vol", MEMBERS) == pytest.approx(crisis)
    assert again.weights("neutral", MEMBERS) == pytest.approx(calm)
    table = {(s.regime, s.model): s for s in again.table()}
    assert table[("high_vol", "merton")].error > 0.3 > table[("high_vol", "bsm")].error
    assert table[("high_vol", "bsm")].observations == 12 * 30
    reopened.close()


def test_contracts_missing_from_the_later_chain_are_skipped_and_a_new_regime_starts_fresh() -> None:
    tracker = EnsembleTracker(None, decay=0.5, horizon_s=60)
    tracker.record("XYZ", "neutral", T0, ["A", "B", "C"], np.array([[1.0, 2.0], [1.0, 2.0], [5.0, 5.0]]),
                   ("bsm", "heston"))
    batch = tracker.score("XYZ", T0 + timedelta(minutes=1), ["C", "A", "D"], np.array([np.nan, 1.5, 9.0]))
    assert batch == pytest.approx({"bsm": 0.5, "heston": 0.5})  # only A has both a sample and a later mid
    assert tracker.pending() == 0


def test_the_tracked_weights_move_the_ensemble_fair_value_and_band() -> None:
    chain = replace(priced_chain(), style=ExerciseStyle.EUROPEAN)
    surface = fit_chain(chain, rate=0.04, dividend_yield=0.0).surface
    rows = sample_rows(chain, NOW)
    assert 0 < len(rows) <= 48
    equal = ensemble_fair_values(chain, rows, surface, now=NOW, r=0.04, q=0.0)
    members = equal[:, 2:2 + len(ENSEMBLE_MEMBERS)]
    bsm_only = {m: (1.0 if m == "bsm" else 0.0) for m in ENSEMBLE_MEMBERS}
    tilted = ensemble_fair_values(chain, rows, surface, now=NOW, r=0.04, q=0.0, weights=bsm_only)
    np.testing.assert_allclose(tilted[:, 0], members[:, 0])  # all weight on BSM: fair = BSM, no band
    np.testing.assert_allclose(tilted[:, 1], 0.0, atol=1e-12)
    assert np.nanmax(np.abs(equal[:, 0] - tilted[:, 0])) > 1e-4

    # the tracker, fed the chain's own later mids, weights the members by how close they came
    tracker = EnsembleTracker(None, horizon_s=900)
    tracker.record("XYZ", "neutral", NOW, chain.symbol[rows], members, ENSEMBLE_MEMBERS)
    later = chain.mid[rows] + 0.0
    later_keys = chain.symbol[rows]
    batch = tracker.score("XYZ", NOW + timedelta(minutes=15), later_keys, later)
    assert set(batch) == {"bsm", "merton", "heston"}  # no neural surrogate saved: it is not scored
    w = tracker.weights("neutral", ENSEMBLE_MEMBERS)
    best = min(batch, key=batch.get)
    assert w[best] == max(w.values())


async def test_the_engine_scores_its_pricing_models_against_later_mids_while_the_market_runs(tmp_path: Path) -> None:
    import asyncio

    from engine.core import Engine, EngineConfig
    from engine.settings import Settings
    from engine.surface.config import SurfaceConfig
    from tests.sim_start import pinned_settings

    base = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    sim = base.simulator.model_copy(update={"streaming": base.simulator.streaming.model_copy(update={"speed": 600.0})})
    settings = base.model_copy(update={"simulator": sim})
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        svc = engine.ml.ensemble
        assert svc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90.0
        regimes = {engine.risk_service.regime or "neutral"}  # the ×600 market may change regime meanwhile
        while not svc.tracker.table() and loop.time() < deadline:
            await asyncio.sleep(0.05)
            regimes.add(engine.risk_service.regime or "neutral")
        table = svc.tracker.table()
        assert table, "no pricing model was scored within 90 s of a ×600 market"
        assert {s.regime for s in table} <= regimes  # tagged with the risk service's regime of the moment
        assert {"bsm", "merton"} <= {s.model for s in table}
        assert all(np.isfinite(s.error) and s.error >= 0 and s.observations > 0 for s in table)
        w = engine.ml.ensemble_weights(ENSEMBLE_MEMBERS)
        assert w is not None and sum(w.values()) == pytest.approx(1.0)
        database = engine.paths.database
    reopened = Store.open(database)  # what the next start reads
    assert {(s.regime, s.model) for s in EnsembleTracker(reopened).table()} >= {(t.regime, t.model) for t in table}
    reopened.close()
