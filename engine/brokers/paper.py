"""``PaperBroker``: the paper account as a :class:`~engine.brokers.base.Broker` on the bus.

It wraps the shared :class:`~engine.brokers.paper_exchange.PaperExchange`, feeds it market data from
whatever feed is running (``ChainUpdated``, ``QuotesUpdated``, ``QuoteUpdated``, ``UnderlyingUpdated``,
``ClockTicked`` — simulated market or a broker's live data), persists every execution report in the
store *before* publishing it, and publishes the core order/account events:

``OrderAccepted``, ``OrderFilled`` (with ``Fill``s), ``OrderRejected`` (reason in ``order.reason``),
``OrderCancelled``, ``OrderReplaced``, ``OrderReplaceRejected`` (a refused change; the order keeps working), ``OrderExpired``, ``PositionChanged``, ``AccountUpdated`` and,
for expirations/assignments, :class:`PositionsSettled`.

Only the OMS router calls ``submit``/``cancel``/``replace``. A restart resumes cash, positions and
working orders from the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from engine.brokers.base import Broker, OrderPreview
from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import ExecutionReport, PaperExchange
from engine.brokers.paper_store import PaperStore
from engine.bus import Bus, Subscription
from engine.bus.events import (
    AccountUpdated,
    Alert,
    ChainUpdated,
    ClockTicked,
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    PositionChanged,
    QuotesUpdated,
    QuoteUpdated,
    UnderlyingUpdated,
)
from engine.bus.messages import Event
from engine.clock import Clock, WallClock
from engine.model import AccountSnapshot, Fill, Instrument, Option, Order, Position

if TYPE_CHECKING:
    from engine.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionsSettled(Event):
    """Expiring options settled (exercise, assignment, cash settlement, worthless expiry) or an early
    assignment happened; ``fills`` are the settlement fills (``kind`` says which)."""

    severity: ClassVar[str] = "warning"
    fills: tuple[Fill, ...]
    note: str = ""

    def describe(self) -> str:
        kinds = sorted({f.kind for f in self.fills})
        return f"Settlement: {len(self.fills)} fill(s) ({', '.join(kinds)})" + (f" — {self.note}" if self.note else "")


def _new_prefix() -> str:
    """A short token per account lifetime, so ids never repeat after a reset."""
    import secrets

    return secrets.token_hex(3)


class PaperBroker(Broker):
    name = "paper"
    is_live = False

    def __init__(self, bus: Bus, store: Store | None = None, config: PaperConfig | None = None, *,
                 clock: Clock | None = None, exchange: PaperExchange | None = None,
                 account_update_interval_s: float = 1.0) -> None:
        self.bus = bus
        self.config = config or PaperConfig()
        self.exchange = exchange or PaperExchange(self.config, id_prefix=_new_prefix())
        self.clock: Clock = clock or WallClock()
        self._store = PaperStore(store, self.config.account_id) if store is not None else None
        self._subs: list[Subscription] = []
        self._connected = False
        self._interval = account_update_interval_s
        self._last_account = 0.0
        self._pending_cancels: list[ExecutionReport] = []
        self._cancel_batch: asyncio.Future[None] | None = None

    def tick_size(self, instrument: Instrument, price: Decimal) -> Decimal:
        """The paper exchange's own tick schedule (one source of truth for rounding and validation)."""
        if isinstance(instrument, Option):
            return self.exchange.tick_size(instrument, price)
        return instrument.tick_size

    # ---- lifecycle ----------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._connected:
            return
        self.exchange.set_time(self.clock.now())
        if self._store is not None:
            state, positions, orders = self._store.load()
            if state is not None:
                self.exchange.restore(state, positions, orders)
            else:
                self._store.save(self.exchange.state(), [], [], [])
        b = self.bus
        self._subs = [
            b.subscribe(ChainUpdated, self._on_chain, name="paper:chain"),
            b.subscribe(QuotesUpdated, self._on_quotes, name="paper:quotes"),
            b.subscribe(QuoteUpdated, self._on_quote, name="paper:quote"),
            b.subscribe(UnderlyingUpdated, self._on_underlying, name="paper:underlying"),
            b.subscribe(ClockTicked, self._on_clock, name="paper:clock"),
        ]
        from engine.market.simulated.feed import ExDividendAhead

        self._subs.append(b.subscribe(ExDividendAhead, self._on_ex_dividend, name="paper:dividends"))
        self._connected = True
        b.publish(ConnectionStateChanged(component="broker:paper", state="connected",
                                         detail=f"account {self.account_id}"))
        b.publish(AccountUpdated(account=self.exchange.account()))

    async def disconnect(self) -> None:
        if self._pending_cancels:
            self._flush_cancels()  # nothing acknowledged by the exchange stays unpersisted
        for s in self._subs:
            s.cancel()
        self._subs = []
        if self._connected:
            self._connected = False
            self.bus.publish(ConnectionStateChanged(component="broker:paper", state="disconnected"))

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def account_id(self) -> str:
        return self.config.account_id

    # ---- orders (called by the OMS router) ----------------------------------------------------
    async def submit(self, order: Order) -> None:
        self._handle(self.exchange.submit(order, self._now()))

    async def cancel(self, order: Order) -> None:
        """Cancels issued together (a kill-switch trip cancels hundreds) are persisted and reported as one
        batch on the next loop iteration: one store write instead of one per order (O(n²) otherwise)."""
        reports = self.exchange.cancel(order.order_id, self._now())
        if not reports:
            self.bus.publish(Alert(level="warning", source="paper",
                                   message=f"cancel: order {order.order_id} is not working at the paper exchange"))
            return
        self._pending_cancels.extend(reports)
        if self._cancel_batch is None:
            loop = asyncio.get_running_loop()
            self._cancel_batch = loop.create_future()
            loop.call_soon(self._flush_cancels)
        await asyncio.shield(self._cancel_batch)  # returns once this cancel is persisted and published

    def _flush_cancels(self) -> None:
        batch, self._cancel_batch = self._cancel_batch, None
        reports, self._pending_cancels = self._pending_cancels, []
        try:
            if reports:
                self._handle(reports)
        finally:
            if batch is not None and not batch.done():
                batch.set_result(None)

    async def replace(self, order: Order, limit_price: Decimal, quantity: int | None = None) -> None:
        reports = self.exchange.replace(order.order_id, limit_price, quantity, self._now())
        if not reports:
            self.bus.publish(Alert(level="warning", source="paper",
                                   message=f"replace: order {order.order_id} is not working at the paper exchange"))
        self._handle(reports)

    async def preview(self, order: Order) -> OrderPreview:
        """Estimated buying-power effect and fees of ``order`` filled at the touch (nothing changes)."""
        return self.exchange.preview(order)

    async def open_orders(self) -> list[Order]:
        return self.exchange.open_orders()

    async def positions(self) -> list[Position]:
        return list(self.exchange.positions.values())

    async def fills(self) -> list[Fill]:
        if self._store is not None:
            return self._store.fills()
        return list(self.exchange.fill_log)

    async def account(self) -> AccountSnapshot:
        return self.exchange.account()

    def reset_account(self) -> None:
        """Start over with the configured cash: no positions, no orders, empty fill log."""
        if self._store is not None:
            self._store.reset()
        self.exchange = PaperExchange(self.config, id_prefix=_new_prefix())
        self.exchange.set_time(self.clock.now())
        if self._store is not None:
            self._store.save(self.exchange.state(), [], [], [])
        self.bus.publish(AccountUpdated(account=self.exchange.account()))

    # ---- market data --------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.clock.now()

    def _on_chain(self, ev: ChainUpdated) -> None:
        self._handle(self.exchange.on_chain(ev.chain, ev.chain.ts), market=True)

    def _on_quotes(self, ev: QuotesUpdated) -> None:
        self._handle(self.exchange.on_quotes(ev.underlying, ev.rows, ev.bid, ev.ask, self._now()), market=True)

    def _on_quote(self, ev: QuoteUpdated) -> None:
        q = ev.quote
        self._handle(self.exchange.on_quote(q.symbol, q.bid, q.ask, self._now(), q.bid_size, q.ask_size), market=True)

    def _on_underlying(self, ev: UnderlyingUpdated) -> None:
        self._handle(self.exchange.on_underlying(ev.symbol, ev.price, self._now(), ev.bid, ev.ask), market=True)

    def _on_ex_dividend(self, ev: Event) -> None:
        self._handle(self.exchange.early_assignments(ev.symbol, ev.amount, self._now()))  # type: ignore[attr-defined]

    def _on_clock(self, ev: ClockTicked) -> None:
        self._handle(self.exchange.on_time(ev.now), market=True)

    # ---- reports → store → events -------------------------------------------------------------
    def report(self, reports: list[ExecutionReport]) -> None:
        """Persist and publish reports of exchange calls made by whoever drives the exchange's clock (the
        backtester closes each session itself: DAY expiry, settlement, early assignment), then the account —
        with no reports, just the account at the current marks (the kill switch's daily-loss look)."""
        self._handle(reports)
        if not reports:
            self._last_account = time.monotonic()
            self.bus.publish(AccountUpdated(account=self.exchange.account()))

    def _handle(self, reports: list[ExecutionReport], *, market: bool = False) -> None:
        if not reports:
            if market and self._connected:
                self._maybe_account()
            return
        orders: list[Order] = []
        fills: list[Fill] = []
        positions: dict[str, Position] = {}
        for r in reports:
            if r.order is not None and r.note != "replace":
                orders.append(r.order)
            fills.extend(r.fills)
            for p in r.positions:
                positions[p.symbol] = p
        if self._store is not None:
            try:
                self._store.save(self.exchange.state(), orders, fills, list(positions.values()))
            except Exception as exc:  # a store failure must be loud: the state is no longer durable
                log.exception("paper broker could not persist state")
                self.bus.publish(Alert(level="critical", source="paper",
                                       message=f"paper account state could not be saved: {exc}"))
        bus = self.bus
        for r in reports:
            if r.kind == "settlement":
                bus.publish(PositionsSettled(fills=r.fills, note=r.note))
                continue
            o = r.order
            if o is None:
                continue
            if r.kind == "accepted":
                bus.publish(OrderAccepted(order=o))
            elif r.kind in ("filled", "partially_filled"):
                bus.publish(OrderFilled(order=o, fills=r.fills))
            elif r.kind == "rejected":
                if r.note == "replace":  # the change was refused; the order keeps working as it was
                    bus.publish(OrderReplaceRejected(order=o))
                else:
                    bus.publish(OrderRejected(order=o))
            elif r.kind == "cancelled":
                bus.publish(OrderCancelled(order=o))
            elif r.kind == "replaced":
                bus.publish(OrderReplaced(order=o, previous_price=r.previous_price))
            elif r.kind == "expired":
                bus.publish(OrderExpired(order=o))
        for p in positions.values():
            bus.publish(PositionChanged(position=p, broker=self.name))
        self._last_account = time.monotonic()
        bus.publish(AccountUpdated(account=self.exchange.account()))

    def _maybe_account(self) -> None:
        if not self.exchange.positions:
            return
        now = time.monotonic()
        if now - self._last_account >= self._interval:
            self._last_account = now
            self.bus.publish(AccountUpdated(account=self.exchange.account()))
