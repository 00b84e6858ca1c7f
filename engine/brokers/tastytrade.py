"""tastytrade broker adapter (SDK ``tastytrade`` 13.2.x, imported lazily).

Conventions at this boundary:
- **Price sign.** Our ``Order.limit_price`` is positive for a debit and negative for a credit; tastytrade's
  SDK uses the opposite (positive = credit, sent as ``abs(price)`` + ``price-effect``). :func:`to_tt_price`
  and :func:`from_tt_price` negate; nothing else converts.
- **Stops.** ``order-type`` ``Stop`` / ``Stop Limit`` with ``stop-trigger``, an unsigned price: its side is the
  legs' actions for a single leg and the limit's ``price-effect`` for a combo, so a multi-leg stop goes out as a
  stop-limit only (a bare ``Stop`` on a spread would not say whether the trigger is a debit or a credit).
- Leg quantity = order quantity × leg ratio; the price is per unit of the combo. Shares are ``Equity`` legs
  (quantity in shares, actions ``Buy to Open`` / ``Sell to Close`` … as for options — the SDK's bare
  ``Buy``/``Sell`` are for futures); a mixed order (covered call, collar, delta hedge) is priced per share of a
  contract, as on tastytrade's ticket (100 shares at 500 and a call at 5: a 495.00 debit).
- Positions: tastytrade quantity is unsigned with ``quantity-direction`` Long/Short; ours is signed;
  ``multiplier`` comes from the position; ``avg_price`` is per unit (``average-open-price``).
- ``place_order`` is always called with an explicit ``dry_run``: ``True`` for :meth:`preview`, ``False``
  only from :meth:`submit`, which refuses unless the mode router armed the adapter (:meth:`arm_live`).
- Every call has a timeout and goes through the circuit breaker; transport errors count as failures,
  error bodies from the API (``TastytradeError``) are broker answers: rejections, not failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from engine.brokers.base import Broker, BrokerError, OrderPreview
from engine.brokers.circuit_breaker import CircuitBreaker
from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.resilience import (
    ArmedAdapterMixin,
    BrokerRateLimited,
    LiveArm,
    backoff_delays,
    import_sdk,
    retry_after_seconds,
    run_until_stopped,
    sleep_or_stop,
    stop_supervisor,
    with_timeout,
)
from engine.bus.events import (
    AccountUpdated,
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    PositionChanged,
)
from engine.credentials import (
    CredentialStore,
    TastytradeCredentials,
    install_log_redaction,
    mask_account,
    quiet_sdk_loggers,
    redactor,
)
from engine.model import (
    AccountSnapshot,
    Equity,
    Fill,
    Instrument,
    Leg,
    OpenClose,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    is_occ_symbol,
    leg_weights,
)

if TYPE_CHECKING:
    from engine.clock import Clock
from engine.bus import Bus

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPONENT = "broker:tastytrade"


# ---- pure conversions (tested without the SDK) -------------------------------------------------------
#: tastytrade ``order-type`` → ours (Marketable Limit and Notional Market are not sent by us)
_FROM_TT_ORDER_TYPE = {"Limit": OrderType.LIMIT, "Market": OrderType.MARKET, "Stop": OrderType.STOP,
                       "Stop Limit": OrderType.STOP_LIMIT, "Marketable Limit": OrderType.LIMIT}


def to_tt_price(limit_price: Decimal) -> Decimal:
    """Our net price (+debit / −credit) → tastytrade's (+credit / −debit)."""
    return -Decimal(limit_price)


def from_tt_price(price: Decimal | None) -> Decimal | None:
    """tastytrade's signed price (+credit / −debit, after the SDK applied ``price-effect``) → ours."""
    return None if price is None else -Decimal(price)


def tt_action(leg: Leg) -> str:
    """``Buy to Open`` / ``Sell to Close`` … (the value of the SDK's ``OrderAction``)."""
    verb = "Buy" if leg.side is Side.BUY else "Sell"
    return f"{verb} to {'Open' if leg.open_close is OpenClose.OPEN else 'Close'}"


def instrument_from_tt(symbol: str, multiplier: int = 100, underlying: str = "") -> Instrument:
    symbol = symbol.strip() if not is_occ_symbol(symbol) else symbol
    if is_occ_symbol(symbol):
        return Option.from_occ(symbol, multiplier=multiplier, underlying=underlying or None)
    return Equity(symbol)


def position_from_tt(symbol: str, quantity: Decimal, direction: str, average_open_price: Decimal,
                     multiplier: Decimal, underlying: str = "", realized: Decimal = Decimal(0)) -> Position:
    """tastytrade position → ours: signed quantity, per-unit average price, multiplier from the broker."""
    sign = -1 if str(direction).lower() == "short" else 1
    mult = int(multiplier) if multiplier else 1
    inst = instrument_from_tt(symbol, multiplier=mult if is_occ_symbol(symbol) else 1, underlying=underlying)
    return Position(instrument=inst, quantity=sign * int(quantity), avg_price=Decimal(average_open_price),
                    realized_pnl=Decimal(realized))


