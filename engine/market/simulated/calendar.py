"""Market hours (NYSE via ``exchange_calendars`` XNYS) and the options listing calendar.

All instants are UTC-aware ``datetime``; session dates are plain ``date`` in New York. Early closes
(13:00) and holidays come from the exchange calendar. Expiries that fall on a holiday move to the
previous session (Good Friday monthlies expire on Thursday).
"""

from __future__ import annotations

import calendar as _pycal
import contextlib
import logging
import os
from bisect import bisect_left, bisect_right
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engine.clock import WallClock
from engine.model.instruments import NEW_YORK

log = logging.getLogger(__name__)

#: trading days per year used to convert sessions into "trading time" (variance clock)
TRADING_DAYS_PER_YEAR = 252.0


@lru_cache(maxsize=4)
def _xnys(start_year: int, end_year: int) -> Any:  # exchange_calendars ships no type information
    import warnings

    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars trips a pandas deprecation warning
        warnings.simplefilter("ignore")
        return xcals.get_calendar("XNYS", start=f"{start_year}-01-01", end=f"{end_year}-12-31")


def calendar_cache_file(start_year: int, end_year: int) -> Path:
    """Where the sessions of ``start_year``..``end_year`` are cached: the user cache folder (or
    ``$OPTIONDESK_CACHE_DIR``), one file per exchange_calendars version."""
    from engine.paths import cache_dir

    try:
        version = metadata.version("exchange_calendars")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / f"xnys-{start_year}-{end_year}-xcals{version}.npz"


