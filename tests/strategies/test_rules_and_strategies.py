"""Strategy API: management rules as data, entry selection of the three strategies on hand-made chains."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from engine import strategies
from engine.backtest.data import build_history
from engine.model import Fill, Option, Order, OrderStatus, OrderType, TimeInForce
from engine.strategies.base import ManagementRules, OpenTrade, SizingLimits, unflatten_params
from engine.strategies.iv_rank_put_spread import confidence, contracts_for


class Ctx:
    """A StrategyContext with fixed answers (the protocol is ours; the backtester and live runner implement it)."""

    def __init__(self, now: datetime, *, ivr: float = 0.8, regime: str = "low_vol", nl: float = 100_000.0,
                 risk: float = 0.02) -> None:
        self._now, self._ivr, self._regime, self._nl, self._risk = now, ivr, regime, nl, risk

    def now(self):
        return self._now

    def net_liquidation(self):
        return self._nl

    def iv_rank(self, underlying):
        return self._ivr

    def regime(self, underlying):
        return self._regime

    def sizing(self):
        return SizingLimits(risk_per_trade=self._risk)


def spy_chain(day: str = "2024-03-01", spot: float = 500.0):
    """Puts and calls 480..520 step 5 on one expiry 35 days out, deltas linear in strike, 0.10 wide quotes."""
    strikes = np.arange(480.0, 521.0, 5.0)
    n = len(strikes)
    exp = np.datetime64(day) + np.timedelta64(35, "D")
    k = np.r_[strikes, strikes]
    call = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    pdelta = -0.5 + (spot - strikes) * 0.025  # 500 → -0.5, 490 → -0.25, 480 → 0.0 (clipped below)
    pdelta = np.clip(pdelta, -0.99, -0.02)
    delta = np.r_[1 + pdelta, pdelta]
    put_mid = np.maximum(0.2, (strikes - 470.0) * 0.12)
    call_mid = put_mid[::-1]
    mid = np.r_[call_mid, put_mid]
    h = build_history("SPY", np.full(2 * n, np.datetime64(day)), np.full(2 * n, exp), k, call, mid - 0.05, mid + 0.05,
                      spot_by_row=np.full(2 * n, spot), delta=delta)
    return h.chain(0)


NOW = datetime(2024, 3, 1, 21, 0, tzinfo=UTC)


def test_iv_rank_put_spread_when_rank_high_then_sells_the_quarter_delta_put_and_buys_5_lower():
    s = strategies.create("iv_rank_put_spread")
    chain = spy_chain()
    [intent] = s.on_chain(Ctx(NOW, ivr=0.8, regime="low_vol"), chain)
    legs = [(leg.side.value, leg.symbol) for leg in intent.legs]
    assert legs == [("sell", "SPY240405P00490000"), ("buy", "SPY240405P00485000")]
    # the first price is the mid: 2.40 − 1.80 = 0.60 credit (the natural is 2.35 − 1.85 = 0.50)
    assert intent.limit_price == Decimal("-0.60")
    # size: floor(100000 × 0.02 / ((5 − 0.50) × 100)) = 4; confidence 0.8 × 1.0 ≥ 0.75 → full; low_vol × 1.0
    assert intent.quantity == 4
    assert intent.strategy_id == "iv_rank_put_spread" and intent.tag.endswith(":open")
    assert intent.order_type is OrderType.LIMIT and intent.tif is TimeInForce.DAY


@pytest.mark.parametrize(("ivr", "regime"), [(0.6, "low_vol"), (0.9, "neutral"), (float("nan"), "low_vol")])
def test_iv_rank_put_spread_when_rank_low_or_regime_neutral_or_no_history_then_no_trade(ivr, regime):
    s = strategies.create("iv_rank_put_spread")
    assert list(s.on_chain(Ctx(NOW, ivr=ivr, regime=regime), spy_chain())) == []


def test_confidence_and_size_follow_the_trading_rules():
    assert confidence(0.99, "iv_contraction", {"iv_contraction": 1.2}) == pytest.approx(0.95 * 1.2 if 0.95 * 1.2 < 0.98 else 0.98)
    assert confidence(0.8, "high_vol", {"high_vol": 0.7}) == pytest.approx(0.56)
    assert confidence(0.8, "low_vol", {"low_vol": 1.0}, ml_probability=0.5) == pytest.approx(0.6 * 0.8 + 0.4 * 0.5)
    # half size below 0.75 confidence; regime factor applied after the ≥ 1 floor
    assert contracts_for(100_000, 0.02, 4.5, 100, 1.0, 0.7, 0.75, 100) == 2
    assert contracts_for(100_000, 0.02, 4.5, 100, 0.5, 0.9, 0.75, 100) == 2
    assert contracts_for(1_000, 0.02, 4.5, 100, 1.0, 0.9, 0.75, 100) == 1  # at least one
    assert contracts_for(100_000, 0.02, 4.5, 100, 0.0, 0.9, 0.75, 100) == 0  # neutral regime: none


def test_high_vol_confidence_below_threshold_then_no_trade():
    s = strategies.create("iv_rank_put_spread")
    # 0.8 × 0.7 = 0.56 < 0.6
    assert list(s.on_chain(Ctx(NOW, ivr=0.8, regime="high_vol"), spy_chain())) == []


def test_iron_condor_when_rank_ok_then_four_legs_delta_targeted_with_fixed_wings():
    s = strategies.create("iron_condor", {"short_delta": 0.25})
    [intent] = s.on_chain(Ctx(NOW, ivr=0.6, regime="low_vol"), spy_chain())
    legs = [(leg.side.value, leg.symbol) for leg in intent.legs]
    assert legs == [("sell", "SPY240405P00490000"), ("buy", "SPY240405P00485000"),
                    ("sell", "SPY240405C00510000"), ("buy", "SPY240405C00515000")]
    assert intent.limit_price < 0  # a credit


def test_put_write_sells_atm_monthly_put_cash_secured():
    # 2024-03-01 + 14..45 days: monthly 2024-03-15 (14 d) and 2024-04-19; chain has only 2024-04-05 (not monthly)
    s = strategies.create("put_write", {"underlying": "SPY"})
    assert list(s.on_chain(Ctx(NOW), spy_chain())) == []
    s = strategies.create("put_write", {"underlying": "SPY", "monthly_only": False})
    [intent] = s.on_chain(Ctx(NOW, nl=250_000), spy_chain())
    assert [(leg.side.value, leg.symbol) for leg in intent.legs] == [("sell", "SPY240405P00500000")]
    assert intent.quantity == 5  # floor(250000 / (500 × 100))


def _fill(order: Order, price: str, leg: int, qty: int) -> Fill:
    return Fill(fill_id=f"f{leg}{price}", order_id=order.order_id, instrument=order.legs[leg].instrument,
                quantity=qty, price=Decimal(price), ts=NOW, leg_index=leg)


def _order_from(intent, status=OrderStatus.FILLED) -> Order:
    return Order(order_id="o1", client_order_id="c1", legs=intent.legs, quantity=intent.quantity,
                 order_type=intent.order_type, limit_price=intent.limit_price, tif=intent.tif, status=status,
                 created_at=NOW, updated_at=NOW, source=intent.source, strategy_id=intent.strategy_id, tag=intent.tag,
                 filled_quantity=intent.quantity)


def _ended(intent, status=OrderStatus.EXPIRED):
    return _order_from(intent, status).evolve(filled_quantity=0, updated_at=NOW)


def test_entry_when_unfilled_then_walks_from_mid_to_natural_in_steps_but_not_past_the_collar():
    s = strategies.create("iv_rank_put_spread", {"pricing.step": 0.5})
    ctx = Ctx(NOW)
    [intent] = s.on_chain(ctx, spy_chain())
    prices = [intent.limit_price]
    for _ in range(3):
        # the next attempt goes out as the last one expires at the close (good for the next session)
        [intent] = s.on_order(ctx, _ended(intent))
        prices.append(intent.limit_price)
    # mid 0.60 → halfway 0.55 → natural 0.50, and there it stays
    assert prices == [Decimal("-0.60"), Decimal("-0.55"), Decimal("-0.50"), Decimal("-0.50")]
    # a denied attempt is not re-sent at once: the same checks would say no again
    assert list(s.on_order(ctx, _ended(intent, OrderStatus.DENIED))) == []
    # an expiry on a later day than the last snapshot waits for the next snapshot
    [intent] = s.on_chain(ctx, spy_chain())
    assert list(s.on_order(Ctx(NOW.replace(day=4)), _ended(intent))) == []
    # a narrower collar (5 ticks) stops the walk 0.05 from mid, so the entry is never denied for its price
    s = strategies.create("iv_rank_put_spread", {"pricing.start": 1.0})

    class Tight(Ctx):
        def sizing(self):
            return SizingLimits(collar_ticks=5, collar_pct=0.0)

    [intent] = s.on_chain(Tight(NOW), spy_chain())
    assert intent.limit_price == Decimal("-0.55")
    # a fill resets the walk: the next trade starts at mid again
    s = strategies.create("iv_rank_put_spread", {"max_open_trades": 2})
    [first] = s.on_chain(Ctx(NOW), spy_chain())
    [second] = s.on_order(Ctx(NOW), _ended(first))
    assert second.limit_price == Decimal("-0.55")
    order = _order_from(second)
    s.on_order(Ctx(NOW), order, [_fill(order, "2.35", 0, -4), _fill(order, "1.80", 1, 4)])
    [third] = s.on_chain(Ctx(NOW), spy_chain())
    assert third.limit_price == Decimal("-0.60")


def test_price_walk_interval_when_not_elapsed_then_no_new_attempt():
    s = strategies.create("iv_rank_put_spread", {"pricing.interval_s": 3600})
    [intent] = s.on_chain(Ctx(NOW), spy_chain())
    assert list(s.on_order(Ctx(NOW), _ended(intent))) == []  # not re-sent before the interval
    assert list(s.on_chain(Ctx(NOW.replace(minute=30)), spy_chain())) == []
    [again] = s.on_chain(Ctx(NOW.replace(hour=22)), spy_chain())
    assert again.limit_price == Decimal("-0.55")


def test_managed_strategy_when_profit_target_reached_then_closes_from_mid_walking_to_the_natural():
    s = strategies.create("iv_rank_put_spread", {"rules.dte_exit": None})
    ctx = Ctx(NOW)
    [intent] = s.on_chain(ctx, spy_chain())
    order = _order_from(intent)
    s.on_order(ctx, order, [_fill(order, "2.40", 0, -4), _fill(order, "1.90", 1, 4)])
    [trade] = s.active_trades()
    assert trade.state == "open" and trade.entry_net == pytest.approx(-0.50)
    assert trade.max_profit == pytest.approx(0.50) and trade.max_loss == pytest.approx(4.50)
    # the market rallies: the spread's mid value falls to −0.20 (P&L 0.30 ≥ 50 % of 0.50)
    later = datetime(2024, 3, 8, 21, 0, tzinfo=UTC)
    ch = spy_chain("2024-03-01", 500.0)
    rows = [ch.row_of("SPY240405P00490000"), ch.row_of("SPY240405P00485000")]
    bid, ask = ch.bid.copy(), ch.ask.copy()
    bid[rows[0]], ask[rows[0]] = 0.30, 0.40
    bid[rows[1]], ask[rows[1]] = 0.10, 0.20
    out = s.on_chain(Ctx(later), replace(ch.with_quotes(bid, ask), ts=later))
    [close] = out
    assert close.tag.endswith(":close:profit_target")
    assert [(leg.side.value, leg.symbol) for leg in close.legs] == [("buy", "SPY240405P00490000"),
                                                                    ("sell", "SPY240405P00485000")]
    assert close.limit_price == Decimal("0.20")  # the mid: 0.35 − 0.15
    assert close.quantity == 4
    # unfilled: the same exit again, one step (half the way) closer to the natural 0.40 − 0.10 = 0.30
    [again] = s.on_order(Ctx(later), _ended(close))
    assert again.tag == close.tag and again.limit_price == Decimal("0.25")
    [last] = s.on_order(Ctx(later), _ended(again))
    assert last.limit_price == Decimal("0.30")


def test_stop_exit_when_fired_then_priced_at_the_natural_at_once():
    s = strategies.create("iv_rank_put_spread", {"rules.dte_exit": None, "rules.stop_multiple": 1.0})
    ctx = Ctx(NOW)
    [intent] = s.on_chain(ctx, spy_chain())
    order = _order_from(intent)
    s.on_order(ctx, order, [_fill(order, "2.40", 0, -4), _fill(order, "1.90", 1, 4)])
    ch = spy_chain()
    rows = [ch.row_of("SPY240405P00490000"), ch.row_of("SPY240405P00485000")]
    bid, ask = ch.bid.copy(), ch.ask.copy()
    bid[rows[0]], ask[rows[0]] = 3.00, 3.20  # the spread's mid value −(3.10 − 1.95) = −1.15: loss 0.65 ≥ 1 × 0.50
    bid[rows[1]], ask[rows[1]] = 1.90, 2.00
    [close] = s.on_chain(Ctx(datetime(2024, 3, 4, 21, 0, tzinfo=UTC)), ch.with_quotes(bid, ask))
    assert close.tag.endswith(":close:stop") and close.limit_price == Decimal("1.30")  # 3.20 − 1.90


def test_rules_fire_in_order_and_none_disables():
    trade = OpenTrade(tag="t", legs=(), quantity=1, expiry=date(2024, 4, 5), entry_net=-1.0, max_profit=1.0,
                      max_loss=4.0, opened_at=datetime(2024, 3, 1, 21, tzinfo=UTC), entry_regime="low_vol")
    now = datetime(2024, 3, 4, 21, tzinfo=UTC)  # 32 DTE
    r = ManagementRules()
    assert r.exit_reason(trade, -0.5, now, "low_vol") == "profit_target"  # P&L 0.5 = 50 %
    assert r.exit_reason(trade, -0.6, now, "low_vol") is None
    assert r.exit_reason(trade, -3.0, now, "low_vol") == "stop"  # loss 2.0 = 2 × credit
    assert r.exit_reason(trade, -0.6, datetime(2024, 3, 15, 21, tzinfo=UTC), "low_vol") == "dte_exit"  # 21 DTE
    assert r.exit_reason(trade, -0.6, now, "high_vol") == "regime_shift"
    off = ManagementRules(profit_target=None, stop_multiple=None, dte_exit=None, regime_exits=(),
                          time_exit_fraction=0.8)
    assert off.exit_reason(trade, -3.0, now, "high_vol") is None
    assert off.exit_reason(trade, -0.6, datetime(2024, 3, 29, 21, tzinfo=UTC), "low_vol") == "time_exit"


def test_params_when_unknown_or_invalid_then_value_error_names_it():
    with pytest.raises(ValueError, match="widht"):
        strategies.create("iv_rank_put_spread", {"widht": 5})
    with pytest.raises(ValueError, match="short_delta"):
        strategies.create("iv_rank_put_spread", {"short_delta": "2"})
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.create("nope")
    assert unflatten_params({"rules.dte_exit": "none", "width": "10"}) == {"rules": {"dte_exit": None}, "width": "10"}
    s = strategies.create("iv_rank_put_spread", {"rules.dte_exit": "none", "width": "10"})
    assert s.params.rules.dte_exit is None and s.params.width == 10.0


def test_denied_open_order_then_trade_forgotten_and_strategy_can_try_again():
    s = strategies.create("iv_rank_put_spread")
    ctx = Ctx(NOW)
    [intent] = s.on_chain(ctx, spy_chain())
    s.on_order(ctx, _order_from(intent, OrderStatus.DENIED).evolve(filled_quantity=0, updated_at=NOW))
    assert s.active_trades() == []
    assert len(s.on_chain(ctx, spy_chain())) == 1


def test_option_leg_instrument_matches_occ():
    chain = spy_chain()
    assert chain.option(0) == Option.from_occ(str(chain.symbol[0]))
    assert math.isclose(chain.spot, 500.0)


def test_wing_when_exact_strike_not_listed_then_nearest_beyond_the_short():
    from engine.strategies.selection import wing_row

    chain = spy_chain()
    exp = chain.expiry[0]
    # 490 short, width 7 → 483 not listed: 485 is nearest beyond (480 further); for calls 510 + 7 → 515
    assert chain.strike[wing_row(chain, exp, 490.0, 7.0, call=False)] == 485.0
    assert chain.strike[wing_row(chain, exp, 510.0, 7.0, call=True)] == 515.0
    assert wing_row(chain, exp, 480.0, 5.0, call=False) is None  # nothing below the lowest strike


def test_leg_marks_when_a_leg_is_missing_and_another_is_listed_twice_then_none_not_key_error():
    from engine.model import Leg, Side
    from engine.strategies.base import leg_marks

    chain = spy_chain()
    listed = chain.option(0)
    missing = Option.from_occ(listed.key[:-8] + "00999000")  # a strike the chain does not list
    doubled = chain.take(np.r_[np.arange(len(chain)), 0])  # the first contract appears twice
    assert leg_marks(doubled, [Leg(listed, Side.SELL), Leg(missing, Side.BUY)]) is None
    both = leg_marks(chain, [Leg(listed, Side.SELL), Leg(chain.option(1), Side.BUY)])
    assert both is not None and math.isfinite(both[0])
