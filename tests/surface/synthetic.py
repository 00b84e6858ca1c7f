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


def svi_price_fn(params_of_T: Callable[[float], tuple[float, float, float, float, float]], *, spot: float,
                 r: float, q: float) -> Callable[[np.ndarray, np.ndarray, float], np.ndarray]:
    """European BSM prices on a raw-SVI smile w(k; params_of_T(T)), k = ln(K/F), F = S·e^{(r−q)T}."""
    from engine.pricing import bsm
    from engine.surface.svi import svi_total_variance

    def price(is_call: np.ndarray, K: np.ndarray, T: float) -> np.ndarray:
        F = spot * np.exp((r - q) * T)
        w = svi_total_variance(np.log(K / F), *params_of_T(T))
        return bsm.price(is_call, spot, K, T, r, q, np.sqrt(w / T))

    return price


def flat_price_fn(vol: float, *, spot: float, r: float, q: float, american: bool = False):
    """Prices at one flat vol (European BSM or the pricing core's American)."""
    from engine.pricing import american as am
    from engine.pricing import bsm

    def price(is_call: np.ndarray, K: np.ndarray, T: float) -> np.ndarray:
        if american:
            return am.price(is_call, spot, K, T, r, q, vol)
        return bsm.price(is_call, spot, K, T, r, q, vol)

    return price


def log_strikes(lo_sd: float = -2.5, hi_sd: float = 2.0, n: int = 40, *, spot: float = 100.0, vol: float = 0.25,
                r: float = 0.0, q: float = 0.0) -> Callable[[float], np.ndarray]:
    """Strikes evenly spaced in log-moneyness from lo_sd to hi_sd ATM standard deviations (vol·√T)."""

    def strikes(T: float) -> np.ndarray:
        F = spot * np.exp((r - q) * T)
        sd = vol * np.sqrt(T)
        return F * np.exp(np.linspace(lo_sd * sd, hi_sd * sd, n))

    return strikes


def equity_like_params(T: float) -> tuple[float, float, float, float, float]:
    """A calendar- and butterfly-free family of raw-SVI slices with an equity put skew."""
    return (0.02 * T + 0.001, 0.12 * np.sqrt(T) + 0.03, -0.55, 0.05, 0.08 + 0.1 * np.sqrt(T))


#: SPX-like Heston parameters (v0, κ, θ, ξ, ρ): steep put skew, short-dated smiles that curve hard
SPX_HESTON = (0.02, 2.0, 0.045, 0.55, -0.75)


def spx_expiry_days(n: int = 48) -> list[int]:
    """Expiry days in the shape of SPX's listing: 15 dailies, 10 weeklies, 9 monthlies, then out to 5 years.

    Fewer than 48 takes an even spread of those (the dailies, where fits cross, stay represented).
    """
    days = list(range(1, 16)) + list(range(21, 85, 7)) + list(range(105, 346, 30))
    days += [round(float(d)) for d in np.linspace(435, 1825, 14)]
    if n >= len(days):
        return days
    pick = np.unique(np.round(np.linspace(0, len(days) - 1, n)).astype(int))
    return [days[i] for i in pick]


def spx_like_chain(n_expiries: int = 48, n_strikes: int = 208, *, spot: float = 5000.0, r: float = 0.045,
                   q: float = 0.013, tick: float = 0.05, now: datetime = NOW) -> OptionChain:
    """An SPX-size chain: ``n_expiries`` × ``n_strikes`` strikes × call and put (48 × 208 × 2 = 19,968 rows).

    Heston prices (:data:`SPX_HESTON`) on strikes rounded to the index's 5-point grid, spanning −5 to +2.5
    ATM standard deviations; bid/ask are the model price ∓ max(one tick, 1.5 %), rounded outwards to the
    0.05 tick, so deep out-of-the-money quotes carry the tick noise that makes real fits arbitrage-prone.
    """
    from engine.pricing import heston

    vol = float(np.sqrt(SPX_HESTON[2]))
    days = spx_expiry_days(n_expiries)

    def strikes(T: float) -> np.ndarray:
        F = spot * np.exp((r - q) * T)
        sd = vol * np.sqrt(max(T, 1.0 / 365.0))
        raw = F * np.exp(np.linspace(-5.0 * sd, 2.5 * sd, n_strikes))
        grid = np.round(raw / 5.0) * 5.0
        # keep n_strikes distinct strikes: where rounding merges neighbours, fall back to 0.05-rounding
        return grid if len(np.unique(grid)) == n_strikes else np.round(raw, 2)

    def price(is_call: np.ndarray, K: np.ndarray, T: float) -> np.ndarray:
        return heston.price(is_call, spot, K, T, r, q, *SPX_HESTON)

    def quotes(p: np.ndarray) -> np.ndarray:
        return np.maximum(tick, 0.015 * p)

    chain = build_chain(spot=spot, expiries=expiry_dates(days, now), strikes=strikes, price=price,
                        half_spread=quotes, now=now)
    bid = np.floor(np.maximum(chain.bid, 0.0) / tick + 1e-9) * tick
    ask = np.ceil(chain.ask / tick - 1e-9) * tick
    return chain.with_quotes(bid, ask)
