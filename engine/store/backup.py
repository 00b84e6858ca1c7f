"""Online backups of the SQLite database, their rotation, verification and restore.

A backup uses SQLite's online backup API from a connection of its own, copying every page in one step: that
step holds a read transaction, so the copy is one consistent snapshot, and in WAL mode the engine's writers are
not blocked meanwhile (the engine keeps trading while a backup runs). The copy is written to a hidden
``.partial`` file beside the target, switched to ``journal_mode=DELETE`` (a backup is one self-contained file,
no ``-wal`` beside it), checked with ``PRAGMA integrity_check`` and only then renamed into place: a backup file
with the final name is always complete and verified. A failure (full disk, unwritable folder) removes the
partial file and raises :class:`BackupError` naming the file and what to do.

Restore refuses while any engine holds the data folder (the instance lock, :mod:`engine.instance_lock`) and
holds that lock itself while it runs, so no window can start half-way. It first verifies the backup, then keeps
a safety copy of the current database (``pre-restore-….db`` in the backups folder: nothing is lost by a
restore), then copies the backup's pages into the database through the backup API, which writes through
SQLite's own journal: the database is either the old one or the restored one, never a mix. A damaged database
(the usual reason to restore) cannot take pages that way: its bytes are kept as ``pre-restore-…-damaged.db``
and a verified copy of the backup replaces the file.

The :class:`BackupScheduler` is owned by the ``Engine``: a task on the loop that sleeps until the next backup is
due and runs the copy in a thread of its own, stopped at engine stop with a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.clock import WallClock
from engine.store.database import StoreError
from engine.store.migrations import ordered_migrations

log = logging.getLogger(__name__)

BACKUP_PREFIX = "optiondesk-"
PRE_RESTORE_PREFIX = "pre-restore-"
_NAME_RE = re.compile(r"^optiondesk-\d{8}-\d{6}(-\d+)?\.db$")


class BackupError(StoreError):
    """A backup or restore could not be made; the message names the file and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    elapsed_s: float
    schema_version: int


@dataclass(frozen=True)
class RestoreResult:
    restored_from: Path
    database: Path
    safety_copy: Path | None
    schema_version: int


def backup_file_name(ts: datetime) -> str:
    """``optiondesk-YYYYMMDD-HHMMSS.db`` in UTC: names sort in time order, which rotation relies on."""
    return f"{BACKUP_PREFIX}{ts.astimezone(UTC):%Y%m%d-%H%M%S}.db"


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    name = str(getattr(exc, "sqlite_errorname", ""))
    return name == "SQLITE_FULL" or "database or disk is full" in str(exc)


def _remove_quietly(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"database {path} does not exist: nothing to back up")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read database {path} to back it up ({exc})") from exc
    return conn


def backup_database(database: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupResult:
    """Copy ``database`` into the new file ``dest``, verified; raises :class:`BackupError`.

    Refuses an existing ``dest``: a backup never overwrites anything."""
    src_path, out = Path(database), Path(dest)
    if out.exists() or out.is_symlink():
        raise BackupError(f"backup file {out} already exists: choose another name or move it aside")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the backup folder {out.parent}: {exc}") from exc
    partial = out.with_name(f".{out.name}.partial")
    _remove_quietly(partial, Path(f"{partial}-journal"))
    t0 = time.perf_counter()
    src = _open_source(src_path)
    try:
        dst = sqlite3.connect(str(partial), isolation_level=None)
        try:
            src.backup(dst, pages=-1)  # one step: one consistent snapshot (WAL readers do not block writers)
            dst.execute("PRAGMA journal_mode=DELETE")
            _check_integrity(dst, out)
        finally:
            dst.close()
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, out)
    except BackupError:
        _remove_quietly(partial, Path(f"{partial}-journal"))
        raise
    except (sqlite3.Error, OSError) as exc:
        _remove_quietly(partial, Path(f"{partial}-journal"))
        if _is_disk_full(exc):
            raise BackupError(f"the disk holding {out.parent} is full: backup {out.name} was not written (the "
                              "partial file was removed). Free some space or back up to another disk with --out"
                              ) from exc
        raise BackupError(f"could not write backup {out}: {exc}") from exc
    finally:
        src.close()
    version = verify_backup(out)
    return BackupResult(out, out.stat().st_size, time.perf_counter() - t0, version)


