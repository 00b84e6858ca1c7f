"""Readers for the end-of-day option-chain files traders buy, normalised to one column set.

Each reader yields :class:`Chunk` s — pandas frames of at most ``chunk_rows`` rows with the columns of
:data:`COLUMNS` — so a multi-gigabyte file streams through in bounded memory.

- **cboe** — Cboe DataShop "Option EOD Summary" (with or without Calcs): one row per series per day,
  ``underlying_symbol, quote_date, root, expiration, strike, option_type, … bid_1545, ask_1545,
  underlying_bid_1545, underlying_ask_1545, implied_underlying_price_1545, active_underlying_price_1545,
  implied_volatility_1545, delta_1545, … open_interest``. The 15:45 snapshot is used (the vendor computes
  its IVs and Greeks there; on half days it is taken at 12:45). The underlying price is the active
  underlying price when present, else the underlying NBBO mid, else the implied underlying price; an
  index's caret (``^SPX``) is dropped. Zipped daily files (``UnderlyingOptionsEODCalcs_2024-01-02.zip``)
  are read as they come.
- **optionsdx** — OptionsDX EOD text files: bracketed headers (``[QUOTE_DATE], [UNDERLYING_LAST],
  [EXPIRE_DATE], [C_BID], [C_ASK], [C_IV], [C_DELTA], [STRIKE], [P_BID], [P_ASK] …``, each after a
  space), one row per strike with the call and the put side by side; no symbol column (``--symbol``).
- **native** — this project's own flat layout (``quote_date, expiration, strike, option_type, bid, ask,
  underlying_price`` …, the layout ``optiondesk backtest --data`` reads).
- **auto** — picks one of the above from the header.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: only an import or a backtest pays it
    import pandas as pd

#: the normalised columns every reader yields
COLUMNS = ("root", "quote_date", "expiration", "strike", "is_call", "bid", "ask", "spot", "iv", "delta", "volume",
           "open_interest")
FORMATS = ("auto", "cboe", "optionsdx", "native")

_CBOE_REQUIRED = ("underlying_symbol", "quote_date", "root", "expiration", "strike", "option_type", "bid_1545",
                  "ask_1545")
_OPTIONSDX_REQUIRED = ("QUOTE_DATE", "UNDERLYING_LAST", "EXPIRE_DATE", "STRIKE", "C_BID", "C_ASK", "P_BID", "P_ASK")
_NATIVE_REQUIRED = ("quote_date", "expiration", "strike", "option_type", "bid", "ask")


#: columns read as text (dates are parsed by format; everything else is a number)
_TEXT_COLUMNS = {name: str for name in (
    "underlying_symbol", "quote_date", "root", "expiration", "option_type", "delivery_code", "underlying",
    "[QUOTE_READTIME]", "[QUOTE_DATE]", "[EXPIRE_DATE]", "[C_SIZE]", "[P_SIZE]", " [QUOTE_READTIME]",
    " [QUOTE_DATE]", " [EXPIRE_DATE]", " [C_SIZE]", " [P_SIZE]")}


class ChainFormatError(ValueError):
    """A file this importer cannot read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Chunk:
    """Normalised rows of one file (``frame`` has :data:`COLUMNS`), with how far the file has been read."""

    frame: pd.DataFrame
    underlying: str
    rows_read: int  # raw rows of the file read so far (OptionsDX: strike rows, each giving a call and a put)
    fraction: float  # of the file's bytes read so far (0..1)


def _open_text(path: Path) -> tuple[io.TextIOBase, int]:
    """A text stream over ``path`` (a zip holding one CSV is opened inside) and its size in bytes."""
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ChainFormatError(f"{path}: not a readable zip archive") from None
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            archive.close()
            raise ChainFormatError(f"{path}: expected one CSV inside the zip, found {len(members)} files")
        raw = archive.open(members[0])
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), members[0].file_size
    return path.open(encoding="utf-8-sig", newline=""), path.stat().st_size


def _clean_header(name: str) -> str:
    return name.strip().strip("[]").strip()


def sniff_format(path: Path) -> str:
    """The format of ``path`` from its header line."""
    fh, _ = _open_text(path)
    with fh:
        header = fh.readline()
    if not header.strip():
        raise ChainFormatError(f"{path}: empty file (no header)")
    names = {_clean_header(c) for c in header.strip().split(",")}
    lower = {n.lower() for n in names}
    if set(_CBOE_REQUIRED) <= lower:
        return "cboe"
    if set(_OPTIONSDX_REQUIRED) <= {n.upper() for n in names} and "[" in header:
        return "optionsdx"
    if set(_NATIVE_REQUIRED) <= lower:
        return "native"
    raise ChainFormatError(f"{path}: unrecognised layout (header starts {header.strip()[:120]!r}); use --format "
                           "cboe, optionsdx or native")


