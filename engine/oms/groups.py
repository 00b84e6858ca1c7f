"""Order groups — one-cancels-other pairs, brackets and profit takers — built on the one order path.

Every member of a group is an ordinary order sent through :meth:`OrderManager.submit` (factory → risk →
approval → router); the group only decides *when* members are placed and *which cancel which*:

- **OCO**: both orders are placed at once. The first member to fill (even partly) or to end cancels the other.
  A member that ended without ever working (denied by our risk engine, rejected by the broker) cancels nothing:
  its sibling is all the protection left.
- **Bracket**: the entry is placed; its two exits — a GTC limit (the profit target) and a GTC stop or stop-limit,
  both closing the entry's legs — wait as intents (``OrderGroup.held``) until the entry has filled, then go out
  as an OCO pair for the quantity filled. An entry that ends without a fill cancels the group.
  A *native* bracket (opt-in, where the broker supports it: :attr:`Broker.native_brackets`) sends the entry and
  exits sized to the full entry at once, so the venue holds the exits until the entry fills
  (:meth:`OrderGroupManager._open_native`, engine/brokers/native_bracket.py).
- **Profit taker**: like a bracket with one exit, a GTC closing limit at ``profit_pct`` of the entry's maximum
  profit, priced from the entry's average fill (:func:`profit_target_price`); cancelled when the position is
  closed otherwise.

Exits of a placed bracket or profit taker are cancelled when their position is closed otherwise. OCO members
carry the tag ``oco:<group id>`` so the risk engine counts the quantity they close once (at most one fills).

Persistence before action, as for orders: the group row (with the exits' client order ids) is written before
each member is sent, and a member is sent with that client order id — after a crash, :meth:`start` resumes every
active group and a resubmission returns the order already there (the OMS dedupes by client order id), never a
second one. A kill-switch trip cancels every group whose exits are still held: nothing is placed after it (the
switch itself cancels the working members).

Decisions are made by :meth:`OrderGroupManager._advance` from the OMS's current view of the members, so it is
idempotent: it runs after every event of a member, at start, and after each step of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import TYPE_CHECKING, Any

from engine.brokers.base import BrokerError
from engine.bus.commands import CancelOrderGroup, SubmitBracket, SubmitOco, SubmitProfitTaker
from engine.bus.events import (
    Alert,
    KillSwitchTripped,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
)
from engine.model import (
    GroupKind,
    GroupStatus,
    Leg,
    OpenClose,
    Order,
    OrderGroup,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from engine.model.orders import BRACKET_TAG_PREFIX, NATIVE_BRACKET_ID_PREFIX, OCO_TAG_PREFIX, bracket_group_of
from engine.oms.factory import new_client_order_id, validate_intent
from engine.store.repositories import legs_from_json, legs_to_json

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.oms.manager import OrderManager
    from engine.store import Store

log = logging.getLogger(__name__)

__all__ = ["OrderGroupError", "OrderGroupManager", "OrderGroupRepository", "closing_legs", "profit_target_price"]


class OrderGroupError(ValueError):
    """A group that cannot be built; ``code`` names the problem, the message the values."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def new_group_id() -> str:
    return f"grp-{secrets.token_hex(8)}"


def closing_legs(legs: tuple[Leg, ...]) -> tuple[Leg, ...]:
    """The legs that close ``legs``: every side reversed, marked to close."""
    return tuple(Leg(leg.instrument, Side.SELL if leg.side is Side.BUY else Side.BUY, leg.ratio, OpenClose.CLOSE)
                 for leg in legs)


def profit_target_price(entry_net: Decimal, pct: Decimal) -> Decimal:
    """The closing order's net price (+ debit / − credit) that takes ``pct`` of an entry filled at ``entry_net``.

    A credit's maximum profit is the credit: a −1.00 entry closes at 50 % for a 0.50 debit, (1 − x) × credit.
    A debit's maximum profit is open (a long option) or the spread's width less the debit, which the fill alone
    does not tell: the target is x of the debit as a gain, a credit of (1 + x) × debit (a 2.00 debit closes at
    50 % for a 3.00 credit)."""
    if entry_net < 0:
        return -entry_net * (1 - pct)
    return -(entry_net * (1 + pct))


