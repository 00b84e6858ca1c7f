"""The market-data ``Feed`` interface implemented by the simulated market, tastytrade and IBKR.

A feed publishes ``UnderlyingUpdated``, ``ChainUpdated`` and ``QuoteUpdated``/``QuotesUpdated`` on the
bus and keeps the latest snapshot per underlying in its cache *before* publishing (cache first).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from engine.market.symbols import SymbolMatch, check_search, match_own
from engine.model import OptionChain

#: per-row columns a broker feed streams into its chain (vendor Greeks where the broker sends them)
STREAMED_COLUMNS = ("bid", "ask", "bid_size", "ask_size", "last", "volume", "open_interest", "vendor_iv",
                    "vendor_delta", "vendor_gamma", "vendor_theta", "vendor_vega")


def empty_streamed_columns(n_rows: int) -> dict[str, np.ndarray]:
    return {k: np.full(n_rows, np.nan) for k in STREAMED_COLUMNS}


def streamed_snapshot(base: OptionChain, cols: dict[str, np.ndarray], spot: float, ts: datetime) -> OptionChain:
    """An immutable chain from a broker feed's mutable streamed columns (copied; NaN volume/OI → 0)."""
    return base.with_quotes(
        cols["bid"].copy(), cols["ask"].copy(), bid_size=cols["bid_size"].copy(), ask_size=cols["ask_size"].copy(),
        last=cols["last"].copy(), volume=np.nan_to_num(cols["volume"]),
        open_interest=np.nan_to_num(cols["open_interest"]),
        **{k: cols[k].copy() for k in STREAMED_COLUMNS if k.startswith("vendor_")}, spot=spot, ts=ts)


def window_mask(chain: OptionChain, expiries: Sequence[date] | None,
                strike_window: tuple[float, float] | None) -> np.ndarray:
    """Rows of ``chain`` inside a visible window (all rows when a bound is None)."""
    mask = np.ones(len(chain), dtype=bool)
    if expiries:
        days = np.array([np.datetime64(e, "D") for e in expiries])
        mask &= np.isin(chain.expiry.astype("datetime64[D]"), days)
    if strike_window is not None:
        mask &= (chain.strike >= strike_window[0]) & (chain.strike <= strike_window[1])
    return mask


class FeedError(RuntimeError):
    """A feed could not do what was asked (unknown symbol, not connected, vendor error)."""


class Feed(abc.ABC):
    #: short identifier shown in the status bar, e.g. "simulated", "tastytrade", "ibkr"
    name: str = "feed"

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect / start streaming. Idempotent."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every task the feed started and wait for them. Idempotent."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    def underlyings(self) -> list[str]:
        """Symbols whose chains this feed can provide."""

    @abc.abstractmethod
    async def expirations(self, underlying: str) -> list[date]: ...

    @abc.abstractmethod
    async def chain(self, underlying: str, expiries: Sequence[date] | None = None) -> OptionChain:
        """Latest chain snapshot (all listed contracts, or only ``expiries``)."""

    @abc.abstractmethod
    async def subscribe(self, underlying: str, expiries: Sequence[date] | None = None,
                        strike_window: tuple[float, float] | None = None) -> None:
        """Stream quotes for the visible part of a chain; replaces that underlying's previous window."""

    @abc.abstractmethod
    async def unsubscribe(self, underlying: str) -> None: ...

    @abc.abstractmethod
    def last_chain(self, underlying: str) -> OptionChain | None:
        """The cached snapshot, without I/O (None before the first one arrives)."""

    @abc.abstractmethod
    def last_price(self, symbol: str) -> float | None:
        """Latest underlying price, without I/O."""

    def now(self) -> datetime | None:
        """Market time of the feed (simulated clock), or None for wall time."""
        return None

    async def search_symbols(self, prefix: str, limit: int = 20) -> list[SymbolMatch]:
        """Symbols starting with ``prefix`` (engine/market/symbols.py). The default lists the feed's own
        underlyings (the simulated market); broker feeds ask their broker."""
        prefix, limit = check_search(prefix, limit)
        return match_own(self.underlyings(), prefix, limit)

    def next_earnings(self, symbol: str) -> date | None:
        """The next earnings date the feed knows for ``symbol``, without I/O (None: not known here)."""
        return None
