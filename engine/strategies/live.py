"""StrategyRunner: drives one strategy from bus events and sends its intents down the order path.

The same runner drives a strategy live (paper or broker account) and inside the backtester, so a
strategy cannot tell which it is in. It subscribes to

- ``ChainUpdated`` of the strategy's underlying → ``strategy.on_chain``;
- ``ClockTicked`` → ``strategy.on_timer``;
- order reports of the strategy's orders (``OrderFilled``, ``OrderDenied``, ``OrderRejected``,
  ``OrderCancelled``, ``OrderExpired``) → ``strategy.on_order``;

and sends every returned intent as a ``SubmitOrder`` command (the OMS: OrderFactory → RiskEngine →
ApprovalGate → ModeRouter → broker). Intents are sent one after another in the order the strategy
returned them. ``drain()`` waits until everything sent so far has been handed to the OMS.
``sent`` keeps every intent in order (for audits and the live/backtest parity test).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.bus import Bus
from engine.bus.commands import SubmitOrder
from engine.bus.events import (
    ChainUpdated,
    ClockTicked,
    OrderCancelled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from engine.clock import Clock
from engine.model import Fill, Order, OrderIntent
from engine.strategies.base import SizingLimits, Strategy, StrategyContext

log = logging.getLogger(__name__)

class LiveContext:
    """:class:`StrategyContext` over running engine components, passed in as callables.

    Typical wiring (``engine/core.py``): ``net_liquidation`` from the active broker's account snapshot,
    ``iv_rank`` from the surface service's IV history (``IVHistoryRepository.rank``; NaN when the history
    is insufficient), ``regime`` from the risk engine's regime detector, ``sizing`` from the current
    :class:`~engine.risk.profile.RiskProfile` via :func:`sizing_from_profile`.
    """

    def __init__(self, clock: Clock, *, net_liquidation: Callable[[], float], iv_rank: Callable[[str], float],
                 regime: Callable[[str], str], sizing: Callable[[], SizingLimits]) -> None:
        self._clock = clock
        self._nl = net_liquidation
        self._ivr = iv_rank
        self._regime = regime
        self._sizing = sizing

    def now(self) -> datetime:
        return self._clock.now()

    def net_liquidation(self) -> float:
        return float(self._nl())

    def iv_rank(self, underlying: str) -> float:
        return float(self._ivr(underlying))

    def regime(self, underlying: str) -> str:
        return str(self._regime(underlying))

    def sizing(self) -> SizingLimits:
        return self._sizing()


def sizing_from_profile(profile: Any) -> SizingLimits:
    """The strategy-facing part of a :class:`~engine.risk.profile.RiskProfile`."""
    return SizingLimits(risk_per_trade=profile.risk_per_trade_pct, max_positions=profile.max_positions,
                        max_position_fraction=profile.max_position_pct, collar_ticks=int(profile.collar_ticks),
                        collar_pct=float(profile.collar_pct))


_REPORTS = (OrderFilled, OrderDenied, OrderRejected, OrderCancelled, OrderExpired)


class StrategyRunner:
    def __init__(self, bus: Bus, strategy: Strategy, context: StrategyContext, *, use_timer: bool = True) -> None:
        self.bus = bus
        self.strategy = strategy
        self.context = context
        self.use_timer = use_timer
        self.sent: list[OrderIntent] = []
        self.orders: dict[str, Order] = {}
        self.errors: list[str] = []
        self._queue: deque[OrderIntent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._subs: list[Any] = []
        self._seen_fills: set[str] = set()
        self._started = False

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe (inline handlers: the strategy sees every snapshot in order) and start the sender."""
        if self._task is not None:
            return
        self._subs.append(self.bus.subscribe(ChainUpdated, self._on_chain, name=f"strategy:{self.strategy.strategy_id}"))
        if self.use_timer:
            self._subs.append(self.bus.subscribe(ClockTicked, self._on_tick, name=f"strategy:{self.strategy.strategy_id}:timer"))
        for ev in _REPORTS:
            self._subs.append(self.bus.subscribe(ev, self._on_report, name=f"strategy:{self.strategy.strategy_id}:orders"))
        self._task = asyncio.get_running_loop().create_task(self._sender(), name=f"strategy:{self.strategy.strategy_id}")

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued intent has gone through ``SubmitOrder`` and the bus is idle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await asyncio.wait_for(self._idle.wait(), max(deadline - loop.time(), 0.001))
            await self.bus.idle(max(deadline - loop.time(), 0.001))
            if not self._queue and self._idle.is_set():
                return

    # ---- event handlers -------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self.strategy.on_start(self.context)

    def _on_chain(self, ev: ChainUpdated) -> None:
        if ev.chain.underlying != self.strategy.underlying:
            return
        self._ensure_started()
        self._enqueue(self.strategy.on_chain(self.context, ev.chain))

    def _on_tick(self, ev: ClockTicked) -> None:
        self._ensure_started()
        self._enqueue(self.strategy.on_timer(self.context, ev.now))

    def _on_report(self, ev: OrderEvent) -> None:
        order = ev.order
        known = self.orders.get(order.order_id)
        if order.strategy_id != self.strategy.strategy_id and known is None:
            return
        if known is not None and not order.tag:
            order = order.evolve(tag=known.tag, strategy_id=known.strategy_id, updated_at=order.updated_at)
        self.orders[order.order_id] = order
        fills: Sequence[Fill] = ()
        if isinstance(ev, OrderFilled):
            fills = tuple(f for f in ev.fills if f.fill_id not in self._seen_fills)
            self._seen_fills.update(f.fill_id for f in fills)
            if not fills:
                return
        self._enqueue(self.strategy.on_order(self.context, order, fills))

    # ---- sending --------------------------------------------------------------------------------
    def _enqueue(self, intents: Sequence[OrderIntent]) -> None:
        if not intents:
            return
        self._queue.extend(intents)
        self._idle.clear()
        self._wake.set()

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                intent = self._queue.popleft()
                self.sent.append(intent)
                try:
                    order = await self.bus.send(SubmitOrder(intent=intent))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the OMS refused to take it at all: tell the log, keep running
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    log.exception("strategy %s: SubmitOrder failed", self.strategy.strategy_id)
                    continue
                if isinstance(order, Order):
                    self.orders.setdefault(order.order_id, order)
            if not self._queue:
                self._idle.set()
