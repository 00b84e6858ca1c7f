"""A full disk under the data folder: the kill switch must still cancel everything, hold HALTED in memory (every
submit denied), save it once space is back, and come back HALTED after a restart; nothing may reach a broker
that the store does not know.

Two ways to fill the disk: SQLite's ``PRAGMA max_page_count`` pinned at the current size after the free pages
are used up (no root needed; SQLite answers its real ``database or disk is full``), and — where root may mount
one — a real small tmpfs filled to ENOSPC (``tests/small_disk.py``), unmounted in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

from engine.model import Leg, OrderIntent, OrderType, Side
from engine.risk.kill_switch import read_status
from engine.risk.state import TradingState
from engine.store import Store
from tests.chaos.broker_faults import Live
from tests.chaos.kit import Harness, opt, wait_for
from tests.chaos.report import Case, run_case

FULL = "database or disk is full"


def resting(desk: Harness, i: int) -> OrderIntent:
    inst = opt(610, "C") if i % 2 == 0 else opt(590, "P")
    return OrderIntent(legs=(Leg(inst, Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                       limit_price=Decimal(f"{desk.mid(inst) - 1.0 - 0.05 * i:.2f}"), client_order_id=f"disk-{i}")


def pin_full(store: Store) -> int:
    """Use up the free pages, then forbid growth: every write needing a page fails with SQLite's own error."""
    store.execute("CREATE TABLE IF NOT EXISTS chaos_filler(x BLOB)")
    store.execute(f"PRAGMA max_page_count = {store.query('PRAGMA page_count')[0][0]}")
    with contextlib.suppress(sqlite3.OperationalError):
        for _ in range(100_000):
            store.execute("INSERT INTO chaos_filler VALUES (randomblob(1024))")
    with contextlib.suppress(sqlite3.OperationalError):
        for _ in range(100_000):
            store.execute("INSERT INTO chaos_filler VALUES (randomblob(64))")
    return int(store.query("PRAGMA page_count")[0][0])


def unpin(store: Store) -> None:
    store.execute("PRAGMA max_page_count = 1073741823")
    store.execute("DELETE FROM chaos_filler")


async def submit_when_full(c: Case, desk: Harness, i: int, attempts: int = 300) -> None:
    """Submit until the disk refuses (pinned page counts only fail writes that need a new page, so the free room
    in the tables' last pages is used up first): each submit is stored or refused with the disk's own error,
    never half-sent."""
    for n in range(attempts):
        try:
            await desk.oms.submit(resting(desk, i + n))
        except sqlite3.OperationalError as exc:
            c.expect(FULL in str(exc), f"submit on a full disk raised {exc!r}")
            c.figures["submit_on_full_disk"] = f"refused after {n} stored: {exc}"
            return
    c.fail(f"{attempts} submits on a full disk were all stored")


async def trip_on_full_disk(c: Case, desk: Harness, other: Store, open_at_broker, free) -> None:
    """Trip with the disk full; then free it and check HALTED reaches the disk."""
    cancelled = await desk.kill_switch.trip("chaos: disk full drill", by="chaos")
    c.trips += 1
    c.figures["cancelled"] = cancelled
    with contextlib.suppress(AssertionError):
        await wait_for(lambda: not open_at_broker(), timeout=8)
    left = open_at_broker()
    c.left_working += len(left)
    c.expect(not left, f"{len(left)} order(s) working after a trip on a full disk")
    c.expect(desk.kill_switch.tripped, "HALTED did not hold in memory")
    probe = desk.oms.factory.create(resting(desk, 99), broker=desk.router.active_name,
                                    account_id=desk.router.account_id(), tick_for=desk.router.active.tick_size)
    c.expect(not desk.risk.check(probe, consume=False).passed, "a new order passed the risk check while HALTED")
    c.figures["saved_while_full"] = read_status(other).state.value
    free()
    try:
        await wait_for(lambda: read_status(other).state is TradingState.HALTED, timeout=10)
    except AssertionError:
        c.fail("HALTED was not saved after space came back")


