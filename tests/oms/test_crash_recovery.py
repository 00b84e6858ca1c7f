"""SIGKILL the engine process right after each persisted step of the order path, restart, and check that
no order was sent twice and none was lost (the store and the paper broker agree)."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from oms_harness import Harness

from engine.model import OrderStatus

CHILD = Path(__file__).with_name("crash_child.py")
CASES = [("intent", "marketable"), ("approved", "marketable"), ("submitted", "marketable"),
         ("broker_ack", "resting"), ("fill", "marketable")]


async def _run_child(db: Path, step: str, kind: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(CHILD), str(db), step, kind, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -signal.SIGKILL, f"{step}: child exited {proc.returncode}: {err.decode()[-2000:]}"
    return proc.returncode


@pytest.fixture(scope="module")
def killed_dbs(tmp_path_factory):
    """Run every crash child once, in parallel (they are independent databases)."""
    base = tmp_path_factory.mktemp("crash")
    dbs = {case: base / f"{case[0]}-{case[1]}.sqlite" for case in CASES}

    async def all_children():
        await asyncio.gather(*(_run_child(db, step, kind) for (step, kind), db in dbs.items()))

    asyncio.run(all_children())
    return dbs


@pytest.mark.parametrize(("step", "kind"), CASES)
async def test_restart_when_killed_after_step_then_no_duplicate_and_no_lost_order(killed_dbs, step, kind):
    h = await Harness(killed_dbs[(step, kind)]).start()
    try:
        orders = h.store.orders.list()
        assert len(orders) == 1, f"expected exactly one order, store has {len(orders)}"
        order = orders[0]
        paper_open = await h.paper.open_orders()
        paper_fills = await h.paper.fills()
        paper_coids = {o.client_order_id for o in paper_open} | {f.client_order_id for f in paper_fills}
        # no lost order: whatever the broker has, the store knows by its client order id
        assert paper_coids <= {order.client_order_id}
        # no duplicate: at most one working order, and fills never exceed the quantity per leg
        assert len(paper_open) <= 1
        for leg_index in range(len(order.legs)):
            assert sum(abs(f.quantity) for f in paper_fills if f.leg_index == leg_index) <= order.quantity
        # the store adopted broker truth
        filled = sum(abs(f.quantity) for f in paper_fills if f.leg_index == 0)
        if paper_open:
            assert order.status in (OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED)
        elif filled == order.quantity:
            assert order.status is OrderStatus.FILLED
        else:
            assert order.status.is_terminal and order.status is not OrderStatus.FILLED
        if step == "intent":  # persisted as PENDING_APPROVAL before the risk check: expires, never sent
            assert order.status is OrderStatus.EXPIRED and not paper_coids
        elif step == "approved":  # approved but never sent: cancelled, never sent late
            assert order.status is OrderStatus.CANCELLED and not paper_coids
        # a crash is not a mismatch: fills we missed explain every position change, so trading stays ACTIVE
        assert h.kill_switch.state.value == "ACTIVE", h.kill_switch.status.reason
        # positions equal what the fills say, once
        pos = {p.symbol: p.quantity for p in await h.paper.positions()}
        from_fills: dict[str, int] = {}
        for f in paper_fills:
            from_fills[f.instrument.key] = from_fills.get(f.instrument.key, 0) + f.quantity
        assert {k: v for k, v in from_fills.items() if v} == pos
        if step != "submitted":
            return
        # a second restart changes nothing (idempotent recovery)
        await h.stop()
        h = await Harness(killed_dbs[(step, kind)]).start()
        assert [o.status for o in h.store.orders.list()] == [order.status]
        assert len(await h.paper.fills()) == len(paper_fills)
    finally:
        await h.stop()
