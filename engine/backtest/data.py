"""Backtest data: a whole history of daily option chains held column-wise, and its loaders.

:class:`ChainHistory` keeps every quote row of every day in flat numpy arrays sorted by
(quote date, expiry, strike, calls before puts), with ``offsets`` marking each day's slice. Contracts
are numbered once (``contract`` column → contract table), so OCC symbols are built once per contract,
not once per row, and a day's :class:`~engine.model.OptionChain` is a cheap slice.

Loaders read the common flat layout (one row per option per quote date) from CSV or Parquet with a
column mapping. A bad file raises :class:`DataFileError` naming the file, the row (CSV: the line number,
header = line 1; Parquet: the 1-based data row) and the column.

Conventions: dates are exchange-local calendar days (``datetime64[D]``); a quote date's snapshot time
is that day's 16:00 America/New_York close; prices are per unit (× ``multiplier`` for dollars).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, time
from pathlib import Path

import numpy as np

from engine.model import ExerciseStyle, OptionChain, Settlement
from engine.model.instruments import AM_SETTLEMENT_TIME, EQUITY_OPTION_EXPIRY_TIME, NEW_YORK

CLOSE_TIME = time(16, 0)

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


@dataclass(eq=False)
class ChainHistory:
    """Daily option chains of one underlying over a period, column-wise (see module docstring)."""

    underlying: str
    dates: np.ndarray  # datetime64[D], n_days, ascending, unique
    spot: np.ndarray  # float64, n_days: underlying close per day
    offsets: np.ndarray  # int64, n_days + 1: rows of day i are offsets[i]:offsets[i+1]
    contract: np.ndarray  # int32 per row → contract table
    bid: np.ndarray
    ask: np.ndarray
    iv: np.ndarray  # vendor IV per row (NaN when absent)
    delta: np.ndarray  # vendor delta per row (NaN when absent)
    volume: np.ndarray
    open_interest: np.ndarray
    c_expiry: np.ndarray  # datetime64[D] per contract
    c_strike: np.ndarray  # float64 per contract
    c_is_call: np.ndarray  # bool per contract
    root: str = ""
    multiplier: int = 100
    style: ExerciseStyle = ExerciseStyle.AMERICAN
    settlement: Settlement = Settlement.PHYSICAL
    source: str = ""
    has_vendor_iv: bool = False
    has_vendor_delta: bool = False
    #: intraday histories: the exact UTC instant of each snapshot (``datetime64[s]``); None = daily closes
    times: np.ndarray | None = None
    _symbols: np.ndarray | None = field(default=None, repr=False)
    _expires_at: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root or self.underlying
        n_days = len(self.dates)
        if len(self.spot) != n_days or len(self.offsets) != n_days + 1:
            raise ValueError("ChainHistory: dates, spot and offsets disagree in length")
        if self.times is not None and len(self.times) != n_days:
            raise ValueError("ChainHistory: times and dates disagree in length")
        n = len(self.contract)
        for name in ("bid", "ask", "iv", "delta", "volume", "open_interest"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ChainHistory: column {name!r} has {len(getattr(self, name))} rows, expected {n}")

    # ---- size ---------------------------------------------------------------------------------------
    @property
    def n_days(self) -> int:
        return len(self.dates)

    @property
    def n_rows(self) -> int:
        return len(self.contract)

    def __len__(self) -> int:
        return self.n_days

    # ---- per row views (computed through the contract table) ----------------------------------------
    @property
    def expiry(self) -> np.ndarray:
        return self.c_expiry[self.contract]

    @property
    def strike(self) -> np.ndarray:
        return self.c_strike[self.contract]

    @property
    def is_call(self) -> np.ndarray:
        return self.c_is_call[self.contract]

    @property
    def symbols(self) -> np.ndarray:
        """Compact OCC symbol per contract (object array), built once, vectorized."""
        if self._symbols is None:
            self._symbols = occ_symbols(self.root, self.c_expiry, self.c_strike, self.c_is_call)
        return self._symbols

    @property
    def expires_at(self) -> np.ndarray:
        """Exact expiry instant per contract, ``datetime64[s]`` UTC (16:00 NY; 09:30 for AM-settled)."""
        if self._expires_at is None:
            t = AM_SETTLEMENT_TIME if self.settlement is Settlement.CASH_AM else EQUITY_OPTION_EXPIRY_TIME
            uniq, inv = np.unique(self.c_expiry, return_inverse=True)
            inst = np.array([_local_instant(d, t) for d in uniq.astype(object)], dtype="datetime64[s]")
            self._expires_at = inst[inv] if len(uniq) else np.array([], dtype="datetime64[s]")
        return self._expires_at

    def day_index(self, day: np.datetime64 | str) -> int:
        d = np.datetime64(day, "D")
        i = int(np.searchsorted(self.dates, d))
        if i >= self.n_days or self.dates[i] != d:
            raise KeyError(f"{day} is not a quote date of this history")
        return i

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def intraday(self) -> bool:
        return self.times is not None

    def session_end(self, i: int) -> bool:
        """True when snapshot ``i`` is its session's last (always, for daily histories)."""
        return self.times is None or i == self.n_days - 1 or self.dates[i + 1] != self.dates[i]

    def session_ends(self) -> np.ndarray:
        """Indices of each session's last snapshot (every index for daily histories)."""
        if self.times is None:
            return np.arange(self.n_days)
        return np.flatnonzero(np.r_[self.dates[1:] != self.dates[:-1], True]) if self.n_days else np.array([], int)

    def timestamp(self, i: int) -> datetime:
        """The snapshot time of ``i``: its instant for intraday histories, else its day's 16:00 New York close (UTC)."""
        if self.times is not None:
            return self.times[i].astype("datetime64[us]").astype(object).replace(tzinfo=UTC)
        return _local_instant(self.dates[i].astype(object), CLOSE_TIME).astype(object).replace(tzinfo=UTC)

    def chain(self, i: int) -> OptionChain:
        """Day ``i`` as an :class:`OptionChain` (rows already in the chain's canonical order)."""
        sl = self.rows(i)
        cid = self.contract[sl]
        vendor: dict[str, np.ndarray] = {}
        if self.has_vendor_iv:
            vendor["vendor_iv"] = self.iv[sl]
        if self.has_vendor_delta:
            vendor["vendor_delta"] = self.delta[sl]
        n = len(cid)
        nan = np.full(n, np.nan)
        return OptionChain(
            underlying=self.underlying,
            spot=float(self.spot[i]),
            ts=self.timestamp(i),
            symbol=self.symbols[cid],
            expiry=self.expires_at[cid],
            strike=self.c_strike[cid],
            is_call=self.c_is_call[cid],
            bid=self.bid[sl],
            ask=self.ask[sl],
            bid_size=np.zeros(n),
            ask_size=np.zeros(n),
            last=nan,
            volume=self.volume[sl],
            open_interest=self.open_interest[sl],
            multiplier=self.multiplier,
            style=self.style,
            settlement=self.settlement,
            root=self.root,
            vendor=vendor,
        )

    def slice_days(self, start: int, stop: int) -> ChainHistory:
        """Days ``start:stop`` as a new history sharing the contract table (walk-forward windows)."""
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return ChainHistory(
            underlying=self.underlying, dates=self.dates[start:stop], spot=self.spot[start:stop],
            offsets=self.offsets[start:stop + 1] - lo, contract=self.contract[lo:hi], bid=self.bid[lo:hi],
            ask=self.ask[lo:hi], iv=self.iv[lo:hi], delta=self.delta[lo:hi], volume=self.volume[lo:hi],
            open_interest=self.open_interest[lo:hi], c_expiry=self.c_expiry, c_strike=self.c_strike,
            c_is_call=self.c_is_call, root=self.root, multiplier=self.multiplier, style=self.style,
            settlement=self.settlement, source=self.source, has_vendor_iv=self.has_vendor_iv,
            has_vendor_delta=self.has_vendor_delta, times=None if self.times is None else self.times[start:stop],
            _symbols=self._symbols, _expires_at=self._expires_at,
        )

    def select(self, snapshots: np.ndarray) -> ChainHistory:
        """Only the given snapshots (ascending indices), e.g. each session's close of an intraday history.
        The result is a daily history when it keeps at most one snapshot per date."""
        idx = np.asarray(snapshots, dtype=np.int64)
        counts = np.diff(self.offsets)[idx]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else \
            np.array([], np.int64)
        dates = self.dates[idx]
        one_per_day = len(dates) < 2 or bool(np.all(dates[1:] != dates[:-1]))
        return ChainHistory(
            underlying=self.underlying, dates=dates, spot=self.spot[idx],
            offsets=np.r_[0, np.cumsum(counts)].astype(np.int64), contract=self.contract[rows], bid=self.bid[rows],
            ask=self.ask[rows], iv=self.iv[rows], delta=self.delta[rows], volume=self.volume[rows],
            open_interest=self.open_interest[rows], c_expiry=self.c_expiry, c_strike=self.c_strike,
            c_is_call=self.c_is_call, root=self.root, multiplier=self.multiplier, style=self.style,
            settlement=self.settlement, source=self.source, has_vendor_iv=self.has_vendor_iv,
            has_vendor_delta=self.has_vendor_delta,
            times=None if self.times is None or one_per_day else self.times[idx],
            _symbols=self._symbols, _expires_at=self._expires_at,
        )

    # ---- conversions ---------------------------------------------------------------------------------
    def to_frame(self):  # -> pandas.DataFrame
        """The flat layout (canonical column names), e.g. to write CSV/Parquet fixtures."""
        import pandas as pd

        day_of_row = np.repeat(np.arange(self.n_days), np.diff(self.offsets))
        cols = {
            "underlying": np.full(self.n_rows, self.underlying, dtype=object),
            "quote_date": self.dates[day_of_row] if self.times is None else _to_new_york(self.times)[day_of_row],
            "expiration": self.expiry,
            "strike": self.strike,
            "option_type": np.where(self.is_call, "C", "P"),
            "bid": self.bid,
            "ask": self.ask,
            "underlying_price": self.spot[day_of_row],
            "volume": self.volume,
            "open_interest": self.open_interest,
        }
        if self.has_vendor_iv:
            cols["iv"] = self.iv
        if self.has_vendor_delta:
            cols["delta"] = self.delta
        return pd.DataFrame(cols)


