import math
from decimal import Decimal

import numpy as np
import pytest
from risk_kit import NOW

from engine.model import Equity, Position
from engine.pricing import bsm
from engine.risk.greeks import estimate_betas
from engine.risk.regime import GaussianMixtureRegime, classify_vix, sizing_regime, vix_rank
from engine.risk.scenarios import book_from_legs, only, scenario_grid
from engine.risk.var import (
    book_from_positions,
    bs_value,
    covariance,
    delta_gamma_var,
    historical_var,
    monte_carlo_var,
    var_from_pnl,
)


def _stock_book(desk, qty=100):
    desk.market.update_spot("SPY", 600.0)
    return book_from_positions([Position(Equity("SPY"), qty, Decimal(600))], desk.market, NOW)


def test_bs_value_when_compared_with_pricing_core_then_agrees():
    rng = np.random.default_rng(3)
    n = 2000
    c, s, k = rng.random(n) < 0.5, rng.uniform(50, 150, n), rng.uniform(60, 140, n)
    t, v = rng.uniform(0.01, 2, n), rng.uniform(0.05, 0.8, n)
    assert np.max(np.abs(bs_value(c, s, k, t, 0.03, 0.01, v) - bsm.price(c, s, k, t, 0.03, 0.01, v))) < 1e-9


def test_var_from_pnl_when_known_sample_then_quantile_and_tail_mean():
    pnl = np.arange(-50.0, 50.0)  # 100 equally likely outcomes
    r = var_from_pnl(pnl, 0.95)
    assert r.var == pytest.approx(-np.quantile(pnl, 0.05))
    assert r.cvar == pytest.approx(-pnl[pnl <= np.quantile(pnl, 0.05)].mean())
    assert r.cvar >= r.var


def test_delta_gamma_var_when_linear_stock_then_equals_normal_var(desk):
    book = _stock_book(desk)
    cov = covariance(np.array([0.20]))
    r = delta_gamma_var(book, cov, 0.95, 1.0)
    expected = 1.6448536269514722 * 100 * 600 * 0.20 / math.sqrt(252)
    assert r.var == pytest.approx(expected, rel=1e-9)
    assert r.cvar == pytest.approx(100 * 600 * 0.20 / math.sqrt(252) * 2.0627128075074257, rel=2e-3)


def test_monte_carlo_var_when_stock_then_close_to_parametric(desk):
    book = _stock_book(desk)
    cov = covariance(np.array([0.20]))
    mc = monte_carlo_var(book, cov, 0.95, 1.0, n_paths=20_000, seed=1)
    dg = delta_gamma_var(book, cov, 0.95, 1.0)
    assert mc.var == pytest.approx(dg.var, rel=0.05)


def test_var_when_short_options_then_gamma_makes_loss_exceed_delta_only(desk):
    desk.hold(desk.c600, -10, "10")
    desk.hold(desk.p600, -10, "10")
    book = book_from_positions(list(desk.portfolio.positions.values()), desk.market, NOW)
    cov = covariance(np.array([0.20]))
    dg = delta_gamma_var(book, cov, 0.99, 5.0)
    mc = monte_carlo_var(book, cov, 0.99, 5.0, n_paths=20_000, seed=2)
    delta, _ = book.delta_gamma()
    delta_only = 2.3263478740408408 * abs(delta[0]) * 600 * 0.2 * math.sqrt(5 / 252)
    assert dg.var > delta_only and mc.var > delta_only
    assert mc.var == pytest.approx(dg.var, rel=0.25)


def test_historical_var_when_returns_given_then_full_revaluation_of_worst_days(desk):
    book = _stock_book(desk)
    rets = np.array([[-0.05], [0.01], [0.02], [-0.01], [0.0]] * 20)
    r = historical_var(book, rets, 0.95)
    assert r.var == pytest.approx(0.05 * 60_000, rel=1e-9)
    with pytest.raises(ValueError, match="shape"):
        historical_var(book, np.zeros((5, 3)))


