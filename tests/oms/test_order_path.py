from decimal import Decimal

import pytest
from oms_harness import Harness, wait_for

from engine.bus.commands import (
    ApproveOrder,
    CancelAllOrders,
    CancelOrder,
    SetApprovalMode,
    SubmitOrder,
)
from engine.bus.events import OrderDenied, OrderFilled, OrderPendingApproval
from engine.model import OrderStatus


async def test_submit_when_marketable_spread_then_filled_and_every_step_persisted(desk):
    order = await desk.bus.send(SubmitOrder(intent=desk.put_spread(natural=True)))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.FILLED)
    steps = [e["detail"]["step"] for e in desk.store.orders.events(order.order_id)]
    assert steps[:3] == ["intent", "approved", "submitted"]
    assert "fill" in steps and steps.index("submitted") < steps.index("fill")
    stored = desk.store.orders.get(order.order_id)
    assert stored.status is OrderStatus.FILLED and stored.client_order_id == order.client_order_id
    assert len(desk.store.fills.list(order.order_id)) == 2
    assert desk.of(OrderFilled)
    assert desk.portfolio.quantity("SPY260220P00590000") == -1


async def test_submit_when_limits_breached_then_order_denied_event_carries_checks(desk):
    order = await desk.bus.send(SubmitOrder(intent=desk.put_spread(qty=10)))
    assert order.status is OrderStatus.DENIED
    ev = desk.of(OrderDenied)[-1]
    names = {c.name for c in ev.checks}
    assert "max_loss_per_trade" in names
    c = next(c for c in ev.checks if c.name == "max_loss_per_trade")
    assert c.limit == pytest.approx(2000.0) and c.value > 2000.0
    assert desk.store.query("SELECT kind FROM risk_events WHERE order_id=?", (order.order_id,))[0]["kind"] == \
        "order_denied"
    assert not desk.risk.has_reservation(order.order_id)


async def test_submit_when_intent_invalid_then_denied_with_reason_and_stored(desk):
    intent = desk.put_spread()
    bad = type(intent)(legs=intent.legs, quantity=0, limit_price=intent.limit_price)
    order = await desk.bus.send(SubmitOrder(intent=bad))
    assert order.status is OrderStatus.DENIED and "quantity" in order.reason
    assert desk.of(OrderDenied)[-1].checks[0].name == "order_valid"


async def test_submit_when_client_order_id_reused_then_no_second_order(desk):
    first = await desk.oms.submit(desk.put_spread(client_order_id="od-fixed-1"))
    again = await desk.oms.submit(desk.put_spread(client_order_id="od-fixed-1"))
    assert again.order_id == first.order_id
    assert len(desk.store.query("SELECT 1 FROM orders WHERE client_order_id='od-fixed-1'")) == 1


async def test_approval_when_on_then_pending_with_preview_and_approve_sends(desk):
    await desk.bus.send(SetApprovalMode(enabled=True, by="alice"))
    order = await desk.bus.send(SubmitOrder(intent=desk.put_spread()))
    assert order.status is OrderStatus.PENDING_APPROVAL
    pending = desk.oms.pending_approvals()
    assert [p.order.order_id for p in pending] == [order.order_id]
    pv = pending[0].preview
    assert pv.max_loss == pytest.approx(1000 - 100 * float(-order.limit_price))
    assert pv.breakevens and pv.defined_risk and pv.buying_power_source == "broker"
    assert pv.buying_power_effect < 0
    assert pv.greeks_change["beta_delta"] > 0  # a short put spread adds delta
    assert "max_loss_per_trade" in pv.headroom
    assert desk.of(OrderPendingApproval)[-1].preview is pv
    done = await desk.bus.send(ApproveOrder(order_id=order.order_id, by="bob"))
    assert done.status in (OrderStatus.WORKING, OrderStatus.FILLED)
    decisions = [h["decision"] for h in desk.oms.gate.history(order.order_id)]
    assert decisions == ["pending", "approved"]
    assert desk.oms.gate.history(order.order_id)[1]["by"] == "bob"


async def test_approval_when_not_decided_in_time_then_expires_and_is_audited(tmp_path):
    from engine.oms.config import OmsConfig

    h = await Harness(tmp_path / "db.sqlite", oms_config=OmsConfig(approval_in_paper=True,
                                                                   approval_expiry_s=0.1)).start()
    try:
        order = await h.oms.submit(h.put_spread())
        await wait_for(lambda: h.oms.order(order.order_id).status is OrderStatus.EXPIRED, 2.0)
        assert not h.oms.pending_approvals() and not h.risk.has_reservation(order.order_id)
        assert [d["decision"] for d in h.oms.gate.history(order.order_id)] == ["pending", "expired"]
    finally:
        await h.stop()


