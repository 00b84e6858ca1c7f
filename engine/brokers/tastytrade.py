"""tastytrade broker adapter (SDK ``tastytrade`` 13.2.x, imported lazily): orders, the account streamer, positions,
balances and reconciliation on one tastytrade account.

- The wire mapping — price sign (ours +debit/−credit, tastytrade's the opposite), stops, leg quantities, shares,
  statuses, error classification — is :mod:`engine.brokers.tastytrade_wire`; the OAuth session, account and call
  guard :mod:`engine.brokers.tastytrade_session`; one-cancels-other pairs as native OCO complex orders, and
  native brackets as OTOCO complex orders, :mod:`engine.brokers.tastytrade_complex`.
- Positions: tastytrade quantity is unsigned with ``quantity-direction`` Long/Short; ours is signed;
  ``multiplier`` comes from the position; ``avg_price`` is per unit (``average-open-price``).
- ``place_order`` is always called with an explicit ``dry_run``: ``True`` for :meth:`preview`, ``False``
  only from :meth:`submit`, which refuses unless the mode router armed the adapter (:meth:`arm_live`).
- Every call has a timeout and goes through the circuit breaker; transport errors count as failures,
  error bodies from the API (``TastytradeError``) are broker answers: rejections, not failures.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.brokers.base import Broker, BrokerError, OrderPreview
from engine.brokers.native_bracket import BracketAssembly, BracketSet
from engine.brokers.resilience import (
    ArmedAdapterMixin,
    BrokerRateLimited,
    LiveArm,
    backoff_delays,
    run_until_stopped,
    sleep_or_stop,
    stop_supervisor,
    with_timeout,
)
from engine.brokers.tastytrade_complex import OcoPairing, members, oco_request, otoco_request
from engine.brokers.tastytrade_session import TastytradeConnection
from engine.brokers.tastytrade_wire import (
    _TT_STATUS,
    BrokerAuthError,
    BrokerServerError,
    _flatten,
    build_tt_order,
    fill_totals,
    from_tt_price,
    instrument_from_tt,
    order_from_placed,
    position_from_tt,
    snapshot_from_tt,
    to_tt_price,
)
from engine.bus.events import (
    AccountUpdated,
    Alert,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    PositionChanged,
)
from engine.model import AccountSnapshot, Fill, Order, OrderStatus, Position

if TYPE_CHECKING:
    from engine.clock import Clock
from engine.bus import Bus

log = logging.getLogger(__name__)

# the adapter's public names, wherever they live (the session and the wire mapping have their own modules)
__all__ = ["BrokerAuthError", "BrokerServerError", "TastytradeBroker", "TastytradeConnection", "from_tt_price",
           "position_from_tt", "to_tt_price"]


# ---- broker --------------------------------------------------------------------------------------------
class TastytradeBroker(ArmedAdapterMixin, Broker):
    """Orders, positions and balances on a tastytrade account; order updates via the account streamer."""

    name = "tastytrade"
    is_live = True
    native_brackets = True

    def __init__(self, connection: TastytradeConnection, bus: Bus, *, rng: random.Random | None = None,
                 clock: Clock | None = None) -> None:
        """``clock``: the engine clock (default: the bus's), for times the broker does not send."""
        self.conn = connection
        self.bus = bus
        self.clock: Clock = clock if clock is not None else bus.clock
        self._arm = LiveArm("tastytrade")
        self._orders: dict[str, Order] = {}  # broker order id → our latest Order
        self._by_coid: dict[str, str] = {}  # client order id → broker order id
        self._seen_fills: set[str] = set()
        self._replaced: set[str] = set()  # broker ids we replaced (their Cancelled is not a cancel)
        self._cancel_requested: set[str] = set()
        self._positions: dict[str, Position] = {}
        self._fills_cache: dict[str, list[Fill]] = {}
        self._pending: dict[str, Order] = {}  # client order id → order being placed (REST call in flight)
        # one-cancels-other pairs placed as native OCO complex orders (engine/brokers/tastytrade_complex.py)
        self._pairing = OcoPairing()
        # native brackets held until entry and both exits are in, then placed as one OTOCO
        self._brackets = BracketAssembly()
        self._complex_of: dict[str, str] = {}  # member's broker order id → complex order id
        self._complex_cancelling: set[str] = set()  # complex order ids a DELETE was sent for
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stream_task: asyncio.Task[None] | None = None
        self._stream_ready = asyncio.Event()
        self._rng = rng or random.Random()
        self.stream_connects = 0
        self.heartbeats = 0
        self._stop = asyncio.Event()

    # ---- connection (arming and identity: ArmedAdapterMixin) -----------------------------------
    def disarm(self) -> None:
        """Leaving live mode (or the kill switch): nothing may be sent any more, so a member held for its OCO
        sibling ends here, rejected as never sent."""
        super().disarm()
        for order in self._pairing.held():
            self._pairing.release(order)
            self._pending.pop(order.client_order_id, None)
            self._reject(order, "held for its OCO sibling and not sent: live trading was switched off")
        for order in self._brackets.held():
            self._brackets.release(order)
            self._pending.pop(order.client_order_id, None)
            self._reject(order, "held for the rest of its bracket and not sent: live trading was switched off")

    def available_accounts(self) -> list[str]:
        """Open account numbers on this login (full numbers: show them masked)."""
        return [a.account_number for a in self.conn.accounts]

    async def select_account(self, account_id: str) -> None:
        """Switch to another account of the login: disarms, re-subscribes the account streamer, reconciles."""
        if account_id == self.account_id:
            return
        self.conn.select_account(account_id)
        self.disarm()
        self._positions.clear()
        task, self._stream_task = self._stream_task, None
        await stop_supervisor(task, self._stop)
        await self.connect()

    async def connect(self) -> None:
        await self.conn.connect()
        if not self._subs:  # a held OCO member waits for its sibling's fate (engine/brokers/tastytrade_complex.py)
            self._subs = [self.bus.subscribe(ev, self._on_member_ended, name=f"tastytrade:oco:{ev.__name__}")
                          for ev in (OrderDenied, OrderRejected, OrderCancelled, OrderExpired)]
        await self.reconcile()
        if self._stream_task is None or self._stream_task.done():
            self._stop = asyncio.Event()
            self._stream_ready.clear()
            self._stream_task = asyncio.get_running_loop().create_task(self._stream_loop(),
                                                                       name="tastytrade:account-stream")
        await with_timeout(self._stream_ready.wait(), self.conn.config.call_timeout_s, "tastytrade account streamer")

    async def disconnect(self) -> None:
        self.disarm()
        for sub in self._subs:
            sub.cancel()
        self._subs.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        task, self._stream_task = self._stream_task, None
        await stop_supervisor(task, self._stop)
        await self.conn.disconnect()

    async def _stream_loop(self) -> None:
        from tastytrade import AlertStreamer
        from tastytrade.account import AccountBalance, CurrentPosition
        from tastytrade.order import PlacedComplexOrder, PlacedOrder

        cfg = self.conn.reconnect_config
        delays = backoff_delays(cfg.initial_delay_s, cfg.max_delay_s, cfg.multiplier, cfg.jitter, self._rng)
        first = True
        stop = self._stop
        while not stop.is_set():
            try:
                streamer = AlertStreamer(self.conn.session)
                streamer.base_url = self.conn.streamer_url
                async with streamer as st:
                    await with_timeout(st.subscribe_accounts([self.conn.account]), self.conn.config.call_timeout_s,
                                       "tastytrade account subscription")
                    self.stream_connects += 1
                    if not first:
                        await self.reconcile()
                        self.conn.publish_state("connected", "account streamer reconnected")
                    first = False
                    self._stream_ready.set()
                    delays = backoff_delays(cfg.initial_delay_s, cfg.max_delay_s, cfg.multiplier, cfg.jitter,
                                            self._rng)
                    await run_until_stopped([self._consume(st, PlacedOrder, self._on_order),
                                             self._consume(st, PlacedComplexOrder, self._on_complex),
                                             self._consume(st, CurrentPosition, self._on_position),
                                             self._consume(st, AccountBalance, self._on_balance),
                                             self._heartbeat(st)], stop)
            except asyncio.CancelledError:
                if stop.is_set() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                # anyio cancelled our body because the SDK's reader failed: reconnect below
                log.warning("tastytrade account streamer cancelled by a stream failure; reconnecting")
            except Exception as exc:  # the SDK's stream raises anything on a dropped socket: reconnect unless stopping
                if stop.is_set():
                    return
                log.warning("tastytrade account streamer failed (%s); reconnecting", _flatten(exc))
            if stop.is_set():
                return
            self.conn.publish_state("disconnected", "account streamer lost; reconnecting")
            if await sleep_or_stop(next(delays), stop):
                return

    async def _heartbeat(self, st: Any) -> None:
        """Keep the account-streamer session alive; a missing acknowledgement is a stream failure."""
        from tastytrade.streamer import SubscriptionType

        while True:
            await asyncio.sleep(self.conn.config.account_heartbeat_s)
            await with_timeout(st._subscribe(SubscriptionType.HEARTBEAT), self.conn.config.call_timeout_s,
                               "tastytrade account-streamer heartbeat")
            self.heartbeats += 1

    async def _consume(self, st: Any, cls: Any, handler: Callable[[Any], None]) -> None:
        async for item in st.listen(cls):
            try:
                handler(item)
            except Exception:  # one bad update must not end the account stream
                log.exception("tastytrade: failed to handle %s update", cls.__name__)

    # ---- reconciliation -------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """Positions, balances and live orders from REST (on connect and after every reconnect)."""
        for p in await self.positions():
            self._set_position(p)
        self.bus.publish(AccountUpdated(account=await self.account()))
        live = await self._live_orders()
        for placed in live:
            self._on_order(placed)
        # our working orders that are no longer live filled, were cancelled or rejected while we were away
        live_ids = {str(p.id) for p in live}
        acct, s = self.conn.account, self.conn.session
        for bid, order in list(self._orders.items()):
            if order.status.is_terminal or bid in live_ids:
                continue
            placed = await self.conn.call("order status", lambda b=bid: acct.get_order(s, int(b)))
            self._on_order(placed)

    async def _live_orders(self) -> list[Any]:
        acct, s = self.conn.account, self.conn.session
        return await self.conn.call("live orders", lambda: acct.get_live_orders(s))

    # ---- queries --------------------------------------------------------------------------------
    def _require(self) -> tuple[Any, Any]:
        if not self.conn.connected:
            raise BrokerError("tastytrade: not connected")
        return self.conn.account, self.conn.session

    async def positions(self) -> list[Position]:
        acct, s = self._require()
        raw = await self.conn.call("positions", lambda: acct.get_positions(s))
        return [position_from_tt(p.symbol, p.quantity, p.quantity_direction, p.average_open_price, p.multiplier,
                                 p.underlying_symbol, p.realized_today or Decimal(0)) for p in raw]

    async def account(self) -> AccountSnapshot:
        acct, s = self._require()
        b = await self.conn.call("balances", lambda: acct.get_balances(s))
        return snapshot_from_tt(b, self.conn.account_id, self.clock.now())

    async def open_orders(self) -> list[Order]:
        self._require()
        out = []
        for placed in await self._live_orders():
            self._on_order(placed)
            known = self._orders.get(str(placed.id))
            out.append(known or order_from_placed(placed, self.clock.now()))
        # held for their OCO sibling or the rest of their bracket: ours, and not to be called lost
        return out + self._pairing.held() + self._brackets.held()

    async def fills(self) -> list[Fill]:
        """Fills seen this session (streamed, or found on orders at reconciliation), each once."""
        return [f for fills in self._fills_cache.values() for f in fills]

    # ---- orders ---------------------------------------------------------------------------------
    def build_order(self, order: Order, price: Decimal | None = None) -> Any:
        """The SDK order for ``order`` (``price`` in our convention; default ``order.limit_price``)."""
        return build_tt_order(order, price)

    async def preview(self, order: Order) -> OrderPreview:
        """tastytrade dry-run (``place_order(dry_run=True)``): buying-power effect, fees, warnings. The second
        member of an OCO pair, whose sibling is held here, previews the pair as it will be sent: the complex
        order's dry-run (``POST /complex-orders/dry-run``), which the approver then sees."""
        acct, s = self._require()
        tt_order = self.build_order(order)
        sibling = self._pairing.sibling_of(order)
        raw: dict[str, str] = {}
        try:
            if sibling is not None:
                request = oco_request(self.build_order(sibling), tt_order)
                resp = await self.conn.call("OCO dry-run",
                                            lambda: acct.place_complex_order(s, request, dry_run=True))
                raw["complex"] = f"OCO with {sibling.client_order_id}"
            else:
                resp = await self.conn.call("dry-run", lambda: acct.place_order(s, tt_order, dry_run=True))
        except BrokerError:
            raise
        except Exception as exc:  # the API said no: show it in the approval preview
            return OrderPreview(errors=(str(exc).strip(),), source="broker")
        bpe = resp.buying_power_effect
        fees = resp.fee_calculation
        return OrderPreview(
            buying_power_effect=Decimal(bpe.change_in_buying_power),
            commission=-Decimal(fees.total_fees) if fees is not None else None,
            margin_change=-Decimal(bpe.change_in_margin_requirement),
            warnings=tuple(str(w) for w in (getattr(resp, "warnings", None) or ())),  # a complex answer has none
            errors=tuple(str(e) for e in (getattr(resp, "errors", None) or ())),
            source="broker",
            raw={"impact": str(bpe.impact), "effect": str(bpe.effect.value),
                 "new_buying_power": str(bpe.new_buying_power), **raw},
        )

    async def submit(self, order: Order) -> None:
        """Place ``order`` live (``dry_run=False``). Refuses unless armed; rejections arrive as events.

        A member of an engine one-cancels-other pair (tag ``oco:<group>``) is held until its sibling arrives, and
        both go out as one native OCO (engine/brokers/tastytrade_complex.py)."""
        self._arm.check(order.account_id, "submit")
        self._require()
        try:
            tt_order = self.build_order(order)
        except Exception as exc:  # pydantic validation of legs/price
            self._reject(order, f"order could not be built for tastytrade: {exc}")
            return
        if self._brackets.claims(order):
            complete = self._brackets.offer(order)
            if complete is None:
                self._pending[order.client_order_id] = self._ours(order)
                return
            await self._place_otoco(complete, order)
            return
        pairing = self._pairing.offer(order)
        if pairing.action == "hold":
            self._pending[order.client_order_id] = self._ours(order)
            return
        if pairing.sibling is not None:
            await self._place_oco(pairing.sibling, order, tt_order)
            return
        await self._place_single(order, tt_order)

    def _ours(self, order: Order) -> Order:
        """``order`` as this adapter tracks it once sent (findable by client order id until the broker's id)."""
        return order.evolve(updated_at=self.clock.now(), broker=self.name, account_id=self.conn.account_id)

    async def _place_single(self, order: Order, tt_order: Any) -> None:
        acct, s = self._require()
        # the account streamer may report the order before the REST call returns: let it find ours
        self._pending[order.client_order_id] = self._ours(order)
        try:
            resp = await self.conn.call("place order", lambda: acct.place_order(s, tt_order, dry_run=False))
        except BrokerError as exc:
            from engine.brokers.circuit_breaker import CircuitOpenError

            if isinstance(exc, BrokerRateLimited):  # refused unprocessed: nothing was placed, so it is rejected
                self._pending.pop(order.client_order_id, None)
                self._reject(order, f"{exc}; nothing was placed — send it again later")
                return
            if isinstance(exc, CircuitOpenError):  # not sent
                self._pending.pop(order.client_order_id, None)
            # otherwise (5xx, timeout, dropped connection) the order may be live: keep it findable by client
            # order id so a streamed update or the OMS's reconciliation maps it back to ours
            raise
        except Exception as exc:  # TastytradeError: error body (preflight failure, invalid symbol …)
            self._pending.pop(order.client_order_id, None)
            self._reject(order, str(exc).strip())
            return
        if resp.errors:
            self._pending.pop(order.client_order_id, None)
            self._reject(order, "; ".join(str(e) for e in resp.errors))
            return
        placed = resp.order
        bid = str(placed.id)
        pending = self._pending.pop(order.client_order_id, None)
        if bid not in self._orders:  # not already adopted from a streamed update
            self._orders[bid] = (pending or order).evolve(updated_at=self.clock.now(), broker_order_id=bid)
        self._by_coid[order.client_order_id] = bid
        self._on_order(placed)

    async def _place_oco(self, first: Order, second: Order, tt_second: Any) -> None:
        """Both members as one ``POST /complex-orders`` (type OCO). Refused as a whole: both are rejected. A
        transport failure leaves both findable by client order id: the OMS holds ``second`` as unknown and
        reconciles, which finds both at the broker or calls ``first`` never placed — nothing is resent."""
        from engine.brokers.circuit_breaker import CircuitOpenError

        acct, s = self._require()
        request = oco_request(self.build_order(first), tt_second)
        pair = (first, second)
        for o in pair:
            self._pending[o.client_order_id] = self._ours(o)
        try:
            resp = await self.conn.call("place OCO", lambda: acct.place_complex_order(s, request, dry_run=False))
        except BrokerError as exc:
            if isinstance(exc, BrokerRateLimited | CircuitOpenError):  # provably not placed
                for o in pair:
                    self._pending.pop(o.client_order_id, None)
                self._reject(first, f"{exc}; nothing was placed (OCO with {second.client_order_id})")
                if isinstance(exc, CircuitOpenError):
                    raise  # the OMS rejects ``second`` as never sent
                self._reject(second, f"{exc}; nothing was placed — send it again later")
                return
            raise
        except Exception as exc:  # TastytradeError: the API refused the pair (one bad member refuses both)
            for o in pair:
                self._pending.pop(o.client_order_id, None)
                self._reject(o, f"OCO refused: {str(exc).strip()}")
            return
        self._on_complex(resp.complex_order)

    async def _place_otoco(self, bracket: BracketSet, last: Order) -> None:
        """A native bracket as one ``POST /complex-orders`` (type OTOCO: the entry triggers, the exits wait at the
        venue). Refused as a whole: every member is rejected. A transport failure leaves all three findable by
        client order id: the OMS holds ``last`` as unknown and reconciles, which finds them at the broker or calls
        the others never placed — nothing is resent."""
        from engine.brokers.circuit_breaker import CircuitOpenError

        acct, s = self._require()
        entry = bracket.entry
        assert entry is not None  # a complete set has its entry
        target, stop = sorted(bracket.exits, key=lambda o: o.order_type.is_stop)
        group = list(bracket.members())
        try:
            request = otoco_request(self.build_order(entry), self.build_order(target), self.build_order(stop))
        except Exception as exc:  # pydantic validation of a held member
            for o in group:
                self._pending.pop(o.client_order_id, None)
                self._reject(o, f"bracket could not be built for tastytrade: {exc}")
            return
        for o in group:
            self._pending[o.client_order_id] = self._ours(o)
        try:
            resp = await self.conn.call("place OTOCO", lambda: acct.place_complex_order(s, request, dry_run=False))
        except BrokerError as exc:
            if isinstance(exc, BrokerRateLimited | CircuitOpenError):  # provably not placed
                for o in group:
                    self._pending.pop(o.client_order_id, None)
                    if o is not last or isinstance(exc, BrokerRateLimited):
                        self._reject(o, f"{exc}; nothing was placed (bracket {bracket.group_id})")
                if isinstance(exc, CircuitOpenError):
                    raise  # the OMS rejects ``last`` as never sent
                return
            raise
        except Exception as exc:  # TastytradeError: the API refused the bracket (one bad member refuses all)
            for o in group:
                self._pending.pop(o.client_order_id, None)
                self._reject(o, f"bracket refused: {str(exc).strip()}")
            return
        self._on_complex(resp.complex_order)

    def _on_complex(self, complex_order: Any) -> None:
        """A placed complex order (REST answer or ``ComplexOrder`` push): remember its members, apply each."""
        cid = str(complex_order.id)
        for placed in members(complex_order):
            self._complex_of[str(placed.id)] = cid
            self._on_order(placed)

    def _on_member_ended(self, ev: OrderEvent) -> None:
        """An OCO member ended before it reached us with its sibling: a held sibling goes out alone."""
        if ev.order.broker not in (self.name, "") or self._brackets.claims(ev.order):
            return  # a bracket member that never reached us: the group manager cancels the rest of its bracket
        held = self._pairing.ended(ev.order)
        if held is None:
            return
        task = asyncio.get_running_loop().create_task(self._send_alone(held), name="tastytrade:oco-alone")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_alone(self, order: Order) -> None:
        try:
            self._arm.check(order.account_id, "submit")
            await self._place_single(order, self.build_order(order))
        except BrokerError as exc:
            if not self._arm.armed_account or not self.conn.connected:
                self._pending.pop(order.client_order_id, None)
                self._reject(order, f"held for its OCO sibling and not sent: {exc}")
                return
            # the outcome is unknown: it stays findable by client order id for the OMS's reconciliation
            log.warning("tastytrade: held OCO member %s sent alone without a clear answer: %s",
                        order.client_order_id, exc)
            self.bus.publish(Alert(level="error", source="tastytrade", message=(
                f"order {order.client_order_id} (its OCO sibling ended) was sent alone without a clear answer: "
                f"{exc}; the next reconciliation settles it")))

    def _reject(self, order: Order, message: str) -> None:
        message = message or "rejected by tastytrade"
        rejected = order.evolve(updated_at=self.clock.now(), status=OrderStatus.REJECTED, reason=message, broker=self.name)
        if rejected.broker_order_id:
            self._orders[rejected.broker_order_id] = rejected
        log.warning("tastytrade rejected order %s: %s", order.order_id, message)
        self.bus.publish(OrderRejected(order=rejected))

    async def cancel(self, order: Order) -> None:
        """Cancel at the broker; ``OrderCancelled`` follows from the account streamer. Never blocked.

        A member held for its OCO sibling is taken back here; a member of a placed OCO cancels the whole complex
        order (``DELETE /complex-orders/{id}``), as one member of a one-cancels-other pair ending ends both."""
        if self._pairing.release(order):
            self._pending.pop(order.client_order_id, None)
            self.bus.publish(OrderCancelled(order=self._ours(order).evolve(
                updated_at=self.clock.now(), status=OrderStatus.CANCELLED, reason="cancelled before it was sent (held for its OCO sibling)")))
            return
        if self._brackets.release(order):
            self._pending.pop(order.client_order_id, None)
            self.bus.publish(OrderCancelled(order=self._ours(order).evolve(
                updated_at=self.clock.now(), status=OrderStatus.CANCELLED,
                reason="cancelled before it was sent (held for the rest of its bracket)")))
            return
        acct, s = self._require()
        bid = order.broker_order_id or self._by_coid.get(order.client_order_id)
        if not bid:
            raise BrokerError(f"tastytrade: order {order.order_id} has no broker order id to cancel")
        self._cancel_requested.add(bid)
        cid = self._complex_of.get(bid)
        if cid is None:
            await self.conn.call("cancel order", lambda: acct.delete_order(s, int(bid)))
            return
        self._cancel_requested.update(b for b, c in self._complex_of.items() if c == cid)
        if cid in self._complex_cancelling:
            return
        self._complex_cancelling.add(cid)
        try:
            await self.conn.call("cancel OCO", lambda: acct.delete_complex_order(s, int(cid)))
        except BrokerError:
            self._complex_cancelling.discard(cid)
            raise
        except Exception as exc:  # nothing left open (a member filled, the venue cancelled the rest): read it
            log.info("tastytrade: OCO %s not cancellable (%s); reading its state", cid, str(exc).strip())
            self._on_complex(await self.conn.call("complex order", lambda: acct.get_complex_order(s, int(cid))))

    async def replace(self, order: Order, limit_price: Decimal, quantity: int | None = None) -> None:
        """Change the price (tastytrade replaces price/TIF, not legs or size: a new quantity is refused)."""
        self._arm.check(order.account_id, "replace")
        acct, s = self._require()
        bid = order.broker_order_id or self._by_coid.get(order.client_order_id)
        if not bid:
            raise BrokerError(f"tastytrade: order {order.order_id} has no broker order id to replace")
        if quantity is not None and quantity != order.quantity:
            raise BrokerError("tastytrade cannot change the quantity of a working order: cancel and re-enter")
        current = self._orders.get(bid, order)
        new = self.build_order(current, price=limit_price)
        self._replaced.add(bid)
        try:
            placed = await self.conn.call("replace order", lambda: acct.replace_order(s, int(bid), new))
        except BrokerError:
            self._replaced.discard(bid)
            raise
        except Exception as exc:  # TastytradeError or validation: the replace was refused, the order keeps its old terms
            self._replaced.discard(bid)
            # the change was refused, not the order: it keeps working on its old terms
            self.bus.publish(OrderReplaceRejected(order=current.evolve(
                updated_at=self.clock.now(), reason=f"replace refused: {str(exc).strip()}")))
            return
        nid = str(placed.id)
        updated = current.evolve(updated_at=self.clock.now(), broker_order_id=nid, limit_price=limit_price)
        self._orders.pop(bid, None)
        self._orders[nid] = updated
        self._by_coid[updated.client_order_id] = nid
        self.bus.publish(OrderReplaced(order=updated, previous_price=current.limit_price))
        self._on_order(placed)

    # ---- streamed updates -----------------------------------------------------------------------
    def _on_order(self, placed: Any) -> None:
        bid = str(placed.id)
        order = self._orders.get(bid)
        if order is None:
            coid = placed.external_identifier or ""
            if coid and coid in self._by_coid and self._by_coid[coid] != bid:
                order = self._orders.get(self._by_coid[coid])
            if order is None and coid in self._pending:
                order = self._pending.pop(coid)
            if order is None:
                order = order_from_placed(placed, self.clock.now())
                if not placed.external_identifier:
                    log.info("tastytrade: order %s was not placed by Optiondesk", bid)
            order = order.evolve(updated_at=self.clock.now(), broker_order_id=bid)
            self._orders[bid] = order
            if order.client_order_id:
                self._by_coid[order.client_order_id] = bid
        status = str(placed.status.value)
        new_fills = self._new_fills(order, placed)
        filled_qty, avg = fill_totals(order, placed)
        if new_fills:
            target = OrderStatus.FILLED if status == "Filled" or filled_qty >= order.quantity \
                else OrderStatus.PARTIALLY_FILLED
            order = order.evolve(updated_at=self.clock.now(), status=target, filled_quantity=filled_qty, avg_fill_price=avg)
            self._orders[bid] = order
            self.bus.publish(OrderFilled(order=order, fills=tuple(new_fills)))
            return
        mapped = _TT_STATUS.get(status)
        if mapped is OrderStatus.WORKING or mapped is OrderStatus.SUBMITTED:
            if order.status in (OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.PENDING_APPROVAL) and \
                    mapped is OrderStatus.WORKING:
                order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.WORKING)
                self._orders[bid] = order
                self.bus.publish(OrderAccepted(order=order))
            return
        if order.status.is_terminal:
            return
        if mapped is OrderStatus.CANCELLED:
            if bid in self._replaced:
                self._replaced.discard(bid)
                self._orders.pop(bid, None)
                return
            reason = "" if bid in self._cancel_requested else (
                "one-cancels-other at tastytrade" if bid in self._complex_of else "cancelled by broker")
            order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.CANCELLED, reason=reason)
            self._orders[bid] = order
            self.bus.publish(OrderCancelled(order=order))
        elif mapped is OrderStatus.REJECTED:
            self._reject(order, placed.reject_reason or "rejected by tastytrade")
        elif mapped is OrderStatus.EXPIRED:
            order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.EXPIRED)
            self._orders[bid] = order
            self.bus.publish(OrderExpired(order=order))

    def _new_fills(self, order: Order, placed: Any) -> list[Fill]:
        out: list[Fill] = []
        cache = self._fills_cache.setdefault(order.order_id, [])
        for i, leg in enumerate(placed.legs):
            for f in leg.fills or ():
                if f.fill_id in self._seen_fills:
                    continue
                self._seen_fills.add(f.fill_id)
                ours = order.legs[i] if i < len(order.legs) else None
                inst = ours.instrument if ours is not None else instrument_from_tt(leg.symbol)
                sign = 1 if str(leg.action.value).startswith("Buy") else -1
                fill = Fill(fill_id=f"tastytrade-{f.fill_id}", order_id=order.order_id, instrument=inst,
                            quantity=sign * int(f.quantity), price=Decimal(f.fill_price), ts=f.filled_at,
                            leg_index=i, client_order_id=order.client_order_id)
                out.append(fill)
                cache.append(fill)
        return out

    def _set_position(self, p: Position) -> None:
        prev = self._positions.get(p.symbol)
        self._positions[p.symbol] = p
        if prev is None or prev.quantity != p.quantity or prev.avg_price != p.avg_price:
            self.bus.publish(PositionChanged(position=p, broker=self.name))

    def _on_position(self, cp: Any) -> None:
        self._set_position(position_from_tt(cp.symbol, cp.quantity, cp.quantity_direction, cp.average_open_price,
                                            cp.multiplier, cp.underlying_symbol))

    def _on_balance(self, b: Any) -> None:
        self.bus.publish(AccountUpdated(account=snapshot_from_tt(b, self.conn.account_id, self.clock.now())))

    def cached_positions(self) -> list[Position]:
        return [p for p in self._positions.values() if p.quantity != 0]