def load_sessions(start_year: int, end_year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NYSE session dates (``datetime64[D]``) and their UTC opens and closes (``datetime64[s]``).

    Building them with exchange_calendars imports pandas and takes ~1.4 s, most of the engine's start;
    the result is cached on disk (a few kB) and read back in milliseconds. A missing, unreadable or
    inconsistent cache file is rebuilt and rewritten (atomically); a read-only cache folder only costs
    the rebuild."""
    path = calendar_cache_file(start_year, end_year)
    try:
        with np.load(path, allow_pickle=False) as z:
            sessions, opens, closes = z["sessions"], z["opens"], z["closes"]
        if (sessions.dtype == np.dtype("datetime64[D]") and opens.dtype == closes.dtype == np.dtype("datetime64[s]")
                and len(sessions) == len(opens) == len(closes) > 0):
            return sessions, opens, closes
        log.warning("market calendar cache %s is inconsistent; rebuilding it", path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # truncated or foreign file
        log.warning("market calendar cache %s is unreadable (%s); rebuilding it", path, exc)
    cal = _xnys(start_year, end_year)
    sched = cal.schedule
    sessions = np.asarray(cal.sessions.values, dtype="datetime64[D]")
    opens = sched["open"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    closes = sched["close"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, sessions=sessions, opens=opens, closes=closes)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("could not cache the market calendar at %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
    return sessions, opens, closes


class MarketCalendar:
    """NYSE sessions between ``start_year`` and ``end_year`` with fast, cached lookups.

    >>> cal = MarketCalendar()
    >>> cal.is_open(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # day after Thanksgiving, before 13:00 ET close
    True
    """

    def __init__(self, start_year: int | None = None, end_year: int | None = None) -> None:
        this_year = WallClock().now().year  # the span is around the real present, not a simulated day
        self.start_year = start_year or max(2007, this_year - 19)
        self.end_year = end_year or this_year + 3
        sessions, opens, closes = load_sessions(self.start_year, self.end_year)
        self._dates: list[date] = sessions.astype(object).tolist()
        self._opens: list[datetime] = [t.replace(tzinfo=UTC) for t in opens.astype(object).tolist()]
        self._closes: list[datetime] = [t.replace(tzinfo=UTC) for t in closes.astype(object).tolist()]
        self._index = {d: i for i, d in enumerate(self._dates)}

    # ---- sessions -----------------------------------------------------------------------------
    @property
    def first_session(self) -> date:
        return self._dates[0]

    @property
    def last_session(self) -> date:
        return self._dates[-1]

    def _check(self, d: date) -> None:
        if d < self._dates[0] or d > self._dates[-1]:
            raise ValueError(
                f"date {d} is outside the market calendar ({self._dates[0]} .. {self._dates[-1]})"
            )

    def is_session(self, d: date) -> bool:
        return d in self._index

    def sessions(self, start: date, end: date) -> list[date]:
        """Session dates in ``[start, end]``."""
        i, j = bisect_left(self._dates, start), bisect_right(self._dates, end)
        return self._dates[i:j]

    def session_on_or_after(self, d: date) -> date:
        self._check(d)
        i = bisect_left(self._dates, d)
        if i >= len(self._dates):
            raise ValueError(f"no session on or after {d} in the calendar")
        return self._dates[i]

    def session_on_or_before(self, d: date) -> date:
        self._check(d)
        i = bisect_right(self._dates, d) - 1
        if i < 0:
            raise ValueError(f"no session on or before {d} in the calendar")
        return self._dates[i]

    def next_session(self, d: date) -> date:
        return self.session_on_or_after(d + timedelta(days=1))

    def previous_session(self, d: date) -> date:
        return self.session_on_or_before(d - timedelta(days=1))

    def add_sessions(self, d: date, n: int) -> date:
        """The session ``n`` sessions after session-or-next ``d`` (n ≥ 0)."""
        i = bisect_left(self._dates, d) + n
        if i >= len(self._dates):
            raise ValueError(f"{n} sessions after {d} is beyond the calendar")
        return self._dates[i]

    def sessions_between(self, start: date, end: date) -> int:
        """Number of sessions ``s`` with ``start < s <= end`` (0 when end <= start)."""
        if end <= start:
            return 0
        return bisect_right(self._dates, end) - bisect_right(self._dates, start)

    def open_close(self, d: date) -> tuple[datetime, datetime]:
        """UTC open and close of session ``d`` (``ValueError`` if ``d`` is not a session)."""
        i = self._index.get(d)
        if i is None:
            raise ValueError(f"{d} is not a trading session (weekend or holiday)")
        return self._opens[i], self._closes[i]

    # ---- instants -----------------------------------------------------------------------------
    @staticmethod
    def ny_date(ts: datetime) -> date:
        return ts.astimezone(NEW_YORK).date()

    def is_open(self, ts: datetime) -> bool:
        d = self.ny_date(ts)
        i = self._index.get(d)
        return i is not None and self._opens[i] <= ts < self._closes[i]

    def next_open(self, ts: datetime) -> datetime:
        """The next session open strictly after ``ts`` (or ``ts``'s own session open if still ahead)."""
        i = bisect_right(self._opens, ts)
        if i >= len(self._opens):
            raise ValueError(f"no session open after {ts} in the calendar")
        return self._opens[i]

    def next_close(self, ts: datetime) -> datetime:
        """The first session close at or after ``ts``."""
        i = bisect_left(self._closes, ts)
        if i >= len(self._closes):
            raise ValueError(f"no session close after {ts} in the calendar")
        return self._closes[i]

    def current_or_next_session(self, ts: datetime) -> date:
        """The session ``ts`` is in, or the next one to open."""
        i = bisect_left(self._closes, ts)
        if i < len(self._closes) and ts >= self._closes[i]:
            i += 1
        if i >= len(self._dates):
            raise ValueError(f"no session after {ts} in the calendar")
        return self._dates[i]

    def session_fraction_left(self, ts: datetime) -> float:
        """Fraction of today's session still ahead at ``ts`` (1 before the open, 0 after the close)."""
        d = self.ny_date(ts)
        i = self._index.get(d)
        if i is None:
            return 0.0
        o, c = self._opens[i], self._closes[i]
        if ts <= o:
            return 1.0
        if ts >= c:
            return 0.0
        return (c - ts).total_seconds() / (c - o).total_seconds()

    def trading_years(self, ts: datetime, expiries: np.ndarray) -> np.ndarray:
        """Trading time in years (sessions / 252) from ``ts`` to each expiry instant (``datetime64[s]`` UTC).

        Today's unfinished session counts by its remaining fraction; an AM-settled expiry (09:30 New
        York) does not include its own session. Non-positive when expired.
        """
        return self.trading_time_table(self.ny_date(ts), expiries).years(ts, self)

    def trading_time_table(self, today: date, expiries: np.ndarray) -> TradingTimeTable:
        """Per-expiry session counts for ``today`` (reuse it for every instant of the session)."""
        n = len(expiries)
        full = np.zeros(n)
        same_day = np.zeros(n, dtype=bool)
        am = np.zeros(n, dtype=bool)
        for j, e in enumerate(expiries):
            e_ny = e.astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC).astimezone(NEW_YORK)
            am[j] = e_ny.hour < 12
            e_day = e_ny.date()
            same_day[j] = e_day == today
            full[j] = max(self.sessions_between(today, e_day) - (1 if am[j] else 0), 0)
        return TradingTimeTable(today=today, expiry=np.asarray(expiries, dtype="datetime64[s]"), full=full,
                                same_day=same_day, am=am)


class TradingTimeTable:
    """Precomputed session counts to expiries on one session day; :meth:`years` is vectorized."""

    def __init__(self, today: date, expiry: np.ndarray, full: np.ndarray, same_day: np.ndarray,
                 am: np.ndarray) -> None:
        self.today, self.expiry, self.full, self.same_day, self.am = today, expiry, full, same_day, am

    def years(self, ts: datetime, calendar: MarketCalendar, session_share: float = 1.0) -> np.ndarray:
        """Trading years to each expiry at ``ts``; the rest of today's session counts ``session_share`` of a day
        (the overnight gap before each later session is part of that session's day)."""
        left = calendar.session_fraction_left(ts) * session_share
        now64 = np.datetime64(ts.astimezone(UTC).replace(tzinfo=None), "s")
        tau = np.where(self.same_day, np.where(self.am, 1e-6, max(left, 1e-6)), left + self.full)
        tau = tau / TRADING_DAYS_PER_YEAR
        expired = self.expiry <= now64
        if expired.any():
            secs = (self.expiry - now64).astype("timedelta64[s]").astype(float)
            tau = np.where(expired, secs / (TRADING_DAYS_PER_YEAR * 23400.0), tau)
        return tau


# ---- listing calendar ----------------------------------------------------------------------------
def third_friday(year: int, month: int) -> date:
    c = _pycal.Calendar(firstweekday=_pycal.MONDAY)
    fridays = [d for d in c.itermonthdates(year, month) if d.weekday() == 4 and d.month == month]
    return fridays[2]


def ex_dividend_date(cal: MarketCalendar, year: int, month: int, kind: str) -> date:
    """Simulated ex-dividend date: the 3rd Friday (ETFs) or the 2nd Friday (stocks) of ``month``."""
    friday = third_friday(year, month) - timedelta(days=0 if kind == "etf" else 7)
    return _adjust(cal, friday)


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    m = month - 1 + n
    return year + m // 12, m % 12 + 1


def _adjust(cal: MarketCalendar, d: date) -> date:
    """An expiry falling on a holiday moves to the previous session."""
    return d if cal.is_session(d) else cal.session_on_or_before(d)


def monthly_expiries(cal: MarketCalendar, today: date, count: int) -> list[date]:
    out: list[date] = []
    y, m = today.year, today.month
    k = 0
    while len(out) < count:
        yy, mm = _add_months(y, m, k)
        d = _adjust(cal, third_friday(yy, mm))
        if d >= today:
            out.append(d)
        k += 1
    return out


def weekly_expiries(cal: MarketCalendar, today: date, weeks: int, weekdays: tuple[int, ...] = (4,)) -> list[date]:
    """Listed weekly expiries on ``weekdays`` (Mon=0 .. Fri=4) from ``today`` through ``weeks`` weeks ahead."""
    out: set[date] = set()
    horizon = today + timedelta(days=7 * weeks + 6 - today.weekday())
    d = today
    while d <= horizon:
        if d.weekday() in weekdays:
            adj = _adjust(cal, d)
            if adj >= today:
                out.add(adj)
        d += timedelta(days=1)
    return sorted(out)


def daily_expiries(cal: MarketCalendar, today: date, sessions: int) -> list[date]:
    """Every session from today (0DTE) through ``sessions`` sessions ahead."""
    start = cal.session_on_or_after(today)
    return [cal.add_sessions(start, i) for i in range(sessions + 1)]


def quarterly_expiries(cal: MarketCalendar, today: date, months: int) -> list[date]:
    """Last session of March, June, September and December within ``months`` months."""
    out: list[date] = []
    for k in range(months + 3):
        yy, mm = _add_months(today.year, today.month, k)
        if mm not in (3, 6, 9, 12):
            continue
        last = date(yy, mm, _pycal.monthrange(yy, mm)[1])
        d = cal.session_on_or_before(last)
        if d >= today:
            out.append(d)
    return out[: max(1, months // 3)]


def vix_expiries(cal: MarketCalendar, today: date, count: int) -> list[date]:
    """VIX-style: the Wednesday 30 days before the next month's 3rd Friday (previous session if a holiday)."""
    out: list[date] = []
    k = 0
    while len(out) < count:
        yy, mm = _add_months(today.year, today.month, k + 1)
        d = _adjust(cal, third_friday(yy, mm) - timedelta(days=30))
        if d >= today:
            out.append(d)
        k += 1
    return out


def listed_expiries(cal: MarketCalendar, today: date, cycles: list[str], *, months_ahead: int,
                    weeks_ahead: int, days_ahead: int) -> list[date]:
    """Union of the expiry dates the listed ``cycles`` produce on session ``today``, ascending."""
    out: set[date] = set()
    for cycle in cycles:
        if cycle == "monthly":
            out.update(monthly_expiries(cal, today, months_ahead))
        elif cycle == "weekly":
            out.update(weekly_expiries(cal, today, weeks_ahead))
        elif cycle == "mon_wed":
            out.update(weekly_expiries(cal, today, min(weeks_ahead, 2), weekdays=(0, 2)))
        elif cycle == "daily":
            out.update(daily_expiries(cal, today, days_ahead))
        elif cycle == "quarterly":
            out.update(quarterly_expiries(cal, today, months_ahead))
        elif cycle == "vix":
            out.update(vix_expiries(cal, today, months_ahead))
        else:
            raise ValueError(f"unknown listing cycle {cycle!r}")
    return sorted(out)


def strike_grid(spot: float, years: float, steps: tuple[float, float, float], near_band: float,
                mid_band: float, strike_range: float, max_strikes: int) -> np.ndarray:
    """Listed strikes around ``spot``: fine increments near the money, coarser in the wings.

    The range is ± ``strike_range``·√T of spot (at least ± 4 %, at most −95 %/+200 %); at most
    ``max_strikes`` strikes: half of them nearest the spot, the others spread over the wings.
    """
    if not (spot > 0) or not np.isfinite(spot):
        raise ValueError(f"strike grid needs a positive spot, got {spot}")
    half = min(max(strike_range * np.sqrt(max(years, 1.0 / 365.0)), 0.04), 2.0)
    lo, hi = max(spot * (1 - min(half, 0.95)), steps[0]), spot * (1 + half)
    parts = []
    for step, band_lo, band_hi in (
        (steps[0], spot * (1 - near_band), spot * (1 + near_band)),
        (steps[1], spot * (1 - mid_band), spot * (1 + mid_band)),
        (steps[2], lo, hi),
    ):
        a, b = max(band_lo, lo), min(band_hi, hi)
        if b < a:
            continue
        parts.append(np.arange(np.ceil(a / step) * step, b + 1e-9, step))
    strikes = np.unique(np.round(np.concatenate(parts), 3)) if parts else np.array([])
    strikes = strikes[strikes > 0]
    if len(strikes) > max_strikes:
        # half the budget on the strikes nearest the money, the rest spread over the wings (round strikes first)
        order = np.argsort(np.abs(strikes - spot), kind="stable")
        n_near = max_strikes // 2
        near, rest = strikes[order[:n_near]], np.sort(strikes[order[n_near:]])
        budget = max_strikes - n_near
        coarse = rest[np.isclose(np.mod(rest, steps[2]), 0.0) | np.isclose(np.mod(rest, steps[2]), steps[2])]
        pool = coarse if len(coarse) >= budget else rest
        pick = pool[np.unique(np.linspace(0, len(pool) - 1, budget).round().astype(int))]
        strikes = np.union1d(near, pick)
    return strikes
