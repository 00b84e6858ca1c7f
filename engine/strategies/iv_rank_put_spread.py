"""IV-rank put credit spread (trading-rules.md, "IV-rank strategy").

Entry, on a chain snapshot with no open trade: regime not ``neutral``; IV rank > ``iv_rank_entry``;
expiry with DTE in [``dte_min``, ``dte_max``] nearest ``dte_target``; short put nearest |Δ| =
``short_delta``; long put ``width`` dollars lower (the nearest listed strike below the short when that one is
not listed); natural credit = short bid − long ask > ``min_credit``.
Confidence = min(IV rank, 0.95) × sell factor of the regime (blended 60/40 with an ML probability when
one is given), capped at 0.98; < ``min_confidence`` → no trade, < ``half_size_below`` → half size.
Size = floor(net liq × risk per trade ÷ (max risk × multiplier)), at least 1, × the regime's size factor.
Order: a DAY limit from mid walking toward natural inside the price collar (:class:`~engine.strategies.base.PriceWalk`).
Exits: :class:`ManagementRules`.
"""

from __future__ import annotations

import math
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
    market_date,
    option_leg,
)
from engine.strategies.selection import nearest_delta_row, pick_expiry, wing_row

SELL_CONFIDENCE_FACTOR = {"low_vol": 1.0, "high_vol": 0.7, "iv_contraction": 1.2, "iv_expansion": 0.6,
                          "neutral": 0.5, "normal": 1.0}
SIZE_FACTOR = {"low_vol": 1.0, "high_vol": 0.5, "iv_expansion": 0.75, "iv_contraction": 1.0, "neutral": 0.0,
               "normal": 1.0}


class IVRankPutSpreadParams(StrategyParams):
    iv_rank_entry: float = Field(0.70, ge=0, le=1)
    dte_min: int = Field(30, ge=0)
    dte_max: int = Field(45, ge=0)
    dte_target: int | None = None
    short_delta: float = Field(0.25, gt=0, lt=1)
    width: float = Field(5.0, gt=0)
    min_credit: float = Field(0.0, ge=0)
    min_confidence: float = Field(0.6, ge=0, le=1)
    half_size_below: float = Field(0.75, ge=0, le=1)
    confidence_factors: dict[str, float] = Field(default_factory=lambda: dict(SELL_CONFIDENCE_FACTOR))
    size_factors: dict[str, float] = Field(default_factory=lambda: dict(SIZE_FACTOR))
    ml_probability: float | None = Field(None, ge=0, le=1)
    max_contracts: int = Field(100, ge=1)
    rate: float = 0.0
    dividend_yield: float = 0.0


def confidence(iv_rank: float, regime: str, factors: dict[str, float], ml_probability: float | None = None) -> float:
    """Sell-side confidence: min(IV rank, 0.95) × regime factor, 60/40 with ML, capped at 0.98."""
    base = min(iv_rank, 0.95) * factors.get(regime, 0.5)
    if ml_probability is not None:
        base = 0.6 * base + 0.4 * ml_probability
    return min(base, 0.98)


def contracts_for(net_liq: float, risk_per_trade: float, max_risk: float, multiplier: int, regime_factor: float,
                  conf: float, half_size_below: float, max_contracts: int) -> int:
    """Contracts by max-risk sizing (trading-rules.md): ≥ 1 before the regime factor; 0 means no trade."""
    if not (max_risk > 0 and math.isfinite(max_risk)):
        return 0
    n = max(1, math.floor(net_liq * risk_per_trade / (max_risk * multiplier)))
    n = math.floor(n * regime_factor)
    if n > 0 and conf < half_size_below:
        n = max(1, n // 2)
    return min(n, max_contracts)


class IVRankPutSpread(ManagedStrategy[IVRankPutSpreadParams]):
    name = "iv_rank_put_spread"
    Params = IVRankPutSpreadParams

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        regime = ctx.regime(p.underlying)
        if regime == "neutral":
            return ()
        ivr = ctx.iv_rank(p.underlying)
        if not (math.isfinite(ivr) and ivr > p.iv_rank_entry):
            return ()
        conf = confidence(ivr, regime, p.confidence_factors, p.ml_probability)
        if conf < p.min_confidence:
            return ()
        today = market_date(ctx.now())
        expiry = pick_expiry(chain, today, p.dte_min, p.dte_max, p.dte_target)
        if expiry is None:
            return ()
        short = nearest_delta_row(chain, expiry, p.short_delta, call=False, rate=p.rate, dividend_yield=p.dividend_yield)
        if short is None:
            return ()
        long = wing_row(chain, expiry, float(chain.strike[short]), p.width, call=False)
        if long is None:
            return ()
        width = float(chain.strike[short] - chain.strike[long])
        credit = float(chain.bid[short] - chain.ask[long])
        if not credit > max(p.min_credit, 0.0):
            return ()
        max_risk = width - credit
        qty = contracts_for(ctx.net_liquidation(), ctx.sizing().risk_per_trade, max_risk, chain.multiplier,
                            p.size_factors.get(regime, 0.0), conf, p.half_size_below, p.max_contracts)
        if qty <= 0:
            return ()
        legs = (option_leg(chain, short, Side.SELL), option_leg(chain, long, Side.BUY))
        tag = self.new_tag()
        trade = OpenTrade(tag=tag, legs=legs, quantity=qty, expiry=leg_expiry(legs),
                          info={"width": width, "credit": credit, "iv_rank": ivr, "confidence": conf})
        marks = entry_marks(chain, legs)
        if marks is None:
            return ()
        price = self.entry_price(ctx, *marks, float(legs[0].instrument.tick_size))
        return [(trade, self.intent(legs, qty, price, f"{tag}:open"))]
