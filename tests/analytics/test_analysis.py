"""What-if analysis (engine/analytics/analysis.py): date and IV curves, probabilities, hypothetical trades, betas."""

import math
from datetime import date, timedelta

import numpy as np
import pytest
from scipy.stats import norm

from engine.analytics.analysis import (
    analyse_probabilities,
    beta_weighted_curve,
    combine,
    expiry_pnl,
    history_betas,
    last_expiry_days,
    monitoring_days,
    pnl_at_date,
    pnl_surface,
    probability_of_reaching,
    probability_of_touch,
    simulate_paths,
    with_trade,
)
from engine.analytics.payoff import legs_from_order, legs_from_positions, pnl_at, profile
from engine.analytics.templates import Template, build_template
from engine.analytics.ticket import ticket_prices
from engine.model import Equity, Leg, Side
from tests.analytics.conftest import NOW

FRONT = date(2026, 3, 20)
R, Q = 0.04, 0.0


def _order(chain, template, qty=1, **kw):
    legs = build_template(template, chain, FRONT, **kw)
    p = ticket_prices(legs, chain)
    return legs_from_order(legs, qty, p.leg_mid, [0.25] * len(legs), NOW)


def _single(chain, symbol, side, qty=1):
    leg = Leg(chain.option(chain.row_of(symbol)), side)
    p = ticket_prices((leg,), chain)
    return legs_from_order((leg,), qty, p.leg_mid, [0.25], NOW)


def _fitted_vol(chain):
    from engine.surface.fit import fit_chain

    surface = fit_chain(chain, rate=R, dividend_yield=Q).surface
    return lambda k, t: surface.implied_vol(k, t)


def test_date_at_the_last_expiry_is_the_expiry_payoff_to_the_cent(chain) -> None:
    pl = _order(chain, Template.CALENDAR)  # two expiries: the slider ends at the far one
    spots = np.linspace(70, 130, 241)
    last = last_expiry_days(pl)
    assert last == pytest.approx(pl.expiry_years.max() * 365)
    at_end = pnl_at_date(pl, spots, last, R, Q, surface_vol=_fitted_vol(chain))
    assert np.max(np.abs(at_end - expiry_pnl(pl, spots))) < 0.005
    # one day earlier the far leg still has time value: the curve differs from the payoff
    before = pnl_at_date(pl, spots, last - 1.0, R, Q, surface_vol=_fitted_vol(chain))
    assert np.max(np.abs(before - expiry_pnl(pl, spots))) > 1.0


def test_zero_iv_shift_is_the_base_curve_and_a_rise_helps_a_long_straddle(chain) -> None:
    pl = _order(chain, Template.STRADDLE)
    spots = np.linspace(80, 120, 81)
    vol = _fitted_vol(chain)
    base = pnl_at_date(pl, spots, 5.0, R, Q, surface_vol=vol)
    assert np.array_equal(pnl_at_date(pl, spots, 5.0, R, Q, vol_shift=0.0, surface_vol=vol), base)
    assert np.all(pnl_at_date(pl, spots, 5.0, R, Q, vol_shift=0.05, surface_vol=vol) > base)
    # without a surface the legs' own vols: the date curve is the payoff module's curve
    assert pnl_at_date(pl, spots, 5.0, R, Q) == pytest.approx(pnl_at(pl, spots, 5.0, R, Q))


def test_the_surface_prices_the_date_curve(chain) -> None:
    """The legs carry a flat 25 % vol; the fitted smile is skewed: a put spread is worth more off the surface."""
    pl = _order(chain, Template.VERTICAL, call=False)
    s = np.array([100.0])
    off_surface = pnl_at_date(pl, s, 3.0, R, Q, surface_vol=_fitted_vol(chain))
    flat = pnl_at_date(pl, s, 3.0, R, Q)
    assert off_surface[0] != pytest.approx(flat[0], abs=0.5)


