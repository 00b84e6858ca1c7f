"""tastytrade at the wire: our orders ↔ the SDK's (and so the API's JSON), statuses, positions, and how its errors
are classified. Pure functions, tested without a server; the session (:mod:`engine.brokers.tastytrade_session`)
and the broker (:mod:`engine.brokers.tastytrade`) use them.

- **Price sign.** Our ``Order.limit_price`` is positive for a debit and negative for a credit; tastytrade's SDK uses
  the opposite (positive = credit, sent as ``abs(price)`` + ``price-effect``): :func:`to_tt_price` and
  :func:`from_tt_price` negate; nothing else converts.
- **Stops.** ``order-type`` ``Stop`` / ``Stop Limit`` with ``stop-trigger``, an unsigned price: its side is the legs'
  actions for a single leg and the limit's ``price-effect`` for a combo, so a multi-leg stop goes out as a
  stop-limit only.
- Leg quantity = order quantity × leg ratio; the price is per unit of the combo; an order read back gets its size
  as the gcd of its leg quantities. Shares are ``Equity`` legs (quantity in shares, actions ``Buy to Open`` /
  ``Sell to Close`` … as for options — the SDK's bare ``Buy``/``Sell`` are for futures); a mixed order (covered
  call, collar, delta hedge) is priced per share of a contract, as on tastytrade's ticket (100 shares at 500 and a
  call at 5: a 495.00 debit).
- **Errors.** A 5xx is :class:`BrokerServerError` (outcome unknown), a 429 ``BrokerRateLimited`` (not processed),
  a revoked login :class:`BrokerAuthError`; transport failures count against the circuit breaker, API error bodies
  (``TastytradeError``) are broker answers.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.brokers.base import BrokerError
from engine.brokers.resilience import BrokerRateLimited, retry_after_seconds
from engine.model import (
    AccountSnapshot,
    Equity,
    Instrument,
    Leg,
    OpenClose,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    is_occ_symbol,
    leg_weights,
)

log = logging.getLogger(__name__)

#: tastytrade ``order-type`` → ours (Marketable Limit and Notional Market are not sent by us)
_FROM_TT_ORDER_TYPE = {"Limit": OrderType.LIMIT, "Market": OrderType.MARKET, "Stop": OrderType.STOP,
                       "Stop Limit": OrderType.STOP_LIMIT, "Marketable Limit": OrderType.LIMIT}


def to_tt_price(limit_price: Decimal) -> Decimal:
    """Our net price (+debit / −credit) → tastytrade's (+credit / −debit)."""
    return -Decimal(limit_price)


def from_tt_price(price: Decimal | None) -> Decimal | None:
    """tastytrade's signed price (+credit / −debit, after the SDK applied ``price-effect``) → ours."""
    return None if price is None else -Decimal(price)


def tt_action(leg: Leg) -> str:
    """``Buy to Open`` / ``Sell to Close`` … (the value of the SDK's ``OrderAction``)."""
    verb = "Buy" if leg.side is Side.BUY else "Sell"
    return f"{verb} to {'Open' if leg.open_close is OpenClose.OPEN else 'Close'}"


def instrument_from_tt(symbol: str, multiplier: int = 100, underlying: str = "") -> Instrument:
    symbol = symbol.strip() if not is_occ_symbol(symbol) else symbol
    if is_occ_symbol(symbol):
        return Option.from_occ(symbol, multiplier=multiplier, underlying=underlying or None)
    return Equity(symbol)


def position_from_tt(symbol: str, quantity: Decimal, direction: str, average_open_price: Decimal,
                     multiplier: Decimal, underlying: str = "", realized: Decimal = Decimal(0)) -> Position:
    """tastytrade position → ours: signed quantity, per-unit average price, multiplier from the broker."""
    sign = -1 if str(direction).lower() == "short" else 1
    mult = int(multiplier) if multiplier else 1
    inst = instrument_from_tt(symbol, multiplier=mult if is_occ_symbol(symbol) else 1, underlying=underlying)
    return Position(instrument=inst, quantity=sign * int(quantity), avg_price=Decimal(average_open_price),
                    realized_pnl=Decimal(realized))