def _intent_to_dict(i: OrderIntent) -> dict[str, Any]:
    def dec(x: Decimal | None) -> str | None:
        return None if x is None else str(x)

    return {"legs": legs_to_json(i.legs), "quantity": i.quantity, "order_type": i.order_type.value,
            "limit_price": dec(i.limit_price), "stop_price": dec(i.stop_price), "tif": i.tif.value,
            "source": i.source, "strategy_id": i.strategy_id, "tag": i.tag, "client_order_id": i.client_order_id}


def _intent_from_dict(d: dict[str, Any]) -> OrderIntent:
    def dec(x: str | None) -> Decimal | None:
        return None if x is None else Decimal(x)

    return OrderIntent(legs=legs_from_json(d["legs"]), quantity=int(d["quantity"]),
                       order_type=OrderType(d["order_type"]), limit_price=dec(d["limit_price"]),
                       stop_price=dec(d["stop_price"]), tif=TimeInForce(d["tif"]), source=d["source"],
                       strategy_id=d["strategy_id"], tag=d["tag"], client_order_id=d["client_order_id"])


class OrderGroupRepository:
    """The ``order_groups`` table (migration 21)."""

    def __init__(self, store: Store) -> None:
        self._s = store

    def save(self, g: OrderGroup) -> None:
        self._s.execute(
            """INSERT INTO order_groups(group_id, kind, status, entry_order_id, entry_client_order_id,
                   member_order_ids, held, profit_pct, source, reason, created_at, updated_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(group_id) DO UPDATE SET status=excluded.status, entry_order_id=excluded.entry_order_id,
                   member_order_ids=excluded.member_order_ids, held=excluded.held, reason=excluded.reason,
                   updated_at=excluded.updated_at""",
            (g.group_id, g.kind.value, g.status.value, g.entry_order_id, g.entry_client_order_id,
             json.dumps(list(g.member_order_ids)), json.dumps([_intent_to_dict(i) for i in g.held]),
             None if g.profit_pct is None else str(g.profit_pct), g.source, g.reason,
             g.created_at.isoformat(), g.updated_at.isoformat()))

    @staticmethod
    def _row(r: Any) -> OrderGroup:
        return OrderGroup(
            group_id=r["group_id"], kind=GroupKind(r["kind"]), status=GroupStatus(r["status"]),
            created_at=datetime.fromisoformat(r["created_at"]), updated_at=datetime.fromisoformat(r["updated_at"]),
            entry_order_id=r["entry_order_id"], entry_client_order_id=r["entry_client_order_id"],
            member_order_ids=tuple(json.loads(r["member_order_ids"])),
            held=tuple(_intent_from_dict(d) for d in json.loads(r["held"])),
            profit_pct=None if r["profit_pct"] is None else Decimal(r["profit_pct"]), source=r["source"],
            reason=r["reason"])

    def get(self, group_id: str) -> OrderGroup | None:
        rows = self._s.query("SELECT * FROM order_groups WHERE group_id=?", (group_id,))
        return self._row(rows[0]) if rows else None

    def active(self) -> list[OrderGroup]:
        rows = self._s.query("SELECT * FROM order_groups WHERE status=? ORDER BY created_at", (GroupStatus.ACTIVE.value,))
        return [self._row(r) for r in rows]


def _ended_without_working(o: Order) -> bool:
    return o.status in (OrderStatus.DENIED, OrderStatus.REJECTED) and o.filled_quantity == 0


