"""Stop and stop-limit orders on the one order path: validation with clear errors, the risk engine's view of a
stop (its worst-case price, its trigger against the market, a stop-limit's collar), and a stop resting at the
real paper broker until the quotes trigger it — persisted with its trigger in the store."""

from __future__ import annotations

from decimal import Decimal

import pytest
from oms_harness import spy_chain, wait_for
from risk_kit import NOW, opt

from engine.bus.commands import SetApprovalMode, SubmitOrder, TripKillSwitch
from engine.bus.events import ChainUpdated, OrderDenied
from engine.model import Leg, OrderIntent, OrderStatus, OrderType, Side, TimeInForce
from engine.oms.factory import OrderFactory, OrderValidationError
from engine.store import Store


def _intent(side: Side = Side.BUY, *, kind: OrderType = OrderType.STOP, stop: object = "9.00",
            limit: object = None, qty: int = 1, strike: int = 610) -> OrderIntent:
    return OrderIntent(legs=(Leg(opt(strike, "C"), side),), quantity=qty, order_type=kind,
                       limit_price=None if limit is None else Decimal(str(limit)),
                       stop_price=None if stop is None else (stop if not isinstance(stop, str) else Decimal(stop)),
                       tif=TimeInForce.GTC)


def _factory() -> OrderFactory:
    return OrderFactory(lambda: NOW)


@pytest.mark.parametrize(("intent", "code", "words"), [
    (_intent(stop=None), "stop_without_price", "needs a stop (trigger) price"),
    (_intent(limit="9.10"), "market_with_price", "use a stop-limit"),
    (_intent(kind=OrderType.STOP_LIMIT), "limit_without_price", "stop-limit order without a limit price"),
    (_intent(kind=OrderType.LIMIT, limit="1.00"), "stop_price_not_stop", "must not carry a stop price"),
    (_intent(Side.SELL, stop="1.20"), "stop_price_sign", "must be negative"),
    (_intent(stop=Decimal("NaN")), "price_not_finite", "stop price"),
    (_intent(stop="5000000"), "price_out_of_range", "stop price"),
    # a buy triggered at 9.00 with a limit of 8.90: it would rest below the price that triggered it
    (_intent(kind=OrderType.STOP_LIMIT, stop="9.00", limit="8.90"), "limit_behind_trigger", "behind its stop 9.00"),
    # a sell triggered when the credit falls to 1.00 that asks for 1.10
    (_intent(Side.SELL, kind=OrderType.STOP_LIMIT, stop="-1.00", limit="-1.10"), "limit_behind_trigger",
     "a sell's at or below it"),
])
def test_bad_stops_are_refused_with_a_code_and_a_message(intent, code, words):
    with pytest.raises(OrderValidationError) as err:
        _factory().create(intent)
    assert err.value.code == code and words in str(err.value)


def test_a_stop_limit_may_take_its_limit_at_its_stop_or_beyond_it():
    for side, stop, limit in ((Side.BUY, "9.00", "9.00"), (Side.BUY, "9.00", "9.40"), (Side.SELL, "-1.00", "-0.90")):
        order = _factory().create(_intent(side, kind=OrderType.STOP_LIMIT, stop=stop, limit=limit))
        assert (order.stop_price, order.limit_price) == (Decimal(stop), Decimal(limit))


def test_the_factory_puts_the_stop_on_the_tick_and_keeps_it_on_the_order():
    order = _factory().create(_intent(kind=OrderType.STOP_LIMIT, stop="9.004", limit="9.109"))
    assert order.order_type is OrderType.STOP_LIMIT
    assert order.stop_price == Decimal("9.00") and order.limit_price == Decimal("9.10")
    assert _factory().create(_intent(Side.SELL, stop="-1.205")).stop_price == Decimal("-1.21")


def test_stop_price_round_trips_through_the_store(tmp_path):
    store = Store.open(tmp_path / "db.sqlite")
    try:
        order = _factory().create(_intent(kind=OrderType.STOP_LIMIT, stop="9.00", limit="9.10"))
        store.orders.save(order)
        back = store.orders.get(order.order_id)
        assert back.order_type is OrderType.STOP_LIMIT and back.stop_price == Decimal("9.00")
        assert back.limit_price == Decimal("9.10")
    finally:
        store.close()


def _check(desk, intent: OrderIntent):
    return desk.risk.check(_factory().create(intent), consume=False)


