"""The IBKR connection: one ``ib_async.IB`` on our loop — connect with a timeout, error and disconnect handling
(1100 lost, 1101 restored with data lost: resubscribe, 1102 restored, market-data permission alerts), reconnect
with backoff + jitter, and the call guard (a timeout and the circuit breaker around every ``*Async`` call: they
hang forever on a silent server). Shared by :class:`~engine.brokers.ibkr.IbkrBroker`,
:class:`~engine.market.ibkr.IbkrFeed` and the history source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine.brokers.base import BrokerError
from engine.brokers.circuit_breaker import CircuitBreaker
from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig
from engine.brokers.resilience import Reconnector, import_sdk, with_timeout
from engine.bus.events import Alert, ConnectionStateChanged
from engine.credentials import install_log_redaction, mask_account, quiet_sdk_loggers, redactor

if TYPE_CHECKING:
    from engine.history.pacing import HistoricalPacer
from engine.bus import Bus

log = logging.getLogger(__name__)
T = TypeVar("T")
COMPONENT = "broker:ibkr"

#: error codes that are information, not failures (10349: "TIF set to DAY" — ib_async marks the order
#: Cancelled then Submitted again; 2100-2199: connectivity/farm notices)
INFO_CODES = frozenset({10349, 10167, 2104, 2106, 2107, 2108, 2119, 2158})
LOST_CODES = frozenset({1100})
RESTORED_DATA_LOST = 1101


# ---- connection -------------------------------------------------------------------------------------------
class IbkrConnection:
    """One ``ib_async.IB`` on our loop: connect with timeout, error/disconnect handling, reconnect."""

    def __init__(self, config: IbkrConfig | None = None, *, bus: Bus | None = None,
                 breaker: CircuitBreakerConfig | None = None, reconnect: ReconnectConfig | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config or IbkrConfig()
        self.bus = bus
        bcfg = breaker or CircuitBreakerConfig()
        self.breaker = CircuitBreaker(COMPONENT, bus, failure_threshold=bcfg.failure_threshold,
                                      reset_timeout_s=bcfg.reset_timeout_s)
        self.reconnector = Reconnector(COMPONENT, self._connect_once, bus=bus, config=reconnect,
                                       rng=rng, on_connected=self._after_reconnect)
        self.ib: Any = None
        #: the last connect finished: handshake, ib_async's startup sync (open orders, positions, account) and our
        #: checks. ``ib.isConnected()`` turns true at the handshake, before the sync fills ib_async's caches.
        self._synced = False
        self.account_id = ""
        self.latency_ms: float | None = None
        self._closing = False
        self._lock = asyncio.Lock()
        self._on_reconnected: list[Callable[[], Awaitable[None]]] = []
        self.errors: list[tuple[int, int, str]] = []  # (reqId, code, message), newest last, bounded
        self.connects = 0
        #: IB paces historical data per login session: one pacer for every history source on this connection
        self.history_pacer: HistoricalPacer | None = None

    @property
    def connected(self) -> bool:
        """Connected and synchronised. Why not ``ib.isConnected()`` alone: during a reconnect it is true from the
        handshake on, while ``openTrades()`` and ``positions()`` are still empty, and a query then would report
        working orders as gone (a fresh-clone test run caught exactly that)."""
        return self.ib is not None and self._synced and self.ib.isConnected()

    @property
    def is_paper(self) -> bool:
        return self.config.is_paper_port or self.account_id.startswith("DU")

    def on_reconnected(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after every automatic reconnect (resubscribe, reconcile)."""
        self._on_reconnected.append(callback)

    def publish_state(self, state: str, detail: str = "", latency_ms: float | None = None) -> None:
        if self.bus is not None:
            self.bus.publish(ConnectionStateChanged(component=COMPONENT, state=state, detail=detail,
                                                    latency_ms=latency_ms))

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        """An ``ib_async`` awaitable with a timeout, through the breaker."""
        if not self.connected:
            raise BrokerError(f"ibkr {what}: not connected")

        async def run() -> T:
            try:
                return await with_timeout(fn(), timeout_s or self.config.call_timeout_s, f"ibkr {what}")
            except ConnectionError as exc:
                raise BrokerError(f"ibkr {what}: {exc}") from exc

        return await self.breaker.call(what, run)

    async def connect(self) -> None:
        """Connect (handshake + ib_async's startup sync) within ``connect_timeout_s``. Idempotent."""
        async with self._lock:
            if self.connected:
                return
            self._closing = False
            self.publish_state("connecting", f"{self.config.host}:{self.config.port} client {self.config.client_id}")
            try:
                await self._connect_once()
            except BaseException as exc:
                self.publish_state("failed", f"connect: {type(exc).__name__}: {exc}")
                raise
            self.publish_state("connected", f"account {mask_account(self.account_id)}"
                               + (" (paper)" if self.is_paper else ""), self.latency_ms)

    async def _connect_once(self) -> None:
        self._synced = False
        install_log_redaction()
        await import_sdk("ib_async")
        quiet_sdk_loggers()
        from ib_async import IB

        if self.ib is None:
            self.ib = IB()
            self.ib.errorEvent += self._on_error
            self.ib.disconnectedEvent += self._on_disconnected
            # register account numbers for log redaction the moment the handshake reveals them, before
            # ib_async logs the startup sync (positions, portfolio) at INFO
            self.ib.client.apiStart += self._register_accounts
        if self.config.account:
            redactor().register_account(self.config.account)
        cfg = self.config
        t0 = time.perf_counter()
        try:
            await with_timeout(
                self.ib.connectAsync(cfg.host, cfg.port, clientId=cfg.client_id, timeout=cfg.connect_timeout_s,
                                     account=cfg.account or ""),
                cfg.connect_timeout_s * 2, "ibkr connect")
        except BrokerError:
            self._drop()
            raise
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise BrokerError(f"ibkr connect to {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from exc
        accounts = self.ib.managedAccounts()
        for a in accounts:
            redactor().register_account(a)
        if cfg.account and cfg.account not in accounts:
            self._drop()
            raise BrokerError(f"ibkr: account {mask_account(cfg.account)} is not managed by this login")
        if not accounts:
            self._drop()
            raise BrokerError("ibkr: no managed accounts")
        self.account_id = cfg.account or accounts[0]
        self.ib.reqMarketDataType(cfg.market_data_type)
        await with_timeout(self.ib.reqCurrentTimeAsync(), cfg.call_timeout_s, "ibkr current time")
        self.latency_ms = (time.perf_counter() - t0) * 1e3
        self.connects += 1
        self._synced = True

    def _drop(self) -> None:
        """Disconnect on our own initiative without triggering the reconnector."""
        closing, self._closing = self._closing, True
        self._synced = False
        try:
            self.ib.disconnect()
        finally:
            self._closing = closing

    def _register_accounts(self) -> None:
        with contextlib.suppress(Exception):
            for a in self.ib.client.getAccounts():
                redactor().register_account(a)

    async def _after_reconnect(self) -> None:
        for cb in list(self._on_reconnected):
            try:
                await cb()
            except Exception:  # one failed resubscription must not stop the others after a reconnect
                log.exception("ibkr: post-reconnect step failed")

    def _on_disconnected(self) -> None:
        self._synced = False
        if self._closing:
            return
        self.reconnector.trigger("connection to TWS/Gateway lost")

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        self.errors.append((req_id, code, message))
        del self.errors[:-200]
        if code in LOST_CODES:
            self.publish_state("disconnected", f"{code}: {message}")
        elif code == RESTORED_DATA_LOST:
            self.publish_state("connected", f"{code}: {message} (resubscribing)")
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._after_reconnect())
        elif code == 1102:
            self.publish_state("connected", f"{code}: {message}")
        elif code in (354, 10089, 10168) and self.bus is not None:
            self.bus.publish(Alert(level="warning", message=f"IBKR market data not permitted ({code}): {message}",
                                   source="ibkr"))

    async def disconnect(self) -> None:
        self._closing = True
        await self.reconnector.stop()
        if self.ib is not None and self.ib.isConnected():
            self._drop()
        self.publish_state("disconnected", "closed by us")


