"""``optiondesk journal``: notes and tags per trade from a terminal (beside the running app: WAL)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    j = subparsers.add_parser("journal", help="the trade journal: add notes and tags, search, export CSV")
    sub = j.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    a = sub.add_parser("add", parents=[common], help="attach a note and tags to a trade (an order)")
    a.add_argument("order", help="order id, client order id, or a unique prefix of one")
    a.add_argument("note", nargs="?", default="", help="the note's text")
    a.add_argument("--tag", "-t", action="append", default=[], help="a tag (repeat, or comma-separated)")
    a.set_defaults(func=_cmd_add)
    f = argparse.ArgumentParser(add_help=False)
    f.add_argument("query", nargs="?", default="", help="text to find in notes, tags, symbols, strategy, order id")
    f.add_argument("--tag", "-t", action="append", default=[], help="only notes with this tag (repeatable)")
    f.add_argument("--order", default=None, help="only notes of this order")
    f.add_argument("--from", dest="start", default=None, metavar="DATE", help="notes from this day (YYYY-MM-DD)")
    f.add_argument("--to", dest="end", default=None, metavar="DATE", help="notes up to this day, included")
    s = sub.add_parser("search", parents=[common, f], help="list the notes that match (all without a query)")
    s.set_defaults(func=_cmd_search)
    e = sub.add_parser("export", parents=[common, f], help="write the matching notes as CSV")
    e.add_argument("--out", type=Path, required=True, metavar="FILE.csv")
    e.set_defaults(func=_cmd_export)
    d = sub.add_parser("delete", parents=[common], help="delete one note by its number")
    d.add_argument("id", type=int)
    d.set_defaults(func=_cmd_delete)
    t = sub.add_parser("trades", parents=[common], help="list recent filled orders (the ids notes attach to)")
    t.add_argument("--limit", type=int, default=20)
    t.set_defaults(func=_cmd_trades)


def _open(db: Path | None) -> Any:
    from engine.cli_errors import CliError
    from engine.paths import AppPaths
    from engine.store import Store

    path = db or AppPaths.default().database
    if not path.is_file():
        raise CliError(f"no database at {path}: the journal needs the app's database (or pass --db)")
    return Store.open(path)


def _guard(fn: Any) -> Any:
    """Journal input errors are the user's to fix: one line, exit 2."""
    from engine.cli_errors import CliError
    from engine.journal import JournalError
    from engine.reports.data import ReportError

    try:
        return fn()
    except (JournalError, ReportError) as exc:
        raise CliError(str(exc)) from exc


def _cmd_add(args: argparse.Namespace) -> int:
    from engine.journal import add_note

    store = _open(args.db)
    try:
        note_id = _guard(lambda: add_note(store, args.order, args.note, args.tag))
    finally:
        store.close()
    print(f"journal note {note_id} added")
    return 0


def _find(store: Any, args: argparse.Namespace) -> list[Any]:
    from engine.journal import resolve_order_id, search
    from engine.reports.data import day_bounds, parse_day

    def run() -> list[Any]:
        start = parse_day(args.start, "--from") if args.start else None
        end = parse_day(args.end, "--to") if args.end else None
        lo = day_bounds(start, start)[0] if start else None
        hi = day_bounds(end, end)[1] if end else None
        order = resolve_order_id(store, args.order) if args.order else None
        return search(store, args.query, tags=args.tag, order_id=order, start=lo, end=hi)

    return list(_guard(run))


def _cmd_search(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        notes = _find(store, args)
    finally:
        store.close()
    for n in notes:
        tags = " ".join(f"#{t}" for t in n.tags)
        print(f"{n.id:>5}  {n.ts:%Y-%m-%d %H:%M}  {n.order_id[:12]:<12}  {' '.join(n.symbols)[:40]:<40}  {tags}  "
              f"{n.note}")
    print(f"{len(notes)} note(s)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from engine.journal import export_csv

    store = _open(args.db)
    try:
        notes = _find(store, args)
    finally:
        store.close()
    _guard(lambda: export_csv(notes, args.out))
    print(f"{len(notes)} note(s) written to {args.out}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from engine.journal import delete_note

    store = _open(args.db)
    try:
        _guard(lambda: delete_note(store, args.id))
    finally:
        store.close()
    print(f"journal note {args.id} deleted")
    return 0


def _cmd_trades(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        rows = store.query(
            "SELECT o.order_id, o.status, o.legs, o.quantity, o.avg_fill_price, o.updated_at, "
            "(SELECT count(*) FROM journal_notes n WHERE n.order_id=o.order_id) AS notes FROM orders o "
            "WHERE o.filled_quantity > 0 ORDER BY o.updated_at DESC LIMIT ?", (max(1, args.limit),))
    finally:
        store.close()
    from engine.journal import symbols_of

    for r in rows:
        print(f"{r['order_id']}  {r['updated_at'][:16]}  {r['status']:<16}  x{r['quantity']}  "
              f"{' '.join(symbols_of(r['legs']))}  notes: {r['notes']}")
    if not rows:
        print("no filled orders yet")
    return 0
