"""Positions grouped into named strategies, their figures, and the legs of a roll."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from engine.analytics.builder import Structure
from engine.analytics.positions_grouping import (
    RollError,
    group_figures,
    group_positions,
    next_expiry,
    recognize,
    roll_expiry,
    roll_legs,
)
from engine.model import Equity, OpenClose, Option, Position, Side
from tests.analytics.conftest import priced_chain

E1, E2 = date(2026, 3, 20), date(2026, 4, 17)


def _o(k: float, right: str, qty: int, avg: float, expiry: date = E1, root: str = "SPY",
       tag: str | None = None) -> Position:
    return Position(Option(root, expiry, k, right), qty, Decimal(str(avg)), strategy_id=tag)


def test_untagged_legs_are_recognized_and_named() -> None:
    positions = [
        _o(580, "P", -2, 3.10), _o(570, "P", 2, 1.60),  # put credit vertical
        _o(620, "C", -1, 2.0), _o(600, "P", -1, 5.0, expiry=E2),  # leftovers: a short call and a short put
        Position(Equity("QQQ"), 100, Decimal("500")), _o(520, "C", -1, 4.0, root="QQQ"),  # covered call
    ]
    groups = group_positions(positions)
    names = {g.name for g in groups}
    assert "SPY 580/570 put vertical (credit)" in names
    assert "SPY short 620 call" in names and "SPY short 600 put" in names
    assert "QQQ 520 covered call" in names
    assert sorted(i for g in groups for i in g.indices) == list(range(len(positions)))
    vertical = next(g for g in groups if g.structure is Structure.VERTICAL)
    assert vertical.max_profit == pytest.approx(2 * 100 * 1.50)
    assert vertical.max_loss == pytest.approx(2 * 100 * 8.50)


def test_tags_keep_a_strategy_s_legs_together() -> None:
    positions = [_o(580, "P", -1, 3.0, tag="wheel-1"), _o(570, "P", 1, 1.5, tag="wheel-1"),
                 _o(560, "P", 1, 1.0), _o(550, "P", -1, 0.5)]
    groups = group_positions(positions)
    tagged = next(g for g in groups if g.tag == "wheel-1")
    assert tagged.indices == (0, 1) and tagged.name.endswith("· wheel-1")
    untagged = [g for g in groups if not g.tag]
    assert len(untagged) == 1 and untagged[0].structure is Structure.VERTICAL


@pytest.mark.parametrize(
    ("legs", "structure"),
    [
        ([(90, "P", 1), (95, "P", -1), (105, "C", -1), (110, "C", 1)], Structure.IRON_CONDOR),
        ([(90, "P", 1), (100, "P", -1), (100, "C", -1), (110, "C", 1)], Structure.IRON_FLY),
        ([(95, "P", -1), (105, "C", -1)], Structure.STRANGLE),
        ([(100, "P", 1), (100, "C", 1)], Structure.STRADDLE),
        ([(95, "C", 1), (100, "C", -2), (105, "C", 1)], Structure.BUTTERFLY),
        ([(95, "P", 1), (100, "P", -2), (110, "P", 1)], Structure.BROKEN_WING_BUTTERFLY),
        ([(100, "P", 1), (95, "P", -2)], Structure.RATIO),
        ([(95, "P", -1), (105, "C", -1), (110, "C", 1)], Structure.JADE_LIZARD),
        ([(100, "C", 3), (105, "C", -2)], None),
    ],
)
def test_structures_are_recognized(legs, structure) -> None:
    assert recognize([_o(k, r, q, 1.0) for k, r, q in legs]) is structure


def test_calendar_and_collar() -> None:
    assert recognize([_o(100, "C", -1, 2.0), _o(100, "C", 1, 3.0, expiry=E2)]) is Structure.CALENDAR
    assert recognize([_o(100, "C", -1, 2.0), _o(95, "C", 1, 6.0, expiry=E2)]) is Structure.DIAGONAL
    collar = [Position(Equity("SPY"), 200, Decimal("600")), _o(580, "P", 2, 4.0), _o(620, "C", -2, 3.0)]
    assert recognize(collar) is Structure.COLLAR
    assert recognize(collar[:1] + collar[2:]) is Structure.COVERED_CALL
    assert recognize([Position(Equity("SPY"), 50, Decimal("600")), _o(620, "C", -1, 3.0)]) is None


def test_group_figures_sum_members_and_divide_by_max_profit() -> None:
    positions = [_o(580, "P", -1, 3.0), _o(570, "P", 1, 1.0), _o(650, "C", 1, 1.0)]
    groups = group_positions(positions)
    pnl = np.array([100.0, -40.0, np.nan])
    delta = np.array([10.0, -4.0, 5.0])
    f = group_figures(groups, pnl, {"delta": delta}, np.array([18.0, 18.0, 18.0]))
    v = next(i for i, g in enumerate(groups) if g.structure is Structure.VERTICAL)
    single = 1 - v
    assert f.pnl[v] == pytest.approx(60.0) and f.pct_of_max[v] == pytest.approx(60.0 / 200.0)
    assert f.greeks["delta"][v] == pytest.approx(6.0) and f.dte[v] == 18.0
    assert math.isnan(f.pnl[single]) and math.isnan(f.pct_of_max[single])


def test_roll_closes_the_old_legs_and_opens_the_same_structure_later() -> None:
    chain = priced_chain()  # XYZ, strikes 80–120 by 5, expiries 20 Mar and 17 Apr 2026
    held = [Position(Option("XYZ", E1, 95, "P"), -2, Decimal("1.2")),
            Position(Option("XYZ", E1, 90, "P"), 2, Decimal("0.5"))]
    assert next_expiry(chain, E1) == E2
    assert roll_expiry(chain, chain.ts, E1, 30) == E2
    with pytest.raises(RollError, match="no XYZ expiry listed after"):
        roll_expiry(chain, chain.ts, E2, 30)
    legs, qty = roll_legs(held, chain, E2)
    assert qty == 2
    assert [(leg.side, leg.open_close, leg.instrument.expiry, float(leg.instrument.strike)) for leg in legs] == [
        (Side.BUY, OpenClose.CLOSE, E1, 95.0), (Side.SELL, OpenClose.CLOSE, E1, 90.0),
        (Side.SELL, OpenClose.OPEN, E2, 95.0), (Side.BUY, OpenClose.OPEN, E2, 90.0)]
    shifted, _ = roll_legs(held, chain, E2, strike_shift=-5)
    assert [float(leg.instrument.strike) for leg in shifted[2:]] == [90.0, 85.0]
    with pytest.raises(RollError, match="after the current one"):
        roll_legs(held, chain, E1)
    with pytest.raises(RollError, match="no 75 put listed at 2026-04-17"):
        roll_legs(held, chain, E2, strike_shift=-20)


def test_theta_to_expiry_for_less_than_a_day_left() -> None:
    from engine.analytics.positions_grouping import theta_to_expiry
    from tests.analytics.conftest import NOW  # 2 Mar 2026 10:00 New York: 6 hours to a 0DTE close

    zero = Option("SPX", date(2026, 3, 2), 5965, "P")
    later = Option("SPX", E1, 5965, "P")
    decay, hours = theta_to_expiry([zero, later, Equity("SPY")], np.array([-1.0, -1.0, 100.0]),
                                   np.array([10.40, 60.0, 600.0]), np.array([6000.0, 6000.0, 600.0]), NOW)
    assert decay[0] == pytest.approx(1040.0)  # the whole premium of an OTM short put, not $3,620 per "day"
    assert hours[0] == pytest.approx(6.0)
    assert np.isnan(decay[1:]).all() and np.isnan(hours[1:]).all()
    itm, _ = theta_to_expiry([zero], np.array([2.0]), np.array([40.0]), np.array([5940.0]), NOW)
    assert itm[0] == pytest.approx(2 * 100 * (25.0 - 40.0))  # a long ITM put loses only its time value


def test_unrecognized_sets_pair_into_the_nearest_verticals() -> None:
    positions = [_o(90, "P", 1, 0.5), _o(95, "P", -1, 1.0), _o(100, "P", -1, 2.0), _o(105, "P", 1, 4.0)]
    groups = group_positions(positions)
    assert sorted(g.name for g in groups) == ["SPY 100/105 put vertical (debit)", "SPY 95/90 put vertical (credit)"]
