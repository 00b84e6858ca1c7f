"""One deny test per pre-trade check, each asserting the numbers carried by the failed check."""

from decimal import Decimal

import pytest
from risk_kit import Desk, make_order, opt, quote_market

from engine.model import Equity, OrderType, Position, Side
from engine.risk.engine import KILL_SWITCH_SOURCE
from engine.risk.state import TradingState


def failed(decision):
    return {r.name: r for r in decision.failed}


def test_check_when_everything_within_limits_then_passes_and_reserves(desk):
    d = desk.risk.check(desk.put_spread())
    assert d.passed, d.summary()
    assert desk.risk.has_reservation("o1")
    assert d.payoff.defined_risk and d.payoff.max_loss == pytest.approx(1000 - 100 * float(-desk.put_spread().limit_price))


def test_submit_order_when_trading_halted_then_denies_order(desk):
    desk.state = TradingState.HALTED
    f = failed(desk.risk.check(desk.put_spread()))
    assert "HALTED" in f["trading_state"].message


def test_submit_order_when_reducing_and_order_opens_then_denies_but_closing_passes(desk):
    desk.hold(desk.c610, 2, "10.00")
    desk.state = TradingState.REDUCING
    assert "REDUCING" in failed(desk.risk.check(desk.put_spread()))["trading_state"].message
    close = make_order([(desk.c610, Side.SELL, 1)], 2, f"-{desk.mid(desk.c610):.2f}", oid="close")
    d = desk.risk.check(close)
    assert d.passed, d.summary()


def test_halted_when_kill_switch_flatten_order_then_passes_without_collar(desk):
    desk.hold(desk.c610, 2, "10.00")
    desk.state = TradingState.HALTED
    flat = make_order([(desk.c610, Side.SELL, 1)], 2, "-0.01", oid="ks", source=KILL_SWITCH_SOURCE)
    d = desk.risk.check(flat)
    assert d.passed, d.summary()


def test_check_when_limit_order_without_price_then_order_valid_fails(desk):
    f = failed(desk.risk.check(make_order([(desk.c610, Side.BUY, 1)], 1, None)))
    assert "without a limit price" in f["order_valid"].message


def test_check_when_leg_has_no_quote_then_market_data_fails(desk):
    unquoted = opt(700, "C")
    f = failed(desk.risk.check(make_order([(unquoted, Side.BUY, 1)], 1, "0.50")))
    assert unquoted.key in f["market_data"].message
    assert "no usable quote" in f["price_collar"].message


def test_check_when_max_loss_exceeds_risk_per_trade_then_denied_with_numbers(desk):
    order = desk.put_spread(qty=4)
    f = failed(desk.risk.check(order))
    r = f["max_loss_per_trade"]
    assert r.limit == pytest.approx(2000.0)  # 2 % of 100,000
    assert r.value == pytest.approx(4 * (1000 - 100 * float(-order.limit_price)))
    assert r.value > r.limit and r.unit == "$"


def test_check_when_undefined_risk_then_stress_loss_is_the_number(desk):
    naked = make_order([(desk.c610, Side.SELL, 1)], 1, f"-{desk.mid(desk.c610):.2f}")
    d = desk.risk.check(naked, consume=False)
    r = next(x for x in d.results if x.name == "max_loss_per_trade")
    assert not d.payoff.defined_risk
    assert r.value == pytest.approx(d.payoff.stress_loss)
    assert "stress loss" in r.message


def test_check_when_underlying_capital_at_risk_exceeds_position_size_then_denied(desk):
    desk.hold(desk.p590, -40, "8.00")
    desk.hold(desk.p580, 40, "6.00")
    r = failed(desk.risk.check(desk.put_spread()))["position_size"]
    assert r.limit == pytest.approx(25_000.0)
    assert r.value > 25_000.0


def test_check_when_daily_loss_beyond_limit_then_denied(desk):
    desk.set_account(100_000, day_pnl=-6_000)
    r = failed(desk.risk.check(desk.put_spread()))["daily_loss"]
    assert (r.value, r.limit) == (pytest.approx(6000.0), pytest.approx(5000.0))


def test_check_when_drawdown_beyond_limit_then_denied(desk):
    desk.risk.peak_equity = 140_000.0
    r = failed(desk.risk.check(desk.put_spread()))["drawdown"]
    assert r.value == pytest.approx(1 - 100_000 / 140_000) and r.limit == pytest.approx(0.25)


def test_check_when_beta_weighted_delta_beyond_limit_then_denied_with_projection():
    desk = Desk(net_liq=1_000_000)
    d = desk.risk.check(desk.long_call(qty=4))
    r = failed(d)["delta"]
    assert r.limit == 100
    assert r.value == pytest.approx(d.projected.beta_delta) and r.value > 100
    assert set(failed(d)) == {"delta"}


