"""The quick chaos subset inside ``make test`` (the full campaign is ``make chaos``): SIGKILLs over the order
path with trips of every kind, broker faults on the loopback tastytrade server, a full disk, two instances and
the corruption matrix. Nothing may be lost, duplicated or left working after a trip."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from tests.chaos.run import ok, run_suite


@pytest.fixture(scope="module")
def quick_report() -> dict:
    return asyncio.run(run_suite(quick=True))


def test_quick_chaos_when_run_then_nothing_lost_duplicated_or_left_working(quick_report):
    doc = quick_report
    shown = json.dumps(doc["failures"], indent=1, default=str)[:4000]
    assert doc["kills"] >= 12, f"only {doc['kills']} SIGKILLs"
    assert doc["orders_lost"] == 0, shown
    assert doc["orders_duplicated"] == 0, shown
    assert doc["left_working_after_trip"] == 0, shown


def test_quick_chaos_when_run_then_every_case_survives(quick_report):
    assert ok(quick_report), json.dumps(quick_report["failures"], indent=1, default=str)[:6000]
    assert set(quick_report["families"]) == {"sigkill", "broker", "disk", "instances", "corruption"}


def test_store_transaction_when_disk_is_full_then_the_error_names_the_full_disk(tmp_path):
    """SQLite rolls a transaction back by itself on SQLITE_FULL: the store must not hide that error behind
    "cannot rollback - no transaction is active" (found by the disk-full chaos case)."""
    from engine.store import Store
    from tests.chaos.disk_full import pin_full

    store = Store.open(tmp_path / "db.sqlite")
    try:
        pin_full(store)
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            for i in range(10_000):
                with store.transaction():
                    store.audit.record("chaos", "fill the page", {"i": i, "pad": "x" * 200})
    finally:
        store.close()
