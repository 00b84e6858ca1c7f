"""Earnings events of the simulated market: the calendar, the IV ramp into the date, the seeded gap, the crush."""

from __future__ import annotations

import math
from datetime import date
from itertools import pairwise

import numpy as np
import pytest
from pydantic import ValidationError

from engine.market.config import EarningsSpec, SimulatorConfig
from engine.market.simulated.earnings import (
    EarningsSchedule,
    announcement_instant,
    gap,
    generated_dates,
    history_events,
)
from engine.market.simulated.history import generate_daily_history, iter_sessions
from engine.strategies.structures import atm_iv

EVENT = date(2021, 3, 10)  # a Wednesday: the announcement after its close, the gap at Thursday's open


def aapl(earnings: EarningsSpec | None) -> SimulatorConfig:
    cfg = SimulatorConfig(seed=11).restricted_to(["AAPL"])
    spec = cfg.universe[0].model_copy(update={"earnings": earnings})
    return cfg.model_copy(update={"universe": [spec]})


def sessions(cfg: SimulatorConfig, n: int = 8):
    return list(iter_sessions(cfg, date(2021, 3, 4), n))


def test_default_aapl_reports_on_the_last_thursday_of_january_april_july_october():
    spec = SimulatorConfig().underlying("AAPL").earnings
    assert spec is not None
    days = generated_dates(spec, 2021, 2021)
    assert days == [date(2021, 1, 28), date(2021, 4, 29), date(2021, 7, 29), date(2021, 10, 28)]
    assert all(d.weekday() == 3 for d in days)
    assert SimulatorConfig().underlying("SPY").earnings is None  # ETFs have none


def test_explicit_dates_join_the_generated_ones_and_next_event_counts_the_event_day():
    cfg = aapl(EarningsSpec(dates=[date(2021, 3, 10)], quarterly_months=[4]))
    schedule = EarningsSchedule(cfg)
    assert schedule.next_event("AAPL", date(2021, 3, 1)) == date(2021, 3, 10)
    assert schedule.next_event("AAPL", date(2021, 3, 10)) == date(2021, 3, 10)  # after that day's close
    assert schedule.next_event("AAPL", date(2021, 3, 11)) == date(2021, 4, 29)
    assert schedule.next_event("SPY", date(2021, 3, 1)) is None


@pytest.mark.parametrize(("kw", "field"), [({}, "dates or quarterly_months"), ({"quarterly_months": [13]}, "1-12"),
                                           ({"dates": ["2021-03-10"], "move": 0}, "move")])
def test_bad_earnings_settings_are_errors_that_say_why(kw, field):
    with pytest.raises(ValidationError, match=field):
        EarningsSpec(**kw)


def test_event_variance_is_move_squared_for_expiries_after_the_announcement_only():
    cfg = aapl(EarningsSpec(dates=[EVENT], move=0.05))
    schedule = EarningsSchedule(cfg)
    announce = announcement_instant(EVENT)
    expiries = np.array([announce, announce + np.timedelta64(1, "s"), announce + np.timedelta64(30, "D")])
    before = schedule.event_variance(np.zeros(3, dtype=np.int64), announce - np.timedelta64(3, "D"), expiries)
    assert before.tolist() == pytest.approx([0.0, 0.0025, 0.0025])
    at_close = schedule.event_variance(np.zeros(3, dtype=np.int64), announce, expiries)
    assert at_close.tolist() == pytest.approx([0.0, 0.0025, 0.0025])  # still ahead at the event day's close
    after = schedule.event_variance(np.zeros(3, dtype=np.int64), announce + np.timedelta64(1, "s"), expiries)
    assert after.tolist() == [0.0, 0.0, 0.0]


