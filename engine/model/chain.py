"""Option chains stored column-wise: one numpy array per field, one row per contract.

Rows are sorted by (expiry, strike, right) with calls before puts. Expiries are exact expiry
instants as ``datetime64[s]`` in UTC (see :attr:`engine.model.instruments.Option.expires_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np

from engine.model.instruments import AM_SETTLEMENT_TIME, NEW_YORK, ExerciseStyle, Option, Settlement

_FLOAT_COLUMNS = ("bid", "ask", "bid_size", "ask_size", "last", "volume", "open_interest")
_OPTIONAL_FLOAT_COLUMNS = ("vendor_iv", "vendor_delta", "vendor_gamma", "vendor_theta", "vendor_vega")


def _as_dt64(values: Sequence[datetime] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        return values.astype("datetime64[s]")
    return np.array(
        [np.datetime64(v.astimezone(UTC).replace(tzinfo=None), "s") for v in values], dtype="datetime64[s]"
    )


def datetime64_in(value: np.datetime64 | date | str, unit: Literal["D", "s"]) -> np.datetime64:
    """``value`` as a datetime64 in ``unit`` ("D", "s"), truncated like ``np.datetime64(value, unit)``.

    numpy accepts ``np.datetime64(a_datetime64, unit)`` but its type stubs have no such constructor; the
    ``astype`` cast is the same conversion (floor to the unit, NaT kept) in a form the checker accepts.
    """
    if isinstance(value, np.datetime64):
        converted: np.datetime64 = value.astype(f"datetime64[{unit}]")
        return converted
    return np.datetime64(value, unit)


@dataclass(frozen=True, eq=False)
class OptionChain:
    """A snapshot of an underlying's options.

    Arrays share one length; ``symbol`` holds compact OCC symbols. Quotes may be NaN (missing) or
    crossed; use :meth:`valid_mask` to filter. ``spot`` is the underlying's price at ``ts``.
    """

    underlying: str
    spot: float
    ts: datetime
    symbol: np.ndarray
    expiry: np.ndarray  # datetime64[s], UTC expiry instant
    strike: np.ndarray  # float64
    is_call: np.ndarray  # bool
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    last: np.ndarray
    volume: np.ndarray
    open_interest: np.ndarray
    multiplier: int = 100
    style: ExerciseStyle = ExerciseStyle.AMERICAN
    settlement: Settlement = Settlement.PHYSICAL
    root: str = ""
    vendor: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.symbol)
        for name in ("expiry", "strike", "is_call", *_FLOAT_COLUMNS):
            if len(getattr(self, name)) != n:
                raise ValueError(f"chain column {name!r} has {len(getattr(self, name))} rows, expected {n}")
        for name, arr in self.vendor.items():
            if len(arr) != n:
                raise ValueError(f"chain vendor column {name!r} has {len(arr)} rows, expected {n}")
        if self.ts.tzinfo is None:
            raise ValueError("chain timestamp must be timezone-aware (UTC)")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        underlying: str,
        spot: float,
        ts: datetime,
        options: Sequence[Option],
        *,
        bid: Sequence[float] | np.ndarray | None = None,
        ask: Sequence[float] | np.ndarray | None = None,
        **columns: Sequence[float] | np.ndarray,
    ) -> OptionChain:
        """Build a sorted chain from option contracts and optional quote columns."""
        n = len(options)
        nan = np.full(n, np.nan)
        cols: dict[str, np.ndarray] = {
            "bid": np.asarray(bid, dtype=float) if bid is not None else nan.copy(),
            "ask": np.asarray(ask, dtype=float) if ask is not None else nan.copy(),
        }
        for name in _FLOAT_COLUMNS[2:]:
            default = nan if name == "last" else np.zeros(n)
            cols[name] = np.asarray(columns.pop(name), dtype=float) if name in columns else default.copy()
        vendor = {k: np.asarray(columns.pop(k), dtype=float) for k in list(columns) if k in _OPTIONAL_FLOAT_COLUMNS}
        if columns:
            raise ValueError(f"unknown chain columns: {sorted(columns)}")
        first = options[0] if options else None
        chain = cls(
            underlying=underlying,
            spot=float(spot),
            ts=ts,
            symbol=np.array([o.key for o in options], dtype=object),
            expiry=_as_dt64([o.expires_at for o in options]) if n else np.array([], dtype="datetime64[s]"),
            strike=np.array([float(o.strike) for o in options], dtype=float),
            is_call=np.array([o.is_call for o in options], dtype=bool),
            multiplier=first.multiplier if first else 100,
            style=first.style if first else ExerciseStyle.AMERICAN,
            settlement=first.settlement if first else Settlement.PHYSICAL,
            root=first.root if first else underlying,
            vendor=vendor,
            **cols,
        )
        return chain.sorted()

    def sorted(self) -> OptionChain:
        order = np.lexsort((~self.is_call, self.strike, self.expiry))
        return self.take(order)

    def take(self, index: np.ndarray) -> OptionChain:
        """Rows selected by an integer index or boolean mask (a new chain; arrays are copies)."""
        pick = {name: getattr(self, name)[index] for name in ("symbol", "expiry", "strike", "is_call", *_FLOAT_COLUMNS)}
        vendor = {k: v[index] for k, v in self.vendor.items()}
        return replace(self, vendor=vendor, **pick)

    def with_quotes(self, bid: np.ndarray, ask: np.ndarray, **columns: np.ndarray | float | datetime) -> OptionChain:
        """Same contracts, new quote columns (a new immutable snapshot); ``spot`` and ``ts`` may change with them."""
        # field name → new value for ``replace``: arrays, the spot (float) and the snapshot time side by side
        updates: dict[str, Any] = {"bid": np.asarray(bid, float), "ask": np.asarray(ask, float)}
        vendor = dict(self.vendor)
        for k, v in columns.items():
            if k in _FLOAT_COLUMNS:
                updates[k] = np.asarray(v, float)
            elif k in _OPTIONAL_FLOAT_COLUMNS:
                vendor[k] = np.asarray(v, float)
            elif k in ("spot", "ts"):
                updates[k] = v
            else:
                raise ValueError(f"unknown chain column {k!r}")
        return replace(self, vendor=vendor, **updates)

    # ---- queries -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.symbol)

    @property
    def mid(self) -> np.ndarray:
        m = 0.5 * (self.bid + self.ask)
        m[~self.valid_mask()] = np.nan
        return m

    @property
    def spread(self) -> np.ndarray:
        s = self.ask - self.bid
        s[~self.valid_mask()] = np.nan
        return s

    def valid_mask(self) -> np.ndarray:
        """Rows with a finite, non-negative, uncrossed two-sided quote."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.bid) & np.isfinite(self.ask) & (self.bid >= 0) & (self.ask >= self.bid)

    def crossed_mask(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.bid > self.ask

    def expiries(self) -> np.ndarray:
        """Distinct expiry instants, ascending (``datetime64[s]``)."""
        return np.unique(self.expiry)

    def expiry_dates(self) -> list[date]:
        return [e.astype("datetime64[D]").astype(object) for e in self.expiries()]

    def for_expiry(self, expiry: np.datetime64 | datetime | date) -> OptionChain:
        if isinstance(expiry, datetime):
            e = _as_dt64([expiry])[0]
            return self.take(self.expiry == e)
        if isinstance(expiry, date):
            return self.take(self.expiry.astype("datetime64[D]") == np.datetime64(expiry, "D"))
        return self.take(self.expiry == datetime64_in(expiry, "s"))

    def time_to_expiry(self, now: datetime | None = None) -> np.ndarray:
        """Years ACT/365 from ``now`` (default: the snapshot time) to each row's expiry instant."""
        now = now or self.ts
        now64 = np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "s")
        return (self.expiry - now64).astype("timedelta64[s]").astype(float) / (365.0 * 86400.0)

    def atm_strike(self, expiry: np.datetime64 | datetime | date | None = None) -> float:
        """Strike nearest the spot (for one expiry, or across the chain)."""
        strikes = self.for_expiry(expiry).strike if expiry is not None else self.strike
        if len(strikes) == 0:
            return float("nan")
        return float(strikes[np.argmin(np.abs(strikes - self.spot))])

    def option(self, row: int) -> Option:
        """The contract of one row, rebuilt from the chain's metadata.

        A cash-settled row expiring at the 09:30 open is AM-settled even in a mixed chain (SPX monthlies
        beside SPXW weeklies): the row's own expiry instant decides, not the chain-wide default.
        """
        settlement = self.settlement
        if settlement is not Settlement.PHYSICAL:
            expires = self.expiry[row].astype("datetime64[s]").astype(object).replace(tzinfo=UTC)
            at_open = expires.astimezone(NEW_YORK).time() == AM_SETTLEMENT_TIME
            settlement = Settlement.CASH_AM if at_open else Settlement.CASH_PM
        return Option.from_occ(
            str(self.symbol[row]),
            underlying=self.underlying,
            multiplier=self.multiplier,
            style=self.style,
            settlement=settlement,
        )

    def row_of(self, symbol: str) -> int:
        hits = np.nonzero(self.symbol == symbol)[0]
        if len(hits) == 0:
            raise KeyError(symbol)
        return int(hits[0])
