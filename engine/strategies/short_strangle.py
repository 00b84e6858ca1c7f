"""Short strangle: sell an out-of-the-money put and call, picked by delta, and manage the premium.

In a trader's words: when implied vol is rich enough (IV rank at least ``iv_rank_entry``) and the regime is
one we sell premium in, sell the ~16-delta put and the ~16-delta call of the expiry nearest 45 days out. The
position is undefined risk, so it is sized against the risk engine's stress test: the loss if the underlying
jumped by the risk profile's stress move (15 % at Moderate) must fit the per-trade risk budget. When even
one strangle at the target delta would not fit, the strikes move further out (lower delta, one listed strike
at a time on each side, never below ``min_delta``) until one does — a small account sells wider strangles
rather than none; if nothing fits, no trade. The size is also kept inside the Greek budget (by default half
the profile's delta, gamma, vega and theta limits: a short strangle's gamma or vega, not its stress loss,
often binds first); budgets and Greeks are scaled by the regime's size factor (a quarter in ``high_vol``). Take profit at 50 % of the credit, stop at a loss of twice the
credit, and close at 21 days to expiry so the trade never sits in the gamma of the last weeks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    option_leg,
)
from engine.strategies.selection import deltas, nearest_delta_row, premium_setup
from engine.strategies.structures import GreekBudget, budget_contracts, priced_entry

STRANGLE_RULES = ManagementRules(profit_target=0.5, stop_multiple=2.0, dte_exit=21,
                                 regime_exits=(("low_vol", "high_vol"),))


class ShortStrangleParams(StrategyParams):
    rules: ManagementRules = STRANGLE_RULES
    iv_rank_entry: float = Field(0.3, ge=0, le=1)
    regimes: tuple[str, ...] = ("low_vol", "iv_contraction", "high_vol", "normal")
    dte_min: int = Field(30, ge=0)
    dte_max: int = Field(60, ge=0)
    dte_target: int | None = 45
    short_delta: float = Field(0.16, gt=0, lt=0.5)
    #: how far out (lowest |delta|) the strikes may move to fit the risk budget
    min_delta: float = Field(0.03, gt=0, lt=0.5)
    min_credit: float = Field(0.10, ge=0)
    #: fraction of the per-trade risk budget the stress loss may use (room for the mark to move)
    budget_use: float = Field(0.9, gt=0, le=1)
    size_factors: dict[str, float] = Field(default_factory=lambda: {
        "low_vol": 1.0, "high_vol": 0.25, "iv_expansion": 0.5, "iv_contraction": 1.0, "neutral": 0.0, "normal": 1.0})
    max_contracts: int = Field(20, ge=1)
    greeks: GreekBudget = GreekBudget()
    rate: float = 0.0
    dividend_yield: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> ShortStrangleParams:
        if self.dte_min > self.dte_max:
            raise ValueError(f"dte_min {self.dte_min} is above dte_max {self.dte_max}")
        if self.min_delta > self.short_delta:
            raise ValueError(f"min_delta {self.min_delta} is above short_delta {self.short_delta}")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


def strangle_stress_loss(put_strike: float, call_strike: float, credit: float, spot: float, move: float) -> float:
    """Loss per unit if the underlying jumped ``move`` (fraction) either way at once, net of the ``credit``
    (the risk engine's stress test of an undefined-risk order; the payoff is worst at the probes)."""
    down = max(put_strike - spot * (1.0 - move), 0.0)
    up = max(spot * (1.0 + move) - call_strike, 0.0)
    return max(down, up) - credit


class ShortStrangle(ManagedStrategy[ShortStrangleParams]):
    name = "short_strangle"
    Params = ShortStrangleParams

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        setup = premium_setup(ctx, chain, p)
        if setup is None:
            return ()
        regime, ivr, expiry = setup.regime, setup.iv_rank, setup.expiry
        picked = self.strikes(ctx, chain, expiry)
        if picked is None:
            return ()
        put_row, call_row, credit, qty = picked
        legs = (option_leg(chain, put_row, Side.SELL), option_leg(chain, call_row, Side.SELL))
        return priced_entry(self, ctx, chain, legs, qty, {
            "credit": credit, "iv_rank": ivr, "put_strike": float(chain.strike[put_row]),
            "call_strike": float(chain.strike[call_row])}, factor=p.size_factors.get(regime, 0.0))

    def strikes(self, ctx: StrategyContext, chain: OptionChain,
                expiry: np.datetime64) -> tuple[int, int, float, int] | None:
        """(put row, call row, natural credit, contracts): the target-delta strikes, or the nearest pair further
        out whose stress loss fits the risk budget; None when no pair does."""
        p = self.params
        kw = {"rate": p.rate, "dividend_yield": p.dividend_yield}
        put0 = nearest_delta_row(chain, expiry, p.short_delta, call=False, **kw)
        call0 = nearest_delta_row(chain, expiry, p.short_delta, call=True, **kw)
        if put0 is None or call0 is None or chain.strike[put0] >= chain.strike[call0]:
            return None
        puts = self._ladder(chain, expiry, put0, call=False)
        calls = self._ladder(chain, expiry, call0, call=True)
        sz = ctx.sizing()
        factor = p.size_factors.get(ctx.regime(p.underlying), 0.0)
        ip = ic = 0
        while True:
            pr, cr = puts[ip], calls[ic]
            credit = float(chain.bid[pr] + chain.bid[cr])
            if credit <= p.min_credit:
                return None  # further out only pays less
            kp, kc = float(chain.strike[pr]), float(chain.strike[cr])
            loss = strangle_stress_loss(kp, kc, credit, chain.spot, sz.stress_move)
            qty = budget_contracts(ctx.net_liquidation(), sz.risk_per_trade, max(loss, 0.01), chain.multiplier,
                                   factor=factor, budget_use=p.budget_use, max_contracts=p.max_contracts)
            if qty > 0:
                return pr, cr, credit, qty
            # move out the side that loses more at the stress move
            down = kp - chain.spot * (1.0 - sz.stress_move)
            up = chain.spot * (1.0 + sz.stress_move) - kc
            if down >= up:
                ip += 1
                nxt = puts[ip] if ip < len(puts) else None
            else:
                ic += 1
                nxt = calls[ic] if ic < len(calls) else None
            if nxt is None:
                return None
            d = abs(float(deltas(chain, np.array([nxt]), **kw)[0]))
            if not (math.isfinite(d) and d >= p.min_delta - 1e-12):
                return None

    def _ladder(self, chain: OptionChain, expiry: np.datetime64, start: int, *, call: bool) -> list[int]:
        """Rows from ``start`` outward (higher call strikes, lower put strikes) that have a bid."""
        rows = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & chain.valid_mask()
                          & (chain.bid > 0))[0]
        k0 = float(chain.strike[start])
        out_rows = rows[chain.strike[rows] >= k0 - 1e-9] if call else rows[chain.strike[rows] <= k0 + 1e-9]
        order = np.argsort(chain.strike[out_rows])
        ladder = out_rows[order] if call else out_rows[order][::-1]
        return [int(r) for r in ladder] or [start]
