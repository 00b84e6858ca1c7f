"""Leg and chain helpers every strategy uses: the trading day of a timestamp, marking a combo on a chain
snapshot, and building, reversing and reading option legs.

Split from :mod:`engine.strategies.base` (which still exports them) because they are pure functions of a chain
and legs, shared by the strategies, the managed-trade rules and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime

import numpy as np

from engine.model import Fill, Leg, OpenClose, OptionChain, Order, Side, price_multiplier
from engine.model.instruments import NEW_YORK, Option


def market_date(ts: datetime) -> date:
    """The New York calendar date of a UTC timestamp (the trading day it belongs to)."""
    return ts.astimezone(NEW_YORK).date()


def closing_leg(leg: Leg) -> Leg:
    return replace(leg, side=Side.SELL if leg.side is Side.BUY else Side.BUY, open_close=OpenClose.CLOSE)


def _net_fill_price(order: Order, fills: Sequence[Fill]) -> float:
    """Net price per unit of the combo from leg fills (Σ signed qty × price / units; shares of a mixed order
    per contract share, as its limit is quoted: ``engine.model.price_multiplier``)."""
    units = sum(abs(f.quantity) for f in fills if f.leg_index == 0) / order.legs[0].ratio
    if units <= 0:
        return math.nan
    m = price_multiplier(order.legs)
    total = sum(float(f.price) * f.quantity * f.instrument.multiplier / m for f in fills if f.kind == "trade")
    return total / units


def leg_marks(chain: OptionChain, legs: Sequence[Leg]) -> tuple[float, float] | None:
    """(mid value, natural close value) per unit of an open combo: Σ signed_ratio × price.

    The natural close value is what closing would realise at the touch: long legs at the bid,
    short legs at the ask. None when a leg is missing or has no usable quote.
    """
    syms = np.array([leg.symbol for leg in legs], dtype=object)
    rows = _rows_of(chain, syms)
    if rows is None:
        return None
    bid, ask = chain.bid[rows], chain.ask[rows]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bid) & np.isfinite(ask) & (ask >= bid) & (bid >= 0)
    if not ok.all():
        return None
    ratio = np.array([leg.signed_ratio for leg in legs], dtype=float)
    mid = 0.5 * (bid + ask)
    natural = np.where(ratio > 0, bid, ask)
    return float(ratio @ mid), float(ratio @ natural)


def entry_marks(chain: OptionChain, legs: Sequence[Leg]) -> tuple[float, float] | None:
    """(mid, natural) net price per unit of opening the combo ``legs`` (debit > 0, credit < 0): the natural
    buys at the ask and sells at the bid. None when a leg has no usable quote."""
    marks = leg_marks(chain, legs)
    if marks is None:
        return None
    syms = np.array([leg.symbol for leg in legs], dtype=object)
    rows = _rows_of(chain, syms)
    assert rows is not None
    ratio = np.array([leg.signed_ratio for leg in legs], dtype=float)
    natural = np.where(ratio > 0, chain.ask[rows], chain.bid[rows])
    return marks[0], float(ratio @ natural)


def _rows_of(chain: OptionChain, symbols: np.ndarray) -> np.ndarray | None:
    """Chain rows of ``symbols`` in order, or None when any is not quoted today (a count check is not
    enough: a symbol listed twice would hide a missing one)."""
    hit = np.nonzero(np.isin(chain.symbol, symbols))[0]
    index = {s: int(r) for s, r in zip(chain.symbol[hit], hit, strict=True)}
    if any(s not in index for s in symbols):
        return None
    return np.array([index[s] for s in symbols], dtype=np.int64)


def option_leg(chain: OptionChain, row: int, side: Side, open_close: OpenClose = OpenClose.OPEN) -> Leg:
    return Leg(instrument=chain.option(int(row)), side=side, ratio=1, open_close=open_close)


def leg_option(leg: Leg) -> Option:
    """The option contract of a leg a strategy built from chain rows (:func:`option_leg`). A share leg here is a
    bug upstream: named at once rather than surfacing later as a missing strike or expiry."""
    if not isinstance(leg.instrument, Option):
        raise TypeError(f"leg {leg.symbol} is {type(leg.instrument).__name__}, not an option")
    return leg.instrument


def leg_expiry(legs: Sequence[Leg]):
    return min(leg.instrument.expiry for leg in legs if isinstance(leg.instrument, Option))
