"""The one Strategy API, used unchanged live and in the backtester (a strategy cannot tell which).

A strategy receives market data and order updates through callbacks and answers with
:class:`~engine.model.OrderIntent` s. It never talks to a broker: whoever drives it (the live
:class:`~engine.strategies.live.StrategyRunner` on the bus, or the backtester) sends every intent down
the one order path (OrderFactory → RiskEngine → ApprovalGate live / auto-approval in a backtest).

Callbacks (all synchronous and quick; heavy work belongs in :meth:`Strategy.fit`):

- ``on_start(ctx)`` once, before the first data;
- ``on_chain(ctx, chain) -> intents`` for every chain snapshot of the strategy's underlying;
- ``on_order(ctx, order, fills) -> intents`` for every state change of one of its orders (fills included);
- ``on_timer(ctx, now) -> intents`` at the driver's timer (live: the clock tick; backtest: each step);
- ``fit(history)`` before a walk-forward test window (parameters now, models later).

What a strategy may read comes from its :class:`StrategyContext` (time, account, its own positions,
IV rank, regime, sizing limits of the risk profile). Position management rules are data
(:class:`ManagementRules`), evaluated by :class:`ManagedStrategy` for every open trade.

The parts with names of their own live beside this module and are exported from it too: the rules, price walk
and trade books in :mod:`engine.strategies.management`, the ML gate in :mod:`engine.strategies.ml_gate`, and
the leg and chain helpers in :mod:`engine.strategies.legs`.

Sign conventions (docs/architecture.md §7): an order's net price is positive for a debit, negative for a credit;
a trade's P&L per unit is ``value_now − entry_net`` where both are Σ signed_ratio × price.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from engine.model import (
    Fill,
    Leg,
    OptionChain,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    TimeInForce,
)

# the leg helpers, trade rules and ML gate moved to their own modules; the strategies (and the docs) still
# import them from here, so they stay exported
from engine.strategies.legs import _net_fill_price, closing_leg, leg_marks, market_date
from engine.strategies.legs import entry_marks as entry_marks
from engine.strategies.legs import leg_expiry as leg_expiry
from engine.strategies.legs import leg_option as leg_option
from engine.strategies.legs import option_leg as option_leg
from engine.strategies.management import (
    ManagementRules,
    OpenTrade,
    PriceWalk,
    trade_from_dict,
    trade_to_dict,
    walk_price,
)
from engine.strategies.ml_gate import MLFilter, MLReading, ml_decision

REGIMES = ("low_vol", "normal", "high_vol", "iv_expansion", "iv_contraction", "neutral")


# ---- what a strategy can see ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SizingLimits:
    """The part of the risk profile a strategy sizes with (fractions of net liquidation)."""

    risk_per_trade: float = 0.02
    max_positions: int = 5
    max_position_fraction: float = 0.25
    #: the price collar an opening limit must stay within (worse than mid by at most
    #: max(collar_ticks ticks, collar_pct × |mid|)): entries walk no further, so they are not denied
    collar_ticks: int = 10
    collar_pct: float = 0.10
    #: the underlying move (fraction) at which the risk engine measures an undefined-risk order's loss:
    #: a short strangle sizes against it so that its entry is not denied for max loss per trade
    stress_move: float = 0.15


@runtime_checkable
class StrategyContext(Protocol):
    """Everything a strategy may read. Implemented by the live runner and by the backtester."""

    def now(self) -> datetime: ...

    def net_liquidation(self) -> float:
        """Account net liquidation value in dollars."""

    def iv_rank(self, underlying: str) -> float:
        """IV rank in [0, 1] over the configured lookback; NaN when the history is insufficient."""

    def regime(self, underlying: str) -> str:
        """Current market regime: one of :data:`REGIMES`."""

    def sizing(self) -> SizingLimits: ...

    def realized_vol(self, underlying: str, window: int = 20) -> float:
        """Annualised close-to-close realized vol over the last ``window`` sessions; NaN when unknown (a
        strategy that needs it keeps its own closes as the fallback)."""

    def portfolio_delta(self, underlying: str, strategy_id: str | None = None) -> float:
        """Delta in shares of the positions in ``underlying`` (of one strategy, or all); NaN when unknown."""

    def next_event(self, underlying: str) -> date | None:
        """The next earnings date of ``underlying`` on or after today (announced after that day's close); None
        when none is known."""

    def ml_probability(self, underlying: str, model: str) -> MLReading:
        """Registered ``model``'s calibrated P(win) for an entry now, on features known before now
        (:mod:`engine.ml.signal`); probability NaN, with the reason, when it cannot be had."""


class StrategyParams(BaseModel):
    """Base of every strategy's parameters (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    underlying: str = "SPY"
    rules: ManagementRules = ManagementRules()
    #: limit pricing: from mid toward natural in steps (rule data, like the platforms' price walking)
    pricing: PriceWalk = PriceWalk()
    max_open_trades: int = Field(1, ge=1)
    tif: TimeInForce = TimeInForce.DAY
    #: an ML filter stage on entries (None: off); see :class:`MLFilter`
    ml: MLFilter | None = None


#: a strategy's own parameter model: ``Strategy[P]`` lets each strategy read its fields with their types
P = TypeVar("P", bound=StrategyParams)


class Strategy(Generic[P]):
    """Base class: override the callbacks you need. Instances hold state; one instance per run.

    Generic in its parameter model so that ``self.params`` has the strategy's own fields to the type checker;
    ``Params`` (the runtime class that validates them) must be that same model (tests/strategies check it).
    """

    name: ClassVar[str] = "strategy"
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    params: P
    #: set by a driver that rations entries (the regime router): while True the strategy opens no new trade,
    #: but still manages and closes the ones it holds (ManagedStrategy honours it)
    entries_paused: bool = False

    def __init__(self, params: StrategyParams | dict[str, Any] | None = None, *, strategy_id: str | None = None):
        self.params = self.parse_params(params)
        self.strategy_id = strategy_id or self.name

    @classmethod
    def parse_params(cls, params: StrategyParams | dict[str, Any] | None) -> P:
        # a ClassVar cannot name P, so the checker cannot tie ``Params`` to it: the cast records that every
        # strategy declares ``Params`` as its own P (asserted for the registry in tests/strategies)
        if params is None:
            return cast(P, cls.Params())
        if isinstance(params, cls.Params):
            return cast(P, params)
        if isinstance(params, BaseModel):
            params = params.model_dump()
        return cast(P, cls.Params.model_validate(onto_defaults(cls.Params, unflatten_params(dict(params)))))

    @property
    def underlying(self) -> str:
        return self.params.underlying

    @property
    def underlyings(self) -> tuple[str, ...]:
        """Every underlying whose chains the strategy needs (a dispersion trade: the index and its members)."""
        return (self.params.underlying,)

    # callbacks --------------------------------------------------------------------------------------
    def on_start(self, ctx: StrategyContext) -> None:
        """Called once before the first market data."""

    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        return ()

    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        return ()

    def on_timer(self, ctx: StrategyContext, now: datetime) -> Sequence[OrderIntent]:
        return ()

    def fit(self, history: Any) -> None:
        """Learn parameters from a training window (walk-forward). Rule-based strategies keep theirs."""

    # state across restarts ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What this strategy must remember across a restart, as JSON-able data (the live host stores it after
        every change and hands it to :meth:`restore` at the next start). A strategy that keeps books of its
        own overrides both, calling ``super()``; the base keeps nothing."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` returned before a restart (parameters come from the settings)."""

    # helpers ----------------------------------------------------------------------------------------
    def intent(self, legs: Sequence[Leg], quantity: int, limit_price: float | None, tag: str) -> OrderIntent:
        """An intent from this strategy: net ``limit_price`` per unit (debit > 0, credit < 0), tick-rounded."""
        price = None
        order_type = OrderType.MARKET
        if limit_price is not None:
            tick = legs[0].instrument.tick_size
            price = (Decimal(repr(float(limit_price))) / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick
            order_type = OrderType.LIMIT
        return OrderIntent(
            legs=tuple(legs), quantity=int(quantity), order_type=order_type, limit_price=price,
            tif=self.params.tif, source=f"strategy:{self.strategy_id}", strategy_id=self.strategy_id, tag=tag,
        )


def onto_defaults(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """A parameter group given in part (``rules.dte_exit=none``) keeps the strategy's own defaults for the rest
    of the group: without this the group would be rebuilt from the generic defaults, and a butterfly told only
    its DTE exit would silently get the credit spread's profit target and stop."""
    out = dict(data)
    for name, info in model.model_fields.items():
        value, default = out.get(name), info.default
        if isinstance(value, dict) and isinstance(default, BaseModel):
            out[name] = {**default.model_dump(), **value}
    return out


def unflatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """``{"rules.stop_multiple": 3}`` → ``{"rules": {"stop_multiple": 3}}`` (CLI ``--param`` and sweeps)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"parameter {key!r} conflicts with {p!r}")
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "off"):
            value = None
        node[parts[-1]] = value
    return out


# ---- a strategy that manages multi-leg trades by rules -----------------------------------------------
class ManagedStrategy(Strategy[P]):
    """Keeps :class:`OpenTrade` books from its own order updates and applies :class:`ManagementRules`.

    Subclasses implement :meth:`entries` (new trades for this chain), pricing them with :meth:`entry_price`.
    Exits use the chain's mid to mark; the closing limit walks from mid to natural (:class:`PriceWalk`), and
    a closing order that ends unfilled is sent again for the same reason one step closer.
    """

    def __init__(self, params: StrategyParams | dict[str, Any] | None = None, *, strategy_id: str | None = None):
        super().__init__(params, strategy_id=strategy_id)
        self.trades: dict[str, OpenTrade] = {}
        self._seq = 0
        self._order_tags: dict[str, str] = {}  # order_id -> trade tag
        self.entry_attempt = 0  # consecutive entries that ended unfilled (the walk's step for the next one)
        self._entry_not_before: datetime | None = None
        self._last_chain: OptionChain | None = None  # the latest snapshot: an expired attempt is re-sent on it
        #: the ML filter's last decision (probability, reason, taken): shown beside the strategy's state
        self.ml_last: dict[str, Any] | None = None

    # state across restarts ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The trade books: every trade not yet closed, the tag sequence and the price walk's position."""
        out = super().state()
        out.update({
            "seq": self._seq,
            "entry_attempt": self.entry_attempt,
            "entry_not_before": self._entry_not_before.isoformat() if self._entry_not_before else None,
            "trades": [trade_to_dict(t) for t in self.trades.values() if t.state != "closed"],
        })
        return out

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._seq = int(state.get("seq", self._seq))
        self.entry_attempt = int(state.get("entry_attempt", 0))
        nb = state.get("entry_not_before")
        self._entry_not_before = datetime.fromisoformat(nb) if nb else None
        self.trades = {t.tag: t for t in (trade_from_dict(d) for d in state.get("trades", ()))}

    #: evaluate the rules on a trade's expiry day too (same-day structures with a time exit); by default a trade
    #: expiring today is left to settle at the close
    manage_on_expiry_day: ClassVar[bool] = False

    # subclass hooks ---------------------------------------------------------------------------------
    def entries(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[tuple[OpenTrade, OrderIntent]]:
        return ()

    def strategy_exit(self, ctx: StrategyContext, trade: OpenTrade, mid: float) -> str | None:
        """A strategy's own exit beyond the :class:`ManagementRules` (a trend that turned, a time of day), as the
        reason to close ``trade`` (marked at ``mid`` per unit), or None."""
        return None

    # books ------------------------------------------------------------------------------------------
    def new_tag(self) -> str:
        self._seq += 1
        return f"{self.strategy_id}-{self._seq:05d}"

    def active_trades(self, today: date | None = None) -> list[OpenTrade]:
        """Trades still working or held; with ``today``, those settling today no longer count."""
        return [t for t in self.trades.values() if t.state in ("opening", "open", "closing")
                and (today is None or t.expiry > today)]

    def on_chain(self, ctx: StrategyContext, chain: OptionChain) -> Sequence[OrderIntent]:
        if chain.underlying != self.underlying:
            return ()
        self._last_chain = chain
        today = market_date(ctx.now())
        self.expire(today)
        intents: list[OrderIntent] = []
        intents.extend(self.manage(ctx, chain))
        intents.extend(self._new_entries(ctx, chain))
        return intents

    def _new_entries(self, ctx: StrategyContext, chain: OptionChain) -> list[OrderIntent]:
        waiting = self._entry_not_before is not None and ctx.now() < self._entry_not_before
        if self.entries_paused or waiting or len(self.active_trades(market_date(ctx.now()))) >= self.params.max_open_trades:
            return []
        out: list[OrderIntent] = []
        for trade, intent in self.entries(ctx, chain):
            if self.params.ml is not None:
                reading = ctx.ml_probability(self.underlying, self.params.ml.model)
                qty, why = ml_decision(self.params.ml, reading, intent.quantity)
                self.ml_last = {"probability": reading.probability, "reason": why, "taken": qty > 0,
                                "at": ctx.now().isoformat()}
                if qty <= 0:
                    continue
                if qty != intent.quantity:
                    trade.quantity = qty
                    intent = replace(intent, quantity=qty)
                if math.isfinite(reading.probability):
                    trade.info["ml_probability"] = reading.probability
            self.trades[trade.tag] = trade
            out.append(intent)
        return out

    def manage(self, ctx: StrategyContext, chain: OptionChain, only: OpenTrade | None = None) -> list[OrderIntent]:
        """Evaluate the rules for every open trade (or ``only`` that one); a firing rule yields a closing intent."""
        out: list[OrderIntent] = []
        regime = ctx.regime(self.underlying)
        now = ctx.now()
        today = market_date(now)
        walk = self.params.pricing
        for trade in [only] if only is not None else list(self.trades.values()):
            if trade.state != "open" or trade.expiry < today or (trade.expiry == today and not self.manage_on_expiry_day):
                continue  # a trade expiring today settles at intrinsic value at the close (unless managed to the end)
            if trade.close_not_before is not None and now < trade.close_not_before:
                continue  # the walk's interval: the next, closer price comes later
            marks = leg_marks(chain, trade.legs)
            if marks is None:
                continue  # a leg has no usable quote today: keep, re-evaluate on the next snapshot
            mid, natural_close = marks
            reason = trade.exit_reason if trade.close_attempt else None
            reason = reason or self.params.rules.exit_reason(trade, mid, now, regime) or self.strategy_exit(ctx, trade, mid)
            if reason is None:
                continue
            trade.state = "closing"
            trade.exit_reason = reason
            legs = tuple(closing_leg(leg) for leg in trade.legs)
            # the closing combo's prices are the open combo's negated: mid −mid, natural −natural_close
            f = 1.0 if reason in walk.urgent_exits else walk.fraction(trade.close_attempt, entry=False)
            price = walk_price(-mid, -natural_close, f, float(legs[0].instrument.tick_size), None)
            out.append(self.intent(legs, trade.filled, price, f"{trade.tag}:close:{reason}"))
        return out

    def entry_price(self, ctx: StrategyContext, mid: float, natural: float, tick: float) -> float:
        """The limit of the next entry attempt: the walk's step from mid toward natural, inside the collar."""
        sz = ctx.sizing()
        f = self.params.pricing.fraction(self.entry_attempt, entry=True)
        return walk_price(mid, natural, f, tick, (sz.collar_ticks, sz.collar_pct))

    def on_order(self, ctx: StrategyContext, order: Order, fills: Sequence[Fill] = ()) -> Sequence[OrderIntent]:
        tag = order.tag.split(":", 1)[0]
        trade = self.trades.get(tag)
        if trade is None:
            return ()
        closing = ":close" in order.tag
        if fills:
            net = _net_fill_price(order, fills)
            if closing:
                trade.filled -= sum(abs(f.quantity) for f in fills if f.leg_index == 0) // order.legs[0].ratio
                if trade.filled <= 0:
                    trade.state = "closed"
            else:
                qty = sum(abs(f.quantity) for f in fills if f.leg_index == 0) // order.legs[0].ratio
                prev = trade.filled
                trade.filled += qty
                if math.isnan(trade.entry_net) or prev == 0:
                    trade.entry_net = net
                else:
                    trade.entry_net = (trade.entry_net * prev + net * qty) / trade.filled
                if trade.state == "opening":
                    trade.state = "open"
                    trade.opened_at = ctx.now()
                    trade.entry_regime = ctx.regime(self.underlying)
                self.update_limits(trade)
        if fills and not closing:
            self.entry_attempt = 0
        interval = self.params.pricing.interval_s
        if order.status.is_terminal and order.status is not OrderStatus.FILLED:
            if closing:
                trade.state = "open" if trade.filled > 0 else "closed"  # retry the exit on the next snapshot
                trade.close_attempt += 1  # ... one step closer to natural
                trade.close_not_before = ctx.now() + timedelta(seconds=interval) if interval else None
            elif trade.filled == 0:
                trade.state = "closed"
                trade.exit_reason = order.status.value
                del self.trades[tag]
                self.entry_attempt += 1
                self._entry_not_before = ctx.now() + timedelta(seconds=interval) if interval else None
            return self._resend(ctx, trade if closing else None) if order.status is OrderStatus.EXPIRED else ()
        return ()

    def _resend(self, ctx: StrategyContext, closing: OpenTrade | None) -> list[OrderIntent]:
        """The next attempt right when a DAY attempt expires at the close (on that session's last snapshot), so
        the walk steps once a session: sent at the close, it is good for the next session. A denied or rejected
        attempt is not re-sent here (the same checks would say no again); it waits for the next snapshot."""
        chain = self._last_chain
        if chain is None or market_date(chain.ts) != market_date(ctx.now()):
            return []
        if closing is not None:
            return self.manage(ctx, chain, only=closing)
        return self._new_entries(ctx, chain)

    def expire(self, today: date) -> None:
        """Trades whose expiry has passed are over: the exchange settled them at intrinsic value."""
        for trade in self.trades.values():
            if trade.state in ("open", "closing") and trade.expiry < today:
                trade.state = "closed"
                trade.exit_reason = trade.exit_reason or "expired"

    def update_limits(self, trade: OpenTrade) -> None:
        """Recompute max profit/loss per unit after the entry price is known (verticals by default)."""
        width = trade.info.get("width", math.nan)
        if trade.entry_net < 0:  # credit
            trade.max_profit = -trade.entry_net
            trade.max_loss = width + trade.entry_net if math.isfinite(width) else math.inf
        else:
            trade.max_loss = trade.entry_net
            trade.max_profit = width - trade.entry_net if math.isfinite(width) else math.inf
