"""Buying power an order uses if it fills now, as the broker decides it: the paper broker's margin model
(:mod:`engine.brokers.margin`) on the underlying's positions with the order filled at the touch.

Why apart from the risk engine: it is the margin model's arithmetic (holdings, groups, the cached requirement
before the order), which the engine's checks only read as one number."""

from __future__ import annotations

import math

from engine.brokers.margin import Holding, MarginRules, Trade, order_effect
from engine.model import Instrument, Option, Order, price_multiplier, worst_price
from engine.risk.greeks import underlying_of
from engine.risk.market_view import MarketView, key_of
from engine.risk.state import PortfolioState


def holding(market: MarketView, inst: Instrument, quantity: int, spot: float) -> Holding:
    """A position (or a trade's instrument, ``quantity`` 0) as the margin model sees it, marked at mid."""
    mark = market.mid(inst)
    if isinstance(inst, Option):
        if not math.isfinite(mark) and math.isfinite(spot):  # as the paper exchange marks an unquoted option
            k = float(inst.strike)
            mark = max(spot - k, 0.0) if inst.is_call else max(k - spot, 0.0)
        return Holding(quantity, inst.multiplier, mark, True, float(inst.strike), inst.is_call)
    return Holding(quantity, inst.multiplier, mark if math.isfinite(mark) else spot, False)


class BuyingPowerEstimator:
    """The buying-power estimate of an order, with each underlying's margin group and requirement before it
    cached once per (portfolio, market) version: a burst of orders on one underlying prices the book once."""

    def __init__(self) -> None:
        #: underlying -> ((portfolio, market) version, spot, holdings, requirement): the margin group before an order
        self._groups: dict[str, tuple[tuple[int, int], float, dict[str, Holding], float]] = {}

    def required(self, order: Order, *, market: MarketView, portfolio: PortfolioState, margin: MarginRules,
                 position_keys: dict[str, list[str]]) -> float:
        """Dollars of buying power ``order`` uses (negative when it frees some); ``position_keys``: the position
        keys of each underlying (the margin model's groups)."""
        groups: dict[str, dict[str, Holding]] = {}
        before: dict[str, float] = {}
        spots: dict[str, float | None] = {}
        trades: list[Trade] = []
        q = order.remaining_quantity
        quoted = True
        worst = worst_price(order.order_type, order.limit_price, order.stop_price)
        version = (portfolio.version, market.version)
        for leg in order.legs:
            inst = leg.instrument
            und = underlying_of(inst)
            if und not in groups:
                hit = self._groups.get(und)
                if hit is None or hit[0] != version:  # the group and its requirement, once per market version
                    spot = market.spot(und)
                    positions = portfolio.positions
                    book = {k: holding(market, positions[k].instrument, positions[k].quantity, spot)
                            for k in position_keys.get(und, ()) if k in positions}
                    hit = (version, spot, book, margin.group_requirement(und, spot, book.values()))
                    self._groups[und] = hit
                _, spots[und], groups[und], before[und] = hit
            bid, ask = market.bid_ask(inst)
            px = ask if leg.side.sign > 0 else bid
            if not math.isfinite(px):
                if len(order.legs) == 1 and worst is not None:
                    px = abs(float(worst))
                else:
                    quoted, px = False, 0.0
            trades.append(Trade(key_of(inst), und, holding(market, inst, 0, spots[und] or math.nan),
                                leg.signed_ratio * q, px))
        cash: float | None = None
        if not quoted:
            cash = (-float(worst) * price_multiplier(order.legs) * q) if worst is not None else math.nan
        effect = order_effect(margin, groups, spots, trades, requirements_before=before, cash_change=cash)
        return -effect.buying_power_change
