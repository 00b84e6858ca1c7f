"""One kernel: the backtest's order path keeps the live rules — the kill switch halts it, exits are not held open
by the price collar, a long wing with no bid does not block a spread's exit, and switching the risk checks off
is loud. The path is the live one (OrderManager, RiskEngine, approval gate, KillSwitch, PaperBroker) on the
run's own event loop, which the run closes."""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal
from typing import ClassVar

import pytest

from engine.backtest.execution import RISK_CHECKS_BYPASSED, BacktestExchange
from engine.backtest.runner import Backtest
from engine.model import Leg, OrderIntent, OrderType, Side, TimeInForce
from engine.strategies.base import Strategy, market_date, option_leg
from tests.backtest.histories import fixed_signals, put_history

OPEN_DAY = ("2024-01-02", 100.0, {85.0: (0.05, 0.10), 90.0: (0.45, 0.50), 95.0: (1.00, 1.05), 100.0: (2.50, 2.55)})


def run(config, days, strategy=None):
    h = put_history(days)
    return Backtest(config, h, strategy, signals=fixed_signals(h.n_days)).run()


class BuyPuts(Strategy):
    """Day 1: three market buys of 9 puts (each within the 1 % max loss of the Low profile) and a resting GTC bid
    for one 85 put at 0.01; every later day: one more market buy."""

    name = "buy_puts"

    def on_chain(self, ctx, chain):
        day = market_date(ctx.now())
        row = chain.row_of("SPY240105P00095000")
        buy = [option_leg(chain, row, Side.BUY)]
        if day == date(2024, 1, 2):
            rest = OrderIntent(legs=(Leg(chain.option(chain.row_of("SPY240105P00085000")), Side.BUY),), quantity=1,
                               order_type=OrderType.LIMIT, limit_price=Decimal("0.01"), tif=TimeInForce.GTC,
                               source="strategy:buy_puts", strategy_id="buy_puts", tag="rest:open")
            return [*(self.intent(buy, 9, None, f"buy-{k}:open") for k in range(3)), rest]
        return [self.intent(buy, 1, None, f"more-{day}:open")]


def test_daily_loss_trip_halts_the_backtest_as_it_would_live(exact_config):
    # Low profile: daily loss limit 2 %. Day 1 buys 27 puts for $2 835 (the pre-trade checks are off: at the Low
    # profile their Greeks would be denied); day 2 the market rallies and they are worth $67.50: a loss of
    # $2 767.50 > 2 % → the kill switch trips at the new quotes, checks or no checks
    cfg = exact_config.model_copy(update={"risk_level": 0.0, "risk_checks": False})
    days = [OPEN_DAY,
            ("2024-01-03", 110.0, {85.0: (0.00, 0.05), 90.0: (0.00, 0.05), 95.0: (0.00, 0.05), 100.0: (0.00, 0.05)}),
            ("2024-01-04", 112.0, {85.0: (0.00, 0.05), 90.0: (0.00, 0.05), 95.0: (0.00, 0.05), 100.0: (0.00, 0.05)})]
    r = run(cfg, days, BuyPuts())
    assert r.status == "completed", r.error
    by_tag = {o["tag"]: o for o in r.orders}
    assert [by_tag[f"buy-{k}:open"]["status"] for k in range(3)] == ["filled"] * 3
    # the resting order is cancelled by the trip, every later order is denied by the trading state
    assert by_tag["rest:open"]["status"] == "cancelled" and "kill switch" in by_tag["rest:open"]["reason"]
    later = [o for t, o in by_tag.items() if t.startswith("more-")]
    assert len(later) == 2 and all(o["status"] == "denied" for o in later)
    assert all("trading is HALTED" in o["reason"] for o in later)
    summary = r.summary()
    assert summary["halted"]["reason"].startswith("daily loss limit: lost $2,700.00 today")  # the live wording
    assert summary["halted"]["at"].startswith("2024-01-03")
    assert r.info["trading_state"] == "HALTED"
    # the positions stay (an automatic trip does not flatten) and settle at expiry; P&L still reconciles
    assert r.reconciliation()["difference"] == Decimal("0.00")


def test_no_trip_when_the_loss_is_inside_the_limit(exact_config):
    days = [OPEN_DAY,
            ("2024-01-03", 110.0, {85.0: (0.00, 0.05), 90.0: (0.00, 0.05), 95.0: (0.00, 0.05), 100.0: (0.00, 0.05)})]
    r = run(exact_config, days, BuyPuts())  # Moderate profile: 5 % daily loss limit
    assert r.summary()["halted"] is None and r.info["trading_state"] == "ACTIVE"
    assert any(o["tag"].startswith("more-") and o["status"] == "filled" for o in r.orders)