async def page_count_paper(c: Case, tmp: Path) -> None:
    path = tmp / "pinned-paper.sqlite"
    desk = await Harness(path).start()
    other = Store.open(path)
    try:
        for i in range(6):
            await desk.oms.submit(resting(desk, i))
        await wait_for(lambda: len(desk.paper.exchange.open_orders()) == 6)
        c.figures["pages"] = pin_full(desk.store)
        await submit_when_full(c, desk, 50)
        await trip_on_full_disk(c, desk, other, desk.paper.exchange.open_orders, lambda: unpin(desk.store))
    finally:
        other.close()
        await desk.stop()
    await restart_check(c, path)


async def restart_check(c: Case, path: Path) -> None:
    """After the restart: HALTED, nothing working at the paper broker, every broker order known to the store."""
    h = await Harness(path).start()
    try:
        c.expect(h.kill_switch.tripped, f"restart after the disk-full trip is {h.kill_switch.state.value}")
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not h.paper.exchange.open_orders(), timeout=5)
        left = h.paper.exchange.open_orders()
        c.left_working += len(left)
        c.expect(not left, f"{len(left)} order(s) working at the paper broker after the restart")
        known = {o.client_order_id for o in h.store.orders.list()}
        unknown = [o.client_order_id for o in left if o.client_order_id not in known]
        c.lost += len(unknown)
    finally:
        await h.stop()


async def page_count_live(c: Case, tmp: Path) -> None:
    async with Live(tmp / "pinned-live.sqlite") as lv:
        await lv.working(4)
        other = Store.open(lv.path)
        try:
            c.figures["pages"] = pin_full(lv.desk.store)
            await submit_when_full(c, lv.desk, 60)
            await trip_on_full_disk(c, lv.desk, other, lv.live_at_server, lambda: unpin(lv.desk.store))
        finally:
            other.close()
        lv.count(c)


async def tmpfs_paper(c: Case, tmp: Path) -> None:
    import pytest

    from tests.small_disk import small_disk

    try:
        ctx = small_disk(16384)
        disk = ctx.__enter__()
    except pytest.skip.Exception as exc:
        c.skipped = str(exc.msg if hasattr(exc, "msg") else exc)
        return
    try:
        path = disk.path / "db.sqlite"
        desk = await Harness(path).start()
        other = Store.open(path)
        try:
            for i in range(6):
                await desk.oms.submit(resting(desk, i))
            await wait_for(lambda: len(desk.paper.exchange.open_orders()) == 6)
            disk.fill()
            await submit_when_full(c, desk, 70)
            await cli_kill_on_full_disk(c, path)
            await trip_on_full_disk(c, desk, other, desk.paper.exchange.open_orders, disk.free)
        finally:
            other.close()
            await desk.stop()
        await restart_check(c, path)
    finally:
        ctx.__exit__(None, None, None)


async def cli_kill_on_full_disk(c: Case, path: Path) -> None:
    """``optiondesk kill`` on a full disk: one line that says what it achieved, never a traceback."""
    import asyncio
    import sys

    from tests.chaos.kit import ROOT

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "kill", "--db", str(path), "--reason", "chaos: full disk",
        cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = (out + err).decode(errors="replace").strip()
    c.figures["cli_kill_on_full_disk"] = {"exit": proc.returncode, "output": text[-300:]}
    c.expect("Traceback" not in text, f"optiondesk kill on a full disk printed a traceback: {text[-500:]}")
    c.expect(len(text.splitlines()) == 1, f"optiondesk kill on a full disk printed {len(text.splitlines())} lines")


async def run_family(base: Path, *, quick: bool) -> list[Case]:
    base.mkdir(parents=True, exist_ok=True)
    out = []
    cases = [("max-page-count-paper", page_count_paper), ("max-page-count-live", page_count_live),
             ("tmpfs-paper-and-cli", tmpfs_paper)]
    for name, fn in cases:
        if quick and name == "max-page-count-live":
            continue
        case = Case("disk", name, repro=f"python tests/chaos/run.py --family disk  (case {name})")
        out.append(await run_case(case, lambda c, fn=fn: fn(c, base)))
    shutil.rmtree(base, ignore_errors=True)
    return out
