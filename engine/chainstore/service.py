"""The engine side of the Data panel: vendor chain imports and deletes off the loop, and what data is stored.

Why a service: an import of a year of SPY chains reads ~1 M rows for ~20 s, far beyond what the loop may
block, and the window must show its progress and be able to stop it. The service owns one worker thread
(a one-thread pool: imports, deletes and coverage scans are serialised, as the store's files require),
handles the bus commands :class:`~engine.bus.ImportChains`, :class:`~engine.bus.CancelImport`,
:class:`~engine.bus.DeleteChains` and :class:`~engine.bus.RefreshDataCoverage`, and publishes
:class:`~engine.bus.ChainImportProgress` and :class:`~engine.bus.ChainImportFinished`.

Cancelling is cooperative: the store checks the job's flag between chunks of ``chunk_rows`` rows; months
it had completed stay, the month it was reading is dropped whole (never half-written), so importing the
file again later completes it. At stop a running import is cancelled and the thread is waited for, bounded.

:meth:`DataService.coverage` answers without I/O: a :class:`DataCoverage` snapshot, rebuilt in the worker
thread at start, after every import or delete and after each history backfill, and swapped in before the
event that announces it is published (cache first, then publish).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.bus import (
    CancelImport,
    ChainImportFinished,
    ChainImportProgress,
    ChainsDeleted,
    DataCoverageChanged,
    DeleteChains,
    ImportChains,
    RefreshDataCoverage,
)
from engine.chainstore.store import ChainStore, ImportReport

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.store import Store

log = logging.getLogger(__name__)
STOP_WAIT_S = 10.0
#: rows per chunk of an import: small enough that Cancel answers within about a second
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class ImportRecord:
    """One import of a file into a root, as the root's manifest keeps it."""

    file: str
    format: str
    at: datetime | None
    rows_read: int
    rows_written: int


@dataclass(frozen=True)
class RootCoverage:
    """What is stored for one option root: the days, rows per day (read-only) and the files it came from."""

    root: str
    underlying: str
    first_day: date | None
    last_day: date | None
    days: int
    rows: int
    rows_per_day: Mapping[date, int]
    imports: tuple[ImportRecord, ...] = ()
    style: str = ""
    settlement: str = ""

    @property
    def mean_rows_per_day(self) -> float:
        return self.rows / self.days if self.days else 0.0


@dataclass(frozen=True)
class SeriesSource:
    """Where some days of a symbol's daily history came from (``simulated``, ``file:NAME``, a broker)."""

    source: str
    days: int
    first_day: date
    last_day: date


@dataclass(frozen=True)
class HistoryCoverage:
    """The daily history of one symbol: days with a close (the chart's bars) and with an ATM IV."""

    symbol: str
    bar_days: frozenset[date]
    iv_days: frozenset[date]
    sources: tuple[SeriesSource, ...]

    @property
    def first_day(self) -> date | None:
        return min(self.iv_days | self.bar_days, default=None)

    @property
    def last_day(self) -> date | None:
        return max(self.iv_days | self.bar_days, default=None)


@dataclass(frozen=True)
class DataCoverage:
    """Everything stored: imported chains per root, daily history per symbol, and the NYSE sessions of the
    years they span (weekdays where the exchange calendar does not reach), for a calendar of coverage."""

    chains_dir: str
    roots: tuple[RootCoverage, ...] = ()
    history: tuple[HistoryCoverage, ...] = ()
    sessions: tuple[date, ...] = ()
    error: str = ""

    def symbols(self) -> list[str]:
        """Every symbol with stored data: history symbols and the underlyings of imported roots."""
        return sorted({h.symbol for h in self.history} | {r.underlying for r in self.roots})

    def roots_of(self, symbol: str) -> list[RootCoverage]:
        """Imported roots of an underlying (SPX: SPX and SPXW), or the root itself."""
        s = symbol.upper()
        return [r for r in self.roots if r.underlying == s or r.root == s]

    def root(self, name: str) -> RootCoverage | None:
        return next((r for r in self.roots if r.root == name.upper()), None)

    def history_of(self, symbol: str) -> HistoryCoverage | None:
        return next((h for h in self.history if h.symbol == symbol.upper()), None)


