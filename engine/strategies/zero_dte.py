"""Zero-DTE: defined-risk premium selling on the expiry that settles today, out before the close.

In a trader's words: on a day with an expiry at today's close, between ``entry_after`` (10:00 New York,
after the opening swings) and ``entry_before`` (14:00), sell an iron condor — or just its put or call credit
spread (``structure``) — with the short strikes at |Δ| ``short_delta`` and the wings ``width`` dollars further
out. One trade a day (``max_trades_per_day``). The wings cap the loss at width − credit; the size is the
per-trade risk budget divided by it. Same-day options leave no time to walk a price across sessions, so the
entry goes at the natural (as far as the price collar allows) and every exit at the natural at once: take
profit at 50 % of the credit, stop at a loss of twice the credit, and a hard time exit at ``exit_at`` (15:30)
whatever the P&L — the position is never left to the closing print and settlement.

A daily backtest sees each session at its close, when the day's expiry has already gone, so it finds nothing
to trade: run this strategy on an intraday history (``optiondesk backtest --intraday 30``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from engine.model import OptionChain, OrderIntent, Side
from engine.model.instruments import NEW_YORK
from engine.strategies.base import (
    REGIMES,
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    PriceWalk,
    StrategyContext,
    StrategyParams,
    entry_marks,
    market_date,
    option_leg,
)
from engine.strategies.selection import nearest_delta_row, pick_expiry, wing_row
from engine.strategies.spec import BacktestSpec
from engine.strategies.structures import (
    GreekBudget,
    budget_contracts,
    payoff_limits,
    priced_entry,
    spread_debit_limits,
)

ZERO_DTE_RULES = ManagementRules(profit_target=0.5, stop_multiple=2.0, dte_exit=None, regime_exits=())
#: same day: entries at the natural (inside the collar), every exit at the natural at once
ZERO_DTE_PRICING = PriceWalk(start=1.0, urgent_exits=("profit_target", "stop", "regime_shift", "time_exit"))


class ZeroDTEParams(StrategyParams):
    rules: ManagementRules = ZERO_DTE_RULES
    pricing: PriceWalk = ZERO_DTE_PRICING
    structure: Literal["iron_condor", "put_spread", "call_spread"] = "iron_condor"
    short_delta: float = Field(0.10, gt=0, lt=0.5)
    width: float = Field(5.0, gt=0)
    min_credit: float = Field(0.05, ge=0)
    entry_after: time = time(10, 0)
    entry_before: time = time(14, 0)
    exit_at: time = time(15, 30)
    max_trades_per_day: int = Field(1, ge=1)
    #: a same-day trade does not outlive the regime it was opened in: every regime by default
    regimes: tuple[str, ...] = REGIMES
    budget_use: float = Field(1.0, gt=0, le=1)
    max_contracts: int = Field(50, ge=1)
    #: a same-day condor's theta is its whole purpose and lives for hours: the full Moderate theta limit
    greeks: GreekBudget = GreekBudget(theta_fraction=0.004)
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _window(self) -> ZeroDTEParams:
        if not self.entry_after < self.entry_before <= self.exit_at:
            raise ValueError(f"need entry_after < entry_before <= exit_at, got {self.entry_after}, "
                             f"{self.entry_before}, {self.exit_at}")
        if self.rules.dte_exit is not None:
            raise ValueError("rules.dte_exit must be none for same-day trades (0 days are left at entry)")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


class ZeroDTE(ManagedStrategy[ZeroDTEParams]):
    name = "zero_dte"
    Params = ZeroDTEParams
    #: a daily close comes after the day's expiry has settled: the table replays a quarter of 30-minute snapshots
    backtest_spec: ClassVar[BacktestSpec] = BacktestSpec(
        years=0.25, intraday_minutes=30, why="same-day expiries trade inside the session: intraday snapshots, "
        "over the span five years of daily runs cost")
    manage_on_expiry_day = True

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        now = ctx.now()
        local = now.astimezone(NEW_YORK).time()
        if not p.entry_after <= local < p.entry_before or ctx.regime(p.underlying) not in p.regimes:
            return ()
        today = market_date(now)
        # same-day trades do not count in the base's open-trade limit (which skips trades settling today)
        if len(self.active_trades()) >= p.max_open_trades:
            return ()
        if sum(1 for t in self.trades.values() if t.expiry == today) >= p.max_trades_per_day:
            return ()
        expiry = pick_expiry(chain, today, 0, 0)
        if expiry is None:
            return ()
        legs = self.structure_legs(chain, expiry)
        marks = None if legs is None else entry_marks(chain, legs)
        if marks is None:
            return ()
        credit = -marks[1]  # at the natural
        if not credit > p.min_credit:
            return ()
        _, max_loss = payoff_limits(legs, -credit)
        qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_loss, chain.multiplier,
                               budget_use=p.budget_use, max_contracts=p.max_contracts)
        return priced_entry(self, ctx, chain, legs, qty, {"credit": credit})

    def structure_legs(self, chain: OptionChain, expiry: np.datetime64):
        """The legs of the configured structure (short legs first on each side), or None when a strike is missing."""
        p = self.params
        kw = {"rate": p.rate, "dividend_yield": p.dividend_yield}
        legs = []
        sides = {"iron_condor": (False, True), "put_spread": (False,), "call_spread": (True,)}[p.structure]
        shorts = []
        for call in sides:
            short = nearest_delta_row(chain, expiry, p.short_delta, call=call, **kw)
            if short is None:
                return None
            wing = wing_row(chain, expiry, float(chain.strike[short]), p.width, call=call)
            if wing is None:
                return None
            shorts.append(float(chain.strike[short]))
            legs += [option_leg(chain, short, Side.SELL), option_leg(chain, wing, Side.BUY)]
        if len(shorts) == 2 and shorts[0] >= shorts[1]:
            return None  # the put and call shorts crossed: no room for a condor today
        return tuple(legs)

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        now = ctx.now()
        if trade.expiry <= market_date(now) and now.astimezone(NEW_YORK).time() >= self.params.exit_at:
            return "time_exit"
        return None

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)
