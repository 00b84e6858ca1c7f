"""One money formatter, one max-loss label, theta to expiry for 0DTE (ticket, payoff panel, approvals)."""

import math
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from engine.analytics.formatting import money, plural
from engine.analytics.payoff import legs_from_order, max_loss_text, profile, theta_text, theta_to_expiry
from engine.analytics.ticket import ticket_prices
from engine.model import Leg, Side
from engine.risk.payoff import PayoffSummary
from tests.analytics.conftest import NOW, priced_chain

R, Q = 0.04, 0.0


def test_money_puts_the_sign_before_the_dollar() -> None:
    assert money(-249.26) == "-$249.26"
    assert money(2541) == "$2,541.00"
    assert money(Decimal("2541"), 0) == "$2,541"
    assert money(12.5, signed=True) == "+$12.50" and money(-0.001) == "$0.00"
    assert money(math.inf) == "unlimited" and money(None) == "—" and money(math.nan) == "—"
    assert money("x") == "—"


def test_plural_agrees_with_the_count() -> None:
    assert plural(1, "error") == "1 error" and plural(2, "error") == "2 errors" and plural(0, "error") == "0 errors"
    assert plural(1, "entry", "entries") == "1 entry" and plural(1200, "entry", "entries") == "1,200 entries"


def _short_put(chain, strike: float, expiry: date):
    row = next(i for i in range(len(chain.symbol)) if chain.strike[i] == strike and not chain.is_call[i]
               and chain.expiry[i].astype("datetime64[D]") == np.datetime64(expiry, "D"))
    legs = (Leg(chain.option(row), Side.SELL, 1),)
    p = ticket_prices(legs, chain)
    return legs_from_order(legs, 1, p.leg_mid, [0.25], NOW)


def test_naked_put_max_loss_is_to_zero_and_the_stress_loss_is_the_move() -> None:
    chain = priced_chain(spot=595.0, strikes=np.arange(560.0, 631.0, 5.0))
    pl = _short_put(chain, 595.0, date(2026, 3, 20))
    credit = -pl.cost
    prof = profile(pl, 595.0, R, Q, stress=0.15)
    s = prof.summary
    assert s.max_loss == pytest.approx(595.0 * 100 - credit)  # SPY 595 put: about $59k if SPY goes to 0
    assert s.stress_loss == pytest.approx(0.15 * 595.0 * 100 - credit)  # a 15 % drop: about $8.4k
    assert prof.max_loss_text() == f"${s.max_loss:,.0f} to zero (${s.stress_loss:,.0f} at a 15% move)"


def test_max_loss_label_for_defined_and_unbounded_risk() -> None:
    assert max_loss_text(PayoffSummary(300.0, 200.0, (), True, 200.0), 0.15) == "$200"
    assert max_loss_text(PayoffSummary(500.0, math.inf, (), False, 4200.0), 0.10) == \
        "unlimited ($4,200 at a 10% move)"


def test_0dte_theta_is_the_time_value_left_not_a_day_of_decay() -> None:
    chain = priced_chain(expiries=(date(2026, 3, 2), date(2026, 3, 20)))  # 6 h before the 16:00 NY close
    pl = _short_put(chain, 95.0, date(2026, 3, 2))
    credit = -pl.cost
    decay, hours = theta_to_expiry(pl, 100.0, R, Q)
    assert hours == pytest.approx(6.0, abs=0.01)
    assert 0 < decay <= credit + 1e-9  # a short can never earn more than the premium from time
    text = theta_text(-9999.0, pl, 100.0, R, Q)
    assert text == f"{money(decay, 0, signed=True)} to expiry ({money(decay / hours, 0, signed=True)}/h)"


def test_theta_reads_per_day_with_more_than_a_day_left() -> None:
    pl = _short_put(priced_chain(), 95.0, date(2026, 3, 20))
    assert theta_text(12.345, pl, 100.0, R, Q) == "+$12.35/day"
    assert theta_text(math.nan, None, math.nan, R, Q) == "—"