async def test_risk_judges_a_stop_at_its_trigger_for_max_loss(desk):
    mid = desk.mid(opt(610, "C"))
    stop = round(mid + 1.0, 2)
    decision = _check(desk, _intent(stop=f"{stop:.2f}", qty=3))
    loss = next(c for c in decision.results if c.name == "max_loss_per_trade")
    assert loss.value == pytest.approx(stop * 100 * 3, rel=1e-6)  # a long call loses what it paid: the stop


async def test_risk_denies_a_stop_that_is_already_through_the_market(desk):
    mid = desk.mid(opt(610, "C"))
    below = _check(desk, _intent(stop=f"{mid - 0.5:.2f}"))
    check = next(c for c in below.results if c.name == "stop_price")
    assert not below.passed and not check.passed and "would trigger at once" in check.message
    sell_above = _check(desk, _intent(Side.SELL, stop=f"{-(mid + 0.5):.2f}"))
    assert not next(c for c in sell_above.results if c.name == "stop_price").passed
    ok = _check(desk, _intent(stop=f"{mid + 0.5:.2f}"))
    assert next(c for c in ok.results if c.name == "stop_price").passed


async def test_a_stop_limit_whose_limit_is_far_from_its_stop_is_collared(desk):
    mid = desk.mid(opt(610, "C"))
    far = _check(desk, _intent(kind=OrderType.STOP_LIMIT, stop=f"{mid + 0.5:.2f}", limit=f"{mid + 5.5:.2f}"))
    collar = next(c for c in far.results if c.name == "price_collar")
    assert not collar.passed and "from its stop" in collar.message
    near = _check(desk, _intent(kind=OrderType.STOP_LIMIT, stop=f"{mid + 0.5:.2f}", limit=f"{mid + 0.55:.2f}"))
    assert next(c for c in near.results if c.name == "price_collar").passed


async def test_a_buy_stop_rests_at_the_paper_broker_until_the_market_rises_to_it(desk):
    call = opt(610, "C")
    stop = round(desk.mid(call) + 0.50, 2)
    order = await desk.bus.send(SubmitOrder(intent=_intent(stop=f"{stop:.2f}")))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.WORKING)
    assert desk.store.orders.get(order.order_id).stop_price == Decimal(f"{stop:.2f}")
    spot = 600.0
    while desk.mid(call) < stop:  # the underlying rallies until the call's mid reaches the stop
        spot += 0.5
        desk.bus.publish(ChainUpdated(chain=spy_chain(spot)))
        await wait_for(lambda s=spot: desk.market.spot("SPY") == pytest.approx(s))
        if desk.mid(call) < stop:
            assert desk.oms.order(order.order_id).status is OrderStatus.WORKING
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.FILLED)
    filled = desk.oms.order(order.order_id)
    assert filled.avg_fill_price >= Decimal(f"{stop:.2f}")  # a market order at the ask once triggered
    assert desk.portfolio.quantity(call.key) == 1


async def test_a_stop_below_the_market_never_reaches_the_broker(desk):
    mid = desk.mid(opt(610, "C"))
    order = await desk.bus.send(SubmitOrder(intent=_intent(stop=f"{mid - 0.5:.2f}")))
    assert order.status is OrderStatus.DENIED
    assert any(c.name == "stop_price" and not c.passed for c in desk.of(OrderDenied)[-1].checks)
    assert desk.paper.exchange.working == {}


async def test_the_kill_switch_cancels_a_working_stop(desk):
    mid = desk.mid(opt(610, "C"))
    order = await desk.bus.send(SubmitOrder(intent=_intent(stop=f"{mid + 0.5:.2f}")))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.WORKING)
    await desk.bus.send(TripKillSwitch(reason="test"))
    await wait_for(lambda: desk.oms.order(order.order_id).status is OrderStatus.CANCELLED)
    assert desk.paper.exchange.working == {}


async def test_the_approval_preview_shows_a_stops_trigger(desk):
    await desk.bus.send(SetApprovalMode(enabled=True, by="alice"))
    mid = desk.mid(opt(610, "C"))
    stop = f"{mid + 0.5:.2f}"
    order = await desk.bus.send(SubmitOrder(intent=_intent(kind=OrderType.STOP_LIMIT, stop=stop,
                                                           limit=f"{mid + 0.55:.2f}")))
    assert order.status is OrderStatus.PENDING_APPROVAL
    (pending,) = desk.oms.pending_approvals()
    pv = pending.preview
    assert pv.order_type == "stop_limit" and pv.stop_price == pytest.approx(float(stop))
    assert any(f"reaches {stop}" in n for n in pv.notes)
