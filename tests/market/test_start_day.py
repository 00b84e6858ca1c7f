"""Where a simulated market with no configured start opens, on the awkward days a user starts the app.

These are the only tests that build a market on "today" (the wall clock, moved here with time-machine):
every other test pins its start (tests/sim_start.py). The instants are those ``make test-clock`` runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import time_machine

from engine.market.config import SimulatorConfig
from engine.market.simulated.market import SimulatedMarket

pytestmark = pytest.mark.usefixtures("unpinned_simulated_start")


def _market_started_at(wall: str) -> SimulatedMarket:
    with time_machine.travel(datetime.fromisoformat(wall), tick=False):
        return SimulatedMarket(SimulatorConfig(seed=7).restricted_to(["SPY"]))


@pytest.mark.parametrize(("wall", "session", "open_utc", "close_utc"), [
    # Saturday night in New York (already Sunday in UTC): the next session, Monday
    ("2026-12-05T23:30:00-05:00", date(2026, 12, 7), (14, 30), (21, 0)),
    # Thanksgiving: the market is shut; the Friday after closes early at 13:00
    ("2026-11-26T11:00:00-05:00", date(2026, 11, 27), (14, 30), (18, 0)),
    # the Sunday clocks spring forward, a minute before: Monday opens an hour earlier in UTC (EDT)
    ("2027-03-14T01:59:00-05:00", date(2027, 3, 15), (13, 30), (20, 0)),
    # an expiry Friday after the close: the simulated day is that session, from its open
    ("2026-12-18T16:30:00-05:00", date(2026, 12, 18), (14, 30), (21, 0)),
])
def test_market_without_a_start_when_started_on_an_awkward_day_then_opens_the_right_session(
        wall, session, open_utc, close_utc):
    m = _market_started_at(wall)
    assert m.session == session
    assert m.now == m.session_open == datetime(*session.timetuple()[:3], *open_utc, tzinfo=UTC)
    assert m.session_close == datetime(*session.timetuple()[:3], *close_utc, tzinfo=UTC)
    assert m.is_open
    exps = m.expirations("SPY")
    assert exps[0] == session  # SPY lists dailies: the session's own expiry is live at its open
    assert all(e.weekday() < 5 for e in exps)
    assert date(2026, 11, 26) not in exps and date(2026, 12, 25) not in exps  # no expiry on a holiday


def test_market_without_a_start_when_started_on_the_same_day_then_the_same_market_whatever_the_hour():
    """The start day, not the wall-clock hour, decides the path: 10:00 and 15:59 give one market."""
    early = _market_started_at("2026-12-07T10:00:00-05:00")
    late = _market_started_at("2026-12-07T15:59:00-05:00")
    assert early.now == late.now == datetime(2026, 12, 7, 14, 30, tzinfo=UTC)
    assert early.spots() == late.spots()
    assert early.chain("SPY").bid.tolist() == late.chain("SPY").bid.tolist()
