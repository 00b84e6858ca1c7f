"""The SQLite store: one file, WAL mode, ordered migrations, repositories.

Every order state change is written here before the next step acts on it (DESIGN.md §4). Writes
are small, synchronous and committed at once (WAL + ``synchronous=NORMAL`` keeps them ~0.1 ms), so
a process killed at any point leaves a consistent database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.store.migrations import Migration, ordered_migrations
from engine.store.repositories import (
    AuditRepository,
    FillRepository,
    KeyValueRepository,
    OrderRepository,
    PositionRepository,
)


class StoreError(RuntimeError):
    pass


def utc_iso(ts: datetime | None = None) -> str:
    return (ts or datetime.now(UTC)).astimezone(UTC).isoformat()


class Store:
    """Owns the SQLite connection. Use from the engine's loop thread (check_same_thread guards it)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self.conn = conn
        self.path = path
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
    def open(cls, path: str | Path, *, migrate: bool = True, target_version: int | None = None) -> Store:
        """Open (creating the file and parent folder if needed) and migrate to ``target_version`` (default: latest)."""
        p = Path(path)
        if str(p) != ":memory:":
            p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        if str(p) != ":memory:":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"could not enable WAL on {p} (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        store = cls(conn, None if str(p) == ":memory:" else p)
        if migrate:
            store.migrate(target_version)
        return store

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
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)", (m.version, m.name, utc_iso())
            )
        except BaseException as exc:
            self.conn.execute("ROLLBACK")
            raise StoreError(f"migration {m.version} ({m.name}) failed: {exc}") from exc
        self.conn.execute("COMMIT")

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