def test_check_when_beta_differs_then_delta_is_weighted_by_beta_and_price():
    desk = Desk(net_liq=1_000_000)
    qqq = Equity("QQQ")
    desk.market.update_spot("QQQ", 300.0)
    desk.risk.config.betas["QQQ"] = 1.2
    d = desk.risk.check(make_order([(qqq, Side.BUY, 1)], 100, "300.00"), consume=False)
    assert d.order_exposure.delta == pytest.approx(100)
    assert d.order_exposure.beta_delta == pytest.approx(100 * 1.2 * 300 / 600)


def test_check_when_gamma_beyond_limit_then_denied():
    desk = Desk(net_liq=100_000_000)
    order = make_order([(desk.c600, Side.BUY, 1), (desk.p600, Side.BUY, 1)], 60,
                       f"{desk.mid(desk.c600) + desk.mid(desk.p600):.2f}")
    r = failed(desk.risk.check(order))["gamma"]
    assert r.limit == 50 and r.value > 50


def test_check_when_vega_beyond_limit_then_denied(desk):
    r = failed(desk.risk.check(make_order([(desk.c600, Side.BUY, 1)], 20, f"{desk.mid(desk.c600):.2f}")))["vega"]
    assert r.limit == pytest.approx(1000.0) and r.value > 1000.0 and r.unit == "$/vol pt"


def test_check_when_theta_beyond_limit_then_denied(desk):
    order = make_order([(desk.c600, Side.BUY, 1), (desk.p600, Side.BUY, 1)], 25,
                       f"{desk.mid(desk.c600) + desk.mid(desk.p600):.2f}")
    r = failed(desk.risk.check(order))["theta"]
    assert r.limit == pytest.approx(400.0) and r.value < -400.0


def test_check_when_gross_delta_dollars_beyond_leverage_then_denied(desk):
    spy = Equity("SPY")
    desk.market.update_quote("SPY", 599.99, 600.01)
    r = failed(desk.risk.check(make_order([(spy, Side.BUY, 1)], 400, "600.00")))["leverage"]
    assert r.value == pytest.approx(240_000.0) and r.limit == pytest.approx(200_000.0)


def test_check_when_positions_at_max_then_new_underlying_denied(desk):
    for sym in ("AAA", "BBB", "CCC", "DDD", "EEE"):
        desk.market.update_spot(sym, 10.0)
        desk.portfolio.apply_position(Position(Equity(sym), 1, Decimal(10)))
    r = failed(desk.risk.check(desk.put_spread()))["open_positions"]
    assert (r.value, r.limit) == (6, 5)


def natural_credit(desk) -> float:
    """The put spread's credit at the touch: the broker's buying-power estimate fills there."""
    return desk.market.bid_ask(desk.p590)[0] - desk.market.bid_ask(desk.p580)[1]


def test_check_when_buying_power_short_then_denied_with_need_and_available(desk):
    desk.set_account(100_000, buying_power=500)
    order = desk.put_spread()
    r = failed(desk.risk.check(order))["buying_power"]
    assert r.value == pytest.approx(1000 - 100 * natural_credit(desk)) and r.limit == pytest.approx(500)
    assert r.stage == "portfolio_risk"


def test_check_when_working_orders_hold_buying_power_then_it_is_not_available_twice(desk):
    desk.set_account(100_000, buying_power=1_000)
    first = desk.put_spread(oid="a")
    assert desk.risk.check(first).passed
    second = desk.put_spread(oid="b", credit=float(-first.limit_price) - 0.01)
    r = failed(desk.risk.check(second))["buying_power"]
    assert r.limit == pytest.approx(1_000 - (1000 - 100 * natural_credit(desk)))


def test_check_when_limit_far_through_mid_then_price_collar_denies(desk):
    mid = desk.mid(desk.c610)
    r = failed(desk.risk.check(desk.long_call(price=round(mid + 2.0, 2))))["price_collar"]
    assert r.value == pytest.approx(2.0, abs=0.01)
    assert r.limit == pytest.approx(max(10 * 0.01, 0.10 * mid))


def test_check_when_limit_passive_below_mid_then_collar_passes(desk):
    d = desk.risk.check(desk.long_call(price=round(desk.mid(desk.c610) - 3.0, 2)))
    assert d.passed, d.summary()


def test_check_when_burst_exceeds_token_bucket_then_order_rate_denies(desk):
    desk.set_account(10_000_000)
    mid = desk.mid(desk.p590) - desk.mid(desk.p580)
    results = [desk.risk.check(desk.put_spread(oid=f"o{i}", credit=mid - i / 100)) for i in range(12)]
    assert [r.passed for r in results] == [True] * 10 + [False] * 2
    r = failed(results[10])["order_rate"]
    assert r.value < 1.0 and "60/min" in r.message
    desk.clock[0] += 1.0  # one second → one more token
    assert desk.risk.check(desk.put_spread(oid="later", credit=mid - 0.2)).passed


