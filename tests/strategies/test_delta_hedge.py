"""delta_hedge: the overlay that keeps the portfolio's (or one strategy's) delta in a band with shares (issue 16).

Positions are hand built and their delta computed by the real risk components (a quoted MarketView and
``leg_risk``, through :func:`engine.strategies.delta_hedge.delta_of_positions`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.model import (
    Equity,
    Fill,
    OpenClose,
    Option,
    OptionChain,
    Order,
    OrderStatus,
    Position,
    Side,
    TimeInForce,
)
from engine.pricing import bsm
from engine.risk.market_view import MarketView
from engine.strategies.base import SizingLimits
from engine.strategies.delta_hedge import DeltaHedge, delta_of_positions

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EXPIRY = date(2026, 4, 17)
SPOT = 600.0
VOL = 0.20
SPY = Equity("SPY")


def call(k: float = 600) -> Option:
    return Option("SPY", EXPIRY, Decimal(str(k)), "C")


def put(k: float = 600) -> Option:
    return Option("SPY", EXPIRY, Decimal(str(k)), "P")


def quoted(options: list[Option], spot: float = SPOT) -> MarketView:
    market = MarketView(rate=0.0)
    market.update_spot("SPY", spot)
    for o in options:
        t = o.time_to_expiry(NOW)
        px = float(bsm.price(o.is_call, spot, float(o.strike), t, 0.0, 0.0, VOL))
        market.update_quote(o.key, round(px - 0.05, 2), round(px + 0.05, 2))
    return market


def bsm_delta(o: Option, spot: float = SPOT) -> float:
    g = bsm.greeks("c" if o.is_call else "p", spot, float(o.strike), o.time_to_expiry(NOW), 0.0, 0.0, VOL)
    return float(np.asarray(g.delta))


class Ctx:
    """A context whose portfolio delta comes from hand-built positions on a real MarketView."""

    def __init__(self, positions: list[Position], market: MarketView, now: datetime = NOW) -> None:
        self.positions, self.market, self._now = positions, market, now

    def now(self):
        return self._now

    def net_liquidation(self):
        return 100_000.0

    def iv_rank(self, underlying):
        return 0.5

    def regime(self, underlying):
        return "normal"

    def sizing(self):
        return SizingLimits()

    def portfolio_delta(self, underlying, strategy_id=None):
        return delta_of_positions(self.positions, self.market, self._now, underlying, strategy_id)


def snapshot(spot: float = SPOT) -> OptionChain:
    o = call()
    return OptionChain.build("SPY", spot, NOW, [o], bid=np.array([1.0]), ask=np.array([1.1]))


def filled(intent, price: float, oid: str) -> tuple[Order, list[Fill]]:
    order = Order(order_id=oid, client_order_id=f"c{oid}", legs=intent.legs, quantity=intent.quantity,
                  order_type=intent.order_type, limit_price=intent.limit_price, tif=TimeInForce.DAY,
                  status=OrderStatus.FILLED, created_at=NOW, updated_at=NOW, strategy_id=intent.strategy_id,
                  tag=intent.tag, filled_quantity=intent.quantity)
    leg = intent.legs[0]
    return order, [Fill(fill_id=f"f{oid}", order_id=oid, instrument=SPY, quantity=leg.side.sign * intent.quantity,
                        price=Decimal(str(price)), ts=NOW)]


def test_delta_of_positions_counts_options_by_bsm_delta_and_shares_one_each():
    c, p = call(), put(590)
    market = quoted([c, p])
    positions = [Position(c, 2, Decimal("12")), Position(p, -1, Decimal("8")), Position(SPY, -50, Decimal(600)),
                 Position(Equity("QQQ"), 100, Decimal(500))]
    expected = 200 * bsm_delta(c) - 100 * bsm_delta(p) - 50
    assert delta_of_positions(positions, market, NOW, "SPY") == pytest.approx(expected, rel=1e-3)
    tagged = [Position(c, 2, Decimal("12"), strategy_id="gs"), Position(SPY, 30, Decimal(600), strategy_id="other")]
    assert delta_of_positions(tagged, market, NOW, "SPY", "gs") == pytest.approx(200 * bsm_delta(c), rel=1e-3)
    assert delta_of_positions([Position(call(650), 1, Decimal(1))], market, NOW, "SPY") != \
        delta_of_positions([Position(call(650), 1, Decimal(1))], market, NOW, "SPY")  # no quote: NaN


def test_portfolio_delta_beyond_the_band_is_sold_to_target_with_shares():
    c = call()
    ctx = Ctx([Position(c, 3, Decimal("12"))], quoted([c]))
    hedge = DeltaHedge({"band_shares": 50})
    (intent,) = hedge.on_chain(ctx, snapshot())
    expected = round(300 * bsm_delta(c))
    (leg,) = intent.legs
    assert leg.instrument == SPY and leg.side is Side.SELL and leg.open_close is OpenClose.OPEN
    assert intent.quantity == expected and intent.limit_price == -Decimal("599.70")  # 600 × (1 − 0.0005)
    assert intent.strategy_id == "delta_hedge" and intent.tag.startswith("delta_hedge-")
    # filled: the account now holds the shares too, and its delta is back inside the band
    hedge.on_order(ctx, *filled(intent, 599.9, "h1"))
    assert hedge.held == -expected and hedge.pending == 0
    ctx.positions.append(Position(SPY, -expected, Decimal("599.9")))
    assert hedge.on_chain(ctx, snapshot()) == []


def test_delta_inside_the_band_is_left_alone_and_a_missing_delta_does_nothing():
    c = call()
    hedge = DeltaHedge({"band_shares": 60})
    assert hedge.on_chain(Ctx([Position(c, 1, Decimal("12"))], quoted([c])), snapshot()) == []  # ~53 shares
    assert hedge.on_chain(Ctx([Position(call(650), 5, Decimal(1))], quoted([c])), snapshot()) == []  # unquoted


def test_watching_one_strategy_adds_the_overlays_own_shares_and_crosses_zero_in_two_orders():
    c, p = call(), put()
    market = quoted([c, p])
    ctx = Ctx([Position(c, 2, Decimal("12"), strategy_id="gs"), Position(SPY, 500, Decimal(600))], market)
    hedge = DeltaHedge({"strategy": "gs", "band_shares": 20})
    (first,) = hedge.on_chain(ctx, snapshot())  # the other 500 shares are not gs's: only its calls count
    sold = round(200 * bsm_delta(c))
    assert first.quantity == sold and first.legs[0].side is Side.SELL
    hedge.on_order(ctx, *filled(first, 599.9, "h1"))
    assert hedge.on_chain(ctx, snapshot()) == []  # gs's delta + the overlay's −sold ≈ 0
    # gs turns short delta: closing the overlay's short shares first, then going long the rest
    ctx.positions = [Position(p, 4, Decimal("11"), strategy_id="gs")]
    close, open_ = hedge.on_chain(ctx, snapshot())
    watched = 400 * bsm_delta(p) - sold
    assert (close.legs[0].side, close.legs[0].open_close, close.quantity) == (Side.BUY, OpenClose.CLOSE, sold)
    assert (open_.legs[0].side, open_.legs[0].open_close) == (Side.BUY, OpenClose.OPEN)
    assert close.quantity + open_.quantity == -round(watched)
    assert close.limit_price == Decimal("600.30") and hedge.pending == 2


def test_hedges_wait_for_the_one_in_flight_and_for_the_minimum_interval():
    c = call()
    ctx = Ctx([Position(c, 3, Decimal("12"))], quoted([c]))
    hedge = DeltaHedge({"band_shares": 10, "min_interval_s": 3600})
    (intent,) = hedge.on_chain(ctx, snapshot())
    assert hedge.on_chain(ctx, snapshot()) == []  # in flight
    order, _ = filled(intent, 599.9, "h1")
    hedge.on_order(ctx, order.evolve(status=OrderStatus.EXPIRED, filled_quantity=0, updated_at=NOW), ())
    assert hedge.pending == 0 and hedge.held == 0
    assert hedge.on_chain(ctx, snapshot()) == []  # too soon after the last one
    ctx._now = NOW + timedelta(hours=2)
    assert len(hedge.on_chain(ctx, snapshot())) == 1


def test_a_hedge_that_never_reports_stops_blocking_after_the_timeout_and_survives_a_restart():
    c = call()
    ctx = Ctx([Position(c, 3, Decimal("12"))], quoted([c]))
    hedge = DeltaHedge({"band_shares": 10, "pending_timeout_s": 600})
    assert len(hedge.on_chain(ctx, snapshot())) == 1  # sent; no report ever comes back
    again = strategies.create("delta_hedge", {"band_shares": 10, "pending_timeout_s": 600})
    again.restore(hedge.state())
    assert again.pending == 1 and again.on_chain(ctx, snapshot()) == []  # still in flight after the restart
    ctx._now = NOW + timedelta(minutes=11)
    assert len(again.on_chain(ctx, snapshot())) == 1


def test_other_orders_are_ignored_and_state_survives_a_restart():
    c = call()
    ctx = Ctx([Position(c, 3, Decimal("12"))], quoted([c]))
    hedge = DeltaHedge()
    (intent,) = hedge.on_chain(ctx, snapshot())
    hedge.on_order(ctx, *filled(intent, 599.9, "h1"))
    stranger, fills = filled(intent, 1.0, "x1")
    hedge.on_order(ctx, stranger.evolve(tag="gamma_scalping-00001:hedge", updated_at=NOW), fills)
    assert hedge.held == -intent.quantity
    again = strategies.create("delta_hedge")
    again.restore(hedge.state())
    assert again.held == hedge.held and again.last_hedge == hedge.last_hedge


def test_a_context_without_portfolio_delta_never_trades():
    class Blind(Ctx):
        portfolio_delta = None

    hedge = DeltaHedge({"band_shares": 1})
    assert hedge.on_chain(Blind([Position(call(), 10, Decimal(1))], quoted([call()])), snapshot()) == []


def test_bad_band_is_refused():
    with pytest.raises(ValueError, match="band_shares"):
        strategies.create("delta_hedge", {"band_shares": 0})
