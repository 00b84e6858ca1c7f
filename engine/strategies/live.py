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

Hosted (engine/strategies/host.py) the runner also isolates the strategy: an exception in a callback is
caught here, the runner stops calling the strategy (``failed``) and tells its host (``on_error``), so one
broken strategy never reaches the bus's other subscribers. ``paused`` stops market-data callbacks and
sending; order reports still reach the strategy (its books stay true) but what it answers is not sent.
``on_change(urgent)`` runs after every callback (the host persists the strategy's state when it changed; urgent
after an order report or when intents were sent, so trades are never stored late) and
``on_intents`` sees each batch before it is queued (the host publishes signals).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from datetime import date, datetime
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
from engine.strategies.base import MLReading, SizingLimits, Strategy, StrategyContext

log = logging.getLogger(__name__)

class LiveContext:
    """:class:`StrategyContext` over running engine components, passed in as callables.

    Typical wiring (``engine/core.py``): ``net_liquidation`` from the active broker's account snapshot,
    ``iv_rank`` from the surface service's IV history (``IVHistoryRepository.rank``; NaN when the history
    is insufficient), ``regime`` from the risk engine's regime detector, ``sizing`` from the current
    :class:`~engine.risk.profile.RiskProfile` via :func:`sizing_from_profile`.
    """

    def __init__(self, clock: Clock, *, net_liquidation: Callable[[], float], iv_rank: Callable[[str], float],
                 regime: Callable[[str], str], sizing: Callable[[], SizingLimits],
                 realized_vol: Callable[[str, int], float] | None = None,
                 portfolio_delta: Callable[[str, str | None], float] | None = None,
                 next_event: Callable[[str], date | None] | None = None,
                 ml_probability: Callable[[str, str], MLReading] | None = None) -> None:
        self._clock = clock
        self._nl = net_liquidation
        self._ivr = iv_rank
        self._regime = regime
        self._sizing = sizing
        self._rv = realized_vol
        self._delta = portfolio_delta
        self._next_event = next_event
        self._ml = ml_probability

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

    def realized_vol(self, underlying: str, window: int = 20) -> float:
        """From the history service when wired (``realized_vol``); NaN otherwise."""
        return float(self._rv(underlying, window)) if self._rv is not None else math.nan

    def portfolio_delta(self, underlying: str, strategy_id: str | None = None) -> float:
        """From the positions and the risk engine's market view when wired
        (:func:`engine.strategies.delta_hedge.delta_of_positions`); NaN otherwise."""
        return float(self._delta(underlying, strategy_id)) if self._delta is not None else math.nan

    def next_event(self, underlying: str) -> date | None:
        """From the market's earnings calendar when wired (the simulated market's); None otherwise."""
        return self._next_event(underlying) if self._next_event is not None else None

    def ml_probability(self, underlying: str, model: str) -> MLReading:
        """From the host's :class:`engine.ml.signal.MLScorer` when wired; otherwise no probability (an
        ML-filtered strategy then skips its entries, or lets them through with ``when_unavailable=allow``)."""
        if self._ml is None:
            return MLReading(math.nan, model=model, reason="no ML scorer in this context")
        return self._ml(underlying, model)


def sizing_from_profile(profile: Any) -> SizingLimits:
    """The strategy-facing part of a :class:`~engine.risk.profile.RiskProfile`."""
    return SizingLimits(risk_per_trade=profile.risk_per_trade_pct, max_positions=profile.max_positions,
                        max_position_fraction=profile.max_position_pct, collar_ticks=int(profile.collar_ticks),
                        collar_pct=float(profile.collar_pct), stress_move=float(profile.stress_move_pct))


_REPORTS = (OrderFilled, OrderDenied, OrderRejected, OrderCancelled, OrderExpired)


