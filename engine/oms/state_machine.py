"""The order state machine under :class:`~engine.oms.manager.OrderManager`: the orders it knows, how a
transition is written to the store *before* it is cached, and the read-only API the GUI, the CLI and strategies
use. The order path's other parts build on it (:mod:`engine.oms.broker_sync`, :mod:`engine.oms.cancel_replace`,
:mod:`engine.oms.manager`), so each sees one cache and one way to persist."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.bus.events import Alert
from engine.model import Order, OrderStatus, can_transition
from engine.oms.approval import ApprovalGate, PendingApproval
from engine.oms.config import OmsConfig
from engine.oms.factory import OrderFactory
from engine.oms.reconciliation import ReconciliationReport
from engine.oms.router import ModeRouter
from engine.risk.engine import CheckResult, RiskEngine

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.risk.kill_switch import KillSwitch
    from engine.store import Store

log = logging.getLogger("engine.oms.manager")  # the name its records had before the module was split off

#: statuses that block a mode switch and that cancel-all / the kill switch sweep
OPEN_STATUSES = (OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.WORKING,
                 OrderStatus.PARTIALLY_FILLED)

KV_APPROVAL = "oms.approval_enabled"
#: the reason an order carries while a submit's outcome is unknown (5xx, timeout, dropped connection)
UNKNOWN_OUTCOME = "unknown, reconciling"
KV_POSITIONS = "oms.positions."  # + broker name: expected positions, moved by every fill the OMS records


class OrderCommandError(ValueError):
    """A command could not be applied (unknown order, wrong state, refused modification)."""


class OrderStateMachine:
    """The orders' cache and transitions; the base of :class:`~engine.oms.manager.OrderManager`."""

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

    # ---- state machine ---------------------------------------------------------------------------
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

    def _pending(self, order_id: str) -> PendingApproval:
        p = self.gate.pending.get(order_id)
        if p is None:
            o = self._get(order_id)
            raise OrderCommandError(f"order {order_id} is not awaiting approval (status {o.status.value})")
        return p

    def _record_denial(self, order: Order, failed: tuple[CheckResult, ...]) -> None:
        self.store.execute("INSERT INTO risk_events(ts, kind, order_id, detail) VALUES (?,?,?,?)",
                           (self.now().isoformat(), "order_denied", order.order_id,
                            json.dumps({"checks": [c.to_dict() for c in failed], "source": order.source},
                                       default=str)))