async def test_reject_and_modify_when_pending_then_recorded_with_reason(desk):
    from engine.bus.commands import ModifyOrderPrice, RejectOrder

    await desk.bus.send(SetApprovalMode(enabled=True))
    a = await desk.oms.submit(desk.put_spread())
    modified = await desk.bus.send(ModifyOrderPrice(order_id=a.order_id, limit_price=a.limit_price - Decimal("0.05"),
                                                    by="carol"))
    assert modified.limit_price == a.limit_price - Decimal("0.05")
    assert desk.oms.pending_approvals()[0].preview.limit_price == float(modified.limit_price)
    rejected = await desk.bus.send(RejectOrder(order_id=a.order_id, reason="too early", by="carol"))
    assert rejected.status is OrderStatus.REJECTED and "too early" in rejected.reason
    from engine.bus.events import OrderRejected

    assert desk.of(OrderRejected)[-1].order.order_id == a.order_id
    assert not any(e.order.order_id == a.order_id for e in desk.of(OrderDenied))
    assert not desk.risk.has_reservation(a.order_id)
    hist = desk.oms.gate.history(a.order_id)
    assert [h["decision"] for h in hist] == ["pending", "modified", "rejected"]
    assert hist[-1]["reason"] == "too early" and hist[-1]["by"] == "carol"


async def test_cancel_when_working_then_cancelled_at_broker_and_reservation_released(desk):
    o = await desk.oms.submit(desk.resting_call())
    assert desk.oms.order(o.order_id).status is OrderStatus.WORKING
    assert desk.risk.has_reservation(o.order_id)
    await desk.bus.send(CancelOrder(order_id=o.order_id))
    await wait_for(lambda: desk.oms.order(o.order_id).status is OrderStatus.CANCELLED)
    assert not desk.risk.has_reservation(o.order_id)
    assert not await desk.paper.open_orders()


async def test_cancel_all_when_orders_working_and_pending_then_all_cancelled(desk):
    for k in (620, 630):
        await desk.oms.submit(desk.resting_call(strike=k))
    await desk.bus.send(SetApprovalMode(enabled=True))
    await desk.oms.submit(desk.put_spread())
    assert [o.status for o in desk.oms.open_orders()] == [OrderStatus.WORKING] * 2 + [OrderStatus.PENDING_APPROVAL]
    n = await desk.bus.send(CancelAllOrders(reason="end of day"))
    assert n == 3
    await wait_for(lambda: not desk.oms.open_orders())
    assert not await desk.paper.open_orders()


async def test_replace_when_working_then_price_changes_at_broker(desk):
    from engine.bus.commands import ReplaceOrder

    o = await desk.oms.submit(desk.resting_call())
    new_price = o.limit_price + Decimal("0.10")
    await desk.bus.send(ReplaceOrder(order_id=o.order_id, limit_price=new_price))
    await wait_for(lambda: desk.oms.order(o.order_id).limit_price == new_price)
    assert (await desk.paper.open_orders())[0].limit_price == new_price


async def test_risk_cli_report_when_engine_wrote_snapshot_then_greeks_and_var_present(desk):
    from engine.risk.cli import risk_report

    before = risk_report(desk.store)
    assert before["greeks"] is None and "no engine" in before["snapshot"]["note"]
    order = await desk.oms.submit(desk.put_spread(natural=True))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.FILLED)
    desk.service.write_snapshot()
    rep = risk_report(desk.store)
    assert rep["greeks"]["total"]["beta_delta"] > 0  # short put spread: long delta
    assert rep["var"]["var"] > 0 and rep["var"]["cvar"] >= rep["var"]["var"]
    assert rep["trading_state"]["state"] == "ACTIVE" and rep["profile"]["max_positions"] == 5
    assert {p["symbol"] for p in rep["positions"]["PAPER"]} == {"SPY260220P00590000", "SPY260220P00580000"}


