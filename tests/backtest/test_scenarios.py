"""Hand-computable backtests: one put credit spread through expiry OTM / ITM / at breakeven, a stop, assignment.

Day 1 (2024-01-02): spot 100; 95 put 1.00/1.05 (|Δ| 0.25 → short), 90 put 0.45/0.50 (long).
Natural credit = 1.00 − 0.50 = 0.50; the limit asks 95 % → 0.48 credit; the exchange fills at the touch
(sell 1.00, buy 0.50) = 0.50 credit. Size = floor(100 000 × 2 % / ((5 − 0.50) × 100)) = 4 spreads.
Premium received = 0.50 × 4 × 100 = $200; max loss = 4.50 × 400 = $1 800.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from engine.backtest.runner import Backtest
from tests.backtest.histories import fixed_signals, put_history

OPEN_DAY = ("2024-01-02", 100.0, {90.0: (0.45, 0.50), 95.0: (1.00, 1.05), 100.0: (2.50, 2.55)})


def run(config, days):
    h = put_history(days)
    return Backtest(config, h, signals=fixed_signals(h.n_days)).run()


def only_trade(result):
    assert result.status == "completed", result.error
    assert len(result.trades) == 1
    return result.trades[0]


def test_spread_held_to_expiry_otm_then_keeps_the_whole_credit(exact_config):
    days = [OPEN_DAY,
            ("2024-01-03", 101.0, {90.0: (0.20, 0.25), 95.0: (0.60, 0.65), 100.0: (1.80, 1.85)}),
            ("2024-01-05", 100.0, {90.0: (0.00, 0.05), 95.0: (0.00, 0.05), 100.0: (0.00, 0.05)})]
    r = run(exact_config, days)
    t = only_trade(r)
    assert t.entry_price == Decimal("-0.5000") and t.quantity == 4
    assert t.gross_pnl == Decimal("200") and t.net_pnl == Decimal("200") and t.exit_reason == "expiration"
    # marked to market every day at mid: day 1 −(1.025 − 0.475) = −0.55 → −$20; day 2 −(0.625 − 0.225) = −0.40 → +$40
    assert r.equity.tolist() == pytest.approx([99_980.0, 100_040.0, 100_200.0])
    # buying power held by the spread: its max loss on the width, 5 × 100 × 4 = $2 000; none after expiry
    assert r.greeks["margin"].tolist() == pytest.approx([2_000.0, 2_000.0, 0.0])
    assert r.metrics.max_bp_used == pytest.approx(2_000.0 / 99_980.0)
    assert r.reconciliation()["difference"] == Decimal("0.00")


def test_spread_held_to_expiry_itm_then_max_loss_through_exercise_and_assignment(exact_config):
    days = [OPEN_DAY, ("2024-01-05", 85.0, {90.0: (4.90, 5.10), 95.0: (9.90, 10.10), 100.0: (14.9, 15.1)})]
    r = run(exact_config, days)
    t = only_trade(r)
    # short 95 put assigned (+400 sh at 95), long 90 put exercised (−400 sh at 90): −$2 000 + $200
    assert t.gross_pnl == Decimal("-1800")
    assert t.exit_reason == "assignment"
    assert r.equity[-1] == pytest.approx(98_200.0)
    assert r.cash[-1] == pytest.approx(98_200.0)  # no shares left: the two deliveries net out


def test_spread_at_breakeven_then_assigned_shares_sold_next_day_for_zero_pnl(exact_config):
    days = [OPEN_DAY,
            ("2024-01-05", 94.5, {90.0: (0.00, 0.05), 95.0: (0.45, 0.55), 100.0: (5.45, 5.55)}),
            ("2024-01-08", 94.5, {})]
    h = put_history(days[:2])
    h2 = put_history([days[0], days[1], ("2024-01-08", 94.5, {100.0: (5.0, 5.1)})])
    assert h.n_days == 2 and h2.n_days == 3
    r = Backtest(exact_config, h2, signals=fixed_signals(h2.n_days)).run()
    t = only_trade(r)
    # expiry: 95 put ITM by 0.50 → assigned 400 sh at 95 (marked at 94.50 → −$200 + $200 credit = 0)
    assert r.equity[1] == pytest.approx(100_000.0)
    # next day the shares are sold at the close 94.50 → trade closed, P&L exactly 0
    assert t.gross_pnl == Decimal("0") and not t.is_open
    assert r.equity[-1] == pytest.approx(100_000.0) and r.cash[-1] == pytest.approx(100_000.0)
    assert any(o["tag"].endswith(":liquidate") and o["status"] == "filled" for o in r.orders)


def test_stop_hit_then_closed_at_the_natural_for_the_exact_loss(exact_config):
    # dte_min 2: no new trade on the last day (inside the collar the walk would re-enter at 0.90 credit)
    cfg = exact_config.with_params(**{"rules.stop_multiple": 2.0, "dte_min": 2})
    days = [OPEN_DAY,
            # spread mid = −(2.475 − 0.925) = −1.55 → loss 1.05 ≥ 2 × credit → stop; close pays 2.50 − 0.90 = 1.60
            ("2024-01-03", 96.0, {90.0: (0.90, 0.95), 95.0: (2.45, 2.50), 100.0: (4.95, 5.00)}),
            ("2024-01-04", 97.0, {90.0: (0.50, 0.60), 95.0: (1.50, 1.60), 100.0: (3.90, 4.00)})]
    r = run(cfg, days)
    t = only_trade(r)
    assert t.exit_reason == "stop" and t.exit_price == Decimal("1.6000")
    assert t.gross_pnl == Decimal("-440")  # (0.50 − 1.60) × 400
    assert r.equity[-1] == pytest.approx(99_560.0) and r.equity[-1] == r.equity[-2]  # flat after the stop
    assert r.reconciliation()["difference"] == Decimal("0.00")


def test_fees_and_slippage_then_pnl_reconciles_to_the_cent(exact_config):
    cfg = exact_config.model_copy(update={"fee_preset": "tastytrade", "slippage_model": "percent", "slippage": 0.1})
    days = [OPEN_DAY,
            ("2024-01-03", 96.0, {90.0: (0.90, 0.95), 95.0: (2.45, 2.50), 100.0: (4.95, 5.00)}),
            ("2024-01-05", 100.0, {90.0: (0.00, 0.05), 95.0: (0.00, 0.05), 100.0: (0.00, 0.05)})]
    r = run(cfg.with_params(**{"rules.stop_multiple": 2.0}), days)
    t = only_trade(r)
    assert t.fees > 0 and r.fees == t.fees
    # slippage 0.1 % would sell 95 at 1.00 × 0.999 and buy 90 at 0.50 × 1.001, but the limit sits at the
    # natural credit 0.50 and a fill never goes past its limit
    assert t.entry_price == Decimal("-0.5000")
    rec = r.reconciliation()
    assert rec["difference"] == Decimal("0.00")
    assert Decimal(repr(float(r.equity[-1] - 100_000.0))).quantize(Decimal("0.01")) == (t.gross_pnl - t.fees).quantize(Decimal("0.01"))


def test_no_trade_when_iv_rank_low_then_flat_equity(exact_config):
    h = put_history([OPEN_DAY])
    r = Backtest(exact_config, h, signals=fixed_signals(1, ivr=0.5)).run()
    assert r.trades == [] and r.equity.tolist() == [100_000.0] and r.orders == []


def test_risk_engine_denies_when_one_contract_exceeds_max_loss_then_no_position(exact_config):
    # $5 000 account at the Low slider level: 1 % = $50 max loss per trade; the rules' "at least one
    # contract" asks for 1 spread risking $450 → the risk engine denies it; nothing is held
    cfg = exact_config.model_copy(update={"initial_cash": 5_000.0, "risk_level": 0.0})
    h = put_history([OPEN_DAY])
    r = Backtest(cfg, h, signals=fixed_signals(1)).run()
    [order] = r.orders
    assert order["status"] == "denied" and order["quantity"] == 1
    assert "loss" in order["reason"].lower()
    assert r.trades == [] and r.equity.tolist() == [5_000.0] and r.info["denied_orders"] == 1


def test_cancel_token_stops_the_run_and_progress_reaches_one(exact_config):
    from engine.backtest.runner import CancelToken

    days = [OPEN_DAY] + [(f"2024-01-0{d}", 100.0, {95.0: (1.0, 1.1)}) for d in (3, 4)]
    h = put_history(days)
    seen = []
    r = Backtest(exact_config, h, signals=fixed_signals(h.n_days)).run(progress=seen.append, progress_every=1)
    assert [round(p.fraction, 3) for p in seen] == [0.333, 0.667, 1.0]
    token = CancelToken()
    token.cancel()
    r = Backtest(exact_config, h, signals=fixed_signals(h.n_days)).run(cancel=token)
    assert r.status == "cancelled" and len(r.equity) == 0
    assert np.isnan(r.metrics.sharpe)



def test_early_assignment_before_ex_dividend_then_short_call_assigned_and_shares_bought_back(exact_config):
    from datetime import date

    from engine.backtest.data import build_history
    from engine.model import Side
    from engine.strategies.base import Strategy, option_leg

    class SellOneCall(Strategy):
        """Sells one deep in-the-money call on the first snapshot (a test strategy on the public API)."""

        name = "sell_one_call"

        def on_chain(self, ctx, chain):
            if getattr(self, "_done", False):
                return ()
            self._done = True
            row = chain.row_of("SPY240119C00080000")
            return [self.intent([option_leg(chain, row, Side.SELL)], 1, None, "call-1:open")]  # market: sells at the bid

    days = np.array(["2024-01-02", "2024-01-03"], dtype="datetime64[D]")
    h = build_history("SPY", days, np.full(2, np.datetime64("2024-01-19")), np.array([80.0, 80.0]),
                      np.array([True, True]), np.array([20.00, 20.00]), np.array([20.10, 20.10]),
                      spot_by_row=np.array([100.0, 100.0]))
    # ex-dividend 2024-01-03, $0.50 > time value 0.05 → assigned at the close of 2024-01-02
    cfg = exact_config.model_copy(update={"early_assignment": True, "dividends": {date(2024, 1, 3): 0.50},
                                          "risk_checks": False})
    r = Backtest(cfg, h, SellOneCall(), signals=fixed_signals(2)).run()
    assert r.orders and r.orders[0]["status"] == "filled", r.orders
    t = only_trade(r)
    assert t.exit_reason == "early_assignment"
    # +$2 000 premium, short 100 sh at 80 (+$8 000), bought back at 100 (−$10 000): 0
    assert r.equity.tolist() == pytest.approx([100_000.0, 100_000.0])
    assert t.gross_pnl == Decimal("0") and not t.is_open
    assert r.cash[0] == pytest.approx(110_000.0)  # the short shares' proceeds before the buy-back


def test_intraday_history_then_resting_order_fills_later_same_day_and_day_orders_expire_only_at_the_close(
        exact_config):
    from engine.backtest.data import build_history
    from engine.backtest.signals import compute_signals
    from engine.model import Side
    from engine.strategies.base import Strategy, option_leg

    class PostOnce(Strategy):
        """Posts one 95/90 put credit spread at 0.70 credit (the natural is 0.50) and one at 2.00 (never fills)."""

        name = "post_once"

        def on_chain(self, ctx, chain):
            if getattr(self, "_done", False):
                return ()
            self._done = True
            legs = [option_leg(chain, chain.row_of("SPY240119P00095000"), Side.SELL),
                    option_leg(chain, chain.row_of("SPY240119P00090000"), Side.BUY)]
            return [self.intent(legs, 1, -0.70, "a:open"), self.intent(legs, 1, -2.00, "b:open")]

    # (local time, spot, 95 put, 90 put): 10:00 and 13:00 on Jan 2, 10:00 and 16:00 on Jan 3
    snaps = [("2024-01-02T10:00", 100.0, (1.00, 1.05), (0.45, 0.50)),
             ("2024-01-02T13:00", 98.0, (1.30, 1.35), (0.45, 0.50)),  # natural credit 0.80 ≥ 0.70 → fills at 0.70
             ("2024-01-03T10:00", 99.0, (1.10, 1.15), (0.40, 0.45)),
             ("2024-01-03T16:00", 99.5, (1.05, 1.10), (0.40, 0.45))]
    qd, qt, k, bid, ask, spot = [], [], [], [], [], []
    for t, s, p95, p90 in snaps:
        for strike, (b, a) in ((95.0, p95), (90.0, p90)):
            qd.append(t[:10])
            qt.append(np.datetime64(t) + np.timedelta64(5, "h"))  # EST → UTC
            k.append(strike)
            bid.append(b)
            ask.append(a)
            spot.append(s)
    h = build_history("SPY", np.array(qd, dtype="datetime64[D]"), np.full(8, np.datetime64("2024-01-19")),
                      np.array(k), np.zeros(8, bool), np.array(bid), np.array(ask), spot_by_row=np.array(spot),
                      quote_time=np.array(qt, dtype="datetime64[s]"))
    assert h.intraday and h.session_ends().tolist() == [1, 3]
    cfg = exact_config.model_copy(update={"risk_checks": False})
    r = Backtest(cfg, h, PostOnce(), signals=fixed_signals(4)).run()
    status = {o["tag"]: (o["status"], o["avg_fill_price"]) for o in r.orders}
    assert status["a:open"] == ("filled", "-0.7000")  # rested at 10:00, filled at 13:00 at its limit
    assert status["b:open"][0] == "expired"  # a DAY order: still working at 10:00, expired at the 13:00 close
    assert r.times is not None and len(r.equity) == 4 and r.info["days"] == 2
    # daily statistics: two sessions
    assert r.metrics.trades == 0 and len(r.dates) == 4
    # signals of an intraday history: a snapshot before the close sees the previous session's values
    sig = compute_signals(h, lookback=5, min_history=1)
    assert np.isnan(sig.atm_iv[0]) and sig.regime[0] == "neutral"
    assert sig.atm_iv[2] == sig.atm_iv[1]  # Jan 3, 10:00 uses Jan 2's close
