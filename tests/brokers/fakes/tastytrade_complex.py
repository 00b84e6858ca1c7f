"""Complex orders on the loopback tastytrade: ``POST /accounts/{n}/complex-orders`` (and its ``/dry-run``) with
``type`` OCO / OTO / OTOCO, ``orders`` and ``trigger-order``; ``GET`` and ``DELETE .../complex-orders/{id}``; the
account streamer's ``ComplexOrder`` pushes beside each member's ``Order`` push.

What the venue does and the fake copies: a complex order is validated as a whole (one bad member refuses every
member, nothing is placed); an OCO member that fills (even partly) cancels its siblings; the contingent members of
an OTO/OTOCO wait (status ``Contingent``) until the trigger fills, then go live; deleting the complex order cancels
every member still open. Shapes as the ``tastytrade`` SDK 13.2.3 parses them (``PlacedComplexOrder``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.brokers.fakes.tastytrade_server import FakeOrder, FakeTastytrade

OPEN = ("Received", "Routed", "Live", "Contingent")
KINDS = {"OCO": (2, False), "OTO": (1, True), "OTOCO": (2, True)}  # type -> (members in "orders", needs trigger)


@dataclass
class FakeComplexOrder:
    id: int
    type: str
    orders: list[FakeOrder]
    trigger: FakeOrder | None = None
    members: list[FakeOrder] = field(default_factory=list)

    def to_json(self, account: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "account-number": account, "type": self.type,
                               "orders": [o.to_json(account) for o in self.orders]}
        if self.trigger is not None:
            out["trigger-order"] = self.trigger.to_json(account)
        return out


class ComplexOrders:
    """The fake's complex-order book (one per :class:`FakeTastytrade`)."""

    def __init__(self, fake: FakeTastytrade) -> None:
        self.fake = fake
        self.book: dict[int, FakeComplexOrder] = {}
        self._ids = itertools.count(501)
        self.reject_with: str | None = None  # refuse the next complex orders with this preflight message

    def route(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any] | None:
        """The answer for a complex-order request, or None when ``path`` is not one."""
        base = f"/accounts/{self.fake.account}/complex-orders"
        if not path.startswith(base):
            return None
        rest = path[len(base):]
        if method == "POST" and rest == "/dry-run":
            return self._validate(body) or (200, {"data": self._effect(body, None)})
        if method == "POST" and rest == "":
            return self._place(body)
        try:
            cid = int(rest.strip("/"))
        except ValueError:
            return self.fake._err(400, "invalid_id", "complex order id must be an integer")
        co = self.book.get(cid)
        if co is None:
            return self.fake._err(404, "complex_order_not_found", f"Complex order {cid} not found")
        if method == "GET":
            return 200, {"data": co.to_json(self.fake.account)}
        if method == "DELETE":
            open_members = [o for o in co.members if o.status in OPEN]
            if not open_members:
                return self.fake._err(422, "order_not_cancellable", f"Complex order {cid} has no open orders")
            for o in open_members:
                o.status = "Cancelled"
            self.push(co)
            return 200, {"data": co.to_json(self.fake.account)}
        return self.fake._err(405, "method_not_allowed", f"{method} {path}")

    def _validate(self, body: dict[str, Any] | None) -> tuple[int, Any] | None:
        if not body:
            return self.fake._err(400, "validation_error", "complex order body is empty")
        kind = body.get("type")
        if kind not in KINDS:
            return self.fake._err(422, "validation_error", f"unsupported complex order type {kind!r}")
        n, needs_trigger = KINDS[kind]
        orders = body.get("orders") or []
        count_ok = 1 <= len(orders) <= 3 if kind == "OTO" else len(orders) == n
        if not count_ok:
            return self.fake._err(422, "validation_error", f"{kind} takes {n} orders, got {len(orders)}")
        if needs_trigger != ("trigger-order" in body):
            return self.fake._err(422, "validation_error",
                                  f"{kind} {'needs' if needs_trigger else 'takes no'} trigger-order")
        members = ([("trigger-order", body["trigger-order"])] if needs_trigger else []) + \
            [(f"orders[{i}]", o) for i, o in enumerate(orders)]
        for where, member in members:
            if err := self.fake._check_order(member):
                status, payload = err
                payload["error"]["message"] = f"{where}: {payload['error']['message']}"
                return status, payload
        if self.reject_with:
            return 422, {"error": {"code": "preflight_check_failure", "message": "One or more preflight checks failed",
                                   "errors": [{"code": "insufficient_buying_power", "message": self.reject_with}]}}
        return None

    def _effect(self, body: dict[str, Any] | None, placed: FakeComplexOrder | None) -> dict[str, Any]:
        effect = self.fake._dry_run((body or {}).get("trigger-order") or (body or {})["orders"][0])[1]["data"]
        if placed is not None:
            return {"complex-order": placed.to_json(self.fake.account),
                    "buying-power-effect": effect["buying-power-effect"], "fee-calculation": effect["fee-calculation"]}
        from tests.brokers.fakes.tastytrade_server import FakeOrder

        def unplaced(b: dict[str, Any]) -> dict[str, Any]:
            j = FakeOrder(0, b, "Received").to_json(self.fake.account)
            j.pop("id")
            return j

        assert body is not None
        out = {"account-number": self.fake.account, "type": body["type"],
               "orders": [unplaced(o) for o in body["orders"]]}
        if "trigger-order" in body:
            out["trigger-order"] = unplaced(body["trigger-order"])
        return {"complex-order": out, "buying-power-effect": effect["buying-power-effect"],
                "fee-calculation": effect["fee-calculation"]}

    def _place(self, body: dict[str, Any] | None) -> tuple[int, Any]:
        fake = self.fake
        if fake.server_error_on_place is not None:
            error = fake._err(fake.server_error_on_place, "internal_error", "Internal server error")
            if fake.server_error_after_place:
                saved, fake.server_error_on_place = fake.server_error_on_place, None
                try:
                    self._place(body)
                finally:
                    fake.server_error_on_place = saved
            return error
        if err := self._validate(body):
            return err
        from tests.brokers.fakes.tastytrade_server import FakeOrder

        assert body is not None
        cid = next(self._ids)
        trigger = None
        if "trigger-order" in body:
            trigger = FakeOrder(next(fake._ids), body["trigger-order"], "Live", complex_id=cid)
        waiting = "Contingent" if trigger is not None else "Live"
        orders = [FakeOrder(next(fake._ids), o, waiting, complex_id=cid) for o in body["orders"]]
        co = FakeComplexOrder(cid, body["type"], orders, trigger, ([trigger] if trigger else []) + orders)
        self.book[cid] = co
        for o in co.members:
            fake.orders[o.id] = o
        self.push(co)
        return 201, {"data": self._effect(body, co)}

    def of(self, order_id: int) -> FakeComplexOrder | None:
        return next((co for co in self.book.values() if any(o.id == order_id for o in co.members)), None)

    def after_fill(self, order: FakeOrder) -> None:
        """The venue's contingency: a filled trigger releases its orders; a filled OCO member cancels the rest."""
        co = self.of(order.id)
        if co is None:
            return
        if order is co.trigger:
            if order.status == "Filled":
                for o in co.orders:
                    if o.status == "Contingent":
                        o.status = "Live"
        elif co.type in ("OCO", "OTOCO"):
            for o in co.orders:
                if o is not order and o.status in OPEN:
                    o.status = "Cancelled"
        self.push(co)

    def push(self, co: FakeComplexOrder) -> None:
        """One ``ComplexOrder`` push, then each member's own ``Order`` push (the account streamer sends both)."""
        self.fake._push("ComplexOrder", co.to_json(self.fake.account))
        for o in co.members:
            self.fake._push("Order", o.to_json(self.fake.account))