class StrategyRunner:
    def __init__(self, bus: Bus, strategy: Strategy, context: StrategyContext, *, use_timer: bool = True,
                 on_error: Callable[[BaseException, str], None] | None = None,
                 on_change: Callable[[bool], None] | None = None,
                 on_intents: Callable[[Sequence[OrderIntent]], None] | None = None) -> None:
        self.bus = bus
        self.strategy = strategy
        self.context = context
        self.use_timer = use_timer
        self.on_error = on_error
        self.on_change = on_change
        self.on_intents = on_intents
        self.paused = False
        self.failed: BaseException | None = None
        #: chain snapshots given to the strategy
        self.chain_calls = 0
        self.sent: list[OrderIntent] = []
        self.orders: dict[str, Order] = {}
        self.errors: list[str] = []
        self._queue: deque[OrderIntent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._subs: list[Any] = []
        self._seen_fills: dict[str, str] = {}  # fill id -> order id
        self._started = False
        self._stopping = False

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
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._sender(), name=f"strategy:{self.strategy.strategy_id}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Unsubscribe and end the sender, bounded. The sender also checks a flag: a cancel that lands while
        ``asyncio.wait_for`` inside the OMS completes can be swallowed (CPython 3.11), so it is repeated."""
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            deadline = asyncio.get_running_loop().time() + timeout
            while not task.done() and asyncio.get_running_loop().time() < deadline:
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
            if not task.done():
                log.error("strategy %s: sender did not stop within %.1f s", self.strategy.strategy_id, timeout)

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

    def _guarded(self, where: str, call: Callable[[], Sequence[OrderIntent] | None]) -> Sequence[OrderIntent]:
        """Run one strategy callback; an exception marks the runner failed and goes to the host, not the bus."""
        try:
            return call() or ()
        except Exception as exc:  # a strategy's bug must disable that strategy only, never the host or the engine
            self.failed = exc
            self.errors.append(f"{where}: {type(exc).__name__}: {exc}")
            log.exception("strategy %s failed in %s", self.strategy.strategy_id, where)
            self._queue.clear()
            if self.on_error is not None:
                self.on_error(exc, where)
            return ()

    def _after(self, intents: Sequence[OrderIntent], *, urgent: bool = False) -> None:
        if intents and self.on_intents is not None and not self.paused:
            self.on_intents(intents)
        self._enqueue(intents)
        if self.on_change is not None and self.failed is None:
            self.on_change(urgent or bool(intents))

    def _on_chain(self, ev: ChainUpdated) -> None:
        if ev.chain.underlying not in self.strategy.underlyings or self.paused or self.failed is not None:
            return
        self.chain_calls += 1

        def call() -> Sequence[OrderIntent]:
            self._ensure_started()
            return self.strategy.on_chain(self.context, ev.chain)

        self._after(self._guarded("on_chain", call))

    def _on_tick(self, ev: ClockTicked) -> None:
        if self.paused or self.failed is not None:
            return

        def call() -> Sequence[OrderIntent]:
            self._ensure_started()
            return self.strategy.on_timer(self.context, ev.now)

        self._after(self._guarded("on_timer", call))

    def _on_report(self, ev: OrderEvent) -> None:
        if self.failed is not None:
            return
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
            self._seen_fills.update((f.fill_id, order.order_id) for f in fills)
            if not fills:
                return
        self._after(self._guarded("on_order", lambda: self.strategy.on_order(self.context, order, fills)), urgent=True)

    # ---- host support ---------------------------------------------------------------------------
    def pause(self) -> None:
        """No more market-data callbacks and nothing sent; intents not yet handed to the OMS are dropped."""
        self.paused = True
        self._queue.clear()

    def resume(self) -> None:
        self.paused = False

    def open_orders(self) -> list[Order]:
        """The strategy's orders not yet in an end state (as last reported)."""
        return [o for o in self.orders.values() if not o.status.is_terminal]

    def seen_fills(self) -> list[tuple[str, str]]:
        """(fill id, order id) of still-open orders already given to the strategy (persisted with its state, so a report
        replayed after a restart is not booked twice; a finished order reports no more fills)."""
        live = {o.order_id for o in self.open_orders()}
        return [(fid, oid) for fid, oid in self._seen_fills.items() if oid in live]

    def restore(self, seen_fills: Sequence[tuple[str, str]], orders: Sequence[Order]) -> None:
        """After a restart: the fills the strategy already saw and its orders that may still report."""
        for o in orders:
            self.orders[o.order_id] = o
        self._seen_fills.update((str(fid), str(oid)) for fid, oid in seen_fills)

    # ---- sending --------------------------------------------------------------------------------
    def _enqueue(self, intents: Sequence[OrderIntent]) -> None:
        if not intents:
            return
        if self.paused:
            log.info("strategy %s is paused: %d intent(s) not sent", self.strategy.strategy_id, len(intents))
            return
        self._queue.extend(intents)
        self._idle.clear()
        self._wake.set()

    async def _sender(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self._stopping:
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
