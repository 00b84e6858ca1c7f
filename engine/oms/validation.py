"""Validation of what enters the order path: intents (from anyone) and orders (from the factory).

Every problem has a *code* (stable, for tests, logs and the GUI) and a message that names the offending value.
The functions never raise on any input — a ``None`` intent, a string leg, a quantity of ``10**30`` or a price
of ``1e30`` are answers, not exceptions — because the order path turns the answer into an ``OrderDenied``
event, and an exception would instead escape to whoever sent the order (issue 14, finding 13).

The bounds are fat-finger and storage guards, not risk limits (those are the risk engine's): a quantity or a
price beyond them cannot be stored in SQLite's 64-bit integers or quantized to a tick without overflowing
the decimal context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.model import Equity, Index, Leg, OpenClose, Option, OrderIntent, OrderType, Side, TimeInForce

MAX_LEGS = 4
#: largest order quantity × leg ratio (contracts or shares per leg)
MAX_QUANTITY = 1_000_000
#: largest |limit price| per unit of the combo, dollars
MAX_LIMIT_PRICE = 1_000_000
MAX_CLIENT_ORDER_ID = 64
_TEXT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an intent or an order cannot go on: ``code`` for machines, ``message`` for people."""

    code: str
    message: str


def _legs_problem(legs: Any, now: datetime | None) -> Problem | None:
    if legs is None:
        return Problem("legs_missing", "an order needs legs, got none")
    if not isinstance(legs, tuple | list):
        return Problem("legs_missing", f"legs must be a sequence of Leg, got {type(legs).__name__}")
    if not legs:
        return Problem("legs_missing", "an order needs at least one leg")
    if len(legs) > MAX_LEGS:
        return Problem("too_many_legs", f"an order may have at most {MAX_LEGS} legs, got {len(legs)}")
    for i, leg in enumerate(legs):
        if not isinstance(leg, Leg):
            return Problem("leg_not_a_leg", f"leg {i + 1} is not a Leg: {leg!r:.60}")
        if not isinstance(leg.instrument, Option | Equity | Index):
            return Problem("leg_not_a_leg", f"leg {i + 1} has no instrument: {leg.instrument!r:.60}")
        if not isinstance(leg.ratio, int) or isinstance(leg.ratio, bool) or not 1 <= leg.ratio <= MAX_QUANTITY:
            return Problem("bad_ratio", f"leg {i + 1} ratio must be a whole number 1..{MAX_QUANTITY:,}, "
                                        f"got {leg.ratio!r:.40}")
    keys = [leg.symbol for leg in legs]
    if len(set(keys)) != len(keys):
        return Problem("duplicate_leg", f"the same instrument appears in two legs: {keys}")
    for leg in legs:
        if isinstance(leg.instrument, Index):
            return Problem("index_not_tradable", f"{leg.symbol} is an index and cannot be traded itself; "
                                                 "trade its options")
    unds = {(leg.instrument.underlying if isinstance(leg.instrument, Option) else leg.instrument.symbol)
            for leg in legs}
    if len(unds) > 1:
        return Problem("mixed_underlyings", f"all legs must share one underlying, got {sorted(unds)}")
    if len(legs) > 1:
        g = 0
        for leg in legs:
            g = math.gcd(g, leg.ratio)
        if g > 1:
            return Problem("ratios_not_reduced", f"leg ratios {[leg.ratio for leg in legs]} share a factor {g}: "
                                                 "reduce them and raise the quantity instead")
    problem = _shares_problem(legs)
    if problem is not None:
        return problem
    if now is not None:
        for leg in legs:
            inst = leg.instrument
            if isinstance(inst, Option) and inst.expires_at <= now:
                return Problem("contract_expired", f"contract {inst.key} expired at "
                                                   f"{inst.expires_at:%Y-%m-%d %H:%M} UTC")
    return None


def _covers(stock: Leg, leg: Leg) -> bool:
    """Whether the share leg ``stock`` covers the option ``leg`` (or unwinds such a cover): long shares
    against calls sold to open, short shares against puts sold to open — or the shares going out with those
    options bought back to close. (Selling a long straddle to close while buying back hedge shares is no cover.)"""
    inst = leg.instrument
    assert isinstance(inst, Option)
    opening, closing = leg.open_close is OpenClose.OPEN, leg.open_close is OpenClose.CLOSE
    if inst.is_call:
        return (stock.side is Side.BUY and leg.side is Side.SELL and opening) or (
            stock.side is Side.SELL and leg.side is Side.BUY and closing)
    return (stock.side is Side.SELL and leg.side is Side.SELL and opening) or (
        stock.side is Side.BUY and leg.side is Side.BUY and closing)