def test_iv_ramps_into_the_event_front_most_then_collapses_and_the_stock_gaps_by_the_seeded_draw():
    with_event = sessions(aapl(EarningsSpec(dates=[EVENT], move=0.06)))
    without = sessions(aapl(None))
    by_day = {s.session: s for s in with_event}
    plain = {s.session: s for s in without}
    front = np.datetime64("2021-03-12")  # the first weekly after the event

    def front_premium(snaps, day):
        ch = snaps[day].chains["AAPL"]
        exp = np.unique(ch.expiry)
        f = exp[exp.astype("datetime64[D]") == front][0]
        back = exp[exp.astype("datetime64[D]") > front][1]  # a later expiry for comparison
        return atm_iv(ch, f), atm_iv(ch, back)

    ramp = [front_premium(by_day, d)[0] - front_premium(plain, d)[0]
            for d in (date(2021, 3, 5), date(2021, 3, 8), date(2021, 3, 9), date(2021, 3, 10))]
    assert all(b > a for a, b in pairwise(ramp)), ramp  # the event premium grows into the date
    f_ev, b_ev = front_premium(by_day, EVENT)
    f_pl, b_pl = front_premium(plain, EVENT)
    assert f_ev - f_pl > 3 * (b_ev - b_pl) > 0  # the front expiry carries the most of it
    f_after, b_after = front_premium(by_day, date(2021, 3, 11))
    f_after_plain, b_after_plain = front_premium(plain, date(2021, 3, 11))
    # crushed: the front's premium over the back is what it is without earnings (the gap moved the spot, so
    # the at-the-money strike sits elsewhere on the smile: equal to within a small fraction of the event premium)
    left = (f_after - b_after) - (f_after_plain - b_after_plain)
    assert abs(left) < 0.1 * (f_ev - f_pl), (left, f_ev - f_pl)
    assert f_after < f_ev - 0.5 * (f_ev - f_pl)
    # before the event the paths are the same; from the open after it, shifted by exactly the seeded gap
    assert by_day[EVENT].close["AAPL"] == plain[EVENT].close["AAPL"]
    jump = gap(11, "AAPL", EVENT, 0.06)
    assert jump != 0
    for day in (date(2021, 3, 11), date(2021, 3, 12)):
        assert math.log(by_day[day].open["AAPL"] / plain[day].open["AAPL"]) == pytest.approx(jump, abs=1e-12)


def test_the_same_seed_gives_the_same_events_and_another_seed_another_gap():
    a = sessions(aapl(EarningsSpec(dates=[EVENT])), 6)
    b = sessions(aapl(EarningsSpec(dates=[EVENT])), 6)
    assert [s.close["AAPL"] for s in a] == [s.close["AAPL"] for s in b]
    assert gap(11, "AAPL", EVENT, 0.05) != gap(12, "AAPL", EVENT, 0.05)


def test_a_generated_history_carries_its_calendar_for_the_backtest_context():
    from engine.backtest.config import BacktestConfig
    from engine.backtest.runner import BacktestContext
    from engine.strategies.base import SizingLimits

    h = generate_daily_history("AAPL", days=5, seed=7, start=date(2021, 1, 4))
    assert history_events(h)["AAPL"][:2] == [date(1990, 1, 25), date(1990, 4, 26)]
    ctx = BacktestContext(SizingLimits())
    ctx._history, ctx._underlying, ctx._now = h, "AAPL", h.timestamp(0)
    assert ctx.next_event("AAPL") == date(2021, 1, 28)
    # a cached simulated history (columns only) falls back to the default simulator's calendar
    del h.events
    assert history_events(h)["AAPL"] == EarningsSchedule(SimulatorConfig()).dates("AAPL")
    assert BacktestConfig  # the context is the one the runner builds


def test_the_calendar_is_settings_data_read_from_toml():
    import tomllib

    text = """
    [[universe]]
    symbol = "XYZ"
    kind = "equity"
    spot = 50.0
    earnings = { dates = [2026-02-12, 2026-05-07], move = 0.08 }
    """
    cfg = SimulatorConfig.model_validate(tomllib.loads(text))
    assert EarningsSchedule(cfg).next_event("XYZ", date(2026, 2, 13)) == date(2026, 5, 7)
    with pytest.raises(ValidationError, match="move"):
        SimulatorConfig.model_validate(tomllib.loads(text.replace("0.08", "0.9")))
