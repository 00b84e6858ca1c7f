"""Order-ticket figures: leg quotes from a chain, net mid / natural prices, order Greeks.

Sign convention (engine.model.orders): a net price per combo unit is positive for a debit (we pay) and
negative for a credit (we receive). *Natural* = pay the ask on every bought leg and take the bid on every
sold leg (the price that fills now); *mid* = the same with leg mids. Greeks of an order are position
totals: Σ ratio·side·quantity·multiplier·greek (delta in share-equivalents, vega $ per vol point, theta
$ per calendar day).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from engine.model import Leg, Option, OptionChain, leg_weights, round_to_tick
from engine.pricing.inputs import FloatArray


@dataclass(frozen=True, eq=False)
class TicketPrices:
    """Per combo unit, positive = debit. ``leg_*`` arrays follow the leg order; NaN when not quoted."""

    mid: float
    natural: float
    leg_bid: np.ndarray
    leg_ask: np.ndarray

    @property
    def leg_mid(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            m = 0.5 * (self.leg_bid + self.leg_ask)
        return np.where((self.leg_ask >= self.leg_bid) & (self.leg_bid >= 0), m, np.nan)

    @property
    def complete(self) -> bool:
        """Every leg has a usable two-sided quote."""
        return bool(np.all(np.isfinite(self.leg_mid)))


def leg_rows(legs: Sequence[Leg], chain: OptionChain | None) -> np.ndarray:
    """Chain row of each leg (-1 when the leg is not in the chain)."""
    if chain is None:
        return np.full(len(legs), -1, dtype=int)
    index = {str(s): i for i, s in enumerate(chain.symbol)}
    return np.array([index.get(leg.symbol, -1) for leg in legs], dtype=int)


def leg_quotes(legs: Sequence[Leg], chain: OptionChain | None, underlying_bid: float = math.nan,
               underlying_ask: float = math.nan) -> tuple[np.ndarray, np.ndarray]:
    """Per-leg (bid, ask): options from the chain, the underlying's shares at its bid/ask (the chain's spot when
    the feed gives no two-sided quote); NaN for a leg that is in neither."""
    rows = leg_rows(legs, chain)
    bid = np.full(len(legs), np.nan)
    ask = np.full(len(legs), np.nan)
    if chain is not None and len(legs):
        have = rows >= 0
        bid[have] = chain.bid[rows[have]]
        ask[have] = chain.ask[rows[have]]
        two_sided = math.isfinite(underlying_bid) and math.isfinite(underlying_ask) and underlying_ask >= underlying_bid
        for i, leg in enumerate(legs):
            if rows[i] < 0 and not isinstance(leg.instrument, Option) and leg.symbol == chain.underlying:
                bid[i], ask[i] = (underlying_bid, underlying_ask) if two_sided else (chain.spot, chain.spot)
    return bid, ask


def ticket_prices(legs: Sequence[Leg], chain: OptionChain | None) -> TicketPrices:
    """Net mid and natural prices of one combo unit from the chain's quotes (shares at the chain's spot)."""
    bid, ask = leg_quotes(legs, chain)
    return net_prices(legs, bid, ask)


def net_prices(legs: Sequence[Leg], bid: np.ndarray, ask: np.ndarray) -> TicketPrices:
    """Net prices from per-leg bid/ask arrays (NaN when any needed quote is missing), each leg weighted as the
    order's net price counts it (:func:`engine.model.leg_weights`): ± ratio for options, ± ratio ÷ 100 for the
    shares of a covered call or collar — 100 shares at 500 add 500 to a net quoted per contract share, not 50,000."""
    bid = np.asarray(bid, dtype=float)
    ask = np.asarray(ask, dtype=float)
    ratio = np.array([float(w) for w in leg_weights(list(legs))], dtype=float)
    buys = ratio > 0
    probe = TicketPrices(math.nan, math.nan, bid, ask)
    mids = probe.leg_mid
    if len(legs) == 0:
        return probe
    natural_leg = np.where(buys, ask, bid)
    mid = float(np.sum(ratio * mids)) if np.all(np.isfinite(mids)) else math.nan
    natural = float(np.sum(ratio * natural_leg)) if np.all(np.isfinite(natural_leg)) else math.nan
    return TicketPrices(mid, natural, bid, ask)


def order_greeks(legs: Sequence[Leg], quantity: int,
                 leg_greeks: Mapping[str, Sequence[float] | FloatArray]) -> dict[str, float]:
    """Totals of per-unit leg Greeks (``{"delta": [...], "gamma": [...], ...}``) for ``quantity`` combos.

    A NaN in any leg makes that total NaN (unknown is shown as unknown, never as zero).
    """
    w = np.array([leg.signed_ratio * quantity * leg.multiplier for leg in legs], dtype=float)
    out: dict[str, float] = {}
    for name, values in leg_greeks.items():
        v = np.asarray(values, dtype=float)
        if len(v) != len(w):
            raise ValueError(f"{name} has {len(v)} values for {len(w)} legs")
        out[name] = float(np.sum(w * v)) if len(w) else 0.0
    return out


def to_limit_price(value: float, tick: Decimal = Decimal("0.01")) -> Decimal:
    """A float net price as a Decimal limit price on the tick grid (positive debit, negative credit)."""
    if not math.isfinite(value):
        raise ValueError(f"limit price must be a finite number, got {value}")
    return round_to_tick(Decimal(repr(float(value))), tick)
