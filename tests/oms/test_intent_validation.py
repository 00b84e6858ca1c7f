"""Every intent gets an answer: a bad one is an ``OrderDenied`` with a named reason, never an exception.

Issue 14, finding 13: quantity 2**63 / 10**30 raised ``OverflowError`` from SQLite, a price of 1e30
``decimal.InvalidOperation``, ``legs=None`` / a string leg / ``intent=None`` a ``TypeError`` or
``AttributeError``, and an expired contract was denied for missing Greeks and quotes, not for being expired.
"""

import asyncio
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oms_harness import Harness
from risk_kit import opt

from engine.bus.commands import SubmitOrder
from engine.bus.events import OrderDenied
from engine.model import Equity, Index, Leg, OrderIntent, OrderStatus, OrderType, Side, TimeInForce
from engine.oms.factory import MAX_LIMIT_PRICE, MAX_QUANTITY
from engine.risk.config import RiskConfig

SHORT, LONG = opt(590, "P"), opt(580, "P")
GOOD_LEGS = (Leg(SHORT, Side.SELL), Leg(LONG, Side.BUY))


def _intent(**changes):
    base = dict(legs=GOOD_LEGS, quantity=1, limit_price=Decimal("-1.00"))
    base.update(changes)
    return OrderIntent(**base)


def _denial(desk, order):
    assert order.status is OrderStatus.DENIED, order
    ev = [e for e in desk.of(OrderDenied) if e.order.order_id == order.order_id]
    assert len(ev) == 1
    return ev[0].checks[0]


@pytest.mark.parametrize(("intent", "code", "words"), [
    (_intent(quantity=2**63), "quantity_too_large", f"{MAX_QUANTITY:,}"),
    (_intent(quantity=10**30), "quantity_too_large", "at most"),
    (_intent(limit_price=Decimal("1e30")), "price_out_of_range", f"{MAX_LIMIT_PRICE:,}"),
    (_intent(limit_price=1e30), "price_out_of_range", "at most"),
    (_intent(limit_price=Decimal("NaN")), "price_not_finite", "not finite"),
    (_intent(limit_price="abc"), "price_not_a_number", "not a number"),
    (_intent(legs=None), "legs_missing", "legs"),
    (_intent(legs=("SPY260220P00590000",)), "leg_not_a_leg", "not a Leg"),
    (_intent(legs=(Leg(SHORT, Side.SELL), "x")), "leg_not_a_leg", "not a Leg"),
    (_intent(order_type=None), "bad_order_type", "order type"),
    (_intent(tif="forever"), "bad_time_in_force", "time in force"),
    (_intent(quantity=2.5), "quantity_not_whole", "whole number"),
    (_intent(quantity=True), "quantity_not_whole", "whole number"),
    (_intent(source=None), "bad_source", "source"),
    (_intent(client_order_id=123), "bad_client_order_id", "client order id"),
    (None, "not_an_intent", "not an order intent"),
    ("buy 10 SPY", "not_an_intent", "not an order intent"),
    (_intent(legs=(Leg(Index("SPX"), Side.BUY),), limit_price=Decimal("1.00")), "index_not_tradable", "index"),
])
async def test_submit_when_intent_malformed_then_denied_with_named_reason(desk, intent, code, words):
    order = await desk.oms.submit(intent)
    check = _denial(desk, order)
    assert (check.name, check.code, check.stage) == ("order_valid", code, "validate"), check
    assert words in check.message
    assert order.reason == check.message
    assert desk.risk.reservations == 0


async def test_submit_command_when_intent_none_then_denied_not_raised(desk):
    order = await desk.bus.send(SubmitOrder(intent=None))
    assert _denial(desk, order).code == "not_an_intent"


async def test_submit_when_contract_expired_then_denied_for_being_expired(desk):
    old = opt(590, "P", expiry=date(2025, 12, 19))
    order = await desk.oms.submit(OrderIntent(legs=(Leg(old, Side.BUY),), quantity=1, limit_price=Decimal("1.00")))
    check = _denial(desk, order)
    assert check.code == "contract_expired" and old.key in check.message and "expired" in check.message
    assert "Greeks" not in order.reason and "quote" not in order.reason


async def test_submit_when_denied_intent_then_stored_with_its_reason(desk):
    order = await desk.oms.submit(_intent(quantity=10**30))
    stored = desk.store.orders.get(order.order_id)
    assert stored is not None and stored.status is OrderStatus.DENIED and stored.quantity == 0
    assert "at most" in stored.reason


