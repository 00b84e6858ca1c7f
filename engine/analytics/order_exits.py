"""Checks and prices for the ticket's stop orders and attached exits (bracket, OCO, close at a share of max profit).

The ticket validates at the field, before anything is sent, with the same rules the engine applies later: a stop
triggers when the order's net price at the mark rises to it (:func:`engine.model.stop_triggered`), so a stop at
or below the current net mark would fire at once; a bracket's exits close the entry (their prices are the closing
order's net, + debit / − credit), so the profit target cannot promise more than the position's maximum profit and
the stop cannot lose more than its maximum loss. Amounts in dollars are for the whole order (``quantity`` units
of ``multiplier``), as the payoff summary reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from engine.analytics.formatting import money
from engine.analytics.ticket import to_limit_price
from engine.model import stop_triggered

__all__ = ["BracketPrices", "ExitPriceError", "bracket_prices", "check_profit_share", "check_stop"]

#: how far an amount may pass the maximum before it is an error (float noise of the payoff summary)
_EPS = 0.005


class ExitPriceError(ValueError):
    """A stop or exit the ticket must not send; ``field`` names the control that holds the bad value."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class BracketPrices:
    """The closing order's net prices and what they make or lose for the whole order (dollars)."""

    take_profit: Decimal
    stop: Decimal
    profit: float
    loss: float


def _signed(v: float) -> str:
    return f"{abs(v):.2f} {'debit' if v > 0 else 'credit' if v < 0 else 'even'}"


def check_stop(stop: float, net_mark: float, *, what: str = "stop", field: str = "stop") -> None:
    """Refuse a stop that would trigger at once: at or below the order's current net mark. Without a mark (a leg
    has no two-sided quote) nothing can be said, and the engine's own checks decide."""
    if not math.isfinite(stop):
        raise ExitPriceError(f"the {what} price is not a number", field)
    if math.isfinite(net_mark) and stop_triggered(stop, net_mark):
        raise ExitPriceError(
            f"the {what} at {_signed(stop)} is on the wrong side of the mark ({_signed(net_mark)}): it would "
            "trigger at once. A stop fires when the order's net price rises to it — above the mark for a buy, "
            "a smaller credit for a sell", field)


def check_profit_share(pct: float) -> Decimal:
    """A share of the maximum profit in percent (0 < pct < 100) as the engine's fraction (0.5 = 50 %)."""
    if not math.isfinite(pct) or not 0 < pct < 100:
        raise ExitPriceError(f"close at {pct:g} % of max profit: the share must be between 0 and 100 %", "profit_pct")
    return (Decimal(repr(float(pct))) / 100).normalize()


def bracket_prices(entry: float, *, quantity: int, multiplier: int, max_profit: float, max_loss: float,
                   target: float, stop: float, unit: Literal["price", "pct"], tick: Decimal = Decimal("0.01"),
                   close_mark: float = math.nan) -> BracketPrices:
    """The bracket's exit prices from the ticket's fields.

    ``entry`` is the entry's net price (+ debit / − credit), ``close_mark`` the closing order's net mark now (the
    entry's mid with the sign turned). ``unit="price"``: ``target`` and ``stop`` are the closing order's net
    prices; ``unit="pct"``: the target is a percentage of ``max_profit`` and the stop of ``max_loss``. Raises
    :class:`ExitPriceError` naming the field at fault."""
    if quantity <= 0 or multiplier <= 0:
        raise ExitPriceError(f"quantity {quantity} × multiplier {multiplier} must be positive", "quantity")
    if not math.isfinite(entry):
        raise ExitPriceError("the entry has no price: set a limit (or wait for a two-sided quote)", "limit")
    k = float(quantity * multiplier)
    if unit == "pct":
        if not 0 < target <= 100:
            raise ExitPriceError(f"the profit target {target:g} % must be above 0 and at most 100 % of max profit",
                                 "target")
        if not 0 < stop <= 100:
            raise ExitPriceError(f"the stop {stop:g} % must be above 0 and at most 100 % of max loss", "stop")
        if not math.isfinite(max_profit):
            raise ExitPriceError("the maximum profit is unlimited: give the profit target as a price", "target")
        if not math.isfinite(max_loss):
            raise ExitPriceError("the maximum loss is unlimited: give the stop as a price", "stop")
        tp = to_limit_price(-(entry + target / 100 * max_profit / k), tick)
        sp = to_limit_price(stop / 100 * max_loss / k - entry, tick)
    elif unit == "price":
        if not (math.isfinite(target) and math.isfinite(stop)):
            raise ExitPriceError("the profit target and the stop need prices", "target")
        tp, sp = to_limit_price(target, tick), to_limit_price(stop, tick)
    else:
        raise ExitPriceError(f"unknown bracket unit {unit!r} (price or pct)", "unit")
    profit = -(entry + float(tp)) * k
    loss = (entry + float(sp)) * k
    if profit <= 0:
        raise ExitPriceError(f"the profit target at {_signed(float(tp))} makes no profit on an entry at "
                             f"{_signed(entry)}", "target")
    if math.isfinite(max_profit) and profit > max_profit + _EPS:
        raise ExitPriceError(f"the profit target at {_signed(float(tp))} would make {money(profit, 0)}, beyond the "
                             f"maximum profit of {money(max_profit, 0)}", "target")
    if loss <= 0:
        raise ExitPriceError(f"the stop at {_signed(float(sp))} is not a loss on an entry at {_signed(entry)}: "
                             "put it on the losing side", "stop")
    if math.isfinite(max_loss) and loss > max_loss + _EPS:
        raise ExitPriceError(f"the stop at {_signed(float(sp))} would lose {money(loss, 0)}, more than the maximum "
                             f"loss of {money(max_loss, 0)}: the position can never reach it", "stop")
    check_stop(float(sp), close_mark, what="bracket's stop")
    return BracketPrices(tp, sp, profit, loss)