def _ny_offsets(days: np.ndarray) -> np.ndarray:
    """New York's UTC offset (timedelta64[s]) at noon of each calendar day (DST changes at 02:00)."""
    uniq, inv = np.unique(np.asarray(days).astype("datetime64[D]"), return_inverse=True)
    offs = np.array([int(datetime.combine(d, time(12), tzinfo=NEW_YORK).utcoffset().total_seconds())
                     for d in uniq.astype(object)], dtype=np.int64)
    return offs[inv].astype("timedelta64[s]")


def _to_new_york(utc: np.ndarray) -> np.ndarray:
    """UTC instants → naive New York local times (``datetime64[s]``), vectorized."""
    u = np.asarray(utc).astype("datetime64[s]")
    return u + _ny_offsets((u - np.timedelta64(5, "h")).astype("datetime64[D]"))


def _from_new_york(local: np.ndarray) -> np.ndarray:
    """Naive New York local times → UTC instants (``datetime64[s]``), vectorized."""
    loc = np.asarray(local).astype("datetime64[s]")
    return loc - _ny_offsets(loc.astype("datetime64[D]"))


def _local_instant(day, t: time) -> np.datetime64:
    """``day`` at New York local time ``t`` as a naive-UTC ``datetime64[s]``."""
    dt = datetime.combine(day, t, tzinfo=NEW_YORK).astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(dt, "s")


