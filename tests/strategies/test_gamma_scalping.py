"""gamma_scalping: entry on cheap vol, delta-band hedging with shares, the gamma/theta P&L split, and a seeded
backtest through the one order path (issue 16).

Chains are hand built: one expiry 35 days out, strikes 480–520, every option priced by Black-Scholes at the
chain's implied vol (so the ATM IV the strategy reads back is the vol we chose) with 0.10-wide quotes, and the
deltas the hedging reads given explicitly.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.backtest.config import BacktestConfig
from engine.backtest.data import build_history
from engine.backtest.runner import Backtest
from engine.backtest.sources import simulated_history
from engine.model import Equity, Fill, OpenClose, Order, OrderStatus, OrderType, Side, TimeInForce
from engine.pricing import bsm
from engine.strategies.base import SizingLimits
from engine.strategies.gamma_scalping import GammaScalping

NOW = datetime(2024, 3, 1, 21, 0, tzinfo=UTC)


class Ctx:
    """A StrategyContext with fixed answers; ``rv`` None leaves out ``realized_vol`` (the fallback path)."""

    def __init__(self, now: datetime, *, rv: float | None = 0.25, nl: float = 100_000.0, risk: float = 0.02):
        self._now, self._rv, self._nl, self._risk = now, rv, nl, risk
        if rv is None:
            self.realized_vol = None  # type: ignore[assignment]

    def now(self):
        return self._now

    def net_liquidation(self):
        return self._nl

    def iv_rank(self, underlying):
        return 0.5

    def regime(self, underlying):
        return "normal"

    def sizing(self):
        return SizingLimits(risk_per_trade=self._risk)

    def realized_vol(self, underlying, window=20):
        return self._rv


def chain(now: datetime = NOW, spot: float = 500.0, vol: float = 0.15, call_delta: float | None = None):
    """SPY calls and puts 480..520 step 5, expiring 35 days after ``NOW``; ``call_delta`` overrides every call's
    delta (puts get call − 1) to set the hedge's input exactly."""
    strikes = np.arange(480.0, 521.0, 5.0)
    n = len(strikes)
    expiry = np.datetime64((NOW + timedelta(days=35)).date())
    k = np.r_[strikes, strikes]
    call = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    t = np.full(2 * n, ((NOW + timedelta(days=35)).replace(hour=21) - now).total_seconds() / (365 * 86400))
    mid = np.asarray(bsm.price(call, spot, k, t, 0.0, 0.0, vol), float)
    g = bsm.greeks(np.where(call, "c", "p"), spot, k, t, 0.0, 0.0, vol)
    delta = np.asarray(g.delta, float)
    if call_delta is not None:
        delta = np.where(call, call_delta, call_delta - 1.0)
    day = np.datetime64(now.date())
    h = build_history("SPY", np.full(2 * n, day), np.full(2 * n, expiry), k, call, np.round(mid - 0.05, 2),
                      np.round(mid + 0.05, 2), spot_by_row=np.full(2 * n, spot), delta=delta)
    return h.chain(0)


def fill_order(intent, fills_at: list[float], oid: str = "o1", when: datetime = NOW) -> tuple[Order, list[Fill]]:
    """The order an intent became and its complete fill at ``fills_at`` per leg."""
    order = Order(order_id=oid, client_order_id=f"c{oid}", legs=intent.legs, quantity=intent.quantity,
                  order_type=intent.order_type, limit_price=intent.limit_price, tif=TimeInForce.DAY,
                  status=OrderStatus.FILLED, created_at=when, updated_at=when, strategy_id=intent.strategy_id,
                  tag=intent.tag, filled_quantity=intent.quantity)
    fills = [Fill(fill_id=f"{oid}-{i}", order_id=oid, instrument=leg.instrument,
                  quantity=leg.side.sign * leg.ratio * intent.quantity, price=Decimal(str(px)), ts=when, leg_index=i)
             for i, (leg, px) in enumerate(zip(intent.legs, fills_at, strict=True))]
    return order, fills


