"""PaperBroker on a real bus and a real SQLite store: events, persistence, restart, live feed input."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from engine.brokers.paper import PaperBroker
from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.bus import Bus
from engine.bus.events import (
    AccountUpdated,
    ChainUpdated,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PositionChanged,
)
from engine.clock import ManualClock
from engine.market.simulated import SimulatedFeed
from engine.market.simulated.market import market_calendar_for
from engine.model import OrderType
from engine.store import Store

from .conftest import NOW, opt, order, xyz_chain


class Recorder:
    def __init__(self, bus: Bus) -> None:
        self.events: list[Event] = []
        bus.subscribe(Event, self.events.append)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def _broker(bus: Bus, store: Store, **cfg) -> PaperBroker:
    config = PaperConfig(fees="tastytrade", **cfg)
    return PaperBroker(bus, store, config, clock=ManualClock(NOW),
                       exchange=PaperExchange(config, calendar=market_calendar_for(NOW.date())))


async def test_orders_publish_events_and_survive_a_restart(tmp_path):
    path = tmp_path / "od.sqlite"
    bus = Bus()
    rec = Recorder(bus)
    store = Store.open(path)
    broker = _broker(bus, store)
    await broker.connect()
    bus.publish(ChainUpdated(chain=xyz_chain()))
    filled = order([(opt(100), "buy", 1)], qty=3, price="1.60")
    resting = order([(opt(105), "buy", 1)], qty=2, price="1.00")
    await broker.submit(filled)
    await broker.submit(resting)
    await broker.submit(order([(opt(101), "buy", 1)]))
    assert [e.order.order_id for e in rec.of(OrderAccepted)] == [filled.order_id, resting.order_id]
    fills = rec.of(OrderFilled)
    assert len(fills) == 1 and fills[0].fills[0].quantity == 3 and fills[0].fills[0].fee == Decimal("3.39")
    rejected = rec.of(OrderRejected)
    assert len(rejected) == 1 and "unknown contract" in rejected[0].order.reason
    assert rec.of(PositionChanged)[0].position.quantity == 3
    snap = rec.of(AccountUpdated)[-1].account
    assert snap.cash == Decimal("100000") - Decimal("480") - Decimal("3.39")
    assert [p.quantity for p in store.positions.list("PAPER")] == [3]  # mirrored in the shared table
    await broker.disconnect()
    store.close()

    # restart: a new store connection and a new broker resume cash, positions and the working order
    bus2 = Bus()
    rec2 = Recorder(bus2)
    store2 = Store.open(path)
    again = _broker(bus2, store2)
    await again.connect()
    assert (await again.account()).cash == snap.cash
    assert [p.quantity for p in await again.positions()] == [3]
    assert [o.order_id for o in await again.open_orders()] == [resting.order_id]
    assert len(await again.fills()) == 1
    bus2.publish(ChainUpdated(chain=xyz_chain({(105, "C"): (0.90, 0.95)})))  # the resting order crosses
    late = rec2.of(OrderFilled)
    assert late and late[0].order.order_id == resting.order_id and late[0].fills[0].price == Decimal("1.0000")
    await again.cancel(resting)  # no longer working: a warning, not a crash
    assert not rec2.of(OrderCancelled)
    await bus.close()
    await bus2.close()
    store2.close()


async def test_cancel_publishes_and_persists(tmp_path):
    bus = Bus()
    rec = Recorder(bus)
    store = Store.open(tmp_path / "c.sqlite")
    broker = _broker(bus, store)
    await broker.connect()
    bus.publish(ChainUpdated(chain=xyz_chain()))
    o = order([(opt(100), "buy", 1)], price="1.00")
    await broker.submit(o)
    await broker.cancel(o)
    assert rec.of(OrderCancelled)[0].order.order_id == o.order_id
    assert store.query("SELECT status FROM paper_orders WHERE order_id=?", (o.order_id,))[0]["status"] == "cancelled"
    preview = await broker.preview(order([(opt(100), "buy", 1)], qty=2, price="1.60"))
    assert preview.commission == Decimal("2.26") and preview.buying_power_effect == Decimal("-320.00")
    await bus.close()
    store.close()


async def test_paper_fills_against_the_simulated_feed_events(tmp_path):
    bus = Bus()
    rec = Recorder(bus)
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=NOW.date())
    broker = PaperBroker(bus, None, PaperConfig(), clock=feed.clock)
    await broker.connect()
    feed.step_to(feed.market.now + timedelta(seconds=1))
    chain = feed.last_chain("SPY")
    row = int(abs(chain.strike - chain.spot).argmin())
    contract = chain.option(row)
    await broker.submit(order([(contract, "buy", 1)], price=f"{chain.ask[row]:.2f}"))
    fill = rec.of(OrderFilled)[0].fills[0]
    assert fill.price == Decimal(f"{chain.ask[row]:.4f}") and fill.ts == feed.market.now
    for _ in range(5):
        feed.step_to(feed.market.now + timedelta(minutes=1))
    snap = await broker.account()
    marked = float(snap.net_liquidation - snap.cash)  # the option's value at the latest mid
    latest = feed.last_chain("SPY")
    r = latest.row_of(contract.key)
    assert marked == pytest.approx(100 * (latest.bid[r] + latest.ask[r]) / 2, abs=0.01)
    assert snap.ts == feed.market.now
    await bus.close()


async def test_zero_dte_position_settles_at_the_simulated_close(tmp_path):
    from engine.brokers.paper import PositionsSettled
    from engine.model import Equity

    bus = Bus()
    rec = Recorder(bus)
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=NOW.date())
    broker = PaperBroker(bus, Store.open(tmp_path / "z.sqlite"), PaperConfig(fees="zero"), clock=feed.clock)
    await broker.connect()
    feed.step_to(feed.market.now + timedelta(seconds=1))
    chain = feed.last_chain("SPY")
    today = chain.for_expiry(feed.market.session)
    row = int(((~today.is_call) * 1e9 + abs(today.strike - (today.spot - 8))).argmin())  # ITM-ish call 8 below
    contract = today.option(row)
    await broker.submit(order([(contract, "buy", 1)], price=f"{today.ask[row]:.2f}"))
    assert rec.of(OrderFilled)
    feed.step_to(feed.market.session_close + timedelta(seconds=1))
    settled = rec.of(PositionsSettled)
    assert settled and {f.kind for f in settled[0].fills} <= {"exercise", "expiration"}
    close = feed.market.marks[feed.market.session].close["SPY"]
    positions = {p.symbol: p for p in await broker.positions()}
    assert contract.key not in positions
    assert close - float(contract.strike) >= 0.01  # seed 7: SPY does not fall 8 points by the close
    assert positions["SPY"].quantity == 100 and isinstance(positions["SPY"].instrument, Equity)
    assert [f.kind for f in settled[0].fills] == ["exercise", "exercise"]
    await bus.close()


async def test_reset_starts_over_without_reusing_ids(tmp_path):
    bus = Bus()
    rec = Recorder(bus)
    store = Store.open(tmp_path / "r.sqlite")
    broker = PaperBroker(bus, store, PaperConfig(fees="zero"), clock=ManualClock(NOW))  # XYZ expires 18 Dec 2026
    await broker.connect()
    bus.publish(ChainUpdated(chain=xyz_chain()))
    await broker.submit(order([(opt(100), "buy", 1)], price="1.60"))
    first = rec.of(OrderFilled)[0].fills[0].fill_id
    broker.reset_account()
    assert (await broker.account()).cash == Decimal(100000) and not await broker.positions()
    assert store.positions.list("PAPER") == [] and await broker.fills() == []
    await broker.disconnect()
    again = PaperBroker(bus, store, PaperConfig(fees="zero"), clock=ManualClock(NOW))
    await again.connect()  # the reset account is what resumes
    bus.publish(ChainUpdated(chain=xyz_chain()))
    await again.submit(order([(opt(100), "buy", 1)], price="1.60"))
    second = rec.of(OrderFilled)[-1].fills[0].fill_id
    assert second != first
    assert len(await again.fills()) == 1
    await bus.close()
    store.close()


async def test_simulated_ex_dividend_triggers_early_assignment_of_deep_itm_short_calls():
    from datetime import date

    from engine.brokers.paper import PositionsSettled
    from engine.market.simulated import ExDividendAhead

    bus = Bus()
    rec = Recorder(bus)
    feed = SimulatedFeed.quickstart(bus, symbols=("SPY",), start=date(2026, 12, 17))  # SPY goes ex on the 18th
    broker = PaperBroker(bus, None, PaperConfig(fees="zero", early_assignment=True, check_buying_power=False),
                         clock=feed.clock)
    await broker.connect()
    feed.step_to(feed.market.now + timedelta(seconds=1))
    chain = feed.last_chain("SPY")
    sub = chain.for_expiry(chain.expiry_dates()[3])
    row = int(((~sub.is_call) * 1e9 + abs(sub.strike - sub.spot * 0.9)).argmin())  # call ~10 % in the money
    contract = sub.option(row)
    await broker.submit(order([(contract, "sell", 1)], price=None, kind=OrderType.MARKET))
    assert rec.of(OrderFilled)
    feed.step_to(feed.market.session_close + timedelta(seconds=1))
    announced = rec.of(ExDividendAhead)
    assert [(e.symbol, e.ex_date) for e in announced] == [("SPY", date(2026, 12, 18))]
    settled = rec.of(PositionsSettled)
    assert settled and {f.kind for f in settled[0].fills} == {"early_assignment"}
    positions = {p.symbol: p.quantity for p in await broker.positions()}
    assert contract.key not in positions and positions["SPY"] == -100
    await bus.close()
