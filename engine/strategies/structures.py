"""Building blocks shared by the option-only strategies: the expiry payoff of a combo, risk-budget sizing,
ATM implied vol of one expiry, the debit vertical, and turning legs into a priced opening intent.

Kept apart from :mod:`engine.strategies.base` (the API) and :mod:`engine.strategies.selection` (picking
contracts) because these encode trading decisions — how much of the risk budget a structure may use, which
strikes form a debit spread — that several strategies make the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.model import Leg, OptionChain, OrderIntent, Side
from engine.model.instruments import Option
from engine.strategies.base import (
    ManagedStrategy,
    OpenTrade,
    StrategyContext,
    entry_marks,
    leg_expiry,
    option_leg,
)
from engine.strategies.selection import nearest_delta_row, wing_row


def expiry_payoff(legs: Sequence[Leg], prices: np.ndarray) -> np.ndarray:
    """Value per unit of the combo at expiry for each underlying price in ``prices`` (legs of one expiry)."""
    out = np.zeros(len(prices))
    for leg in legs:
        inst = leg.instrument
        if not isinstance(inst, Option):
            raise ValueError(f"expiry_payoff takes option legs only, got {leg.symbol}")
        k = float(inst.strike)
        intrinsic = np.maximum(prices - k, 0.0) if inst.is_call else np.maximum(k - prices, 0.0)
        out += leg.signed_ratio * intrinsic
    return out


def payoff_limits(legs: Sequence[Leg], entry_net: float) -> tuple[float, float]:
    """(max profit, max loss) per unit of a same-expiry combo bought at ``entry_net`` (debit > 0, credit < 0).

    The payoff is piecewise linear with kinks at the strikes, so its extremes over [0, ∞) sit at 0, a strike
    or infinity; a payoff still rising (falling) past the top strike has an infinite max profit (loss).
    """
    strikes = sorted({float(leg.instrument.strike) for leg in legs if isinstance(leg.instrument, Option)})
    if not strikes:
        raise ValueError("payoff_limits needs at least one option leg")
    top = strikes[-1]
    grid = np.array([0.0, *strikes, top + 1.0])
    values = expiry_payoff(legs, grid)
    slope_up = values[-1] - values[-2]  # per dollar above the top strike
    hi = math.inf if slope_up > 1e-12 else float(values.max())
    lo = -math.inf if slope_up < -1e-12 else float(values.min())
    return hi - entry_net, entry_net - lo


def budget_contracts(net_liq: float, risk_per_trade: float, loss_per_unit: float, multiplier: int, *,
                     factor: float = 1.0, budget_use: float = 1.0, max_contracts: int = 100) -> int:
    """Contracts whose combined worst loss fits ``budget_use`` × the per-trade risk budget, × ``factor``.

    Unlike :func:`engine.strategies.iv_rank_put_spread.contracts_for` there is no floor of one: a structure
    whose single contract would break the budget is not traded, because the risk engine would deny it.
    """
    if not (loss_per_unit > 0 and math.isfinite(loss_per_unit) and net_liq > 0 and factor > 0):
        return 0
    n = math.floor(net_liq * risk_per_trade * budget_use / (loss_per_unit * multiplier) * factor + 1e-9)
    return max(0, min(n, max_contracts))


def atm_iv(chain: OptionChain, expiry: np.datetime64, *, rate: float = 0.0, dividend_yield: float = 0.0) -> float:
    """Implied vol at the strike nearest spot for ``expiry``: the mean of the call's and the put's (vendor IV
    when the chain has it, else Black-Scholes-Merton on the mid). NaN when neither has a usable quote."""
    rows = np.nonzero((chain.expiry == expiry) & chain.valid_mask())[0]
    if len(rows) == 0:
        return math.nan
    k = chain.strike[rows]
    atm = rows[np.abs(k - k[np.argmin(np.abs(k - chain.spot))]) < 1e-9]
    vols = np.full(len(atm), np.nan)
    vendor = chain.vendor.get("vendor_iv")
    if vendor is not None:
        vols = vendor[atm].astype(float).copy()
    need = ~np.isfinite(vols)
    if need.any():
        from engine.pricing import bsm

        r = atm[need]
        t = chain.time_to_expiry()[r]
        right = np.where(chain.is_call[r], "c", "p")
        vols[need] = bsm.implied_vol(chain.mid[r], right, chain.spot, chain.strike[r], t, rate, dividend_yield)
    vols = vols[np.isfinite(vols) & (vols > 0)]
    return float(vols.mean()) if len(vols) else math.nan


def debit_vertical(chain: OptionChain, expiry: np.datetime64, *, call: bool, long_delta: float, width: float,
                   rate: float = 0.0, dividend_yield: float = 0.0) -> tuple[Leg, Leg] | None:
    """(long leg, short leg) of a debit vertical: buy the |Δ| ``long_delta`` option, sell the one ``width``
    further out of the money (higher for calls, lower for puts). None when a strike is missing."""
    long_row = nearest_delta_row(chain, expiry, long_delta, call=call, rate=rate, dividend_yield=dividend_yield)
    if long_row is None:
        return None
    short_row = wing_row(chain, expiry, float(chain.strike[long_row]), width, call=call)
    if short_row is None or not chain.bid[short_row] > 0:
        return None
    return option_leg(chain, long_row, Side.BUY), option_leg(chain, short_row, Side.SELL)


def priced_entry(strategy: ManagedStrategy, ctx: StrategyContext, chain: OptionChain, legs: Sequence[Leg],
                 quantity: int, info: dict[str, float], *, factor: float = 1.0) -> list[tuple[OpenTrade, OrderIntent]]:
    """One new trade and its opening intent, priced by the strategy's walk from mid toward natural inside the
    collar, its size cut to the strategy's :class:`GreekBudget` (``params.greeks``, × ``factor``); nothing when
    a leg has no usable quote or the size comes to zero."""
    budget = getattr(strategy.params, "greeks", None)
    if budget is not None and quantity > 0:
        p = strategy.params
        greeks = combo_greeks(chain, legs, rate=getattr(p, "rate", 0.0), dividend_yield=getattr(p, "dividend_yield", 0.0))
        quantity = min(quantity, budget.cap(greeks, ctx.net_liquidation(), factor))
    if quantity <= 0:
        return []
    marks = entry_marks(chain, legs)
    if marks is None:
        return []
    tag = strategy.new_tag()
    trade = OpenTrade(tag=tag, legs=tuple(legs), quantity=quantity, expiry=leg_expiry(legs), info=dict(info))
    price = strategy.entry_price(ctx, *marks, float(legs[0].instrument.tick_size))
    return [(trade, strategy.intent(legs, quantity, price, f"{tag}:open"))]


def spread_debit_limits(trade: OpenTrade) -> None:
    """Max profit / loss of a same-expiry trade from its legs' expiry payoff and its fill price."""
    trade.max_profit, trade.max_loss = payoff_limits(trade.legs, trade.entry_net)



