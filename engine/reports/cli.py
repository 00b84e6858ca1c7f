"""``optiondesk report``: the performance report for a period, as HTML or PDF.

Reads the store beside a running app (WAL). HTML is written by the engine alone; PDF goes through Qt's own
printing in ``app/report_pdf.py``, imported only when a PDF is asked for, so the engine stays headless.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="write the performance report (equity, drawdown, trades, fees, "
                                             "Greeks, attribution, journal) for a period as HTML or PDF")
    p.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="end", required=True, metavar="DATE", help="last day, YYYY-MM-DD (UTC), included")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="FILE.html or FILE.pdf")
    p.add_argument("--account", default=None, help="account id (default: the account with the newest history)")
    p.add_argument("--mode", choices=("paper", "live"), default=None, help="paper or live history")
    p.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    p.set_defaults(func=_cmd_report)


def write_report(store: Any, start: str, end: str, out: Path, *, account: str | None = None,
                 mode: str | None = None) -> Path:
    """Build the report from ``store`` and write it; the suffix of ``out`` chooses HTML or PDF."""
    from engine.cli_errors import CliError
    from engine.reports.data import ReportError, build_report, parse_day
    from engine.reports.html import render_html

    suffix = out.suffix.lower()
    if suffix not in (".html", ".htm", ".pdf"):
        raise CliError(f"--out {out}: the file must end in .html or .pdf")
    if not out.parent.is_dir():
        raise CliError(f"--out {out}: the folder {out.parent} does not exist")
    try:
        data = build_report(store, parse_day(start, "--from"), parse_day(end, "--to"), account_id=account, mode=mode)
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    if suffix == ".pdf":
        return importlib.import_module("app.report_pdf").write_pdf(data, out)  # Qt: outside the engine
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(render_html(data), encoding="utf-8")
        partial.replace(out)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError
    from engine.paths import AppPaths
    from engine.store import Store

    db = args.db or AppPaths.default().database
    if not db.is_file():
        raise CliError(f"no database at {db}: nothing to report (run the app first, or pass --db)")
    store = Store.open(db)
    try:
        path = write_report(store, args.start, args.end, args.out, account=args.account, mode=args.mode)
    finally:
        store.close()
    print(f"report written to {path}")
    return 0