_TT_STATUS = {
    "Received": OrderStatus.SUBMITTED, "Routed": OrderStatus.SUBMITTED, "In Flight": OrderStatus.SUBMITTED,
    "Contingent": OrderStatus.SUBMITTED, "Live": OrderStatus.WORKING, "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED, "Rejected": OrderStatus.REJECTED, "Expired": OrderStatus.EXPIRED,
    "Removed": OrderStatus.CANCELLED, "Partially Removed": OrderStatus.CANCELLED,
}


class BrokerServerError(BrokerError):
    """The server answered 5xx: what was asked may or may not have happened (a placed order may be live), so
    it is a transport failure — never a rejection."""


async def _raise_on_server_error(response: Any) -> None:
    """httpx response hook, before the SDK reads the answer as an error body (which would hide the status: the SDK
    raises the same ``TastytradeError`` for a 429 as for a refused order). A 5xx becomes
    :class:`BrokerServerError` (outcome unknown); a 429 becomes :class:`BrokerRateLimited` (not processed: a cancel
    is retried after the Retry-After the server sent, a submit is a clean refusal)."""
    status = response.status_code
    if status >= 500:
        req = response.request
        raise BrokerServerError(f"tastytrade answered HTTP {status} to {req.method} {req.url.path}; "
                                "the outcome is unknown")
    if status == 429:
        req = response.request
        wait = retry_after_seconds(response.headers.get("retry-after"), response.headers.get("date"))
        raise BrokerRateLimited(f"tastytrade rate limit (HTTP 429) on {req.method} {req.url.path}: not processed"
                                + (f"; retry after {wait:g} s" if wait is not None else ""), retry_after_s=wait)


class BrokerAuthError(BrokerError):
    """The login is no longer valid (refresh token revoked or rejected): the user must re-enter it."""


def _is_auth_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return type(exc).__name__ == "TastytradeError" and ("invalid_grant" in msg or "unauthorized" in msg)


def _is_transport_failure(exc: BaseException) -> bool:
    """Timeouts, dropped connections and unparseable (non-API) responses count against the breaker. A 429 does
    not: the server is up and answering, and an open breaker would add REDUCING (then HALTED) to a slowdown."""
    if isinstance(exc, BrokerAuthError | BrokerRateLimited):
        return False
    if isinstance(exc, (BrokerError, OSError, TimeoutError)):
        return True
    return type(exc).__name__ == "TastytradeError" and str(exc).startswith("Couldn't parse response")


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
        except Exception as exc:
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


