"""Changing and ending orders in the order manager: a pending order's price, a working order's replace, one
cancel, cancel-all and the kill switch's sweep of orders Optiondesk did not place, and the background retries
that keep a cancel going until the broker confirms it.

A cancel never waits on the disk (a store that cannot be written is logged, and the cancel goes on); a cancel or
a sweep that fails in transport is retried with backoff; a replace holds the new terms' reservation until the
broker answers, and the old one comes back when it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from decimal import Decimal
from typing import Any

from engine.brokers.base import BrokerError
from engine.bus.commands import CancelAllOrders, CancelOrder, ModifyOrderPrice, ReplaceOrder
from engine.bus.events import Alert, OrderCancelled, OrderDenied, OrderPendingApproval, OrderReplaceRejected
from engine.model import Order, OrderStatus, OrderType
from engine.oms.approval import build_preview
from engine.oms.broker_sync import BrokerSync
from engine.oms.factory import floor_to_tick, venue_tick
from engine.oms.state_machine import OrderCommandError, log
from engine.oms.validation import order_problem, parse_price
from engine.risk.engine import KILL_SWITCH_SOURCE, RiskDecision
from engine.risk.state import TradingState


def _transport_failure(exc: BaseException) -> bool:
    """No answer from the broker (timeout, dropped connection, 5xx, circuit open): worth retrying. Anything else
    is the broker's answer (the order is gone, not cancellable, unknown)."""
    return isinstance(exc, BrokerError | OSError | TimeoutError)


class CancelReplace(BrokerSync):
    """Price changes, replaces, cancels and their retries."""

    # ---- price change of a pending order ---------------------------------------------------------
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

    # ---- cancel ----------------------------------------------------------------------------------
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

    async def _cmd_cancel_all(self, cmd: CancelAllOrders) -> int:
        return await self.cancel_all(cmd.reason, by=cmd.by)

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
        except Exception as exc:  # any failure to list (transport, auth, a broker bug) must not stop the kill switch's other cancels: retried
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
        except Exception as exc:  # sorted below: a transport failure is retried, the broker's answer is re-raised to the caller
            if _transport_failure(exc):
                self._retry_cancel(order.order_id, order=order, after=exc)
            raise

    async def cancel_flatten_orders(self, reason: str) -> int:
        """Cancel the kill switch's own closing orders (to send them again at a fresh price)."""
        targets = [o.order_id for o in self._open.values() if o.source == KILL_SWITCH_SOURCE and not o.status.is_terminal]
        done = await asyncio.gather(*(self.cancel(oid, by="kill_switch", reason=reason) for oid in targets),
                                    return_exceptions=True)
        return sum(1 for d in done if isinstance(d, Order))

    # ---- cancel retries --------------------------------------------------------------------------
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
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._cancel_retries.pop(order_id, None))

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
                target = cur
            else:
                target = foreign
            try:
                await asyncio.wait_for(self.router.cancel(target), self.config.broker_call_timeout_s)
            except Exception as exc:  # sorted below: a transport failure is retried, any other answer ends the retries and reconciles
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
            except Exception as exc:  # any failure to list is retried until the trip is reset: a stranger order must not outlive it
                log.info("sweep retry %d: could not list %s's open orders: %s", attempt, broker.name, exc)
                last = exc
                continue
            swept, failures = await self._cancel_strangers(broker, remote, reason)
            self.bus.publish(Alert(level="info" if not failures else "error", source="oms", message=(
                f"kill switch sweep of {broker.name} listed its open orders after {attempt} retry(ies): "
                f"{swept} other order(s) cancelled" + (f", {len(failures)} being retried" if failures else ""))))
            return

    # ---- replace ---------------------------------------------------------------------------------
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
