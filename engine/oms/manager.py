"""OrderManager: the one order path and the order state machine (docs/architecture.md §4).

``intent → OrderFactory → RiskEngine → ApprovalGate → ModeRouter → Broker``. Every public way to trade — the
``SubmitOrder`` command (GUI), :meth:`OrderManager.submit` (strategies, backtester) and the kill switch's
flatten — goes through :meth:`OrderManager._submit`; nothing else calls a broker's ``submit``.

Persistence before action: each transition is written to the store (order row + ``order_events`` row, one
transaction) *before* the next step acts on it — the intent before the risk check, APPROVED before sending,
SUBMITTED (with the client order id) before the broker call, the broker's ack and fills as they arrive.
Restart (:meth:`start`) settles whatever a crash left: pending approvals expire, approved-but-unsent orders are
cancelled (never sent late), submitted/working orders are reconciled against the broker (adopt broker truth,
never send twice), and a mismatch trips the kill switch.

Broker reports (``OrderAccepted``, ``OrderFilled``, ``OrderRejected``, ``OrderCancelled``, ``OrderExpired``,
``OrderReplaced``) are applied by inline subscribers, idempotently, so the OMS's state reflects them before
later subscribers see the event. The OMS publishes ``OrderCreated``, ``OrderDenied`` (with every failed check),
``OrderPendingApproval`` (with the preview), ``OrderApproved``, ``OrderSubmitted``, and ``OrderCancelled`` /
``OrderExpired`` / ``OrderRejected`` for orders that never reached a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.brokers.base import BrokerError
from engine.bus.commands import (
    ApproveOrder,
    CancelAllOrders,
    CancelOrder,
    ModifyOrderPrice,
    RejectOrder,
    ReplaceOrder,
    SetApprovalMode,
    SubmitOrder,
    SwitchMode,
)
from engine.bus.events import (
    Alert,
    ApprovalModeChanged,
    ConnectionStateChanged,
    ModeChanged,
    OrderAccepted,
    OrderApproved,
    OrderCancelled,
    OrderCreated,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderPendingApproval,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderSubmitted,
)
from engine.model import (
    Fill,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    can_transition,
)
from engine.oms.approval import ApprovalGate, PendingApproval, build_preview
from engine.oms.config import OmsConfig
from engine.oms.factory import OrderFactory, OrderValidationError, floor_to_tick, venue_tick
from engine.oms.flatten import closing_intent, flatten_groups
from engine.oms.reconciliation import ReconciliationReport, compare_positions, plan
from engine.oms.router import LIVE, ModeRouter, ModeSwitchError
from engine.oms.validation import intent_problem, order_problem, parse_price
from engine.risk.engine import KILL_SWITCH_SOURCE, CheckResult, RiskDecision, RiskEngine
from engine.risk.state import TradingState

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.risk.kill_switch import KillSwitch
    from engine.store import Store

log = logging.getLogger(__name__)

#: statuses that block a mode switch and that cancel-all / the kill switch sweep
OPEN_STATUSES = (OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.WORKING,
                 OrderStatus.PARTIALLY_FILLED)

_EVENT_STATUS: dict[type, OrderStatus] = {
    OrderAccepted: OrderStatus.WORKING,
    OrderRejected: OrderStatus.REJECTED,
    OrderCancelled: OrderStatus.CANCELLED,
    OrderExpired: OrderStatus.EXPIRED,
}


KV_APPROVAL = "oms.approval_enabled"
#: the reason an order carries while a submit's outcome is unknown (5xx, timeout, dropped connection)
UNKNOWN_OUTCOME = "unknown, reconciling"
KV_POSITIONS = "oms.positions."  # + broker name: expected positions, moved by every fill the OMS records


def _transport_failure(exc: BaseException) -> bool:
    """No answer from the broker (timeout, dropped connection, 5xx, circuit open): worth retrying. Anything else
    is the broker's answer (the order is gone, not cancellable, unknown)."""
    return isinstance(exc, BrokerError | OSError | TimeoutError)


class OrderCommandError(ValueError):
    """A command could not be applied (unknown order, wrong state, refused modification)."""


