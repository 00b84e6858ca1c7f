"""Backtest data: a whole history of daily option chains held column-wise, and how it is built.

:class:`ChainHistory` keeps every quote row of every day in flat numpy arrays sorted by
(quote date, expiry, strike, calls before puts), with ``offsets`` marking each day's slice. Contracts
are numbered once (``contract`` column → contract table), so OCC symbols are built once per contract,
not once per row, and a day's :class:`~engine.model.OptionChain` is a cheap slice.

Files in the common flat layout (one row per option per quote date, CSV or Parquet) are read and
written by :mod:`engine.backtest.chain_files`.

Conventions: dates are exchange-local calendar days (``datetime64[D]``); a quote date's snapshot time
is that day's 16:00 America/New_York close; prices are per unit (× ``multiplier`` for dollars).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import numpy as np

from engine.model import ExerciseStyle, OptionChain, Settlement
from engine.model.chain import datetime64_in
from engine.model.instruments import AM_SETTLEMENT_TIME, EQUITY_OPTION_EXPIRY_TIME, NEW_YORK

CLOSE_TIME = time(16, 0)


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
    #: earnings dates per underlying that a generated history carries (``engine.market.simulated.earnings.
    #: history_events`` reads them); None: not known here (slices and cached or imported histories)
    events: dict[str, list[date]] | None = field(default=None, repr=False)

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
        d = datetime64_in(day, "D")
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
            _symbols=self.symbols, _expires_at=self.expires_at,  # built once on the parent, shared
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
            _symbols=self.symbols, _expires_at=self.expires_at,  # built once on the parent, shared
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
    offs = np.array([_ny_noon_offset_s(d) for d in uniq.astype(object)], dtype=np.int64)
    return offs[inv].astype("timedelta64[s]")


def _ny_noon_offset_s(day: date) -> int:
    noon = datetime.combine(day, time(12), tzinfo=NEW_YORK)
    offset = noon.utcoffset()
    if offset is None:  # a zoneinfo-aware datetime always has one; say so rather than fail on None later
        raise ValueError(f"no UTC offset for New York at noon on {day}")
    return int(offset.total_seconds())


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
        quote_time=_joined_quote_times(parts),
    )


def _joined_quote_times(parts: Sequence[ChainHistory]) -> np.ndarray | None:
    """Every row's snapshot time across ``parts``, or None unless every part has intraday times."""
    times: list[np.ndarray] = []
    for p in parts:
        if p.times is None:
            return None
        times.append(np.repeat(p.times, np.diff(p.offsets)))
    return np.concatenate(times)
