"""Clocks, and the one way market times are written for people.

All timestamps are UTC-aware. The engine reads the time only from its clock (docs/architecture.md §7): the wall
clock live, the simulated market's clock in paper-on-simulation, the bar clock in a backtest. This
module is the only one in ``engine/`` that reads the wall clock (with ``logging_setup``, whose records
carry real time); ``tests/foundation/test_one_clock.py`` enforces it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

#: market times are shown in New York time, the zone of the US option exchanges
MARKET_ZONE = ZoneInfo("America/New_York")
#: the one format of a market time shown to a person: weekday, day, month, time and the zone's name
#: (EST or EDT, so a time near a daylight-saving change is never ambiguous) and the year (a simulated
#: session or a backtest is often in another year)
MARKET_TIME_FORMAT = "%a %d %b %Y %H:%M:%S %Z"


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    """The machine's clock. Engine components get it through the engine (live mode), never directly:
    only places that mean the real present (the real market's session, a file name on disk, the span
    of the market calendar) construct one."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock tests and the backtester move by hand."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("clock start must be timezone-aware")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("clock time must be timezone-aware")
        self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now


def format_market_time(ts: datetime | None) -> str:
    """``ts`` in New York time, e.g. ``Mon 07 Dec 2026 09:31:05 EST`` ("" for None). Views, the status bar
    and the event log all use this, so one instant reads the same everywhere."""
    if ts is None:
        return ""
    if ts.tzinfo is None:
        raise ValueError(f"cannot show {ts!r} as a market time: it has no time zone")
    return ts.astimezone(MARKET_ZONE).strftime(MARKET_TIME_FORMAT)
