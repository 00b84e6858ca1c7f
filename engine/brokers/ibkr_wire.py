"""Interactive Brokers at the wire: our instruments, orders and positions ↔ ``ib_async``'s contracts and orders.
Pure functions (``ib_async`` imported lazily), tested without TWS; the connection
(:mod:`engine.brokers.ibkr_connection`) and the broker (:mod:`engine.brokers.ibkr`) use them.

Price convention: our ``limit_price`` is the net price per unit, +debit / −credit. A combo goes out as a ``BAG``
bought at that signed net price; a single leg with its own action at ``abs(limit_price)`` (a sign contradicting the
side is refused before sending); a stop's trigger goes in ``auxPrice``, signed like ``lmtPrice``. IB's ``avgCost``
is per contract: divided by the multiplier into our per-unit price.
"""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.model import Equity, Instrument, Option, Order, OrderType, Position, Side, is_occ_symbol
from engine.model.instruments import Right

if TYPE_CHECKING:
    from ib_async import Order as IbOrder


def ib_expiry(d: date) -> str:
    return d.strftime("%Y%m%d")


def parse_ib_expiry(s: str) -> date:
    s = s.strip()[:8]
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def instrument_from_ib(contract: Any) -> Instrument:
    """An IB contract → our instrument (options via their OCC local symbol when present)."""
    sec = getattr(contract, "secType", "")
    if sec in ("OPT", "FOP"):
        mult = int(float(contract.multiplier or 100))
        local = (contract.localSymbol or "").strip()
        if local and is_occ_symbol(contract.localSymbol):
            return Option.from_occ(contract.localSymbol, underlying=contract.symbol, multiplier=mult)
        return Option(root=contract.tradingClass or contract.symbol, expiry=parse_ib_expiry(
            contract.lastTradeDateOrContractMonth), strike=Decimal(str(contract.strike)),
                      right=Right.parse(contract.right), underlying=contract.symbol, multiplier=mult)
    return Equity(contract.symbol)


def position_from_ib(contract: Any, quantity: float, avg_cost: float) -> Position:
    """IB position → ours: signed quantity as is; ``avgCost`` (per contract) ÷ multiplier → per unit."""
    inst = instrument_from_ib(contract)
    avg = Decimal(str(avg_cost)) / Decimal(inst.multiplier)
    return Position(instrument=inst, quantity=int(quantity), avg_price=avg.quantize(Decimal("0.0001")))


def ib_order_terms(order: Order) -> tuple[str, float, float | None]:
    """(action, total quantity, IB limit price) for ``order`` under the conventions in the module doc."""
    if order.is_combo:
        price = None if order.limit_price is None else float(order.limit_price)
        return "BUY", float(order.quantity), price
    leg = order.legs[0]
    action = "BUY" if leg.side is Side.BUY else "SELL"
    if order.limit_price is None:
        return action, float(order.quantity * leg.ratio), None
    if (leg.side is Side.BUY and order.limit_price < 0) or (leg.side is Side.SELL and order.limit_price > 0):
        raise ValueError(f"limit {order.limit_price} contradicts a single {leg.side.value} leg "
                         "(+ is a debit we pay, − a credit we receive)")
    return action, float(order.quantity * leg.ratio), float(abs(order.limit_price))


#: our order types ↔ IB's ``orderType`` (a stop's trigger travels in ``auxPrice``, signed like ``lmtPrice``)
IB_ORDER_TYPES = {OrderType.LIMIT: "LMT", OrderType.MARKET: "MKT", OrderType.STOP: "STP",
                  OrderType.STOP_LIMIT: "STP LMT"}
_FROM_IB_ORDER_TYPE = {v: k for k, v in IB_ORDER_TYPES.items()}


def ib_stop_price(order: Order) -> float | None:
    """IB ``auxPrice`` for a stop: a combo's signed net trigger (+ debit, as its ``lmtPrice``), a single leg's
    absolute price (its direction is the action)."""
    if order.stop_price is None:
        return None
    return float(order.stop_price) if order.is_combo else float(abs(order.stop_price))


def ib_order_of(otype: OrderType, action: str, qty: float, lmt: float | None, stop: float | None,
                tif: str) -> IbOrder:
    """The ``ib_async`` order for one of our order types (a stop's trigger goes in ``auxPrice``); a missing
    stop or stop-limit price is a ``ValueError`` before anything is sent."""
    from ib_async import LimitOrder, MarketOrder, StopLimitOrder, StopOrder

    if otype.is_stop:
        if stop is None:
            raise ValueError(f"a {otype.value} order needs a stop price")
        if otype is OrderType.STOP:
            return StopOrder(action, qty, stop, tif=tif)
        if lmt is None:
            raise ValueError("a stop-limit order needs a limit price")
        return StopLimitOrder(action, qty, lmt, stop, tif=tif)
    if otype is OrderType.MARKET or lmt is None:
        return MarketOrder(action, qty, tif=tif)
    return LimitOrder(action, qty, lmt, tif=tif)


def _f(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return math.nan if x == -1 or abs(x) > 1e300 else x