def test_dte_exit_in_a_wide_market_then_closes_at_the_natural_despite_the_collar(exact_config):
    # day 2 the market is wide: closing the spread costs 2.60 − 0.50 = 2.10 at the natural, 0.60 (40 %) worse
    # than mid 1.50 — far outside the collar's 0.15; a closing order at the natural passes all the same
    cfg = exact_config.with_params(**{"rules.dte_exit": 10, "dte_min": 3})
    days = [OPEN_DAY, ("2024-01-03", 99.0, {90.0: (0.50, 1.10), 95.0: (2.00, 2.60), 100.0: (3.00, 3.60)})]
    r = run(cfg, days)
    closes = [o for o in r.orders if ":close:" in o["tag"]]
    assert [(o["status"], o["limit_price"]) for o in closes] == [("filled", "2.10")], closes
    [t] = r.trades
    assert not t.is_open and t.exit_reason == "dte_exit" and t.gross_pnl == Decimal("-640")  # (0.50 − 2.10) × 400


def test_spread_exit_when_the_long_wing_has_no_bid_then_sold_at_the_minimum_tick(exact_config):
    # day 2: the long 90 put has no bid. The close buys the 95 at 0.10 and sells the 90 at the venue's minimum,
    # 0.01: net 0.09 against a limit of 0.10 (the natural with a zero bid) → filled, not held to expiry
    cfg = exact_config.with_params(**{"rules.dte_exit": 10, "dte_min": 3})
    days = [OPEN_DAY, ("2024-01-03", 104.0, {90.0: (0.00, 0.05), 95.0: (0.05, 0.10), 100.0: (0.40, 0.45)})]
    r = run(cfg, days)
    [close] = [o for o in r.orders if ":close:" in o["tag"]]
    assert close["status"] == "filled" and close["avg_fill_price"] == "0.0900"
    [t] = r.trades
    assert not t.is_open and t.exit_reason == "dte_exit"
    assert t.gross_pnl == Decimal("164")  # (0.50 − 0.09) × 400


def test_no_risk_checks_then_the_summary_and_log_say_so(exact_config, caplog):
    cfg = exact_config.model_copy(update={"risk_checks": False})
    with caplog.at_level(logging.WARNING, logger="engine.backtest.execution"):
        r = run(cfg, [OPEN_DAY])
    assert r.summary()["risk_checks"] is False and r.summary()["warning"] == RISK_CHECKS_BYPASSED
    assert any(RISK_CHECKS_BYPASSED in rec.getMessage() for rec in caplog.records)
    checked = run(exact_config, [OPEN_DAY])
    assert checked.summary()["risk_checks"] is True and "warning" not in checked.summary()


def test_halted_with_risk_checks_then_the_risk_engine_trading_state_stage_denies(exact_config):
    h = put_history([OPEN_DAY])
    ex = BacktestExchange(exact_config, h)
    ex.begin_day(0, h.chain(0))
    chain = h.chain(0)
    intent = OrderIntent(legs=(option_leg(chain, chain.row_of("SPY240105P00095000"), Side.BUY),), quantity=1,
                         order_type=OrderType.MARKET, source="strategy:t", strategy_id="t", tag="x:open")
    ok = [r for r in ex.submit(intent) if r.order is not None][-1]
    assert ok.order.status.value == "filled"
    ex.trip("test trip")
    [denied] = [r for r in ex.submit(intent) if r.order is not None]
    assert denied.order.status.value == "denied"
    assert denied.order.reason.startswith("trading is HALTED")
    # an order that only reduces is denied too: HALTED passes only the kill switch's own flatten orders
    sell = OrderIntent(legs=(option_leg(chain, chain.row_of("SPY240105P00095000"), Side.SELL),), quantity=1,
                       order_type=OrderType.MARKET, source="strategy:t", strategy_id="t", tag="x:close")
    [closing] = [r for r in ex.submit(sell) if r.order is not None]
    assert closing.order.status.value == "denied"
    ex.close()


