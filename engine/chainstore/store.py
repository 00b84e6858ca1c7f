"""Imported end-of-day option chains, stored per option root and month, ready for backtests.

Layout under ``<data folder>/chains/`` (``ChainStore(paths.data_dir / "chains")``)::

    SPY/manifest.json        underlying, style, settlement, multiplier, every import (file, rows, when)
    SPY/2022-01.npz          one month of rows: quote date, expiry, strike, call/put, bid, ask,
    SPY/2022-02.npz          underlying price, vendor IV and delta, volume, open interest

One file per root and month keeps a year of SPY (~1 M rows) in a dozen files that load in milliseconds
and merge cheaply when a month is imported again. Files are NumPy ``.npz`` (no pyarrow: the lite build
reads them too), written to a temporary name and renamed, so a crash mid-import leaves the old month.

Import rules (:meth:`ChainStore.import_file`), each row dropped with its reason counted:

- ``unreadable`` — a date, strike, type, bid or ask that does not parse;
- ``no_underlying`` — no underlying price for the row;
- ``crossed`` — bid above ask (or a negative price);
- ``no_quote`` — bid and ask both zero;
- ``expired`` — expiry before the quote date;
- ``duplicate`` — the same series twice on one day within the file (the first is kept).

Rows already stored (same root, day and series) are counted as ``already_stored`` and left as they are, so
importing a file twice adds nothing.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.chainstore.formats import ChainFormatError, read_chunks
from engine.model import ExerciseStyle, Settlement

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: only an import or a backtest pays it
    import pandas as pd

#: index roots settled in cash at the expiry day's opening print (European)
AM_CASH_ROOTS = frozenset({"SPX", "NDX", "RUT", "VIX", "DJX"})
#: index roots settled in cash at the close (European, except OEX)
PM_CASH_ROOTS = frozenset({"SPXW", "NDXP", "RUTW", "VIXW", "XSP", "XEO", "OEX"})
DROP_REASONS = ("unreadable", "no_underlying", "crossed", "no_quote", "expired", "duplicate")
_ARRAYS = ("quote_date", "expiration", "strike", "is_call", "bid", "ask", "spot", "iv", "delta", "volume",
           "open_interest")


def contract_terms(root: str) -> tuple[ExerciseStyle, Settlement]:
    """Exercise style and settlement of a root: cash-settled index roots are European (OEX American),
    everything else American with shares delivered."""
    if root in AM_CASH_ROOTS:
        return ExerciseStyle.EUROPEAN, Settlement.CASH_AM
    if root in PM_CASH_ROOTS:
        return (ExerciseStyle.AMERICAN if root == "OEX" else ExerciseStyle.EUROPEAN), Settlement.CASH_PM
    return ExerciseStyle.AMERICAN, Settlement.PHYSICAL


@dataclass
class ImportReport:
    """What one import did: per file and in total."""

    files: list[dict[str, Any]] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0
    already_stored: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    roots: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "rows_read": self.rows_read, "rows_written": self.rows_written,
                "already_stored": self.already_stored, "dropped": dict(self.dropped), "roots": self.roots,
                "cancelled": self.cancelled}


ProgressCallback = Callable[[float, str], None]


class ChainStore:
    """Imported chains under one folder. Safe to read from several threads; imports are serialised."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(base)
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> ChainStore:
        from engine.paths import AppPaths

        return cls(AppPaths.default().data_dir / "chains")

    # ---- import ----------------------------------------------------------------------------------
    def import_file(self, path: str | os.PathLike[str], fmt: str = "auto", *, symbol: str | None = None,
                    report: ImportReport | None = None, progress: ProgressCallback | None = None,
                    cancelled: Callable[[], bool] | None = None, imported_at: str = "",
                    chunk_rows: int = 250_000) -> ImportReport:
        """Stream one vendor file into the store (see the module docstring for the rules)."""
        report = report or ImportReport()
        p = Path(path)
        entry: dict[str, Any] = {"file": str(p), "format": fmt, "rows_read": 0, "rows_written": 0,
                                 "already_stored": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}
        pending: dict[tuple[str, str], list[pd.DataFrame]] = {}
        seen_roots: dict[str, str] = {}
        with self._lock:
            for chunk in read_chunks(p, fmt, symbol=symbol, chunk_rows=chunk_rows):
                if cancelled is not None and cancelled():
                    report.cancelled = True
                    break
                kept, drops = _validate(chunk.frame)
                for reason, n in drops.items():
                    entry["dropped"][reason] += n
                entry["rows_read"] = chunk.rows_read
                for root in kept["root"].unique():
                    seen_roots.setdefault(str(root), chunk.underlying)
                months = kept["quote_date"].to_numpy().astype("datetime64[M]").astype(str)
                for (root, month), part in kept.groupby([kept["root"].to_numpy(), months], sort=False):
                    pending.setdefault((str(root), str(month)), []).append(part)
                # a file is usually in date order: months before this chunk's first day are complete
                first = str(kept["quote_date"].to_numpy().min().astype("datetime64[M]")) if len(kept) else None
                for key in [k for k in pending if first is not None and k[1] < first]:
                    self._flush(key, pending.pop(key), entry)
                if progress is not None:
                    progress(chunk.fraction, f"{p.name}: {chunk.rows_read:,} rows read")
            if not report.cancelled:  # a cancelled import keeps the months it completed, never a partial one
                for key in list(pending):
                    self._flush(key, pending.pop(key), entry)
            for root, underlying in seen_roots.items():
                self._record_import(root, underlying, entry, imported_at)
        report.files.append(entry)
        report.rows_read += entry["rows_read"]
        report.rows_written += entry["rows_written"]
        report.already_stored += entry["already_stored"]
        for reason, n in entry["dropped"].items():
            report.dropped[reason] += n
        for root in seen_roots:
            report.roots[root] = self.coverage(root)
        return report

    def _flush(self, key: tuple[str, str], parts: list[pd.DataFrame], entry: dict[str, Any]) -> None:
        import pandas as pd

        root, month = key
        new = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        # a series twice on one day across chunks of the file: the first is kept
        dup = new.duplicated(["quote_date", "expiration", "strike", "is_call"], keep="first").to_numpy()
        entry["dropped"]["duplicate"] += int(dup.sum())
        new = new[~dup]
        path = self._month_path(root, month)
        old = _read_month(path) if path.exists() else None
        if old is not None and len(old):
            both = pd.concat([old, new[list(_ARRAYS)]], ignore_index=True)
            stored = both.duplicated(["quote_date", "expiration", "strike", "is_call"], keep="first").to_numpy()
            entry["already_stored"] += int(stored[len(old):].sum())
            added = int((~stored[len(old):]).sum())
            merged = both[~stored]
        else:
            added = len(new)
            merged = new[list(_ARRAYS)]
        entry["rows_written"] += added
        if added:
            merged = merged.sort_values(["quote_date", "expiration", "strike", "is_call"], kind="stable")
            _write_month(path, merged)

    def _record_import(self, root: str, underlying: str, entry: dict[str, Any], imported_at: str) -> None:
        manifest = self.manifest(root)
        style, settlement = contract_terms(root)
        manifest.setdefault("root", root)
        manifest.setdefault("underlying", underlying)
        manifest.setdefault("style", style.value)
        manifest.setdefault("settlement", settlement.value)
        manifest.setdefault("multiplier", 100)
        manifest.setdefault("imports", []).append(
            {"file": entry["file"], "format": entry["format"], "at": imported_at, "rows_read": entry["rows_read"],
             "rows_written": entry["rows_written"]})
        path = self.base / root / "manifest.json"
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, path)

    # ---- reading ---------------------------------------------------------------------------------
    def roots(self) -> list[str]:
        if not self.base.is_dir():
            return []
        return sorted(d.name for d in self.base.iterdir() if d.is_dir() and any(d.glob("*.npz")))

    def manifest(self, root: str) -> dict[str, Any]:
        path = self.base / root.upper() / "manifest.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _months(self, root: str) -> list[Path]:
        return sorted((self.base / root.upper()).glob("[0-9][0-9][0-9][0-9]-[0-9][0-9].npz"))

    def coverage(self, root: str) -> dict[str, Any]:
        """First and last day, days, rows and rows per day (for a coverage calendar) of one root."""
        days: dict[str, int] = {}
        rows = 0
        for path in self._months(root):
            qd = _read_month(path)["quote_date"].to_numpy().astype("datetime64[D]")
            d, n = np.unique(qd, return_counts=True)
            days.update({str(x): int(c) for x, c in zip(d, n, strict=True)})
            rows += len(qd)
        ordered = sorted(days)
        m = self.manifest(root)
        return {"root": root.upper(), "underlying": m.get("underlying", root.upper()), "rows": rows,
                "days": len(ordered), "first_day": ordered[0] if ordered else None,
                "last_day": ordered[-1] if ordered else None, "rows_per_day": days,
                "sources": [i["file"] for i in m.get("imports", [])]}

    def load(self, root: str, start: date | None = None, end: date | None = None) -> Any:
        """The stored days of ``root`` within [start, end] as a backtest ``ChainHistory``."""
        import pandas as pd

        from engine.backtest.data import build_history

        root = root.upper()
        lo = None if start is None else np.datetime64(start, "M")
        hi = None if end is None else np.datetime64(end, "M")
        frames = []
        for path in self._months(root):
            month = np.datetime64(path.stem, "M")
            if (lo is not None and month < lo) or (hi is not None and month > hi):
                continue
            frames.append(_read_month(path))
        if not frames:
            have = self.roots()
            raise ValueError(f"no imported chains for {root}" + (f" between {start} and {end}" if start or end else "")
                             + (f"; imported roots: {', '.join(have)}" if have else "; import with `optiondesk data import`"))
        f = pd.concat(frames, ignore_index=True)
        qd = f["quote_date"].to_numpy().astype("datetime64[D]")
        keep = np.ones(len(f), bool)
        if start is not None:
            keep &= qd >= np.datetime64(start, "D")
        if end is not None:
            keep &= qd <= np.datetime64(end, "D")
        f = f[keep]
        if not len(f):
            raise ValueError(f"no imported {root} days between {start} and {end}")
        m = self.manifest(root)
        style, settlement = contract_terms(root)
        return build_history(
            m.get("underlying", root), f["quote_date"].to_numpy(), f["expiration"].to_numpy(), f["strike"].to_numpy(),
            f["is_call"].to_numpy(), f["bid"].to_numpy(), f["ask"].to_numpy(), spot_by_row=f["spot"].to_numpy(),
            iv=f["iv"].to_numpy(), delta=f["delta"].to_numpy(), volume=f["volume"].to_numpy(),
            open_interest=f["open_interest"].to_numpy(), multiplier=int(m.get("multiplier", 100)),
            style=ExerciseStyle(m.get("style", style.value)), settlement=Settlement(m.get("settlement", settlement.value)),
            root=root, source=f"imported {root} ({', '.join(Path(s).name for s in self.coverage(root)['sources'][-3:])})")

    # ---- deleting --------------------------------------------------------------------------------
    def delete(self, root: str, start: date | None = None, end: date | None = None) -> int:
        """Remove the days of ``root`` within [start, end] (all of it without bounds); returns rows removed."""
        root = root.upper()
        removed = 0
        with self._lock:
            for path in self._months(root):
                f = _read_month(path)
                qd = f["quote_date"].to_numpy().astype("datetime64[D]")
                drop = np.ones(len(f), bool)
                if start is not None:
                    drop &= qd >= np.datetime64(start, "D")
                if end is not None:
                    drop &= qd <= np.datetime64(end, "D")
                n = int(drop.sum())
                if not n:
                    continue
                removed += n
                if n == len(f):
                    path.unlink()
                else:
                    _write_month(path, f[~drop])
            if not self._months(root):
                manifest = self.base / root / "manifest.json"
                manifest.unlink(missing_ok=True)
                if (self.base / root).is_dir() and not any((self.base / root).iterdir()):
                    (self.base / root).rmdir()
        return removed

    def _month_path(self, root: str, month: str) -> Path:
        d = self.base / root
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{month}.npz"


