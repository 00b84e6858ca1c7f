"""Price walking on a real Engine: the simulated market (pinned start, paused so the test moves its clock), the
paper broker and the one order path. A walk replaces a resting limit step by step toward natural on the engine
clock, never past its limit, and ends on fill, stop, kill switch or disconnect."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

import numpy as np
import pytest
from oms_harness import wait_for

from engine.bus.commands import StartPriceWalk, StopPriceWalk, SubmitOrder, TripKillSwitch
from engine.bus.events import ConnectionStateChanged, Event, PriceWalkUpdated
from engine.core import Engine, EngineConfig
from engine.model import Leg, OrderIntent, OrderStatus, Side
from engine.oms.price_walk import PriceWalkError, next_walk_price
from engine.settings import Settings
from engine.surface.config import SurfaceConfig
from tests.sim_start import pinned_settings


def test_next_price_steps_up_on_the_grid_and_stops_at_natural_or_the_limit() -> None:
    tick = Decimal("0.01")
    walk = dict(mid=2.00, natural=2.10, limit=Decimal("5"), tick=tick)
    assert next_walk_price(Decimal("2.00"), step=Decimal("0.03"), **walk) == Decimal("2.03")
    assert next_walk_price(Decimal("2.09"), step=Decimal("0.03"), **walk) == Decimal("2.10")  # not past natural
    assert next_walk_price(Decimal("2.10"), step=Decimal("0.03"), **walk) is None
    # a quarter of the 0.20 spread is 0.05; a sell (credit) walks up toward a smaller credit the same way
    assert next_walk_price(Decimal("2.00"), step_fraction=0.25, **walk) == Decimal("2.05")
    assert next_walk_price(Decimal("-1.50"), mid=-1.50, natural=-1.40, limit=Decimal("-1.45"), tick=tick,
                           step=Decimal("0.04")) == Decimal("-1.46")
    assert next_walk_price(Decimal("-1.46"), mid=-1.50, natural=-1.40, limit=Decimal("-1.45"), tick=tick,
                           step=Decimal("0.04")) == Decimal("-1.45")  # the limit, never beyond
    assert next_walk_price(Decimal("2.00"), mid=float("nan"), natural=2.1, limit=Decimal(5), tick=tick,
                           step=tick) is None  # no quote: no step
    assert next_walk_price(Decimal("2.00"), step=Decimal("0.001"), **walk) == Decimal("2.01")  # at least a tick


@pytest.fixture
async def sim(tmp_path):
    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        await wait_for(lambda: engine.feed.last_chain("SPY") is not None, timeout=10.0)
        engine.feed.pause()  # the test moves the simulated clock
        events: list[Event] = []
        engine.bus.subscribe(PriceWalkUpdated, events.append, name="test:walks")
        yield engine, events


async def _resting_buy(engine: Engine) -> tuple[str, float, float]:
    """A 1-lot buy of the SPY call with the widest quote (room to walk), resting at its bid."""
    feed = engine.feed
    feed.step_to(feed.market.now + timedelta(seconds=1))
    chain = feed.last_chain("SPY")
    rows = np.nonzero(chain.is_call & (chain.bid > 2.0) & (chain.ask < 15.0))[0]  # under the $2,000 max loss
    row = int(rows[np.argmax(chain.ask[rows] - chain.bid[rows])])  # the widest quote: room to walk
    bid, ask = float(chain.bid[row]), float(chain.ask[row])
    intent = OrderIntent(legs=(Leg(chain.option(row), Side.BUY),), quantity=1,
                         limit_price=Decimal(f"{bid:.2f}"))
    order = await engine.bus.send(SubmitOrder(intent=intent))
    assert order.status is OrderStatus.WORKING, order.reason
    return order.order_id, bid, ask


async def _advance(engine: Engine, seconds: float) -> None:
    feed = engine.feed
    feed.step_to(feed.market.now + timedelta(seconds=seconds))
    await engine.bus.idle()


async def test_a_walk_steps_on_the_engine_clock_never_past_its_limit_and_stops_on_request(sim) -> None:
    engine, events = sim
    oid, bid, ask = await _resting_buy(engine)
    assert ask - bid >= 0.03
    start = engine.oms.order(oid).limit_price
    limit = start + Decimal("0.02")
    walk = await engine.bus.send(StartPriceWalk(order_id=oid, interval_s=30, step=Decimal("0.01"), limit=limit))
    assert walk.state == "walking" and walk.price == start
    await _advance(engine, 10)  # a third of the interval: nothing yet
    assert engine.oms.order(oid).limit_price == start
    prices = [start]
    for _ in range(4):
        await _advance(engine, 30)
        await wait_for(lambda: engine.oms.order(oid).status.is_terminal
                       or engine.order_path.walker.walk(oid).steps >= min(len(prices), 2))
        o = engine.oms.order(oid)
        if o.status.is_terminal:
            break
        prices.append(o.limit_price)
    assert len(prices) >= 2, "the walk never stepped"
    assert all(b >= a for a, b in pairwise(prices))
    assert max(prices) <= limit  # never past the walk's limit
    if not engine.oms.order(oid).status.is_terminal:
        assert prices[-1] == limit
        events_before = len(events)
        ended = await engine.bus.send(StopPriceWalk(order_id=oid))
        assert ended.state == "ended" and "stopped by user" in ended.reason
        assert engine.order_path.walker.walk(oid) is None and len(events) > events_before
        await _advance(engine, 60)
        assert engine.oms.order(oid).limit_price == limit  # the order keeps working where the walk left it
    steps = [e for e in events if e.order_id == oid and e.state == "walking"]
    assert [e.price for e in steps][: len(prices)] == prices[: len(steps)]


async def test_a_walk_reaches_natural_and_ends_when_the_order_fills(sim) -> None:
    engine, events = sim
    oid, _bid, ask = await _resting_buy(engine)
    await engine.bus.send(StartPriceWalk(order_id=oid, interval_s=5, step_fraction=0.5,
                                         limit=Decimal(f"{ask + 1.0:.2f}")))
    for _ in range(40):
        if engine.oms.order(oid).status is OrderStatus.FILLED:
            break
        await _advance(engine, 5)
        await wait_for(lambda: not engine.order_path.walker.stepping(oid))
    order = engine.oms.order(oid)
    assert order.status is OrderStatus.FILLED
    await wait_for(lambda: any(e.order_id == oid and e.state == "ended" for e in events))
    end = next(e for e in events if e.order_id == oid and e.state == "ended")
    assert end.reason == "filled" and end.steps >= 1
    assert engine.order_path.walker.walk(oid) is None


async def test_the_kill_switch_and_a_disconnect_end_walks(sim) -> None:
    engine, events = sim
    oid, _bid, _ask = await _resting_buy(engine)
    await engine.bus.send(StartPriceWalk(order_id=oid, interval_s=30, step=Decimal("0.01"),
                                         limit=Decimal("1000")))
    engine.bus.publish(ConnectionStateChanged(component="feed:simulated", state="disconnected"))
    await wait_for(lambda: engine.order_path.walker.walk(oid) is None)
    assert events[-1].state == "ended" and "feed:simulated disconnected" in events[-1].reason

    await engine.bus.send(StartPriceWalk(order_id=oid, interval_s=30, step=Decimal("0.01"),
                                         limit=Decimal("1000")))
    await engine.bus.send(TripKillSwitch(reason="test trip"))
    await wait_for(lambda: engine.order_path.walker.walk(oid) is None)
    # the trip cancels the order and ends its walk, whichever of the two events comes first
    assert [e.reason for e in events if e.state == "ended"][-1] in ("cancelled", "kill switch: test trip")
    price = engine.oms.order(oid).limit_price
    await _advance(engine, 120)
    assert engine.oms.order(oid).limit_price == price  # nothing moves after the trip


async def test_bad_walks_are_refused_with_the_reason(sim) -> None:
    engine, _events = sim
    oid, _bid, _ask = await _resting_buy(engine)
    price = engine.oms.order(oid).limit_price
    cases = [
        (dict(interval_s=0.1, step=Decimal("0.01"), limit=price + 1), "at least 0.5 s"),
        (dict(interval_s=5, limit=price + 1), "one step"),
        (dict(interval_s=5, step=Decimal("0.01"), step_fraction=0.5, limit=price + 1), "one step"),
        (dict(interval_s=5, step=Decimal("-0.01"), limit=price + 1), "must be positive"),
        (dict(interval_s=5, step_fraction=1.5, limit=price + 1), "at most 1 of the spread"),
        (dict(interval_s=5, step=Decimal("0.01"), limit=price - Decimal("0.10")), "below the order's price"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PriceWalkError, match=message):
            await engine.bus.send(StartPriceWalk(order_id=oid, **kwargs))
    with pytest.raises(PriceWalkError, match="no order"):
        await engine.bus.send(StartPriceWalk(order_id="ord-nope", interval_s=5, step=Decimal("0.01"), limit=price))
    with pytest.raises(PriceWalkError, match="not being walked"):
        await engine.bus.send(StopPriceWalk(order_id=oid))
