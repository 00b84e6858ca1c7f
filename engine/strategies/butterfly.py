"""Butterfly and broken-wing butterfly: buy one lower wing, sell two at the body, buy one upper wing.

In a trader's words: when the regime is one we sell premium in and IV rank is at least ``iv_rank_entry``,
buy a butterfly centred on the strike nearest the spot (or ``center_offset`` dollars away from it) in the
expiry nearest 30 days out — a cheap, defined-risk bet that the underlying stays near the body while time
passes and vol stays put. Equal wings make a classic butterfly; unequal ones (``lower_width`` ≠
``upper_width``) make a broken-wing butterfly, which moves the risk to one side and can be opened for a
small debit or even a credit. Calls or puts (``right``). The worst case is known at entry (the debit,
plus the difference of the wings on the broken side), and the size is that worst case against the
per-trade risk budget — half of it (a butterfly often loses its whole debit, so it is sized small). Take profit at 25 % of the
maximum profit and close a week before expiry, when the body's gamma turns a small move into a large loss;
there is no stop by default — the debit is the most it can lose, and a stop on a fly's jumpy mark only
sells it at the natural on noise (``rules.stop_multiple`` turns one on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from engine.model import OptionChain, OrderIntent, Side
from engine.strategies.base import (
    REGIMES,
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    entry_marks,
    option_leg,
)
from engine.strategies.selection import premium_setup, row_at_strike
from engine.strategies.structures import (
    GreekBudget,
    budget_contracts,
    payoff_limits,
    priced_entry,
    spread_debit_limits,
)

BUTTERFLY_RULES = ManagementRules(profit_target=0.25, stop_multiple=None, dte_exit=7, regime_exits=())


class ButterflyParams(StrategyParams):
    rules: ManagementRules = BUTTERFLY_RULES
    right: Literal["call", "put"] = "call"
    iv_rank_entry: float = Field(0.3, ge=0, le=1)
    regimes: tuple[str, ...] = ("low_vol", "iv_contraction", "high_vol", "normal")
    dte_min: int = Field(21, ge=0)
    dte_max: int = Field(45, ge=0)
    dte_target: int | None = 30
    #: body strike = the listed strike nearest spot + this (dollars; negative below the spot)
    center_offset: float = 0.0
    lower_width: float = Field(10.0, gt=0)
    upper_width: float = Field(10.0, gt=0)
    #: a butterfly loses its whole debit often: half the per-trade risk budget per trade by default
    budget_use: float = Field(0.5, gt=0, le=1)
    max_contracts: int = Field(50, ge=1)
    greeks: GreekBudget = GreekBudget()

    @model_validator(mode="after")
    def _consistent(self) -> ButterflyParams:
        if self.dte_min > self.dte_max:
            raise ValueError(f"dte_min {self.dte_min} is above dte_max {self.dte_max}")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


class Butterfly(ManagedStrategy[ButterflyParams]):
    name = "butterfly"
    Params = ButterflyParams

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        setup = premium_setup(ctx, chain, p)
        if setup is None:
            return ()
        ivr, expiry = setup.iv_rank, setup.expiry
        rows = self.wings(chain, expiry)
        if rows is None:
            return ()
        lo, body, hi = rows
        legs = (option_leg(chain, lo, Side.BUY), replace(option_leg(chain, body, Side.SELL), ratio=2),
                option_leg(chain, hi, Side.BUY))
        marks = entry_marks(chain, legs)
        if marks is None:
            return ()
        _, natural = marks
        max_profit, max_loss = payoff_limits(legs, natural)
        if not (max_profit > 0 and math.isfinite(max_loss) and max_loss > 0):
            return ()
        qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_loss, chain.multiplier,
                               budget_use=p.budget_use, max_contracts=p.max_contracts)
        return priced_entry(self, ctx, chain, legs, qty, {
            "iv_rank": ivr, "body": float(chain.strike[body]), "lower_width": float(chain.strike[body] - chain.strike[lo]),
            "upper_width": float(chain.strike[hi] - chain.strike[body])})

    def wings(self, chain: OptionChain, expiry: np.datetime64) -> tuple[int, int, int] | None:
        """(lower, body, upper) rows: the body nearest spot + offset, the wings at exactly the widths."""
        p = self.params
        call = p.right == "call"
        rows = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & chain.valid_mask())[0]
        if len(rows) == 0:
            return None
        k = chain.strike[rows]
        body_k = float(k[np.argmin(np.abs(k - (chain.spot + p.center_offset)))])
        body = row_at_strike(chain, expiry, body_k, call=call)
        lo = row_at_strike(chain, expiry, body_k - p.lower_width, call=call)
        hi = row_at_strike(chain, expiry, body_k + p.upper_width, call=call)
        if body is None or lo is None or hi is None or not chain.bid[body] > 0:
            return None
        return lo, body, hi

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)