def _validate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows a backtest can use, and the count dropped per reason (first failing rule wins)."""
    qd = frame["quote_date"].to_numpy()
    ex = frame["expiration"].to_numpy()
    k, bid, ask, spot = (frame[c].to_numpy(dtype=float) for c in ("strike", "bid", "ask", "spot"))
    unreadable = np.isnat(qd) | np.isnat(ex) | ~np.isfinite(k) | (k <= 0) | ~np.isfinite(bid) | ~np.isfinite(ask)
    no_underlying = ~unreadable & ~(np.isfinite(spot) & (spot > 0))
    ok = ~unreadable & ~no_underlying
    crossed = ok & ((bid > ask) | (bid < 0) | (ask < 0))
    ok &= ~crossed
    no_quote = ok & (bid == 0) & (ask == 0)
    ok &= ~no_quote
    expired = ok & (ex < qd)
    ok &= ~expired
    kept = frame[ok]
    dup = kept.duplicated(["root", "quote_date", "expiration", "strike", "is_call"], keep="first").to_numpy()
    kept = kept[~dup]
    return kept, {"unreadable": int(unreadable.sum()), "no_underlying": int(no_underlying.sum()),
                  "crossed": int(crossed.sum()), "no_quote": int(no_quote.sum()), "expired": int(expired.sum()),
                  "duplicate": int(dup.sum())}


def _write_month(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    arrays = {}
    for name in _ARRAYS:
        v = frame[name].to_numpy()
        if name in ("quote_date", "expiration"):
            v = v.astype("datetime64[D]")
        elif name == "is_call":
            v = v.astype(bool)
        else:
            v = v.astype(float)
        arrays[name] = v
    try:
        # an .npz numpy.load reads, deflated at level 1: a third of the raw size at a fifth of the default's cost
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_month(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        with np.load(path, allow_pickle=False) as z:
            return pd.DataFrame({name: z[name] for name in _ARRAYS})
    except (OSError, ValueError, KeyError) as exc:
        raise ChainFormatError(f"{path}: stored month cannot be read ({exc}); delete it and import again") from None


__all__ = ["AM_CASH_ROOTS", "DROP_REASONS", "PM_CASH_ROOTS", "ChainStore", "ImportReport", "contract_terms"]
