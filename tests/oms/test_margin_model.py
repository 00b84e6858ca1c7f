"""One margin model (issue 14, finding 12): the risk engine's buying-power estimate is the paper broker's.

Before, the risk engine hard-coded Reg-T 20 %/10 %/50 % per order (20 % on index options too) while the paper
broker margined each underlying as a group with 15 % on index options: orders passed the risk engine's
buying-power check and were then rejected by the paper broker. Now both call :mod:`engine.brokers.margin`.
"""

from datetime import date
from decimal import Decimal

import numpy as np
import pytest
from oms_harness import spy_chain, wait_for
from risk_kit import NOW, RATE, VOL

from engine.brokers.margin import MarginRules
from engine.brokers.paper_config import PaperConfig
from engine.bus.events import ChainUpdated
from engine.model import (
    Equity,
    ExerciseStyle,
    Leg,
    Option,
    OptionChain,
    Order,
    OrderStatus,
    OrderType,
    Settlement,
    Side,
    TimeInForce,
)
from engine.pricing import bsm

SPX_EXPIRY = date(2026, 2, 20)


def spy(strike: int, right: str) -> Option:
    return Option("SPY", date(2026, 2, 20), Decimal(strike), right)


def spx(strike: int, right: str) -> Option:
    return Option("SPXW", SPX_EXPIRY, Decimal(strike), right, underlying="SPX", style=ExerciseStyle.EUROPEAN,
                  settlement=Settlement.CASH_PM)


def spx_chain(spot: float = 6000.0) -> OptionChain:
    options = [spx(k, r) for k in (5700, 5800, 5900, 6000, 6100, 6200) for r in ("C", "P")]
    calls = np.array([o.is_call for o in options])
    k = np.array([float(o.strike) for o in options])
    t = np.array([o.time_to_expiry(NOW) for o in options])
    px = np.asarray(bsm.price(calls, spot, k, t, RATE, 0.0, VOL))
    from dataclasses import replace
    chain = OptionChain.build("SPX", spot, NOW, options, bid=np.round(px - 0.5, 1), ask=np.round(px + 0.5, 1),
                              bid_size=np.full(len(options), 100.0), ask_size=np.full(len(options), 100.0))
    return replace(chain, style=ExerciseStyle.EUROPEAN, settlement=Settlement.CASH_PM)


_n = iter(range(10_000))


def order(legs, qty=1, price="1.00", order_type=OrderType.LIMIT) -> Order:
    n = next(_n)
    return Order(order_id=f"m{n}", client_order_id=f"cm{n}", legs=tuple(Leg(i, s, r) for i, s, r in legs),
                 quantity=qty, order_type=order_type, limit_price=None if price is None else Decimal(price),
                 tif=TimeInForce.DAY, status=OrderStatus.SUBMITTED, created_at=NOW, updated_at=NOW)


async def _book(desk) -> None:
    """Existing positions at the broker: two short 590/580 put spreads and one long 610 call."""
    desk.bus.publish(ChainUpdated(chain=spx_chain()))
    await desk.paper.submit(order([(spy(590, "P"), Side.SELL, 1), (spy(580, "P"), Side.BUY, 1)], 2, "-0.50"))
    await desk.paper.submit(order([(spy(610, "C"), Side.BUY, 1)], 1, "50.00"))
    await wait_for(lambda: desk.portfolio.quantity(spy(580, "P").key) == 2
                   and desk.portfolio.quantity(spy(610, "C").key) == 1)


