"""Test kit for the risk and OMS tests: a deterministic market and account, order builders.

Real components only (MarketView, PortfolioState, RiskEngine, Store); nothing of ours is mocked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np

from engine.model import (
    AccountSnapshot,
    Equity,
    Leg,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from engine.pricing import bsm
from engine.risk.config import RiskConfig
from engine.risk.engine import RiskEngine
from engine.risk.market_view import MarketView
from engine.risk.state import PortfolioState, TradingState

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
EXPIRY = date(2026, 2, 20)
SPOT = 600.0
VOL = 0.20
RATE = 0.04


def opt(strike: float, right: str, underlying: str = "SPY", expiry: date = EXPIRY) -> Option:
    return Option(underlying, expiry, Decimal(str(strike)), right)


def quote_market(market: MarketView, options: list[Option], spot: float = SPOT, vol: float = VOL,
                 half_spread: float = 0.05) -> None:
    """Quote each option at its BSM value ± half_spread (so the implied vol round-trips to ``vol``)."""
    by_und: dict[str, float] = {}
    for o in options:
        by_und.setdefault(o.underlying, spot)
    for u, s in by_und.items():
        market.update_spot(u, s)
    if not options:
        return
    calls = np.array([o.is_call for o in options])
    k = np.array([float(o.strike) for o in options])
    t = np.array([o.time_to_expiry(NOW) for o in options])
    s = np.array([by_und[o.underlying] for o in options])
    px = bsm.price(calls, s, k, t, RATE, 0.0, vol)
    for o, p in zip(options, np.asarray(px), strict=True):
        market.update_quote(o.key, round(max(p - half_spread, 0.01), 2), round(p + half_spread, 2))


def make_order(legs: list[tuple[Option | Equity, Side, int]], quantity: int = 1, price: str | None = None,
               *, oid: str = "o1", source: str = "gui", order_type: OrderType = OrderType.LIMIT,
               status: OrderStatus = OrderStatus.PENDING_APPROVAL) -> Order:
    return Order(
        order_id=oid, client_order_id=f"c-{oid}", legs=tuple(Leg(i, s, r) for i, s, r in legs), quantity=quantity,
        order_type=order_type, limit_price=None if price is None else Decimal(price), tif=TimeInForce.DAY,
        status=status, created_at=NOW, updated_at=NOW, source=source)


class Desk:
    """A risk engine on a quoted SPY market with a $100,000 account."""

    def __init__(self, config: RiskConfig | None = None, net_liq: float = 100_000.0, level: float = 50.0) -> None:
        self.clock = [0.0]
        self.state = TradingState.ACTIVE
        self.market = MarketView(rate=RATE)
        self.portfolio = PortfolioState()
        self.set_account(net_liq)
        self.risk = RiskEngine(config or RiskConfig(), market=self.market, portfolio=self.portfolio,
                               trading_state=lambda: self.state, now=lambda: NOW,
                               monotonic=lambda: self.clock[0], level=level)
        self.p590, self.p580 = opt(590, "P"), opt(580, "P")
        self.c610, self.c620 = opt(610, "C"), opt(620, "C")
        self.c600, self.p600 = opt(600, "C"), opt(600, "P")
        self.options = [self.p590, self.p580, self.c610, self.c620, self.c600, self.p600]
        quote_market(self.market, self.options)

    def set_account(self, net_liq: float, day_pnl: float = 0.0, buying_power: float | None = None) -> None:
        nl = Decimal(str(net_liq))
        bp = nl if buying_power is None else Decimal(str(buying_power))
        self.portfolio.load(list(self.portfolio.positions.values()),
                            AccountSnapshot("ACC1", nl, nl, bp, day_pnl=Decimal(str(day_pnl))))

    def hold(self, inst: Option | Equity, qty: int, avg: str = "1.00") -> None:
        self.portfolio.apply_position(Position(inst, qty, Decimal(avg)))

    def mid(self, inst: Option | Equity) -> float:
        return self.market.mid(inst)

    def put_spread(self, qty: int = 1, oid: str = "o1", credit: float | None = None, **kw: object) -> Order:
        """Short 590 / long 580 put credit spread at mid (or ``credit``)."""
        mid = self.mid(self.p590) - self.mid(self.p580)
        px = -(credit if credit is not None else round(mid, 2))
        return make_order([(self.p590, Side.SELL, 1), (self.p580, Side.BUY, 1)], qty, f"{px:.2f}", oid=oid,
                          **kw)  # type: ignore[arg-type]

    def long_call(self, qty: int = 1, oid: str = "o1", price: float | None = None, **kw: object) -> Order:
        px = price if price is not None else round(self.mid(self.c610), 2)
        return make_order([(self.c610, Side.BUY, 1)], qty, f"{px:.2f}", oid=oid, **kw)  # type: ignore[arg-type]
