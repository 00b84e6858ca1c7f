"""Cboe PUT-style put-write, the reference benchmark: sell the monthly ATM put, cash-secured, hold to expiry.

Each time the previous put has expired and settled — the session after its expiry (or on the first day) —
sell the at-the-money put of the next standard monthly expiry (DTE in [``dte_min``, ``dte_max``]). Cash-secured: contracts =
floor(net liq × ``cash_fraction`` ÷ (strike × multiplier)). No early exits by default (the index holds
to settlement); the management rules can be switched on for variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from engine.model import OptionChain, OrderIntent, Side
from engine.strategies.base import (
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    leg_expiry,
    market_date,
    option_leg,
)
from engine.strategies.selection import atm_row, pick_expiry

HOLD_TO_EXPIRY = ManagementRules(profit_target=None, stop_multiple=None, dte_exit=None, regime_exits=())


class PutWriteParams(StrategyParams):
    rules: ManagementRules = HOLD_TO_EXPIRY
    underlying: str = "SPX"
    dte_min: int = Field(14, ge=0)
    dte_max: int = Field(45, ge=0)
    monthly_only: bool = True
    cash_fraction: float = Field(1.0, gt=0, le=1)
    limit_fraction: float = Field(1.0, gt=0, le=1.5)  # of the bid, for limit orders
    #: the index sells near the bid; a market order does exactly that (with the exchange's slippage)
    market_orders: bool = True


class PutWrite(ManagedStrategy[PutWriteParams]):
    name = "put_write"
    Params = PutWriteParams
    #: A cash-secured put can lose its strike: one SPY put is most of a $100k account, far over the 2 %
    #: max loss per trade and 25 % position size of the Moderate profile, so under the slider's limits this
    #: benchmark would never trade. It runs as the index benchmark it is — unlevered and cash-secured (buying
    #: power still checks that the strike is covered): the whole account at risk per trade and in the
    #: position, the delta of a fully secured position (at most net liq ÷ spot shares: ~330 SPY shares for
    #: $100k at $300), and the index's drawdowns (a bear market, not a 25 % kill-switch halt); daily loss,
    #: vega, theta, leverage and buying power stay at the profile. A backtest names these limits in its
    #: summary (docs/backtest.md, docs/trading-rules.md). Live, the user's profile decides.
    risk_limits: ClassVar[dict[str, float]] = {"risk_per_trade_pct": 1.0, "max_position_pct": 1.0,
                                               "max_delta": 1000.0, "max_drawdown_pct": 0.5}

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        today = market_date(ctx.now())
        if any(t.expiry <= today for t in self.active_trades()):
            # the expiring put settles at today's close (assigned shares are sold the next session): the next
            # one is sold after that, so the two are never held together — an in-the-money put about to be
            # assigned carries a full 100 delta per contract, and the pair would break the delta limit
            return ()
        expiry = pick_expiry(chain, today, p.dte_min, p.dte_max, p.dte_min, monthly_only=p.monthly_only)
        if expiry is None:
            return ()
        row = atm_row(chain, expiry, call=False)
        if row is None or not chain.bid[row] > 0:
            return ()
        strike = float(chain.strike[row])
        qty = int(ctx.net_liquidation() * p.cash_fraction // (strike * chain.multiplier))
        if qty <= 0:
            return ()
        legs = (option_leg(chain, row, Side.SELL),)
        tag = self.new_tag()
        credit = float(chain.bid[row])
        trade = OpenTrade(tag=tag, legs=legs, quantity=qty, expiry=leg_expiry(legs),
                          info={"width": strike, "credit": credit})
        price = None if p.market_orders else -p.limit_fraction * credit
        return [(trade, self.intent(legs, qty, price, f"{tag}:open"))]
