"""Delta hedge: an overlay that keeps the delta of the portfolio (or of one strategy) inside a band with shares.

It opens no options of its own. On every chain snapshot of its underlying (and on the timer) it reads the delta
in shares from the context (``portfolio_delta(underlying, strategy_id)``: the whole account's positions in the
underlying, or those of one strategy), adds the shares it holds itself when it watches one strategy (the
account's delta already contains them), and when that delta is further than ``band_shares`` from ``target`` it
trades it back to ``target`` with a marketable share limit. Shares it holds against the delta are closed first
when the delta turns (a hedge through zero goes out as a closing and an opening order, as brokers book them).
One hedge is in flight at a time; ``min_interval_s`` spaces them. Its own share position and the time of its
last hedge are its persisted state.

With a ``child`` (a registered strategy by name, with ``child_params``) the overlay runs that strategy itself and
hedges what it holds: the child sees every chain, timer and update of its own orders as it would alone, its
orders go out under the overlay's id (tags ``<overlay id>.<child>-00001:open``), and the delta watched is the
overlay's own — the child's options plus the hedge shares. That is how the overlay is backtested: a run holds one
strategy, so alone it has nothing to hedge.

:func:`delta_of_positions` is the delta the live context reports: Black-Scholes deltas at the market's implied
vols (:func:`engine.risk.greeks.leg_risk`), shares counting one each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar

from pydantic import Field, model_validator

from engine.model import (
    Equity,
    Fill,
    Leg,
    OpenClose,
    OptionChain,
    Order,
    OrderIntent,
    OrderType,
    Position,
    Side,
)
from engine.strategies.base import Strategy, StrategyContext, StrategyParams
from engine.strategies.spec import BacktestSpec

HEDGE_TAG = "delta_hedge"


class DeltaHedgeParams(StrategyParams):
    underlying: str = "SPY"
    #: watch one strategy's positions (its id); None: the whole account's positions in the underlying
    strategy: str | None = None
    #: the delta (shares) to hedge back to, and how far from it the delta may drift before a hedge
    target: float = 0.0
    band_shares: float = Field(50.0, gt=0)
    #: no new hedge sooner than this after the last one (seconds of the engine clock)
    min_interval_s: float = Field(0.0, ge=0)
    #: at most this many shares per hedge order
    max_order_shares: int = Field(10_000, ge=1)
    #: the limit sits this fraction beyond the last price, so the hedge fills at once
    price_tolerance: float = Field(0.0005, ge=0, le=0.01)
    #: a hedge that never reported back (refused before the order path) stops blocking the next after this
    pending_timeout_s: float = Field(3600.0, gt=0)
    #: a strategy the overlay runs and hedges (registered name) and its parameters; None: hedge what is held
    child: str | None = None
    child_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _child(self) -> DeltaHedgeParams:
        if self.child is None:
            if self.child_params:
                raise ValueError("child_params given without a child strategy")
            return self
        if self.strategy is not None:
            raise ValueError("give strategy (watch another strategy) or child (run and hedge one), not both")
        from engine.strategies import registry

        names = sorted(n for n in registry() if n != "delta_hedge")
        if self.child not in names:
            raise ValueError(f"unknown child strategy {self.child!r} (known: {', '.join(names)})")
        return self


class DeltaHedge(Strategy[DeltaHedgeParams]):
    name = "delta_hedge"
    Params = DeltaHedgeParams
    #: a run holds one strategy: alone the overlay has nothing to hedge, so the table gives it a child to hedge
    backtest_spec: ClassVar[BacktestSpec] = BacktestSpec(
        params={"child": "put_write"}, why="an overlay hedges what another strategy holds: here the put-write "
        "benchmark's short puts, run by the overlay itself")

    def __init__(self, params: Any = None, *, strategy_id: str | None = None) -> None:
        super().__init__(params, strategy_id=strategy_id)
        self.held = 0  # shares this overlay holds (signed)
        self.pending = 0  # hedge orders in flight
        self.last_hedge: datetime | None = None
        self.spot = math.nan
        self.last_delta = math.nan
        self._seq = 0
        self.child: Strategy | None = None
        if self.params.child is not None:
            from engine.strategies import create

            self.child = create(self.params.child, {**self.params.child_params, "underlying": self.params.underlying,
                                                    "tif": self.params.tif},
                                strategy_id=f"{self.strategy_id}.{self.params.child}")

    # ---- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"held": self.held, "seq": self._seq, "pending": self.pending,
                               "last_hedge": self.last_hedge.isoformat() if self.last_hedge else None}
        if self.child is not None:
            out["child"] = self.child.state()
        return out

    def restore(self, state: dict[str, Any]) -> None:
        if self.child is not None and isinstance(state.get("child"), dict):
            self.child.restore(state["child"])
        self.held = int(state.get("held", 0))
        self._seq = int(state.get("seq", 0))
        last = state.get("last_hedge")
        self.last_hedge = datetime.fromisoformat(last) if last else None
        # a hedge in flight at a crash reports through reconciliation, or lapses after ``pending_timeout_s``
        self.pending = int(state.get("pending", 0))

    # ---- callbacks ----------------------------------------------------------------------------------
    @property
    def risk_limits(self) -> dict[str, float]:
        """The child's backtest risk limits (a put-write's benchmark limits), so hedging it changes nothing of
        what it may open."""
        return dict(getattr(self.child, "risk_limits", {}) or {})

    def on_start(self, ctx: StrategyContext) -> None:
        if self.child is not None:
            self.child.on_start(ctx)

    def fit(self, history: Any) -> None:
        if self.child is not None:
            self.child.fit(history)

    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        out = self._adopt(self.child.on_chain(ctx, chain)) if self.child is not None else []
        if chain.underlying != self.underlying:
            return out
        if math.isfinite(chain.spot) and chain.spot > 0:
            self.spot = float(chain.spot)
        return out + self.rebalance(ctx)

    def on_timer(self, ctx: StrategyContext, now: datetime) -> Sequence[OrderIntent]:
        out = self._adopt(self.child.on_timer(ctx, now)) if self.child is not None else []
        return out + self.rebalance(ctx)

    def _adopt(self, intents: Sequence[OrderIntent]) -> list[OrderIntent]:
        """The child's intents under the overlay's id, so their updates come back here (and its positions are the
        overlay's, which is the delta it hedges)."""
        return [replace(i, strategy_id=self.strategy_id, source=f"strategy:{self.strategy_id}") for i in intents]

    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        if self.child is not None and order.tag.startswith(self.child.strategy_id + "-"):
            return self._adopt(self.child.on_order(ctx, order, fills))
        if not order.tag.startswith(HEDGE_TAG):
            return ()
        self.held += sum(f.quantity for f in fills if isinstance(f.instrument, Equity))
        if order.status.is_terminal:
            self.pending = max(self.pending - 1, 0)
        return ()

    # ---- the hedge ----------------------------------------------------------------------------------
    def watched_delta(self, ctx: StrategyContext) -> float:
        """The delta (shares) the overlay keeps in its band; NaN when the context cannot tell."""
        source = getattr(ctx, "portfolio_delta", None)
        if not callable(source):
            return math.nan
        p = self.params
        if self.child is not None:  # the child's positions and the hedge shares are all under the overlay's id
            return float(source(p.underlying, self.strategy_id))
        delta = float(source(p.underlying, p.strategy))
        return delta + self.held if p.strategy is not None else delta

    def rebalance(self, ctx: StrategyContext) -> list[OrderIntent]:
        p = self.params
        now = ctx.now()
        if self.pending and self.last_hedge is not None and \
                (now - self.last_hedge).total_seconds() >= p.pending_timeout_s:
            self.pending = 0  # no report came back for it: go on
        if self.pending or not (math.isfinite(self.spot) and self.spot > 0):
            return []
        if self.last_hedge is not None and p.min_interval_s and (now - self.last_hedge).total_seconds() < p.min_interval_s:
            return []
        delta = self.last_delta = self.watched_delta(ctx)
        if not math.isfinite(delta) or abs(delta - p.target) <= p.band_shares:
            return []
        qty = -round(delta - p.target)
        qty = max(-p.max_order_shares, min(p.max_order_shares, qty))
        if not qty:
            return []
        self.last_hedge = now
        return self.share_orders(qty)

    def share_orders(self, qty: int) -> list[OrderIntent]:
        """Orders trading ``qty`` shares (signed): closing what the overlay holds against them first."""
        close = 0
        if self.held and (qty > 0) != (self.held > 0):
            close = -self.held if abs(qty) >= abs(self.held) else qty
        parts = [(close, OpenClose.CLOSE)] if close else []
        if qty - close:
            parts.append((qty - close, OpenClose.OPEN))
        stock = Equity(self.underlying)
        out = []
        for q, oc in parts:
            self._seq += 1
            tol = self.params.price_tolerance
            px = Decimal(repr(self.spot * (1 + tol if q > 0 else 1 - tol)))
            px = (px / stock.tick_size).to_integral_value(ROUND_CEILING if q > 0 else ROUND_FLOOR) * stock.tick_size
            out.append(OrderIntent(legs=(Leg(stock, Side.BUY if q > 0 else Side.SELL, 1, oc),), quantity=abs(q),
                                   order_type=OrderType.LIMIT, limit_price=px if q > 0 else -px,
                                   tif=self.params.tif, source=f"strategy:{self.strategy_id}",
                                   strategy_id=self.strategy_id, tag=f"{HEDGE_TAG}-{self._seq:05d}"))
        self.pending += len(out)
        return out


def delta_of_positions(positions: Iterable[Position], market: Any, now: datetime, underlying: str,
                       strategy_id: str | None = None) -> float:
    """Delta in shares of the positions in ``underlying`` (of one strategy when ``strategy_id`` is given):
    options at Black-Scholes deltas from ``market`` (a :class:`~engine.risk.market_view.MarketView`), shares one
    each. NaN when an option's delta cannot be computed (no quote or no implied vol)."""
    from engine.risk.greeks import leg_risk, underlying_of

    held = [p for p in positions if p.quantity and underlying_of(p.instrument) == underlying
            and (strategy_id is None or p.strategy_id == strategy_id)]
    if not held:
        return 0.0
    risk = leg_risk([p.instrument for p in held], [p.quantity for p in held], market, now, lambda _u: 1.0,
                    underlying)
    if risk.missing:
        return math.nan
    return float(risk.columns["delta"].sum())
