"""Order groups on the real order path and the real paper broker: OCO, bracket and profit taker — when members
are placed, which cancel which, the kill switch, the store, and a restart in the middle of a bracket."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from oms_harness import Harness, spy_chain, wait_for
from risk_kit import opt

from engine.bus.commands import (
    CancelOrder,
    CancelOrderGroup,
    SubmitBracket,
    SubmitOco,
    SubmitOrder,
    SubmitProfitTaker,
    TripKillSwitch,
)
from engine.bus.events import ChainUpdated
from engine.core import Engine, EngineConfig
from engine.model import GroupKind, GroupStatus, Leg, OpenClose, OrderIntent, OrderStatus, OrderType, Side
from engine.oms.groups import OrderGroupError, OrderGroupManager, profit_target_price
from engine.settings import Settings
from engine.surface.config import SurfaceConfig
from tests.sim_start import pinned_settings

CALL = opt(610, "C")


async def _start(path) -> tuple[Harness, OrderGroupManager]:
    desk = await Harness(path).start()
    groups = OrderGroupManager(desk.bus, desk.store, desk.oms, now=lambda: desk.clock.now())
    groups.register()
    await groups.start()
    return desk, groups


@pytest.fixture
async def grouped(tmp_path):
    desk, groups = await _start(tmp_path / "db.sqlite")
    yield desk, groups
    await groups.stop()
    await desk.stop()


def buy_call(desk: Harness, price: float | None = None, qty: int = 1) -> OrderIntent:
    ask = desk.market.bid_ask(CALL)[1]
    return OrderIntent(legs=(Leg(CALL, Side.BUY),), quantity=qty, limit_price=Decimal(f"{price or ask:.2f}"))


async def move_spot(desk: Harness, spot: float) -> None:
    desk.bus.publish(ChainUpdated(chain=spy_chain(spot)))
    await wait_for(lambda: desk.market.spot("SPY") == pytest.approx(spot))


def test_profit_target_prices_for_credits_and_debits():
    assert profit_target_price(Decimal("-1.00"), Decimal("0.5")) == Decimal("0.500")  # buy back at half
    assert profit_target_price(Decimal("2.00"), Decimal("0.25")) == Decimal("-2.5000")  # sell at +25 %


async def test_a_bracket_places_its_exits_once_the_entry_fills_and_the_target_cancels_the_stop(grouped):
    desk, groups = grouped
    mid = desk.mid(CALL)
    g = await desk.bus.send(SubmitBracket(intent=buy_call(desk), take_profit=Decimal(f"{-(mid + 1.0):.2f}"),
                                          stop=Decimal(f"{-(mid - 0.5):.2f}")))
    assert g.kind is GroupKind.BRACKET and g.status is GroupStatus.ACTIVE
    assert desk.oms.order(g.entry_order_id).status is OrderStatus.FILLED
    target_id, stop_id = g.member_order_ids
    target, stop = desk.oms.order(target_id), desk.oms.order(stop_id)
    # both exits work: the risk engine counts the quantity an OCO pair closes once
    assert target.status is OrderStatus.WORKING and stop.status is OrderStatus.WORKING
    assert (target.order_type, stop.order_type) == (OrderType.LIMIT, OrderType.STOP)
    assert [leg.open_close for leg in target.legs] == [OpenClose.CLOSE] and target.legs[0].side is Side.SELL
    assert target.tag == stop.tag == f"oco:{g.group_id}"
    stored = groups.repo.get(g.group_id)
    assert stored.member_order_ids == (target_id, stop_id) and stored.held == ()
    spot = 600.0
    while desk.oms.order(target_id).status is not OrderStatus.FILLED:
        spot += 1.0
        assert spot < 640, "the target never filled"
        await move_spot(desk, spot)
    await wait_for(lambda: desk.oms.order(stop_id).status is OrderStatus.CANCELLED)
    assert "one-cancels-other" in desk.oms.order(stop_id).reason
    await wait_for(lambda: groups.group(g.group_id).status is GroupStatus.DONE)
    assert groups.repo.get(g.group_id).status is GroupStatus.DONE
    assert desk.portfolio.quantity(CALL.key) == 0


async def test_a_bracket_stop_fires_when_the_market_falls_and_cancels_the_target(grouped):
    desk, _ = grouped
    mid = desk.mid(CALL)
    g = await desk.bus.send(SubmitBracket(intent=buy_call(desk), take_profit=Decimal(f"{-(mid + 2.0):.2f}"),
                                          stop=Decimal(f"{-(mid - 0.5):.2f}")))
    target_id, stop_id = g.member_order_ids
    spot = 600.0
    while desk.oms.order(stop_id).status is not OrderStatus.FILLED:
        spot -= 0.5
        assert spot > 570, "the stop never fired"
        await move_spot(desk, spot)
    await wait_for(lambda: desk.oms.order(target_id).status is OrderStatus.CANCELLED)
    assert desk.portfolio.quantity(CALL.key) == 0


async def test_an_entry_that_ends_without_a_fill_never_places_its_exits(grouped):
    desk, groups = grouped
    mid = desk.mid(CALL)
    g = await desk.bus.send(SubmitBracket(intent=buy_call(desk, price=mid - 1.0),
                                          take_profit=Decimal(f"{-(mid + 1):.2f}"), stop=Decimal(f"{-(mid - 2):.2f}")))
    assert desk.oms.order(g.entry_order_id).status is OrderStatus.WORKING and len(g.held) == 2
    assert g.member_order_ids == ()
    await desk.bus.send(CancelOrder(order_id=g.entry_order_id))
    await wait_for(lambda: groups.group(g.group_id).status is GroupStatus.CANCELLED)
    assert "without a fill" in groups.group(g.group_id).reason
    assert [o.order_id for o in desk.oms.open_orders()] == []


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"take_profit": Decimal("-1.00"), "stop": Decimal("-3.00")}, "bracket_prices"),
    ({"take_profit": Decimal("-3.00"), "stop": Decimal("NaN")}, "price_not_finite"),
    ({"take_profit": Decimal("-3.00"), "stop": Decimal("1.00")}, "stop_price_sign"),
])
async def test_bad_brackets_are_refused_before_anything_is_sent(grouped, kwargs, code):
    desk, groups = grouped
    with pytest.raises(OrderGroupError) as err:
        await desk.bus.send(SubmitBracket(intent=buy_call(desk), **kwargs))
    assert err.value.code == code
    assert desk.oms.open_orders() == [] and groups.groups() == []


async def test_a_closing_entry_cannot_carry_a_bracket(grouped):
    desk, _ = grouped
    closing = OrderIntent(legs=(Leg(CALL, Side.SELL, 1, OpenClose.CLOSE),), quantity=1, limit_price=Decimal("-1"))
    with pytest.raises(OrderGroupError, match="must open a position") as err:
        await desk.bus.send(SubmitBracket(intent=closing, take_profit=Decimal("1"), stop=Decimal("2")))
    assert err.value.code == "entry_not_opening"


async def test_oco_cancelling_one_cancels_the_other_and_cancel_group_cancels_both(grouped):
    desk, groups = grouped
    mid = desk.mid(CALL)
    put = opt(590, "P")
    low_call = buy_call(desk, price=mid - 1.0)
    low_put = OrderIntent(legs=(Leg(put, Side.BUY),), quantity=1, limit_price=Decimal(f"{desk.mid(put) - 1.0:.2f}"))
    g = await desk.bus.send(SubmitOco(first=low_call, second=low_put))
    a, b = g.member_order_ids
    assert {desk.oms.order(a).status, desk.oms.order(b).status} == {OrderStatus.WORKING}
    await desk.bus.send(CancelOrder(order_id=a))
    await wait_for(lambda: desk.oms.order(b).status is OrderStatus.CANCELLED)
    await wait_for(lambda: groups.group(g.group_id).status is GroupStatus.DONE)
    again = await desk.bus.send(SubmitOco(first=buy_call(desk, price=mid - 1.0), second=low_put))
    done = await desk.bus.send(CancelOrderGroup(group_id=again.group_id))
    assert done.status is GroupStatus.CANCELLED
    await wait_for(lambda: all(desk.oms.order(i).status is OrderStatus.CANCELLED for i in again.member_order_ids))


async def test_oco_a_fill_cancels_the_sibling(grouped):
    desk, _ = grouped
    mid = desk.mid(CALL)
    resting = buy_call(desk, price=mid - 1.0)
    put = opt(590, "P")
    marketable = OrderIntent(legs=(Leg(put, Side.BUY),), quantity=1,
                             limit_price=Decimal(f"{desk.market.bid_ask(put)[1]:.2f}"))
    g = await desk.bus.send(SubmitOco(first=resting, second=marketable))
    first, second = g.member_order_ids
    assert desk.oms.order(second).status is OrderStatus.FILLED
    await wait_for(lambda: desk.oms.order(first).status is OrderStatus.CANCELLED)


async def test_the_kill_switch_cancels_whole_groups(grouped):
    desk, groups = grouped
    mid = desk.mid(CALL)
    waiting = await desk.bus.send(SubmitBracket(intent=buy_call(desk, price=mid - 1.0),
                                                take_profit=Decimal(f"{-(mid + 1):.2f}"),
                                                stop=Decimal(f"{-(mid - 2):.2f}")))
    placed = await desk.bus.send(SubmitBracket(intent=buy_call(desk), take_profit=Decimal(f"{-(mid + 1):.2f}"),
                                               stop=Decimal(f"{-(mid - 0.5):.2f}")))
    assert len(placed.member_order_ids) == 2
    await desk.bus.send(TripKillSwitch(reason="test"))
    await wait_for(lambda: groups.group(waiting.group_id).status is GroupStatus.CANCELLED)
    assert groups.group(waiting.group_id).member_order_ids == ()  # its exits are never placed
    ids = [waiting.entry_order_id, *placed.member_order_ids]
    await wait_for(lambda: all(desk.oms.order(i).status is OrderStatus.CANCELLED for i in ids))
    await wait_for(lambda: groups.group(placed.group_id).status.is_terminal)
    assert desk.oms.open_orders() == []


async def test_a_bracket_resumes_after_a_restart_and_places_its_exits_on_the_fill(tmp_path):
    path = tmp_path / "db.sqlite"
    desk, groups = await _start(path)
    mid = desk.mid(CALL)
    g = await desk.bus.send(SubmitBracket(intent=buy_call(desk, price=mid - 0.3), take_profit=Decimal(
        f"{-(mid + 3):.2f}"), stop=Decimal(f"{-(mid - 2):.2f}")))
    entry_id = g.entry_order_id
    assert desk.oms.order(entry_id).status is OrderStatus.WORKING  # below the bid: it rests
    await groups.stop()
    await desk.stop()
    desk, groups = await _start(path)
    try:
        resumed = groups.group(g.group_id)
        assert resumed.status is GroupStatus.ACTIVE and len(resumed.held) == 2
        spot = 600.0
        while desk.oms.order(entry_id).status is not OrderStatus.FILLED:
            spot -= 0.25
            assert spot > 590, "the entry never filled"
            await move_spot(desk, spot)
        await wait_for(lambda: len(groups.group(g.group_id).member_order_ids) == 2)
        members = [desk.oms.order(i) for i in groups.group(g.group_id).member_order_ids]
        assert [m.order_type for m in members] == [OrderType.LIMIT, OrderType.STOP]
        assert all(m.status is OrderStatus.WORKING for m in members)
    finally:
        await groups.stop()
        await desk.stop()


async def test_a_profit_taker_closes_at_half_the_credit_and_goes_when_the_position_is_closed_otherwise(grouped):
    desk, groups = grouped
    intent = desk.put_spread(natural=True)
    g = await desk.bus.send(SubmitProfitTaker(intent=intent, profit_pct=Decimal("0.5")))
    entry = desk.oms.order(g.entry_order_id)
    assert entry.status is OrderStatus.FILLED and entry.avg_fill_price < 0
    (close_id,) = g.member_order_ids
    close = desk.oms.order(close_id)
    assert close.status is OrderStatus.WORKING and close.tif.value == "gtc" and close.tag == f"profit:{g.group_id}"
    assert close.limit_price == (-entry.avg_fill_price * Decimal("0.5")).quantize(Decimal("0.01"))
    assert [leg.side for leg in close.legs] == [Side.BUY, Side.SELL]
    # closed otherwise: buy the spread back at the natural price
    short, long_ = opt(590, "P"), opt(580, "P")
    natural = desk.market.bid_ask(short)[1] - desk.market.bid_ask(long_)[0]
    out = await desk.bus.send(SubmitOrder(intent=OrderIntent(
        legs=(Leg(short, Side.BUY, 1, OpenClose.CLOSE), Leg(long_, Side.SELL, 1, OpenClose.CLOSE)), quantity=1,
        limit_price=Decimal(f"{natural:.2f}"))))
    assert out.status is OrderStatus.FILLED
    await wait_for(lambda: desk.oms.order(close_id).status is OrderStatus.CANCELLED)
    assert "closed otherwise" in desk.oms.order(close_id).reason
    await wait_for(lambda: groups.group(g.group_id).status is GroupStatus.DONE)


async def test_a_profit_share_outside_zero_to_one_is_refused(grouped):
    desk, _ = grouped
    with pytest.raises(OrderGroupError) as err:
        await desk.bus.send(SubmitProfitTaker(intent=desk.put_spread(), profit_pct=Decimal("1.5")))
    assert err.value.code == "bad_profit_pct"


async def test_a_real_engine_takes_bracket_commands_on_its_bus(tmp_path):
    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        await wait_for(lambda: engine.feed.last_chain("SPY") is not None, timeout=10.0)
        chain = engine.feed.last_chain("SPY")
        first = chain.expiries()[1]
        calls = np.nonzero((chain.expiry == first) & chain.is_call & (chain.bid > 3.0))[0]
        row = int(calls[np.argmin(np.abs(chain.strike[calls] - chain.spot))])
        mid = 0.5 * (chain.bid[row] + chain.ask[row])
        intent = OrderIntent(legs=(Leg(chain.option(row), Side.BUY),), quantity=1,
                             limit_price=Decimal(f"{chain.ask[row] + 0.05:.2f}"))
        g = await engine.bus.send(SubmitBracket(intent=intent, take_profit=Decimal(f"{-(mid + 5):.2f}"),
                                                stop=Decimal(f"{-(mid - 2):.2f}")))
        assert engine.oms.order(g.entry_order_id).status is OrderStatus.FILLED
        assert [engine.oms.order(i).status for i in g.member_order_ids] == [OrderStatus.WORKING] * 2
        done = await engine.bus.send(CancelOrderGroup(group_id=g.group_id))
        assert done.status is GroupStatus.CANCELLED
        await wait_for(lambda: all(engine.oms.order(i).status is OrderStatus.CANCELLED for i in g.member_order_ids))


async def test_cancelling_a_waiting_bracket_cancels_its_entry_and_forgets_its_exits(grouped):
    desk, groups = grouped
    mid = desk.mid(CALL)
    g = await desk.bus.send(SubmitBracket(intent=buy_call(desk, price=mid - 1.0),
                                          take_profit=Decimal(f"{-(mid + 1):.2f}"), stop=Decimal(f"{-(mid - 2):.2f}")))
    done = await desk.bus.send(CancelOrderGroup(group_id=g.group_id))
    assert done.status is GroupStatus.CANCELLED and done.held == ()
    await wait_for(lambda: desk.oms.order(g.entry_order_id).status is OrderStatus.CANCELLED)
    assert groups.groups() == [] and groups.repo.get(g.group_id).status is GroupStatus.CANCELLED
    with pytest.raises(OrderGroupError) as err:
        await desk.bus.send(CancelOrderGroup(group_id="grp-none"))
    assert err.value.code == "unknown_group"
