"""One clock in behaviour: an engine on a simulated day far from today stamps everything with that day.

Also the engine's session status (is the real market open while the simulated one runs?) and the two
commands that move the simulated clock: restart the day, jump to the real session.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest

from engine.bus import (
    ApproveOrder,
    CancelOrder,
    Event,
    JumpToNextRealSession,
    RestartSimulatedDay,
    SessionStatus,
    SimulatedClockMoved,
    SubmitOrder,
)
from engine.clock import ManualClock, format_market_time
from engine.core import Engine, EngineConfig
from engine.market.feed import FeedError
from engine.market.simulated.market import SimulatedMarket
from engine.model import Leg, OrderIntent, OrderStatus, OrderType, Side
from engine.settings import Settings
from engine.surface.config import SurfaceConfig
from tests.sim_start import SIM_START, pinned_settings

#: a simulated Tuesday years before any plausible wall clock this suite runs on
FAR_START = date(2019, 3, 5)
#: a real Saturday night (New York), the wall clock the engines here believe in
SATURDAY_NIGHT = datetime(2026, 3, 7, 23, 51, tzinfo=UTC)  # 18:51 EST


def _settings(start: date, **oms: object) -> Settings:
    s = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")), start=start)
    return s.model_copy(update={"oms": s.oms.model_copy(update=oms)})


def _config(tmp_path, start: date = SIM_START, wall: datetime = SATURDAY_NIGHT, **oms: object) -> EngineConfig:
    return EngineConfig.for_directory(tmp_path, settings=_settings(start, **oms), clock_interval_s=0.05,
                                      wall_clock=ManualClock(wall))


async def _until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _intent(engine: Engine, *, marketable: bool, call: bool = True) -> OrderIntent:
    """Buy one near-the-money SPY option: at the ask + 5c (fills) or 20c under the bid (rests)."""
    chain = engine.feed.last_chain("SPY")
    first = chain.expiries()[1]
    calls = np.nonzero((chain.expiry == first) & (chain.is_call == call) & (chain.bid > 0.5))[0]
    row = int(calls[np.argmin(np.abs(chain.strike[calls] - chain.spot))])
    price = chain.ask[row] + 0.05 if marketable else chain.bid[row] - 0.20
    return OrderIntent(legs=(Leg(chain.option(row), Side.BUY),), quantity=1, order_type=OrderType.LIMIT,
                       limit_price=Decimal(f"{price:.2f}"))


async def test_engine_on_a_far_simulated_day_when_orders_flow_then_every_stamp_is_simulated_time(tmp_path):
    events: list[Event] = []
    async with Engine(_config(tmp_path, start=FAR_START, approval_in_paper=True)) as engine:
        engine.bus.subscribe(Event, events.append, name="test:all")
        t0 = engine.feed.market.session_open  # the simulated market opens its first day at the open
        assert t0.date() == FAR_START and engine.now() >= t0
        await _until(lambda: engine.feed.last_chain("SPY") is not None, what="a SPY chain")

        filled = await engine.bus.send(SubmitOrder(intent=_intent(engine, marketable=True)))
        # a put: its delta offsets the call's, so the delta limit lets both through
        resting = await engine.bus.send(SubmitOrder(intent=_intent(engine, marketable=False, call=False)))
        too_big = _intent(engine, marketable=True)
        denied = await engine.bus.send(SubmitOrder(intent=replace(too_big, quantity=5000)))
        assert denied.status is OrderStatus.DENIED
        for o in (filled, resting):
            assert o.status is OrderStatus.PENDING_APPROVAL, o.reason
            await engine.bus.send(ApproveOrder(order_id=o.order_id))
        await _until(lambda: engine.oms.order(filled.order_id).status is OrderStatus.FILLED, what="the fill")
        await _until(lambda: engine.oms.order(resting.order_id).status is OrderStatus.WORKING, what="working")
        await engine.bus.send(CancelOrder(order_id=resting.order_id))
        await _until(lambda: engine.oms.order(resting.order_id).status is OrderStatus.CANCELLED, what="cancel")
        # a market-data event too (the feed publishes the underlying every tick)
        await _until(lambda: any(type(e).__name__ == "UnderlyingUpdated" for e in events), what="an underlying tick")
        await engine.bus.idle()
        t1 = engine.now()
        store = engine.store

        def in_sim(ts: datetime | str | None, what: str) -> None:
            ts = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
            assert ts is not None and t0 <= ts <= t1, f"{what} at {ts}, outside the simulated [{t0}, {t1}]"

        for o in store.orders.list():
            in_sim(o.created_at, f"order {o.order_id} created_at")
            in_sim(o.updated_at, f"order {o.order_id} updated_at")
            for ev in store.orders.events(o.order_id):
                in_sim(ev["ts"], f"order event {ev['status']}")
        fills = store.fills.list()
        assert fills
        for f in fills:
            in_sim(f.ts, f"fill {f.fill_id}")
        approvals = store.query("SELECT decision, ts FROM approvals")
        assert {r["decision"] for r in approvals} >= {"pending", "approved"}
        for r in approvals:
            in_sim(r["ts"], f"approval {r['decision']}")
        audit = store.audit.list()
        assert any(a["action"] == "approval:approved" for a in audit)
        for a in audit:
            in_sim(a["ts"], f"audit {a['action']}")
        denials = store.query("SELECT ts FROM risk_events WHERE kind='order_denied'")
        assert denials
        for r in denials:
            in_sim(r["ts"], "risk event order_denied")
        for r in store.query("SELECT key, updated_at FROM kv"):
            in_sim(r["updated_at"], f"kv {r['key']}")
        kinds = {type(e).__name__ for e in events}
        assert {"OrderPendingApproval", "OrderFilled", "OrderCancelled", "OrderDenied", "UnderlyingUpdated"} <= kinds
        for e in events:
            in_sim(e.ts, f"event {type(e).__name__}")
    assert abs((datetime.now(UTC) - t1).days) > 300  # the simulated day really is far from the wall clock


def test_session_status_text_when_simulated_and_real_market_closed_then_says_so_with_next_open():
    sim = datetime(2026, 12, 7, 14, 31, 5, tzinfo=UTC)
    nxt = datetime(2026, 12, 7, 14, 30, tzinfo=UTC) + timedelta(days=2)
    text = SessionStatus(now=sim, market_open=True, simulated=True, real_open=False, real_next_open=nxt).describe()
    assert text == ("simulated session Mon 07 Dec 2026 09:31:05 EST — real market closed "
                    "(opens Wed 09 Dec 2026 09:30:00 EST)")
    summer = datetime(2026, 7, 6, 20, 5, tzinfo=UTC)
    assert SessionStatus(now=summer, market_open=False, simulated=True, real_open=True).describe() == \
        "simulated market closed · Mon 06 Jul 2026 16:05:00 EDT — real market open"
    assert SessionStatus(now=summer, market_open=False, simulated=False).describe() == \
        "market closed · Mon 06 Jul 2026 16:05:00 EDT"
    assert SessionStatus(now=summer, market_open=True, simulated=True, real_open=None).describe() == \
        "simulated session Mon 06 Jul 2026 16:05:00 EDT"


async def test_bus_when_message_has_no_time_then_stamped_with_the_bus_clock_else_kept():
    from engine.bus import Alert, Bus

    sim = ManualClock(datetime(2019, 3, 5, 15, 0, tzinfo=UTC))
    bus = Bus(clock=sim)
    seen: list[Alert] = []
    bus.subscribe(Alert, seen.append)
    bus.publish(Alert(level="info", source="t", message="no time"))
    given = datetime(2019, 3, 5, 14, 0, tzinfo=UTC)
    bus.publish(Alert(level="info", source="t", message="timed", ts=given))
    assert [a.ts for a in seen] == [sim.now(), given]


def test_format_market_time_when_naive_then_clear_error():
    assert format_market_time(None) == ""
    with pytest.raises(ValueError, match="no time zone"):
        format_market_time(datetime(2026, 1, 5, 10, 0))


async def test_session_status_when_wall_clock_on_a_saturday_night_then_real_market_closed_until_monday(tmp_path):
    async with Engine(_config(tmp_path)) as engine:
        status = engine.session_status()
        assert status.simulated and status.real_open is False
        assert status.real_next_open == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)  # Monday 09:30 EDT (DST from 8 March)
        assert status.now.date() == SIM_START
        seen: list[SessionStatus] = []
        engine.bus.subscribe(SessionStatus, seen.append, name="test:session")
        await _until(lambda: bool(seen), what="a published SessionStatus")
        assert seen[-1].describe().endswith("— real market closed (opens Mon 09 Mar 2026 09:30:00 EDT)")
        engine.wall_clock.set(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))  # Tuesday 11:00 New York
        status = engine.session_status()
        assert status.real_open is True and status.real_next_open is None


def test_restarted_day_when_market_advanced_then_replays_the_same_path_from_the_open():
    from engine.market.config import SimulatorConfig

    cfg = SimulatorConfig(seed=11).restricted_to(["SPY"])
    m = SimulatedMarket(cfg, start=SIM_START)
    opening, at_open = m.spots(), m.now
    m.advance(3600.0)
    an_hour_in = m.spots()
    assert an_hour_in != opening
    again = m.restarted_day()
    assert again.now == at_open == again.session_open
    assert again.spots() == opening
    again.advance(3600.0)
    assert again.spots() == an_hour_in  # the day's path, not a new one
    resumed = SimulatedMarket.from_state(cfg, again.state())  # the open survives a save and resume
    assert resumed.restarted_day().spots() == opening


async def test_restart_day_command_when_sent_then_clock_back_at_the_open_audited_published_and_resumed(tmp_path):
    moved: list[SimulatedClockMoved] = []
    async with Engine(_config(tmp_path)) as engine:
        engine.bus.subscribe(SimulatedClockMoved, moved.append, name="test:moved")
        open_ = engine.feed.market.session_open
        engine.feed.set_fast(True)  # race through the day so the restart visibly moves the clock back
        await _until(lambda: engine.now() > open_ + timedelta(hours=2), what="the simulated day to run")
        engine.feed.set_fast(False)
        before = engine.now()
        now = await engine.bus.send(RestartSimulatedDay(by="tester"))
        assert now == open_ and engine.now() < before
        assert engine.clock.now() == engine.feed.market.now  # the engine clock is the new market's
        audit = engine.store.audit.list("simulated_clock:restart_day")
        assert audit[-1]["actor"] == "tester" and audit[-1]["detail"]["to"] == open_.isoformat()
        assert moved and moved[-1].now == open_ and moved[-1].previous >= before
        restarted_at = engine.now()
    async with Engine(_config(tmp_path)) as again:  # the simulated clock resumes from the store
        assert again.feed.resumed
        assert restarted_at <= again.now() < restarted_at + timedelta(minutes=5)


async def test_jump_command_when_real_market_closed_then_simulation_opens_at_the_next_real_session(tmp_path):
    async with Engine(_config(tmp_path, start=FAR_START)) as engine:
        now = await engine.bus.send(JumpToNextRealSession())
        monday_open = datetime(2026, 3, 9, 13, 30, tzinfo=UTC)  # 09:30 EDT (DST began on 8 March 2026)
        assert now == monday_open == engine.now()
        assert engine.feed.market_open()
        audit = engine.store.audit.list("simulated_clock:jump_to_real_session")
        assert audit[-1]["detail"]["wall"] == SATURDAY_NIGHT.isoformat()
        await _until(lambda: engine.feed.last_chain("SPY") is not None
                     and engine.feed.last_chain("SPY").ts >= monday_open, what="chains of the new day")


async def test_clock_commands_when_feed_is_not_simulated_then_refused_with_a_reason(tmp_path):
    cfg = EngineConfig.for_directory(tmp_path, feed="none", settings=_settings(SIM_START))
    async with Engine(cfg) as engine:
        with pytest.raises(FeedError, match="simulated market is not running"):
            await engine.bus.send(RestartSimulatedDay())
        with pytest.raises(FeedError, match="simulated market is not running"):
            await engine.bus.send(JumpToNextRealSession())
        assert engine.store.audit.list("simulated_clock:restart_day") == []
