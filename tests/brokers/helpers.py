"""Order builders for the broker tests."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

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


def tastytrade_connection(server: Any, bus: Any) -> Any:
    """A connection to the loopback tastytrade ``server`` (credentials from the environment mapping, fast
    reconnects, a breaker that tolerates five failures): what the complex-order and native-bracket tests use."""
    from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
    from engine.brokers.tastytrade import TastytradeConnection
    from engine.credentials import CredentialStore
    from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN

    creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                               "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
    return TastytradeConnection(
        TastytradeConfig(api_url=server.api_url, streamer_url=server.streamer_url, call_timeout_s=3.0),
        credentials=creds, bus=bus, reconnect=ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1),
        breaker=CircuitBreakerConfig(failure_threshold=5, reset_timeout_s=0.3), env={})
