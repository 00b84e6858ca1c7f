"""``optiondesk history import FILE…``: daily history (close and ATM IV per session) from CSV or Parquet files.

Why: the history service backfills from the running feed's own past; a user who owns better data (a vendor's
daily closes and 30-day ATM IV, an export from another platform) puts it into the same store, where IV rank,
realized vol, the watchlist and the chart read it.

Layout (one row per symbol and session; column names are case-insensitive, other columns are ignored):

- ``date`` (or ``day``): the session, ``YYYY-MM-DD``;
- ``symbol`` (or ``underlying``): optional when ``--symbol`` names the file's one symbol;
- ``close``: the session's close, positive;
- ``atm_iv`` (or ``iv``): the 30-day ATM implied vol as a fraction (0.18 for 18 %), positive and below 5.

The whole file is validated before anything is written: every bad value is reported with the file, row
(the CSV line number, or the Parquet row counting from 1) and column, and a file with errors writes
nothing. Rows go in like a backfill: a day already stored (recorded live, or imported before) is kept, so
importing a file twice adds nothing. Each import is logged in ``history_backfills`` with source
``file:NAME``.

    optiondesk history import spy_daily.csv --symbol SPY
    optiondesk history import vendor.parquet --json --db /tmp/od.sqlite
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engine.store import Store

_ALIASES = {"date": ("date", "day"), "symbol": ("symbol", "underlying"), "close": ("close",),
            "atm_iv": ("atm_iv", "iv")}
MAX_REPORTED_ERRORS = 20


class HistoryImportError(ValueError):
    """A file that cannot be imported; ``errors`` lists each bad value as ``file, row N, column C: why``."""

    def __init__(self, errors: list[str]) -> None:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        super().__init__("\n".join(shown) + (f"\n… and {more} more" if more > 0 else ""))
        self.errors = errors


@dataclass
class ImportReport:
    """What an import read and wrote (``written`` < ``rows`` when days were already stored)."""

    files: list[str] = field(default_factory=list)
    rows: int = 0
    written: int = 0
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "rows": self.rows, "written": self.written,
                "already_stored": self.rows - self.written, "symbols": self.symbols}


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number as the user sees it, raw row with lower-case keys)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from engine.parquet_support import ParquetUnavailable, parquet_module

        try:
            pq = parquet_module(path)
        except ParquetUnavailable as exc:
            raise HistoryImportError([str(exc)]) from None
        table = pq.read_table(path)
        names = [n.lower() for n in table.column_names]
        for i, row in enumerate(table.to_pylist(), start=1):
            yield i, dict(zip(names, row.values(), strict=True))
        return
    if suffix not in (".csv", ".txt"):
        raise HistoryImportError([f"{path}: unknown format {suffix or '(no suffix)'!r}; use .csv or .parquet"])
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise HistoryImportError([f"{path}: empty file (no header)"])
        for row in reader:
            yield reader.line_num, {str(k).strip().lower(): v for k, v in row.items() if k is not None}


def _pick(row: dict[str, Any], key: str) -> tuple[str, Any]:
    for name in _ALIASES[key]:
        if name in row:
            return name, row[name]
    return _ALIASES[key][0], None


def _number(value: Any) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("missing")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{value!r} is not a finite number")
    return x


def read_file(path: Path, symbol: str | None = None) -> dict[str, dict[date, tuple[float, float]]]:
    """Validate one file; ``{symbol: {day: (close, atm_iv)}}`` or :class:`HistoryImportError` with every problem."""
    if not path.is_file():
        raise HistoryImportError([f"{path}: no such file"])
    out: dict[str, dict[date, tuple[float, float]]] = {}
    seen: dict[tuple[str, date], int] = {}
    errors: list[str] = []
    header_checked = False
    for line, row in _rows(path):
        if not header_checked:
            header_checked = True
            missing = [k for k in ("date", "close", "atm_iv") if not any(a in row for a in _ALIASES[k])]
            if symbol is None and not any(a in row for a in _ALIASES["symbol"]):
                missing.append("symbol (or pass --symbol)")
            if missing:
                raise HistoryImportError([f"{path}: missing column(s) {', '.join(missing)}; "
                                          f"found {', '.join(row) or 'none'}"])

        def bad(column: str, why: str, line: int = line) -> None:
            errors.append(f"{path}, row {line}, column {column}: {why}")

        col, raw = _pick(row, "symbol")
        sym = (symbol or str(raw or "")).strip().upper()
        if not sym:
            bad(col, "missing")
            continue
        col, raw = _pick(row, "date")
        try:
            day = raw if isinstance(raw, date) else date.fromisoformat(str(raw).strip()[:10])
        except ValueError:
            bad(col, f"{raw!r} is not a date (YYYY-MM-DD)")
            continue
        ok = True
        values = []
        for key in ("close", "atm_iv"):
            col, raw = _pick(row, key)
            try:
                x = _number(raw)
            except ValueError as exc:
                bad(col, str(exc) if str(exc) == "missing" else f"{raw!r} is not a number")
                ok = False
                continue
            if x <= 0:
                bad(col, f"{x} must be positive")
                ok = False
            elif key == "atm_iv" and x >= 5:
                bad(col, f"{x} looks like per cent; give the IV as a fraction (0.18 for 18 %)")
                ok = False
            values.append(x)
        if not ok:
            continue
        first = seen.get((sym, day))
        if first is not None:
            bad("date", f"{sym} {day} already given in row {first}")
            continue
        seen[(sym, day)] = line
        out.setdefault(sym, {})[day] = (values[0], values[1])
    if not header_checked:
        raise HistoryImportError([f"{path}: no rows"])
    if errors:
        raise HistoryImportError(errors)
    return out


def import_files(store: Store, paths: list[Path], *, symbol: str | None = None, at: str) -> ImportReport:
    """Validate every file first (nothing is written if any has errors), then write the days not stored yet."""
    from engine.history.service import write_series
    from engine.history.source import DailySeries

    parsed: list[tuple[Path, dict[str, dict[date, tuple[float, float]]]]] = []
    errors: list[str] = []
    for p in paths:
        try:
            parsed.append((p, read_file(p, symbol.upper() if symbol else None)))
        except HistoryImportError as exc:
            errors.extend(exc.errors)
    if errors:
        raise HistoryImportError(errors)
    report = ImportReport()
    for p, data in parsed:
        series = {}
        for sym, rows in data.items():
            days = sorted(rows)
            series[sym] = DailySeries(underlying=sym, days=tuple(days),
                                      close=np.array([rows[d][0] for d in days]),
                                      atm_iv=np.array([rows[d][1] for d in days]))
        before = {s: _count(store, s) for s in series}
        written = write_series(store, series, f"file:{p.name}", at)
        report.files.append(str(p))
        report.rows += sum(len(r) for r in data.values())
        report.written += written
        for sym, s in series.items():
            entry = report.symbols.setdefault(sym, {"rows": 0, "written": 0, "first_day": None, "last_day": None})
            entry["rows"] += len(s.days)
            entry["written"] += _count(store, sym) - before[sym]
            first, last = s.days[0].isoformat(), s.days[-1].isoformat()
            entry["first_day"] = min(filter(None, [entry["first_day"], first]))
            entry["last_day"] = max(filter(None, [entry["last_day"], last]))
    return report


def _count(store: Store, symbol: str) -> int:
    return int(store.query("SELECT COUNT(*) AS n FROM iv_history WHERE underlying = ?", (symbol,))[0]["n"])


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("history", help="daily history (close, ATM IV) in the store: import files")
    sub = p.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="import daily close and ATM IV from CSV or Parquet files")
    imp.add_argument("files", nargs="+", type=Path, help="CSV or Parquet files: columns date, symbol (or --symbol), close, atm_iv (a fraction)")
    imp.add_argument("--symbol", default=None, help="the symbol of files without a symbol column")
    imp.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    imp.add_argument("--json", action="store_true", help="print JSON")
    imp.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError, dumps_json
    from engine.clock import WallClock
    from engine.risk.cli import _open

    store = _open(args.db)
    try:
        try:
            report = import_files(store, list(args.files), symbol=args.symbol, at=WallClock().now().isoformat())
        except HistoryImportError as exc:
            raise CliError(f"nothing imported:\n{exc}") from None
    finally:
        store.close()
    if args.json:
        print(dumps_json(report.to_dict(), indent=2))
        return 0
    for sym, e in report.symbols.items():
        print(f"{sym}: {e['rows']} days {e['first_day']} to {e['last_day']}, {e['written']} new "
              f"({e['rows'] - e['written']} already stored)")
    return 0
