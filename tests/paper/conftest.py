"""A hand-made market for the paper-exchange tests: every quote is chosen, so every fill is predictable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import count

import numpy as np
import pytest

from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import (
    ExerciseStyle,
    Leg,
    Option,
    OptionChain,
    Order,
    OrderStatus,
    OrderType,
    Settlement,
    Side,
    TimeInForce,
)

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
EXP = date(2026, 12, 18)
STRIKES = (95, 100, 105, 110)
_ids = count(1)


def opt(strike: float, right: str = "C", root: str = "XYZ", expiry: date = EXP, **kw) -> Option:
    return Option(root=root, expiry=expiry, strike=Decimal(str(strike)), right=right,
                  underlying=kw.pop("underlying", root), **kw)


def xyz_chain(quotes: dict[tuple[float, str], tuple[float, float]] | None = None, *, spot: float = 100.0,
              size: float = 50.0, ts: datetime = NOW) -> OptionChain:
    """XYZ options expiring EXP; default quotes are plausible, ``quotes`` overrides (strike, 'C'/'P') → (bid, ask)."""
    options, bid, ask = [], [], []
    for k in STRIKES:
        for right in ("C", "P"):
            intrinsic = max(spot - k, 0) if right == "C" else max(k - spot, 0)
            b, a = quotes.get((k, right), (None, None)) if quotes else (None, None)
            if b is None:
                b, a = round(intrinsic + 1.50, 2), round(intrinsic + 1.60, 2)
            options.append(opt(k, right))
            bid.append(b)
            ask.append(a)
    n = len(options)
    return OptionChain.build("XYZ", spot, ts, options, bid=np.array(bid), ask=np.array(ask),
                             bid_size=np.full(n, size), ask_size=np.full(n, size), open_interest=np.full(n, 100.0))


def order(legs: list[tuple[Option, str, int]] | list[Leg], qty: int = 1, price: str | None = "1.60", *,
          kind: OrderType = OrderType.LIMIT, tif: TimeInForce = TimeInForce.DAY, now: datetime = NOW) -> Order:
    n = next(_ids)
    built = tuple(x if isinstance(x, Leg) else Leg(x[0], Side.BUY if x[1] == "buy" else Side.SELL, x[2])
                  for x in legs)
    return Order(order_id=f"O{n}", client_order_id=f"C{n}", legs=built, quantity=qty, order_type=kind,
                 limit_price=None if price is None else Decimal(price), tif=tif, status=OrderStatus.SUBMITTED,
                 created_at=now, updated_at=now)


@dataclass
class Market:
    exchange: PaperExchange

    def quotes(self, quotes=None, **kw):
        return self.exchange.on_chain(xyz_chain(quotes, **kw), kw.get("ts", NOW))


@pytest.fixture
def exchange() -> PaperExchange:
    ex = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(xyz_chain(), NOW)
    ex.on_underlying("XYZ", 100.0, NOW, 99.99, 100.01)
    return ex


@pytest.fixture
def market(exchange) -> Market:
    return Market(exchange)


def spx_chain(spot: float, ts: datetime, expiry: date) -> OptionChain:
    """SPX AM monthly and SPXW PM contracts on one expiry date (one chain, like the simulator's)."""
    am = [Option(root="SPX", expiry=expiry, strike=Decimal(k), right=r, underlying="SPX",
                 style=ExerciseStyle.EUROPEAN, settlement=Settlement.CASH_AM) for k in (6000, 6100) for r in "CP"]
    pm = [Option(root="SPXW", expiry=expiry, strike=Decimal(k), right=r, underlying="SPX",
                 style=ExerciseStyle.EUROPEAN, settlement=Settlement.CASH_PM) for k in (6000, 6100) for r in "CP"]
    options = am + pm
    n = len(options)
    chain = OptionChain.build("SPX", spot, ts, options, bid=np.full(n, 20.0), ask=np.full(n, 20.5),
                              bid_size=np.full(n, 10.0), ask_size=np.full(n, 10.0))
    from dataclasses import replace
    return replace(chain, settlement=Settlement.CASH_PM, style=ExerciseStyle.EUROPEAN)
