"""``optiondesk backup`` and ``optiondesk restore``: the database's online backup and its restore.

``backup`` works beside the running app (an online backup reads a consistent snapshot without stopping
anyone). ``restore`` replaces the database, so it asks for confirmation (``--yes`` for scripts) and refuses
while the app or ``optiondesk serve`` holds the data folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    b = subparsers.add_parser("backup", help="back the database up now (online: the app may keep running)")
    b.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="backup file (default: optiondesk-manual-<time>.db in the backups folder)")
    b.add_argument("--list", action="store_true", help="list the backups in the backups folder instead")
    b.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    b.set_defaults(func=_cmd_backup)
    r = subparsers.add_parser("restore", help="replace the database with a backup (the app must be closed)")
    r.add_argument("file", type=Path, metavar="FILE", help="the backup file to restore")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    r.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    r.set_defaults(func=_cmd_restore)


def backup_folder(db: Path | None = None) -> Path:
    """The configured backups folder (settings ``[backup] folder``), else ``backups`` beside the database."""
    from engine.paths import AppPaths
    from engine.settings import load_settings

    paths = AppPaths.default()
    folder = load_settings(paths.settings_file).settings.backup.folder if db is None else ""
    if folder:
        return Path(folder).expanduser()
    return (db.parent if db is not None else paths.data_dir) / "backups"


def _database(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    from engine.paths import AppPaths

    return AppPaths.default().database


def _cmd_backup(args: argparse.Namespace) -> int:
    from engine.clock import WallClock
    from engine.store.backup import backup_database, list_backups

    folder = backup_folder(args.db)
    if args.list:
        files = sorted((p for p in folder.glob("*.db") if p.is_file()), key=lambda p: p.name) if folder.is_dir() else []
        scheduled = set(list_backups(folder))
        for p in files:
            kind = "scheduled" if p in scheduled else "manual" if p.name.startswith("optiondesk-manual-") else "other"
            print(f"{p}  {p.stat().st_size / 1e6:.1f} MB  {kind}")
        if not files:
            print(f"no backups in {folder}")
        return 0
    out = args.out
    if out is None:
        out = folder / f"optiondesk-manual-{WallClock().now():%Y%m%d-%H%M%S}.db"  # a file name: the real present
    result = backup_database(_database(args.db), out)
    print(f"backup written to {result.path} ({result.bytes / 1e6:.1f} MB, schema version {result.schema_version}, "
          f"integrity ok, {result.elapsed_s:.2f} s)")
    return 0


def _describe(path: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        orders = conn.execute("SELECT count(*), max(updated_at) FROM orders").fetchone()
        fills = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
    except sqlite3.Error:
        return ""
    finally:
        conn.close()
    return f"{orders[0]} orders (newest change {orders[1] or '—'}), {fills} fills"


def _cmd_restore(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError
    from engine.instance_lock import holder
    from engine.store.backup import restore_database, verify_backup

    db = _database(args.db)
    version = verify_backup(args.file)
    pid = holder(db.parent)
    if pid is not None:
        raise CliError(f"Optiondesk is running on {db.parent} (process {pid or 'unknown'}): close the window or "
                       "stop `optiondesk serve` before restoring")
    print(f"Restore {args.file} (schema version {version}; {_describe(args.file)})")
    print(f"  into {db}; the current database is saved first in {backup_folder(args.db)}.")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("restore needs confirmation: run it in a terminal, or pass --yes")
        answer = input("Type 'yes' to restore: ").strip().lower()
        if answer != "yes":
            print("restore cancelled: nothing changed")
            return 1
    result = restore_database(args.file, db, safety_folder=backup_folder(args.db))
    kept = f"; the previous database is saved as {result.safety_copy}" if result.safety_copy else ""
    print(f"restored {result.restored_from} into {result.database}{kept}")
    return 0
