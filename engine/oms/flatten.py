"""Kill-switch flatten: the closing orders for every position.

The option positions of one underlying (up to four) close as **one inverse combo** — each leg the opposite side,
ratios = |quantity| ÷ gcd, order quantity = the gcd — so a spread is never legged out. Stock positions, and
underlyings with more than four option positions, close leg by leg. Prices are the natural (worst touch) plus
``through_ticks`` ticks (more aggressive for debits and credits alike), single options rounded further toward the
aggressive side to a $0.05 / $0.10 multiple that every listing tick schedule accepts; a leg without a quote makes
the order a market order. Orders carry source ``kill_switch``: exempt from approval, the price collar, the rate limit and the
duplicate guard, and allowed while HALTED because they only reduce positions.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal

from engine.model import Leg, OpenClose, Option, OrderIntent, OrderType, Position, Side, TimeInForce
from engine.oms.factory import floor_to_tick
from engine.risk.engine import KILL_SWITCH_SOURCE
from engine.risk.market_view import MarketView

MAX_COMBO_LEGS = 4
COARSE_TICK_LOW = Decimal("0.05")  # a multiple of every US option tick below $3.00
COARSE_TICK_HIGH = Decimal("0.10")  # ... and at or above $3.00


def flatten_groups(positions: list[Position]) -> list[list[Position]]:
    """Positions grouped into the orders that will close them."""
    by_und: dict[str, list[Position]] = {}
    groups: list[list[Position]] = []
    for pos in positions:
        if pos.quantity == 0:
            continue
        if isinstance(pos.instrument, Option):
            by_und.setdefault(pos.instrument.underlying, []).append(pos)
        else:
            groups.append([pos])
    for legs in by_und.values():
        if 1 < len(legs) <= MAX_COMBO_LEGS:
            groups.append(legs)
        else:
            groups.extend([p] for p in legs)
    return groups


def closing_intent(group: list[Position], market: MarketView, through_ticks: int, reason: str) -> OrderIntent:
    """The marketable order that closes ``group`` exactly."""
    qty = 0
    for p in group:
        qty = math.gcd(qty, abs(p.quantity))
    legs = tuple(Leg(p.instrument, Side.SELL if p.quantity > 0 else Side.BUY, abs(p.quantity) // qty,
                     OpenClose.CLOSE) for p in group)
    natural = Decimal(0)
    for leg in legs:
        bid, ask = market.bid_ask(leg.instrument)
        touch = ask if leg.side is Side.BUY else bid
        if not (touch == touch and touch > 0):
            return OrderIntent(legs=legs, quantity=qty, order_type=OrderType.MARKET, limit_price=None,
                               tif=TimeInForce.DAY, source=KILL_SWITCH_SOURCE, tag=reason[:60])
        natural += leg.side.sign * leg.ratio * Decimal(str(touch))
    tick = legs[0].instrument.tick_size
    target = natural + through_ticks * tick
    if len(legs) == 1 and isinstance(legs[0].instrument, Option):
        # single options trade on the listing's tick schedule ($0.01 / $0.05 / $0.10 by class and price); round
        # *toward the aggressive side* to a tick every schedule accepts at this price
        coarse = COARSE_TICK_HIGH if abs(target) >= Decimal(3) else COARSE_TICK_LOW
        limit = (target / coarse).to_integral_value(rounding=ROUND_CEILING) * coarse
        if legs[0].side is Side.SELL:
            limit = min(limit, -coarse)  # a sale stays a credit
    else:
        limit = floor_to_tick(target, tick)
    return OrderIntent(legs=legs, quantity=qty, order_type=OrderType.LIMIT, limit_price=limit,
                       tif=TimeInForce.DAY, source=KILL_SWITCH_SOURCE, tag=reason[:60])