def open_straddle(s: GammaScalping, ctx: Ctx) -> tuple[object, float]:
    """Enter and fill the straddle at its limit; returns (the trade, the debit per unit)."""
    (intent,) = s.on_chain(ctx, chain())
    c, p = (float(x) for x in (chain().mid[chain().row_of(leg.symbol)] for leg in intent.legs))
    order, fills = fill_order(intent, [c, p])
    assert s.on_order(ctx, order, fills) == ()
    (trade,) = s.trades.values()
    return trade, c + p


# ---- the signal -------------------------------------------------------------------------------------------
def test_when_iv_below_forecast_then_buys_the_atm_straddle_within_the_trade_budget():
    s = strategies.create("gamma_scalping")
    ch = chain(vol=0.15)
    (intent,) = s.on_chain(Ctx(NOW, rv=0.25), ch)
    assert [(leg.side, leg.symbol) for leg in intent.legs] == [(Side.BUY, "SPY240405C00500000"),
                                                                (Side.BUY, "SPY240405P00500000")]
    assert s.last_signal["iv"] == pytest.approx(0.15, abs=0.005) and s.last_signal["forecast"] == 0.25
    natural = sum(float(ch.ask[ch.row_of(leg.symbol)]) for leg in intent.legs)
    assert intent.quantity == int(100_000 * 0.02 * 0.95 // (natural * 100))
    mid = sum(float(ch.mid[ch.row_of(leg.symbol)]) for leg in intent.legs)
    assert float(intent.limit_price) == pytest.approx(mid, abs=0.011)  # the walk starts at mid
    assert intent.tag.endswith(":open") and intent.order_type is OrderType.LIMIT


@pytest.mark.parametrize("rv", [0.10, 0.149])
def test_when_iv_at_or_above_forecast_then_no_trade(rv):
    s = strategies.create("gamma_scalping")
    assert s.on_chain(Ctx(NOW, rv=rv), chain(vol=0.15)) == []
    assert s.last_signal["edge"] < 0


def test_a_forecast_missing_at_the_first_chain_is_asked_again_within_the_session():
    """Live, the history backfill lands after the first chains: the first NaN must not last the whole session."""
    from engine.strategies.gamma_scalping import FORECAST_RETRY_S

    s = strategies.create("gamma_scalping")
    answers: list[float] = []

    class Backfilling(Ctx):
        def realized_vol(self, underlying, window=20):
            answers.append(self._rv)
            return self._rv

    assert s.on_chain(Backfilling(NOW, rv=math.nan), chain()) == []
    assert math.isnan(s.last_signal["forecast"])
    soon = NOW + timedelta(seconds=FORECAST_RETRY_S / 2)
    assert s.on_chain(Backfilling(soon, rv=0.25), chain(now=soon)) == []  # not asked again at every chain
    asked = len(answers)
    later = NOW + timedelta(seconds=FORECAST_RETRY_S)
    (intent,) = s.on_chain(Backfilling(later, rv=0.25), chain(now=later))
    assert len(answers) == asked + 2 and s.last_signal["forecast"] == 0.25 and intent.tag.endswith(":open")
    # a finite answer holds for the rest of the session: no further store query per chain
    s.on_chain(Backfilling(later + timedelta(seconds=FORECAST_RETRY_S), rv=0.10), chain(now=later))
    assert len(answers) == asked + 2


def two_expiry_chain(days: tuple[int, ...] = (24, 35), spot: float = 500.0, vol: float = 0.15):
    """ATM-ish SPY calls and puts 490..510 on each of ``days`` expiries, Black-Scholes at ``vol``."""
    strikes = np.arange(490.0, 511.0, 5.0)
    parts = []
    for d in days:
        exp = NOW + timedelta(days=d)
        for is_call in (True, False):
            t = (exp - NOW).total_seconds() / (365 * 86400)
            mid = np.asarray(bsm.price(np.full(len(strikes), is_call), spot, strikes, t, 0.0, 0.0, vol), float)
            parts.append((np.full(len(strikes), np.datetime64(exp.date())), strikes, np.full(len(strikes), is_call), mid))
    exp, k, call, mid = (np.concatenate(x) for x in zip(*parts, strict=True))
    n = len(k)
    h = build_history("SPY", np.full(n, np.datetime64(NOW.date())), exp, k, call, np.round(mid - 0.05, 2),
                      np.round(mid + 0.05, 2), spot_by_row=np.full(n, spot))
    return h.chain(0)


def test_when_the_target_expiry_is_too_dear_then_the_nearest_affordable_expiry_is_bought():
    ch = two_expiry_chain()
    natural = {d: sum(float(ch.ask[ch.row_of(f"SPY{(NOW + timedelta(days=d)):%y%m%d}{r}00500000")]) for r in "CP")
               for d in (24, 35)}
    nl = 1.05 * natural[24] * 100 / (0.02 * 0.95)  # pays the 24-day straddle, not the 35-day one
    assert natural[35] * 100 > nl * 0.02 * 0.95
    (intent,) = strategies.create("gamma_scalping").on_chain(Ctx(NOW, rv=0.25, nl=nl), ch)
    assert {leg.symbol for leg in intent.legs} == {f"SPY{(NOW + timedelta(days=24)):%y%m%d}{r}00500000" for r in "CP"}
    assert intent.quantity == 1
    # with the money for the target's straddle, the target expiry it is
    (intent,) = strategies.create("gamma_scalping").on_chain(Ctx(NOW, rv=0.25, nl=3 * nl), ch)
    assert {leg.symbol[3:9] for leg in intent.legs} == {f"{(NOW + timedelta(days=35)):%y%m%d}"}
    # with money for neither, nothing is sent
    assert strategies.create("gamma_scalping").on_chain(Ctx(NOW, rv=0.25, nl=nl / 2), ch) == []


def test_the_atm_iv_is_the_feeds_own_when_the_chain_carries_it_else_solved_from_the_mid():
    """Solving two vols costs milliseconds on every chain; the feed's implied vol is used when it has one."""
    s = strategies.create("gamma_scalping")
    ch = chain(vol=0.15)
    expiry = np.unique(ch.expiry)[0]
    assert s.atm_iv(ch, expiry) == pytest.approx(0.15, abs=0.005)  # no vendor IV: from the mids
    vendor = np.full(len(ch), 0.2222)
    with_vendor = dataclasses.replace(ch, vendor={**ch.vendor, "vendor_iv": vendor})
    assert s.atm_iv(with_vendor, expiry) == pytest.approx(0.2222)
    vendor[:] = np.nan  # a feed without a value for these rows: solved again
    assert s.atm_iv(with_vendor, expiry) == pytest.approx(0.15, abs=0.005)


def test_when_the_budget_cannot_pay_one_straddle_then_nothing_is_sent():
    s = strategies.create("gamma_scalping")
    assert s.on_chain(Ctx(NOW, rv=0.30, nl=20_000), chain(vol=0.15)) == []  # 2 % of 20,000 < one straddle


def test_strangle_buys_the_wings_nearest_the_configured_delta():
    s = strategies.create("gamma_scalping", {"structure": "strangle", "strangle_delta": 0.30})
    (intent,) = s.on_chain(Ctx(NOW), chain(vol=0.15))
    call, put = intent.legs
    assert call.instrument.is_call and not put.instrument.is_call
    assert float(call.instrument.strike) > 500 > float(put.instrument.strike)


def test_without_a_context_vol_the_strategy_waits_for_its_own_closes():
    s = strategies.create("gamma_scalping", {"rv_window": 2, "rv_long_window": 3})
    spots = [500.0, 515.0, 495.0, 512.0]
    out = []
    for i, spot in enumerate(spots):
        when = NOW + timedelta(days=i)
        out.append(s.on_chain(Ctx(when, rv=None), chain(now=when, spot=spot, vol=0.15)))
    assert out[:3] == [[], [], []]  # four closes make three returns: the long window's minimum
    assert len(out[3]) == 1 and math.isfinite(s.last_signal["forecast"]) and s.last_signal["forecast"] > 0.15


# ---- hedging ----------------------------------------------------------------------------------------------
def test_delta_outside_the_band_is_sold_back_to_flat_with_shares():
    s = strategies.create("gamma_scalping", {"max_contracts": 1})
    ctx = Ctx(NOW)
    trade, _ = open_straddle(s, ctx)
    later = NOW + timedelta(days=1)
    intents = s.on_chain(Ctx(later), chain(now=later, spot=505.0, call_delta=0.70))  # +0.4 × 100 = 40 shares
    (hedge,) = intents
    (leg,) = hedge.legs
    assert leg.instrument == Equity("SPY") and leg.side is Side.SELL and leg.open_close is OpenClose.OPEN
    assert hedge.quantity == 40 and hedge.limit_price == -Decimal("504.74")  # 505 × (1 − 0.0005), floored
    assert hedge.tag == f"{trade.tag}:hedge"
    order, fills = fill_order(hedge, [504.8], oid="h1", when=later)
    s.on_order(ctx, order, fills)
    assert trade.info["hedge_shares"] == -40 and trade.info["hedge_cash"] == pytest.approx(40 * 504.8)
    # back near the strike: the hedge is bought back (closing) and its profit is gamma P&L
    again = later + timedelta(days=1)
    (back,) = s.on_chain(Ctx(again), chain(now=again, spot=500.0, call_delta=0.50))
    assert back.legs[0].side is Side.BUY and back.legs[0].open_close is OpenClose.CLOSE and back.quantity == 40
    order, fills = fill_order(back, [500.1], oid="h2", when=again)
    s.on_order(ctx, order, fills)
    assert trade.info["hedge_shares"] == 0
    assert trade.info["gamma_pnl"] == pytest.approx(40 * (504.8 - 500.1))


def test_delta_inside_the_band_waits_until_the_time_fallback():
    s = strategies.create("gamma_scalping", {"max_contracts": 1, "hedge": {"shares": 50, "interval_s": 86400 * 3}})
    open_straddle(s, Ctx(NOW))
    day1 = NOW + timedelta(days=1)
    (first,) = s.on_chain(Ctx(day1), chain(now=day1, spot=505.0, call_delta=0.70))  # never hedged: due at once
    assert first.quantity == 40
    order, fills = fill_order(first, [504.8], oid="h1", when=day1)
    s.on_order(Ctx(day1), order, fills)
    day2 = NOW + timedelta(days=2)
    assert s.on_chain(Ctx(day2), chain(now=day2, spot=503.0, call_delta=0.60)) == []  # −20 inside 50, not due
    day5 = NOW + timedelta(days=5)
    (late,) = s.on_chain(Ctx(day5), chain(now=day5, spot=503.0, call_delta=0.60))  # the interval has passed
    assert late.quantity == 20 and late.legs[0].side is Side.BUY


def test_a_hedge_through_zero_closes_the_held_shares_then_opens_the_rest():
    s = strategies.create("gamma_scalping", {"max_contracts": 1})
    trade, _ = open_straddle(s, Ctx(NOW))
    day1 = NOW + timedelta(days=1)
    (first,) = s.on_chain(Ctx(day1), chain(now=day1, spot=505.0, call_delta=0.70))
    s.on_order(Ctx(day1), *fill_order(first, [504.8], oid="h1", when=day1))
    day2 = NOW + timedelta(days=2)
    close, open_ = s.on_chain(Ctx(day2), chain(now=day2, spot=490.0, call_delta=0.25))  # −50 − 40 held = −90
    assert (close.legs[0].side, close.legs[0].open_close, close.quantity) == (Side.BUY, OpenClose.CLOSE, 40)
    assert (open_.legs[0].side, open_.legs[0].open_close, open_.quantity) == (Side.BUY, OpenClose.OPEN, 50)
    assert trade.info["hedge_pending"] == 2
    later = s.on_chain(Ctx(day2), chain(now=day2, spot=480.0, call_delta=0.1))
    assert not [i for i in later if ":hedge" in i.tag]  # one hedge in flight at a time


# ---- exits and the P&L split --------------------------------------------------------------------------------
def test_stop_on_options_plus_hedges_closes_the_options_and_flattens_the_shares():
    s = strategies.create("gamma_scalping", {"max_contracts": 1, "stop_fraction": 0.3, "exit_rich": None})
    trade, debit = open_straddle(s, Ctx(NOW))
    day1 = NOW + timedelta(days=1)
    (hedge,) = s.on_chain(Ctx(day1), chain(now=day1, spot=505.0, call_delta=0.70))
    s.on_order(Ctx(day1), *fill_order(hedge, [505.0], oid="h1", when=day1))
    # the vol collapses: the straddle loses far more than 30 % of its debit while the spot stands still
    day2 = NOW + timedelta(days=2)
    intents = s.on_chain(Ctx(day2), chain(now=day2, spot=505.0, vol=0.03, call_delta=0.70))
    close, flatten = intents
    assert close.tag == f"{trade.tag}:close:stop" and {leg.side for leg in close.legs} == {Side.SELL}
    assert flatten.tag == f"{trade.tag}:hedge:flatten" and flatten.legs[0].side is Side.BUY
    assert flatten.quantity == 40 and flatten.legs[0].open_close is OpenClose.CLOSE
    theta = trade.info["theta_pnl"]
    assert theta < -0.3 * debit * 100
    ch = chain(now=day2, spot=505.0, vol=0.03)
    exit_px = [float(ch.bid[ch.row_of(leg.symbol)]) for leg in close.legs]
    s.on_order(Ctx(day2), *fill_order(close, exit_px, oid="c1", when=day2))
    assert trade.state == "closing"  # the shares are not flat yet
    s.on_order(Ctx(day2), *fill_order(flatten, [505.5], oid="f1", when=day2))
    assert trade.state == "closed"
    split = s.pnl_split()[trade.tag]
    assert split["theta_pnl"] == pytest.approx((sum(exit_px) - debit) * 100)
    assert split["gamma_pnl"] == pytest.approx(40 * (505.0 - 505.5))
    assert split["hedges"] == 2


def test_state_round_trip_keeps_hedge_shares_and_closes():
    s = strategies.create("gamma_scalping", {"max_contracts": 1})
    trade, _ = open_straddle(s, Ctx(NOW))
    day1 = NOW + timedelta(days=1)
    (hedge,) = s.on_chain(Ctx(day1), chain(now=day1, spot=505.0, call_delta=0.70))
    s.on_order(Ctx(day1), *fill_order(hedge, [505.0], oid="h1", when=day1))
    again = strategies.create("gamma_scalping", {"max_contracts": 1})
    again.restore(s.state())
    (restored,) = again.trades.values()
    assert restored.info["hedge_shares"] == -40 and restored.filled == trade.filled
    assert list(again.closes.values()) == list(s.closes.values())
    # a hedge in flight at the restart still blocks the next one (its report comes back by reconciliation)
    day2 = NOW + timedelta(days=2)
    (buy_back,) = s.on_chain(Ctx(day2), chain(now=day2, spot=500.0, call_delta=0.50))
    assert buy_back.tag.endswith(":hedge") and buy_back.quantity == 40
    third = strategies.create("gamma_scalping", {"max_contracts": 1})
    third.restore(s.state())
    assert not [i for i in third.on_chain(Ctx(day2), chain(now=day2, spot=498.0, call_delta=0.45))
                if ":hedge" in i.tag]


def test_bad_parameters_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="strangle_delta"):
        strategies.create("gamma_scalping", {"strangle_delta": 0.7})
    with pytest.raises(ValueError, match="hedge"):
        strategies.create("gamma_scalping", {"hedge": {"shares": 0}})


