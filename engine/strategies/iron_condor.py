"""Iron condor: short put and short call at target |delta|, long wings a fixed width further out (the
nearest listed strike beyond the short when the exact one is not listed).

Entry when flat, the regime is one of ``regimes`` and IV rank ≥ ``iv_rank_entry``; size by max risk
(width − credit per unit) like the put spread; same management rules (profit target on the whole
condor's credit, stop at a multiple of the credit, DTE exit, regime-shift exit).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from engine.model import OptionChain, OrderIntent, Side
from engine.strategies.base import (
    ManagedStrategy,
    OpenTrade,
    StrategyContext,
    StrategyParams,
    entry_marks,
    leg_expiry,
    option_leg,
)
from engine.strategies.iv_rank_put_spread import contracts_for
from engine.strategies.selection import nearest_delta_row, premium_setup, wing_row


class IronCondorParams(StrategyParams):
    iv_rank_entry: float = Field(0.5, ge=0, le=1)
    regimes: tuple[str, ...] = ("low_vol", "iv_contraction", "high_vol", "normal")
    dte_min: int = Field(30, ge=0)
    dte_max: int = Field(45, ge=0)
    dte_target: int | None = None
    short_delta: float = Field(0.16, gt=0, lt=0.5)
    width: float = Field(5.0, gt=0)
    min_credit: float = Field(0.0, ge=0)
    size_factors: dict[str, float] = Field(default_factory=lambda: {
        "low_vol": 1.0, "high_vol": 0.5, "iv_expansion": 0.75, "iv_contraction": 1.0, "neutral": 0.0, "normal": 1.0})
    max_contracts: int = Field(100, ge=1)
    rate: float = 0.0
    dividend_yield: float = 0.0


class IronCondor(ManagedStrategy[IronCondorParams]):
    name = "iron_condor"
    Params = IronCondorParams

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        setup = premium_setup(ctx, chain, p)
        if setup is None:
            return ()
        regime, ivr, expiry = setup.regime, setup.iv_rank, setup.expiry
        kw = {"rate": p.rate, "dividend_yield": p.dividend_yield}
        sp = nearest_delta_row(chain, expiry, p.short_delta, call=False, **kw)
        sc = nearest_delta_row(chain, expiry, p.short_delta, call=True, **kw)
        if sp is None or sc is None or chain.strike[sp] >= chain.strike[sc]:
            return ()
        lp = wing_row(chain, expiry, float(chain.strike[sp]), p.width, call=False)
        lc = wing_row(chain, expiry, float(chain.strike[sc]), p.width, call=True)
        if lp is None or lc is None:
            return ()
        width = float(max(chain.strike[sp] - chain.strike[lp], chain.strike[lc] - chain.strike[sc]))
        credit = float(chain.bid[sp] + chain.bid[sc] - chain.ask[lp] - chain.ask[lc])
        if not credit > max(p.min_credit, 0.0):
            return ()
        qty = contracts_for(ctx.net_liquidation(), ctx.sizing().risk_per_trade, width - credit, chain.multiplier,
                            p.size_factors.get(regime, 0.0), 1.0, 0.0, p.max_contracts)
        if qty <= 0:
            return ()
        legs = (option_leg(chain, sp, Side.SELL), option_leg(chain, lp, Side.BUY),
                option_leg(chain, sc, Side.SELL), option_leg(chain, lc, Side.BUY))
        tag = self.new_tag()
        trade = OpenTrade(tag=tag, legs=legs, quantity=qty, expiry=leg_expiry(legs),
                          info={"width": width, "credit": credit, "iv_rank": ivr})
        marks = entry_marks(chain, legs)
        if marks is None:
            return ()
        price = self.entry_price(ctx, *marks, float(legs[0].instrument.tick_size))
        return [(trade, self.intent(legs, qty, price, f"{tag}:open"))]