class GreekBudget(BaseModel):
    """How much of the risk profile's portfolio Greek limits one new trade may use (rule data).

    The risk engine denies an entry whose *projected* portfolio delta, gamma, vega or theta passes the profile's
    limit; a strategy that sized only by max loss would see its entries denied whenever a Greek binds first
    (a directional spread's delta, a strangle's vega, a same-day condor's theta). Defaults: half the Moderate
    limits (100 shares of delta, 50 of gamma, 1 % of net liquidation of vega per vol point, 0.4 % of theta per
    day), leaving room for what is already held.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delta_shares: float = Field(50.0, gt=0)
    gamma_shares: float = Field(25.0, gt=0)
    vega_fraction: float = Field(0.005, gt=0)
    theta_fraction: float = Field(0.002, gt=0)

    def cap(self, greeks: dict[str, float], net_liq: float, factor: float = 1.0) -> int:
        """Most units whose |Greek| × units stays within the budget (× ``factor``) on every Greek; a Greek that
        is 0 or could not be computed does not cap."""
        limits = {"delta": self.delta_shares, "gamma": self.gamma_shares, "vega": self.vega_fraction * net_liq,
                  "theta": self.theta_fraction * net_liq}
        n = 1_000_000
        for name, limit in limits.items():
            per_unit = abs(greeks.get(name, math.nan))
            if math.isfinite(per_unit) and per_unit > 1e-12:
                n = min(n, math.floor(limit * factor / per_unit + 1e-9))
        return max(n, 0)


def combo_greeks(chain: OptionChain, legs: Sequence[Leg], *, rate: float = 0.0,
                 dividend_yield: float = 0.0) -> dict[str, float]:
    """Delta and gamma (underlying shares, per $), vega ($ per vol point) and theta ($ per day) of one unit of the
    combo: Black-Scholes-Merton at each leg's vendor IV (else its mid's implied vol) × the multiplier. Empty when
    a leg is not in the chain."""
    from engine.pricing import bsm

    try:
        r = np.array([chain.row_of(leg.symbol) for leg in legs], dtype=np.int64)
    except KeyError:
        return {}
    t = chain.time_to_expiry()[r]
    right = np.where(chain.is_call[r], "c", "p")
    vendor = chain.vendor.get("vendor_iv")
    vol = vendor[r].astype(float) if vendor is not None else np.full(len(r), np.nan)
    need = ~np.isfinite(vol)
    if need.any():
        vol[need] = bsm.implied_vol(chain.mid[r][need], right[need], chain.spot, chain.strike[r][need], t[need],
                                    rate, dividend_yield)
    g = bsm.greeks(right, chain.spot, chain.strike[r], t, rate, dividend_yield, vol,
                   outputs=("delta", "gamma", "vega", "theta"))
    w = np.array([leg.signed_ratio for leg in legs], float) * chain.multiplier
    return {name: float(w @ np.asarray(getattr(g, name), float)) for name in ("delta", "gamma", "vega", "theta")}