def _numbers(series: pd.Series) -> np.ndarray:
    import pandas as pd

    if series.dtype.kind in "fiub":  # the C parser already read the column as numbers
        return series.to_numpy(dtype=float)
    return pd.to_numeric(series.astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)


def _dates(series: pd.Series) -> np.ndarray:
    """``YYYY-MM-DD`` (a time after it, as OptionsDX and Parquet exports write, is ignored); NaT if not a date."""
    import pandas as pd

    text = series.astype(str).str.strip().str.slice(0, 10)
    return pd.to_datetime(text, format="%Y-%m-%d", errors="coerce", cache=True).to_numpy().astype("datetime64[D]")


def _first_positive(*candidates: np.ndarray) -> np.ndarray:
    out = np.full(len(candidates[0]), np.nan)
    for c in candidates:
        take = ~np.isfinite(out) & np.isfinite(c) & (c > 0)
        out[take] = c[take]
    return out


def _cboe(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in _CBOE_REQUIRED if c not in frame.columns]
    if missing:
        raise ChainFormatError(f"Cboe columns missing: {', '.join(missing)}")
    n = len(frame)

    def col(name: str) -> np.ndarray:
        return _numbers(frame[name]) if name in frame.columns else np.full(n, np.nan)

    und_mid = 0.5 * (col("underlying_bid_1545") + col("underlying_ask_1545"))
    und_mid[(col("underlying_bid_1545") <= 0) | (col("underlying_ask_1545") <= 0)] = np.nan
    spot = _first_positive(col("active_underlying_price_1545"), und_mid, col("implied_underlying_price_1545"))
    kind = frame["option_type"].astype(str).str.strip().str.upper().str.slice(0, 1)
    symbols = frame["underlying_symbol"].astype(str).str.strip().str.lstrip("^").str.upper()
    out = pd.DataFrame({
        "root": frame["root"].astype(str).str.strip().str.upper(),
        "quote_date": _dates(frame["quote_date"]), "expiration": _dates(frame["expiration"]),
        "strike": col("strike"), "is_call": (kind == "C").to_numpy(),
        "bid": col("bid_1545"), "ask": col("ask_1545"), "spot": spot,
        "iv": col("implied_volatility_1545"), "delta": col("delta_1545"),
        "volume": col("trade_volume"), "open_interest": col("open_interest"),
    })
    out.loc[~kind.isin(["C", "P"]).to_numpy(), "strike"] = np.nan  # an unknown type makes the row unreadable
    return out, (symbols.iloc[0] if n else "")


def _optionsdx(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    import pandas as pd

    frame.columns = [_clean_header(c).upper() for c in frame.columns]
    missing = [c for c in _OPTIONSDX_REQUIRED if c not in frame.columns]
    if missing:
        raise ChainFormatError(f"OptionsDX columns missing: {', '.join(missing)}")
    n = len(frame)

    def col(name: str) -> np.ndarray:
        return _numbers(frame[name]) if name in frame.columns else np.full(n, np.nan)

    common = {"root": np.full(n, symbol, dtype=object), "quote_date": _dates(frame["QUOTE_DATE"]),
              "expiration": _dates(frame["EXPIRE_DATE"]), "strike": col("STRIKE"), "spot": col("UNDERLYING_LAST")}
    sides = []
    for prefix, is_call in (("C", True), ("P", False)):
        sides.append(pd.DataFrame({**common, "is_call": np.full(n, is_call), "bid": col(f"{prefix}_BID"),
                                   "ask": col(f"{prefix}_ASK"), "iv": col(f"{prefix}_IV"),
                                   "delta": col(f"{prefix}_DELTA"), "volume": col(f"{prefix}_VOLUME"),
                                   "open_interest": np.full(n, np.nan)}))
    return pd.concat(sides, ignore_index=True)[list(COLUMNS)]


def _native(frame: pd.DataFrame, symbol: str) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in _NATIVE_REQUIRED if c not in frame.columns]
    if missing:
        raise ChainFormatError(f"columns missing: {', '.join(missing)}")
    n = len(frame)

    def col(name: str) -> np.ndarray:
        return _numbers(frame[name]) if name in frame.columns else np.full(n, np.nan)

    underlying = symbol
    if not underlying and "underlying" in frame.columns and n:
        underlying = str(frame["underlying"].iloc[0]).strip().upper()
    root = frame["root"].astype(str).str.strip().str.upper() if "root" in frame.columns else \
        pd.Series(np.full(n, underlying, dtype=object))
    kind = frame["option_type"].astype(str).str.strip().str.upper().str.slice(0, 1)
    out = pd.DataFrame({
        "root": root.to_numpy(), "quote_date": _dates(frame["quote_date"]), "expiration": _dates(frame["expiration"]),
        "strike": col("strike"), "is_call": (kind == "C").to_numpy(), "bid": col("bid"), "ask": col("ask"),
        "spot": col("underlying_price"), "iv": col("iv"), "delta": col("delta"), "volume": col("volume"),
        "open_interest": col("open_interest"),
    })
    out.loc[~kind.isin(["C", "P"]).to_numpy(), "strike"] = np.nan
    return out, underlying


