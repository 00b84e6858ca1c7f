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
- a native bracket (engine/brokers/native_bracket.py) goes out as a parent (the entry, ``transmit=False``) and two
  children (``parentId``, one OCA group, ``transmit=True`` on the last), once all three have reached the adapter.
Shares: a stock order is a ``STK`` contract (``Stock(symbol, "SMART", "USD")``, quantity in shares); a mixed
order (covered call, collar, delta hedge) is a ``BAG`` whose stock leg has a ratio in shares (100 per
covered contract) and is routed SMART (IB error 315 otherwise). Its net price is quoted per share of a contract
(``engine.model.leg_weights``: 100 shares at 500 and a short call at 5 is 495.00) — our convention, to be
confirmed against a paper account before trading mixed BAGs live.
Positions: ``avgCost`` from IB is per contract (price × multiplier); ours is per unit: divided back.

Parts with names of their own: the connection (:mod:`engine.brokers.ibkr_connection`), the wire mapping of
contracts, orders and positions (:mod:`engine.brokers.ibkr_wire`); this module is the broker: orders, executions,
positions and account values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.brokers.base import Broker, BrokerError, OrderPreview
from engine.brokers.circuit_breaker import BreakerState, CircuitOpenError
from engine.brokers.ibkr_connection import INFO_CODES, IbkrConnection
from engine.brokers.ibkr_wire import (
    _FROM_IB_ORDER_TYPE,
    _f,
    ib_expiry,
    ib_order_of,
    ib_order_terms,
    ib_stop_price,
    instrument_from_ib,
    parse_ib_expiry,
    position_from_ib,
)
from engine.brokers.native_bracket import BracketAssembly, BracketSet
from engine.brokers.resilience import ArmedAdapterMixin, LiveArm
from engine.bus.events import (
    AccountUpdated,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
)
from engine.credentials import mask_account
from engine.model import (
    AccountSnapshot,
    Fill,
    Instrument,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    leg_weights,
    oco_group_of,
)

if TYPE_CHECKING:
    from engine.clock import Clock
from engine.bus import Bus

log = logging.getLogger(__name__)

# the adapter's public names, wherever they live (the connection and the wire mapping have their own modules)
__all__ = ["IbkrBroker", "IbkrConnection", "ib_expiry", "ib_order_terms", "parse_ib_expiry", "position_from_ib"]


# ---- broker ------------------------------------------------------------------------------------------------
class IbkrBroker(ArmedAdapterMixin, Broker):
    """Orders (single legs and BAG combos), whatIf previews, positions and account values on IBKR."""

    name = "ibkr"
    is_live = True
    native_brackets = True

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
        # native brackets held until entry and both exits are in, then placed as parent + children
        self._brackets = BracketAssembly()
        self._hooked = False
        connection.on_reconnected(self.reconcile)

    # ---- connection (arming and identity: ArmedAdapterMixin) -----------------------------------
    def disarm(self) -> None:
        """Leaving live mode (or the kill switch): a bracket member still held for the rest of its bracket ends
        here, rejected as never sent."""
        super().disarm()
        for order in self._brackets.held():
            self._brackets.release(order)
            self._reject(order, "held for the rest of its bracket and not sent: live trading was switched off")

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
            found = self._by_coid.get(fill.execution.orderRef)
            if found is not None:
                self._apply_exec(found, fill)

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
            except Exception:  # IB sends odd account values ("", "-", text): a field it cannot parse reads as zero
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
        return out + self._brackets.held()  # held for the rest of their bracket: ours, not lost

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
        c: IbOption | Stock
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
        from ib_async import Bag, ComboLeg

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
        ib_order = ib_order_of(order.order_type, action, qty, lmt, ib_stop_price(order), tif)
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
        """``placeOrder`` (single leg or BAG). Refuses unless armed; results arrive as events.

        A native bracket member (engine/brokers/native_bracket.py) is held until its entry and both exits are in,
        then the three go out as a parent and two children (:meth:`_place_bracket`)."""
        self._arm.check(order.account_id, "submit")
        ib = self._require()
        if self._brackets.claims(order):
            complete = self._brackets.offer(order)
            if complete is not None:
                await self._place_bracket(complete)
            return
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

    async def _place_bracket(self, bracket: BracketSet) -> None:
        """The entry as parent with ``transmit=False``, the exits as children (``parentId`` = the parent's order id,
        one OCA group of type 1), ``transmit=True`` on the last only: TWS sends nothing until the last arrives, so
        the venue never works an entry without its exits. The children wait PreSubmitted until the parent fills."""
        ib = self._require()
        entry = bracket.entry
        assert entry is not None  # a complete set has its entry
        members = [entry, *sorted(bracket.exits, key=lambda o: o.order_type.is_stop)]
        built = []
        for o in members:
            try:
                built.append(await self.build(o))
            except (LookupError, ValueError) as exc:
                for m in members:
                    self._reject(m, f"bracket refused: member {o.client_order_id}: {exc}")
                return
        if self.conn.breaker.state is BreakerState.OPEN:
            for m in members[:-1]:
                self._reject(m, f"ibkr: circuit open, bracket not sent ({self.conn.breaker.last_reason})")
            raise CircuitOpenError(f"ibkr: circuit open, order not sent ({self.conn.breaker.last_reason})")
        parent_id = 0
        for i, (o, (contract, ib_order)) in enumerate(zip(members, built, strict=True)):
            ib_order.transmit = i == len(members) - 1
            if i:
                ib_order.parentId = parent_id
            trade = ib.placeOrder(contract, ib_order)
            oid = trade.order.orderId
            if not i:
                parent_id = oid
            self._orders[oid] = o.evolve(updated_at=self.clock.now(), broker_order_id=str(oid), broker=self.name,
                                         account_id=self.conn.account_id)
            self._by_coid[o.client_order_id] = oid
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
        """``cancelOrder``; ``OrderCancelled`` follows. Never blocked by arming. A bracket member still held for
        the rest of its bracket is taken back without a broker call."""
        if self._brackets.release(order):
            self.bus.publish(OrderCancelled(order=order.evolve(
                updated_at=self.clock.now(), status=OrderStatus.CANCELLED, broker=self.name,
                reason="cancelled before it was sent (held for the rest of its bracket)")))
            return
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
        if status == "PreSubmitted" and trade.order.parentId:
            parent = self._orders.get(trade.order.parentId)
            if parent is None or parent.status is not OrderStatus.FILLED:
                return  # a bracket child waiting for its parent's fill: sent, not working yet
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
                message = last.message if last is not None else ""
                self._reject(order, f"{code}: {message.split(': ', 1)[-1]}" if message else str(code))
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

