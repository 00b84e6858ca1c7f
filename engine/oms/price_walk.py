"""Price walking: a working limit order moved step by step from mid toward natural on the engine clock.

Options rarely fill at mid, and a trader who wants the fill walks the price toward natural a few cents at a time.
:class:`PriceWalker` does that for orders it is asked to walk (``StartPriceWalk``): every ``interval_s`` seconds of
*engine* time (the simulated clock in paper-on-simulation, so a walk at ×100 takes a hundredth of the wall time)
it replaces the order ``step`` further — a fixed amount, or a share of the combo's quoted spread — with
``ReplaceOrder`` on the bus, so every step goes through :class:`~engine.oms.manager.OrderManager`'s replace path
and its risk check (a step the risk engine refuses ends the walk, the order keeps working at its last price).

Direction: prices are signed (+ debit / − credit) and natural is never below mid in that convention (pay the
ask, receive the bid), so walking always raises the signed price — a debit pays more, a credit receives less. The
price never passes natural (the market may move it; the walk follows while natural stays above the order) nor the
walk's ``limit``. The walk ends when the order fills, is cancelled, expires or is rejected, when the kill switch
trips, when the order's broker or the feed disconnects, or on ``StopPriceWalk``; each start, step and end is
published as :class:`~engine.bus.events.PriceWalkUpdated`.

Walks live in memory: after a restart orders keep working at their last price and are not walked again (a walk is
an intention of this session; the order and each replace are in the store as usual).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from engine.bus.commands import ReplaceOrder, StartPriceWalk, StopPriceWalk
from engine.bus.events import (
    ClockTicked,
    ConnectionStateChanged,
    KillSwitchTripped,
    OrderEvent,
    PriceWalkUpdated,
)
from engine.model import Order, OrderStatus, OrderType, leg_weights
from engine.oms.factory import floor_to_tick, venue_tick

if TYPE_CHECKING:
    from engine.bus import Bus, Subscription
    from engine.model import Instrument
    from engine.oms.manager import OrderManager

log = logging.getLogger(__name__)

__all__ = ["PriceWalkError", "PriceWalker", "Walk", "combo_quote", "next_walk_price"]

#: the shortest interval a walk may use: each step is a broker round trip and a risk check
MIN_INTERVAL_S = 0.5


class PriceWalkError(ValueError):
    """A walk that cannot start; ``code`` names the problem."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Walk:
    order_id: str
    interval: timedelta
    limit: Decimal
    step: Decimal | None
    step_fraction: float | None
    next_at: datetime
    steps: int = 0
    price: Decimal | None = None


def combo_quote(order: Order, bid_ask: Callable[[Instrument], tuple[float, float]]) -> tuple[float, float]:
    """(mid, natural) of one unit of ``order`` (+ debit / − credit, the order's own price units), NaN when a leg
    has no two-sided quote."""
    mid = natural = 0.0
    for leg, w in zip(order.legs, leg_weights(order.legs), strict=True):
        bid, ask = bid_ask(leg.instrument)
        if not (math.isfinite(bid) and math.isfinite(ask)) or bid < 0 or ask < bid:
            return math.nan, math.nan
        wf = float(w)
        mid += wf * 0.5 * (bid + ask)
        natural += wf * (ask if wf > 0 else bid)
    return mid, natural


def next_walk_price(current: Decimal, mid: float, natural: float, limit: Decimal, tick: Decimal, *,
                    step: Decimal | None = None, step_fraction: float | None = None) -> Decimal | None:
    """The next price of a walk at ``current``, or None when there is nothing to do (already at natural or at the
    limit, or no quote). The step is at least one tick; the result is on the tick grid and never above
    ``min(natural, limit)`` (natural rounded down to the grid: the walk never pays more than natural)."""
    if not (math.isfinite(mid) and math.isfinite(natural)):
        return None
    ceiling = min(floor_to_tick(Decimal(repr(natural)), tick), floor_to_tick(limit, tick))
    if current >= ceiling:
        return None
    if step is not None:
        amount = step
    elif step_fraction is not None:
        # to a micro-dollar first: 0.25 × the spread of 2.10 − 2.00 is 0.0500000000000004 in floats, not 0.06
        amount = Decimal(f"{step_fraction * 2.0 * max(natural - mid, 0.0):.6f}")
    else:
        raise PriceWalkError("a walk needs a step or a step fraction", "no_step")
    amount = max((amount / tick).to_integral_value(rounding=ROUND_CEILING) * tick, tick)
    return min(current + amount, ceiling)