def _check_integrity(conn: sqlite3.Connection, shown: Path) -> None:
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        detail = "; ".join(rows[:3]) + (f" (+{len(rows) - 3} more)" if len(rows) > 3 else "")
        raise BackupError(f"{shown} fails SQLite's integrity check: {detail}. It cannot be used as a backup")


def verify_backup(path: str | os.PathLike[str]) -> int:
    """Check that ``path`` is a sound Optiondesk database this release can open; returns its schema version.

    Reads only (``mode=ro``): verifying never changes the file."""
    p = Path(path)
    if not p.is_file():
        raise BackupError(f"backup file {p} does not exist or is not a file")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open backup {p}: {exc}") from exc
    try:
        try:
            _check_integrity(conn, p)
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "schema_version" not in tables:
                raise BackupError(f"{p} is an SQLite database but not an Optiondesk backup (no schema_version "
                                  "table)")
            applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{p} is not a readable SQLite database ({exc}): it is damaged or not a backup"
                              ) from exc
    finally:
        conn.close()
    unknown = sorted(applied - {m.version for m in ordered_migrations()})
    if unknown:
        raise BackupError(f"backup {p} comes from a newer Optiondesk release (schema versions "
                          f"{', '.join(map(str, unknown))} are unknown here): restore it with that release")
    return max(applied, default=0)


def list_backups(folder: str | os.PathLike[str]) -> list[Path]:
    """The scheduled/on-demand backups in ``folder``, oldest first (safety copies and other files excluded)."""
    f = Path(folder)
    if not f.is_dir():
        return []
    return sorted(p for p in f.iterdir() if p.is_file() and _NAME_RE.match(p.name))


