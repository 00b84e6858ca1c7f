"""Calendar and double calendar on the term structure: sell the front month, buy the back month, same strike.

In a trader's words: compare the at-the-money implied vol of the front expiry (about a month out) with that
of the back expiry (about a month later). When the front trades at least ``min_front_premium`` vol points
above the back (an inverted or flat term structure: the near month is rich), sell the front and buy the back
at the strike nearest the spot — a calendar, long vega in the back, short the rich front's time value. A
double calendar (``double``) puts a put calendar ``double_offset`` dollars below the spot and a call
calendar as far above it, for a wider profit tent. The debit is the most the trade can lose (the back
month is worth at least the front at the same strike), so the size is the per-trade risk budget divided
by the debit. Take profit at 25 % of the debit, stop at half the debit lost, close a week before the front
expires, and close at once if the front's premium over the back has gone (the term structure normalised).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np
from pydantic import Field, model_validator

from engine.model import OptionChain, OrderIntent, Side
from engine.model.instruments import Option
from engine.strategies.base import (
    REGIMES,
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    entry_marks,
    market_date,
    option_leg,
)
from engine.strategies.selection import pick_expiry, row_at_strike
from engine.strategies.structures import GreekBudget, atm_iv, budget_contracts, priced_entry

CALENDAR_RULES = ManagementRules(profit_target=0.25, stop_multiple=0.5, dte_exit=7, regime_exits=())


class CalendarParams(StrategyParams):
    rules: ManagementRules = CALENDAR_RULES
    regimes: tuple[str, ...] = ("low_vol", "iv_contraction", "high_vol", "iv_expansion", "normal")
    front_dte_min: int = Field(20, ge=1)
    front_dte_max: int = Field(40, ge=1)
    front_dte_target: int | None = 30
    #: the back expiry is the one nearest front DTE + back_gap days, at least back_gap_min later
    back_gap: int = Field(30, ge=1)
    back_gap_min: int = Field(14, ge=1)
    back_gap_max: int = Field(70, ge=1)
    #: enter when front ATM IV − back ATM IV ≥ this (vol as a fraction: 0.01 = 1 point)
    min_front_premium: float = 0.0
    #: close an open calendar when the front's premium falls below this (None: no such exit)
    exit_front_premium: float | None = -0.02
    double: bool = False
    double_offset: float = Field(10.0, gt=0)
    #: single calendar: strike = the listed strike nearest spot + this
    strike_offset: float = 0.0
    budget_use: float = Field(1.0, gt=0, le=1)
    max_contracts: int = Field(50, ge=1)
    greeks: GreekBudget = GreekBudget()
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> CalendarParams:
        if self.front_dte_min > self.front_dte_max:
            raise ValueError(f"front_dte_min {self.front_dte_min} is above front_dte_max {self.front_dte_max}")
        if not self.back_gap_min <= self.back_gap <= self.back_gap_max:
            raise ValueError(f"back_gap {self.back_gap} must lie in [back_gap_min {self.back_gap_min}, "
                             f"back_gap_max {self.back_gap_max}]")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


class Calendar(ManagedStrategy[CalendarParams]):
    name = "calendar"
    Params = CalendarParams

    def expiries(self, chain: OptionChain, today: date) -> tuple[np.datetime64, np.datetime64] | None:
        """(front, back) expiries for today, or None when the chain lacks a pair."""
        p = self.params
        front = pick_expiry(chain, today, p.front_dte_min, p.front_dte_max, p.front_dte_target)
        if front is None:
            return None
        front_days = int((front.astype("datetime64[D]") - np.datetime64(today, "D")).astype(np.int64))
        back = pick_expiry(chain, today, front_days + p.back_gap_min, front_days + p.back_gap_max,
                           front_days + p.back_gap)
        return None if back is None else (front, back)

    def term_premium(self, chain: OptionChain, today: date) -> tuple[float, np.datetime64, np.datetime64] | None:
        """(front ATM IV − back ATM IV, front, back), or None without a usable pair."""
        pair = self.expiries(chain, today)
        if pair is None:
            return None
        kw = {"rate": self.params.rate, "dividend_yield": self.params.dividend_yield}
        front_iv, back_iv = atm_iv(chain, pair[0], **kw), atm_iv(chain, pair[1], **kw)
        if not (math.isfinite(front_iv) and math.isfinite(back_iv)):
            return None
        return front_iv - back_iv, pair[0], pair[1]

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        if ctx.regime(p.underlying) not in p.regimes:
            return ()
        got = self.term_premium(chain, market_date(ctx.now()))
        if got is None or got[0] < p.min_front_premium:
            return ()
        premium, front, back = got
        if p.double:
            pairs = [(chain.spot - p.double_offset, False), (chain.spot + p.double_offset, True)]
        else:
            pairs = [(chain.spot + p.strike_offset, True)]
        legs = []
        for target, call in pairs:
            rows = np.nonzero((chain.expiry == front) & (chain.is_call == call) & chain.valid_mask()
                              & (chain.bid > 0))[0]
            if len(rows) == 0:
                return ()
            k = float(chain.strike[rows][np.argmin(np.abs(chain.strike[rows] - target))])
            back_row = row_at_strike(chain, back, k, call=call)
            if back_row is None:
                return ()
            legs += [option_leg(chain, int(rows[np.argmin(np.abs(chain.strike[rows] - target))]), Side.SELL),
                     option_leg(chain, back_row, Side.BUY)]
        marks = entry_marks(chain, legs)
        if marks is None or not marks[1] > 0:
            return ()  # a calendar is bought for a debit
        qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, marks[1], chain.multiplier,
                               budget_use=p.budget_use, max_contracts=p.max_contracts)
        return priced_entry(self, ctx, chain, legs, qty, {"front_premium": premium})

    def update_limits(self, trade: OpenTrade) -> None:
        """The debit is the max loss; the profit target is measured against the debit (a calendar's best case
        depends on the back month's vol at the front's expiry, so it has no fixed maximum)."""
        trade.max_loss = max(trade.entry_net, 0.0)
        trade.max_profit = max(trade.entry_net, 0.0)

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        """``term_structure`` when the trade's own front expiry no longer trades ``exit_front_premium`` above its
        back expiry."""
        floor = self.params.exit_front_premium
        chain = self._last_chain
        if floor is None or chain is None:
            return None
        days = sorted({leg.instrument.expiry for leg in trade.legs if isinstance(leg.instrument, Option)})
        if len(days) < 2:
            return None
        listed = chain.expiry.astype("datetime64[D]")
        kw = {"rate": self.params.rate, "dividend_yield": self.params.dividend_yield}
        ivs = []
        for d in (days[0], days[-1]):
            hit = np.nonzero(listed == np.datetime64(d, "D"))[0]
            ivs.append(atm_iv(chain, chain.expiry[hit[0]], **kw) if len(hit) else math.nan)
        premium = ivs[0] - ivs[1]
        return "term_structure" if math.isfinite(premium) and premium < floor else None
