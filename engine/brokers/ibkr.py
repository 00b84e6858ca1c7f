"""Interactive Brokers adapter over ``ib_async`` (2.1.0, imported lazily), on our own asyncio loop.

Rules (docs/architecture.md §10, docs/brokers.md "Protocol facts"):
- only ``*Async`` and non-blocking calls; every ``*Async`` call is wrapped in a timeout and goes through
  the circuit breaker (they hang forever on a silent server);
- a disconnect wipes tickers and trades: :class:`IbkrConnection` reconnects with backoff + jitter and runs
  the registered ``on_reconnected`` callbacks (feed resubscribe, broker reconciliation);
- ``readonly`` does not stop ``placeOrder``: :meth:`IbkrBroker.submit` refuses unless armed for live by
  the mode router (paper ports 7497/4002 count as live accounts on a paper server).

Price convention at this boundary: our ``limit_price`` is the net price per unit, +debit / −credit.
- combos go out as a ``BAG`` bought (action ``BUY``) at that same signed net price (IB's combo
  convention: a negative limit on a BUY combo is a credit);
- a single leg goes out with the leg's action and ``abs(limit_price)``; a sign that contradicts the side
  (a buy at a credit) is rejected before sending;
- stop and stop-limit orders are ``STP`` / ``STP LMT`` with the trigger in ``auxPrice``, signed exactly like
  ``lmtPrice`` (a combo's signed net, a single leg's absolute price);
- members of an engine one-cancels-other group (tag ``oco:<group id>``) carry ``ocaGroup`` = the group id and
  ``ocaType`` 1, so IBKR cancels a filled member's sibling itself.
Shares: a stock order is a ``STK`` contract (``Stock(symbol, "SMART", "USD")``, quantity in shares); a mixed
order (covered call, collar, delta hedge) is a ``BAG`` whose stock leg has a ratio in shares (100 per
covered contract) and is routed SMART (IB error 315 otherwise). Its net price is quoted per share of a contract
(``engine.model.leg_weights``: 100 shares at 500 and a short call at 5 is 495.00) — our convention, to be
confirmed against a paper account before trading mixed BAGs live.
Positions: ``avgCost`` from IB is per contract (price × multiplier); ours is per unit: divided back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from engine.brokers.base import Broker, BrokerError, OrderPreview
from engine.brokers.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig
from engine.brokers.resilience import ArmedAdapterMixin, LiveArm, Reconnector, import_sdk, with_timeout
from engine.bus.events import (
    AccountUpdated,
    Alert,
    ConnectionStateChanged,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
)
from engine.credentials import install_log_redaction, mask_account, quiet_sdk_loggers, redactor
from engine.model import (
    AccountSnapshot,
    Equity,
    Fill,
    Instrument,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    is_occ_symbol,
    leg_weights,
    oco_group_of,
)
from engine.model.instruments import Right

if TYPE_CHECKING:
    from engine.clock import Clock
from engine.bus import Bus

log = logging.getLogger(__name__)
T = TypeVar("T")
COMPONENT = "broker:ibkr"

#: error codes that are information, not failures (10349: "TIF set to DAY" — ib_async marks the order
#: Cancelled then Submitted again; 2100-2199: connectivity/farm notices)
INFO_CODES = frozenset({10349, 10167, 2104, 2106, 2107, 2108, 2119, 2158})
LOST_CODES = frozenset({1100})
RESTORED_DATA_LOST = 1101


# ---- pure conversions ----------------------------------------------------------------------------------
def ib_expiry(d: date) -> str:
    return d.strftime("%Y%m%d")


def parse_ib_expiry(s: str) -> date:
    s = s.strip()[:8]
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def instrument_from_ib(contract: Any) -> Instrument:
    """An IB contract → our instrument (options via their OCC local symbol when present)."""
    sec = getattr(contract, "secType", "")
    if sec in ("OPT", "FOP"):
        mult = int(float(contract.multiplier or 100))
        local = (contract.localSymbol or "").strip()
        if local and is_occ_symbol(contract.localSymbol):
            return Option.from_occ(contract.localSymbol, underlying=contract.symbol, multiplier=mult)
        return Option(root=contract.tradingClass or contract.symbol, expiry=parse_ib_expiry(
            contract.lastTradeDateOrContractMonth), strike=Decimal(str(contract.strike)),
                      right=Right.parse(contract.right), underlying=contract.symbol, multiplier=mult)
    return Equity(contract.symbol)


def position_from_ib(contract: Any, quantity: float, avg_cost: float) -> Position:
    """IB position → ours: signed quantity as is; ``avgCost`` (per contract) ÷ multiplier → per unit."""
    inst = instrument_from_ib(contract)
    avg = Decimal(str(avg_cost)) / Decimal(inst.multiplier)
    return Position(instrument=inst, quantity=int(quantity), avg_price=avg.quantize(Decimal("0.0001")))


def ib_order_terms(order: Order) -> tuple[str, float, float | None]:
    """(action, total quantity, IB limit price) for ``order`` under the conventions in the module doc."""
    if order.is_combo:
        price = None if order.limit_price is None else float(order.limit_price)
        return "BUY", float(order.quantity), price
    leg = order.legs[0]
    action = "BUY" if leg.side is Side.BUY else "SELL"
    if order.limit_price is None:
        return action, float(order.quantity * leg.ratio), None
    if (leg.side is Side.BUY and order.limit_price < 0) or (leg.side is Side.SELL and order.limit_price > 0):
        raise ValueError(f"limit {order.limit_price} contradicts a single {leg.side.value} leg "
                         "(+ is a debit we pay, − a credit we receive)")
    return action, float(order.quantity * leg.ratio), float(abs(order.limit_price))


#: our order types ↔ IB's ``orderType`` (a stop's trigger travels in ``auxPrice``, signed like ``lmtPrice``)
IB_ORDER_TYPES = {OrderType.LIMIT: "LMT", OrderType.MARKET: "MKT", OrderType.STOP: "STP",
                  OrderType.STOP_LIMIT: "STP LMT"}
_FROM_IB_ORDER_TYPE = {v: k for k, v in IB_ORDER_TYPES.items()}


def ib_stop_price(order: Order) -> float | None:
    """IB ``auxPrice`` for a stop: a combo's signed net trigger (+ debit, as its ``lmtPrice``), a single leg's
    absolute price (its direction is the action)."""
    if order.stop_price is None:
        return None
    return float(order.stop_price) if order.is_combo else float(abs(order.stop_price))


def _f(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return math.nan if x == -1 or abs(x) > 1e300 else x


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
        self.account_id = ""
        self.latency_ms: float | None = None
        self._closing = False
        self._lock = asyncio.Lock()
        self._on_reconnected: list[Callable[[], Awaitable[None]]] = []
        self.errors: list[tuple[int, int, str]] = []  # (reqId, code, message), newest last, bounded
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self.ib is not None and self.ib.isConnected()

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

    def _drop(self) -> None:
        """Disconnect on our own initiative without triggering the reconnector."""
        closing, self._closing = self._closing, True
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
            except Exception:
                log.exception("ibkr: post-reconnect step failed")

    def _on_disconnected(self) -> None:
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


# ---- broker ------------------------------------------------------------------------------------------------
class IbkrBroker(ArmedAdapterMixin, Broker):
    """Orders (single legs and BAG combos), whatIf previews, positions and account values on IBKR."""

    name = "ibkr"
    is_live = True

    def __init__(self, connection: IbkrConnection, bus: Bus, *, clock: Clock | None = None) -> None:
        self.conn = connection
        self.bus = bus
        self.clock: Clock = clock if clock is not None else bus.clock  # the engine clock
        self._arm = LiveArm("ibkr")
        self._orders: dict[int, Order] = {}  # IB order id → our latest Order
        self._by_coid: dict[str, int] = {}
        self._trades: dict[int, Any] = {}
        self._leg_fills: dict[int, dict[int, tuple[float, float]]] = {}  # order id → conId → (qty, notional)
        self._seen_exec: set[str] = set()
        self._fills: list[Fill] = []
        self._cancel_requested: set[int] = set()
        self._positions: dict[str, Position] = {}
        self._contracts: dict[str, Any] = {}  # our instrument key → qualified IB contract
        self._hooked = False
        connection.on_reconnected(self.reconcile)

    # ---- connection (arming and identity: ArmedAdapterMixin) -----------------------------------
    def available_accounts(self) -> list[str]:
        """Accounts managed by this login (full numbers: show them masked)."""
        return list(self.conn.ib.managedAccounts()) if self.conn.connected else []

    async def select_account(self, account_id: str) -> None:
        """Trade another managed account (advisor logins): disarms and reconciles."""
        if account_id not in self.available_accounts():
            raise BrokerError(f"ibkr: account {mask_account(account_id)} is not managed by this login")
        if account_id != self.conn.account_id:
            self.disarm()
            self.conn.account_id = account_id
            self._positions.clear()
            await self.reconcile()

    async def connect(self) -> None:
        await self.conn.connect()
        ib = self.conn.ib
        if not self._hooked:
            ib.orderStatusEvent += self._on_status
            ib.execDetailsEvent += self._on_exec
            ib.positionEvent += self._on_position
            ib.accountValueEvent += self._on_account_value
            self._hooked = True
        await self.reconcile()

    async def disconnect(self) -> None:
        self.disarm()
        await self.conn.disconnect()

    async def reconcile(self) -> None:
        """Positions, account values and open orders as ib_async synced them at (re)connect."""
        for p in await self.positions():
            self._set_position(p)
        self.bus.publish(AccountUpdated(account=await self.account()))
        ib = self.conn.ib
        for trade in ib.openTrades():
            coid = trade.order.orderRef
            if coid and coid in self._by_coid:
                oid = self._by_coid[coid]
                if oid != trade.order.orderId:
                    self._orders[trade.order.orderId] = self._orders.pop(oid)
                    self._by_coid[coid] = trade.order.orderId
                self._trades[trade.order.orderId] = trade
        # executions of our orders while we were away arrive in the startup sync (reqExecutions)
        for fill in ib.fills():
            oid = self._by_coid.get(fill.execution.orderRef)
            if oid is not None:
                self._apply_exec(oid, fill)

    # ---- queries --------------------------------------------------------------------------------
    def _require(self) -> Any:
        if not self.conn.connected:
            raise BrokerError("ibkr: not connected")
        return self.conn.ib

    async def positions(self) -> list[Position]:
        ib = self._require()
        return [position_from_ib(p.contract, p.position, p.avgCost) for p in ib.positions(self.conn.account_id)
                if p.position]

    async def account(self) -> AccountSnapshot:
        ib = self._require()
        vals: dict[str, str] = {}
        for v in ib.accountValues(self.conn.account_id):
            if v.currency in ("USD", "BASE", "") and v.tag not in vals:
                vals[v.tag] = v.value

        def d(tag: str) -> Decimal:
            try:
                return Decimal(vals.get(tag, "0") or "0")
            except Exception:
                return Decimal(0)

        return AccountSnapshot(account_id=self.conn.account_id, cash=d("TotalCashValue"),
                               net_liquidation=d("NetLiquidation"), buying_power=d("BuyingPower"),
                               maintenance_requirement=d("MaintMarginReq"), realized_pnl=d("RealizedPnL"),
                               unrealized_pnl=d("UnrealizedPnL"), ts=self.clock.now(), broker=self.name, is_live=True)

    async def open_orders(self) -> list[Order]:
        """Working orders at IBKR: ours as tracked, others (e.g. after a restart) rebuilt from the trade with
        ``client_order_id`` = the IB ``orderRef`` we set when placing."""
        ib = self._require()
        out = []
        for trade in ib.openTrades():
            known = self._orders.get(trade.order.orderId)
            if known is not None:
                if not known.status.is_terminal:
                    out.append(known)
                continue
            try:
                out.append(await self._order_from_trade(trade))
            except (LookupError, BrokerError, ValueError) as exc:
                log.warning("ibkr: cannot describe open order %s: %s", trade.order.orderId, exc)
        return out

    async def _instrument_for_con_id(self, con_id: int) -> Instrument:
        for c in self._contracts.values():
            if c.conId == con_id:
                return instrument_from_ib(c)
        from ib_async import Contract

        ib = self._require()
        res = await self.conn.call(f"contract {con_id}", lambda: ib.qualifyContractsAsync(Contract(conId=con_id)))
        if not res or res[0] is None:
            raise LookupError(f"IBKR has no contract with conId {con_id}")
        inst = instrument_from_ib(res[0])
        self._contracts[inst.key] = res[0]
        return inst

    async def _order_from_trade(self, trade: Any) -> Order:
        from engine.model import Leg

        o, c = trade.order, trade.contract
        qty = int(o.totalQuantity)
        if c.secType == "BAG":
            legs = tuple([Leg(await self._instrument_for_con_id(cl.conId), Side.BUY if cl.action == "BUY" else Side.SELL,
                              int(cl.ratio)) for cl in c.comboLegs or []])
            price = None if _f(o.lmtPrice) != _f(o.lmtPrice) else Decimal(str(o.lmtPrice))
            aux = _f(o.auxPrice)
            stop = None if math.isnan(aux) else Decimal(str(aux))
        else:
            inst = instrument_from_ib(c) if c.localSymbol else await self._instrument_for_con_id(c.conId)
            side = Side.BUY if o.action == "BUY" else Side.SELL
            legs = (Leg(inst, side, 1),)
            lmt = _f(o.lmtPrice)
            price = None if math.isnan(lmt) else Decimal(str(lmt)) * (1 if side is Side.BUY else -1)
            aux = _f(o.auxPrice)
            stop = None if math.isnan(aux) else Decimal(str(aux)) * (1 if side is Side.BUY else -1)
        otype = _FROM_IB_ORDER_TYPE.get(o.orderType, OrderType.MARKET)
        if not otype.has_limit:
            price = None
        if not otype.is_stop:
            stop = None
        now = self.clock.now()
        st = trade.orderStatus
        status = OrderStatus.PARTIALLY_FILLED if st.filled else OrderStatus.WORKING
        order = Order(order_id=f"ibkr-{o.orderId}", client_order_id=o.orderRef or "", legs=legs, quantity=qty,
                      order_type=otype, limit_price=price, stop_price=stop,
                      tif=TimeInForce.GTC if o.tif == "GTC" else TimeInForce.DAY, status=status, created_at=now,
                      updated_at=now, filled_quantity=int(st.filled or 0), broker_order_id=str(o.orderId),
                      broker=self.name, account_id=o.account or self.conn.account_id, source="broker")
        self._orders[o.orderId] = order
        self._trades[o.orderId] = trade
        if order.client_order_id:
            self._by_coid[order.client_order_id] = o.orderId
        return order

    async def fills(self) -> list[Fill]:
        """This session's fills plus today's executions IBKR reported at connect (``client_order_id`` =
        the IB ``orderRef``), so a restart can reconcile fills that happened while we were away."""
        ib = self._require()
        out = list(self._fills)
        seen = {f.fill_id for f in out}
        for f in ib.fills():
            ex = f.execution
            fid = f"ibkr-{ex.execId}"
            if fid in seen or f.contract.secType == "BAG":
                continue
            known = self._orders.get(ex.orderId)
            out.append(Fill(fill_id=fid, order_id=known.order_id if known else f"ibkr-{ex.orderId}",
                            instrument=instrument_from_ib(f.contract),
                            quantity=(1 if ex.side in ("BOT", "BUY") else -1) * int(ex.shares),
                            price=Decimal(str(ex.price)),
                            ts=ex.time if isinstance(ex.time, datetime) else self.clock.now(),
                            client_order_id=ex.orderRef or ""))
        return out

    # ---- contracts --------------------------------------------------------------------------------
    async def contract_for(self, inst: Instrument) -> Any:
        """The qualified IB contract (with conId) of one of our instruments; cached."""
        from ib_async import Option as IbOption
        from ib_async import Stock

        if inst.key in self._contracts:
            return self._contracts[inst.key]
        if isinstance(inst, Option):
            c = IbOption(inst.underlying, ib_expiry(inst.expiry), float(inst.strike), inst.right.value, "SMART",
                         tradingClass=inst.root, currency="USD")
        else:
            c = Stock(inst.symbol, "SMART", "USD")
        ib = self._require()
        res = await self.conn.call(f"qualify {inst.key}", lambda: ib.qualifyContractsAsync(c))
        if not res or res[0] is None:
            raise LookupError(f"IBKR has no contract for {inst.key}")
        self._contracts[inst.key] = res[0]
        return res[0]

    def remember_contract(self, key: str, contract: Any) -> None:
        self._contracts[key] = contract

    async def build(self, order: Order, price: float | None = None) -> tuple[Any, Any]:
        """(IB contract, IB order) for ``order``; ``price`` overrides the IB limit price."""
        from ib_async import Bag, ComboLeg, LimitOrder, MarketOrder, StopLimitOrder, StopOrder

        action, qty, lmt = ib_order_terms(order)
        if price is not None:
            lmt = price
        if order.is_combo:
            legs = []
            for leg in order.legs:
                c = await self.contract_for(leg.instrument)
                legs.append(ComboLeg(conId=c.conId, ratio=leg.ratio, action="BUY" if leg.side is Side.BUY else "SELL",
                                     exchange="SMART"))
            contract = Bag(symbol=order.underlying, exchange="SMART", currency="USD", comboLegs=legs)
        else:
            contract = await self.contract_for(order.legs[0].instrument)
        tif = "GTC" if order.tif is TimeInForce.GTC else "DAY"
        stop = ib_stop_price(order)
        if order.order_type.is_stop and stop is None:
            raise ValueError(f"a {order.order_type.value} order needs a stop price")
        if order.order_type is OrderType.STOP:
            ib_order = StopOrder(action, qty, stop, tif=tif)
        elif order.order_type is OrderType.STOP_LIMIT:
            if lmt is None:
                raise ValueError("a stop-limit order needs a limit price")
            ib_order = StopLimitOrder(action, qty, lmt, stop, tif=tif)
        elif order.order_type is OrderType.MARKET or lmt is None:
            ib_order = MarketOrder(action, qty, tif=tif)
        else:
            ib_order = LimitOrder(action, qty, lmt, tif=tif)
        ib_order.orderRef = order.client_order_id
        ib_order.account = self.conn.account_id
        group = oco_group_of(order.tag)
        if group is not None:
            # the engine's one-cancels-other group (engine/oms/groups.py) also held at IBKR as an OCA group, so
            # the venue cancels the sibling of a fill even while the engine is not running; type 1 cancels
            # the others with overfill protection (block)
            ib_order.ocaGroup = group
            ib_order.ocaType = 1
        return contract, ib_order

    # ---- orders -----------------------------------------------------------------------------------
    async def preview(self, order: Order) -> OrderPreview:
        """IB ``whatIf``: initial-margin change, commission and warnings; nothing is placed."""
        ib = self._require()
        try:
            contract, ib_order = await self.build(order)
        except (LookupError, ValueError) as exc:
            return OrderPreview(errors=(str(exc),), source="broker")
        state = await self.conn.call("whatIf", lambda: ib.whatIfOrderAsync(contract, ib_order))
        if not state or not hasattr(state, "initMarginChange"):
            last = self.conn.errors[-1][2] if self.conn.errors else "no answer"
            return OrderPreview(errors=(f"whatIf failed: {last}",), source="broker")

        def dec(v: Any) -> Decimal | None:
            x = _f(v)
            return None if math.isnan(x) else Decimal(str(x))

        margin = dec(state.initMarginChange)
        return OrderPreview(buying_power_effect=None if margin is None else -margin, commission=dec(state.commission),
                            margin_change=margin, warnings=(state.warningText,) if state.warningText else (),
                            source="broker", raw={"maintMarginChange": str(state.maintMarginChange),
                                                  "equityWithLoanChange": str(state.equityWithLoanChange)})

    async def submit(self, order: Order) -> None:
        """``placeOrder`` (single leg or BAG). Refuses unless armed; results arrive as events."""
        self._arm.check(order.account_id, "submit")
        ib = self._require()
        try:
            contract, ib_order = await self.build(order)
        except (LookupError, ValueError) as exc:
            self._reject(order, str(exc))
            return
        if self.conn.breaker.state is BreakerState.OPEN:
            raise CircuitOpenError(f"ibkr: circuit open, order not sent ({self.conn.breaker.last_reason})")
        trade = ib.placeOrder(contract, ib_order)
        oid = trade.order.orderId
        tracked = order.evolve(updated_at=self.clock.now(), broker_order_id=str(oid), broker=self.name, account_id=self.conn.account_id)
        self._orders[oid] = tracked
        self._by_coid[order.client_order_id] = oid
        self._trades[oid] = trade

    def _reject(self, order: Order, message: str) -> None:
        rejected = order.evolve(updated_at=self.clock.now(), status=OrderStatus.REJECTED, reason=message or "rejected by IBKR", broker=self.name)
        if rejected.broker_order_id:
            with contextlib.suppress(ValueError):
                self._orders[int(rejected.broker_order_id)] = rejected
        log.warning("ibkr rejected order %s: %s", order.order_id, rejected.reason)
        self.bus.publish(OrderRejected(order=rejected))

    def _trade_of(self, order: Order) -> Any:
        oid = int(order.broker_order_id) if order.broker_order_id else self._by_coid.get(order.client_order_id)
        trade = self._trades.get(oid) if oid is not None else None
        if trade is None:
            raise BrokerError(f"ibkr: order {order.order_id} is not known to this session")
        return trade

    async def cancel(self, order: Order) -> None:
        """``cancelOrder``; ``OrderCancelled`` follows. Never blocked by arming."""
        ib = self._require()
        trade = self._trade_of(order)
        self._cancel_requested.add(trade.order.orderId)
        ib.cancelOrder(trade.order)

    async def replace(self, order: Order, limit_price: Decimal, quantity: int | None = None) -> None:
        """Modify = place the same IB order again with the new price/quantity."""
        self._arm.check(order.account_id, "replace")
        ib = self._require()
        trade = self._trade_of(order)
        if trade.isDone():
            raise BrokerError(f"ibkr: order {order.order_id} is {trade.orderStatus.status}; nothing to replace")
        current = self._orders.get(trade.order.orderId, order)
        probe = current.evolve(updated_at=self.clock.now(), limit_price=limit_price, quantity=quantity or current.quantity)
        try:
            _, qty, lmt = ib_order_terms(probe)
        except ValueError as exc:
            raise BrokerError(f"ibkr replace: {exc}") from exc
        trade.order.lmtPrice = lmt
        trade.order.totalQuantity = qty
        ib.placeOrder(trade.contract, trade.order)
        updated = probe.evolve(updated_at=self.clock.now())
        self._orders[trade.order.orderId] = updated
        self.bus.publish(OrderReplaced(order=updated, previous_price=current.limit_price))

    # ---- events from ib_async -----------------------------------------------------------------------
    def _on_status(self, trade: Any) -> None:
        oid = trade.order.orderId
        order = self._orders.get(oid)
        if order is None:
            coid = trade.order.orderRef
            if coid and coid in self._by_coid:
                order = self._orders.get(self._by_coid[coid])
            if order is None:
                return
        self._trades[oid] = trade
        status = trade.orderStatus.status
        last = trade.log[-1] if trade.log else None
        code = getattr(last, "errorCode", 0) if last is not None else 0
        if status in ("Submitted", "PreSubmitted"):
            if order.status in (OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.PENDING_APPROVAL):
                order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.WORKING)
                self._orders[oid] = order
                self.bus.publish(OrderAccepted(order=order))
            return
        if order.status.is_terminal:
            return
        if status in ("Cancelled", "ApiCancelled"):
            if code in INFO_CODES:
                return  # 10349 etc.: ib_async flips Cancelled → Submitted; not a cancel
            if code and code != 202 and oid not in self._cancel_requested:
                self._reject(order, f"{code}: {last.message.split(': ', 1)[-1]}" if last.message else str(code))
                return
            order = order.evolve(updated_at=self.clock.now(), status=OrderStatus.CANCELLED,
                                 reason="" if oid in self._cancel_requested else (last.message if last else ""))
            self._orders[oid] = order
            self.bus.publish(OrderCancelled(order=order))
        elif status == "Inactive":
            self._reject(order, last.message if last and last.message else "order inactive at IBKR")

    def _on_exec(self, trade: Any, fill: Any) -> None:
        self._apply_exec(trade.order.orderId, fill)

    def _apply_exec(self, oid: int, fill: Any) -> None:
        ex = fill.execution
        if ex.execId in self._seen_exec or fill.contract.secType == "BAG":
            return
        order = self._orders.get(oid)
        if order is None:
            return
        self._seen_exec.add(ex.execId)
        con_id = fill.contract.conId
        leg_index = 0
        inst: Instrument | None = None
        for i, leg in enumerate(order.legs):
            c = self._contracts.get(leg.instrument.key)
            if c is not None and c.conId == con_id:
                leg_index, inst = i, leg.instrument
                break
        if inst is None:
            inst = instrument_from_ib(fill.contract)
        sign = 1 if ex.side in ("BOT", "BUY") else -1
        ours = Fill(fill_id=f"ibkr-{ex.execId}", order_id=order.order_id, instrument=inst,
                    quantity=sign * int(ex.shares), price=Decimal(str(ex.price)),
                    ts=ex.time if isinstance(ex.time, datetime) else self.clock.now(), leg_index=leg_index,
                    client_order_id=order.client_order_id)
        self._fills.append(ours)
        per_leg = self._leg_fills.setdefault(oid, {})
        q, notional = per_leg.get(con_id, (0.0, 0.0))
        per_leg[con_id] = (q + ex.shares, notional + ex.shares * ex.price)
        units = []
        net = 0.0
        for leg, weight in zip(order.legs, leg_weights(order.legs), strict=True):
            c = self._contracts.get(leg.instrument.key)
            lq, ln = per_leg.get(c.conId if c is not None else con_id, (0.0, 0.0))
            units.append(int(lq) // leg.ratio)
            if lq:
                net += float(weight) * (ln / lq)  # ± ratio; a mixed BAG's shares per contract share
        filled = min(units) if units else 0
        status = OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED
        order = order.evolve(updated_at=self.clock.now(), status=status, filled_quantity=filled, avg_fill_price=Decimal(str(round(net, 6))))
        self._orders[oid] = order
        self.bus.publish(OrderFilled(order=order, fills=(ours,)))

    def _set_position(self, p: Position) -> None:
        prev = self._positions.get(p.symbol)
        self._positions[p.symbol] = p
        if prev is None or prev.quantity != p.quantity or prev.avg_price != p.avg_price:
            self.bus.publish(PositionChanged(position=p, broker=self.name))

    def _on_position(self, pos: Any) -> None:
        if pos.account == self.conn.account_id:
            self._set_position(position_from_ib(pos.contract, pos.position, pos.avgCost))

    def _on_account_value(self, value: Any) -> None:
        if value.tag == "NetLiquidation" and value.account == self.conn.account_id and self.conn.connected:
            asyncio.get_running_loop().create_task(self._publish_account())

    async def _publish_account(self) -> None:
        with contextlib.suppress(BrokerError):
            self.bus.publish(AccountUpdated(account=await self.account()))
