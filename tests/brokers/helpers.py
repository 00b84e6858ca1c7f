"""Order builders for the broker tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

from engine.model import Leg, OpenClose, Option, Order, OrderStatus, OrderType, Right, Side, TimeInForce

_ids = itertools.count(1)


def put_spread(underlying: str, expiry: date, short_k: int, long_k: int, price: str, qty: int = 1,
               account: str = "") -> Order:
    """Short ``short_k`` put, long ``long_k`` put: a credit spread when short_k > long_k (price negative)."""
    n = next(_ids)
    legs = (Leg(Option(underlying, expiry, Decimal(short_k), Right.PUT), Side.SELL, 1, OpenClose.OPEN),
            Leg(Option(underlying, expiry, Decimal(long_k), Right.PUT), Side.BUY, 1, OpenClose.OPEN))
    now = datetime.now(UTC)
    return Order(order_id=f"o{n}", client_order_id=f"coid-{n}", legs=legs, quantity=qty,
                 order_type=OrderType.LIMIT, limit_price=Decimal(price), tif=TimeInForce.DAY,
                 status=OrderStatus.APPROVED, created_at=now, updated_at=now, account_id=account)


def single(underlying: str, expiry: date, strike: int, right: Right, side: Side, price: str, qty: int = 1,
           account: str = "") -> Order:
    n = next(_ids)
    now = datetime.now(UTC)
    return Order(order_id=f"s{n}", client_order_id=f"coid-s{n}",
                 legs=(Leg(Option(underlying, expiry, Decimal(strike), right), side, 1, OpenClose.OPEN),),
                 quantity=qty, order_type=OrderType.LIMIT, limit_price=Decimal(price), tif=TimeInForce.DAY,
                 status=OrderStatus.APPROVED, created_at=now, updated_at=now, account_id=account)


def share_order(legs: tuple[Leg, ...], qty: int, price: str, account: str) -> Order:
    """A limit order of any legs (shares, options or both): the share-leg tests' orders."""
    n = next(_ids)
    now = datetime.now(UTC)
    return Order(order_id=f"sh{n}", client_order_id=f"coid-sh{n}", legs=legs, quantity=qty,
                 order_type=OrderType.LIMIT, limit_price=Decimal(price), tif=TimeInForce.DAY,
                 status=OrderStatus.APPROVED, created_at=now, updated_at=now, account_id=account)