def test_scenario_grid_when_short_straddle_then_loses_on_big_moves_and_vol_up(desk):
    book = book_from_legs([desk.c600, desk.p600], [-1, -1], desk.market, NOW)
    g = scenario_grid(book, scope="order")
    assert g.pnl.shape == (3, 5, 9)
    today, flat_vol = 0, 2
    assert g.pnl[today, flat_vol, 4] == pytest.approx(0.0, abs=1e-6)  # no move, no shift, today
    assert g.pnl[today, flat_vol, 0] < 0 and g.pnl[today, flat_vol, -1] < 0
    assert g.pnl[today, -1, 4] < g.pnl[today, 0, 4]  # vol up hurts a short straddle
    assert g.pnl[2, flat_vol, 4] > 0  # theta: 30 days later, unchanged spot, it earned
    assert g.worst()[0] == g.pnl.min()


def test_scenario_grid_when_one_underlying_then_other_rows_excluded(desk):
    desk.market.update_spot("QQQ", 500.0)
    positions = [Position(Equity("SPY"), 10, Decimal(600)), Position(Equity("QQQ"), 10, Decimal(500))]
    book = book_from_positions(positions, desk.market, NOW)
    g = scenario_grid(only(book, "QQQ"), spot_moves=[0.1], vol_shifts=[0.0], days=[0.0])
    assert g.pnl[0, 0, 0] == pytest.approx(500.0)
    with pytest.raises(ValueError, match="no positions"):
        only(book, "IWM")


def test_book_when_option_has_no_quote_then_listed_as_missing(desk):
    from risk_kit import opt

    book = book_from_positions([Position(opt(900, "C"), 1, Decimal(1))], desk.market, NOW)
    assert book.missing and len(book) == 0


@pytest.mark.parametrize(("vix", "rank", "hv_iv", "expected"), [
    (12, 0.1, 0.7, "low_vol"), (30, 0.5, 0.7, "high_vol"), (20, 0.9, 0.7, "high_vol"),
    (18, 0.6, 0.95, "iv_expansion"), (18, 0.4, 0.5, "iv_contraction"), (18, 0.4, 0.8, "neutral"),
    (math.nan, 0.4, 0.8, "neutral"),
])
def test_classify_vix_when_thresholds_then_regime(vix, rank, hv_iv, expected):
    assert classify_vix(vix, rank, hv_iv) == expected


def test_vix_rank_when_window_full_then_scaled_between_min_and_max():
    x = np.concatenate([np.linspace(10, 30, 252), [20.0]])
    r = vix_rank(x)
    assert np.isnan(r[250]) and r[251] == pytest.approx(1.0) and r[252] == pytest.approx(0.5, abs=0.01)


def test_gaussian_mixture_when_calm_then_crisis_then_detects_both():
    rng = np.random.default_rng(11)
    calm = rng.normal(0.0003, 0.005, 300)
    volatile = rng.normal(0.0, 0.015, 200)
    crisis = rng.normal(-0.002, 0.045, 150)
    closes = 100 * np.exp(np.cumsum(np.concatenate([calm, volatile, crisis])))
    det = GaussianMixtureRegime(seed=3, n_init=1).fit(closes)
    labels = det.predict(closes)  # one label per day after the 20-day warm-up
    segment = lambda a, b: max(set(labels[a:b]), key=labels[a:b].count)  # noqa: E731
    assert (segment(50, 270), segment(320, 470), segment(500, 620)) == ("calm", "volatile", "crisis")
    assert sizing_regime(labels[-1]) == "high_vol" and sizing_regime("low_vol") == "low_vol"
    assert sizing_regime("neutral") == "normal"


def test_estimate_betas_when_series_scaled_then_recovers_beta():
    rng = np.random.default_rng(5)
    spy = rng.normal(0, 0.01, 200)
    qqq = 1.3 * spy + rng.normal(0, 0.001, 200)
    b = estimate_betas({"SPY": spy, "QQQ": qqq, "TINY": spy[:5]})
    assert b["QQQ"] == pytest.approx(1.3, abs=0.03) and b["SPY"] == 1.0 and "TINY" not in b
