import math
from datetime import date

import numpy as np
import pytest

from engine.analytics.payoff import (
    legs_from_order,
    pnl_at,
    probability_of_profit,
    profile,
    terminal_cdf,
)
from engine.analytics.templates import Template, build_template
from engine.analytics.ticket import ticket_prices
from engine.model import Equity, Leg, Side
from tests.analytics.conftest import NOW

FRONT = date(2026, 3, 20)
R, Q = 0.04, 0.0


def _order(chain, template, **kw):
    legs = build_template(template, chain, FRONT, **kw)
    p = ticket_prices(legs, chain)
    return legs, legs_from_order(legs, 2, p.leg_mid, [0.25] * len(legs), NOW)


def test_vertical_expiry_pnl_is_capped_and_breakeven_is_strike_plus_debit(chain) -> None:
    _, pl = _order(chain, Template.VERTICAL)
    debit = pl.cost / (2 * 100)
    prof = profile(pl, chain.spot, R, Q, days=(0, 7))
    s = prof.summary
    assert s.max_loss == pytest.approx(pl.cost)
    assert s.max_profit == pytest.approx(2 * 100 * 5 - pl.cost)
    assert s.breakevens == pytest.approx((100 + debit,), abs=1e-6)
    assert set(prof.curves) == {"Now", "T+7d", "Expiry"}
    # before expiry the curve is smoother: above the expiry payoff at the long strike
    i = int(np.argmin(abs(prof.spots - 100)))
    assert prof.curves["Now"][i] > prof.curves["Expiry"][i]
    assert 0 < prof.probability_of_profit < 1


def test_now_curve_at_spot_is_near_zero_when_entered_at_mid(chain) -> None:
    _, pl = _order(chain, Template.STRADDLE)
    # legs valued with the same vol the market uses: the P&L at today's spot is small vs the premium
    now_pnl = pnl_at(pl, np.array([chain.spot]), 0, R, Q)[0]
    assert abs(now_pnl) < 0.1 * abs(pl.cost)


def test_short_strangle_has_unlimited_loss(chain) -> None:
    _, pl = _order(chain, Template.STRANGLE, long=False)
    prof = profile(pl, chain.spot, R, Q)
    assert math.isinf(prof.summary.max_loss) and not prof.summary.defined_risk
    assert prof.summary.max_profit == pytest.approx(-pl.cost)
    assert len(prof.summary.breakevens) == 2


def test_calendar_uses_curve_at_front_expiry(chain) -> None:
    _, pl = _order(chain, Template.CALENDAR)
    prof = profile(pl, chain.spot, R, Q)
    exp = prof.curves["Expiry"]
    # a long calendar profits most near the strike at the front expiry
    assert prof.spots[int(np.argmax(exp))] == pytest.approx(100.0, abs=3.0)
    assert len(prof.summary.breakevens) == 2


def test_stock_leg_is_linear() -> None:
    pl = legs_from_order([Leg(Equity("XYZ"), Side.BUY)], 100, [50.0], [math.nan], NOW)
    assert pnl_at(pl, np.array([49.0, 51.0]), 0, R, Q) == pytest.approx([-100.0, 100.0])


def test_terminal_cdf_is_a_distribution_near_forward() -> None:
    k = np.linspace(50, 150, 401)
    cdf = terminal_cdf(k, 100.0, 0.25, 0.0, 0.0, np.full_like(k, 0.2))
    assert cdf[0] < 0.01 and cdf[-1] > 0.99 and np.all(np.diff(cdf) >= 0)
    # lognormal median is below the forward: P(S_T <= 100) slightly above 1/2
    assert 0.5 < cdf[np.searchsorted(k, 100.0)] < 0.56


def test_probability_of_profit_of_everything_and_nothing() -> None:
    s = np.linspace(1, 10, 10)
    cdf = np.linspace(0.05, 0.95, 10)
    assert probability_of_profit(s, np.ones(10), cdf) == pytest.approx(1.0)
    assert probability_of_profit(s, -np.ones(10), cdf) == 0.0


def test_bad_inputs_are_named(chain) -> None:
    legs = build_template(Template.STRADDLE, chain, FRONT)
    with pytest.raises(ValueError, match="entry price for every leg; missing for XYZ260320C00100000"):
        legs_from_order(legs, 1, [math.nan, 1.0], [0.2, 0.2], NOW)
    with pytest.raises(ValueError, match="quantity must be positive"):
        legs_from_order(legs, 0, [1.0, 1.0], [0.2, 0.2], NOW)
    _, pl = _order(chain, Template.STRADDLE)
    with pytest.raises(ValueError, match="positive spot"):
        profile(pl, math.nan, R, Q)
    with pytest.raises(ValueError, match="ascending"):
        terminal_cdf(np.array([3.0, 2.0, 1.0]), 100, 0.1, 0, 0, np.ones(3))


def test_limit_price_sets_the_premium(chain) -> None:
    legs = build_template(Template.VERTICAL, chain, FRONT)
    mids = ticket_prices(legs, chain).leg_mid
    pl = legs_from_order(legs, 3, mids, [0.25, 0.25], NOW, net_price=1.5)
    assert pl.cost == pytest.approx(1.5 * 3 * 100)
    assert profile(pl, 100.0, R, Q).summary.breakevens == pytest.approx((101.5,), abs=1e-6)


def test_model_fair_values_follow_the_surface_vol(chain) -> None:
    from engine.analytics.chain_metrics import model_fair_values
    from engine.pricing import bsm
    from engine.surface.fit import fit_chain

    fit = fit_chain(chain, rate=R, dividend_yield=Q)
    rows = np.array([chain.row_of("XYZ260320C00100000"), chain.row_of("XYZ260320P00090000")])
    fair = model_fair_values(chain, rows, fit.surface, now=NOW, r=R, q=Q)
    mids = chain.mid[rows]
    # the chain was priced on a smooth smile: the fitted surface gives back prices within the spread
    assert np.all(np.abs(fair - mids) < chain.spread[rows] + 0.02)
    # American puts are worth at least the European value at the same vol
    T = chain.time_to_expiry(NOW)[rows[1]]
    vol = float(fit.surface.implied_vol(90.0, T))
    assert fair[1] >= float(bsm.price(False, 100.0, 90.0, T, R, Q, vol)) - 1e-9
    far = model_fair_values(chain, np.array([0]), fit.surface, now=NOW.replace(year=2027), r=R, q=Q)
    assert np.isnan(far[0])  # expired relative to 'now': no vol, unknown edge


def test_american_ivs_are_below_european_for_deep_itm_puts(chain) -> None:
    from engine.analytics.chain_metrics import american_implied_vols, chain_metrics

    rows = np.array([chain.row_of("XYZ260417P00105000"), chain.row_of("XYZ260417C00100000")])
    am = american_implied_vols(chain, rows, now=NOW, r=0.05, q=0.0)
    eu = chain_metrics(chain, rows, now=NOW, r=0.05, q=0.0).iv
    assert am[0] < eu[0]  # the put's price includes early-exercise value: less vol is needed
    assert am[1] == pytest.approx(eu[1], abs=2e-3)  # no dividend: an American call is European
    mixed = chain_metrics(chain, rows, now=NOW, r=0.05, q=0.0, iv=np.array([am[0], np.nan])).iv
    assert mixed[0] == am[0] and mixed[1] == pytest.approx(eu[1])
