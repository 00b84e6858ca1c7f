"""IV-rank debit spread: the buy side of the IV-rank plan (trading-rules.md, "IV-rank credit and debit spreads").

In a trader's words: when options are cheap — IV rank below ``iv_rank_max`` (30 %) in a ``low_vol`` or
``iv_expansion`` regime — buy premium instead of selling it: a debit vertical in the expiry nearest 45 days
out, the long leg at |Δ| ``long_delta`` (at the money by default), the short leg ``width`` dollars further out
to pay for part of it. Calls by default (``right = "put"`` for the bearish version). Confidence is how cheap
vol is, (1 − IV rank) × the regime's buy factor; below ``min_confidence`` no trade, below
``half_size_below`` half size. The debit is the most the trade can lose; the size is the per-trade risk
budget divided by it, kept inside the Greek budget (half the profile's delta limit by default: a
directional spread hits the portfolio delta limit before its debit binds). Take profit at 50 % of the spread's maximum profit, stop when half the debit is lost,
close a week before expiry, and close on a turn from low to high volatility.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import Field, model_validator

from engine.model import OptionChain, OrderIntent
from engine.strategies.base import (
    REGIMES,
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    entry_marks,
    leg_option,
    market_date,
)
from engine.strategies.selection import pick_expiry
from engine.strategies.structures import (
    GreekBudget,
    budget_contracts,
    debit_vertical,
    priced_entry,
    spread_debit_limits,
)

DEBIT_RULES = ManagementRules(profit_target=0.5, stop_multiple=0.5, dte_exit=7,
                              regime_exits=(("low_vol", "high_vol"),))
BUY_CONFIDENCE_FACTOR = {"iv_expansion": 1.2, "low_vol": 1.0, "normal": 0.8, "iv_contraction": 0.6,
                         "high_vol": 0.5, "neutral": 0.0}


class DebitSpreadParams(StrategyParams):
    """What the debit-spread strategies share: the expiry, the strikes and the sizing."""

    rules: ManagementRules = DEBIT_RULES
    dte_min: int = Field(30, ge=0)
    dte_max: int = Field(60, ge=0)
    dte_target: int | None = 45
    long_delta: float = Field(0.50, gt=0, lt=1)
    width: float = Field(10.0, gt=0)
    #: the debit may be at most this fraction of the width (a spread costing nearly its width cannot pay)
    max_debit_fraction: float = Field(0.75, gt=0, lt=1)
    budget_use: float = Field(1.0, gt=0, le=1)
    max_contracts: int = Field(50, ge=1)
    greeks: GreekBudget = GreekBudget()
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _dte_order(self) -> DebitSpreadParams:
        if self.dte_min > self.dte_max:
            raise ValueError(f"dte_min {self.dte_min} is above dte_max {self.dte_max}")
        return self


#: the parameters of any debit-spread strategy (:func:`debit_spread_entry` serves them all)
DP = TypeVar("DP", bound=DebitSpreadParams)


class IVRankDebitParams(DebitSpreadParams):
    right: Literal["call", "put"] = "call"
    iv_rank_max: float = Field(0.30, ge=0, le=1)
    regimes: tuple[str, ...] = ("low_vol", "iv_expansion")
    min_confidence: float = Field(0.6, ge=0, le=1)
    half_size_below: float = Field(0.75, ge=0, le=1)
    confidence_factors: dict[str, float] = Field(default_factory=lambda: dict(BUY_CONFIDENCE_FACTOR))

    @model_validator(mode="after")
    def _known_regimes(self) -> IVRankDebitParams:
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


def buy_confidence(iv_rank: float, regime: str, factors: dict[str, float]) -> float:
    """How cheap vol is, weighted by the regime: (1 − IV rank) × factor, capped at 0.98."""
    return min((1.0 - iv_rank) * factors.get(regime, 0.0), 0.98)


def debit_spread_entry(strategy: ManagedStrategy[DP], ctx: StrategyContext, chain: OptionChain, *, call: bool,
                       factor: float, info: dict[str, float]) -> list[tuple[OpenTrade, OrderIntent]]:
    """The debit vertical of ``strategy``'s parameters (``DebitSpreadParams``), sized by the risk budget × factor."""
    p = strategy.params
    expiry = pick_expiry(chain, market_date(ctx.now()), p.dte_min, p.dte_max, p.dte_target)
    if expiry is None:
        return []
    legs = debit_vertical(chain, expiry, call=call, long_delta=p.long_delta, width=p.width, rate=p.rate,
                          dividend_yield=p.dividend_yield)
    if legs is None:
        return []
    marks = entry_marks(chain, legs)
    if marks is None:
        return []
    width = abs(float(leg_option(legs[0]).strike - leg_option(legs[1]).strike))
    debit = marks[1]  # at the natural: the most this attempt can cost
    if not 0 < debit <= p.max_debit_fraction * width:
        return []
    qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, debit, chain.multiplier,
                           factor=factor, budget_use=p.budget_use, max_contracts=p.max_contracts)
    return priced_entry(strategy, ctx, chain, legs, qty, {"width": width, "debit": debit, **info}, factor=factor)


class IVRankDebit(ManagedStrategy[IVRankDebitParams]):
    name = "iv_rank_debit"
    Params = IVRankDebitParams

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        regime = ctx.regime(p.underlying)
        if regime not in p.regimes:
            return ()
        ivr = ctx.iv_rank(p.underlying)
        if not (math.isfinite(ivr) and ivr < p.iv_rank_max):
            return ()
        conf = buy_confidence(ivr, regime, p.confidence_factors)
        if conf < p.min_confidence:
            return ()
        factor = 0.5 if conf < p.half_size_below else 1.0
        return debit_spread_entry(self, ctx, chain, call=p.right == "call", factor=factor,
                                  info={"iv_rank": ivr, "confidence": conf})

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)