@dataclass
class _Job:
    job_id: str
    paths: tuple[str, ...]
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


def _parse_at(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _day(text: str) -> date:
    return date.fromisoformat(str(text)[:10])


def scan_coverage(chains: ChainStore, store: Store | None) -> DataCoverage:
    """Read what is stored (blocking: chain months are opened, the history table queried)."""
    roots = []
    for name in chains.roots():
        c = chains.coverage(name)
        m = chains.manifest(name)
        per_day = {_day(k): int(v) for k, v in c["rows_per_day"].items()}
        imports = tuple(ImportRecord(file=str(i.get("file", "")), format=str(i.get("format", "")),
                                     at=_parse_at(str(i.get("at", ""))), rows_read=int(i.get("rows_read", 0)),
                                     rows_written=int(i.get("rows_written", 0))) for i in m.get("imports", []))
        roots.append(RootCoverage(
            root=c["root"], underlying=str(c["underlying"]), first_day=min(per_day, default=None),
            last_day=max(per_day, default=None), days=int(c["days"]), rows=int(c["rows"]),
            rows_per_day=per_day, imports=imports, style=str(m.get("style", "")),
            settlement=str(m.get("settlement", ""))))
    history = _scan_history(store) if store is not None else ()
    days = [d for r in roots for d in (r.first_day, r.last_day) if d is not None]
    days += [d for h in history for d in (h.first_day, h.last_day) if d is not None]
    sessions = _sessions(date(min(days).year, 1, 1), date(max(days).year, 12, 31)) if days else ()
    return DataCoverage(chains_dir=str(chains.base), roots=tuple(roots), history=history, sessions=sessions)


def _scan_history(store: Store) -> tuple[HistoryCoverage, ...]:
    bars: dict[str, set[date]] = {}
    ivs: dict[str, set[date]] = {}
    for row in store.query("SELECT underlying, day, close FROM iv_history"):
        d = _day(row["day"])
        ivs.setdefault(row["underlying"], set()).add(d)  # atm_iv is NOT NULL in the table
        if row["close"] is not None:
            bars.setdefault(row["underlying"], set()).add(d)
    sources: dict[str, list[SeriesSource]] = {}
    for row in store.query("SELECT underlying, source, COUNT(*) AS n, MIN(day) AS a, MAX(day) AS b FROM iv_history "
                           "GROUP BY underlying, source ORDER BY underlying, MIN(day)"):
        sources.setdefault(row["underlying"], []).append(
            SeriesSource(source=row["source"] or "unknown", days=int(row["n"]), first_day=_day(row["a"]),
                         last_day=_day(row["b"])))
    return tuple(HistoryCoverage(symbol=s, bar_days=frozenset(bars.get(s, ())), iv_days=frozenset(ivs[s]),
                                 sources=tuple(sources.get(s, ()))) for s in sorted(ivs))


@functools.lru_cache(maxsize=1)
def _calendar() -> Any:
    from engine.market.simulated.calendar import MarketCalendar

    return MarketCalendar()


def _sessions(first: date, last: date) -> tuple[date, ...]:
    """NYSE sessions in [first, last]; weekdays for the years the exchange calendar does not cover."""
    weekdays = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    weekdays = [d for d in weekdays if d.weekday() < 5]
    try:
        cal = _calendar()
        inside = cal.sessions(max(first, cal.first_session), min(last, cal.last_session))
    except Exception:  # no calendar data for the span: weekdays are the best guess
        log.debug("no exchange calendar for %s..%s", first, last, exc_info=True)
        return tuple(weekdays)
    return tuple([d for d in weekdays if d < cal.first_session] + inside
                 + [d for d in weekdays if d > cal.last_session])


class DataService:
    """Imports and deletes of vendor chains for the GUI, and the coverage snapshot (see the module docstring).

    ``now``: the engine clock (stamps each import in the root's manifest and the audit log).
    """

    def __init__(self, bus: Bus, store: Store | None, chains_dir: str | Path, *, now: Callable[[], datetime],
                 chunk_rows: int = CHUNK_ROWS) -> None:
        self.bus = bus
        self.store = store
        self.chains = ChainStore(chains_dir)
        self.now = now
        self.chunk_rows = chunk_rows
        self._coverage = DataCoverage(chains_dir=str(self.chains.base))
        self._executor: ThreadPoolExecutor | None = None
        self._job: _Job | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []
        self._started = False

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        from engine.history import HistoryBackfilled

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-data")
        self.bus.register(ImportChains, self._cmd_import)
        self.bus.register(CancelImport, self._cmd_cancel)
        self.bus.register(DeleteChains, self._cmd_delete)
        self.bus.register(RefreshDataCoverage, self._cmd_refresh)
        self._subs.append(self.bus.subscribe(HistoryBackfilled, lambda _ev: self._spawn(self.refresh()),
                                             name="DataService.history"))
        self._started = True
        self._spawn(self.refresh())

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for sub in self._subs:
            sub.cancel()
        self._subs.clear()
        for cmd in (ImportChains, CancelImport, DeleteChains, RefreshDataCoverage):
            self.bus.unregister(cmd)
        if self._job is not None:
            self._job.cancel.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
            try:
                await asyncio.wait_for(asyncio.to_thread(ex.shutdown, True), STOP_WAIT_S)
            except TimeoutError:
                log.warning("chain import thread still running %.0f s after stop", STOP_WAIT_S)

    # ---- queries (no I/O) ---------------------------------------------------------------------------
    def coverage(self) -> DataCoverage:
        """The latest snapshot of what is stored (rebuilt off the loop after every change)."""
        return self._coverage

    @property
    def importing(self) -> str | None:
        """The running import's job id (None when idle)."""
        return self._job.job_id if self._job is not None else None

    # ---- work -------------------------------------------------------------------------------------
    async def refresh(self) -> DataCoverage:
        """Rescan the store in the worker thread, swap the snapshot in, then publish DataCoverageChanged."""
        cov = await self._in_thread(scan_coverage, self.chains, self.store)
        self._set_coverage(cov)
        return cov

    def _set_coverage(self, cov: DataCoverage) -> None:
        self._coverage = cov
        self.bus.publish(DataCoverageChanged(roots=tuple(r.root for r in cov.roots),
                                             symbols=tuple(h.symbol for h in cov.history)))

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("the data service is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name="data-service")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("data service task failed", exc_info=task.exception())

    async def _cmd_refresh(self, cmd: RefreshDataCoverage) -> DataCoverage:
        return await self.refresh()

    async def _cmd_import(self, cmd: ImportChains) -> str:
        """Start an import; returns its job id at once. One at a time: a second is refused while one runs."""
        if not self._started:
            raise RuntimeError("the data service is not running")
        if self._job is not None:
            raise RuntimeError(f"an import is already running ({', '.join(Path(p).name for p in self._job.paths)})")
        paths = tuple(str(p) for p in cmd.paths)
        if not paths:
            raise ValueError("no files to import")
        job = _Job(job_id=uuid.uuid4().hex[:12], paths=paths)
        self._job = job
        job.task = self._spawn(self._run_import(job, cmd.fmt, cmd.symbol or None, cmd.by))
        return job.job_id

    def _cmd_cancel(self, cmd: CancelImport) -> bool:
        job = self._job
        if job is None or (cmd.job_id and cmd.job_id != job.job_id):
            return False
        job.cancel.set()
        return True

    async def _cmd_delete(self, cmd: DeleteChains) -> int:
        """Delete a root's days in [start, end] (all without bounds); returns the rows removed. Audited."""
        if self._job is not None:
            raise RuntimeError("an import is running: cancel it or wait before deleting")
        root = cmd.root.strip().upper()
        if cmd.start is not None and cmd.end is not None and cmd.start > cmd.end:
            raise ValueError(f"start {cmd.start} is after end {cmd.end}")
        rows, cov = await self._in_thread(self._delete_job, root, cmd.start, cmd.end)
        if self.store is not None:
            self.store.audit.record(cmd.by, "chains:delete", {
                "root": root, "start": cmd.start.isoformat() if cmd.start else None,
                "end": cmd.end.isoformat() if cmd.end else None, "rows": rows})
        self._coverage = cov
        self.bus.publish(ChainsDeleted(root=root, start=cmd.start, end=cmd.end, rows=rows))
        self._set_coverage(cov)
        return rows

    def _delete_job(self, root: str, start: date | None, end: date | None) -> tuple[int, DataCoverage]:
        if root not in self.chains.roots():
            raise ValueError(f"no imported chains for {root}; imported: {', '.join(self.chains.roots()) or 'none'}")
        rows = self.chains.delete(root, start, end)
        return rows, scan_coverage(self.chains, self.store)

    async def _run_import(self, job: _Job, fmt: str, symbol: str | None, by: str) -> None:
        loop = asyncio.get_running_loop()

        def progress(fraction: float, text: str) -> None:  # called on the worker thread
            loop.call_soon_threadsafe(self._progress, job.job_id, fraction, text)

        try:
            report, error, cov = await self._in_thread(self._import_job, job, fmt, symbol, progress)
        except Exception as exc:  # the thread pool was shut down under us
            report, error, cov = None, f"{type(exc).__name__}: {exc}", None
        finally:
            self._job = None
        if cov is not None:
            self._coverage = cov
        summary = _summary(report)
        if self.store is not None and report is not None:
            self.store.audit.record(by, "chains:import", {
                "files": list(job.paths), "format": fmt, "symbol": symbol, "rows_written": report.rows_written,
                "cancelled": report.cancelled, "error": error or None})
        self.bus.publish(ChainImportFinished(job_id=job.job_id, report=summary, error=error,
                                             cancelled=bool(report is not None and report.cancelled)))
        if cov is not None:
            self._set_coverage(cov)

    def _import_job(self, job: _Job, fmt: str, symbol: str | None,
                    progress: Callable[[float, str], None]) -> tuple[ImportReport, str, DataCoverage]:
        """Import every file of the job in turn (the worker thread); an unreadable file ends the job with its
        message, the files before it stay imported."""
        from engine.chainstore.formats import ChainFormatError

        report = ImportReport()
        error = ""
        at = self.now().isoformat()
        n = len(job.paths)
        for i, path in enumerate(job.paths):
            if job.cancel.is_set():
                report.cancelled = True
                break

            def file_progress(fraction: float, text: str, i: int = i) -> None:
                f = fraction if fraction == fraction else 0.0  # NaN: the reader cannot tell
                progress((i + max(0.0, min(1.0, f))) / n, text)

            try:
                self.chains.import_file(path, fmt, symbol=symbol, report=report, progress=file_progress,
                                        cancelled=job.cancel.is_set, imported_at=at, chunk_rows=self.chunk_rows)
            except ChainFormatError as exc:
                error = str(exc)
                break
            except Exception as exc:  # a full disk, a permission problem: say so, keep what was written
                log.exception("chain import of %s failed", path)
                error = f"{Path(path).name}: {type(exc).__name__}: {exc}"
                break
            if report.cancelled:
                break
        try:
            cov = scan_coverage(self.chains, self.store)
        except Exception as exc:  # the import is done and kept: a failed scan is shown as the coverage's error
            log.exception("could not scan the chain store after an import")
            cov = DataCoverage(chains_dir=str(self.chains.base), error=f"{type(exc).__name__}: {exc}")
        return report, error, cov

    def _progress(self, job_id: str, fraction: float, text: str) -> None:
        if self._job is not None and self._job.job_id == job_id:
            self.bus.publish(ChainImportProgress(job_id=job_id, fraction=fraction, text=text))


def _summary(report: ImportReport | None) -> dict[str, Any] | None:
    """The import report without the per-day rows (the coverage query has them)."""
    if report is None:
        return None
    out = report.to_dict()
    out["roots"] = {k: {kk: vv for kk, vv in v.items() if kk != "rows_per_day"} for k, v in out["roots"].items()}
    return out


__all__ = ["DataCoverage", "DataService", "HistoryCoverage", "ImportRecord", "RootCoverage", "SeriesSource",
           "scan_coverage"]