def rotate_backups(folder: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``folder``; returns the deleted files."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    old = list_backups(folder)[:-keep]
    for p in old:
        _remove_quietly(p)
    return old


def new_backup_path(folder: str | os.PathLike[str], ts: datetime) -> Path:
    """A fresh name in ``folder`` for a backup made at ``ts`` (a suffix when two land in the same second)."""
    base = Path(folder) / backup_file_name(ts)
    path, n = base, 1
    while path.exists():
        path = base.with_name(f"{base.stem}-{n}.db")
        n += 1
    return path


def restore_database(backup: str | os.PathLike[str], database: str | os.PathLike[str], *,
                     safety_folder: str | os.PathLike[str] | None = None, now: datetime | None = None) -> RestoreResult:
    """Replace ``database``'s content with ``backup``'s, keeping a safety copy of the current content first.

    Raises ``InstanceLocked`` while an engine holds the data folder, :class:`BackupError` for a bad backup."""
    from engine.instance_lock import InstanceLock

    src, db = Path(backup), Path(database)
    if src.resolve() == db.resolve():
        raise BackupError(f"{src} is the database itself: choose a backup file to restore")
    version = verify_backup(src)
    lock = InstanceLock(db.parent)
    lock.acquire()  # InstanceLocked (names the holder's pid) while the app or `optiondesk serve` runs
    try:
        safety: Path | None = None
        damaged = False
        if db.is_file():
            folder = Path(safety_folder) if safety_folder is not None else db.parent / "backups"
            stamp = (now or WallClock().now()).astimezone(UTC)  # a file name on disk: the real present
            safety = folder / f"{PRE_RESTORE_PREFIX}{stamp:%Y%m%d-%H%M%S}.db"
            n = 1
            while safety.exists():
                safety = folder / f"{PRE_RESTORE_PREFIX}{stamp:%Y%m%d-%H%M%S}-{n}.db"
                n += 1
            try:
                backup_database(db, safety)
            except BackupError as exc:
                if not _unreadable(db):
                    raise BackupError(f"restore stopped before changing anything: the current database could not "
                                      f"be saved first ({exc})") from exc
                # the usual reason to restore: the current file is damaged. Keep its bytes as they are.
                damaged = True
                safety = safety.with_name(safety.stem + "-damaged.db")
                try:
                    _copy_files(db, safety)
                except OSError as copy_exc:
                    raise BackupError(f"restore stopped before changing anything: the damaged database could not "
                                      f"be saved first ({copy_exc})") from copy_exc
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            if damaged:
                _replace_file(src, db)
            else:
                _copy_into(src, db)
        except (sqlite3.Error, OSError) as exc:
            kept = f"; the previous database is saved as {safety}" if safety else ""
            if _is_disk_full(exc):
                raise BackupError(f"the disk holding {db} is full: the restore was rolled back{kept}. Free some "
                                  "space and run it again") from exc
            raise BackupError(f"could not restore {src} into {db}: {exc}{kept}") from exc
        return RestoreResult(src, db, safety, version)
    finally:
        lock.release()


def _unreadable(db: Path) -> bool:
    """True when SQLite cannot read ``db`` soundly (not a database, malformed, failing its integrity check)."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()] != ["ok"]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return True


def _copy_files(db: Path, dest: Path) -> None:
    """Byte copies of a (damaged) database and its ``-wal``/``-shm`` beside ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{db}{suffix}")
        if src.is_file():
            shutil.copyfile(src, f"{dest}{suffix}")


def _copy_into(src: Path, db: Path) -> None:
    """The backup's pages into the sound database ``db`` through its own journal: all or nothing."""
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(str(db), timeout=10.0, isolation_level=None)
        try:
            target.execute("PRAGMA busy_timeout=10000")
            source.backup(target, pages=-1)
            _check_integrity(target, db)
        finally:
            target.close()
    finally:
        source.close()


def _replace_file(src: Path, db: Path) -> None:
    """A damaged ``db`` cannot take pages through its journal: a verified copy of the backup replaces the file,
    and its stale ``-wal``/``-shm`` (already saved with it) are removed first so SQLite cannot replay them."""
    partial = db.with_name(f".{db.name}.restore.partial")
    _remove_quietly(partial, Path(f"{partial}-journal"))
    try:
        source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
        try:
            target = sqlite3.connect(str(partial), isolation_level=None)
            try:
                source.backup(target, pages=-1)
                _check_integrity(target, partial)
            finally:
                target.close()
        finally:
            source.close()
        _remove_quietly(Path(f"{db}-wal"), Path(f"{db}-shm"))
        os.replace(partial, db)
    except BaseException:
        _remove_quietly(partial, Path(f"{partial}-journal"))
        raise


class BackupScheduler:
    """Backs the database up every ``interval_s`` into ``folder``, keeping the newest ``keep``.

    The first backup is due one interval after the newest one already in the folder (at once when that is
    overdue, but never sooner than ``first_delay_s`` after start, so the start stays quick). The copy runs in a
    thread this scheduler owns; ``on_done``/``on_error`` are called on the loop with the result or the error."""

    def __init__(self, database: Path, folder: Path, *, interval_s: float, keep: int, now: Callable[[], datetime],
                 first_delay_s: float = 60.0, on_done: Callable[[BackupResult], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"backup interval must be positive, not {interval_s}")
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.database, self.folder = database, folder
        self.interval_s, self.keep, self.first_delay_s = interval_s, keep, first_delay_s
        self._now = now
        self.on_done, self.on_error = on_done, on_error
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[Any] | None = None
        self.last: BackupResult | None = None
        self.last_error: BaseException | None = None

    def first_delay(self) -> float:
        backups = list_backups(self.folder)
        if not backups:
            return self.first_delay_s
        age = self._now().timestamp() - backups[-1].stat().st_mtime
        return max(self.first_delay_s, self.interval_s - age)

    def start(self) -> None:
        if self._task is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optiondesk-backup")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="backup-scheduler")

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay())
        while True:
            await self.backup_now()
            await asyncio.sleep(self.interval_s)

    async def backup_now(self) -> BackupResult | None:
        """One backup and rotation in the scheduler's thread; errors go to ``on_error``, never up."""
        if self._pool is None:
            raise RuntimeError("the backup scheduler is not started")
        loop = asyncio.get_running_loop()
        self._running = loop.run_in_executor(self._pool, self._backup_and_rotate, self._now())
        try:
            result: BackupResult = await asyncio.shield(self._running)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed scheduled backup is reported and retried next time; it must not stop the schedule
            self.last_error = exc
            log.error("scheduled backup failed: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)
            return None
        self.last, self.last_error = result, None
        if self.on_done is not None:
            self.on_done(result)
        return result

    def _backup_and_rotate(self, ts: datetime) -> BackupResult:
        result = backup_database(self.database, new_backup_path(self.folder, ts))
        rotate_backups(self.folder, self.keep)
        return result

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Cancel the timer; a copy already running may finish within ``timeout_s`` (its partial file is
        removed if it does not)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running, self._running = self._running, None
        if running is not None and not running.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(running), timeout_s)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
