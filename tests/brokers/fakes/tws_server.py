"""A loopback TWS speaking the IB API socket protocol at a pinned server version (176).

Framing: a 4-byte big-endian length, then NUL-terminated text fields. Handshake: the client sends
``b"API\\0"`` + a framed ``"v157..178"``; we answer ``[version, connTime]``; the client's startApi
(71) gets managed accounts (15) and the next valid id (9). Every startup sync request ``ib_async``
2.1.0 sends is answered (positions 61→62, open orders 5→53, completed orders 99→102, account updates
6→54, account updates multi 76→74, executions 7→55), plus contract details (9→10/52 or error 200),
sec-def option params (78→75/76), market data (1→ ticks 1/2 and option computations 21), place /
modify / cancel (3/4 → openOrder 5, orderStatus 3, execDetails 11, commissionReport 59, errors 4), historical
data with IB's pacing (20 → 17 or error 162, ``tws_history.py``), matching symbols (81 → 79, ``tws_symbols.py``).

Message layouts mirror ``ib_async.decoder`` / ``ib_async.client`` for server version 176 field by field.

Run standalone (for the GUI): ``python tests/brokers/fakes/tws_server.py`` prints the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tests.brokers.fakes.tws_history import TwsHistory
from tests.brokers.fakes.tws_symbols import TwsSymbols

SERVER_VERSION = 176
ACCOUNT = "DU1234567"
UNSET_DOUBLE = "1.7976931348623157E308"
STOCK_CONID = 756733


def third_fridays(start: date, n: int) -> list[date]:
    out: list[date] = []
    y, m = start.year, start.month
    while len(out) < n:
        d = date(y, m, 15)
        while d.weekday() != 4:
            d += timedelta(days=1)
        if d > start:
            out.append(d)
        m += 1
        if m == 13:
            y, m = y + 1, 1
    return out


def frame(*fields: Any) -> bytes:
    body = "".join(f"{f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


@dataclass
class OptContract:
    con_id: int
    symbol: str
    expiry: str  # YYYYMMDD
    strike: float
    right: str

    @property
    def local_symbol(self) -> str:
        return f"{self.symbol:<6}{self.expiry[2:]}{self.right}{round(self.strike * 1000):08d}"


@dataclass
class FakeOrder:
    order_id: int
    client_id: int
    perm_id: int
    contract: dict[str, Any]
    legs: list[dict[str, Any]]
    action: str
    quantity: float
    order_type: str
    lmt_price: str
    tif: str
    account: str
    order_ref: str
    status: str = "Submitted"
    filled: float = 0.0
    avg_price: float = 0.0
    aux_price: str = ""  # a stop's trigger (STP / STP LMT)
    oca_group: str = ""  # one-cancels-all group (ocaGroup) and how the rest are cancelled (ocaType 1-3)
    oca_type: int = 0
    parent_id: int = 0  # a bracket child (parentId): held PreSubmitted until its parent fills
    transmit: bool = True  # False: kept in TWS, not sent to the exchange, until a later order transmits the set


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    client_id: int = -1
    md_type: int = 1
    tickers: dict[int, int] = field(default_factory=dict)  # reqId → conId


class FakeTws:
    """``await start()`` binds 127.0.0.1 on a free port; ``await stop()`` closes everything."""

    def __init__(self, *, account: str = ACCOUNT, underlying: str = "SPY", spot: float = 600.0,
                 today: date | None = None, max_lines: int = 100) -> None:
        self.account = account
        self.underlying = underlying
        self.spot = spot
        self.today = today or datetime.now(UTC).date()
        self.expirations = third_fridays(self.today, 3)
        self.strikes = [float(int(spot) + k) for k in range(-20, 21, 5)]
        self.max_lines = max_lines
        self.options: dict[int, OptContract] = {}
        ids = itertools.count(700_000_001)
        for i, e in enumerate(self.expirations):
            for k in self.strikes:
                if i == len(self.expirations) - 1 and k % 10:  # the far expiry lists only every other strike
                    continue
                for r in "CP":
                    cid = next(ids)
                    self.options[cid] = OptContract(cid, underlying, e.strftime("%Y%m%d"), k, r)
        self.positions: list[tuple[OptContract, float, float]] = []
        short_put = self.find(self.expirations[0], float(int(spot) - 10), "P")
        assert short_put is not None
        self.positions.append((short_put, -2.0, 315.0))  # avgCost per contract (× multiplier)
        self.orders: dict[int, FakeOrder] = {}
        self.executions: list[tuple[FakeOrder, list[Any]]] = []
        self._perm = itertools.count(9_000_001)
        self._exec = itertools.count(1)
        self.next_order_id = 1
        self.requests: list[list[str]] = []
        self.conns: list[_Conn] = []
        self.connections = 0
        self.silent = False
        self.reject_orders_with: str | None = None
        self.tif_preset_warning = False  # send error 10349 ("TIF set to DAY by preset") before accepting
        self.auto_fill = False
        self.lose_order_answers = False  # orders are placed, but their openOrder/orderStatus answers are lost
        #: an Event: reqCurrentTime (the last step of a client's connect) is answered only once it is set
        self.hold_current_time: asyncio.Event | None = None
        self.tick_interval = 0.05
        self.history = TwsHistory(self)  # historical data and its pacing (tests/brokers/fakes/tws_history.py)
        self.symbols = TwsSymbols(self)  # reqMatchingSymbols (tests/brokers/fakes/tws_symbols.py)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> FakeTws:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._ticker())
        return self

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.close_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> FakeTws:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        """The server drops every client connection mid-stream."""
        for c in list(self.conns):
            c.writer.close()
        self.conns.clear()

    def send_error(self, code: int, message: str, req_id: int = -1) -> None:
        """A system message to every client (1100 connectivity lost, 1101 restored with data lost, …)."""
        for c in self.conns:
            self._send(c, 4, 2, req_id, code, message, "")

    def send_malformed(self) -> None:
        """A frame that is not a valid message (unknown id, non-numeric fields)."""
        for c in self.conns:
            c.writer.write(frame("1", "6", "not-a-req-id", "x", "y"))
            c.writer.write(frame("garbage-message-id", "\u00ff"))

    def find(self, expiry: date | str, strike: float, right: str) -> OptContract | None:
        exp = expiry if isinstance(expiry, str) else expiry.strftime("%Y%m%d")
        for c in self.options.values():
            if c.expiry == exp and abs(c.strike - strike) < 1e-9 and c.right == right:
                return c
        return None

    @property
    def lines_in_use(self) -> int:
        return sum(len(c.tickers) for c in self.conns)

    # ---- connection -----------------------------------------------------------------------------
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        try:
            prefix = await reader.readexactly(4)
            if prefix != b"API\0":
                writer.close()
                return
            n = struct.unpack(">I", await reader.readexactly(4))[0]
            await reader.readexactly(n)  # "v157..178"
            if self.silent:
                await asyncio.Event().wait()
            self.connections += 1
            self.conns.append(conn)
            writer.write(frame(SERVER_VERSION, datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")))
            while True:
                n = struct.unpack(">I", await reader.readexactly(4))[0]
                fields = (await reader.readexactly(n)).decode().split("\0")[:-1]
                self.requests.append(fields)
                if self.silent:
                    continue
                self._handle(conn, fields)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if conn in self.conns:
                self.conns.remove(conn)
            writer.close()

    def _send(self, conn: _Conn, *fields: Any) -> None:
        if not conn.writer.is_closing():
            conn.writer.write(frame(*fields))

    def _handle(self, conn: _Conn, f: list[str]) -> None:
        """One client message, by its id (the ones ib_async 2.1.0 sends; others are ignored, as TWS logs them)."""
        handler = self._handlers.get(int(f[0]))
        if handler is not None:
            handler(conn, f)

    @functools.cached_property
    def _handlers(self) -> dict[int, Any]:
        return {71: self._start_api, 61: self._req_positions, 5: self._req_open_orders,
                99: lambda conn, f: self._send(conn, 102),  # reqCompletedOrders: none
                6: self._req_account_updates, 76: self._req_account_updates_multi, 7: self._req_executions,
                9: self._contract_details, 78: self._req_sec_def_opt_params, 59: self._req_market_data_type,
                1: self._req_mkt_data, 2: lambda conn, f: conn.tickers.pop(int(f[2]), None),  # cancelMktData
                3: self._place, 4: lambda conn, f: self._cancel(int(f[2]), "Order Canceled - reason:"),
                58: self._req_global_cancel, 20: self.history.request,
                25: lambda conn, f: None,  # cancelHistoricalData: every answer here is complete at once
                81: self.symbols.request, 49: self._current_time,
                8: lambda conn, f: self._send(conn, 9, 1, self.next_order_id)}  # reqIds

    def _current_time(self, conn: _Conn, f: list[str]) -> None:
        gate = self.hold_current_time
        if gate is None:
            self._send(conn, 49, 1, int(time.time()))
            return

        async def later() -> None:
            await gate.wait()
            self._send(conn, 49, 1, int(time.time()))

        self._spawn(later())

    def _start_api(self, conn: _Conn, f: list[str]) -> None:
        conn.client_id = int(f[2])
        self._send(conn, 15, 1, self.account)
        self._send(conn, 9, 1, self.next_order_id)

    def _req_positions(self, conn: _Conn, f: list[str]) -> None:
        for c, pos, avg in self.positions:
            self._send(conn, 61, 3, self.account, *self._contract_fields(c), pos, avg)
        self._send(conn, 62, 1)

    def _req_open_orders(self, conn: _Conn, f: list[str]) -> None:
        for o in self.orders.values():
            if o.status in ("Submitted", "PreSubmitted"):
                self._open_order(conn, o)
        self._send(conn, 53, 1)

    def _req_account_updates(self, conn: _Conn, f: list[str]) -> None:
        for key, val in self._account_values():
            self._send(conn, 6, 2, key, val, "USD", self.account)
        for c, pos, avg in self.positions:
            mark = self._model(c)[0]
            self._send(conn, 7, 8, c.con_id, c.symbol, "OPT", c.expiry, c.strike, c.right, 100, "", "USD",
                       c.local_symbol, c.symbol, pos, mark, pos * mark * 100, avg, (mark * 100 - avg) * pos, 0.0,
                       self.account)
        self._send(conn, 8, 1, datetime.now(UTC).strftime("%H:%M"))
        self._send(conn, 54, 1, self.account)

    def _req_account_updates_multi(self, conn: _Conn, f: list[str]) -> None:
        req = f[2]
        for key, val in self._account_values():
            self._send(conn, 73, 1, req, self.account, "", key, val, "USD")
        self._send(conn, 74, 1, req)

    def _req_executions(self, conn: _Conn, f: list[str]) -> None:
        req = f[2]
        for _o, ex in self.executions:
            self._send(conn, 11, req, *ex)
        self._send(conn, 55, 1, req)

    def _req_sec_def_opt_params(self, conn: _Conn, f: list[str]) -> None:
        req = f[1]
        exps = [e.strftime("%Y%m%d") for e in self.expirations]
        for exch in ("SMART", "CBOE"):
            self._send(conn, 75, req, exch, STOCK_CONID, self.underlying, 100, len(exps), *exps,
                       len(self.strikes), *self.strikes)
        self._send(conn, 76, req)

    def _req_market_data_type(self, conn: _Conn, f: list[str]) -> None:
        conn.md_type = int(f[2])

    def _req_global_cancel(self, conn: _Conn, f: list[str]) -> None:
        for oid, o in list(self.orders.items()):
            if o.status in ("Submitted", "PreSubmitted"):
                self._cancel(oid, "Order Canceled - reason:global cancel")

    def _account_values(self) -> list[tuple[str, str]]:
        return [("AccountType", "INDIVIDUAL"), ("NetLiquidation", "101234.56"), ("TotalCashValue", "100500.00"),
                ("BuyingPower", "400000.00"), ("AvailableFunds", "99000.00"), ("MaintMarginReq", "1500.00"),
                ("RealizedPnL", "12.50"), ("UnrealizedPnL", "-30.00")]

    @staticmethod
    def _contract_fields(c: OptContract) -> list[Any]:
        # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol,
        # tradingClass
        return [c.con_id, c.symbol, "OPT", c.expiry, c.strike, c.right, 100, "", "USD", c.local_symbol, c.symbol]

    # ---- contracts --------------------------------------------------------------------------------
    def _contract_details(self, conn: _Conn, f: list[str]) -> None:
        req = f[2]
        con_id, symbol, sec_type, last, strike, right = f[3], f[4], f[5], f[6], f[7], f[8]
        matches: list[Any] = []
        if con_id and con_id != "0" and int(con_id) in self.options:  # lookup by conId alone
            matches.append(("OPT", self.options[int(con_id)]))
        elif con_id == str(STOCK_CONID) or (sec_type == "STK" and symbol == self.underlying):
            matches.append(("STK", None))
        elif sec_type == "OPT" and symbol == self.underlying:
            for c in self.options.values():
                if con_id and con_id != "0":
                    if str(c.con_id) == con_id:
                        matches.append(("OPT", c))
                    continue
                if last and c.expiry != last:
                    continue
                if strike and float(strike) and abs(float(strike) - c.strike) > 1e-9:
                    continue
                if right and right[0] != c.right:
                    continue
                matches.append(("OPT", c))
        if not matches:
            self._send(conn, 4, 2, req, 200, "No security definition has been found for the request", "")
            return
        for kind, c in matches:
            if kind == "STK":
                self._send(conn, 10, req, self.underlying, "STK", "", 0, "", "SMART", "USD", self.underlying,
                           "NMS", self.underlying, STOCK_CONID, 0.01, "", "LMT,MKT", "SMART,ARCA", 1, 0,
                           "SPDR S&P 500 ETF TRUST", "ARCA", "", "", "", "", "US/Eastern", "", "", "", "", 0,
                           1, "", "", "26", "", "ETF", "0.0001", "0.0001", "100")
            else:
                self._send(conn, 10, req, c.symbol, "OPT", f"{c.expiry} 16:00 US/Eastern", c.strike, c.right,
                           "SMART", "USD", c.local_symbol, c.symbol, c.symbol, c.con_id, 0.01, 100, "LMT,MKT",
                           "SMART,CBOE", 1, STOCK_CONID, "SPDR S&P 500 ETF TRUST", "", c.expiry[:6], "", "", "",
                           "US/Eastern", "", "", "", "", 0, 2, self.underlying, "STK", "32", c.expiry, "",
                           "1", "1", "1")
        self._send(conn, 52, 1, req)

    # ---- market data ------------------------------------------------------------------------------
    def _model(self, c: OptContract | None) -> tuple[float, float]:
        if c is None:
            return self.spot, 1.0
        k = c.strike
        intrinsic = max(self.spot - k, 0.0) if c.right == "C" else max(k - self.spot, 0.0)
        price = intrinsic + 4.0 * math.exp(-abs(k - self.spot) / 15.0)
        delta = 0.5 * math.exp(-(k - self.spot) / 20.0) if c.right == "C" else -0.5 * math.exp((k - self.spot) / 20.0)
        return price, max(-1.0, min(1.0, delta))

    def _req_mkt_data(self, conn: _Conn, f: list[str]) -> None:
        req, con_id = int(f[2]), int(f[3] or 0)
        if self.lines_in_use >= self.max_lines:
            self._send(conn, 4, 2, req, 101, f"Max number of tickers has been reached ({self.max_lines})", "")
            return
        if con_id != STOCK_CONID and con_id not in self.options:
            self._send(conn, 4, 2, req, 200, "No security definition has been found for the request", "")
            return
        conn.tickers[req] = con_id
        self._send(conn, 58, 1, req, conn.md_type)
        self._ticks(conn, req, con_id, greeks=True)

    def _ticks(self, conn: _Conn, req: int, con_id: int, greeks: bool) -> None:
        c = self.options.get(con_id)
        price, delta = self._model(c)
        half = 0.01 if c is None else 0.05
        self._send(conn, 1, 6, req, 1, round(max(price - half, 0.0), 2), 10, 1)  # bid
        self._send(conn, 1, 6, req, 2, round(price + half, 2), 12, 1)  # ask
        self._send(conn, 1, 6, req, 4, round(price, 2), 1, 0)  # last
        self._send(conn, 2, 6, req, 8, 1234)  # volume
        if c is not None:
            self._send(conn, 2, 6, req, 27 if c.right == "C" else 28, 4321)  # call / put open interest
        if c is not None and greeks:
            # model greeks (13); vega/theta −2 on the bid computation = "missing"
            self._send(conn, 21, req, 13, 0, 0.18, round(delta, 4), round(price, 4), 0.0, 0.02, 0.3, -0.05,
                       self.spot)
            self._send(conn, 21, req, 10, 0, 0.17, round(delta, 4), round(price - half, 4), 0.0, 0.02, -2, -2,
                       self.spot)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            if self.silent:
                continue
            for conn in list(self.conns):
                for req, con_id in list(conn.tickers.items()):
                    self._ticks(conn, req, con_id, greeks=False)
                with contextlib.suppress(Exception):
                    await conn.writer.drain()

    # ---- orders -----------------------------------------------------------------------------------
    def _place(self, conn: _Conn, f: list[str]) -> None:
        oid = int(f[1])
        contract = {"conId": f[2], "symbol": f[3], "secType": f[4], "lastTrade": f[5], "strike": f[6],
                    "right": f[7], "multiplier": f[8], "exchange": f[9], "currency": f[11],
                    "localSymbol": f[12], "tradingClass": f[13]}
        action, qty, otype, lmt, tif, account, ref = f[16], float(f[17]), f[18], f[19], f[21], f[23], f[26]
        aux = f[20]
        legs: list[dict[str, Any]] = []
        if contract["secType"] == "BAG":
            n = int(f[35])
            for i in range(n):
                base = 36 + 8 * i
                legs.append({"conId": int(f[base]), "ratio": int(f[base + 1]), "action": f[base + 2],
                             "exchange": f[base + 3]})
        what_if = f[-30] == "1"  # layout for LMT/MKT orders without conditions at server version 176
        for leg in legs or [{"conId": int(contract["conId"] or 0)}]:
            if leg["conId"] not in self.options and leg["conId"] != STOCK_CONID:
                self._send(conn, 4, 2, oid, 200, "No security definition has been found for the request", "")
                return
        if what_if:
            probe = FakeOrder(oid, conn.client_id, 0, contract, legs, action, qty, otype, lmt, tif, account, ref,
                              status="PreSubmitted")
            self._open_order(conn, probe, what_if=True)
            return
        if self.reject_orders_with:
            self._send(conn, 4, 2, oid, 201, f"Order rejected - reason:{self.reject_orders_with}", "")
            return
        self.next_order_id = max(self.next_order_id, oid + 1)
        existing = self.orders.get(oid)
        if existing is not None:  # modify: same order id placed again
            existing.lmt_price, existing.quantity, existing.aux_price = lmt, qty, aux
            order = existing
        else:
            order = FakeOrder(oid, conn.client_id, next(self._perm), contract, legs, action, qty, otype, lmt, tif,
                              account, ref, aux_price=aux, oca_group=f[22],
                              oca_type=int(f[47]) if f[47].isdigit() else 0,
                              parent_id=int(f[28]) if f[28].lstrip("-").isdigit() else 0, transmit=f[27] != "0")
            self.orders[oid] = order
            if not order.transmit:  # TWS keeps it until an order of its bracket is transmitted
                order.status = "Staged"
                return
            if order.parent_id:
                self._transmit_bracket(conn, order)
                return
        if self.tif_preset_warning and existing is None:
            self._send(conn, 4, 2, oid, 10349, "Order TIF was set to DAY based on order preset.", "")
        self._open_order(conn, order)
        self._order_status(order)
        if self.auto_fill:
            self.fill(oid)

    def _transmit_bracket(self, conn: _Conn, last: FakeOrder) -> None:
        """``last`` (transmit=True, a child) sends its parent and every staged child of it: the parent works, the
        children wait PreSubmitted until it fills, then work as their OCA group."""
        parent = self.orders.get(last.parent_id)
        if parent is None or parent.status != "Staged":
            last.status = "Cancelled"
            self._send(conn, 4, 2, last.order_id, 135, f"Can't find order with id ={last.parent_id}", "")
            self._order_status(last)
            return
        parent.status = "Submitted"
        self._open_order(conn, parent)
        self._order_status(parent)
        for child in [o for o in self.orders.values() if o.parent_id == parent.order_id and
                      (o.status == "Staged" or o is last)]:
            child.status = "PreSubmitted"
            self._open_order(conn, child)
            self._order_status(child)

    def _owner(self, order: FakeOrder) -> _Conn | None:
        return next((c for c in self.conns if c.client_id == order.client_id), None)

    def _order_status(self, o: FakeOrder) -> None:
        conn = self._owner(o)
        if conn is None or self.lose_order_answers:
            return
        self._send(conn, 3, o.order_id, o.status, o.filled, o.quantity - o.filled, o.avg_price, o.perm_id, 0,
                   o.avg_price, o.client_id, "", 0.0)

    def _cancel(self, oid: int, message: str) -> None:
        o = self.orders.get(oid)
        if o is None or o.status not in ("Submitted", "PreSubmitted", "Staged"):
            for conn in self.conns:
                self._send(conn, 4, 2, oid, 10147, f"OrderId {oid} that needs to be cancelled is not found.", "")
            return
        o.status = "Cancelled"
        self._order_status(o)
        conn = self._owner(o)
        if conn is not None:
            self._send(conn, 4, 2, oid, 202, message, "")
        for child in [c for c in self.orders.values() if c.parent_id == oid and c.status == "PreSubmitted"]:
            self._cancel(child.order_id, f"Order Canceled - reason:parent order {oid} cancelled")

    def _leg_contract(self, con_id: int) -> OptContract | None:
        """An option by conId; None for the underlying's stock (STOCK_CONID)."""
        return None if con_id == STOCK_CONID else self.options[con_id]

    def _exec_contract(self, c: OptContract | None) -> list[Any]:
        """conId … localSymbol, tradingClass of an execution's contract (stock when ``c`` is None)."""
        if c is None:
            return [STOCK_CONID, self.underlying, "STK", "", 0, "", "", "SMART", "USD", self.underlying,
                    self.underlying]
        return [*self._contract_fields(c)[:7], "SMART", "USD", c.local_symbol, c.symbol]

    def push_position(self, con_id: int, quantity: float, avg_cost: float) -> None:
        """A position update (61) to every connection: an option by conId, or the stock (STOCK_CONID)."""
        c = self._leg_contract(con_id)
        fields = ([STOCK_CONID, self.underlying, "STK", "", 0, "", "", "SMART", "USD", self.underlying,
                   self.underlying] if c is None else self._contract_fields(c))
        for conn in self.conns:
            self._send(conn, 61, 3, self.account, *fields, quantity, avg_cost)

    def fill(self, oid: int, prices: dict[int, float] | None = None) -> None:
        """Fill the remaining quantity: leg executions (and a BAG summary), commissions, status Filled.
        ``prices`` (by conId) sets the legs' execution prices; by default the first leg carries the net."""
        o = self.orders[oid]
        conn = self._owner(o)
        qty = o.quantity - o.filled
        net = float(o.lmt_price or 0)
        now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")
        fills: list[tuple[OptContract | None, str, float, float]] = []
        if o.legs and prices is not None:
            for leg in o.legs:
                side = leg["action"] if o.action == "BUY" else ("SELL" if leg["action"] == "BUY" else "BUY")
                fills.append((self._leg_contract(leg["conId"]), side, qty * leg["ratio"], prices[leg["conId"]]))
        elif o.legs:
            for i, leg in enumerate(o.legs):
                c = self._leg_contract(leg["conId"])
                side = leg["action"]
                if o.action == "SELL":
                    side = "SELL" if side == "BUY" else "BUY"
                # price legs so that Σ sign × price × ratio = the combo's net limit
                price = 1.0 if i > 0 else None
                fills.append((c, side, qty * leg["ratio"], price if price is not None else 0.0))
            rest = sum((1.0 if s == "BUY" else -1.0) * p * (lq / qty) for c, s, lq, p in fills[1:])
            sign0 = 1.0 if fills[0][1] == "BUY" else -1.0
            c0, s0, q0, _ = fills[0]
            fills[0] = (c0, s0, q0, round((net - rest) / sign0 / (q0 / qty), 4))
        else:
            c = self._leg_contract(int(o.contract["conId"]))
            fills.append((c, o.action, qty, prices[int(o.contract["conId"])] if prices else net))
        for c, side, q, price in fills:
            exec_id = f"0000e{next(self._exec):04d}.01.01"
            ex = [o.order_id, *self._exec_contract(c), exec_id, now,
                  self.account, "CBOE", "BOT" if side == "BUY" else "SLD", q, price, o.perm_id, o.client_id, 0, q,
                  price, o.order_ref, "", "", "", 1]
            self.executions.append((o, ex))
            if conn is not None:
                self._send(conn, 11, -1, *ex)
                self._send(conn, 59, 1, exec_id, 0.65 * q, "USD", UNSET_DOUBLE, UNSET_DOUBLE, "")
        o.filled += qty
        o.avg_price = net
        o.status = "Filled"
        self._order_status(o)
        for child in [c for c in self.orders.values() if c.parent_id == o.order_id and c.status == "PreSubmitted"]:
            child.status = "Submitted"  # the parent filled: its children go to the exchange
            self._order_status(child)
        if o.oca_group and o.oca_type:  # TWS cancels the rest of a one-cancels-all group itself
            for other in list(self.orders.values()):
                if other is not o and other.oca_group == o.oca_group and other.status in ("Submitted", "PreSubmitted"):
                    self._cancel(other.order_id, f"Order Canceled - reason:OCA group {o.oca_group} filled")

    def _open_order(self, conn: _Conn, o: FakeOrder, what_if: bool = False) -> None:
        if self.lose_order_answers and not what_if:
            return
        c = o.contract
        margin = ["", "", "", "", "", "", "", "", ""]
        commission = [UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, ""]
        if what_if:
            margin = ["1000.0", "1000.0", "101234.56", "500.0", "500.0", "0.0", "1500.0", "1500.0", "101234.56"]
            commission = ["1.30", "1.30", "1.30", "USD"]
        legs: list[Any] = [len(o.legs)]
        for leg in o.legs:
            legs += [leg["conId"], leg["ratio"], leg["action"], leg["exchange"], 0, 0, "", -1]
        fields: list[Any] = [
            5, o.order_id, c["conId"], c["symbol"], c["secType"], c["lastTrade"], c["strike"] or 0, c["right"],
            c["multiplier"], c["exchange"], c["currency"], c["localSymbol"], c["tradingClass"],
            o.action, o.quantity, o.order_type, o.lmt_price, o.aux_price, o.tif, "", o.account, "", 0, o.order_ref,
            o.client_id, o.perm_id, 0, 0, 0, "", "", "", "", "",
            "",  # faProfile (server version < 177)
            "", "", "", "", "", 0, "", -1, "", "", "", "", "", "", 0, 0, 0, 0, "", 3, 0, 0, 0, 0, 0, "", 0, "", "",
            0, 0, "", "", "", 0, "",  # continuousUpdate … comboLegsDescrip
            *legs,
            0,  # orderComboLegs
            0,  # smartComboRoutingParams
            "", "", "",  # scale
            "",  # hedgeType
            0, "", "", 0, 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncPresent
            "",  # algoStrategy
            0, 1 if what_if else 0, o.status, *margin, *commission, "", 0, 0,
            0,  # conditions
            "", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0,  # adjusted … usePriceMgmtAlgo
            "", 0, 0,  # duration, postToAts, autoCancelParent
            "", "", "", "", "",  # minTradeQty … midOffsetAtHalf
        ]
        self._send(conn, *fields)


async def _main() -> None:  # pragma: no cover - manual use
    async with FakeTws() as tws:
        print(json.dumps({"host": "127.0.0.1", "port": tws.port, "account": tws.account}), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