class PriceWalker:
    """Walks orders on request; registered on the engine's bus beside the OMS (``build_order_path``)."""

    def __init__(self, bus: Bus, oms: OrderManager, bid_ask: Callable[[Instrument], tuple[float, float]], *,
                 now: Callable[[], datetime]) -> None:
        self.bus = bus
        self.oms = oms
        self.bid_ask = bid_ask
        self.now = now
        self._walks: dict[str, Walk] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Subscription] = []
        self._registered = False

    # ---- wiring ---------------------------------------------------------------------------------
    def register(self) -> None:
        self.bus.register(StartPriceWalk, self._cmd_start)
        self.bus.register(StopPriceWalk, self._cmd_stop)
        self._registered = True
        self._subs = [
            self.bus.subscribe(ClockTicked, self._on_clock, name="price-walk:clock"),
            self.bus.subscribe(OrderEvent, self._on_order, name="price-walk:orders"),
            self.bus.subscribe(KillSwitchTripped, self._on_kill, name="price-walk:kill"),
            self.bus.subscribe(ConnectionStateChanged, self._on_connection, name="price-walk:connections"),
        ]

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._registered:
            self.bus.unregister(StartPriceWalk)
            self.bus.unregister(StopPriceWalk)
            self._registered = False
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for oid in list(self._walks):
            self._end(oid, "engine stopped")

    # ---- read-only ------------------------------------------------------------------------------
    def walk(self, order_id: str) -> Walk | None:
        return self._walks.get(order_id)

    def walks(self) -> list[Walk]:
        return list(self._walks.values())

    def stepping(self, order_id: str) -> bool:
        """Whether a step of ``order_id`` (a replace on its way to the broker) is in flight."""
        return order_id in self._busy

    # ---- commands -------------------------------------------------------------------------------
    def start(self, order_id: str, *, interval_s: float, limit: Any, step: Any = None,
              step_fraction: float | None = None) -> Walk:
        """Start walking ``order_id`` (raises :class:`PriceWalkError` with the reason)."""
        order = self.oms.order(order_id)
        if order is None:
            raise PriceWalkError(f"no order {order_id}", "unknown_order")
        if order.status.is_terminal:
            raise PriceWalkError(f"order {order_id} is {order.status.value}: only open orders can be walked",
                                 "order_ended")
        if order.order_type is not OrderType.LIMIT or order.limit_price is None:
            raise PriceWalkError(f"only limit orders can be walked, {order_id} is a {order.order_type.value} order",
                                 "not_a_limit")
        if not isinstance(interval_s, int | float) or not math.isfinite(interval_s) or interval_s < MIN_INTERVAL_S:
            raise PriceWalkError(f"the walk's interval must be at least {MIN_INTERVAL_S:g} s, got {interval_s!r}",
                                 "bad_interval")
        cap = _decimal(limit, "the walk's limit")
        if (step is None) == (step_fraction is None):
            raise PriceWalkError("give the walk one step: in price (step) or as a share of the spread "
                                 "(step_fraction)", "no_step")
        amount = None
        if step is not None:
            amount = _decimal(step, "the walk's step")
            if amount <= 0:
                raise PriceWalkError(f"the walk's step must be positive, got {amount}", "bad_step")
        elif not (isinstance(step_fraction, int | float) and math.isfinite(step_fraction) and 0 < step_fraction <= 1):
            raise PriceWalkError(f"the step fraction must be above 0 and at most 1 of the spread, got {step_fraction!r}",
                                 "bad_step")
        if cap < order.limit_price:
            raise PriceWalkError(
                f"the walk's limit {cap} is below the order's price {order.limit_price}: a walk raises the signed "
                "price toward natural (a debit pays more, a credit receives less), so it would never move",
                "limit_behind")
        walk = Walk(order_id, timedelta(seconds=float(interval_s)), cap, amount,
                    None if step_fraction is None else float(step_fraction),
                    self.now() + timedelta(seconds=float(interval_s)), price=order.limit_price)
        self._walks[order_id] = walk
        self._publish(walk, "walking")
        return walk

    async def _cmd_start(self, cmd: StartPriceWalk) -> PriceWalkUpdated:
        walk = self.start(cmd.order_id, interval_s=cmd.interval_s, limit=cmd.limit, step=cmd.step,
                          step_fraction=cmd.step_fraction)
        return self._event(walk, "walking")

    async def _cmd_stop(self, cmd: StopPriceWalk) -> PriceWalkUpdated:
        ended = self._end(cmd.order_id, f"stopped by {cmd.by}")
        if ended is None:
            raise PriceWalkError(f"order {cmd.order_id} is not being walked", "not_walking")
        return ended

    # ---- events ---------------------------------------------------------------------------------
    def _on_clock(self, _ev: ClockTicked) -> None:
        if not self._walks:
            return
        now = self.now()  # the engine's clock, not the event's stamp: one clock for every component
        for oid, walk in list(self._walks.items()):
            if now >= walk.next_at and oid not in self._busy:
                self._busy.add(oid)
                task = asyncio.get_running_loop().create_task(self._step(oid), name=f"price-walk:{oid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _on_order(self, ev: OrderEvent) -> None:
        o = ev.order
        walk = self._walks.get(o.order_id)
        if walk is None:
            return
        if o.status.is_terminal:
            self._end(o.order_id, o.status.value)
        elif o.limit_price is not None and o.limit_price != walk.price:
            self._walks[o.order_id] = replace(walk, price=o.limit_price)

    def _on_kill(self, ev: KillSwitchTripped) -> None:
        for oid in list(self._walks):
            self._end(oid, f"kill switch: {ev.reason}")

    def _on_connection(self, ev: ConnectionStateChanged) -> None:
        if ev.state not in ("disconnected", "failed"):
            return
        for oid in list(self._walks):
            order = self.oms.order(oid)
            if ev.component.startswith("feed:") or (order is not None and ev.component == f"broker:{order.broker}"):
                self._end(oid, f"{ev.component} {ev.state}")

    # ---- stepping -------------------------------------------------------------------------------
    async def _step(self, oid: str) -> None:
        try:
            walk = self._walks.get(oid)
            order = self.oms.order(oid)
            if walk is None or order is None:
                return
            if order.status.is_terminal:
                self._end(oid, order.status.value)
                return
            self._walks[oid] = walk = replace(walk, next_at=self.now() + walk.interval)
            if order.status not in (OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED) or order.limit_price is None:
                return  # awaiting approval or the broker's ack: walk once it works
            mid, natural = combo_quote(order, self.bid_ask)
            tick = venue_tick(order.legs, order.limit_price, self.oms.router.broker_for(order).tick_size)
            price = next_walk_price(order.limit_price, mid, natural, walk.limit, tick, step=walk.step,
                                    step_fraction=walk.step_fraction)
            if price is None:
                return
            try:
                done = await self.bus.send(ReplaceOrder(order_id=oid, limit_price=price, by="price_walk"))
            except ValueError as exc:  # refused by the OMS or the risk engine: the order stays at its price
                self._end(oid, f"step to {price} refused: {exc}")
                return
            current = self._walks.get(oid)
            if current is None:
                return
            new_price = done.limit_price if isinstance(done, Order) else price
            self._walks[oid] = current = replace(current, steps=current.steps + 1, price=new_price)
            self._publish(current, "walking")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broker failure ends this walk only
            log.exception("price walk of %s failed", oid)
            self._end(oid, f"step failed: {exc}")
        finally:
            self._busy.discard(oid)

    # ---- helpers --------------------------------------------------------------------------------
    def _event(self, walk: Walk, state: str, reason: str = "") -> PriceWalkUpdated:
        return PriceWalkUpdated(order_id=walk.order_id, state=state, price=walk.price, limit=walk.limit,
                                steps=walk.steps, reason=reason)

    def _publish(self, walk: Walk, state: str, reason: str = "") -> PriceWalkUpdated:
        ev = self._event(walk, state, reason)
        self.bus.publish(ev)
        return ev

    def _end(self, oid: str, reason: str) -> PriceWalkUpdated | None:
        walk = self._walks.pop(oid, None)
        return None if walk is None else self._publish(walk, "ended", reason)


def _decimal(value: Any, what: str) -> Decimal:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PriceWalkError(f"{what} {value!r:.40} is not a number", "not_a_number") from None
    if not d.is_finite():
        raise PriceWalkError(f"{what} {value!r:.40} is not finite", "not_finite")
    return d
