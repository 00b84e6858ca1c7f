"""The tastytrade session shared by the broker and the feed: OAuth (provider secret + refresh token), the selected
account, the circuit breaker, and the guard every call goes through (timeout, breaker, error classification).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.brokers.base import BrokerError
from engine.brokers.circuit_breaker import CircuitBreaker
from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.resilience import import_sdk, with_timeout
from engine.brokers.tastytrade_wire import (
    BrokerAuthError,
    _describe_error,
    _is_auth_error,
    _is_transport_failure,
    _raise_on_server_error,
)
from engine.bus import Bus
from engine.bus.events import ConnectionStateChanged
from engine.credentials import (
    CredentialStore,
    TastytradeCredentials,
    install_log_redaction,
    mask_account,
    quiet_sdk_loggers,
    redactor,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPONENT = "broker:tastytrade"


# ---- connection shared by the broker and the feed ----------------------------------------------------
class TastytradeConnection:
    """One OAuth session, the selected account, the circuit breaker and the call guard.

    Shared by :class:`TastytradeBroker` and :class:`engine.market.tastytrade.TastytradeFeed`.
    """

    def __init__(self, config: TastytradeConfig | None = None, *, credentials: CredentialStore | None = None,
                 bus: Bus | None = None, breaker: CircuitBreakerConfig | None = None,
                 reconnect: ReconnectConfig | None = None, env: dict[str, str] | None = None) -> None:
        self.config = config or TastytradeConfig()
        self.api_url, self.streamer_url = self.config.endpoints(env)
        self.credentials = credentials
        self.bus = bus
        bcfg = breaker or CircuitBreakerConfig()
        self.breaker = CircuitBreaker(COMPONENT, bus, failure_threshold=bcfg.failure_threshold,
                                      reset_timeout_s=bcfg.reset_timeout_s)
        self.reconnect_config = reconnect or ReconnectConfig()
        self.session: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.accounts: list[Any] = []
        self.account: Any = None
        self.latency_ms: float | None = None
        self.state = "disconnected"
        self.detail = ""
        self._lock = asyncio.Lock()
        self._ssl: Any = None

    @property
    def connected(self) -> bool:
        return self.session is not None and self.account is not None

    @property
    def account_id(self) -> str:
        return self.account.account_number if self.account is not None else ""

    @property
    def is_sandbox(self) -> bool:
        return self.config.sandbox

    def publish_state(self, state: str, detail: str = "", latency_ms: float | None = None) -> None:
        self.state, self.detail = state, detail
        if self.bus is not None:
            self.bus.publish(ConnectionStateChanged(component=COMPONENT, state=state, detail=detail,
                                                    latency_ms=latency_ms))

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        """Run one SDK call with a timeout, through the breaker; transport errors become ``BrokerError``."""
        import httpx2

        async def run() -> T:
            try:
                return await with_timeout(fn(), timeout_s or self.config.call_timeout_s, f"tastytrade {what}")
            except httpx2.HTTPError as exc:
                raise BrokerError(f"tastytrade {what}: {type(exc).__name__}: {exc}") from exc

        try:
            return await self.breaker.call(what, run, is_failure=_is_transport_failure)
        except Exception as exc:  # the SDK's errors (httpx, pydantic, its own) are sorted below into our broker errors
            if _is_auth_error(exc):
                detail = _describe_error(what, exc)
                self.publish_state("failed", detail)
                raise BrokerAuthError(f"tastytrade {detail}") from exc
            raise

    async def connect(self, credentials: TastytradeCredentials | None = None) -> None:
        """Authenticate (token refresh), list accounts and select one. Idempotent."""
        async with self._lock:
            if self.connected:
                return
            install_log_redaction()
            quiet_sdk_loggers()
            creds = credentials or self._credentials()
            redactor().register(creds.provider_secret)
            redactor().register(creds.refresh_token)
            self.publish_state("connecting", "sandbox" if self.is_sandbox else "production")
            await import_sdk("tastytrade")
            from tastytrade import Account, Session

            quiet_sdk_loggers()  # the SDK sets DEBUG on import
            if self._ssl is None:
                self._ssl = await asyncio.get_running_loop().run_in_executor(None, _prepare_http)
            stack = contextlib.AsyncExitStack()
            # one shared TLS context: the SDK builds an HTTP client per streamer, and loading CA certificates
            # each time would block the loop for ~100 ms
            session = Session(creds.provider_secret, creds.refresh_token, is_test=self.is_sandbox,
                              timeout=self.config.call_timeout_s, trust_env=False, verify=self._ssl)
            session._client.base_url = self.api_url
            session._client.event_hooks["response"].append(_raise_on_server_error)
            await stack.enter_async_context(session)
            try:
                t0 = time.perf_counter()
                await self.call("token refresh", lambda: session.refresh(force=True))
                self.latency_ms = (time.perf_counter() - t0) * 1e3
                redactor().register(session.session_token)
                accounts = await self.call("accounts", lambda: Account.get(session))
            except BaseException as exc:
                await stack.aclose()
                if not isinstance(exc, BrokerAuthError):
                    self.publish_state("failed", _describe_error("connect", exc))
                raise
            for a in accounts:
                redactor().register_account(a.account_number)
            if not accounts:
                await stack.aclose()
                self.publish_state("failed", "no open accounts on this login")
                raise BrokerError("tastytrade: this login has no open accounts")
            wanted = self.config.account
            chosen = next((a for a in accounts if a.account_number == wanted), None) if wanted else accounts[0]
            if chosen is None:
                await stack.aclose()
                msg = f"tastytrade: account {mask_account(wanted or '')} not found on this login"
                self.publish_state("failed", msg)
                raise BrokerError(msg)
            self.session, self._stack, self.accounts, self.account = session, stack, accounts, chosen
            self.publish_state("connected", f"account {mask_account(chosen.account_number)}", self.latency_ms)

    def _credentials(self) -> TastytradeCredentials:
        store = self.credentials or CredentialStore()
        return store.tastytrade(self.is_sandbox)

    def select_account(self, account_id: str) -> None:
        match = next((a for a in self.accounts if a.account_number == account_id), None)
        if match is None:
            raise BrokerError(f"tastytrade: account {mask_account(account_id)} is not on this login")
        self.account = match

    async def disconnect(self) -> None:
        async with self._lock:
            stack, self._stack = self._stack, None
            self.session, self.account = None, None
            if stack is not None:
                with contextlib.suppress(Exception):
                    await stack.aclose()
            self.publish_state("disconnected", "closed by us")


def _prepare_http() -> Any:
    """(In an executor.) A TLS context with the CA bundle loaded, and httpx2's lazy imports warmed up."""
    import ssl

    import httpx2

    try:
        import certifi

        ctx = ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        ctx = ssl.create_default_context()
    httpx2.AsyncClient(verify=ctx, trust_env=False)  # first construction imports transports lazily
    return ctx


