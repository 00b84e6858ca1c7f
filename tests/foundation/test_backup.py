"""Online backups, rotation, verification and restore of the SQLite database (docs/operations.md)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.instance_lock import InstanceLock, InstanceLocked
from engine.model import Equity, Fill, Leg, Order, OrderStatus, OrderType, Side, TimeInForce
from engine.risk.kill_switch import read_status, write_record
from engine.risk.state import TradingState, TradingStatus
from engine.store import Store
from engine.store.backup import (
    BackupError,
    BackupScheduler,
    backup_database,
    list_backups,
    new_backup_path,
    restore_database,
    rotate_backups,
    verify_backup,
)
from tests.small_disk import small_disk

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _order(n: int, status: OrderStatus = OrderStatus.FILLED) -> Order:
    return Order(order_id=f"ord-{n}", client_order_id=f"cl-{n}", legs=(Leg(Equity("SPY"), Side.BUY, 1),),
                 quantity=10 * n, order_type=OrderType.LIMIT, limit_price=Decimal("500.25"), tif=TimeInForce.DAY, status=status,
                 created_at=T0 + timedelta(minutes=n), updated_at=T0 + timedelta(minutes=n), filled_quantity=10 * n,
                 account_id="PAPER-1")


def _fill(n: int) -> Fill:
    return Fill(fill_id=f"fill-{n}", order_id=f"ord-{n}", client_order_id=f"cl-{n}", instrument=Equity("SPY"),
                quantity=10 * n, price=Decimal("500.25"), fee=Decimal("1.05"), ts=T0 + timedelta(minutes=n))


def _populated(path: Path, orders: int = 3) -> Store:
    store = Store.open(path)
    for n in range(1, orders + 1):
        store.orders.save_with_event(_order(n))
        store.fills.add(_fill(n))
    write_record(store, TradingStatus(TradingState.HALTED, "drawdown trip", "test", T0.isoformat()))
    return store


def _content(store: Store) -> tuple[list[str], list[str], str]:
    return ([o.order_id for o in store.orders.list()], [f.fill_id for f in store.fills.list()],
            read_status(store).state.value)


def test_backup_when_engine_store_is_open_then_copy_is_verified_self_contained_and_complete(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    store = _populated(db)
    try:
        result = backup_database(db, tmp_path / "b" / "x.db")
        store.orders.save_with_event(_order(9))  # the live store keeps writing after the snapshot
    finally:
        store.close()
    assert result.path.is_file() and result.bytes == result.path.stat().st_size
    assert result.schema_version == Store.latest_version()
    assert not Path(f"{result.path}-wal").exists()  # one self-contained file
    copy = sqlite3.connect(result.path)
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [r[0] for r in copy.execute("SELECT order_id FROM orders ORDER BY order_id")] == ["ord-1", "ord-2", "ord-3"]
    copy.close()
    assert not list((tmp_path / "b").glob(".*partial*"))


def test_backup_when_target_exists_then_refused_and_file_untouched(tmp_path):
    db = tmp_path / "optiondesk.db"
    _populated(db).close()
    target = tmp_path / "keep.db"
    target.write_bytes(b"precious")
    with pytest.raises(BackupError, match="already exists"):
        backup_database(db, target)
    assert target.read_bytes() == b"precious"


def test_backup_when_disk_is_full_then_clear_error_and_no_partial_file(tmp_path):
    db = tmp_path / "optiondesk.db"
    store = _populated(db)
    store.execute("CREATE TABLE ballast (b BLOB)")
    for _ in range(64):
        store.execute("INSERT INTO ballast VALUES (randomblob(16384))")  # ~1 MB: more than the disk has free
    store.close()
    with small_disk(size_kb=512) as disk:
        with pytest.raises(BackupError, match=r"disk holding .* is full: backup x\.db was not written"):
            backup_database(db, disk.path / "x.db")
        assert sorted(p.name for p in disk.path.iterdir()) == []


def test_verify_when_backup_is_corrupt_then_error_names_the_file(tmp_path):
    db = tmp_path / "optiondesk.db"
    _populated(db).close()
    good = backup_database(db, tmp_path / "good.db").path
    bad = tmp_path / "bad.db"
    raw = bytearray(good.read_bytes())
    page = 4096
    for i in range(page, len(raw) - page, 97):  # scribble over every page after the header
        raw[i:i + 8] = b"\xde\xad\xbe\xef\x00\xff\x13\x37"
    bad.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match=r"bad\.db .*(integrity|damaged|not a readable)"):
        verify_backup(bad)
    text = tmp_path / "notes.db"
    text.write_text("not a database at all " * 300)
    with pytest.raises(BackupError, match=r"notes\.db is not a readable SQLite database"):
        verify_backup(text)
    foreign = tmp_path / "foreign.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE t(x)")
    c.commit()
    c.close()
    with pytest.raises(BackupError, match="not an Optiondesk backup"):
        verify_backup(foreign)


def test_restore_when_backup_is_corrupt_then_refused_and_database_unchanged(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    _populated(db).close()
    before = db.read_bytes()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 5000)
    with pytest.raises(BackupError):
        restore_database(bad, db)
    assert db.read_bytes() == before
    assert not (tmp_path / "data" / "backups").exists()  # not even a safety copy: nothing was started


def test_restore_round_trips_orders_fills_and_trading_state_and_keeps_a_safety_copy(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    store = _populated(db, orders=3)
    saved = _content(store)
    store.close()
    backup = backup_database(db, tmp_path / "backup.db").path
    store = Store.open(db)  # life goes on: more orders, the switch is reset
    store.orders.save_with_event(_order(4))
    store.fills.add(_fill(4))
    write_record(store, TradingStatus(TradingState.ACTIVE, "reset", "test", T0.isoformat()), reset=True)
    after = _content(store)
    store.close()
    assert after != saved

    result = restore_database(backup, db, now=T0)
    store = Store.open(db)
    try:
        assert _content(store) == saved == (["ord-1", "ord-2", "ord-3"], ["fill-1", "fill-2", "fill-3"], "HALTED")
        assert store.orders.get("ord-2").limit_price == Decimal("500.25")
        assert [e["status"] for e in store.orders.events("ord-1")] == ["filled"]
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    assert result.safety_copy is not None and result.safety_copy.name == "pre-restore-20260302-150000.db"
    safety = Store.open(result.safety_copy)
    try:
        assert _content(safety) == after  # nothing is lost by a restore
    finally:
        safety.close()


def test_restore_when_engine_holds_the_data_folder_then_refused(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    _populated(db).close()
    backup = backup_database(db, tmp_path / "backup.db").path
    lock = InstanceLock(db.parent)
    lock.acquire()
    try:
        with pytest.raises(InstanceLocked, match="already running"):
            restore_database(backup, db)
        code = cli_main(["restore", str(backup), "--yes", "--db", str(db)])
        assert code == 2
    finally:
        lock.release()


def test_cli_backup_then_restore_with_yes_round_trips(tmp_path, capsys):
    db = tmp_path / "data" / "optiondesk.db"
    store = _populated(db, orders=2)
    saved = _content(store)
    store.close()
    out = tmp_path / "manual.db"
    assert cli_main(["backup", "--out", str(out), "--db", str(db)]) == 0
    assert "integrity ok" in capsys.readouterr().out
    store = Store.open(db)
    store.orders.save_with_event(_order(7))
    store.close()
    assert cli_main(["restore", str(out), "--yes", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "restored" in text and "pre-restore-" in text
    store = Store.open(db)
    try:
        assert _content(store) == saved
    finally:
        store.close()


def test_cli_restore_without_yes_and_without_a_terminal_then_refused(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    _populated(db).close()
    backup = backup_database(db, tmp_path / "b.db").path
    before = db.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "restore", str(backup), "--db", str(db)],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs confirmation" in proc.stderr and "--yes" in proc.stderr
    assert db.read_bytes() == before


def test_rotate_keeps_the_newest_and_ignores_other_files(tmp_path):
    for i in range(5):
        new_backup_path(tmp_path, T0 + timedelta(hours=i)).write_bytes(b"x")
    (tmp_path / "pre-restore-20260101-000000.db").write_bytes(b"x")
    (tmp_path / "optiondesk-manual-20260101-000000.db").write_bytes(b"x")
    removed = rotate_backups(tmp_path, keep=2)
    assert [p.name for p in removed] == [f"optiondesk-20260302-1{i}0000.db" for i in range(5, 8)]
    assert [p.name for p in list_backups(tmp_path)] == ["optiondesk-20260302-180000.db",
                                                         "optiondesk-20260302-190000.db"]
    assert (tmp_path / "pre-restore-20260101-000000.db").exists()
    assert (tmp_path / "optiondesk-manual-20260101-000000.db").exists()
    with pytest.raises(ValueError, match="at least 1"):
        rotate_backups(tmp_path, keep=0)


async def test_scheduler_when_running_then_backs_up_rotates_and_stops_cleanly(tmp_path):
    db = tmp_path / "optiondesk.db"
    _populated(db).close()
    folder = tmp_path / "backups"
    done: list[object] = []
    stamps = iter(T0 + timedelta(seconds=i) for i in range(1000))
    sched = BackupScheduler(db, folder, interval_s=0.05, keep=2, now=lambda: next(stamps), first_delay_s=0.0,
                            on_done=done.append)
    sched.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(done) < 4 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await sched.stop()
    assert len(done) >= 4
    kept = list_backups(folder)
    assert len(kept) == 2
    for p in kept:
        assert verify_backup(p) == Store.latest_version()
    assert [t for t in asyncio.all_tasks() if t.get_name() == "backup-scheduler"] == []
    assert sched._pool is None


async def test_scheduler_when_backup_fails_then_reports_the_error_and_keeps_running(tmp_path):
    db = tmp_path / "missing.db"
    errors: list[BaseException] = []
    sched = BackupScheduler(db, tmp_path / "b", interval_s=0.05, keep=2, now=lambda: T0, first_delay_s=0.0,
                            on_error=errors.append)
    sched.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(errors) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await sched.stop()
    assert len(errors) >= 2 and "does not exist" in str(errors[0])


async def test_engine_trading_state_survives_backup_and_restore_and_restore_waits_for_the_engine(tmp_path, capsys):
    from engine.bus.commands import ResetKillSwitch, TripKillSwitch
    from engine.core import Engine, EngineConfig

    def config() -> EngineConfig:
        return EngineConfig.for_directory(tmp_path, feed="none")

    db = tmp_path / "data" / "optiondesk.db"
    async with Engine(config()) as engine:
        await engine.bus.send(TripKillSwitch(reason="drill", by="test"))
        engine.store.orders.save_with_event(_order(1))
        engine.store.fills.add(_fill(1))
        assert engine.kill_switch.state is TradingState.HALTED
        # online: a backup while the engine runs and holds the folder
        assert cli_main(["backup", "--out", str(tmp_path / "halted.db"), "--db", str(db)]) == 0
    async with Engine(config()) as engine:
        assert engine.kill_switch.state is TradingState.HALTED  # persisted
        await engine.bus.send(ResetKillSwitch(by="test", confirmed=True))
        assert engine.kill_switch.state is TradingState.ACTIVE
        assert cli_main(["restore", str(tmp_path / "halted.db"), "--yes", "--db", str(db)]) == 2
        assert "running on" in capsys.readouterr().err
    assert cli_main(["restore", str(tmp_path / "halted.db"), "--yes", "--db", str(db)]) == 0
    async with Engine(config()) as engine:
        assert engine.kill_switch.state is TradingState.HALTED
        assert engine.kill_switch.status.reason == "drill"
        assert [o.order_id for o in engine.store.orders.list()] == ["ord-1"]
        assert [f.fill_id for f in engine.store.fills.list()] == ["fill-1"]


def test_restore_of_an_older_schema_is_migrated_at_the_next_open_and_backup_list_shows_kinds(tmp_path, capsys):
    old = tmp_path / "old.db"
    Store.open(old, target_version=2).close()  # a backup from an earlier release
    assert verify_backup(old) == 2
    db = tmp_path / "data" / "optiondesk.db"
    _populated(db).close()
    result = restore_database(old, db, now=T0)
    assert result.schema_version == 2
    store = Store.open(db)
    try:
        assert store.schema_version == Store.latest_version() and store.orders.list() == []
    finally:
        store.close()
    assert cli_main(["backup", "--db", str(db)]) == 0
    capsys.readouterr()
    assert cli_main(["backup", "--list", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert "pre-restore-20260302-150000.db" in listing and "other" in listing
    assert re.search(r"optiondesk-manual-\d{8}-\d{6}\.db .* manual", listing)


def test_restore_when_the_current_database_is_damaged_then_restores_and_keeps_the_damaged_bytes(tmp_path):
    db = tmp_path / "data" / "optiondesk.db"
    store = _populated(db, orders=2)
    saved = _content(store)
    store.close()
    backup = backup_database(db, tmp_path / "good.db").path
    raw = bytearray(db.read_bytes())
    for i in range(4096, len(raw) - 64, 101):  # every page after the header scribbled over
        raw[i:i + 8] = b"\xde\xad\xbe\xef\x00\xff\x13\x37"
    db.write_bytes(bytes(raw))
    result = restore_database(backup, db, now=T0)
    assert result.safety_copy is not None and result.safety_copy.name == "pre-restore-20260302-150000-damaged.db"
    assert result.safety_copy.read_bytes() == bytes(raw)  # the damaged file kept as it was
    store = Store.open(db)
    try:
        assert _content(store) == saved and store.integrity_check() == "ok"
    finally:
        store.close()
    assert not list(db.parent.glob(".*partial*"))
