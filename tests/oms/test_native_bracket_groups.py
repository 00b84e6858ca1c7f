"""Native brackets on the real order path and the paper broker: the paper broker keeps the engine-held exits (the
reference behaviour) even when a native bracket is asked for, and the risk engine judges a native bracket's exits
as closing the position its working entry would open — and as naked sales without it."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from oms_harness import Harness, wait_for
from risk_kit import opt

from engine.model import Leg, OpenClose, OrderIntent, OrderStatus, OrderType, Side, TimeInForce
from engine.oms.groups import OrderGroupManager

CALL = opt(610, "C")


@pytest.fixture
async def grouped(tmp_path):
    desk = await Harness(tmp_path / "db.sqlite").start()
    groups = OrderGroupManager(desk.bus, desk.store, desk.oms, now=lambda: desk.clock.now(), native_brackets=True)
    groups.register()
    await groups.start()
    yield desk, groups
    await groups.stop()
    await desk.stop()


def buy_call(qty: int = 2, price: str = "0.05") -> OrderIntent:
    return OrderIntent(legs=(Leg(CALL, Side.BUY),), quantity=qty, limit_price=Decimal(price))


def sell_to_close(tag: str, qty: int = 2) -> OrderIntent:
    return OrderIntent(legs=(Leg(CALL, Side.SELL, 1, OpenClose.CLOSE),), quantity=qty, order_type=OrderType.STOP,
                       stop_price=Decimal("-0.01"), tif=TimeInForce.GTC, tag=tag)


async def test_paper_broker_keeps_the_engine_held_exits_when_native_is_asked_for(grouped):
    desk, groups = grouped
    assert not desk.oms.router.active.native_brackets
    g = await groups.submit_bracket(buy_call(), take_profit="-50", stop="-0.01", native=True)
    assert not g.group_id.startswith("nbk-") and len(g.held) == 2 and g.member_order_ids == ()
    entry = desk.oms.order(g.entry_order_id)
    assert entry is not None and entry.tag == "" and entry.status is OrderStatus.WORKING


async def test_native_exit_is_judged_against_the_position_its_working_entry_would_open(grouped):
    desk, _ = grouped
    entry = await desk.oms.submit(replace(buy_call(), tag="bracket:nbk-g1"))
    assert entry.status is OrderStatus.WORKING
    exit_order = await desk.oms.submit(sell_to_close("oco:nbk-g1"))
    assert exit_order.status is not OrderStatus.DENIED, exit_order.reason
    assert desk.risk.reduce_problem(exit_order) == ""
    # the same exit without the entry's bracket is a sale of a call nobody holds
    stranger = desk.oms.factory.create(sell_to_close("oco:nbk-other"), broker="paper", account_id="")
    assert "no position to reduce" in desk.risk.reduce_problem(stranger)
    # a third closing order finds the pending position committed to the first exit
    third = desk.oms.factory.create(sell_to_close("oco:nbk-g2"), broker="paper", account_id="")
    assert desk.risk.reduce_problem(third) != ""
    await desk.oms.cancel(entry.order_id, by="test", reason="done")
    assert "no position to reduce" in desk.risk.reduce_problem(
        desk.oms.factory.create(sell_to_close("oco:nbk-g1"), broker="paper", account_id=""))


async def test_restart_with_a_native_bracket_half_sent_cancels_it_and_its_entry(grouped):
    """A crash after the entry was sent but before its exits: the adapter's holds died with the process, so the
    resumed group is cancelled and its entry with it — never completed with engine-held exits."""
    desk, groups = grouped
    g = groups.bracket(buy_call(), take_profit="-50", stop="-0.01")
    entry = await desk.oms.submit(replace(g.held[0], tag=f"bracket:nbk-{g.group_id}"))
    assert entry.status is OrderStatus.WORKING
    exits = tuple(replace(i, client_order_id=f"coid-exit-{n}") for n, i in enumerate(g.held[1:]))
    half = g.evolve(group_id=f"nbk-{g.group_id}", held=exits, entry_order_id=entry.order_id,
                    updated_at=desk.clock.now())
    groups.repo.save(half)
    await groups.stop()
    again = OrderGroupManager(desk.bus, desk.store, desk.oms, now=lambda: desk.clock.now())
    again.register()
    try:
        await again.start()  # resumes the group in a task
        await wait_for(lambda: again.group(half.group_id).status.is_terminal)
        ended = again.group(half.group_id)
        assert ended is not None and ended.status.is_terminal and ended.held == ()
        assert ended.reason == "engine stopped while the native bracket was being sent"
        await wait_for(lambda: desk.oms.order(entry.order_id).status is OrderStatus.CANCELLED)
        assert desk.store.orders.by_client_order_id("coid-exit-0") is None  # no exit was ever sent
    finally:
        await again.stop()
