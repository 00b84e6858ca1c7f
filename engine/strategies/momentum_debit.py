"""Momentum debit spread: buy a debit vertical in the direction of the trend of the underlying's closes.

In a trader's words: keep the underlying's daily closes (the strategy records them itself from the chains it
sees: the last spot of each trading day). When the fast moving average (``fast`` days) is more than
``min_gap`` above the slow one (``slow`` days), the trend is up: buy a call debit spread; when it is as far
below, buy a put debit spread. The long leg sits at |Δ| ``long_delta`` (at the money), the short leg
``width`` dollars further out, in the expiry nearest 45 days out. The debit is the worst case; the size is the
per-trade risk budget divided by it, kept inside the Greek budget (half the profile's delta limit by
default). Take profit at 50 % of the spread's maximum profit, stop when half the debit is lost, close a week
before expiry — and close at once when the trend turns against the position (the fast average crosses back
through the slow one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from engine.model import OptionChain, OrderIntent
from engine.model.instruments import Option
from engine.strategies.base import REGIMES, ManagedStrategy, OpenTrade, StrategyContext, market_date
from engine.strategies.iv_rank_debit import DebitSpreadParams, debit_spread_entry
from engine.strategies.structures import spread_debit_limits


class MomentumDebitParams(DebitSpreadParams):
    fast: int = Field(10, ge=1)
    slow: int = Field(30, ge=2)
    #: the fast average must be this fraction above (below) the slow one for an up (down) trend
    min_gap: float = Field(0.005, ge=0)
    regimes: tuple[str, ...] = ("low_vol", "iv_expansion", "iv_contraction", "high_vol", "normal")
    #: close an open spread when the trend turns against it
    exit_on_reversal: bool = True

    @model_validator(mode="after")
    def _windows(self) -> MomentumDebitParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown} (known: {', '.join(REGIMES)})")
        return self


class MomentumDebit(ManagedStrategy[MomentumDebitParams]):
    name = "momentum_debit"
    Params = MomentumDebitParams

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        self.closes: dict[date, float] = {}  # the last spot seen on each trading day, oldest first

    def record(self, day: date, spot: float) -> None:
        """Remember ``spot`` as ``day``'s close so far (a later snapshot of the same day replaces it)."""
        if not (math.isfinite(spot) and spot > 0):
            return
        self.closes[day] = float(spot)
        while len(self.closes) > self.params.slow:
            del self.closes[next(iter(self.closes))]

    def trend(self) -> int:
        """+1 up, −1 down, 0 none (or not enough closes yet) from the fast and slow moving averages."""
        p = self.params
        if len(self.closes) < p.slow:
            return 0
        c = np.fromiter(self.closes.values(), float)
        fast, slow = c[-p.fast:].mean(), c[-p.slow:].mean()
        if fast > slow * (1.0 + p.min_gap):
            return 1
        if fast < slow * (1.0 - p.min_gap):
            return -1
        return 0

    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        if chain.underlying == self.underlying:
            self.record(market_date(ctx.now()), chain.spot)
        return super().on_chain(ctx, chain)

    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        p = self.params
        if ctx.regime(p.underlying) not in p.regimes:
            return ()
        direction = self.trend()
        if direction == 0:
            return ()
        return debit_spread_entry(self, ctx, chain, call=direction > 0, factor=1.0, info={"trend": float(direction)})

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        if not self.params.exit_on_reversal:
            return None
        held = 1 if any(isinstance(leg.instrument, Option) and leg.instrument.is_call for leg in trade.legs) else -1
        # a turn is the fast average on the other side of the slow one (no gap needed to get out)
        p = self.params
        if len(self.closes) < p.slow:
            return None
        c = np.fromiter(self.closes.values(), float)
        fast, slow = c[-p.fast:].mean(), c[-p.slow:].mean()
        return "trend_reversal" if (fast - slow) * held < 0 else None

    def update_limits(self, trade: OpenTrade) -> None:
        spread_debit_limits(trade)

    def state(self) -> dict[str, Any]:
        """The trade books plus the closes the moving averages are made of."""
        return {**super().state(), "closes": {d.isoformat(): c for d, c in self.closes.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.closes = {}
        for d, c in sorted((state.get("closes") or {}).items()):
            self.record(date.fromisoformat(d), float(c))