_TT_STATUS = {
    "Received": OrderStatus.SUBMITTED, "Routed": OrderStatus.SUBMITTED, "In Flight": OrderStatus.SUBMITTED,
    "Contingent": OrderStatus.SUBMITTED, "Live": OrderStatus.WORKING, "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED, "Rejected": OrderStatus.REJECTED, "Expired": OrderStatus.EXPIRED,
    "Removed": OrderStatus.CANCELLED, "Partially Removed": OrderStatus.CANCELLED,
}


class BrokerServerError(BrokerError):
    """The server answered 5xx: what was asked may or may not have happened (a placed order may be live), so
    it is a transport failure — never a rejection."""


async def _raise_on_server_error(response: Any) -> None:
    """httpx response hook, before the SDK reads the answer as an error body (which would hide the status: the SDK
    raises the same ``TastytradeError`` for a 429 as for a refused order). A 5xx becomes
    :class:`BrokerServerError` (outcome unknown); a 429 becomes :class:`BrokerRateLimited` (not processed: a cancel
    is retried after the Retry-After the server sent, a submit is a clean refusal)."""
    status = response.status_code
    if status >= 500:
        req = response.request
        raise BrokerServerError(f"tastytrade answered HTTP {status} to {req.method} {req.url.path}; "
                                "the outcome is unknown")
    if status == 429:
        req = response.request
        wait = retry_after_seconds(response.headers.get("retry-after"), response.headers.get("date"))
        raise BrokerRateLimited(f"tastytrade rate limit (HTTP 429) on {req.method} {req.url.path}: not processed"
                                + (f"; retry after {wait:g} s" if wait is not None else ""), retry_after_s=wait)


class BrokerAuthError(BrokerError):
    """The login is no longer valid (refresh token revoked or rejected): the user must re-enter it."""


def _is_auth_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return type(exc).__name__ == "TastytradeError" and ("invalid_grant" in msg or "unauthorized" in msg)


def _is_transport_failure(exc: BaseException) -> bool:
    """Timeouts, dropped connections and unparseable (non-API) responses count against the breaker. A 429 does
    not: the server is up and answering, and an open breaker would add REDUCING (then HALTED) to a slowdown."""
    if isinstance(exc, BrokerAuthError | BrokerRateLimited):
        return False
    if isinstance(exc, (BrokerError, OSError, TimeoutError)):
        return True
    return type(exc).__name__ == "TastytradeError" and str(exc).startswith("Couldn't parse response")


def snapshot_from_tt(b: Any, account_id: str, now: datetime) -> AccountSnapshot:
    """tastytrade balances (REST or streamed; signed by the SDK from their ``*-effect``) → our account snapshot."""
    return AccountSnapshot(account_id=account_id, cash=Decimal(b.cash_balance),
                           net_liquidation=Decimal(b.net_liquidating_value),
                           buying_power=Decimal(b.derivative_buying_power),
                           maintenance_requirement=Decimal(b.maintenance_requirement),
                           ts=now, broker="tastytrade", is_live=True)


