"""Start-up (and on-demand) reconciliation of the store with a broker's truth.

After a crash the store may be one step behind the broker: an order persisted as SUBMITTED may or may not
have reached the broker; a WORKING order may have filled or been cancelled while we were down. The rule is
**adopt broker truth and never send twice**:

- an order found among the broker's open orders (by client order id, then broker order id) takes the
  broker's status and fill quantity;
- an order not open but with fills at the broker is FILLED (all filled) or CANCELLED with its partial fill;
- a SUBMITTED order the broker has never heard of is REJECTED ("never reached the broker") — it is not
  resent: the trader decides — unless its submit got no clear answer (5xx, timeout, dropped connection):
  then it stays "unknown, reconciling" until the broker's orders or fills settle it by client order id;
- a WORKING order the broker no longer lists and never filled is CANCELLED (expired or cancelled meanwhile);
- a broker open order the store does not know is a **mismatch** (somebody else is trading the account):
  the OMS trips the kill switch, whose cancel-all cancels it too;
- fills the store lacks are added (idempotent by fill id).

:func:`plan` is pure (inputs in, decisions out) so it is easy to test; the OMS applies the plan.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from engine.model import Fill, Order, OrderStatus


@dataclass(frozen=True, slots=True)
class Adoption:
    order_id: str
    previous: OrderStatus
    status: OrderStatus
    filled_quantity: int
    broker_order_id: str | None
    reason: str


@dataclass
class ReconciliationReport:
    broker: str
    adoptions: list[Adoption] = field(default_factory=list)
    unknown_broker_orders: list[Order] = field(default_factory=list)
    new_fills: list[Fill] = field(default_factory=list)
    position_mismatches: list[dict[str, object]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: SUBMITTED orders with an unknown outcome the broker does not show yet (still being settled)
    unsettled: list[str] = field(default_factory=list)

    @property
    def mismatch(self) -> bool:
        return bool(self.unknown_broker_orders or self.position_mismatches)

    def summary(self) -> str:
        parts = [f"{len(self.adoptions)} order(s) adopted broker state", f"{len(self.new_fills)} new fill(s)"]
        if self.unknown_broker_orders:
            parts.append(f"{len(self.unknown_broker_orders)} unknown open order(s) at {self.broker}: "
                         + ", ".join(o.client_order_id or o.broker_order_id or o.order_id
                                     for o in self.unknown_broker_orders))
        if self.position_mismatches:
            parts.append(f"{len(self.position_mismatches)} position mismatch(es): "
                         + ", ".join(f"{m['symbol']} store {m['store']} broker {m['broker']}"
                                     for m in self.position_mismatches))
        parts.extend(self.errors)
        return "; ".join(parts)


def _filled_units(order: Order, fills: list[Fill]) -> int:
    """Combo units filled: executions of the first leg ÷ its ratio (fills carry signed leg quantities)."""
    if not fills:
        return 0
    ratio = order.legs[0].ratio if order.legs else 1
    first = [f for f in fills if f.leg_index == 0] or fills
    return int(sum(abs(f.quantity) for f in first) // ratio)


def plan(local: list[Order], broker_name: str, broker_open: list[Order], broker_fills: list[Fill],
         known_fill_ids: set[str], *, unknown: set[str] | frozenset[str] = frozenset()) -> ReconciliationReport:
    """Decide what the store must adopt. ``local``: the store's non-terminal orders; ``unknown``: ids of
    SUBMITTED orders whose submit got no clear answer — not finding them is no proof they never arrived, so
    they are left as they are (the OMS keeps asking) instead of being called rejected."""
    rep = ReconciliationReport(broker=broker_name)
    by_coid = {o.client_order_id: o for o in broker_open if o.client_order_id}
    by_bid = {o.broker_order_id: o for o in broker_open if o.broker_order_id}
    fills_by_key: dict[str, list[Fill]] = defaultdict(list)
    for f in broker_fills:
        if f.client_order_id:
            fills_by_key[f.client_order_id].append(f)
        if f.order_id:
            fills_by_key["id:" + f.order_id].append(f)
    matched: set[int] = set()
    local_coids = set()
    for o in local:
        if o.broker != broker_name or o.status.is_terminal:
            continue
        local_coids.add(o.client_order_id)
        remote = by_coid.get(o.client_order_id) or (by_bid.get(o.broker_order_id) if o.broker_order_id else None)
        fills = fills_by_key.get(o.client_order_id) or fills_by_key.get("id:" + o.order_id) or []
        for f in fills:
            if f.fill_id not in known_fill_ids:
                rep.new_fills.append(f)
                known_fill_ids.add(f.fill_id)
        if o.status in (OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED):
            if remote is not None:  # cannot happen unless sent by someone else with our id: adopt it
                matched.add(id(remote))
                rep.adoptions.append(Adoption(o.order_id, o.status, remote.status, remote.filled_quantity,
                                              remote.broker_order_id, "found working at the broker"))
            continue
        if remote is not None:
            matched.add(id(remote))
            filled = max(remote.filled_quantity, _filled_units(o, fills))
            status = remote.status if remote.status.is_working else OrderStatus.WORKING
            if 0 < filled < o.quantity:
                status = OrderStatus.PARTIALLY_FILLED
            if status is not o.status or filled != o.filled_quantity or remote.broker_order_id != o.broker_order_id:
                rep.adoptions.append(Adoption(o.order_id, o.status, status, filled,
                                              remote.broker_order_id or o.broker_order_id, "working at the broker"))
            continue
        filled = _filled_units(o, fills)
        if filled >= o.quantity:
            rep.adoptions.append(Adoption(o.order_id, o.status, OrderStatus.FILLED, o.quantity, o.broker_order_id,
                                          "filled at the broker while we were away"))
        elif filled > 0:
            rep.adoptions.append(Adoption(o.order_id, o.status, OrderStatus.CANCELLED, filled, o.broker_order_id,
                                          f"partially filled ({filled}/{o.quantity}) and no longer working at the broker"))
        elif o.status is OrderStatus.SUBMITTED and o.order_id in unknown:
            rep.unsettled.append(o.order_id)
        elif o.status is OrderStatus.SUBMITTED:
            rep.adoptions.append(Adoption(o.order_id, o.status, OrderStatus.REJECTED, 0, o.broker_order_id,
                                          "never reached the broker (not found after restart); not resent"))
        else:
            rep.adoptions.append(Adoption(o.order_id, o.status, OrderStatus.CANCELLED, o.filled_quantity,
                                          o.broker_order_id, "no longer working at the broker"))
    for remote in broker_open:
        if id(remote) not in matched and remote.client_order_id not in local_coids:
            rep.unknown_broker_orders.append(remote)
    return rep


def compare_positions(store_positions: dict[str, int], broker_positions: dict[str, int]) -> list[dict[str, object]]:
    """Symbols whose quantities differ between the store's last known state and the broker."""
    out: list[dict[str, object]] = []
    for sym in sorted(set(store_positions) | set(broker_positions)):
        a, b = store_positions.get(sym, 0), broker_positions.get(sym, 0)
        if a != b:
            out.append({"symbol": sym, "store": a, "broker": b})
    return out
