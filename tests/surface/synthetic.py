"""Synthetic option chains for the surface tests: exact model prices with symmetric bid/ask around them.

Prices come from the pricing core (BSM on an SVI smile, or Heston); nothing here is market data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np

from engine.model.chain import OptionChain
from engine.model.instruments import ExerciseStyle, Option, Right, Settlement

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def expiry_dates(days: Sequence[int], start: datetime = NOW) -> list[date]:
    return [(start + timedelta(days=int(d))).date() for d in days]


def build_chain(
    *,
    spot: float,
    expiries: Sequence[date],
    strikes: Callable[[float], np.ndarray],
    price: Callable[[np.ndarray, np.ndarray, float], np.ndarray],
    style: ExerciseStyle = ExerciseStyle.EUROPEAN,
    half_spread: Callable[[np.ndarray], np.ndarray] | None = None,
    now: datetime = NOW,
    underlying: str = "SPX",
) -> OptionChain:
    """A chain with calls and puts at ``strikes(T)`` per expiry, bid/ask = price ∓ half_spread(price).

    ``price(is_call, K, T)`` returns model prices; bids are floored at 0.
    """
    settlement = Settlement.CASH_PM if style is ExerciseStyle.EUROPEAN else Settlement.PHYSICAL
    half_spread = half_spread or (lambda p: np.maximum(0.005, 0.01 * p))
    opts: list[Option] = []
    bids: list[np.ndarray] = []
    asks: list[np.ndarray] = []
    for d in expiries:
        probe = Option(underlying[:6], d, 1, Right.CALL, underlying=underlying, style=style, settlement=settlement)
        T = probe.time_to_expiry(now)
        K = np.round(np.asarray(strikes(T), dtype=float), 3)
        is_call = np.concatenate([np.ones(len(K), bool), np.zeros(len(K), bool)])
        KK = np.concatenate([K, K])
        p = np.asarray(price(is_call, KK, T), dtype=float)
        h = half_spread(p)
        bids.append(np.maximum(p - h, 0.0))
        asks.append(p + h)
        for c, k in zip(is_call, KK, strict=True):
            opts.append(Option(underlying[:6], d, k, Right.CALL if c else Right.PUT, underlying=underlying,
                               style=style, settlement=settlement))
    # build() sorts the rows (expiry, strike, calls first) and carries the quote columns along
    bid = np.concatenate(bids) if bids else np.array([])
    ask = np.concatenate(asks) if asks else np.array([])
    return OptionChain.build(underlying, spot, now, opts, bid=bid, ask=ask)
