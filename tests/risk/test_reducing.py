"""REDUCING: an order "reduces" only by what working closing orders have not already committed.

Issue 14, finding 10: holding +1 call in REDUCING, five separate sell-1 orders used to pass (each compared
alone with the held position), ending four contracts short with no exposure check at all.
"""

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from risk_kit import NOW, Desk, make_order

from engine.model import OrderStatus, Position, Side
from engine.risk.state import TradingState


def _sell(desk: Desk, qty: int, oid: str):
    return make_order([(desk.c610, Side.SELL, 1)], qty, f"-{desk.mid(desk.c610) + 0.5:.2f}", oid=oid)


def _buy(desk: Desk, qty: int, oid: str):
    return make_order([(desk.c610, Side.BUY, 1)], qty, f"{desk.mid(desk.c610) - 0.5:.2f}", oid=oid)


def test_reducing_when_five_sell_one_orders_against_one_held_then_only_the_first_passes():
    desk = Desk()
    desk.risk.config.duplicate_window_s = 0
    desk.risk.set_level(50)  # the profile picks the window up
    desk.hold(desk.c610, 1, "10.00")
    desk.state = TradingState.REDUCING
    decisions = [desk.risk.check(_sell(desk, 1, f"s{i}")) for i in range(5)]
    assert [d.passed for d in decisions] == [True, False, False, False, False]
    denied = {r.name: r for r in decisions[1].failed}
    assert "trading_state" in denied and "REDUCING" in denied["trading_state"].message
    assert "already committed" in denied["trading_state"].message
    assert decisions[1].stage == "trading_state"
    assert not {"duplicate", "order_rate"} & set(denied)  # denied for what it is, not as a repeat


def test_reducing_when_closing_order_cancelled_then_its_quantity_can_be_closed_again():
    desk = Desk()
    desk.risk.config.duplicate_window_s = 0
    desk.risk.set_level(50)
    desk.hold(desk.c610, 2, "10.00")
    desk.state = TradingState.REDUCING
    assert desk.risk.check(_sell(desk, 2, "a")).passed
    assert not desk.risk.check(_sell(desk, 1, "b")).passed
    desk.risk.release("a")  # cancelled
    assert desk.risk.check(_sell(desk, 1, "c")).passed


def test_reducing_when_order_rechecked_then_its_own_reservation_does_not_count_against_it():
    desk = Desk()
    desk.hold(desk.c610, 1, "10.00")
    desk.state = TradingState.REDUCING
    order = _sell(desk, 1, "own")
    assert desk.risk.check(order).passed
    assert desk.risk.is_reducing(order)  # the approval / send re-checks see the order itself as reducing
    assert desk.risk.check(order, consume=False, skip=frozenset({"order_rate", "duplicate"})).passed


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("sell"), st.integers(1, 4)),
        st.tuples(st.just("buy"), st.integers(1, 4)),
        st.tuples(st.just("fill"), st.integers(0, 9), st.integers(1, 4)),
        st.tuples(st.just("cancel"), st.integers(0, 9)),
    ),
    min_size=1, max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(held=st.integers(-3, 3).filter(bool), actions=_actions)
def test_reducing_property_when_random_order_sequence_then_never_beyond_flat(held, actions):
    """Whatever orders are sent, filled in part or cancelled in REDUCING, the position plus every working
    order filled in full never crosses zero, and never grows beyond where it started."""
    desk = Desk(net_liq=10_000_000)
    desk.risk.config.duplicate_window_s = 0
    desk.risk.set_level(50)
    desk.hold(desk.c610, held, "10.00")
    desk.state = TradingState.REDUCING
    key = desk.c610.key
    working: dict[str, object] = {}
    for n, action in enumerate(actions):
        desk.clock[0] += 10.0  # tokens never run out: only the trading state decides
        if action[0] in ("sell", "buy"):
            oid = f"o{n}"
            order = (_sell if action[0] == "sell" else _buy)(desk, action[1], oid)
            if desk.risk.check(order).passed:
                working[oid] = order.evolve(status=OrderStatus.WORKING, updated_at=NOW)
        elif action[0] == "fill" and working:
            oid = sorted(working)[action[1] % len(working)]
            o = working[oid]
            qty = min(action[2], o.remaining_quantity)
            sign = o.legs[0].side.sign
            pos = desk.portfolio.quantity(key) + sign * qty
            desk.portfolio.apply_position(Position(desk.c610, pos, Decimal("10.00")))
            o = o.evolve(updated_at=NOW, filled_quantity=o.filled_quantity + qty,
                         status=OrderStatus.FILLED if o.filled_quantity + qty >= o.quantity
                         else OrderStatus.PARTIALLY_FILLED)
            desk.risk.update_fill(o)
            if o.status is OrderStatus.FILLED:
                del working[oid]
            else:
                working[oid] = o
        elif action[0] == "cancel" and working:
            oid = sorted(working)[action[1] % len(working)]
            desk.risk.release(oid)
            del working[oid]
        pos = desk.portfolio.quantity(key)
        worst = pos + sum(o.legs[0].side.sign * o.remaining_quantity for o in working.values())
        assert pos * held >= 0 and abs(pos) <= abs(held), (pos, held)
        assert worst * held >= 0 and abs(worst) <= abs(held), (worst, pos, held)
