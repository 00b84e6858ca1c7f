"""A loopback tastytrade: REST (OAuth, accounts, balances, positions, nested chain, orders incl. dry-run,
replace, cancel, complex orders (``tastytrade_complex.py``), symbol search and market metrics
(``tastytrade_symbols.py``), quote token), DXLink over websocket
(SETUP/AUTH/CHANNEL/FEED, COMPACT rows) and the account streamer (order, complex order, position and balance
pushes).

Shapes follow the tastytrade API as the ``tastytrade`` SDK 13.2.3 parses it: dasherized keys, every
success except ``/oauth/token`` wrapped in ``{"data": …}``, errors as ``{"error": {"code", "message"}}``,
prices as absolute values with a ``*-effect`` of Credit/Debit.

Run standalone (for the GUI): ``python tests/brokers/fakes/tastytrade_server.py`` prints the env to set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from tests.brokers.fakes.tastytrade_complex import ComplexOrders
from tests.brokers.fakes.tastytrade_dxlink import DXLINK_TOKEN_PREFIX, DxLinkServer
from tests.brokers.fakes.tastytrade_symbols import TastytradeSymbols

PROVIDER_SECRET = "fake-provider-secret-7f3a9c"
REFRESH_TOKEN = "fake-refresh-token-51d0e2"
ACCOUNT = "5WT00042"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


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


def occ(root: str, expiry: date, right: str, strike: Decimal) -> str:
    return f"{root:<6}{expiry:%y%m%d}{right}{int(strike * 1000):08d}"


def streamer_symbol(root: str, expiry: date, right: str, strike: Decimal) -> str:
    s = f"{strike:.0f}" if strike % 1 == 0 else f"{strike.normalize()}"
    return f".{root}{expiry:%y%m%d}{right}{s}"


@dataclass
class FakeOrder:
    id: int
    body: dict[str, Any]
    status: str = "Live"
    fills: list[dict[str, Any]] = field(default_factory=list)
    replaces: int | None = None
    complex_id: int | None = None  # the complex order (OCO/OTOCO) this order is a member of

    def to_json(self, account: str) -> dict[str, Any]:
        legs = []
        for leg in self.body["legs"]:
            qty = Decimal(str(leg["quantity"]))
            leg_fills = [f for f in self.fills if f["symbol"] == leg["symbol"]]
            filled = sum((Decimal(f["quantity"]) for f in leg_fills), Decimal(0))
            legs.append({
                "instrument-type": leg["instrument-type"], "symbol": leg["symbol"], "action": leg["action"],
                "quantity": str(qty), "remaining-quantity": str(qty - filled),
                "fills": [{"fill-id": f["fill-id"], "quantity": f["quantity"], "fill-price": f["fill-price"],
                           "filled-at": f["filled-at"]} for f in leg_fills],
            })
        out = {
            "id": self.id, "account-number": account, "time-in-force": self.body.get("time-in-force", "Day"),
            "order-type": self.body.get("order-type", "Limit"), "size": str(legs[0]["quantity"]) if legs else "0",
            "underlying-symbol": self.body["legs"][0]["symbol"][:6].strip(),
            "underlying-instrument-type": "Equity", "status": self.status,
            "cancellable": self.status in ("Received", "Live", "Routed"),
            "editable": self.status in ("Received", "Live", "Routed"), "edited": self.replaces is not None,
            "updated-at": _now(), "received-at": _now(), "legs": legs,
        }
        if "price" in self.body:
            out["price"] = str(self.body["price"])
            out["price-effect"] = self.body.get("price-effect", "Debit")
        if "stop-trigger" in self.body:
            out["stop-trigger"] = str(self.body["stop-trigger"])
        if self.replaces is not None:
            out["replaces-order-id"] = self.replaces
        if self.complex_id is not None:
            out["complex-order-id"] = self.complex_id
        if "external-identifier" in self.body:
            out["external-identifier"] = self.body["external-identifier"]
        if self.status == "Rejected":
            out["reject-reason"] = self.body.get("_reject_reason", "rejected")
        return out


class FakeTastytrade(DxLinkServer):
    """The whole fake. ``await start()`` binds 127.0.0.1 on free ports; ``await stop()`` closes all."""

    def __init__(self, *, account: str = ACCOUNT, underlying: str = "SPY", spot: float = 600.0,
                 today: date | None = None) -> None:
        self.account = account
        self.underlying = underlying
        self.spot = spot
        self.today = today or datetime.now(UTC).date()
        self.expirations = third_fridays(self.today, 3)
        self.strikes = [Decimal(int(spot) + k) for k in range(-20, 21, 5)]
        self.access_token = ""
        self.dx_token = ""
        self.requests: list[tuple[str, str, Any]] = []
        self.issued_tokens: list[str] = []  # every access and DXLink token handed out
        self.orders: dict[int, FakeOrder] = {}
        self._ids = itertools.count(1001)
        self._fill_ids = itertools.count(1)
        self.complex = ComplexOrders(self)  # OCO / OTO / OTOCO (tests/brokers/fakes/tastytrade_complex.py)
        self.symbols = TastytradeSymbols(self)  # symbol search, market metrics (tastytrade_symbols.py)
        self.positions: list[dict[str, Any]] = [self._position_json(
            occ(underlying, self.expirations[0], "P", Decimal(int(spot) - 10)), 2, "Short", "3.15")]
        # fault switches
        self.fail_token_refresh = False
        self.silent = False
        self.reject_orders_with: str | None = None  # error body message for POST /orders
        self.order_status_reject: str | None = None  # accept the POST, then push a Rejected order
        self.auto_fill = False
        self.hold_pushes = False  # account-streamer pushes are lost (as if sent while the client was away)
        self.order_response_delay = 0.0  # seconds between the order push and the POST /orders response
        # HTTP 429 (not processed) for the next N requests of "METHOD path-ending" (e.g. "DELETE /orders/1001",
        # "POST /orders"), with ``retry_after`` as the Retry-After header when set (and a Date header)
        self.rate_limit: dict[str, int] = {}
        self.retry_after: str | None = None
        # POST /orders answers this HTTP status (5xx) instead of 201: after placing the order when
        # ``server_error_after_place`` (the outcome the client cannot know), before placing it otherwise
        self.server_error_on_place: int | None = None
        self.server_error_after_place = True
        self.tick_interval = 0.05
        # daily candles served over DXLink: symbol -> [(session date, close, implied vol or None)], any order;
        # a ``Candle`` subscription gets those on/after its ``fromTime`` as one snapshot, newest first
        self.candles: dict[str, list[tuple[date, float, float | None]]] = {}
        self.candle_snapshot_flags = True  # False: no SNAPSHOT_BEGIN/END flags (the client must not hang)
        # live connections
        self._http: asyncio.base_events.Server | None = None
        self._ws: Any = None
        self.http_port = 0
        self.ws_port = 0
        self._dx_conns: set[Any] = set()
        self._acct_conns: set[Any] = set()
        self._dx_subs: dict[Any, dict[str, set[str]]] = {}
        self._dx_fields: dict[Any, dict[str, list[str]]] = {}
        self.dx_connections = 0
        self.acct_connections = 0
        self.subscribe_log: list[tuple[str, tuple[str, ...]]] = []
        self.streamer_actions: list[str] = []  # actions received on the account streamer (connect, heartbeat)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http_writers: set[asyncio.StreamWriter] = set()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> FakeTastytrade:
        from websockets.asyncio.server import serve

        self._http = await asyncio.start_server(self._http_conn, "127.0.0.1", 0)
        self.http_port = self._http.sockets[0].getsockname()[1]
        # the fake's own logger: its frame dumps are the server's, not the app's (see test_log_secrets)
        self._ws = await serve(self._ws_conn, "127.0.0.1", 0, ping_interval=None,
                               logger=logging.getLogger("fakes.tastytrade"))
        self.ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._ws is not None:
            self._ws.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.wait_closed(), 2)
        if self._http is not None:
            self._http.close()
            for w in list(self._http_writers):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.wait_closed(), 2)

    async def __aenter__(self) -> FakeTastytrade:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def streamer_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/accounts"

    @property
    def dxlink_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/dxlink"

    # ---- faults ---------------------------------------------------------------------------------
    async def close_streams(self) -> None:
        """Server closes every websocket mid-stream (code 1011)."""
        for ws in list(self._dx_conns | self._acct_conns):
            with contextlib.suppress(Exception):
                await ws.close(1011, "server going away")

    async def send_malformed(self) -> None:
        """A broken frame on every DXLink and account-streamer connection."""
        for ws in list(self._dx_conns):
            with contextlib.suppress(Exception):
                await ws.send('{"type": "FEED_DATA", "channel": 7, "data": ["Quote", ["SPY", 1, 2]]')
        for ws in list(self._acct_conns):
            with contextlib.suppress(Exception):
                await ws.send(json.dumps({"type": "Order", "data": {"id": "not-an-order"}}))

    # ---- HTTP -----------------------------------------------------------------------------------
    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._http_writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = b""
                if n := int(headers.get("content-length", "0") or 0):
                    body = await reader.readexactly(n)
                if self.silent:
                    await asyncio.Event().wait()  # never answer
                status, payload = self._route(method, target, headers, body)
                if self.order_response_delay and method == "POST" and target.endswith("/orders"):
                    await asyncio.sleep(self.order_response_delay)  # the streamed update overtakes the response
                data = json.dumps(payload).encode()
                extra = ""
                if status == 429 and self.retry_after is not None:
                    from email.utils import formatdate

                    extra = f"retry-after: {self.retry_after}\r\ndate: {formatdate(usegmt=True)}\r\n"
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\ncontent-type: application/json\r\n"
                    f"{extra}content-length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._http_writers.discard(writer)
            writer.close()

    @staticmethod
    def _err(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return status, {"error": {"code": code, "message": message}}

    def _route(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        path = urlsplit(target).path
        body = json.loads(raw) if raw else None
        self.requests.append((method, path, body))
        for key, left in self.rate_limit.items():
            m, _, ending = key.partition(" ")
            if left > 0 and method == m and path.endswith(ending) and path != "/oauth/token":
                self.rate_limit[key] = left - 1
                return self._err(429, "rate_limit_exceeded", "Too many requests")
        if method == "POST" and path == "/oauth/token":
            ok = (body or {}).get("client_secret") == PROVIDER_SECRET and \
                (body or {}).get("refresh_token") == REFRESH_TOKEN
            if self.fail_token_refresh or not ok:
                return self._err(401, "invalid_grant", "Grant is invalid or revoked")
            self.access_token = "access-" + secrets.token_hex(12)
            self.issued_tokens.append(self.access_token)
            return 200, {"access_token": self.access_token, "expires_in": 900, "token_type": "Bearer"}
        if headers.get("authorization") != f"Bearer {self.access_token}" or not self.access_token:
            return self._err(401, "unauthorized", "Token is invalid or expired")
        acct = f"/accounts/{self.account}"
        if method == "GET" and path == "/customers/me/accounts":
            return 200, {"data": {"items": [{"account": self._account_json(), "authority-level": "owner"}]}}
        if method == "GET" and path == f"{acct}/balances/USD":
            return 200, {"data": self._balance_json()}
        if method == "GET" and path == f"{acct}/positions":
            return 200, {"data": {"items": self.positions}}
        if method == "GET" and path == f"{acct}/orders/live":
            # a Contingent order (a complex order's member waiting for its trigger) is open at the venue too
            return 200, {"data": {"items": [o.to_json(self.account) for o in self.orders.values()
                                            if o.status in ("Received", "Routed", "Live", "Contingent")]}}
        if method == "GET" and path == f"/option-chains/{self.underlying}/nested":
            return 200, {"data": {"items": [self._chain_json()]}}
        if method == "GET" and path.startswith("/option-chains/"):
            return self._err(404, "record_not_found", f"No option chain for {path.split('/')[2]}")
        if method == "GET" and path == "/api-quote-tokens":
            self.dx_token = DXLINK_TOKEN_PREFIX + secrets.token_hex(8)
            self.issued_tokens.append(self.dx_token)
            return 200, {"data": {"token": self.dx_token, "dxlink-url": self.dxlink_url, "level": "api"}}
        if (answer := self.complex.route(method, path, body)) is not None:
            return answer
        if (answer := self.symbols.route(method, path, urlsplit(target).query)) is not None:
            return answer
        if method == "POST" and path == f"{acct}/orders/dry-run":
            return self._dry_run(body)
        if method == "POST" and path == f"{acct}/orders":
            return self._place(body)
        if path.startswith(f"{acct}/orders/"):
            try:
                oid = int(path.rsplit("/", 1)[1])
            except ValueError:
                return self._err(400, "invalid_id", "order id must be an integer")
            order = self.orders.get(oid)
            if order is None:
                return self._err(404, "order_not_found", f"Order {oid} not found")
            if method == "GET":
                return 200, {"data": order.to_json(self.account)}
            if method == "DELETE":
                if order.status not in ("Received", "Routed", "Live"):
                    return self._err(422, "order_not_cancellable", f"Order {oid} is {order.status}")
                order.status = "Cancelled"
                self._push("Order", order.to_json(self.account))
                return 200, {"data": order.to_json(self.account)}
            if method == "PUT":
                if order.status not in ("Received", "Routed", "Live"):
                    return self._err(422, "order_not_editable", f"Order {oid} is {order.status}")
                new_body = dict(order.body)
                new_body.update({k: v for k, v in (body or {}).items() if k != "legs"})
                order.status = "Cancelled"
                self._push("Order", order.to_json(self.account))
                new = FakeOrder(next(self._ids), new_body, "Live", replaces=oid)
                self.orders[new.id] = new
                self._push("Order", new.to_json(self.account))
                return 200, {"data": new.to_json(self.account)}
        return self._err(404, "not_found", f"{method} {path} is not served by the fake")

    def _account_json(self) -> dict[str, Any]:
        return {"account-number": self.account, "opened-at": "2024-01-02T15:00:00Z", "nickname": "Individual",
                "account-type-name": "Individual", "is-closed": False, "day-trader-status": False,
                "is-firm-error": False, "is-firm-proprietary": False, "is-futures-approved": False,
                "is-test-drive": False, "margin-or-cash": "Margin", "is-foreign": False,
                "created-at": "2024-01-02T15:00:00Z", "suitable-options-level": "No Restrictions"}

    def _balance_json(self) -> dict[str, Any]:
        fields = ["cash-balance", "long-equity-value", "short-equity-value", "long-derivative-value",
                  "short-derivative-value", "long-futures-value", "short-futures-value",
                  "long-futures-derivative-value", "short-futures-derivative-value", "long-margineable-value",
                  "short-margineable-value", "margin-equity", "equity-buying-power", "derivative-buying-power",
                  "day-trading-buying-power", "futures-margin-requirement", "available-trading-funds",
                  "maintenance-requirement", "maintenance-call-value", "reg-t-call-value", "day-trading-call-value",
                  "day-equity-call-value", "net-liquidating-value", "cash-available-to-withdraw", "day-trade-excess",
                  "pending-cash", "long-cryptocurrency-value", "short-cryptocurrency-value",
                  "cryptocurrency-margin-requirement", "unsettled-cryptocurrency-fiat-amount",
                  "closed-loop-available-balance", "equity-offering-margin-requirement", "long-bond-value",
                  "bond-margin-requirement", "used-derivative-buying-power", "reg-t-margin-requirement",
                  "futures-overnight-margin-requirement", "futures-intraday-margin-requirement",
                  "maintenance-excess", "pending-margin-interest", "effective-cryptocurrency-buying-power"]
        out: dict[str, Any] = dict.fromkeys(fields, "0.0")
        out.update({"account-number": self.account, "cash-balance": "25000.5", "net-liquidating-value": "24370.5",
                    "derivative-buying-power": "18000.0", "equity-buying-power": "36000.0",
                    "maintenance-requirement": "1100.0", "snapshot-date": self.today.isoformat(),
                    "updated-at": _now(), "pending-cash-effect": "None"})
        return out

    def _position_json(self, symbol: str, qty: int, direction: str, avg: str,
                       instrument_type: str = "Equity Option") -> dict[str, Any]:
        return {"account-number": self.account, "symbol": symbol, "instrument-type": instrument_type,
                "underlying-symbol": self.underlying, "quantity": str(qty), "quantity-direction": direction,
                "close-price": "3.0", "average-open-price": avg,
                "multiplier": "1" if instrument_type == "Equity" else "100", "cost-effect": "Credit",
                "is-suppressed": False, "is-frozen": False, "realized-day-gain": "0.0",
                "realized-day-gain-effect": "None", "realized-today": "0.0", "realized-today-effect": "None",
                "created-at": "2026-01-05T15:00:00Z", "updated-at": _now()}

    def _chain_json(self) -> dict[str, Any]:
        exps = []
        for e in self.expirations:
            strikes = [{"strike-price": str(k), "call": occ(self.underlying, e, "C", k),
                        "put": occ(self.underlying, e, "P", k),
                        "call-streamer-symbol": streamer_symbol(self.underlying, e, "C", k),
                        "put-streamer-symbol": streamer_symbol(self.underlying, e, "P", k)} for k in self.strikes]
            exps.append({"expiration-type": "Regular", "expiration-date": e.isoformat(),
                         "days-to-expiration": (e - self.today).days, "settlement-type": "PM", "strikes": strikes})
        return {"underlying-symbol": self.underlying, "root-symbol": self.underlying,
                "option-chain-type": "Standard", "shares-per-contract": 100,
                "tick-sizes": [{"value": "0.01", "threshold": "3.0"}, {"value": "0.05"}], "expirations": exps}

    def _check_order(self, body: dict[str, Any] | None) -> tuple[int, Any] | None:
        if not body or not body.get("legs"):
            return self._err(400, "validation_error", "order must have legs")
        known = {occ(self.underlying, e, r, k) for e in self.expirations for r in "CP" for k in self.strikes}
        for leg in body["legs"]:
            if leg.get("instrument-type") == "Equity Option" and leg["symbol"] not in known:
                return self._err(422, "invalid_symbol", f"Unknown option symbol {leg['symbol'].strip()}")
        otype = body.get("order-type", "Limit")
        if otype in ("Stop", "Stop Limit") and not body.get("stop-trigger"):
            return self._err(422, "validation_error", f"{otype} orders require a stop-trigger")
        if otype in ("Limit", "Stop Limit") and "price" not in body:
            return self._err(422, "validation_error", f"{otype} orders require a price")
        return None

    def _dry_run(self, body: dict[str, Any] | None) -> tuple[int, Any]:
        if err := self._check_order(body):
            return err
        assert body is not None
        unplaced = FakeOrder(0, body, "Received").to_json(self.account)
        unplaced.pop("id")
        width = Decimal(500)
        return 200, {"data": {
            "order": unplaced,
            "buying-power-effect": {
                "change-in-margin-requirement": str(width), "change-in-margin-requirement-effect": "Debit",
                "change-in-buying-power": str(width), "change-in-buying-power-effect": "Debit",
                "current-buying-power": "18000.0", "current-buying-power-effect": "Credit",
                "new-buying-power": str(Decimal(18000) - width), "new-buying-power-effect": "Credit",
                "isolated-order-margin-requirement": str(width),
                "isolated-order-margin-requirement-effect": "Debit", "is-spread": len(body["legs"]) > 1,
                "impact": str(width), "effect": "Debit"},
            "fee-calculation": {"regulatory-fees": "0.04", "regulatory-fees-effect": "Debit",
                                "clearing-fees": "0.2", "clearing-fees-effect": "Debit",
                                "commission": "2.0", "commission-effect": "Debit",
                                "proprietary-index-option-fees": "0.0", "proprietary-index-option-fees-effect": "None",
                                "total-fees": "2.24", "total-fees-effect": "Debit"},
            "warnings": [{"code": "tif_next_valid_sesssion", "message": "Your order will begin working during "
                                                                        "next valid session."}],
        }}

    def _place(self, body: dict[str, Any] | None) -> tuple[int, Any]:
        if self.server_error_on_place is not None:
            error = self._err(self.server_error_on_place, "internal_error", "Internal server error")
            if self.server_error_after_place:
                saved, self.server_error_on_place = self.server_error_on_place, None
                try:
                    self._place(body)
                finally:
                    self.server_error_on_place = saved
            return error
        if self.reject_orders_with:
            return 422, {"error": {"code": "preflight_check_failure", "message": "One or more preflight checks failed",
                                   "errors": [{"code": "insufficient_buying_power",
                                               "message": self.reject_orders_with}]}}
        if err := self._check_order(body):
            return err
        assert body is not None
        order = FakeOrder(next(self._ids), body, "Routed")
        self.orders[order.id] = order
        placed = order.to_json(self.account)
        if self.order_status_reject:
            order.status = "Rejected"
            order.body["_reject_reason"] = self.order_status_reject
        else:
            order.status = "Live"
        self._push("Order", order.to_json(self.account))
        if self.auto_fill:
            self.fill(order.id)
        return 201, {"data": {"order": placed, "buying-power-effect": self._dry_run(body)[1]["data"][
            "buying-power-effect"]}}

    # ---- order lifecycle driven by tests ----------------------------------------------------------
    def fill(self, order_id: int, fraction: float = 1.0, prices: dict[str, str] | None = None) -> None:
        """Fill ``fraction`` of the remaining legs at a price that honours the limit (or at ``prices`` by leg
        symbol); push the update."""
        order = self.orders[order_id]
        legs = order.body["legs"]
        net = Decimal(str(order.body.get("price", "0")))
        for i, leg in enumerate(legs):
            qty = Decimal(str(leg["quantity"]))
            filled = sum((Decimal(f["quantity"]) for f in order.fills if f["symbol"] == leg["symbol"]), Decimal(0))
            take = (qty - filled) if fraction >= 1.0 else max(Decimal(1), (qty * Decimal(str(fraction))).to_integral())
            if take <= 0:
                continue
            # first leg carries the net price, others at a nominal 1.00 (sum-consistent for the test's spreads)
            price = (net + Decimal(1)) if i == 0 and len(legs) > 1 else (net if len(legs) == 1 else Decimal(1))
            if prices is not None:
                price = Decimal(prices[leg["symbol"]])
            order.fills.append({"fill-id": f"F{next(self._fill_ids)}", "symbol": leg["symbol"], "quantity": str(take),
                                "fill-price": str(price), "filled-at": _now()})
        done = all(sum((Decimal(f["quantity"]) for f in order.fills if f["symbol"] == leg["symbol"]), Decimal(0))
                   >= Decimal(str(leg["quantity"])) for leg in legs)
        order.status = "Filled" if done else "Live"
        self._push("Order", order.to_json(self.account))
        self.complex.after_fill(order)

    def push_position(self, symbol: str, qty: int, direction: str, avg: str,
                      instrument_type: str = "Equity Option") -> None:
        self._push("CurrentPosition", self._position_json(symbol, qty, direction, avg, instrument_type))

    def _push(self, kind: str, data: dict[str, Any]) -> None:
        if self.hold_pushes:
            return
        msg = json.dumps({"type": kind, "data": data, "timestamp": int(datetime.now(UTC).timestamp() * 1000)})
        for ws in list(self._acct_conns):
            t = asyncio.get_running_loop().create_task(ws.send(msg))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    # ---- websockets ------------------------------------------------------------------------------
    async def _ws_conn(self, ws: Any) -> None:
        path = ws.request.path
        if path.startswith("/dxlink"):
            await self._dxlink(ws)
        elif path.startswith("/accounts"):
            await self._accounts(ws)
        else:
            await ws.close(1008, "unknown path")

    async def _accounts(self, ws: Any) -> None:
        self.acct_connections += 1
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("auth-token") != f"Bearer {self.access_token}":
                    await ws.send(json.dumps({"status": "error", "action": msg.get("action"),
                                              "message": "invalid-auth-token", "request-id": msg.get("request-id")}))
                    continue
                self.streamer_actions.append(msg.get("action", ""))
                if msg.get("action") == "connect":
                    self._acct_conns.add(ws)
                await ws.send(json.dumps({"status": "ok", "action": msg.get("action"),
                                          "web-socket-session-id": "wss-1", "request-id": msg.get("request-id")}))
        except Exception:
            pass
        finally:
            self._acct_conns.discard(ws)

async def _main() -> None:  # pragma: no cover - manual use
    async with FakeTastytrade() as fake:
        print(json.dumps({"OPTIONDESK_TT_API_URL": fake.api_url, "OPTIONDESK_TT_STREAMER_URL": fake.streamer_url,
                          "OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                          "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN}), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