def occ_symbols(root: str, expiry: np.ndarray, strike: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    """Compact OCC symbols (``SPY260619P00600000``) for arrays of contracts.

    String work is done once per distinct expiry; the per-contract step is one f-string.
    """
    n = len(expiry)
    if n == 0:
        return np.array([], dtype=object)
    days, inv = np.unique(np.asarray(expiry).astype("datetime64[D]"), return_inverse=True)
    prefix = [f"{root}{d:%y%m%d}" for d in days.astype(object)]
    milli = np.round(np.asarray(strike, float) * 1000).astype(np.int64).tolist()
    right = np.where(is_call, "C", "P").tolist()
    out = np.empty(n, dtype=object)
    out[:] = [f"{prefix[e]}{r}{k:08d}" for e, r, k in zip(inv.ravel().tolist(), right, milli, strict=True)]
    return out


# ---- building a history from canonical arrays ---------------------------------------------------------
def build_history(
    underlying: str,
    quote_date: np.ndarray,
    expiration: np.ndarray,
    strike: np.ndarray,
    is_call: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    *,
    spot_by_row: np.ndarray | None = None,
    spot_dates: np.ndarray | None = None,
    spot_values: np.ndarray | None = None,
    iv: np.ndarray | None = None,
    delta: np.ndarray | None = None,
    volume: np.ndarray | None = None,
    open_interest: np.ndarray | None = None,
    multiplier: int = 100,
    style: ExerciseStyle = ExerciseStyle.AMERICAN,
    settlement: Settlement = Settlement.PHYSICAL,
    root: str = "",
    source: str = "",
    quote_time: np.ndarray | None = None,
) -> ChainHistory:
    """Sort rows, number contracts and attach one spot per snapshot (from ``spot_by_row`` or daily bars).

    Daily histories have one snapshot per ``quote_date``; with ``quote_time`` (the UTC instant of each
    row's snapshot, ``datetime64``) several snapshots per day form an intraday history.
    Raises ``ValueError`` when a snapshot has no underlying price or a contract appears twice in one.
    """
    n = len(quote_date)
    qd = np.asarray(quote_date).astype("datetime64[D]")
    qt = None if quote_time is None else np.asarray(quote_time).astype("datetime64[s]")
    ex = np.asarray(expiration).astype("datetime64[D]")
    k = np.asarray(strike, float)
    c = np.asarray(is_call, bool)
    milli = np.round(k * 1000).astype(np.int64)
    key = (ex.astype(np.int64) << 40) | (milli << 1) | (~c).astype(np.int64)
    qi = qd.astype(np.int64) if qt is None else qt.astype(np.int64)
    if n > 1:
        dq, dk = np.diff(qi), np.diff(key)
        in_order = bool(np.all((dq > 0) | ((dq == 0) & (dk > 0))))
    else:
        in_order = True
    order: np.ndarray | slice = slice(None) if in_order else np.lexsort((key, qi))
    if not in_order:
        qd, qi, key = qd[order], qi[order], key[order]
        if qt is not None:
            qt = qt[order]
    if n > 1:
        dup = (qi[1:] == qi[:-1]) & (key[1:] == key[:-1])
        if dup.any():
            j = int(np.argmax(dup)) + 1
            raise ValueError(
                f"contract {ex[order][j]} {k[order][j]:g} {'C' if c[order][j] else 'P'} appears twice on {qd[j] if qt is None else qt[j]}"
            )
    # contract ids ascending in (expiry, strike, call first), so each day's ids are sorted too
    import pandas as pd

    codes, uniq = pd.factorize(key, sort=False)
    rank = np.empty(len(uniq), np.int64)
    by_key = np.argsort(uniq, kind="stable")
    rank[by_key] = np.arange(len(uniq))
    inv = rank[codes]
    first = np.empty(len(uniq), np.int64)
    first[inv[::-1]] = np.arange(n - 1, -1, -1)
    day_start = np.r_[0, np.flatnonzero(np.diff(qi)) + 1] if n else np.array([], np.int64)
    dates = qd[day_start]
    offsets = np.append(day_start, n).astype(np.int64)

    def col(a: np.ndarray | None, default: float) -> np.ndarray:
        return np.full(n, default) if a is None else np.asarray(a, float)[order]

    if spot_by_row is not None:
        spot = np.asarray(spot_by_row, float)[order][day_start] if n else np.array([], float)
        if spot_dates is not None and spot_values is not None:
            fill = ~np.isfinite(spot)
            if fill.any():
                spot[fill] = _spot_from_bars(dates[fill], spot_dates, spot_values)
    elif spot_dates is not None and spot_values is not None:
        spot = _spot_from_bars(dates, spot_dates, spot_values)
    else:
        raise ValueError("no underlying price: give an underlying_price column or underlying bars")
    bad = ~(np.isfinite(spot) & (spot > 0))
    if bad.any():
        raise ValueError(f"no underlying price for quote date {dates[np.argmax(bad)]}")
    src_ex = ex[order][first]
    src_k = k[order][first]
    src_c = c[order][first]
    return ChainHistory(
        underlying=underlying, dates=dates, spot=spot, offsets=offsets, contract=inv.astype(np.int32).ravel(),
        bid=col(bid, np.nan), ask=col(ask, np.nan), iv=col(iv, np.nan), delta=col(delta, np.nan),
        volume=col(volume, 0.0), open_interest=col(open_interest, 0.0), c_expiry=src_ex, c_strike=src_k,
        c_is_call=src_c, root=root or underlying, multiplier=multiplier, style=style, settlement=settlement,
        source=source, has_vendor_iv=iv is not None, has_vendor_delta=delta is not None,
        times=None if qt is None else qt[day_start],
    )


def _spot_from_bars(dates: np.ndarray, bar_dates: np.ndarray, closes: np.ndarray) -> np.ndarray:
    bd = np.asarray(bar_dates).astype("datetime64[D]")
    order = np.argsort(bd)
    bd, cl = bd[order], np.asarray(closes, float)[order]
    i = np.clip(np.searchsorted(bd, dates), 0, max(len(bd) - 1, 0))
    out = np.full(len(dates), np.nan)
    if len(bd):
        hit = bd[i] == dates
        out[hit] = cl[i][hit]
    return out


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
            except Exception:
                # the pyarrow parser gives terse errors; the C parser names the line
                frame = pd.read_csv(path, engine="c", low_memory=False)
            _check_last_row(path, len(frame.columns), len(frame))
            return _Table({str(c): frame[c] for c in frame.columns}), 2
    except DataFileError:
        raise
    except Exception as exc:
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


def concat_histories(parts: Sequence[ChainHistory]) -> ChainHistory:
    """Join histories of one underlying (e.g. one file per year) into one."""
    if not parts:
        raise ValueError("no histories to join")
    names = {p.underlying for p in parts}
    if len(names) > 1:
        raise ValueError(f"cannot join histories of different underlyings: {sorted(names)}")
    qd = np.concatenate([np.repeat(p.dates, np.diff(p.offsets)) for p in parts])
    spot = np.concatenate([np.repeat(p.spot, np.diff(p.offsets)) for p in parts])
    first = parts[0]
    return build_history(
        first.underlying, qd, np.concatenate([p.expiry for p in parts]), np.concatenate([p.strike for p in parts]),
        np.concatenate([p.is_call for p in parts]), np.concatenate([p.bid for p in parts]),
        np.concatenate([p.ask for p in parts]), spot_by_row=spot,
        iv=np.concatenate([p.iv for p in parts]) if all(p.has_vendor_iv for p in parts) else None,
        delta=np.concatenate([p.delta for p in parts]) if all(p.has_vendor_delta for p in parts) else None,
        volume=np.concatenate([p.volume for p in parts]), open_interest=np.concatenate([p.open_interest for p in parts]),
        multiplier=first.multiplier, style=first.style, settlement=first.settlement, root=first.root,
        source=";".join(p.source for p in parts),
        quote_time=np.concatenate([np.repeat(p.times, np.diff(p.offsets)) for p in parts])
        if all(p.times is not None for p in parts) else None,
    )


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