def test_bad_dates_and_shifts_are_refused(chain) -> None:
    pl = _order(chain, Template.STRADDLE)
    with pytest.raises(ValueError, match="today or later"):
        pnl_at_date(pl, np.array([100.0]), -1.0, R, Q)
    with pytest.raises(ValueError, match="vol shift must be finite"):
        pnl_at_date(pl, np.array([100.0]), 1.0, R, Q, vol_shift=math.nan)
    with pytest.raises(ValueError, match="positive spot"):
        probability_of_touch(0.0, [100.0], 0.1, R, Q, 0.2)
    with pytest.raises(ValueError, match="positive vol"):
        probability_of_touch(100.0, [110.0], 0.1, R, Q, 0.0)
    with pytest.raises(ValueError, match="at least 20 sessions"):
        history_betas(None, ["QQQ"], window=5)


def test_touch_without_drift_is_twice_the_probability_of_finishing_beyond() -> None:
    s, T, sig = 100.0, 0.25, 0.3
    q = R - 0.5 * sig**2  # ν = r − q − σ²/2 = 0
    h = np.array([80.0, 95.0, 110.0, 130.0])
    p = probability_of_touch(s, h, T, R, q, sig)
    d = np.abs(np.log(h / s)) / (sig * math.sqrt(T))
    assert p == pytest.approx(2 * norm.cdf(-d), abs=1e-12)
    assert probability_of_touch(s, [100.0], T, R, q, sig)[0] == 1.0


def test_touch_matches_a_fine_monte_carlo() -> None:
    s, T, sig, r, q = 100.0, 30 / 365, 0.25, 0.04, 0.01
    h = np.array([92.0, 108.0])
    closed = probability_of_touch(s, h, T, r, q, sig)
    steps, n = 2000, 20000
    rng = np.random.default_rng(11)
    dt = T / steps
    logs = np.zeros(n)
    hi = np.zeros(n)
    lo = np.zeros(n)
    for _ in range(steps):  # a test's reference, not engine code
        logs += (r - q - 0.5 * sig**2) * dt + sig * math.sqrt(dt) * rng.standard_normal(n)
        np.maximum(hi, logs, out=hi)
        np.minimum(lo, logs, out=lo)
    mc = np.array([np.mean(lo <= math.log(h[0] / s)), np.mean(hi >= math.log(h[1] / s))])
    # discrete monitoring misses a few touches: the closed form is slightly above, within MC noise + bias
    assert mc == pytest.approx(closed, abs=0.02)
    assert np.all(closed >= mc - 0.005)


def test_p50_of_stock_is_the_probability_of_touching_the_target() -> None:
    """Long 100 shares: reaching $500 of P&L is touching spot + 5; daily monitoring vs the closed form."""
    pl = legs_from_order([Leg(Equity("XYZ"), Side.BUY)], 100, [100.0], [math.nan], NOW)
    spots = np.linspace(50, 150, 1001)
    days = monitoring_days(60.0, max_steps=60)
    surf = pnl_surface(pl, spots, days, R, Q)
    assert surf[0] == pytest.approx(100 * (spots - 100.0))
    paths = simulate_paths(100.0, days, R, Q, 0.25, paths=20000, seed=3)
    mc = probability_of_reaching(surf, spots, paths, 500.0)
    closed = probability_of_touch(100.0, [105.0], 60 / 365, R, Q, 0.25)[0]
    # daily monitoring: a little below continuous (Broadie–Glasserman shift of the barrier)
    shifted = probability_of_touch(100.0, [105.0 * math.exp(0.5826 * 0.25 * math.sqrt(1 / 365))], 60 / 365, R, Q,
                                   0.25)[0]
    assert shifted - 0.02 < mc < closed + 0.01