async def test_restart_when_broker_has_unknown_open_order_then_kill_switch_trips(tmp_path):
    from oms_harness import Harness

    from engine.bus.events import KillSwitchTripped
    from engine.model import Order, OrderType, TimeInForce

    path = tmp_path / "db.sqlite"
    h = await Harness(path).start()
    intent = h.resting_call()
    stray = Order("stray-1", "someone-else-1", intent.legs, 1, OrderType.LIMIT, intent.limit_price, TimeInForce.GTC,
                  OrderStatus.SUBMITTED, intent.legs and h.oms.factory.now(), h.oms.factory.now())
    await h.paper.submit(stray)  # placed at the broker behind the OMS's back (another app, a manual ticket)
    await h.stop()
    h2 = await Harness(path).start()
    try:
        rep = h2.oms.last_reconciliation[-1]
        assert [o.client_order_id for o in rep.unknown_broker_orders] == ["someone-else-1"]
        assert h2.kill_switch.state.value == "HALTED" and "reconciliation mismatch" in h2.kill_switch.status.reason
        assert h2.of(KillSwitchTripped)
    finally:
        await h2.stop()


async def test_restart_when_positions_changed_behind_our_back_then_reducing_with_alert(tmp_path):
    from oms_harness import Harness

    path = tmp_path / "db.sqlite"
    h = await Harness(path).start()
    order = await h.oms.submit(h.put_spread(natural=True))
    await wait_for(lambda: h.oms.order(order.order_id).status is OrderStatus.FILLED)
    await h.stop()
    # the broker's account moved without any fill reaching us (another app traded and its fills are not listed)
    from engine.oms.manager import KV_POSITIONS
    from engine.store import Store

    s = Store.open(path)
    snap = s.kv.get(KV_POSITIONS + "paper")
    assert snap["positions"] == {"SPY260220P00590000": -1, "SPY260220P00580000": 1}
    snap["positions"]["SPY260220P00590000"] = -5
    s.kv.set(KV_POSITIONS + "paper", snap)
    s.close()
    h2 = await Harness(path).start()
    try:
        rep = h2.oms.last_reconciliation[-1]
        assert rep.position_mismatches == [{"symbol": "SPY260220P00590000", "store": -5, "broker": -1}]
        assert h2.kill_switch.state.value == "REDUCING"
        assert {p.symbol: p.quantity for p in h2.store.positions.list("PAPER")}["SPY260220P00590000"] == -1
    finally:
        await h2.stop()


async def test_sizing_when_regime_turns_high_vol_then_smaller_size_and_alert(desk):
    from engine.bus.events import Alert
    from engine.risk.regime import RegimeChanged

    normal = desk.service.size(500.0)
    desk.service.set_regime("high_vol", source="rules")
    shrunk = desk.service.size(500.0)
    assert normal.contracts == 4 and shrunk.contracts == 2  # $2,000 vs $1,000 budget at $500 per contract
    assert desk.of(RegimeChanged)[-1].regime == "high_vol"
    assert any(a.source == "regime" for a in desk.of(Alert))
    kelly = desk.service.size(500.0, p_win=0.7, win_per_contract=300.0)
    assert kelly.kelly_f is not None and "Kelly" in kelly.explain()


async def test_build_order_path_when_started_then_commands_registered_and_orders_flow(tmp_path):
    from oms_harness import spy_chain
    from risk_kit import NOW

    from engine.brokers.paper import PaperBroker
    from engine.brokers.paper_config import PaperConfig
    from engine.bus import Bus
    from engine.bus.commands import SetRiskLevel
    from engine.bus.events import ChainUpdated
    from engine.clock import ManualClock
    from engine.oms.assembly import build_order_path
    from engine.store import Store

    store = Store.open(tmp_path / "db.sqlite")
    bus = Bus()
    paper = PaperBroker(bus, store, PaperConfig(fees="zero"), clock=ManualClock(NOW))
    path = build_order_path(bus, store, brokers={"paper": paper}, now=lambda: NOW)
    await paper.connect()
    bus.publish(ChainUpdated(chain=spy_chain()))
    await path.start()
    try:
        for cmd in (SubmitOrder, ApproveOrder, CancelOrder, CancelAllOrders, SetApprovalMode, SetRiskLevel):
            assert bus.has_handler(cmd)
        await bus.send(SetRiskLevel(level=30))
        assert path.risk.profile.level == 30
        from risk_kit import opt

        from engine.model import Leg, OrderIntent, Side

        short, long_ = opt(590, "P"), opt(580, "P")
        credit = path.market.bid_ask(short)[0] - path.market.bid_ask(long_)[1]
        intent = OrderIntent(legs=(Leg(short, Side.SELL), Leg(long_, Side.BUY)), quantity=1,
                             limit_price=Decimal(f"{-credit:.2f}"))
        order = await bus.send(SubmitOrder(intent=intent))
        assert order.status in (OrderStatus.FILLED, OrderStatus.WORKING)
    finally:
        await path.stop()
        await paper.disconnect()
        await bus.close()
        store.close()


