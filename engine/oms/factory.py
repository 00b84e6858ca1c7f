"""OrderFactory: turns an ``OrderIntent`` into an ``Order`` with typed ids, a client order id, a Decimal price on
the contract's tick, and validated legs.

- ``order_id`` (:data:`OrderId`, ``"ord-…"``) is ours; ``client_order_id`` (:data:`ClientOrderId`, ``"od…"``,
  ≤ 24 characters) is what the broker sees. Both are unique (random 80 bits) and persisted with the order's
  first state, so a resubmission reuses the same client order id and the broker can dedupe it.
- Limit prices are rounded to the tick toward the *passive* side (down, with the + debit / − credit
  convention: pay less or receive more), never toward a worse price.
- A bad intent raises :class:`OrderValidationError` (a ``ValueError``) naming the problem; the OMS turns it into
  an ``OrderDenied`` event.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import NewType

from engine.brokers.base import COMBO_TICK
from engine.model import Index, Instrument, Leg, Option, Order, OrderIntent, OrderStatus, OrderType

OrderId = NewType("OrderId", str)
ClientOrderId = NewType("ClientOrderId", str)

MAX_LEGS = 4


class OrderValidationError(ValueError):
    """The intent cannot become an order; the message says why."""


def new_order_id() -> OrderId:
    return OrderId(f"ord-{secrets.token_hex(10)}")


def new_client_order_id() -> ClientOrderId:
    return ClientOrderId(f"od{secrets.token_hex(10)}")


def floor_to_tick(price: Decimal, tick: Decimal) -> Decimal:
    """Round down to a multiple of ``tick`` (toward the passive side for the + debit convention)."""
    if tick <= 0:
        raise OrderValidationError(f"tick size must be positive, got {tick}")
    return ((price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick).quantize(tick)


def validate_intent(intent: OrderIntent) -> None:
    """Raise :class:`OrderValidationError` for anything that must never reach the risk engine."""
    if not intent.legs:
        raise OrderValidationError("an order needs at least one leg")
    if len(intent.legs) > MAX_LEGS:
        raise OrderValidationError(f"an order may have at most {MAX_LEGS} legs, got {len(intent.legs)}")
    if not isinstance(intent.quantity, int) or isinstance(intent.quantity, bool) or intent.quantity <= 0:
        raise OrderValidationError(f"quantity must be a positive whole number, got {intent.quantity!r}")
    keys = [leg.symbol for leg in intent.legs]
    if len(set(keys)) != len(keys):
        raise OrderValidationError(f"the same instrument appears in two legs: {keys}")
    for leg in intent.legs:
        if isinstance(leg.instrument, Index):
            raise OrderValidationError(f"{leg.symbol} is an index and cannot be traded itself")
    unds = {(leg.instrument.underlying if isinstance(leg.instrument, Option) else leg.instrument.symbol)
            for leg in intent.legs}
    if len(unds) > 1:
        raise OrderValidationError(f"all legs must share one underlying, got {sorted(unds)}")
    if len(intent.legs) > 1:
        g = 0
        for leg in intent.legs:
            g = math.gcd(g, leg.ratio)
        if g > 1:
            raise OrderValidationError(f"leg ratios {[leg.ratio for leg in intent.legs]} share a factor {g}: "
                                       "reduce them and raise the quantity instead")
    if intent.order_type is OrderType.LIMIT:
        if intent.limit_price is None:
            raise OrderValidationError("a limit order needs a limit price")
        try:
            price = Decimal(intent.limit_price)
        except (InvalidOperation, TypeError, ValueError):
            raise OrderValidationError(f"limit price {intent.limit_price!r} is not a number") from None
        if not price.is_finite():
            raise OrderValidationError(f"limit price {intent.limit_price!r} is not finite")
        if len(intent.legs) == 1:
            side = intent.legs[0].side
            if price == 0 or (price > 0) != (side.sign > 0):
                raise OrderValidationError(
                    f"single-leg {side.value} limit price must be {'positive (a debit)' if side.sign > 0 else 'negative (a credit)'}, got {price}")
    elif intent.limit_price is not None:
        raise OrderValidationError("a market order must not carry a limit price")


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

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now

    def create(self, intent: OrderIntent, *, broker: str = "paper", account_id: str = "",
               tick_for: Callable[[Instrument, Decimal], Decimal] | None = None) -> Order:
        """``tick_for(instrument, price)``: the venue's increment for a single-leg price (default: the
        instrument's tick); multi-leg net prices use the $0.01 complex-order increment."""
        validate_intent(intent)
        price: Decimal | None = None
        if intent.order_type is OrderType.LIMIT:
            raw = Decimal(intent.limit_price)  # type: ignore[arg-type]
            tick = venue_tick(intent.legs, raw, tick_for)
            price = floor_to_tick(raw, tick)
            if len(intent.legs) == 1 and price == 0:
                raise OrderValidationError(f"limit price {intent.limit_price} rounds to {price} on tick {tick}")
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
        )

    def rejected_intent(self, intent: OrderIntent, reason: str, *, broker: str = "paper",
                        account_id: str = "") -> Order:
        """An order record for an intent that failed validation (so the denial is visible and stored)."""
        ts = self.now()
        price = intent.limit_price if isinstance(intent.limit_price, Decimal) else None
        qty = intent.quantity if isinstance(intent.quantity, int) else 0
        return Order(
            order_id=new_order_id(), client_order_id=intent.client_order_id or new_client_order_id(),
            legs=tuple(intent.legs), quantity=qty, order_type=intent.order_type, limit_price=price, tif=intent.tif,
            status=OrderStatus.DENIED, created_at=ts, updated_at=ts, source=intent.source,
            strategy_id=intent.strategy_id, tag=intent.tag, broker=broker, account_id=account_id, reason=reason,
        )
