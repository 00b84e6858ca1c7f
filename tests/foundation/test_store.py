import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from engine.model import Fill, Leg, Option, Order, OrderStatus, OrderType, Position, Side, TimeInForce
from engine.store import Store, StoreError, ordered_migrations
from engine.store.migrations import MIGRATIONS, Migration

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def _order(oid: str = "o1", status: OrderStatus = OrderStatus.PENDING_APPROVAL) -> Order:
    short = Option.from_occ("SPY   261218P00500000")
    long_ = Option.from_occ("SPY   261218P00495000")
    return Order(oid, f"c-{oid}", (Leg(short, Side.SELL), Leg(long_, Side.BUY)), 2, OrderType.LIMIT,
                 Decimal("-1.25"), TimeInForce.DAY, status, NOW, NOW, source="gui")


def _tables(path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def test_open_when_empty_then_migrates_to_latest_in_wal_mode(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    assert store.schema_version == Store.latest_version() >= 2
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    required = {"orders", "order_events", "fills", "positions", "approvals", "risk_events", "audit",
                "settings_history", "backtest_runs", "backtest_trades", "chain_snapshots"}
    assert required <= _tables(tmp_path / "db.sqlite")


@pytest.mark.parametrize("start", [m.version for m in ordered_migrations()])
def test_migrate_when_database_is_at_an_earlier_version_then_reaches_latest_with_data_kept(tmp_path, start):
    path = tmp_path / "db.sqlite"
    old = Store.open(path, target_version=start)
    assert old.schema_version == start
    old.audit.record("test", "before-upgrade", {"v": start})
    old.close()
    new = Store.open(path)
    assert new.schema_version == Store.latest_version()
    assert new.audit.list()[0]["detail"] == {"v": start}
    assert new.migrate() == []  # idempotent
    new.close()


def test_migration_when_it_fails_then_rolls_back_and_names_it(tmp_path, monkeypatch):
    bad = Migration(9, "broken on purpose", "CREATE TABLE t_ok(x); CREATE TABLE orders(x)")
    monkeypatch.setattr("engine.store.migrations.MIGRATIONS", [*MIGRATIONS, bad])
    path = tmp_path / "db.sqlite"
    with pytest.raises(StoreError, match=r"migration 9 .broken on purpose."):
        Store.open(path)
    assert "t_ok" not in _tables(path)
    assert Store.open(path, target_version=2).schema_version == 2


def test_orders_round_trip_with_events_fills_positions_kv(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    o = _order()
    store.orders.save_with_event(o, {"why": "created"})
    worked = o.evolve(status=OrderStatus.WORKING, broker_order_id="B1", updated_at=o.created_at)
    store.orders.save_with_event(worked)
    assert store.orders.get("o1") == worked
    assert store.orders.by_client_order_id("c-o1").order_id == "o1"
    assert [e["status"] for e in store.orders.events("o1")] == ["pending_approval", "working"]
    assert store.orders.list([OrderStatus.WORKING]) == [worked]
    f = Fill("f1", "o1", o.legs[0].instrument, -2, Decimal("2.10"), NOW, fee=Decimal("1.30"))
    assert store.fills.add(f) is True
    assert store.fills.add(f) is False  # replayed fill is ignored
    assert store.fills.list("o1") == [f]
    pos = Position(o.legs[0].instrument, -2, Decimal("2.10"), opened_at=NOW)
    store.positions.replace_all("PAPER", [pos])
    assert store.positions.list("PAPER") == [pos]
    store.positions.upsert("PAPER", Position(o.legs[0].instrument, 0, Decimal(0)))
    assert store.positions.list("PAPER") == []
    store.kv.set("kill_switch", {"state": "HALTED", "reason": "test"})
    assert store.kv.get("kill_switch")["state"] == "HALTED"
    assert store.kv.get("missing", 5) == 5
    store.close()


def test_transaction_when_exception_then_nothing_written(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    with pytest.raises(RuntimeError), store.transaction():
        store.orders.save(_order("o2"))
        store.audit.record("me", "x")
        raise RuntimeError("abort")
    assert store.orders.get("o2") is None and store.audit.list() == []
    store.close()


WRITER = textwrap.dedent(
    """
    import sys, os
    from engine.store import Store
    store = Store.open(sys.argv[1])
    i = 0
    print("ready", flush=True)
    while True:
        with store.transaction():
            store.audit.record("writer", "pair", {"i": i})
            store.kv.set("counter", i)
        i += 1
    """
)


def test_process_killed_mid_transaction_when_reopened_then_database_is_consistent(tmp_path):
    path = tmp_path / "db.sqlite"
    Store.open(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ})
    assert proc.stdout.readline().strip() == "ready"
    store = Store.open(path)
    # wait (bounded) until the writer has committed a good number of transactions, then SIGKILL it mid-stream
    import time

    deadline = time.monotonic() + 30
    while (store.kv.get("counter") or 0) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store.close()
    store = Store.open(path)
    assert store.integrity_check() == "ok"
    counter = store.kv.get("counter")
    audits = store.audit.list(limit=10**7)
    assert counter >= 200
    # both writes of every transaction landed together: the audit trail ends at the counter
    assert len(audits) == counter + 1
    assert audits[-1]["detail"]["i"] == counter
    store.close()


def test_migrate_when_a_lower_numbered_migration_is_added_later_then_it_is_applied(tmp_path, monkeypatch):
    path = tmp_path / "db.sqlite"
    Store.open(path).close()  # every current migration applied
    late = Migration(8, "added in a later release", "CREATE TABLE late_table(x INTEGER)")
    monkeypatch.setattr("engine.store.migrations.MIGRATIONS", [*MIGRATIONS, late])
    store = Store.open(path)
    assert "late_table" in _tables(path)
    assert 8 in store.applied_versions()
    assert store.migrate() == []
    store.close()
