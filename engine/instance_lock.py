"""One engine per data folder: an OS lock on ``optiondesk.lock`` in the folder, holding the owner's pid.

Two engines (two windows, a window and ``optiondesk trade``) on one data folder restore the same paper fill-id
prefix and counter and silently drop each other's fills; they also fight over the trading-state record. So the
``Engine`` takes this lock at start and a second one is refused with the holder's pid. The lock is the OS's
(``flock`` on POSIX, ``msvcrt.locking`` on Windows): it dies with the process, so a crash never leaves a stale
lock behind. ``optiondesk kill`` and ``optiondesk risk`` do not take it: they work beside the running app and
only ask :func:`holder` whether an engine is running.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO

from engine.store.database import StoreError

LOCK_NAME = "optiondesk.lock"
_REGION = 1 << 20  # Windows locks a byte range: one far past the pid text, so the pid stays readable


class InstanceLocked(StoreError):
    """Another process holds the data folder; the message names it and says what still works (a ``StoreError``:
    the command line prints it as one line)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder, self.pid = folder, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"Optiondesk is already running on the data folder {folder} ({who} holds {LOCK_NAME}). Close that "
            "window or engine first; `optiondesk kill` and `optiondesk risk` work beside it.")


def _try_lock(fh: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        fh.seek(_REGION)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(fh: IO[str]) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        fh.seek(_REGION)
        with contextlib.suppress(OSError):
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


class InstanceLock:
    """The data folder's lock. :meth:`acquire` or raise :class:`InstanceLocked`; :meth:`release` at stop."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> None:
        if self._fh is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="ascii")
        if not _try_lock(fh):
            fh.close()
            raise InstanceLocked(self.folder, _read_pid(self.path))
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
        _unlock(fh)
        fh.close()


def holder(folder: str | os.PathLike[str]) -> int | None:
    """The pid of the process holding ``folder``'s lock (0 when held but the pid is unreadable), None when free.

    Probes by trying the lock and letting go at once; never blocks and never leaves the lock taken."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return None
    try:
        fh = open(path, "a+", encoding="ascii")
    except OSError:
        return None
    try:
        if _try_lock(fh):
            _unlock(fh)
            return None
    finally:
        fh.close()
    return _read_pid(path) or 0
