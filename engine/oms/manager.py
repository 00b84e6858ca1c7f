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
import logging
from collections.abc import Callable
from typing import Any

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
    OrderExpired,
    OrderFilled,
    OrderPendingApproval,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderSubmitted,
)
from engine.model import Order, OrderIntent, OrderStatus
from engine.oms.approval import build_preview
from engine.oms.cancel_replace import CancelReplace
from engine.oms.factory import OrderValidationError
from engine.oms.flatten import closing_intent, flatten_groups
from engine.oms.router import LIVE, ModeSwitchError
from engine.oms.state_machine import (
    KV_APPROVAL,
    KV_POSITIONS,
    OPEN_STATUSES,
    UNKNOWN_OUTCOME,
    OrderCommandError,
)
from engine.oms.validation import intent_problem
from engine.risk.engine import KILL_SWITCH_SOURCE, CheckResult, RiskDecision
from engine.risk.state import TradingState

__all__ = ["KV_APPROVAL", "KV_POSITIONS", "OPEN_STATUSES", "UNKNOWN_OUTCOME", "OrderCommandError", "OrderManager"]

log = logging.getLogger(__name__)


class OrderManager(CancelReplace):
    """Facade of the order path. Construct, :meth:`register` on the bus, then ``await start()``.

    Its parts: :class:`~engine.oms.state_machine.OrderStateMachine` (cache, persisted transitions, read-only
    API), :class:`~engine.oms.broker_sync.BrokerSync` (broker reports, reconciliation),
    :class:`~engine.oms.cancel_replace.CancelReplace` (price changes, replaces, cancels and their retries);
    this class wires them to the bus and owns the one path from intent to broker, approvals, flatten and mode."""

    # ---- wiring ----------------------------------------------------------------------------------
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

    # ---- the one path ----------------------------------------------------------------------------
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
            except Exception as exc:  # a failing preview must deny the order or leave it pending, never leave it half-submitted
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

    # ---- submits whose outcome is unknown --------------------------------------------------------
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
        except Exception:  # the order is already held as unknown and its settle loop reconciles again: log and go on
            log.exception("reconciliation after an unknown submit outcome failed")
        return self._get(order_id)

    def _settle_unknown(self, order_id: str, broker_name: str) -> None:
        if order_id in self._unknown or not self._alive:
            return
        task = asyncio.get_running_loop().create_task(self._settle_loop(order_id, broker_name),
                                                      name=f"oms:settle-unknown:{order_id}")
        self._unknown[order_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._unknown.pop(order_id, None))

    async def _settle_loop(self, order_id: str, broker_name: str) -> None:
        """Reconcile with backoff until the broker's open orders or fills settle the order by client order id."""
        loop = asyncio.get_running_loop()
        t0, delay, alerted = loop.time(), 0.25, False
        while self._get(order_id).status is OrderStatus.SUBMITTED:
            await asyncio.sleep(delay)
            delay = min(self.config.unknown_outcome_max_interval_s, delay * 2)
            try:
                await self.reconcile(broker_name)
            except Exception:  # whatever one reconcile raises, the loop must keep settling the order until the broker knows it
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
            except Exception:  # the settled order stays cancellable by hand; a failed cancel is logged, never raised into a task
                log.exception("cancel after settling %s failed", order_id)

    def _reject_unsent(self, order_id: str, message: str) -> Order:
        order = self._transition(order_id, OrderStatus.REJECTED, step="not_sent",
                                 reason=f"not sent to the broker: {message}")
        self.bus.publish(OrderRejected(order=order))
        return order

    # ---- approvals -------------------------------------------------------------------------------
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

    async def _cmd_approval_mode(self, cmd: SetApprovalMode) -> bool:
        self.gate.set_enabled(self.router.mode, cmd.enabled, cmd.by)
        self.store.kv.set(KV_APPROVAL, self.gate.enabled)
        self.bus.publish(ApprovalModeChanged(enabled=bool(cmd.enabled)))
        return bool(cmd.enabled)

    # ---- kill switch: flatten --------------------------------------------------------------------
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

    # ---- mode ------------------------------------------------------------------------------------
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