class OrderGroupManager:
    """Runs the groups; registered after the :class:`OrderManager`, so its view of every order is current when a
    member's event arrives here (cache first, then publish)."""

    def __init__(self, bus: Bus, store: Store, oms: OrderManager, *, now: Callable[[], datetime],
                 native_brackets: bool = False) -> None:
        """``native_brackets``: the default for brackets submitted without ``native`` (the venue then holds the
        exits from the start, where the broker supports it)."""
        self.bus = bus
        self.native_brackets = native_brackets
        self.store = store
        self.oms = oms
        self.now = now
        self.repo = OrderGroupRepository(store)
        self._groups: dict[str, OrderGroup] = {}
        self._by_order: dict[str, str] = {}  # order id → group id (entries and members)
        self._locks: dict[str, asyncio.Lock] = {}
        self._cancelling: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []
        self._registered: list[type] = []

    # ---- wiring ---------------------------------------------------------------------------------
    def register(self) -> None:
        handlers: dict[type, Callable[[Any], Any]] = {
            SubmitBracket: self._cmd_bracket, SubmitOco: self._cmd_oco, SubmitProfitTaker: self._cmd_profit_taker,
            CancelOrderGroup: self._cmd_cancel}
        for cmd, fn in handlers.items():
            self.bus.register(cmd, fn)
            self._registered.append(cmd)
        for ev in (OrderAccepted, OrderFilled, OrderRejected, OrderCancelled, OrderExpired, OrderDenied):
            self._subs.append(self.bus.subscribe(ev, self._on_order_event, name=f"groups:{ev.__name__}"))
        self._subs.append(self.bus.subscribe(PositionChanged, self._on_position, name="groups:positions"))
        self._subs.append(self.bus.subscribe(KillSwitchTripped, self._on_kill, name="groups:kill"))

    async def start(self) -> None:
        """Resume every active group a previous run left (after the OMS has settled its orders)."""
        for g in self.repo.active():
            if g.entry_order_id is None and g.entry_client_order_id:
                found = self.store.orders.by_client_order_id(g.entry_client_order_id)
                if found is None:
                    self._track(self._save(g.evolve(status=GroupStatus.CANCELLED, updated_at=self.now(),
                                                     reason="engine stopped before the entry was sent")))
                    continue
                g = self._save(g.evolve(entry_order_id=found.order_id, updated_at=self.now()))
            self._track(g)
            self._spawn(self._advance(g.group_id))

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        for cmd in self._registered:
            self.bus.unregister(cmd)
        self._registered.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- read-only ------------------------------------------------------------------------------
    def group(self, group_id: str) -> OrderGroup | None:
        return self._groups.get(group_id) or self.repo.get(group_id)

    def groups(self) -> list[OrderGroup]:
        """The active groups (ended ones are in the store: :meth:`group`)."""
        return [g for g in self._groups.values() if not g.status.is_terminal]

    def group_of(self, order_id: str) -> OrderGroup | None:
        gid = self._by_order.get(order_id)
        return None if gid is None else self._groups.get(gid)

    # ---- building -------------------------------------------------------------------------------
    @staticmethod
    def _check(intent: Any, what: str) -> OrderIntent:
        if not isinstance(intent, OrderIntent):
            raise OrderGroupError(f"{what}: not an order intent: {type(intent).__name__}", "not_an_intent")
        try:
            validate_intent(intent)
        except ValueError as exc:
            raise OrderGroupError(f"{what}: {exc}", getattr(exc, "code", "invalid")) from None
        return intent

    @staticmethod
    def _price(value: Any, what: str) -> Decimal:
        try:
            price = value if isinstance(value, Decimal) else Decimal(str(value))
        except (InvalidOperation, ValueError):
            raise OrderGroupError(f"{what} {value!r:.40} is not a number", "price_not_a_number") from None
        if not price.is_finite():
            raise OrderGroupError(f"{what} {value!r:.40} is not finite", "price_not_finite")
        return price

    def _opening(self, intent: Any, kind: str) -> OrderIntent:
        intent = self._check(intent, "entry")
        if any(leg.open_close is not OpenClose.OPEN for leg in intent.legs):
            raise OrderGroupError(f"a {kind}'s entry must open a position (every leg to open): its exits close it",
                                  "entry_not_opening")
        return replace(intent, client_order_id=intent.client_order_id or new_client_order_id())

    def bracket(self, intent: OrderIntent, take_profit: Any, stop: Any, stop_limit: Any = None) -> OrderGroup:
        """A new, unsaved bracket group (raises :class:`OrderGroupError` with a code and the values)."""
        entry = self._opening(intent, "bracket")
        gid = new_group_id()
        tp, sp = self._price(take_profit, "profit target"), self._price(stop, "stop")
        sl = None if stop_limit is None else self._price(stop_limit, "stop limit")
        if tp >= sp:
            raise OrderGroupError(f"the profit target {tp} must be better than the stop {sp} (prices are the exit's "
                                  "net, + debit / − credit: the target pays less or receives more)", "bracket_prices")
        exits = closing_legs(entry.legs)
        exit_intent = partial(OrderIntent, legs=exits, quantity=entry.quantity, tif=TimeInForce.GTC,
                              source=entry.source, strategy_id=entry.strategy_id, tag=f"{OCO_TAG_PREFIX}{gid}")
        target = self._check(exit_intent(order_type=OrderType.LIMIT, limit_price=tp), "profit target")
        loss = self._check(exit_intent(order_type=OrderType.STOP if sl is None else OrderType.STOP_LIMIT,
                                       stop_price=sp, limit_price=sl), "stop")
        now = self.now()
        return OrderGroup(group_id=gid, kind=GroupKind.BRACKET, status=GroupStatus.ACTIVE, created_at=now,
                          updated_at=now, entry_client_order_id=entry.client_order_id or "",
                          held=(entry, target, loss), source=entry.source)

    def profit_taker(self, intent: OrderIntent, profit_pct: Any) -> OrderGroup:
        entry = self._opening(intent, "profit taker")
        pct = self._price(profit_pct, "profit share")
        if not Decimal(0) < pct < Decimal(1):
            raise OrderGroupError(f"the profit share must be between 0 and 1 (0.5 = 50 %), got {pct}", "bad_profit_pct")
        gid = new_group_id()
        close = OrderIntent(legs=closing_legs(entry.legs), quantity=entry.quantity, order_type=OrderType.LIMIT,
                            limit_price=None, tif=TimeInForce.GTC, source=entry.source, strategy_id=entry.strategy_id,
                            tag=f"profit:{gid}")
        now = self.now()
        return OrderGroup(group_id=gid, kind=GroupKind.PROFIT_TAKER, status=GroupStatus.ACTIVE, created_at=now,
                          updated_at=now, entry_client_order_id=entry.client_order_id or "", held=(entry, close),
                          profit_pct=pct, source=entry.source)

    # ---- commands -------------------------------------------------------------------------------
    async def submit_bracket(self, intent: OrderIntent, take_profit: Any, stop: Any,
                             stop_limit: Any = None, *, native: bool | None = None) -> OrderGroup:
        """``native`` (default :attr:`native_brackets`): when the broker orders go to supports it, send entry and
        exits at once, the exits for the entry's full quantity, and let the venue hold them until the entry fills;
        elsewhere (the paper broker) the engine holds the exits as usual."""
        g = self.bracket(intent, take_profit, stop, stop_limit)
        want = self.native_brackets if native is None else native
        if want and self.oms.router.active.native_brackets:
            return await self._open_native(g)
        return await self._open_with_entry(g)

    async def submit_profit_taker(self, intent: OrderIntent, profit_pct: Any) -> OrderGroup:
        return await self._open_with_entry(self.profit_taker(intent, profit_pct))

    async def submit_oco(self, first: OrderIntent, second: OrderIntent) -> OrderGroup:
        gid = new_group_id()
        members = []
        for what, i in (("first", first), ("second", second)):
            i = self._check(i, f"OCO {what} order")
            members.append(replace(i, tag=f"{OCO_TAG_PREFIX}{gid}",
                                   client_order_id=i.client_order_id or new_client_order_id()))
        now = self.now()
        g = self._save(OrderGroup(group_id=gid, kind=GroupKind.OCO, status=GroupStatus.ACTIVE, created_at=now,
                                  updated_at=now, held=tuple(members), source=members[0].source))
        self._track(g)
        await self._advance(gid)
        return self._current(gid)

    async def cancel_group(self, group_id: str, *, by: str = "user") -> OrderGroup:
        g = self._groups.get(group_id)
        if g is None:
            stored = self.repo.get(group_id)
            if stored is None:
                raise OrderGroupError(f"no order group {group_id!r}", "unknown_group")
            return stored
        async with self._locks.setdefault(group_id, asyncio.Lock()):  # not while members are being placed
            g = self._current(group_id)
            if g.status.is_terminal:
                return g
            g = self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, reason=f"cancelled by {by}",
                                    updated_at=self.now()))
            self._track(g)
            ids = [i for i in (g.entry_order_id, *g.member_order_ids) if i]
            await self._cancel_open(ids, f"group {group_id} cancelled by {by}")
            return g

    async def _cmd_bracket(self, cmd: SubmitBracket) -> OrderGroup:
        return await self.submit_bracket(cmd.intent, cmd.take_profit, cmd.stop, cmd.stop_limit, native=cmd.native)

    async def _cmd_oco(self, cmd: SubmitOco) -> OrderGroup:
        return await self.submit_oco(cmd.first, cmd.second)

    async def _cmd_profit_taker(self, cmd: SubmitProfitTaker) -> OrderGroup:
        return await self.submit_profit_taker(cmd.intent, cmd.profit_pct)

    async def _cmd_cancel(self, cmd: CancelOrderGroup) -> OrderGroup:
        return await self.cancel_group(cmd.group_id, by=cmd.by)

    # ---- the state machine ----------------------------------------------------------------------
    async def _open_with_entry(self, g: OrderGroup) -> OrderGroup:
        entry, exits = g.held[0], g.held[1:]
        g = self._save(g.evolve(held=exits, updated_at=self.now()))  # before the entry is sent
        self._track(g)
        order = await self.oms.submit(entry)
        g = self._save(self._current(g.group_id).evolve(entry_order_id=order.order_id, updated_at=self.now()))
        self._track(g)
        if g.status.is_terminal:  # cancelled (or the kill switch tripped) while the entry was being sent
            await self._cancel_open([order.order_id], g.reason or "order group cancelled")
        await self._advance(g.group_id)
        return self._current(g.group_id)

    async def _open_native(self, g: OrderGroup) -> OrderGroup:
        """Entry, then both exits, each through the order path, under the group's lock so no event sees the group
        half-built. The entry is tagged ``bracket:<id>`` and the group id marks it native, so the adapter gathers
        the three and places them together, and the risk engine judges the exits as closing what the entry opens.
        An entry denied or refused here sends no exits; an exit that does not reach the broker ends the group."""
        gid = f"{NATIVE_BRACKET_ID_PREFIX}{g.group_id}"
        entry = replace(g.held[0], tag=f"{BRACKET_TAG_PREFIX}{gid}")
        exits = tuple(replace(i, tag=f"{OCO_TAG_PREFIX}{gid}", client_order_id=new_client_order_id())
                      for i in g.held[1:])
        async with self._locks.setdefault(gid, asyncio.Lock()):
            g = self._save(g.evolve(group_id=gid, held=exits, updated_at=self.now()))  # before the entry is sent
            self._track(g)
            order = await self.oms.submit(entry)
            g = self._save(self._current(gid).evolve(entry_order_id=order.order_id, updated_at=self.now()))
            self._track(g)
            if g.status.is_terminal:  # cancelled (or the kill switch tripped) while the entry was being sent
                await self._cancel_open([order.order_id], g.reason or "order group cancelled")
            elif order.status.is_terminal and order.filled_quantity == 0:
                self._track(self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, updated_at=self.now(),
                                                reason=f"entry {order.status.value}: exits not sent")))
            else:
                await self._place(gid, list(exits))
        await self._advance(gid)
        return self._current(gid)

    async def _native_incomplete(self, g: OrderGroup) -> bool:
        """A native bracket one of whose exits ended before reaching the broker (denied, refused at approval)
        while its entry has not filled: the rest waits at the adapter for a set that cannot complete, so the whole
        group is cancelled (an entry without its stop is not what was approved). True when it was."""
        entry = self._order(g.entry_order_id) if g.entry_order_id else None
        if entry is None or bracket_group_of(entry.tag) != g.group_id or entry.filled_quantity > 0:
            return False
        lost = [m for m in (self._order(i) for i in g.member_order_ids) if m is not None
                and m.status in (OrderStatus.DENIED, OrderStatus.REJECTED) and m.filled_quantity == 0]
        if not lost:
            return False
        reason = f"native bracket: exit {lost[0].client_order_id} {lost[0].status.value}: {lost[0].reason}"
        g = self._save(g.evolve(status=GroupStatus.CANCELLED, reason=reason, updated_at=self.now()))
        await self._cancel_open([i for i in (g.entry_order_id, *g.member_order_ids) if i], reason)
        self._track(g)
        return True

    async def _advance(self, gid: str) -> None:
        lock = self._locks.setdefault(gid, asyncio.Lock())
        async with lock:
            g = self._groups.get(gid)
            if g is None or g.status.is_terminal:
                return
            if g.held and g.group_id.startswith(NATIVE_BRACKET_ID_PREFIX):
                # exits still held by a native bracket outside :meth:`_open_native`: only a restart finds one, and the
                # adapter's holds died with the process, so none of it reached the venue as a bracket
                reason = "engine stopped while the native bracket was being sent"
                g = self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, reason=reason, updated_at=self.now()))
                self._track(g)
                await self._cancel_open([g.entry_order_id] if g.entry_order_id else [], reason)
                return
            if g.held:
                if g.kind is GroupKind.OCO:
                    await self._place(gid, list(g.held))
                else:
                    await self._after_entry(g)
                g = self._current(gid)
                if g.status.is_terminal or g.held:
                    return
            if await self._native_incomplete(g):
                return
            await self._one_cancels_other(g)

    async def _after_entry(self, g: OrderGroup) -> None:
        entry = self._order(g.entry_order_id) if g.entry_order_id else None
        if entry is None:
            return
        done = entry.status is OrderStatus.FILLED or (entry.status.is_terminal and entry.filled_quantity > 0)
        if not done:
            if entry.status.is_terminal:
                self._track(self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, updated_at=self.now(),
                                                reason=f"entry {entry.status.value} without a fill: exits not placed")))
            return
        exits = list(g.held)
        if any(i.client_order_id is None for i in exits):  # first time: size and price them, then persist
            qty = entry.filled_quantity
            if g.kind is GroupKind.PROFIT_TAKER:
                if g.profit_pct is None or entry.avg_fill_price is None:
                    self._track(self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, updated_at=self.now(),
                                                    reason="the entry's fill price is unknown: no close placed")))
                    self.bus.publish(Alert(level="warning", source="oms", message=(
                        f"order group {g.group_id}: the entry's fill price is unknown, no profit taker placed")))
                    return
                price = profit_target_price(entry.avg_fill_price, g.profit_pct)
                exits = [replace(i, limit_price=price) for i in exits]
            exits = [replace(i, quantity=qty, client_order_id=new_client_order_id()) for i in exits]
            g = self._save(g.evolve(held=tuple(exits), updated_at=self.now()))
            self._track(g)
        await self._place(g.group_id, exits)

    async def _place(self, gid: str, intents: list[OrderIntent]) -> None:
        """Send the held members (each through the order path; a resend after a crash returns the order the OMS
        already has for its client order id), then record them as the group's members."""
        ids: list[str] = []
        for intent in intents:
            order = await self.oms.submit(intent)
            self._by_order[order.order_id] = gid
            ids.append(order.order_id)
            if order.status is OrderStatus.DENIED:
                self.bus.publish(Alert(level="warning", source="oms", message=(
                    f"order group {gid}: {intent.tag or 'member'} {intent.order_type.value} denied: {order.reason}")))
        g = self._save(self._current(gid).evolve(held=(), member_order_ids=tuple(ids), updated_at=self.now()))
        self._track(g)

    async def _one_cancels_other(self, g: OrderGroup) -> None:
        members = [self._order(i) for i in g.member_order_ids]
        known = [m for m in members if m is not None]
        trigger = next((m for m in known if m.filled_quantity > 0 or (m.status.is_terminal
                                                                     and not _ended_without_working(m))), None)
        if trigger is not None:
            what = "filled" if trigger.filled_quantity > 0 else trigger.status.value
            await self._cancel_open([m.order_id for m in known if m is not trigger],
                                    f"one-cancels-other: {trigger.client_order_id} {what}")
        members = [self._order(i) for i in g.member_order_ids]
        if all(m is not None and m.status.is_terminal for m in members):
            g = self._current(g.group_id)
            self._track(self._save(g.evolve(status=GroupStatus.DONE, updated_at=self.now(),
                                            reason=g.reason or "every member ended")))

    async def _cancel_open(self, order_ids: list[str], reason: str) -> None:
        for oid in order_ids:
            o = self._order(oid)
            if o is None or o.status.is_terminal or oid in self._cancelling:
                continue
            self._cancelling.add(oid)
            try:
                await self.oms.cancel(oid, by="order_group", reason=reason)
            except (BrokerError, OSError, TimeoutError) as exc:  # the OMS retries it and alerts
                log.warning("order group cancel of %s failed: %s (the OMS retries)", oid, exc)

    # ---- events ---------------------------------------------------------------------------------
    def _on_order_event(self, ev: OrderEvent) -> None:
        gid = self._by_order.get(ev.order.order_id)
        if gid is not None:
            self._spawn(self._advance(gid))

    def _on_position(self, ev: PositionChanged) -> None:
        """A position closed otherwise takes its placed exits with it."""
        if ev.position.quantity != 0:
            return
        key = ev.position.symbol
        for g in list(self._groups.values()):
            if g.status.is_terminal or g.kind is GroupKind.OCO or g.held:
                continue
            for oid in g.member_order_ids:
                o = self.oms.order(oid)
                if o is not None and not o.status.is_terminal and any(leg.symbol == key for leg in o.legs):
                    self._spawn(self._cancel_open([oid], f"position {key} closed otherwise"))

    def _on_kill(self, ev: KillSwitchTripped) -> None:
        for g in list(self._groups.values()):
            if not g.status.is_terminal and g.held:
                self._track(self._save(g.evolve(held=(), status=GroupStatus.CANCELLED, updated_at=self.now(),
                                                reason=f"kill switch: {ev.reason}")))
                if g.entry_order_id:
                    self._spawn(self._cancel_open([g.entry_order_id], f"kill switch: {ev.reason}"))

    # ---- helpers --------------------------------------------------------------------------------
    def _current(self, group_id: str) -> OrderGroup:
        """The group as it is now: in memory while active, from the store once it ended."""
        g = self._groups.get(group_id) or self.repo.get(group_id)
        if g is None:
            raise OrderGroupError(f"no order group {group_id!r}", "unknown_group")
        return g

    def _order(self, order_id: str) -> Order | None:
        """The OMS's view, or the stored order (the OMS keeps only open and recent orders in memory)."""
        return self.oms.order(order_id) or self.store.orders.get(order_id)

    def _save(self, g: OrderGroup) -> OrderGroup:
        self.repo.save(g)
        return g

    def _track(self, g: OrderGroup) -> None:
        """Keep an active group in memory; an ended one is forgotten here (it lives on in the store), so a
        long session does not accumulate every group it ever ran."""
        ids = [oid for oid in (g.entry_order_id, *g.member_order_ids) if oid]
        if g.status.is_terminal:
            self._groups.pop(g.group_id, None)
            self._locks.pop(g.group_id, None)
            for oid in ids:
                self._by_order.pop(oid, None)
                self._cancelling.discard(oid)
            return
        self._groups[g.group_id] = g
        for oid in ids:
            self._by_order[oid] = g.group_id

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="order-group")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("order group step failed", exc_info=task.exception())
