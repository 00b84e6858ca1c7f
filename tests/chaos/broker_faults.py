"""Broker faults on the loopback tastytrade server in live mode: an outage (the server stops answering), 5xx and
429 answers, a websocket dropped mid-stream, and a POST /orders that placed the order and still answered 500.

Each case trades, injects its fault, trips the kill switch where it matters, lets the retries and the
reconciliation work (polling, bounded), and counts against the server's own books: every order it holds must be
known to the store by client order id (``external-identifier``), at most once, and none may still be live after
a trip.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.brokers.config import CircuitBreakerConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.tastytrade import TastytradeBroker, TastytradeConnection
from engine.credentials import CredentialStore
from engine.model import OrderStatus
from engine.oms.config import OmsConfig
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.chaos.kit import Harness, wait_for
from tests.chaos.report import Case, run_case

LIVE = ("Received", "Routed", "Live")


@dataclass
class Fault:
    """Answer ``status`` to the next ``count`` requests ``method path`` (path matched by its ending). With
    ``after`` the request is carried out first (a placed order, a done cancel) and the error answered anyway."""

    method: str
    path_ends: str
    status: int
    count: int = 1
    after: bool = False
    hits: int = 0


class ChaosTastytrade(FakeTastytrade):
    """The loopback server with scripted per-endpoint error answers (429 with Retry-After, any 5xx)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.faults: list[Fault] = []

    def _route(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        path = urlsplit(target).path
        for f in self.faults:
            if f.hits < f.count and method == f.method and path.endswith(f.path_ends) and path != "/oauth/token":
                f.hits += 1
                if f.after:
                    super()._route(method, target, headers, raw)
                else:
                    self.requests.append((method, path, None))
                code = "rate_limit_exceeded" if f.status == 429 else "internal_error"
                return self._err(f.status, code, "Too many requests" if f.status == 429 else "Server error")
        return super()._route(method, target, headers, raw)


class Live:
    """A desk trading live on the loopback server (approval off, short timeouts so faults resolve quickly)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.submitted: list[str] = []

    async def __aenter__(self) -> Live:
        self.fake = await ChaosTastytrade(today=date(2026, 1, 20)).start()  # first expiry = the kit's EXPIRY
        self.desk = await Harness(self.path, oms_config=OmsConfig(
            approval_in_live=False, broker_call_timeout_s=2, cancel_retry_initial_s=0.1,
            cancel_retry_max_s=0.5, unknown_outcome_max_interval_s=0.5)).start()
        creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        conn = TastytradeConnection(
            TastytradeConfig(api_url=self.fake.api_url, streamer_url=self.fake.streamer_url, call_timeout_s=0.3),
            credentials=creds, bus=self.desk.bus, env={},
            reconnect=ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1),
            breaker=CircuitBreakerConfig(failure_threshold=2, reset_timeout_s=0.3))
        self.tt = TastytradeBroker(conn, self.desk.bus)
        await self.tt.connect()
        self.desk.router.add_broker(self.tt)
        self.desk.router.switch("live", "tastytrade", self.fake.account)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.desk.stop()
        with contextlib.suppress(Exception):
            await self.tt.disconnect()
        await self.fake.stop()

    async def order(self, i: int = 0):
        """A put spread at mid: it rests (live) at the server until filled or cancelled."""
        intent = self.desk.put_spread(client_order_id=f"chaos-live-{i}")
        self.submitted.append(intent.client_order_id)
        return await self.desk.oms.submit(intent)

    async def working(self, n: int) -> list:
        orders = [await self.order(i) for i in range(n)]
        await wait_for(lambda: all(self.desk.oms.order(o.order_id).status is OrderStatus.WORKING for o in orders),
                       timeout=5)
        return orders

    def live_at_server(self) -> list:
        return [o for o in self.fake.orders.values() if o.status in LIVE]

    async def settle_trip(self, case: Case, timeout: float = 8.0) -> None:
        """After a trip: nothing may stay live at the server (retries and reconciliation get ``timeout``)."""
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not self.live_at_server(), timeout=timeout)
        left = self.live_at_server()
        case.left_working += len(left)
        if left:
            case.fail(f"{len(left)} order(s) still live at the server {timeout:.0f} s after the trip: "
                      f"{[o.id for o in left]}")

    def count(self, case: Case) -> None:
        """Lost and duplicated, against the server's books."""
        store = {o.client_order_id: o for o in self.desk.store.orders.list()}
        missing = [c for c in self.submitted if c not in store]
        at_server = Counter(o.body.get("external-identifier", "") for o in self.fake.orders.values()
                            if o.replaces is None)
        strangers = [c for c in at_server if c not in store and not c.startswith("foreign")]
        case.lost += len(missing) + len(strangers)
        if missing or strangers:
            case.fail(f"lost: submitted but not stored {missing}, at the server but unknown {strangers}")
        dups = {c: n for c, n in at_server.items() if n > 1}
        case.duplicated += sum(n - 1 for n in dups.values())
        if dups:
            case.fail(f"several server orders for one client order id: {dups}")
        for c, o in store.items():  # the store never calls an order rejected that the server placed
            placed = [f for f in self.fake.orders.values() if f.body.get("external-identifier") == c]
            if placed and o.status is OrderStatus.REJECTED:
                case.fail(f"{c} stored REJECTED but the server placed it (status {placed[0].status})")


async def outage_during_trip(c: Case, tmp: Path) -> None:
    async with Live(tmp / "outage.sqlite") as lv:
        await lv.working(3)
        lv.fake.silent = True  # every request hangs; the client times out
        await lv.desk.kill_switch.trip("chaos: outage drill")
        c.trips += 1
        lv.fake.silent = False
        await lv.settle_trip(c)
        lv.count(c)


async def cancel_5xx_during_trip(c: Case, tmp: Path) -> None:
    async with Live(tmp / "cancel5xx.sqlite") as lv:
        await lv.working(2)
        lv.fake.faults.append(Fault("DELETE", "", 502, count=3))
        await lv.desk.kill_switch.trip("chaos: 502 on cancel")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


async def cancel_429_during_trip(c: Case, tmp: Path) -> None:
    async with Live(tmp / "cancel429.sqlite") as lv:
        await lv.working(2)
        lv.fake.faults.append(Fault("DELETE", "", 429, count=2))
        await lv.desk.kill_switch.trip("chaos: 429 on cancel")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


async def place_429(c: Case, tmp: Path) -> None:
    """Rate limited on submit: not placed, so rejected is the truth; the next order goes through."""
    async with Live(tmp / "place429.sqlite") as lv:
        lv.fake.faults.append(Fault("POST", "/orders", 429))
        first = await lv.order(0)
        c.expect(not lv.fake.orders, "a 429 on POST /orders placed an order")
        c.expect(lv.desk.oms.order(first.order_id).status in (OrderStatus.REJECTED, OrderStatus.SUBMITTED),
                 f"after a 429 the order is {lv.desk.oms.order(first.order_id).status.value}")
        second = await lv.order(1)
        await wait_for(lambda: lv.desk.oms.order(second.order_id).status is OrderStatus.WORKING, timeout=5)
        await lv.desk.kill_switch.trip("chaos: after 429")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


async def placed_then_500(c: Case, tmp: Path) -> None:
    """The server placed the order and answered 500: held as unknown, settled by client order id, once."""
    async with Live(tmp / "placed500.sqlite") as lv:
        lv.fake.server_error_on_place = 500
        lv.fake.hold_pushes = True  # nothing streamed: only reconciliation can tell
        order = await lv.order(0)
        c.expect(lv.desk.oms.order(order.order_id).status is not OrderStatus.REJECTED,
                 "placed-then-500 stored as REJECTED")
        await wait_for(lambda: lv.desk.oms.order(order.order_id).status is OrderStatus.WORKING, timeout=5)
        lv.fake.server_error_on_place = None
        lv.fake.hold_pushes = False
        await lv.desk.oms.submit(lv.desk.put_spread(client_order_id="chaos-live-0"))  # a resend: same order back
        await lv.desk.kill_switch.trip("chaos: after placed-then-500")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


async def place_503_not_placed(c: Case, tmp: Path) -> None:
    """5xx before placing: held unknown (never REJECTED, never resent); a trip leaves nothing live."""
    async with Live(tmp / "place503.sqlite") as lv:
        lv.fake.server_error_on_place = 503
        lv.fake.server_error_after_place = False
        order = await lv.order(0)
        cur = lv.desk.oms.order(order.order_id)
        c.expect(cur.status is OrderStatus.SUBMITTED, f"a 503 submit is {cur.status.value}, not held as unknown")
        lv.fake.server_error_on_place = None
        other = await lv.order(1)
        await wait_for(lambda: lv.desk.oms.order(other.order_id).status is OrderStatus.WORKING, timeout=5)
        await lv.desk.kill_switch.trip("chaos: after 503")
        c.trips += 1
        await lv.settle_trip(c)
        c.expect(not [o for o in lv.fake.orders.values() if o.body.get("external-identifier") == "chaos-live-0"],
                 "the 503 order was resent")
        lv.count(c)


async def stream_drop_with_fills(c: Case, tmp: Path) -> None:
    """The account stream drops mid-session and a fill happens while it is down: reconciliation adopts it."""
    async with Live(tmp / "drop.sqlite") as lv:
        orders = await lv.working(2)
        lv.fake.hold_pushes = True
        await lv.fake.close_streams()
        first = next(o for o in lv.fake.orders.values() if o.body.get("external-identifier") == "chaos-live-0")
        lv.fake.fill(first.id)  # the push is lost
        lv.fake.hold_pushes = False
        await wait_for(lambda: lv.desk.oms.order(orders[0].order_id).status is OrderStatus.FILLED, timeout=8)
        await lv.desk.kill_switch.trip("chaos: after a dropped stream")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


async def foreign_order_and_listing_500(c: Case, tmp: Path) -> None:
    """An order placed at the server by another app, and the first listing of live orders answers 500: the
    trip still ends with nothing live."""
    async with Live(tmp / "foreign.sqlite") as lv:
        await lv.working(1)
        body = dict(next(iter(lv.fake.orders.values())).body)
        body["external-identifier"] = "foreign-app-1"
        lv.fake._place(body)
        lv.fake.faults.append(Fault("GET", "/orders/live", 500))
        await lv.desk.kill_switch.trip("chaos: foreign order, listing fails")
        c.trips += 1
        await lv.settle_trip(c)
        lv.count(c)


CASES: list[tuple[str, Callable[[Case, Path], Awaitable[None]], bool]] = [
    ("outage-during-trip", outage_during_trip, True),
    ("cancel-502-during-trip", cancel_5xx_during_trip, False),
    ("cancel-429-during-trip", cancel_429_during_trip, True),
    ("place-429", place_429, False),
    ("placed-then-500", placed_then_500, True),
    ("place-503-not-placed", place_503_not_placed, False),
    ("stream-drop-fill-missed", stream_drop_with_fills, False),
    ("foreign-order-listing-500", foreign_order_and_listing_500, False),
]


async def run_family(base: Path, *, quick: bool) -> list[Case]:
    base.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fn, in_quick in CASES:
        if quick and not in_quick:
            continue
        case = Case("broker", name, repro=f"python tests/chaos/run.py --family broker  (case {name})")
        out.append(await run_case(case, lambda c, fn=fn: fn(c, base)))
    return out