def test_check_when_identical_order_twice_then_duplicate_denied_until_window_passes(desk):
    assert desk.risk.check(desk.put_spread(oid="a")).passed
    r = failed(desk.risk.check(desk.put_spread(oid="b")))["duplicate"]
    assert r.limit == 5.0 and r.value == pytest.approx(0.0)
    desk.clock[0] += 5.1
    assert desk.risk.check(desk.put_spread(oid="c")).passed


def test_check_when_run_sequentially_then_reservations_stop_the_eleventh_delta():
    desk = Desk(net_liq=10_000_000)
    desk.risk.config.duplicate_window_s = 0
    desk.risk.set_level(50)
    passed = sum(desk.risk.check(desk.long_call(oid=f"o{i}")).passed for i in range(10))
    per = desk.risk.check(desk.long_call(oid="probe"), consume=False).order_exposure.beta_delta
    assert passed == int(100 // per)


def test_slider_when_lowered_then_existing_positions_reported_not_closed(desk):
    desk.hold(desk.p590, -20, "8.00")
    desk.hold(desk.p580, 20, "6.00")
    assert not [b for b in desk.risk.breaches() if b["check"] == "position_size"]
    desk.risk.set_level(0)  # 10 % position cap
    breaches = desk.risk.breaches()
    pos = [b for b in breaches if b["check"] == "position_size"]
    assert pos and pos[0]["scope"] == "SPY" and pos[0]["value"] > pos[0]["limit"] == pytest.approx(10_000)
    assert desk.portfolio.quantity(desk.p590.key) == -20  # untouched


def test_market_order_when_no_quote_then_denied(desk):
    unquoted = opt(700, "C")
    d = desk.risk.check(make_order([(unquoted, Side.BUY, 1)], 1, None, order_type=OrderType.MARKET))
    assert "market order without a usable quote" in failed(d)["market_data"].message


def test_quote_market_when_implied_then_iv_round_trips(desk):
    quote_market(desk.market, [desk.c610], half_spread=0.0)
    assert desk.market.iv(desk.c610, __import__("risk_kit").NOW) == pytest.approx(0.20, abs=1e-3)


def test_kill_switch_order_when_rate_bucket_empty_then_still_passes(desk):
    desk.hold(desk.c610, 2, "10.00")
    while desk.risk.bucket.try_take():
        pass
    flat = make_order([(desk.c610, Side.SELL, 1)], 2, "-0.01", oid="ks1", source=KILL_SWITCH_SOURCE)
    assert desk.risk.check(flat).passed
    desk.risk.release("ks1")  # cancelled (while it works, a second flatten of the same 2 would not reduce)
    again = make_order([(desk.c610, Side.SELL, 1)], 2, "-0.01", oid="ks2", source=KILL_SWITCH_SOURCE)
    assert desk.risk.check(again).passed  # not a "duplicate" either
    gui = make_order([(desk.c610, Side.SELL, 1)], 2, f"-{desk.mid(desk.c610):.2f}", oid="gui")
    assert "order_rate" in failed(desk.risk.check(gui))


def test_collar_when_closing_at_the_natural_in_a_wide_market_then_passes_but_not_beyond_or_opening(desk):
    # a wide market: 610 call at mid ± 3.00 (mid ~13.90; the collar allows max(0.10, 10 % of mid) ~1.39)
    mid = desk.mid(desk.c610)
    desk.market.update_quote(desk.c610.key, round(mid - 3.0, 2), round(mid + 3.0, 2))
    mid = desk.mid(desk.c610)
    bid = round(mid - 3.0, 2)
    desk.hold(desk.c610, 2, "10.00")
    # selling the long at the bid (the natural) is 3.00 worse than mid: it reduces, so the collar lets it through
    close = make_order([(desk.c610, Side.SELL, 1)], 2, f"-{bid:.2f}", oid="close")
    d = desk.risk.check(close, consume=False)
    assert d.passed, d.summary()
    assert "at or inside natural" in {r.name: r for r in d.results}["price_collar"].message
    # one tick beyond the natural is a fat finger again
    worse = make_order([(desk.c610, Side.SELL, 1)], 2, f"-{bid - 0.01:.2f}", oid="worse")
    assert "price_collar" in failed(desk.risk.check(worse))
    # the same price on an opening order (buying more at the ask) is still collared
    opening = make_order([(desk.c610, Side.BUY, 1)], 1, f"{mid + 3.0:.2f}", oid="open")
    assert "price_collar" in failed(desk.risk.check(opening))