def test_p50_of_a_short_put_against_an_independent_monte_carlo(chain) -> None:
    pl = _single(chain, "XYZ260320P00095000", Side.SELL)
    prof = profile(pl, chain.spot, R, Q)
    probs = analyse_probabilities(pl, prof.spots, chain.spot, R, Q, max_profit=prof.summary.max_profit,
                                  breakevens=prof.summary.breakevens,
                                  probability_of_profit=prof.probability_of_profit)
    assert probs.p50_target == pytest.approx(0.5 * prof.summary.max_profit)
    # reference: per path, revalue the put at every day with BSM, fixed seed, no shared code but pricing
    from engine.pricing import bsm

    t_exp = pl.first_expiry_years
    n_days = math.ceil(t_exp * 365)
    days = np.linspace(t_exp * 365 / n_days, t_exp * 365, n_days)
    rng = np.random.default_rng(99)
    z = rng.standard_normal((n_days, 6000))
    dt = np.diff(np.concatenate([[0.0], days / 365]))
    paths = 100.0 * np.exp(np.cumsum((R - Q - 0.5 * 0.25**2) * dt[:, None] + 0.25 * np.sqrt(dt)[:, None] * z, 0))
    t_left = np.maximum(t_exp - days / 365, 0.0)[:, None]
    put = np.where(t_left > 1e-12, bsm.price(False, paths, 95.0, np.maximum(t_left, 1e-12), R, Q, 0.25),
                   np.maximum(95.0 - paths, 0.0))
    pnl = -100 * put - pl.cost
    ref = float(np.mean(np.any(pnl >= probs.p50_target, axis=0)))
    assert probs.p50 == pytest.approx(ref, abs=0.03)
    assert 0 < probs.p50 < 1
    kinds = [w for w, _, _ in probs.touch]
    assert kinds == ["breakeven", "short put"]
    (_, be, p_be), (_, k, p_k) = probs.touch
    assert k == 95.0 and be < 95.0 and p_be < p_k  # the breakeven is further away


def test_unbounded_profit_has_no_p50(chain) -> None:
    pl = _single(chain, "XYZ260320C00100000", Side.BUY)
    prof = profile(pl, chain.spot, R, Q)
    probs = analyse_probabilities(pl, prof.spots, chain.spot, R, Q, max_profit=prof.summary.max_profit,
                                  breakevens=prof.summary.breakevens,
                                  probability_of_profit=prof.probability_of_profit)
    assert math.isnan(probs.p50) and "no P50" in probs.note
    assert [w for w, _, _ in probs.touch] == ["breakeven"]


def test_a_hypothetical_trade_adds_its_curve_to_the_book(chain) -> None:
    from decimal import Decimal

    from engine.model import Position

    held = [Position(chain.option(chain.row_of("XYZ260320C00100000")), 2, Decimal("2.00"), opened_at=NOW)]
    book = legs_from_positions(held, [0.25], NOW)
    trade = _order(chain, Template.VERTICAL, qty=3)
    both = combine(book, trade)
    assert len(both) == 3 and both.cost == pytest.approx(book.cost + trade.cost)
    s = np.linspace(80, 120, 41)
    assert pnl_at_date(both, s, 4.0, R, Q) == pytest.approx(pnl_at_date(book, s, 4.0, R, Q)
                                                            + pnl_at_date(trade, s, 4.0, R, Q))
    held_curve, with_curve = with_trade(book, trade, s, 4.0, R, Q, vol_shift=0.02)
    assert held_curve == pytest.approx(pnl_at_date(book, s, 4.0, R, Q, vol_shift=0.02))
    assert with_curve == pytest.approx(pnl_at_date(both, s, 4.0, R, Q, vol_shift=0.02))
    assert with_trade(None, trade, s, 4.0, R, Q)[0] is None


def _write_closes(store, closes: dict[str, np.ndarray], start: date) -> None:
    from engine.history.service import write_series
    from engine.history.source import DailySeries

    series = {u: DailySeries(underlying=u, days=tuple(start + timedelta(days=i) for i in range(len(c))), close=c,
                             atm_iv=np.full(len(c), 0.2)) for u, c in closes.items()}
    write_series(store, series, "test", "2026-03-01T00:00:00+00:00")


