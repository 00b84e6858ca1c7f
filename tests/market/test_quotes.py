"""The simulated surface and quotes: IV round trip within the spread, ticks, spreads, skew, listing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from engine.market.config import SimulatorConfig
from engine.market.simulated.market import SimulatedMarket
from engine.market.simulated.ticks import tick_array
from engine.model import Settlement
from engine.pricing import american, bsm

from .conftest import MONDAY


def _implied(model, prices, chain, rows, T, r, q):
    kw = {"scheme": "fast"} if model is american else {}
    return model.implied_vol(prices[rows], chain.is_call[rows], chain.spot, chain.strike[rows], T[rows], r, q, **kw)


def test_ivs_from_quotes_bracket_the_generating_surface(market):
    """Inverting bid and ask with the contract's own exercise model brackets the model's IV."""
    for sym, model in (("SPY", american), ("AAPL", american), ("SPX", bsm)):
        chain = market.chain(sym)
        q = market.config.underlying(sym).dividend_yield
        r = market.config.risk_free_rate
        T = chain.time_to_expiry()
        iv = chain.vendor["vendor_iv"]
        intrinsic = np.maximum(np.where(chain.is_call, chain.spot - chain.strike, chain.strike - chain.spot), 0)
        fair = model.price(chain.is_call, chain.spot, chain.strike, T, r, q, iv,
                           **({"scheme": "fast"} if model is american else {}))
        # rows where the exercise floor binds have no time value to invert
        priced = (chain.bid > 0.05) & (T > 2 / 365) & (fair > intrinsic + 0.01)
        iv_bid = _implied(model, chain.bid, chain, priced, T, r, q)
        iv_ask = _implied(model, chain.ask, chain, priced, T, r, q)
        ok = np.isfinite(iv_bid) & np.isfinite(iv_ask)
        assert ok.mean() > 0.9, sym
        tol = 2e-4 if model is american else 1e-9  # the American inversion is iterative
        assert np.all(iv_bid[ok] <= iv[priced][ok] + tol), sym
        assert np.all(iv[priced][ok] <= iv_ask[ok] + tol), sym
        # and the spread in vol terms is tight near the money
        atm = np.abs(np.log(chain.strike[priced][ok] / chain.spot)) < 0.03
        assert np.median((iv_ask - iv_bid)[ok][atm]) < 0.02, sym


def test_american_puts_carry_an_early_exercise_premium(market):
    chain = market.chain("SPY")
    T = chain.time_to_expiry()
    r, q = market.config.risk_free_rate, market.config.underlying("SPY").dividend_yield
    euro = bsm.price(chain.is_call, chain.spot, chain.strike, T, r, q, chain.vendor["vendor_iv"])
    deep_puts = (~chain.is_call) & (chain.strike > chain.spot * 1.05) & (T > 60 / 365)
    assert deep_puts.any()
    assert np.all(chain.bid[deep_puts] + chain.ask[deep_puts] > 2 * euro[deep_puts])


def test_american_rows_are_never_quoted_below_their_exercise_value(market):
    chain = market.chain("SPY")
    theo = market.theo("SPY")
    a, b = market.listing.slices[market.symbols.index("SPY")]
    live = market.listing.expiry[a:b] > np.datetime64(market.now.replace(tzinfo=None), "s")
    intrinsic = np.maximum(np.where(chain.is_call, chain.spot - chain.strike, chain.strike - chain.spot), 0)
    assert np.all(theo[live] >= intrinsic - 1e-9)
    assert np.all(chain.ask >= intrinsic)


def test_quotes_sit_on_the_tick_schedule(market):
    for sym in market.symbols:
        chain = market.chain(sym)
        scheme = market.config.underlying(sym).tick_scheme
        tick = tick_array(scheme, chain.bid)
        assert np.allclose(np.round(chain.bid / tick) * tick, chain.bid, atol=1e-9), sym
        tick_a = tick_array(scheme, chain.ask)
        on_ask = np.isclose(np.round(chain.ask / tick_a) * tick_a, chain.ask, atol=1e-9)
        assert on_ask.mean() > 0.99, sym  # an ask just above $3 may keep the finer tick of its bid side
        assert np.all(chain.ask > chain.bid) and np.all(chain.bid >= 0), sym
        assert np.all(chain.bid_size >= 1) and np.all(chain.open_interest > 0), sym


def test_spreads_widen_away_from_the_money_and_in_a_crisis():
    cfg = SimulatorConfig(seed=3).restricted_to(["SPX"])
    m = SimulatedMarket(cfg, start=MONDAY, lock_regime=True)
    m.advance(600)
    m.reprice_full()
    calm = m.chain("SPX")
    exp = calm.expiries()[-1]
    sub = calm.for_expiry(exp)
    m_k = np.log(sub.strike / sub.spot)
    rel = (sub.ask - sub.bid) / np.maximum(sub.vendor["vendor_vega"], 1e-6)
    assert np.median(rel[np.abs(m_k) > 0.08]) > np.median(rel[np.abs(m_k) < 0.01])
    iv = sub.vendor["vendor_iv"]
    put_wing = iv[(~sub.is_call) & (m_k < -0.08)].mean() - iv[np.abs(m_k) < 0.005].mean()
    m.dynamics.set_regime("crisis")
    m.dynamics.v = 0.5 ** 2
    m.reprice_full()
    crisis = m.chain("SPX").for_expiry(exp)
    assert np.median(crisis.ask - crisis.bid) > 2 * np.median(sub.ask - sub.bid)
    iv_c = crisis.vendor["vendor_iv"]
    put_wing_c = iv_c[(~crisis.is_call) & (m_k < -0.08)].mean() - iv_c[np.abs(m_k) < 0.005].mean()
    assert put_wing > 0 and put_wing_c > put_wing  # skew steepens in stress


def test_vix_options_have_call_skew_and_follow_the_forward(market):
    chain = market.chain("VIX")
    sub = chain.for_expiry(chain.expiries()[0])
    calls = sub.is_call
    iv = sub.vendor["vendor_iv"]
    lo, hi = sub.strike[calls].min(), sub.strike[calls].max()
    assert iv[calls & (sub.strike == hi)][0] > iv[calls & (sub.strike == lo)][0]
    assert chain.settlement is Settlement.CASH_AM


def test_index_chain_mixes_am_and_pm_roots_and_spy_lists_0dte(market):
    spx = market.chain("SPX")
    roots = {s[:-15] for s in spx.symbol}
    assert roots == {"SPX", "SPXW"}
    am = spx.take(np.array([s.startswith("SPX2") for s in spx.symbol]))
    from datetime import UTC

    from engine.model.instruments import NEW_YORK
    hours = {e.astype("datetime64[s]").astype(object).replace(tzinfo=UTC).astimezone(NEW_YORK).strftime("%H:%M")
             for e in am.expiries()}
    assert hours == {"09:30"}
    spy = market.chain("SPY")
    assert spy.expiry_dates()[0] == market.session  # 0DTE
    assert spy.settlement is Settlement.PHYSICAL


def test_expired_contracts_roll_off_and_new_ones_list():
    cfg = SimulatorConfig(seed=1).restricted_to(["SPY"])
    m = SimulatedMarket(cfg, start=MONDAY)
    first = set(m.chain("SPY").expiry_dates())
    m.advance_to(m.session_close + timedelta(days=10))
    later = set(m.chain("SPY").expiry_dates())
    assert min(later) > min(first)
    assert later - first  # new weeklies/dailies listed
    assert m.listing_version > 0
    assert all(d >= m.session for d in later)


def test_quotes_update_every_step_and_theo_stays_within_the_spread(market):
    v0 = market.version
    before = market.chain("SPY")
    market.advance(5)
    after = market.chain("SPY")
    assert market.version == v0 + 1
    assert after.ts > before.ts
    theo = market.theo("SPY")
    a, b = market.listing.slices[market.symbols.index("SPY")]
    live = market.listing.expiry[a:b] > np.datetime64(market.now.replace(tzinfo=None), "s")
    inside = (after.bid - 1e-9 <= theo[live]) & (theo[live] <= after.ask + 1e-9)
    assert inside.all()


def test_unknown_symbol_is_a_clear_error(market):
    with pytest.raises(KeyError, match="not in the simulated universe"):
        market.chain("TSLA")
    with pytest.raises(ValueError, match="unknown simulated symbol"):
        SimulatorConfig().restricted_to(["TSLA"])


def test_vix_level_is_consistent_with_the_spx_30_day_surface(market):
    spx = market.chain("SPX")
    days = (spx.expiries() - np.datetime64(market.now.replace(tzinfo=None), "s")).astype("timedelta64[D]").astype(int)
    exp = spx.expiries()[int(np.argmin(np.abs(days - 30)))]
    sub = spx.for_expiry(exp)
    atm_iv = sub.vendor["vendor_iv"][np.argmin(np.abs(sub.strike - spx.spot))]
    vix = market.spot("VIX") / 100.0
    # the index is the 30-day variance (with a little skew convexity), the ATM vol is its square root
    assert 0.95 < vix / atm_iv < 1.25
