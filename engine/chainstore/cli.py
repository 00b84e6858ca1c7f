"""``optiondesk data``: import vendor option-chain files, list what is stored, delete a range."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="imported end-of-day option chains for backtests (import, list, delete) and daily bars (bars)")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="import Cboe DataShop, OptionsDX or native chain files (CSV, zip, Parquet)")
    imp.add_argument("files", nargs="+", type=Path, help="files to import (a directory imports every file in it)")
    imp.add_argument("--format", default="auto", choices=("auto", "cboe", "optionsdx", "native"),
                     help="file layout (default: recognised from the header)")
    imp.add_argument("--symbol", default=None, help="the underlying of files without one (OptionsDX)")
    imp.add_argument("--dir", type=Path, default=None, help="chain store folder (default: the data folder's chains/)")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(func=_cmd_import)
    ls = sub.add_parser("list", help="imported roots with their date ranges")
    ls.add_argument("--dir", type=Path, default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)
    rm = sub.add_parser("delete", help="delete a root's days (all of them without --from/--to)")
    rm.add_argument("root")
    rm.add_argument("--from", dest="start", type=date.fromisoformat, default=None)
    rm.add_argument("--to", dest="end", type=date.fromisoformat, default=None)
    rm.add_argument("--yes", action="store_true", help="confirm (required)")
    rm.add_argument("--dir", type=Path, default=None)
    rm.set_defaults(func=_cmd_delete)
    from engine.history.yahoo import register as register_bars

    register_bars(sub)


def _store(directory: Path | None) -> Any:
    from engine.chainstore.store import ChainStore

    return ChainStore(directory) if directory is not None else ChainStore.default()


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".csv", ".txt", ".zip",
                                                                                              ".parquet", ".gz")))
        else:
            out.append(p)
    return out


def _cmd_import(args: argparse.Namespace) -> int:
    from engine.chainstore.formats import ChainFormatError
    from engine.chainstore.store import ImportReport
    from engine.cli_errors import CliError, dumps_json
    from engine.clock import WallClock

    store = _store(args.dir)
    report = ImportReport()
    files = _files(list(args.files))
    if not files:
        raise CliError("no files to import")
    show = sys.stderr.isatty() and not args.json

    def progress(fraction: float, text: str) -> None:
        if show:
            print(f"\r{text} ({fraction:.0%})".ljust(60), end="", file=sys.stderr, flush=True)

    at = WallClock().now().isoformat()
    for f in files:
        try:
            store.import_file(f, args.format, symbol=args.symbol, report=report, progress=progress, imported_at=at)
        except ChainFormatError as exc:
            raise CliError(f"{exc}" + (f" ({report.rows_written:,} rows of earlier files were imported)"
                                       if report.rows_written else "")) from None
    if show:
        print(file=sys.stderr)
    if args.json:
        out = report.to_dict()
        for r in out["roots"].values():
            r.pop("rows_per_day", None)
        print(dumps_json(out, indent=2))
        return 0
    dropped = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in report.dropped.items() if n) or "none"
    print(f"read {report.rows_read:,} rows from {len(files)} file(s): {report.rows_written:,} stored, "
          f"{report.already_stored:,} already stored; dropped: {dropped}")
    for root, c in report.roots.items():
        print(f"  {root}: {c['days']} days {c['first_day']} to {c['last_day']}, {c['rows']:,} rows")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from engine.cli_errors import dumps_json

    store = _store(args.dir)
    rows = [store.coverage(r) for r in store.roots()]
    for r in rows:
        r.pop("rows_per_day", None)
    if args.json:
        print(dumps_json(rows, indent=2))
        return 0
    if not rows:
        print("no imported chains (optiondesk data import FILE…)")
    for r in rows:
        print(f"{r['root']:<6} {r['underlying']:<6} {r['first_day']} to {r['last_day']}  {r['days']:>5} days  "
              f"{r['rows']:>10,} rows")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError

    if not args.yes:
        raise CliError("deleting imported chains needs --yes")
    store = _store(args.dir)
    if args.root.upper() not in store.roots():
        raise CliError(f"no imported chains for {args.root.upper()}; imported: {', '.join(store.roots()) or 'none'}")
    n = store.delete(args.root, args.start, args.end)
    print(f"deleted {n:,} rows of {args.root.upper()}")
    return 0
