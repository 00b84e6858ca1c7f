"""OrderFactory: turns an ``OrderIntent`` into an ``Order`` with typed ids, a client order id, a Decimal price on
the contract's tick, and validated legs.

- ``order_id`` (:data:`OrderId`, ``"ord-…"``) is ours; ``client_order_id`` (:data:`ClientOrderId`, ``"od…"``,
  ≤ 24 characters) is what the broker sees. Both are unique (random 80 bits) and persisted with the order's
  first state, so a resubmission reuses the same client order id and the broker can dedupe it.
- Limit prices are rounded to the tick toward the *passive* side (down, with the + debit / − credit
  convention: pay less or receive more), never toward a worse price.
- A bad intent raises :class:`OrderValidationError` (a ``ValueError``) with the problem's ``code`` and a message
  naming it (rules in :mod:`engine.oms.validation`, which never raises on any input); the OMS turns it into an
  ``OrderDenied`` event.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, NewType

from engine.brokers.base import COMBO_TICK
from engine.model import (
    Equity,
    Instrument,
    Leg,
    Option,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
    round_to_tick,
)
from engine.oms.validation import (
    MAX_CLIENT_ORDER_ID,
    MAX_LEGS,
    MAX_LIMIT_PRICE,
    MAX_QUANTITY,
    intent_problem,
    parse_price,
)

OrderId = NewType("OrderId", str)
ClientOrderId = NewType("ClientOrderId", str)

__all__ = ["MAX_LEGS", "MAX_LIMIT_PRICE", "MAX_QUANTITY", "ClientOrderId", "OrderFactory", "OrderId",
           "OrderValidationError", "floor_to_tick", "new_client_order_id", "new_order_id", "validate_intent",
           "venue_tick"]


class OrderValidationError(ValueError):
    """The intent cannot become an order; the message says why, ``code`` names the problem."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def new_order_id() -> OrderId:
    return OrderId(f"ord-{secrets.token_hex(10)}")


def new_client_order_id() -> ClientOrderId:
    return ClientOrderId(f"od{secrets.token_hex(10)}")


def floor_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """Round down to a multiple of ``tick`` (toward the passive side for the + debit convention)."""
    if tick <= 0:
        raise OrderValidationError(f"tick size must be positive, got {tick}", "bad_tick")
    return ((price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick).quantize(tick)


def validate_intent(intent: OrderIntent, now: datetime | None = None) -> None:
    """Raise :class:`OrderValidationError` for anything that must never reach the risk engine
    (see :mod:`engine.oms.validation`; ``now`` enables the expired-contract check)."""
    problem = intent_problem(intent, now)
    if problem is not None:
        raise OrderValidationError(problem.message, problem.code)


def venue_tick(legs: tuple[Leg, ...] | list[Leg], price: Decimal,
               tick_for: Callable[[Instrument, Decimal], Decimal] | None = None) -> Decimal:
    """The increment a limit ``price`` must sit on: the venue's schedule for a single leg (default the
    instrument's tick), the $0.01 complex-order increment for a combo's net price."""
    if len(legs) > 1:
        return COMBO_TICK
    inst = legs[0].instrument
    return tick_for(inst, abs(price)) if tick_for is not None else inst.tick_size


class OrderFactory:
    """Creates orders; ``now`` gives the timestamps (engine clock)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now

    def create(self, intent: OrderIntent, *, broker: str = "paper", account_id: str = "",
               tick_for: Callable[[Instrument, Decimal], Decimal] | None = None) -> Order:
        """``tick_for(instrument, price)``: the venue's increment for a single-leg price (default: the
        instrument's tick); multi-leg net prices use the $0.01 complex-order increment."""
        validate_intent(intent, self.now())
        price: Decimal | None = None
        if intent.order_type.has_limit:
            raw, _ = parse_price(intent.limit_price)  # validated: finite and within bounds
            assert raw is not None
            tick = venue_tick(intent.legs, raw, tick_for)
            price = floor_to_tick(raw, tick)
            if len(intent.legs) == 1 and price == 0:
                raise OrderValidationError(f"limit price {intent.limit_price} rounds to {price} on tick {tick}",
                                           "price_rounds_to_zero")
        stop: Decimal | None = None
        if intent.order_type.is_stop:
            raw, _ = parse_price(intent.stop_price)  # validated: finite, within bounds, signed like the side
            assert raw is not None
            tick = venue_tick(intent.legs, raw, tick_for)
            # a trigger has no passive side: the nearest tick is where the venue would put it
            stop = round_to_tick(raw, tick)
            if len(intent.legs) == 1 and stop == 0:
                raise OrderValidationError(f"stop price {intent.stop_price} rounds to {stop} on tick {tick}",
                                           "price_rounds_to_zero")
        ts = self.now()
        return Order(
            order_id=new_order_id(),
            client_order_id=intent.client_order_id or new_client_order_id(),
            legs=tuple(intent.legs),
            quantity=intent.quantity,
            order_type=intent.order_type,
            limit_price=price,
            tif=intent.tif,
            status=OrderStatus.PENDING_APPROVAL,
            created_at=ts,
            updated_at=ts,
            source=intent.source,
            strategy_id=intent.strategy_id,
            tag=intent.tag,
            broker=broker,
            account_id=account_id,
            stop_price=stop,
        )

    def rejected_intent(self, intent: Any, reason: str, *, broker: str = "paper", account_id: str = "") -> Order:
        """An order record for an intent that failed validation (so the denial is visible and stored).

        ``intent`` may be anything (that is why it was denied): only fields that are safe to store are kept —
        real legs, a quantity and price within bounds, text where text belongs."""
        ts = self.now()

        def text(value: Any, default: str = "", limit: int = 200) -> str:
            return value[:limit] if isinstance(value, str) else default

        legs_in = getattr(intent, "legs", ())
        legs = tuple(leg for leg in legs_in if isinstance(leg, Leg) and isinstance(leg.instrument, Option | Equity)
                     and isinstance(leg.ratio, int) and 0 < leg.ratio <= MAX_QUANTITY) \
            if isinstance(legs_in, tuple | list) else ()
        qty = getattr(intent, "quantity", 0)
        qty = qty if isinstance(qty, int) and not isinstance(qty, bool) and 0 <= qty <= MAX_QUANTITY else 0
        price, _ = parse_price(getattr(intent, "limit_price", None))
        stop, _ = parse_price(getattr(intent, "stop_price", None))
        order_type = getattr(intent, "order_type", OrderType.LIMIT)
        tif = getattr(intent, "tif", TimeInForce.DAY)
        coid = getattr(intent, "client_order_id", None)
        coid = coid if isinstance(coid, str) and 0 < len(coid) <= MAX_CLIENT_ORDER_ID else new_client_order_id()
        strategy_id = getattr(intent, "strategy_id", None)
        return Order(
            order_id=new_order_id(), client_order_id=coid, legs=legs, quantity=qty,
            order_type=order_type if isinstance(order_type, OrderType) else OrderType.LIMIT,
            limit_price=price, tif=tif if isinstance(tif, TimeInForce) else TimeInForce.DAY,
            status=OrderStatus.DENIED, created_at=ts, updated_at=ts,
            source=text(getattr(intent, "source", ""), "unknown") or "unknown",
            strategy_id=strategy_id if isinstance(strategy_id, str) else None,
            tag=text(getattr(intent, "tag", "")), broker=broker, account_id=account_id, reason=reason,
            stop_price=stop,
        )
