"""The synthetic index of the simulated market: its level is its members' weighted sum, with a one-factor
correlation model, and its options price a correlation above the one the members realize."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from pydantic import ValidationError

from engine.market.config import SimulatorConfig, UnderlyingSpec
from engine.market.simulated.dynamics import FactorDynamics
from engine.market.simulated.history import iter_sessions
from engine.market.simulated.index import BASKET, basket_universe, model_correlation
from engine.strategies.dispersion import implied_correlation
from engine.strategies.structures import atm_iv


def basket_config(seed: int = 5) -> SimulatorConfig:
    return SimulatorConfig(seed=seed, universe=basket_universe())


def test_the_index_level_is_the_members_weighted_sum_at_every_close_and_its_options_are_listed():
    cfg = basket_config()
    shares = cfg.underlying("DSPX").components
    assert 5 <= len(shares) <= 10
    for snap in iter_sessions(cfg, date(2024, 1, 2), 4):
        level = sum(snap.close[s] * w for s, w in shares.items())
        assert snap.close["DSPX"] == pytest.approx(level, rel=1e-12)
        assert snap.chains["DSPX"].spot == pytest.approx(level, rel=1e-12)
        assert all(len(snap.chains[s]) > 0 for s in [*shares, "DSPX"])


def test_the_members_correlation_follows_the_one_factor_model():
    cfg = basket_config().model_copy(update={"initial_regime": "calm"})
    dyn = FactorDynamics(cfg, lock_regime=True)
    steps = dyn.advance(np.full(3000, 1 / 252), record=True)
    members = [dyn.names.index(m[0]) for m in BASKET]
    returns = np.diff(np.log(steps.spots[:, members]), axis=0)
    empirical = np.corrcoef(returns.T)
    beta = np.array([m[2] for m in BASKET])
    idio = np.array([m[3] for m in BASKET])
    model = model_correlation(beta, idio, float(np.mean(steps.variance)), float(np.mean(steps.variance))
                              / cfg.regimes[0].vol ** 2)
    off = ~np.eye(len(members), dtype=bool)
    assert np.abs(empirical[off] - model[off]).mean() < 0.08
    # stress raises it: the factor dominates in a crisis
    calm = model_correlation(beta, idio, 0.13**2, 1.0)
    crisis = model_correlation(beta, idio, 0.50**2, (0.50 / 0.13) ** 2)
    assert crisis[off].min() > calm[off].max()


def test_index_options_price_a_correlation_above_the_models():
    snap = next(iter(iter_sessions(basket_config(), date(2024, 1, 2), 1)))
    shares = np.array([m[4] for m in BASKET])
    spots = np.array([snap.close[m[0]] for m in BASKET])
    w = spots * shares / (spots * shares).sum()

    def iv(sym: str) -> float:
        ch = snap.chains[sym]
        exp = np.unique(ch.expiry)
        days = (exp.astype("datetime64[D]") - np.datetime64("2024-01-02")).astype(int)
        return atm_iv(ch, exp[np.argmin(np.abs(days - 30))])

    implied = implied_correlation(iv("DSPX"), np.array([iv(m[0]) for m in BASKET]), w)
    model = model_correlation(np.array([m[2] for m in BASKET]), np.array([m[3] for m in BASKET]), 0.13**2, 1.0)
    off = ~np.eye(len(BASKET), dtype=bool)
    assert 0 < model[off].mean() < implied < 1  # the index's variance premium: richer than the correlation


def test_an_index_needs_its_members_in_the_universe_and_keeps_them_when_restricted():
    cfg = basket_config()
    assert {u.symbol for u in cfg.restricted_to(["DSPX"]).universe} == {"DSPX", *(m[0] for m in BASKET)}
    bad = UnderlyingSpec(symbol="IX", kind="index", spot=100.0, components={"NOPE": 1.0})
    with pytest.raises(ValidationError, match="NOPE"):
        SimulatorConfig(universe=[*basket_universe(), bad])
    with pytest.raises(ValueError, match="5-10 members"):
        basket_universe(basket=BASKET[:3])