ORDERS = {
    "naked put": lambda: order([(spy(570, "P"), Side.SELL, 1)], 1, "-1.00"),
    "naked call": lambda: order([(spy(630, "C"), Side.SELL, 1)], 2, "-1.00"),
    "call covered by the held long call": lambda: order([(spy(620, "C"), Side.SELL, 1)], 1, "-1.00"),
    "call credit spread": lambda: order([(spy(620, "C"), Side.SELL, 1), (spy(630, "C"), Side.BUY, 1)], 1, "-1.00"),
    "iron condor": lambda: order([(spy(570, "P"), Side.BUY, 1), (spy(580, "P"), Side.SELL, 1),
                                  (spy(620, "C"), Side.SELL, 1), (spy(630, "C"), Side.BUY, 1)], 1, "-1.00"),
    "long put": lambda: order([(spy(600, "P"), Side.BUY, 1)], 3, "5.00"),
    "sell the long leg of the held spreads": lambda: order([(spy(580, "P"), Side.SELL, 1)], 2, "-1.00"),
    "buy back the short leg": lambda: order([(spy(590, "P"), Side.BUY, 1)], 1, "30.00"),
    "buy shares": lambda: order([(Equity("SPY"), Side.BUY, 1)], 100, "600.00"),
    "short shares": lambda: order([(Equity("SPY"), Side.SELL, 1)], 50, "-600.00"),
    "SPX naked put (index rate)": lambda: order([(spx(5800, "P"), Side.SELL, 1)], 1, "-10.00"),
    "SPX naked call (index rate)": lambda: order([(spx(6200, "C"), Side.SELL, 1)], 1, "-10.00"),
}


@pytest.mark.parametrize("name", list(ORDERS))
async def test_buying_power_when_estimated_by_risk_engine_then_equals_the_paper_brokers(desk, name):
    await _book(desk)
    o = ORDERS[name]()
    decision = desk.risk.check(o, consume=False)
    preview = await desk.paper.preview(o)
    assert not preview.errors, preview.errors
    assert decision.buying_power_required == pytest.approx(-float(preview.buying_power_effect), abs=0.011), name


async def test_buying_power_when_closing_long_legs_makes_shorts_naked_then_risk_denies_as_the_broker_would(desk):
    await _book(desk)
    desk.bus.publish(ChainUpdated(chain=spy_chain()))
    # sell 2 long 580 puts: closing, but it leaves two 590 puts naked (~$23,000); pretend most buying power is used
    o = order([(spy(580, "P"), Side.SELL, 1)], 2, f"-{desk.market.bid_ask(spy(580, 'P'))[0]:.2f}")
    need = -float((await desk.paper.preview(o)).buying_power_effect)
    account = desk.portfolio.account
    desk.portfolio.account = type(account)(**{**{f: getattr(account, f) for f in account.__slots__},
                                              "buying_power": Decimal(str(round(need - 100, 2)))})
    decision = desk.risk.check(o, consume=False)
    assert decision.reducing
    bp = next(r for r in decision.results if r.name == "buying_power")
    assert not bp.passed and bp.value == pytest.approx(need, abs=0.011) and bp.stage == "portfolio_risk"


def test_margin_rules_when_built_from_paper_settings_then_the_same_numbers():
    cfg = PaperConfig(naked_index_pct=0.12, stock_margin=0.3, index_symbols=["SPX"])
    rules = cfg.margin_rules()
    assert (rules.naked_equity_pct, rules.naked_index_pct, rules.naked_min_pct, rules.stock_margin) == \
        (0.20, 0.12, 0.10, 0.3)
    assert rules.is_index("SPX") and not rules.is_index("NDX")
    assert MarginRules() == PaperConfig().margin_rules()  # one set of defaults
    assert PaperConfig(account_type="cash").margin_rules().stock_rate == 1.0


async def test_order_path_when_built_then_risk_engine_uses_the_paper_brokers_rules(tmp_path):
    from engine.brokers.paper import PaperBroker
    from engine.bus import Bus
    from engine.clock import ManualClock
    from engine.oms.assembly import build_order_path
    from engine.store import Store

    store = Store.open(tmp_path / "db.sqlite")
    bus = Bus()
    try:
        paper = PaperBroker(bus, store, PaperConfig(naked_index_pct=0.11), clock=ManualClock(NOW))
        path = build_order_path(bus, store, brokers={"paper": paper}, now=lambda: NOW)
        assert path.risk.margin.naked_index_pct == 0.11
    finally:
        await bus.close()
        store.close()
