"""Broker truth in the order manager: the broker's reports applied as they arrive, the expected positions
they move, and reconciliation with a broker (at start, after a reconnect, a late fill or an unknown submit).

Reports (``OrderAccepted``, ``OrderFilled``, ``OrderRejected``, ``OrderCancelled``, ``OrderExpired``,
``OrderReplaced``) are applied by inline subscribers, idempotently, so the OMS's state reflects them before
later subscribers see the event. Reconciliation adopts the broker's truth, never sends anything, and a mismatch
trips (or reduces) the kill switch."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.bus.events import (
    Alert,
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
)
from engine.model import Fill, Order, OrderStatus, can_transition
from engine.oms.reconciliation import ReconciliationReport, compare_positions, plan
from engine.oms.state_machine import KV_POSITIONS, UNKNOWN_OUTCOME, OrderStateMachine, log

_EVENT_STATUS: dict[type, OrderStatus] = {
    OrderAccepted: OrderStatus.WORKING,
    OrderRejected: OrderStatus.REJECTED,
    OrderCancelled: OrderStatus.CANCELLED,
    OrderExpired: OrderStatus.EXPIRED,
}


class BrokerSync(OrderStateMachine):
    """Applies broker reports and reconciles the store with a broker."""

    # ---- broker reports --------------------------------------------------------------------------
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

    # ---- expected positions per broker -----------------------------------------------------------
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

    # ---- reconciliation --------------------------------------------------------------------------
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
        except Exception as exc:  # any failure to read the broker is reported and reduces trading; reconciliation must never raise
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

    async def load_portfolio(self) -> None:
        """Load the active broker's positions and account into the risk engine's portfolio."""
        broker = self.router.active
        self.risk.portfolio.active_broker = broker.name
        try:
            positions, account = await asyncio.gather(broker.positions(), broker.account())
        except Exception as exc:  # any failure to load the account is an alert; the mode switch itself has already happened
            self.bus.publish(Alert(level="error", source="oms", message=f"could not load {broker.name} account: {exc}"))
            return
        self.risk.portfolio.load(positions, account)
