"""The strategy builder on a real simulated SPY chain: legs, signs, ratios, strikes by delta, clear refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.builder import (
    BuildError,
    BuildSpec,
    Structure,
    build_strategy,
    default_width,
)
from engine.analytics.chain_metrics import chain_metrics
from engine.market.config import SimulatorConfig
from engine.market.simulated.market import SimulatedMarket
from engine.model import Equity, OptionChain, Side
from tests.sim_start import SIM_START

R, Q = 0.04, 0.012


@pytest.fixture(scope="module")
def chain() -> OptionChain:
    m = SimulatedMarket(SimulatorConfig(seed=11), start=SIM_START)
    m.advance(3600)
    m.reprice_full()
    return m.chain("SPY")


def _shape(legs) -> list[tuple[str, int, str]]:
    return [(leg.side.value, leg.ratio, "S" if isinstance(leg.instrument, Equity) else leg.instrument.right.value)
            for leg in legs]


def _k(leg) -> float:
    return float(leg.instrument.strike)


def _abs_delta(chain: OptionChain, leg) -> tuple[float, np.ndarray, np.ndarray]:
    """|Δ| of the leg and the |Δ| of every same-right, same-expiry strike (to check "nearest the target")."""
    exp = np.datetime64(leg.instrument.expiry, "D")
    rows = np.nonzero((chain.expiry.astype("datetime64[D]") == exp) & (chain.is_call == leg.instrument.is_call))[0]
    m = chain_metrics(chain, rows, now=chain.ts, r=R, q=Q)
    d = np.abs(m.delta)
    ok = np.isfinite(d)
    mine = float(d[chain.strike[rows] == _k(leg)][0])
    return mine, d[ok], chain.strike[rows][ok]


def _nearest_to_target(chain: OptionChain, leg, target: float) -> None:
    mine, deltas, _ = _abs_delta(chain, leg)
    assert abs(mine - target) == pytest.approx(np.min(np.abs(deltas - target)))
    assert abs(mine - target) < 0.05


@pytest.mark.parametrize(
    ("structure", "shape"),
    [
        (Structure.VERTICAL, [("sell", 1, "P"), ("buy", 1, "P")]),
        (Structure.IRON_CONDOR, [("buy", 1, "P"), ("sell", 1, "P"), ("sell", 1, "C"), ("buy", 1, "C")]),
        (Structure.IRON_FLY, [("buy", 1, "P"), ("sell", 1, "P"), ("sell", 1, "C"), ("buy", 1, "C")]),
        (Structure.STRANGLE, [("sell", 1, "P"), ("sell", 1, "C")]),
        (Structure.STRADDLE, [("buy", 1, "C"), ("buy", 1, "P")]),
        (Structure.CALENDAR, [("sell", 1, "P"), ("buy", 1, "P")]),
        (Structure.DIAGONAL, [("sell", 1, "P"), ("buy", 1, "P")]),
        (Structure.BUTTERFLY, [("buy", 1, "P"), ("sell", 2, "P"), ("buy", 1, "P")]),
        (Structure.BROKEN_WING_BUTTERFLY, [("buy", 1, "P"), ("sell", 2, "P"), ("buy", 1, "P")]),
        (Structure.RATIO, [("buy", 1, "P"), ("sell", 2, "P")]),
        (Structure.JADE_LIZARD, [("sell", 1, "P"), ("sell", 1, "C"), ("buy", 1, "C")]),
        (Structure.COVERED_CALL, [("buy", 100, "S"), ("sell", 1, "C")]),
        (Structure.COLLAR, [("buy", 100, "S"), ("buy", 1, "P"), ("sell", 1, "C")]),
    ],
)
def test_each_structure_builds_its_legs_with_figures(chain: OptionChain, structure: Structure, shape) -> None:
    b = build_strategy(BuildSpec(structure, dte=30), chain, chain.ts, r=R, q=Q)
    assert _shape(b.legs) == shape
    assert math.isfinite(b.mid) and math.isfinite(b.natural)
    assert b.natural >= b.mid - 1e-9  # natural always costs more (or receives less) than mid
    assert b.summary is not None and 0 <= b.probability_of_profit <= 1
    assert set(b.greeks) == {"delta", "gamma", "theta", "vega"}
    assert b.name.startswith("SPY ")


def test_iron_condor_by_delta_has_16_delta_shorts_and_dollar_wings(chain: OptionChain) -> None:
    b = build_strategy(BuildSpec(Structure.IRON_CONDOR, dte=30), chain, chain.ts, r=R, q=Q)
    lp, sp, sc, lc = b.legs
    _nearest_to_target(chain, sp, 0.16)
    _nearest_to_target(chain, sc, 0.16)
    assert _k(lp) < _k(sp) < chain.spot < _k(sc) < _k(lc)
    assert default_width(chain.spot) == 5.0  # SPY near 600: $5 wings
    assert _k(sp) - _k(lp) >= 5.0 and _k(lc) - _k(sc) >= 5.0
    assert b.mid < 0  # a credit
    assert b.summary.defined_risk and b.summary.max_profit == pytest.approx(-100 * b.mid, abs=0.51)
    lo, hi = b.summary.breakevens
    assert _k(sp) > lo > _k(lp) and _k(sc) < hi < _k(lc)
    assert b.probability_of_profit > 0.5  # not the 6 % of the strike-offset template


def test_delta_targets_and_probability_targets(chain: OptionChain) -> None:
    b = build_strategy(BuildSpec(Structure.VERTICAL, target=0.30, call=True, width=10), chain, chain.ts, r=R, q=Q)
    short, long_ = b.legs
    assert short.side is Side.SELL and short.instrument.is_call and _k(long_) >= _k(short) + 10
    _nearest_to_target(chain, short, 0.30)
    # 84 % OTM is about the 16-delta strike
    by_p = build_strategy(BuildSpec(Structure.STRANGLE, by="probability", target=0.84), chain, chain.ts, r=R, q=Q)
    by_d = build_strategy(BuildSpec(Structure.STRANGLE, target=0.16), chain, chain.ts, r=R, q=Q)
    for a, d in zip(by_p.legs, by_d.legs, strict=True):
        assert abs(_k(a) - _k(d)) <= 0.03 * chain.spot


def test_flip_mirrors_every_leg_and_expiry_follows_dte(chain: OptionChain) -> None:
    short = build_strategy(BuildSpec(Structure.STRANGLE, dte=7), chain, chain.ts, r=R, q=Q)
    long_ = build_strategy(BuildSpec(Structure.STRANGLE, dte=7, flip=True), chain, chain.ts, r=R, q=Q)
    assert [leg.side for leg in long_.legs] == [Side.BUY, Side.BUY]
    assert long_.mid == pytest.approx(-short.mid)
    days = (short.expiry - np.datetime64(chain.ts.date(), "D")).astype(int)
    expiries = np.unique(chain.expiry.astype("datetime64[D]"))
    all_days = (expiries - np.datetime64(chain.ts.date(), "D")).astype(int)
    assert abs(days - 7) == np.min(np.abs(all_days - 7))
    cal = build_strategy(BuildSpec(Structure.CALENDAR, dte=14, far_dte=45), chain, chain.ts, r=R, q=Q)
    front, back = cal.legs
    assert back.instrument.expiry > front.instrument.expiry and _k(front) == _k(back)


def test_bad_inputs_give_clear_messages(chain: OptionChain) -> None:
    with pytest.raises(BuildError, match=r"no put at 0\.1 Δ: the listed puts span"):
        build_strategy(BuildSpec(Structure.IRON_CONDOR, target=0.001), chain, chain.ts, r=R, q=Q)
    with pytest.raises(BuildError, match="beyond the listed puts"):
        build_strategy(BuildSpec(Structure.IRON_CONDOR, width=500), chain, chain.ts, r=R, q=Q)
    with pytest.raises(BuildError, match="delta must be between 0 and 1"):
        build_strategy(BuildSpec(Structure.VERTICAL, target=1.5), chain, chain.ts, r=R, q=Q)
    with pytest.raises(BuildError, match="positive number of dollars"):
        build_strategy(BuildSpec(Structure.VERTICAL, width=-5), chain, chain.ts, r=R, q=Q)
    with pytest.raises(BuildError, match="broken wing is wider"):
        build_strategy(BuildSpec(Structure.BROKEN_WING_BUTTERFLY, width=10, far_width=5), chain, chain.ts)


def test_default_width_scales_with_the_underlying() -> None:
    assert default_width(600.0) == 5.0
    assert default_width(6000.0) == 50.0
    assert default_width(100.0) == 1.0


def test_figures_are_for_the_quantity_and_prices_per_unit(chain: OptionChain) -> None:
    one = build_strategy(BuildSpec(Structure.IRON_CONDOR), chain, chain.ts, r=R, q=Q)
    three = build_strategy(BuildSpec(Structure.IRON_CONDOR), chain, chain.ts, r=R, q=Q, quantity=3)
    assert three.mid == one.mid and three.natural == one.natural
    assert three.summary.max_profit == pytest.approx(3 * one.summary.max_profit)
    assert three.summary.max_loss == pytest.approx(3 * one.summary.max_loss)
    assert three.greeks["theta"] == pytest.approx(3 * one.greeks["theta"])
    with pytest.raises(BuildError, match="quantity must be at least 1"):
        build_strategy(BuildSpec(Structure.IRON_CONDOR), chain, chain.ts, quantity=0)