def read_chunks(path: str | Path, fmt: str = "auto", *, symbol: str | None = None,
                chunk_rows: int = 250_000) -> Iterator[Chunk]:
    """Stream ``path`` as normalised chunks. ``symbol`` names the underlying of files without one
    (OptionsDX always; the native layout without an ``underlying`` column)."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise ChainFormatError(f"{p}: file does not exist")
    if fmt not in FORMATS:
        raise ChainFormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if p.suffix.lower() in (".parquet", ".pq"):
        if fmt not in ("auto", "native"):
            raise ChainFormatError(f"{p}: {fmt} files are CSV; a Parquet file must be in the native layout")
        yield from _read_parquet(p, symbol or "")
        return
    kind = sniff_format(p) if fmt == "auto" else fmt
    sym = (symbol or "").strip().upper()
    if kind == "optionsdx" and not sym:
        raise ChainFormatError(f"{p}: OptionsDX files carry no symbol; pass --symbol")
    fh, size = _open_text(p)
    read = 0
    with fh:
        try:
            # text columns as text, the rest parsed as numbers by the C parser (a column holding garbage stays
            # text and is coerced per value, the garbage becoming NaN: an unreadable row)
            reader = pd.read_csv(fh, chunksize=chunk_rows, dtype=_TEXT_COLUMNS, skipinitialspace=True,
                                 keep_default_na=False, na_values=["", "NaN", "nan", "N/A"], on_bad_lines="error")
            for raw in reader:
                read += len(raw)
                if kind == "cboe":
                    frame, und = _cboe(raw)
                    und = sym or und
                elif kind == "optionsdx":
                    frame, und = _optionsdx(raw, sym), sym
                else:
                    frame, und = _native(raw, sym)
                if not und:
                    raise ChainFormatError("no underlying column; pass --symbol")
                frame["root"] = frame["root"].where(frame["root"].astype(str).str.len() > 0, und)
                yield Chunk(frame, und, read, _fraction(fh, size))
        except ChainFormatError as exc:
            raise ChainFormatError(f"{p}: {exc}") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ChainFormatError(f"{p}: cannot be parsed near row {read + 1} ({exc})") from None


def _fraction(fh: io.TextIOBase, size: int) -> float:
    try:
        buffer = getattr(fh, "buffer", None)
        pos = buffer.tell() if buffer is not None else fh.tell()
    except (OSError, ValueError, AttributeError):
        return float("nan")
    return min(1.0, pos / size) if size else 1.0


def _read_parquet(path: Path, symbol: str) -> Iterator[Chunk]:
    from engine.parquet_support import ParquetUnavailable, parquet_module

    try:
        pq = parquet_module(path)
    except ParquetUnavailable as exc:
        raise ChainFormatError(str(exc)) from None
    pf = pq.ParquetFile(path)
    total = max(pf.metadata.num_rows, 1)
    read = 0
    for batch in pf.iter_batches(batch_size=250_000):
        raw = batch.to_pandas().astype(str)
        read += len(raw)
        try:
            frame, und = _native(raw, symbol.upper())
        except ChainFormatError as exc:
            raise ChainFormatError(f"{path}: {exc}") from None
        if not und:
            raise ChainFormatError(f"{path}: no underlying column; pass --symbol")
        yield Chunk(frame, und, read, read / total)


ProgressCallback = Callable[[float], None]

__all__ = ["COLUMNS", "FORMATS", "ChainFormatError", "Chunk", "ProgressCallback", "read_chunks", "sniff_format"]