async def test_approval_mode_when_set_then_remembered_after_restart(tmp_path):
    path = tmp_path / "db.sqlite"
    h = await Harness(path).start()
    assert not h.oms.approval_required
    await h.bus.send(SetApprovalMode(enabled=True, by="alice"))
    await h.stop()
    h2 = await Harness(path).start()
    try:
        assert h2.oms.approval_required and h2.oms.gate.enabled["live"] is True
        order = await h2.oms.submit(h2.put_spread())
        assert order.status is OrderStatus.PENDING_APPROVAL
    finally:
        await h2.stop()


@pytest.mark.parametrize("reached", [True, False])
async def test_submit_when_broker_call_fails_then_settled_by_reconciliation_not_resent(desk, reached):
    """A transport error after (or before) the broker got the order: the OMS asks the broker, never resends."""
    from engine.brokers.base import BrokerError
    from engine.brokers.paper import PaperBroker

    paper = desk.paper

    class LostAckPaper(PaperBroker):  # the paper exchange behind a connection that drops the reply
        async def submit(self, order):
            if reached:
                await PaperBroker.submit(paper, order)
            raise BrokerError("connection reset while waiting for the reply")

    paper.__class__ = LostAckPaper
    try:
        order = await desk.oms.submit(desk.resting_call())
    finally:
        paper.__class__ = PaperBroker
    stored = desk.store.orders.get(order.order_id)
    if reached:
        assert stored.status is OrderStatus.WORKING and len(await paper.open_orders()) == 1
    else:  # no answer is no proof it never arrived: held as unknown (issue 14), never called rejected
        assert stored.status is OrderStatus.SUBMITTED and stored.reason.startswith("unknown, reconciling")
        assert not await paper.open_orders()
    assert len(desk.store.orders.list()) == 1


async def test_history_when_closes_stored_then_betas_vols_and_historical_var(desk):
    import numpy as np

    rng = np.random.default_rng(9)
    spy = 600 * np.cumprod(1 + rng.normal(0, 0.01, 120))
    r_spy = np.diff(spy) / spy[:-1]
    qqq = 500 * np.concatenate([[1.0], np.cumprod(1 + 1.4 * r_spy)])
    for i in range(120):
        day = f"2025-{1 + i // 28:02d}-{1 + i % 28:02d}"
        desk.store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?,?,?,?,?)",
                           ("SPY", day, 0.2, float(spy[i]), "test"))
        desk.store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?,?,?,?,?)",
                           ("QQQ", day, 0.25, float(qqq[i]), "test"))
    days = desk.service.calibrate_from_history(["SPY", "QQQ"])
    assert days == 119
    assert desk.risk.beta_of("QQQ") == pytest.approx(1.4, abs=1e-6)
    assert desk.service.vols["SPY"] == pytest.approx(float(np.std(r_spy, ddof=1) * np.sqrt(252)), rel=1e-9)
    order = await desk.oms.submit(desk.put_spread(natural=True))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.FILLED)
    hist = await desk.service.var("historical")
    assert hist.method == "historical" and hist.n_scenarios == 119 and hist.var > 0
    with pytest.raises(ValueError, match="unknown VaR method"):
        await desk.service.var("guess")


async def test_update_regime_when_vix_high_then_high_vol_and_when_no_data_then_neutral(desk):
    assert desk.service.update_regime() == "neutral"  # no VIX quote, no history
    for i in range(30):
        day = f"2025-03-{1 + i:02d}"
        desk.store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?,?,?,?,?)",
                           ("VIX", day, 0.0, 14.0 + i * 0.2, "test"))
        desk.store.execute("INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?,?,?,?,?)",
                           ("SPY", day, 0.2, 600.0 * (1 + 0.01 * (-1) ** i), "test"))
    desk.market.update_spot("VIX", 31.0)
    assert desk.service.update_regime() == "high_vol"
    assert desk.service.size(500.0).contracts == 2  # moderate: 2 % × 0.5 high-vol multiplier
