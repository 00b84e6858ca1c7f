"""The strategy host's books: attribution of fills to strategies, their ledgers, and their stored state.

Fills of a strategy's orders, and settlement fills of contracts it holds, are booked in its own
:class:`~engine.backtest.ledger.TradeLedger` and stored in ``strategy_fills``; at the next start the ledger is
replayed from them in booking order. A strategy's state (its books via :meth:`Strategy.state`, working orders,
seen fills, budget bookkeeping) is one row of ``strategy_state``, written at once after an order report or when
it sent orders (a restart must know every trade and order) and at most every ``WRITE_EVERY_S`` when market data
alone changed it (a commit per chain snapshot would cost the loop).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.backtest.ledger import TradeLedger
from engine.bus.events import Alert, OrderEvent, OrderFilled
from engine.model import Fill, Order

if TYPE_CHECKING:
    from engine.strategies.host import Hosted, StrategyHost
    from engine.strategies.live import StrategyRunner

log = logging.getLogger("engine.strategies.host")

ALERT_SOURCE = "engine.strategies"  # not "strategy…": the notifier maps StrategyDisabled itself, once


def on_order_event(host: StrategyHost, ev: OrderEvent) -> None:
    o = ev.order
    hs = host.hosted.get(o.strategy_id or "")
    if hs is None:
        return
    hs.orders[o.order_id] = o
    if isinstance(ev, OrderFilled):
        book(host, hs, o, [f for f in ev.fills if f.fill_id not in hs.fill_ids])
    elif o.status.value == "denied" or o.status.value == "rejected":
        host._note(hs, f"order {o.tag or o.order_id} {o.status.value}: {o.reason}")


def on_settled(host: StrategyHost, ev: Any) -> None:
    """Settlement fills carry the account's whole quantity: each strategy holding the contract is booked its
    own part; shares delivered by an exercise or assignment go with the option fill just before them."""
    last: Hosted | None = None
    parts: dict[str, list[Fill]] = {}
    for f in ev.fills:
        remaining = f.quantity
        booked = False
        for hs in host.hosted.values():
            if remaining == 0:
                break
            if f.fill_id in hs.fill_ids:
                continue
            held = sum(t.holdings.get(f.instrument.key, 0) for t in hs.ledger.open())
            if held == 0 or (held > 0) == (remaining > 0):
                continue  # a settlement takes a holding to zero: only the opposite sign is this one's
            q = -held if abs(held) <= abs(remaining) else remaining
            part = f if q == f.quantity else replace(f, quantity=q, fee=f.fee * Decimal(q) / Decimal(f.quantity))
            parts.setdefault(hs.strategy_id, []).append(part)
            remaining -= q
            last, booked = hs, True
        if not booked and last is not None and f.kind != "expiration" and f.fill_id not in last.fill_ids:
            parts.setdefault(last.strategy_id, []).append(f)
    for sid, fills in parts.items():  # one booking each: delivered shares join the assigned option's trade
        book(host, host.hosted[sid], None, fills)


def book(host: StrategyHost, hs: Hosted, order: Order | None, fills: list[Fill], *, store: bool = True) -> None:
    if not fills:
        return
    und = order.underlying if order is not None else ""
    hs.ledger.on_fills(order, fills, fills[-1].ts, underlying=und)
    for f in fills:
        hs.fill_ids.add(f.fill_id)
        hs.fills.append(f)
        hs.instruments.setdefault(f.instrument.key, f.instrument)
    if store:
        from engine.store.repositories import instrument_to_dict

        seq = len(hs.fills)
        for i, f in enumerate(fills):
            payload = {"instrument": instrument_to_dict(f.instrument), "quantity": f.quantity,
                       "price": str(f.price), "fee": str(f.fee), "leg_index": f.leg_index, "kind": f.kind,
                       "client_order_id": f.client_order_id}
            host.store.execute(
                "INSERT OR IGNORE INTO strategy_fills(fill_id, strategy_id, order_id, seq, payload, ts) "
                "VALUES (?,?,?,?,?,?)",
                (f.fill_id, hs.strategy_id, f.order_id, seq - len(fills) + i, json.dumps(payload),
                 f.ts.isoformat()))
        host._note(hs, f"{len(fills)} fill(s)" + (f" for {order.tag}" if order is not None else " (settlement)"))


def replay_fills(host: StrategyHost, hs: Hosted) -> None:
    """The ledger again from the stored fills (in booking order), after a restart."""
    from engine.store.repositories import instrument_from_dict

    rows = host.store.query("SELECT * FROM strategy_fills WHERE strategy_id=? ORDER BY seq, rowid",
                            (hs.strategy_id,))
    hs.ledger, hs.fills, hs.fill_ids = TradeLedger(), [], set()
    group: list[Fill] = []
    current: str | None = None

    def flush() -> None:
        if group:
            order = host.store.orders.get(current) if current else None
            book(host, hs, order, list(group), store=False)
            group.clear()

    for r in rows:
        p = json.loads(r["payload"])
        f = Fill(fill_id=r["fill_id"], order_id=r["order_id"], instrument=instrument_from_dict(p["instrument"]),
                 quantity=int(p["quantity"]), price=Decimal(p["price"]), ts=datetime.fromisoformat(r["ts"]),
                 fee=Decimal(p["fee"]), leg_index=int(p["leg_index"]), kind=p["kind"],
                 client_order_id=p.get("client_order_id", ""))
        if r["order_id"] != current:
            flush()
            current = r["order_id"]
        group.append(f)
    flush()


def changed(host: StrategyHost, hs: Hosted, urgent: bool) -> None:
    """After a callback: an order report or sent intents are stored at once (a restart must know every trade
    and order); what market data alone changed (a strategy's running closes, a timestamp) is stored at most
    every ``WRITE_EVERY_S`` — a write per chain snapshot would cost the loop a commit each time."""
    if urgent:
        host._persist(hs)
    else:
        hs.dirty = True


def load(host: StrategyHost, hs: Hosted) -> None:
    rows = host.store.query("SELECT * FROM strategy_state WHERE strategy_id=?", (hs.strategy_id,))
    hs.payload = {}
    if rows:
        r = rows[0]
        if r["name"] != hs.name:
            host.bus.publish(Alert(level="warning", source=ALERT_SOURCE, message=(
                f"stored state of {hs.strategy_id} belongs to strategy {r['name']}, not {hs.name}: not used")))
        else:
            try:
                hs.payload = json.loads(r["payload"])
            except ValueError:
                host.bus.publish(Alert(level="warning", source=ALERT_SOURCE, message=(
                    f"stored state of {hs.strategy_id} is unreadable: it starts with empty books")))
            hs.payload["host_state"] = r["state"]
            if r["mode"] == "live" and hs.mode != "live":
                hs.payload["host_state"] = "paused"  # the settings moved it off live: the user decides
    hs.entry_risk = {str(k): float(v) for k, v in hs.payload.get("entry_risk", {}).items()}
    hs.day = str(hs.payload.get("day", ""))
    hs.day_start_total = float(hs.payload.get("day_start_total", 0.0))
    if hs.entry is not None:
        replay_fills(host, hs)


def persist(host: StrategyHost, hs: Hosted, *, force: bool = False, runner: StrategyRunner | None = None) -> None:
    """Store the strategy's state when it changed (one upsert; the JSON comparison keeps quiet chains free)."""
    runner = runner or hs.runner
    if hs.entry is None:
        return
    payload = dict(hs.payload)
    if hs.strategy is not None and (runner is None or runner.failed is None):
        payload["strategy"] = hs.strategy.state()
    if runner is not None:
        payload["orders"] = [o.order_id for o in runner.open_orders()]
        payload["seen_fills"] = runner.seen_fills()
    payload.update(entry_risk=hs.entry_risk, day=hs.day, day_start_total=hs.day_start_total, reason=hs.reason)
    payload.pop("host_state", None)
    text = json.dumps(payload, sort_keys=True, default=str)
    key = f"{hs.state}|{hs.mode}|{text}"
    if key == hs.persisted and not force:
        hs.dirty = False
        return
    host.store.execute(
        "INSERT INTO strategy_state(strategy_id, name, state, mode, payload, updated_at) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT(strategy_id) DO UPDATE SET name=excluded.name, state=excluded.state, mode=excluded.mode, "
        "payload=excluded.payload, updated_at=excluded.updated_at",
        (hs.strategy_id, hs.name, hs.state, hs.mode, text, host.clock.now().isoformat()))
    hs.persisted = key
    hs.payload = payload
    hs.dirty = False
    hs.last_write = time.monotonic()


__all__ = ["ALERT_SOURCE", "book", "changed", "load", "on_order_event", "on_settled", "persist",
           "replay_fills"]