def _describe_error(what: str, exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ == "TastytradeError" and ("invalid_grant" in msg or "unauthorized" in msg.lower()):
        return f"{what}: authentication failed ({msg}); re-enter the refresh token in Credentials"
    return f"{what}: {msg}"


def build_tt_order(order: Order, price: Decimal | None = None) -> Any:
    """The SDK order for ``order`` (``price`` in our convention; default ``order.limit_price``)."""
    from tastytrade.order import (
        InstrumentType,
        LimitOrder,
        MarketOrder,
        OrderAction,
        OrderTimeInForce,
        StopLimitOrder,
        StopOrder,
    )
    from tastytrade.order import Leg as TTLeg

    legs = []
    for leg in order.legs:
        inst = leg.instrument
        itype = InstrumentType.EQUITY_OPTION if isinstance(inst, Option) else InstrumentType.EQUITY
        symbol = inst.occ if isinstance(inst, Option) else inst.symbol
        legs.append(TTLeg(instrument_type=itype, symbol=symbol, action=OrderAction(tt_action(leg)),
                          quantity=order.quantity * leg.ratio))
    tif = OrderTimeInForce.GTC if order.tif is TimeInForce.GTC else OrderTimeInForce.DAY
    ext = order.client_order_id or None
    if order.order_type is OrderType.MARKET:
        return MarketOrder(legs=legs, time_in_force=tif, external_identifier=ext)
    if order.order_type.is_stop:
        if order.stop_price is None:
            raise ValueError(f"a {order.order_type.value} order needs a stop price")
        trigger = abs(Decimal(order.stop_price))
        if order.order_type is OrderType.STOP:
            if order.is_combo:
                raise ValueError("tastytrade's stop-trigger carries no debit/credit side: send a multi-leg "
                                 "stop as a stop-limit")
            return StopOrder(legs=legs, stop_trigger=trigger, time_in_force=tif, external_identifier=ext)
    px = order.limit_price if price is None else price
    if px is None:
        raise ValueError("a limit order needs a limit price")
    if order.order_type is OrderType.STOP_LIMIT:
        return StopLimitOrder(legs=legs, price=to_tt_price(px), stop_trigger=trigger, time_in_force=tif,
                              external_identifier=ext)
    return LimitOrder(legs=legs, price=to_tt_price(px), time_in_force=tif, external_identifier=ext)


def order_from_placed(placed: Any, now: datetime) -> Order:
    """An order found at tastytrade (REST or the account streamer) as ours, stamped ``now`` (the engine clock)."""
    legs = []
    # the order's size is the gcd of its leg quantities (legs go out as quantity × reduced ratio): a covered
    # call's 100 shares and 1 call are one unit of ratios 100:1, whatever ``size`` the server reports
    size = math.gcd(*(int(leg.quantity or 0) for leg in placed.legs)) or int(placed.size or 0) or 1
    for leg in placed.legs:
        inst = instrument_from_tt(leg.symbol)
        action = str(leg.action.value)
        side = Side.BUY if action.startswith("Buy") else Side.SELL
        oc = OpenClose.CLOSE if action.endswith("Close") else OpenClose.OPEN
        legs.append(Leg(inst, side, max(1, int(leg.quantity or size) // size), oc))
    otype = _FROM_TT_ORDER_TYPE.get(str(placed.order_type.value), OrderType.LIMIT)
    limit = from_tt_price(placed.price) if otype.has_limit else None
    trigger = getattr(placed, "stop_trigger", None)  # only the SDK's stop order classes have it
    stop: Decimal | None = None
    if otype.is_stop and trigger is not None:
        # unsigned on the wire: a combo's side is its limit's, a single leg's its action's
        debit = limit > 0 if limit is not None else legs[0].side is Side.BUY
        stop = abs(Decimal(trigger)) * (1 if debit else -1)
    return Order(order_id=f"tastytrade-{placed.id}", client_order_id=placed.external_identifier or "",
                 legs=tuple(legs), quantity=size, order_type=otype, stop_price=stop,
                 limit_price=limit, tif=TimeInForce.GTC if "GTC" in str(
                     placed.time_in_force.value) else TimeInForce.DAY, status=_TT_STATUS.get(
                     str(placed.status.value), OrderStatus.WORKING), created_at=now, updated_at=now,
                 broker_order_id=str(placed.id), broker="tastytrade", account_id=placed.account_number,
                 source="broker")


def fill_totals(order: Order, placed: Any) -> tuple[int, Decimal | None]:
    """(units filled, average net price in our convention): each leg's average fill price weighted as in
    the order's net (``leg_weights``: the shares of a covered call count per contract share)."""
    units: list[int] = []
    net = Decimal(0)
    any_fill = False
    weights = leg_weights(order.legs)
    for i, leg in enumerate(placed.legs):
        ratio = order.legs[i].ratio if i < len(order.legs) else 1
        qty = sum((Decimal(f.quantity) for f in leg.fills or ()), Decimal(0))
        units.append(int(qty) // ratio)
        if qty:
            any_fill = True
            avg = sum((Decimal(f.quantity) * Decimal(f.fill_price) for f in leg.fills), Decimal(0)) / qty
            sign = 1 if str(leg.action.value).startswith("Buy") else -1
            weight = abs(weights[i]) if i < len(weights) else Decimal(ratio)
            net += sign * avg * weight
    return (min(units) if units else 0), (net if any_fill else None)


def _flatten(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"

