"""The market as the risk engine sees it: latest quotes, underlying prices, chains, implied vols.

Fed by bus events (``QuoteUpdated``, ``QuotesUpdated``, ``UnderlyingUpdated``, ``ChainUpdated``) through plain
(inline) handlers that only store references, or directly with :meth:`update_quote` / :meth:`update_spot`
(backtester, tests). Lookups never do I/O. Prices are floats (market data); NaN means "no usable value".

Implied vols: the chain's vendor IV column when present, otherwise implied from the mid with
``engine.pricing.bsm.implied_vol`` (batched, cached per symbol until its mid or spot moves).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.events import ChainUpdated, QuotesUpdated, QuoteUpdated, UnderlyingUpdated
from engine.model import Instrument, Option, OptionChain

if TYPE_CHECKING:
    from engine.bus import Bus


@lru_cache(maxsize=200_000)
def key_of(inst: Instrument) -> str:
    """``inst.key`` memoised (formatting an OCC symbol costs microseconds; instruments are immutable)."""
    return inst.key


class _ChainState:
    __slots__ = ("ask", "bid", "chain", "greeks", "iv", "iv_at", "rows")

    def __init__(self, chain: OptionChain) -> None:
        self.chain = chain
        self.bid = np.array(chain.bid, dtype=float, copy=True)
        self.ask = np.array(chain.ask, dtype=float, copy=True)
        self.rows: dict[str, int] | None = None
        self.iv: np.ndarray | None = None  # whole-chain implied vols from prime_ivs()
        self.greeks: np.ndarray | None = None  # (5, n): delta, gamma, vega, theta, model price per unit
        self.iv_at = -math.inf


class MarketView:
    """Latest market data by symbol. ``feed`` (optional) answers what the events have not told us yet."""

    def __init__(self, bus: Bus | None = None, feed: Any = None, *, rate: float = 0.04,
                 dividend_yields: dict[str, float] | None = None, iv_max_age_s: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.feed = feed
        #: an implied vol computed within this many seconds is reused although the quote moved since
        self.iv_max_age_s = iv_max_age_s
        self._monotonic = monotonic
        self.rate = rate
        self.dividend_yields = dict(dividend_yields or {})
        self._quotes: dict[str, tuple[float, float]] = {}
        self._spots: dict[str, float] = {}
        self._chains: dict[str, _ChainState] = {}
        self._iv_override: dict[str, float] = {}
        self._iv_cache: dict[str, tuple[float, float, float, float]] = {}
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
        key = key_of(inst)
        q = self._quotes.get(key)
        if q is not None:
            return q
        if isinstance(inst, Option):
            hit = self._chain_row(inst.underlying, key)
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
        nowm = self._monotonic()
        fresh = nowm - self.iv_max_age_s
        for i, opt in enumerate(options):
            key = key_of(opt)
            pinned = self._iv_override.get(key)
            if pinned is not None:
                out[i] = pinned
                continue
            hit = self._chain_row(opt.underlying, key)
            if hit is not None:
                st, row = hit
                vendor = st.chain.vendor.get("vendor_iv")
                if vendor is not None and math.isfinite(vendor[row]) and vendor[row] > 0:
                    out[i] = float(vendor[row])
                    continue
                if st.iv is not None and st.iv_at >= fresh and math.isfinite(st.iv[row]):
                    out[i] = float(st.iv[row])
                    continue
            m, s = self.mid(opt), self.spot(opt.underlying)
            cached = self._iv_cache.get(key)
            if cached is not None and ((cached[0] == m and cached[1] == s) or cached[3] >= fresh):
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
                self._iv_cache[key_of(options[i])] = (mids[i], spots[i], float(vols[j]), nowm)
        return out

    def prime_ivs(self, now: datetime, underlyings: Collection[str] | None = None) -> int:
        """Imply the chains' vols and per-unit Greeks in one vectorized pass per chain.

        Run off the order path (the risk service does it once per clock tick, in a worker thread, for the
        underlyings the book holds); the pre-trade check then reads Greeks of chain options from these arrays
        for ``iv_max_age_s`` and computes any others on demand. ``underlyings`` limits the pass (None: every
        chain). Returns the number of options priced.
        """
        from engine.pricing import bsm

        n = 0
        for st in list(self._chains.values()):
            if underlyings is not None and st.chain.underlying not in underlyings:
                continue
            nowm = self._monotonic()
            chain = st.chain
            spot = self.spot(chain.underlying)
            q = self.dividend_yield(chain.underlying)
            t = chain.time_to_expiry(now)
            with np.errstate(invalid="ignore", divide="ignore"):
                mid = np.where((st.ask >= st.bid) & (st.bid >= 0), 0.5 * (st.bid + st.ask), np.nan)
                res = bsm.implied_vol(mid, chain.is_call, spot, chain.strike, t, self.rate, q)
                iv = np.asarray(getattr(res, "vol", res), dtype=float)
                g = bsm.greeks(chain.is_call, spot, chain.strike, np.maximum(t, 1e-9), self.rate, q, iv,
                               outputs=("delta", "gamma", "vega", "theta", "price"))
            table = np.vstack([g.delta, g.gamma, g.vega, g.theta, g.price]).astype(float)
            expired_greeks(table, chain.is_call, np.full(len(t), spot), chain.strike, t)
            st.iv, st.greeks, st.iv_at = iv, table, nowm  # reference swaps: readers see old or new, never half
            n += len(mid)
        return n

    def unit_greeks(self, options: list[Option], spots: np.ndarray, now: datetime) -> tuple[np.ndarray, np.ndarray]:
        """(iv, table) for options: ``table`` is (5, n) delta, gamma, vega, theta, model price per unit.

        Primed chain values are used while fresh; the rest are computed now (implied vol + BSM Greeks).
        """
        n = len(options)
        iv = np.full(n, np.nan)
        table = np.full((5, n), np.nan)
        fresh = self._monotonic() - self.iv_max_age_s
        todo: list[int] = []
        for i, opt in enumerate(options):
            key = key_of(opt)
            if key in self._iv_override:
                todo.append(i)
                continue
            hit = self._chain_row(opt.underlying, key)
            if hit is not None:
                st, row = hit
                if st.greeks is not None and st.iv_at >= fresh and st.iv is not None and math.isfinite(st.iv[row]):
                    iv[i] = st.iv[row]
                    table[:, i] = st.greeks[:, row]
                    continue
            todo.append(i)
        if todo:
            from engine.pricing import bsm

            idx = np.array(todo)
            opts = [options[i] for i in todo]
            iv[idx] = self.ivs(opts, now)
            t = np.array([o.time_to_expiry(now) for o in opts])
            k = np.array([float(o.strike) for o in opts])
            calls = np.array([o.is_call for o in opts])
            q = np.array([self.dividend_yield(o.underlying) for o in opts])
            with np.errstate(invalid="ignore", divide="ignore"):
                g = bsm.greeks(calls, spots[idx], k, np.maximum(t, 1e-9), self.rate, q, iv[idx],
                               outputs=("delta", "gamma", "vega", "theta", "price"))
            sub = np.vstack([g.delta, g.gamma, g.vega, g.theta, g.price]).astype(float)
            expired_greeks(sub, calls, spots[idx], k, t)
            table[:, idx] = sub
        return iv, table

    def underlyings(self) -> list[str]:
        return sorted(set(self._spots) | set(self._chains))


def expired_greeks(table: np.ndarray, calls: np.ndarray, spot: np.ndarray, strike: np.ndarray,
                   t: np.ndarray) -> None:
    """In place: an expired option (T ≤ 0) is worth intrinsic with delta ±1 / 0 and no gamma, vega, theta."""
    expired = t <= 0
    if not expired.any():
        return
    sign = np.where(calls, 1.0, -1.0)
    itm = np.where(calls, spot > strike, spot < strike)
    table[0, expired] = np.where(itm, sign, 0.0)[expired]
    table[1:4, expired] = 0.0
    table[4, expired] = np.maximum(sign * (spot - strike), 0.0)[expired]
