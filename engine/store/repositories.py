"""Repositories: typed reads and writes of the store's tables. Decimals are stored as text."""

from __future__ import annotations

import builtins  # the repositories' ``list`` methods shadow the builtin in their class bodies' annotations
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from engine.model import (
    Equity,
    Fill,
    Index,
    Leg,
    OpenClose,
    Option,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    instrument_from_key,
)
from engine.model.instruments import ExerciseStyle, Instrument, Settlement

if TYPE_CHECKING:
    from engine.store.database import Store


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _dt_required(text: str | None, what: str) -> datetime:
    """A NOT NULL timestamp read back. Empty means a damaged record: refused like unparsable text (ValueError),
    naming the column, rather than handed on as None to a model that needs the time."""
    if not text:
        raise ValueError(f"stored {what} is empty")
    return datetime.fromisoformat(text)


def _dec(text: str | None) -> Decimal | None:
    return Decimal(text) if text not in (None, "") else None


def instrument_to_dict(inst: Instrument) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": inst.asset_class.value, "key": inst.key, "multiplier": inst.multiplier,
                         "tick": str(inst.tick_size)}
    if isinstance(inst, Option):
        d.update(underlying=inst.underlying, style=inst.style.value, settlement=inst.settlement.value)
    return d


def instrument_from_dict(d: dict[str, Any]) -> Instrument:
    kind = d.get("kind")
    tick = Decimal(d.get("tick", "0.01"))
    if kind == "option":
        return Option.from_occ(
            d["key"], underlying=d.get("underlying"), multiplier=int(d.get("multiplier", 100)),
            style=ExerciseStyle(d.get("style", "american")), settlement=Settlement(d.get("settlement", "physical")),
            tick_size=tick,
        )
    if kind == "index":
        return Index(d["key"], multiplier=int(d.get("multiplier", 1)), tick_size=tick)
    if kind == "equity":
        return Equity(d["key"], multiplier=int(d.get("multiplier", 1)), tick_size=tick)
    return instrument_from_key(d["key"], int(d.get("multiplier", 100)))


def legs_to_json(legs: tuple[Leg, ...]) -> str:
    return json.dumps([
        {"instrument": instrument_to_dict(leg.instrument), "side": leg.side.value, "ratio": leg.ratio,
         "open_close": leg.open_close.value}
        for leg in legs
    ])


def legs_from_json(text: str) -> tuple[Leg, ...]:
    return tuple(
        Leg(instrument=instrument_from_dict(d["instrument"]), side=Side(d["side"]), ratio=int(d["ratio"]),
            open_close=OpenClose(d["open_close"]))
        for d in json.loads(text)
    )


class OrderRepository:
    def __init__(self, store: Store) -> None:
        self._s = store

    def save(self, order: Order) -> None:
        """Insert or update the order row (one statement; atomic)."""
        self._s.execute(
            """INSERT INTO orders(order_id, client_order_id, broker, account_id, broker_order_id, status, source,
                   strategy_id, tag, order_type, tif, quantity, filled_quantity, limit_price, avg_fill_price, legs,
                   reason, created_at, updated_at, stop_price)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(order_id) DO UPDATE SET
                   broker=excluded.broker, account_id=excluded.account_id, broker_order_id=excluded.broker_order_id,
                   status=excluded.status, filled_quantity=excluded.filled_quantity, quantity=excluded.quantity,
                   limit_price=excluded.limit_price, avg_fill_price=excluded.avg_fill_price, reason=excluded.reason,
                   updated_at=excluded.updated_at, legs=excluded.legs, tif=excluded.tif,
                   stop_price=excluded.stop_price""",
            (
                order.order_id, order.client_order_id, order.broker, order.account_id, order.broker_order_id,
                order.status.value, order.source, order.strategy_id, order.tag, order.order_type.value,
                order.tif.value, order.quantity, order.filled_quantity,
                None if order.limit_price is None else str(order.limit_price),
                None if order.avg_fill_price is None else str(order.avg_fill_price),
                legs_to_json(order.legs), order.reason, _iso(order.created_at), _iso(order.updated_at),
                None if order.stop_price is None else str(order.stop_price),
            ),
        )

    @staticmethod
    def _row_to_order(r: Any) -> Order:
        return Order(
            order_id=r["order_id"], client_order_id=r["client_order_id"], legs=legs_from_json(r["legs"]),
            quantity=int(r["quantity"]), order_type=OrderType(r["order_type"]), limit_price=_dec(r["limit_price"]),
            tif=TimeInForce(r["tif"]), status=OrderStatus(r["status"]),
            created_at=_dt_required(r["created_at"], "orders.created_at"),
            updated_at=_dt_required(r["updated_at"], "orders.updated_at"), source=r["source"], strategy_id=r["strategy_id"], tag=r["tag"],
            filled_quantity=int(r["filled_quantity"]), avg_fill_price=_dec(r["avg_fill_price"]),
            broker_order_id=r["broker_order_id"], broker=r["broker"], reason=r["reason"], account_id=r["account_id"],
            stop_price=_dec(r["stop_price"]),
        )

    def get(self, order_id: str) -> Order | None:
        rows = self._s.query("SELECT * FROM orders WHERE order_id=?", (order_id,))
        return self._row_to_order(rows[0]) if rows else None

    def by_client_order_id(self, client_order_id: str) -> Order | None:
        rows = self._s.query("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        return self._row_to_order(rows[0]) if rows else None

    def list(self, statuses: list[OrderStatus] | tuple[OrderStatus, ...] | None = None, limit: int | None = None) -> list[Order]:
        sql = "SELECT * FROM orders"
        params: tuple[Any, ...] = ()
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            params = tuple(s.value for s in statuses)
        sql += " ORDER BY created_at, rowid"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._row_to_order(r) for r in self._s.query(sql, params)]

    def append_event(self, order_id: str, status: OrderStatus | str, detail: dict[str, Any] | None = None,
                     ts: datetime | None = None) -> None:
        self._s.execute(
            "INSERT INTO order_events(order_id, ts, status, detail) VALUES (?,?,?,?)",
            (order_id, _iso(ts or self._s.now()), str(getattr(status, "value", status)),
             json.dumps(detail or {}, default=str, sort_keys=True)),
        )

    def events(self, order_id: str) -> builtins.list[dict[str, Any]]:
        return [
            {"ts": _dt(r["ts"]), "status": r["status"], "detail": json.loads(r["detail"])}
            for r in self._s.query("SELECT * FROM order_events WHERE order_id=? ORDER BY id", (order_id,))
        ]

    def save_with_event(self, order: Order, detail: dict[str, Any] | None = None) -> None:
        """Persist a state change: the order row and its event, in one transaction."""
        with self._s.transaction():
            self.save(order)
            self.append_event(order.order_id, order.status, detail, order.updated_at)


