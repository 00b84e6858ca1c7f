"""earnings_crush: sell the front expiry's event premium defined-risk before earnings, close the day after."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import pytest

from engine import strategies
from engine.strategies.earnings_crush import event_expiries
from tests.strategies.option_chains import (
    Ctx,
    bsm_chain,
    close_of,
    entry_denials,
    fill,
    legs_of,
    run_backtest,
)

NOW = close_of("2024-03-01")  # a Friday
EVENT = date(2024, 3, 4)  # reports after Monday's close
# front: settles 7 days out (after the event), priced with the expected move; next: a week later, calm
EVENT_CHAIN = {2: 0.25, 7: 0.60, 14: 0.30, 35: 0.28}


class EventCtx(Ctx):
    """The hand-built context plus an earnings calendar."""

    def __init__(self, now, event: date | None = EVENT, **kw) -> None:
        super().__init__(now, **kw)
        self._event = event

    def next_event(self, underlying: str) -> date | None:
        return self._event if self._event is not None and self._event >= now_date(self) else None


def now_date(ctx: Ctx) -> date:
    from engine.strategies.base import market_date

    return market_date(ctx.now())


def chain(expiries=None, **kw):
    return bsm_chain(expiries=expiries or EVENT_CHAIN, underlying="AAPL", **kw)


def strike_at_delta(ch, *, call: bool, target: float = 0.20) -> int:
    """The strike of the 2024-03-08 call or put whose |delta| is nearest ``target`` (by the chain's own deltas)."""
    import numpy as np

    rows = np.nonzero((ch.expiry.astype("datetime64[D]") == np.datetime64("2024-03-08")) & (ch.is_call == call))[0]
    d = np.abs(ch.vendor["vendor_delta"][rows])
    return int(ch.strike[rows[np.argmin(np.abs(d - target))]])


def natural_credit(ch, intent) -> float:
    rows = [ch.row_of(leg.symbol) for leg in intent.legs]
    return float(sum((ch.bid[r] if leg.side.value == "sell" else -ch.ask[r]) for leg, r in zip(intent.legs, rows,
                                                                                               strict=True)))


def test_before_the_event_sells_the_front_condor_at_the_natural_sized_by_half_the_risk_budget():
    ch = chain()
    [intent] = strategies.create("earnings_crush").on_chain(EventCtx(NOW), ch)
    # 20-delta shorts in the 7-day expiry (the first after the event), 10-dollar wings
    put_k, call_k = strike_at_delta(ch, call=False), strike_at_delta(ch, call=True)
    assert legs_of(intent) == [("sell", 1, f"AAPL240308P00{put_k}000"), ("buy", 1, f"AAPL240308P00{put_k - 10}000"),
                               ("sell", 1, f"AAPL240308C00{call_k}000"), ("buy", 1, f"AAPL240308C00{call_k + 10}000")]
    credit = natural_credit(ch, intent)
    assert intent.limit_price == -Decimal(str(round(credit, 2)))  # the natural: inside the 10 % collar here
    assert intent.quantity == math.floor(0.5 * 2000 / ((10 - credit) * 100))
    assert intent.tag.endswith(":open")


def test_iron_butterfly_sells_the_atm_straddle_with_wings():
    [intent] = strategies.create("earnings_crush", {"structure": "iron_butterfly"}).on_chain(EventCtx(NOW), chain())
    assert legs_of(intent) == [("sell", 1, "AAPL240308P00500000"), ("buy", 1, "AAPL240308P00490000"),
                               ("sell", 1, "AAPL240308C00500000"), ("buy", 1, "AAPL240308C00510000")]


@pytest.mark.parametrize(("event", "expiries"), [
    (None, EVENT_CHAIN),  # no earnings known
    (date(2024, 3, 6), EVENT_CHAIN),  # 5 days away: beyond entry_days
    (EVENT, {2: 0.25, 7: 0.31, 14: 0.30, 35: 0.28}),  # the front carries no event premium (1 point < 3)
    (EVENT, {2: 0.25, 3: 0.60, 35: 0.28}),  # the only expiry after the event settles the day after it
])
def test_no_event_or_no_premium_or_no_room_to_close_then_no_trade(event, expiries):
    assert list(strategies.create("earnings_crush").on_chain(EventCtx(NOW, event=event), chain(expiries))) == []


def test_front_expiry_is_the_first_settling_min_days_after_the_event():
    ch = chain({2: 0.25, 3: 0.5, 7: 0.6, 14: 0.3})
    front, nxt = event_expiries(ch, date(2024, 3, 1), EVENT, 21, 4)
    assert (str(front)[:10], str(nxt)[:10]) == ("2024-03-08", "2024-03-15")
    assert event_expiries(ch, date(2024, 3, 1), EVENT, 5, 4) is None  # the front is 7 days out, max 5


def test_one_trade_per_event_and_closed_at_the_natural_on_the_day_after():
    ctx = EventCtx(NOW)
    s = strategies.create("earnings_crush", {"rules.profit_target": None})
    ch = chain()
    [intent] = s.on_chain(ctx, ch)
    fill(s, ctx, intent, ["3.00", "1.50", "3.00", "1.50"])  # credit 3.00 per condor
    [trade] = s.active_trades()
    assert (trade.max_profit, trade.max_loss) == (pytest.approx(3.0), pytest.approx(7.0))
    # the event day's close: the trade is held, and no second trade for the same event
    assert list(s.on_chain(EventCtx(close_of("2024-03-04")), ch)) == []
    # the morning after (crushed: the front back at 30 %): close at the natural at once
    after = bsm_chain(day="2024-03-05", expiries={3: 0.30, 10: 0.30}, underlying="AAPL")
    [close] = s.on_chain(EventCtx(close_of("2024-03-05")), after)
    assert close.tag == f"{trade.tag}:close:event_passed"
    rows = [after.row_of(leg.symbol) for leg in close.legs]
    natural = sum(float(after.ask[r]) if leg.side.value == "buy" else -float(after.bid[r])
                  for leg, r in zip(close.legs, rows, strict=True))
    assert float(close.limit_price) == pytest.approx(natural, abs=1e-9)
    # the books survive a restart: the event stays done
    again = strategies.create("earnings_crush")
    again.restore(s.state())
    assert list(again.on_chain(ctx, ch)) == []


def test_bad_parameters_are_errors_that_name_them():
    with pytest.raises(ValueError, match="entry_days"):
        strategies.create("earnings_crush", {"entry_days": -1})
    with pytest.raises(ValueError, match="structure"):
        strategies.create("earnings_crush", {"structure": "strangle"})


def test_one_year_aapl_backtest_sells_into_each_event_without_denials_and_reconciles():
    from engine.market.simulated.history import generate_daily_history

    history = generate_daily_history("AAPL", years=1, seed=7, start=date(2021, 1, 4))
    result = run_backtest("earnings_crush", history)
    assert result.status == "completed" and len(result.trades) >= 1
    entries, denied = entry_denials(result)
    assert denied == 0 and entries >= len(result.trades)
    closes = [o for o in result.orders if ":close:" in o["tag"] and o["status"] == "filled"]
    assert closes, "every trade is closed after its event"
    assert result.reconciliation()["difference"] == 0


def test_the_live_context_answers_from_the_calendar_it_is_given_and_none_without_one():
    from engine.clock import ManualClock
    from engine.strategies.base import SizingLimits, StrategyContext
    from engine.strategies.live import LiveContext

    clock = ManualClock(NOW)
    kw = {"net_liquidation": lambda: 1.0, "iv_rank": lambda u: 0.5, "regime": lambda u: "normal",
          "sizing": SizingLimits}
    wired = LiveContext(clock, next_event=lambda u: EVENT if u == "AAPL" else None, **kw)
    assert isinstance(wired, StrategyContext)
    assert (wired.next_event("AAPL"), wired.next_event("SPY")) == (EVENT, None)
    assert LiveContext(clock, **kw).next_event("AAPL") is None