def _shares_problem(legs: tuple[Leg, ...] | list[Leg]) -> Problem | None:
    """A mixed order's share leg, where it covers short options (covered call, collar, covered put), must
    deliver exactly what they do — 100 shares per contract (the contract's multiplier): fewer leaves part of
    the calls naked, more is a stock trade hidden inside a combo. Shares that hedge long options (a
    delta-neutral straddle) are any number."""
    stocks = [leg for leg in legs if isinstance(leg.instrument, Equity)]
    options = [leg for leg in legs if isinstance(leg.instrument, Option)]
    if not stocks or not options:
        return None
    stock = stocks[0]
    for right, name in ((True, "call"), (False, "put")):
        covered = [leg for leg in options
                   if isinstance(leg.instrument, Option) and leg.instrument.is_call is right and _covers(stock, leg)]
        if not covered:
            continue
        need = sum(leg.ratio * leg.instrument.multiplier for leg in covered)
        if stock.ratio != need:
            contracts = sum(leg.ratio for leg in covered)
            return Problem("covered_shares_mismatch", (
                f"{stock.ratio} shares of {stock.symbol} cover {contracts} short {name}(s) of "
                f"{covered[0].instrument.multiplier} shares each: a covered structure needs exactly {need} shares "
                "per unit (hedge a partial delta with a separate share order)"))
    return None


def _quantity_problem(quantity: Any, legs: tuple[Leg, ...] | list[Leg]) -> Problem | None:
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        return Problem("quantity_not_whole", f"quantity must be a positive whole number, got {quantity!r:.40}")
    if quantity <= 0:
        return Problem("quantity_not_positive", f"quantity must be positive, got {quantity}")
    biggest = max(leg.ratio for leg in legs)
    if quantity > MAX_QUANTITY or quantity * biggest > MAX_QUANTITY:
        shown = f"{quantity:,}" if quantity < 10**20 else f"{quantity:.3e}"
        return Problem("quantity_too_large", f"quantity {shown} × ratio {biggest} is too large: at most "
                                             f"{MAX_QUANTITY:,} contracts or shares per leg")
    return None


def parse_price(value: Any) -> tuple[Decimal | None, Problem | None]:
    """A limit price as a finite Decimal within ±MAX_LIMIT_PRICE, or the problem with it."""
    if isinstance(value, bool):
        return None, Problem("price_not_a_number", f"limit price {value!r} is not a number")
    try:
        price = value if isinstance(value, Decimal) else Decimal(value if not isinstance(value, float) else repr(value))
    except (InvalidOperation, TypeError, ValueError):
        return None, Problem("price_not_a_number", f"limit price {value!r:.40} is not a number")
    if not price.is_finite():
        return None, Problem("price_not_finite", f"limit price {value!r:.40} is not finite")
    if abs(price) > MAX_LIMIT_PRICE:
        return None, Problem("price_out_of_range", f"limit price {price:.4g} is out of range: at most "
                                                   f"{MAX_LIMIT_PRICE:,} per unit")
    return price, None


def _price_problem(order_type: OrderType, limit_price: Any, legs: tuple[Leg, ...] | list[Leg],
                   stop_price: Any = None) -> Problem | None:
    if order_type.is_stop:
        problem = _stop_problem(stop_price, legs)
        if problem is not None:
            return problem
    elif stop_price is not None:
        return Problem("stop_price_not_stop", f"a {order_type.value} order must not carry a stop price "
                                              f"(got {stop_price!r:.40}); use a stop or stop-limit order")
    if not order_type.has_limit:
        if limit_price is not None:
            what = "a stop order (it becomes a market order when triggered)" if order_type.is_stop else "a market order"
            return Problem("market_with_price", f"{what} must not carry a limit price; use a stop-limit")
        return None
    if limit_price is None:
        return Problem("limit_without_price", f"{order_type.value.replace('_', '-')} order without a limit price")
    price, problem = parse_price(limit_price)
    if problem is not None:
        return problem
    assert price is not None
    if len(legs) == 1:
        side = legs[0].side
        if price == 0 or (price > 0) != (side.sign > 0):
            want = "positive (a debit)" if side.sign > 0 else "negative (a credit)"
            return Problem("price_sign", f"single-leg {side.value} limit price must be {want}, got {price}")
    if order_type is OrderType.STOP_LIMIT:
        stop, _ = parse_price(stop_price)  # checked above
        if stop is not None and price < stop:
            return Problem("limit_behind_trigger", (
                f"stop-limit: the limit {price} is behind its stop {stop}. Triggered when the net price reaches "
                f"{stop}, a limit of {price} would rest where the market has already passed: a buy's limit goes at "
                "or above its stop, a sell's at or below it (a credit of at most the stop's)"))
    return None


