"""Expiration, exercise and assignment: physical delivery, AM/PM cash settlement, early assignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from engine.brokers.paper_config import PaperConfig
from engine.brokers.paper_exchange import PaperExchange
from engine.market.simulated.market import market_calendar_for
from engine.model import Option, OrderType, Settlement

from .conftest import EXP, NOW, opt, order, spx_chain, xyz_chain

CLOSE = datetime(2026, 12, 18, 21, 0, tzinfo=UTC)  # 16:00 New York on the expiry day


def _fill(ex: PaperExchange, option: Option, side: str, qty: int = 1) -> None:
    reports = ex.submit(order([(option, side, 1)], qty=qty, price=None, kind=OrderType.MARKET))
    assert reports[-1].kind == "filled", reports[-1].order.reason


def test_equity_options_exercise_assign_and_expire_by_moneyness(exchange):
    _fill(exchange, opt(100), "buy")  # ITM at 107 → exercise: buy 100 shares at 100
    _fill(exchange, opt(110, "P"), "sell")  # ITM → assigned: buy 100 shares at 110
    _fill(exchange, opt(110), "buy")  # OTM → worthless
    cash = exchange.cash
    exchange.on_underlying("XYZ", 107.0, CLOSE - timedelta(seconds=1))
    reports = exchange.on_time(CLOSE + timedelta(seconds=1))
    settle = next(r for r in reports if r.kind == "settlement")
    kinds = sorted((f.instrument.key, f.kind) for f in settle.fills)
    assert kinds == sorted([(opt(100).key, "exercise"), ("XYZ", "exercise"), (opt(110, "P").key, "assignment"),
                            ("XYZ", "assignment"), (opt(110).key, "expiration")])
    assert exchange.positions["XYZ"].quantity == 200
    assert not any(isinstance(p.instrument, Option) for p in exchange.positions.values())
    assert exchange.cash == cash - Decimal(100 * 100) - Decimal(110 * 100)
    assert exchange.on_time(CLOSE + timedelta(minutes=5)) == []  # settled once


def test_less_than_a_penny_in_the_money_expires_worthless(exchange):
    _fill(exchange, opt(100), "buy")
    exchange.on_underlying("XYZ", 100.005, CLOSE - timedelta(seconds=1))
    reports = exchange.settle_expired(CLOSE + timedelta(seconds=1))
    assert [f.kind for f in reports[0].fills] == ["expiration"]
    assert "XYZ" not in exchange.positions


def test_index_options_cash_settle_am_at_the_opening_print_and_pm_at_the_close():
    ex = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    ex.on_chain(spx_chain(6000.0, NOW, EXP), NOW)
    am = Option(root="SPX", expiry=EXP, strike=Decimal(6000), right="C", underlying="SPX")  # terms from the chain
    pm = Option(root="SPXW", expiry=EXP, strike=Decimal(6000), right="C", underlying="SPX")
    for o in (am, pm):
        assert ex.submit(order([(o, "buy", 1)], price="20.50"))[-1].kind == "filled"
    assert ex.positions[am.key].instrument.settlement is Settlement.CASH_AM
    assert ex.positions[pm.key].instrument.settlement is Settlement.CASH_PM
    cash = ex.cash
    open_ts = datetime(2026, 12, 18, 14, 30, tzinfo=UTC)
    ex.on_underlying("SPX", 6050.0, open_ts)  # the opening print
    first = ex.on_time(open_ts + timedelta(minutes=1))
    am_fill = [f for r in first for f in r.fills]
    assert [(f.kind, f.price) for f in am_fill] == [("cash_settlement", Decimal("50.0000"))]
    ex.on_underlying("SPX", 6150.0, CLOSE - timedelta(seconds=1))
    later = ex.on_time(CLOSE + timedelta(seconds=1))
    pm_fill = [f for r in later for f in r.fills]
    assert [(f.kind, f.price) for f in pm_fill] == [("cash_settlement", Decimal("150.0000"))]
    assert ex.cash == cash + Decimal(5000) + Decimal(15000)
    assert not ex.positions


def test_backtester_can_pass_settlement_prices(exchange):
    _fill(exchange, opt(95, "P"), "buy")
    reports = exchange.settle_expired(CLOSE, settlement_prices={"XYZ": 90.0})
    assert next((f.kind, f.instrument.key) for f in reports[0].fills) == ("exercise", opt(95, "P").key)
    assert exchange.positions["XYZ"].quantity == -100


def test_early_assignment_of_deep_itm_short_calls_before_a_dividend_is_flagged():
    ex = PaperExchange(PaperConfig(fees="zero", early_assignment=True, check_buying_power=False),
                       calendar=market_calendar_for(NOW.date()))
    quotes = {(95, "C"): (15.00, 15.10), (105, "C"): (6.50, 6.60)}
    ex.on_chain(xyz_chain(quotes, spot=110.0), NOW)
    ex.on_underlying("XYZ", 110.0, NOW)
    _fill(ex, opt(95), "sell")  # time value 15.05 − 15 = 0.05 < dividend
    _fill(ex, opt(105), "sell")  # time value 1.55 > dividend: kept
    reports = ex.early_assignments("XYZ", 0.50, NOW)
    fills = reports[0].fills
    assert {f.kind for f in fills} == {"early_assignment"}
    assert opt(95).key not in ex.positions and ex.positions[opt(105).key].quantity == -1
    assert ex.positions["XYZ"].quantity == -100
    off = PaperExchange(PaperConfig(fees="zero"), calendar=market_calendar_for(NOW.date()))
    assert off.early_assignments("XYZ", 0.50, NOW) == []