# ---- a seeded backtest ---------------------------------------------------------------------------------------
def test_seeded_backtest_trades_hedges_with_shares_and_reconciles(tmp_path):
    history = simulated_history("SPY", 0.6, 7, max_strikes=40, cache_dir=tmp_path)
    config = BacktestConfig(strategy="gamma_scalping", symbol="SPY", years=0.6, seed=7, sim_max_strikes=40)
    bt = Backtest(config, history)
    result = bt.run()
    assert result.status == "completed", result.error
    assert result.reconciliation()["difference"] == 0
    assert len(result.trades) >= 1
    share_orders = [o for o in result.orders if ":hedge" in o["tag"] and o["status"] == "filled"]
    assert share_orders and all(" SPY" in o["legs"] and "SPY2" not in o["legs"] for o in share_orders)
    entries = [o for o in result.orders if o["tag"].endswith(":open")]
    denied = [o for o in result.orders if o["status"] == "denied"]
    assert len(denied) < 0.1 * len(entries) + 1e-9
    split = bt.strategy.pnl_split()
    closed = [t for t in result.trades if not t.is_open]
    for t in closed:  # the split adds up to the trade's gross P&L in the ledger
        parts = split[t.tag]
        assert parts["gamma_pnl"] + parts["theta_pnl"] == pytest.approx(float(t.gross_pnl), abs=0.02)
