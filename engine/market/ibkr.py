"""IBKR market data over ``ib_async``: sec-def option params for the chain, tickers for the visible window.

- The chain is every (expiration × strike × right) of ``reqSecDefOptParams`` for the SMART exchange and
  the underlying's trading class. Many combinations do not exist: contracts are qualified when they
  enter the visible window, and the ones IB does not know are dropped from the chain.
- Market-data lines are scarce (~100 per account): :meth:`IbkrFeed.subscribe` keeps at most
  ``max_market_data_lines`` tickers (underlyings first, then the window nearest the money), cancelling
  what scrolled away.
- Vendor Greeks come from ``modelGreeks`` (IV, delta, gamma, theta, vega); ``-2``/``None``/NaN mean
  missing (NaN in the chain, and analytics fall back to our own model).
- A disconnect wipes all tickers: the connection's reconnect callback re-requests everything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.brokers.ibkr import ib_expiry, parse_ib_expiry
from engine.bus.events import Alert, ChainUpdated, QuotesUpdated, UnderlyingUpdated
from engine.market.feed import Feed, FeedError, empty_streamed_columns, streamed_snapshot, window_mask
from engine.market.symbols import SymbolMatch, check_search, rank_matches
from engine.model import Option, OptionChain, Right

if TYPE_CHECKING:
    from engine.brokers.ibkr import IbkrConnection
    from engine.bus import Bus

log = logging.getLogger(__name__)
GENERIC_TICKS = "100,101,104,106"


def _g(v: Any) -> float:
    """A greek/tick value or NaN (None, NaN, -1 for prices, -2 for greeks mean missing)."""
    if v is None:
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return math.nan if x in (-1.0, -2.0) or not math.isfinite(x) else x


@dataclass
class _ChainState:
    base: OptionChain
    params: Any
    cols: dict[str, np.ndarray]
    contracts: dict[str, Any] = field(default_factory=dict)  # key → qualified contract
    missing: set[str] = field(default_factory=set)
    window: list[str] = field(default_factory=list)  # keys, nearest the money first
    row_of: dict[str, int] = field(default_factory=dict)

    def snapshot(self, spot: float, now: datetime) -> OptionChain:
        return streamed_snapshot(self.base, self.cols, spot, now)




class IbkrFeed(Feed):
    name = "ibkr"

    def __init__(self, connection: IbkrConnection, bus: Bus, *, underlyings: Sequence[str] = ("SPY",)) -> None:
        self.conn = connection
        self.bus = bus
        self.clock = bus.clock  # the engine's (live: the wall clock); stamps snapshots the broker sends untimed
        self._underlyings = [u.upper() for u in underlyings]
        self._stocks: dict[str, Any] = {}
        self._states: dict[str, _ChainState] = {}
        self._chains: dict[str, OptionChain] = {}
        self._prices: dict[str, float] = {}
        self._tickers: dict[int, tuple[str, str]] = {}  # conId → (underlying, key or "" for the stock)
        self._active: dict[int, Any] = {}  # conId → contract with a live market-data line
        self._hooked = False
        self._lock = asyncio.Lock()
        self.ticks_received = 0
        self.resubscribes = 0
        connection.on_reconnected(self._resubscribe)

    @property
    def connected(self) -> bool:
        return self.conn.connected

    @property
    def lines_in_use(self) -> int:
        return len(self._active)

    async def start(self) -> None:
        await self.conn.connect()
        if not self._hooked:
            self.conn.ib.pendingTickersEvent += self._on_tickers
            self._hooked = True
        for u in list(self._underlyings):
            try:
                await self._stream_underlying(u)
            except FeedError as exc:  # one unknown symbol must not take the whole feed down
                self._underlyings.remove(u)
                self.bus.publish(Alert(level="warning", source="feed:ibkr", message=f"{u} dropped: {exc}"))

    async def stop(self) -> None:
        ib = self.conn.ib
        if ib is not None and ib.isConnected():
            for c in list(self._active.values()):
                ib.cancelMktData(c)
        self._active.clear()
        if ib is not None and self._hooked:
            ib.pendingTickersEvent -= self._on_tickers
            self._hooked = False

    def underlyings(self) -> list[str]:
        return list(self._underlyings)

    async def search_symbols(self, prefix: str, limit: int = 20) -> list[SymbolMatch]:
        """IB's ``reqMatchingSymbols`` (at most 16 contract descriptions, any security type): stocks, ETFs and
        indexes kept, ``optionable`` from the derivative types IB lists for each. IB allows one such request per
        second; the view sends one per pause in typing."""
        prefix, limit = check_search(prefix, limit)
        if not self.conn.connected:
            raise FeedError("IBKR is not connected")
        ib = self.conn.ib
        found = await self.conn.call(f"matching symbols {prefix}", lambda: ib.reqMatchingSymbolsAsync(prefix))
        out = []
        for cd in found or ():
            c = cd.contract
            if c is None or c.secType not in ("STK", "IND"):
                continue
            out.append(SymbolMatch(c.symbol, getattr(c, "description", "") or "",
                                   kind="index" if c.secType == "IND" else "equity", exchange=c.primaryExchange,
                                   optionable="OPT" in (cd.derivativeSecTypes or [])))
        return rank_matches(out, prefix, limit)

    # ---- contracts & chains -----------------------------------------------------------------------
    async def _stock(self, underlying: str) -> Any:
        if underlying not in self._stocks:
            from ib_async import Stock

            ib = self.conn.ib
            res = await self.conn.call(f"qualify {underlying}",
                                       lambda: ib.qualifyContractsAsync(Stock(underlying, "SMART", "USD")))
            if not res or res[0] is None:
                raise FeedError(f"IBKR has no stock contract for {underlying}")
            self._stocks[underlying] = res[0]
        return self._stocks[underlying]

    async def _stream_underlying(self, underlying: str) -> None:
        stock = await self._stock(underlying)
        if stock.conId not in self._active:
            self._request(stock, underlying, "")

    def _request(self, contract: Any, underlying: str, key: str) -> None:
        self.conn.ib.reqMktData(contract, GENERIC_TICKS if key else "")
        self._active[contract.conId] = contract
        self._tickers[contract.conId] = (underlying, key)

    async def _params(self, underlying: str) -> Any:
        stock = await self._stock(underlying)
        ib = self.conn.ib
        chains = await self.conn.call(f"{underlying} option params", lambda: ib.reqSecDefOptParamsAsync(
            underlying, "", "STK", stock.conId))
        smart = [c for c in chains or [] if c.exchange == "SMART" and c.tradingClass == underlying] or \
            [c for c in chains or [] if c.exchange == "SMART"]
        if not smart:
            raise FeedError(f"IBKR returned no SMART option chain for {underlying}")
        return smart[0]

    async def expirations(self, underlying: str) -> list[date]:
        underlying = underlying.upper()
        state = self._states.get(underlying)
        params = state.params if state else await self._params(underlying)
        return sorted(parse_ib_expiry(e) for e in params.expirations)

    async def chain(self, underlying: str, expiries: Sequence[date] | None = None) -> OptionChain:
        underlying = underlying.upper()
        if underlying not in self._states:
            await self.conn.connect()
            params = await self._params(underlying)
            mult = int(float(params.multiplier or 100))
            opts = [Option(params.tradingClass or underlying, parse_ib_expiry(e), Decimal(str(k)), r,
                           underlying=underlying, multiplier=mult)
                    for e in sorted(params.expirations) for k in sorted(params.strikes)
                    for r in (Right.CALL, Right.PUT)]
            base = OptionChain.build(underlying, self._prices.get(underlying, math.nan), self.clock.now(), opts)
            self._install(underlying, _ChainState(base, params, empty_streamed_columns(len(base))))
        chain = self._chains[underlying]
        if expiries:
            days = np.array([np.datetime64(e, "D") for e in expiries])
            return chain.take(np.isin(chain.expiry.astype("datetime64[D]"), days))
        return chain

    def _install(self, underlying: str, state: _ChainState) -> None:
        state.row_of = {str(s): i for i, s in enumerate(state.base.symbol)}
        self._states[underlying] = state
        self._chains[underlying] = state.snapshot(self._prices.get(underlying, math.nan), self.clock.now())

    def _drop(self, underlying: str, keys: set[str]) -> None:
        """Remove contracts IB does not list from the chain (keeps the quote columns aligned)."""
        state = self._states[underlying]
        keep = np.array([str(s) not in keys for s in state.base.symbol])
        state.missing |= keys
        state.base = state.base.take(keep)
        state.cols = {k: v[keep] for k, v in state.cols.items()}
        state.window = [k for k in state.window if k not in keys]
        self._install(underlying, state)

    def last_chain(self, underlying: str) -> OptionChain | None:
        return self._chains.get(underlying.upper())

    def last_price(self, symbol: str) -> float | None:
        return self._prices.get(symbol.upper())

    # ---- subscriptions ----------------------------------------------------------------------------
    async def subscribe(self, underlying: str, expiries: Sequence[date] | None = None,
                        strike_window: tuple[float, float] | None = None) -> None:
        """Stream the visible window, nearest the money first, within the market-data line budget."""
        from ib_async import Option as IbOption

        underlying = underlying.upper()
        await self.chain(underlying)
        await self._stream_underlying(underlying)
        async with self._lock:
            state = self._states[underlying]
            base = state.base
            mask = window_mask(base, expiries, strike_window)
            spot = self._prices.get(underlying, float(np.nanmedian(base.strike)) if len(base) else 0.0)
            rows = np.nonzero(mask)[0]
            rows = rows[np.argsort(np.abs(base.strike[rows] - spot), kind="stable")]
            other = sum(len(s.window) for u, s in self._states.items() if u != underlying)
            budget = max(0, self.conn.config.max_market_data_lines - len(self._stocks) - other)
            wanted = [str(base.symbol[r]) for r in rows][:budget]
            # qualify what we have not seen yet; drop what IB does not list
            todo = [k for k in wanted if k not in state.contracts]
            if todo:
                ib = self.conn.ib
                contracts = []
                for k in todo:
                    o = Option.from_occ(k)
                    contracts.append(IbOption(underlying, ib_expiry(o.expiry), float(o.strike), o.right.value,
                                              "SMART", tradingClass=state.params.tradingClass, currency="USD"))
                for i in range(0, len(contracts), 50):
                    part, keys = contracts[i:i + 50], todo[i:i + 50]
                    res = await self.conn.call("qualify options", functools.partial(ib.qualifyContractsAsync, *part))
                    missing = set()
                    for k, c in zip(keys, res, strict=True):
                        if c is None or isinstance(c, list):
                            missing.add(k)
                        else:
                            state.contracts[k] = c
                    if missing:
                        log.info("ibkr: %d listed combinations of %s do not exist; dropped", len(missing), underlying)
                        self._drop(underlying, missing)
                wanted = [k for k in wanted if k in state.contracts]
            old, new = set(state.window), set(wanted)
            self._cancel_lines(underlying, old - new)
            for k in wanted:
                c = state.contracts[k]
                if c.conId not in self._active:
                    self._request(c, underlying, k)
            state.window = wanted

    async def unsubscribe(self, underlying: str) -> None:
        state = self._states.get(underlying.upper())
        if state is None:
            return
        async with self._lock:
            self._cancel_lines(underlying.upper(), set(state.window))
            state.window = []

    def _cancel_lines(self, underlying: str, keys: set[str]) -> None:
        """Cancel market data for ``keys``; their quotes become NaN (no longer live, not stale values)."""
        state = self._states[underlying]
        rows = []
        for k in keys:
            c = state.contracts.get(k)
            if c is not None and c.conId in self._active:
                self.conn.ib.cancelMktData(c)
                self._active.pop(c.conId, None)
            if k in state.row_of:
                rows.append(state.row_of[k])
        if rows:
            idx = np.asarray(rows, dtype=int)
            for col in state.cols.values():
                col[idx] = np.nan
            self._chains[underlying] = state.snapshot(self._prices.get(underlying, math.nan), self.clock.now())

    def subscribed_symbols(self) -> set[str]:
        return {k for s in self._states.values() for k in s.window}

    def contract_of(self, key: str) -> Any:
        for s in self._states.values():
            if key in s.contracts:
                return s.contracts[key]
        return None

    async def _resubscribe(self) -> None:
        """After a reconnect every ticker is gone: request the same lines again."""
        self.resubscribes += 1
        ib = self.conn.ib
        if not self._hooked:
            ib.pendingTickersEvent += self._on_tickers
            self._hooked = True
        lines = list(self._active.values())
        self._active.clear()
        for c in lines:
            if ib.ticker(c) is not None:  # 1101 (data lost, socket kept): drop the dead line first
                ib.cancelMktData(c)
            u, key = self._tickers.get(c.conId, ("", ""))
            self._request(c, u, key)

    # ---- ticks (cache first, then publish) ----------------------------------------------------------
    def _on_tickers(self, tickers: Any) -> None:
        touched: dict[str, list[int]] = {}
        for t in tickers:
            con_id = t.contract.conId if t.contract is not None else 0
            where = self._tickers.get(con_id)
            if where is None or con_id not in self._active:
                continue  # late ticks of a cancelled line
            self.ticks_received += 1
            u, key = where
            bid, ask = _g(t.bid), _g(t.ask)
            if not key:
                mid = 0.5 * (bid + ask) if math.isfinite(bid) and math.isfinite(ask) else _g(t.last)
                if math.isfinite(mid):
                    self._prices[u] = mid
                    self.bus.publish(UnderlyingUpdated(symbol=u, price=mid, bid=bid, ask=ask))
                continue
            state = self._states.get(u)
            row = state.row_of.get(key) if state else None
            if state is None or row is None:
                continue
            c = state.cols
            c["bid"][row], c["ask"][row] = bid, ask
            c["bid_size"][row], c["ask_size"][row] = _g(t.bidSize), _g(t.askSize)
            c["last"][row], c["volume"][row] = _g(t.last), _g(t.volume)
            oi = t.callOpenInterest if key[-9] == "C" else t.putOpenInterest  # OCC: …C00600000
            c["open_interest"][row] = _g(oi)
            g = t.modelGreeks
            if g is not None:
                c["vendor_iv"][row] = _g(g.impliedVol)
                c["vendor_delta"][row] = _g(g.delta)
                c["vendor_gamma"][row] = _g(g.gamma)
                c["vendor_theta"][row] = _g(g.theta)
                c["vendor_vega"][row] = _g(g.vega)
            touched.setdefault(u, []).append(row)
        for u, rows in touched.items():
            state = self._states[u]
            snap = state.snapshot(self._prices.get(u, math.nan), self.clock.now())
            self._chains[u] = snap
            idx = np.unique(np.asarray(rows, dtype=int))
            self.bus.publish(QuotesUpdated(underlying=u, rows=idx, bid=snap.bid[idx], ask=snap.ask[idx]))
            self.bus.publish(ChainUpdated(chain=snap))
