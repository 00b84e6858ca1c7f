"""Persistence of the paper account in the SQLite store (tables of migration 10).

One transaction per execution report: account scalars, the order row (working orders are what a
restart resumes), the fills (the fill log, with assignment flags) and the changed positions — in
``paper_positions`` with full contract terms, mirrored into the shared ``positions`` table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.model import Fill, Order, OrderStatus, OrderType, Position, TimeInForce
from engine.store.repositories import instrument_from_dict, instrument_to_dict, legs_from_json, legs_to_json

if TYPE_CHECKING:
    from engine.store import Store


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _ts(text: str) -> datetime:
    """A time stamp every stored order and fill has (a record without one is corrupt: say which)."""
    if not text:
        raise ValueError("stored paper record without a time stamp")
    return datetime.fromisoformat(text)


def order_to_json(o: Order) -> str:
    return json.dumps({
        "order_id": o.order_id, "client_order_id": o.client_order_id, "legs": legs_to_json(o.legs),
        "quantity": o.quantity, "order_type": o.order_type.value,
        "limit_price": None if o.limit_price is None else str(o.limit_price), "tif": o.tif.value,
        "status": o.status.value, "created_at": _iso(o.created_at), "updated_at": _iso(o.updated_at),
        "source": o.source, "strategy_id": o.strategy_id, "tag": o.tag, "filled_quantity": o.filled_quantity,
        "avg_fill_price": None if o.avg_fill_price is None else str(o.avg_fill_price),
        "broker_order_id": o.broker_order_id, "broker": o.broker, "reason": o.reason, "account_id": o.account_id,
        "stop_price": None if o.stop_price is None else str(o.stop_price),
    })


def order_from_json(text: str) -> Order:
    d = json.loads(text)
    return Order(
        order_id=d["order_id"], client_order_id=d["client_order_id"], legs=legs_from_json(d["legs"]),
        quantity=int(d["quantity"]), order_type=OrderType(d["order_type"]),
        limit_price=None if d["limit_price"] is None else Decimal(d["limit_price"]), tif=TimeInForce(d["tif"]),
        status=OrderStatus(d["status"]), created_at=_ts(d["created_at"]), updated_at=_ts(d["updated_at"]),
        source=d["source"], strategy_id=d["strategy_id"], tag=d["tag"], filled_quantity=int(d["filled_quantity"]),
        avg_fill_price=None if d["avg_fill_price"] is None else Decimal(d["avg_fill_price"]),
        broker_order_id=d["broker_order_id"], broker=d["broker"], reason=d["reason"], account_id=d["account_id"],
        stop_price=None if d.get("stop_price") is None else Decimal(d["stop_price"]),
    )


def position_to_json(p: Position) -> str:
    return json.dumps({"instrument": instrument_to_dict(p.instrument), "quantity": p.quantity,
                       "avg_price": str(p.avg_price), "realized_pnl": str(p.realized_pnl),
                       "opened_at": _iso(p.opened_at), "strategy_id": p.strategy_id})


def position_from_json(text: str) -> Position:
    d = json.loads(text)
    return Position(instrument=instrument_from_dict(d["instrument"]), quantity=int(d["quantity"]),
                    avg_price=Decimal(d["avg_price"]), realized_pnl=Decimal(d["realized_pnl"]),
                    opened_at=_dt(d["opened_at"]), strategy_id=d["strategy_id"])


def fill_to_json(f: Fill) -> str:
    return json.dumps({"fill_id": f.fill_id, "order_id": f.order_id, "instrument": instrument_to_dict(f.instrument),
                       "quantity": f.quantity, "price": str(f.price), "ts": _iso(f.ts), "fee": str(f.fee),
                       "leg_index": f.leg_index, "client_order_id": f.client_order_id, "kind": f.kind})


def fill_from_json(text: str) -> Fill:
    d = json.loads(text)
    return Fill(fill_id=d["fill_id"], order_id=d["order_id"], instrument=instrument_from_dict(d["instrument"]),
                quantity=int(d["quantity"]), price=Decimal(d["price"]), ts=_ts(d["ts"]), fee=Decimal(d["fee"]),
                leg_index=int(d["leg_index"]), client_order_id=d["client_order_id"], kind=d["kind"])


class PaperStore:
    """Reads and writes one paper account's state."""

    def __init__(self, store: Store, account_id: str) -> None:
        self.store = store
        self.account_id = account_id

    def load(self) -> tuple[dict[str, Any] | None, list[Position], list[Order]]:
        """(account state or None for a new account, positions, working orders)."""
        rows = self.store.query("SELECT state FROM paper_accounts WHERE account_id=?", (self.account_id,))
        state = json.loads(rows[0]["state"]) if rows else None
        positions = [position_from_json(r["payload"]) for r in self.store.query(
            "SELECT payload FROM paper_positions WHERE account_id=? ORDER BY symbol", (self.account_id,))]
        working = tuple(s.value for s in (OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED, OrderStatus.SUBMITTED))
        orders = [order_from_json(r["payload"]) for r in self.store.query(
            "SELECT payload FROM paper_orders WHERE account_id=? AND status IN (?,?,?) ORDER BY rowid",
            (self.account_id, *working))]
        return state, positions, orders

    def fills(self, limit: int | None = None) -> list[Fill]:
        sql = "SELECT payload FROM paper_fills WHERE account_id=? ORDER BY ts, rowid"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [fill_from_json(r["payload"]) for r in self.store.query(sql, (self.account_id,))]

    def save(self, state: dict[str, Any], orders: list[Order], fills: list[Fill], positions: list[Position]) -> None:
        now = self.store.now().astimezone(UTC).isoformat()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO paper_accounts(account_id, state, updated_at) VALUES (?,?,?) "
                "ON CONFLICT(account_id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
                (self.account_id, json.dumps(state, default=str, sort_keys=True), now))
            for o in orders:
                self.store.execute(
                    "INSERT INTO paper_orders(order_id, account_id, status, payload, updated_at) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(order_id) DO UPDATE SET status=excluded.status, payload=excluded.payload, "
                    "updated_at=excluded.updated_at",
                    (o.order_id, self.account_id, o.status.value, order_to_json(o), now))
            for f in fills:
                self.store.execute(
                    "INSERT OR IGNORE INTO paper_fills(fill_id, account_id, order_id, symbol, kind, flagged, payload, ts) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (f.fill_id, self.account_id, f.order_id, f.instrument.key, f.kind,
                     1 if f.kind == "early_assignment" else 0, fill_to_json(f), _iso(f.ts)))
            for p in positions:
                if p.quantity == 0:
                    self.store.execute("DELETE FROM paper_positions WHERE account_id=? AND symbol=?",
                                       (self.account_id, p.symbol))
                else:
                    self.store.execute(
                        "INSERT INTO paper_positions(account_id, symbol, payload, updated_at) VALUES (?,?,?,?) "
                        "ON CONFLICT(account_id, symbol) DO UPDATE SET payload=excluded.payload, "
                        "updated_at=excluded.updated_at",
                        (self.account_id, p.symbol, position_to_json(p), now))
                self.store.positions.upsert(self.account_id, p)

    def reset(self) -> None:
        """Forget the account (a fresh start with the configured cash)."""
        with self.store.transaction():
            for table in ("paper_accounts", "paper_orders", "paper_positions", "paper_fills"):
                self.store.execute(f"DELETE FROM {table} WHERE account_id=?", (self.account_id,))
            self.store.execute("DELETE FROM positions WHERE account_id=?", (self.account_id,))
