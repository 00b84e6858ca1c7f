"""earnings_crush: sell the front month's inflated premium into an earnings announcement, buy it back after.

In a trader's words: before earnings the options of the expiry that spans the announcement carry the expected
move on top of their usual vol — their IV climbs into the date and collapses the morning after, whatever the
stock did. Sell that premium defined-risk: in the last ``entry_days`` (3) calendar days before the event, when
the front expiry's ATM IV is at least ``min_event_premium`` (3 vol points) above the next expiry's, sell an
iron condor (shorts at |Δ| ``short_delta``, wings ``width`` further out) or, with ``structure =
"iron_butterfly"``, the ATM straddle with wings ``width`` away, in the first expiry after the announcement
at least ``min_days_after`` (4) days after the event and within ``max_dte`` (21) days. Close on the first snapshot after the event (``event_passed``, at the natural at
once): the crush has happened and the gap is known; hold no longer. One trade per event. The most it can lose
is the wing width less the credit; the size is ``budget_use`` (half) of the per-trade risk budget over that,
then the Greek budget — a gap through a wing takes the whole loss, so half is the default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from engine.model import OptionChain, OrderIntent, Side
from engine.strategies.base import (
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
from engine.strategies.selection import atm_row, nearest_delta_row, wing_row
from engine.strategies.spec import BacktestSpec
from engine.strategies.structures import (
    GreekBudget,
    atm_iv,
    budget_contracts,
    payoff_limits,
    priced_entry,
    spread_debit_limits,
)

EARNINGS_RULES = ManagementRules(profit_target=0.5, stop_multiple=2.0, dte_exit=None, regime_exits=())
#: entries at the natural (inside the collar): there are only a few sessions before the event; the exit the
#: morning after goes at the natural at once
EARNINGS_PRICING = PriceWalk(start=1.0, urgent_exits=("stop", "event_passed", "regime_shift"))


class EarningsCrushParams(StrategyParams):
    underlying: str = "AAPL"
    rules: ManagementRules = EARNINGS_RULES
    pricing: PriceWalk = EARNINGS_PRICING
    structure: Literal["iron_condor", "iron_butterfly"] = "iron_condor"
    #: open in the last this-many calendar days before the announcement (0 = only on the event day's close)
    entry_days: int = Field(3, ge=0, le=30)
    #: the front expiry must settle at least this many calendar days after the event date (the trade is closed
    #: on the session after it: an expiry that day would leave no session to close it in) and within ``max_dte``
    min_days_after: int = Field(4, ge=1)
    max_dte: int = Field(21, ge=1)
    #: front ATM IV − next expiry's ATM IV, in vol (0.03 = 3 points): the event premium must be there
    min_event_premium: float = Field(0.03, ge=0)
    short_delta: float = Field(0.20, gt=0, lt=0.5)
    width: float = Field(10.0, gt=0)
    min_credit: float = Field(0.10, ge=0)
    budget_use: float = Field(0.5, gt=0, le=1)
    max_contracts: int = Field(50, ge=1)
    greeks: GreekBudget = GreekBudget()
    rate: float = 0.0
    dividend_yield: float = 0.0


def event_expiries(chain: OptionChain, today: date, event: date, max_dte: int,
                   min_days_after: int = 1) -> tuple[np.datetime64, np.datetime64] | None:
    """(front, next): the first expiry settling ``min_days_after`` days or more after the announcement on
    ``event`` (within ``max_dte`` days of ``today``) and the one after it; None when there is no such pair."""
    uniq = np.unique(chain.expiry)
    days = uniq.astype("datetime64[D]")
    after = np.nonzero(days >= np.datetime64(event, "D") + np.timedelta64(min_days_after, "D"))[0]
    if len(after) < 2:
        return None
    front = uniq[after[0]]
    if (days[after[0]] - np.datetime64(today, "D")).astype(int) > max_dte:
        return None
    return front, uniq[after[1]]


class EarningsCrush(ManagedStrategy[EarningsCrushParams]):
    name = "earnings_crush"
    Params = EarningsCrushParams
    #: SPY does not report: the simulated AAPL does, four times a year (the history carries its calendar)
    backtest_spec: ClassVar[BacktestSpec] = BacktestSpec(
        symbol="AAPL", why="an earnings trade needs a stock that reports: the "
        "simulated AAPL, with its earnings calendar")

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        self._events_done: set[int] = set()  # ordinals of the events a trade was opened into

    def state(self) -> dict[str, Any]:
        return {**super().state(), "events_done": sorted(self._events_done)}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._events_done = {int(x) for x in state.get("events_done", ())}

    def signal(self, ctx: StrategyContext, chain: OptionChain) -> tuple[date, np.datetime64, float] | None:
        """(event, front expiry, event premium in vol) when the strategy would sell into the next event."""
        p = self.params
        today = market_date(ctx.now())
        event = ctx.next_event(p.underlying)
        if event is None or not 0 <= (event - today).days <= p.entry_days or event.toordinal() in self._events_done:
            return None
        pair = event_expiries(chain, today, event, p.max_dte, p.min_days_after)
        if pair is None:
            return None
        kw = {"rate": p.rate, "dividend_yield": p.dividend_yield}
        premium = atm_iv(chain, pair[0], **kw) - atm_iv(chain, pair[1], **kw)
        if not (math.isfinite(premium) and premium >= p.min_event_premium):
            return None
        return event, pair[0], premium

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        sig = self.signal(ctx, chain)
        if sig is None:
            return ()
        event, front, premium = sig
        legs = self.structure_legs(chain, front)
        marks = None if legs is None else entry_marks(chain, legs)
        if marks is None:
            return ()
        credit = -marks[1]  # at the natural
        if not credit > p.min_credit:
            return ()
        _, max_loss = payoff_limits(legs, -credit)
        qty = budget_contracts(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_loss, chain.multiplier,
                               budget_use=p.budget_use, max_contracts=p.max_contracts)
        return priced_entry(self, ctx, chain, legs, qty, {"credit": credit, "event": float(event.toordinal()),
                                                          "event_premium": premium})

    def structure_legs(self, chain: OptionChain, expiry: np.datetime64):
        """Short put, long put wing, short call, long call wing; None when a strike is missing or the shorts cross."""
        p = self.params
        legs = []
        shorts = []
        for call in (False, True):
            if p.structure == "iron_butterfly":
                short = atm_row(chain, expiry, call=call)
            else:
                short = nearest_delta_row(chain, expiry, p.short_delta, call=call, rate=p.rate,
                                          dividend_yield=p.dividend_yield)
            if short is None:
                return None
            wing = wing_row(chain, expiry, float(chain.strike[short]), p.width, call=call)
            if wing is None:
                return None
            shorts.append(float(chain.strike[short]))
            legs += [option_leg(chain, short, Side.SELL), option_leg(chain, wing, Side.BUY)]
        if shorts[0] > shorts[1] or (p.structure == "iron_condor" and shorts[0] == shorts[1]):
            return None
        return tuple(legs)

    def on_order(self, ctx: StrategyContext, order, fills=()) -> Sequence[OrderIntent]:
        trade = self.trades.get(order.tag.split(":", 1)[0])
        out = super().on_order(ctx, order, fills)
        if trade is not None and fills and ":close" not in order.tag and "event" in trade.info:
            self._events_done.add(int(trade.info["event"]))
        return out

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        event = trade.info.get("event", math.nan)
        if math.isfinite(event) and market_date(ctx.now()).toordinal() > event:
            return "event_passed"
        return None

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)