# ---- fuzz: no exception escapes the path ------------------------------------------------------------
_instruments = st.sampled_from([SHORT, LONG, opt(610, "C"), opt(590, "P", expiry=date(2025, 12, 19)),
                                opt(700, "C"), Equity("SPY"), Index("SPX")])
_legs_elem = st.one_of(
    st.builds(Leg, _instruments, st.sampled_from(list(Side)), st.integers(1, 3)),
    st.sampled_from(["leg", None, 5, SHORT]),
)
_real_legs = st.lists(st.builds(Leg, _instruments, st.sampled_from(list(Side)), st.integers(1, 3)),
                      min_size=1, max_size=4, unique_by=lambda leg: leg.instrument).map(tuple)
_legs = st.one_of(_real_legs, _real_legs, st.none(), st.text(max_size=3),
                  st.lists(_legs_elem, max_size=6).map(tuple), st.lists(_legs_elem, max_size=3))
_quantity = st.one_of(st.integers(1, 5), st.integers(-5, 20),
                      st.sampled_from([2**63, 10**30, -(2**63), 1.5, True, None, "3", float("nan"), Decimal("2")]))
_price = st.one_of(st.none(), st.decimals(allow_nan=True, allow_infinity=True, places=4),
                   st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([Decimal("1e30"), Decimal("-1e30"), 1e30, "abc", "1.05", "-0.50", 0, [1]]))
# well-formed intents priced away from the market: they rest at the broker (then cancel-all clears them)
_plausible = st.one_of(
    st.builds(lambda q, px: OrderIntent(legs=(Leg(opt(610, "C"), Side.BUY),), quantity=q, limit_price=px),
              st.integers(1, 3), st.decimals(min_value=Decimal("0.05"), max_value=Decimal("2"), places=2)),
    st.builds(lambda q, px: OrderIntent(legs=GOOD_LEGS, quantity=q, limit_price=-px),
              st.integers(1, 2), st.decimals(min_value=Decimal("5"), max_value=Decimal("9"), places=2)),
)
_intents = st.one_of(
    _plausible,
    st.builds(OrderIntent, legs=_legs, quantity=_quantity,
              order_type=st.sampled_from([OrderType.LIMIT, OrderType.MARKET, None, "limit", 3]),
              limit_price=_price, tif=st.sampled_from([TimeInForce.DAY, TimeInForce.GTC, None, "x"]),
              source=st.sampled_from(["gui"] * 5 + ["strategy:x", None, 5, "kill_switch", ""]),
              strategy_id=st.sampled_from([None] * 5 + ["s1", 7]), tag=st.sampled_from([""] * 5 + ["t", None]),
              client_order_id=st.sampled_from([None] * 8 + ["odfuzz", 12, "", "x" * 200])),
    st.sampled_from([None, "intent", 42, object()]),
)


def test_fuzz_when_any_intent_submitted_then_no_exception_escapes_and_denials_are_named(tmp_path):
    loop = asyncio.new_event_loop()
    unthrottled = RiskConfig(duplicate_window_s=0.0, orders_per_minute=1e9, order_burst=10**9)
    desk = loop.run_until_complete(Harness(tmp_path / "fuzz.sqlite", risk_config=unthrottled).start())
    seen: dict[str, int] = {}
    statuses: dict[str, int] = {}
    answered: set[str] = set()
    try:
        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(intent=_intents)
        def run(intent):
            n = len(desk.of(OrderDenied))
            order = loop.run_until_complete(desk.oms.submit(intent))  # raising fails the test
            if order.order_id in answered:
                return  # a resubmission (client order id seen before) returns the first answer
            answered.add(order.order_id)
            statuses[order.status.value] = statuses.get(order.status.value, 0) + 1
            if order.status is OrderStatus.DENIED:
                checks = desk.of(OrderDenied)[n:]
                assert checks, "a denial must publish OrderDenied"
                for c in checks[-1].checks:
                    assert c.stage and c.code != "internal", c  # a named reason from a named stage
                    seen[c.code or c.name] = seen.get(c.code or c.name, 0) + 1
            loop.run_until_complete(desk.oms.cancel_all("fuzz"))

        run()
    finally:
        loop.run_until_complete(desk.stop())
        loop.close()
    assert len(seen) >= 8, seen  # the fuzz reached many different reasons, not one early exit
    assert sum(n for s, n in statuses.items() if s != "denied") >= 5, statuses  # and the broker, too
    print("fuzz outcomes:", statuses, "denials by reason:", seen)
