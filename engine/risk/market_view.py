"""The market as the risk engine sees it: latest quotes, underlying prices, chains, implied vols.

Fed by bus events (``QuoteUpdated``, ``QuotesUpdated``, ``UnderlyingUpdated``, ``ChainUpdated``) through plain
(inline) handlers that only store references, or directly with :meth:`update_quote` / :meth:`update_spot`
(backtester, tests). Lookups never do I/O. Prices are floats (market data); NaN means "no usable value".

Implied vols: the chain's vendor IV column when present, otherwise implied from the mid with
``engine.pricing.bsm.implied_vol`` (batched, cached per symbol until its mid or spot moves).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.events import ChainUpdated, QuotesUpdated, QuoteUpdated, UnderlyingUpdated
from engine.model import Instrument, Option, OptionChain

if TYPE_CHECKING:
    from engine.bus import Bus


class _ChainState:
    __slots__ = ("ask", "bid", "chain", "rows")

    def __init__(self, chain: OptionChain) -> None:
        self.chain = chain
        self.bid = np.array(chain.bid, dtype=float, copy=True)
        self.ask = np.array(chain.ask, dtype=float, copy=True)
        self.rows: dict[str, int] | None = None


class MarketView:
    """Latest market data by symbol. ``feed`` (optional) answers what the events have not told us yet."""

    def __init__(self, bus: Bus | None = None, feed: Any = None, *, rate: float = 0.04,
                 dividend_yields: dict[str, float] | None = None) -> None:
        self.feed = feed
        self.rate = rate
        self.dividend_yields = dict(dividend_yields or {})
        self._quotes: dict[str, tuple[float, float]] = {}
        self._spots: dict[str, float] = {}
        self._chains: dict[str, _ChainState] = {}
        self._iv_override: dict[str, float] = {}
        self._iv_cache: dict[str, tuple[float, float, float]] = {}
        self.version = 0  # bumps on every update: cheap staleness check for cached aggregates
        self._subs: list[Any] = []
        if bus is not None:
            self._subs = [
                bus.subscribe(QuoteUpdated, self._on_quote, name="risk.market:quote"),
                bus.subscribe(QuotesUpdated, self._on_quotes, name="risk.market:quotes"),
                bus.subscribe(UnderlyingUpdated, self._on_underlying, name="risk.market:underlying"),
                bus.subscribe(ChainUpdated, self._on_chain, name="risk.market:chain"),
            ]

    def close(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()

    # ---- event handlers (inline, cheap) --------------------------------------------------------
    def _on_quote(self, ev: QuoteUpdated) -> None:
        q = ev.quote
        self._quotes[q.symbol] = (float(q.bid), float(q.ask))
        self.version += 1

    def _on_quotes(self, ev: QuotesUpdated) -> None:
        st = self._chains.get(ev.underlying)
        if st is None:
            return
        rows = np.asarray(ev.rows, dtype=int)
        if len(rows) and rows.max() < len(st.bid):
            st.bid[rows] = np.asarray(ev.bid, float)
            st.ask[rows] = np.asarray(ev.ask, float)
            self.version += 1

    def _on_underlying(self, ev: UnderlyingUpdated) -> None:
        self._spots[ev.symbol] = float(ev.price)
        if math.isfinite(ev.bid) and math.isfinite(ev.ask):
            self._quotes[ev.symbol] = (float(ev.bid), float(ev.ask))
        self.version += 1

    def _on_chain(self, ev: ChainUpdated) -> None:
        self.update_chain(ev.chain)

    # ---- direct updates ------------------------------------------------------------------------
    def update_chain(self, chain: OptionChain) -> None:
        self._chains[chain.underlying] = _ChainState(chain)
        if math.isfinite(chain.spot):
            self._spots[chain.underlying] = chain.spot
        self.version += 1

    def update_quote(self, symbol: str, bid: float, ask: float) -> None:
        self._quotes[symbol] = (float(bid), float(ask))
        self.version += 1

    def update_spot(self, symbol: str, price: float) -> None:
        self._spots[symbol] = float(price)
        self.version += 1

    def set_iv(self, symbol: str, iv: float) -> None:
        """Pin an option's implied vol (backtester replays, or a user override)."""
        self._iv_override[symbol] = float(iv)
        self.version += 1

    # ---- lookups -------------------------------------------------------------------------------
    def _chain_row(self, underlying: str, symbol: str) -> tuple[_ChainState, int] | None:
        st = self._chains.get(underlying)
        if st is None and self.feed is not None:
            chain = self.feed.last_chain(underlying)
            if chain is not None:
                st = _ChainState(chain)
                self._chains[underlying] = st
        if st is None:
            return None
        if st.rows is None:
            st.rows = {str(s): i for i, s in enumerate(st.chain.symbol)}
        row = st.rows.get(symbol)
        return None if row is None else (st, row)

    def bid_ask(self, inst: Instrument) -> tuple[float, float]:
        """Latest (bid, ask); NaNs when unknown."""
        q = self._quotes.get(inst.key)
        if q is not None:
            return q
        if isinstance(inst, Option):
            hit = self._chain_row(inst.underlying, inst.key)
            if hit is not None:
                st, row = hit
                return float(st.bid[row]), float(st.ask[row])
        else:
            s = self.spot(inst.key)
            if math.isfinite(s):
                return s, s
        return math.nan, math.nan

    def mid(self, inst: Instrument) -> float:
        bid, ask = self.bid_ask(inst)
        if not (math.isfinite(bid) and math.isfinite(ask)) or bid < 0 or ask < bid:
            return math.nan
        return 0.5 * (bid + ask)

    def spot(self, underlying: str) -> float:
        s = self._spots.get(underlying)
        if s is not None:
            return s
        st = self._chains.get(underlying)
        if st is not None and math.isfinite(st.chain.spot):
            return st.chain.spot
        if self.feed is not None:
            p = self.feed.last_price(underlying)
            if p is not None:
                return float(p)
        q = self._quotes.get(underlying)
        if q is not None and all(math.isfinite(x) for x in q):
            return 0.5 * (q[0] + q[1])
        return math.nan

    def dividend_yield(self, underlying: str) -> float:
        return self.dividend_yields.get(underlying, 0.0)

    def iv(self, option: Option, now: datetime) -> float:
        """Implied vol of an option (NaN when neither a vendor IV nor a usable mid exists)."""
        return float(self.ivs([option], now)[0])

    def ivs(self, options: list[Option], now: datetime) -> np.ndarray:
        """Implied vols of many options at once: pinned, else vendor IV, else implied from the mid.

        Implied values are cached per symbol and recomputed only when the mid or the spot moved.
        """
        n = len(options)
        out = np.full(n, np.nan)
        todo: list[int] = []
        mids = np.full(n, np.nan)
        spots = np.full(n, np.nan)
        for i, opt in enumerate(options):
            pinned = self._iv_override.get(opt.key)
            if pinned is not None:
                out[i] = pinned
                continue
            hit = self._chain_row(opt.underlying, opt.key)
            if hit is not None:
                st, row = hit
                vendor = st.chain.vendor.get("vendor_iv")
                if vendor is not None and math.isfinite(vendor[row]) and vendor[row] > 0:
                    out[i] = float(vendor[row])
                    continue
            m, s = self.mid(opt), self.spot(opt.underlying)
            cached = self._iv_cache.get(opt.key)
            if cached is not None and cached[0] == m and cached[1] == s:
                out[i] = cached[2]
                continue
            mids[i], spots[i] = m, s
            todo.append(i)
        if todo:
            from engine.pricing import bsm

            idx = np.array(todo)
            opts = [options[i] for i in todo]
            t = np.array([o.time_to_expiry(now) for o in opts])
            k = np.array([float(o.strike) for o in opts])
            calls = np.array([o.is_call for o in opts])
            q = np.array([self.dividend_yield(o.underlying) for o in opts])
            with np.errstate(invalid="ignore", divide="ignore"):
                res = bsm.implied_vol(mids[idx], calls, spots[idx], k, t, self.rate, q)
            vols = np.asarray(getattr(res, "vol", res), dtype=float).reshape(-1)
            for j, i in enumerate(todo):
                out[i] = vols[j]
                self._iv_cache[options[i].key] = (mids[i], spots[i], float(vols[j]))
        return out

    def underlyings(self) -> list[str]:
        return sorted(set(self._spots) | set(self._chains))
