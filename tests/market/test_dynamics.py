"""Underlying dynamics: determinism, regime volatility, correlation, the VIX-like index."""

from __future__ import annotations

import numpy as np
import pytest

from engine.market.config import SimulatorConfig
from engine.market.simulated.dynamics import FactorDynamics, session_step_years


def _daily(dyn: FactorDynamics, n: int) -> np.ndarray:
    return dyn.advance(np.full(n, 1 / 252), record=True).spots


def test_same_seed_same_path_whatever_the_batching():
    cfg = SimulatorConfig(seed=5)
    a = FactorDynamics(cfg).advance(np.full(300, 1e-4), record=True).spots
    b_dyn = FactorDynamics(cfg)
    parts = [b_dyn.advance(np.full(n, 1e-4), record=True).spots for n in (1, 99, 200)]
    np.testing.assert_array_equal(a, np.vstack(parts))
    c = FactorDynamics(SimulatorConfig(seed=6)).advance(np.full(300, 1e-4), record=True).spots
    assert not np.allclose(a, c)


def test_state_round_trip_continues_the_same_path():
    cfg = SimulatorConfig(seed=9)
    d1 = FactorDynamics(cfg)
    d1.advance(np.full(50, 1e-3))
    saved = d1.state()
    tail1 = d1.advance(np.full(20, 1e-3), record=True).spots
    d2 = FactorDynamics(cfg)
    d2.restore(saved)
    np.testing.assert_array_equal(tail1, d2.advance(np.full(20, 1e-3), record=True).spots)


@pytest.mark.parametrize("regime", ["calm", "volatile", "crisis"])
def test_annualised_vol_in_each_regime_is_close_to_its_parameter(regime):
    cfg = SimulatorConfig(seed=2).restricted_to(["SPX"])
    dyn = FactorDynamics(cfg, lock_regime=True)
    dyn.set_regime(regime)
    dyn.v = dyn.regime_spec.vol ** 2
    spots = _daily(dyn, 252 * 150)[:, 0]
    realized = np.diff(np.log(spots)).std() * np.sqrt(252)
    spec = dyn.regime_spec
    expected = np.sqrt(spec.vol ** 2 + spec.jump_intensity * (spec.jump_mean ** 2 + spec.jump_std ** 2))
    assert realized == pytest.approx(expected, rel=0.15)


def test_regimes_switch_and_crisis_is_rarest():
    dyn = FactorDynamics(SimulatorConfig(seed=4))
    path = dyn.advance(np.full(252 * 40, 1 / 252), record=True)
    counts = np.bincount(path.regime, minlength=3)
    assert (counts > 0).all()
    assert counts[0] > counts[2]
    switches = np.count_nonzero(np.diff(path.regime))
    assert 10 < switches < 400


def test_names_are_correlated_through_the_market_factor_and_vix_tracks_variance():
    cfg = SimulatorConfig(seed=3)
    dyn = FactorDynamics(cfg)
    path = dyn.advance(np.full(252 * 10, 1 / 252), record=True)
    r = np.diff(np.log(path.spots), axis=0)
    names = dyn.names
    corr = np.corrcoef(r.T)
    assert corr[names.index("SPY"), names.index("QQQ")] > 0.6
    assert corr[names.index("SPY"), names.index("SPX")] > 0.99
    vix = path.spots[:, names.index("VIX")]
    assert np.corrcoef(vix, np.sqrt(path.variance))[0, 1] > 0.95
    # spot down, VIX up: leverage effect
    assert np.corrcoef(r[:, names.index("SPX")], np.diff(vix))[0, 1] < -0.3


def test_bad_steps_are_rejected():
    dyn = FactorDynamics(SimulatorConfig())
    with pytest.raises(ValueError, match="finite and non-negative"):
        dyn.advance([1e-4, -1e-4])
    with pytest.raises(ValueError, match="unknown regime"):
        dyn.set_regime("panic")
    assert session_step_years(23400, 0.25) == pytest.approx(1 / 252 / 1.25)