def _describe_error(what: str, exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ == "TastytradeError" and ("invalid_grant" in msg or "unauthorized" in msg.lower()):
        return f"{what}: authentication failed ({msg}); re-enter the refresh token in Credentials"
    return f"{what}: {msg}"


# ---- broker --------------------------------------------------------------------------------------------
class TastytradeBroker(ArmedAdapterMixin, Broker):
    """Orders, positions and balances on a tastytrade account; order updates via the account streamer."""

    name = "tastytrade"
    is_live = True

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
        self._stream_task: asyncio.Task[None] | None = None
        self._stream_ready = asyncio.Event()
        self._rng = rng or random.Random()
        self.stream_connects = 0
        self.heartbeats = 0
        self._stop = asyncio.Event()

    # ---- connection (arming and identity: ArmedAdapterMixin) -----------------------------------
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
        await self.reconcile()
        if self._stream_task is None or self._stream_task.done():
            self._stop = asyncio.Event()
            self._stream_ready.clear()
            self._stream_task = asyncio.get_running_loop().create_task(self._stream_loop(),
                                                                       name="tastytrade:account-stream")
        await with_timeout(self._stream_ready.wait(), self.conn.config.call_timeout_s, "tastytrade account streamer")

    async def disconnect(self) -> None:
        self.disarm()
        task, self._stream_task = self._stream_task, None
        await stop_supervisor(task, self._stop)
        await self.conn.disconnect()

    async def _stream_loop(self) -> None:
        from tastytrade import AlertStreamer
        from tastytrade.account import AccountBalance, CurrentPosition
        from tastytrade.order import PlacedOrder

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
                                             self._consume(st, CurrentPosition, self._on_position),
                                             self._consume(st, AccountBalance, self._on_balance),
                                             self._heartbeat(st)], stop)
            except asyncio.CancelledError:
                if stop.is_set() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                # anyio cancelled our body because the SDK's reader failed: reconnect below
                log.warning("tastytrade account streamer cancelled by a stream failure; reconnecting")
            except Exception as exc:
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
            except Exception:
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
        return self._snapshot(b)

    def _snapshot(self, b: Any) -> AccountSnapshot:
        return AccountSnapshot(account_id=self.conn.account_id, cash=Decimal(b.cash_balance),
                               net_liquidation=Decimal(b.net_liquidating_value),
                               buying_power=Decimal(b.derivative_buying_power),
                               maintenance_requirement=Decimal(b.maintenance_requirement),
                               ts=self.clock.now(), broker=self.name, is_live=True)

    async def open_orders(self) -> list[Order]:
        self._require()
        out = []
        for placed in await self._live_orders():
            self._on_order(placed)
            known = self._orders.get(str(placed.id))
            out.append(known or self._order_from_placed(placed))
        return out

    async def fills(self) -> list[Fill]:
        """Fills seen this session (streamed, or found on orders at reconciliation), each once."""
        return [f for fills in self._fills_cache.values() for f in fills]

    # ---- orders ---------------------------------------------------------------------------------
    def build_order(self, order: Order, price: Decimal | None = None) -> Any:
        """The SDK order for ``order`` (``price`` in our convention; default ``order.limit_price``)."""
        from tastytrade.order import (
            InstrumentType,
            LimitOrder,
            MarketOrder,
            OrderAction,
            OrderTimeInForce,
            StopLimitOrder,
            StopOrder,
        )
        from tastytrade.order import Leg as TTLeg

        legs = []
        for leg in order.legs:
            inst = leg.instrument
            itype = InstrumentType.EQUITY_OPTION if isinstance(inst, Option) else InstrumentType.EQUITY
            symbol = inst.occ if isinstance(inst, Option) else inst.symbol
            legs.append(TTLeg(instrument_type=itype, symbol=symbol, action=OrderAction(tt_action(leg)),
                              quantity=order.quantity * leg.ratio))
        tif = OrderTimeInForce.GTC if order.tif is TimeInForce.GTC else OrderTimeInForce.DAY
        ext = order.client_order_id or None
        if order.order_type is OrderType.MARKET:
            return MarketOrder(legs=legs, time_in_force=tif, external_identifier=ext)
        if order.order_type.is_stop:
            if order.stop_price is None:
                raise ValueError(f"a {order.order_type.value} order needs a stop price")
            trigger = abs(Decimal(order.stop_price))
            if order.order_type is OrderType.STOP:
                if order.is_combo:
                    raise ValueError("tastytrade's stop-trigger carries no debit/credit side: send a multi-leg "
                                     "stop as a stop-limit")
                return StopOrder(legs=legs, stop_trigger=trigger, time_in_force=tif, external_identifier=ext)
        px = order.limit_price if price is None else price
        if px is None:
            raise ValueError("a limit order needs a limit price")
        if order.order_type is OrderType.STOP_LIMIT:
            return StopLimitOrder(legs=legs, price=to_tt_price(px), stop_trigger=trigger, time_in_force=tif,
                                  external_identifier=ext)
        return LimitOrder(legs=legs, price=to_tt_price(px), time_in_force=tif, external_identifier=ext)

    async def preview(self, order: Order) -> OrderPreview:
        """tastytrade dry-run (``place_order(dry_run=True)``): buying-power effect, fees, warnings."""
        acct, s = self._require()
        tt_order = self.build_order(order)
        try:
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
            warnings=tuple(str(w) for w in (resp.warnings or ())),
            errors=tuple(str(e) for e in (resp.errors or ())),
            source="broker",
            raw={"impact": str(bpe.impact), "effect": str(bpe.effect.value),
                 "new_buying_power": str(bpe.new_buying_power)},
        )

    async def submit(self, order: Order) -> None:
        """Place ``order`` live (``dry_run=False``). Refuses unless armed; rejections arrive as events."""
        self._arm.check(order.account_id, "submit")
        acct, s = self._require()
        try:
            tt_order = self.build_order(order)
        except Exception as exc:  # pydantic validation of legs/price
            self._reject(order, f"order could not be built for tastytrade: {exc}")
            return
        # the account streamer may report the order before the REST call returns: let it find ours
        self._pending[order.client_order_id] = order.evolve(updated_at=self.clock.now(), broker=self.name, account_id=self.conn.account_id)
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

    def _reject(self, order: Order, message: str) -> None:
        message = message or "rejected by tastytrade"
        rejected = order.evolve(updated_at=self.clock.now(), status=OrderStatus.REJECTED, reason=message, broker=self.name)
        if rejected.broker_order_id:
            self._orders[rejected.broker_order_id] = rejected
        log.warning("tastytrade rejected order %s: %s", order.order_id, message)
        self.bus.publish(OrderRejected(order=rejected))

    async def cancel(self, order: Order) -> None:
        """Cancel at the broker; ``OrderCancelled`` follows from the account streamer. Never blocked."""
        acct, s = self._require()
        bid = order.broker_order_id or self._by_coid.get(order.client_order_id)
        if not bid:
            raise BrokerError(f"tastytrade: order {order.order_id} has no broker order id to cancel")
        self._cancel_requested.add(bid)
        await self.conn.call("cancel order", lambda: acct.delete_order(s, int(bid)))

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
        except Exception as exc:
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
    def _order_from_placed(self, placed: Any) -> Order:
        legs = []
        # the order's size is the gcd of its leg quantities (legs go out as quantity × reduced ratio): a covered
        # call's 100 shares and 1 call are one unit of ratios 100:1, whatever ``size`` the server reports
        size = math.gcd(*(int(leg.quantity or 0) for leg in placed.legs)) or int(placed.size or 0) or 1
        for leg in placed.legs:
            inst = instrument_from_tt(leg.symbol)
            action = str(leg.action.value)
            side = Side.BUY if action.startswith("Buy") else Side.SELL
            oc = OpenClose.CLOSE if action.endswith("Close") else OpenClose.OPEN
            legs.append(Leg(inst, side, max(1, int(leg.quantity or size) // size), oc))
        now = self.clock.now()
        otype = _FROM_TT_ORDER_TYPE.get(str(placed.order_type.value), OrderType.LIMIT)
        limit = from_tt_price(placed.price) if otype.has_limit else None
        trigger = getattr(placed, "stop_trigger", None)  # only the SDK's stop order classes have it
        stop: Decimal | None = None
        if otype.is_stop and trigger is not None:
            # unsigned on the wire: a combo's side is its limit's, a single leg's its action's
            debit = limit > 0 if limit is not None else legs[0].side is Side.BUY
            stop = abs(Decimal(trigger)) * (1 if debit else -1)
        return Order(order_id=f"tastytrade-{placed.id}", client_order_id=placed.external_identifier or "",
                     legs=tuple(legs), quantity=size, order_type=otype, stop_price=stop,
                     limit_price=limit, tif=TimeInForce.GTC if "GTC" in str(
                         placed.time_in_force.value) else TimeInForce.DAY, status=_TT_STATUS.get(
                         str(placed.status.value), OrderStatus.WORKING), created_at=now, updated_at=now,
                     broker_order_id=str(placed.id), broker=self.name, account_id=placed.account_number,
                     source="broker")

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
                order = self._order_from_placed(placed)
                if not placed.external_identifier:
                    log.info("tastytrade: order %s was not placed by Optiondesk", bid)
            order = order.evolve(updated_at=self.clock.now(), broker_order_id=bid)
            self._orders[bid] = order
            if order.client_order_id:
                self._by_coid[order.client_order_id] = bid
        status = str(placed.status.value)
        new_fills = self._new_fills(order, placed)
        filled_qty, avg = self._fill_totals(order, placed)
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
            order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.CANCELLED,
                                 reason="" if bid in self._cancel_requested else "cancelled by broker")
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

    @staticmethod
    def _fill_totals(order: Order, placed: Any) -> tuple[int, Decimal | None]:
        """(units filled, average net price in our convention): each leg's average fill price weighted as in
        the order's net (``leg_weights``: the shares of a covered call count per contract share)."""
        units: list[int] = []
        net = Decimal(0)
        any_fill = False
        weights = leg_weights(order.legs)
        for i, leg in enumerate(placed.legs):
            ratio = order.legs[i].ratio if i < len(order.legs) else 1
            qty = sum((Decimal(f.quantity) for f in leg.fills or ()), Decimal(0))
            units.append(int(qty) // ratio)
            if qty:
                any_fill = True
                avg = sum((Decimal(f.quantity) * Decimal(f.fill_price) for f in leg.fills), Decimal(0)) / qty
                sign = 1 if str(leg.action.value).startswith("Buy") else -1
                weight = abs(weights[i]) if i < len(weights) else Decimal(ratio)
                net += sign * avg * weight
        return (min(units) if units else 0), (net if any_fill else None)

    def _set_position(self, p: Position) -> None:
        prev = self._positions.get(p.symbol)
        self._positions[p.symbol] = p
        if prev is None or prev.quantity != p.quantity or prev.avg_price != p.avg_price:
            self.bus.publish(PositionChanged(position=p, broker=self.name))

    def _on_position(self, cp: Any) -> None:
        self._set_position(position_from_tt(cp.symbol, cp.quantity, cp.quantity_direction, cp.average_open_price,
                                            cp.multiplier, cp.underlying_symbol))

    def _on_balance(self, b: Any) -> None:
        self.bus.publish(AccountUpdated(account=self._snapshot(b)))

    def cached_positions(self) -> list[Position]:
        return [p for p in self._positions.values() if p.quantity != 0]


def _flatten(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