def test_betas_from_stored_closes(tmp_path) -> None:
    from engine.store import Store

    store = Store.open(tmp_path / "d.db")
    rng = np.random.default_rng(5)
    spy_r = 0.01 * rng.standard_normal(300)
    qqq_r = 1.3 * spy_r + 0.002 * rng.standard_normal(300)
    _write_closes(store, {"SPY": 600 * np.cumprod(1 + spy_r), "QQQ": 500 * np.cumprod(1 + qqq_r),
                          "NEW": 10 * np.cumprod(1 + spy_r)[:10]}, date(2025, 1, 1))
    est = history_betas(store, ["SPY", "QQQ", "NEW", "NONE"], window=120)
    assert est.betas["SPY"] == 1.0  # the benchmark to itself
    assert est.betas["QQQ"] == pytest.approx(1.3, abs=0.05)
    assert est.days == 120 and est.window == 120
    assert set(est.missing) == {"NEW", "NONE"}
    # the window the user picks is the window used
    assert history_betas(store, ["QQQ"], window=40).days == 40


def test_beta_weighted_curve_of_spy_and_a_high_beta_name() -> None:
    from engine.model import Option

    spy = legs_from_order([Leg(Equity("SPY"), Side.BUY)], 100, [600.0], [math.nan], NOW)
    qqq_call = Option("QQQ", FRONT, 500.0, "C")
    qqq = legs_from_order([Leg(qqq_call, Side.BUY)], 2, [12.0], [0.22], NOW)
    book = combine(spy, qqq)
    moves = np.linspace(-0.1, 0.1, 21)
    curve = beta_weighted_curve(book, ["SPY", "QQQ"], {"SPY": 600.0, "QQQ": 500.0}, {"SPY": 1.0, "QQQ": 1.2},
                                R, {"SPY": 0.012}, 600.0, moves=moves)
    assert curve.pnl[10] == pytest.approx(0.0, abs=1e-9)  # no move, no time: no P&L
    assert curve.by_underlying["SPY"] == pytest.approx(100.0)  # SPY's beta to itself is 1: its own shares
    from engine.pricing import bsm

    d = float(bsm.greeks(True, 500.0, 500.0, qqq_call.time_to_expiry(NOW), R, 0.0, 0.22, outputs=("delta",)).delta)
    assert curve.by_underlying["QQQ"] == pytest.approx(d * 200 * 1.2 * 500 / 600)
    assert curve.beta_delta == pytest.approx(100.0 + d * 200 * 1.2 * 500 / 600)
    # the slope at zero is the beta-weighted delta (per 1 % of SPY, 6 dollars a share)
    slope = (curve.pnl[11] - curve.pnl[9]) / (2 * 0.01 * 600.0)
    assert slope == pytest.approx(curve.beta_delta, rel=0.02)
    with pytest.raises(ValueError, match="benchmark's price"):
        beta_weighted_curve(book, ["SPY", "QQQ"], {"SPY": 600.0, "QQQ": 500.0}, {"SPY": 1.0, "QQQ": 1.2}, R, {},
                            math.nan, moves=moves)


def test_simulated_components_have_the_correlation_models_betas(tmp_path) -> None:
    """The simulated market's history is its one-factor model: estimated betas recover the configured ones."""
    from engine.history.service import write_series
    from engine.history.simulated import SimulatedHistorySource
    from engine.market.config import SimulatorConfig, default_universe
    from engine.market.simulated.index import basket_universe
    from engine.store import Store

    cfg = SimulatorConfig(seed=7, universe=[*default_universe(), *basket_universe()])
    names = ["SPY", "QQQ", "IWM", "DSPA", "DSPB", "DSPE"]
    store = Store.open(tmp_path / "d.db")
    write_series(store, SimulatedHistorySource(cfg).daily(names, date(2026, 3, 2), 252), "simulated seed=7",
                 "2026-03-02T00:00:00+00:00")
    est = history_betas(store, names, window=250)
    model = {u.symbol: u.beta for u in cfg.universe}
    assert est.betas["SPY"] == 1.0 and not est.missing and est.days == 250
    for u in names[1:]:
        assert est.betas[u] == pytest.approx(model[u], abs=0.25), u
