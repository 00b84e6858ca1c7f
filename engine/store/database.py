"""The SQLite store: one file, WAL mode, ordered migrations, repositories.

Every order state change is written here before the next step acts on it (docs/architecture.md §4). Writes
are small, synchronous and committed at once (WAL + ``synchronous=NORMAL`` keeps them ~0.1 ms), so
a process killed at any point leaves a consistent database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.clock import Clock, WallClock
from engine.store.migrations import Migration, ordered_migrations
from engine.store.repositories import (
    AuditRepository,
    FillRepository,
    KeyValueRepository,
    OrderRepository,
    PositionRepository,
)


class StoreError(RuntimeError):
    """The database cannot be used; the message names the file and what to do (shown to the user as is)."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer release: its tables may have columns this release does not fill
    (the first order would fail with IntegrityError), so it is refused before anything reads or writes it."""

    def __init__(self, path: Path | None, db_version: int, latest: int, unknown: list[int]) -> None:
        self.db_version, self.latest, self.unknown = db_version, latest, unknown
        extra = "" if unknown == [db_version] else f" (unknown migrations {', '.join(map(str, unknown))})"
        super().__init__(
            f"database {path} is at schema version {db_version}{extra}, from a newer Optiondesk release; this "
            f"release knows schema versions up to {latest}. Open it with the newer release, or move the file "
            "aside to start a new database.")


def utc_iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


class Store:
    """Owns the SQLite connection. Use from the engine's loop thread (check_same_thread guards it).

    ``clock`` stamps the rows written without an explicit time (order events, audit, kv): the engine
    opens its store with the engine clock, so a simulated session's records carry simulated time. A
    store opened by a tool beside the engine (``optiondesk kill``, ``risk``) has only the wall clock."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, clock: Clock | None = None) -> None:
        self.conn = conn
        self.path = path
        self.clock: Clock = clock if clock is not None else WallClock()
        self._db: Any = None
        self._lock = threading.RLock()
        self._depth = 0
        self.orders = OrderRepository(self)
        self.fills = FillRepository(self)
        self.positions = PositionRepository(self)
        self.audit = AuditRepository(self)
        self.kv = KeyValueRepository(self)

    @property
    def db(self) -> Any:
        """A ``sqlite_utils.Database`` on this connection, for ad-hoc queries. Imported on first use:
        sqlite-utils imports pandas, half a second the workstation's start should not pay."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, migrate: bool = True, target_version: int | None = None,
             clock: Clock | None = None) -> Store:
        """Open (creating the file and parent folder if needed) and migrate to ``target_version`` (default: latest)."""
        p = Path(path)
        memory = str(p) == ":memory:"
        if not memory:
            if p.is_dir():
                raise StoreError(f"database {p} is a folder, not a file: move it aside or choose another path")
            if p.exists() and not p.is_file():
                raise StoreError(f"database {p} is not a regular file (a pipe or device?)")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of database {p}: {exc}") from exc
        try:
            conn = sqlite3.connect(str(p), timeout=10.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(_describe_sqlite_error(p, exc)) from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA synchronous=NORMAL")
            store = cls(conn, None if memory else p, clock)
            store._check_usable(check_writable=not memory)
            if not memory:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"could not enable WAL on {p} (journal_mode={mode})")
            conn.execute("PRAGMA foreign_keys=ON")
            if migrate:
                store.migrate(target_version)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_describe_sqlite_error(p, exc)) from exc
        return store

    def _check_usable(self, *, check_writable: bool) -> None:
        """Refuse, before any migration writes to it, a file that is not ours or is from a newer release,
        and one we cannot write (SQLite opens an unwritable file read-only without a word; the first
        order would then fail instead of the start)."""
        tables = {str(r[0]) for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
        if tables and "schema_version" not in tables:
            shown = ", ".join(sorted(tables)[:8]) + (", …" if len(tables) > 8 else "")
            raise StoreError(f"database {self.path} is an SQLite file but not an Optiondesk database (it has "
                             f"tables {shown} and no schema_version): choose another file or move it aside")
        if "schema_version" in tables:
            applied = {int(r[0]) for r in self.conn.execute("SELECT version FROM schema_version")}
            unknown = sorted(applied - {m.version for m in ordered_migrations()})
            if unknown:
                raise SchemaTooNewError(self.path, max(applied), self.latest_version(), unknown)
        # access(2) sees what a write would meet (mode bits for a user, the immutable flag even for root, a
        # read-only mount) without writing: a probe write would cost a WAL checkpoint (~15 ms) at every close
        if check_writable and self.path is not None and self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"database {self.path} is read-only: make the file writable (every order step is "
                             "written to it)")

    def now(self) -> datetime:
        return self.clock.now()

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    # ---- transactions -------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                # SQLite rolls back by itself on some errors (SQLITE_FULL, IOERR, NOMEM): a second ROLLBACK would
                # replace "database or disk is full" with "cannot rollback - no transaction is active"
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    # ---- migrations ---------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        row = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if row is None:
            return 0
        v = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        return int(v or 0)

    @staticmethod
    def latest_version() -> int:
        ms = ordered_migrations()
        return ms[-1].version if ms else 0

    def applied_versions(self) -> set[int]:
        if self.schema_version == 0:
            return set()
        return {int(r[0]) for r in self.conn.execute("SELECT version FROM schema_version")}

    def migrate(self, target_version: int | None = None) -> list[int]:
        """Apply every migration not yet applied, in version order, each in its own transaction.

        Areas own version ranges, so a release can add a migration numbered below one already applied
        (say 11 after 30): it is applied too — the check is per version, not "above the maximum".
        """
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = self.applied_versions()
            applied: list[int] = []
            for m in ordered_migrations():
                if m.version in done:
                    continue
                if target_version is not None and m.version > target_version:
                    break
                self._apply(m)
                applied.append(m.version)
            return applied

    def _apply(self, m: Migration) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(m.apply, str):
                for statement in _split_sql(m.apply):
                    self.conn.execute(statement)
            else:
                m.apply(self.conn)
            self.conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)", (m.version, m.name, utc_iso(self.now()))
            )
        except BaseException as exc:
            self.conn.execute("ROLLBACK")
            raise StoreError(f"migration {m.version} ({m.name}) failed: {exc}") from exc
        self.conn.execute("COMMIT")

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


def _describe_sqlite_error(path: Path | str, exc: sqlite3.Error) -> str:
    """One sentence for the user: SQLite's own words are accurate but do not say which file or what to do."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc)
    if name == "SQLITE_NOTADB" or "file is not a database" in text:
        return f"{path} is not an SQLite database ({text}): move it aside to start a new database"
    if name == "SQLITE_CORRUPT" or "malformed" in text:
        return f"database {path} is damaged ({text}): restore a backup, or move it aside to start a new one"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return f"database {path} is read-only ({text}): make the file and its folder writable"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return f"cannot open database {path} ({text}): check that its folder exists and is writable"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return f"database {path} is locked by another process ({text})"
    return f"database {path}: {text}"


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