def test_backtest_order_then_the_live_oms_state_machine_with_auto_approval(exact_config):
    h = put_history([OPEN_DAY])
    ex = BacktestExchange(exact_config, h)
    try:
        ex.begin_day(0, h.chain(0))
        chain = h.chain(0)
        intent = OrderIntent(legs=(option_leg(chain, chain.row_of("SPY240105P00095000"), Side.BUY),), quantity=1,
                             order_type=OrderType.MARKET, source="strategy:t", strategy_id="t", tag="x:open")
        [filled] = [r for r in ex.submit(intent) if r.kind == "filled"]
        steps = [e["detail"]["step"] for e in ex.kernel.oms.order_events(filled.order.order_id)]
        # every transition written before the next step acts, the approval gate in the path (automatic here)
        assert steps == ["intent", "approved", "submitted", "broker_ack", "fill"]
        assert ex.kernel.oms.order_events(filled.order.order_id)[1]["detail"]["by"] == "auto"
        assert ex.kernel.portfolio.quantity("SPY240105P00095000") == 1  # the risk engine's book, from the bus
    finally:
        ex.close()
    assert ex.kernel.loop.is_closed()


def test_no_risk_checks_then_audited_and_only_validation_and_trading_state_deny(exact_config):
    h = put_history([OPEN_DAY])
    ex = BacktestExchange(exact_config.model_copy(update={"risk_checks": False, "risk_level": 0.0}), h)
    try:
        assert [r["action"] for r in ex.kernel.store.audit.list()] == ["risk_checks_off"]
        ex.begin_day(0, h.chain(0))
        chain = h.chain(0)
        # 40 puts: $4 200 at risk, over the Low profile's 1 % max loss per trade — advisory only
        intent = OrderIntent(legs=(option_leg(chain, chain.row_of("SPY240105P00095000"), Side.BUY),), quantity=40,
                             order_type=OrderType.MARKET, source="strategy:t", strategy_id="t", tag="big:open")
        assert [r.order.status.value for r in ex.submit(intent) if r.order is not None][-1] == "filled"
    finally:
        ex.close()


async def test_backtest_inside_a_running_loop_then_a_clear_error(exact_config):
    with pytest.raises(RuntimeError, match="runs its own event loop"):
        BacktestExchange(exact_config, put_history([OPEN_DAY]))


def test_run_then_its_kernel_loop_and_store_are_closed(exact_config):
    h = put_history([OPEN_DAY])
    bt = Backtest(exact_config, h, signals=fixed_signals(h.n_days))
    assert bt.run().status == "completed"
    assert bt.exchange.kernel.loop.is_closed()


def test_risk_limits_unknown_or_out_of_range_then_a_clear_error(exact_config):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown risk limit"):
        exact_config.model_copy(update={"risk_limits": {"max_los": 0.5}}).model_validate(
            {**exact_config.model_dump(), "risk_limits": {"max_los": 0.5}})
    bad = exact_config.model_copy(update={"risk_limits": {"risk_per_trade_pct": 5.0}})
    with pytest.raises(ValueError, match=r"bad risk limits .*risk_per_trade_pct"):
        BacktestExchange(bad, put_history([OPEN_DAY]))


class SellPut(Strategy):
    """Sells five 90 puts at market on the first day: their stress loss (a 15 % fall to 85), $2 262.50, is over the
    Moderate profile's 2 % max loss per trade."""

    name = "sell_put"
    risk_limits: ClassVar[dict[str, float]] = {"risk_per_trade_pct": 1.0}

    def on_chain(self, ctx, chain):
        if market_date(ctx.now()) != date(2024, 1, 2):
            return []
        return [self.intent([option_leg(chain, chain.row_of("SPY240105P00090000"), Side.SELL)], 5, None, "sp:open")]


def test_strategy_declared_risk_limits_then_in_force_and_named_in_the_summary(exact_config):
    r = run(exact_config, [OPEN_DAY], SellPut())
    assert r.summary()["risk_limits"] == {"risk_per_trade_pct": 1.0}
    assert [o["status"] for o in r.orders] == ["filled"]
    # the run's own limits win over the strategy's: held to 2 %, the same order is denied for its loss
    held = run(exact_config.model_copy(update={"risk_limits": {"risk_per_trade_pct": 0.02}}), [OPEN_DAY], SellPut())
    assert held.summary()["risk_limits"] == {"risk_per_trade_pct": 0.02}
    [o] = held.orders
    assert o["status"] == "denied" and o["reason"].startswith("stress loss (±15%) 2,262.50 $ exceeds limit 2,000.00"), o