def _stop_problem(stop_price: Any, legs: tuple[Leg, ...] | list[Leg]) -> Problem | None:
    """A stop needs a finite trigger, signed like the limit of the same order (a single-leg buy's positive, a
    sell's negative), so the one trigger rule of :func:`engine.model.stop_triggered` holds for every side."""
    if stop_price is None:
        return Problem("stop_without_price", "a stop order needs a stop (trigger) price")
    price, problem = parse_price(stop_price)
    if problem is not None:
        return Problem(problem.code, problem.message.replace("limit price", "stop price"))
    assert price is not None
    if len(legs) == 1:
        side = legs[0].side
        if price == 0 or (price > 0) != (side.sign > 0):
            want = "positive (a debit: buy when the price rises to it)" if side.sign > 0 else \
                "negative (a credit: −1.00 sells when the price falls to 1.00)"
            return Problem("stop_price_sign", f"single-leg {side.value} stop price must be {want}, got {price}")
    return None


def fields_problem(legs: Any, quantity: Any, order_type: Any, limit_price: Any, tif: Any,
                   now: datetime | None, stop_price: Any = None) -> Problem | None:
    """The checks an intent and an order share: legs, quantity, type, price, time in force, expiry."""
    problem = _legs_problem(legs, now)
    if problem is None:
        problem = _quantity_problem(quantity, legs)
    if problem is None and not isinstance(order_type, OrderType):
        problem = Problem("bad_order_type", f"order type must be one of {[t.value for t in OrderType]}, "
                                            f"got {order_type!r:.40}")
    if problem is None and not isinstance(tif, TimeInForce):
        problem = Problem("bad_time_in_force", f"time in force must be one of {[t.value for t in TimeInForce]}, "
                                               f"got {tif!r:.40}")
    if problem is None:
        problem = _price_problem(order_type, limit_price, legs, stop_price)
    return problem


def intent_problem(intent: Any, now: datetime | None = None) -> Problem | None:
    """Everything wrong with ``intent`` that must stop it before the risk engine (the first problem)."""
    if not isinstance(intent, OrderIntent):
        return Problem("not_an_intent", f"not an order intent: {type(intent).__name__} {intent!r:.60}")
    if not isinstance(intent.source, str) or not intent.source or len(intent.source) > _TEXT_LIMIT:
        return Problem("bad_source", f"source must be a non-empty text, got {intent.source!r:.40}")
    if intent.strategy_id is not None and (not isinstance(intent.strategy_id, str)
                                           or len(intent.strategy_id) > _TEXT_LIMIT):
        return Problem("bad_strategy_id", f"strategy id must be text, got {intent.strategy_id!r:.40}")
    if not isinstance(intent.tag, str) or len(intent.tag) > _TEXT_LIMIT:
        return Problem("bad_tag", f"tag must be text, got {intent.tag!r:.40}")
    coid = intent.client_order_id
    if coid is not None and (not isinstance(coid, str) or not 0 < len(coid) <= MAX_CLIENT_ORDER_ID
                             or not coid.isprintable()):
        return Problem("bad_client_order_id", f"client order id must be 1..{MAX_CLIENT_ORDER_ID} printable "
                                              f"characters, got {coid!r:.40}")
    return fields_problem(intent.legs, intent.quantity, intent.order_type, intent.limit_price, intent.tif, now,
                          intent.stop_price)


def order_problem(order: Any, now: datetime | None = None) -> Problem | None:
    """What the risk engine's ``validate`` stage checks on an order (built by the factory or restored)."""
    problem = fields_problem(order.legs, order.quantity, order.order_type, order.limit_price, order.tif, now,
                             order.stop_price)
    if problem is None and not (isinstance(order.filled_quantity, int)
                                and 0 <= order.filled_quantity < order.quantity):
        problem = Problem("nothing_remaining", f"nothing left to trade: {order.filled_quantity} of "
                                               f"{order.quantity} filled")
    return problem