class FillRepository:
    def __init__(self, store: Store) -> None:
        self._s = store

    def add(self, fill: Fill) -> bool:
        """Record a fill; returns False when the fill id is already known (broker replays are idempotent)."""
        cur = self._s.execute(
            """INSERT OR IGNORE INTO fills(fill_id, order_id, client_order_id, symbol, multiplier, quantity, price, fee,
                   leg_index, kind, ts) VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
            (fill.fill_id, fill.order_id, fill.client_order_id, fill.instrument.key, fill.instrument.multiplier,
             fill.quantity, str(fill.price), str(fill.fee), fill.leg_index, fill.kind, _iso(fill.ts)),
        )
        return cur.rowcount == 1

    def list(self, order_id: str | None = None) -> list[Fill]:
        if order_id is None:
            rows = self._s.query("SELECT * FROM fills ORDER BY ts, rowid")
        else:
            rows = self._s.query("SELECT * FROM fills WHERE order_id=? ORDER BY ts, rowid", (order_id,))
        return [
            Fill(fill_id=r["fill_id"], order_id=r["order_id"], client_order_id=r["client_order_id"],
                 instrument=instrument_from_key(r["symbol"], int(r["multiplier"])), quantity=int(r["quantity"]),
                 price=Decimal(r["price"]), fee=Decimal(r["fee"]), leg_index=int(r["leg_index"]), kind=r["kind"],
                 ts=_dt_required(r["ts"], "fills.ts"))
            for r in rows
        ]


class PositionRepository:
    def __init__(self, store: Store) -> None:
        self._s = store

    def replace_all(self, account_id: str, positions: list[Position]) -> None:
        with self._s.transaction():
            self._s.execute("DELETE FROM positions WHERE account_id=?", (account_id,))
            for p in positions:
                self.upsert(account_id, p)

    def upsert(self, account_id: str, p: Position) -> None:
        if p.quantity == 0:
            self._s.execute("DELETE FROM positions WHERE account_id=? AND symbol=?", (account_id, p.symbol))
            return
        self._s.execute(
            """INSERT INTO positions(account_id, symbol, multiplier, quantity, avg_price, realized_pnl, opened_at, strategy_id)
               VALUES (?,?,?,?,?,?,?,?)
               ON CONFLICT(account_id, symbol) DO UPDATE SET quantity=excluded.quantity, avg_price=excluded.avg_price,
                   realized_pnl=excluded.realized_pnl, multiplier=excluded.multiplier, strategy_id=excluded.strategy_id""",
            (account_id, p.symbol, p.multiplier, p.quantity, str(p.avg_price), str(p.realized_pnl), _iso(p.opened_at),
             p.strategy_id),
        )

    def list(self, account_id: str) -> list[Position]:
        return [
            Position(instrument=instrument_from_key(r["symbol"], int(r["multiplier"])), quantity=int(r["quantity"]),
                     avg_price=Decimal(r["avg_price"]), realized_pnl=Decimal(r["realized_pnl"]),
                     opened_at=_dt(r["opened_at"]), strategy_id=r["strategy_id"])
            for r in self._s.query("SELECT * FROM positions WHERE account_id=? ORDER BY symbol", (account_id,))
        ]


class AuditRepository:
    def __init__(self, store: Store) -> None:
        self._s = store

    def record(self, actor: str, action: str, detail: dict[str, Any] | None = None, ts: datetime | None = None) -> None:
        self._s.execute(
            "INSERT INTO audit(ts, actor, action, detail) VALUES (?,?,?,?)",
            (_iso(ts or self._s.now()), actor, action, json.dumps(detail or {}, default=str, sort_keys=True)),
        )

    def list(self, action: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit"
        params: tuple[str, ...] = ()
        if action:
            sql, params = sql + " WHERE action=?", (action,)
        rows = self._s.query(sql + f" ORDER BY id DESC LIMIT {int(limit)}", params)
        return [{"ts": _dt(r["ts"]), "actor": r["actor"], "action": r["action"], "detail": json.loads(r["detail"])}
                for r in reversed(rows)]


class KeyValueRepository:
    """Small JSON state (kill-switch state, paper account, UI-independent engine state)."""

    def __init__(self, store: Store) -> None:
        self._s = store

    def get(self, key: str, default: Any = None) -> Any:
        rows = self._s.query("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set(self, key: str, value: Any) -> None:
        self._s.execute(
            "INSERT INTO kv(key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, json.dumps(value, default=str, sort_keys=True), _iso(self._s.now())),
        )

    def delete(self, key: str) -> None:
        self._s.execute("DELETE FROM kv WHERE key=?", (key,))
