"""Market hours and the listing calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from engine.market.simulated.calendar import (
    listed_expiries,
    monthly_expiries,
    strike_grid,
    vix_expiries,
    weekly_expiries,
)
from engine.market.simulated.market import market_calendar_for


@pytest.fixture(scope="module")
def cal():
    return market_calendar_for(date(2026, 11, 23))  # spans the dates below whatever the wall clock


def test_market_hours_follow_nyse_holidays_and_early_closes(cal):
    assert not cal.is_session(date(2026, 11, 26))  # Thanksgiving
    o, c = cal.open_close(date(2026, 11, 27))  # early close 13:00 New York
    assert (o.hour, c.hour) == (14, 18)
    assert cal.is_open(datetime(2026, 11, 27, 17, 59, tzinfo=UTC))
    assert not cal.is_open(datetime(2026, 11, 27, 18, 0, tzinfo=UTC))
    assert cal.next_open(datetime(2026, 11, 25, 22, 0, tzinfo=UTC)) == o


def test_holiday_friday_expiry_moves_to_thursday(cal):
    # Good Friday 2027-03-26 closes the market: that weekly expires on Thursday the 25th
    fridays = weekly_expiries(cal, date(2027, 3, 22), 1)
    assert date(2027, 3, 25) in fridays and date(2027, 3, 26) not in fridays
    # Christmas 2026 falls on a Friday
    assert date(2026, 12, 24) in weekly_expiries(cal, date(2026, 12, 21), 0)


def test_monthlies_are_third_fridays_and_vix_expiries_are_wednesdays(cal):
    months = monthly_expiries(cal, date(2026, 11, 23), 3)
    assert months == [date(2026, 12, 18), date(2027, 1, 15), date(2027, 2, 19)]
    vix = vix_expiries(cal, date(2026, 11, 23), 2)
    assert all(d.weekday() == 2 for d in vix)
    assert vix[0] == date(2026, 12, 16)  # 30 days before the 3rd Friday of January 2027


def test_spy_lists_dailies_and_monday_wednesday_weeklies(cal):
    exps = listed_expiries(cal, date(2026, 11, 23), ["monthly", "weekly", "mon_wed", "daily"], months_ahead=2,
                           weeks_ahead=2, days_ahead=3)
    assert exps[0] == date(2026, 11, 23)  # 0DTE
    assert date(2026, 11, 25) in exps and date(2026, 11, 30) in exps  # Wednesday, Monday
    assert date(2026, 11, 26) not in exps  # holiday
    assert exps == sorted(set(exps))


def test_strike_grid_is_fine_near_the_money_and_coarse_in_the_wings():
    k = strike_grid(600.0, 0.25, (1.0, 5.0, 10.0), 0.05, 0.20, 0.6, 400)
    near = k[(k > 580) & (k < 620)]
    assert np.all(np.diff(near) == 1.0)
    far = k[k < 470]
    assert np.all(far % 10 == 0)
    assert k.min() > 0
    assert len(strike_grid(600.0, 0.25, (1.0, 5.0, 10.0), 0.05, 0.20, 0.6, 30)) == 30
    with pytest.raises(ValueError, match="positive spot"):
        strike_grid(float("nan"), 0.1, (1.0, 5.0, 10.0), 0.05, 0.2, 0.5, 10)


def test_trading_time_counts_sessions_not_calendar_days(cal):
    ts = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)  # Wednesday after the close
    exp = np.array(["2026-11-27T21:00:00", "2026-11-30T21:00:00"], dtype="datetime64[s]")
    days = cal.trading_years(ts, exp) * 252
    # Friday (after the Thanksgiving holiday) is one session away; Monday two
    assert days == pytest.approx([1.0, 2.0])


def test_session_cache_round_trips_and_a_corrupt_file_is_rebuilt(tmp_path, monkeypatch, caplog):
    from engine.market.simulated.calendar import MarketCalendar, calendar_cache_file, load_sessions

    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path))
    path = calendar_cache_file(2024, 2027)
    assert path.parent == tmp_path and not path.exists()
    built = load_sessions(2024, 2027)  # from exchange_calendars, then written
    assert path.exists()
    cached = load_sessions(2024, 2027)
    for a, b in zip(built, cached, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    cal = MarketCalendar(2024, 2027)  # from the cache: the same answers
    assert not cal.is_session(date(2026, 11, 26))
    assert cal.open_close(date(2026, 11, 27))[1].hour == 18

    path.write_bytes(b"not a numpy archive")
    with caplog.at_level("WARNING"):
        again = load_sessions(2024, 2027)
    assert "unreadable" in caplog.text and np.array_equal(again[0], built[0])
    assert np.array_equal(load_sessions(2024, 2027)[1], built[1])  # rewritten and readable again
