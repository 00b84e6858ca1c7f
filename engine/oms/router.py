"""ModeRouter: the only caller of a broker's ``submit`` / ``cancel`` / ``replace`` (docs/architecture.md §4, §6).

- **paper** (default, and always the mode at start-up): new orders go to the paper broker.
- **live**: new orders go to the chosen live broker's real account. Switching needs the broker connected
  with credentials (an ``account_id``), no working or pending orders, and an explicit confirmation carrying
  that account id. The router *arms* the adapter (``arm_live(account_id)``) on the switch and disarms it on
  the way back, so an adapter refuses orders the router did not route in live mode.
- Cancels and replaces go to the broker that holds the order (``order.broker``), whatever the mode now.
- Every broker call goes through that broker's circuit breaker when one is registered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from engine.brokers.base import Broker, BrokerError, OrderPreview
from engine.credentials import mask_account
from engine.model import Order

if TYPE_CHECKING:
    from engine.brokers.circuit_breaker import CircuitBreaker

log = logging.getLogger(__name__)
T = TypeVar("T")

PAPER = "paper"
LIVE = "live"


class ModeSwitchError(RuntimeError):
    """A mode switch was refused; the message says why (shown to the user)."""


class RoutingError(BrokerError):
    """No broker can take this order (unknown broker name, not connected)."""


class ModeRouter:
    def __init__(self, brokers: dict[str, Broker] | None = None, *, paper: str = PAPER,
                 breakers: dict[str, CircuitBreaker] | None = None) -> None:
        self.brokers: dict[str, Broker] = dict(brokers or {})
        self.paper_name = paper
        self.breakers: dict[str, CircuitBreaker] = dict(breakers or {})
        self.mode = PAPER
        self.live_broker: str | None = None

    # ---- registry -------------------------------------------------------------------------------
    def add_broker(self, broker: Broker, breaker: CircuitBreaker | None = None) -> None:
        self.brokers[broker.name] = broker
        if breaker is not None:
            self.breakers[broker.name] = breaker

    def broker(self, name: str) -> Broker:
        try:
            return self.brokers[name]
        except KeyError:
            raise RoutingError(f"no broker named {name!r} (have {sorted(self.brokers)})") from None

    @property
    def active_name(self) -> str:
        return self.live_broker if self.mode == LIVE and self.live_broker else self.paper_name

    @property
    def active(self) -> Broker:
        return self.broker(self.active_name)

    @property
    def is_live(self) -> bool:
        return self.mode == LIVE

    def account_id(self) -> str:
        try:
            return self.active.account_id
        except Exception:  # any adapter's account lookup failing (disconnected, not logged in) means "no account", not a crash
            return ""

    # ---- switching ------------------------------------------------------------------------------
    def check_switch(self, mode: str, broker: str, confirmed_account_id: str | None, working_orders: int) -> Broker:
        """Validate a switch; raises :class:`ModeSwitchError` naming the reason. Returns the target broker."""
        if mode not in (PAPER, LIVE):
            raise ModeSwitchError(f"unknown mode {mode!r}: use 'paper' or 'live'")
        if working_orders:
            raise ModeSwitchError(f"{working_orders} order(s) are working or awaiting approval: cancel them before "
                                  "switching mode")
        if mode == PAPER:
            return self.broker(self.paper_name)
        if broker == self.paper_name:
            raise ModeSwitchError("live mode needs a live broker (tastytrade or ibkr), not the paper broker")
        target = self.brokers.get(broker)
        if target is None:
            raise ModeSwitchError(f"broker {broker!r} is not configured; add its credentials first")
        if not target.connected:
            raise ModeSwitchError(f"broker {broker!r} is not connected (credentials missing or login failed)")
        account = target.account_id
        if not account:
            raise ModeSwitchError(f"broker {broker!r} has no account selected")
        # the message is audited, alerted and shown: account numbers in it are masked (finding 14)
        if not confirmed_account_id:
            raise ModeSwitchError(f"switching to live needs an explicit confirmation naming account "
                                  f"{mask_account(account)}")
        if confirmed_account_id != account:
            raise ModeSwitchError(f"confirmation names account {mask_account(confirmed_account_id)} but {broker} is "
                                  f"on {mask_account(account)}")
        return target

    def switch(self, mode: str, broker: str = PAPER, confirmed_account_id: str | None = None,
               working_orders: int = 0) -> Broker:
        target = self.check_switch(mode, broker, confirmed_account_id, working_orders)
        previous_live = self.brokers.get(self.live_broker) if self.live_broker else None
        if previous_live is not None and previous_live is not target:
            disarm = getattr(previous_live, "disarm", None)
            if callable(disarm):
                disarm()
        if mode == LIVE:
            arm = getattr(target, "arm_live", None)
            if callable(arm):
                arm(target.account_id)
            self.mode, self.live_broker = LIVE, target.name
        else:
            self.mode, self.live_broker = PAPER, None
        log.warning("mode is now %s (%s)", self.mode.upper(), target.name)
        return target

    # ---- calls ----------------------------------------------------------------------------------
    async def _call(self, broker: Broker, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        breaker = self.breakers.get(broker.name)
        if breaker is not None:
            return await breaker.call(what, fn)
        return await fn()

    def broker_for(self, order: Order) -> Broker:
        return self.broker(order.broker or self.paper_name)

    def _guard_live(self, broker: Broker, order: Order) -> None:
        if broker.is_live and not (self.mode == LIVE and self.live_broker == broker.name):
            raise RoutingError(f"order {order.order_id} targets live broker {broker.name} but the router is in "
                               f"{self.mode} mode")

    async def submit(self, order: Order) -> None:
        broker = self.broker_for(order)
        self._guard_live(broker, order)
        await self._call(broker, f"submit {order.client_order_id}", lambda: broker.submit(order))

    async def cancel(self, order: Order) -> None:
        broker = self.broker_for(order)
        await self._call(broker, f"cancel {order.client_order_id}", lambda: broker.cancel(order))

    async def replace(self, order: Order, limit_price: Decimal, quantity: int | None = None) -> None:
        broker = self.broker_for(order)
        self._guard_live(broker, order)
        await self._call(broker, f"replace {order.client_order_id}",
                         lambda: broker.replace(order, limit_price, quantity))

    async def preview(self, order: Order) -> OrderPreview | None:
        """The broker's dry-run / whatIf when it offers one; None when the call fails (we estimate instead)."""
        broker = self.broker_for(order)
        try:
            return await self._call(broker, f"preview {order.client_order_id}", lambda: broker.preview(order))
        except Exception as exc:  # a broker without a working preview: we estimate instead, whatever the failure
            log.info("broker preview unavailable for %s: %s", order.order_id, exc)
            return None

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "broker": self.active_name, "account_id": self.account_id(),
                "brokers": sorted(self.brokers)}
