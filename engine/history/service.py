"""HistoryService: daily closes, ATM IV, IV rank/percentile and realized vol per underlying, from the first minute.

Why it exists: IV rank needs 60–252 stored days, regimes need the VIX-like index's year and the benchmark's
closes, historical VaR needs a year of returns. Recording them live would leave all three blind for months,
so at start the service asks the feed's :class:`engine.history.source.HistorySource` (the simulated
market's seeded path; brokers' history endpoints implement the same protocol) for the sessions the store
lacks and writes them into the store's ``iv_history`` table, where the surface service, the risk service
and ``optiondesk ivrank`` read them.

- Off the loop: the source runs in an executor (a one-thread pool the service owns and shuts down at
  stop with a bounded wait); only the insert (one transaction) runs on the loop. When the rows are in,
  :class:`HistoryBackfilled` is published and readers reload.
- Incremental: live days are recorded by the surface service (its ATM IV and close, the last write of a
  day being its close). A backfill never overwrites a recorded day (``ON CONFLICT DO NOTHING``) and
  runs only when fewer than ``sessions`` days are stored before today, so a restart costs one query.
- Every backfill is logged in ``history_backfills`` (underlying, source, first/last day, rows written).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np

from engine.bus.messages import Event
from engine.history.source import DailySeries, HistorySource, LoopBoundSource
from engine.surface.ivrank import IVRank, iv_rank
from engine.surface.realized import close_to_close

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.clock import Clock
    from engine.store import Store

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")
STOP_WAIT_S = 10.0
#: sessions a backfill provides: a 252-day window behind the latest day, and some to spare
DEFAULT_SESSIONS = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryBackfilled(Event):
    """Stored daily history changed for ``underlyings`` (``rows`` new rows from ``source``); reload it."""

    severity: ClassVar[str] = "info"

    underlyings: tuple[str, ...]
    rows: int
    source: str
    first_day: date | None = None
    last_day: date | None = None
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"History backfill from {self.source} failed: {self.error}"
        return (f"History backfilled from {self.source}: {self.rows} days for {', '.join(self.underlyings)} "
                f"({self.first_day} to {self.last_day})")


@dataclass(frozen=True)
class HistorySnapshot:
    """What the store knows about one underlying: the window, the latest day, its IV rank and realized vol."""

    underlying: str
    days: int
    first_day: date | None
    last_day: date | None
    close: float
    atm_iv: float
    iv_rank: IVRank
    realized_vol: float
    realized_vol_window: int
    #: the latest stored historical volatility from the broker (IBKR's 30-day HISTORICAL_VOLATILITY), NaN without
    hist_vol: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        r = self.iv_rank
        return {
            "underlying": self.underlying, "days": self.days,
            "first_day": self.first_day.isoformat() if self.first_day else None,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "close": num(self.close), "atm_iv": num(self.atm_iv),
            "iv_rank": num(r.rank), "iv_percentile": num(r.percentile), "status": r.status, "message": r.message,
            "window_days": r.days, "lookback": r.lookback, "min_history": r.min_history,
            "window_low": num(r.low), "window_high": num(r.high),
            "realized_vol": num(self.realized_vol), "realized_vol_window": self.realized_vol_window,
            "hist_vol": num(self.hist_vol),
        }


def read_snapshot(store: Store, underlying: str, *, lookback: int = 252, min_history: int = 60,
                  realized_vol_window: int = 20, current_iv: float | None = None,
                  until: date | None = None) -> HistorySnapshot:
    """Rank the latest stored ATM IV (or ``current_iv``) against the ``lookback`` days before it.

    Without ``current_iv`` the latest stored day is "today" and the window is the days before it, so a
    store with ``lookback + 1`` days gives a full-window rank.
    """
    sql = "SELECT day, atm_iv, close FROM iv_history WHERE underlying = ?"
    params: list[object] = [underlying]
    if until is not None:
        sql += " AND day <= ?"
        params.append(until.isoformat())
    sql += " ORDER BY day DESC LIMIT ?"
    params.append(max(lookback, realized_vol_window) + 1)
    rows = store.query(sql, tuple(params))[::-1]
    days = [date.fromisoformat(r["day"]) for r in rows]
    iv = np.array([r["atm_iv"] for r in rows], dtype=float)
    close = np.array([np.nan if r["close"] is None else r["close"] for r in rows], dtype=float)
    if current_iv is None:
        current = float(iv[-1]) if len(iv) else float("nan")
        window = iv[:-1]
    else:
        current = float(current_iv)
        window = iv
    rank = iv_rank(window, current, lookback=lookback, min_history=min_history)
    good = close[np.isfinite(close)]
    rv = float(close_to_close(good[-(realized_vol_window + 1):])) if len(good) > realized_vol_window else float("nan")
    count = store.query("SELECT COUNT(*) AS n, MIN(day) AS a FROM iv_history WHERE underlying = ?"
                        + (" AND day <= ?" if until is not None else ""),
                        (underlying, until.isoformat()) if until is not None else (underlying,))[0]
    hv = store.query("SELECT hist_vol FROM iv_history WHERE underlying = ? AND hist_vol IS NOT NULL"
                     + (" AND day <= ?" if until is not None else "") + " ORDER BY day DESC LIMIT 1",
                     (underlying, until.isoformat()) if until is not None else (underlying,))
    return HistorySnapshot(
        underlying=underlying, days=int(count["n"]),
        first_day=date.fromisoformat(count["a"]) if count["a"] else None,
        last_day=days[-1] if days else None, close=float(close[-1]) if len(close) else float("nan"),
        atm_iv=current, iv_rank=rank, realized_vol=rv, realized_vol_window=realized_vol_window,
        hist_vol=float(hv[0]["hist_vol"]) if hv else float("nan"),
    )


#: rows whose source starts with this came from the simulated market (its backfill, ``simulated seed=7``, and
#: days the surface service recorded while it ran, ``simulated surface``): a real source (a broker's history)
#: replaces them day by day; days recorded from real data are never replaced
SIMULATED_PREFIX = "simulated"


def is_simulated(source: str) -> bool:
    return source.startswith(SIMULATED_PREFIX)


def write_series(store: Store, series: dict[str, DailySeries], source: str, at: str) -> int:
    """Insert the rows the store lacks (a recorded day always wins); returns how many were written.

    A real source (anything but the simulated market) also replaces the simulated market's backfilled days:
    once a broker is connected, IV rank ranks real implied vols, not the simulation's."""
    written = 0
    supersede = not is_simulated(source)
    on_conflict = ("DO UPDATE SET atm_iv = excluded.atm_iv, close = excluded.close, source = excluded.source "
                   "WHERE substr(iv_history.source, 1, ?) = ?") if supersede else "DO NOTHING"
    prefix = (len(SIMULATED_PREFIX), SIMULATED_PREFIX) if supersede else ()
    with store.transaction() as conn:
        for sym, s in series.items():
            rows = [(sym, d.isoformat(), float(v), float(c), source, *prefix)
                    for d, v, c in zip(s.days, s.atm_iv.tolist(), s.close.tolist(), strict=True)
                    if math.isfinite(v) and v > 0]
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO iv_history(underlying, day, atm_iv, close, source) VALUES (?, ?, ?, ?, ?) "
                f"ON CONFLICT(underlying, day) {on_conflict}", rows)
            n = conn.total_changes - before
            written += n
            if s.hist_vol is not None:  # beside any day's row, recorded ones included: it only adds a column
                conn.executemany(
                    "UPDATE iv_history SET hist_vol = ? WHERE underlying = ? AND day = ? AND hist_vol IS NULL",
                    [(float(h), sym, d.isoformat()) for d, h in zip(s.days, s.hist_vol.tolist(), strict=True)
                     if math.isfinite(h) and h > 0])
            if s.days:
                conn.execute(
                    "INSERT INTO history_backfills(underlying, source, first_day, last_day, rows, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (sym, source, s.days[0].isoformat(), s.days[-1].isoformat(), n, at))
    return written


def stored_days_before(store: Store, underlying: str, before: date, sessions: int, *,
                       real_only: bool = False) -> int:
    """Stored days of ``underlying`` in the ``sessions``-session window before ``before`` (≈1.5 calendar days
    each); ``real_only`` leaves out the simulated market's backfilled days (a broker's backfill replaces them)."""
    start = before - timedelta(days=int(sessions * 1.5) + 30)
    sql = "SELECT COUNT(*) AS n FROM iv_history WHERE underlying = ? AND day < ? AND day >= ?"
    params: tuple[object, ...] = (underlying, before.isoformat(), start.isoformat())
    if real_only:
        sql += " AND substr(source, 1, ?) != ?"
        params += (len(SIMULATED_PREFIX), SIMULATED_PREFIX)
    row = store.query(sql, params)[0]
    return int(row["n"])


def sessions_to_fetch(store: Store, underlying: str, source: str, before: date, sessions: int) -> int:
    """Incremental updates from a real source: the sessions since the last day ``source`` already delivered for
    ``underlying`` (from ``history_backfills``), all ``sessions`` the first time; 0 when it is up to date. A
    broker's history is paced (IBKR: 60 requests per 10 minutes), so a restart asks only for the new days."""
    row = store.query("SELECT MAX(last_day) AS d FROM history_backfills WHERE underlying = ? AND source = ?",
                      (underlying, source))
    last = row[0]["d"] if row else None
    if last is None:
        return sessions
    start = date.fromisoformat(last) + timedelta(days=1)
    if start >= before:
        return 0
    return min(sessions, int(np.busday_count(start, before)))


def backfill_store(store: Store, source: HistorySource, underlyings: Sequence[str], before: date,
                   sessions: int, at: str) -> tuple[int, dict[str, DailySeries]]:
    """Synchronous backfill (the CLI's path): fetch what is missing, write it; (rows written, series)."""
    real = not is_simulated(source.name)
    missing = [u for u in underlyings if stored_days_before(store, u, before, sessions, real_only=real) < sessions]
    if not missing:
        return 0, {}
    series = source.daily(missing, before, sessions)
    return write_series(store, series, source.name, at), series


class HistoryService:
    """Owns the start-up backfill and answers history queries. Create and start it on the engine's loop.

    ``clock``: the engine clock (today = its New York date; history is the sessions strictly before it).
    ``source``: None when the feed has no history (the service then only reads what is stored).
    """

    def __init__(self, bus: Bus, store: Store, *, clock: Clock, underlyings: Sequence[str],
                 source: HistorySource | None = None, sessions: int = DEFAULT_SESSIONS, lookback: int = 252,
                 min_history: int = 60, realized_vol_window: int = 20, executor: Executor | None = None) -> None:
        if sessions < 1:
            raise ValueError(f"sessions must be positive, got {sessions}")
        self.bus = bus
        self.store = store
        self.clock = clock
        self.underlyings = tuple(underlyings)
        self.source = source
        self.sessions = sessions
        self.lookback = lookback
        self.min_history = min_history
        self.realized_vol_window = realized_vol_window
        self._executor = executor
        self._own_executor = executor is None
        self._task: asyncio.Task[int] | None = None
        self._ready = asyncio.Event()
        self.last_error = ""

    @property
    def ready(self) -> bool:
        """True once the start-up backfill has finished (or was not needed, or failed: see ``last_error``)."""
        return self._ready.is_set()

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-backfill")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history:backfill")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._own_executor and self._executor is not None:
            ex, self._executor = self._executor, None
            ex.shutdown(wait=False, cancel_futures=True)
            done = asyncio.get_running_loop().run_in_executor(None, ex.shutdown, True)
            try:
                await asyncio.wait_for(done, STOP_WAIT_S)
            except TimeoutError:
                log.warning("history backfill thread still running after %.0f s at stop", STOP_WAIT_S)

    async def use_source(self, source: HistorySource | None, underlyings: Sequence[str]) -> None:
        """Switch where backfills come from (a broker connected or gone) and backfill from it now, in the
        background; a backfill still running from the previous source is cancelled first."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.source = source
        self.underlyings = tuple(underlyings)
        self._ready = asyncio.Event()
        await self.start()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the start-up backfill; True when it has finished."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> int:
        try:
            return await self.backfill()
        finally:
            self._ready.set()

    def today(self) -> date:
        return self.clock.now().astimezone(NEW_YORK).date()

    async def backfill(self) -> int:
        """Fetch (in the executor) and store the sessions before today the store lacks; returns rows written."""
        if self.source is None or not self.underlyings:
            return 0
        before = self.today()
        real = not is_simulated(self.source.name)
        missing = [u for u in self.underlyings
                   if stored_days_before(self.store, u, before, self.sessions, real_only=real) < self.sessions]
        sessions = self.sessions
        if real and missing:  # incremental: only the days the source has not delivered yet
            need = {u: sessions_to_fetch(self.store, u, self.source.name, before, self.sessions) for u in missing}
            missing = [u for u in missing if need[u] > 0]
            sessions = max((need[u] for u in missing), default=0)
        if not missing:
            return 0
        loop = asyncio.get_running_loop()
        source = self.source
        try:
            series = await loop.run_in_executor(self._executor, source.daily, missing, before, sessions)
            rows = write_series(self.store, series, source.name, self.clock.now().isoformat())
        except asyncio.CancelledError:
            if isinstance(source, LoopBoundSource):  # a broker's fetch: end it, so the thread is free at once
                source.cancel()
            raise
        except Exception as exc:  # a broken source or a full disk: say so, keep trading without history
            log.exception("history backfill from %s failed", source.name)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.bus.publish(HistoryBackfilled(underlyings=tuple(missing), rows=0, source=source.name,
                                               error=self.last_error))
            return 0
        days = [d for s in series.values() for d in s.days]
        self.bus.publish(HistoryBackfilled(underlyings=tuple(series), rows=rows, source=source.name,
                                           first_day=min(days) if days else None,
                                           last_day=max(days) if days else None))
        return rows

    def closes(self, underlying: str, sessions: int) -> tuple[list[date], np.ndarray]:
        """The last ``sessions`` stored daily closes of ``underlying`` before today, oldest first (days
        without a close skipped): what the statistical regime is fitted on."""
        rows = self.store.query("SELECT day, close FROM iv_history WHERE underlying = ? AND day < ? AND close IS "
                                "NOT NULL ORDER BY day DESC LIMIT ?", (underlying, self.today().isoformat(),
                                                                      int(sessions)))[::-1]
        return [date.fromisoformat(r["day"]) for r in rows], np.array([r["close"] for r in rows], dtype=float)

    def snapshot(self, underlying: str, *, current_iv: float | None = None) -> HistorySnapshot:
        """The stored window of ``underlying`` up to today, ranked (see :func:`read_snapshot`)."""
        return read_snapshot(self.store, underlying, lookback=self.lookback, min_history=self.min_history,
                             realized_vol_window=self.realized_vol_window, current_iv=current_iv,
                             until=self.today())
