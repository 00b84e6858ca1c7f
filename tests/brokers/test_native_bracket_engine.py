"""Native brackets through the one order path: ``SubmitBracket(native=True)`` → order group manager → OrderManager
→ risk → approval → router → tastytrade adapter → one OTOCO at the loopback server; the venue's reports map back to
the group (exits working when the venue triggers them, a filled target ending the group), a cancel of the group
deletes the complex order once, a refused child ends everything, a lost answer is reconciled without a resend; on
the paper broker the engine keeps holding the exits (the reference behaviour)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.brokers.config import BrokersConfig, TastytradeConfig
from engine.bus import SwitchMode
from engine.bus.commands import CancelOrderGroup, SetApprovalMode, SubmitBracket
from engine.core import Engine, EngineConfig
from engine.credentials import CredentialStore
from engine.model import (
    GroupStatus,
    Leg,
    OpenClose,
    Option,
    OrderIntent,
    OrderStatus,
    Right,
    Side,
    TimeInForce,
)
from engine.settings import Settings
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.sim_start import pinned_settings


@asynccontextmanager
async def live_on_tastytrade(tmp_path: Path) -> AsyncIterator[tuple[Engine, FakeTastytrade, Option]]:
    async with FakeTastytrade() as fake:
        brokers = BrokersConfig(tastytrade=TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                            call_timeout_s=3))
        cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
        creds = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        async with Engine(cfg) as engine:
            await engine.connect_broker("tastytrade", credentials=creds)
            await engine.bus.send(SwitchMode(mode="live", broker="tastytrade", confirmed_account_id=fake.account))
            await engine.bus.send(SetApprovalMode(enabled=False))
            assert engine.feed is not None
            await engine.feed.subscribe("SPY", fake.expirations[:1], (580.0, 620.0))
            put = Option("SPY", fake.expirations[0], Decimal(585), Right.PUT)  # not held (the fake holds the 590)
            await wait_until(lambda: engine.market.mid(put) > 0 and engine.market.spot("SPY") > 0,
                             what="broker quotes in the risk engine's market view")
            yield engine, fake, put


def long_put(put: Option, qty: int = 2) -> OrderIntent:
    """Buy the put to open at a price far under the market (it works until the test fills it)."""
    return OrderIntent(legs=(Leg(put, Side.BUY, 1, OpenClose.OPEN),), quantity=qty, limit_price=Decimal("0.05"),
                       tif=TimeInForce.DAY)


def bracket_cmd(engine: Engine, put: Option, *, native: bool | None = True, qty: int = 2) -> SubmitBracket:
    """Target: sell to close well above mid (a credit, so a negative net); stop: sell to close if it falls to 0.02."""
    mid = Decimal(str(engine.market.mid(put))).quantize(Decimal("0.01"))
    return SubmitBracket(intent=long_put(put, qty), take_profit=-(2 * mid + 1), stop=Decimal("-0.02"), native=native)


def complex_posts(fake: FakeTastytrade) -> list[dict[str, Any]]:
    return [b for m, p, b in fake.requests if m == "POST" and p.endswith("/complex-orders")]


def single_posts(fake: FakeTastytrade) -> list[dict[str, Any]]:
    return [b for m, p, b in fake.requests if m == "POST" and p.endswith("/orders")]


def status(engine: Engine, order_id: str | None) -> OrderStatus | None:
    assert engine.oms is not None and order_id is not None
    o = engine.oms.order(order_id) or engine.store.orders.get(order_id)
    return None if o is None else o.status


async def test_native_bracket_goes_out_as_one_otoco_and_the_venue_drives_the_group(tmp_path):
    async with live_on_tastytrade(tmp_path) as (engine, fake, put):
        assert engine.oms is not None
        group = await engine.bus.send(bracket_cmd(engine, put))
        assert group.group_id.startswith("nbk-") and group.held == () and len(group.member_order_ids) == 2
        entry = engine.oms.order(group.entry_order_id)
        exits = [engine.oms.order(i) for i in group.member_order_ids]
        assert entry is not None and entry.tag == f"bracket:{group.group_id}"
        assert all(x is not None and x.quantity == 2 and x.tag == f"oco:{group.group_id}" for x in exits)
        (body,) = complex_posts(fake)
        assert body["type"] == "OTOCO" and single_posts(fake) == []
        assert body["trigger-order"]["external-identifier"] == entry.client_order_id
        assert [o["external-identifier"] for o in body["orders"]] == [x.client_order_id for x in exits]
        # risk judged the exits as closing the position the entry opens (not as naked sales)
        decisions = [engine.store.query("SELECT detail FROM order_events WHERE order_id=? AND status=?",
                                        (x.order_id, OrderStatus.DENIED.value)) for x in exits]
        assert decisions == [[], []]
        assert all(engine.risk.is_reducing(x) for x in exits)
        await wait_until(lambda: status(engine, entry.order_id) is OrderStatus.WORKING, what="entry working")
        assert [status(engine, x.order_id) for x in exits] == [OrderStatus.SUBMITTED] * 2  # Contingent at the venue

        fake.fill(int(engine.oms.order(entry.order_id).broker_order_id))
        await wait_until(lambda: all(status(engine, x.order_id) is OrderStatus.WORKING for x in exits),
                         what="the venue triggered the exits")
        assert status(engine, entry.order_id) is OrderStatus.FILLED
        target = engine.oms.order(exits[0].order_id)
        fake.fill(int(target.broker_order_id))
        await wait_until(lambda: status(engine, exits[1].order_id) is OrderStatus.CANCELLED, what="stop cancelled")
        assert status(engine, exits[0].order_id) is OrderStatus.FILLED
        await wait_until(lambda: engine.order_path.groups.group(group.group_id).status is GroupStatus.DONE, what="group done")
        assert len(complex_posts(fake)) == 1 and len(fake.orders) == 3  # nothing else was sent


async def test_native_bracket_cancel_of_the_group_deletes_the_complex_order_once(tmp_path):
    async with live_on_tastytrade(tmp_path) as (engine, fake, put):
        group = await engine.bus.send(bracket_cmd(engine, put))
        ids = [group.entry_order_id, *group.member_order_ids]
        await wait_until(lambda: status(engine, group.entry_order_id) is OrderStatus.WORKING, what="entry working")
        done = await engine.bus.send(CancelOrderGroup(group_id=group.group_id))
        assert done.status is GroupStatus.CANCELLED
        await wait_until(lambda: all(status(engine, i) is OrderStatus.CANCELLED for i in ids),
                         what="all three cancelled")
        deletes = [p for m, p, _ in fake.requests if m == "DELETE" and "/complex-orders/" in p]
        assert len(deletes) == 1 and {o.status for o in fake.orders.values()} == {"Cancelled"}


async def test_native_bracket_when_the_venue_refuses_a_child_then_nothing_is_placed_and_the_group_ends(tmp_path):
    async with live_on_tastytrade(tmp_path) as (engine, fake, put):
        fake.complex.reject_with = "not enough buying power for the stop"
        group = await engine.bus.send(bracket_cmd(engine, put))
        ids = [group.entry_order_id, *group.member_order_ids]
        await wait_until(lambda: all(status(engine, i) is OrderStatus.REJECTED for i in ids),
                         what="all three rejected")
        await wait_until(lambda: engine.order_path.groups.group(group.group_id).status.is_terminal, what="group ended")
        assert fake.orders == {} and len(complex_posts(fake)) == 1 and single_posts(fake) == []


async def test_native_bracket_when_the_answer_is_lost_mid_submit_then_reconciled_once(tmp_path):
    """The OTOCO is placed but its answer (and the streamer's news) lost: the OMS holds the last member as unknown
    and reconciles; all three are found at the broker by client order id — none lost, none sent twice."""
    async with live_on_tastytrade(tmp_path) as (engine, fake, put):
        assert engine.oms is not None
        fake.server_error_on_place = 502
        fake.hold_pushes = True
        group = await engine.bus.send(bracket_cmd(engine, put))
        fake.server_error_on_place = None
        fake.hold_pushes = False
        ids = [group.entry_order_id, *group.member_order_ids]
        await wait_until(lambda: status(engine, group.entry_order_id) is OrderStatus.WORKING and all(
            status(engine, i) is OrderStatus.SUBMITTED and engine.oms.order(i).broker_order_id
            for i in group.member_order_ids), timeout=15, what="all three found at the broker by reconciliation")
        assert {engine.oms.order(i).broker_order_id for i in ids} == {str(o) for o in fake.orders}
        assert len(fake.orders) == 3 and len(complex_posts(fake)) == 1 and single_posts(fake) == []


async def test_native_bracket_when_our_risk_denies_an_exit_then_the_group_ends_and_nothing_reaches_the_venue(
        tmp_path):
    """The fake account is short two 590 puts: buying two to open and selling them back nets to nothing, so the
    exits close no position (not even the pending one) and need naked-sale buying power the account lacks; the
    entry, held at the adapter for its exits, is cancelled with the group and never sent alone."""
    async with live_on_tastytrade(tmp_path) as (engine, fake, _):
        held_put = Option("SPY", fake.expirations[0], Decimal(590), Right.PUT)
        await wait_until(lambda: engine.market.mid(held_put) > 0, what="a quote for the held put")
        group = await engine.bus.send(bracket_cmd(engine, held_put))
        assert [status(engine, i) for i in group.member_order_ids] == [OrderStatus.DENIED] * 2
        await wait_until(lambda: status(engine, group.entry_order_id) is OrderStatus.CANCELLED, what="entry cancelled")
        g = engine.order_path.groups.group(group.group_id)
        assert g.status is GroupStatus.CANCELLED and "native bracket: exit" in g.reason and "denied" in g.reason
        assert fake.orders == {} and complex_posts(fake) == [] and single_posts(fake) == []


async def test_native_bracket_live_on_ibkr_goes_out_as_parent_and_children_and_tws_drives_the_group(tmp_path):
    from engine.brokers.config import IbkrConfig
    from tests.brokers.fakes.tws_server import FakeTws

    async with FakeTws() as tws:
        brokers = BrokersConfig(ibkr=IbkrConfig(host="127.0.0.1", port=tws.port, client_id=5, call_timeout_s=3,
                                                connect_timeout_s=5))
        cfg = EngineConfig.for_directory(tmp_path, settings=pinned_settings(Settings(brokers=brokers)))
        async with Engine(cfg) as engine:
            await engine.connect_broker("ibkr")
            await engine.bus.send(SwitchMode(mode="live", broker="ibkr", confirmed_account_id=tws.account))
            await engine.bus.send(SetApprovalMode(enabled=False))
            assert engine.feed is not None and engine.oms is not None
            await engine.feed.subscribe("SPY", tws.expirations[:1], (590.0, 610.0))
            put = Option("SPY", tws.expirations[0], Decimal(595), Right.PUT)  # not held (TWS holds the 590)
            await wait_until(lambda: engine.market.mid(put) > 0 and engine.market.spot("SPY") > 0,
                             what="IBKR quotes in the risk engine's market view")
            group = await engine.bus.send(bracket_cmd(engine, put))
            assert group.group_id.startswith("nbk-") and len(group.member_order_ids) == 2
            entry_id, (target_id, stop_id) = group.entry_order_id, group.member_order_ids
            assert [status(engine, i) for i in group.member_order_ids] == [OrderStatus.SUBMITTED] * 2
            await wait_until(lambda: status(engine, entry_id) is OrderStatus.WORKING, what="parent working")
            parent = tws.orders[int(engine.oms.order(entry_id).broker_order_id)]
            children = [o for o in tws.orders.values() if o.parent_id == parent.order_id]
            assert len(children) == 2 and {c.status for c in children} == {"PreSubmitted"}
            tws.fill(parent.order_id)
            await wait_until(lambda: all(status(engine, i) is OrderStatus.WORKING for i in (target_id, stop_id)),
                             what="TWS released the children")
            tws.fill(int(engine.oms.order(target_id).broker_order_id))
            await wait_until(lambda: status(engine, stop_id) is OrderStatus.CANCELLED, what="OCA cancelled the stop")
            await wait_until(lambda: engine.order_path.groups.group(group.group_id).status is GroupStatus.DONE,
                             what="group done")
            assert len(tws.orders) == 3
