"""Earnings events of the simulated market: the calendar, the event variance in the options, the gap.

An underlying with an :class:`~engine.market.config.EarningsSpec` reports after the close of each event date.
Three effects, all deterministic under the simulator's seed:

- **Event variance.** Every expiry that settles after the announcement carries ``move²`` of extra total
  variance on top of the diffusion (:func:`EarningsSchedule.event_variance`, added to the SSVI ATM total
  variance by the quote engine). Spread over a short time to expiry it lifts a front expiry's IV far more than a
  back one's, and more as the date nears: the IV ramp.
- **The gap.** At the first open after the date the stock jumps by ``move·z − move²/2`` in log terms, ``z`` a
  standard normal drawn from its own generator seeded by (seed, symbol, date) — not from the dynamics' stream,
  so adding or removing events leaves every other path untouched.
- **The crush.** From that open the event is in the past: its variance is gone from every expiry.

The schedule is also what the strategies' context answers with (``next_event``): the backtest reads it from
the history it replays, live trading from the simulated feed's config.
"""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime, time, timedelta

import numpy as np

from engine.market.config import EarningsSpec, SimulatorConfig
from engine.model.instruments import NEW_YORK

#: the generated quarterly schedule covers these years (cheap: four dates a year)
_FIRST_YEAR, _LAST_YEAR = 1990, 2100


def generated_dates(spec: EarningsSpec, first_year: int = _FIRST_YEAR, last_year: int = _LAST_YEAR) -> list[date]:
    """The last ``spec.weekday`` of each of ``spec.quarterly_months`` in each year, plus the explicit dates."""
    out = set(spec.dates)
    for year in range(first_year, last_year + 1):
        for month in spec.quarterly_months:
            nxt = date(year + (month == 12), month % 12 + 1, 1)
            last = nxt - timedelta(days=1)
            out.add(last - timedelta(days=(last.weekday() - spec.weekday) % 7))
    return sorted(out)


def announcement_instant(day: date) -> np.datetime64:
    """The close of ``day`` (16:00 New York) as a naive-UTC ``datetime64[s]``: the event happens after it."""
    close = datetime.combine(day, time(16), tzinfo=NEW_YORK).astimezone(UTC)
    return np.datetime64(close.replace(tzinfo=None), "s")


def gap(seed: int, symbol: str, day: date, move: float) -> float:
    """The seeded log gap of ``symbol`` at the open after ``day``'s announcement (mean-corrected: E[e^gap] = 1)."""
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(symbol.encode()), day.toordinal()]))
    return float(move * rng.standard_normal() - 0.5 * move * move)


class EarningsSchedule:
    """The earnings events of a simulator config's universe (per underlying index of the universe)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.seed = config.seed
        self.symbols = [u.symbol for u in config.universe]
        self.specs: dict[int, EarningsSpec] = {i: u.earnings for i, u in enumerate(config.universe)
                                               if u.earnings is not None}
        self._dates = {i: generated_dates(spec) for i, spec in self.specs.items()}
        self._instants = {i: np.array([announcement_instant(d) for d in ds], dtype="datetime64[s]")
                          for i, ds in self._dates.items()}

    @classmethod
    def for_config(cls, config: SimulatorConfig) -> EarningsSchedule:
        """A shared schedule per distinct (seed, earnings settings): quote engines are rebuilt every session."""
        key = (config.seed, tuple((u.symbol, u.earnings.model_dump_json() if u.earnings else "")
                                  for u in config.universe))
        return _schedule(key, config)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def dates(self, symbol: str) -> list[date]:
        """Every event date of ``symbol`` (empty for an underlying without earnings)."""
        i = self._index(symbol)
        return list(self._dates.get(i, ())) if i is not None else []

    def next_event(self, symbol: str, today: date) -> date | None:
        """The first event date on or after ``today`` (an event today is still ahead: it comes after the close)."""
        for d in self.dates(symbol):
            if d >= today:
                return d
        return None

    def event_variance(self, und: np.ndarray, now64: np.datetime64, expiry: np.ndarray) -> np.ndarray:
        """Extra total variance per (underlying index, expiry) pair: ``move²`` per announcement in
        [now, expiry) — at an event day's close the announcement is still ahead."""
        out = np.zeros(len(und))
        for i, instants in self._instants.items():
            mask = und == i
            if not mask.any():
                continue
            exp = expiry[mask].astype("datetime64[s]")
            count = np.searchsorted(instants, exp, side="left") - np.searchsorted(instants, now64, side="left")
            out[mask] = self.specs[i].move ** 2 * np.maximum(count, 0)
        return out

    def gaps_between(self, last_session: date, next_session: date) -> dict[int, float]:
        """Log gaps per underlying index for announcements on ``last_session`` up to the day before
        ``next_session`` (an event dated on a holiday or weekend gaps at the next open too)."""
        out: dict[int, float] = {}
        for i, days in self._dates.items():
            move = self.specs[i].move
            for d in days:
                if last_session <= d < next_session:
                    out[i] = out.get(i, 0.0) + gap(self.seed, self.symbols[i], d, move)
        return out

    def _index(self, symbol: str) -> int | None:
        return self.symbols.index(symbol) if symbol in self.symbols else None


_CACHE: dict[tuple, EarningsSchedule] = {}


def _schedule(key: tuple, config: SimulatorConfig) -> EarningsSchedule:
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 32:
            _CACHE.clear()
        hit = _CACHE[key] = EarningsSchedule(config)
    return hit


def history_events(history: object) -> dict[str, list[date]]:
    """The earnings dates of a replayed history: those :func:`engine.market.simulated.history.generate_daily_history`
    attached, else — for a simulated history read back from the cache, which keeps only the columns — the
    default simulator's calendar for its underlying; an imported history has none."""
    events = getattr(history, "events", None)
    if isinstance(events, dict):
        return events
    underlying = str(getattr(history, "underlying", ""))
    if str(getattr(history, "source", "")).startswith("simulated"):
        schedule = EarningsSchedule.for_config(SimulatorConfig())
        return {underlying: schedule.dates(underlying)}
    return {}
