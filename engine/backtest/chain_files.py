"""Reading and writing chain files: the flat CSV/Parquet layout of one row per option per quote date.

Split from :mod:`engine.backtest.data` so the columnar :class:`~engine.backtest.data.ChainHistory` and the
array-level :func:`~engine.backtest.data.build_history` (used by the simulated market, the chain store and
the tests without any file) stay apart from vendor-file parsing, which pulls in pandas and pyarrow.

Loaders read the flat layout from CSV or Parquet with a column mapping. A bad file raises
:class:`DataFileError` naming the file, the row (CSV: the line number, header = line 1; Parquet: the
1-based data row) and the column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from engine.backtest.data import ChainHistory, _from_new_york, _to_new_york, build_history, concat_histories
from engine.model import ExerciseStyle, Settlement
from engine.model.instruments import NEW_YORK

REQUIRED = ("quote_date", "expiration", "strike", "option_type", "bid", "ask")
OPTIONAL_FLOAT = ("underlying_price", "iv", "delta", "volume", "open_interest")


class DataFileError(ValueError):
    """A data file could not be used. ``path``, ``row`` and ``column`` say where (row None = whole file)."""

    def __init__(self, path: str | Path, message: str, *, row: int | None = None, column: str | None = None):
        self.path = str(path)
        self.row = row
        self.column = column
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Names of the source columns for each canonical field (the flat layout's names by default).

    ``date_format`` is a ``strptime`` format for both date columns (default: ISO 8601). Optional
    columns that are absent from the file are simply not used.
    """

    underlying: str = "underlying"
    quote_date: str = "quote_date"
    expiration: str = "expiration"
    strike: str = "strike"
    option_type: str = "option_type"
    bid: str = "bid"
    ask: str = "ask"
    underlying_price: str = "underlying_price"
    iv: str = "iv"
    delta: str = "delta"
    volume: str = "volume"
    open_interest: str = "open_interest"
    date_format: str | None = None

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> ColumnMapping:
        """Build from ``field=source_column`` strings (the CLI's ``--map``); unknown fields raise ValueError."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, str] = {}
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"column mapping {pair!r} must look like field=column")
            key, value = (s.strip() for s in pair.split("=", 1))
            if key not in known:
                raise ValueError(f"column mapping: unknown field {key!r} (known: {', '.join(sorted(known))})")
            kwargs[key] = value
        return cls(**kwargs)


# ---- file loaders -------------------------------------------------------------------------------------
def _read_table(path: Path, columns: Sequence[str] | None = None, categorical: Sequence[str] = ()):
    """Read CSV/Parquet into pandas; returns (frame, offset to turn a 0-based index into the file's row).

    Parquet: only ``columns`` (those present) are read, and ``categorical`` string columns come back as
    pandas categoricals (dictionary-decoded once, not per row).
    """
    import pandas as pd

    if not path.exists():
        raise DataFileError(path, "file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            from engine.parquet_support import ParquetUnavailable, parquet_module

            try:
                pq = parquet_module()
            except ParquetUnavailable as exc:
                raise DataFileError(path, str(exc)) from None
            names = pq.read_schema(path).names
            cols = [c for c in names if columns is None or c in columns]
            table = pq.read_table(path, columns=cols, read_dictionary=[c for c in categorical if c in cols])
            return _Table({c: _arrow_column(table.column(c)) for c in cols}), 1
        if suffix in (".csv", ".txt") or path.name.lower().endswith(".csv.gz"):
            try:
                frame = pd.read_csv(path, engine="pyarrow")
            except Exception:  # the pyarrow engine fails with its own error types; the C parser then names the line
                # the pyarrow parser gives terse errors; the C parser names the line
                frame = pd.read_csv(path, engine="c", low_memory=False)
            _check_last_row(path, len(frame.columns), len(frame))
            return _Table({str(c): frame[c] for c in frame.columns}), 2
    except DataFileError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types on a damaged file: each becomes a DataFileError naming it
        raise DataFileError(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    raise DataFileError(path, f"unsupported file type {suffix!r} (use .csv or .parquet)")


def _check_last_row(path: Path, n_columns: int, n_rows: int) -> None:
    """A file cut mid-row (an interrupted download or copy) ends in a row with fewer fields than the header;
    pandas would fill them with NaN and the run would quietly trade on a made-up last day."""
    import csv
    import io

    if path.name.lower().endswith(".gz") or n_rows == 0:
        return
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read().decode("utf-8", errors="replace")
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return
    fields = next(csv.reader(io.StringIO(lines[-1])), [])
    if len(fields) < n_columns:
        header = next(csv.reader(io.StringIO(path.open(encoding="utf-8", errors="replace").readline())), [])
        missing = header[len(fields)] if len(fields) < len(header) else f"column {len(fields) + 1}"
        raise DataFileError(path, f"the last row has {len(fields)} of {n_columns} fields: the file is cut short "
                                  f"(truncated mid-row)", row=n_rows + 1, column=missing)


class _Table:
    """Columns by name (numpy arrays or pandas Series) with the few frame operations the loader needs."""

    def __init__(self, cols: dict) -> None:
        self.cols = cols
        self.attrs: dict = {}

    @property
    def columns(self) -> list[str]:
        return list(self.cols)

    def __getitem__(self, name: str):
        return self.cols[name]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def take(self, mask: np.ndarray) -> _Table:
        out = {}
        for k, v in self.cols.items():
            out[k] = v[mask] if isinstance(v, np.ndarray) else v[mask].reset_index(drop=True)
        return _Table(out)


def _arrow_column(col):
    """A pyarrow column as numpy (numbers, timestamps; nulls → NaN/NaT) or a categorical Series (strings)."""
    import pandas as pd
    import pyarrow as pa

    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    t = arr.type
    if pa.types.is_dictionary(t):
        codes = arr.indices.to_numpy(zero_copy_only=False)
        if arr.null_count:
            codes = np.where(arr.is_null().to_numpy(zero_copy_only=False), -1, codes)
        cats = arr.dictionary.to_pylist()
        return pd.Series(pd.Categorical.from_codes(codes.astype(np.int64), categories=pd.Index(cats).astype(str)))
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        out = arr.to_numpy(zero_copy_only=False)
        return out.astype(float) if arr.null_count else out
    if pa.types.is_timestamp(t) and t.tz is not None:
        # a zoned column stays zoned (a pandas Series): the reader converts it from its zone to UTC; cast
        # to naive it would be read as New York local time and shifted (14:45Z read as 19:45Z)
        return arr.to_pandas()
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return arr.to_numpy(zero_copy_only=False)
    return arr.to_pandas()


def _first_bad(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _numeric(frame, path: Path, column: str, offset: int, *, required: bool) -> np.ndarray:
    import pandas as pd

    raw = frame[column]
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "fiub":
        values = raw.astype(float, copy=False)
        if required and np.isnan(values).any():
            raise DataFileError(path, "value is missing", row=_first_bad(np.isnan(values)) + offset, column=column)
        return values
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    present = raw.notna().to_numpy()
    if raw.dtype == object or str(raw.dtype).startswith(("string", "str")):
        stripped = raw.astype("string").str.strip()
        present = (stripped.notna() & (stripped != "")).to_numpy(dtype=bool, na_value=False)
    bad = present & ~np.isfinite(values)
    if bad.any():
        i = _first_bad(bad)
        raise DataFileError(path, f"{raw.iloc[i]!r} is not a number", row=i + offset, column=column)
    if required and (~present).any():
        i = _first_bad(~present)
        raise DataFileError(path, "value is missing", row=i + offset, column=column)
    return values


def _parse_datetimes(frame, path: Path, column: str, offset: int, fmt: str | None) -> tuple[np.ndarray, bool]:
    """(naive ``datetime64[s]`` values, whether the source carried a time zone — then they are UTC)."""
    import pandas as pd

    raw = frame[column]
    if isinstance(raw, np.ndarray) and raw.dtype.kind == "M":
        nat = np.isnat(raw)
        if nat.any():
            raise DataFileError(path, "date is missing", row=_first_bad(nat) + offset, column=column)
        return raw.astype("datetime64[s]"), False
    if isinstance(raw, np.ndarray):
        raw = pd.Series(raw)
    if raw.isna().any():
        i = _first_bad(raw.isna().to_numpy())
        raise DataFileError(path, "date is missing", row=i + offset, column=column)
    import pandas.api.types as ptypes

    if ptypes.is_datetime64_any_dtype(raw.dtype):
        parsed = raw
    else:
        text = raw.astype(str).str.strip()
        zoned = text.str.contains(_ZONE_SUFFIX, regex=True).to_numpy()
        if zoned.any() and not zoned.all():
            i = _first_bad(zoned != zoned[0])
            raise DataFileError(path, f"{raw.iloc[i]!r} {'has' if zoned[i] else 'has no'} time zone, unlike row "
                                      f"{offset} ({raw.iloc[0]!r}): one column must be all zoned or all local",
                                row=i + offset, column=column)
        parsed = pd.to_datetime(text, errors="coerce", format=fmt or "ISO8601", utc=bool(zoned.any()))
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = _first_bad(bad)
        want = fmt or "YYYY-MM-DD"
        raise DataFileError(path, f"{raw.iloc[i]!r} is not a date ({want})", row=i + offset, column=column)
    aware = getattr(parsed.dt, "tz", None) is not None
    if aware:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy().astype("datetime64[s]"), aware


#: a time of day followed by an ISO zone designator (Z, +hh:mm, -hhmm, +hh); a bare date never matches
_ZONE_SUFFIX = r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"


def _dates(frame, path: Path, column: str, offset: int, fmt: str | None) -> np.ndarray:
    return _parse_datetimes(frame, path, column, offset, fmt)[0].astype("datetime64[D]")


def _has_times(raw) -> bool:
    """True when a date column carries times of day (intraday snapshots)."""
    import pandas as pd
    import pandas.api.types as ptypes

    try:
        if isinstance(raw, np.ndarray) and raw.dtype.kind == "M":
            values = raw
        else:
            series = raw if isinstance(raw, pd.Series) else pd.Series(raw)
            if not ptypes.is_datetime64_any_dtype(series.dtype):
                text = series.astype(str).str.strip()
                zoned = bool(text.str.contains(_ZONE_SUFFIX, regex=True).any())
                series = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=zoned)
            if getattr(series.dt, "tz", None) is not None:  # zoned: times of day in New York
                series = series.dt.tz_convert(NEW_YORK).dt.tz_localize(None)
            values = series.to_numpy().astype("datetime64[s]")
        v = values[~np.isnat(values)]
        return bool(len(v)) and bool((v != v.astype("datetime64[D]")).any())
    except (ValueError, TypeError):
        return False


def _codes(series) -> tuple[np.ndarray, list[str]]:
    """(integer code per row, −1 for missing; normalised text per code): string work once per distinct value."""
    import pandas as pd

    cat = series if isinstance(series.dtype, pd.CategoricalDtype) else series.astype("category")
    labels = [str(c).strip().upper() for c in cat.cat.categories]
    return cat.cat.codes.to_numpy(), labels


def _rights(frame, path: Path, column: str, offset: int) -> np.ndarray:
    codes, labels = _codes(frame[column])
    call_of = np.array([lab in ("C", "CALL", "CALLS") for lab in labels] + [False])
    put_of = np.array([lab in ("P", "PUT", "PUTS") for lab in labels] + [False])
    is_call, is_put = call_of[codes], put_of[codes]  # code −1 (missing) takes the last entry: False
    bad = ~(is_call | is_put)
    if bad.any():
        i = _first_bad(bad)
        raise DataFileError(path, f"{frame[column].iloc[i]!r} is not an option type (C/P/call/put)", row=i + offset,
                            column=column)
    return is_call


def load_chain_file(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    underlying: str | None = None,
    bars: tuple[np.ndarray, np.ndarray] | None = None,
    multiplier: int = 100,
    style: ExerciseStyle = ExerciseStyle.AMERICAN,
    settlement: Settlement = Settlement.PHYSICAL,
) -> ChainHistory:
    """Load a flat chain file (CSV or Parquet) into a :class:`ChainHistory`.

    ``underlying`` selects one symbol when the file holds several (required then). ``bars`` =
    (dates, closes) fills the spot where the file has no ``underlying_price``. Quotes: an empty bid/ask
    is a missing quote (NaN); a negative price, a non-positive strike or an expiration before the quote
    date is an error naming the row.
    """
    path = Path(path)
    m = mapping or ColumnMapping()
    wanted = [getattr(m, f.name) for f in fields(ColumnMapping) if f.name != "date_format"]
    frame, offset = _read_table(path, wanted, (m.underlying, m.option_type))
    cols = set(frame.columns)
    for name in REQUIRED:
        src = getattr(m, name)
        if src not in cols:
            raise DataFileError(path, f"required column {src!r} (for {name}) is missing; columns are "
                                      f"{', '.join(map(str, frame.columns))}", column=src)
    if m.underlying in cols:
        codes, labels = _codes(frame[m.underlying])
        if (codes < 0).any():
            raise DataFileError(path, "underlying is missing", row=_first_bad(codes < 0) + offset, column=m.underlying)
        used = np.unique(codes)
        present = sorted({labels[c] for c in used})
        if underlying is None:
            if len(present) > 1:
                raise DataFileError(path, f"holds several underlyings ({', '.join(present[:10])}); choose one",
                                    column=m.underlying)
            underlying = present[0] if present else "UNKNOWN"
        else:
            keep = np.array([lab == underlying.upper() for lab in labels] + [False])[codes]
            if not keep.any():
                raise DataFileError(path, f"has no rows for {underlying!r} (has {', '.join(present[:10])})",
                                    column=m.underlying)
            if not keep.all():
                offset_index = np.nonzero(keep)[0]
                frame = frame.take(keep)
                frame.attrs["source_rows"] = offset_index
    if underlying is None:
        raise DataFileError(path, f"no {m.underlying!r} column: pass the underlying symbol")
    if len(frame) == 0:
        raise DataFileError(path, "has no data rows")
    source_rows = frame.attrs.get("source_rows")

    def fail_at(exc: DataFileError) -> DataFileError:
        if source_rows is not None and exc.row is not None:
            return DataFileError(path, str(exc).split(": ", 1)[1], row=int(source_rows[exc.row - offset]) + offset,
                                 column=exc.column)
        return exc

    try:
        quote_time = None
        if _has_times(frame[m.quote_date]):  # intraday snapshots: naive times are New York local
            stamps, aware = _parse_datetimes(frame, path, m.quote_date, offset, m.date_format)
            quote_time = stamps if aware else _from_new_york(stamps)
            qd = _to_new_york(quote_time).astype("datetime64[D]")
        else:
            qd = _dates(frame, path, m.quote_date, offset, m.date_format)
        ex = _dates(frame, path, m.expiration, offset, m.date_format)
        strike = _numeric(frame, path, m.strike, offset, required=True)
        is_call = _rights(frame, path, m.option_type, offset)
        bid = _numeric(frame, path, m.bid, offset, required=False)
        ask = _numeric(frame, path, m.ask, offset, required=False)
        extra = {name: _numeric(frame, path, getattr(m, name), offset, required=False)
                 for name in OPTIONAL_FLOAT if getattr(m, name) in cols}
        for name, values, test, msg in (
            (m.strike, strike, strike <= 0, "strike must be positive"),
            (m.bid, bid, bid < 0, "bid is negative"),
            (m.ask, ask, ask < 0, "ask is negative"),
            (m.bid, bid, bid > ask, "bid is above the ask (a crossed quote)"),
            (m.expiration, ex, ex < qd, "expiration is before the quote date"),
        ):
            with np.errstate(invalid="ignore"):
                bad = np.asarray(test, bool)
            if bad.any():
                i = _first_bad(bad)
                shown = f"{values[i]} > {ask[i]}" if values is bid and name == m.bid and bid[i] > ask[i] else values[i]
                raise DataFileError(path, f"{msg} ({shown})", row=i + offset, column=name)
    except DataFileError as exc:
        raise fail_at(exc) from None
    spot_rows = extra.pop("underlying_price", None)
    try:
        return build_history(
            underlying.upper(), qd, ex, strike, is_call, bid, ask, spot_by_row=spot_rows,
            spot_dates=bars[0] if bars else None, spot_values=bars[1] if bars else None,
            iv=extra.get("iv"), delta=extra.get("delta"), volume=extra.get("volume"),
            open_interest=extra.get("open_interest"), multiplier=multiplier, style=style,
            settlement=settlement, source=str(path), quote_time=quote_time,
        )
    except ValueError as exc:
        raise DataFileError(path, str(exc)) from None


def load_chains(
    paths: str | Path | Sequence[str | Path],
    mapping: ColumnMapping | None = None,
    *,
    underlying: str | None = None,
    bars_path: str | Path | None = None,
    **kwargs,
) -> ChainHistory:
    """Load one file, several files, or every ``*.csv``/``*.parquet`` in a directory, as one history."""
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        if p.is_dir():
            files = sorted([*p.glob("*.parquet"), *p.glob("*.csv")])
            if not files:
                raise DataFileError(p, "directory holds no .csv or .parquet files")
        else:
            files = [p]
    else:
        files = [Path(x) for x in paths]
    bars = None
    if bars_path is not None:
        b = load_underlying_bars(bars_path)
        bars = (b["date"], b["close"])
    if len(files) == 1:
        return load_chain_file(files[0], mapping, underlying=underlying, bars=bars, **kwargs)
    parts = [load_chain_file(f, mapping, underlying=underlying, bars=bars, **kwargs) for f in files]
    return concat_histories(parts)


def load_underlying_bars(path: str | Path, *, date_column: str = "date", close_column: str = "close",
                         date_format: str | None = None) -> dict[str, np.ndarray]:
    """Daily bars from CSV/Parquet: returns ``date`` (datetime64[D]) and ``close`` plus open/high/low if present.

    Bad files raise :class:`DataFileError` naming the row and column.
    """
    path = Path(path)
    frame, offset = _read_table(path)
    cols = {str(c).lower(): c for c in frame.columns}
    for want in (date_column, close_column):
        if want.lower() not in cols:
            raise DataFileError(path, f"required column {want!r} is missing; columns are "
                                      f"{', '.join(map(str, frame.columns))}", column=want)
    frame = _Table({k: frame[v] for k, v in cols.items()})
    out = {"date": _dates(frame, path, date_column.lower(), offset, date_format)}
    for name in ("open", "high", "low", close_column.lower()):
        if name in frame.columns:
            values = _numeric(frame, path, name, offset, required=name == close_column.lower())
            bad = values <= 0
            if bad.any():
                i = _first_bad(bad)
                raise DataFileError(path, f"price must be positive ({values[i]})", row=i + offset, column=name)
            out["close" if name == close_column.lower() else name] = values
    d = out["date"]
    if len(d) > 1:
        order = np.argsort(d, kind="stable")
        same = d[order][1:] == d[order][:-1]
        if same.any():
            j = _first_bad(same)
            first, again = int(order[j]), int(order[j + 1])
            raise DataFileError(path, f"date {d[again]} appears twice (rows {first + offset} and {again + offset})",
                                row=again + offset, column=date_column)
    return out


def write_history(history: ChainHistory, path: str | Path) -> Path:
    """Write a history in the flat layout (``.parquet`` or ``.csv`` by suffix)."""
    path = Path(path)
    frame = history.to_frame()
    for name in ("underlying", "option_type"):
        frame[name] = frame[name].astype("category")  # stored dictionary-encoded: fast to read back
    if path.suffix.lower() in (".parquet", ".pq"):
        from engine.parquet_support import parquet_module

        parquet_module(path)  # a clear refusal in a build without pyarrow
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, date_format="%Y-%m-%d")
    return path