class OrderManager:
    """Facade of the order path. Construct, :meth:`register` on the bus, then ``await start()``."""

    def __init__(self, bus: Bus, store: Store, router: ModeRouter, risk: RiskEngine,
                 kill_switch: KillSwitch | None = None, *, config: OmsConfig | None = None,
                 now: Callable[[], datetime],
                 on_persisted: Callable[[Order, str], None] | None = None) -> None:
        self.bus = bus
        self.store = store
        self.router = router
        self.risk = risk
        self.kill_switch = kill_switch
        self.config = config or OmsConfig()
        self.now = now  # the engine clock: every time this manager stamps comes from it
        self.factory = OrderFactory(now)
        self.gate = ApprovalGate(store, enabled_paper=self.config.approval_in_paper,
                                 enabled_live=self.config.approval_in_live, expiry_s=self.config.approval_expiry_s,
                                 now=now)
        saved = store.kv.get(KV_APPROVAL)
        if isinstance(saved, dict):  # the user's last choice per mode wins over the settings default
            self.gate.enabled.update({k: bool(v) for k, v in saved.items() if k in ("paper", "live")})
        #: called after every persisted step with (order, step): audit hooks, metrics, crash tests
        self.on_persisted = on_persisted
        self._open: dict[str, Order] = {}
        self._recent: OrderedDict[str, Order] = OrderedDict()
        self._by_coid: dict[str, str] = {}
        self._by_broker_id: dict[str, str] = {}
        self._cancel_requested: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}  # why we asked: the order's reason when the broker gives none
        #: replaces sent and not yet answered: order id -> the reservation held before (None: there was none)
        self._replacing: dict[str, Any] = {}
        self._replace_refusals: dict[str, str] = {}
        self._subs: list[Any] = []
        self._registered: list[type] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_reconciliation: list[ReconciliationReport] = []
        self._started = False
        self._alive = True
        self._reconcile_locks: dict[str, asyncio.Lock] = {}
        self._cancel_retries: dict[str, asyncio.Task[None]] = {}
        self._sweep_retry: asyncio.Task[None] | None = None  # the kill switch's sweep, when a listing failed
        self._unknown: dict[str, asyncio.Task[None]] = {}  # submits whose outcome is unknown, being settled

    # ---- wiring ---------------------------------------------------------------------------------
    def register(self) -> None:
        """Register the command handlers and subscribe to broker reports (inline, before other subscribers)."""
        handlers: dict[type, Callable[[Any], Any]] = {
            SubmitOrder: self._cmd_submit, ApproveOrder: self._cmd_approve, RejectOrder: self._cmd_reject,
            ModifyOrderPrice: self._cmd_modify, CancelOrder: self._cmd_cancel, CancelAllOrders: self._cmd_cancel_all,
            ReplaceOrder: self._cmd_replace, SetApprovalMode: self._cmd_approval_mode, SwitchMode: self._cmd_switch,
        }
        for cmd, fn in handlers.items():
            self.bus.register(cmd, fn)
            self._registered.append(cmd)
        for ev in (OrderAccepted, OrderFilled, OrderRejected, OrderCancelled, OrderExpired, OrderReplaced):
            self._subs.append(self.bus.subscribe(ev, self._on_broker_event, name=f"oms:{ev.__name__}"))
        self._subs.append(self.bus.subscribe(OrderReplaceRejected, self._on_replace_rejected,
                                             name="oms:OrderReplaceRejected"))
        self._subs.append(self.bus.subscribe(ConnectionStateChanged, self._on_connection, name="oms:connections"))
        if self.kill_switch is not None:
            self.kill_switch.bind(self.kill_cancel_all, self.flatten, self.flatten_progress, self.cancel_flatten_orders)

    async def start(self, *, reconcile: bool = True) -> None:
        """Load open orders from the store and settle what a previous run left behind."""
        for o in self.store.orders.list(OPEN_STATUSES):
            self._cache(o)
        for o in list(self._open.values()):
            if o.status is OrderStatus.PENDING_APPROVAL:
                self._transition(o.order_id, OrderStatus.EXPIRED, step="restart",
                                 reason="engine restarted before the order was approved")
                self.gate.decide(o.order_id, "expired", "system", "engine restarted")
                self.bus.publish(OrderExpired(order=self._get(o.order_id)))
            elif o.status is OrderStatus.APPROVED:
                self._transition(o.order_id, OrderStatus.CANCELLED, step="restart",
                                 reason="not sent: engine stopped before submission")
                self.bus.publish(OrderCancelled(order=self._get(o.order_id)))
        for o in list(self._open.values()):  # submits whose outcome was unknown when we stopped
            if o.status is OrderStatus.SUBMITTED and o.reason.startswith(UNKNOWN_OUTCOME) and \
                    o.broker in self.router.brokers:
                self._settle_unknown(o.order_id, o.broker)
        if reconcile:
            names = {o.broker for o in self._open.values()} | {self.router.active_name}
            for name in sorted(names):
                if name in self.router.brokers:
                    await self.reconcile(name)
        self._started = True
        for o in self._open.values():  # orders still working keep their exposure reserved
            if o.status.is_working and not self.risk.has_reservation(o.order_id):
                self.risk.reserve(o, self.risk.check(o, consume=False, skip=frozenset(
                    {"order_rate", "duplicate", "price_collar"})))

    async def stop(self) -> None:
        self._alive = False
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        for cmd in self._registered:
            self.bus.unregister(cmd)
        self._registered.clear()
        self.gate.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- read-only API (GUI, CLI, strategies) ----------------------------------------------------
    def order(self, order_id: str) -> Order | None:
        o = self._open.get(order_id) or self._recent.get(order_id)
        return o if o is not None else self.store.orders.get(order_id)

    def open_orders(self) -> list[Order]:
        """Orders not yet terminal (pending approval, approved, submitted, working, partially filled)."""
        return sorted(self._open.values(), key=lambda o: o.created_at)

    def working_orders(self) -> list[Order]:
        return [o for o in self.open_orders() if o.status.is_working]

    def pending_approvals(self) -> list[PendingApproval]:
        """Pending approvals with their previews (``.order``, ``.preview``), oldest first."""
        return sorted(self.gate.pending.values(), key=lambda p: p.preview.created_at)

    def recent_orders(self, limit: int = 200, statuses: tuple[OrderStatus, ...] | None = None) -> list[Order]:
        """The latest orders from the store (all statuses unless given), newest last."""
        rows = self.store.orders.list(statuses)
        return rows[-limit:]

    def filled_orders(self, limit: int = 200) -> list[Order]:
        return self.recent_orders(limit, (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED))

    def order_events(self, order_id: str) -> list[dict[str, Any]]:
        return self.store.orders.events(order_id)

    @property
    def mode(self) -> str:
        return self.router.mode

    @property
    def approval_required(self) -> bool:
        return self.gate.required(self.router.mode)

    # ---- state machine --------------------------------------------------------------------------
    def _cache(self, o: Order) -> None:
        if o.status.is_terminal:
            self._open.pop(o.order_id, None)
            self._recent[o.order_id] = o
            self._recent.move_to_end(o.order_id)
            while len(self._recent) > 2000:
                self._recent.popitem(last=False)
        else:
            self._open[o.order_id] = o
        self._by_coid[o.client_order_id] = o.order_id
        if o.broker_order_id:
            self._by_broker_id[o.broker_order_id] = o.order_id

    def _get(self, order_id: str) -> Order:
        o = self._open.get(order_id) or self._recent.get(order_id)
        if o is None:
            o = self.store.orders.get(order_id)
            if o is None:
                raise OrderCommandError(f"unknown order {order_id!r}")
        return o

    def _persist(self, order: Order, step: str, detail: dict[str, Any] | None = None, *, fact: bool = False) -> None:
        """Write, then cache. ``fact``: a broker report — it happened whether or not the disk takes it, so a failed
        write is alerted and the cache still follows the broker (restart reconciliation repairs the store)."""
        try:
            self.store.orders.save_with_event(order, {"step": step, **(detail or {})})
        except sqlite3.Error as exc:
            if not fact:
                raise
            log.exception("could not store %s of %s", step, order.order_id)
            self.bus.publish(Alert(level="critical", source="oms", message=(
                f"order {order.client_order_id} is {order.status.value} at the broker but could not be saved "
                f"({exc}); reconciliation repairs it at the next start")))
        self._cache(order)
        if order.status.is_terminal:
            self.risk.release(order.order_id)
            self._cancel_requested.discard(order.order_id)
            self._cancel_reasons.pop(order.order_id, None)
            self._replacing.pop(order.order_id, None)
        if self.on_persisted is not None:
            self.on_persisted(order, step)

    def _transition(self, order_id: str, status: OrderStatus, *, step: str, detail: dict[str, Any] | None = None,
                    **changes: Any) -> Order:
        cur = self._get(order_id)
        if cur.status is not status and not can_transition(cur.status, status):
            raise OrderCommandError(f"order {order_id} cannot go from {cur.status.value} to {status.value}")
        new = cur.evolve(status=status, updated_at=self.now(), **changes)
        self._persist(new, step, detail)
        return new

    # ---- the one path ---------------------------------------------------------------------------
    async def submit(self, intent: OrderIntent) -> Order:
        """Submit an intent (strategies, backtester, scripts). Same path as the ``SubmitOrder`` command."""
        return await self._submit(intent, internal=False)

    async def _cmd_submit(self, cmd: SubmitOrder) -> Order:
        return await self._submit(cmd.intent, internal=False)

    async def _submit(self, intent: OrderIntent, *, internal: bool) -> Order:
        """Whatever ``intent`` is, the answer is an order (denied with a named reason when malformed), never an
        exception: validation (:mod:`engine.oms.validation`) is total and runs before anything reads the intent."""
        broker, account = self.router.active_name, self.router.account_id()
        coid = getattr(intent, "client_order_id", None) if isinstance(intent, OrderIntent) else None
        if isinstance(coid, str) and coid:  # resubmission: the same client order id never makes a second order
            existing_id = self._by_coid.get(coid)
            existing = self._get(existing_id) if existing_id else self.store.orders.by_client_order_id(coid)
            if existing is not None:
                return existing
        problem = intent_problem(intent, self.now())
        if problem is not None:
            return self._deny_intent(intent, broker, account, CheckResult(
                "order_valid", False, message=problem.message, stage="validate", code=problem.code))
        if intent.source == KILL_SWITCH_SOURCE and not internal:
            return self._deny_intent(intent, broker, account, CheckResult(
                "order_valid", False, message="source 'kill_switch' is reserved for the kill switch",
                stage="validate", code="reserved_source"))
        try:
            order = self.factory.create(intent, broker=broker, account_id=account,
                                        tick_for=self.router.active.tick_size)
        except OrderValidationError as exc:
            return self._deny_intent(intent, broker, account, CheckResult("order_valid", False, message=str(exc),
                                                                          stage="validate", code=exc.code))
        except Exception as exc:  # e.g. the venue's tick schedule failing on this contract: deny, never raise
            log.exception("could not build an order from %r", intent)
            return self._deny_intent(intent, broker, account, CheckResult(
                "order_valid", False, message=f"could not build the order: {exc}", stage="validate",
                code="internal"))
        self._persist(order, "intent", {"source": order.source})
        self.bus.publish(OrderCreated(order=order))
        try:
            decision = self.risk.check(order)  # synchronous: counters and reservation update in this call
        except Exception as exc:  # a failing check must deny, never leave the order hanging or let it pass
            log.exception("risk check failed for %s", order.order_id)
            self.risk.release(order.order_id)
            return self._deny(order, (CheckResult("risk_engine", False, message=f"risk check failed: {exc}"),))
        if not decision.passed:
            return self._deny(order, decision.failed)
        if self.gate.required(self.router.mode) and order.source != KILL_SWITCH_SOURCE:
            try:
                return await self._await_approval(order, decision)
            except Exception as exc:
                log.exception("approval preview failed for %s", order.order_id)
                cur = self._get(order.order_id)
                if cur.status is OrderStatus.PENDING_APPROVAL and order.order_id not in self.gate.pending:
                    return self._deny(cur, (CheckResult("approval", False,
                                                        message=f"could not build the approval preview: {exc}"),))
                return cur
        return await self._approve_and_send(order.order_id, by="auto")

    def _deny_intent(self, intent: Any, broker: str, account: str, check: CheckResult) -> Order:
        order = self.factory.rejected_intent(intent, check.message, broker=broker, account_id=account)
        try:
            self._persist(order, "denied", {"checks": [check.to_dict()]})
        except Exception:  # an intent too broken to store (e.g. no legs): still report it
            log.exception("could not store denied intent")
        self._record_denial(order, (check,))
        self.bus.publish(OrderDenied(order=order, checks=(check,)))
        return order

    def _deny(self, order: Order, failed: tuple[CheckResult, ...]) -> Order:
        reason = "; ".join(c.message for c in failed)
        order = self._transition(order.order_id, OrderStatus.DENIED, step="denied",
                                 detail={"checks": [c.to_dict() for c in failed]}, reason=reason)
        self._record_denial(order, failed)
        self.bus.publish(OrderDenied(order=order, checks=failed))
        return order

    def _record_denial(self, order: Order, failed: tuple[CheckResult, ...]) -> None:
        self.store.execute("INSERT INTO risk_events(ts, kind, order_id, detail) VALUES (?,?,?,?)",
                           (self.now().isoformat(), "order_denied", order.order_id,
                            json.dumps({"checks": [c.to_dict() for c in failed], "source": order.source},
                                       default=str)))

    async def _await_approval(self, order: Order, decision: RiskDecision) -> Order:
        broker_preview = await self.router.preview(order)
        cur = self._get(order.order_id)
        if cur.status is not OrderStatus.PENDING_APPROVAL:  # cancelled / killed while previewing
            return cur
        preview = build_preview(cur, decision, self.risk, broker_preview, now=self.now(),
                                expiry_s=self.gate.expiry_s)
        self.gate.add(cur, preview, self._expire)
        self.store.orders.append_event(cur.order_id, OrderStatus.PENDING_APPROVAL,
                                       {"step": "awaiting_approval", "expires_at": preview.expires_at.isoformat()})
        self.bus.publish(OrderPendingApproval(order=cur, preview=preview))
        return cur

    async def _approve_and_send(self, order_id: str, *, by: str) -> Order:
        order = self._transition(order_id, OrderStatus.APPROVED, step="approved", detail={"by": by})
        self.bus.publish(OrderApproved(order=order, by=by))
        return await self._send(order_id)

    async def _send(self, order_id: str) -> Order:
        order = self._get(order_id)
        if order_id in self._cancel_requested:
            order = self._transition(order_id, OrderStatus.CANCELLED, step="cancelled", reason="cancelled before sending")
            self.bus.publish(OrderCancelled(order=order))
            return order
        state = self.kill_switch.state if self.kill_switch is not None else TradingState.ACTIVE
        if state is not TradingState.ACTIVE and not (
                (order.source == KILL_SWITCH_SOURCE or state is TradingState.REDUCING) and self.risk.is_reducing(order)):
            return self._deny(order, (CheckResult("trading_state", False, message=(
                f"trading became {state.value} before the order was sent")),))
        try:
            broker = self.router.broker_for(order)
        except BrokerError as exc:
            return self._reject_unsent(order_id, str(exc))
        order = self._transition(order_id, OrderStatus.SUBMITTED, step="submitted",
                                 detail={"client_order_id": order.client_order_id, "broker": broker.name},
                                 account_id=order.account_id or broker.account_id)
        self.bus.publish(OrderSubmitted(order=order))
        try:
            await asyncio.wait_for(self.router.submit(order), self.config.broker_call_timeout_s)
        except (BrokerError, OSError, TimeoutError) as exc:
            from engine.brokers.circuit_breaker import CircuitOpenError
            from engine.brokers.resilience import BrokerNotArmed
            from engine.oms.router import RoutingError

            if isinstance(exc, CircuitOpenError | RoutingError | BrokerNotArmed):  # provably never sent
                return self._reject_unsent(order_id, str(exc))
            # the broker may or may not have it: hold it as unknown and settle it by client order id, never by
            # resending blindly and never by calling it rejected
            return await self._outcome_unknown(order_id, broker.name, exc)
        if self.on_persisted is not None:
            self.on_persisted(self._get(order_id), "sent")
        after = self._get(order_id)
        if order_id in self._cancel_requested and not after.status.is_terminal:
            # a cancel (or the kill switch) raced the submission: cancel again now that the broker has it
            try:
                await asyncio.wait_for(self.router.cancel(after), self.config.broker_call_timeout_s)
            except (BrokerError, OSError, TimeoutError) as exc:
                self.bus.publish(Alert(level="critical", source="oms",
                                       message=f"order {after.client_order_id} could not be cancelled after a "
                                               f"cancel raced its submission: {exc}"))
        return self._get(order_id)

    # ---- submits whose outcome is unknown ---------------------------------------------------------
    async def _outcome_unknown(self, order_id: str, broker_name: str, exc: BaseException) -> Order:
        cur = self._get(order_id)
        if cur.status is OrderStatus.SUBMITTED:
            held = cur.evolve(updated_at=self.now(), reason=f"{UNKNOWN_OUTCOME}: {exc}")
            self._persist(held, "outcome_unknown", {"error": str(exc)}, fact=True)
        self.bus.publish(Alert(level="error", source="oms", message=(
            f"submit of {cur.client_order_id} got no clear answer ({exc}): held as {UNKNOWN_OUTCOME} by client "
            "order id; it is not resent")))
        self._settle_unknown(order_id, broker_name)
        try:
            await self.reconcile(broker_name)
        except Exception:
            log.exception("reconciliation after an unknown submit outcome failed")
        return self._get(order_id)

    def _settle_unknown(self, order_id: str, broker_name: str) -> None:
        if order_id in self._unknown or not self._alive:
            return
        task = asyncio.get_running_loop().create_task(self._settle_loop(order_id, broker_name),
                                                      name=f"oms:settle-unknown:{order_id}")
        self._unknown[order_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), self._unknown.pop(order_id, None)))

    async def _settle_loop(self, order_id: str, broker_name: str) -> None:
        """Reconcile with backoff until the broker's open orders or fills settle the order by client order id."""
        loop = asyncio.get_running_loop()
        t0, delay, alerted = loop.time(), 0.25, False
        while self._get(order_id).status is OrderStatus.SUBMITTED:
            await asyncio.sleep(delay)
            delay = min(self.config.unknown_outcome_max_interval_s, delay * 2)
            try:
                await self.reconcile(broker_name)
            except Exception:
                log.exception("reconciling an unknown submit outcome failed")
            waited = loop.time() - t0
            if not alerted and waited >= self.config.unknown_outcome_alert_s and \
                    self._get(order_id).status is OrderStatus.SUBMITTED:
                alerted = True
                o = self._get(order_id)
                self.bus.publish(Alert(level="critical", source="oms", message=(
                    f"order {o.client_order_id}: outcome still unknown after {waited:.0f} s; look it up at "
                    f"{broker_name}. It stays {UNKNOWN_OUTCOME} (reserved in the risk limits) until found.")))
        cur = self._get(order_id)
        if order_id in self._cancel_requested and cur.status.is_working:  # cancelled (or killed) meanwhile
            try:
                await self.cancel(order_id, by="system", reason="cancel requested while the outcome was unknown")
            except Exception:
                log.exception("cancel after settling %s failed", order_id)

    def _reject_unsent(self, order_id: str, message: str) -> Order:
        order = self._transition(order_id, OrderStatus.REJECTED, step="not_sent",
                                 reason=f"not sent to the broker: {message}")
        self.bus.publish(OrderRejected(order=order))
        return order

    # ---- approvals ------------------------------------------------------------------------------
    def _pending(self, order_id: str) -> PendingApproval:
        p = self.gate.pending.get(order_id)
        if p is None:
            o = self._get(order_id)
            raise OrderCommandError(f"order {order_id} is not awaiting approval (status {o.status.value})")
        return p

    async def _cmd_approve(self, cmd: ApproveOrder) -> Order:
        self._pending(cmd.order_id)
        order = self._get(cmd.order_id)
        # the market may have moved while it waited: re-check state, data and collar (not counters)
        recheck = self.risk.check(order, consume=False, skip=frozenset({"order_rate", "duplicate"}))
        failed = tuple(r for r in recheck.failed if r.name in ("trading_state", "market_data", "price_collar",
                                                                "order_valid"))
        if failed:
            self.gate.decide(cmd.order_id, "denied_on_approval", cmd.by, "; ".join(c.message for c in failed))
            return self._deny(order, failed)
        self.gate.decide(cmd.order_id, "approved", cmd.by)
        return await self._approve_and_send(cmd.order_id, by=cmd.by)

    async def _cmd_reject(self, cmd: RejectOrder) -> Order:
        self._pending(cmd.order_id)
        reason = cmd.reason or "rejected by approver"
        self.gate.decide(cmd.order_id, "rejected", cmd.by, reason)
        # a human's "no" is a rejection, not a risk denial: DENIED is reserved for our risk checks
        order = self._transition(cmd.order_id, OrderStatus.REJECTED, step="rejected_by_approver",
                                 detail={"by": cmd.by, "reason": reason}, reason=f"rejected by {cmd.by}: {reason}")
        self.bus.publish(OrderRejected(order=order))
        return order

    def _expire(self, order_id: str) -> None:
        if order_id not in self.gate.pending:
            return
        self.gate.decide(order_id, "expired", "system", f"not approved within {self.gate.expiry_s:.0f}s")
        order = self._transition(order_id, OrderStatus.EXPIRED, step="approval_expired",
                                 reason=f"approval expired after {self.gate.expiry_s:.0f}s")
        self.bus.publish(OrderExpired(order=order))

    async def _cmd_modify(self, cmd: ModifyOrderPrice) -> Order:
        p = self._pending(cmd.order_id)
        old = p.order
        try:
            raw = Decimal(cmd.limit_price)
            price = floor_to_tick(raw, venue_tick(old.legs, raw, self.router.broker_for(old).tick_size))
        except (ArithmeticError, ValueError) as exc:
            raise OrderCommandError(f"bad limit price {cmd.limit_price!r}: {exc}") from None
        if old.order_type is not OrderType.LIMIT:
            raise OrderCommandError("only limit orders have a price to modify")
        candidate = old.evolve(limit_price=price, updated_at=self.now())
        decision = self._recheck_reserved(old, candidate, skip=frozenset({"order_rate", "duplicate"}))
        if not decision.passed:
            msg = "; ".join(c.message for c in decision.failed)
            self.bus.publish(Alert(level="warning", source="approval",
                                   message=f"price change to {price} refused: {msg}"))
            raise OrderCommandError(f"price change refused: {msg}")
        self._persist(candidate, "price_modified", {"by": cmd.by, "previous": str(old.limit_price),
                                                     "limit_price": str(price)})
        preview = build_preview(candidate, decision, self.risk, await self.router.preview(candidate),
                                now=p.preview.created_at, expiry_s=self.gate.expiry_s)
        self.gate.update(candidate, preview)
        self.gate.decide(cmd.order_id, "modified", cmd.by, f"price {old.limit_price} → {price}")
        self.bus.publish(OrderPendingApproval(order=candidate, preview=preview))
        return candidate

    def _recheck_reserved(self, old: Order, candidate: Order, *, skip: frozenset[str]) -> RiskDecision:
        """Check ``candidate`` in place of ``old``'s reservation; keeps the old one when the check fails."""
        had = self.risk.take_reservation(old.order_id)
        decision = self.risk.check(candidate, consume=True, skip=skip)
        if not decision.passed:
            self.risk.restore_reservation(had)
        return decision

    async def _cmd_approval_mode(self, cmd: SetApprovalMode) -> bool:
        self.gate.set_enabled(self.router.mode, cmd.enabled, cmd.by)
        self.store.kv.set(KV_APPROVAL, self.gate.enabled)
        self.bus.publish(ApprovalModeChanged(enabled=bool(cmd.enabled)))
        return bool(cmd.enabled)

    # ---- cancel / replace -----------------------------------------------------------------------
    async def cancel(self, order_id: str, *, by: str = "user", reason: str = "", _logged: bool = False) -> Order:
        """Cancel one order: pending/approved ones end here; working ones are cancelled at their broker."""
        order = self._get(order_id)
        if order.status.is_terminal:
            return order
        if order.status is OrderStatus.PENDING_APPROVAL:
            self.gate.decide(order_id, "cancelled", by, reason)
            cancelled = order.evolve(status=OrderStatus.CANCELLED, updated_at=self.now(),
                                     reason=reason or f"cancelled by {by}")
            # it never reached a broker: cancelled is a fact even when the disk cannot take it
            self._persist(cancelled, "cancelled", {"by": by}, fact=True)
            self.bus.publish(OrderCancelled(order=cancelled))
            return cancelled
        if order.status is OrderStatus.APPROVED:  # being sent right now: _send sees the flag before the call
            self._cancel_requested.add(order_id)
            self.store.orders.append_event(order_id, order.status, {"step": "cancel_requested", "by": by})
            return order
        self._cancel_requested.add(order_id)
        if reason:
            self._cancel_reasons[order_id] = reason
        if not _logged:
            try:
                self.store.orders.append_event(order_id, order.status, {"step": "cancel_requested", "by": by,
                                                                        "reason": reason})
            except sqlite3.Error:
                log.exception("could not log the cancel request of %s; cancelling anyway", order_id)
        try:
            await asyncio.wait_for(self.router.cancel(order), self.config.broker_call_timeout_s)
        except (BrokerError, OSError, TimeoutError) as exc:
            self.bus.publish(Alert(level="error", source="oms",
                                   message=f"cancel of {order.client_order_id} failed: {exc}; retrying"))
            self._retry_cancel(order_id, after=exc)
            raise
        return self._get(order_id)

    async def _cmd_cancel(self, cmd: CancelOrder) -> Order:
        return await self.cancel(cmd.order_id, by=cmd.by)

    async def cancel_all(self, reason: str = "cancel all", by: str = "system", *, sweep: bool = False) -> int:
        """Cancel every open order at once (pending approvals included), then — with ``sweep`` — every other open
        order the active broker reports for the account (placed by another app, or lost by a crash). Returns how
        many cancels the brokers accepted. Cancels that fail in transport are retried in the background until
        the broker confirms or says the order is gone; a store that cannot be written never stops a cancel."""
        targets = list(self._open.values())
        working = [o for o in targets if o.status.is_working]
        try:
            with self.store.transaction():  # one write for all the cancel requests
                for o in working:
                    self.store.orders.append_event(o.order_id, o.status, {"step": "cancel_requested", "by": by,
                                                                          "reason": reason})
        except sqlite3.Error:
            log.exception("cancel-all: could not log the cancel requests; cancelling anyway")
        results = await asyncio.gather(*(self.cancel(o.order_id, by=by, reason=reason, _logged=True)
                                         for o in targets), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        done = len(targets) - len(failures)
        if sweep:
            swept, sweep_failures = await self._sweep_unknown(reason)
            done += swept
            failures.extend(sweep_failures)
        if failures:
            self.bus.publish(Alert(level="critical", source="oms", message=(
                f"{len(failures)} cancel(s) failed: {failures[0]}; retrying until the broker confirms")))
        return done

    async def kill_cancel_all(self, reason: str) -> int:
        """The kill switch's cancel: every open order of ours and every other open order at the active broker."""
        return await self.cancel_all(reason, by="kill_switch", sweep=True)

    async def _sweep_unknown(self, reason: str) -> tuple[int, list[BaseException]]:
        """Cancel the active broker's open orders that the store does not know (or no longer thinks open).

        When the broker cannot list its open orders, the sweep is retried in the background with backoff until a
        listing succeeds (and each order found is cancelled, with retries of its own) — or until the kill switch
        is reset: an order placed by another app must not outlive a trip because one listing failed."""
        broker = self.router.active
        try:
            remote = await asyncio.wait_for(broker.open_orders(), self.config.broker_call_timeout_s)
        except Exception as exc:
            log.warning("cancel-all: could not list %s's open orders (%s); retrying the sweep", broker.name, exc)
            self._retry_sweep(broker, reason, after=exc)
            return 0, [BrokerError(f"could not list {broker.name}'s open orders to cancel them: {exc}; retrying")]
        return await self._cancel_strangers(broker, remote, reason)

    async def _cancel_strangers(self, broker: Any, remote: list[Order], reason: str) -> tuple[int, list[BaseException]]:
        known = {o.client_order_id for o in self._open.values() if o.status.is_working}
        known |= {o.broker_order_id for o in self._open.values() if o.status.is_working and o.broker_order_id}
        strangers = [o for o in remote if o.status.is_working and o.client_order_id not in known
                     and (not o.broker_order_id or o.broker_order_id not in known)
                     and (not broker.account_id or not o.account_id or o.account_id == broker.account_id)]
        if not strangers:
            return 0, []
        self.bus.publish(Alert(level="critical", source="oms", message=(
            f"cancelling {len(strangers)} open order(s) at {broker.name} that Optiondesk did not place: "
            + ", ".join(o.client_order_id or o.broker_order_id or o.order_id for o in strangers))))
        with contextlib.suppress(sqlite3.Error):
            self.store.audit.record("system", "cancel_unknown_orders", {
                "broker": broker.name, "reason": reason,
                "orders": [o.broker_order_id or o.client_order_id or o.order_id for o in strangers]})
        results = await asyncio.gather(*(self._cancel_at_broker(broker, o) for o in strangers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        return len(strangers) - len(failures), failures

    async def _cancel_at_broker(self, broker: Any, order: Order) -> None:
        if order.broker != broker.name:  # routed by the order's broker, like every cancel
            order = order.evolve(broker=broker.name, updated_at=order.updated_at)
        try:
            await asyncio.wait_for(self.router.cancel(order), self.config.broker_call_timeout_s)
        except Exception as exc:
            if _transport_failure(exc):
                self._retry_cancel(order.order_id, order=order, after=exc)
            raise

    # ---- cancel retries -----------------------------------------------------------------------
    def _retry_cancel(self, order_id: str, *, order: Order | None = None, after: BaseException | None = None) -> None:
        """Retry a cancel with backoff until the broker confirms (accepts the cancel, or the order is terminal)
        or answers that the order cannot be cancelled (then reconciliation settles it). ``after``: the failure
        that started it — a rate limit's Retry-After sets the first wait."""
        if order_id in self._cancel_retries or not self._alive:
            return
        task = asyncio.get_running_loop().create_task(self._cancel_retry_loop(order_id, order, after),
                                                      name=f"oms:cancel-retry:{order_id}")
        self._cancel_retries[order_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: (self._tasks.discard(t), self._cancel_retries.pop(order_id, None)))

    async def _cancel_retry_loop(self, order_id: str, foreign: Order | None, after: BaseException | None) -> None:
        """``foreign``: an order the store does not know (from the kill switch's sweep), cancelled as reported.
        Transport failures and rate limits (HTTP 429: not processed) are retried; a rate limit's Retry-After
        stretches the next wait."""
        from engine.brokers.resilience import backoff_delays, retry_delay

        delays = backoff_delays(self.config.cancel_retry_initial_s, self.config.cancel_retry_max_s, jitter=0.1)
        attempt = 0
        last = after
        while True:
            await asyncio.sleep(next(delays) if last is None else retry_delay(last, next(delays)))
            attempt += 1
            if foreign is None:
                cur = self._get(order_id)
                if cur.status.is_terminal:
                    return
                target, call = cur, (lambda c=cur: self.router.cancel(c))
            else:
                target, call = foreign, (lambda: self.router.cancel(foreign))
            try:
                await asyncio.wait_for(call(), self.config.broker_call_timeout_s)
            except Exception as exc:
                if _transport_failure(exc):
                    log.info("cancel retry %d of %s failed: %s", attempt, target.client_order_id, exc)
                    last = exc
                    continue
                # the broker answered: the order is gone or not cancellable; its truth settles our record
                log.info("cancel of %s answered %s; reconciling", target.client_order_id, exc)
                if foreign is None:
                    with contextlib.suppress(Exception):
                        await self.reconcile(target.broker or self.router.active_name)
                return
            self.bus.publish(Alert(level="info", source="oms", message=(
                f"cancel of {target.client_order_id or target.broker_order_id} went through after {attempt} "
                "retry(ies)")))
            return

    def _retry_sweep(self, broker: Any, reason: str, *, after: BaseException) -> None:
        """Retry the kill switch's sweep of ``broker``'s open orders in the background (one at a time)."""
        if not self._alive or (self._sweep_retry is not None and not self._sweep_retry.done()):
            return
        task = asyncio.get_running_loop().create_task(self._sweep_retry_loop(broker, reason, after),
                                                      name=f"oms:sweep-retry:{broker.name}")
        self._sweep_retry = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_retry_loop(self, broker: Any, reason: str, after: BaseException) -> None:
        """List ``broker``'s open orders with backoff until a listing succeeds, then cancel every one the store
        does not know (each cancel retried on its own until the broker confirms or says it is gone). Stops when
        the kill switch is reset: a sweep belongs to a trip."""
        from engine.brokers.resilience import backoff_delays, retry_delay

        delays = backoff_delays(self.config.cancel_retry_initial_s, self.config.cancel_retry_max_s, jitter=0.1)
        last: BaseException = after
        attempt = 0
        while True:
            await asyncio.sleep(retry_delay(last, next(delays)))
            if self.kill_switch is not None and not self.kill_switch.tripped:
                log.info("sweep of %s dropped: the kill switch was reset", broker.name)
                return
            attempt += 1
            try:
                remote = await asyncio.wait_for(broker.open_orders(), self.config.broker_call_timeout_s)
            except Exception as exc:
                log.info("sweep retry %d: could not list %s's open orders: %s", attempt, broker.name, exc)
                last = exc
                continue
            swept, failures = await self._cancel_strangers(broker, remote, reason)
            self.bus.publish(Alert(level="info" if not failures else "error", source="oms", message=(
                f"kill switch sweep of {broker.name} listed its open orders after {attempt} retry(ies): "
                f"{swept} other order(s) cancelled" + (f", {len(failures)} being retried" if failures else ""))))
            return

    async def _cmd_cancel_all(self, cmd: CancelAllOrders) -> int:
        return await self.cancel_all(cmd.reason, by=cmd.by)

    async def _cmd_replace(self, cmd: ReplaceOrder) -> Order:
        order = self._get(cmd.order_id)
        if order.status is OrderStatus.PENDING_APPROVAL:
            return await self._cmd_modify(ModifyOrderPrice(order_id=cmd.order_id, limit_price=cmd.limit_price,
                                                           by=cmd.by))
        if not order.status.is_working:
            raise OrderCommandError(f"order {cmd.order_id} is {order.status.value}: only working orders can be replaced")
        if order.order_type is not OrderType.LIMIT:
            raise OrderCommandError("only limit orders can be replaced")
        qty = order.quantity if cmd.quantity is None else cmd.quantity
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= order.filled_quantity:
            raise OrderCommandError(f"new quantity {qty!r} must exceed the filled quantity {order.filled_quantity}")
        raw, bad = parse_price(cmd.limit_price)
        if bad is not None:
            raise OrderCommandError(f"replace refused: {bad.message}")
        assert raw is not None
        price = floor_to_tick(raw, venue_tick(order.legs, raw, self.router.broker_for(order).tick_size))
        candidate = order.evolve(limit_price=price, quantity=qty, updated_at=self.now())
        problem = order_problem(candidate, self.now())  # the new terms must be a valid order (sign, bounds, expiry)
        if problem is not None:
            raise OrderCommandError(f"replace refused: {problem.message}")
        state = self.kill_switch.state if self.kill_switch is not None else TradingState.ACTIVE
        if state is TradingState.HALTED:
            raise OrderCommandError("trading is HALTED: orders can only be cancelled")
        had = self.risk.take_reservation(order.order_id)
        decision = self.risk.check(candidate, consume=True, skip=frozenset({"duplicate"}))
        if not decision.passed:
            self.risk.restore_reservation(had, order)
            self.bus.publish(OrderDenied(order=candidate, checks=decision.failed))
            self._record_denial(candidate, decision.failed)
            raise OrderCommandError("replace refused: " + "; ".join(c.message for c in decision.failed))
        # the new terms are reserved from now on; the broker's OrderReplaceRejected puts the old ones back
        self._replacing[order.order_id] = had
        self.store.orders.append_event(order.order_id, order.status, {
            "step": "replace_requested", "by": cmd.by, "limit_price": str(price), "quantity": qty})
        try:
            await asyncio.wait_for(self.router.replace(order, price, cmd.quantity), self.config.broker_call_timeout_s)
        except (OSError, TimeoutError) as exc:
            # no answer: the replace may or may not stand. Hold the larger of the two reservations until the
            # broker reports OrderReplaced or OrderReplaceRejected (or reconciliation settles the order).
            if had is not None and had.bp > self.risk.reserved_for(order.order_id):
                self.risk.restore_reservation(had, self._get(order.order_id))
            self.bus.publish(Alert(level="error", source="oms", message=(
                f"replace of {order.client_order_id}: no answer from {order.broker} ({exc}); outcome unknown")))
            raise OrderCommandError(f"replace outcome unknown: {exc}") from exc
        except Exception as exc:  # the broker (or the router) refused: the order works on its old terms
            self._replace_refused(order.order_id, f"replace rejected by {order.broker}: {exc}")
            raise OrderCommandError(f"replace rejected by {order.broker}: {exc}") from exc
        refused = self._replace_refusals.pop(order.order_id, None)
        if refused is not None:
            raise OrderCommandError(refused)
        return self._get(order.order_id)

    def _replace_refused(self, order_id: str, reason: str) -> None:
        """A replace did not happen: put the order's previous reservation back and record why."""
        if order_id in self._replacing:
            had = self._replacing.pop(order_id)
            cur = self._get(order_id)
            if had is None:
                self.risk.release(order_id)
            elif not cur.status.is_terminal:
                self.risk.restore_reservation(had, cur)
        cur = self._get(order_id)
        self.store.orders.append_event(order_id, cur.status, {"step": "replace_rejected", "reason": reason})
        self._replace_refusals[order_id] = reason if reason.startswith("replace rejected") \
            else f"replace rejected: {reason}"

    def _on_replace_rejected(self, ev: OrderReplaceRejected) -> None:
        oid = self._resolve(ev.order)
        if oid is None:
            log.warning("replace rejection for an unknown order %s", ev.order.order_id)
            return
        self._replace_refused(oid, ev.order.reason or "replace rejected by the broker")

    # ---- kill switch: flatten -------------------------------------------------------------------
    async def flatten(self, reason: str) -> int:
        """Close every position with marketable limit orders (through the path; exempt from approval).

        See :mod:`engine.oms.flatten`: one inverse combo per underlying's option positions, single legs
        otherwise, natural price plus ``flatten_through_ticks``.
        """
        intents = [closing_intent(group, self.risk.market, self.risk.config.flatten_through_ticks, reason)
                   for group in flatten_groups(list(self.risk.portfolio.positions.values()))]
        results = await asyncio.gather(*(self._submit(i, internal=True) for i in intents), return_exceptions=True)
        return sum(1 for r in results if isinstance(r, Order) and r.status is not OrderStatus.DENIED)

    def flatten_progress(self) -> tuple[int, int]:
        """(positions still open, kill-switch closing orders still open) — what the kill switch watches
        until a flatten is done."""
        open_positions = sum(1 for p in self.risk.portfolio.positions.values() if p.quantity != 0)
        working = sum(1 for o in self._open.values() if o.source == KILL_SWITCH_SOURCE and not o.status.is_terminal)
        return open_positions, working

    async def cancel_flatten_orders(self, reason: str) -> int:
        """Cancel the kill switch's own closing orders (to send them again at a fresh price)."""
        targets = [o.order_id for o in self._open.values() if o.source == KILL_SWITCH_SOURCE and not o.status.is_terminal]
        done = await asyncio.gather(*(self.cancel(oid, by="kill_switch", reason=reason) for oid in targets),
                                    return_exceptions=True)
        return sum(1 for d in done if isinstance(d, Order))

    # ---- mode -----------------------------------------------------------------------------------
    async def _cmd_switch(self, cmd: SwitchMode) -> str:
        blocking = len(self._open)
        try:
            target = self.router.switch(cmd.mode, cmd.broker, cmd.confirmed_account_id, blocking)
        except ModeSwitchError as exc:
            self.store.audit.record(cmd.by, "mode_switch_refused", {"mode": cmd.mode, "broker": cmd.broker,
                                                                    "reason": str(exc)})
            self.bus.publish(Alert(level="warning", source="mode", message=f"mode switch refused: {exc}"))
            raise
        # masked: only the broker call itself carries the full account number (finding 14)
        from engine.credentials import mask_account

        self.store.audit.record(cmd.by, "mode_switch", {"mode": self.router.mode, "broker": target.name,
                                                        "account_id": mask_account(target.account_id)})
        await self.load_portfolio()
        self.bus.publish(ModeChanged(mode=self.router.mode, broker=target.name,
                                     account_id=mask_account(target.account_id) if self.router.mode == LIVE else ""))
        return self.router.mode

    async def load_portfolio(self) -> None:
        """Load the active broker's positions and account into the risk engine's portfolio."""
        broker = self.router.active
        self.risk.portfolio.active_broker = broker.name
        try:
            positions, account = await asyncio.gather(broker.positions(), broker.account())
        except Exception as exc:
            self.bus.publish(Alert(level="error", source="oms", message=f"could not load {broker.name} account: {exc}"))
            return
        self.risk.portfolio.load(positions, account)

    # ---- broker reports -------------------------------------------------------------------------
    def _resolve(self, reported: Order) -> str | None:
        if reported.order_id in self._open or reported.order_id in self._recent:
            return reported.order_id
        oid = self._by_coid.get(reported.client_order_id)
        if oid is None and reported.broker_order_id:
            oid = self._by_broker_id.get(reported.broker_order_id)
        if oid is None:
            found = self.store.orders.get(reported.order_id) or self.store.orders.by_client_order_id(
                reported.client_order_id)
            if found is not None:
                self._cache(found)
                oid = found.order_id
        return oid

    def _on_broker_event(self, ev: OrderEvent) -> None:
        oid = self._resolve(ev.order)
        if oid is None:
            log.warning("broker report for an unknown order %s / %s", ev.order.order_id, ev.order.client_order_id)
            return
        cur = self._get(oid)
        rep = ev.order
        changes: dict[str, Any] = {}
        if rep.broker_order_id and rep.broker_order_id != cur.broker_order_id:
            changes["broker_order_id"] = rep.broker_order_id
        if isinstance(ev, OrderFilled):
            self._apply_fills(cur.broker, [f for f in ev.fills if self.store.fills.add(f)])
            filled = max(cur.filled_quantity, rep.filled_quantity)
            status = OrderStatus.FILLED if filled >= cur.quantity else OrderStatus.PARTIALLY_FILLED
            changes["filled_quantity"] = filled
            if rep.avg_fill_price is not None:
                changes["avg_fill_price"] = rep.avg_fill_price
            step = "fill"
        elif isinstance(ev, OrderReplaced):
            self._replacing.pop(oid, None)  # the new terms stand: their reservation stays
            status = cur.status if cur.status.is_working else OrderStatus.WORKING
            changes["limit_price"] = rep.limit_price
            changes["quantity"] = rep.quantity
            step = "replaced"
        else:
            status = _EVENT_STATUS[type(ev)]
            if status is OrderStatus.WORKING and cur.status is OrderStatus.PARTIALLY_FILLED:
                status = OrderStatus.PARTIALLY_FILLED
            if rep.filled_quantity > cur.filled_quantity:
                changes["filled_quantity"] = rep.filled_quantity
            if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED) and rep.reason:
                changes["reason"] = rep.reason
            elif status is OrderStatus.CANCELLED and oid in self._cancel_reasons:
                changes["reason"] = self._cancel_reasons[oid]  # e.g. "kill switch: daily loss limit ..."
            step = {OrderStatus.WORKING: "broker_ack"}.get(status, status.value)
        if status is not OrderStatus.SUBMITTED and cur.reason.startswith(UNKNOWN_OUTCOME) and \
                not status.is_terminal:
            changes["reason"] = ""  # settled: the broker has it
        if status is cur.status and all(getattr(cur, k) == v for k, v in changes.items()):
            return  # already applied (our own event, or a replay)
        if cur.status is not status and not can_transition(cur.status, status):
            if cur.status.is_terminal and isinstance(ev, OrderFilled):
                self._late_fill(cur, changes)
                return
            log.info("ignoring %s for %s in status %s", type(ev).__name__, oid, cur.status.value)
            return
        new = cur.evolve(status=status, updated_at=self.now(), **changes)
        self._persist(new, step, {"event": type(ev).__name__}, fact=True)
        if not new.status.is_terminal:
            self.risk.update_fill(new)

    def _late_fill(self, cur: Order, changes: dict[str, Any]) -> None:
        """A fill after our terminal state (a cancel raced a fill at the exchange).

        A terminal order never becomes open again (docs/architecture.md §4): it keeps its status — so it neither blocks a
        mode switch nor is swept by cancel-all — while the fill is recorded against it (the fills table and the
        expected positions already have it) and the broker is reconciled, loudly."""
        filled = int(changes.get("filled_quantity", cur.filled_quantity))
        if filled <= cur.filled_quantity:
            return  # this late fill is already recorded (a replay)
        kept = {k: v for k, v in changes.items() if k in ("filled_quantity", "avg_fill_price", "broker_order_id")}
        kept["filled_quantity"] = min(filled, cur.quantity)
        self.bus.publish(Alert(level="error", source="oms", message=(
            f"order {cur.client_order_id} filled {filled} at the broker after it was {cur.status.value}: "
            f"the fill is recorded and {cur.broker} is being reconciled")))
        new = cur.evolve(updated_at=self.now(), **kept)
        self._persist(new, "late_fill", {"previous": cur.status.value, "filled_quantity": filled}, fact=True)
        if self._started and cur.broker in self.router.brokers:
            task = asyncio.get_running_loop().create_task(self.reconcile(cur.broker),
                                                          name=f"oms:reconcile:{cur.broker}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_connection(self, ev: ConnectionStateChanged) -> None:
        """A broker (re)connected: reconcile our open orders there (fills or cancels we missed meanwhile)."""
        if not self._started or ev.state != "connected" or not ev.component.startswith("broker:"):
            return
        name = ev.component.split(":", 1)[1]
        if name not in self.router.brokers or not any(o.broker == name for o in self._open.values()):
            return
        task = asyncio.get_running_loop().create_task(self.reconcile(name), name=f"oms:reconcile:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- expected positions per broker ------------------------------------------------------------
    def _apply_fills(self, broker: str, fills: list[Fill]) -> None:
        """Move the broker's expected positions by fills we just learned of (attributed through their order)."""
        key = KV_POSITIONS + broker
        snap = self.store.kv.get(key)
        if not isinstance(snap, dict) or not fills:
            return
        pos = dict(snap.get("positions", {}))
        for f in fills:
            pos[f.instrument.key] = pos.get(f.instrument.key, 0) + f.quantity
        snap["positions"] = {k: v for k, v in pos.items() if v}
        self.store.kv.set(key, snap)

    # ---- reconciliation -------------------------------------------------------------------------
    async def reconcile(self, broker_name: str | None = None) -> ReconciliationReport:
        """Compare the store with a broker (default: the active one), adopt broker truth, trip on mismatch.

        Runs one at a time per broker (a reconnect during start-up reconciliation waits for it)."""
        name = broker_name or self.router.active_name
        lock = self._reconcile_locks.setdefault(name, asyncio.Lock())
        async with lock:
            return await self._reconcile(name)

    async def _reconcile(self, name: str) -> ReconciliationReport:
        broker = self.router.broker(name)
        rep = ReconciliationReport(broker=name)
        try:
            remote_open, remote_fills, remote_pos = await asyncio.gather(
                broker.open_orders(), broker.fills(), broker.positions())
        except Exception as exc:
            rep.errors.append(f"could not read {name}: {exc}")
            self.bus.publish(Alert(level="error", source="reconciliation", message=rep.errors[-1]))
            if self.kill_switch is not None:
                self.kill_switch.set_reducing(f"reconcile:{name}", f"reconciliation with {name} failed: {exc}")
            self.last_reconciliation.append(rep)
            return rep
        known = {f.fill_id for f in self.store.fills.list()}
        unseen = [f for f in remote_fills if f.fill_id not in known]  # fills (and settlements) we never processed
        local = [o for o in self._open.values() if o.broker == name]
        unknown = {o.order_id for o in local if o.status is OrderStatus.SUBMITTED
                   and o.reason.startswith(UNKNOWN_OUTCOME)}
        rep = plan(local, name, remote_open, remote_fills, set(known), unknown=unknown)
        for f in unseen:
            self.store.fills.add(f)
        for a in rep.adoptions:
            cur = self._get(a.order_id)
            if cur.status.is_terminal:  # settled meanwhile by a live report
                continue
            reason = a.reason if a.status.is_terminal else (
                "" if cur.reason.startswith(UNKNOWN_OUTCOME) else cur.reason)
            new = cur.evolve(status=a.status, filled_quantity=a.filled_quantity, updated_at=self.now(),
                             broker_order_id=a.broker_order_id, reason=reason)
            self._persist(new, "reconciled", {"previous": a.previous.value, "reason": a.reason})
        # positions: what we last saw at this broker, moved by every fill since, must equal the broker's now
        remote = {p.symbol: p.quantity for p in remote_pos if p.quantity}
        snap = self.store.kv.get(KV_POSITIONS + name)
        if isinstance(snap, dict):
            expected = dict(snap.get("positions", {}))
            for f in unseen:
                expected[f.instrument.key] = expected.get(f.instrument.key, 0) + f.quantity
            rep.position_mismatches = compare_positions({k: v for k, v in expected.items() if v}, remote)
        self.store.kv.set(KV_POSITIONS + name, {"positions": remote, "as_of": self.now().isoformat()})
        account = broker.account_id
        if account:  # the positions table shows the broker's truth (``optiondesk risk``, the GUI at start)
            self.store.positions.replace_all(account, remote_pos)
        if name == self.router.active_name:
            self.risk.portfolio.load(remote_pos, None)
        self.store.audit.record("system", "reconciliation", {"broker": name, "summary": rep.summary()})
        self.last_reconciliation.append(rep)
        if rep.mismatch and self.kill_switch is not None:
            self.bus.publish(Alert(level="critical", source="reconciliation", message=rep.summary()))
            if rep.unknown_broker_orders:
                await self.kill_switch.trip(f"reconciliation mismatch with {name}: {rep.summary()}", by="reconciliation")
            else:
                self.kill_switch.set_reducing(f"reconcile:{name}", f"reconciliation mismatch with {name}: "
                                              f"{rep.summary()}")
        return rep
